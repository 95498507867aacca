"""The pure parts of ``benchmarks/anytime.py``: the confirmed curve (what ``confirm`` would pick from the trials
ended by each point), each candidate judged once, the target against the ``none`` arm, the counts, and merging
a seed into the results file (no torch model, no database)."""

from __future__ import annotations

import pathlib
import sys
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import anytime  # noqa: E402

CFG = SimpleNamespace(max_drop=0.01, latency=SimpleNamespace(cv_threshold=0.05), search=SimpleNamespace(selection_z=1.0))


def _row(number: int, seconds: float | None, speedup: float, drop: float, **extra: Any) -> dict[str, Any]:
    return {"number": number, "state": "COMPLETE", "seconds": seconds, "speedup": speedup, "drop": drop, "drop_stderr": 0.001,
            "channels": {"g": number}, **extra}


def _timing(speedup: float, spread: float = 0.01) -> dict[str, Any]:
    return {"speedup": speedup, "speedup_spread": spread, "noisy": False}


def _judge(fails: set[int], calls: list[str]) -> anytime.Judge:
    def judge_one(label: str, row: dict[str, Any]) -> dict[str, Any]:
        calls.append(label)
        return {"selection_holds": row["number"] not in fails, "selection_drop": 0.005}

    return anytime.Judge(judge_one)


def test_the_curve_is_confirms_pick_from_the_trials_ended_by_each_point() -> None:
    rows = [
        _row(0, 1.0, 2.0, 0.004),  # an enqueued baseline, reused at once
        _row(1, 30.0, 2.6, 0.020),  # over the budget on validation: never a candidate
        _row(2, 60.0, 3.0, 0.008),  # the fastest within the budget, but fails on the selection split
        _row(3, 90.0, 2.8, 0.006),
        _row(4, 130.0, 3.5, 0.002),  # ended after the budget: not counted
    ]
    calls: list[str] = []
    judge = _judge({2}, calls)
    retimed = {f"a:{n}": _timing(x) for n, x in [(0, 1.9), (2, 3.1), (3, 2.7), (4, 3.4)]}
    curves = anytime.arm_curves("a", rows, 120.0, judge, retimed, CFG)
    assert curves["curve"] == [[1.0, 1.9], [30.0, 1.9], [60.0, 1.9], [90.0, 2.7]]
    assert curves["pick_label"] == "a:3" and curves["incumbent"]["number"] == 2
    assert sorted(set(calls)) == ["a:0", "a:2", "a:3"] and len(calls) == 3  # each judged once; trial 4 never
    # the search-time view: the fastest trial within the budget with the margin, whatever selection says
    assert [v for _, v in curves["search_curve"]] == [2.0, 2.0, 3.0, 3.0]


def test_a_point_with_no_holding_candidate_has_no_pick() -> None:
    rows = [_row(0, 5.0, 2.0, 0.004), _row(1, 9.0, 2.5, 0.003)]
    judge = _judge({0, 1}, [])
    curves = anytime.arm_curves("a", rows, 10.0, judge, {"a:0": _timing(2.0), "a:1": _timing(2.5)}, CFG)
    assert curves["curve"] == [[5.0, None], [9.0, None]] and curves["pick_label"] is None


def test_judge_all_walks_every_arm_and_judges_shared_candidates_per_arm_once() -> None:
    runs = {"none": {"rows": [_row(0, 1.0, 2.0, 0.004), _row(1, 9.0, 2.5, 0.003)]},
            "median": {"rows": [_row(0, 1.0, 2.0, 0.004), _row(5, 4.0, 2.2, 0.009)]}}
    calls: list[str] = []
    judge = _judge(set(), calls)
    for arm, run in runs.items():
        for t in anytime.curve_times(run["rows"], 10.0):
            anytime.judged_at(arm, run["rows"], t, CFG.max_drop, judge.holds)
    assert sorted(calls) == ["median:0", "median:5", "none:0", "none:1"]


def _arm(pick: dict[str, Any] | None, curve: list[list[Any]], incumbent: dict[str, Any] | None = None,
         search_curve: list[list[Any]] | None = None) -> dict[str, Any]:
    return {"pick": pick, "curve": curve, "incumbent": incumbent, "search_curve": search_curve or []}


