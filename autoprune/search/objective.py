"""The trial: sample a ratio per group inside the bounds, evaluate the candidate, record everything."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable

import optuna

from autoprune.candidate import Hopeless
from autoprune.candidate import evaluate_candidate

if TYPE_CHECKING:
    from autoprune.candidate import StudyContext
    from autoprune.config import StudyConfig

log = logging.getLogger("autoprune")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SurplusTrial(Exception):
    """The study already holds its target of trials; this one is closed without running."""


def artifact_store(config: "StudyConfig") -> optuna.artifacts.FileSystemArtifactStore:
    """The study's artifact store (a folder; shared by every worker that sees the same path)."""
    path = config.artifact_path() / "optuna-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(path))


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class Objective:
    """Callable objective of one worker process.

    Args:
        ctx: the study context (built once per process).
        study: the study (read for bounds and the target).
        target: finished trials the study should hold.
        worker: this worker's id (recorded on every trial).
        log_line: prints one log line.
    """

    def __init__(self, ctx: "StudyContext", study: optuna.Study, target: int, worker: str, log_line: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.study = study
        self.target = target
        self.worker = worker
        self.log_line = log_line
        attrs = study.user_attrs
        self.space = {k: tuple(v) for k, v in attrs["search_space"].items()}
        self.max_drop = float(attrs["max_drop"])
        self.store = artifact_store(ctx.config)
        self.surplus = 0  # trials closed unrun by the guard
        self.current_trial_id: int | None = None

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        """True when finished + earlier-started running trials already reach the target.

        Enqueued baselines and retries of failed trials arrive with user attrs and always run (never lost).
        """
        if trial.user_attrs:
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

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        self.current_trial_id = trial._trial_id  # the worker fails it itself if a storage outage orphans it
        if self._is_surplus(trial):
            self.surplus += 1
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has its {self.target} trials")
        kind = trial.user_attrs.get("kind", "search")
        trial.set_user_attr("kind", kind)
        trial.set_user_attr("worker", self.worker)
        ratios = {name: trial.suggest_float(name, lo, hi, step=step) if hi > lo else trial.suggest_float(name, lo, hi) for name, (lo, hi, step) in self.space.items()}
        start = time.perf_counter()
        try:
            result = evaluate_candidate(self.ctx, ratios=ratios, hopeless_margin=self.ctx.config.search.hopeless_margin if kind == "search" else None)
        except Hopeless as stop:
            trial.set_user_attr("metric_after_bn", stop.metric)
            trial.set_user_attr("channels", dict(stop.result.kept))
            trial.set_user_attr("feasible", False)
            self.log_line(f"[{self.worker}] trial {trial.number}: pruned early ({stop}), {time.perf_counter() - start:.1f}s")
            raise optuna.TrialPruned(str(stop)) from None
        attrs = result.attrs(self.max_drop)
        write_start = time.perf_counter()
        self._upload(trial, result)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("drop", result.drop - self.max_drop)
        stage = dict(attrs["stage_seconds"])
        stage["storage"] = round(time.perf_counter() - write_start, 4)
        trial.set_user_attr("stage_seconds", stage)
        mark = "feasible" if attrs["feasible"] else "over budget"
        cached = ", timing cached" if result.latency_cached else ""
        self.log_line(
            f"[{self.worker}] trial {trial.number} ({kind}): {self.ctx.task.metric_name} {result.metric.value:.4f} "
            f"(drop {result.drop:+.4f}, {mark}), speedup {result.speedup:.2f}x ±{result.speedup_spread:.3f}{cached}, "
            f"{time.perf_counter() - start:.1f}s"
        )
        return result.metric.value, result.speedup

    def _upload(self, trial: optuna.Trial, result: Any) -> None:
        """Store the trial's architecture JSON and finetuned weights as Optuna artifacts."""
        from autoprune.architecture import build_architecture
        from autoprune.architecture import save_weights

        ctx = self.ctx
        arch = build_architecture(
            ctx.config,
            ctx.task,
            result.prune,
            ctx.base_info.sha256,
            ctx.round_to,
            metrics={
                "metric_name": ctx.task.metric_name,
                "metric": result.metric.value,
                "metric_stderr": result.metric.stderr,
                "base_metric": ctx.base_metric.value,
                "drop": result.drop,
                "split": "val",
            },
            latency=result.latency,
            provenance={"trial": trial.number, "worker": self.worker},
        )
        with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as tmp:
            arch_path = Path(tmp) / f"arch-trial-{trial.number}.json"
            arch_path.write_text(json.dumps(arch, indent=2))
            weights_path = save_weights(result.model, Path(tmp) / f"weights-trial-{trial.number}.pt")
            arch_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(arch_path), study_or_trial=trial)
            weights_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(weights_path), study_or_trial=trial)
            trial.set_user_attr("arch_artifact_id", arch_id)
            trial.set_user_attr("weights_artifact_id", weights_id)
            if ctx.config.search.upload_onnx:
                from autoprune.latency import export_onnx
                from autoprune.candidate import example_input

                onnx_path = export_onnx(result.model, example_input(ctx.task, ctx.config), Path(tmp) / f"trial-{trial.number}.onnx")
                trial.set_user_attr("onnx_artifact_id", optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(onnx_path), study_or_trial=trial))
