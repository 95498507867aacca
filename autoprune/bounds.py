"""Per-group search bounds from the uniform and global baseline sweeps (pure: no torch, no database).

The pruning guidance's procedure: find the largest uniform ratio ``u`` within the budget, the largest
global ratio within the budget (with its effective per-group ratios ``g_i``), and search each group
between them: ``[min(u_i, g_i) - margin, max(u_i, g_i) + margin]``, clipped to what the guards allow;
``u_i`` is the uniform ratio as applied to group i (after channel rounding and the guards).

Example:
    >>> u = [SweepPoint("uniform", 0.2, 0.99, 0.0, {"a": 0.2, "b": 0.2}), SweepPoint("uniform", 0.4, 0.9, 0.09, {"a": 0.4, "b": 0.4})]
    >>> g = [SweepPoint("global", 0.3, 0.99, 0.005, {"a": 0.1, "b": 0.5})]
    >>> compute_bounds(u, g, max_drop=0.01, margin=0.05, limits={"a": 0.5, "b": 0.875})
    {'a': (0.05, 0.25), 'b': (0.15, 0.55)}
"""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Mapping
from typing import Sequence


@dataclass
class SweepPoint:
    """One point of a baseline sweep.

    Attributes:
        kind: ``uniform`` or ``global``.
        ratio: the sweep's ratio (the same for every group in a uniform sweep; the share of all channels
            in a global sweep).
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepPoint":
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


def widen_to_grid(low: float, high: float, step: float, limit: float) -> tuple[float, float]:
    """Grow ``[low, high]`` outward onto multiples of ``step``, never past ``limit``.

    Channel rounding makes the grid coarse (a 32-channel group with ``round_to`` 16 has two widths), so a
    margin smaller than one step would shrink the range to a single point and leave nothing to search.
    Widening keeps the baselines' ratios inside and gives every group its neighbouring widths.

    Example:
        >>> widen_to_grid(0.45, 0.55, 0.25, limit=0.875)
        (0.25, 0.75)
    """
    import math

    top = math.floor(limit / step + 1e-9) * step
    lo = math.floor(low / step + 1e-9) * step
    hi = math.ceil(high / step - 1e-9) * step
    hi = min(hi, top)
    lo = min(max(lo, 0.0), hi)
    return round(lo, 9), round(hi, 9)
