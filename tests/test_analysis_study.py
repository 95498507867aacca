"""Analysis of real Optuna studies: loading, host re-timing, report files and the CLI commands."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import itertools
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from PIL import Image

from autoprune.analysis import binomial_stderr
from autoprune.analysis import drop_stderr
from autoprune.analysis import load_analysis
from autoprune.analysis import load_study_info
from autoprune.analysis import load_trials
from autoprune.analysis import summarize
from autoprune.analysis import write_report
from autoprune.analysis.points import BaselinePoint
from autoprune.analysis.points import TrialFigures
from autoprune.analysis.report import table_legend
from autoprune.analysis.report import table_rows
from autoprune.cli import main
from autoprune.errors import StorageError

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

BASE = 0.98
N_VAL = 500
BOUNDS = {"stem": [0.0, 0.3], "layer1": [0.1, 0.6], "layer2": [0.1, 0.6], "layer3": [0.2, 0.7]}
WIDTHS = {"stem": 32, "layer1": 64, "layer2": 128, "layer3": 256}
SECRET = "hunter2pw"

# (metric, speedup) of the search trials; at max drop 0.01 trial 2 is the fastest feasible one,
# trial 3 is on the front but over budget, 4 and 5 are dominated.
TRIALS = [(0.978, 1.4), (0.975, 1.9), (0.972, 2.6), (0.960, 3.2), (0.970, 2.0), (0.940, 3.0)]
UNIFORM = [(0.2, 0.976, 1.6), (0.3, 0.971, 2.0), (0.5, 0.930, 3.5)]
GLOBAL = [(0.2, 0.977, 1.8), (0.3, 0.972, 2.3), (0.4, 0.950, 2.9)]


def _channels(ratios: dict[str, float]) -> dict[str, int]:
    return {g: int(WIDTHS[g] * (1 - r)) for g, r in ratios.items()}


def _trial_attrs(metric: float, speedup: float, ratios: dict[str, float], max_drop: float) -> dict[str, Any]:
    se = binomial_stderr(metric, N_VAL)
    drop = round(BASE - metric, 10)
    return {
        "metric": metric,
        "metric_stderr": se,
        "drop": drop,
        "drop_stderr": drop_stderr(binomial_stderr(BASE, N_VAL), se),
        "feasible": drop <= max_drop,
        "speedup": speedup,
        "speedup_spread": 0.02,
        "latency_ms": 10.0 / speedup,
        "base_latency_ms": 10.0,
        "latency_noisy": False,
        "macs": int(1e8 / speedup),
        "params": int(2e6 / speedup),
        "channels": _channels(ratios),
        "ratios": ratios,
        "stage_seconds": {"prune": 0.1, "recover": 5.0, "time": 2.0},
        "host": "searchbox",
        "host_id": "hostA",
        "worker": "w0",
        "kind": "search",
    }


def _point(ratio: float, metric: float, speedup: float, max_drop: float) -> dict[str, Any]:
    ratios = dict.fromkeys(BOUNDS, ratio)
    return {"ratio": ratio, "metric": metric, "drop": round(BASE - metric, 10), "speedup": speedup,
            "latency_ms": 10.0 / speedup, "macs": int(1e8 / speedup), "params": int(2e6 / speedup),
            "feasible": BASE - metric <= max_drop, "channels": _channels(ratios), "ratios": ratios}


def make_study(
    url: str | optuna.storages.BaseStorage,
    name: str,
    trials: list[tuple[float, float]] = TRIALS,
    *,
    max_drop: float = 0.01,
    baselines: bool = True,
    extra: dict[int, dict[str, Any]] | None = None,
) -> optuna.Study:
    """A study that follows the workers' data contract, with known trials."""
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "maximize"])
    study.set_metric_names(["accuracy", "speedup"])
    attrs = {
        "base_metric": BASE,
        "base_metric_stderr": binomial_stderr(BASE, N_VAL),
        "max_drop": max_drop,
        "metric_name": "accuracy",
        "metric_direction": "maximize",
        "bounds": BOUNDS,
        "groups": [{"name": g, "channels": c} for g, c in WIDTHS.items()],
        "baselines": {
            "uniform": [_point(r, m, s, max_drop) for r, m, s in UNIFORM],
            "global": [_point(r, m, s, max_drop) for r, m, s in GLOBAL],
        } if baselines else {},
        "config": {"storage": f"postgresql://bob:{SECRET}@db:5432/studies", "n_val": N_VAL, "trials": 50},
        "round_to": 8,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    dists = {g: FloatDistribution(lo, hi) for g, (lo, hi) in BOUNDS.items()}
    for i, (metric, speedup) in enumerate(trials):
        override = (extra or {}).get(i, {})
        ratios = override.get("ratios") or {g: round(lo + (hi - lo) * (i % 5) / 4, 4) for g, (lo, hi) in BOUNDS.items()}
        user_attrs = _trial_attrs(metric, speedup, ratios, max_drop) | override
        study.add_trial(optuna.trial.create_trial(
            values=[metric, speedup], params=ratios, distributions=dists, user_attrs=user_attrs,
            constraints={"drop": user_attrs["drop"] - max_drop},
        ))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"host_id": "hostA"}))
    return study


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture(scope="module")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "studies.db"
    make_study(f"sqlite:///{path}", "resnet")
    return path


