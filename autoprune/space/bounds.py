"""Per-group search bounds from the uniform and global baseline sweeps (pure: no torch, no database).

The pruning guidance's procedure: find the largest uniform ratio ``u`` within the budget, the largest
global ratio within the budget (with its effective per-group ratios ``g_i``), and search each group
between them: ``[min(u_i, g_i) - margin, max(u_i, g_i) + margin]``, clipped to what the guards allow;
``u_i`` is the uniform ratio as applied to group i (after channel rounding and the guards).

The search itself draws kept-channel counts (:mod:`autoprune.space.widths`) around the widths of the points that
:func:`baseline_points` picks; :func:`compute_bounds` gives the same idea in ratios for tools that show it.

Example:
    >>> u = [SweepPoint("uniform", 0.2, 0.99, 0.0, {"a": 0.2, "b": 0.2}), SweepPoint("uniform", 0.4, 0.9, 0.09, {"a": 0.4, "b": 0.4})]
    >>> g = [SweepPoint("global", 0.3, 0.99, 0.005, {"a": 0.1, "b": 0.5})]
    >>> compute_bounds(u, g, max_drop=0.01, margin=0.05, limits={"a": 0.5, "b": 0.875})
    {'a': (0.05, 0.25), 'b': (0.15, 0.55)}
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

# The baseline kinds a study may hold, in the order reports list them.  ``sensitivity`` (greedy allocations of
# per-group sensitivity curves, autoprune.space.sensitivity) is opt-in: readers leave it out where a study has none.
BASELINE_KINDS = ("uniform", "global", "sensitivity")
OPTIONAL_BASELINE_KINDS = frozenset({"sensitivity"})


@dataclass
class SweepPoint:
    """One point of a baseline sweep.

    Attributes:
        kind: ``uniform``, ``global`` or ``sensitivity``.
        ratio: the sweep's ratio (the same for every group in a uniform sweep; the share of all channels
            in a global sweep; the targeted share of the base cost in a sensitivity sweep).
        metric: the validation metric after recovery.
        drop: metric drop against the base (positive = worse).
        ratios: the effective per-group ratios read back from the pruned model.
        speedup: interleaved speedup against the base, when measured.
    """

    kind: str
    ratio: float
    metric: float
    drop: float
    ratios: dict[str, float]
    speedup: float | None = None
    speedup_spread: float | None = None
    latency_ms: float | None = None
    metric_stderr: float | None = None
    drop_stderr: float | None = None
    macs: int | None = None
    params: int | None = None
    channels: dict[str, int] = field(default_factory=dict)
    clamps: list[str] = field(default_factory=list)
    feasible: bool | None = None
    latency_noisy: bool | None = None  # the timing did not settle (spread above latency.cv_threshold)
    metric_after_bn: float | None = None  # validation metric after BN recalibration, before the finetune
    recovery: dict[str, Any] = field(default_factory=dict)  # what the recovery did (RecoveryReport.attrs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def widths(self, channels: Mapping[str, int]) -> dict[str, int]:
        """Kept channels per group (read back from ``ratios`` where an older file did not record them).

        Args:
            channels: group name -> the group's original channels.

        Example:
            >>> SweepPoint("uniform", 0.3, 0.9, 0.0, {"a": 0.5, "b": 0.25}, channels={"a": 8}).widths({"a": 16, "b": 32})
            {'a': 8, 'b': 24}
        """
        return {
            name: int(self.channels[name]) if name in self.channels else int(round(c * (1.0 - self.ratios.get(name, 0.0))))
            for name, c in channels.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def largest_feasible(points: Sequence[SweepPoint], max_drop: float) -> SweepPoint | None:
    """The point with the largest ratio whose drop is within ``max_drop`` (None if there is none)."""
    ok = [p for p in points if p.drop <= max_drop]
    return max(ok, key=lambda p: p.ratio) if ok else None


def fastest_feasible(points: Sequence[SweepPoint], max_drop: float) -> SweepPoint | None:
    """The feasible point with the highest speedup (ties: the better metric)."""
    ok = [p for p in points if p.drop <= max_drop and p.speedup is not None]
    return max(ok, key=lambda p: (p.speedup, -p.drop)) if ok else None


def baseline_points(uniform: Sequence[SweepPoint], global_: Sequence[SweepPoint], max_drop: float) -> dict[str, SweepPoint]:
    """The baseline of each sweep that a study enqueues and searches around.

    The fastest feasible point (:func:`fastest_feasible`), else, when no point was timed, the largest
    feasible ratio (:func:`largest_feasible`); a sweep without a feasible point has none.

    Returns:
        ``{"uniform": point, "global": point}``, without the kinds that have no feasible point.

    Example:
        >>> u = [SweepPoint("uniform", 0.2, 0.99, 0.0, {}, speedup=1.3), SweepPoint("uniform", 0.4, 0.98, 0.0, {}, speedup=1.2)]
        >>> {k: p.ratio for k, p in baseline_points(u, [], max_drop=0.01).items()}
        {'uniform': 0.2}
    """
    out = {}
    for kind, points in (("uniform", uniform), ("global", global_)):
        best = fastest_feasible(points, max_drop) or largest_feasible(points, max_drop)
        if best is not None:
            out[kind] = best
    return out


def compute_bounds(
    uniform: Sequence[SweepPoint],
    global_: Sequence[SweepPoint],
    max_drop: float,
    margin: float,
    limits: Mapping[str, float],
    ties: Mapping[str, str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Per-group ``(low, high)`` ratio bounds.

    Args:
        uniform: the uniform sweep.
        global_: the global sweep.
        max_drop: the metric budget.
        margin: widening on both sides.
        limits: group name -> the largest ratio the guards allow.
        ties: follower group -> leader group; followers get their leader's bounds.

    Returns:
        group name -> (low, high), with ``0 <= low <= high <= limit``.  When neither sweep has a feasible
        point, the bounds collapse to ``[0, margin]`` (search only light pruning).
    """
    best_u = largest_feasible(uniform, max_drop)
    best_g = largest_feasible(global_, max_drop)
    bounds: dict[str, tuple[float, float]] = {}
    for name, limit in limits.items():
        # Effective per-group ratios (after channel rounding and guards), so a baseline lies inside the bounds.
        u = best_u.ratios.get(name, best_u.ratio) if best_u is not None else 0.0
        g = best_g.ratios.get(name, 0.0) if best_g is not None else 0.0
        low = max(0.0, min(u, g) - margin)
        high = min(float(limit), max(u, g) + margin)
        # Round for readability, but never past the guard limit (5/6 would round up to 0.833334).
        high = min(round(high, 6), float(limit))
        low = min(round(low, 6), high)
        bounds[name] = (low, high)
    for follower, leader in (ties or {}).items():
        if leader in bounds:
            bounds[follower] = bounds[leader]
    return bounds
