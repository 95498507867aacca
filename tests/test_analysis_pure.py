"""Pure analysis math: Pareto front, selection, hypervolume and statistics, on hand-built numbers."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import optuna
import pandas as pd
import pytest

from autoprune.analysis import best_baseline
from autoprune.analysis import binomial_stderr
from autoprune.analysis import bootstrap_miou_stderr
from autoprune.analysis import bootstrap_stderr
from autoprune.analysis import budget_noise_warning
from autoprune.analysis import drop_interval
from autoprune.analysis import drop_stderr
from autoprune.analysis import hypervolume_2d
from autoprune.analysis import hypervolume_history
from autoprune.analysis import miou
from autoprune.analysis import pareto_front
from autoprune.analysis import pareto_mask
from autoprune.analysis import samples_needed
from autoprune.analysis import select
from autoprune.analysis.choice import choose
from autoprune.analysis.pareto import settle
from autoprune.analysis.pareto import settled
from autoprune.analysis.pareto import unsettled
from autoprune.errors import SelectionError


def _pt(number: int, metric: float, speedup: float, **extra: object) -> dict[str, object]:
    return {"number": number, "state": "COMPLETE", "metric": metric, "speedup": speedup, **extra}


def _brute_force_front(points: list[dict[str, object]], sign: float) -> set[int]:
    """Non-dominated numbers by the definition, all pairs."""
    usable = [p for p in points
              if p["state"] == "COMPLETE" and math.isfinite(p["metric"]) and math.isfinite(p["speedup"])]
    out = set()
    for p in usable:
        dominated = any(
            sign * q["metric"] >= sign * p["metric"] and q["speedup"] >= p["speedup"]
            and (sign * q["metric"] > sign * p["metric"] or q["speedup"] > p["speedup"])
            for q in usable
        )
        if not dominated:
            out.add(p["number"])
    return out


# Pareto front -----------------------------------------------------------------------------------------

def test_front_is_exactly_the_non_dominated_set_with_duplicates_kept() -> None:
    points = [
        _pt(0, 0.95, 1.0),
        _pt(1, 0.94, 2.0),
        _pt(2, 0.94, 1.5),  # dominated by 1 (same metric, slower)
        _pt(3, 0.90, 3.0),  # dominated by 7 (same speed, worse metric)
        _pt(4, 0.90, 2.5),  # dominated by 3
        _pt(5, 0.94, 2.0),  # duplicate of 1: kept
        _pt(6, 0.96, 0.9),  # best metric, slowest: on the front
        _pt(7, 0.93, 3.0),  # the fastest with the best metric at that speed
        _pt(8, 0.99, math.nan),  # no speedup: ignored
        {"number": 9, "state": "FAIL", "metric": 0.99, "speedup": 9.0},  # not complete: ignored
        _pt(10, 0.80, 3.0),  # same speed as 7, worse
    ]
    front = pareto_front(points)
    assert {p["number"] for p in front} == {0, 1, 5, 6, 7}
    assert {p["number"] for p in front} == _brute_force_front(points, 1.0)
    # slowest first, ties by trial number
    assert [p["number"] for p in front] == [6, 0, 1, 5, 7]


def test_front_with_a_minimized_metric() -> None:
    points = [
        _pt(0, 0.05, 1.0),
        _pt(1, 0.06, 2.0),
        _pt(2, 0.07, 1.5),  # dominated by 1 (higher error, slower)
        _pt(3, 0.04, 0.8),
        _pt(4, 0.03, 0.8),  # dominates 3
    ]
    front = pareto_front(points, metric_direction="minimize")
    assert [p["number"] for p in front] == [4, 0, 1]
    # the same points read as "maximize" give a different front, so the direction is really used
    assert {p["number"] for p in pareto_front(points)} == {1, 2}


def test_front_matches_brute_force_on_random_points_with_ties() -> None:
    rng = random.Random(3)
    for trial in range(30):
        points = [
            _pt(i, rng.choice([0.9, 0.91, 0.92, 0.93]), rng.choice([1.0, 1.5, 2.0, 2.5, 3.0]))
            for i in range(rng.randint(1, 25))
        ]
        for direction, sign in (("maximize", 1.0), ("minimize", -1.0)):
            got = {p["number"] for p in pareto_front(points, metric_direction=direction)}
            assert got == _brute_force_front(points, sign), (trial, direction)


def test_front_of_a_dataframe_keeps_rows_and_index() -> None:
    df = pd.DataFrame([_pt(0, 0.9, 1.0, macs=5), _pt(1, 0.8, 2.0, macs=3), _pt(2, 0.7, 1.5, macs=4)],
                      index=[10, 11, 12])
    front = pareto_front(df)
    assert isinstance(front, pd.DataFrame)
    assert list(front.index) == [10, 11]
    assert list(front["macs"]) == [5, 3]
    assert pareto_mask(df) == [True, True, False]


def test_unknown_direction_is_rejected() -> None:
    with pytest.raises(ValueError, match="metric_direction"):
        pareto_front([_pt(0, 0.9, 1.0)], metric_direction="max")


# Selection ---------------------------------------------------------------------------------------------

def test_select_picks_the_fastest_feasible_trial() -> None:
    points = [
        _pt(0, 0.97, 1.5, drop=0.005),
        _pt(1, 0.96, 2.2, drop=0.010),  # exactly on the budget: feasible
        _pt(2, 0.90, 4.0, drop=0.070),  # faster but over budget
        {"number": 3, "state": "RUNNING", "metric": None, "speedup": None, "drop": None},
    ]
    assert select(points, max_drop=0.01)["number"] == 1
    assert select(points, max_drop=0.0099)["number"] == 0
    assert select(pd.DataFrame(points), max_drop=0.1)["number"] == 2


def test_select_ties_break_on_metric_then_macs_then_number() -> None:
    metric_tie = [_pt(0, 0.95, 2.0, drop=0.005, macs=10), _pt(1, 0.96, 2.0, drop=0.004, macs=20)]
    assert select(metric_tie, 0.01)["number"] == 1
    macs_tie = [_pt(0, 0.95, 2.0, drop=0.005, macs=20), _pt(1, 0.95, 2.0, drop=0.005, macs=10)]
    assert select(macs_tie, 0.01)["number"] == 1
    full_tie = [_pt(5, 0.95, 2.0, drop=0.005, macs=10), _pt(2, 0.95, 2.0, drop=0.005, macs=10)]
    assert select(full_tie, 0.01)["number"] == 2
    # with a minimised metric the lower value is the better one
    err_tie = [_pt(0, 0.05, 2.0, drop=0.001), _pt(1, 0.04, 2.0, drop=0.0)]
    assert select(err_tie, 0.01, metric_direction="minimize")["number"] == 1
    assert select(err_tie, 0.01, metric_direction="maximize")["number"] == 0


def test_select_without_feasible_trial_names_the_closest() -> None:
    points = [
        _pt(3, 0.90, 3.0, drop=0.08),
        _pt(7, 0.965, 1.83, drop=0.015),
        _pt(9, 0.95, 2.5, drop=0.03),
    ]
    with pytest.raises(SelectionError) as err:
        select(points, max_drop=0.01)
    message = str(err.value)
    assert "no trial is feasible" in message
    assert "trial 7" in message and "0.015" in message and "1.83x" in message


def test_select_on_a_study_without_results() -> None:
    with pytest.raises(SelectionError, match="no trial has a measured"):
        select([{"number": 0, "state": "FAIL", "metric": None, "speedup": None, "drop": None}], 0.01)


def test_best_baseline() -> None:
    sweep = [
        {"ratio": 0.2, "metric": 0.975, "drop": 0.005, "speedup": 1.6, "macs": 8},
        {"ratio": 0.3, "metric": 0.970, "drop": 0.010, "speedup": 2.3, "macs": 6},
        {"ratio": 0.5, "metric": 0.900, "drop": 0.080, "speedup": 3.6, "macs": 4},
    ]
    assert best_baseline(sweep, 0.01)["ratio"] == 0.3
    assert best_baseline(sweep, 0.005)["ratio"] == 0.2
    assert best_baseline(sweep, 0.001) is None
    assert best_baseline([], 0.01) is None


# Unsettled timings --------------------------------------------------------------------------------------

def test_unsettled_judges_the_flag_and_the_recorded_spread() -> None:
    # The trial: a spread of 20.9 % recorded with the flag unset; the spread alone condemns it.
    assert unsettled(False, 0.209, cv_threshold=0.05)
    assert not unsettled(False, 0.209)  # without a threshold only the flag speaks
    assert unsettled(True, 0.01, 0.05) and unsettled(np.True_, None)
    assert not unsettled(False, 0.05, 0.05)  # on the threshold is settled
    assert unsettled(None, math.inf, 0.05)
    # Missing values (NaN in a table, None in a dict) neither raise nor set the flag.
    assert not unsettled(math.nan, math.nan, 0.05) and not unsettled(None, None, 0.05)


def test_settle_counts_a_noisy_trial_with_its_settled_retiming_only() -> None:
    noisy = _pt(5, 0.95, 5.67, speedup_spread=0.209, latency_noisy=False, speedup_host_id="h1")
    assert settle(noisy, 0.05) is None
    confirmed = noisy | {"confirmed:speedup": 3.24, "confirmed:speedup_spread": 0.01, "confirmed:host_id": "h1"}
    row = settle(confirmed, 0.05)
    assert (row["speedup"], row["speedup_spread"], row["timing"], row["speedup_searched"]) == (3.24, 0.01, "confirmed", 5.67)
    # a confirmation that did not settle, or from another host, does not stand in
    assert settle(confirmed | {"confirmed:noisy": True}, 0.05) is None
    assert settle(confirmed | {"confirmed:speedup_spread": 0.2}, 0.05) is None
    assert settle(confirmed | {"confirmed:host_id": "h2"}, 0.05) is None
    # a settled re-timing on the same host (autoprune retime) does
    retimed = noisy | {"timings:h1:speedup": 3.1, "timings:h1:speedup_spread": 0.02, "timings:h1:noisy": False}
    assert settle(retimed, 0.05)["speedup"] == 3.1 and settle(retimed, 0.05)["timing"] == "retimed"
    # a settled trial keeps its own figure, and settling twice changes nothing
    clean = _pt(1, 0.95, 3.0, speedup_spread=0.01)
    assert settle(clean, 0.05) == clean | {"timing": "measured", "speedup_searched": 3.0}
    assert settle(settle(confirmed, 0.05), 0.05) == settle(confirmed, 0.05)


def test_no_front_point_or_pick_rests_on_an_unsettled_timing() -> None:
    points = [
        _pt(0, 0.97, 2.0, drop=0.005, speedup_spread=0.01),
        _pt(1, 0.96, 3.0, drop=0.010, speedup_spread=0.02),
        _pt(2, 0.965, 5.67, drop=0.008, speedup_spread=0.209, latency_noisy=False),  # would dominate trial 1
        _pt(3, 0.90, 4.0, drop=0.070, speedup_spread=0.01, latency_noisy=True),
    ]
    assert [p["number"] for p in pareto_front(points)] == [0, 2]  # the flag alone: trial 3 left out
    front = pareto_front(points, cv_threshold=0.05)
    assert [p["number"] for p in front] == [0, 1]
    assert select(points, 0.01, cv_threshold=0.05)["number"] == 1
    df = pd.DataFrame(points, index=[10, 11, 12, 13])
    assert list(pareto_front(df, cv_threshold=0.05).index) == [10, 11]
    assert list(settled(df, cv_threshold=0.05)["timing"]) == ["measured", "measured"]
    # once re-timed with a settled spread, trial 2 counts with that figure
    points[2] |= {"confirmed:speedup": 3.24, "confirmed:speedup_spread": 0.01}
    assert select(points, 0.01, cv_threshold=0.05)["speedup"] == 3.24
    assert [p["speedup"] for p in pareto_front(points, cv_threshold=0.05)] == [2.0, 3.24]


def test_choose_without_confirmation_ignores_the_selection_split_not_a_settled_retiming() -> None:
    # Trial 3's search timing did not settle (a loaded host); confirm re-timed it (settled) and found it fails
    # on the selection split.  The confirmed choice falls back to trial 4; the validation pick, which never
    # reads the selection split, counts trial 3 with its re-timing, so it leads there.
    df = pd.DataFrame([
        _pt(3, 0.96, 3.0, drop=0.01, speedup_spread=0.20, **{
            "confirmed:speedup": 2.9, "confirmed:speedup_spread": 0.01, "confirmed:selection_drop": 0.05}),
        _pt(4, 0.965, 2.5, drop=0.005, speedup_spread=0.01, **{
            "confirmed:speedup": 2.4, "confirmed:speedup_spread": 0.01, "confirmed:selection_drop": 0.0}),
    ])
    confirmed = choose(df, 0.02, cv_threshold=0.05)
    assert (confirmed.number, confirmed.source, confirmed.row["speedup"]) == (4, "confirmed", 2.4)
    assert confirmed.validation["number"] == 3 and confirmed.passed_over["number"] == 3
    validation = choose(df, 0.02, cv_threshold=0.05, use_confirmed=False)
    assert (validation.number, validation.source, validation.row["speedup"]) == (3, "validation", 2.9)
    assert validation.row["timing"] == "confirmed" and validation.passed_over is None
    # before confirm ran, trial 3 had no settled timing and could not lead
    bare = df.drop(columns=[c for c in df.columns if c.startswith("confirmed:")])
    assert choose(bare, 0.02, cv_threshold=0.05).number == 4


def test_every_pick_breaks_an_equal_speed_tie_by_a_metric_to_minimize() -> None:
    """An error rate (lower is better): of two equally fast trials, pareto, confirm and export all take the lower
    error, before and after confirmation.  The better trial has the higher number, so no tie on number decides."""
    from autoprune.analysis import StudyInfo
    from autoprune.analysis import summarize
    from autoprune.selection.confirm import _pick
    from autoprune.selection.confirm import select_candidates
    from autoprune.selection.export import choose_trial

    confirmed = {"confirmed:speedup": 1.9, "confirmed:speedup_spread": 0.01, "confirmed:noisy": False}
    df = pd.DataFrame([
        _pt(0, 0.20, 2.0, drop=0.10, macs=1000, kind="search", **confirmed, **{"confirmed:selection_drop": 0.10}),
        _pt(1, 0.12, 2.0, drop=0.02, macs=1000, kind="search", **confirmed, **{"confirmed:selection_drop": 0.02}),
    ])
    info = StudyInfo(name="err", metric_name="error", metric_direction="minimize", base_metric=0.10, max_drop=0.15)
    bare = df.drop(columns=[c for c in df.columns if c.startswith("confirmed:")])
    for table in (bare, df):
        assert select(table, 0.15, metric_direction="minimize")["number"] == 1  # the validation pick
        assert summarize(table, info).chosen.number == 1  # pareto
        assert choose_trial(table, info, 0.15)[0]["number"] == 1  # export
    assert summarize(df, info).selection == "confirmed"
    figures = {str(n): {"selection_drop": d, "speedup": 1.9, "speedup_spread": 0.01, "noisy": False} for n, d in ((0, 0.10), (1, 0.02))}
    assert _pick(bare, info, 0.15, figures)[0] == 1  # what confirm stores as the pick
    assert [c.number for c in select_candidates(bare, info, 1, 0.15)] == [1]  # what confirm re-measures first


def _baseline_study() -> tuple[pd.DataFrame, object]:
    """A confirmed study whose sweeps hold what a plain VGG-style model produced: the global baseline trial is
    r=0.35 (enqueued by its search timing, which did not settle), while the best settled global sweep point is
    r=0.20; uniform r=0.20 is feasible but neither its sweep timing nor its re-timing settled."""
    from autoprune.analysis import StudyInfo

    def sweep(ratio: float, drop: float, speedup: float, spread: float) -> dict[str, object]:
        return {"ratio": ratio, "metric": 0.9 - drop, "drop": drop, "speedup": speedup, "speedup_spread": spread}

    baselines = {"uniform": [sweep(0.2, 0.0, 1.3, 0.20), sweep(0.5, 0.30, 2.6, 0.01)],
                 "global": [sweep(0.2, 0.0, 1.4, 0.01), sweep(0.35, 0.005, 1.9, 0.20)]}
    info = StudyInfo(name="vgg", base_metric=0.9, max_drop=0.01, baselines=baselines,
                     config={"latency": {"cv_threshold": 0.05}})

    def trial(number: int, kind: str, ratio: float | None, drop: float, speedup: float, confirmed: float,
              spread: float, selection_drop: float, macs: int) -> dict[str, object]:
        return _pt(number, 0.9 - drop, speedup, drop=drop, speedup_spread=0.01, macs=macs, kind=kind,
                   baseline_ratio=ratio, **{"confirmed:speedup": confirmed, "confirmed:speedup_spread": spread,
                                            "confirmed:noisy": spread > 0.05, "confirmed:selection_drop": selection_drop})

    df = pd.DataFrame([
        trial(0, "global", 0.35, 0.005, 1.9, 1.85, 0.01, 0.004, 500),
        trial(1, "uniform", 0.2, 0.0, 1.3, 1.3, 0.20, -0.004, 800),
        trial(2, "search", None, 0.008, 2.5, 2.4, 0.01, 0.006, 400),
    ])
    return df, info


def test_a_confirmed_baseline_is_labelled_and_figured_from_one_trial() -> None:
    from autoprune.analysis import summarize
    from autoprune.analysis.report import table_rows

    df, info = _baseline_study()
    s = summarize(df, info)
    assert s.chosen.number == 2 and s.selection == "confirmed"
    best = s.best["global"]
    assert (best.number, best.ratio, best.speedup, best.selection_drop) == (0, 0.35, 1.85, 0.004)
    (row,) = [r for r in table_rows(s) if r["mark"] == "G"]
    assert row["trial"] == "global r=0.35" and row["speedup"].startswith("1.90x"), row
    assert "the best global baseline (1.85x)" in s.sentence, s.sentence
    # uniform r=0.20 is feasible; only its timings did not settle: said so, never "no feasible point"
    assert s.best["uniform"] is None and s.speedup_vs["uniform"] is None
    assert "the uniform baseline is feasible (r=0.20) but its timing did not settle" in s.sentence, s.sentence
    assert "no feasible point" not in s.sentence
    # with nothing feasible in the uniform sweep, the headline says exactly that
    info.baselines["uniform"] = [p | {"drop": 0.2} for p in info.baselines["uniform"]]
    assert "the uniform baseline has no feasible point" in summarize(df, info).sentence


def test_the_trial_table_carries_a_baseline_trials_own_ratio() -> None:
    from autoprune.analysis import StudyInfo
    from autoprune.analysis import trials_frame

    study = optuna.create_study(directions=["maximize"])
    attrs = {"metric": 0.9, "drop": 0.0, "speedup": 1.9, "kind": "global", "baseline_ratio": 0.35}
    study.add_trial(optuna.trial.create_trial(values=[1.9], user_attrs=attrs))
    assert trials_frame(study, StudyInfo(name="t", base_metric=0.9))["baseline_ratio"].tolist() == [0.35]


def test_select_names_the_trials_whose_timings_did_not_settle() -> None:
    points = [_pt(4, 0.97, 5.67, drop=0.005, speedup_spread=0.209), _pt(6, 0.90, 3.0, drop=0.08, speedup_spread=0.01)]
    with pytest.raises(SelectionError, match=r"trial\(s\) 4 did not settle.*autoprune confirm"):
        select(points, 0.01, cv_threshold=0.05)


def test_best_baseline_skips_points_whose_timing_did_not_settle() -> None:
    sweep = [
        {"ratio": 0.2, "metric": 0.975, "drop": 0.005, "speedup": 1.6, "speedup_spread": 0.01},
        {"ratio": 0.3, "metric": 0.970, "drop": 0.010, "speedup": 2.3, "speedup_spread": 0.15},
    ]
    assert best_baseline(sweep, 0.01)["ratio"] == 0.3
    assert best_baseline(sweep, 0.01, cv_threshold=0.05)["ratio"] == 0.2


# Hypervolume -------------------------------------------------------------------------------------------

def test_hypervolume_2d_hand_computed() -> None:
    ref = (0.7, 1.0)
    # two rectangles 0.2x1 and 0.1x2 overlapping in 0.1x1: union 0.3
    assert hypervolume_2d([(0.9, 2.0), (0.8, 3.0)], ref) == pytest.approx(0.3)
    # a dominated point and points not beating the reference add nothing
    assert hypervolume_2d([(0.9, 2.0), (0.8, 3.0), (0.75, 1.5), (0.6, 9.0), (0.95, 1.0)], ref) == pytest.approx(0.3)
    assert hypervolume_2d([], ref) == 0.0
    # minimised metric: errors 0.1 and 0.2 against reference error 0.3, the same picture mirrored
    assert hypervolume_2d([(0.1, 2.0), (0.2, 3.0)], (0.3, 1.0), metric_direction="minimize") == pytest.approx(0.3)


def test_hypervolume_history() -> None:
    pts = [(0.8, 1.5), (math.nan, math.nan), (0.9, 2.0), (0.8, 3.0)]
    hist = hypervolume_history(pts, (0.7, 1.0), at=[1, 3, 4, 10])
    assert list(hist) == [1, 3, 4]
    assert hist[1] == pytest.approx(0.05)
    assert hist[3] == pytest.approx(0.2)
    assert hist[4] == pytest.approx(0.3)
    every = hypervolume_history(pts, (0.7, 1.0), at=None)
    assert list(every) == [1, 2, 3, 4]
    assert all(a <= b for a, b in itertools.pairwise(every.values()))


# Statistics --------------------------------------------------------------------------------------------

def test_binomial_and_drop_stderr_hand_computed() -> None:
    assert binomial_stderr(0.98, 500) == pytest.approx(0.0062609903, rel=1e-8)
    assert drop_stderr(0.003, 0.004) == pytest.approx(0.005)
    low, high = drop_interval(0.01, 0.005)
    assert (low, high) == (pytest.approx(0.0002), pytest.approx(0.0198))
    assert drop_interval(0.01, 0.005, z=1.0) == (pytest.approx(0.005), pytest.approx(0.015))
    with pytest.raises(ValueError):
        binomial_stderr(1.2, 10)


def test_samples_needed_brings_two_stderr_under_the_budget() -> None:
    # 500 * (2 * 0.00626 / 0.005) ** 2 = 3135.008
    assert samples_needed(0.005, 0.00626, 500) == 3136
    se = drop_stderr(binomial_stderr(0.98, 500), binomial_stderr(0.97, 500))
    n = samples_needed(0.01, se, 500)
    assert n == 1948  # 500 * 4 * (0.0196 + 0.0291) / 500 / 0.01**2, exactly on the boundary
    assert 2 * se * math.sqrt(500 / n) <= 0.01 * (1 + 1e-9) < 2 * se * math.sqrt(500 / (n - 1))
    with pytest.raises(ValueError):
        samples_needed(0.0, se, 500)


def test_budget_noise_warning_below_and_above_the_noise() -> None:
    se = drop_stderr(binomial_stderr(0.98, 500), binomial_stderr(0.97, 500))  # ~0.00987
    warning = budget_noise_warning(0.01, se, 500)
    assert warning is not None
    assert str(samples_needed(0.01, se, 500)) in warning and "500" in warning
    assert budget_noise_warning(0.02, se, 500) is None
    # without the sample count the factor is given instead
    assert "x the current validation samples" in budget_noise_warning(0.01, se, None)
    assert budget_noise_warning(0.01, math.nan, 500) is None


def test_bootstrap_stderr_of_a_proportion_matches_the_binomial() -> None:
    values = np.array([1.0] * 490 + [0.0] * 10)
    se = bootstrap_stderr(values, n_boot=2000, seed=0)
    assert se == pytest.approx(binomial_stderr(0.98, 500), rel=0.06)
    assert bootstrap_stderr(values, n_boot=2000, seed=0) == se  # seeded: reproducible
    assert bootstrap_stderr(values, n_boot=2000, seed=1) != se
    # a custom statistic goes through the per-resample path
    med = bootstrap_stderr(np.arange(100.0), statistic=np.median, n_boot=300, seed=0)
    assert 2.0 < med < 8.0  # ~ 1.25 * std / sqrt(n) = 3.6
    assert bootstrap_stderr([2.0] * 50, n_boot=50) == 0.0


def test_miou_and_its_bootstrap() -> None:
    inter = np.array([[5, 0, 0], [3, 2, 0]])
    union = np.array([[6, 1, 0], [4, 2, 0]])  # class 2 never occurs: left out
    assert miou(inter, union) == pytest.approx((8 / 10 + 2 / 3) / 2)
    # identical images: every resample has the same mIoU
    same = bootstrap_miou_stderr(np.tile([[4, 1]], (20, 1)), np.tile([[5, 2]], (20, 1)), n_boot=100)
    assert same < 1e-12
    rng = np.random.default_rng(0)
    union_r = rng.integers(50, 100, size=(200, 4))
    inter_r = (union_r * rng.uniform(0.3, 0.9, size=(200, 4))).astype(int)
    se = bootstrap_miou_stderr(inter_r, union_r, n_boot=500, seed=0)
    # reference: the same resampling done naively with indices
    ref = [miou(inter_r[idx], union_r[idx]) for idx in (rng.integers(0, 200, 200) for _ in range(500))]
    assert se == pytest.approx(float(np.std(ref, ddof=1)), rel=0.15)
    with pytest.raises(ValueError, match="shape"):
        bootstrap_miou_stderr(inter_r, union_r[:, :3])


def test_the_confirmed_pick_keeps_a_margin_for_the_selection_splits_noise() -> None:
    """The fastest of K candidates is judged by its selection drop plus z standard errors of it: one whose drop
    came out just under the budget by chance is passed over, with the figures that decided it named."""
    def row(number: int, speedup: float, drop: float, se: float, z: float) -> dict[str, object]:
        return _pt(number, 0.9, speedup, drop=0.005, speedup_spread=0.01, **{
            "confirmed:speedup": speedup, "confirmed:speedup_spread": 0.01, "confirmed:noisy": False,
            "confirmed:selection_drop": drop, "confirmed:selection_drop_stderr": se, "confirmed:selection_z": z})

    df = pd.DataFrame([row(0, 3.0, 0.008, 0.004, 1.0), row(1, 2.5, 0.002, 0.004, 1.0)])
    picked = choose(df, 0.01)
    assert picked.number == 1 and picked.source == "confirmed"
    assert picked.notes == ["trial 0 (3.00x) fails the budget on the selection split (selection drop +0.0080 + 1 x 0.0040 "
                            "> 0.01); falling back to the next confirmed candidate"]
    # z = 0: the drop alone decides, and the faster one holds.
    assert choose(pd.DataFrame([row(0, 3.0, 0.008, 0.004, 0.0), row(1, 2.5, 0.002, 0.004, 0.0)]), 0.01).number == 0


def test_summary_figures_are_typed_and_write_exactly_their_json() -> None:
    """The summary's trial records and baseline points are read by attribute; ``to_json`` writes summary.json's
    dicts: a trial record's fixed keys in order, a baseline point's own keys in its own order (unknown ones kept)."""
    import doctest
    import json

    from autoprune.analysis import points
    from autoprune.analysis import summarize
    from autoprune.analysis.points import BaselinePoint
    from autoprune.analysis.points import LeftOut
    from autoprune.analysis.points import TrialFigures

    assert doctest.testmod(points).failed == 0
    df, info = _baseline_study()
    s = summarize(df, info)
    assert isinstance(s.chosen, TrialFigures) and all(isinstance(r, TrialFigures) for r in s.front)
    assert all(isinstance(u, LeftOut) for u in s.unsettled)
    assert all(isinstance(p, BaselinePoint) for v in s.baselines.values() for p in v)
    data = s.to_json()
    assert list(data["chosen"])[:3] == ["number", "state", "kind"] and data["chosen"]["number"] == s.chosen.number
    assert data["best"]["global"] == s.best["global"].to_json() and data["best"]["global"]["timing"] == "confirmed"
    for kind, stored in info.baselines.items():
        assert [list(p) for p in data["baselines"][kind]] == [list(p) for p in stored]  # the stored keys, in order
    json.dumps(data)  # plain JSON, nothing typed left inside
    odd = {"ratio": 0.3, "clamps": ["a"], "speedup": np.float64(1.5), "drop": float("nan"), "future_key": 1}
    assert BaselinePoint.from_point(odd).to_json() == {"ratio": 0.3, "clamps": ["a"], "speedup": 1.5, "drop": None,
                                                         "future_key": 1}
