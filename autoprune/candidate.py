"""One candidate, end to end: prune -> recover -> evaluate -> export -> time.

Baseline sweeps and search trials go through the same :func:`evaluate_candidate`, so every point of a
study (uniform, global, searched) gets the same recovery recipe and the same interleaved timing.
The held-out test split is locked for the whole evaluation.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable
from typing import Iterator
from typing import Mapping

import torch
from torch import nn

from autoprune.base_model import BaseModelInfo
from autoprune.base_model import load_base
from autoprune.pruning import Group
from autoprune.pruning import Pruner
from autoprune.pruning import PruneResult
from autoprune.pruning_setup import make_pruner
from autoprune.pruning_setup import resolve_round_to
from autoprune.recovery import finetune
from autoprune.recovery import recalibrate_bn
from autoprune.tasks import MetricResult
from autoprune.tasks import Task
from autoprune.tasks import build_task

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.latency import LatencySettings

log = logging.getLogger("autoprune")


class Hopeless(Exception):
    """Raised when a candidate's metric after BN recalibration is too far below the base to recover."""

    def __init__(self, metric: float, result: PruneResult) -> None:
        super().__init__(f"metric {metric:.4f} after BN recalibration")
        self.metric = metric
        self.result = result


def latency_settings(config: "StudyConfig") -> "LatencySettings":
    """The latency section of a config as the timer's settings."""
    from autoprune.latency import LatencySettings

    lat = config.latency
    return LatencySettings(
        batch_size=lat.batch_size,
        threads=lat.threads,
        repeats=lat.repeats,
        warmup=lat.warmup,
        blocks=lat.blocks,
        cv_threshold=lat.cv_threshold,
        max_remeasure=lat.max_remeasure,
        lock=lat.lock,
        exclusive=lat.exclusive,
        opset=lat.opset,
    )


@dataclass
class StudyContext:
    """Everything a process needs to evaluate candidates of one study; built once per process."""

    config: "StudyConfig"
    task: Task
    base_model: nn.Module
    base_info: BaseModelInfo
    base_metric: MetricResult
    pruner: Pruner
    groups: list[Group]
    round_to: int
    latency: "LatencySettings"
    workdir: Path
    base_onnx: Path
    cache: Any = None

    @classmethod
    def build(cls, config: "StudyConfig", workdir: Path | None = None, use_cache: bool = True) -> "StudyContext":
        """Load the task and base model, export the base once, open the latency cache."""
        from autoprune.latency import LatencyCache
        from autoprune.latency import export_onnx

        task = build_task(config)
        base_model, info = load_base(config, task)
        with task.forbid_split("test"):
            base_metric = task.evaluate(base_model, "val")
        pruner = make_pruner(config, task)
        groups = pruner.groups(base_model)
        wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="autoprune-"))
        wd.mkdir(parents=True, exist_ok=True)
        settings = latency_settings(config)
        base_onnx = export_onnx(base_model, example_input(task, config), wd / "base.onnx", opset=settings.opset)
        cache = None
        if use_cache:
            cache_dir = config.artifact_path()
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache = LatencyCache(cache_dir / "latency-cache.sqlite")
        return cls(config, task, base_model, info, base_metric, pruner, groups, resolve_round_to(config), settings, wd, base_onnx, cache)

    def drop(self, metric: float) -> float:
        return self.task.drop(self.base_metric.value, metric)


def example_input(task: Task, config: "StudyConfig") -> torch.Tensor:
    """The deployment-shaped input (``latency.batch_size``, ``latency.input_shape``) used for export."""
    x = task.example_input(config.latency.batch_size)
    if config.latency.input_shape:
        x = torch.zeros((config.latency.batch_size, *config.latency.input_shape), dtype=x.dtype)
    return x


@dataclass
class CandidateResult:
    """Everything measured about one candidate."""

    prune: PruneResult
    metric: MetricResult
    drop: float
    drop_stderr: float
    speedup: float
    speedup_spread: float
    latency_ms: float
    base_latency_ms: float
    latency_noisy: bool
    latency_cached: bool
    host: str
    host_id: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    onnx_path: Path | None = None
    model: nn.Module | None = None
    latency: dict[str, Any] = field(default_factory=dict)

    def attrs(self, max_drop: float) -> dict[str, Any]:
        """The user attrs a trial records (names fixed: other tools read them)."""
        return {
            "metric": self.metric.value,
            "metric_stderr": self.metric.stderr,
            "metric_n": self.metric.n,
            "drop": self.drop,
            "drop_stderr": self.drop_stderr,
            "feasible": bool(self.drop <= max_drop),
            "speedup": self.speedup,
            "speedup_spread": self.speedup_spread,
            "latency_ms": self.latency_ms,
            "base_latency_ms": self.base_latency_ms,
            "latency_noisy": self.latency_noisy,
            "latency_cached": self.latency_cached,
            "macs": self.prune.macs,
            "params": self.prune.params,
            "channels": dict(self.prune.kept),
            "ratios": {k: round(v, 6) for k, v in self.prune.ratios.items()},
            "clamps": [str(c) for c in self.prune.clamps],
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "host": self.host,
            "host_id": self.host_id,
        }


