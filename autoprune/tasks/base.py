"""The Task contract: everything autoprune needs to know about a model and its data.

A task gives a model builder, train/validation/test data, a loss, a metric with its direction, an example
input, the layers that must never be pruned, and optional ties between groups.  Built-in tasks and plugins
(``task: package.module:make_task``) follow the same contract, checked once by :func:`validate_task`.

Data is reached only through :meth:`Task.loader`, which records every access per split.  Four splits:

- ``train``: the base checkpoint, every finetune and the recovery's judge images (``recovery.calib_size``).
- ``val``: the search; every trial, sweep and bound is judged on it.
- ``selection``: judges ``autoprune confirm``'s candidates, so the pick is made on images no trial, sweep or
  finetune has seen.  A task whose :attr:`Task.own_selection_split` is true serves it from its own
  ``dataset("selection")``; otherwise the base class carves it deterministically out of the validation data
  (:attr:`Task.selection_fraction` of it, shuffled by :attr:`Task.selection_seed`, both set from the study's
  ``search.selection_fraction`` and ``search.seed``), and ``val`` is the rest.  No model ever trains on
  validation images, so the carved part is as unseen as a split of its own.
- ``test``: read once, for the exported model's final report (``autoprune export``), never to choose.  The
  search and ``confirm`` run inside :meth:`Task.forbid_split` for ``"test"``: any read there fails loudly
  instead of leaking into the selection.

A drop between two models measured on the same split is *paired* (:meth:`Task.evaluate_drop`): both see the
same samples, so the hard samples they share cancel and the drop's standard error is that of the per-sample
differences, not ``hypot`` of the two metrics' errors as if they came from independent samples.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from torch.utils.data import Subset

from autoprune.device import DeviceLoader
from autoprune.errors import TaskError

SPLITS = ("train", "val", "selection", "test")
# Share of the validation data carved out as the selection split when a task provides none of its own.
SELECTION_FRACTION = 0.3


@dataclass
class MetricResult:
    """A metric measured on one split.

    Attributes:
        value: the metric (e.g. accuracy in [0, 1]).
        stderr: its standard error (binomial for accuracy, bootstrap for per-sample metrics).
        n: how many samples it was measured on.
    """

    value: float
    stderr: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "stderr": self.stderr, "n": self.n}


@dataclass(frozen=True)
class SampleEvaluation:
    """A model's metric on one split, with the per-sample figures it was computed from.

    Evaluate the base once (:meth:`Task.evaluate_samples`) and pass this to :meth:`Task.evaluate_drop` for every
    candidate: the base is not evaluated again.

    Attributes:
        result: the metric.
        samples: the task's per-sample figures, in loader order (:class:`ClassificationTask`: each sample's
            correctness, 1.0 or 0.0; :class:`~autoprune.tasks.segmentation.SegmentationTask`: each image's
            intersection and union counts); ``None`` when the task keeps none, and then drops are unpaired.
        split: the split it was measured on (set by :meth:`Task.evaluate_samples`).
    """

    result: MetricResult
    samples: Any = None
    split: str = ""


@dataclass(frozen=True)
class PairedDrop:
    """A candidate's drop against the base, both measured on the same samples of one split.

    Attributes:
        base: the base model's metric.
        candidate: the candidate's metric.
        drop: :meth:`Task.drop` (positive = worse).
        stderr: the drop's standard error: paired (of the per-sample differences) when ``paired``, else
            ``hypot`` of the two metrics' errors, as if they were measured on independent samples (larger
            whenever the models agree on most samples).
        paired: whether ``stderr`` is the paired one.
    """

    base: MetricResult
    candidate: MetricResult
    drop: float
    stderr: float
    paired: bool


def paired_stderr(base: Any, candidate: Any) -> float:
    """Standard error of the mean of per-sample differences ``candidate - base``: ``sd / sqrt(n)`` (n - 1
    denominator); 0 for fewer than two samples.  For a metric that is the mean of per-sample values (accuracy).

    Example:
        >>> round(paired_stderr([1, 1, 1, 0], [1, 1, 0, 0]), 4)
        0.25
    """
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    if diff.size < 2:
        return 0.0
    return float(diff.std(ddof=1) / math.sqrt(diff.size))


class Task(abc.ABC):
    """Base class of every task.

    Subclasses implement :meth:`build_model`, :meth:`dataset`, :meth:`evaluate_batches` and set
    :attr:`metric_name` / :attr:`metric_direction`.  Everything else has a default, the selection split
    included: a task that provides one sets :attr:`own_selection_split` and serves ``dataset("selection")``;
    any other gets one carved deterministically out of its validation data (:meth:`split_data`, seeded by the
    study's ``search.seed``).  The test split is read only by ``autoprune export``, for the exported model.

    Paired drops (``autoprune confirm`` judges each candidate by its drop against the base on the selection
    split, with a margin of ``search.selection_z`` standard errors of that drop): a task that also implements
    :meth:`evaluate_sample_batches` (the metric plus per-sample figures, in loader order) gets the paired
    standard error from :meth:`paired_drop_stderr`, whose default suits a metric that is the mean of
    per-sample values (return those values as ``samples``); override it for any other metric (the segmentation
    task bootstraps its mean IoU over images).  A task that implements neither still works: its drops carry the
    unpaired ``hypot`` of the two metrics' errors, marked ``paired=False`` (larger, so a stricter margin).
    :class:`ClassificationTask` implements both for its accuracy, as long as a subclass keeps its
    :meth:`evaluate_batches` (one with a metric of its own falls back to unpaired unless it overrides the hook).

    Example:
        >>> from autoprune.tasks import build_task  # doctest: +SKIP
        >>> task = build_task(load_config("studies/digits-resnet.yaml"))  # doctest: +SKIP
        >>> model = task.build_model()  # doctest: +SKIP
        >>> task.evaluate(model, "val").value  # doctest: +SKIP
    """

    name: str = "task"
    model_name: str = "model"
    metric_name: str = "accuracy"
    metric_direction: str = "maximize"  # or "minimize"
    # Where loaded batches go and how they are loaded; set from the study config by build_task.
    device: torch.device = torch.device("cpu")
    loader_workers: int = 0
    # Batch size of evaluate and evaluate_samples when none is given.
    eval_batch_size: int = 256
    pin_memory: bool = False
    # The selection split (see the module docstring): a task with its own sets own_selection_split = True and
    # serves dataset("selection"); otherwise it is carved out of dataset("val") by these two settings.
    own_selection_split: bool = False
    selection_fraction: float = SELECTION_FRACTION
    selection_seed: int = 0

    def __init__(self) -> None:
        self.access_counts: Counter[str] = Counter()
        self._forbidden: set[str] = set()

    # -- to implement ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh, untrained instance of the model (the base checkpoint is loaded into it)."""

    @abc.abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The dataset of one split (``train``, ``val`` or ``test``; ``selection`` too when
        :attr:`own_selection_split` is set).  Read through :meth:`split_data`, which carves the selection split."""

    @abc.abstractmethod
    def evaluate_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> MetricResult:
        """Compute the metric of ``model`` (in eval mode, no grad) over ``loader``."""

    # -- paired drops (optional; see the class docstring) -----------------------------------------------
    def evaluate_sample_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> SampleEvaluation | None:
        """The metric of ``model`` over ``loader`` with its per-sample figures; ``None`` (the default): the task
        keeps none, and its drops are unpaired.  Must not read ``loader`` when it returns ``None``."""
        return None

    def paired_drop_stderr(self, base: Any, candidate: Any) -> float:
        """Standard error of the drop from two models' per-sample figures on the same samples (the ``samples`` of
        :class:`SampleEvaluation`).  Default: :func:`paired_stderr`, for per-sample values whose mean is the metric."""
        return paired_stderr(base, candidate)

    # -- defaults ---------------------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss (cross-entropy by default)."""
        return nn.functional.cross_entropy(outputs, targets)

    def logits(self, outputs: Any) -> torch.Tensor:
        """The tensor to distil and export from a model's raw output (``.logits`` of HF outputs)."""
        return outputs.logits if hasattr(outputs, "logits") else outputs

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic input of the deployment shape, used to trace and export the model."""
        x, _ = self.dataset("train")[0]
        return torch.zeros((batch_size, *tuple(x.shape)), dtype=x.dtype)

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input without the batch dimension."""
        return tuple(self.example_input(1).shape[1:])

    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        """Layers never pruned: by default the last Linear or Conv (the classifier)."""
        last = None
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                last = module
        return [last] if last is not None else []

    def group_ties(self, model: nn.Module) -> list[tuple[str, ...]]:
        """Groups (by name) that must share one ratio (e.g. a Segformer sr-conv and its input group)."""
        return []

    def num_heads(self, model: nn.Module) -> dict[nn.Module, int]:
        """Attention layers and their head counts, for transformer tasks."""
        return {}

    def after_pruning(self, model: nn.Module) -> None:  # noqa: B027 - a defaulted hook, not abstract
        """Patch attributes a pruned model needs (e.g. attention head sizes); default: nothing."""

    # -- data access ------------------------------------------------------------------------------------
    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        indices: Sequence[int] | None = None,
    ) -> DataLoader | DeviceLoader:
        """A DataLoader over one split (or the ``indices`` of it); every call is counted in :attr:`access_counts`.

        Its batches arrive on :attr:`device` (a :class:`~autoprune.device.DeviceLoader` off the CPU)."""
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split in self._forbidden:
            raise TaskError(
                f"task {self.name!r}: the {split!r} split is held out during the search and the selection; it is "
                "read only by 'autoprune export', for the exported model's final report"
            )
        self.access_counts[split] += 1
        generator = torch.Generator().manual_seed(seed)
        data = self.split_data(split)
        if indices is not None:
            data = Subset(data, [int(i) for i in indices])
        extra: dict[str, Any] = {}
        if self.loader_workers:
            extra.update(num_workers=self.loader_workers, persistent_workers=False)
        if self.pin_memory and self.device.type == "cuda":
            extra["pin_memory"] = True
        loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, **extra)
        return loader if self.device.type == "cpu" else DeviceLoader(loader, self.device)

    def split_data(self, split: str) -> Dataset:
        """The data :meth:`loader` reads for ``split``: :meth:`dataset`'s, with the selection split carved out of
        the validation data unless the task provides its own (:attr:`own_selection_split`).

        Example:
            >>> from autoprune.tasks.digits import DigitsTask
            >>> task = DigitsTask("resnet")
            >>> len(task.split_data("val")) + len(task.split_data("selection")) == len(task.dataset("val"))
            True
        """
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if self.own_selection_split or split not in ("val", "selection"):
            return self.dataset(split)
        val = self.dataset("val")
        size = len(val)  # type: ignore[arg-type]  # torch's Dataset stub declares no __len__; every split is a sized dataset
        carved = selection_indices(size, self.selection_fraction, self.selection_seed)
        if split == "selection":
            return Subset(val, carved)
        taken = set(carved)
        return Subset(val, [i for i in range(size) if i not in taken])

    @contextlib.contextmanager
    def forbid_split(self, split: str = "test") -> Iterator[None]:
        """Inside this block, reading ``split`` raises :class:`TaskError`."""
        added = split not in self._forbidden
        self._forbidden.add(split)
        try:
            yield
        finally:
            if added:
                self._forbidden.discard(split)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str = "val", batch_size: int | None = None, indices: Sequence[int] | None = None
    ) -> MetricResult:
        """The metric of ``model`` on ``split`` (or on the ``indices`` of it), in batches of ``batch_size``
        (default :attr:`eval_batch_size`)."""
        was_training = model.training
        model.eval()
        try:
            return self.evaluate_batches(model, self.loader(split, batch_size or self.eval_batch_size, indices=indices))
        finally:
            model.train(was_training)

    @torch.no_grad()
    def evaluate_samples(self, model: nn.Module, split: str = "val", batch_size: int | None = None) -> SampleEvaluation:
        """The metric of ``model`` on ``split`` with its per-sample figures (``samples`` is ``None`` when the task
        keeps none); evaluate the base once this way and pass it to :meth:`evaluate_drop` for each candidate.
        ``batch_size``: default :attr:`eval_batch_size`."""
        was_training = model.training
        model.eval()
        try:
            loader = self.loader(split, batch_size or self.eval_batch_size)
            kept = self.evaluate_sample_batches(model, loader)
            if kept is None:
                return SampleEvaluation(self.evaluate_batches(model, loader), split=split)
            return dataclasses.replace(kept, split=split)
        finally:
            model.train(was_training)

    def evaluate_drop(self, base: nn.Module | SampleEvaluation, model: nn.Module, split: str = "selection") -> PairedDrop:
        """The drop of ``model`` against the base on ``split``, both on the same samples, with its paired standard
        error when the task keeps per-sample figures (else unpaired, ``paired=False``).

        Args:
            base: the base model, or its :meth:`evaluate_samples` on ``split`` (computed once, reused).
            model: the candidate.
            split: the split both are measured on.

        Example:
            >>> from autoprune.tasks.digits import DigitsTask
            >>> task = DigitsTask("resnet")
            >>> model = task.build_model()
            >>> d = task.evaluate_drop(task.evaluate_samples(model, "selection"), model)
            >>> d.drop, d.stderr, d.paired
            (0.0, 0.0, True)
        """
        reference = base if isinstance(base, SampleEvaluation) else self.evaluate_samples(base, split)
        if reference.split != split:
            raise TaskError(f"task {self.name!r}: the base was evaluated on {reference.split!r}, the candidate on {split!r}")
        return self.paired_drop(reference, self.evaluate_samples(model, split))

    def paired_drop(self, base: SampleEvaluation, candidate: SampleEvaluation) -> PairedDrop:
        """The drop of ``candidate`` against ``base``: paired when both kept per-sample figures of the same samples,
        else the unpaired ``hypot`` of their errors (``paired=False``)."""
        b, c = base.result, candidate.result
        drop = self.drop(b.value, c.value)
        if base.samples is None or candidate.samples is None or b.n != c.n or base.split != candidate.split:
            return PairedDrop(b, c, drop, math.hypot(b.stderr, c.stderr), paired=False)
        return PairedDrop(b, c, drop, float(self.paired_drop_stderr(base.samples, candidate.samples)), paired=True)

    def drop(self, base: float, candidate: float) -> float:
        """Metric drop (positive = worse) for this metric's direction."""
        return base - candidate if self.metric_direction == "maximize" else candidate - base

    def keeps_metric_of(self, cls: type[Any]) -> bool:
        """Whether this task computes its metric with ``cls``'s :meth:`evaluate_batches` (a subclass may override
        it with a metric of its own, which ``cls``'s per-sample figures would not describe)."""
        return type(self).evaluate_batches is cls.evaluate_batches


