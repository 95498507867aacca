"""Built-in networks, defined in code (no downloads, no torchvision).

Example:
    >>> from autoprune.models import build_model
    >>> model = build_model("resnet", num_classes=10, in_channels=1)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from autoprune.errors import ConfigError
from autoprune.models.mobilenet import SmallMobileNetV2
from autoprune.models.resnet import SmallResNet
from autoprune.models.segformer import build_segformer
from autoprune.models.unet import SmallUNet


def _segformer(num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    # transformers stays optional: build_segformer imports it only when a Segformer is built.
    return build_segformer(num_classes=num_classes, in_channels=in_channels, **options)


def _unet(num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    return SmallUNet(num_classes=num_classes, in_channels=in_channels, **options)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet": SmallResNet,
    "mobilenet": SmallMobileNetV2,
    "segformer": _segformer,  # segmentation; needs transformers
    "unet": _unet,  # segmentation
}


def build_model(name: str, num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    """Build a built-in model by name.

    Args:
        name: ``resnet`` or ``mobilenet``.
        num_classes: classifier outputs.
        in_channels: input image channels.
        **options: model-specific options (e.g. ``widths``, ``blocks_per_stage``).

    Returns:
        A freshly initialised model.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (key 'model'); choose one of {', '.join(MODELS)}")
    try:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad key in 'model_options': {exc}") from None


__all__ = ["MODELS", "SmallMobileNetV2", "SmallResNet", "build_model"]