@pytest.fixture
def study_url(_template_db: Path, tmp_path: Path) -> str:
    """A fresh copy of the "resnet" study (building it per test costs more than copying the file)."""
    shutil.copyfile(_template_db, tmp_path / "studies.db")
    return f"sqlite:///{tmp_path / 'studies.db'}"


# Loading ------------------------------------------------------------------------------------------------

def test_load_trials_columns_and_values(study_url: str) -> None:
    df = load_trials(study_url, "resnet")
    assert len(df) == len(TRIALS) + 1
    for col in ("number", "state", "metric", "metric_stderr", "drop", "drop_stderr", "speedup", "speedup_spread",
                "latency_ms", "macs", "params", "feasible", "host", "host_id", "worker", "kind"):
        assert col in df.columns, col
    assert [c for c in df.columns if c.startswith("ratio:")] == [f"ratio:{g}" for g in WIDTHS]
    assert [c for c in df.columns if c.startswith("channels:")] == [f"channels:{g}" for g in WIDTHS]
    assert list(df["state"]) == ["COMPLETE"] * len(TRIALS) + ["FAIL"]
    assert list(df["feasible"]) == [True, True, True, False, True, False, False]
    assert df.loc[2, "speedup"] == 2.6 and df.loc[2, "macs"] == int(1e8 / 2.6)
    # feasibility is recomputed for a budget given at analysis time
    loose = load_trials(study_url, "resnet", max_drop=0.05)
    assert list(loose["feasible"]) == [True] * len(TRIALS) + [False]


def test_load_study_info(study_url: str) -> None:
    info = load_study_info(study_url, "resnet")
    assert (info.name, info.metric_name, info.metric_direction) == ("resnet", "accuracy", "maximize")
    assert info.base_metric == BASE and info.max_drop == 0.01 and info.n_val == N_VAL
    assert info.bounds["layer3"] == (0.2, 0.7)
    assert info.group_names == list(WIDTHS)
    assert [p["ratio"] for p in info.baselines["uniform"]] == [0.2, 0.3, 0.5]
    assert SECRET not in json.dumps(info.config) and "bob:***@db" in info.config["storage"]
    assert info.budget_metric == pytest.approx(0.97)


def test_confirmed_and_timings_columns(sqlite_url: str) -> None:
    confirmed = {"selection_metric": 0.969, "selection_metric_stderr": 0.0077, "selection_drop": 0.011,
                 "selection_drop_stderr": 0.002, "selection_z": 1.0, "selection_feasible": False,
                 "speedup": 2.55, "speedup_spread": 0.03, "host_id": "hostA"}
    timings = {"hostB": {"host": "target", "speedup": 2.1, "speedup_spread": 0.01, "latency_ms": 4.0}}
    make_study(sqlite_url, "s", extra={2: {"confirmed": confirmed, "timings": timings}, 1: {"timings": timings}})
    df, info = load_analysis(sqlite_url, "s")
    assert df.loc[2, "confirmed:selection_drop"] == 0.011
    assert df.loc[2, "timings:hostB:speedup"] == 2.1
    # The only confirmed candidate fails the budget on the selection split: nothing is chosen (export would refuse too).
    summary = summarize(df, info, 0.01)
    assert summary.chosen is None and summary.validation_pick == 2 and summary.selection == "confirmed"
    assert "no confirmed candidate holds the budget 0.01 on the selection split" in summary.sentence
    # Its drop plus one standard error (0.013) is over 0.0125 too, though the drop alone is within it.
    assert summarize(df, info, 0.0125).chosen is None
    # At a wider budget it holds on the selection split and is chosen with its confirmed figures.
    summary = summarize(df, info, 0.02)
    assert summary.chosen.confirmed["selection_feasible"] is False  # as recorded, at the confirmation's budget
    assert (summary.chosen.number, summary.chosen.speedup, summary.chosen.speedup_searched) == (2, 2.55, 2.6)
    assert ("validation drop 0.0080 ± 0.0190, selection drop +0.0110 + 1 x 0.0020 (within the budget on the selection "
            "split, confirmed speedup 2.55x); test split not read yet") in summary.noise["line"]
    assert summary.final_test is None
    # judged on hostB: trials re-timed there take that speedup, the others have none
    on_b = load_trials(sqlite_url, "s", host_id="hostB")
    assert on_b.loc[2, "speedup"] == 2.1 and on_b.loc[2, "latency_ms"] == 4.0
    assert on_b.loc[2, "speedup_host_id"] == "hostB"
    assert on_b["speedup"].notna().sum() == 2
    # on its own search host a trial keeps its own timing
    assert load_trials(sqlite_url, "s", host_id="hostA").loc[2, "speedup"] == 2.6
    with pytest.raises(StorageError, match="hostZ.*hostA, hostB"):
        load_trials(sqlite_url, "s", host_id="hostZ")


