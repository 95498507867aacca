"""The width space (pure: no torch, no database): reachable widths, the baselines' span, margins in widths, ties.

Each group's parameter is its kept channels; the ratio the trial requests for a width must prune the group
to exactly that width (``kept_channels``), for every reachable width of every group.
"""

from __future__ import annotations

import doctest
import itertools
import random
import sys

import pytest

import autoprune.space.bounds
import autoprune.space.widths
from autoprune.pruning.guards import GuardSettings
from autoprune.pruning.guards import kept_channels
from autoprune.pruning.guards import min_keep
from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import baseline_points
from autoprune.space.widths import GroupShape
from autoprune.space.widths import GroupWidths
from autoprune.space.widths import channels_key
from autoprune.space.widths import group_widths
from autoprune.space.widths import in_space
from autoprune.space.widths import nearest_widths
from autoprune.space.widths import ratios_for
from autoprune.space.widths import reachable_widths
from autoprune.space.widths import space_bounds
from autoprune.space.widths import space_from_attr
from autoprune.space.widths import space_to_attr
from autoprune.space.widths import width_space

R16 = GuardSettings(min_channels=8, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=16)
R8 = GuardSettings(min_channels=8, min_fraction=0.1, first_layer_max_ratio=0.5, round_to=8)


def test_pure_modules_load_without_torch() -> None:
    import subprocess

    code = "import sys, autoprune.space.widths, autoprune.space.bounds; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.parametrize("module", [autoprune.space.widths, autoprune.space.bounds])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# The case: a group whose channels are not a multiple of round_to ----------------------------
def test_24_channels_with_round_to_16_keep_the_baselines_width() -> None:
    # Both baselines kept 16 of the 24 channels (ratios 0.283..0.333 as read back); the old ratio grid made
    # this group's space [0, 0] and froze it at 24.
    assert reachable_widths(24, R16) == {16: 16, 24: 24}  # untouched: all 24 (no rounding of C itself)
    assert group_widths(24, R16, targets=[16, 16], margin=0).widths == (16,)
    assert group_widths(24, R16, targets=[16, 16], margin=1).widths == (16, 24)
    assert group_widths(24, R16, targets=[16, 24], margin=0).widths == (16, 24)
    assert group_widths(24, R16, targets=[24], margin=5).widths == (16, 24)
    g = group_widths(24, R16, targets=[16], margin=1)
    assert [kept_channels("g", 24, g.ratio(w), R16) for w in g.widths] == [(16, None), (24, None)]


def test_non_multiple_groups_count_the_margin_in_widths() -> None:
    assert sorted(reachable_widths(40, R16)) == [16, 32, 40]
    assert group_widths(40, R16, targets=[32, 16], margin=0).widths == (16, 32)
    assert group_widths(40, R16, targets=[32, 32], margin=1).widths == (16, 32, 40)
    assert group_widths(40, R16, targets=[16], margin=1).widths == (16, 32)
    # 100 channels, round_to 8: 8, 16, ..., 96 and the untouched 100.
    assert sorted(reachable_widths(100, R8)) == list(range(16, 97, 8)) + [100]  # floor: ceil(0.1*100)=10 -> 16
    assert group_widths(100, R8, targets=[48, 64], margin=2).widths == (32, 40, 48, 56, 64, 72, 80)
    # No baseline (nothing feasible): the untouched width and the margin's narrower neighbours.
    assert group_widths(100, R8, targets=[], margin=2).widths == (88, 96, 100)
    assert group_widths(100, R8, targets=[], margin=None).widths == tuple(sorted(reachable_widths(100, R8)))


def test_first_layer_and_floors_limit_the_widths() -> None:
    # First layer: keeps at least half (12 of 24 -> rounded up to 16).
    assert sorted(reachable_widths(24, R16, first_layer=True)) == [16, 24]
    assert sorted(reachable_widths(64, R16, first_layer=True)) == [32, 48, 64]
    # A group narrower than round_to cannot be pruned at all.
    assert sorted(reachable_widths(12, R16)) == [12]
    assert group_widths(12, R16, targets=[12], margin=3).widths == (12,)


def _settings() -> list[GuardSettings]:
    return [
        GuardSettings(min_channels=m, min_fraction=f, first_layer_max_ratio=0.5, round_to=r)
        for m, f, r in itertools.product((1, 8), (0.0, 0.1, 0.3), (1, 4, 8, 16, 32))
    ]


