"""Paired drops (Task.evaluate_drop): base and candidate measured on the same samples, so the drop's standard
error is that of the per-sample differences; tasks that keep no per-sample figures fall back to the unpaired hypot."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import TensorDataset

from autoprune.errors import TaskError
from autoprune.tasks._seg_data import make_synthetic_segmentation
from autoprune.tasks.base import ClassificationTask
from autoprune.tasks.base import MetricResult
from autoprune.tasks.base import Task
from autoprune.tasks.base import paired_stderr
from autoprune.tasks.segmentation import IouCounts
from autoprune.tasks.segmentation import SegmentationTask
from autoprune.tasks.segmentation import paired_bootstrap_stderr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import suite  # noqa: E402

N, FEATURES, CLASSES = 600, 8, 3


def _data(seed: int) -> TensorDataset:
    """Inputs with labels a fixed linear teacher gives, 20% of them replaced at random (accuracies near 0.8)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(99))).argmax(1)
    noisy = torch.rand(N, generator=g) < 0.2
    y[noisy] = torch.randint(0, CLASSES, (int(noisy.sum()),), generator=g)
    return TensorDataset(x, y)


def _teacher() -> nn.Linear:
    model = nn.Linear(FEATURES, CLASSES, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(99)).T)
    return model


def _nudged(model: nn.Module, scale: float, seed: int = 1) -> nn.Module:
    """A copy whose weights moved by ``scale`` noise: it agrees with ``model`` on most samples."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return out


class Linear(ClassificationTask):
    """A tiny classification task with a selection split of its own."""

    name = "linear"
    own_selection_split = True

    def build_model(self) -> nn.Module:
        return _teacher()

    def dataset(self, split: str) -> Dataset:
        return _data({"train": 0, "val": 1, "selection": 2, "test": 3}[split])


class OwnMetric(Linear):
    """A subclass whose evaluate_batches computes a metric of its own: its per-sample correctness would not fit."""

    def evaluate_batches(self, model, loader) -> MetricResult:
        result = super().evaluate_batches(model, loader)
        return MetricResult(1 - result.value, result.stderr, result.n)


class Plugin(Task):
    """A plugin task as plugin authors write it: the required methods only, no per-sample hook."""

    name = "plugin"
    own_selection_split = True

    def build_model(self) -> nn.Module:
        return _teacher()

    def dataset(self, split: str) -> Dataset:
        return Linear().dataset(split)

    def evaluate_batches(self, model, loader) -> MetricResult:
        hits = torch.cat([(model(x).argmax(1) == y) for x, y in loader]).double()
        acc = float(hits.mean())
        return MetricResult(acc, math.sqrt(acc * (1 - acc) / hits.numel()), int(hits.numel()))


def _correct(model: nn.Module, data: TensorDataset) -> np.ndarray:
    x, y = data.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().numpy()


def test_classification_drop_is_paired_and_matches_numpy() -> None:
    task = Linear()
    base, candidate = _teacher(), _nudged(_teacher(), 0.05)
    data = task.dataset("selection")
    b, c = _correct(base, data), _correct(candidate, data)
    agree = float(np.mean(b == c))
    assert 0.95 <= agree < 1.0  # the fixture: they agree on most samples, not all

    d = task.evaluate_drop(base, candidate, "selection")
    diff = c - b
    assert d.paired is True
    assert d.drop == pytest.approx(b.mean() - c.mean(), abs=1e-12) == pytest.approx(task.drop(d.base.value, d.candidate.value))
    assert d.stderr == pytest.approx(diff.std(ddof=1) / math.sqrt(N), rel=1e-12)
    # Only the discordant samples count: sd(diff)^2 <= (1 - agree) n / (n - 1); with at most 5% of them against
    # accuracies near 0.8, that is well under half the unpaired error.
    assert 0 < d.stderr <= math.sqrt((1 - agree) / (N - 1)) + 1e-12
    assert d.stderr < math.hypot(d.base.stderr, d.candidate.stderr) / 2


def test_identical_models_drop_nothing_with_no_error() -> None:
    task = Linear()
    model = _teacher()
    d = task.evaluate_drop(model, copy.deepcopy(model), "selection")
    assert (d.drop, d.stderr, d.paired) == (0.0, 0.0, True)
    assert d.base.stderr > 0  # the unpaired figure would have charged two metrics' errors


def test_the_base_is_evaluated_once_for_every_candidate() -> None:
    task = Linear()
    base = task.evaluate_samples(_teacher(), "selection")
    drops = [task.evaluate_drop(base, _nudged(_teacher(), 0.15, seed=s), "selection") for s in range(3)]
    assert task.access_counts["selection"] == 1 + len(drops)
    assert all(d.base == base.result and d.paired for d in drops)
    with pytest.raises(TaskError, match="evaluated on 'selection'"):
        task.evaluate_drop(base, _teacher(), "val")


def test_minimize_direction_drop_is_candidate_minus_base() -> None:
    task = Linear()
    task.metric_direction = "minimize"
    d = task.evaluate_drop(_teacher(), _nudged(_teacher(), 0.15), "selection")
    assert d.drop == pytest.approx(d.candidate.value - d.base.value, abs=1e-12)


@pytest.mark.parametrize("task_class", [Plugin, OwnMetric])
def test_a_task_without_the_hook_falls_back_to_the_unpaired_error(task_class: type[Task]) -> None:
    task = task_class()
    base = task.evaluate_samples(_teacher(), "selection")
    assert base.samples is None
    d = task.evaluate_drop(base, _nudged(_teacher(), 0.15), "selection")
    assert d.paired is False
    assert d.stderr == pytest.approx(math.hypot(d.base.stderr, d.candidate.stderr), rel=1e-12)
    assert d.drop == pytest.approx(task.drop(d.base.value, d.candidate.value))


def test_the_suite_judges_a_candidate_as_confirm_does_with_the_paired_error() -> None:
    task = Linear()
    ctx = SimpleNamespace(task=task, config=SimpleNamespace(search=SimpleNamespace(selection_z=1.0), max_drop=0.01))
    base = task.evaluate_samples(_teacher(), "selection")
    candidate = _nudged(_teacher(), 0.05)
    figures = suite.selection_figures(ctx, candidate, base, "test")
    d = task.evaluate_drop(base, candidate, "selection")
    assert figures["selection_drop_paired"] is True
    assert (figures["selection_drop"], figures["selection_drop_stderr"]) == (d.drop, d.stderr)
    assert figures["selection_holds"] == (d.drop + d.stderr <= 0.01)


def test_paired_stderr_by_hand() -> None:
    # Two discordant samples of four, opposite ways: mean diff 0, sd sqrt(2/3), error sqrt(2/3) / 2.
    assert paired_stderr([1, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(math.sqrt(2 / 3) / 2)
    assert paired_stderr([1], [0]) == 0.0


# -- segmentation: a paired bootstrap over images ----------------------------------------------------------
def test_paired_bootstrap_is_seeded_and_cancels_shared_hard_images() -> None:
    rng = np.random.default_rng(0)
    union = rng.integers(50, 200, size=(40, 3))
    inter = (union * rng.uniform(0.1, 0.9, size=union.shape)).astype(np.int64)  # images of very unlike difficulty
    near = inter.copy()
    near[::5, 0] -= 3  # the candidate loses a few pixels on a few images
    base, candidate = IouCounts(inter, union), IouCounts(near, union)
    se = paired_bootstrap_stderr(base, candidate, samples=300, seed=0)
    assert se == paired_bootstrap_stderr(base, candidate, samples=300, seed=0)
    assert 0 < se < 0.1 * paired_bootstrap_stderr(IouCounts(np.zeros_like(inter), union), base, samples=300, seed=0)
    assert paired_bootstrap_stderr(base, base) == 0.0
    assert paired_bootstrap_stderr(IouCounts(inter[:1], union[:1]), IouCounts(near[:1], union[:1])) == 0.0


@pytest.fixture
def seg_task(tmp_path: Path) -> SegmentationTask:
    root = make_synthetic_segmentation(tmp_path / "syn", n=30, size=32, seed=1)
    task = SegmentationTask("unet", {"widths": [8, 16]}, root=str(root), mask_mode="alpha", image_size=32, val_fraction=0.5)
    task.selection_fraction = 0.9  # 14 of the 15 validation images judge the drop
    return task


def test_segmentation_drop_is_a_deterministic_paired_bootstrap(seg_task: SegmentationTask) -> None:
    torch.manual_seed(0)
    base = nn.Conv2d(3, 2, 3, padding=1)  # a real per-pixel model whose masks vary (an untrained U-Net's are flat)
    candidate = _nudged(base, 0.01)
    first = seg_task.evaluate_drop(base, candidate, "selection")
    again = seg_task.evaluate_drop(seg_task.evaluate_samples(base, "selection"), candidate, "selection")
    assert first == again and first.paired is True
    assert first.base.n == len(seg_task.split_data("selection")) == 14
    assert first.base.value != first.candidate.value  # the fixture: they differ, a little
    assert 0 < first.stderr < math.hypot(first.base.stderr, first.candidate.stderr) / 4
    same = seg_task.evaluate_drop(base, copy.deepcopy(base), "selection")
    assert (same.drop, same.stderr, same.paired) == (0.0, 0.0, True)
