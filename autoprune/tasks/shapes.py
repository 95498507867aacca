"""Built-in task ``shapes``: procedurally generated RGB shapes and textures, a low-noise benchmark.

Ten classes (see :data:`CLASSES`), each drawn with a random position, scale, rotation, foreground and
background colour and pixel noise.  Everything is generated with vectorised numpy from a seed, so a study
gets the same images on every machine, without a download, and the validation/test splits can be made
as large as the noise of the selection needs (thousands of images, where ``digits`` has a few hundred).

Each split draws from its own seed, derived from ``seed`` and the split name, so the splits never share
an image.  Images are quantised to 8 bits (as real images are) and may be cached on disk as ``.npz`` files
keyed by every option that changes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import TensorDataset

from autoprune.errors import ConfigError
from autoprune.errors import TaskError
from autoprune.models import build_model
from autoprune.tasks.base import SPLITS
from autoprune.tasks.base import ClassificationTask

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "stripes-h",
    "stripes-v",
    "checker",
    "diamond",
    "star",
)

# Bumped whenever the drawing code changes, so a disk cache never serves images of an older generator.
GENERATOR_VERSION = 1

MIN_IMAGE_SIZE = 16
MIN_SPLIT_SIZE = len(CLASSES)  # every class appears in every split (labels are balanced)

# Rotation ranges (degrees) per class.  Square/diamond and stripes-h/stripes-v differ only by orientation,
# so their ranges are kept 15 degrees apart; the other shapes may turn freely.
_FREE = (0.0, 360.0)
_ROTATION: dict[str, tuple[float, float]] = {
    "circle": _FREE,
    "square": (-15.0, 15.0),
    "triangle": _FREE,
    "cross": _FREE,
    "ring": _FREE,
    "stripes-h": (-15.0, 15.0),
    "stripes-v": (75.0, 105.0),
    "checker": _FREE,
    "diamond": (30.0, 60.0),
    "star": _FREE,
}

# Shape radius as a fraction of the image side; centres keep most of the shape inside the image.
_SCALE = (0.20, 0.40)
_MIN_CONTRAST = 0.35  # minimum Euclidean RGB distance (in [0, 1] units) between foreground and background
_MAX_SHADING = 0.2  # amplitude of a linear illumination gradient across the image (uneven lighting)
_CHUNK = 1024  # images drawn at once: each float32 temporary stays ~4 MB at 32x32; the images do not depend on it


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    # A SeedSequence over (seed, split index, a tag) gives independent streams per split, so the splits
    # never overlap and growing one split leaves the others unchanged.
    return np.random.SeedSequence([int(seed), SPLITS.index(split), 0x5EA9E5])


def _signed_distance(name: str, u: np.ndarray, v: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Approximate signed distance (negative inside) of one class in shape units (radius 1).

    Args:
        name: the class name.
        u: horizontal coordinates in the shape's rotated frame, shape ``(n, H, W)``.
        v: vertical coordinates in the same frame.
        params: per-image extras, each of shape ``(n, 1, 1)`` (``freq``, ``phase``).

    Returns:
        The signed distance, shape ``(n, H, W)``.

    Example:
        >>> u = np.zeros((1, 1, 1), np.float32)
        >>> float(_signed_distance("circle", u, u, {})[0, 0, 0])
        -1.0
    """
    au, av = np.abs(u), np.abs(v)
    r = np.sqrt(u * u + v * v)
    if name == "circle":
        return r - 1.0
    if name in ("square", "diamond"):
        # A square of half-side 0.8 (about the circle's area); "diamond" is the same square turned ~45 degrees.
        return np.maximum(au, av) - 0.8
    if name == "triangle":
        # Equilateral, circumradius 1: the inradius is 0.5; three edge normals 120 degrees apart.
        d = v - 0.5
        for angle in (math.radians(210.0), math.radians(330.0)):
            d = np.maximum(d, u * math.cos(angle) + v * math.sin(angle) - 0.5)
        return d
    if name == "cross":
        arm, length = 0.3, 1.0
        return np.minimum(np.maximum(au - length, av - arm), np.maximum(au - arm, av - length))
    if name == "ring":
        return np.abs(r - 0.72) - 0.28
    if name == "star":
        # Five points: the boundary radius moves linearly (in angle) between 1 and 0.42.
        theta = np.arctan2(v, u)
        sector = 2.0 * math.pi / 5.0
        t = np.abs(np.mod(theta, sector) / sector * 2.0 - 1.0)  # 1 at a point, 0 between two points
        boundary = 0.42 + 0.58 * t
        return r - boundary
    disc = r - 1.0
    freq, phase = params["freq"], params["phase"]
    if name in ("stripes-h", "stripes-v"):
        # Stripes along the frame's u axis, inside a disc; the class's rotation range turns them.
        wave = np.sin(2.0 * math.pi * freq * v + phase)
    elif name == "checker":
        wave = np.sin(2.0 * math.pi * freq * u + phase) * np.sin(2.0 * math.pi * freq * v + phase)
    else:  # pragma: no cover - CLASSES and this function are kept in step
        raise TaskError(f"task 'shapes': no drawing for class {name!r}")
    # sin crosses zero with slope 2*pi*freq: dividing by it turns the wave into a distance to the edge.
    stripe = -wave / (2.0 * math.pi * freq)
    return np.maximum(disc, stripe)


