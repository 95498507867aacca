"""Cheap screening before the finetune, and both search modes end to end.

The rules are pure (learned from outcomes, no torch); the trial records every screening decision with
its reason and skips the finetune; a study runs, reports and exports in either mode.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch

from autoprune.search.record import KEY_ATTR
from autoprune.space.widths import channels_key
from autoprune.trial.screening import CANNOT_BEAT
from autoprune.trial.screening import OVER_BUDGET
from autoprune.trial.screening import Outcome
from autoprune.trial.screening import ScreeningRules
from autoprune.trial.screening import spearman

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _o(drop: float | None, feasible: bool, speedup: float = 2.0, spread: float = 0.02, noisy: bool = False, n: int = 0) -> Outcome:
    return Outcome(drop, feasible, speedup, spread, noisy, n)


def test_threshold_is_learned_only_from_enough_mixed_trials() -> None:
    mixed = [_o(0.02, True), _o(0.08, True), _o(0.30, False), _o(0.50, False)]
    assert ScreeningRules.learn(mixed, min_trials=4).worst_feasible_drop == 0.08
    assert ScreeningRules.learn(mixed, min_trials=5).worst_feasible_drop is None  # too few trials yet
    assert ScreeningRules.learn([_o(0.1, True)] * 6, 4).worst_feasible_drop is None  # no infeasible example
    assert ScreeningRules.learn([_o(0.1, False)] * 6, 4).worst_feasible_drop is None  # nothing feasible
    assert ScreeningRules.learn([_o(None, True), _o(0.3, False)] * 3, 4).worst_feasible_drop is None  # no after-BN figure
    assert ScreeningRules.learn([_o(0.1, True), _o(0.3, False), _o(0.4, False)], 3).worst_feasible_drop is None  # one feasible


def test_a_feasible_looking_candidate_near_the_budget_is_finetuned() -> None:
    """The reference benchmark's case: feasible trials had after-BN drops 0.077-0.157 and a candidate at
    0.20 would have ended within the budget; the margin is the feasible trials' own spread, not the noise."""
    rules = ScreeningRules.learn([_o(0.077, True), _o(0.095, True), _o(0.133, True), _o(0.157, True), _o(0.227, False)], 4)
    assert rules.feasible_spread == pytest.approx(0.08)
    assert rules.reason(0.20, stderr=0.003, speedup=3.6, spread=0.02, mode="fastest") is None
    assert rules.reason(0.40, stderr=0.003, speedup=3.6, spread=0.02, mode="fastest").startswith("predicted over budget")


def test_predicted_over_budget_needs_more_than_the_feasible_spread_and_the_noise() -> None:
    rules = ScreeningRules.learn([_o(0.02, True), _o(0.08, True), _o(0.30, False), _o(0.50, False)], 4)
    assert rules.reason(0.15, stderr=0.005, speedup=3.0, spread=0.02, mode="pareto").startswith("predicted over budget")
    assert rules.reason(0.13, stderr=0.005, speedup=3.0, spread=0.02, mode="pareto") is None  # within 0.08 + 0.06
    assert rules.reason(0.05, stderr=0.005, speedup=3.0, spread=0.02, mode="pareto") is None
    tight = ScreeningRules.learn([_o(0.08, True), _o(0.08, True), _o(0.30, False)], 3)  # no spread: 2 SE remain
    assert tight.reason(0.085, stderr=0.005, speedup=3.0, spread=0.02, mode="pareto") is None
    assert tight.reason(0.10, stderr=0.005, speedup=3.0, spread=0.02, mode="pareto") is not None


