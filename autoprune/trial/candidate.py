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
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import torch
from torch import nn

from autoprune.base_model import BaseModelInfo
from autoprune.base_model import load_base
from autoprune.device import check_targets
from autoprune.device import provider_options
from autoprune.file_schemas import CachedTiming
from autoprune.latency import export_onnx
from autoprune.pruning import Group
from autoprune.pruning import Pruner
from autoprune.pruning import PruneResult
from autoprune.search.record import TIMING_EXTENT
from autoprune.search.record import Timing
from autoprune.search.record import TrialRecord
from autoprune.tasks import MetricResult
from autoprune.tasks import Task
from autoprune.tasks import build_task
from autoprune.trial.calibration import recipe_settings
from autoprune.trial.pruning_setup import make_pruner
from autoprune.trial.pruning_setup import resolve_round_to
from autoprune.trial.recovery import Recovery
from autoprune.trial.recovery import RecoveryReport
from autoprune.trial.recovery import Teacher
from autoprune.trial.screening import OVER_BUDGET

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


@dataclass
class Screening:
    """What is known of a candidate before its finetune: the metric after BN recalibration and the timing.

    Attributes:
        metric_after_bn: validation metric after BN recalibration.
        drop_after_bn: its drop from the base (positive = worse).
        speedup / speedup_spread / noisy: the candidate's timing (the same architecture as after the finetune).
        timing: the timing figures a screened trial records.
    """

    metric_after_bn: MetricResult
    drop_after_bn: float
    speedup: float
    speedup_spread: float
    noisy: bool
    timing: Timing = field(default_factory=Timing)


class Screened(Exception):
    """Raised when screening skips a candidate's finetune; carries the reason and what was measured."""

    def __init__(self, reason: str, screening: Screening, result: PruneResult) -> None:
        super().__init__(reason)
        self.reason = reason
        self.screening = screening
        self.result = result

    @property
    def over_budget(self) -> bool:
        """Whether it was skipped as predicted over budget (else: as unable to beat the incumbent)."""
        return self.reason.startswith(OVER_BUDGET)


def latency_settings(config: StudyConfig) -> LatencySettings:
    """The latency section of a config as the timer's settings.

    Every :class:`~autoprune.latency.LatencySettings` field the section has is taken by name (all but
    ``lock_dir``; ``tests/test_config.py`` checks the two agree), ``provider_options`` with the device filled in.
    """
    from autoprune.latency import LatencySettings

    section = dict(config.latency)
    shared = {f.name: section[f.name] for f in dataclass_fields(LatencySettings) if f.name in section}
    return LatencySettings(**{**shared, "provider_options": provider_options(config)})


@dataclass
class StudyContext:
    """Everything a process needs to evaluate candidates of one study; built once per process."""

    config: StudyConfig
    task: Task
    base_model: nn.Module
    base_info: BaseModelInfo
    base_metric: MetricResult
    pruner: Pruner
    groups: list[Group]
    round_to: int
    latency: LatencySettings
    workdir: Path
    base_onnx: Path
    cache: Any = None
    # This process's running median of base latencies (autoprune.latency.BaseLatencyPool), made on first use.
    base_pool: Any = None
    teacher: Teacher | None = None  # the base model's outputs per finetune batch, shared by every candidate

    @classmethod
    def build(cls, config: StudyConfig, workdir: Path | None = None, use_cache: bool = True) -> StudyContext:
        """Load the task and base model, export the base once, open the latency cache."""
        from autoprune.latency import LatencyCache
        check_targets(config)
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
        return cls(
            config, task, base_model, info, base_metric, pruner, groups, resolve_round_to(config), settings, wd, base_onnx, cache,
            teacher=Teacher(base_model, task),
        )

    def drop(self, metric: float) -> float:
        return self.task.drop(self.base_metric.value, metric)

    def latency_pool(self) -> Any:
        """This process's :class:`~autoprune.latency.BaseLatencyPool`, made on first use."""
        if self.base_pool is None:
            from autoprune.latency import BaseLatencyPool

            self.base_pool = BaseLatencyPool()
        return self.base_pool


