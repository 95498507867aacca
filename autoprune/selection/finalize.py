"""The final recovery of a chosen architecture: the long finetune the search stops short of, then the figures to ship.

A trial's recovery is short on purpose (every candidate gets the same cheap recipe, so their metrics
compare).  Once the per-layer widths are chosen, :func:`finalize` prunes the base checkpoint to the
architecture again, recovers it with the ``recovery.final`` recipe (BN recalibration, epochs of SGD with
warm-up and cosine decay, distillation from the unpruned model; the same loop as a trial's, judged once per
epoch on the same held-out training images, the best state kept), measures it on validation and test,
re-times it against the base with the project's interleaved timer, and writes ``weights.pt``, ``model.onnx``
and ``architecture.json`` (the search-time figures plus a ``final`` block) into
``<artifact_dir>/final/<architecture key>/``.

Long work behaves like long work: a checkpoint per epoch (model, optimizer, scheduler, RNG, best state) in
that folder lets a killed run continue where it stopped, and a lock keyed by the architecture refuses a
second finalize of it while one runs.  The final figures are stored on the study (the user attr ``final``,
by trial) for ``summary.json`` and ``report.html``.

Example:
    >>> from autoprune.config import load_config  # doctest: +SKIP
    >>> runs = finalize(load_config("studies/digits-resnet.yaml"), with_baselines=True)  # doctest: +SKIP
    >>> runs[0].figures["test_drop"], runs[0].paths["onnx"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import torch
from torch import nn

from autoprune import console
from autoprune.base_model import file_sha256
from autoprune.config import validated_copy
from autoprune.device import resolve_device
from autoprune.errors import ArtifactError
from autoprune.errors import ConfigError
from autoprune.errors import SelectionError
from autoprune.latency import export_onnx
from autoprune.latency import host_fingerprint
from autoprune.latency import measure_speedups
from autoprune.latency import training_section
from autoprune.latency._lock import _owner_record  # the owner record the timing lock writes: one format for both locks
from autoprune.latency._lock import describe_holder
from autoprune.search.storage import with_retry
from autoprune.search.study_attrs import FINAL_ATTR
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import build_architecture
from autoprune.selection.architecture import read_architecture
from autoprune.selection.architecture import save_weights
from autoprune.selection.architecture import write_architecture
from autoprune.selection.confirm import Candidate
from autoprune.selection.confirm import load_candidates
from autoprune.selection.confirm import now_utc
from autoprune.selection.confirm import open_study_for_update
from autoprune.selection.export import export_architecture
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import example_input
from autoprune.trial.recovery import FinetuneHooks
from autoprune.trial.recovery import FinetuneState
from autoprune.trial.recovery import Recovery
from autoprune.trial.recovery import RecoveryReport
from autoprune.trial.recovery import steps_per_epoch

if TYPE_CHECKING:
    from autoprune.config import RecoveryConfig
    from autoprune.config import StudyConfig

CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = "finalize.lock"
CHECKPOINT_FORMAT = 1
# Test hook: SIGKILL this process right after the checkpoint of this epoch is written (a kill mid-run).
KILL_AFTER_EPOCH_ENV = "AUTOPRUNE_FINALIZE_KILL_AFTER_EPOCH"


@dataclass(frozen=True)
class Target:
    """One architecture to finalize, with the search-time figures its JSON carries.

    Attributes:
        label: how messages name it (``trial 12``, ``uniform r=0.50``, ``arch.json``).
        kind: ``search``, ``uniform``, ``global`` or ``file`` (an architecture JSON named with ``--arch``).
        trial: its trial number in the study (``None``: a sweep point or a file from elsewhere).
        arch: the architecture dict (kept indices, search-time metrics, latency and provenance).
    """

    label: str
    kind: str
    trial: int | None
    arch: dict[str, Any]

    @property
    def key(self) -> str:
        """The architecture's key: its base checkpoint and kept channel indices (:func:`architecture_key`)."""
        return architecture_key(self.arch)


