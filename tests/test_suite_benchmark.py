"""The pure parts of ``benchmarks/suite.py``: merging a piece into the results file, each method's confirmed
pick, the per-method counts, and how a sweep point is pruned again (no torch model, no database)."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import suite  # noqa: E402
from search_methods import sweep_plan  # noqa: E402


def _head(**identity: object) -> dict[str, object]:
    return {"config": "studies/x.yaml", "max_drop": 0.01, "metric_name": "accuracy", "base_metric": 0.98, "identity": {"config": "x", **identity}}


def test_merge_keeps_other_pieces_and_replaces_this_one() -> None:
    data = suite.merge_piece(None, "resnet", _head(), 0, {"v": "r0"}, {"host": "h", "date": "d1"})
    data = suite.merge_piece(data, "mobilenet", _head(), 0, {"v": "m0"}, {"host": "h", "date": "d2"})
    data = suite.merge_piece(data, "resnet", _head(), 1, {"v": "r1"}, {"host": "h", "date": "d3"})
    data = suite.merge_piece(data, "resnet", _head(), 0, {"v": "r0-again"}, {"host": "h2", "date": "d4"})
    assert data["benchmark"] == "suite"
    assert (data["host"], data["date"]) == ("h2", "d4")  # the latest run's
    assert data["networks"]["resnet"]["seeds"] == {"0": {"v": "r0-again"}, "1": {"v": "r1"}}
    assert data["networks"]["mobilenet"]["seeds"] == {"0": {"v": "m0"}}
    assert data["networks"]["resnet"]["max_drop"] == 0.01


def test_merge_refuses_a_network_entry_made_with_other_settings() -> None:
    data = suite.merge_piece(None, "resnet", _head(trials_per_search=16), 0, {"v": 1}, {})
    with pytest.raises(ValueError, match="trials_per_search"):
        suite.merge_piece(data, "resnet", _head(trials_per_search=24), 1, {"v": 2}, {})
    # another network is not bound by it
    assert suite.merge_piece(data, "segformer", _head(trials_per_search=24), 0, {"v": 3}, {})["networks"]["segformer"]


def _timing(speedup: float, spread: float = 0.01, noisy: bool = False) -> dict[str, object]:
    return {"speedup": speedup, "speedup_spread": spread, "noisy": noisy, "channels_match": True}


def test_pick_is_the_fastest_settled_candidate_that_holds_on_selection() -> None:
    retimed = {"a:0": _timing(3.0), "a:1": _timing(2.5), "a:2": _timing(2.0), "b:0": _timing(9.0)}
    judged = {"a:0": {"selection_holds": False}, "a:1": {"selection_holds": True}, "a:2": {"selection_holds": True},
              "b:0": {"selection_holds": True}}
    # a:0 is fastest but fails on selection; another method's candidate is never a's pick
    assert suite.confirmed_pick("a", retimed, judged, 0.05) == "a:1"
    # an unsettled re-timing leads no pick while a settled one holds ...
    retimed["a:1"] = _timing(2.5, spread=0.2)
    assert suite.confirmed_pick("a", retimed, judged, 0.05) == "a:2"
    # ... but is picked when no settled candidate holds
    judged["a:2"] = {"selection_holds": False}
    assert suite.confirmed_pick("a", retimed, judged, 0.05) == "a:1"
    judged["a:1"] = {"selection_holds": False}
    assert suite.confirmed_pick("a", retimed, judged, 0.05) is None
    assert suite.confirmed_pick("c", retimed, judged, 0.05) is None


def _runs() -> dict[str, object]:
    rows = [
        {"number": 0, "state": "COMPLETE", "duplicate_of": None, "metric": 0.9, "drop": 0.0, "speedup": 2.0, "channels": {"g": 8}},
        {"number": 1, "state": "COMPLETE", "duplicate_of": 0, "metric": 0.9, "drop": 0.0, "speedup": 2.0, "channels": {"g": 8}},
        {"number": 2, "state": "PRUNED", "duplicate_of": None, "metric": 0.5, "drop": 0.4, "speedup": None, "channels": {"g": 4}},
        {"number": 3, "state": "FAIL", "duplicate_of": None, "metric": None, "drop": None, "speedup": None, "channels": None},
        {"number": 4, "state": "COMPLETE", "duplicate_of": None, "metric": 0.9, "drop": 0.0, "speedup": 1.5, "channels": {"g": 24},
         "sweep_point": {"kind": "uniform", "ratio": 0.2}},
    ]
    sweep = [{"kind": "uniform", "ratio": r, "drop": d, "speedup": s, "channels": {"g": c}}
             for r, d, s, c in ((0.2, 0.001, 1.5, 24), (0.4, 0.005, 2.5, 16), (0.6, 0.05, 4.0, 8))]
    sens = {"points": [{"kind": "sensitivity", "ratio": 0.3, "drop": 0.002, "speedup": 1.8, "channels": {"g": 16}, "ratios": {"g": 0.5}}],
            "curve_points": 9, "curve_evaluations": 9, "curve_seconds": 30.0, "sweep_seconds": 12.0}
    return {"sweeps": {"uniform": sweep, "global": [], "sensitivity": sens["points"]}, "rows": {"random": rows, "autoprune": rows[:1]},
            "sensitivity": sens, "sweep_seconds": {"uniform": 100.0}, "walls": {"random": 50.0, "autoprune": 20.0}}


def test_counts_per_method() -> None:
    runs = _runs()
    assert suite.method_counts(runs, "uniform") == {"trials": 3, "finetunes": 3, "evaluations": 3, "seconds": 100.0}
    assert suite.method_counts(runs, "global")["seconds"] is None  # never measured in this work folder
    sens = suite.method_counts(runs, "sensitivity")
    assert (sens["trials"], sens["finetunes"], sens["evaluations"], sens["seconds"]) == (1, 1, 10, 42.0)
    # a reuse of another trial's or a sweep point's figures is neither finetuned nor evaluated; a screened (pruned) trial was evaluated
    assert suite.method_counts(runs, "random") == {"trials": 5, "finetunes": 1, "evaluations": 2, "seconds": 50.0, "reused_sweep_points": 1}


def test_candidates_are_within_budget_fastest_first_per_method() -> None:
    found = suite.all_candidates(_runs(), 0.01)
    assert [k for k in found if k.startswith("uniform")] == ["uniform:0", "uniform:1"]
    assert found["uniform:0"]["ratio"] == 0.4  # faster of the two within budget; 0.6 is over it
    assert "sensitivity:0" in found and "random:0" in found and not any(k.startswith("global") for k in found)


def test_a_method_none_of_whose_candidates_holds_judges_its_next_ones() -> None:
    ranking = [f"global:{i}" for i in range(8)]
    judged: list[str] = []

    def holds_from(first: str):
        def holds(label: str) -> bool:
            judged.append(label)
            return first in ranking and ranking.index(label) >= ranking.index(first)
        return holds

    # The CANDIDATES fastest fail; the next round holds global:4 (and judges global:3, faster, and global:5 with it).
    rounds = suite.walk_rounds(ranking, holds_from("global:4"))
    assert rounds == [ranking[:3], ranking[3:6]] and judged == ranking[:6]
    # One of the first round holds: no walk.  None holds: every candidate is judged, and no pick is made.
    assert suite.walk_rounds(ranking, holds_from("global:2")) == [ranking[:3]]
    judged.clear()
    assert suite.walk_rounds(ranking, holds_from("none")) == [ranking[:3], ranking[3:6], ranking[6:]]
    assert judged == ranking
    # The pick is then made over every candidate judged: the fastest re-timed one that holds and settled.
    retimed = {x: _timing(4.0 - 0.1 * i) for i, x in enumerate(ranking[:6])}
    verdicts = {x: {"selection_holds": ranking.index(x) >= 4} for x in ranking[:6]}
    assert suite.confirmed_pick("global", retimed, verdicts, 0.05) == "global:4"


def test_rankings_hold_every_feasible_candidate_the_first_round_the_fastest() -> None:
    rankings = suite.method_rankings(_runs(), 0.01)
    assert list(rankings["uniform"]) == ["uniform:0", "uniform:1"] and rankings["uniform"]["uniform:0"]["ratio"] == 0.4
    first = suite.all_candidates(_runs(), 0.01)
    assert all(list(first).count(label) == 1 and label in rankings[label.split(":")[0]] for label in first)


def test_sweep_points_are_pruned_again_by_their_own_plan() -> None:
    assert sweep_plan({"kind": "uniform", "ratio": 0.3}) == {"uniform": 0.3}
    assert sweep_plan({"kind": "global", "ratio": 0.3}) == {"global_ratio": 0.3}
    assert sweep_plan({"kind": "sensitivity", "ratio": 0.25, "ratios": {"a": 0.5, "b": 0.0}}) == {"ratios": {"a": 0.5, "b": 0.0}}
