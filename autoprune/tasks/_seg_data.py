"""Segmentation data on disk: the ``images/`` + ``masks/`` folder layout, its loader and a synthetic generator.

Layout::

    ROOT/images/NAME.png|jpg|jpeg     RGB (or grey) images
    ROOT/masks/NAME.png               one mask per image, same base name

Masks are either class-index PNGs (``mask_mode: index``: pixel value = class, single channel) or alpha
mattes (``mask_mode: alpha``: grey 0..255, or the alpha channel of an RGBA/LA PNG), thresholded at 128
into background (0) and foreground (1).  Everything is decoded, checked and resized once, when the task is
built, so a bad file fails before any training with a message naming it.

Example:
    >>> import tempfile
    >>> root = make_synthetic_segmentation(tempfile.mkdtemp(), n=4, size=32)
    >>> data = load_folder(root, image_size=(32, 32), mask_mode="alpha")
    >>> tuple(data.images.shape), tuple(data.masks.shape), data.num_classes
    ((4, 3, 32, 32), (4, 32, 32), 2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter
from torch.utils.data import Dataset

from autoprune.errors import ConfigError
from autoprune.errors import TaskError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_MODES = ("index", "alpha")
ALPHA_THRESHOLD = 128


@dataclass
class FolderData:
    """A decoded, resized segmentation folder.

    Attributes:
        names: base names, sorted (the order every split index refers to).
        images: uint8 tensor ``(N, 3, H, W)``.
        masks: int64 tensor ``(N, H, W)`` of class indices (``ignore_index`` where ignored).
        num_classes: classes (given, or one more than the largest class found).
        image_paths: the image files, in ``names`` order.
    """

    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    num_classes: int
    image_paths: list[Path]


class SegmentationDataset(Dataset):
    """``(image, mask)`` pairs: a float image normalised to [-1, 1] and an int64 mask.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        masks: int64 ``(N, H, W)``.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images = images
        self.masks = masks

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(127.5).sub_(1.0)
        return x, self.masks[i]


