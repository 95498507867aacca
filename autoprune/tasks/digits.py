"""Built-in task ``digits``: scikit-learn's handwritten digits (ships with scikit-learn, no download)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import TensorDataset

from autoprune.errors import ConfigError
from autoprune.models import build_model
from autoprune.tasks.base import ClassificationTask
from autoprune.tasks.base import split_indices


class DigitsTask(ClassificationTask):
    """8x8 grey digits, resized (bilinear) to ``image_size``, split train/val/test deterministically by ``seed``.

    Args:
        model: built-in model name (``resnet`` or ``mobilenet``).
        model_options: passed to the model.
        image_size: side of the resized images (default 16).
        seed: split seed.
        val_fraction: share of the 1,797 images used for validation.
        test_fraction: share held out for confirmation.

    Example:
        >>> task = DigitsTask("resnet")
        >>> len(task.dataset("train")) + len(task.dataset("val")) + len(task.dataset("test"))
        1797
    """

    name = "digits"

    def __init__(
        self,
        model: str = "resnet",
        model_options: dict[str, Any] | None = None,
        image_size: int = 16,
        seed: int = 0,
        val_fraction: float = 0.25,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ConfigError(f"task 'digits': task_options.image_size must be >= 8, got {image_size}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
            raise ConfigError("task 'digits': task_options.val_fraction and test_fraction must be in (0, 1) and sum below 0.9")
        self.model_name = model
        self._model_options = dict(model_options or {})
        self._image_size = image_size
        self._split_seed = seed
        self._fractions = [1 - val_fraction - test_fraction, val_fraction, test_fraction]
        self._splits: dict[str, Dataset] | None = None  # loaded on first use: apply and groups never need it

    def _load_splits(self) -> dict[str, Dataset]:
        from sklearn.datasets import load_digits  # heavy (seconds on a busy host); only where images are read

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        if self._image_size != 8:
            x = F.interpolate(x, size=(self._image_size, self._image_size), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        y = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = split_indices(len(y), self._fractions, self._split_seed)
        return {
            "train": TensorDataset(x[train], y[train]),
            "val": TensorDataset(x[val], y[val]),
            "test": TensorDataset(x[test], y[test]),
        }

    def build_model(self) -> nn.Module:
        return build_model(self.model_name, num_classes=10, in_channels=1, **self._model_options)

    def dataset(self, split: str) -> Dataset:
        if self._splits is None:
            self._splits = self._load_splits()
        return self._splits[split]

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Zeros of the images' shape, known without loading them."""
        return torch.zeros((batch_size, 1, self._image_size, self._image_size), dtype=torch.float32)
