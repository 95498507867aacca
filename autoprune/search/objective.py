"""The trial: draw kept channels per group from the width space, evaluate the candidate (once per channel
vector in the study: see :mod:`autoprune.search.duplicates`), record everything."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna

from autoprune.device import device_label
from autoprune.errors import StorageError
from autoprune.latency import export_onnx
from autoprune.search.curves import CurvePruned
from autoprune.search.curves import CurveReporter
from autoprune.search.duplicates import WaitLimits
from autoprune.search.duplicates import reuse
from autoprune.search.duplicates import settle
from autoprune.search.record import TrialRecord
from autoprune.search.record import is_blank
from autoprune.search.record import is_duplicate
from autoprune.search.record import read
from autoprune.search.record import write
from autoprune.selection.artifacts import study_store
from autoprune.space.sweep_records import SweepRecord
from autoprune.space.sweep_records import load_sweep_record
from autoprune.space.sweep_records import write_candidate_files
from autoprune.space.widths import WIDTH_PARAMS_ATTR
from autoprune.space.widths import GroupWidths
from autoprune.space.widths import channels_key
from autoprune.space.widths import ratios_for
from autoprune.space.widths import ratios_for_kept
from autoprune.space.widths import space_from_attr
from autoprune.trial.candidate import Hopeless
from autoprune.trial.candidate import Screened
from autoprune.trial.candidate import Screening
from autoprune.trial.candidate import evaluate_candidate
from autoprune.trial.candidate import example_input
from autoprune.trial.candidate import time_architecture
from autoprune.trial.recovery import calibration_metric
from autoprune.trial.recovery import planned_steps
from autoprune.trial.screening import CANNOT_BEAT
from autoprune.trial.screening import Outcome
from autoprune.trial.screening import ScreeningRules
from autoprune.trial.screening import holds_with_margin

if TYPE_CHECKING:
    from autoprune.trial.candidate import StudyContext

log = logging.getLogger("autoprune")
# The constraint excess recorded for a candidate judged over budget before its finetune (a prediction, not a
# measurement: the sampler only needs it to count as infeasible).
PREDICTED_EXCESS = 1e-6
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SurplusTrial(Exception):
    """The study already holds its target of trials; this one is closed without running."""


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _outcome(trial: optuna.trial.FrozenTrial, ctx: StudyContext) -> Outcome:
    """What a completed trial showed, for the screening rules."""
    rec = read(trial)
    timing = rec.own_timing
    after_bn = rec.metric_after_bn
    return Outcome(
        drop_after_bn=None if after_bn is None else ctx.drop(float(after_bn)),
        feasible=bool(rec.feasible),
        speedup=float("nan" if timing.speedup is None else timing.speedup),
        speedup_spread=float(timing.speedup_spread or 0.0),
        noisy=bool(timing.noisy),
        number=trial.number,
        secure=holds_with_margin(rec.drop, rec.drop_stderr, ctx.config.max_drop, ctx.config.search.selection_z),
    )


def _width_space(study: optuna.Study) -> dict[str, GroupWidths]:
    """The study's width space; a study made by an older autoprune (ratio ranges) is refused clearly."""
    data = study.user_attrs["search_space"]
    if any(not isinstance(v, dict) for v in data.values()):
        raise StorageError(
            f"study {study.study_name!r} was created by an older autoprune that searched ratio ranges; this version "
            "searches kept channels per group: create a new study (another name or storage) to search with it"
        )
    return space_from_attr(data)


def suggest_widths(trial: optuna.Trial, space: Mapping[str, GroupWidths], ordered: bool) -> dict[str, int]:
    """One parameter per searched group (followers of a tie follow their leader): its kept channels.

    Ordered (new studies): an integer on the group's width grid (:meth:`GroupWidths.grid`), so that TPE's
    kernels see which widths neighbour each other, snapped to the nearest searched width (the identity where
    the widths are evenly spaced, as multiples of ``round_to`` are).  Unordered (studies made before): one
    category per width.
    """
    if not ordered:
        return {name: int(trial.suggest_categorical(name, list(g.widths))) for name, g in space.items()}
    widths = {}
    for name, g in space.items():
        low, high, step = g.grid()
        widths[name] = g.snap(trial.suggest_int(name, low, high, step=step))
    return widths


