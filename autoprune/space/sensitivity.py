"""Per-group sensitivity curves (each group pruned alone, scored after BN recalibration) and the sensitivity baseline.

The peer method of AIMET's greedy compression-ratio selection: every searched group is pruned alone to
the reachable widths nearest to a grid of ratios, its BN statistics recalibrated exactly as a trial's are
(:class:`autoprune.trial.recovery.Recovery`), and its validation metric measured; beside it, what that width saves
of the base network's cost: MACs (only that group pruned) and latency (the base with only that group
pruned, timed by the study's interleaved timer, :func:`autoprune.latency.measure_checked_speedup`).  No
finetune: a point costs one BN recalibration, one evaluation and one timing.

The curves live on the study (attr :data:`SENSITIVITY_ATTR`, :class:`~autoprune.space.allocation.SensitivityCurves`),
written after every finished group, so an interrupted measurement resumes where it stopped.  The sensitivity
baseline (:func:`sensitivity_baseline`) sweeps greedy allocations (:mod:`autoprune.space.allocation`) at a few target
speedups, each evaluated as a full trial like the uniform and global sweep points: its figures are kept on the study
(attr :data:`SWEEP_ATTR`, reused while the targets and the cost are the same) and its weights as a sweep record
(:mod:`autoprune.space.sweep_records`), so that the enqueued sensitivity trial takes them over instead of finetuning
the same architecture again.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any

import optuna

from autoprune.errors import StorageError
from autoprune.pruning import PruneResult
from autoprune.space.allocation import Allocation
from autoprune.space.allocation import CurvePoint
from autoprune.space.allocation import GroupCurve
from autoprune.space.allocation import SensitivityCurves
from autoprune.space.allocation import greedy_allocation
from autoprune.space.allocation import saving_for_speedup
from autoprune.space.baselines import result_point
from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import fastest_feasible
from autoprune.space.bounds import largest_feasible
from autoprune.space.sweep_records import save_sweep_record
from autoprune.space.widths import nearest_widths
from autoprune.space.widths import width_space
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import evaluate_candidate
from autoprune.trial.candidate import prune_and_recalibrate
from autoprune.trial.candidate import time_pruned
from autoprune.trial.pruning_setup import head_plans

log = logging.getLogger("autoprune")
SENSITIVITY_ATTR = "sensitivity"
# The swept allocations: {"targets", "cost", "seconds", "points": [SweepPoint.as_dict()]}.
SWEEP_ATTR = "sensitivity_sweep"
KIND = "sensitivity"
# Beyond the faster of the best uniform and global baselines, the default targets ask this much more speedup.
BEYOND = 1.25


@dataclass(frozen=True)
class PlannedPoint:
    """One point of a group's curve to measure: the grid ratio, the width nearest to it and the ratio that prunes to it."""

    group: str
    grid_ratio: float
    width: int
    ratio: float


def plan_points(ctx: StudyContext, grid: Sequence[float]) -> dict[str, list[PlannedPoint]]:
    """Per searched group (tie followers follow their leader), the widths to measure, widest first.

    Each grid ratio maps to the group's nearest reachable width at the study's ``round_to`` and guards; ratios
    that map to the same width are measured once, and one that leaves the group whole is not measured.
    """
    space = width_space(ctx.groups, ctx.pruner.guards, [], None, head_plans(ctx.groups))
    plan: dict[str, list[PlannedPoint]] = {}
    for name, g in space.items():
        seen: dict[int, PlannedPoint] = {}
        for r in sorted(grid):
            width = nearest_widths({name: g}, {name: r})[name]
            if width < g.channels and width not in seen:
                seen[width] = PlannedPoint(name, r, width, g.ratio(width))
        plan[name] = sorted(seen.values(), key=lambda p: -p.width)
    return plan


def curves_meta(ctx: StudyContext, timed: bool) -> dict[str, Any]:
    """What the curves depend on: measured again when any of it changes."""
    rec = ctx.config.recovery
    return {
        "base_sha256": ctx.base_info.sha256,
        "criterion": ctx.config.criterion,
        "round_to": ctx.round_to,
        "bn": {"bn_batches": rec.bn_batches, "calib_size": rec.calib_size, "seed": rec.seed},
        "latency": ctx.latency.as_dict() if timed else None,
    }