def test_host_id_judges_baselines_on_that_host(sqlite_url: str) -> None:
    # the uniform sweep point r=0.3 was also run as a trial and re-timed on hostB
    ratios = dict.fromkeys(BOUNDS, 0.3)
    uniform_trial = {"kind": "uniform", "ratios": ratios, "channels": _channels(ratios),
                     "timings": {"hostB": {"host": "t", "speedup": 1.7, "latency_ms": 5.0}}}
    timings = {"timings": {"hostB": {"host": "t", "speedup": 2.2, "latency_ms": 4.5}}}
    make_study(sqlite_url, "s", trials=[*TRIALS, (0.971, 2.0)], extra={2: timings, len(TRIALS): uniform_trial})
    df, info = load_analysis(sqlite_url, "s", host_id="hostB")
    uniform = {p["ratio"]: p["speedup"] for p in info.baselines["uniform"]}
    assert uniform[0.3] == 1.7
    assert all(v != v for r, v in uniform.items() if r != 0.3)  # not re-timed: NaN
    summary = summarize(df, info, 0.01)
    assert summary.chosen.number == 2
    assert summary.speedup_vs["uniform"] == pytest.approx(2.2 / 1.7)
    assert "global baseline was not timed on this host" in summary.sentence


def test_minimized_metric_from_objective_values_only(sqlite_url: str, tmp_path: Path) -> None:
    # an error-rate study whose trials carry only objective values: drop and feasibility are derived
    study = optuna.create_study(study_name="err", storage=sqlite_url, directions=["minimize", "maximize"])
    for key, value in {"base_metric": 0.10, "max_drop": 0.02, "metric_name": "error"}.items():
        study.set_user_attr(key, value)
    for err, speedup in [(0.11, 1.5), (0.115, 2.5), (0.13, 3.0), (0.12, 2.0)]:
        study.add_trial(optuna.trial.create_trial(values=[err, speedup]))
    df, info = load_analysis(sqlite_url, "err")
    assert info.metric_direction == "minimize" and info.budget_metric == pytest.approx(0.12)
    assert list(df["drop"].round(6)) == [0.01, 0.015, 0.03, 0.02]
    assert list(df["feasible"]) == [True, True, False, True]
    s = summarize(df, info)
    assert s.chosen.number == 1
    assert [r.number for r in s.front] == [0, 1, 2]
    paths = write_report(df, info, None, tmp_path / "r")
    assert paths["pareto_png"].read_bytes()[:4] == b"\x89PNG"


def test_missing_study_lists_the_existing_ones(study_url: str) -> None:
    make_study(study_url, "mobilenet", baselines=False)
    with pytest.raises(StorageError, match=r"'nope' does not exist.*mobilenet, resnet"):
        load_trials(study_url, "nope")


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="no SQLite study database"):
        load_trials(f"sqlite:///{path}", "resnet")
    assert not path.exists()


def test_non_optuna_database_and_journal_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StorageError, match="is an Optuna database"):
        load_trials(f"sqlite:///{empty}", "resnet")
    assert empty.stat().st_size == 0
    # a journal file (or a bare SQLite path) is accepted as the storage too
    journal = tmp_path / "study.log"
    make_study(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))), "j")
    assert summarize(*load_analysis(str(journal), "j")).chosen.number == 2


def test_loading_writes_nothing(study_url: str, tmp_path: Path) -> None:
    db = tmp_path / "studies.db"
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns)
    for _ in range(3):
        load_analysis(study_url, "resnet", max_drop=0.02)
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.db"]


_WRITER = textwrap.dedent("""
    import sys, time, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="resnet", storage=sys.argv[1])
    for i in range(int(sys.argv[2])):
        trial = study.ask()
        trial.suggest_float("stem", 0.0, 0.3)
        metric, speedup = 0.97 - 0.001 * (i % 7), 1.5 + 0.05 * i
        for key, value in {"metric": metric, "drop": 0.98 - metric, "speedup": speedup}.items():
            trial.set_user_attr(key, value)
        time.sleep(0.01)  # a RUNNING trial for the reader to see
        study.tell(trial, [metric, speedup])
    print("done")
""")


def test_analyzer_reads_while_a_worker_adds_trials(study_url: str) -> None:
    n_new = 15
    start = len(load_trials(study_url, "resnet"))
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, study_url, str(n_new)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    counts = []
    try:
        while writer.poll() is None:
            df, info = load_analysis(study_url, "resnet", max_drop=0.01)
            summarize(df, info, 0.01)
            counts.append(int((df["state"] == "COMPLETE").sum()))
            time.sleep(0.02)
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert out.strip() == "done"
    assert len(counts) >= 3
    assert counts == sorted(counts)
    assert len(load_trials(study_url, "resnet")) == start + n_new


# Summary and report --------------------------------------------------------------------------------------

