"""The segmentation task: folder layout, bad inputs, mean IoU and its bootstrap error, the synthetic data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autoprune.errors import ConfigError
from autoprune.errors import TaskError
from autoprune.tasks._seg_data import load_folder
from autoprune.tasks._seg_data import make_synthetic_segmentation
from autoprune.tasks.segmentation import SegmentationTask
from autoprune.tasks.segmentation import bootstrap_stderr
from autoprune.tasks.segmentation import iou_counts
from autoprune.tasks.segmentation import mean_iou

UNET = {"widths": [8, 16]}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return make_synthetic_segmentation(tmp_path / "syn", n=12, size=32, seed=1)


def write_index_dataset(root: Path, masks: list[np.ndarray], size: int = 16) -> Path:
    """Images of noise and the given class-index masks, named 000, 001, ..."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i:03d}.png")
    return root


def index_masks(n: int = 6, size: int = 16, classes: int = 3) -> list[np.ndarray]:
    masks = []
    for i in range(n):
        m = np.zeros((size, size), dtype=np.uint8)
        m[: size // 2] = i % classes
        m[size // 2 :, : size // 2] = (i + 1) % classes
        masks.append(m)
    return masks


# -- the folder --------------------------------------------------------------------------------------------
def test_synthetic_dataset_layout_is_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_segmentation(tmp_path / "a", n=3, size=24, seed=7)
    b = make_synthetic_segmentation(tmp_path / "b", n=3, size=24, seed=7)
    names = sorted(p.name for p in (a / "images").iterdir())
    assert names == ["0000.jpg", "0001.jpg", "0002.jpg"]
    assert sorted(p.name for p in (a / "masks").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    for sub, name in (("images", "0001.jpg"), ("masks", "0001.png")):
        assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes()
    matte = np.asarray(Image.open(a / "masks" / "0000.png"))
    assert matte.dtype == np.uint8 and matte.ndim == 2
    assert ((matte > 0) & (matte < 255)).any(), "mattes have soft edges"
    with pytest.raises(ConfigError, match="overwrite"):
        make_synthetic_segmentation(a, n=3, size=24)


def test_task_loads_splits_and_alpha_mattes(synthetic: Path) -> None:
    task = SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="alpha", image_size=32, seed=0)
    sizes = [len(task.dataset(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 12 and min(sizes) >= 1
    again = SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="alpha", image_size=32, seed=0)
    assert again.split_names == task.split_names
    assert set(task.split_names["train"]).isdisjoint(task.split_names["val"])
    # The selection split (confirm's judge) is carved out of validation, at least one image on each side.
    val, selection = task.split_data("val"), task.split_data("selection")
    assert len(val) >= 1 and len(selection) >= 1 and len(val) + len(selection) == len(task.dataset("val"))
    assert set(val.indices).isdisjoint(selection.indices)
    x, y = task.dataset("train")[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and -1.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert y.shape == (32, 32) and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1}
    assert task.num_classes == 2 and task.example_input(2).shape == (2, 3, 32, 32)
    resized = SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="alpha", image_size=[16, 24])
    assert resized.dataset("val")[0][1].shape == (16, 24)


def test_alpha_mattes_are_thresholded_at_128(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (16, 16)).save(root / "images" / "a.jpg")
    matte = np.zeros((16, 16), dtype=np.uint8)
    matte[:, 4:8] = 127
    matte[:, 8:12] = 128
    matte[:, 12:] = 255
    Image.fromarray(matte).save(root / "masks" / "a.png")
    data = load_folder(root, (16, 16), mask_mode="alpha")
    assert data.masks[0, 0].tolist() == [0] * 8 + [1] * 8


def test_index_masks_infer_or_check_the_classes(tmp_path: Path) -> None:
    root = write_index_dataset(tmp_path / "idx", index_masks())
    task = SegmentationTask("unet", UNET, root=str(root), mask_mode="index", image_size=16)
    assert task.num_classes == 3
    assert SegmentationTask("unet", UNET, root=str(root), image_size=16, num_classes=5).num_classes == 5


def test_mask_with_an_unknown_class_names_the_file(tmp_path: Path) -> None:
    masks = index_masks()
    masks[4][0, 0] = 7
    root = write_index_dataset(tmp_path / "bad", masks)
    with pytest.raises(TaskError, match=r"masks/004\.png: class 7 is not one of 0\.\.2"):
        SegmentationTask("unet", UNET, root=str(root), image_size=16, num_classes=3)
    ok = SegmentationTask("unet", UNET, root=str(root), image_size=16, num_classes=3, ignore_index=7)
    assert ok.num_classes == 3


def test_mismatched_names_name_the_file(tmp_path: Path) -> None:
    root = write_index_dataset(tmp_path / "mis", index_masks(4))
    (root / "masks" / "002.png").rename(root / "masks" / "two.png")
    with pytest.raises(TaskError, match=r"images/002\.png: no mask with the same base name"):
        SegmentationTask("unet", UNET, root=str(root), image_size=16)
    (root / "images" / "002.png").unlink()
    with pytest.raises(TaskError, match=r"masks/two\.png: no image with the same base name"):
        SegmentationTask("unet", UNET, root=str(root), image_size=16)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    root = write_index_dataset(tmp_path / "broken", index_masks(4))
    (root / "images" / "001.png").write_bytes(b"not a png at all")
    with pytest.raises(TaskError, match=r"images/001\.png: cannot read this image"):
        SegmentationTask("unet", UNET, root=str(root), image_size=16)


def test_missing_folders_and_bad_options_are_clear(tmp_path: Path, synthetic: Path) -> None:
    with pytest.raises(TaskError, match="make-synthetic-seg"):
        SegmentationTask("unet", UNET, root=str(tmp_path / "nowhere"))
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(TaskError, match="no masks/ folder"):
        SegmentationTask("unet", UNET, root=str(tmp_path / "half"))
    with pytest.raises(ConfigError, match="task_options.root"):
        SegmentationTask("unet", UNET)
    with pytest.raises(ConfigError, match="mask_mode"):
        SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="matte")
    with pytest.raises(ConfigError, match="key 'model'"):
        SegmentationTask("resnet", {}, root=str(synthetic), mask_mode="alpha")


def test_relative_root_is_resolved_against_the_config(tmp_path: Path) -> None:
    from conftest import TINY_STUDY
    from conftest import deep_merge
    from conftest import write_study

    from autoprune.config import load_config
    from autoprune.tasks import build_task

    make_synthetic_segmentation(tmp_path / "data" / "seg", n=6, size=16)
    cfg_path = write_study(
        tmp_path / "studies",
        {"task": "segmentation", "task_options": {"root": "../data/seg", "mask_mode": "alpha", "image_size": 16},
         "model": "unet", "model_options": UNET},
        base=deep_merge(TINY_STUDY, {"task_options": None, "model_options": None}),
    )
    task = build_task(load_config(cfg_path))
    assert Path(task.root) == (tmp_path / "data" / "seg").resolve()


# -- the metric --------------------------------------------------------------------------------------------
def test_iou_counts_and_mean_iou_by_hand() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]], [[2, 2, 2, 2], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1]], [[2, 2, 0, 0], [0, 0, 0, 2]]])
    inter, union = iou_counts(pred, target, 3)
    # image 0: class 0: 3 of 4 right (union 4); class 1: all 4 right plus 1 false positive (union 5)
    # image 1: class 0: 3 of 4 right plus 2 false positives (union 6); class 2: 2 of 4 right plus 1 false
    # positive (union 5)
    assert inter.tolist() == [[3, 4, 0], [3, 0, 2]]
    assert union.tolist() == [[4, 5, 0], [6, 0, 5]]
    # dataset level, per class: 6/10, 4/5, 2/5
    assert mean_iou(inter, union) == pytest.approx((0.6 + 0.8 + 0.4) / 3)
    # a class nobody predicts nor labels (3) is left out of the mean; pixels labelled 2 are ignored, but a
    # pixel labelled 0 and predicted 2 still counts against both classes
    inter4, union4 = iou_counts(pred, target, 4, ignore_index=2)
    assert inter4.tolist() == [[3, 4, 0, 0], [3, 0, 0, 0]]
    assert union4.tolist() == [[4, 5, 0, 0], [4, 0, 1, 0]]
    assert mean_iou(inter4, union4) == pytest.approx((6 / 8 + 4 / 5 + 0 / 1) / 3)