def base_macs(ctx: StudyContext) -> int:
    """MACs of the unpruned base at the example input (counted as every pruned point's MACs are)."""
    return ctx.pruner.prune(copy.deepcopy(ctx.base_model), ratios={}).macs


@dataclass(frozen=True)
class BnOnly:
    """A pruned candidate after BN recalibration (no finetune): its prune, metric and timing (None: untimed)."""

    result: PruneResult
    metric: float
    drop: float
    speedup: float | None
    noisy: bool


def measure_bn_only(ctx: StudyContext, ratios: Mapping[str, float], timed: bool = True) -> BnOnly:
    """Prune a copy of the base by ``ratios``, recalibrate BN, evaluate and (if ``timed``) time it."""
    seconds: dict[str, float] = {}
    with ctx.task.forbid_split("test"):
        # The trial's own stages (prune a copy, BN recalibration; the cached interleaved timing), so a point is
        # measured exactly like a trial's BN-only state.
        model, result, _ = prune_and_recalibrate(ctx, ratios, None, None, seconds, lambda s: None)
        metric = ctx.task.evaluate(model, "val").value
    speedup, noisy = None, False
    if timed:
        timing, _, _ = time_pruned(ctx, model, result.kept, seconds, lambda s: None)
        speedup, noisy = float(timing["speedup"]), bool(timing["noisy"])
    return BnOnly(result, float(metric), float(ctx.drop(metric)), speedup, noisy)


def measure_point(ctx: StudyContext, planned: PlannedPoint, macs0: int, timed: bool = True) -> CurvePoint:
    """The curve point of ``planned.group`` pruned alone to its width (the rest of the base untouched)."""
    m = measure_bn_only(ctx, {planned.group: planned.ratio}, timed)
    width = int(m.result.kept[planned.group])
    channels = next(g.channels for g in m.result.groups if g.name == planned.group)
    return CurvePoint(
        ratio=round(1.0 - width / channels, 6),
        width=width,
        drop=m.drop,
        macs_saved=1.0 - m.result.macs / macs0,
        latency_saved=None if m.speedup is None else 1.0 - 1.0 / m.speedup,
        metric=m.metric,
        speedup=m.speedup,
        noisy=m.noisy,
    )