def example_input(task: Task, config: StudyConfig) -> torch.Tensor:
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
    metric_after_bn: MetricResult | None = None
    recovery: RecoveryReport = field(default_factory=RecoveryReport)
    recipe: dict[str, Any] = field(default_factory=dict)

    def record(self, max_drop: float) -> TrialRecord:
        """The trial record of these figures (:mod:`autoprune.search.record`), feasible for ``max_drop``."""
        timing = Timing(
            speedup=self.speedup,
            speedup_spread=self.speedup_spread,
            speedup_interleaved=float(self.latency.get("speedup_interleaved", self.speedup)),
            pooled_base_latency_ms=self.latency.get("pooled_base_latency_ms"),
            latency_ms=self.latency_ms,
            base_latency_ms=self.base_latency_ms,
            noisy=self.latency_noisy,
            cached=self.latency_cached,
            **{k: self.latency.get(k) for k in TIMING_EXTENT},
            host=self.host,
            host_id=self.host_id,
        )
        after_bn = self.metric_after_bn
        return TrialRecord(
            metric=self.metric.value,
            metric_stderr=self.metric.stderr,
            metric_n=self.metric.n,
            drop=self.drop,
            drop_stderr=self.drop_stderr,
            feasible=bool(self.drop <= max_drop),
            timing=timing,
            macs=self.prune.macs,
            params=self.prune.params,
            channels=dict(self.prune.kept),
            ratios={k: round(v, 6) for k, v in self.prune.ratios.items()},
            clamps=[str(c) for c in self.prune.clamps],
            stage_seconds={k: round(v, 4) for k, v in self.stage_seconds.items()},
            metric_after_bn=after_bn.value if after_bn else None,
            metric_after_bn_stderr=after_bn.stderr if after_bn else None,
            recovery_recipe=dict(self.recipe),
            recovery=self.recovery.figures(),
        )

    def attrs(self, max_drop: float) -> dict[str, Any]:
        """The user attrs a trial records: :meth:`record` as stored."""
        return self.record(max_drop).to_attrs()


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
    screen: Callable[[Screening], str | None] | None = None,
    on_curve: Callable[[int, float], None] | None = None,
) -> CandidateResult:
    """Prune a copy of the base model, recover it, measure its metric and its interleaved speedup.

    The cheap figures come first: BN recalibration, the validation metric after it and the timing (the
    architecture is final before the finetune).  ``screen`` sees them and may skip the finetune.

    Args:
        ctx: the study context.
        ratios / uniform / global_ratio: the pruning plan (exactly one).
        hopeless_margin: raise :class:`Hopeless` when the metric after BN recalibration is worse than the
            base by more than this (None: never).
        keep_onnx: where to keep the candidate's ONNX file (default: a temp file, removed).
        progress: called with the name of each stage as it starts.
        screen: called with the :class:`Screening` before the finetune; a returned reason raises
            :class:`Screened` instead of finetuning.
        on_curve: called with ``(finetune step, calibration metric)`` at every judged point of the finetune
            (:meth:`Recovery.finetune`); an exception it raises stops the candidate there.

    Returns:
        The :class:`CandidateResult`.
    """
    seconds: dict[str, float] = {}
    say = progress or (lambda stage: None)
    with ctx.task.forbid_split("test"):
        model, result, recovery = prune_and_recalibrate(ctx, ratios, uniform, global_ratio, seconds, say)
        with _stage(seconds, "evaluate_after_bn"):
            after_bn = ctx.task.evaluate(model, "val")
        if hopeless_margin is not None and ctx.drop(after_bn.value) > hopeless_margin:
            raise Hopeless(after_bn.value, result)
        timing, fingerprint, cached = time_pruned(ctx, model, result.kept, seconds, say)
        _screen(ctx, screen, after_bn, timing, result)
        report, metric = _finetune_and_evaluate(ctx, model, recovery, seconds, say, on_curve)
    onnx_path = None
    if keep_onnx is not None:
        with _stage(seconds, "export"):
            onnx_path = _export(ctx, model, keep_onnx)
    return _candidate_result(ctx, model, result, after_bn, metric, report, timing, fingerprint, cached, seconds, onnx_path)


def _finetune_and_evaluate(
    ctx: StudyContext,
    model: nn.Module,
    recovery: Recovery,
    seconds: dict[str, float],
    say: Callable[[str], None],
    on_curve: Callable[[int, float], None] | None = None,
) -> tuple[RecoveryReport, MetricResult]:
    """The short finetune, then the validation metric after it: ``(recovery report, metric)``."""
    from autoprune.latency import training_section

    say("finetune")
    with training_section(), _stage(seconds, "finetune"):
        report = recovery.finetune(on_point=on_curve)
    say("evaluate")
    with _stage(seconds, "evaluate"):
        metric = ctx.task.evaluate(model, "val")
    return report, metric