def test_summary_chooses_and_compares(study_url: str) -> None:
    df, info = load_analysis(study_url, "resnet")
    s = summarize(df, info, 0.01)
    assert s.chosen.number == 2
    assert [r.number for r in s.front] == [0, 1, 2, 3]
    assert s.best["uniform"].ratio == 0.3 and s.best["global"].ratio == 0.3
    assert s.speedup_vs["uniform"] == pytest.approx(1.3)
    assert s.sentence == ("The chosen architecture (trial 2) is 1.30x faster than the best uniform baseline "
                             "(2.00x) and 1.13x faster than the best global baseline (2.30x) at max drop 0.01. "
                             "These speedups are search timings, not yet confirmed by a re-timing (run autoprune "
                             "confirm).")
    assert s.chosen.ratios == df.loc[2, [f"ratio:{g}" for g in WIDTHS]].set_axis(list(WIDTHS)).to_dict()
    # above (0.97, 1.0x): 0.002 x 1.6 + 0.003 x 0.9 + 0.003 x 0.4 (trials 2, 1, 0)
    assert s.hypervolume["value"] == pytest.approx(0.0071)
    json.dumps(s.to_json())  # plain data
    # a tighter budget that no sweep meets
    tight = summarize(df, info, 0.003)
    assert tight.chosen.number == 0
    assert "the uniform baseline has no feasible point" in tight.sentence


def test_a_disturbed_timing_leads_nothing_until_a_settled_retiming(sqlite_url: str, tmp_path: Path) -> None:
    # The trial: 5.67x on a base timed twice too slow, spread 20.9 % with the flag unset, in a study
    # whose latency.cv_threshold is 0.05.  It would dominate the front and be chosen (drop 0.005).
    trials = [*TRIALS[:4], (0.975, 5.67), TRIALS[5]]
    study = make_study(sqlite_url, "s", trials, extra={4: {"speedup_spread": 0.209, "latency_noisy": False}})
    study.set_user_attr("config", {"n_val": N_VAL, "latency": {"cv_threshold": 0.05}})
    df, info = load_analysis(sqlite_url, "s")
    assert bool(df.loc[4, "latency_noisy"]) is True  # the recorded spread condemns it whatever the flag said
    s = summarize(df, info, 0.01)
    assert s.chosen.number == 2 and s.chosen.timing == "measured"
    assert 4 not in [r.number for r in s.front]
    assert not any(r.latency_noisy for r in s.front)
    assert s.speedup_vs["uniform"] == pytest.approx(1.3)
    assert [u.to_json() for u in s.unsettled] == [{"number": 4, "speedup": 5.67, "speedup_spread": 0.209, "feasible": True}]
    assert s.sentence.endswith(
        "These speedups are search timings, not yet confirmed by a re-timing (run autoprune confirm). "
        "Left out until re-timed, as their timings did not settle: trial 4 (5.67x ± 20.9%).")
    assert s.hypervolume["value"] == pytest.approx(0.0071)  # as without trial 4
    paths = write_report(df, info, 0.01, tmp_path / "report")
    assert "5.67" not in paths["front_csv"].read_text()
    # `autoprune confirm` re-timed it at 3.24x with a settled spread: it now counts, with that figure.
    figures = {"speedup": 3.24, "speedup_spread": 0.01, "noisy": False, "host_id": "hostA", "selection_drop": 0.006,
               "selection_feasible": True}
    study.set_user_attr("confirmation", {"trials": {"4": figures}})
    s = summarize(*load_analysis(sqlite_url, "s"), 0.01)
    assert (s.chosen.number, s.chosen.speedup, s.chosen.timing) == (4, 3.24, "confirmed")
    assert s.chosen.speedup_searched == 5.67 and s.unsettled == []
    assert s.speedup_vs["uniform"] == pytest.approx(1.62)
    assert s.sentence.endswith("The chosen speedup is a settled re-timing; the baselines' are search timings.")
    assert "4 (re-timed)" in [r["trial"] for r in table_rows(s)]
    # a confirmation that did not settle either leaves it out again
    study.set_user_attr("confirmation", {"trials": {"4": figures | {"speedup_spread": 0.12}}})
    assert summarize(*load_analysis(sqlite_url, "s"), 0.01).chosen.number == 2


def test_latency_column_orders_as_the_speedups(sqlite_url: str) -> None:
    # Each trial timed its own base: trial 2 (2.60x) saw a slow base, so its own latency (5.38 ms) is above
    # trial 1's (4.35 ms at 1.90x).  The table divides one pooled base latency by each speedup instead.
    make_study(sqlite_url, "s", extra={2: {"base_latency_ms": 14.0, "latency_ms": 14.0 / 2.6}})
    s = summarize(*load_analysis(sqlite_url, "s"), 0.01)
    assert s.base_latency_ms == 10.0  # the median over the trials' and the sweep points' base timings
    rows = table_rows(s)
    pairs = [(float(r["speedup"].split("x")[0]), float(r["latency_ms"])) for r in rows]
    assert len(pairs) >= 5
    for (fast, fast_ms), (slow, slow_ms) in itertools.permutations(pairs, 2):
        if fast > slow:
            assert fast_ms < slow_ms, (fast, fast_ms, slow, slow_ms)
    assert "latency = pooled base latency 10.000 ms / speedup" in table_legend(s)


