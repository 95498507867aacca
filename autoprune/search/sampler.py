"""A sampler that never proposes a channel vector the study already holds.

Late in a search, TPE's proposals collapse onto the incumbent: in the reference benchmark's first runs, 1-5 of
40 trials per seed drew a vector that an earlier trial had already evaluated (reused, so no finetune was
repeated, but the trial taught the search nothing).  :class:`FreshSampler` wraps the configured sampler and,
when its joint (relative) proposal equals the vector of a finished or running trial, moves it to the nearest
vector nobody has drawn yet (one grid step away, else two, ...; chosen at random among the nearest).  That turns a
wasted trial into a local step around the very point the sampler believes in.

Independent (per-parameter) sampling, as in TPE's start-up trials or a random search, is passed through: a
vector only exists once every parameter is drawn, and :mod:`autoprune.search.duplicates` still catches a
repeat there (the trial reuses its twin's figures).

Example:
    >>> import optuna
    >>> sampler = FreshSampler(optuna.samplers.TPESampler(seed=0, multivariate=True), seed=0)
    >>> isinstance(sampler, optuna.samplers.BaseSampler)
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from autoprune.search.record import TrialRecord
from autoprune.search.record import write_stored

HELD = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
# Vectors one grid step away are tried first, then two, ...; enough random draws to find a fresh one among them.
MAX_STEPS = 4
DRAWS_PER_DISTANCE = 64


def vector(params: Mapping[str, Any], names: Sequence[str]) -> tuple | None:
    """The values of ``names`` in ``params`` (None when one is missing)."""
    if any(n not in params for n in names):
        return None
    return tuple(params[n] for n in names)


def held_vectors(trials: Iterable[FrozenTrial], names: Sequence[str], exclude: int) -> set[tuple]:
    """Channel vectors of the study's finished, running and queued trials (except trial ``exclude``)."""
    held = set()
    for t in trials:
        if t.number == exclude:
            continue
        v = vector(t.params, names) if t.state != TrialState.WAITING else vector(t.system_attrs.get("fixed_params", {}), names)
        if v is not None:
            held.add(v)
    return held


def neighbour(
    proposal: Mapping[str, int], space: Mapping[str, IntDistribution], held: set[tuple], rng: np.random.RandomState
) -> dict[str, int] | None:
    """The nearest vector to the proposal, in grid steps, that is not in ``held`` (random among the nearest).

    Args:
        proposal: the sampler's joint proposal.
        space: each parameter's integer grid (low, high, step).
        held: vectors the study already holds.
        rng: the random source (the sampler's seed makes the choice repeatable).

    Returns:
        The moved vector (one step first, then two, ... up to ``MAX_STEPS``), or None when none is fresh.
    """
    names = list(proposal)
    movable = [n for n in names if space[n].low < space[n].high]
    if not movable:
        return None
    for steps in range(1, MAX_STEPS + 1):
        for _ in range(DRAWS_PER_DISTANCE):
            moved = _walk(dict(proposal), movable, space, steps, rng)
            v = vector(moved, names)
            if v != vector(proposal, names) and v not in held:
                return moved
    return None


def _walk(
    values: dict[str, int], movable: Sequence[str], space: Mapping[str, IntDistribution], steps: int, rng: np.random.RandomState
) -> dict[str, int]:
    """``steps`` random moves of one grid step each (a move that would leave the grid goes the other way)."""
    for _ in range(steps):
        name = movable[rng.randint(len(movable))]
        d = space[name]
        step = d.step if rng.rand() < 0.5 else -d.step
        values[name] += step if d.low <= values[name] + step <= d.high else -step
    return values


class FreshSampler(optuna.samplers.BaseSampler):
    """Wrap a sampler so that its joint proposals are never a vector the study already holds.

    Args:
        base: the sampler that proposes (TPE, GP, ...).
        seed: seed of the moves (None: not repeatable).
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int | None = None) -> None:
        self.base = base
        self._rng = np.random.RandomState(seed)
        self.moved = 0

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        proposal = self.base.sample_relative(study, trial, search_space)
        ints = {n: d for n, d in search_space.items() if isinstance(d, IntDistribution) and not d.log}
        if not proposal or set(proposal) != set(ints):
            return proposal
        names = sorted(proposal)
        held = held_vectors(study.get_trials(deepcopy=False, states=HELD), names, trial.number)
        if vector(proposal, names) not in held:
            return proposal
        moved = neighbour({n: int(proposal[n]) for n in names}, ints, held, self._rng)
        if moved is None:
            return proposal
        self.moved += 1
        write_stored(study._storage, trial._trial_id, TrialRecord(moved_from={n: int(proposal[n]) for n in names}))
        return moved

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = np.random.RandomState()
