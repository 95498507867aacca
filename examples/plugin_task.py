"""An autoprune plugin task: your own model and your own data, no change to autoprune.

A study config names the function that builds the task::

    task: plugin_task:make_task      # module:function; the module is found next to the config file
    task_options: {image_size: 16}   # passed to make_task as keyword arguments

``make_task(config=..., **task_options)`` returns an :class:`autoprune.tasks.Task`.  A task gives the
model builder, the data of each split (``train``, ``val``, ``test`` and, if it likes, ``selection``: the
images that judge ``autoprune confirm``'s candidates; without one, autoprune carves it out of ``val``),
the metric (name, direction, how to compute it over a loader) and,
optionally, the loss, the layers never pruned and, for transformers, attention heads, group ties and an
``after_pruning`` hook.  Here: a small VGG-style CNN of our own that tells four orientations of noisy
gratings apart, on images this module draws itself from a seed.

Run it (from the repository root)::

    autoprune run examples/plugin-study.yaml
    autoprune pareto examples/plugin-study.yaml

or in Python::

    >>> task = make_task(image_size=16, train_size=64, val_size=32, test_size=32)
    >>> model = task.build_model()
    >>> task.evaluate(model, "val").n, task.evaluate(model, "selection").n  # 30% of val carved out for confirm
    (22, 10)
    >>> task = make_task(image_size=16, train_size=64, val_size=32, test_size=32, selection_size=16)
    >>> task.evaluate(model, "val").n, task.evaluate(model, "selection").n  # a selection split of its own
    (32, 16)
"""

from __future__ import annotations

import math
from typing import Any
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import TensorDataset

from autoprune.tasks import ClassificationTask

ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)  # degrees; one class each


class GratingNet(nn.Module):
    """conv-BN-ReLU blocks with max-pooling, global average pooling and a linear classifier.

    Args:
        num_classes: outputs.
        widths: channels of the conv blocks (one max-pool after each block but the last).
    """

    def __init__(self, num_classes: int = len(ORIENTATIONS), widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 1
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def make_gratings(n: int, size: int, seed: int, noise: float = 1.5) -> TensorDataset:
    """``n`` grey ``size`` x ``size`` gratings, balanced over :data:`ORIENTATIONS`, with Gaussian noise.

    Args:
        n: images.
        size: image side.
        seed: the same seed always gives the same images.
        noise: noise standard deviation (the grating's amplitude is 1).

    Returns:
        A ``TensorDataset`` of ``(1, size, size)`` float images and int64 labels.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(ORIENTATIONS)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angles = np.deg2rad(np.asarray(ORIENTATIONS)[labels] + rng.uniform(-15, 15, size=n))
    period = rng.uniform(3.0, 6.0, size=n)
    phase = rng.uniform(0, 2 * math.pi, size=n)
    proj = xx[None] * np.cos(angles)[:, None, None] + yy[None] * np.sin(angles)[:, None, None]
    images = np.sin(2 * math.pi * proj / period[:, None, None] + phase[:, None, None])
    images += rng.normal(0, noise, size=images.shape)
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    return TensorDataset(x, torch.tensor(labels, dtype=torch.long))


class GratingsTask(ClassificationTask):
    """Classify the orientation of noisy gratings with a :class:`GratingNet` (accuracy, higher is better).

    Args:
        image_size: image side.
        train_size: training images.
        val_size: validation images (the search's metric).
        test_size: held-out images (read once by ``autoprune export``, for the exported model).
        selection_size: images of a selection split of the task's own (judges ``autoprune confirm``'s
            candidates); ``None``: autoprune carves it out of the validation images.
        seed: data seed; each split draws from its own seed.
        widths: channels of the network's conv blocks.
    """

    name = "gratings"
    model_name = "gratingnet"
    metric_name = "accuracy"
    metric_direction = "maximize"

    def __init__(
        self,
        image_size: int = 16,
        train_size: int = 2000,
        val_size: int = 1000,
        test_size: int = 1000,
        seed: int = 0,
        widths: Sequence[int] = (16, 32, 32),
        selection_size: int | None = None,
    ) -> None:
        super().__init__()
        self.widths = list(widths)
        self._splits = {
            "train": make_gratings(train_size, image_size, seed * 3 + 0),
            "val": make_gratings(val_size, image_size, seed * 3 + 1),
            "test": make_gratings(test_size, image_size, seed * 3 + 2),
        }
        if selection_size is not None:
            # A stream of its own, apart from every seed's train/val/test streams (seed * 3 + 0..2).
            self._splits["selection"] = make_gratings(selection_size, image_size, 1_000_000 + seed)
            self.own_selection_split = True

    def build_model(self) -> nn.Module:
        return GratingNet(len(ORIENTATIONS), self.widths)

    def dataset(self, split: str) -> Dataset:
        return self._splits[split]

    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        # The classifier's outputs are the classes: never prune them.
        return [model.head]


def make_task(config: Any = None, **options: Any) -> GratingsTask:
    """The plugin entry point named in the study config (``task: plugin_task:make_task``).

    Args:
        config: the study config (unused here; a plugin may read e.g. ``config.model_options``).
        **options: the config's ``task_options``.

    Returns:
        The task.
    """
    return GratingsTask(**options)