def test_a_confirmed_pick_leads_every_view_with_its_confirmed_figures(sqlite_url: str, tmp_path: Path) -> None:
    # Validation pick: trial 2 (2.60x in the search).  Confirmation re-timed it at 1.95x, the global baseline
    # trial 1 at 2.30x, together: the confirmed choice is trial 1, and every view says so.
    conf = {"selection_drop": 0.004, "selection_feasible": True, "noisy": False, "speedup_spread": 0.01, "host_id": "hostA"}
    study = make_study(sqlite_url, "s", extra={1: {"kind": "global"}})
    study.set_user_attr("confirmation", {"trials": {"2": conf | {"speedup": 1.95, "kind": "search"},
                                                    "1": conf | {"speedup": 2.30, "kind": "global"}}})
    df, info = load_analysis(sqlite_url, "s")
    s = summarize(df, info, 0.01)
    assert (s.selection, s.chosen.number, s.chosen.speedup, s.validation_pick) == ("confirmed", 1, 2.3, 2)
    assert s.best["global"].timing == "confirmed" and s.best["global"].speedup == 2.3
    assert s.sentence.startswith("The search found nothing faster than the global baseline within the budget "
                                    "(max drop 0.01): the chosen architecture is the global baseline (trial 1, 2.30x)")
    assert "The validation-time pick, trial 2 (2.60x in the search), was re-timed at 1.95x ± 1.0%." in s.sentence
    rows = table_rows(s)
    assert [r["trial"] for r in rows if r["mark"] == "*"] == ["1 (global)"]
    assert [r["trial"] for r in rows if r["mark"] == "v"] == ["2"]
    assert [r["confirmed"] for r in rows if r["mark"] == "*"] == ["2.30x ± 1.0%"]
    paths = write_report(df, info, 0.01, tmp_path)
    on_disk = json.loads(paths["summary_json"].read_text())
    assert on_disk["chosen"]["number"] == 1 and on_disk["selection"] == "confirmed"
    page = paths["report_html"].read_text()
    assert html.escape(s.sentence) in page and '<tr class="chosen"><td class="l">*</td><td>1 (global)</td>' in page
    front = pd.read_csv(paths["front_csv"])
    assert list(front.loc[front["chosen"], "number"]) == [1]
    # Without the confirmation the same study chooses trial 2 and says its figures are unconfirmed.
    study.set_user_attr("confirmation", {})
    s = summarize(*load_analysis(sqlite_url, "s"), 0.01)
    assert (s.selection, s.chosen.number) == ("validation", 2)
    assert "not yet confirmed by a re-timing" in s.sentence and "figures unconfirmed" in table_legend(s)


def test_summary_says_when_baselines_were_not_recorded(sqlite_url: str) -> None:
    make_study(sqlite_url, "s", baselines=False)
    s = summarize(*load_analysis(sqlite_url, "s"), 0.01)
    assert s.sentence.startswith("The chosen architecture (trial 2) reaches 2.60x at max drop 0.01")
    assert "no uniform baseline was recorded" in s.sentence


def test_noise_warning_below_and_above_the_noise(study_url: str) -> None:
    df, info = load_analysis(study_url, "resnet")
    # the drop standard error is ~0.0097 with 500 validation samples
    assert summarize(df, info, 0.01).noise["warning"] is not None
    assert summarize(df, info, 0.03).noise["warning"] is None


