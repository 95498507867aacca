"""Segformer for semantic segmentation, built from a ``SegformerConfig`` (no hub download).

``transformers`` stays optional: it is imported inside :func:`build_segformer`, and this module itself
imports only torch, so tasks can ask :func:`is_segformer` about any model cheaply.

The model is wrapped in :class:`SegformerSegmenter`: its forward returns one tensor, the logits
upsampled (bilinear) from the decoder's 1/4 resolution to the input size, so the loss, the metric and the
ONNX export all see full-resolution masks.  Its state-dict keys (``segformer.*``, ``decode_head.*``) and
module names are those of ``SegformerForSemanticSegmentation``, so a fine-tuned Hugging Face state dict
loads into it and the pruning groups carry the familiar names.

Pruning needs three things from a transformer that a CNN does not (the task passes them to the pruner):

- :func:`segformer_num_heads`: the q/k/v projections and their head counts (attention groups keep whole
  heads of one width);
- :func:`segformer_ties`: every sequence-reduction conv must keep as many channels as the stage's
  residual stream it reads (its forward reshapes with the input width);
- :func:`patch_attention`: after pruning, the attention modules' head count and head size attributes,
  for the installed transformers version (5.x ``q_proj``/``head_dim``; 4.x ``query``/``attention_head_size``
  /``all_head_size``).

Example:
    >>> import torch
    >>> model = build_segformer(num_classes=2, preset="tiny")  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 64, 64)).shape  # doctest: +SKIP
    torch.Size([1, 2, 64, 64])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError
from autoprune.errors import PruningError

# MiT-b0 is SegformerConfig's own default; "tiny" is a scaled-down geometry for CPU demos and tests.
PRESETS: dict[str, dict[str, Any]] = {
    "b0": {
        "hidden_sizes": [32, 64, 160, 256],
        "num_attention_heads": [1, 2, 5, 8],
        "depths": [2, 2, 2, 2],
        "sr_ratios": [8, 4, 2, 1],
        "mlp_ratios": [4, 4, 4, 4],
        "decoder_hidden_size": 256,
    },
    "tiny": {
        "hidden_sizes": [16, 32, 64, 128],
        "num_attention_heads": [1, 2, 4, 8],
        "depths": [1, 1, 1, 1],
        "sr_ratios": [8, 4, 2, 1],
        "mlp_ratios": [4, 4, 4, 4],
        "decoder_hidden_size": 64,
    },
}
PER_STAGE = ("hidden_sizes", "num_attention_heads", "depths", "sr_ratios", "mlp_ratios", "patch_sizes", "strides")
GEOMETRY_KEYS = PER_STAGE + (
    "decoder_hidden_size",
    "drop_path_rate",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout_prob",
)


class SegformerSegmenter(nn.Module):
    """A Segformer encoder and all-MLP decode head whose forward returns full-resolution logits.

    Args:
        hf_model: a ``transformers.SegformerForSemanticSegmentation``; its ``segformer`` and
            ``decode_head`` modules are reused (same parameters, same names).
    """

    def __init__(self, hf_model: Any) -> None:  # transformers' model classes are not typed as modules
        super().__init__()
        self.segformer = hf_model.segformer
        self.decode_head = hf_model.decode_head
        self.config = hf_model.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.segformer(pixel_values, output_hidden_states=True, return_dict=True)
        logits = self.decode_head(outputs.hidden_states)
        return F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "model 'segformer' needs the transformers package: pip install 'autoprune[segformer]' "
            "(or choose model: unet, which needs nothing extra)"
        ) from None
    return transformers


def segformer_geometry(preset: str = "b0", **overrides: Any) -> dict[str, Any]:
    """The SegformerConfig geometry of a preset with overrides, validated.

    Args:
        preset: ``b0`` (MiT-b0, the default) or ``tiny``.
        **overrides: any of :data:`GEOMETRY_KEYS`.

    Returns:
        Keyword arguments for ``SegformerConfig``.

    Example:
        >>> segformer_geometry("tiny", depths=[2, 1, 1, 1])["depths"]
        [2, 1, 1, 1]
    """
    if preset not in PRESETS:
        raise ConfigError(f"model 'segformer': key 'model_options.preset' is {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(GEOMETRY_KEYS))
    if unknown:
        raise ConfigError(
            f"model 'segformer': unknown key(s) 'model_options.{unknown[0]}'"
            + (f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; use preset or {', '.join(GEOMETRY_KEYS)}"
        )
    geometry = {**PRESETS[preset], **overrides}
    stages = len(geometry["hidden_sizes"])
    geometry.setdefault("patch_sizes", ([7] + [3] * (stages - 1)))
    geometry.setdefault("strides", ([4] + [2] * (stages - 1)))
    for key in PER_STAGE:
        value = geometry[key]
        if not isinstance(value, (list, tuple)) or len(value) != stages or not all(isinstance(v, (int, float)) and v > 0 for v in value):
            raise ConfigError(
                f"model 'segformer': key 'model_options.{key}' must list {stages} positive numbers (one per stage, "
                f"like hidden_sizes), got {value!r}"
            )
        geometry[key] = list(value)
    for i, (width, heads) in enumerate(zip(geometry["hidden_sizes"], geometry["num_attention_heads"], strict=True)):
        if width % heads:
            raise ConfigError(
                f"model 'segformer': stage {i}: hidden_sizes {width} is not divisible by num_attention_heads {heads} "
                "(key 'model_options')"
            )
    return geometry


def build_segformer(num_classes: int, in_channels: int = 3, preset: str = "b0", **geometry: Any) -> SegformerSegmenter:
    """A freshly initialised Segformer (MiT-b0 geometry by default) wrapped in :class:`SegformerSegmenter`.

    Args:
        num_classes: segmentation classes (``num_labels``).
        in_channels: image channels.
        preset: ``b0`` or ``tiny`` (see :data:`PRESETS`).
        **geometry: overrides of the preset (``hidden_sizes``, ``num_attention_heads``, ``depths``,
            ``sr_ratios``, ``mlp_ratios``, ``patch_sizes``, ``strides``, ``decoder_hidden_size``, dropouts).

    Returns:
        The model, with eager attention (exports to ONNX with ``dynamo=False``).

    Example:
        >>> model = build_segformer(2, preset="tiny", depths=[1, 1, 1, 1])  # doctest: +SKIP
    """
    settings = segformer_geometry(preset, **geometry)
    transformers = _transformers()
    config = transformers.SegformerConfig(
        num_labels=int(num_classes),
        num_channels=int(in_channels),
        num_encoder_blocks=len(settings["hidden_sizes"]),
        **settings,
    )
    # Eager attention: plain matmuls, traced by torch-pruning and exported by the TorchScript ONNX exporter.
    config._attn_implementation = "eager"
    hf_model = transformers.SegformerForSemanticSegmentation(config)
    return SegformerSegmenter(hf_model)


def is_segformer(model: nn.Module) -> bool:
    """Whether ``model`` is (or wraps) a Hugging Face Segformer."""
    return isinstance(model, SegformerSegmenter) or type(model).__name__.startswith("Segformer")


@dataclass
class _Attention:
    """One attention module of either transformers layout."""

    name: str
    module: Any  # a transformers attention module: its head counts and sizes are plain int attributes
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    sr: nn.Conv2d | None
    layout: str  # "v5" (q_proj, head_dim) or "v4" (query, attention_head_size, all_head_size)


def attention_modules(model: nn.Module) -> list[_Attention]:
    """Every Segformer attention module of ``model``, for both transformers layouts.

    Returns:
        One entry per attention module, in model order.
    """
    found = []
    for name, module in model.named_modules():
        if isinstance(getattr(module, "q_proj", None), nn.Linear) and hasattr(module, "head_dim"):
            reduction = getattr(module, "sequence_reduction", None)
            sr = getattr(reduction, "sequence_reduction", None) if reduction is not None else None
            found.append(_Attention(name, module, module.q_proj, module.k_proj, module.v_proj, sr, "v5"))
        elif isinstance(getattr(module, "query", None), nn.Linear) and hasattr(module, "attention_head_size"):
            sr = getattr(module, "sr", None) if getattr(module, "sr_ratio", 1) > 1 else None
            found.append(_Attention(name, module, module.query, module.key, module.value, sr, "v4"))
    return found


def segformer_num_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{q, k, v projection: heads}`` of every attention module (torch-pruning's ``num_heads`` form)."""
    heads: dict[nn.Module, int] = {}
    for att in attention_modules(model):
        h = int(att.module.num_attention_heads)
        heads.update({att.q: h, att.k: h, att.v: h})
    return heads


