"""The built-in ``shapes`` task: deterministic synthetic data, option validation, and a trainable base."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.errors import TaskError
from autoprune.tasks import build_task
from autoprune.tasks.shapes import CLASSES
from autoprune.tasks.shapes import ShapesTask
from autoprune.tasks.shapes import generate_shapes

STUDY = Path(__file__).resolve().parents[1] / "studies" / "shapes-resnet.yaml"
SMALL = {"train_size": 200, "val_size": 100, "test_size": 50, "image_size": 16}


def _tensors(task: ShapesTask, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return task.dataset(split).tensors  # type: ignore[attr-defined]


def _digests(x: torch.Tensor) -> set[str]:
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in x}


def test_same_seed_gives_identical_tensors() -> None:
    a = ShapesTask("resnet", seed=3, **SMALL)
    b = ShapesTask("resnet", seed=3, **SMALL)
    for split in ("train", "val", "test"):
        xa, ya = _tensors(a, split)
        xb, yb = _tensors(b, split)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_seed_gives_different_images() -> None:
    xa, _ = _tensors(ShapesTask("resnet", seed=0, **SMALL), "val")
    xb, _ = _tensors(ShapesTask("resnet", seed=1, **SMALL), "val")
    assert not torch.equal(xa, xb)


def test_splits_never_share_an_image() -> None:
    task = ShapesTask("resnet", train_size=500, val_size=500, test_size=500, image_size=16)
    train, val, test = (_digests(_tensors(task, s)[0]) for s in ("train", "val", "test"))
    assert len(train) == len(val) == len(test) == 500
    assert not (train & val) and not (train & test) and not (val & test)


def test_split_does_not_depend_on_the_other_splits_sizes() -> None:
    # Each split has its own stream: enlarging train must not change the validation images.
    xa, _ = _tensors(ShapesTask("resnet", train_size=100, val_size=60, test_size=10, image_size=16), "val")
    xb, _ = _tensors(ShapesTask("resnet", train_size=300, val_size=60, test_size=10, image_size=16), "val")
    assert torch.equal(xa, xb)


def test_shapes_dtypes_and_label_range() -> None:
    task = ShapesTask("resnet", **SMALL)
    for split, n in (("train", 200), ("val", 100), ("test", 50)):
        x, y = _tensors(task, split)
        assert x.shape == (n, 3, 16, 16) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < len(CLASSES)
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert float(x.std()) > 0.1  # real pictures, not a constant
    assert task.input_shape() == (3, 16, 16)
    assert tuple(task.example_input(4).shape) == (4, 3, 16, 16)


def test_every_class_present_and_balanced() -> None:
    task = ShapesTask("resnet", train_size=1000, val_size=10, test_size=25, image_size=16)
    for split in ("train", "val", "test"):
        counts = torch.bincount(_tensors(task, split)[1], minlength=len(CLASSES))
        assert int(counts.min()) >= 1
        assert int(counts.max()) - int(counts.min()) <= 1


def test_image_size_option() -> None:
    task = ShapesTask("resnet", train_size=10, val_size=10, test_size=10, image_size=24)
    x, _ = task.dataset("val")[0]
    assert tuple(x.shape) == (3, 24, 24)


def test_model_fits_the_data() -> None:
    task = ShapesTask("resnet", model_options={"widths": [8, 16, 32]}, **SMALL)
    model = task.build_model().eval()
    x, _ = next(iter(task.loader("val", 8)))
    assert tuple(model(x).shape) == (8, len(CLASSES))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 15}, "image_size"),
        ({"image_size": 32.0}, "image_size"),
        ({"train_size": -1}, "train_size"),
        ({"val_size": -100}, "val_size"),
        ({"test_size": 0}, "test_size"),
        ({"val_size": 5}, "val_size"),
        ({"train_size": True}, "train_size"),
        ({"seed": -1}, "seed"),
        ({"noise": -0.1}, "noise"),
        ({"noise": "high"}, "noise"),
    ],
)
def test_bad_options_raise_config_error_naming_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"task_options\.{key}\b"):
        ShapesTask("resnet", **options)


def test_unknown_option_names_task_options() -> None:
    cfg = load_config(STUDY)
    cfg.task_options = {"imagesize": 32}
    with pytest.raises(TaskError, match="task_options"):
        build_task(cfg)


def test_unknown_split_raises_task_error() -> None:
    with pytest.raises(TaskError, match="unknown split"):
        ShapesTask("resnet", **SMALL).dataset("holdout")


def test_test_split_is_guarded_during_search() -> None:
    task = ShapesTask("resnet", **SMALL)
    with task.forbid_split("test"):
        with pytest.raises(TaskError, match="held out"):
            task.loader("test", 8)
    assert task.access_counts["test"] == 0


def test_disk_cache_round_trips(tmp_path: Path) -> None:
    fresh = ShapesTask("resnet", **SMALL)
    first = ShapesTask("resnet", cache_dir=tmp_path, **SMALL)
    x1, y1 = _tensors(first, "val")
    files = sorted(tmp_path.glob("shapes-val-*.npz"))
    assert len(files) == 1
    second = ShapesTask("resnet", cache_dir=tmp_path, **SMALL)
    x2, y2 = _tensors(second, "val")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1, _tensors(fresh, "val")[0])
    # A different option must not be served from the same file.
    assert ShapesTask("resnet", cache_dir=tmp_path, **{**SMALL, "seed": 1}).cache_key("val") != first.cache_key("val")


def test_generation_is_fast() -> None:
    # A generous bound (shared CI machines); typically ~1 s for 20,000 32x32 images.
    start = time.perf_counter()
    x, y = generate_shapes(20_000, image_size=32, seed=0, split="train")
    assert time.perf_counter() - start < 30.0
    assert x.shape == (20_000, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (20_000,)


def test_study_config_builds_the_task() -> None:
    cfg = load_config(STUDY)
    task = build_task(cfg)
    assert isinstance(task, ShapesTask)
    assert task.sizes == {"train": 10_000, "val": 5_000, "test": 5_000}
    assert task.input_shape() == (3, 32, 32)


@pytest.mark.slow
def test_base_reaches_95_percent_on_validation(tmp_path: Path) -> None:
    from autoprune.base_model import train_base

    cfg = load_config(STUDY)
    cfg.artifact_dir = str(tmp_path)
    info = train_base(cfg, build_task(cfg), force=True)
    print(f"shapes base: val accuracy {info.val_metric:.4f} after {info.trained_seconds:.0f} s of training")
    assert info.val_metric is not None and info.val_metric >= 0.95
