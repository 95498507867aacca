"""No repeated work: a trial whose channel vector the study already holds reuses that trial's figures.

Every trial records its channel vector as the user attr ``channels_key`` right after sampling, before the
expensive evaluation.  Then (:func:`settle`):

- a COMPLETE trial with the same key: this trial copies its user attrs, constraints and objective values and
  records ``duplicate_of`` (the trial that was evaluated); nothing is pruned or finetuned again;
- a RUNNING trial with the same key that started earlier (by ``(datetime_start, number)``, the order the
  surplus guard uses too): this trial waits for it, polling, and then reuses its figures, or evaluates the
  vector itself when that trial failed or was pruned;
- an earlier RUNNING trial that has not recorded its key yet may be about to evaluate the same vector:
  this trial waits (briefly) until it has.  Later trials never hold an earlier one up, so two workers cannot
  wait for each other, and of two trials with the same vector only the earlier one evaluates it.

Waits are bounded; a trial whose worker died is failed as stale while waiting (with heartbeats), so its
retry does not hold the study up either.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from autoprune.search.record import DUPLICATE_ATTR
from autoprune.search.record import KEY_ATTR
from autoprune.search.record import TrialRecord
from autoprune.search.record import has_key
from autoprune.search.record import is_duplicate
from autoprune.search.record import read
from autoprune.search.record import write
from autoprune.space.widths import channels_key

TrialState = optuna.trial.TrialState


@dataclass(frozen=True)
class WaitLimits:
    """Bounds of the waits in :func:`settle`.

    Attributes:
        same_key_s: longest wait for an earlier running trial with the same vector.
        keyless_s: longest wait for an earlier running trial to record its vector.
        poll_s: seconds between looks at the study.
    """

    same_key_s: float = 3600.0
    keyless_s: float = 60.0
    poll_s: float = 0.5


def trial_key(trial: optuna.trial.FrozenTrial, names: Sequence[str]) -> str | None:
    """The channel key of a trial: its ``channels_key``, else one made from its ``channels`` (older trials)."""
    rec = read(trial)
    if rec.channels_key is not None:
        return str(rec.channels_key)
    channels = rec.channels
    if isinstance(channels, dict) and all(n in channels for n in names):
        return channels_key({n: channels[n] for n in names})
    return None


def evaluated_twin(trials: Sequence[optuna.trial.FrozenTrial], key: str, names: Sequence[str], me: int) -> optuna.trial.FrozenTrial | None:
    """The COMPLETE trial with this key to reuse: one that was evaluated itself first, then the lowest number."""
    twins = [t for t in trials if t.state == TrialState.COMPLETE and t.number != me and trial_key(t, names) == key]
    return min(twins, key=lambda t: (is_duplicate(t), t.number), default=None)


def earlier_running(trials: Sequence[optuna.trial.FrozenTrial], me: int) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials that started before trial ``me`` (by ``(datetime_start, number)``)."""
    mine = next((t for t in trials if t.number == me), None)
    start = mine.datetime_start if mine is not None else None
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING or t.number == me or read(t).surplus:
            continue
        if start is None or t.datetime_start is None or (t.datetime_start, t.number) < (start, me):
            out.append(t)
    return out


def settle(
    study: optuna.Study,
    number: int,
    key: str,
    names: Sequence[str],
    limits: WaitLimits = WaitLimits(),
    say: Callable[[str], None] | None = None,
) -> optuna.trial.FrozenTrial | None:
    """Decide whether trial ``number`` (which recorded ``key``) evaluates its vector or reuses another trial's.

    Args:
        study: the study.
        number: the trial's number.
        key: its channel key (:func:`autoprune.space.widths.channels_key`).
        names: the searched group names (for trials that only recorded ``channels``).
        limits: bounds of the waits.
        say: prints one line when the trial starts waiting for another.

    Returns:
        The COMPLETE trial to reuse, or None: evaluate.
    """
    start = time.monotonic()
    announced: set[int] = set()
    while True:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        twin = evaluated_twin(trials, key, names, number)
        if twin is not None:
            return twin
        ahead = earlier_running(trials, number)
        same = [t for t in ahead if trial_key(t, names) == key]
        unknown = [t for t in ahead if not has_key(t)]
        waited = time.monotonic() - start
        if same and waited < limits.same_key_s:
            if say is not None and same[0].number not in announced:
                say(f"trial {number}: trial {same[0].number} is evaluating the same channels; waiting for it")
                announced.add(same[0].number)
        elif not (unknown and waited < limits.keyless_s):
            return None
        fail_stale(study)  # a dead worker's trial must not hold this one up until the limit
        time.sleep(limits.poll_s)


def reuse(trial: optuna.Trial, twin: optuna.trial.FrozenTrial, seconds: float) -> tuple[float, ...]:
    """Record ``twin``'s figures on ``trial`` as its own, with ``duplicate_of``; returns its objective values.

    Args:
        trial: the running duplicate.
        twin: the COMPLETE trial with the same channel vector.
        seconds: how long finding (and waiting for) the twin took.

    Returns:
        ``twin``'s objective values, for the objective to return.
    """
    figures = read(twin)
    write(trial, figures.shared())
    for name, value in twin.constraints.items():
        trial.set_constraint(name, value)
    origin = twin.number if figures.duplicate_of is None else figures.duplicate_of
    write(trial, TrialRecord(duplicate_of=int(origin), stage_seconds={"duplicate": round(seconds, 4)}))
    assert twin.values is not None
    return tuple(float(v) for v in twin.values)


def fail_stale(study: optuna.Study) -> None:
    """Fail the study's RUNNING trials whose heartbeat went stale (and queue their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


__all__ = ["DUPLICATE_ATTR", "KEY_ATTR", "WaitLimits", "evaluated_twin", "fail_stale", "reuse", "settle", "trial_key"]
