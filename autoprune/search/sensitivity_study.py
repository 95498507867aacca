"""``autoprune sensitivity``: measure a study's sensitivity curves and say which cost allocates better.

The study is opened, or created bare when it does not exist yet (``autoprune create`` then finishes it and,
since it holds curves, adds the sensitivity baseline).  The curves are resumable (:func:`measure_curves`).
Which cost allocates better is measured cheaply at one target speedup: the greedy allocation by MACs and
the one by latency are pruned, BN-recalibrated, evaluated and timed (two evaluations, no finetune).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import optuna

from autoprune import console
from autoprune.config import load_config
from autoprune.device import check_targets
from autoprune.errors import StorageError
from autoprune.redact import redact_url
from autoprune.search.create import train_base_if_missing
from autoprune.search.storage import with_retry
from autoprune.search.study import READY_ATTR
from autoprune.search.study import attr_writer
from autoprune.search.study import check_same_base
from autoprune.search.study import objective_directions
from autoprune.search.study import storage_for
from autoprune.search.worker import set_torch_threads
from autoprune.space.allocation import COSTS
from autoprune.space.allocation import Allocation
from autoprune.space.allocation import CurvePoint
from autoprune.space.allocation import SensitivityCurves
from autoprune.space.allocation import greedy_allocation
from autoprune.space.allocation import saving_for_speedup
from autoprune.space.sensitivity import CurveProgress
from autoprune.space.sensitivity import allocation_ratios
from autoprune.space.sensitivity import measure_bn_only
from autoprune.space.sensitivity import measure_curves
from autoprune.trial.candidate import StudyContext


@dataclass(frozen=True)
class CostCheck:
    """The greedy allocation by one cost at the comparison's target, measured after BN recalibration only."""

    cost: str
    allocation: Allocation
    speedup: float | None
    drop: float
    noisy: bool


@dataclass
class SensitivityRun:
    """What ``autoprune sensitivity`` measured: the curves, what this run added, and the cost comparison."""

    curves: SensitivityCurves
    measured: int
    target: float
    checks: list[CostCheck] = field(default_factory=list)

    def verdict(self) -> str:
        """Which cost allocates better at the target, in words (a dominance check of the two BN-only figures)."""
        by = {c.cost: c for c in self.checks}
        if set(by) != set(COSTS) or any(c.speedup is None for c in self.checks):
            return "not compared: the curves were not timed, so only the MACs cost is available"
        m, lat = by["macs"], by["latency"]
        if m.allocation.widths == lat.allocation.widths:
            return f"both costs allocate the same widths at {self.target:g}x; either will do on this network"
        better = _dominant(m, lat)
        if better is None:
            return (f"neither cost dominates at {self.target:g}x (macs {m.speedup:.2f}x at drop {m.drop:+.4f}, latency "
                    f"{lat.speedup:.2f}x at drop {lat.drop:+.4f}, BN-only); both are stored")
        noisy = " (a timing did not settle: rerun to confirm)" if m.noisy or lat.noisy else ""
        return f"{better.cost} allocates better at {self.target:g}x on this network: as fast or faster at an equal or smaller BN-only drop{noisy}"


def _dominant(a: CostCheck, b: CostCheck) -> CostCheck | None:
    """The check that is at least as fast with at most the drop of the other (strictly better in one), or None."""
    for x, y in ((a, b), (b, a)):
        xs, ys = x.speedup, y.speedup
        if xs is None or ys is None:  # an untimed check dominates nothing
            return None
        if xs >= ys and x.drop <= y.drop and (xs > ys or x.drop < y.drop):
            return x
    return None


def open_study(ctx: StudyContext, url: str) -> optuna.Study:
    """The study of ``ctx``'s config, created bare (not ready: ``autoprune create`` finishes it) when missing."""
    storage = storage_for(ctx.config, url)
    directions = objective_directions(ctx.config.search.mode, ctx.task.metric_direction)
    try:
        study = with_retry(
            lambda: optuna.create_study(study_name=ctx.config.name, storage=storage, directions=directions, load_if_exists=True),
            url,
            "open the study",
        )
    except ValueError as exc:  # an existing study of other directions
        raise StorageError(f"study {ctx.config.name!r} in {redact_url(url)} cannot be opened: {exc}") from exc
    check_same_base(study, ctx, url)
    return study


def compare_costs(ctx: StudyContext, curves: SensitivityCurves, target: float) -> list[CostCheck]:
    """Each cost's greedy allocation at ``target`` speedup, pruned, BN-recalibrated, evaluated and timed."""
    checks = []
    for cost in COSTS:
        allocation = greedy_allocation(curves.groups, saving_for_speedup(target), cost)
        m = measure_bn_only(ctx, allocation_ratios(curves, allocation), timed=True)
        checks.append(CostCheck(cost, allocation, m.speedup, m.drop, m.noisy))
    return checks


def run_sensitivity(
    config_path: str,
    storage: str | None = None,
    ratios: Sequence[float] | None = None,
    target: float = 1.5,
    timed: bool = True,
    say: Callable[[str], None] = console.note,
) -> SensitivityRun:
    """Measure (or finish) the sensitivity curves of a study and compare the two costs at ``target``.

    Args:
        config_path: the study YAML.
        storage: storage URL override.
        ratios: the grid (default: ``search.sensitivity_ratios``).
        target: the target speedup of the cost comparison.
        timed: time every point (off: MACs only, no comparison).
        say: prints one line.

    Returns:
        The :class:`SensitivityRun`.
    """
    saving_for_speedup(target)  # a bad target fails before anything is measured
    cfg = load_config(config_path)
    check_targets(cfg)
    url = cfg.storage_url(storage)
    set_torch_threads(cfg.search.torch_threads)
    train_base_if_missing(cfg, say)
    ctx = StudyContext.build(cfg)
    study = open_study(ctx, url)
    if READY_ATTR in study.user_attrs:
        say("note: the study was created before these curves; its search space and baselines stay as they are")
    bar = console.progress(0, "sensitivity", "point")
    measured: list[CurvePoint] = []

    def point(group: str, p: CurvePoint) -> None:
        measured.append(p)
        bar.update(1)
        bar.set_postfix_str(f"{group} {p.width}ch: drop {p.drop:+.4f}" + (f", {p.speedup:.2f}x" if p.speedup else ""))

    def start(total: int) -> None:
        bar.total = total
        bar.refresh()

    progress = CurveProgress(start=start, point=point, say=say)
    curves = measure_curves(ctx, study, attr_writer(study, url), list(ratios or cfg.search.sensitivity_ratios), progress, timed)
    bar.close()
    checks = compare_costs(ctx, curves, target) if timed and curves.groups else []
    return SensitivityRun(curves, len(measured), target, checks)
