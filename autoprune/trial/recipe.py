"""The recovery recipe of a study: which one to pick, and when recovery limits the study (pure: no torch).

Calibration (:mod:`autoprune.trial.calibration`) recovers one probe candidate with several recipes
(learning rate x finetune length); :func:`pick_recipe` takes the cheapest one within noise of the best.
:func:`recovery_warnings` reads the baseline sweeps (and the calibration, when there is one) and says
when the recovery, not the pruning, decides which candidates meet the budget.

Example:
    >>> tried = [RecipeResult(0.01, 1.0, 20, 0.95, 0.01), RecipeResult(0.01, 4.0, 80, 0.96, 0.01),
    ...          RecipeResult(0.03, 1.0, 20, 0.80, 0.02)]
    >>> pick_recipe(tried, "maximize", tolerance_se=2.0).steps
    20
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecipeResult:
    """One recipe tried on the probe candidate.

    Attributes:
        lr: finetune learning rate.
        epochs: finetune length in epochs of the training split.
        steps: the optimisation steps that length gives.
        metric: validation metric of the recovered probe.
        stderr: its standard error.
        metric_after_bn: validation metric of the probe after BN recalibration alone.
        seconds: wall time of the recovery.
    """

    lr: float
    epochs: float
    steps: int
    metric: float
    stderr: float
    metric_after_bn: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _sign(direction: str) -> float:
    return 1.0 if direction == "maximize" else -1.0


def pick_recipe(results: Sequence[RecipeResult], direction: str, tolerance_se: float) -> RecipeResult:
    """The cheapest recipe whose metric is within ``tolerance_se`` standard errors of the best one.

    Args:
        results: every recipe tried (at least one).
        direction: ``maximize`` or ``minimize`` (the task's metric direction).
        tolerance_se: how many standard errors of the best result count as noise.

    Returns:
        The chosen recipe: fewest steps, then the better metric, then the lower learning rate.
    """
    if not results:
        raise ValueError("no recipe was tried")
    sign = _sign(direction)
    best = max(results, key=lambda r: sign * r.metric)
    slack = tolerance_se * best.stderr
    ok = [r for r in results if sign * (best.metric - r.metric) <= slack + 1e-12]
    return min(ok, key=lambda r: (r.steps, -sign * r.metric, r.lr))


def non_monotone(points: Sequence[Any], z: float = 2.0) -> list[tuple[Any, Any]]:
    """Pairs ``(lighter, heavier)`` of one sweep where the heavier pruning scored better beyond noise.

    Args:
        points: sweep points with ``ratio``, ``drop`` and ``metric_stderr`` (or ``drop_stderr``).
        z: how many standard errors of the difference make it more than noise.

    Returns:
        Each pair whose heavier point's drop is smaller than the lighter point's by more than ``z`` standard
        errors: more pruning should never recover better, so the recovery is what differs.
    """
    ordered = sorted(points, key=lambda p: p.ratio)
    pairs = []
    for i, light in enumerate(ordered):
        for heavy in ordered[i + 1 :]:
            se = math.hypot(_se(light), _se(heavy))
            if light.drop - heavy.drop > z * se:
                pairs.append((light, heavy))
    return pairs


def _se(point: Any) -> float:
    value = getattr(point, "metric_stderr", None)
    if value is None:
        value = getattr(point, "drop_stderr", None)
    return float(value or 0.0)


def longer_finetune_gain(results: Sequence[RecipeResult], chosen: RecipeResult, direction: str) -> float:
    """How much better the probe scored with the best longer recipe than with the chosen one (>= 0)."""
    sign = _sign(direction)
    longer = [r for r in results if r.steps > chosen.steps]
    if not longer:
        return 0.0
    return max(0.0, max(sign * (r.metric - chosen.metric) for r in longer))


def recovery_warnings(
    sweeps: Mapping[str, Sequence[Any]],
    max_drop: float,
    calibration: Mapping[str, Any] | None = None,
    direction: str = "maximize",
) -> list[str]:
    """Warnings, with the fix, when the recovery rather than the pruning decides the outcome.

    Args:
        sweeps: ``{"uniform": points, "global": points}`` (sweep points with ratio, drop, metric_stderr).
        max_drop: the budget.
        calibration: the study's calibration record (``results`` and ``chosen``), when it has one.
        direction: the metric's direction.

    Returns:
        One line per problem: a sweep whose metric is not monotone in the ratio beyond noise, or sweep
        points just over the budget that the best longer recipe would bring within it.
    """
    out = []
    fix = "lengthen recovery.finetune_epochs or run 'autoprune calibrate-recovery CONFIG'"
    for kind, points in sweeps.items():
        for light, heavy in non_monotone(points)[:1]:
            out.append(
                f"recovery is the bottleneck: {kind} {heavy.ratio:.2f} scored better than {kind} {light.ratio:.2f} "
                f"(drop {heavy.drop:+.4f} vs {light.drop:+.4f}, beyond 2 standard errors); more pruning cannot help, "
                f"so the recovery recipe is what differs; {fix}"
            )
    if calibration and calibration.get("results") and calibration.get("chosen"):
        results = [RecipeResult.from_dict(r) for r in calibration["results"]]
        chosen = RecipeResult.from_dict(calibration["chosen"])
        gain = longer_finetune_gain(results, chosen, str(calibration.get("metric_direction", direction)))
        near = [p for points in sweeps.values() for p in points if max_drop < p.drop <= max_drop + gain]
        if near:
            names = ", ".join(f"{p.kind} {p.ratio:.2f}" for p in near[:4])
            out.append(
                f"a longer finetune would move candidates across the budget: the best longer recipe scored "
                f"{gain:.4f} better on the probe, and these sweep points miss the budget by less than that: {names}; "
                "set recovery.calibration.tolerance_se to 0 (take the best recipe) or pin a longer recipe "
                "(recovery.calibration.enabled: false)"
            )
    return out