def test_speed_rule_only_in_fastest_mode_and_beyond_both_spreads() -> None:
    rules = ScreeningRules.learn([_o(0.01, True, 3.0, 0.05, n=7), _o(0.02, True, 2.0), _o(0.4, False, 5.0)], 10)
    assert rules.incumbent is not None and rules.incumbent.number == 7  # the infeasible 5x is no incumbent
    reason = rules.reason(0.0, 0.01, speedup=2.5, spread=0.02, mode="fastest")
    assert reason is not None and "trial 7" in reason and "cannot beat" in reason
    assert rules.reason(0.0, 0.01, speedup=2.5, spread=0.02, mode="pareto") is None
    assert rules.reason(0.0, 0.01, speedup=2.80, spread=0.02, mode="fastest") is None  # 2.856 >= 3.0 * 0.95
    # A noisy incumbent screens nothing; a candidate with a wide spread gets the benefit of the doubt.
    noisy = ScreeningRules.learn([_o(0.01, True, 3.0, 0.30, noisy=True)], 10)
    assert noisy.incumbent is None and noisy.reason(0.0, 0.01, 1.1, 0.02, "fastest") is None
    assert rules.reason(0.0, 0.01, speedup=2.5, spread=0.15, mode="fastest") is None


def test_an_incumbent_confirmed_here_screens_with_the_lower_of_its_timings() -> None:
    """The benchmark's case: a baseline stored 6.65x from its sweep, re-timed at 2.8x; candidates at 2-4x."""
    stored = [_o(0.01, True, 6.65, 0.01, n=3), _o(0.02, True, 2.5, 0.02, n=5), _o(0.4, False, 9.0, n=6)]
    before = ScreeningRules.learn(stored, 10)
    assert before.reason(0.0, 0.01, speedup=3.5, spread=0.02, mode="fastest").startswith(CANNOT_BEAT)
    slower = stored[0].retimed(2.81, 0.012, noisy=False)
    assert (slower.speedup, slower.speedup_spread, slower.stored_speedup, slower.retimed_speedup) == (2.81, 0.012, 6.65, 2.81)
    assert stored[0].moved_beyond_spreads(2.81, 0.012) and not stored[0].moved_beyond_spreads(6.6, 0.012)
    after = ScreeningRules.learn(stored, 10, retimed={3: slower})
    assert after.incumbent == slower and after.reason(0.0, 0.01, speedup=3.5, spread=0.02, mode="fastest") is None
    reason = after.reason(0.0, 0.01, speedup=2.0, spread=0.02, mode="fastest")
    assert reason == (f"{CANNOT_BEAT}: 2.00x ±2.0% is below trial 3's feasible 2.81x ±1.2% (re-timed here; stored 6.65x)")
    # Re-timed slower than another feasible trial: that one becomes the incumbent (stored figure, until confirmed).
    slowest = stored[0].retimed(2.2, 0.02, noisy=False)
    again = ScreeningRules.learn(stored, 10, retimed={3: slowest})
    assert again.incumbent == stored[1] and "stored" not in again.reason(0.0, 0.01, 2.0, 0.02, "fastest")
    # A faster re-timing keeps the stored figure and its spread; a noisy re-timing kept screens nothing.
    faster = stored[1].retimed(3.0, 0.05, noisy=True)
    assert (faster.speedup, faster.speedup_spread, faster.noisy, faster.stored_speedup) == (2.5, 0.02, False, 2.5)
    kept = ScreeningRules.learn(stored, 10, retimed={3: slowest, 5: faster}).reason(0.0, 0.01, 2.0, 0.02, "fastest")
    assert kept.endswith("trial 5's feasible 2.50x ±2.0% (stored; re-timed here at 3.00x)")
    noisy = stored[1].retimed(2.0, 0.2, noisy=True)
    assert ScreeningRules.learn(stored, 10, retimed={3: slowest, 5: noisy}).incumbent == slowest


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_screened_candidate_skips_the_finetune(study_factory, tmp_path: Path) -> None:
    from autoprune.config import load_config
    from autoprune.trial.candidate import Screened
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    ctx = StudyContext.build(load_config(study_factory()), workdir=tmp_path / "w", use_cache=False)
    seen = []

    def screen(s):
        seen.append(s)
        return "not worth it"

    teacher_calls = ctx.teacher.hits + len(ctx.teacher.cache)
    with pytest.raises(Screened) as info:
        evaluate_candidate(ctx, uniform=0.25, screen=screen)
    s = seen[0]
    assert info.value.reason == "not worth it" and info.value.screening is s
    assert s.speedup > 0 and s.speedup_spread >= 0 and 0 <= s.metric_after_bn.value <= 1
    assert s.drop_after_bn == pytest.approx(ctx.base_metric.value - s.metric_after_bn.value)
    assert ctx.teacher.hits + len(ctx.teacher.cache) == teacher_calls  # no finetune step ran
    # Without a reason the candidate is finetuned, and its metric after BN is the one screening saw.
    res = evaluate_candidate(ctx, uniform=0.25, screen=lambda s: None)
    assert res.metric_after_bn.value == pytest.approx(s.metric_after_bn.value) and res.recovery.steps == 4


