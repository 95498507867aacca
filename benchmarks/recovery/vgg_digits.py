"""A plain VGG-style CNN on digits, as a user would bring it (plugin task for the recovery benchmark).

No residuals: conv-BN-ReLU blocks with max-pooling, then a hidden linear layer and the classifier, on
scikit-learn's digits resized to 24x24 with about 1,300 training images.  Named in
``benchmarks/recovery/recovery-vgg.yaml`` as ``task: vgg_digits:make_task``.

Example:
    >>> task = make_task(image_size=24)
    >>> len(task.dataset("train")) > 1200
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from autoprune.tasks.digits import DigitsTask


class VGGNet(nn.Module):
    """conv-BN-ReLU blocks (one max-pool after each stage), flatten, a hidden linear layer, the classifier.

    Args:
        num_classes: outputs.
        widths: channels per stage (two convs each).
        image_size: input side (fixes the flattened size).
        hidden: units of the hidden linear layer.
    """

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), image_size: int = 24, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 1
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                prev = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(prev * side * side, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.classifier(self.hidden(self.features(x)))


class VGGDigitsTask(DigitsTask):
    """Digits with :class:`VGGNet` (accuracy); 73% of the 1,797 images train, 15% validate, 12% are held out."""

    name = "vgg-digits"

    def __init__(self, image_size: int = 24, seed: int = 0, widths: Sequence[int] = (32, 64, 128), hidden: int = 128) -> None:
        super().__init__("resnet", image_size=image_size, seed=seed, val_fraction=0.15, test_fraction=0.12)
        self.model_name = "vgg"
        self._vgg = {"widths": list(widths), "image_size": image_size, "hidden": hidden}

    def build_model(self) -> nn.Module:
        return VGGNet(10, **self._vgg)

    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        return [model.classifier]


def make_task(config: Any = None, **options: Any) -> VGGDigitsTask:
    """The plugin entry point (``task: vgg_digits:make_task``); ``options`` are the config's task_options."""
    return VGGDigitsTask(**options)