def generate_shapes(n: int, image_size: int = 32, seed: int = 0, split: str = "train", noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` labelled images of one split.

    Args:
        n: number of images (labels are balanced: each class gets ``n // 10`` or one more).
        image_size: side of the square images in pixels.
        seed: the task seed; the split's own seed is derived from it and ``split``.
        split: ``train``, ``val`` or ``test``.
        noise: standard deviation of the Gaussian pixel noise, in [0, 1] intensity units.

    Returns:
        ``(images, labels)``: ``uint8`` of shape ``(n, 3, image_size, image_size)`` and ``int64`` of shape ``(n,)``.

    Example:
        >>> x, y = generate_shapes(20, image_size=16, seed=1, split="val")
        >>> x.shape, x.dtype.name, sorted(set(y.tolist())) == list(range(10))
        ((20, 3, 16, 16), 'uint8', True)
    """
    if split not in SPLITS:
        raise TaskError(f"task 'shapes': unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if n < 0:
        raise TaskError(f"task 'shapes': cannot draw {n} images; pass n >= 0")
    params_ss, noise_ss = _split_seed(seed, split).spawn(2)
    rng = np.random.default_rng(params_ss)
    noise_rng = np.random.default_rng(noise_ss)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    draw = _draw_parameters(rng, labels, image_size)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        images[sl] = _render(draw, labels, sl, image_size, noise, noise_rng)
    return images, labels


def _draw_parameters(rng: np.random.Generator, labels: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """Every random parameter of every image, drawn up front (so rendering in chunks cannot change them).

    Returns:
        Per-image ``float32`` arrays: ``radius``, centre ``cx``/``cy`` and ``angle`` (radians), stripe
        ``freq``/``phase``, colours ``fg``/``bg`` (``(n, 3)``) and lighting ``shade_angle``/``shade``.
    """
    n = len(labels)
    radius = rng.uniform(*_SCALE, size=n).astype(np.float32) * image_size
    margin = 0.55 * radius  # the centre stays inside: at most 45% of a shape's radius leaves the image
    cx = rng.uniform(0.0, 1.0, size=n).astype(np.float32) * (image_size - 2 * margin) + margin
    cy = rng.uniform(0.0, 1.0, size=n).astype(np.float32) * (image_size - 2 * margin) + margin
    lo = np.array([_ROTATION[CLASSES[c]][0] for c in labels], dtype=np.float32)
    hi = np.array([_ROTATION[CLASSES[c]][1] for c in labels], dtype=np.float32)
    angle = np.deg2rad(lo + (hi - lo) * rng.uniform(0.0, 1.0, size=n).astype(np.float32))
    freq = rng.uniform(1.2, 1.8, size=n).astype(np.float32)  # stripe periods per shape radius
    phase = rng.uniform(0.0, 2.0 * math.pi, size=n).astype(np.float32)
    fg = rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)
    # Redraw the background of low-contrast pairs until every pair is told apart by colour (a few rounds).
    for _ in range(100):
        weak = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
        if not weak.any():
            break
        bg[weak] = rng.uniform(0.0, 1.0, size=(int(weak.sum()), 3)).astype(np.float32)
    weak = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    bg[weak] = np.where(fg[weak] < 0.5, 1.0, 0.0)  # a last resort that is always far enough (never reached in practice)
    shade_angle = rng.uniform(0.0, 2.0 * math.pi, size=n).astype(np.float32)
    shade = rng.uniform(0.0, _MAX_SHADING, size=n).astype(np.float32)
    return {"radius": radius, "cx": cx, "cy": cy, "angle": angle, "freq": freq, "phase": phase,
            "fg": fg, "bg": bg, "shade_angle": shade_angle, "shade": shade}


def _render(draw: dict[str, np.ndarray], labels: np.ndarray, sl: slice, image_size: int, noise: float,
            noise_rng: np.random.Generator) -> np.ndarray:
    """The ``uint8`` images of the slice ``sl``: shapes from ``draw``, lighting, then pixel noise."""
    m = sl.stop - sl.start
    col = lambda a: a[sl].reshape(m, 1, 1)  # noqa: E731 - per-image values broadcast over pixels
    pixels = np.arange(image_size, dtype=np.float32) + 0.5
    radius, angle = col(draw["radius"]), col(draw["angle"])
    dx = (pixels.reshape(1, 1, -1) - col(draw["cx"])) / radius
    dy = (pixels.reshape(1, -1, 1) - col(draw["cy"])) / radius
    cos, sin = np.cos(angle), np.sin(angle)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    dist = np.empty((m, image_size, image_size), dtype=np.float32)
    chunk_labels = labels[sl]
    extras = {"freq": col(draw["freq"]), "phase": col(draw["phase"])}
    for c, name in enumerate(CLASSES):
        idx = np.nonzero(chunk_labels == c)[0]
        if idx.size:
            dist[idx] = _signed_distance(name, u[idx], v[idx], {key: val[idx] for key, val in extras.items()})
    # Distance in pixels -> coverage, a one-pixel soft edge (anti-aliasing, so small shapes stay smooth).
    alpha = np.clip(0.5 - dist * radius, 0.0, 1.0)[:, None]
    img = draw["bg"][sl, :, None, None] * (1.0 - alpha) + draw["fg"][sl, :, None, None] * alpha
    # Uneven lighting over shape and background alike: the colours alone no longer give the mask away.
    px = pixels.reshape(1, 1, -1) / image_size - 0.5
    py = pixels.reshape(1, -1, 1) / image_size - 0.5
    shade, shade_angle = col(draw["shade"]), col(draw["shade_angle"])
    img += (2.0 * shade * (px * np.cos(shade_angle) + py * np.sin(shade_angle)))[:, None]
    img += noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _check_int(key: str, value: Any, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"task 'shapes': task_options.{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"task 'shapes': task_options.{key} must be >= {minimum} ({why}), got {value}")
    return int(value)


class ShapesTask(ClassificationTask):
    """Synthetic RGB shapes and textures in 10 classes, generated from a seed (no download).

    Args:
        model: built-in model name (``resnet`` or ``mobilenet``).
        model_options: passed to the model.
        image_size: side of the images in pixels (default 32, at least 16).
        train_size: images in the train split.
        val_size: images in the validation split (the search's selection noise shrinks with it).
        test_size: images in the held-out test split.
        seed: data seed; each split derives its own seed from it, so splits never share an image.
        noise: standard deviation of the Gaussian pixel noise in [0, 1] intensity units.
        cache_dir: optional folder for ``.npz`` caches of the generated splits (keyed by every option).

    Example:
        >>> task = ShapesTask("resnet", train_size=100, val_size=50, test_size=50, image_size=16)
        >>> x, y = task.dataset("val")[0]
        >>> tuple(x.shape), len(task.dataset("val"))
        ((3, 16, 16), 50)
    """

    name = "shapes"
    classes = CLASSES

    def __init__(
        self,
        model: str = "resnet",
        model_options: dict[str, Any] | None = None,
        image_size: int = 32,
        train_size: int = 10_000,
        val_size: int = 5_000,
        test_size: int = 5_000,
        seed: int = 0,
        noise: float = 0.08,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE, "smaller images cannot draw the shapes apart")
        why = f"every split holds each of the {len(CLASSES)} classes"
        self.sizes = {
            "train": _check_int("train_size", train_size, MIN_SPLIT_SIZE, why),
            "val": _check_int("val_size", val_size, MIN_SPLIT_SIZE, why),
            "test": _check_int("test_size", test_size, MIN_SPLIT_SIZE, why),
        }
        self.seed = _check_int("seed", seed, 0, "seeds are non-negative")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise <= 0.5:
            raise ConfigError(f"task 'shapes': task_options.noise must be a number in [0, 0.5], got {noise!r}")
        self.noise = float(noise)
        self.cache_dir = Path(os.path.expanduser(str(cache_dir))) if cache_dir is not None else None
        self.model_name = model
        self._model_options = dict(model_options or {})
        self._splits: dict[str, TensorDataset] = {}

    def build_model(self) -> nn.Module:
        return build_model(self.model_name, num_classes=len(CLASSES), in_channels=3, **self._model_options)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        # Known without drawing the train split.
        return torch.zeros((batch_size, 3, self.image_size, self.image_size), dtype=torch.float32)

    def dataset(self, split: str) -> Dataset:
        """The split's images (float32, normalised to [-1, 1]) and labels, generated on first use."""
        if split not in SPLITS:
            raise TaskError(f"task 'shapes': unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split not in self._splits:
            images, labels = self._load_or_generate(split)
            x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
            self._splits[split] = TensorDataset(x, torch.from_numpy(labels))
        return self._splits[split]

    def cache_key(self, split: str) -> str:
        """A short hash of every option that changes the images of ``split`` (names the cache file)."""
        options = {
            "version": GENERATOR_VERSION,
            "split": split,
            "n": self.sizes[split],
            "image_size": self.image_size,
            "seed": self.seed,
            "noise": self.noise,
        }
        return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]

    def _load_or_generate(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        args = (self.sizes[split], self.image_size, self.seed, split, self.noise)
        if self.cache_dir is None:
            return generate_shapes(*args)
        path = self.cache_dir / f"shapes-{split}-{self.cache_key(split)}.npz"
        if path.is_file():
            try:
                with np.load(path) as data:
                    return data["images"], data["labels"]
            except Exception:
                pass  # a torn or foreign file: draw the images again and overwrite it
        images, labels = generate_shapes(*args)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, images=images, labels=labels)
            tmp.replace(path)  # atomic, so parallel workers never read half a file
        except OSError as exc:
            raise ConfigError(
                f"task 'shapes': task_options.cache_dir {str(self.cache_dir)!r} is not writable ({exc}); fix it or remove the key"
            ) from None
        return images, labels


__all__ = ["CLASSES", "ShapesTask", "generate_shapes"]