def test_write_report_files(study_url: str, tmp_path: Path) -> None:
    df, info = load_analysis(study_url, "resnet")
    paths = write_report(df, info, 0.01, tmp_path / "report")
    assert {p.name for p in paths.values()} == {"trials.csv", "front.csv", "pareto.png", "ratios.png",
                                                "summary.json", "report.html"}
    for name in ("pareto_png", "ratios_png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(paths[name]) as img:
            img.verify()
    front = paths["front_csv"].read_text().splitlines()
    assert front[0].split(",")[:16] == ["number", "state", "metric", "metric_stderr", "drop", "drop_stderr",
                                        "drop_low", "drop_high", "speedup", "speedup_spread", "latency_ms",
                                        "macs", "params", "feasible", "chosen", "kind"]
    assert len(front) == 1 + 4
    assert len(paths["trials_csv"].read_text().splitlines()) == 1 + len(TRIALS) + 1

    page = paths["report_html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r"""<img[^>]*src="([^"]*)\"""", page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "The chosen architecture (trial 2) is 1.30x faster than the best uniform baseline" in page
    assert "Noise floor" in page and "Warning:" in page
    assert SECRET not in page and "bob:***@db" in page


def test_report_without_any_feasible_trial(study_url: str, tmp_path: Path) -> None:
    df, info = load_analysis(study_url, "resnet")
    paths = write_report(df, info, 0.001, tmp_path)
    assert "No architecture was chosen" in paths["report_html"].read_text()


# CLI ---------------------------------------------------------------------------------------------------

def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_cli_pareto(study_url: str, tmp_path: Path) -> None:
    result = _run("pareto", "--study", "resnet", "--storage", study_url, "--max-drop", "0.01", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    chosen = [line for line in out.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and re.match(r"\*\s+2\s+0\.0080 ± 0\.0190\s+-\s+2\.60x ± 2\.0%\s+-\s+3\.846\s", chosen[0])
    assert re.search(r"^U\s+uniform r=0\.30", out, re.M) and re.search(r"^G\s+global r=0\.30", out, re.M)
    assert "1.30x faster than the best uniform baseline (2.00x)" in out
    assert "warning: max drop 0.01 is below 2 standard errors" in out
    assert str(tmp_path / "report.html") in out


def test_cli_pareto_from_a_config(study_url: str, tmp_path: Path) -> None:
    config = tmp_path / "resnet.yaml"
    config.write_text(f"name: resnet\nstorage: {study_url}\nmax_drop: 0.03\nartifact_dir: art\n")
    result = _run("pareto", str(config))
    assert result.exit_code == 0, result.output
    assert re.search(r"^\*\s+3\s", result.stdout, re.M)  # the config's budget, not the study's 0.01
    assert (tmp_path / "art" / "report" / "report.html").is_file()
    # options override the config
    assert re.search(r"^\*\s+2\s", _run("pareto", str(config), "--max-drop", "0.01").stdout, re.M)


def test_cli_pareto_without_warning_above_the_noise(study_url: str, tmp_path: Path) -> None:
    result = _run("pareto", "--study", "resnet", "--storage", study_url, "--max-drop", "0.03", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert re.search(r"^\*\s+3\s", result.stdout, re.M)


def test_cli_pareto_nothing_feasible_exits_2(study_url: str, tmp_path: Path) -> None:
    result = _run("pareto", "--study", "resnet", "--storage", study_url, "--max-drop", "0.001", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "error: no trial is feasible at max drop 0.001" in result.stderr
    assert "the closest is trial 0 with drop 0.002" in result.stderr


def test_cli_on_a_study_without_trials(sqlite_url: str, tmp_path: Path) -> None:
    optuna.create_study(study_name="empty", storage=sqlite_url, directions=["maximize", "maximize"])
    result = _run("pareto", "--study", "empty", "--storage", sqlite_url, "--max-drop", "0.01", "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "error: no trial has a measured metric" in result.stderr
    assert (tmp_path / "report.html").is_file()


def test_cli_errors_exit_2_without_secrets(study_url: str) -> None:
    missing = _run("pareto", "--study", "nope", "--storage", study_url)
    assert missing.exit_code == 2 and "studies there: resnet" in missing.stderr
    no_target = _run("pareto")
    assert no_target.exit_code == 2 and "--study NAME and --storage URL" in no_target.stderr
    unreachable = _run("pareto", "--study", "x", "--storage", f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:1/x")
    assert unreachable.exit_code == 2
    assert "cannot read study storage postgresql+psycopg2://bob:***@127.0.0.1:1/x" in unreachable.stderr
    assert SECRET not in unreachable.output and "Traceback" not in unreachable.output


def test_cli_pareto_json(study_url: str, tmp_path: Path) -> None:
    result = _run("pareto", "--study", "resnet", "--storage", study_url, "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["chosen"]["number"] == 2 and data["max_drop"] == 0.01
    assert Path(data["files"]["report_html"]).is_file()


def test_cli_compare(study_url: str, tmp_path: Path) -> None:
    make_study(study_url, "mobilenet", trials=[(0.978, 1.2), (0.975, 3.1), (0.95, 4.0)], baselines=False)
    result = _run("compare", "--storage", study_url, "--study", "resnet", "--study", "mobilenet",
                  "--max-drop", "0.01", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(("resnet", "mobilenet"))}
    assert re.search(r"\b2\s+0\.0080\s+2\.60x\s+2\.00x\s+2\.30x\s+1\.30/1\.13$", rows["resnet"])
    assert re.search(r"\b1\s+0\.0050\s+3\.10x\s+-\s+-\s+-/-$", rows["mobilenet"])
    with Image.open(tmp_path / "compare.png") as img:
        img.verify()
    assert _run("compare", "--study", "resnet").exit_code == 2



def test_cli_compare_reads_a_configs_study_from_storage(study_url: str, tmp_path: Path) -> None:
    from conftest import write_study

    config = write_study(tmp_path / "cfg", {"name": "resnet"})  # its own storage would be a SQLite file beside it
    result = _run("compare", str(config), "--storage", study_url, "--max-drop", "0.01", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert any(line.startswith("resnet") for line in result.stdout.splitlines()), result.stdout


# PostgreSQL ---------------------------------------------------------------------------------------------

# SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project installs psycopg2.
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.mark.postgres
def test_postgres_study_loads_and_selects() -> None:
    try:
        optuna.study.get_all_study_names(storage=PG_URL)
    except Exception as exc:  # noqa: BLE001 - any connection problem means: no server here
        pytest.skip(f"no PostgreSQL at {PG_URL}: {type(exc).__name__}")
    name = f"analysis-{uuid.uuid4().hex[:8]}"
    make_study(PG_URL, name)
    try:
        df, info = load_analysis(PG_URL, name)
        assert len(df) == len(TRIALS) + 1 and info.base_metric == BASE
        assert summarize(df, info, 0.01).chosen.number == 2
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def _trial(**figures: Any) -> TrialFigures:
    """A summary's trial record with only ``figures`` set (a hand-made headline case)."""
    return dataclasses.replace(TrialFigures.from_row({}, 0.0, None), **figures)