def _candidate_result(
    ctx: StudyContext,
    model: nn.Module,
    result: PruneResult,
    after_bn: MetricResult,
    metric: MetricResult,
    report: RecoveryReport,
    timing: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    cached: bool,
    seconds: dict[str, float],
    onnx_path: Path | None,
) -> CandidateResult:
    """The :class:`CandidateResult` of the measured figures."""
    drop = ctx.drop(metric.value)
    return CandidateResult(
        prune=result,
        metric=metric,
        drop=drop,
        drop_stderr=float((metric.stderr**2 + ctx.base_metric.stderr**2) ** 0.5),
        speedup=float(timing["speedup"]),
        speedup_spread=float(timing["speedup_spread"]),
        latency_ms=float(timing["latency_ms"]),
        base_latency_ms=float(timing["base_latency_ms"]),
        latency_noisy=bool(timing["noisy"]),
        latency_cached=cached,
        host=str(fingerprint.get("hostname", "")),
        host_id=str(fingerprint["fingerprint_id"]),
        stage_seconds=seconds,
        onnx_path=onnx_path,
        model=model,
        latency=_latency_info(ctx, timing, fingerprint, cached),
        metric_after_bn=after_bn,
        recovery=report,
        recipe=recipe_settings(ctx.config),
    )


def _latency_info(ctx: StudyContext, timing: Mapping[str, Any], fingerprint: Mapping[str, Any], cached: bool) -> dict[str, Any]:
    """The timing as the architecture JSON records it (with the host it was measured on)."""
    return {
        "speedup": timing["speedup"],
        "speedup_spread": timing["speedup_spread"],
        "latency_ms": timing["latency_ms"],
        "base_latency_ms": timing["base_latency_ms"],
        "noisy": timing["noisy"],
        **{k: timing[k] for k in ("speedup_interleaved", "pooled_base_latency_ms", "latency_check", *TIMING_EXTENT) if k in timing},
        "cached": cached,
        "host": fingerprint,
        "settings": timing.get("settings", ctx.latency.as_dict()),
    }


def prune_and_recalibrate(
    ctx: StudyContext,
    ratios: Mapping[str, float] | None,
    uniform: float | None,
    global_ratio: float | None,
    seconds: dict[str, float],
    say: Callable[[str], None],
) -> tuple[nn.Module, PruneResult, Recovery]:
    """A pruned copy of the base with recalibrated BN statistics, and its recovery, ready to finetune."""
    from autoprune.latency import training_section

    with training_section():
        say("prune")
        with _stage(seconds, "prune"):
            model = copy.deepcopy(ctx.base_model)
            result = ctx.pruner.prune(model, ratios=ratios, uniform=uniform, global_ratio=global_ratio, source=ctx.base_info.sha256)
        say("bn_recalibration")
        with _stage(seconds, "bn_recalibration"):
            recovery = Recovery(model, ctx.task, ctx.config.recovery, teacher=ctx.teacher)
            recovery.recalibrate()
    return model, result, recovery


# The timing figures a screened trial records (the rest of the timing is in the latency cache).
_SCREENED_TIMING = ("speedup", "speedup_spread", "latency_ms", "base_latency_ms", *TIMING_EXTENT)


def _screen(
    ctx: StudyContext,
    screen: Callable[[Screening], str | None] | None,
    after_bn: MetricResult,
    timing: Mapping[str, Any],
    result: PruneResult,
) -> None:
    """Ask ``screen`` whether the finetune can pay off; raise :class:`Screened` with its reason when not."""
    if screen is None:
        return
    screening = Screening(
        metric_after_bn=after_bn,
        drop_after_bn=ctx.drop(after_bn.value),
        speedup=float(timing["speedup"]),
        speedup_spread=float(timing["speedup_spread"]),
        noisy=bool(timing["noisy"]),
        timing=Timing(**{k: timing[k] for k in _SCREENED_TIMING if k in timing}, noisy=bool(timing["noisy"])),
    )
    reason = screen(screening)
    if reason:
        raise Screened(reason, screening, result)