def _run(path: Path, trials: int):
    from conftest import run_cli

    res = run_cli("run", path, "--trials", str(trials))
    assert res.returncode == 0, res.stderr
    return res


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fastest", "pareto"])
def test_both_modes_run_report_and_export(study_factory, monkeypatch, mode: str) -> None:
    from conftest import run_cli

    from autoprune.config import load_config

    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    search = {"trials": 5, "sampler": "tpe", "mode": mode, "sweep_ratios": [0.3], "screening": True}
    path = study_factory({"name": f"mode-{mode}", "max_drop": 0.9, "search": search})
    _run(path, 5)
    cfg = load_config(path)
    study = optuna.load_study(study_name=f"mode-{mode}", storage=cfg.storage_url())
    assert len(study.directions) == (1 if mode == "fastest" else 2) and study.user_attrs["search_mode"] == mode
    assert study.metric_names == (["speedup"] if mode == "fastest" else ["accuracy", "speedup"])
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.values[-1] == pytest.approx(t.user_attrs["speedup"])
            assert "metric_after_bn" in t.user_attrs and "recovery_steps" in t.user_attrs
    pareto = run_cli("pareto", path, "--json")
    assert pareto.returncode == 0, pareto.stderr
    summary = json.loads(pareto.stdout)
    assert summary["chosen"] is not None and "screening" in summary
    out = path.parent / f"arch-{mode}.json"
    exported = run_cli("export", path, "-o", out, "--no-confirm")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(out.read_text())["groups"]


@pytest.mark.slow
def test_screening_decisions_are_recorded_with_their_reason(study_factory, monkeypatch) -> None:
    from autoprune.search import objective as objective_module

    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    search = {"trials": 4, "sampler": "random", "sweep_ratios": [0.3], "screening": True}
    path = study_factory({"name": "screened", "max_drop": 0.9, "search": search})
    from autoprune.config import load_config
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_worker

    create_study(str(path), say=lambda line: None)
    calls = []

    def always(self, screening):
        calls.append(screening)
        rule = OVER_BUDGET if len(calls) % 2 else CANNOT_BEAT
        return f"{rule}: test, skip every search candidate"

    monkeypatch.setattr(objective_module.Objective, "_screen", always)
    lines: list[str] = []
    torch.set_num_threads(2)
    run_worker(str(path), target=4, log_line=lines.append)
    assert torch.get_num_threads() == 1 and any("1 torch threads" in line for line in lines)  # search.torch_threads
    cfg = load_config(path)
    trials = optuna.load_study(study_name="screened", storage=cfg.storage_url()).trials
    screened = [t for t in trials if "screened" in t.user_attrs]
    baselines = [t for t in trials if t.user_attrs.get("kind") in ("uniform", "global")]
    assert screened and all(t.state == optuna.trial.TrialState.PRUNED for t in screened)
    assert all(t.user_attrs.get("kind") == "search" for t in screened)  # baselines are never screened
    assert baselines and all(t.state == optuna.trial.TrialState.COMPLETE for t in baselines)
    for t in screened:
        ua = t.user_attrs
        assert ua["screened"].endswith(": test, skip every search candidate")
        assert {"metric_after_bn", "drop_after_bn", "speedup", "channels"} <= set(ua) and "recovery_steps" not in ua
        # What TPE learns from it: predicted over budget counts as infeasible; too slow ranks by its speedup.
        if ua["screened"].startswith(OVER_BUDGET):
            assert t.constraints["drop"] > 0 and not t.intermediate_values
        else:
            assert not t.constraints and t.intermediate_values == {0: pytest.approx(ua["speedup"])}
        # Widths are drawn on an ordered grid (TPE sees neighbours), and land on searched widths.
        assert all(isinstance(d, optuna.distributions.IntDistribution) for d in t.distributions.values())
        assert channels_key({k: ua["channels"][k] for k in t.params}) == ua["channels_key"]
    assert len(calls) >= len(screened)