def _sweep_point(figures: dict[str, Any]) -> BaselinePoint:
    """A baseline point carrying only ``figures``."""
    return BaselinePoint.from_point(figures)


def test_a_ratio_inside_the_timing_noise_is_not_claimed() -> None:
    from autoprune.analysis.report import _versus

    base = _sweep_point({"speedup": 2.00, "speedup_spread": 0.03})
    assert _versus(_trial(speedup=2.60, speedup_spread=0.02, kind="search"), base, "global") == "1.30x faster than"
    assert _versus(_trial(speedup=2.05, speedup_spread=0.04, kind="search"), base, "global") == "as fast as, within timing noise (±5.0%),"
    assert _versus(_trial(speedup=1.50, speedup_spread=0.02, kind="search"), base, "global") == "1.33x slower than"
    assert _versus(_trial(speedup=2.00, speedup_spread=0.0, kind="search"), _sweep_point({"speedup": 2.004}), "uniform") == "as fast as"


def test_a_baseline_pick_is_said_in_words() -> None:
    from autoprune.analysis.report import _comparison_sentence

    best = {"uniform": {"speedup": 2.00, "speedup_spread": 0.01}, "global": {"speedup": 2.10, "speedup_spread": 0.01}}
    best = {kind: _sweep_point(p) for kind, p in best.items()}
    baselines = {"uniform": [best["uniform"]], "global": [best["global"]]}
    chosen = _trial(number=1, kind="global", speedup=2.10, speedup_spread=0.01)
    assert _comparison_sentence(chosen, best, baselines, 0.01, None) == (
        "The search found nothing faster than the global baseline within the budget (max drop 0.01): the chosen "
        "architecture is the global baseline (trial 1, 2.10x), 1.05x faster than the best uniform baseline (2.00x).")


def test_a_baseline_that_fails_on_the_selection_split_is_said_so_beside_the_comparison() -> None:
    from autoprune.analysis.report import _comparison_sentence

    best = {"uniform": {"speedup": 5.37, "speedup_spread": 0.005, "selection_drop": 0.0306},
            "global": {"speedup": 4.00, "speedup_spread": 0.005, "selection_drop": 0.0200}}
    best = {kind: _sweep_point(p) for kind, p in best.items()}
    baselines = {"uniform": [best["uniform"]], "global": [best["global"]]}
    chosen = _trial(number=15, kind="search", speedup=5.00, speedup_spread=0.007)
    text = _comparison_sentence(chosen, best, baselines, 0.03, None)
    assert ("slower than the best uniform baseline (5.37x, which fails the budget on the selection split "
            "(selection drop +0.0306))") in text
    assert "faster than the best global baseline (4.00x)" in text  # holds on the selection split: no caveat


def test_the_same_architecture_as_a_baseline_is_said_so_not_compared() -> None:
    """Two timings of one model differ by the timing's noise only: no "1.01x faster" between them."""
    from autoprune.analysis.report import _comparison_sentence

    same = {"a": 16, "b": 32}
    best = {"uniform": {"speedup": 5.80, "speedup_spread": 0.002, "channels": dict(same)},
            "global": {"speedup": 5.73, "speedup_spread": 0.003, "channels": dict(same)}}
    best = {kind: _sweep_point(p) for kind, p in best.items()}
    baselines = {"uniform": [best["uniform"]], "global": [best["global"]]}
    chosen = _trial(number=0, kind="uniform", speedup=5.80, speedup_spread=0.002, channels=dict(same))
    text = _comparison_sentence(chosen, best, baselines, 0.025, None)
    assert "the same architecture as the best global baseline." in text and "5.73x" not in text
    assert "faster" not in text.split("(trial 0, 5.80x)")[1]


# Twins: trial 0 (uniform) and trial 1 (global) kept the same channels; the search timed trial 1 faster by
# noise (6.22x against 5.83x), as in issue 30.  Trial 2 is over the budget; trial 3 was screened.
TWINS = [(0.975, 5.83), (0.975, 6.22), (0.960, 7.0)]
TWIN_RATIOS = {"stem": 0.1, "layer1": 0.3, "layer2": 0.3, "layer3": 0.4}


def _twin_study(url: str) -> optuna.Study:
    study = make_study(url, "twins", TWINS, extra={0: {"kind": "uniform", "ratios": TWIN_RATIOS},
                                                   1: {"kind": "global", "ratios": TWIN_RATIOS}})
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        "screened": "cannot beat the incumbent", "metric_after_bn": 0.95, "speedup": 4.0, "speedup_spread": 0.02,
        "latency_noisy": False, "kind": "search", "host_id": "hostA"}))
    return study