def test_bootstrap_stderr_is_seeded_and_sensible() -> None:
    rng = np.random.default_rng(0)
    inter = rng.integers(50, 100, size=(40, 2))
    union = inter + rng.integers(0, 30, size=(40, 2))
    se = bootstrap_stderr(inter, union, samples=300, seed=0)
    assert se == bootstrap_stderr(inter, union, samples=300, seed=0)
    assert 0 < se < 0.05
    same = np.tile([[80, 100]], (40, 1))
    assert bootstrap_stderr(same, same + 5) == pytest.approx(0.0, abs=1e-12)
    assert bootstrap_stderr(inter[:1], union[:1]) == 0.0


class AllBackground(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.classes, x.shape[2], x.shape[3])
        out[:, 0] = 1.0
        return out


def test_evaluate_returns_mean_iou_with_bootstrap_error(synthetic: Path) -> None:
    # 5 validation images: 3 left for the search once the selection split takes its share (a bootstrap needs 2+).
    task = SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="alpha", image_size=32, val_fraction=0.4)
    result = task.evaluate(AllBackground(2), "val")
    val = task.split_data("val")  # the validation images left after the selection split is carved out
    masks = torch.stack([val[i][1] for i in range(len(val))])
    background = float((masks == 0).sum()) / masks.numel()  # IoU of class 0; class 1 scores 0
    assert result.value == pytest.approx(background / 2)
    assert result.n == len(val) and result.stderr > 0

    class Perfect(nn.Module):  # cheats by reading the masks in order
        def __init__(self) -> None:
            super().__init__()
            self.i = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = masks[self.i : self.i + x.shape[0]]
            self.i += x.shape[0]
            return nn.functional.one_hot(y, 2).permute(0, 3, 1, 2).float()

    perfect = task.evaluate(Perfect(), "val")
    assert perfect.value == 1.0 and perfect.stderr == 0.0