def _stage_embedding(model: nn.Module, attention_name: str) -> str:
    """Name of the patch-embedding conv of the stage an attention module sits in (the stage group's name)."""
    parts = attention_name.split(".")
    if "stages" in parts:  # transformers 5.x: <prefix>stages.{i}.blocks.{j}.attention
        i = parts.index("stages")
        return ".".join(parts[: i + 2] + ["patch_embeddings", "proj"])
    if "block" in parts:  # transformers 4.x: <prefix>encoder.block.{i}.{j}.attention.self
        i = parts.index("block")
        return ".".join(parts[:i] + ["patch_embeddings", parts[i + 1], "proj"])
    raise PruningError(f"cannot find the stage of attention module {attention_name!r}; unknown Segformer layout")


def segformer_ties(model: nn.Module) -> list[tuple[str, ...]]:
    """Ties ``(stage group, sr conv group, ...)``: each sr conv keeps the width of the stream it reads.

    The pruning engine names a group after its earliest producing module; a stage's residual stream is
    first produced by that stage's patch-embedding conv, and an sr conv's output group by the sr conv.
    """
    names = {module: name for name, module in model.named_modules()}
    ties: dict[str, list[str]] = {}
    for att in attention_modules(model):
        if att.sr is None:
            continue
        ties.setdefault(_stage_embedding(model, att.name), []).append(names[att.sr])
    return [(leader, *followers) for leader, followers in ties.items()]


def patch_attention(model: nn.Module, heads: Mapping[nn.Module, int] | None = None) -> None:
    """Set the attention modules' head attributes to fit their pruned projections.

    Args:
        model: a pruned Segformer.
        heads: ``{q/k/v projection: kept heads}`` from the pruner; a module not named keeps its head count.

    The attention scaling (``1/sqrt(original head size)`` in 5.x) is left alone: the kept dimensions'
    dot products keep their trained scale.  transformers 4.x divides by ``sqrt(attention_head_size)`` in
    its forward, so there a narrowed head's scores grow slightly; the finetune absorbs it.
    """
    heads = heads or {}
    for att in attention_modules(model):
        width = att.q.out_features
        h = int(heads.get(att.q, att.module.num_attention_heads))
        if not (att.k.out_features == att.v.out_features == width) or h < 1 or width % h:
            raise PruningError(
                f"attention {att.name}: projections of {att.q.out_features}/{att.k.out_features}/{att.v.out_features} "
                f"channels do not split into {h} heads of one size"
            )
        att.module.num_attention_heads = h
        if att.layout == "v5":
            att.module.head_dim = width // h
        else:
            att.module.attention_head_size = width // h
            att.module.all_head_size = width
