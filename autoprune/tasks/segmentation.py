"""Built-in task ``segmentation``: semantic segmentation of a folder of images and masks, scored by mean IoU.

The folder holds ``images/`` and ``masks/`` with matching base names (see :mod:`autoprune.tasks._seg_data`);
``autoprune make-synthetic-seg DIR`` writes one.  Models: ``segformer`` (Hugging Face Segformer from a
``SegformerConfig``; needs transformers) or ``unet`` (torch only).

The metric is the dataset-level mean IoU: per class, the intersections and unions of every image are
summed and divided, and the classes are averaged (classes absent from both the masks and the predictions
of a split are left out).  Because the counts are kept per image, the standard error is a bootstrap over
images.

Example:
    >>> import tempfile
    >>> from autoprune.tasks._seg_data import make_synthetic_segmentation
    >>> root = make_synthetic_segmentation(tempfile.mkdtemp(), n=10, size=32)
    >>> task = SegmentationTask("unet", {"widths": [8, 16]}, root=str(root), mask_mode="alpha", image_size=32)
    >>> task.evaluate(task.build_model(), "val").n
    1
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from autoprune.device import DeviceLoader
from autoprune.errors import ConfigError
from autoprune.errors import TaskError
from autoprune.models import build_model
from autoprune.models.segformer import is_segformer
from autoprune.models.segformer import patch_attention
from autoprune.models.segformer import segformer_num_heads
from autoprune.models.segformer import segformer_ties
from autoprune.tasks._seg_data import SegmentationDataset
from autoprune.tasks._seg_data import load_folder
from autoprune.tasks._seg_data import parse_image_size
from autoprune.tasks.base import MetricResult
from autoprune.tasks.base import SampleEvaluation
from autoprune.tasks.base import Task
from autoprune.tasks.base import split_indices

BOOTSTRAP_SAMPLES = 200
SEGMENTATION_MODELS = ("segformer", "unet")


def iou_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image, per-class intersection and union pixel counts.

    Args:
        pred: predicted classes ``(N, H, W)``.
        target: true classes ``(N, H, W)``; pixels equal to ``ignore_index`` are not counted.
        num_classes: classes.
        ignore_index: mask value to ignore, if any.

    Returns:
        ``(intersection, union)``, each an int64 array ``(N, num_classes)``.

    Example:
        >>> p = torch.tensor([[[0, 1], [1, 1]]])
        >>> t = torch.tensor([[[0, 0], [1, 1]]])
        >>> inter, union = iou_counts(p, t, 2)
        >>> inter.tolist(), union.tolist()
        ([[1, 2]], [[2, 3]])
    """
    n = pred.shape[0]
    c = num_classes
    pred = pred.reshape(n, -1).long()
    target = target.reshape(n, -1).long()
    valid = (target >= 0) & (target < c)
    if ignore_index is not None:
        valid &= target != ignore_index
    image = torch.arange(n, device=target.device).unsqueeze(1).expand_as(target)
    # One confusion matrix per image, counted in a single bincount.
    index = (image * c * c + target.clamp(0, c - 1) * c + pred.clamp(0, c - 1))[valid]
    confusion = torch.bincount(index, minlength=n * c * c).reshape(n, c, c)
    inter = torch.diagonal(confusion, dim1=1, dim2=2)
    union = confusion.sum(dim=2) + confusion.sum(dim=1) - inter
    return inter.cpu().numpy().astype(np.int64), union.cpu().numpy().astype(np.int64)