def test_loss_and_logits_are_per_pixel(synthetic: Path) -> None:
    task = SegmentationTask("unet", UNET, root=str(synthetic), mask_mode="alpha", image_size=32)
    out = torch.randn(2, 2, 32, 32)
    y = torch.randint(0, 2, (2, 32, 32))
    assert task.logits(out).shape == out.shape  # dense logits stay (N, C, H, W); distillation averages per pixel
    flat = out.permute(0, 2, 3, 1).reshape(-1, 2)
    expected = nn.functional.cross_entropy(out, y)
    assert task.loss(flat, y) == pytest.approx(float(expected), rel=1e-5)
    assert task.loss(out, y) == pytest.approx(float(expected), rel=1e-5)
    low = torch.randn(2, 2, 8, 8)  # a model predicting at 1/4 resolution: upsampled to the mask
    assert torch.isfinite(task.loss(low, y))


def test_unet_trains_prunes_and_exports(synthetic: Path, tmp_path: Path) -> None:
    from autoprune.latency import export_onnx
    from autoprune.pruning import GuardSettings
    from autoprune.pruning import Pruner

    task = SegmentationTask("unet", {"widths": [16, 32]}, root=str(synthetic), mask_mode="alpha", image_size=32)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in task.loader("train", 4, shuffle=True):
        loss = task.loss(task.logits(model(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pruner = Pruner(task.example_input(1), guards=GuardSettings(round_to=8), ignored_layers=task.ignored_layers)
    pruned = copy.deepcopy(model)
    result = pruner.prune(pruned, uniform=0.5)
    assert result.macs < pruner._count(model)[0]
    assert task.evaluate(pruned, "val").n == len(task.split_data("val"))
    assert export_onnx(pruned, task.example_input(1), tmp_path / "unet.onnx").is_file()


def test_cli_make_synthetic_seg(tmp_path: Path) -> None:
    from conftest import run_cli

    out = run_cli("make-synthetic-seg", tmp_path / "d", "--n", "3", "--size", "16")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "d" / "images").glob("*.jpg"))) == 3
    again = run_cli("make-synthetic-seg", tmp_path / "d", "--n", "3", "--size", "16")
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
