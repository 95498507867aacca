"""Finetune curves in the study, and Optuna's pruners over them (``search.pruner``).

Every judged checkpoint of a trial's finetune (:mod:`autoprune.trial.recovery`: step 0 after BN recalibration, then
``recovery.checkpoints`` points) is stored as an Optuna intermediate value: the **calibration drop** at that
finetune step, the base model's metric on the calibration images minus the candidate's (positive = worse, in
the units of ``max_drop``, whatever the task's metric direction).  optuna-dashboard draws these curves, and
``optuna.load_study(...).trials[i].intermediate_values`` reads them.

autoprune's studies may have two objectives, and Optuna refuses ``Trial.report`` / ``should_prune`` there, so
the values are written through the storage (which takes them in either case), and the pruning decision is
made here: the configured Optuna pruner judges an in-memory, single-objective copy of the study (every trial
in number order, so Hyperband's brackets are the same; the curves as intermediate values, a complete trial's
final drop as its value, minimised).  Pruner bookkeeping that Optuna keeps in trial system attrs
(successive halving's rungs) is kept in the trial's ``pruner_state`` user attr and put back in every copy.

The pruner is asked at the finetune's checkpoints, not at step 0 (before any finetune step: that point is the
screening's, :mod:`autoprune.trial.screening`) and not at the last (the finetune is over: stopping there saves nothing
and throws away a finished candidate whose validation drop may be within the budget). A pruner ranks trials by their
curves alone, and a faster candidate always has a worse curve than a slower one; so its verdict only stops a trial
whose latest calibration drop is also over ``max_drop``: a candidate whose curve is within the budget runs to its end.
A pruned trial is recorded as infeasible (the ``drop`` constraint is its calibration drop over the budget), with
``pruned_by``, ``pruned_step`` and ``pruned_reason``. Baselines are never pruned.

Example:
    >>> import optuna
    >>> pruner = optuna.pruners.MedianPruner(n_startup_trials=0)
    >>> curves = [{0: 0.3, 4: 0.1}, {0: 0.3, 4: 0.2}]
    >>> view, trial = pruning_view("s", [(optuna.trial.TrialState.COMPLETE, c, 0.1, {}) for c in curves], {0: 0.5, 4: 0.4}, {})
    >>> bool(pruner.prune(view, trial))
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna

from autoprune.search.pruner_options import build_pruner
from autoprune.search.record import STATE_ATTR
from autoprune.search.record import TrialRecord
from autoprune.search.record import read
from autoprune.search.record import write

TrialState = optuna.trial.TrialState
# What a trial of the copy is built from: (state, curve, final drop or None, pruner state).
ViewTrial = tuple[TrialState, Mapping[int, float], "float | None", Mapping[str, Any]]


class CurvePruned(Exception):
    """Raised at a checkpoint where the pruner stops the trial; carries the step, the drop and the reason."""

    def __init__(self, step: int, drop: float, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.drop = drop
        self.reason = reason


def pruning_view(
    name: str, trials: Sequence[ViewTrial], curve: Mapping[int, float], state: Mapping[str, Any]
) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """An in-memory single-objective (minimise) copy of a study for an Optuna pruner, and its running trial.

    Args:
        name: the study's name (Hyperband assigns brackets by name and trial number).
        trials: every trial before the running one, in number order.
        curve: the running trial's curve so far.
        state: the running trial's pruner state.

    Returns:
        ``(copy, the running trial in it)``.
    """
    view = optuna.create_study(study_name=name, storage=optuna.storages.InMemoryStorage(), direction="minimize")
    for kind, values, final, attrs in trials:
        if kind == TrialState.COMPLETE and final is not None and math.isfinite(final):
            made = optuna.trial.create_trial(state=kind, value=final, intermediate_values=dict(values), system_attrs=dict(attrs))
        elif kind == TrialState.PRUNED:
            made = optuna.trial.create_trial(state=kind, intermediate_values=dict(values), system_attrs=dict(attrs))
        else:  # running, waiting, failed: a place in the numbering only
            made = optuna.trial.create_trial(state=TrialState.FAIL)
        view.add_trial(made)
    view.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=dict(curve), system_attrs=dict(state)))
    return view, view.get_trials(deepcopy=False)[-1]


def view_trial(trial: optuna.trial.FrozenTrial) -> ViewTrial:
    """What the copy keeps of one stored trial: screened trials' values (a speedup) are no curve."""
    rec = read(trial)
    curve = {} if rec.screened is not None else dict(trial.intermediate_values)
    final = rec.drop
    return trial.state, curve, None if final is None else float(final), rec.pruner_state or {}


class CurveReporter:
    """Stores a trial's finetune curve as it comes and, for a search trial with a pruner, asks it at each point.

    Args:
        study: the study.
        trial: the running trial.
        base_calib: the base model's calibration metric (:func:`autoprune.trial.recovery.calibration_metric`).
        drop: turns ``(base metric, metric)`` into a drop (the task's).
        max_drop: the study's budget.
        pruner: the configured pruner's name (``none``: report only).
        options: its options.
        last_step: the finetune's last step (:func:`autoprune.trial.recovery.planned_steps`): never asked there.
    """

    def __init__(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        base_calib: float,
        drop: Callable[[float, float], float],
        max_drop: float,
        pruner: str = "none",
        options: Mapping[str, Any] | None = None,
        last_step: int | None = None,
    ) -> None:
        self.study = study
        self.trial = trial
        self.base_calib = base_calib
        self.drop = drop
        self.max_drop = max_drop
        self.name = pruner
        self.pruner = build_pruner(pruner, options or {})
        self.last_step = last_step
        self.curve: dict[int, float] = {}

    def __call__(self, step: int, metric: float) -> None:
        """Store the point; raise :class:`CurvePruned` when the pruner stops the trial here."""
        value = float(self.drop(self.base_calib, metric))
        if step in self.curve:
            return
        self.curve[step] = value
        self.study._storage.set_trial_intermediate_value(self.trial._trial_id, step, value)
        if self.pruner is None or step == 0 or (self.last_step is not None and step >= self.last_step):
            # After BN recalibration alone a candidate says little about where its finetune ends (a 30%-pruned
            # baseline went from 0.33 to 0.08): that point is the screening's, the pruner judges the finetune.
            # At the last checkpoint the finetune is paid for: the validation figures decide.
            return
        # Asked at every point, so its bookkeeping (successive halving's rungs) covers the trials it lets run too.
        if self._prune() and value > self.max_drop:
            raise CurvePruned(
                step,
                value,
                f"pruner {self.name} at finetune step {step}: calibration drop {value:.4f} over the budget {self.max_drop:g}",
            )

    def _prune(self) -> bool:
        """The pruner's verdict on the copy; its bookkeeping on the running trial is kept (``pruner_state``)."""
        number = self.trial.number
        before = [view_trial(t) for t in self.study.get_trials(deepcopy=False) if t.number < number]
        state = read(self.trial).pruner_state or {}
        view, running = pruning_view(self.study.study_name, before, self.curve, state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            verdict = bool(self.pruner.prune(view, running))
        after = view.get_trials(deepcopy=False)[-1].system_attrs
        if after != state:
            write(self.trial, TrialRecord(pruner_state=dict(after)))
        return verdict


__all__ = ["STATE_ATTR", "CurvePruned", "CurveReporter", "pruning_view", "view_trial"]