def test_an_inflated_incumbent_is_retimed_once_before_it_screens(study_factory, tmp_path: Path, monkeypatch) -> None:
    """The benchmark's failure: baselines reused their sweep points' timings, one of them inflated; every search
    candidate was skipped as unable to beat it.  Each worker now re-times an incumbent before it screens."""
    from conftest import TINY_STUDY

    from autoprune.config import load_config
    from autoprune.search import objective as objective_module
    from autoprune.search.create import create_study
    from autoprune.space.sweep_records import SWEEP_DIR
    from autoprune.space.sweep_records import sweep_stem
    from autoprune.trial.candidate import StudyContext

    search = {"trials": 4, "mode": "fastest", "sweep_ratios": [0.25], "screening": True, "bounds_margin": 3}
    # Timed at a larger input than the digits' 16x16, where compute (not call overhead) sets the speedups.
    latency = dict(TINY_STUDY["latency"], input_shape=[1, 48, 48])
    path = study_factory({"name": "confirm", "max_drop": 0.9, "search": search, "latency": latency})
    cfg, _url, study = create_study(str(path), None, say=lambda line: None)
    lines: list[str] = []
    for kind, claim in (("uniform", 50.0), ("global", 40.0)):  # sweep timings no host can reproduce
        record = cfg.artifact_path() / SWEEP_DIR / f"{sweep_stem(kind, 0.25)}.json"
        data = json.loads(record.read_text())
        data["attrs"].update(speedup=claim, speedup_spread=0.01)
        record.write_text(json.dumps(data))
    lines: list[str] = []
    objective = objective_module.Objective(StudyContext.build(load_config(path), workdir=tmp_path / "w"), study, 10, "w0", lines.append)
    study.optimize(objective, n_trials=2)  # the two enqueued baselines: their sweep points' figures, reused
    baselines = study.get_trials(deepcopy=False)
    assert [t.user_attrs["kind"] for t in baselines] == ["uniform", "global"] and all(t.user_attrs["feasible"] for t in baselines)
    assert [t.user_attrs["speedup"] for t in baselines] == [50.0, 40.0]
    timed: list[str] = []

    def spy(ctx, ratios):
        result = real(ctx, ratios)
        timed.append(channels_key({k: result.kept[k] for k in objective.space}))
        return result

    real = objective_module.time_architecture
    monkeypatch.setattr(objective_module, "time_architecture", spy)
    narrowest = {name: g.widths[0] for name, g in objective.space.items()}  # faster than either baseline
    study.enqueue_trial(narrowest)
    study.optimize(objective, n_trials=1)
    candidate = study.get_trials(deepcopy=False)[-1]
    assert candidate.state == optuna.trial.TrialState.COMPLETE and "screened" not in candidate.user_attrs
    assert candidate.user_attrs["recovery_steps"] == 4  # finetuned
    # Both claims were re-timed here, once each, from the baselines' own kept channels.
    assert sorted(timed) == sorted(t.user_attrs[KEY_ATTR] for t in baselines)
    assert {n: o.stored_speedup for n, o in objective.confirmed.items()} == {0: 50.0, 1: 40.0}
    assert all(o.speedup < 40.0 for o in objective.confirmed.values())
    assert sum("re-timed here at" in line and "stored 50.00x" in line for line in lines) == 1
    # The next candidate: the baselines are not re-timed again (a new incumbent may be, once).
    wider = dict(narrowest, **{name: g.widths[1] for name, g in list(objective.space.items())[:1]})
    study.enqueue_trial(wider)
    study.optimize(objective, n_trials=1)
    assert len(timed) == len(set(timed)) and set(timed) >= {t.user_attrs[KEY_ATTR] for t in baselines}
    assert len(timed) <= 3