def scan_folder(root: str | os.PathLike[str]) -> list[tuple[str, Path, Path]]:
    """Pair ``images/`` and ``masks/`` files by base name.

    Args:
        root: the dataset folder.

    Returns:
        ``(name, image path, mask path)`` sorted by name.

    Raises:
        TaskError: a folder is missing or empty, a base name appears twice, or an image has no mask (or a
            mask no image); the message names the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise TaskError(
            f"task_options.root: folder {root} does not exist; point it at a folder with images/ and masks/, "
            "or create a synthetic one with 'autoprune make-synthetic-seg DIR'"
        )
    found: dict[str, dict[str, Path]] = {}
    for sub in ("images", "masks"):
        folder = root / sub
        if not folder.is_dir():
            raise TaskError(f"task_options.root: {root} has no {sub}/ folder (expected {folder} with one file per sample)")
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in files:
                raise TaskError(f"{path}: base name {path.stem!r} is used twice in {folder} (also {files[path.stem].name}); keep one")
            files[path.stem] = path
        found[sub] = files
    images, masks = found["images"], found["masks"]
    for stem, path in images.items():
        if stem not in masks:
            raise TaskError(f"{path}: no mask with the same base name in {root / 'masks'} (expected {root / 'masks' / (stem + '.png')})")
    for stem, path in masks.items():
        if stem not in images:
            raise TaskError(f"{path}: no image with the same base name in {root / 'images'}")
    if not images:
        raise TaskError(f"{root / 'images'}: no .png/.jpg/.jpeg images found")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except Exception as exc:  # PIL raises several types for truncated or non-image files
        raise TaskError(f"{path}: cannot read this image ({type(exc).__name__}: {exc}); replace or remove it") from None
    return image


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    image = _open(path).convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _read_alpha(path: Path, size: tuple[int, int]) -> np.ndarray:
    mask = _open(path)
    if mask.mode in ("RGBA", "LA", "PA"):
        mask = mask.getchannel("A")
    elif mask.mode == "RGB":
        rgb = np.asarray(mask)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise TaskError(f"{path}: an alpha matte must be grey (0..255), this one is colour; save it as a grey PNG")
        mask = mask.convert("L")
    elif mask.mode == "I;16" or mask.mode == "I":
        arr = np.asarray(mask, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
        mask = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
    else:
        mask = mask.convert("L")
    if mask.size != (size[1], size[0]):
        mask = mask.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return (np.asarray(mask, dtype=np.uint8) >= ALPHA_THRESHOLD).astype(np.int64)


def _read_index(path: Path, size: tuple[int, int]) -> np.ndarray:
    mask = _open(path)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask)[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise TaskError(
                f"{path}: an index mask must hold one class number per pixel (a single-channel L or P PNG); "
                "this one is colour (convert colours to class numbers first, or use mask_mode: alpha for mattes)"
            )
        arr = rgb[..., 0]
    elif mask.mode in ("L", "P", "1"):
        arr = np.asarray(mask if mask.mode != "1" else mask.convert("L").point(lambda v: 1 if v else 0))
    elif mask.mode in ("I", "I;16"):
        arr = np.asarray(mask)
    else:
        raise TaskError(f"{path}: unsupported mask mode {mask.mode!r}; save index masks as single-channel PNGs")
    arr = np.asarray(arr, dtype=np.int64)
    if arr.shape != size:
        # Nearest neighbour: class numbers must not be blended.
        resized = Image.fromarray(arr.astype(np.int32)).resize((size[1], size[0]), Image.Resampling.NEAREST)
        arr = np.asarray(resized, dtype=np.int64)
    return arr


def load_folder(
    root: str | os.PathLike[str],
    image_size: tuple[int, int],
    mask_mode: str = "index",
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> FolderData:
    """Decode, check and resize every image and mask of a folder.

    Args:
        root: the dataset folder (``images/`` and ``masks/``).
        image_size: ``(height, width)`` every pair is resized to (bilinear for images and mattes, nearest
            for index masks).
        mask_mode: ``index`` or ``alpha``.
        num_classes: classes; for ``index`` masks ``None`` means one more than the largest class found,
            for ``alpha`` masks it must be ``None`` or 2.
        ignore_index: a mask value that marks pixels to ignore (``index`` masks only), e.g. 255.

    Returns:
        The :class:`FolderData`.

    Raises:
        TaskError: a file is unreadable, unpaired, or holds a class outside ``0..num_classes-1``.
    """
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"task 'segmentation': key 'task_options.mask_mode' is {mask_mode!r}; use 'index' or 'alpha'")
    if mask_mode == "alpha" and num_classes not in (None, 2):
        raise ConfigError(
            f"task 'segmentation': alpha mattes give 2 classes (background, foreground); "
            f"key 'task_options.num_classes' is {num_classes}"
        )
    pairs = scan_folder(root)
    images = np.empty((len(pairs), 3, *image_size), dtype=np.uint8)
    masks = np.empty((len(pairs), *image_size), dtype=np.int64)
    largest = -1
    for i, (_stem, image_path, mask_path) in enumerate(pairs):
        images[i] = _read_image(image_path, image_size)
        if mask_mode == "alpha":
            masks[i] = _read_alpha(mask_path, image_size)
            continue
        mask = _read_index(mask_path, image_size)
        valid = mask if ignore_index is None else mask[mask != ignore_index]
        if valid.size:
            low, high = int(valid.min()), int(valid.max())
            if low < 0:
                raise TaskError(f"{mask_path}: class {low} is negative; index masks hold classes 0..num_classes-1")
            if num_classes is not None and high >= num_classes:
                raise TaskError(
                    f"{mask_path}: class {high} is not one of 0..{num_classes - 1} (task_options.num_classes={num_classes}); "
                    + ("raise num_classes, set task_options.ignore_index, or fix the mask" if ignore_index is None
                       else "raise num_classes or fix the mask")
                )
            largest = max(largest, high)
        masks[i] = mask
    classes = 2 if mask_mode == "alpha" else (num_classes if num_classes is not None else largest + 1)
    if classes < 2:
        raise TaskError(f"{Path(root) / 'masks'}: every mask holds only class 0; a segmentation task needs at least 2 classes")
    return FolderData(
        names=[p[0] for p in pairs],
        images=torch.from_numpy(images),
        masks=torch.from_numpy(masks),
        num_classes=int(classes),
        image_paths=[p[1] for p in pairs],
    )


# -- synthetic data ---------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, size: int, busy: bool) -> np.ndarray:
    """An RGB texture in [0, 1]: gratings and noise (busy) or a smooth gradient with faint noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base = rng.uniform(0.15, 0.85, size=3)
    if busy:
        field = np.zeros((size, size))
        for _ in range(3):
            angle = rng.uniform(0, math.pi)
            freq = rng.uniform(8, 16)
            field += np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
        field = field / 3.0
        noise = rng.normal(0, 0.12, size=(size, size, 3))
        tint = rng.uniform(0.15, 0.35, size=3)
        rgb = base + tint * field[..., None] + noise
    else:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)) - 0.5
        rgb = base + rng.uniform(-0.3, 0.3, size=3) * ramp[..., None] + rng.normal(0, 0.03, size=(size, size, 3))
    return np.clip(rgb, 0.0, 1.0)