@dataclass
class Finalized:
    """One finalized architecture: its final figures and files.

    Attributes:
        target: what was finalized.
        figures: the ``final`` block of its architecture JSON.
        paths: ``architecture``, ``weights``, ``onnx`` and ``folder``.
        resumed_from: the epoch a checkpoint let it continue from (``None``: it started afresh).
    """

    target: Target
    figures: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    resumed_from: int | None = None


def architecture_key(arch: Mapping[str, Any]) -> str:
    """A short key of an architecture: the sha256 of its base checkpoint and every group's kept indices.

    Example:
        >>> architecture_key({"base_checkpoint_sha256": "0" * 64, "groups": [{"name": "a", "kept_indices": [0, 2]}]})
        'ff265748e6e61800'
    """
    data = {"base": arch["base_checkpoint_sha256"], "groups": {g["name"]: list(g["kept_indices"]) for g in arch["groups"]}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def final_settings(recovery: RecoveryConfig) -> RecoveryConfig:
    """The recovery settings of the final recipe: ``recovery.final`` over the trial recipe, judged once per epoch.

    The judge split and BN recalibration stay the trial's (``calib_size``, ``seed``, ``bn_batches``).
    """
    f = recovery.final
    return validated_copy(
        recovery,
        finetune_epochs=float(f.epochs), finetune_steps=None, lr=f.lr, warmup_steps=f.warmup_steps,
        batch_size=f.batch_size, weight_decay=f.weight_decay, distill=f.distill_weight > 0,
        distill_weight=f.distill_weight, temperature=f.temperature, checkpoints=f.epochs,
    )


def recipe_record(recovery: RecoveryConfig) -> dict[str, Any]:
    """What decides a final recovery's result: the final recipe and the judge's settings (a checkpoint must match it)."""
    final = {f"recovery.final.{k}": v for k, v in recovery.final.model_dump(mode="json").items()}
    return final | {f"recovery.{k}": getattr(recovery, k) for k in ("calib_size", "seed", "bn_batches", "amp")}


def final_folder(config: StudyConfig, target: Target) -> Path:
    """Where a target's checkpoint, lock and final files live: ``<artifact_dir>/final/<architecture key>``."""
    return config.artifact_path() / "final" / target.key


# Targets -----------------------------------------------------------------------------------------------


def study_target(config: StudyConfig, storage: str | None, trial: int | None) -> Target:
    """The study's chosen pick (as ``export`` chooses it) or trial ``trial``, with its search-time figures."""
    with tempfile.TemporaryDirectory(prefix="autoprune-finalize-") as tmp:
        exported = export_architecture(config, Path(tmp) / "arch.json", trial=trial, storage=storage)
        arch = read_architecture(exported.path)
    kind = exported.figures.kind
    return Target(f"trial {exported.trial}", kind if isinstance(kind, str) else "search", exported.trial, arch)


def file_target(config: StudyConfig, path: str | os.PathLike[str]) -> Target:
    """The architecture JSON ``path``; its trial counts as the study's only when its provenance names this study."""
    arch = read_architecture(path)
    prov = arch.get("provenance") or {}
    trial = prov.get("trial") if prov.get("study") == config.name else None
    return Target(Path(path).name, "file", trial, arch)


def baseline_targets(config: StudyConfig, ctx: StudyContext, storage: str | None, pick: Target,
                     say: Callable[[str], None]) -> list[Target]:
    """The best feasible uniform and global picks (as ``confirm`` chooses them), twins of ``pick`` left out.

    ``confirm``'s fastest feasible candidate may itself be a baseline trial: it is then that kind's best.
    """
    loaded = load_candidates(config, storage, top=1, max_drop=None)
    out = []
    for kind in ("uniform", "global"):
        best = next((c for c in loaded.candidates if c.kind == kind), None)
        if best is None:
            say(f"no {kind} baseline is within the budget: nothing to compare with on that side")
            continue
        target = _baseline_target(config, ctx, storage, best)
        if target.key == pick.key:
            say(f"the best {kind} baseline ({best.label}) keeps the same channels as {pick.label}: finalized once")
        else:
            out.append(target)
    return out


def _baseline_target(config: StudyConfig, ctx: StudyContext, storage: str | None, c: Candidate) -> Target:
    """A baseline candidate as a target: its trial's stored architecture, or its sweep point pruned again."""
    if c.number is not None:
        return Target(f"{c.kind} trial {c.number}", c.kind, c.number, study_target(config, storage, c.number).arch)
    model = copy.deepcopy(ctx.base_model)
    ratio = {"uniform": c.ratio} if c.kind == "uniform" else {"global_ratio": c.ratio}
    result = ctx.pruner.prune(model, source=ctx.base_info.sha256, **ratio)
    arch = build_architecture(config, ctx.task, result, ctx.base_info.sha256, ctx.round_to,
                              metrics={"val_metric": c.val_metric, "val_drop": c.val_drop},
                              latency={"search_speedup": c.speedup}, provenance={"selection": f"best {c.kind} baseline"})
    return Target(c.label, c.kind, None, arch)


# One at a time, resumable -------------------------------------------------------------------------------


@contextlib.contextmanager
def architecture_lock(folder: Path, label: str) -> Iterator[None]:
    """Hold the finalize lock of one architecture; a second process is refused at once, naming the holder.

    The kernel drops the lock when its holder dies, so a killed finalize never blocks the next one.

    Raises:
        SelectionError: another process finalizes this architecture now.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SelectionError(
                f"{label} is being finalized already, by {describe_holder(path)} (lock {path}); wait for it to "
                "finish, or stop it and run finalize again: it continues from the last epoch's checkpoint"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_record(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def read_checkpoint(path: Path, key: str, recipe: Mapping[str, Any]) -> FinetuneState | None:
    """The saved final recovery in ``path`` (``None`` when there is none), read without pickle.

    Raises:
        ArtifactError: the file is torn, not a checkpoint, or of another architecture.
        ConfigError: it was made with another recipe (the keys that differ are named with both values).
    """
    if not path.is_file():
        return None
    fix = "delete it or pass --restart to start the final recovery over"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        state = FinetuneState.from_dict(data["state"])
    except Exception as exc:  # torn file, pickle refused, or another layout: all say the same to the user
        raise ArtifactError(f"{path}: not a readable finalize checkpoint ({type(exc).__name__}); {fix}") from None
    if data.get("format") != CHECKPOINT_FORMAT or data.get("key") != key:
        raise ArtifactError(f"{path}: a checkpoint of another architecture or format (key {data.get('key')!r}, expected {key!r}); {fix}")
    saved = data.get("recipe") or {}
    differ = sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))
    if differ:
        shown = ", ".join(f"{k} (checkpoint {saved.get(k)!r}, config {recipe.get(k)!r})" for k in differ)
        raise ConfigError(f"{path}: this checkpoint was made with another recipe: {shown}; restore those values to continue it, or {fix}")
    return state


def write_checkpoint(path: Path, key: str, recipe: Mapping[str, Any], state: FinetuneState) -> None:
    """Save ``state`` atomically (a kill while writing leaves the previous epoch's checkpoint whole)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "key": key, "recipe": dict(recipe), "state": state.as_dict()}, tmp)
    os.replace(tmp, path)


def _kill_hook(epoch: int) -> None:
    """The test hook of :data:`KILL_AFTER_EPOCH_ENV`: die as a killed process would, no clean-up at all."""
    wanted = os.environ.get(KILL_AFTER_EPOCH_ENV, "").strip()
    if wanted.isdigit() and int(wanted) == epoch:
        os.kill(os.getpid(), signal.SIGKILL)


# The recovery -------------------------------------------------------------------------------------------


def rebuild_pruned(ctx: StudyContext, target: Target) -> nn.Module:
    """The base checkpoint pruned to the target's kept indices, with the base weights of the kept channels."""
    arch = dict(target.arch, provenance=dict(target.arch.get("provenance") or {}, weights=None))
    applied = apply_architecture(arch, ctx.config, checkpoint=ctx.base_info.path, where=target.label)
    return applied.model.to(resolve_device(ctx.config.device))


def recover_final(ctx: StudyContext, target: Target, folder: Path, say: Callable[[str], None],
                  restart: bool = False) -> tuple[nn.Module, RecoveryReport, int | None]:
    """Recover the target with the final recipe, continuing its checkpoint when there is one (``restart``: drop it).

    Returns:
        ``(model, report, epoch resumed from or None)``; the model in eval mode holds the best judged state.
    """
    settings = final_settings(ctx.config.recovery)
    recipe, epochs = recipe_record(ctx.config.recovery), ctx.config.recovery.final.epochs
    checkpoint = folder / CHECKPOINT_FILE
    if restart and checkpoint.is_file():
        checkpoint.unlink()
        say(f"{target.label}: --restart: removed the checkpoint {checkpoint}; starting the final recovery over")
    model = rebuild_pruned(ctx, target)
    recovery = Recovery(model, ctx.task, settings, teacher=ctx.teacher)
    per_epoch = steps_per_epoch(len(recovery.fit), settings.batch_size)
    saved = read_checkpoint(checkpoint, target.key, recipe)
    resumed = None if saved is None else saved.step // per_epoch
    if saved is None:
        with training_section():
            recovery.recalibrate()  # the state to beat
    elif resumed is not None and resumed >= epochs:
        say(f"{target.label}: all {epochs} epochs are done already ({checkpoint}); evaluating and timing the kept state again")
    else:
        say(f"{target.label}: resuming the final recovery after epoch {resumed} of {epochs} from {checkpoint} (not starting over)")

    def save(state: FinetuneState) -> None:
        write_checkpoint(checkpoint, target.key, recipe, state)
        _kill_hook(state.step // per_epoch)

    with _epoch_bar(target.label, epochs, resumed or 0, per_epoch, recovery) as progress, training_section():
        report = recovery.finetune(progress, hooks=FinetuneHooks(resume=saved, on_checkpoint=save))
    return model, report, resumed


@contextlib.contextmanager
def _epoch_bar(label: str, epochs: int, done: int, per_epoch: int, recovery: Recovery) -> Iterator[Callable[[int, int], None]]:
    """A progress bar in epochs showing the judged metric; yields the finetune's progress callback (no bar when
    every epoch is done already)."""
    if done >= epochs:
        yield lambda step, total: None
        return
    bar = console.progress(epochs, f"finalize {label}", "epoch", initial=done)
    metric = recovery.task.metric_name

    def progress(step: int, total: int) -> None:
        if recovery.report.curve:  # the epoch just judged, drawn with its count
            best = recovery.judge.best_value
            bar.set_postfix_str(f"judged {metric} {recovery.report.curve[-1][1]:.4f}, best {best:.4f}", refresh=False)
        bar.update(step // per_epoch - bar.n)

    try:
        yield progress
    finally:
        bar.close()


# Figures and files --------------------------------------------------------------------------------------


@dataclass
class _Recovered:
    """A target after its final recovery, before the common timing."""

    target: Target
    model: nn.Module
    report: RecoveryReport
    resumed: int | None
    folder: Path
    figures: dict[str, Any]


def _measured_figures(ctx: StudyContext, model: nn.Module, report: RecoveryReport, base_test: Any, budget: float | None) -> dict[str, Any]:
    """The final model's validation and test figures (and what the recovery kept)."""
    final = ctx.config.recovery.final
    val, test = ctx.task.evaluate(model, "val"), ctx.task.evaluate(model, "test")
    per_epoch = max(1, report.steps // final.epochs) if report.steps else 1
    test_drop = ctx.task.drop(base_test.value, test.value)
    return {
        "recipe": recipe_record(ctx.config.recovery),
        "epochs": final.epochs,
        "steps": report.steps,
        "kept_epoch": report.kept_step // per_epoch,
        "judge_metric": report.calib_kept,
        "metric_name": ctx.task.metric_name,
        "base_val_metric": ctx.base_metric.value,
        "base_test_metric": base_test.value,
        "val_metric": val.value,
        "val_metric_stderr": val.stderr,
        "val_drop": ctx.drop(val.value),
        "test_metric": test.value,
        "test_metric_stderr": test.stderr,
        "test_drop": test_drop,
        "max_drop": budget,
        "test_feasible": None if budget is None else bool(test_drop <= budget),
    }


def _write_files(ctx: StudyContext, done: _Recovered) -> dict[str, Path]:
    """``weights.pt`` and ``model.onnx`` of the final model (the JSON comes once it is timed)."""
    weights = save_weights(done.model, done.folder / "weights.pt")
    onnx = export_onnx(done.model, example_input(ctx.task, ctx.config), done.folder / "model.onnx", opset=ctx.latency.opset)
    done.figures |= {"weights": str(weights.resolve()), "weights_sha256": file_sha256(weights), "onnx": str(Path(onnx).resolve())}
    return {"weights": weights, "onnx": Path(onnx)}


def _time_together(ctx: StudyContext, runs: list[_Recovered], paths: list[dict[str, Path]]) -> None:
    """Re-time every final model against the base, interleaved in one process; add the figures to each run."""
    fingerprint = host_fingerprint(ctx.latency.provider, ctx.latency.provider_options)
    results = measure_speedups([p["onnx"] for p in paths], ctx.base_onnx, ctx.latency)
    for run, timed in zip(runs, results, strict=True):
        run.figures |= {
            "speedup": timed.speedup, "speedup_spread": timed.speedup_spread, "latency_ms": timed.candidate.median_ms,
            "base_latency_ms": timed.baseline.median_ms, "noisy": timed.noisy, "host_id": str(fingerprint["fingerprint_id"]),
            "measured_at": timed.measured_at,
        }


def write_final_architecture(run: _Recovered, paths: dict[str, Path]) -> Path:
    """The architecture JSON with the ``final`` block; ``provenance.weights`` names the final weights."""
    arch = dict(run.target.arch)
    arch["final"] = dict(run.figures)
    arch["provenance"] = dict(arch.get("provenance") or {}, weights=run.figures["weights"])
    return write_architecture(arch, run.folder / "architecture.json")


def store_final(config: StudyConfig, storage: str | None, runs: list[Finalized]) -> bool:
    """Store the final figures on the study (user attr ``final``: ``trials`` by number, ``baselines`` by kind).

    Returns:
        Whether anything was stored (an architecture from another study or none is not).
    """
    keep = [r for r in runs if r.target.trial is not None or r.target.kind in ("uniform", "global")]
    if not keep:
        return False
    url, _backend, study = open_study_for_update(config, storage)
    attr = dict(study.user_attrs.get(FINAL_ATTR) or {})
    trials, baselines = dict(attr.get("trials") or {}), dict(attr.get("baselines") or {})
    for r in keep:
        entry = {k: v for k, v in r.figures.items() if k != "recipe"} | {
            "kind": r.target.kind, "label": r.target.label, "architecture": str(r.paths["architecture"].resolve())}
        if r.target.trial is not None:
            trials[str(r.target.trial)] = entry
        else:
            baselines[r.target.kind] = entry
    attr.update(trials=trials, baselines=baselines, recipe=recipe_record(config.recovery), updated_at=now_utc())
    with_retry(lambda: study.set_user_attr(FINAL_ATTR, attr), url, "store the final figures")
    return True


# The whole step -----------------------------------------------------------------------------------------


def finalize(
    config: StudyConfig,
    trial: int | None = None,
    arch_file: str | os.PathLike[str] | None = None,
    with_baselines: bool = False,
    storage: str | None = None,
    restart: bool = False,
    say: Callable[[str], None] = console.note,
) -> list[Finalized]:
    """Finalize the chosen architecture (or ``trial``, or ``arch_file``), and with ``with_baselines`` the best
    uniform and global picks, with the ``recovery.final`` recipe; time them together against the base.

    Args:
        config: the study config (the study's own, with this host's run keys: ``autoprune.cli`` reconciles it).
        trial: finalize this trial instead of the study's pick.
        arch_file: finalize this architecture JSON instead (its base checkpoint must be the config's).
        with_baselines: also finalize the best uniform and global baselines (the study must exist).
        storage: storage URL override.
        restart: discard the checkpoints of these architectures and start their recovery over.
        say: prints one progress line.

    Returns:
        One :class:`Finalized` per architecture, the pick first.

    Raises:
        SelectionError: nothing to finalize, or another process finalizes one of these architectures now.
        ConfigError / ArtifactError: a checkpoint made with another recipe, or a torn one.
    """
    if trial is not None and arch_file is not None:
        raise ConfigError("pass --trial or --arch, not both")
    ctx = StudyContext.build(config, use_cache=False)  # checks device and provider first, as 'run' does
    pick = file_target(config, arch_file) if arch_file is not None else study_target(config, storage, trial)
    targets = [pick] + (baseline_targets(config, ctx, storage, pick, say) if with_baselines else [])
    budget = config.max_drop
    with contextlib.ExitStack() as locks:
        for target in targets:
            locks.enter_context(architecture_lock(final_folder(config, target), target.label))
        base_test = ctx.task.evaluate(ctx.base_model, "test")
        runs = [_recover_one(ctx, t, base_test, budget, say, restart) for t in targets]
        files = [_write_files(ctx, run) for run in runs]
        say(f"timing {len(runs)} final model(s) interleaved with the base in one process")
        _time_together(ctx, runs, files)
        done = [Finalized(r.target, r.figures, {**p, "architecture": write_final_architecture(r, p), "folder": r.folder},
                          r.resumed) for r, p in zip(runs, files, strict=True)]
    if store_final(config, storage, done):
        say(f"stored the final figures on study {config.name!r} (user attr '{FINAL_ATTR}')")
    return done


def _recover_one(ctx: StudyContext, target: Target, base_test: Any, budget: float | None, say: Callable[[str], None],
                 restart: bool) -> _Recovered:
    """Recover one target with the final recipe and measure it on validation and test."""
    folder = final_folder(ctx.config, target)
    final = ctx.config.recovery.final
    say(f"{target.label}: final recovery, {final.epochs} epoch(s) at lr {final.lr:g}, distillation weight {final.distill_weight:g}")
    model, report, resumed = recover_final(ctx, target, folder, say, restart)
    figures = _measured_figures(ctx, model, report, base_test, budget) | {"resumed_from_epoch": resumed}
    return _Recovered(target, model, report, resumed, folder, figures)


def comparison_lines(runs: list[Finalized]) -> list[str]:
    """The end-to-end comparison after the same long recovery: the pick against the baselines.

    Example:
        >>> comparison_lines(finalize(cfg, with_baselines=True))[0]  # doctest: +SKIP
        'after the same final recovery (5 epochs):'
    """
    if not runs:
        return []
    first = runs[0].figures
    lines = [f"after the same final recovery ({first['epochs']} epochs), timed together against the base:",
             f"{'architecture':22} {'kind':8} {'val drop':>9} {'test drop':>10} {'final':>8} {'search':>8}"]
    for r in runs:
        f, search = r.figures, (r.target.arch.get("latency") or {}).get("search_speedup")
        search_text = f"{float(search):.2f}x" if isinstance(search, (int, float)) else "-"
        lines.append(f"{r.target.label:22} {r.target.kind:8} {f['val_drop']:+9.4f} {f['test_drop']:+10.4f} "
                     f"{f['speedup']:7.2f}x {search_text:>8}" + ("  (timing did not settle)" if f.get("noisy") else ""))
    for r in runs[1:]:
        f = r.figures
        lines.append(f"{runs[0].target.label} against the {r.target.kind} baseline: {first['speedup'] / f['speedup']:.2f}x "
                     f"its speed, test drop {first['test_drop']:+.4f} against {f['test_drop']:+.4f}")
    return lines
