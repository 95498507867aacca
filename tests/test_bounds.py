"""Per-group search bounds: the pure math on hand-built sweeps, and bounds from a real sweep on the tiny study."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import compute_bounds
from autoprune.space.bounds import fastest_feasible
from autoprune.space.bounds import largest_feasible


def _u(ratio: float, drop: float, groups=("a", "b"), speedup: float | None = None, **ratios: float) -> SweepPoint:
    """A uniform sweep point; ``ratios`` overrides the effective ratio of some groups (rounding, guards)."""
    eff = {g: ratios.get(g, ratio) for g in groups}
    return SweepPoint("uniform", ratio, 0.99 - drop, drop, eff, speedup=speedup)


def _g(ratio: float, drop: float, speedup: float | None = None, **ratios: float) -> SweepPoint:
    return SweepPoint("global", ratio, 0.99 - drop, drop, dict(ratios), speedup=speedup)


LIMITS = {"a": 0.5, "b": 0.875}


def test_docstring_example() -> None:
    u = [_u(0.2, 0.0), _u(0.4, 0.09)]
    g = [_g(0.3, 0.005, a=0.1, b=0.5)]
    assert compute_bounds(u, g, max_drop=0.01, margin=0.05, limits=LIMITS) == {"a": (0.05, 0.25), "b": (0.15, 0.55)}


def test_largest_feasible_point_of_each_sweep_is_used() -> None:
    u = [_u(0.1, 0.0), _u(0.3, 0.01), _u(0.5, 0.02), _u(0.7, 0.2)]
    g = [_g(0.2, 0.0, a=0.1, b=0.3), _g(0.4, 0.011, a=0.2, b=0.6)]
    assert largest_feasible(u, 0.01).ratio == 0.3  # a drop equal to the budget is feasible
    assert largest_feasible(g, 0.01).ratio == 0.2
    bounds = compute_bounds(u, g, max_drop=0.01, margin=0.0, limits=LIMITS)
    assert bounds == {"a": (0.1, 0.3), "b": (0.3, 0.3)}


def test_no_feasible_point_searches_only_light_pruning() -> None:
    u = [_u(0.2, 0.05), _u(0.4, 0.2)]
    g = [_g(0.2, 0.03, a=0.1, b=0.3)]
    assert largest_feasible(u, 0.01) is None and largest_feasible(g, 0.01) is None
    assert compute_bounds(u, g, max_drop=0.01, margin=0.05, limits=LIMITS) == {"a": (0.0, 0.05), "b": (0.0, 0.05)}
    # Empty sweeps behave the same, and a limit below the margin clips the upper bound.
    assert compute_bounds([], [], max_drop=0.01, margin=0.05, limits={"a": 0.03}) == {"a": (0.0, 0.03)}


def test_only_one_sweep_feasible() -> None:
    u = [_u(0.4, 0.0)]
    g = [_g(0.4, 0.5, a=0.2, b=0.6)]
    # The infeasible global sweep counts as ratio 0: the range spans from 0 to the uniform ratio.
    assert compute_bounds(u, g, max_drop=0.01, margin=0.05, limits=LIMITS) == {"a": (0.0, 0.45), "b": (0.0, 0.45)}
    assert compute_bounds([], [_g(0.3, 0.0, a=0.2, b=0.6)], 0.01, 0.05, LIMITS) == {"a": (0.0, 0.25), "b": (0.0, 0.65)}


def test_ties_between_sweeps_and_between_groups() -> None:
    # Both sweeps agree on a group (u == g): the range is the margin on both sides.
    u = [_u(0.3, 0.0, groups=("a", "b", "c"))]
    g = [_g(0.3, 0.0, a=0.3, b=0.6, c=0.1)]
    bounds = compute_bounds(u, g, 0.01, 0.05, {"a": 0.9, "b": 0.9, "c": 0.9}, ties={"c": "a"})
    assert bounds["a"] == (0.25, 0.35)
    assert bounds["b"] == (0.25, 0.65)
    assert bounds["c"] == bounds["a"]  # a tied follower takes its leader's range, not its own (0.05, 0.35)
    # A tie naming an unknown leader is ignored rather than inventing a range.
    assert compute_bounds(u, g, 0.01, 0.05, {"a": 0.9}, ties={"a": "zzz"}) == {"a": (0.25, 0.35)}


def test_equal_ratio_points_and_fastest_feasible_ties() -> None:
    a = _u(0.3, 0.004, speedup=1.5)
    b = _u(0.3, 0.002, speedup=1.5)
    c = _u(0.5, 0.02, speedup=2.0)
    assert fastest_feasible([a, b, c], 0.01) is b  # equal speedups: the smaller drop wins
    assert fastest_feasible([a, b, c], 0.05) is c
    assert fastest_feasible([_u(0.3, 0.0)], 0.01) is None  # not timed: not a candidate
    assert largest_feasible([a, b], 0.01).ratio == 0.3


def test_clipping_to_the_guard_limits() -> None:
    u = [_u(0.6, 0.0)]
    g = [_g(0.6, 0.0, a=0.7, b=0.9)]
    bounds = compute_bounds(u, g, 0.01, 0.05, LIMITS)
    # a: [0.55, 0.75] clipped to its limit 0.5 -> the range collapses onto the limit, never low > high.
    assert bounds["a"] == (0.5, 0.5)
    # b: [0.55, 0.95] clipped to 0.875.
    assert bounds["b"] == (0.55, 0.875)
    # Low bounds never go below 0.
    assert compute_bounds([_u(0.02, 0.0)], [], 0.01, 0.05, LIMITS)["a"] == (0.0, 0.07)


def test_rounded_bounds_never_pass_the_guard_limit() -> None:
    from autoprune.pruning import GuardSettings
    from autoprune.pruning import kept_channels
    from autoprune.pruning import max_ratio

    guards = GuardSettings(min_channels=8, min_fraction=0.0, round_to=1)
    limit = max_ratio(24, guards)  # 1 - 8/24 = 0.6666..., which rounds *up* to 0.666667 at 6 digits
    low, high = compute_bounds([_u(0.7, 0.0, groups=("a",))], [], 0.01, 0.05, {"a": limit})["a"]
    assert high <= limit and low == 0.0
    assert kept_channels("a", 24, high, guards) == (8, None)  # the upper bound is reachable without a clamp


def test_uniform_bounds_use_each_group_s_effective_ratio() -> None:
    # Uniform 0.3 on a 16-channel group rounded to 8 channels removes 50%: that group's uniform point is 0.5.
    u = [_u(0.3, 0.0, a=0.5)]
    bounds = compute_bounds(u, [], 0.01, 0.0, {"a": 0.9, "b": 0.9})
    assert bounds == {"a": (0.0, 0.5), "b": (0.0, 0.3)}


def test_random_sweeps_keep_the_invariants() -> None:
    rng = random.Random(0)
    for _ in range(300):
        groups = [f"g{i}" for i in range(rng.randint(1, 5))]
        limits = {g: rng.choice([0.5, 0.75, 0.875, rng.random()]) for g in groups}
        uniform = [_u(r, rng.random() * 0.05, groups=groups) for r in sorted(rng.sample([0.1, 0.2, 0.3, 0.5, 0.7], 3))]
        global_ = [_g(r, rng.random() * 0.05, **{g: rng.random() * 0.9 for g in groups}) for r in (0.2, 0.4)]
        max_drop, margin = rng.choice([0.0, 0.01, 0.03]), rng.choice([0.0, 0.05, 0.1])
        bounds = compute_bounds(uniform, global_, max_drop, margin, limits)
        best = [p for p in (largest_feasible(uniform, max_drop), largest_feasible(global_, max_drop)) if p]
        for g, (low, high) in bounds.items():
            assert 0.0 <= low <= high <= limits[g] + 1e-9
            for p in best:  # every best baseline lies inside its bounds unless the guards forbid it
                if p.ratios[g] <= limits[g]:
                    assert low - 1e-6 <= p.ratios[g] <= high + 1e-6  # bounds are rounded to 6 digits


def test_sweep_point_round_trip() -> None:
    p = SweepPoint("global", 0.3, 0.97, 0.01, {"a": 0.2}, speedup=1.4, channels={"a": 8}, clamps=["x"], feasible=True)
    data = json.loads(json.dumps(p.as_dict()))
    assert SweepPoint.from_dict(data | {"added_later": 1}) == p


# A real sweep -----------------------------------------------------------------------------------------

def test_bounds_from_a_real_sweep(study_factory, tmp_path: Path) -> None:
    from autoprune.config import load_config
    from autoprune.pruning import kept_channels
    from autoprune.space.baselines import baselines_path
    from autoprune.space.baselines import load_baselines
    from autoprune.space.baselines import run_baselines
    from autoprune.space.baselines import save_baselines
    from autoprune.trial.candidate import StudyContext

    cfg = load_config(study_factory({"max_drop": 0.45}))
    ctx = StudyContext.build(cfg, workdir=tmp_path / "work")
    seen: list[tuple[str, float]] = []
    result = run_baselines(ctx, [0.25, 0.5], on_point=lambda p: seen.append((p.kind, p.ratio)))
    assert seen == [("uniform", 0.25), ("uniform", 0.5), ("global", 0.25), ("global", 0.5)]
    groups = {g.name: g for g in ctx.groups}
    total = sum(g.channels for g in groups.values())

    for p in result.uniform + result.global_:
        assert set(p.channels) == set(groups)
        assert p.ratios == pytest.approx({n: 1 - p.channels[n] / g.channels for n, g in groups.items()}, abs=1e-6)
        assert p.drop == pytest.approx(result.base_metric - p.metric)
        assert p.feasible == (p.drop <= cfg.max_drop)
        assert p.speedup > 0 and p.latency_ms > 0 and 0 < p.macs and 0 < p.params
        assert all(n % 8 == 0 for n in p.channels.values())  # round_to 8
        # The recovery's guarantee: never below the BN-recalibrated start beyond noise (2 SE of the difference).
        assert p.metric >= p.metric_after_bn - 2 * math.sqrt(2) * p.metric_stderr, p
    for p in result.uniform:
        for n, g in groups.items():
            assert p.channels[n] == kept_channels(n, g.channels, p.ratio, ctx.pruner.guards, g.first_layer)[0]
    assert result.uniform[0].macs > result.uniform[1].macs
    assert sum(result.global_[0].channels.values()) <= total - int(total * 0.25)  # rounding only removes more

    # The bounds, recomputed here from the measured points.
    def best(points):
        ok = [p for p in points if p.drop <= cfg.max_drop]
        return max(ok, key=lambda p: p.ratio) if ok else None

    bu, bg = best(result.uniform), best(result.global_)
    # BN recalibration alone keeps uniform 0.25 within 0.45 of the tiny base; the recovery never goes below it.
    assert bu is not None or bg is not None, result.table()
    # The ratio bounds are the span of the two best points; search.bounds_margin counts widths and is
    # applied by the search space, not here.
    for n, g in groups.items():
        u = bu.ratios[n] if bu else 0.0
        gl = bg.ratios[n] if bg else 0.0
        high = min(g.max_ratio, max(u, gl))
        low = min(max(0.0, min(u, gl)), high)
        assert result.bounds[n] == pytest.approx((low, high), abs=1e-6), n
        for p in (bu, bg):
            if p is not None and p.ratios[n] <= g.max_ratio:
                assert low - 1e-6 <= p.ratios[n] <= high + 1e-6

    path = save_baselines(result, baselines_path(ctx))
    assert path == cfg.artifact_path() / "baselines.json"
    again = load_baselines(path)
    assert again is not None and again.as_dict() == result.as_dict()
    assert load_baselines(tmp_path / "none.json") is None
    assert "uniform" in result.table() and "global" in result.table()