def mean_iou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean over classes of ``sum(intersection) / sum(union)`` over images; classes with no union are skipped.

    Example:
        >>> mean_iou(np.array([[1, 2]]), np.array([[2, 3]]))
        0.5833333333333333
    """
    total_inter = np.asarray(inter).sum(axis=0).astype(np.float64)
    total_union = np.asarray(union).sum(axis=0).astype(np.float64)
    present = total_union > 0
    if not present.any():
        return float("nan")
    return float(np.mean(total_inter[present] / total_union[present]))


def bootstrap_stderr(inter: np.ndarray, union: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> float:
    """Standard error of :func:`mean_iou` by resampling images with replacement.

    Args:
        inter: per-image intersections ``(N, C)``.
        union: per-image unions ``(N, C)``.
        samples: bootstrap resamples.
        seed: resampling seed (the same counts always give the same error).

    Returns:
        The standard deviation of the resampled mean IoUs (0 for a single image).
    """
    picks = _resamples(np.asarray(inter).shape[0], samples, seed)
    if picks is None:
        return 0.0
    return _finite_std(_resampled_mean_iou(inter, union, picks))


def paired_bootstrap_stderr(base: IouCounts, candidate: IouCounts, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> float:
    """Standard error of the difference of two models' :func:`mean_iou` on the same images: both resampled with
    the same image indices, so the images they find equally hard cancel.

    Args:
        base: the base model's per-image counts.
        candidate: the candidate's per-image counts on the same images, in the same order.
        samples: bootstrap resamples.
        seed: resampling seed (the same counts always give the same error).

    Returns:
        The standard deviation of the resampled differences (0 for a single image, or identical counts).
    """
    picks = _resamples(np.asarray(base.inter).shape[0], samples, seed)
    if picks is None:
        return 0.0
    diff = _resampled_mean_iou(candidate.inter, candidate.union, picks) - _resampled_mean_iou(base.inter, base.union, picks)
    return _finite_std(diff)


def _resamples(n: int, samples: int, seed: int) -> np.ndarray | None:
    """``(samples, n)`` image indices drawn with replacement by ``seed``; ``None`` when there is nothing to resample."""
    if n < 2 or samples < 2:
        return None
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _resampled_mean_iou(inter: np.ndarray, union: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """:func:`mean_iou` of each resample (a row of ``picks``); NaN where no class has a union."""
    sums_i = np.asarray(inter, dtype=np.float64)[picks].sum(axis=1)
    sums_u = np.asarray(union, dtype=np.float64)[picks].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(sums_u > 0, sums_i / np.where(sums_u > 0, sums_u, 1.0), np.nan)
        return np.nanmean(per_class, axis=1)


def _finite_std(values: np.ndarray) -> float:
    """Sample standard deviation (n - 1) of the finite values; 0 with fewer than two."""
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


@dataclass(frozen=True)
class IouCounts:
    """Per-image, per-class intersection and union counts (:func:`iou_counts`), each ``(N, C)``: the per-sample
    figures of the segmentation task's :class:`~autoprune.tasks.base.SampleEvaluation`."""

    inter: np.ndarray
    union: np.ndarray