def test_target_reached_within_the_spread_or_better_at_the_end() -> None:
    none = _arm({"speedup": 3.0, "speedup_spread": 0.02}, [[10, 2.0], [100, 3.0]])
    fast = _arm({"speedup": 3.0, "speedup_spread": 0.01}, [[10, 2.0], [50, 2.95], [80, 3.0]])
    target = anytime.arm_target(fast, none, 100.0)
    assert target | {"search": None} == {"reach_fraction": 0.5, "better_at_end": False, "met": True, "search": None}  # 2.95: within 2%
    slow = _arm({"speedup": 3.0, "speedup_spread": 0.01}, [[10, 2.0], [70, 3.0]])
    assert anytime.arm_target(slow, none, 100.0)["met"] is False  # 0.7 of the budget
    better = _arm({"speedup": 3.3, "speedup_spread": 0.01}, [[90, 3.3]])
    assert anytime.arm_target(better, none, 100.0)["better_at_end"] is True and anytime.arm_target(better, none, 100.0)["met"] is True
    nothing = _arm(None, [[90, None]])
    assert anytime.arm_target(nothing, none, 100.0)["met"] is False
    # a none arm without a pick: any pick is better
    assert anytime.arm_target(fast, _arm(None, []), 100.0)["met"] is True


def test_the_search_time_target_judges_the_incumbents_curves() -> None:
    none = _arm(None, [], {"speedup": 3.6, "speedup_spread": 0.02}, [[100, 3.0], [440, 3.6]])
    pruner = _arm(None, [], {"speedup": 2.4, "speedup_spread": 0.02}, [[50, 2.4]])
    search = anytime.arm_target(pruner, none, 600.0)["search"]
    assert search == {"reach_fraction": None, "better_at_end": False, "met": False}
    quick = _arm(None, [], {"speedup": 3.6, "speedup_spread": 0.02}, [[50, 2.4], [300, 3.55]])
    assert anytime.arm_target(quick, none, 600.0)["search"] == {"reach_fraction": 0.5, "better_at_end": False, "met": True}


def test_counts_keep_the_curve_pruner_apart_from_the_screening() -> None:
    rows = [
        _row(0, 1.0, 2.0, 0.004, sweep_point={"kind": "uniform"}, recovery_steps=152),
        _row(1, 20.0, 2.5, 0.004, recovery_steps=152),
        _row(2, 25.0, 2.6, None, state="PRUNED", screened="cannot beat the incumbent"),
        _row(3, 40.0, 2.7, None, state="PRUNED", pruned_step=76),
        _row(4, 200.0, 2.8, 0.004, recovery_steps=152),  # after the budget
    ]
    for r in rows:
        r["finetune_steps"] = anytime.finetune_steps(r)
    run = {"options": {}, "rows": rows, "load_average": {}, "code": "c"}
    curves = {"curve": [], "search_curve": [], "pick_label": None, "incumbent": rows[1]}
    entry = anytime.arm_entry(run, curves, 100.0, {}, anytime.Judge(lambda *_: {}), {}, 0.01)
    assert (entry["trials"], entry["pruned"], entry["screened"], entry["finetune_steps"], entry["over_budget"]) == (4, 1, 1, 228, 1)
    assert entry["feasible"] == 2 and entry["incumbent"]["trial"] == 1


def test_merge_keeps_other_seeds_and_refuses_other_settings() -> None:
    head = {"identity": {"budget_seconds": 480}, "host": "h"}
    data = anytime.merge_seed(None, head, 0, {"v": 0})
    data = anytime.merge_seed(data, head, 2, {"v": 2})
    data = anytime.merge_seed(data, head, 0, {"v": "again"})
    assert data["seeds"] == {"0": {"v": "again"}, "2": {"v": 2}} and data["benchmark"] == "anytime"
    with pytest.raises(ValueError, match="budget_seconds"):
        anytime.merge_seed(data, {"identity": {"budget_seconds": 600}}, 1, {})


def test_arms_run_in_an_order_rotated_by_the_seed() -> None:
    arms = ["none", "median", "successive-halving"]
    firsts = {anytime.arm_order(arms, seed)[0] for seed in range(3)}
    assert firsts == set(arms)
