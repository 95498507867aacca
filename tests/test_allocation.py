"""The greedy allocation from sensitivity curves (pure: hand-built curves, no torch, no database)."""

from __future__ import annotations

import doctest
import json

import pytest

import autoprune.space.allocation
from autoprune.space.allocation import CURVES_VERSION
from autoprune.space.allocation import CurvePoint
from autoprune.space.allocation import GroupCurve
from autoprune.space.allocation import SensitivityCurves
from autoprune.space.allocation import allocate_at
from autoprune.space.allocation import choose_point
from autoprune.space.allocation import greedy_allocation
from autoprune.space.allocation import saving_for_speedup


def _curve(name: str, channels: int, drops: list[float], macs: list[float], latency: list[float] | None = None) -> GroupCurve:
    ratios = [0.25, 0.5, 0.75][: len(drops)]
    points = tuple(
        CurvePoint(r, int(channels * (1 - r)), d, m, latency[i] if latency else None)
        for i, (r, d, m) in enumerate(zip(ratios, drops, macs, strict=True))
    )
    return GroupCurve(name, channels, points)


CURVES = {
    "robust": _curve("robust", 64, [0.0, 0.005, 0.02], [0.10, 0.20, 0.30]),
    "fragile": _curve("fragile", 32, [0.03, 0.2, 0.6], [0.05, 0.10, 0.15]),
    "middle": _curve("middle", 48, [0.01, 0.04, 0.1], [0.08, 0.16, 0.24]),
}


@pytest.mark.parametrize("speedup", [1.1, 1.3, 1.5, 1.8, 2.2])
def test_bisection_reaches_the_target_at_the_smallest_threshold(speedup: float) -> None:
    target = saving_for_speedup(speedup)
    a = greedy_allocation(CURVES, target, "macs")
    assert a.reached and a.saved >= target
    drops = sorted({p.drop for c in CURVES.values() for p in c.points})
    smaller = [d for d in drops if d < a.threshold]
    # No smaller threshold reaches the target: the bisection found the least damaging one.
    assert all(not allocate_at(CURVES, d, "macs", target).reached for d in smaller)
    # Every chosen point is within the threshold.
    for name, width in a.widths.items():
        point = next(p for p in CURVES[name].points if p.width == width)
        assert point.drop <= a.threshold


def test_allocation_is_monotone_in_the_threshold() -> None:
    drops = sorted({p.drop for c in CURVES.values() for p in c.points})
    previous = allocate_at(CURVES, None, "macs")
    for t in drops:
        a = allocate_at(CURVES, t, "macs")
        assert a.saved >= previous.saved
        # With MACs (saving grows with the ratio) each group's ratio only grows.
        assert all(a.ratios.get(name, 0.0) >= r for name, r in previous.ratios.items())
        previous = a


def test_a_target_beyond_the_curves_returns_the_largest_allocation_unreached() -> None:
    a = greedy_allocation(CURVES, 0.95, "macs")
    assert not a.reached
    assert a.widths == {"robust": 16, "fragile": 8, "middle": 12}


def test_no_target_prunes_nothing() -> None:
    a = greedy_allocation(CURVES, 0.0, "macs")
    assert a.widths == {} and a.saved == 0.0 and a.threshold is None and a.speedup == 1.0


def test_latency_prefers_the_wider_width_on_a_staircase_and_skips_slower_widths() -> None:
    # 48 and 32 channels run equally fast; 16 channels is slower than the base (a slow kernel layout).
    curve = GroupCurve("g", 64, (CurvePoint(0.25, 48, 0.0, 0.25, 0.1), CurvePoint(0.5, 32, 0.01, 0.5, 0.1),
                                 CurvePoint(0.75, 16, 0.02, 0.75, -0.05)))
    assert choose_point(curve, 1.0, "latency").width == 48
    assert choose_point(curve, 1.0, "macs").width == 16
    a = greedy_allocation({"g": curve}, 0.5, "latency")
    assert not a.reached and a.widths == {"g": 48}


def test_an_unknown_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cost 'flops'"):
        greedy_allocation(CURVES, 0.3, "flops")


def test_curves_round_trip_through_json_and_refuse_a_newer_version() -> None:
    curves = SensitivityCurves(grid=(0.25, 0.5), groups=dict(CURVES), meta={"round_to": 8}, base_metric=0.9, base_macs=1000,
                               evaluations=9, seconds=1.5)
    back = SensitivityCurves.from_attrs(json.loads(json.dumps(curves.to_attrs())))
    assert back == curves
    with pytest.raises(ValueError, match="upgrade autoprune"):
        SensitivityCurves.from_attrs({**curves.to_attrs(), "version": CURVES_VERSION + 1})


def test_doctests() -> None:
    result = doctest.testmod(autoprune.space.allocation)
    assert result.attempted > 0 and result.failed == 0