class SegmentationTask(Task):
    """Semantic segmentation on a folder of images and masks, mean IoU (higher is better).

    Args:
        model: ``segformer`` or ``unet`` (any built-in model that maps an image to per-pixel logits).
        model_options: passed to the model (for ``segformer``: ``preset`` and geometry overrides).
        root: the dataset folder with ``images/`` and ``masks/`` (relative paths in a study config are
            relative to the config file).
        mask_mode: ``index`` (class-index PNGs) or ``alpha`` (grey mattes thresholded at 128).
        num_classes: classes; default: 2 for mattes, one more than the largest class found for index masks.
        image_size: side (or ``[height, width]``) every image and mask is resized to.
        seed: split seed.
        val_fraction: share of the images used for validation (the search's metric).
        test_fraction: share held out for confirmation.
        ignore_index: mask value to ignore in the loss and the metric (index masks), e.g. 255.
        bootstrap: resamples of the bootstrap standard error.

    Example:
        >>> task = SegmentationTask("segformer", {"preset": "tiny"}, root="data/synthetic-seg", mask_mode="alpha")  # doctest: +SKIP
    """

    name = "segmentation"
    metric_name = "mean_iou"
    metric_direction = "maximize"
    path_options = ("root",)
    eval_batch_size = 32  # outputs are (batch, classes, H, W): a smaller batch than classification's

    def __init__(
        self,
        model: str | None = "segformer",
        model_options: Mapping[str, Any] | None = None,
        root: str | None = None,
        mask_mode: str = "index",
        num_classes: int | None = None,
        image_size: int | Sequence[int] = 64,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        ignore_index: int | None = None,
        bootstrap: int = BOOTSTRAP_SAMPLES,
    ) -> None:
        super().__init__()
        if root is None:
            raise ConfigError(
                "task 'segmentation': key 'task_options.root' is required: a folder with images/ and masks/ "
                "(create a synthetic one with 'autoprune make-synthetic-seg DIR')"
            )
        if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 0.9):
            raise ConfigError(
                "task 'segmentation': task_options.val_fraction must be in (0, 1), test_fraction in [0, 1), "
                "and together below 0.9"
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ConfigError(f"task 'segmentation': key 'task_options.num_classes' must be an integer >= 2, got {num_classes!r}")
        if model not in SEGMENTATION_MODELS:
            raise ConfigError(
                f"task 'segmentation': key 'model' is {model!r}; choose one of {', '.join(SEGMENTATION_MODELS)} "
                "(or bring your own model as a plugin task)"
            )
        self.model_name = model
        self._model_options = dict(model_options or {})
        self.mask_mode = mask_mode
        self.ignore_index = ignore_index
        self.bootstrap = int(bootstrap)
        self.image_size = parse_image_size(image_size)
        data = load_folder(root, self.image_size, mask_mode=mask_mode, num_classes=num_classes, ignore_index=ignore_index)
        self.num_classes = data.num_classes
        self.root = str(root)
        n = len(data.names)
        if n < 3:
            raise ConfigError(f"task 'segmentation': {root} holds {n} image(s); a train/val/test split needs at least 3")
        train, val, test = split_indices(n, [1 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
        if len(val) == 0 or len(train) == 0:
            raise ConfigError(f"task 'segmentation': {n} images leave an empty train or val split; add images or change the fractions")
        self.split_names = {
            "train": [data.names[i] for i in train.tolist()],
            "val": [data.names[i] for i in val.tolist()],
            "test": [data.names[i] for i in test.tolist()],
        }
        self._splits = {
            "train": SegmentationDataset(data.images[train], data.masks[train]),
            "val": SegmentationDataset(data.images[val], data.masks[val]),
            "test": SegmentationDataset(data.images[test], data.masks[test]),
        }

    # -- contract ---------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_model(self.model_name, num_classes=self.num_classes, in_channels=3, **self._model_options)

    def dataset(self, split: str) -> Dataset:
        return self._splits[split]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy (``ignore_index`` pixels left out); logits may be 4-D or per-pixel."""
        ignore = -100 if self.ignore_index is None else self.ignore_index
        if outputs.ndim == 4:
            outputs = _match_size(outputs, targets)
            return F.cross_entropy(outputs, targets, ignore_index=ignore)
        return F.cross_entropy(outputs, targets.reshape(-1), ignore_index=ignore)

    def evaluate_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> MetricResult:
        return self._iou_samples(model, loader).result

    def evaluate_sample_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> SampleEvaluation | None:
        """The mean IoU with each image's counts (:class:`IouCounts`), so drops are paired; ``None`` for a subclass
        whose :meth:`evaluate_batches` computes a metric of its own."""
        return self._iou_samples(model, loader) if self.keeps_metric_of(SegmentationTask) else None

    def paired_drop_stderr(self, base: IouCounts, candidate: IouCounts) -> float:
        """The paired bootstrap over images (:func:`paired_bootstrap_stderr`), as many resamples as the metric's own."""
        return paired_bootstrap_stderr(base, candidate, self.bootstrap)

    def _iou_samples(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> SampleEvaluation:
        """Mean IoU with its bootstrap standard error, and each image's intersection and union counts."""
        inters, unions = [], []
        for x, y in loader:
            out = self.logits(model(x))
            pred = _match_size(out, y).argmax(dim=1)
            inter, union = iou_counts(pred, y, self.num_classes, self.ignore_index)
            inters.append(inter)
            unions.append(union)
        if not inters:
            raise TaskError(f"task 'segmentation': the evaluation split of {self.root} is empty; change the split fractions")
        counts = IouCounts(np.concatenate(inters), np.concatenate(unions))
        stderr = bootstrap_stderr(counts.inter, counts.union, self.bootstrap)
        result = MetricResult(mean_iou(counts.inter, counts.union), stderr, int(counts.inter.shape[0]))
        return SampleEvaluation(result, counts)

    # -- transformer hooks ------------------------------------------------------------------------------
    def num_heads(self, model: nn.Module) -> dict[nn.Module, int]:
        return segformer_num_heads(model) if is_segformer(model) else {}

    def group_ties(self, model: nn.Module) -> list[tuple[str, ...]]:
        return segformer_ties(model) if is_segformer(model) else []

    def after_pruning(self, model: nn.Module, heads: Mapping[nn.Module, int] | None = None) -> None:
        if is_segformer(model):
            patch_attention(model, heads)


def _match_size(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Logits upsampled (bilinear) to the mask size when a model predicts at a lower resolution."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return logits
