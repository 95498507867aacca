"""FreshSampler: a joint proposal the study already holds is moved to a fresh neighbour (real Optuna TPE)."""

import numpy as np
import optuna
from optuna.distributions import IntDistribution

from autoprune.search.record import MOVED_ATTR
from autoprune.search.sampler import FreshSampler
from autoprune.search.sampler import neighbour

SPACE = {"a": IntDistribution(8, 40, step=8), "b": IntDistribution(16, 64, step=8), "c": IntDistribution(24, 24, step=8)}


def test_neighbour_moves_one_group_by_one_step_when_that_is_fresh():
    proposal = {"a": 16, "b": 64, "c": 24}
    held = {(16, 64, 24), (24, 64, 24)}
    moved = neighbour(proposal, SPACE, held, np.random.RandomState(0))
    assert moved is not None and tuple(moved.values()) not in held
    changed = [n for n in proposal if moved[n] != proposal[n]]
    assert len(changed) == 1 and changed[0] != "c"  # a frozen group never moves
    name = changed[0]
    assert abs(moved[name] - proposal[name]) == SPACE[name].step
    assert SPACE[name].low <= moved[name] <= SPACE[name].high


def test_neighbour_gives_up_when_every_near_vector_is_held():
    space = {"a": IntDistribution(8, 16, step=8)}
    assert neighbour({"a": 8}, space, {(8,), (16,)}, np.random.RandomState(0)) is None


def _peak(trial: optuna.Trial) -> float:
    a = trial.suggest_int("a", 8, 40, step=8)
    b = trial.suggest_int("b", 16, 64, step=8)
    return -((a - 24) ** 2) - (b - 40) ** 2


def _vectors(study: optuna.Study) -> list[tuple]:
    return [(t.params["a"], t.params["b"]) for t in study.trials]


def test_tpe_repeats_itself_and_fresh_sampler_does_not():
    """On a 5x7 grid, plain TPE converges onto its incumbent and redraws it; wrapped, every joint proposal is new."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=5))
    plain.optimize(_peak, n_trials=25)
    assert len(set(_vectors(plain))) < 25  # the case the wrapper exists for

    sampler = FreshSampler(optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=5), seed=0)
    fresh = optuna.create_study(direction="maximize", sampler=sampler)
    fresh.enqueue_trial({"a": 24, "b": 40})
    fresh.optimize(_peak, n_trials=25)
    relative = [v for t, v in zip(fresh.trials, _vectors(fresh), strict=True) if t.number >= 5]
    earlier = _vectors(fresh)
    for i, v in enumerate(earlier[5:], start=5):
        assert v not in earlier[:i], f"trial {i} repeated {v}"
    assert sampler.moved > 0
    moved = [t for t in fresh.trials if MOVED_ATTR in t.user_attrs]
    assert len(moved) == sampler.moved
    for t in moved:  # the recorded proposal was held when the trial moved away from it
        assert tuple(t.user_attrs[MOVED_ATTR][k] for k in ("a", "b")) in earlier[: t.number]
    assert relative
