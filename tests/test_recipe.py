"""The recovery recipe, pure: picking the cheapest recipe within noise, and the recovery warnings (no torch)."""

from __future__ import annotations

from autoprune.space.bounds import SweepPoint
from autoprune.trial.recipe import RecipeResult
from autoprune.trial.recipe import longer_finetune_gain
from autoprune.trial.recipe import non_monotone
from autoprune.trial.recipe import pick_recipe
from autoprune.trial.recipe import recovery_warnings


def _r(lr: float, epochs: float, steps: int, metric: float, se: float = 0.005) -> RecipeResult:
    return RecipeResult(lr, epochs, steps, metric, se)


def _p(kind: str, ratio: float, drop: float, se: float = 0.004) -> SweepPoint:
    return SweepPoint(kind, ratio, 0.99 - drop, drop, {}, metric_stderr=se)


def test_cheapest_recipe_within_noise_of_the_best() -> None:
    tried = [_r(0.01, 0.25, 5, 0.90), _r(0.01, 1, 20, 0.955), _r(0.01, 4, 80, 0.962), _r(0.03, 1, 20, 0.70)]
    chosen = pick_recipe(tried, "maximize", tolerance_se=2.0)
    assert (chosen.lr, chosen.steps) == (0.01, 20)  # 0.962 - 0.955 <= 2 * 0.005; 0.90 is not
    assert pick_recipe(tried, "maximize", tolerance_se=0.0).steps == 80  # no tolerance: the best itself
    # Equal cost: the better metric wins, then the lower learning rate.
    tie = [_r(0.03, 1, 20, 0.96), _r(0.01, 1, 20, 0.96), _r(0.003, 1, 20, 0.95)]
    assert pick_recipe(tie, "maximize", 2.0).lr == 0.01
    # A minimised metric (a loss): smaller is better.
    losses = [_r(0.01, 1, 20, 0.30, 0.01), _r(0.01, 4, 80, 0.20, 0.01)]
    assert pick_recipe(losses, "minimize", 2.0).steps == 80


def test_non_monotone_sweep_beyond_noise_only() -> None:
    points = [_p("uniform", 0.2, 0.30), _p("uniform", 0.4, 0.05), _p("uniform", 0.6, 0.08)]
    pairs = non_monotone(points)
    assert [(a.ratio, b.ratio) for a, b in pairs] == [(0.2, 0.4), (0.2, 0.6)]
    # Within two standard errors of the difference it is noise, not a warning.
    close = [_p("uniform", 0.2, 0.020, se=0.005), _p("uniform", 0.4, 0.010, se=0.005)]
    assert non_monotone(close) == []


def test_recovery_warnings_name_the_cause_and_the_fix() -> None:
    sweeps = {"uniform": [_p("uniform", 0.2, 0.30), _p("uniform", 0.4, 0.05)], "global": [_p("global", 0.2, 0.0)]}
    notes = recovery_warnings(sweeps, max_drop=0.01)
    assert len(notes) == 1
    assert "recovery is the bottleneck" in notes[0] and "uniform 0.40" in notes[0] and "finetune_epochs" in notes[0]
    assert recovery_warnings({"uniform": [_p("uniform", 0.2, 0.0), _p("uniform", 0.4, 0.02)]}, 0.01) == []


def test_longer_finetune_that_would_cross_the_budget() -> None:
    tried = [_r(0.01, 1, 20, 0.950), _r(0.01, 4, 80, 0.958)]
    chosen = pick_recipe(tried, "maximize", 2.0)
    assert chosen.steps == 20 and longer_finetune_gain(tried, chosen, "maximize") == 0.958 - 0.950
    calibration = {"results": [r.as_dict() for r in tried], "chosen": chosen.as_dict(), "metric_direction": "maximize"}
    near = {"uniform": [_p("uniform", 0.3, 0.005), _p("uniform", 0.4, 0.014), _p("uniform", 0.5, 0.05)]}
    notes = recovery_warnings(near, max_drop=0.01, calibration=calibration)
    assert len(notes) == 1 and "across the budget" in notes[0] and "uniform 0.40" in notes[0] and "0.50" not in notes[0]
    # Nothing longer was tried: nothing to say.
    assert longer_finetune_gain([tried[1]], tried[1], "maximize") == 0.0
