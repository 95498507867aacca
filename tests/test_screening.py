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

from autoprune.trial.screening import CANNOT_BEAT
from autoprune.trial.screening import OVER_BUDGET
from autoprune.trial.screening import Outcome
from autoprune.trial.screening import ScreeningRules
from autoprune.trial.screening import spearman
from autoprune.space.widths import channels_key

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


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_screened_candidate_skips_the_finetune(study_factory, tmp_path: Path) -> None:
    from autoprune.trial.candidate import Screened
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate
    from autoprune.config import load_config

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
    from autoprune.search.worker import run_worker
    from autoprune.search.create import create_study

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