class Objective:
    """Callable objective of one worker process.

    Args:
        ctx: the study context (built once per process).
        study: the study (read for bounds and the target).
        target: finished trials the study should hold.
        worker: this worker's id (recorded on every trial).
        log_line: prints one log line.
        wait_limits: bounds of the wait for another worker's trial with the same channels.
        store: the artifact store, already checked (default: the study's, opened here).
    """

    def __init__(
        self,
        ctx: StudyContext,
        study: optuna.Study,
        target: int,
        worker: str,
        log_line: Callable[[str], None],
        wait_limits: WaitLimits | None = None,
        store: Any = None,
    ) -> None:
        self.ctx = ctx
        self.study = study
        self.target = target
        self.worker = worker
        self.log_line = log_line
        attrs = study.user_attrs
        self.space = _width_space(study)
        self.wait_limits = wait_limits or WaitLimits()
        self.max_drop = float(attrs["max_drop"])
        self.mode = str(attrs.get("search_mode", "pareto"))  # studies made before the fastest mode had two objectives
        self.ordered = attrs.get(WIDTH_PARAMS_ATTR) == "ordered"  # older studies drew widths as categories
        self.store = store if store is not None else study_store(ctx.config)  # a folder every worker sees, or an S3 bucket
        self.device = device_label(ctx.task.device)
        self.surplus = 0  # trials closed unrun by the guard
        self.current_trial_id: int | None = None
        self.base_calib: float | None = None  # the base model's calibration metric, measured on first use
        # Incumbents confirmed by this worker (re-timed here), by trial number: each is re-timed once.
        self.confirmed: dict[int, Outcome] = {}

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        """True when finished + earlier-started running trials already reach the target.

        Enqueued baselines and retries of failed trials arrive with user attrs and always run (never lost).
        """
        if not is_blank(trial):
            return False
        me = trial.number
        busy = self.study.get_trials(deepcopy=False, states=FINISHED + (optuna.trial.TrialState.RUNNING,))
        mine = next((t for t in busy if t.number == me), None)
        start = mine.datetime_start if mine is not None else None
        ahead = 0
        for t in busy:
            if t.number == me:
                continue
            if t.state in FINISHED:
                ahead += 1
            elif start is None or t.datetime_start is None or (t.datetime_start, t.number) < (start, me):
                ahead += 1
        return ahead >= self.target

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        self.current_trial_id = trial._trial_id  # the worker fails it itself if a storage outage orphans it
        if self._is_surplus(trial):
            self.surplus += 1
            write(trial, TrialRecord(surplus=True))
            raise SurplusTrial(f"trial {trial.number}: the study already has its {self.target} trials")
        queued = read(trial)  # an enqueued baseline arrives with its kind and sweep ratio
        kind = queued.kind or "search"
        # The device: where this trial was finetuned (timings name their provider).
        write(trial, TrialRecord(kind=kind, worker=self.worker, device=self.device))
        widths = suggest_widths(trial, self.space, self.ordered)
        key = channels_key(widths)
        ratios = ratios_for(self.space, widths)
        # The key before the evaluation: other workers wait instead of repeating it; readers take params for
        # ratios without them.
        write(trial, TrialRecord(channels_key=key, ratios={k: round(v, 6) for k, v in ratios.items()}))
        start = time.perf_counter()
        twin = settle(self.study, trial.number, key, list(self.space), self.wait_limits, say=self._say)
        if twin is not None:
            values = reuse(trial, twin, time.perf_counter() - start)
            self._say(f"trial {trial.number} ({kind}): same channels as trial {read(trial).duplicate_of}; reused its figures")
            return values
        record = self._sweep_record(queued, kind, widths)
        if record is not None:
            return self._reuse_sweep(trial, record, start)
        return self._evaluate(trial, kind, ratios)

    def _sweep_record(self, queued: TrialRecord, kind: str, widths: Mapping[str, int]) -> SweepRecord | None:
        """The sweep point an enqueued baseline trial repeats, when its figures and files are here to reuse."""
        ratio = queued.baseline_ratio
        if kind not in ("uniform", "global", "sensitivity") or ratio is None:
            return None
        return load_sweep_record(self.ctx.config, kind, float(ratio), self.ctx.base_info.sha256, widths, list(self.space))

    def _reuse_sweep(self, trial: optuna.Trial, record: SweepRecord, start: float) -> tuple[float, ...]:
        """Record the sweep point's figures, curve, architecture and weights as the trial's own: no finetune.

        ``stage_seconds`` holds this trial's own work (``sweep_point``: finding the record, ``storage``);
        ``sweep_stage_seconds`` the sweep point's breakdown, where the finetune was paid once.
        """
        point = record.record
        drop = float(point.drop)
        figures = dataclasses.replace(
            point,
            feasible=bool(drop <= self.max_drop),
            sweep_stage_seconds=point.stage_seconds or {},
            stage_seconds=None,
            sweep_point={"kind": record.kind, "ratio": record.ratio},
        )
        found = time.perf_counter() - start
        write_start = time.perf_counter()
        self._upload_reused(trial, record)
        write(trial, figures)
        trial.set_constraint("drop", drop - self.max_drop)
        reporter = self._curve_reporter(trial, "baseline")
        if reporter is not None:
            for step, metric in (point.recovery or {}).get("curve") or []:
                reporter(int(step), float(metric))
        stage = {"sweep_point": round(found, 4), "storage": round(time.perf_counter() - write_start, 4)}
        write(trial, TrialRecord(stage_seconds=stage))
        self._say(f"trial {trial.number} ({record.kind}): the {record.kind} sweep point {record.ratio:g}; reused its figures and weights")
        speedup = float(point.own_timing.speedup)
        return (speedup,) if self.mode == "fastest" else (float(point.metric), speedup)

    def _curve_reporter(self, trial: optuna.Trial, kind: str) -> CurveReporter | None:
        """Stores the trial's finetune curve; asks the configured pruner at every point of a search trial."""
        if self.base_calib is None:
            self.base_calib = calibration_metric(self.ctx.base_model, self.ctx.task, self.ctx.config.recovery)
        if self.base_calib is None:  # no calibration part of the training split: no judged points
            return None
        search = self.ctx.config.search
        pruner = search.pruner if kind == "search" else "none"  # baselines run to their end
        options = search.pruner_options if kind == "search" else {}
        last = planned_steps(len(self.ctx.task.dataset("train")), self.ctx.config.recovery)  # type: ignore[arg-type]
        return CurveReporter(self.study, trial, self.base_calib, self.ctx.task.drop, self.max_drop, pruner, options, last)

    def _say(self, line: str) -> None:
        self.log_line(f"[{self.worker}] {line}")

    def _evaluate(self, trial: optuna.Trial, kind: str, ratios: dict[str, float]) -> tuple[float, ...]:
        """Prune, recover, measure and time the candidate; record everything on the trial.

        Args:
            trial: the running trial.
            kind: ``search``, ``uniform`` or ``global`` (baselines are never stopped early).
            ratios: per searched group, the ratio that prunes it to its drawn width.

        Returns:
            ``(speedup,)`` in the fastest-within-budget mode, else ``(metric, speedup)``.
        """
        start = time.perf_counter()
        search = self.ctx.config.search
        screen = self._screen if kind == "search" and search.screening else None
        try:
            result = evaluate_candidate(
                self.ctx,
                ratios=ratios,
                hopeless_margin=search.hopeless_margin if kind == "search" else None,
                screen=screen,
                on_curve=self._curve_reporter(trial, kind),
            )
        except CurvePruned as stop:
            self._record_curve_pruned(trial, stop)
            self.log_line(f"[{self.worker}] trial {trial.number}: finetune stopped ({stop.reason}), {time.perf_counter() - start:.1f}s")
            raise optuna.TrialPruned(stop.reason) from None
        except Screened as skip:
            self._record_screened(trial, skip)
            self.log_line(f"[{self.worker}] trial {trial.number}: finetune skipped ({skip.reason}), {time.perf_counter() - start:.1f}s")
            raise optuna.TrialPruned(skip.reason) from None
        except Hopeless as stop:
            write(trial, TrialRecord(metric_after_bn=stop.metric, channels=dict(stop.result.kept), feasible=False))
            trial.set_constraint("drop", max(self.ctx.drop(stop.metric) - self.max_drop, PREDICTED_EXCESS))
            self.log_line(f"[{self.worker}] trial {trial.number}: pruned early ({stop}), {time.perf_counter() - start:.1f}s")
            raise optuna.TrialPruned(str(stop)) from None
        figures = result.record(self.max_drop)
        write_start = time.perf_counter()
        self._upload(trial, result)
        write(trial, figures)
        trial.set_constraint("drop", result.drop - self.max_drop)
        stage = dict(figures.stage_seconds or {})
        stage["storage"] = round(time.perf_counter() - write_start, 4)
        write(trial, TrialRecord(stage_seconds=stage))
        mark = "feasible" if figures.feasible else "over budget"
        cached = ", timing cached" if result.latency_cached else ""
        self.log_line(
            f"[{self.worker}] trial {trial.number} ({kind}): {self.ctx.task.metric_name} {result.metric.value:.4f} "
            f"(drop {result.drop:+.4f}, {mark}), speedup {result.speedup:.2f}x ±{result.speedup_spread:.3f}{cached}, "
            f"{time.perf_counter() - start:.1f}s"
        )
        return (result.speedup,) if self.mode == "fastest" else (result.metric.value, result.speedup)

    def _screen(self, screening: Screening) -> str | None:
        """The screening decision for a candidate, from the rules learned on the study's completed trials.

        Before an incumbent skips a candidate as unable to beat it, this worker confirms its timing
        (:meth:`_confirm`, once per trial) and learns the rules again with the confirmed figure; they may
        then name another incumbent, confirmed in turn (each turn confirms one more trial).
        """
        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        done = {t.number: t for t in complete if not is_duplicate(t)}
        outcomes = [_outcome(t, self.ctx) for t in done.values()]
        min_trials = self.ctx.config.search.screen_min_trials
        se = screening.metric_after_bn.stderr
        reason = None
        for _ in range(len(outcomes) + 1):
            rules = ScreeningRules.learn(outcomes, min_trials, retimed=self.confirmed)
            reason = rules.reason(screening.drop_after_bn, se, screening.speedup, screening.speedup_spread, self.mode)
            inc = rules.incumbent
            cannot_beat = reason is not None and reason.startswith(CANNOT_BEAT)
            if not cannot_beat or inc is None or inc.number is None or inc.number in self.confirmed:
                return reason
            self.confirmed[inc.number] = self._confirm(done[inc.number], inc)
        return reason

    def _confirm(self, trial: optuna.trial.FrozenTrial, stored: Outcome) -> Outcome:
        """The incumbent's outcome confirmed by re-timing its architecture in this process (never from the
        latency cache, which may hold the very figure in doubt): :meth:`Outcome.retimed`.

        A trial whose kept channels were not recorded, or do not rebuild, cannot be confirmed: it screens
        nothing (as a timing that did not settle).
        """
        kept = {str(k): int(v) for k, v in (read(trial).channels or {}).items()}
        timed = time_architecture(self.ctx, ratios_for_kept(self.space, kept)) if kept else None
        if timed is None or any(timed.kept.get(k) != v for k, v in kept.items()):
            self._say(f"trial {trial.number}: its architecture cannot be rebuilt to confirm its timing; it screens nothing")
            return dataclasses.replace(stored, noisy=True)
        speedup, spread = float(timed.timing["speedup"]), float(timed.timing["speedup_spread"])
        confirmed = stored.retimed(speedup, spread, bool(timed.timing["noisy"]))
        if stored.moved_beyond_spreads(speedup, spread):
            self._say(
                f"incumbent trial {trial.number}: re-timed here at {speedup:.2f}x ±{spread:.1%}, stored "
                f"{stored.speedup:.2f}x ±{stored.speedup_spread:.1%}; screening uses {confirmed.speedup:.2f}x"
            )
        return confirmed

    def _record_curve_pruned(self, trial: optuna.Trial, stop: CurvePruned) -> None:
        """Why and where the pruner stopped the finetune; the sampler sees an infeasible trial (the pruner only
        stops a curve over the budget: its calibration drop over ``max_drop`` is the constraint)."""
        pruner = self.ctx.config.search.pruner
        write(trial, TrialRecord(pruned_by=pruner, pruned_step=stop.step, pruned_reason=stop.reason, calib_drop=stop.drop, feasible=False))
        trial.set_constraint("drop", max(stop.drop - self.max_drop, PREDICTED_EXCESS))

    def _record_screened(self, trial: optuna.Trial, skip: Screened) -> None:
        """What a screened trial measured, and why its finetune was skipped; what the sampler learns from it.

        A candidate predicted over budget is recorded as infeasible (the ``drop`` constraint: its drop after
        BN recalibration over the budget, at least a token excess), so TPE ranks it with the infeasible trials,
        not above them; one that cannot beat the incumbent reports its speedup (one objective), so TPE ranks
        the screened by speed.
        """
        s = skip.screening
        if skip.over_budget:
            trial.set_constraint("drop", max(s.drop_after_bn - self.max_drop, PREDICTED_EXCESS))
        elif self.mode == "fastest" and math.isfinite(s.speedup):
            trial.report(s.speedup, step=0)
        write(trial, TrialRecord(
            screened=skip.reason,
            metric_after_bn=s.metric_after_bn.value,
            metric_after_bn_stderr=s.metric_after_bn.stderr,
            drop_after_bn=s.drop_after_bn,
            channels=dict(skip.result.kept),
            timing=s.timing,
        ))

    def _upload(self, trial: optuna.Trial, result: Any) -> None:
        """Store the trial's architecture JSON and finetuned weights (and ONNX file) as Optuna artifacts."""
        ctx = self.ctx
        with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as tmp:
            stem = f"trial-{trial.number}"
            arch_path, weights_path = write_candidate_files(ctx, result, Path(tmp), stem, {"trial": trial.number, "worker": self.worker})
            self._upload_files(trial, arch_path, weights_path)
            if ctx.config.search.upload_onnx:
                onnx_path = export_onnx(result.model, example_input(ctx.task, ctx.config), Path(tmp) / f"{stem}.onnx")
                onnx_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(onnx_path), study_or_trial=trial)
                write(trial, TrialRecord(onnx_artifact_id=onnx_id))

    def _upload_files(self, trial: optuna.Trial, arch: Path, weights: Path) -> None:
        """Upload an architecture JSON and weights as the trial's artifacts (ids in the trial's user attrs)."""
        arch_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(arch), study_or_trial=trial)
        weights_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(weights), study_or_trial=trial)
        write(trial, TrialRecord(arch_artifact_id=arch_id, weights_artifact_id=weights_id))

    def _upload_reused(self, trial: optuna.Trial, record: SweepRecord) -> None:
        """Upload a sweep point's files as the trial's, its architecture's provenance naming this trial."""
        data = json.loads(record.arch.read_text())
        reused = f"{record.kind} sweep point {record.ratio:g}"
        data["provenance"] = {**data.get("provenance", {}), "trial": trial.number, "worker": self.worker, "reused_from": reused}
        with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as tmp:
            arch_path = Path(tmp) / f"arch-trial-{trial.number}.json"
            arch_path.write_text(json.dumps(data, indent=2))
            self._upload_files(trial, arch_path, record.weights)