def load_curves(study: optuna.Study) -> SensitivityCurves | None:
    """The curves stored on ``study`` (None: none yet); a newer or torn record names the study and the fix."""
    data = study.user_attrs.get(SENSITIVITY_ATTR)
    if data is None:
        return None
    try:
        return SensitivityCurves.from_attrs(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(
            f"study {study.study_name!r}: its attr {SENSITIVITY_ATTR!r} cannot be read ({exc}); upgrade autoprune, or "
            f"delete the attr to measure the curves again"
        ) from exc


@dataclass
class CurveProgress:
    """Callbacks of :func:`measure_curves`: ``start(total points)``, ``point(group, CurvePoint)``, ``say(line)``."""

    start: Callable[[int], None] = lambda total: None
    point: Callable[[str, CurvePoint], None] = lambda group, p: None
    say: Callable[[str], None] = lambda line: None


def measure_curves(
    ctx: StudyContext,
    study: optuna.Study,
    write_attr: Callable[[str, Any], None],
    grid: Sequence[float],
    progress: CurveProgress | None = None,
    timed: bool = True,
) -> SensitivityCurves:
    """Measure (or finish measuring) the curves of ``study``; stored after every group, so it resumes.

    Args:
        ctx: the study context.
        study: where the curves are read from (attr :data:`SENSITIVITY_ATTR`).
        write_attr: ``write_attr(key, value)`` stores a study attr (with retries).
        grid: the ratios each group is measured at (nearest reachable widths).
        progress: callbacks (progress bar, lines).
        timed: time every point (latency cost); off: MACs only.

    Returns:
        The complete curves.
    """
    progress = progress or CurveProgress()
    curves = _resumable(ctx, study, grid, timed, progress.say)
    plan = plan_points(ctx, grid)
    todo = {name: points for name, points in plan.items() if name not in curves.groups}
    progress.start(sum(len(p) for p in todo.values()))
    if todo and curves.base_macs is None:
        curves = replace(curves, base_macs=base_macs(ctx))
    channels = {g.name: g.channels for g in ctx.groups}
    for name, planned in todo.items():
        start = time.perf_counter()
        points = []
        for p in planned:
            points.append(measure_point(ctx, p, int(curves.base_macs or 1), timed))
            progress.point(name, points[-1])
        curves = replace(
            curves,
            groups={**curves.groups, name: GroupCurve(name, channels[name], tuple(sorted(points, key=lambda q: q.ratio)))},
            evaluations=curves.evaluations + len(points),
            seconds=curves.seconds + time.perf_counter() - start,
        )
        write_attr(SENSITIVITY_ATTR, curves.to_attrs())
    return curves


def _resumable(ctx: StudyContext, study: optuna.Study, grid: Sequence[float], timed: bool, say: Callable[[str], None]) -> SensitivityCurves:
    """The stored curves when they were measured for this base, criterion, round_to and grid; else a fresh record."""
    fresh = SensitivityCurves(grid=tuple(sorted(grid)), meta=curves_meta(ctx, timed), base_metric=ctx.base_metric.value)
    stored = load_curves(study)
    if stored is None:
        return fresh
    if stored.meta != fresh.meta or tuple(stored.grid) != fresh.grid:
        say(f"the stored sensitivity curves were measured with other settings ({_differs(stored, fresh)}); measuring them again")
        return replace(fresh, evaluations=stored.evaluations, seconds=stored.seconds)
    if stored.groups:
        say(f"reusing the stored curves of {len(stored.groups)} group(s)")
    return stored


def _differs(stored: SensitivityCurves, fresh: SensitivityCurves) -> str:
    keys = sorted(k for k in set(stored.meta) | set(fresh.meta) if stored.meta.get(k) != fresh.meta.get(k))
    return ", ".join(keys + (["grid"] if tuple(stored.grid) != fresh.grid else []))


def default_targets(points: Mapping[str, SweepPoint]) -> list[float]:
    """Target speedups from the best uniform and global baselines: their speedups and :data:`BEYOND` past the faster.

    Example:
        >>> default_targets({"uniform": SweepPoint("uniform", 0.3, 0.9, 0.0, {}, speedup=1.4)})
        [1.4, 1.75]
        >>> default_targets({})
        [1.25, 1.5, 2.0]
    """
    speeds = sorted({round(p.speedup, 3) for p in points.values() if p.speedup is not None and p.speedup > 1.0})
    if not speeds:
        return [1.25, 1.5, 2.0]
    return speeds + [round(speeds[-1] * BEYOND, 3)]


@dataclass
class SensitivityBaseline:
    """The sensitivity sweep of a study: its points (``ratio``: the targeted share of the cost) and the best."""

    points: list[SweepPoint] = field(default_factory=list)
    best: SweepPoint | None = None


def allocation_ratios(curves: SensitivityCurves, allocation: Allocation) -> dict[str, float]:
    """Per group of the curves, the ratio the allocation prunes it by (0: unpruned)."""
    return {name: allocation.ratios.get(name, 0.0) for name in curves.groups}


def sweep_allocations(
    ctx: StudyContext, curves: SensitivityCurves, targets: Sequence[float], cost: str, on_point: Callable[[SweepPoint], None] | None = None
) -> list[SweepPoint]:
    """Evaluate the greedy allocation at each target speedup as a full trial (recovery, timing); one per architecture."""
    out: list[SweepPoint] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    for target in targets:
        share = saving_for_speedup(target)
        allocation = greedy_allocation(curves.groups, share, cost)
        key = tuple(sorted(allocation.widths.items()))
        if not allocation.widths or key in seen:
            continue
        seen.add(key)
        res = evaluate_candidate(ctx, ratios=allocation_ratios(curves, allocation))
        save_sweep_record(ctx, KIND, round(share, 6), res)
        point = result_point(KIND, round(share, 6), res, ctx.config.max_drop)
        out.append(point)
        if on_point is not None:
            on_point(point)
    return out


def sweep_attr(curves: SensitivityCurves, targets: Sequence[float], cost: str, points: Sequence[SweepPoint], seconds: float) -> dict[str, Any]:
    """The study attr :data:`SWEEP_ATTR` of a sweep of greedy allocations made from ``curves``."""
    return {"meta": dict(curves.meta), "targets": [float(t) for t in targets], "cost": cost, "seconds": round(seconds, 3),
            "points": [p.as_dict() for p in points]}


def stored_sweep(study: optuna.Study, curves: SensitivityCurves, targets: Sequence[float], cost: str) -> list[SweepPoint] | None:
    """The sweep stored on ``study`` when it was made from curves measured as these (base, recipe, rounding) at
    these targets and cost; None: sweep (a torn record too)."""
    data = study.user_attrs.get(SWEEP_ATTR)
    wanted = {"meta": dict(curves.meta), "targets": [float(t) for t in targets], "cost": cost}
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in wanted.items()):
        return None
    try:
        return [SweepPoint.from_dict(p) for p in data["points"]]
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("study %r: its attr %r cannot be read (%s); sweeping again", study.study_name, SWEEP_ATTR, exc)
        return None