def _figure(rng: np.random.Generator, size: int, scale: int = 4) -> np.ndarray:
    """An anti-aliased soft alpha matte in [0, 1] of a person-like figure or a blob, drawn 4x and reduced."""
    big = size * scale
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = rng.uniform(0.3, 0.7) * big, rng.uniform(0.35, 0.65) * big
    s = rng.uniform(0.6, 0.95) * big
    kind = rng.choice(["person", "person", "ellipse", "polygon"])
    if kind == "person":
        head = 0.12 * s
        draw.ellipse([cx - head, cy - 0.42 * s - head, cx + head, cy - 0.42 * s + head], fill=255)
        draw.ellipse([cx - 0.17 * s, cy - 0.3 * s, cx + 0.17 * s, cy + 0.2 * s], fill=255)
        arm = max(1, int(0.09 * s))
        for side in (-1, 1):
            hand = (cx + side * rng.uniform(0.2, 0.4) * s, cy + rng.uniform(-0.35, 0.1) * s)
            draw.line([(cx + side * 0.12 * s, cy - 0.22 * s), hand], fill=255, width=arm)
            foot = (cx + side * rng.uniform(0.05, 0.2) * s, cy + 0.48 * s)
            draw.line([(cx + side * 0.08 * s, cy + 0.1 * s), foot], fill=255, width=int(arm * 1.3))
    elif kind == "ellipse":
        rx, ry = rng.uniform(0.2, 0.45) * s, rng.uniform(0.2, 0.45) * s
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    else:
        k = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=k))
        radii = rng.uniform(0.2, 0.45, size=k) * s
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)], fill=255)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=scale * rng.uniform(0.3, 1.0)))  # soft, matte-like edges
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0


def make_synthetic_segmentation(
    root: str | os.PathLike[str], n: int = 200, size: int = 64, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write a synthetic matting-style dataset: figures on textured backgrounds with alpha-matte masks.

    Images are ``images/NNNN.jpg`` (quality 95), masks ``masks/NNNN.png`` (grey 0..255 mattes with soft
    edges); load them with ``mask_mode: alpha``.  The same ``(n, size, seed)`` always gives the same files.

    Args:
        root: output folder (created).
        n: number of image/mask pairs.
        size: side of the square images.
        seed: random seed.
        overwrite: replace files of an existing dataset (otherwise a non-empty ``images/`` is an error).

    Returns:
        ``root`` as a :class:`Path`.
    """
    if n < 1:
        raise ConfigError(f"make-synthetic-seg: --n must be at least 1, got {n}")
    if size < 16:
        raise ConfigError(f"make-synthetic-seg: --size must be at least 16 pixels, got {size}")
    root = Path(root)
    images, masks = root / "images", root / "masks"
    if not overwrite and images.is_dir() and any(images.iterdir()):
        raise ConfigError(f"{images} already holds files; choose an empty folder or pass --overwrite")
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for folder in (images, masks):
            for old in folder.iterdir():
                if old.is_file() and old.suffix.lower() in IMAGE_SUFFIXES:
                    old.unlink()
    width = max(4, len(str(n - 1)))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        background = _texture(rng, size, busy=True)
        foreground = _texture(rng, size, busy=False)
        alpha = _figure(rng, size)
        rgb = alpha[..., None] * foreground + (1 - alpha[..., None]) * background
        name = f"{i:0{width}d}"
        Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(images / f"{name}.jpg", quality=95)
        Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(masks / f"{name}.png")
    return root


def parse_image_size(value: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` as ``(height, width)`` from an int or a two-item list; at least 16 pixels a side."""
    if isinstance(value, bool):
        value = None  # type: ignore[assignment]
    if isinstance(value, int):
        size = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        size = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"task 'segmentation': key 'task_options.image_size' must be an integer or [height, width], got {value!r}")
    if min(size) < 16:
        raise ConfigError(f"task 'segmentation': key 'task_options.image_size' must be at least 16 pixels a side, got {value!r}")
    return size