def test_twins_are_one_candidate_and_share_one_figure(sqlite_url: str) -> None:
    from autoprune.analysis.choice import choose
    from autoprune.selection.confirm import select_candidates
    from autoprune.selection.confirm import twins_timed

    study = _twin_study(sqlite_url)
    df, info = load_analysis(sqlite_url, "twins")
    # Unconfirmed: the validation pick is the lowest-numbered twin, not the one the noise timed faster.
    assert choose(df, 0.01, use_confirmed=False).number == 0
    # confirm measures the architecture once, and records the twin as sharing that timing.
    candidates = select_candidates(df, info, 5, 0.01)
    assert [c.number for c in candidates] == [0]
    assert twins_timed(df, candidates) == {"1": 0}
    conf = {"selection_drop": 0.004, "selection_feasible": True, "noisy": False, "speedup_spread": 0.01, "host_id": "hostA",
            "speedup": 5.9, "latency_ms": 1.7, "reproduced": True}
    study.set_user_attr("confirmation", {"trials": {"0": conf}, "twins": {"1": 0}, "measured_at": "2026-01-01T00:00:00"})
    df, info = load_analysis(sqlite_url, "twins")
    rows = df.set_index("number")
    assert rows.loc[1, "confirmed:speedup"] == rows.loc[0, "confirmed:speedup"] == 5.9  # one figure for both
    s = summarize(df, info, 0.01)
    assert (s.selection, s.chosen.number, s.validation_pick, s.passed_over) == ("confirmed", 0, 0, None)
    assert "passed over" not in json.dumps(s.to_json()) and "validation-time pick" not in s.sentence
    assert "the same architecture as the best global baseline (trial 1)" in s.sentence
    comparison = s.sentence.split("(trial 0, 5.90x)")[1]
    assert "faster" not in comparison and "slower" not in comparison and "timed apart" not in comparison
    assert not [r for r in table_rows(s) if r["mark"] == "v"]
    # The latency column shows the confirmed figure, not the search's.
    assert [r["latency_ms"] for r in table_rows(s) if r["mark"] == "*"] == ["1.700"]


def test_pareto_plot_draws_each_point_where_its_label_says(sqlite_url: str) -> None:
    from autoprune.analysis.plots import pareto_figure

    study = _twin_study(sqlite_url)
    conf = {"selection_drop": 0.004, "selection_feasible": True, "noisy": False, "speedup_spread": 0.01, "host_id": "hostA",
            "speedup": 5.9, "latency_ms": 1.7, "reproduced": True}
    study.set_user_attr("confirmation", {"trials": {"0": conf}, "twins": {"1": 0}})
    df, info = load_analysis(sqlite_url, "twins")
    s = summarize(df, info, 0.01)
    fig, label = pareto_figure(df, info, 0.01, chosen_number=0, chosen_note="confirmed 5.90x", passed_over=1,
                               chosen_speedup=s.chosen.speedup, best=s.best)
    ax = fig.axes[0]
    drawn = {c.get_label(): c for c in ax.collections}
    star = drawn[label]
    # The star sits at the confirmed figure it is labelled with, not at the search timing (5.83x).
    assert label == "chosen: trial 0 (confirmed 5.90x)" and star.get_offsets().tolist() == [[5.9, 0.975]]
    # The best-global ring (the twin, at the same place) and the passed-over cross are drawn above the star, the
    # ring wider than it: neither hides under it.
    ring = drawn["best global: 5.90x"]
    assert ring.get_offsets().tolist() == [[5.9, 0.975]]
    assert ring.get_zorder() > star.get_zorder() and ring.get_sizes()[0] > star.get_sizes()[0]
    assert ring.get_facecolors().size == 0 or ring.get_facecolors()[0][3] == 0  # hollow
    cross = next(c for name, c in drawn.items() if name.startswith("validation-time pick"))
    assert cross.get_zorder() > star.get_zorder()
    # Both rings are visible at one place: the second kind's is wider.
    sizes = {drawn[f"best {kind}: 5.90x"].get_sizes()[0] for kind in ("uniform", "global")}
    assert len(sizes) == 2 and min(sizes) > star.get_sizes()[0]
    # The screened trial is drawn in its own style at its speedup, in a strip along the bottom of the axes
    # (x in data, y in axes coordinates), and counted in the title.
    screened = next(c for name, c in drawn.items() if name.startswith("screened"))
    x, y = screened.get_offsets().tolist()[0]
    assert x == 4.0 and 0 < y < 0.1 and screened.get_offset_transform() == ax.get_xaxis_transform()
    assert "1 screened" in ax.get_title()
    # The metric axis fits the points, the budget line and the unpruned model, with a small margin only.
    low, high = ax.get_ylim()
    shown = [0.975, 0.975, 0.960, BASE, BASE - 0.01] + [m for _r, m, _s in UNIFORM + GLOBAL if m >= BASE - 0.05]  # 4 budgets under the line
    assert low <= min(shown) and high >= max(shown)
    assert high - low <= 1.2 * (max(shown) - min(shown)), (low, high)
