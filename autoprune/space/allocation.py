"""Greedy per-group ratio allocation from sensitivity curves, as AIMET's greedy selection makes it (pure: no torch).

Each prunable group was pruned alone at a few widths and its metric measured after BN recalibration
(:mod:`autoprune.space.sensitivity`); each point also records the share of the base network's cost that group's
width saves (MACs, or measured latency).  One common threshold on the metric drop then decides every
group at once: per group, of the widths whose drop is within the threshold, the one that saves the most
cost (ties: the wider; unpruned always qualifies).  The threshold is bisected over the curves' drops until
the summed saving meets a target.

The summed saving is an additive prediction: MACs of a layer whose input and output channels are both
pruned fall by less than the two savings summed, and latency is a staircase in channels.  The trial that
evaluates an allocation measures the real figures.

Example:
    >>> curves = {
    ...     "a": GroupCurve("a", 32, (CurvePoint(0.25, 24, 0.00, 0.10), CurvePoint(0.5, 16, 0.02, 0.20))),
    ...     "b": GroupCurve("b", 64, (CurvePoint(0.25, 48, 0.01, 0.15), CurvePoint(0.5, 32, 0.08, 0.30))),
    ... }
    >>> a = greedy_allocation(curves, saving_for_speedup(1.5), "macs")
    >>> a.widths, round(a.saved, 2), a.threshold, a.reached
    ({'a': 16, 'b': 48}, 0.35, 0.02, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

# Version of the study attr ``sensitivity`` (:class:`SensitivityCurves`); a reader refuses a newer one.
CURVES_VERSION = 1
COSTS = ("macs", "latency")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class CurvePoint:
    """One group pruned alone to one width.

    Attributes:
        ratio: the applied ratio, ``1 - width / channels``.
        width: kept channels.
        drop: metric drop against the base after BN recalibration (positive = worse).
        macs_saved: share of the base network's MACs removed (only this group pruned).
        latency_saved: share of the base latency removed, ``1 - 1 / speedup`` (None: not timed).
        metric: the validation metric after BN recalibration.
        speedup: the measured interleaved speedup (None: not timed).
        noisy: the timing did not settle.
    """

    ratio: float
    width: int
    drop: float
    macs_saved: float
    latency_saved: float | None = None
    metric: float | None = None
    speedup: float | None = None
    noisy: bool = False

    def saved(self, cost: str) -> float:
        """The share of the base cost this point saves (``cost``: ``macs`` or ``latency``; untimed: 0)."""
        value = self.macs_saved if cost == "macs" else self.latency_saved
        return float(value) if value is not None else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurvePoint:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class GroupCurve:
    """The sensitivity curve of one searched group: its points by ratio (ratio 0, unpruned, is implicit)."""

    name: str
    channels: int
    points: tuple[CurvePoint, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "points": [p.as_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> GroupCurve:
        points = sorted((CurvePoint.from_dict(p) for p in data["points"]), key=lambda p: p.ratio)
        return cls(name, int(data["channels"]), tuple(points))


@dataclass(frozen=True)
class SensitivityCurves:
    """The curves of a study (study attr ``sensitivity``) and what they were measured against.

    Attributes:
        grid: the requested ratios (each group measured at the reachable widths nearest to them).
        groups: group name -> its curve; a group is complete once it is here.
        meta: what makes the curves valid (base checkpoint, criterion, ``round_to``, recovery): measured
            again when it changes.
        base_metric / base_macs: the base figures the drops and savings are relative to.
        evaluations / seconds: the cost of the curves (BN-recalibrated evaluations and their wall time).
    """

    grid: tuple[float, ...]
    groups: dict[str, GroupCurve] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    base_metric: float | None = None
    base_macs: int | None = None
    evaluations: int = 0
    seconds: float = 0.0
    version: int = CURVES_VERSION

    def to_attrs(self) -> dict[str, Any]:
        """Plain JSON for the study attr."""
        return {
            "version": self.version,
            "grid": list(self.grid),
            "meta": dict(self.meta),
            "base_metric": self.base_metric,
            "base_macs": self.base_macs,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "groups": {name: c.as_dict() for name, c in self.groups.items()},
        }

    @classmethod
    def from_attrs(cls, data: Mapping[str, Any]) -> SensitivityCurves:
        """Read the study attr back; a newer version raises ``ValueError`` naming it."""
        version = int(data.get("version", 0))
        if version > CURVES_VERSION:
            raise ValueError(f"sensitivity curves of version {version}; this autoprune reads up to {CURVES_VERSION}: upgrade autoprune")
        return cls(
            grid=tuple(float(r) for r in data.get("grid", ())),
            groups={name: GroupCurve.from_dict(name, g) for name, g in (data.get("groups") or {}).items()},
            meta=dict(data.get("meta") or {}),
            base_metric=data.get("base_metric"),
            base_macs=data.get("base_macs"),
            evaluations=int(data.get("evaluations", 0)),
            seconds=float(data.get("seconds", 0.0)),
            version=version,
        )


@dataclass(frozen=True)
class Allocation:
    """Per-group widths chosen at one threshold.

    Attributes:
        threshold: the common drop threshold (None: nothing pruned).
        widths / ratios: per group whose chosen width prunes it (unpruned groups are left out).
        saved: the predicted summed saving (share of the base cost).
        drop: the sum of the chosen points' drops (a naive additive prediction, BN-only).
        reached: whether ``saved`` meets the target asked for.
    """

    threshold: float | None
    widths: dict[str, int]
    ratios: dict[str, float]
    saved: float
    drop: float
    reached: bool = True

    @property
    def speedup(self) -> float:
        """The predicted speedup, ``1 / (1 - saved)``."""
        return predicted_speedup(self.saved)


def saving_for_speedup(speedup: float) -> float:
    """The share of the cost a speedup removes.

    Example:
        >>> saving_for_speedup(2.0), saving_for_speedup(1.0)
        (0.5, 0.0)
    """
    if not math.isfinite(speedup) or speedup <= 0:
        raise ValueError(f"a target speedup must be a positive number, got {speedup}")
    return 1.0 - 1.0 / speedup


def predicted_speedup(saved: float) -> float:
    """The speedup of removing ``saved`` of the cost (inf when nothing is left)."""
    return math.inf if saved >= 1.0 else 1.0 / (1.0 - saved)


def choose_point(curve: GroupCurve, threshold: float, cost: str) -> CurvePoint | None:
    """The point within ``threshold`` that saves the most cost (ties: the wider); None: stay unpruned.

    Example:
        >>> c = GroupCurve("a", 32, (CurvePoint(0.25, 24, 0.0, 0.1, 0.2), CurvePoint(0.5, 16, 0.01, 0.2, 0.2)))
        >>> choose_point(c, 0.05, "latency").width, choose_point(c, 0.05, "macs").width, choose_point(c, -1, "macs")
        (24, 16, None)
    """
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
    ok = [p for p in curve.points if p.drop <= threshold and p.saved(cost) > 0.0]
    return max(ok, key=lambda p: (p.saved(cost), p.width), default=None)


def allocate_at(curves: Mapping[str, GroupCurve], threshold: float | None, cost: str, target: float = 0.0) -> Allocation:
    """Every group's point at one ``threshold`` (None: nothing pruned); ``reached`` compares with ``target``."""
    widths: dict[str, int] = {}
    ratios: dict[str, float] = {}
    saved = drop = 0.0
    if threshold is not None:
        for name, curve in curves.items():
            p = choose_point(curve, threshold, cost)
            if p is not None:
                widths[name], ratios[name] = p.width, p.ratio
                saved += p.saved(cost)
                drop += p.drop
    return Allocation(threshold, widths, ratios, saved, drop, reached=saved >= target - 1e-12)