def test_every_reachable_width_round_trips_through_kept_channels() -> None:
    for settings in _settings():
        for channels in (1, 3, 8, 12, 16, 24, 40, 64, 96, 100, 130, 256):
            for first in (False, True):
                reach = reachable_widths(channels, settings, first)
                produced = {kept_channels("g", channels, 1.0 - k / channels, settings, first)[0] for k in range(channels + 1)}
                assert set(reach) == produced, (settings, channels, first)
                floor = min_keep(channels, settings, first)
                for width, request in reach.items():
                    assert width == request and floor <= width <= channels
                    ratio = 1.0 - width / channels
                    assert 0.0 <= ratio < 1.0
                    assert kept_channels("g", channels, ratio, settings, first) == (width, None), (settings, channels, width)
                    # The ratios as stored in a study (JSON floats) give the same width.
                    stored = GroupWidths.from_dict(group_widths(channels, settings, [width], 0, first).as_dict())
                    assert kept_channels("g", channels, stored.ratio(width), settings, first)[0] == width


def test_the_space_spans_the_baselines_plus_margin_widths() -> None:
    rng = random.Random(0)
    for _ in range(500):
        settings = rng.choice(_settings())
        channels = rng.choice([16, 24, 40, 64, 96, 100, 130])
        first = rng.random() < 0.2
        reach = sorted(reachable_widths(channels, settings, first))
        targets = [rng.choice(reach) for _ in range(rng.randint(1, 2))]
        margin = rng.randint(0, 3)
        g = group_widths(channels, settings, targets, margin, first)
        lo, hi = reach.index(min(targets)), reach.index(max(targets))
        assert list(g.widths) == reach[max(0, lo - margin) : hi + margin + 1]
        assert set(targets) <= set(g.widths)
        assert len(set(g.widths)) == len(g.widths) and list(g.widths) == sorted(g.widths)
        for w in g.widths:
            assert kept_channels("g", channels, g.ratio(w), settings, first)[0] == w


def test_a_baseline_width_the_guards_no_longer_reach_is_still_in_the_space() -> None:
    g = group_widths(40, R16, targets=[24], margin=0)  # e.g. a baselines file swept with round_to 8
    assert g.widths == (24,) and g.ratio(24) == pytest.approx(1 - 24 / 40)
    assert group_widths(40, R16, targets=[24], margin=1).widths == (16, 24, 32)