class ClassificationTask(Task):
    """A task whose metric is top-1 accuracy with a binomial standard error."""

    metric_name = "accuracy"
    metric_direction = "maximize"

    def evaluate_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> MetricResult:
        return self._accuracy_samples(model, loader).result

    def evaluate_sample_batches(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> SampleEvaluation | None:
        """The accuracy with each sample's correctness (1.0 or 0.0), so drops are paired; ``None`` for a subclass
        whose :meth:`evaluate_batches` computes a metric of its own."""
        return self._accuracy_samples(model, loader) if self.keeps_metric_of(ClassificationTask) else None

    def _accuracy_samples(self, model: nn.Module, loader: DataLoader | DeviceLoader) -> SampleEvaluation:
        """Top-1 accuracy with its binomial standard error, and each sample's correctness."""
        hits = []
        for x, y in loader:
            pred = self.logits(model(x)).argmax(dim=1)
            hits.append((pred == y).reshape(-1).cpu())
        total = sum(int(h.numel()) for h in hits)
        if total == 0:
            raise TaskError(f"task {self.name!r}: the evaluation split is empty")
        correct = torch.cat(hits).to(torch.float64).numpy()
        acc = int(correct.sum()) / total
        return SampleEvaluation(MetricResult(acc, math.sqrt(max(acc * (1 - acc), 0.0) / total), total), correct)


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Deterministic split of ``range(n)`` into parts of the given fractions (the last takes the rest)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = []
    start = 0
    for i, frac in enumerate(fractions):
        stop = n if i == len(fractions) - 1 else start + int(round(frac * n))
        parts.append(perm[start:stop])
        start = stop
    return parts


def selection_indices(n: int, fraction: float, seed: int) -> list[int]:
    """The validation indices carved out as the selection split: ``fraction`` of ``n`` (at least one, and at
    least one left for validation), drawn by ``seed``, in ascending order.

    Raises:
        TaskError: fewer than two validation samples, so nothing can be carved.

    Example:
        >>> selection_indices(10, 0.3, seed=0) == selection_indices(10, 0.3, seed=0), len(selection_indices(10, 0.3, 0))
        (True, 3)
    """
    if n < 2:
        raise TaskError(f"a validation split of {n} sample(s) is too small to carve a selection split from; "
                        "give the task more validation data or a selection split of its own (Task.own_selection_split)")
    count = min(max(1, int(round(fraction * n))), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(int(i) for i in perm[:count])
