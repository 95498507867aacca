"""Honest selection: ``autoprune confirm`` re-times the best candidates together, judges them on the selection
split (never the test split), stores the figures, and ``export`` picks the fastest candidate that holds there,
then reads the test split once, for the exported model.

One real tiny study (digits, small ResNet, SQLite) is searched once per module: the sweeps, an enqueued
unpruned-architecture trial (slow, accurate), an enqueued mid trial and random trials.  Its config does
not enqueue baseline trials, so confirmation rebuilds the best uniform and global sweep points.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
from conftest import run_cli
from conftest import write_study
from torch.utils.data import TensorDataset

from autoprune.analysis import StudyInfo
from autoprune.analysis import load_analysis
from autoprune.analysis import select
from autoprune.analysis import summarize
from autoprune.analysis.choice import confirmed_pick
from autoprune.analysis.choice import holds_on_selection
from autoprune.analysis.pareto import best_baseline
from autoprune.config import load_config
from autoprune.errors import SelectionError
from autoprune.errors import TaskError
from autoprune.latency import host_fingerprint
from autoprune.selection import confirm as confirm_module
from autoprune.selection.confirm import TIMING_ROUNDS
from autoprune.selection.confirm import confirm_study
from autoprune.selection.confirm import feasible_ranking
from autoprune.selection.confirm import rebuild_trial
from autoprune.selection.confirm import select_candidates
from autoprune.selection.export import chosen_lines
from autoprune.selection.export import export_architecture
from autoprune.selection.final_test import FinalTest
from autoprune.tasks.digits import DigitsTask
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import evaluate_candidate

MAX_DROP = 0.3
# Everything small, so the module's study takes well under a minute on two shared cores.  bounds_margin
# 99 opens the search space to every reachable width, so an unpruned architecture can be enqueued.
OVERRIDES = {
    "name": "confirm-digits",
    "max_drop": MAX_DROP,
    "base": {"epochs": 3},
    "search": {"trials": 5, "sweep_ratios": [0.3, 0.5], "bounds_margin": 99, "enqueue_baselines": False},
    "recovery": {"bn_batches": 2, "finetune_steps": 20, "lr": 0.02},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5},
}


@pytest.fixture(scope="module")
def study_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A searched study: 2 enqueued trials (unpruned architecture, ratio ~0.3 everywhere) + 3 random ones."""
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local
    from autoprune.space.widths import nearest_widths
    from autoprune.space.widths import space_from_attr

    path = write_study(tmp_path_factory.mktemp("confirm"), OVERRIDES)
    cfg, url, study = create_study(str(path), None, say=lambda line: None)
    space = space_from_attr(study.user_attrs["search_space"])
    study.enqueue_trial({k: g.channels for k, g in space.items()})
    study.enqueue_trial(nearest_widths(space, {k: 0.3 for k in space}))
    assert run_local(str(path), url, 1, cfg.search.trials) == 0
    states = {t.state for t in optuna.load_study(study_name=cfg.name, storage=url).trials}
    # A test-split read inside the search raises (forbid_split) and would fail the trial.
    assert states == {optuna.trial.TrialState.COMPLETE}
    return path