def test_a_plan_maps_each_width_to_the_request_that_gives_it() -> None:
    # Whole heads of 16 channels (a plan like the pruner's for attention groups): widths are multiples of 16
    # although the guards allow multiples of 8; each width maps to a request the plan turns into it.
    def whole_heads(keep: int) -> int:
        return -(-keep // 16) * 16

    reach = reachable_widths(64, R8, plan=whole_heads)
    assert sorted(reach) == [16, 32, 48, 64]
    for width, request in reach.items():
        assert whole_heads(kept_channels("g", 64, 1.0 - request / 64, R8)[0]) == width
    assert reach[48] == 48  # a request equal to its width is preferred


# Ties and the whole space ----------------------------------------------------------------------------
GROUPS = [
    GroupShape("stem", 24, first_layer=True),
    GroupShape("a", 40),
    GroupShape("a_sr", 40, tied_to="a"),
    GroupShape("b", 64),
]


def test_tied_groups_share_their_leader_s_parameter() -> None:
    uniform = {"stem": 16, "a": 32, "a_sr": 32, "b": 48}
    global_ = {"stem": 24, "a": 16, "a_sr": 16, "b": 32}
    space = width_space(GROUPS, R16, [uniform, global_], margin=0)
    assert list(space) == ["stem", "a", "b"]  # the follower has no parameter of its own
    assert space["stem"].widths == (16, 24)
    assert space["a"].widths == (16, 32)
    assert space["b"].widths == (32, 48)
    bounds = space_bounds(space, GROUPS)
    assert bounds["a_sr"] == bounds["a"] == (pytest.approx(1 - 32 / 40), pytest.approx(1 - 16 / 40))
    assert set(bounds) == {g.name for g in GROUPS}
    # A follower's own width never widens its leader's space.
    space = width_space(GROUPS, R16, [uniform | {"a_sr": 40}], margin=0)
    assert space["a"].widths == (32,)


def test_space_attr_round_trip_and_readers() -> None:
    space = width_space(GROUPS, R16, [{"stem": 16, "a": 32, "b": 48}], margin=1)
    attr = space_to_attr(space)
    assert attr["a"] == {"channels": 40, "widths": [16, 32, 40], "ratios": pytest.approx([0.6, 0.2, 0.0])}
    assert space_from_attr(attr) == space
    widths = {"stem": 16, "a": 40, "b": 32}
    assert in_space(space, widths) and not in_space(space, widths | {"b": 24}) and not in_space(space, {"a": 40})
    assert ratios_for(space, widths) == {"stem": pytest.approx(1 / 3), "a": 0.0, "b": 0.5}
    with pytest.raises(ValueError, match="not one of the searched widths"):
        ratios_for(space, widths | {"b": 24})
    assert nearest_widths(space, {"a": 0.3, "b": 0.3}) == {"stem": 24, "a": 32, "b": 48}
    assert channels_key({"b": 32, "a": 40}) == channels_key({"a": 40, "b": 32}) != channels_key({"a": 40, "b": 48})


# The baselines the space is built around -------------------------------------------------------------
def _point(kind: str, ratio: float, drop: float, speedup: float | None) -> SweepPoint:
    return SweepPoint(kind, ratio, 0.9 - drop, drop, {}, speedup=speedup)


def test_baseline_points_are_the_enqueued_ones() -> None:
    u = [_point("uniform", 0.3, 0.0, 1.5), _point("uniform", 0.5, 0.01, 1.4), _point("uniform", 0.7, 0.2, 3.0)]
    g = [_point("global", 0.3, 0.02, 1.7)]
    points = baseline_points(u, g, max_drop=0.01)
    assert list(points) == ["uniform"] and points["uniform"].ratio == 0.3  # the fastest feasible, not the largest
    untimed = [_point("uniform", 0.3, 0.0, None), _point("uniform", 0.5, 0.0, None)]
    assert baseline_points(untimed, [], 0.01)["uniform"].ratio == 0.5  # not timed: the largest feasible ratio
    assert baseline_points([], [], 0.01) == {}


def test_config_margin_counts_widths(tmp_path) -> None:
    from autoprune.config import parse_config
    from autoprune.errors import ConfigError

    assert parse_config({"name": "x"}).search.bounds_margin == 1
    assert parse_config({"name": "x", "search": {"bounds_margin": 3}}).search.bounds_margin == 3
    with pytest.raises(ConfigError, match="bounds_margin.*counts widths"):
        parse_config({"name": "x", "search": {"bounds_margin": 0.05}})


def test_every_width_lies_on_its_grid_and_every_grid_value_snaps_to_a_neighbour() -> None:
    rng = random.Random(0)
    for _ in range(200):
        channels = rng.randint(8, 300)
        settings = GuardSettings(min_channels=rng.choice([1, 8]), min_fraction=0.1, round_to=rng.choice([1, 4, 8, 16, 32]))
        g = group_widths(channels, settings, [rng.randint(1, channels)], margin=rng.choice([0, 1, 3, None]))
        low, high, step = g.grid()
        assert (low, high) == (g.widths[0], g.widths[-1]) and step >= 1
        assert all((w - low) % step == 0 and g.snap(w) == w for w in g.widths)  # enqueued widths are grid values
        for value in range(low, high + 1, step):
            below = max(w for w in g.widths if w <= value)
            above = min(w for w in g.widths if w >= value)
            assert g.snap(value) in (below, above)  # order kept: a grid value lands between its neighbours


def test_ordered_and_categorical_draws_give_the_same_widths() -> None:
    import optuna

    from autoprune.search.objective import suggest_widths

    space = {"a": GroupWidths(100, (80, 88, 96, 100), (0.2, 0.12, 0.04, 0.0)), "b": GroupWidths(32, (16, 24), (0.5, 0.25))}
    assert suggest_widths(optuna.trial.FixedTrial({"a": 84, "b": 24}), space, ordered=True) == {"a": 88, "b": 24}
    assert suggest_widths(optuna.trial.FixedTrial({"a": 96, "b": 16}), space, ordered=False) == {"a": 96, "b": 16}