@contextmanager
def _stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def evaluate_candidate(
    ctx: StudyContext,
    ratios: Mapping[str, float] | None = None,
    uniform: float | None = None,
    global_ratio: float | None = None,
    hopeless_margin: float | None = None,
    keep_onnx: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> CandidateResult:
    """Prune a copy of the base model, recover it, measure its metric and its interleaved speedup.

    Args:
        ctx: the study context.
        ratios / uniform / global_ratio: the pruning plan (exactly one).
        hopeless_margin: raise :class:`Hopeless` when the metric after BN recalibration is worse than the
            base by more than this (None: never).
        keep_onnx: where to keep the candidate's ONNX file (default: a temp file, removed).
        progress: called with the name of each stage as it starts.

    Returns:
        The :class:`CandidateResult`.
    """
    from autoprune.latency import export_onnx
    from autoprune.latency import host_fingerprint
    from autoprune.latency import measure_speedup
    from autoprune.latency import training_section

    config = ctx.config
    rec = config.recovery
    seconds: dict[str, float] = {}
    say = progress or (lambda stage: None)
    with ctx.task.forbid_split("test"):
        with training_section():
            say("prune")
            with _stage(seconds, "prune"):
                model = copy.deepcopy(ctx.base_model)
                result = ctx.pruner.prune(model, ratios=ratios, uniform=uniform, global_ratio=global_ratio)
            say("bn_recalibration")
            with _stage(seconds, "bn_recalibration"):
                recalibrate_bn(model, ctx.task, rec.bn_batches, rec.batch_size, seed=rec.seed)
            if hopeless_margin is not None:
                with _stage(seconds, "evaluate"):
                    early = ctx.task.evaluate(model, "val")
                if ctx.drop(early.value) > hopeless_margin:
                    raise Hopeless(early.value, result)
            say("finetune")
            with _stage(seconds, "finetune"):
                finetune(model, ctx.task, rec, teacher=ctx.base_model if rec.distill else None)
        say("evaluate")
        with _stage(seconds, "evaluate"):
            metric = ctx.task.evaluate(model, "val")
    say("export")
    with _stage(seconds, "export"):
        onnx_path = keep_onnx or (ctx.workdir / f"candidate-{time.monotonic_ns()}.onnx")
        export_onnx(model, example_input(ctx.task, config), onnx_path, opset=ctx.latency.opset)
    fingerprint = host_fingerprint()
    say("latency")
    with _stage(seconds, "latency"):
        cached = None
        key = None
        if ctx.cache is not None:
            key = ctx.cache.key(result.kept, fingerprint["fingerprint_id"], ctx.latency, extra=ctx.base_info.sha256)
            cached = ctx.cache.get(key)
        if cached is None:
            measured = measure_speedup(onnx_path, ctx.base_onnx, ctx.latency)
            timing = {
                "speedup": measured.speedup,
                "speedup_spread": measured.speedup_spread,
                "latency_ms": measured.candidate.median_ms,
                "base_latency_ms": measured.baseline.median_ms,
                "noisy": measured.noisy,
                "candidate": measured.candidate.as_dict(),
                "baseline": measured.baseline.as_dict(),
                "measured_at": measured.measured_at,
                "settings": measured.settings,
            }
            if ctx.cache is not None and key is not None:
                ctx.cache.put(key, timing)
        else:
            timing = cached
    if keep_onnx is None:
        onnx_path.unlink(missing_ok=True)
        onnx_path = None
    drop = ctx.drop(metric.value)
    drop_se = float((metric.stderr**2 + ctx.base_metric.stderr**2) ** 0.5)
    latency_info = {
        "speedup": timing["speedup"],
        "speedup_spread": timing["speedup_spread"],
        "latency_ms": timing["latency_ms"],
        "base_latency_ms": timing["base_latency_ms"],
        "noisy": timing["noisy"],
        "cached": cached is not None,
        "host": fingerprint,
        "settings": timing.get("settings", ctx.latency.as_dict()),
    }
    return CandidateResult(
        prune=result,
        metric=metric,
        drop=drop,
        drop_stderr=drop_se,
        speedup=float(timing["speedup"]),
        speedup_spread=float(timing["speedup_spread"]),
        latency_ms=float(timing["latency_ms"]),
        base_latency_ms=float(timing["base_latency_ms"]),
        latency_noisy=bool(timing["noisy"]),
        latency_cached=cached is not None,
        host=str(fingerprint.get("hostname", "")),
        host_id=str(fingerprint["fingerprint_id"]),
        stage_seconds=seconds,
        onnx_path=onnx_path,
        model=model,
        latency=latency_info,
    )