def sensitivity_baseline(
    ctx: StudyContext,
    study: optuna.Study,
    write_attr: Callable[[str, Any], None],
    points: Mapping[str, SweepPoint],
    say: Callable[[str], None],
) -> SensitivityBaseline:
    """The sensitivity sweep of a study being created: when ``search.sensitivity`` is on or the study holds curves.

    Curves missing or incomplete are measured first (resumably).  The best point is the fastest feasible
    one (else the largest feasible target); it is enqueued and its widths join the search space like the
    uniform and global baselines'.
    """
    s = ctx.config.search
    stored = load_curves(study)
    if not s.sensitivity and stored is None:
        return SensitivityBaseline()
    # Timed unless the MACs cost is enough and the stored curves were measured without timings (kept, not redone).
    timed = s.sensitivity_cost == "latency" or stored is None or stored.meta.get("latency") is not None
    # Curves measured by 'autoprune sensitivity' (maybe with --ratios) are used at their own grid, not measured again.
    grid = stored.grid if stored is not None and stored.grid else s.sensitivity_ratios
    progress = CurveProgress(start=lambda n: say(f"measuring the sensitivity curves: {n} point(s)") if n else None, say=say)
    curves = measure_curves(ctx, study, write_attr, grid, progress, timed=timed)
    targets = s.sensitivity_targets or default_targets(points)
    sweep = stored_sweep(study, curves, targets, s.sensitivity_cost)
    if sweep is None:
        say(f"sweeping greedy {s.sensitivity_cost} allocations at target speedups {', '.join(f'{t:g}x' for t in targets)}")
        start = time.perf_counter()
        sweep = sweep_allocations(ctx, curves, targets, s.sensitivity_cost)
        write_attr(SWEEP_ATTR, sweep_attr(curves, targets, s.sensitivity_cost, sweep, time.perf_counter() - start))
    else:
        say(f"reusing the study's sweep of greedy {s.sensitivity_cost} allocations ({len(sweep)} point(s))")
    best = fastest_feasible(sweep, ctx.config.max_drop) or largest_feasible(sweep, ctx.config.max_drop)
    if not sweep:
        say("note: no greedy allocation prunes anything at these targets; no sensitivity baseline")
    elif best is None:
        say(f"note: no sensitivity sweep point is within max drop {ctx.config.max_drop}; no sensitivity baseline is enqueued")
    return SensitivityBaseline(sweep, best)


__all__ = [
    "KIND",
    "BnOnly",
    "SENSITIVITY_ATTR",
    "SWEEP_ATTR",
    "CurveProgress",
    "PlannedPoint",
    "SensitivityBaseline",
    "default_targets",
    "load_curves",
    "measure_bn_only",
    "measure_curves",
    "plan_points",
    "sensitivity_baseline",
    "stored_sweep",
    "sweep_allocations",
    "sweep_attr",
]