def _config(path: Path):
    return load_config(path)


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_search_path_never_reads_the_test_split(study_config: Path) -> None:
    cfg = _config(study_config)
    ctx = StudyContext.build(cfg, use_cache=False)
    assert ctx.task.access_counts["test"] == 0 and ctx.task.access_counts["val"] == 1
    result = evaluate_candidate(ctx, uniform=0.3)
    assert result.metric.n == len(ctx.task.split_data("val")) < len(ctx.task.dataset("val"))
    assert ctx.task.access_counts["test"] == 0
    # Validation is read for the base, after BN recalibration and after the finetune; never the test split.
    assert ctx.task.access_counts["train"] > 0 and ctx.task.access_counts["val"] == 3
    with ctx.task.forbid_split("test"):
        with pytest.raises(TaskError, match="held out during the search"):
            ctx.task.evaluate(result.model, "test")
    assert ctx.task.access_counts["test"] == 0
    ctx.task.evaluate(result.model, "test")  # outside the search the split is readable, and counted
    assert ctx.task.access_counts["test"] == 1


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_confirm_retimes_together_judges_on_the_selection_split_and_stores(study_config: Path) -> None:
    cfg = _config(study_config)
    df, info = load_analysis(cfg.storage_url(), cfg.name)
    candidates = select_candidates(df, info, 5, MAX_DROP)
    trials = [c for c in candidates if c.number is not None]
    sweeps = [c for c in candidates if c.number is None]
    assert [c.on_front for c in trials] == [True] * len(trials) and len(trials) >= 2
    # No baseline trials: each kind's best settled feasible sweep point is rebuilt from the sweeps (a point whose
    # timing did not settle, as on a loaded host, is no candidate: it may lead nothing).
    settled_best = {k for k, points in info.baselines.items()
                    if best_baseline(points, MAX_DROP, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold)}
    assert sweeps and {c.kind for c in sweeps} == settled_best
    ctx = StudyContext.build(cfg)
    lines: list[str] = []
    summary = confirm_study(cfg, top=5, echo=lines.append, context=ctx)

    # The selection split is read once per model (base + every candidate); the test split never.
    assert ctx.task.access_counts["selection"] == 1 + len(candidates) and ctx.task.access_counts["test"] == 0
    assert set(summary["trials"]) == {str(c.number) for c in trials}
    assert set(summary["baselines"]) == {c.kind for c in sweeps}
    assert all(summary["baselines"][c.kind]["ratio"] == c.ratio for c in sweeps)
    # One interleaved timing run for all of them, on this host.
    entries = [*summary["trials"].values(), *summary["baselines"].values()]
    assert summary["timing"]["candidates"] == len(candidates)
    assert {e["host_id"] for e in entries} == {host_fingerprint()["fingerprint_id"]} == {summary["host_id"]}
    assert all(e["speedup"] > 0 and e["base_latency_ms"] > 0 for e in entries)

    # Standard errors, by hand: binomial on the selection split's n; the drop's is paired (both models on the same
    # images): with k discordant images (one model right, the other wrong), sd(diff)^2 = (k - n drop^2) / (n - 1),
    # so the stored error must give a whole k between n |drop| and n.  A candidate holds when its drop plus
    # search.selection_z (default 1) standard errors is within the budget.
    n = len(ctx.task.split_data("selection"))
    base_p = summary["base_selection_metric"]
    assert summary["selection_n"] == n and summary["selection_z"] == cfg.search.selection_z == 1.0
    assert summary["base_selection_metric_stderr"] == pytest.approx(math.sqrt(base_p * (1 - base_p) / n), rel=1e-12)
    for e in entries:
        p = e["selection_metric"]
        assert e["selection_n"] == n and p * n == pytest.approx(round(p * n), abs=1e-9)
        assert e["selection_metric_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=1e-12)
        assert e["selection_drop"] == pytest.approx(base_p - p, abs=1e-12)
        discordant = e["selection_drop_stderr"] ** 2 * n * (n - 1) + n * e["selection_drop"] ** 2
        assert e["selection_drop_paired"] is True and discordant == pytest.approx(round(discordant), abs=1e-6)
        assert n * abs(e["selection_drop"]) - 1e-6 <= discordant <= n
        assert e["selection_feasible"] == (e["selection_drop"] + e["selection_drop_stderr"] <= MAX_DROP)
        assert not any(key.startswith("test_") for key in e)

    # The rebuilt model is the finetuned one: its validation metric is the trial's, its selection accuracy is
    # what a plain count over the selection split (validation images no trial was judged on) gives.
    pick = trials[0]
    model = rebuild_trial(cfg, pick, Path(ctx.workdir))
    assert ctx.task.evaluate(model, "val").value == pick.val_metric
    x, y = ctx.task.dataset("val").tensors
    carved = ctx.task.split_data("selection").indices
    assert set(carved).isdisjoint(ctx.task.split_data("val").indices)
    with torch.no_grad():
        correct = int((model.eval()(x[carved]).argmax(1) == y[carved]).sum())
    assert summary["trials"][str(pick.number)]["selection_metric"] == correct / n

    # Stored: the analysis table shows the figures as confirmed:<key> columns of those trials.
    df2, _ = load_analysis(cfg.storage_url(), cfg.name)
    row = df2.set_index("number").loc[pick.number]
    assert row["confirmed:selection_drop"] == summary["trials"][str(pick.number)]["selection_drop"]
    assert row["confirmed:speedup"] == summary["trials"][str(pick.number)]["speedup"]
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs["confirmation"]
    assert stored["trials"] == json.loads(json.dumps(summary["trials"]))
    assert summary["val_pick"] == _val_pick(df, info)
    assert any(line.startswith("candidate ") and "confirmed" in line for line in lines)
    assert any(f"the validation pick, trial {summary['val_pick']}" in line for line in lines)

    # Export follows the confirmation: the fastest confirmed candidate within the budget on the selection split;
    # then it reads the test split once, for that model (and the base, for its drop), and reports it.
    out = export_architecture(cfg, Path(ctx.workdir) / "arch.json", task=ctx.task)
    assert summary["pick"] is not None and out.trial == summary["pick"]
    assert ctx.task.access_counts["test"] == 2
    arch = json.loads(out.path.read_text())
    fig = summary["trials"][str(out.trial)]
    assert arch["provenance"]["selection"] == "confirmed"
    assert arch["metrics"]["selection_drop"] == fig["selection_drop"] and arch["metrics"]["selection_feasible"] is True
    assert arch["metrics"]["selection_drop_paired"] is True  # the classification task pairs its drops
    assert arch["latency"]["confirmed_speedup"] == fig["speedup"]
    report = out.final_test
    assert report is not None and report.trial == out.trial and report.test_n == len(ctx.task.dataset("test"))
    assert arch["metrics"]["test_drop"] == report.test_drop == pytest.approx(report.base_test_metric - report.test_metric)
    assert arch["metrics"]["test_feasible"] == (report.test_drop <= MAX_DROP)
    assert any(line.startswith("test split (read once, after the pick)") for line in chosen_lines(out))
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs["final_test"]
    assert FinalTest.from_attrs(stored) == report
    s = summarize(*load_analysis(cfg.storage_url(), cfg.name), MAX_DROP)
    assert s.chosen.number == out.trial and s.final_test["test_drop"] == report.test_drop
    assert f"test drop {report.test_drop:+.4f}" in s.noise["line"]


def _val_pick(df: pd.DataFrame, info: StudyInfo) -> int:
    """The validation pick: the fastest feasible trial whose search timing settled."""
    return int(select(df[df["state"] == "COMPLETE"], MAX_DROP, cv_threshold=info.cv_threshold)["number"])


class _SelectionSwapped(DigitsTask):
    """The digits task with a selection split of its own (the task contract's ``own_selection_split``)."""

    own_selection_split = True

    def __init__(self, selection_set: TensorDataset, **options) -> None:
        super().__init__(**options)
        self._selection_set = selection_set

    def dataset(self, split: str):
        return self._selection_set if split == "selection" else super().dataset(split)


def _separating_selection_set(ctx: StudyContext, models: dict[int, torch.nn.Module], right: int) -> TensorDataset:
    """A selection split on which trial ``right`` is right and every other model wrong: images (real digits and
    noise) that the base and ``right`` label alike while every other model disagrees."""
    pool = torch.cat([ctx.task.dataset("train").tensors[0], torch.randn(3000, 1, 16, 16, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        base_pred = ctx.base_model.eval()(pool).argmax(1)
        keep = models[right].eval()(pool).argmax(1) == base_pred
        for number, model in models.items():
            if number != right:
                keep &= model.eval()(pool).argmax(1) != base_pred
    assert int(keep.sum()) >= 30, "too few images separate the candidates"
    return TensorDataset(pool[keep], base_pred[keep])


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_export_falls_back_when_the_top_pick_fails_on_the_selection_split(study_config: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(study_config)
    df, info = load_analysis(cfg.storage_url(), cfg.name)
    trials = [c for c in select_candidates(df, info, 5, MAX_DROP) if c.number is not None]
    slow = next(c for c in trials if c.number == 0)  # the enqueued unpruned architecture
    fast = [c for c in trials if c is not slow]
    assert fast
    ctx = StudyContext.build(cfg)
    models = {c.number: rebuild_trial(cfg, c, tmp_path) for c in trials}
    # A selection split on which every faster candidate is wrong and the slow one right.
    selection_set = _separating_selection_set(ctx, models, right=slow.number)
    swapped = _SelectionSwapped(selection_set, model=cfg.model, model_options=cfg.model_options, **cfg.task_options)
    adversarial = dataclasses.replace(ctx, task=swapped)
    # A steady host (each candidate timed at its search figure): a real re-timing on a loaded CI host can leave the
    # slow candidate unsettled, and then nothing leads; this test is about the selection split.
    exported = _exports(monkeypatch)
    _fake_timer(monkeypatch, lambda k, i: exported[i].speedup)

    summary = confirm_study(cfg, top=5, echo=lambda line: None, context=adversarial)
    assert summary["base_selection_metric"] == 1.0 and summary["selection_n"] == len(selection_set)
    assert summary["trials"][str(slow.number)]["selection_drop"] == 0.0
    assert all(summary["trials"][str(c.number)]["selection_drop"] == 1.0 for c in fast)
    val_pick = _val_pick(df, info)
    assert summary["val_pick"] == val_pick and summary["val_pick_holds"] is (val_pick == slow.number)
    assert summary["pick"] == slow.number

    out = export_architecture(cfg, tmp_path / "arch.json", final_test=False)
    assert out.trial == slow.number and out.final_test is None
    # Export falls back through every candidate confirmed faster than the slow one, fastest first.
    confirmed = {c.number: summary["trials"][str(c.number)]["speedup"] for c in trials}
    ahead = sorted((c for c in fast if confirmed[c.number] > confirmed[slow.number]), key=lambda c: -confirmed[c.number])
    assert [note.split(" ")[1] for note in out.notes] == [str(c.number) for c in ahead]
    # Each is passed over with its reason: it fails on the selection split, or (on a busy host) its re-timing did
    # not settle, which also keeps it from leading.
    assert all("fails the budget on the selection split" in note or "left out of the pick" in note for note in out.notes)
    arch = json.loads(out.path.read_text())
    assert arch["provenance"]["selection"] == "confirmed" and arch["metrics"]["selection_feasible"] is True
    assert "test_drop" not in arch["metrics"]
    # Without the confirmation the validation pick comes back: the one over the table as it now stands, where a
    # trial whose search timing did not settle (a loaded host) counts with its settled re-timing from confirm.
    val_pick_now = _val_pick(*load_analysis(cfg.storage_url(), cfg.name))
    assert export_architecture(cfg, tmp_path / "val.json", use_confirmed=False, final_test=False).trial == val_pick_now


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_confirm_walks_down_the_ranking_when_none_of_the_fastest_holds(study_config: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(study_config)
    df, info = load_analysis(cfg.storage_url(), cfg.name)
    ranking = feasible_ranking(df, info, MAX_DROP)
    slow = next(i for i, c in enumerate(ranking) if c.number == 0)  # the enqueued unpruned architecture
    assert slow >= 1, "the unpruned architecture is the fastest feasible trial"
    top = min(2, slow)
    ctx = StudyContext.build(cfg)
    models = {c.number: rebuild_trial(cfg, c, tmp_path) for c in ranking}
    selection_set = _separating_selection_set(ctx, models, right=0)
    swapped = _SelectionSwapped(selection_set, model=cfg.model, model_options=cfg.model_options, **cfg.task_options)
    # The judging order: the first round (the `top` fastest and the baselines), then `top` more per round up to
    # the round that holds trial 0; a steady host times each at its search figure.
    first = select_candidates(df, info, top, MAX_DROP)
    rounds = [ranking[i:i + top] for i in range(0, slow + 1, top)]
    order = first + [c for r in rounds[1:] for c in r]
    calls = _fake_timer(monkeypatch, lambda k, i: order[i].speedup)
    lines: list[str] = []

    summary = confirm_study(cfg, top=top, echo=lines.append, context=dataclasses.replace(ctx, task=swapped))
    # The fastest `top` fail on the selection split; the walk judged `top` more at a time until trial 0 held.
    assert summary["walk"]["rounds"] == [[c.number for c in r] for r in rounds] and len(rounds) >= 2
    assert summary["walk"]["exhausted"] is False
    assert all(summary["trials"][str(c.number)]["selection_feasible"] is (c.number == 0) for c in order if c.number is not None)
    assert summary["pick"] == 0 and summary["selection"] == "confirmed"
    assert swapped.access_counts["selection"] == 1 + len(order)
    # Every candidate judged, in whatever round, was timed in the one interleaved run against the base.
    assert calls[0] == len(order) and summary["timing"]["candidates"] == len(order)
    walked = f"none of the {top} fastest feasible candidates held on the selection split; judged the next {len(rounds[1])} (trial"
    assert sum(line.startswith(walked) for line in lines) == 1
    assert any(line.startswith(f"walked down the ranking: {sum(map(len, rounds))} candidates judged in {len(rounds)} rounds, "
                               "until one held") for line in lines), lines
    # Export reads the one stored confirmation and picks the same slower candidate.
    assert export_architecture(cfg, tmp_path / "arch.json", final_test=False).trial == 0


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_cli_confirm_prints_the_table(study_config: Path) -> None:
    cfg = _config(study_config)
    earlier = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs.get("confirmation")
    proc = run_cli("confirm", study_config, "--top", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # A confirmation stored before (by this module's earlier tests, or export) is replaced, and that is said once.
    replaced = [line for line in lines if line.startswith("replacing the confirmation stored at ")]
    assert len(replaced) == (1 if earlier else 0), proc.stdout
    if earlier:
        assert earlier["measured_at"] in replaced[0] and earlier["host_id"] in replaced[0]
    header = next(line for line in lines if line.startswith("candidate "))
    for column in ("val drop", "selection drop", "search", "confirmed"):
        assert column in header
    assert sum(1 for line in lines if line.startswith("trial ")) == 2
    assert any(line.startswith("the validation pick, trial ") for line in lines)


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_cli_confirm_errors_are_one_line(tmp_path: Path) -> None:
    path = write_study(tmp_path, {"name": "never-searched"})
    proc = run_cli("confirm", path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no study database at") and "Traceback" not in proc.stderr
    proc = run_cli("confirm", path, "--max-drop", "1.5")
    assert proc.returncode == 2 and "--max-drop must be in [0, 1)" in proc.stderr


def _table(rows: list[dict]) -> pd.DataFrame:
    base = {"state": "COMPLETE", "macs": 1000, "arch_artifact_id": "a", "weights_artifact_id": "w"}
    return pd.DataFrame([base | r for r in rows])


def test_select_candidates_fastest_feasible_first_then_baselines() -> None:
    info = StudyInfo(name="s", base_metric=0.9, max_drop=0.05, baselines={
        "global": [
            {"ratio": 0.2, "metric": 0.89, "drop": 0.01, "speedup": 1.3},
            {"ratio": 0.5, "metric": 0.7, "drop": 0.2, "speedup": 2.5},
        ],
    })
    df = _table([
        {"number": 0, "metric": 0.895, "drop": 0.005, "speedup": 1.1, "kind": "search", "channels:a": 16},
        {"number": 1, "metric": 0.88, "drop": 0.02, "speedup": 1.6, "kind": "search", "channels:a": 8},
        {"number": 2, "metric": 0.88, "drop": 0.02, "speedup": 1.6, "kind": "search", "channels:a": 8},  # same architecture
        {"number": 3, "metric": 0.70, "drop": 0.20, "speedup": 3.0, "kind": "search", "channels:a": 4},  # over budget
        {"number": 4, "metric": 0.87, "drop": 0.03, "speedup": 1.2, "kind": "uniform", "channels:a": 12},  # dominated
        {"number": 5, "metric": 0.89, "drop": 0.01, "speedup": 1.4, "kind": "search", "channels:a": 10, "state": "FAIL"},
    ])
    picks = select_candidates(df, info, 5, 0.05)
    # The K fastest feasible, dominated or not (trial 4 is off the front but faster than trial 0).
    assert [(c.label, c.on_front) for c in picks] == [
        ("trial 1", True), ("trial 4", True), ("trial 0", True), ("global r=0.20", False),
    ]
    assert [c.label for c in select_candidates(df, info, 1, 0.05)] == ["trial 1", "trial 4", "global r=0.20"]
    with pytest.raises(SelectionError, match="no trial is feasible at max drop 0.001"):
        select_candidates(df, info, 5, 0.001)


def test_an_outlying_timing_cannot_hide_the_real_best_from_confirm() -> None:
    # The case: trial 0 recorded 5.67x on a disturbed base timing and dominates every other trial,
    # so the front is trial 0 alone; confirm with K=2 must still re-time the real best one, trial 2.
    info = StudyInfo(name="s", base_metric=0.9, max_drop=0.05, config={"latency": {"cv_threshold": 0.05}})
    df = _table([
        {"number": 0, "metric": 0.89, "drop": 0.01, "speedup": 5.67, "speedup_spread": 0.209, "latency_noisy": False,
         "kind": "search", "channels:a": 9},
        {"number": 1, "metric": 0.88, "drop": 0.02, "speedup": 3.0, "speedup_spread": 0.01, "kind": "search",
         "channels:a": 8},
        {"number": 2, "metric": 0.87, "drop": 0.03, "speedup": 3.3, "speedup_spread": 0.01, "kind": "search",
         "channels:a": 7},
    ])
    picks = select_candidates(df, info, 2, 0.05)
    assert [c.label for c in picks if c.on_front] == ["trial 0", "trial 2"]


def test_export_never_leads_with_a_confirmed_timing_that_did_not_settle() -> None:
    df = _table([
        {"number": 0, "metric": 0.89, "drop": 0.01, "speedup": 3.0, "kind": "search", "channels:a": 9,
         "confirmed:speedup": 3.9, "confirmed:noisy": True, "confirmed:selection_drop": 0.01},
        {"number": 1, "metric": 0.88, "drop": 0.02, "speedup": 3.1, "kind": "search", "channels:a": 8,
         "confirmed:speedup": 3.2, "confirmed:noisy": False, "confirmed:selection_drop": 0.02},
    ])
    notes: list[str] = []
    assert confirmed_pick(df, 0.05, notes)["number"] == 1 and "trial 0 (3.90x): its re-timing did not settle" in notes[0]
    # A spread above the study's threshold is unsettled whatever the flag says.
    spread = df.assign(**{"confirmed:noisy": [False, False], "confirmed:speedup_spread": [0.2, 0.01]})
    assert confirmed_pick(spread, 0.05, [], cv_threshold=0.05)["number"] == 1
    # The unsettled one holds on the selection split and the settled one fails: nothing confirmed may be chosen.
    only_noisy_holds = df.assign(**{"confirmed:selection_drop": [0.01, 0.09]})
    with pytest.raises(SelectionError, match="no confirmed candidate holds the budget"):
        confirmed_pick(only_noisy_holds, 0.05, notes)
    # No settled re-timing at all: no confirmed pick (the validation pick stands, unconfirmed).
    assert confirmed_pick(df.assign(**{"confirmed:noisy": [True, True]}), 0.05, []) is None


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_export_after_pareto_refreshes_the_report_with_its_figures(study_config: Path) -> None:
    cfg = _config(study_config)
    report = cfg.artifact_path() / "report"
    assert run_cli("pareto", study_config, timeout=300).returncode == 0
    before = json.loads((report / "summary.json").read_text())
    out = Path(cfg.artifact_path()) / "exported.json"
    proc = run_cli("export", study_config, "-o", out, "--top", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    arch = json.loads(out.read_text())
    summary = json.loads((report / "summary.json").read_text())
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs["confirmation"]
    # export re-confirmed: the summary on disk is the one of that new confirmation, not the one pareto wrote.
    assert summary["confirmed_at"] == stored["measured_at"] != before["confirmed_at"]
    assert summary["selection"] == arch["provenance"]["selection"] == stored["selection"]
    assert summary["chosen"]["number"] == arch["provenance"]["trial"]
    speed = f"{summary['chosen']['speedup']:.2f}x"
    assert f"chosen architecture: trial {arch['provenance']['trial']}," in proc.stdout and f"speedup {speed} (" in proc.stdout
    if summary["selection"] == "confirmed":
        assert f"{arch['latency']['confirmed_speedup']:.2f}x" == speed
    page = (report / "report.html").read_text()
    assert html.escape(summary["sentence"]) in page
    assert speed in re.search(r'<tr class="chosen">.*?</tr>', page).group(0)
    # Each note once: the confirmation printed them, export does not repeat them.
    for note in stored["notes"]:
        assert proc.stderr.count(note) + proc.stdout.count(note) <= 1, note


def _exports(monkeypatch: pytest.MonkeyPatch) -> list:
    """The candidates each confirmation exports, in file order (``candidate-<i>.onnx`` is the i-th): the fake
    timers' ``i``.  A confirmation whose first candidates fail the selection split walks down the ranking and
    exports more than ``select_candidates(top)`` lists, so the timers read this list, not that one."""
    real = confirm_module.export_candidates
    seen: list = []

    def export(*args, **kwargs):
        first = kwargs.get("first", 0)
        del seen[first:]  # a confirmation starts again at candidate-0
        seen.extend(args[2] if len(args) > 2 else kwargs["candidates"])
        return real(*args, **kwargs)

    monkeypatch.setattr(confirm_module, "export_candidates", export)
    return seen


def _fake_timer(monkeypatch: pytest.MonkeyPatch, speed: Callable[[int, int], float],
                spread: Callable[[int, int], float] = lambda k, i: 0.01) -> list[int]:
    """Replace the interleaved timer: call ``k`` (from 1) gives file ``candidate-i.onnx`` ``speed(k, i)`` with
    spread ``spread(k, i)`` (1% by default), flagged noisy above 5% (the study's own cv_threshold is 1.0, so the
    flag is what marks a timing unsettled here).

    Returns:
        The number of files timed by each call, filled as the calls come.
    """
    calls: list[int] = []

    def measure(paths: list[Path], base: Path, settings: object) -> list[SimpleNamespace]:
        calls.append(len(paths))
        out = []
        for path in paths:
            k, i = len(calls), int(Path(path).stem.split("-")[1])
            s = speed(k, i)
            out.append(SimpleNamespace(speedup=s, speedup_spread=spread(k, i), noisy=spread(k, i) > 0.05, measured_at="now", wall_s=0.1,
                                       blocks_run=10, repeats_run=200, stopped_early=False,
                                       candidate=SimpleNamespace(median_ms=1.0 / s), baseline=SimpleNamespace(median_ms=1.0)))
        return out

    monkeypatch.setattr("autoprune.latency.measure_speedups", measure)
    return calls


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_a_retiming_that_does_not_reproduce_is_not_confirmed(study_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(study_config)
    ctx = StudyContext.build(cfg)
    exported = _exports(monkeypatch)
    # A steady host: every timing gives the search's figure; at most one re-timing settles any disagreement
    # with the previous confirmation's figures.
    calls = _fake_timer(monkeypatch, lambda k, i: exported[i].speedup)
    lines: list[str] = []
    first = confirm_study(cfg, top=2, echo=lines.append, context=ctx)
    assert len(calls) <= 2 and first["selection"] == "confirmed"
    assert all(e["reproduced"] is True and not e["noisy"] for e in [*first["trials"].values(), *first["baselines"].values()])
    pick = first["pick"]
    assert f"{first['trials'][str(pick)]['speedup']:.2f}" == f"{next(c.speedup for c in exported if c.number == pick):.2f}"

    # Then the host's load keeps changing: each timing is 3x or 1x the search's figure, in turn, so it
    # never agrees with the timing before it, however often it is retaken.
    calls = _fake_timer(monkeypatch, lambda k, i: exported[i].speedup * (3.0 if k % 2 else 1.0))
    lines = []
    second = confirm_study(cfg, top=2, echo=lines.append, context=ctx)
    assert calls == [len(exported)] * TIMING_ROUNDS  # bounded: the first timing and two re-timings
    entries = [*second["trials"].values(), *second["baselines"].values()]
    assert all(e["reproduced"] is False and e["noisy"] is True and len(e["speedups"]) == TIMING_ROUNDS for e in entries)
    # Not confirmed: the choice falls back to the validation pick, unconfirmed, and says the host was unstable once.
    # (the validation pick unless it fails the selection split, which on a loaded host's tiny study it can)
    val_fig = second["trials"].get(str(second["val_pick"]), {})
    assert second["selection"] == "validation" and (second["pick"] == second["val_pick"] or not holds_on_selection(val_fig, MAX_DROP))
    assert sum("the host's load kept changing" in line for line in lines) == 1
    assert not [line for line in lines if "at a confirmed" in line or "export picks trial" in line and "instead" in line]
    s = summarize(*load_analysis(cfg.storage_url(), cfg.name), MAX_DROP)
    assert s.selection == "validation" and s.chosen.timing != "confirmed"
    assert "Confirmed figures" not in s.sentence and "is unsettled" in s.sentence
    out = export_architecture(cfg, Path(ctx.workdir) / "unsettled.json")
    arch = json.loads(out.path.read_text())
    assert arch["provenance"]["selection"] == "validation" and "confirmed_speedup" not in arch["latency"]
    assert "unconfirmed: its re-timing at" in chosen_lines(out)[0] and "confirmed by a re-timing" not in chosen_lines(out)[0]


class _ReadLog(DigitsTask):
    """The digits task, logging every split read (attempts the task refuses included) and whether ``written``
    (the exported architecture JSON) existed at that moment."""

    def __init__(self, written: Path, **options) -> None:
        super().__init__(**options)
        self.written = written
        self.reads: list[tuple[str, bool]] = []

    def loader(self, split: str, *args, **kwargs):
        self.reads.append((split, self.written.exists()))
        return super().loader(split, *args, **kwargs)


@pytest.mark.slow  # the module's study_config fixture searches a study
def test_the_test_split_is_read_only_after_the_pick_is_written(study_config: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(study_config)
    ctx = StudyContext.build(cfg)
    out = tmp_path / "arch.json"
    logged = _ReadLog(out, model=cfg.model, model_options=cfg.model_options, **cfg.task_options)
    logged.selection_fraction, logged.selection_seed = ctx.task.selection_fraction, ctx.task.selection_seed
    summary = confirm_study(cfg, top=2, echo=lambda line: None, context=dataclasses.replace(ctx, task=logged))
    in_confirm = [split for split, _ in logged.reads]
    assert "selection" in in_confirm and "test" not in in_confirm

    # Export picks, writes the JSON, and only then reads the test split: twice (the exported model and the base).
    result = export_architecture(cfg, out, task=logged)
    assert result.trial == summary["pick"]
    tests = [written for split, written in logged.reads if split == "test"]
    assert tests == [True, True]
    assert [split for split, _ in logged.reads[len(in_confirm):]] == ["test", "test"]

    # And a confirmation that tried to read the test split would be refused: the split is closed while it picks.
    evaluate = logged.evaluate_samples

    def peeking(model, split="val", **kwargs):
        return evaluate(model, "test" if split == "selection" else split, **kwargs)

    monkeypatch.setattr(logged, "evaluate_samples", peeking)
    with pytest.raises(TaskError, match="'test' split is held out during the search and the selection"):
        confirm_study(cfg, top=2, echo=lambda line: None, context=dataclasses.replace(ctx, task=logged))


def test_a_retiming_that_did_not_settle_is_taken_again_so_two_confirmations_agree(
        study_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(study_config)
    ctx = StudyContext.build(cfg)
    candidates = _exports(monkeypatch)
    steady = _fake_timer(monkeypatch, lambda k, i: candidates[i].speedup)
    reference = confirm_study(cfg, top=2, echo=lambda line: None, context=ctx)
    assert reference["selection"] == "confirmed" and len(steady) <= 2
    # The host is busy during the first timing only: every candidate's spread there is 13% (flagged noisy); each
    # is timed again, settles, and the pick is the steady host's.
    calls = _fake_timer(monkeypatch, lambda k, i: candidates[i].speedup, lambda k, i: 0.133 if k == 1 else 0.01)
    lines: list[str] = []
    busy_once = confirm_study(cfg, top=2, echo=lines.append, context=ctx)
    assert calls == [len(candidates), len(candidates)]
    assert any("re-timing" in line and "did not settle" in line for line in lines)
    assert busy_once["pick"] == reference["pick"] and busy_once["selection"] == "confirmed"
    assert all(not e["noisy"] and e["speedup_spread"] == 0.01 for e in busy_once["trials"].values())

    # The host stays too busy for the fastest candidate: it is timed TIMING_ROUNDS times in all, said once,
    # and leads no pick (the next candidate that settled does).
    fastest = max(range(len(candidates)), key=lambda i: candidates[i].speedup if candidates[i].number is not None else -1)
    calls = _fake_timer(monkeypatch, lambda k, i: candidates[i].speedup, lambda k, i: 0.133 if i == fastest else 0.01)
    lines = []
    busy = confirm_study(cfg, top=2, echo=lines.append, context=ctx)
    assert calls == [len(candidates), 1, 1]
    too_busy = [line for line in lines if line.startswith("the host is too busy to time reliably")]
    assert len(too_busy) == 1 and f"candidate {fastest} (" in too_busy[0] and f"in {TIMING_ROUNDS} timings" in too_busy[0]
    assert busy["pick"] != candidates[fastest].number
