"""Shared fixtures: a tiny digits study (small ResNet, few epochs, tiny recovery, short timings) and its base.

The session-scoped study is trained once (a few seconds) and reused by every test file.  Tests must not
change its files; to vary a setting, write a new study with :func:`write_study` (or the ``study_factory``
fixture), which by default points ``base.checkpoint`` at the already trained base so nothing is retrained.

Fixtures:
    tiny_study: the session's trained tiny study (:class:`TinyStudy`: config path, base checkpoint, sha256).
    tiny_config: a freshly loaded :class:`~autoprune.config.StudyConfig` of ``tiny_study`` (safe to mutate).
    tiny_task: a fresh digits task of that config.
    tiny_base_model: the trained base model, freshly loaded (eval mode, safe to prune in place).
    study_factory: ``study_factory(overrides=None, filename="study.yaml", trained_base=True) -> Path`` writes
        a variant of the tiny study in ``tmp_path`` (``{"max_drop": 0.3}``; a None value drops a key).
    untrained_checkpoint: ``untrained_checkpoint(model="mobilenet", **model_options) -> Path``, a seeded
        random-init state_dict (for tests that need a checkpoint but no accuracy, e.g. replay of indices).

Helpers (import them with ``from conftest import ...``): ``TINY_STUDY``, ``write_study``, ``deep_merge``,
``run_cli``, ``CodeOnUnpickle``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

# One intra-op thread: on a small shared machine, torch's default (one thread per core) makes these tiny
# models 5-10x slower as soon as anything else runs.  Subprocesses get the same through OMP_NUM_THREADS.
torch.set_num_threads(1)

# The tiny study: every setting small so that a base trains in seconds and a candidate (prune, BN
# recalibration, a few finetune steps, export, a short interleaved timing) takes about a second.
# round_to is fixed at 8 (not "auto") so channel counts are the same on AVX2 and AVX-512 hosts.
TINY_STUDY: dict[str, Any] = {
    "name": "tiny-digits",
    "task": "digits",
    "task_options": {"image_size": 16, "seed": 0},
    "model": "resnet",
    "model_options": {"widths": [16, 32, 32]},
    "criterion": "l2",
    "max_drop": 0.05,
    "base": {"epochs": 2, "lr": 0.05, "batch_size": 32, "seed": 0},
    "pruning": {"round_to": 8, "min_channels": 8, "min_fraction": 0.1, "first_layer_max_ratio": 0.5, "importance_batches": 2},
    # Screening off: whether a trial is screened depends on timings, and most tests count COMPLETE trials;
    # tests/test_screening.py turns it on.
    "search": {"trials": 4, "sampler": "random", "seed": 0, "bounds_margin": 1, "sweep_ratios": [0.25, 0.5], "screening": False,
               "torch_threads": 1},
    # The recipe is pinned (no calibration) so studies start fast; tests of calibration turn it on.
    "recovery": {
        "bn_batches": 2, "finetune_steps": 4, "lr": 0.01, "warmup_steps": 1, "batch_size": 64, "distill": True,
        "calib_size": 128, "checkpoints": 2, "calibration": {"enabled": False},
    },
    # lock: false keeps test timings off the host-wide timing lock that real studies share.
    "latency": {"batch_size": 8, "threads": 1, "repeats": 20, "warmup": 2, "blocks": 2, "cv_threshold": 1.0, "max_remeasure": 0, "lock": False},
}


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, section by section; a value of ``None`` deletes the key."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_study(
    folder: Path,
    overrides: Mapping[str, Any] | None = None,
    filename: str = "study.yaml",
    base: Mapping[str, Any] = TINY_STUDY,
) -> Path:
    """Write ``base`` (default ``TINY_STUDY``) merged with ``overrides`` as YAML into ``folder``; returns the file.

    Example: ``write_study(tmp_path, {"model": "mobilenet", "model_options": None})`` (None drops a key).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(yaml.safe_dump(deep_merge(base, overrides or {}), sort_keys=False))
    return path