def greedy_allocation(curves: Mapping[str, GroupCurve], target: float, cost: str) -> Allocation:
    """The allocation at the smallest common threshold whose summed saving meets ``target``.

    The summed saving grows with the threshold (a larger threshold only adds candidates), so the threshold
    is bisected over the curves' distinct drops (thresholds between two drops choose the same points).

    Args:
        curves: group name -> its curve.
        target: the share of the base cost to remove (see :func:`saving_for_speedup`).
        cost: ``macs`` or ``latency``.

    Returns:
        The :class:`Allocation`; when even the largest drop does not reach the target, the allocation at
        that threshold with ``reached`` false.

    Example:
        >>> c = {"a": GroupCurve("a", 16, (CurvePoint(0.5, 8, 0.3, 0.4),))}
        >>> greedy_allocation(c, 0.0, "macs").widths, greedy_allocation(c, 0.9, "macs").reached
        ({}, False)
    """
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
    if target <= 0:
        return allocate_at(curves, None, cost, target)
    drops = sorted({p.drop for c in curves.values() for p in c.points})
    if not drops:
        return allocate_at(curves, None, cost, target)
    top = allocate_at(curves, drops[-1], cost, target)
    if not top.reached:
        return top
    lo, hi = 0, len(drops) - 1  # invariant: drops[hi] reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if allocate_at(curves, drops[mid], cost, target).reached:
            hi = mid
        else:
            lo = mid + 1
    return allocate_at(curves, drops[hi], cost, target)


__all__ = [
    "COSTS",
    "CURVES_VERSION",
    "DEFAULT_RATIOS",
    "Allocation",
    "CurvePoint",
    "GroupCurve",
    "SensitivityCurves",
    "allocate_at",
    "choose_point",
    "greedy_allocation",
    "predicted_speedup",
    "saving_for_speedup",
]
