"""The pure parts of benchmarks/proxy_fidelity.py: the candidate rule, Spearman, its bootstrap interval, the
feasibility count and the end-to-end ratio (real numbers; scipy checks the rank correlation)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pf():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", ROOT / "benchmarks" / "proxy_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_matches_scipy_with_ties(pf) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, 15).astype(float)  # many ties
        b = a + rng.normal(0, 2, 15)
        assert pf.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert pf.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pf.spearman([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_holds_the_estimate_and_is_reproducible(pf) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=14)
    b = a + rng.normal(0, 0.7, 14)
    lo, hi = pf.bootstrap_ci(a, b, resamples=500, seed=1)
    assert -1 <= lo <= pf.spearman(a, b) <= hi <= 1
    assert (lo, hi) == pf.bootstrap_ci(a, b, resamples=500, seed=1)
    wide = pf.bootstrap_ci(a, rng.normal(size=14), resamples=500, seed=1)  # unrelated: the interval spans 0
    assert wide[0] < 0 < wide[1]


def test_feasibility_changes_count_both_directions_on_the_budget_edge(pf) -> None:
    rows = [
        {"key": "a", "proxy_drop": 0.015, "final_drop": 0.004},   # became feasible
        {"key": "b", "proxy_drop": 0.002, "final_drop": 0.011},   # became infeasible
        {"key": "c", "proxy_drop": 0.01, "final_drop": 0.01},     # on the edge both times: feasible, no change
        {"key": "d", "proxy_drop": 0.03, "final_drop": 0.02},     # over both times
    ]
    changes = pf.feasibility_changes(rows, 0.01)
    assert [(c["key"], c["became"]) for c in changes] == [("a", "feasible"), ("b", "infeasible")]


def _pool() -> list[dict]:
    pool = []
    for kind, n in (("uniform", 8), ("global", 8), ("search", 12)):
        for i in range(n):
            pool.append({"key": f"{kind}{i}", "kind": kind, "speedup": 1.2 + 0.4 * i + (0.05 if kind == "search" else 0),
                         "proxy_drop": -0.002 + 0.003 * i})
    return pool


def test_candidate_rule_spans_the_window_and_keeps_each_kinds_edge(pf) -> None:
    pool = _pool()
    chosen = pf.choose_candidates(pool, 0.01, 14)
    keys = [c["key"] for c in chosen]
    assert len(keys) == len(set(keys)) == 14
    assert all(c["proxy_drop"] <= 0.02 for c in chosen)  # nothing beyond 2 x max_drop
    for kind in ("uniform", "global", "search"):
        mine = [c for c in pool if c["kind"] == kind and c["proxy_drop"] <= 0.02]
        inside = max((c for c in mine if c["proxy_drop"] <= 0.01), key=lambda c: c["speedup"])
        over = max((c for c in mine if c["proxy_drop"] > 0.01), key=lambda c: c["speedup"])
        assert inside["key"] in keys and over["key"] in keys
    eligible = sorted((c for c in pool if c["proxy_drop"] <= 0.02), key=lambda c: (c["speedup"], c["key"]))
    assert eligible[0]["key"] in keys  # the slow end too
    assert [c["speedup"] for c in chosen] == sorted(c["speedup"] for c in chosen)
    assert pf.choose_candidates(pool, 0.01, 14) == chosen  # a rule: the same pool gives the same choice
    assert len(pf.choose_candidates(pool[:3], 0.01, 14)) == 3  # a small window gives what it holds


def test_end_to_end_uses_the_fastest_feasible_of_each_side(pf) -> None:
    rows = [
        {"key": "s1", "kind": "search", "final_drop": 0.004, "final_speedup": 3.0},
        {"key": "s2", "kind": "search", "final_drop": 0.012, "final_speedup": 4.0},  # over: not the pick
        {"key": "u1", "kind": "uniform", "final_drop": 0.009, "final_speedup": 2.0},
        {"key": "g1", "kind": "global", "final_drop": 0.010, "final_speedup": 2.5},
    ]
    e = pf.end_to_end(rows, 0.01)
    assert (e["pick"], e["baseline"]) == ("s1", "g1") and e["ratio"] == pytest.approx(1.2)
    assert pf.end_to_end(rows[2:], 0.01)["ratio"] is None  # no searched candidate within the budget
    noisy = rows + [{"key": "g2", "kind": "global", "final_drop": 0.005, "final_speedup": 9.0, "final_noisy": True}]
    assert pf.end_to_end(noisy, 0.01)["baseline"] == "g1"  # a timing that did not settle is not the fastest
    only_noisy = [rows[0], noisy[-1]]
    assert pf.end_to_end(only_noisy, 0.01)["baseline"] == "g2"  # unless no timing settled