def time_pruned(
    ctx: StudyContext,
    model: nn.Module,
    kept: Mapping[str, int],
    seconds: dict[str, float],
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The candidate's interleaved timing: from the cache when this host timed these widths before.

    The model is exported (to a temporary file) only when it has to be timed.

    Returns:
        ``(timing, host fingerprint, whether the timing came from the cache)``.
    """
    from autoprune.latency import host_fingerprint

    fingerprint = host_fingerprint(ctx.latency.provider, ctx.latency.provider_options)
    key = None
    timing = None
    with _stage(seconds, "latency"):
        if ctx.cache is not None:
            key = ctx.cache.key(kept, fingerprint["fingerprint_id"], ctx.latency, extra=ctx.base_info.sha256)
            timing = ctx.cache.get(key, CachedTiming)
    if timing is not None and timing.get("noisy"):
        timing = None  # a timing that did not settle is not reused: this repeat times the candidate again
    if timing is not None:
        return timing, fingerprint, True
    say("export")
    with _stage(seconds, "export"):
        onnx_path = _export(ctx, model, None)
    say("latency")
    with _stage(seconds, "latency"):
        timing = _measure(ctx, onnx_path)
    onnx_path.unlink(missing_ok=True)
    if ctx.cache is not None and key is not None:
        ctx.cache.put(key, timing)
    return timing, fingerprint, False


@dataclass(frozen=True)
class ArchitectureTiming:
    """A re-timing of an architecture (:func:`time_architecture`).

    Attributes:
        kept: the kept channels per group of the rebuilt architecture.
        timing: the timing, as :func:`_measure` gives it for a candidate (``speedup``, ``speedup_spread``,
            ``noisy``, ...).
    """

    kept: dict[str, int]
    timing: dict[str, Any]


def time_architecture(ctx: StudyContext, ratios: Mapping[str, float]) -> ArchitectureTiming:
    """Prune a copy of the base to ``ratios`` and time it here, as a candidate is timed (never from the cache).

    Only the architecture matters for latency: no recovery, no finetune.  Screening confirms an incumbent's
    stored timing with it, side by side with this process's own candidates (the same pooled base latency).
    """
    from autoprune.latency import training_section

    with training_section():
        model = copy.deepcopy(ctx.base_model)
        result = ctx.pruner.prune(model, ratios=ratios, source=ctx.base_info.sha256)
    onnx_path = _export(ctx, model, None)
    try:
        timing = _measure(ctx, onnx_path)
    finally:
        onnx_path.unlink(missing_ok=True)
    return ArchitectureTiming(dict(result.kept), timing)


def _export(ctx: StudyContext, model: nn.Module, keep_onnx: Path | None) -> Path:
    path = keep_onnx or (ctx.workdir / f"candidate-{time.monotonic_ns()}.onnx")
    return export_onnx(model, example_input(ctx.task, ctx.config), path, opset=ctx.latency.opset)


def _measure(ctx: StudyContext, onnx_path: Path) -> dict[str, Any]:
    """Time the candidate interleaved with the base, checked against this process's pooled base latency.

    ``speedup`` is the checked one (:func:`autoprune.latency.measure_checked_speedup`): the interleaved
    ratio when it agrees with the candidate's latency over the pooled base, else the smaller of the two
    with ``noisy`` set; ``speedup_interleaved`` keeps the interleaved ratio.

    Returns:
        The dict the latency cache stores.
    """
    from autoprune.latency import measure_checked_speedup

    checked = measure_checked_speedup(onnx_path, ctx.base_onnx, ctx.latency, ctx.latency_pool())
    measured = checked.result
    agrees = checked.verdict.agrees
    return {
        "speedup": checked.speedup,
        "speedup_interleaved": measured.speedup,
        "speedup_spread": measured.speedup_spread,
        "latency_ms": measured.candidate.median_ms,
        "base_latency_ms": measured.baseline.median_ms,
        "pooled_base_latency_ms": checked.pooled_base_ms,
        "latency_check": "unchecked" if agrees is None else "agrees" if agrees else "disagrees",
        "noisy": checked.noisy,
        **{k: getattr(measured, k) for k in TIMING_EXTENT},
        "candidate": measured.candidate.as_dict(),
        "baseline": measured.baseline.as_dict(),
        "measured_at": measured.measured_at,
        "settings": measured.settings,
    }