# A guard against a hung command, never a pass/fail window: on a busy host (load 5-12 on two cores) a
# fresh interpreter needs minutes to import torch, and a tight limit turned that into errors.  A test that
# promises a duration measures it itself, from a point that excludes the start-up, against the product's
# configured bound plus a stated tolerance.
HANG_GUARD_S = 1800.0


def run_cli(*args: str, cwd: Path | None = None, timeout: float = HANG_GUARD_S, raw_newlines: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``autoprune ARGS`` in a fresh interpreter (real exit code, real stderr).

    ``timeout`` only stops a hung command (see :data:`HANG_GUARD_S`).

    ``raw_newlines`` keeps carriage returns as written (progress bars redraw their line with them), where
    text mode would turn them into line breaks.
    """
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=not raw_newlines, timeout=timeout, env=env)
    if raw_newlines:
        res.stdout, res.stderr = res.stdout.decode(), res.stderr.decode()
    return res


class CodeOnUnpickle:
    """Pickles to a call of ``os.mkdir(marker)``: a file holding it runs code if anything unpickles it.

    Save it inside a checkpoint to check that the checkpoint is refused and that ``marker`` never appears.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@dataclass(frozen=True)
class TinyStudy:
    """The session's trained tiny study.

    Attributes:
        config_path: the study YAML (``artifact_dir`` is the default ``artifacts/<name>`` beside it).
        checkpoint: the trained base state_dict.
        sha256: the checkpoint's sha256.
        val_metric: the base's validation accuracy.
    """

    config_path: Path
    checkpoint: Path
    sha256: str
    val_metric: float


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    from autoprune.base_model import train_base
    from autoprune.config import load_config
    from autoprune.tasks import build_task

    path = write_study(tmp_path_factory.mktemp("tiny-study"))
    config = load_config(path)
    task = build_task(config)
    with task.forbid_split("test"):
        info = train_base(config, task)
    assert info.val_metric is not None and info.val_metric > 0.5, f"tiny base did not learn: {info.val_metric}"
    return TinyStudy(path, info.path, info.sha256, info.val_metric)


@pytest.fixture
def tiny_config(tiny_study: TinyStudy):
    from autoprune.config import load_config

    return load_config(tiny_study.config_path)


@pytest.fixture
def tiny_task(tiny_config):
    from autoprune.tasks import build_task

    return build_task(tiny_config)


@pytest.fixture
def tiny_base_model(tiny_study: TinyStudy, tiny_task) -> torch.nn.Module:
    from autoprune.base_model import load_weights

    return load_weights(tiny_task.build_model(), tiny_study.checkpoint)


@pytest.fixture
def study_factory(tmp_path: Path, tiny_study: TinyStudy) -> Callable[..., Path]:
    """``study_factory(overrides=None, filename="study.yaml", trained_base=True) -> Path``.

    With ``trained_base`` the variant reads the session's trained checkpoint (``base.checkpoint``), so it
    must keep the tiny study's task and model; pass ``trained_base=False`` for another model.
    """

    def make(overrides: Mapping[str, Any] | None = None, filename: str = "study.yaml", trained_base: bool = True) -> Path:
        base = deep_merge(TINY_STUDY, {"base": {"checkpoint": str(tiny_study.checkpoint)}}) if trained_base else TINY_STUDY
        return write_study(tmp_path, overrides, filename, base=base)

    return make


@pytest.fixture
def untrained_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``untrained_checkpoint(model, **model_options) -> Path``: a seeded random-init digits model's state_dict."""

    def make(model: str = "mobilenet", **model_options: Any) -> Path:
        from autoprune.models import build_model

        torch.manual_seed(0)
        net = build_model(model, num_classes=10, in_channels=1, **model_options)
        # Non-trivial BN statistics and scales, so replay errors show up in outputs and in BN-based scores.
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
        path = tmp_path / f"{model}-untrained.pt"
        torch.save(net.state_dict(), path)
        return path

    return make
