"""The unpruned base model: trained once per study, cached as a plain state_dict, identified by sha256."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoprune.device import check_targets
from autoprune.errors import TaskError
from autoprune.file_schemas import BaseMeta
from autoprune.jsonfile import read_model
from autoprune.jsonfile import write_json

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.tasks import Task


@dataclass
class BaseModelInfo:
    """Where the base checkpoint is and what it scores."""

    path: Path
    sha256: str
    val_metric: float | None = None
    trained_seconds: float | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain state_dict safely (``weights_only=True``; nothing is unpickled)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TaskError(f"{path}: checkpoint not found; run 'autoprune train-base CONFIG' first") from None
    except Exception as exc:
        # torch's weights_only message is many lines and suggests weights_only=False: keep only the cause.
        noise = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(noise)]
        blocked = next((line for line in lines if "GLOBAL" in line), "")
        if blocked:
            raise TaskError(
                f"{path}: not a loadable state_dict checkpoint: it holds pickled objects, which autoprune never "
                f"unpickles (torch.load weights_only=True; {blocked.rstrip('.')}); "
                "save a plain state_dict with torch.save(model.state_dict(), path)"
            ) from None
        detail = ": " + " ".join(lines[:2]) if lines else ""
        raise TaskError(f"{path}: not a loadable state_dict checkpoint ({type(exc).__name__}{detail})") from None
    if not isinstance(state, dict):
        raise TaskError(f"{path}: expected a state_dict (a mapping of tensors), found {type(state).__name__}")
    return state


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state_dict with every tensor on the CPU, for device-independent files.

    A model on the CPU gives its own state_dict unchanged (the same bytes as ever when saved); otherwise a
    copy keeps the module version metadata that ``load_state_dict`` reads."""
    state = model.state_dict()
    if all(v.device.type == "cpu" for v in state.values()):
        return state
    moved = OrderedDict((k, v.detach().cpu()) for k, v in state.items())
    moved._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return moved


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a state_dict checkpoint into ``model``; mismatched keys or shapes are named in the error."""
    state = load_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise TaskError(f"{path}: checkpoint does not fit the model: {' '.join(first)}") from None
    return model.eval()


def train_base(
    config: StudyConfig,
    task: Task,
    force: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
) -> BaseModelInfo:
    """Train the base model once and cache it (reused unless ``force``).

    Args:
        config: the study config (``base`` section: epochs, lr, batch size, checkpoint path).
        task: the task.
        force: retrain even if a checkpoint exists.
        progress: called with ``(epoch, epochs, loss)`` after every epoch.

    Returns:
        The checkpoint's path, sha256 and validation metric.
    """
    path = config.checkpoint_path()
    meta_path = path.with_suffix(".json")
    if path.is_file() and not force:
        meta = _read_meta(meta_path)
        return BaseModelInfo(path, file_sha256(path), meta.val_metric, meta.trained_seconds)
    check_targets(config)  # a device this host lacks is refused before the first epoch
    settings = config.base
    torch.manual_seed(settings.seed)
    model = task.build_model().to(task.device)
    loader = task.loader("train", settings.batch_size, shuffle=True, seed=settings.seed, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    total = settings.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        running = 0.0
        for x, y in loader:
            loss = task.loss(task.logits(model(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
        if progress is not None:
            progress(epoch + 1, settings.epochs, running / max(1, len(loader)))
    seconds = time.perf_counter() - start
    model.eval()
    val = task.evaluate(model, "val")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(cpu_state(model), tmp)  # device-independent: loads anywhere
    tmp.replace(path)
    sha = file_sha256(path)
    write_json(meta_path, {"sha256": sha, "val_metric": val.value, "val_stderr": val.stderr, "trained_seconds": seconds})
    return BaseModelInfo(path, sha, val.value, seconds)


def _read_meta(meta_path: Path) -> BaseMeta:
    """The checkpoint's metadata (validation metric, training time); empty when missing.  It only describes the
    checkpoint, so a torn or foreign file is named with its fix rather than trusted."""
    if not meta_path.is_file():
        return BaseMeta()
    fix = "delete it (it only records the base's validation metric and training time; the checkpoint stays valid)"
    return read_model(meta_path, BaseMeta, fix)


def load_base(config: StudyConfig, task: Task) -> tuple[nn.Module, BaseModelInfo]:
    """The trained base model in eval mode and its checkpoint info (trains it first if missing)."""
    info = train_base(config, task)
    return load_weights(task.build_model(), info.path).to(task.device), info