def test_only_a_trial_that_holds_with_the_selection_margin_screens() -> None:
    """An incumbent feasible only within its noise (the MobileNet suite's uniform 0.5 at drop 0.0098 +- 0.0022
    against 0.01) would screen out every slower fallback and leave the search with no pick on selection."""
    from autoprune.trial.screening import holds_with_margin

    assert not holds_with_margin(0.0098, 0.0022, 0.01, 1.0) and holds_with_margin(0.0098, 0.0022, 0.01, 0.0)
    assert holds_with_margin(0.0073, 0.0021, 0.01, 1.0) and holds_with_margin(0.005, None, 0.01, 1.0)
    assert not holds_with_margin(None, 0.001, 0.01, 1.0) and not holds_with_margin(math.nan, 0.001, 0.01, 1.0)
    edge = Outcome(0.01, True, 2.2, 0.02, number=1, secure=False)
    safe = Outcome(0.01, True, 1.8, 0.02, number=2)
    rules = ScreeningRules.learn([edge, safe], 10)
    assert rules.incumbent == safe
    assert rules.reason(0.0, 0.01, speedup=1.9, spread=0.02, mode="fastest") is None  # slower than the edge trial
    assert rules.reason(0.0, 0.01, speedup=1.5, spread=0.02, mode="fastest").endswith("trial 2's feasible 1.80x ±2.0%")
    assert ScreeningRules.learn([edge], 10).incumbent is None


def test_a_baseline_at_the_edge_of_the_budget_screens_nothing(study_factory, tmp_path: Path, monkeypatch) -> None:
    """Baselines whose stored drop holds the budget only within one standard error: a slower candidate is
    finetuned, not skipped as unable to beat them, and they are not re-timed (they are no incumbent)."""
    from conftest import TINY_STUDY

    from autoprune.config import load_config
    from autoprune.search import objective as objective_module
    from autoprune.search.create import create_study
    from autoprune.space.sweep_records import SWEEP_DIR
    from autoprune.space.sweep_records import sweep_stem
    from autoprune.trial.candidate import StudyContext

    search = {"trials": 4, "mode": "fastest", "sweep_ratios": [0.25], "screening": True, "bounds_margin": 3, "selection_z": 1.0}
    latency = dict(TINY_STUDY["latency"], input_shape=[1, 48, 48])
    path = study_factory({"name": "edge", "max_drop": 0.9, "search": search, "latency": latency})
    cfg, _url, study = create_study(str(path), None, say=lambda line: None)
    for kind in ("uniform", "global"):
        record = cfg.artifact_path() / SWEEP_DIR / f"{sweep_stem(kind, 0.25)}.json"
        data = json.loads(record.read_text())
        data["attrs"].update(speedup=50.0, speedup_spread=0.01, drop=0.89, drop_stderr=0.05, feasible=True)
        record.write_text(json.dumps(data))
    objective = objective_module.Objective(StudyContext.build(load_config(path), workdir=tmp_path / "w"), study, 10, "w0", lambda line: None)
    study.optimize(objective, n_trials=2)
    assert [t.user_attrs["drop"] for t in study.get_trials(deepcopy=False)] == [0.89, 0.89]
    timed: list[object] = []
    monkeypatch.setattr(objective_module, "time_architecture", lambda ctx, ratios: timed.append(ratios))
    widest = {name: g.widths[-1] for name, g in objective.space.items()}  # slower than either baseline's claim
    study.enqueue_trial(widest)
    study.optimize(objective, n_trials=1)
    candidate = study.get_trials(deepcopy=False)[-1]
    assert candidate.state == optuna.trial.TrialState.COMPLETE and "screened" not in candidate.user_attrs
    assert candidate.user_attrs["recovery_steps"] == 4 and timed == []
