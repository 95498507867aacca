"""Recovery of a pruned candidate: BN recalibration, a short finetune, distillation from the base model.

The pruning guidance: warm up, use a learning rate below the base model's, distil from the unpruned
model.  Every candidate of a study (baselines included) gets the same recipe, so their metrics compare.

Two guarantees make short finetunes safe (:func:`recover`):

- **BatchNorm statistics are re-estimated after the finetune.**  A few optimiser steps move the weights
  while the running statistics trail behind (momentum 0.1), so a model finetuned for a handful of steps is
  evaluated with statistics of another network; that alone took a 20%-pruned ResNet from 0.67 to 0.49
  accuracy on digits.  Recalibrating after the finetune gives 0.88.
- **The finetune never returns a worse model than it started from.**  A small calibration part of the
  *training* split (never validation or test) is held out of the finetune; the model is judged on it after
  BN recalibration and at a few checkpoints of the finetune.  The best state seen is kept, a checkpoint
  that scores worse than it beyond noise sends the finetune back to it, and the best state is returned.

Example:
    >>> fit, calib = calibration_split(1000, 128, seed=0)
    >>> len(fit), len(calib), set(fit) & set(calib)
    (872, 128, set())
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import MISSING
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from typing import TYPE_CHECKING
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.device import autocast
from autoprune.device import model_device

if TYPE_CHECKING:
    from autoprune.config import RecoveryConfig
    from autoprune.tasks import Task

# The calibration part never takes more than this share of the training split.
MAX_CALIB_SHARE = 0.25
# Fewer calibration images than this judge too coarsely to pick states by: best-state keeping is off.
MIN_CALIB_IMAGES = 32


def _calib_images(n: int, size: int) -> int:
    """How many of ``n`` training images judge the finetune: ``size``, at most a quarter of ``n``, none below 32."""
    take = min(int(size), int(n * MAX_CALIB_SHARE))
    return 0 if take < MIN_CALIB_IMAGES else take


def planned_steps(n_train: int, settings: RecoveryConfig) -> int:
    """The finetune steps :meth:`Recovery.finetune` takes on a training split of ``n_train`` images (its last
    judged checkpoint is this step).

    Example:
        >>> from autoprune.config import RecoveryConfig
        >>> planned_steps(20_000, RecoveryConfig(finetune_epochs=0.5, batch_size=64, calib_size=512))
        152
    """
    fit = n_train - _calib_images(n_train, settings.calib_size)
    return finetune_steps(settings, steps_per_epoch(fit, settings.batch_size))


def calibration_split(n: int, size: int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic ``(fit, calib)`` indices of a training split of ``n`` images.

    Args:
        n: images in the training split.
        size: calibration images wanted (capped at a quarter of ``n``; below 32 there is no calibration part).
        seed: the split seed (the same in every worker, so every candidate is judged on the same images).

    Returns:
        ``(fit, calib)``: sorted, disjoint index lists covering ``range(n)``; ``calib`` may be empty.
    """
    take = _calib_images(n, size)
    if take == 0:
        return list(range(n)), []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed)).tolist()
    return sorted(perm[take:]), sorted(perm[:take])


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, task: Task, batches: int, batch_size: int, seed: int = 0, indices: Sequence[int] | None = None
) -> int:
    """Re-estimate BatchNorm running statistics on ``batches`` training batches.

    Args:
        model: the model (left in eval mode).
        task: gives the training split.
        batches: how many batches to average over.
        batch_size: images per batch.
        seed: shuffling seed.
        indices: the part of the training split to use (default: all of it).

    Returns:
        How many batches were used (0 when the model has no BatchNorm or ``batches`` is 0).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches seen
    model.train()
    used = 0
    for x, _ in task.loader("train", batch_size, shuffle=True, seed=seed, indices=indices):
        model(x)
        used += 1
        if used >= batches:
            break
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()
    return used


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between softened distributions over dim 1, scaled by T^2 (Hinton et al.).

    Averaged per element: over the batch for ``(N, C)`` logits, over every pixel for dense ``(N, C, H, W)``
    logits, so a segmentation model's distillation term weighs the same as a classifier's.
    """
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="none", log_target=True)
    per_element = kl.sum(dim=1)  # KL of each sample (and pixel) over the classes
    return per_element.mean() * t * t


@dataclass
class RecoveryReport:
    """What the recovery of one candidate did, judged on the calibration part of the training split.

    Attributes:
        steps: finetune steps taken.
        calib_after_bn: calibration metric after the first BN recalibration (None without a calibration part).
        calib_after_finetune: calibration metric at the last checkpoint of the finetune.
        calib_kept: calibration metric of the state returned.
        kept_step: finetune step of the state returned (0: the BN-recalibrated model, the finetune never helped).
        restores: how often a checkpoint scored worse beyond noise and the finetune went back to the best state.
        curve: ``(step, calibration metric)`` at every judged point.
    """

    steps: int = 0
    calib_after_bn: float | None = None
    calib_after_finetune: float | None = None
    calib_kept: float | None = None
    kept_step: int = 0
    restores: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The figures a trial or sweep point records (a trial record stores them prefixed ``recovery_``)."""
        data = asdict(self)
        data["curve"] = [[s, round(v, 6)] for s, v in self.curve]
        return data


class _Judge:
    """Scores a model on the calibration images after BN recalibration, and keeps the best state seen."""

    def __init__(self, task: Task, settings: RecoveryConfig, fit: Sequence[int], calib: Sequence[int]) -> None:
        self.task = task
        self.settings = settings
        self.fit = fit
        self.calib = calib
        self.sign = 1.0 if task.metric_direction == "maximize" else -1.0
        self.best_value: float | None = None
        self.best_stderr = 0.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step = 0

    def recalibrate(self, model: nn.Module) -> None:
        s = self.settings
        recalibrate_bn(model, self.task, s.bn_batches, s.batch_size, seed=s.seed, indices=self.fit)

    def score(self, model: nn.Module, step: int, report: RecoveryReport) -> bool:
        """Recalibrate and judge ``model``; keep it when it is at least as good.  True: it is worse beyond noise."""
        self.recalibrate(model)
        if not self.calib:
            return False
        result = self.task.evaluate(model, "train", indices=self.calib)
        report.curve.append((step, result.value))
        if self.best_value is None or self.sign * (result.value - self.best_value) >= 0:
            self.best_value, self.best_stderr, self.best_step = result.value, result.stderr, step
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        return self.sign * (self.best_value - result.value) > 2 * max(self.best_stderr, result.stderr)

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def _schedule(total: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero over ``total`` steps (a multiplier of the learning rate)."""
    warmup = min(warmup_steps, max(total - 1, 0))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * done))

    return lr_at


def finetune_steps(settings: RecoveryConfig, steps_per_epoch: int) -> int:
    """Optimisation steps of a recipe: ``finetune_steps`` when set, else ``finetune_epochs`` epochs."""
    if settings.finetune_steps is not None:
        return int(settings.finetune_steps)
    return int(math.ceil(settings.finetune_epochs * max(1, steps_per_epoch)))


def steps_per_epoch(fit_size: int, batch_size: int) -> int:
    """Batches in one epoch of the fit part (the last partial batch is dropped, unless it is the only one)."""
    return fit_size // batch_size if fit_size >= batch_size else 1


def _batches(
    task: Task, settings: RecoveryConfig, fit: Sequence[int], start_step: int = 0
) -> Iterator[tuple[tuple[int, ...], Any, Any]]:
    """Endless shuffled training batches of the fit part (a new shuffle every epoch), each with its key.

    The key names the batch by everything that decides its content, so a :class:`Teacher` can cache the
    base model's outputs on it across candidates.  ``start_step`` skips the batches a resumed finetune
    took already (whole epochs without loading them).
    """
    drop_last = len(fit) >= settings.batch_size  # never an empty loader
    fit_id = hash(tuple(fit))  # ints hash the same in every process
    epoch, skip = divmod(start_step, steps_per_epoch(len(fit), settings.batch_size))
    while True:
        loader = task.loader("train", settings.batch_size, shuffle=True, seed=settings.seed + epoch, drop_last=drop_last, indices=fit)
        for i, (x, y) in enumerate(itertools.islice(loader, skip, None), start=skip):
            yield (fit_id, settings.seed, settings.batch_size, epoch, i), x, y
        epoch, skip = epoch + 1, 0


class Teacher:
    """The unpruned model to distil from, its outputs cached per training batch (they never change).

    Every candidate of a process finetunes on the same seeded batches, and the base model's outputs on a
    batch do not depend on the candidate, so the teacher's forward pass runs once per batch per process.
    Outputs are kept in memory up to ``max_bytes`` (dense segmentation outputs are large); past that the
    teacher simply runs again.

    Args:
        model: the unpruned model (put in eval mode).
        task: turns raw outputs into logits.
        max_bytes: memory the cache may hold (0: no cache).
    """

    def __init__(self, model: nn.Module, task: Task, max_bytes: int = 256 * 2**20) -> None:
        self.model = model.eval()
        self.task = task
        self.max_bytes = max_bytes
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.bytes = 0
        self.hits = 0

    @torch.no_grad()
    def outputs(self, key: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on batch ``x`` (named ``key``)."""
        if key in self.cache:
            self.hits += 1
            return self.cache[key]
        out = self.task.logits(self.model(x)).detach()
        size = out.element_size() * out.nelement()
        if self.bytes + size <= self.max_bytes:
            self.cache[key] = out
            self.bytes += size
        return out


def _loss(model: nn.Module, task: Task, settings: RecoveryConfig, teacher: Teacher | None, batch: tuple[Any, Any, Any]) -> torch.Tensor:
    key, x, y = batch
    out = task.logits(model(x))
    loss = task.loss(out, y)
    if teacher is None:
        return loss
    w = settings.distill_weight
    return (1 - w) * loss + w * distillation_loss(out, teacher.outputs(key, x), settings.temperature)


class Recovery:
    """The recovery of one candidate in two steps: :meth:`recalibrate`, then :meth:`finetune`.

    Between the two the BN-recalibrated model can be measured, timed (its architecture is final) and,
    when it cannot pay off, left unfinetuned.  :func:`recover` runs both.

    Args:
        model: the pruned model (recovered in place).
        task: gives the data and the loss.
        settings: the recovery section of the study config (the calibrated recipe where there is one).
        teacher: the unpruned model to distil from (used when ``settings.distill``), best as a :class:`Teacher`
            shared by the candidates of a process (a bare module gets a teacher of its own, no cache).
    """

    def __init__(self, model: nn.Module, task: Task, settings: RecoveryConfig, teacher: Teacher | nn.Module | None = None) -> None:
        self.model = model
        self.task = task
        self.settings = settings
        self.teacher = Teacher(teacher, task, max_bytes=0) if isinstance(teacher, nn.Module) else teacher
        train = task.dataset("train")
        # torch's Dataset declares no __len__ (iterable datasets have none); a task's datasets are map-style
        self.fit, self.calib = calibration_split(len(train), settings.calib_size, settings.seed)  # type: ignore[arg-type]
        self.judge = _Judge(task, settings, self.fit, self.calib)
        self.report = RecoveryReport()

    def recalibrate(self) -> RecoveryReport:
        """Re-estimate BN statistics and judge the model on the calibration images (the state to beat)."""
        self.judge.score(self.model, 0, self.report)
        self.report.calib_after_bn = self.judge.best_value
        self.model.eval()
        return self.report

    def finetune(
        self,
        progress: Callable[[int, int], None] | None = None,
        on_point: Callable[[int, float], None] | None = None,
        hooks: FinetuneHooks | None = None,
    ) -> RecoveryReport:
        """Finetune, keeping the best state seen; the model ends in eval mode with recalibrated BN statistics.

        Args:
            progress: called with ``(step, total)`` at every checkpoint.
            on_point: called with ``(step, calibration metric)`` for every judged point of the curve, the one
                judged after BN recalibration (step 0) first; an exception it raises ends the finetune there.
            hooks: continue a saved finetune and save one at every judged checkpoint (:class:`FinetuneHooks`).
        """
        s = self.settings
        total = planned_steps(len(self.fit) + len(self.calib), s)
        report = self.report
        hook = _curve_hook(report, progress, on_point)
        hook(0, total)
        if total > 0:
            teacher = self.teacher if s.distill else None
            report.steps = _finetune(self.model, self.task, s, teacher, self.judge, report, total, self.fit, hook, hooks)
            report.calib_after_finetune = report.curve[-1][1] if self.calib else None
            self.judge.restore(self.model)
        report.calib_kept = self.judge.best_value
        report.kept_step = self.judge.best_step if self.calib else report.steps
        self.model.eval()
        return report


def _curve_hook(
    report: RecoveryReport, progress: Callable[[int, int], None] | None, on_point: Callable[[int, float], None] | None
) -> Callable[[int, int], None]:
    """A checkpoint callback that hands ``on_point`` every curve point judged since its last call, then calls
    ``progress`` (except for the call before the first step)."""
    seen = 0

    def hook(step: int, total: int) -> None:
        nonlocal seen
        if on_point is not None:
            for point_step, value in report.curve[seen:]:
                on_point(point_step, value)
        seen = len(report.curve)
        if progress is not None and step > 0:
            progress(step, total)

    return hook


def calibration_metric(model: nn.Module, task: Task, settings: RecoveryConfig) -> float | None:
    """``model``'s metric on the calibration images of the training split (None: there are none); the base
    model's is what a finetune curve's drop is measured from."""
    _, calib = calibration_split(len(task.dataset("train")), settings.calib_size, settings.seed)  # type: ignore[arg-type]  # torch's Dataset stub declares no __len__; every split is a sized dataset
    if not calib:
        return None
    model.eval()
    return task.evaluate(model, "train", indices=calib).value


def recover(
    model: nn.Module,
    task: Task,
    settings: RecoveryConfig,
    teacher: Teacher | nn.Module | None = None,
    progress: Callable[[int, int], None] | None = None,
    after_bn: Callable[[nn.Module], None] | None = None,
) -> RecoveryReport:
    """BN recalibration, then a finetune that keeps the best state seen; ``model`` is recovered in place.

    Args:
        model: the pruned model.
        task: gives the data and the loss.
        settings: the recovery section of the study config (the calibrated recipe where there is one).
        teacher: the model to distil from (see :class:`Recovery`).
        progress: called with ``(step, total)`` at every checkpoint.
        after_bn: called with the BN-recalibrated model before the finetune (to measure it).

    Returns:
        The :class:`RecoveryReport`; the model is left in eval mode with recalibrated BN statistics.
    """
    recovery = Recovery(model, task, settings, teacher)
    recovery.recalibrate()
    if after_bn is not None:
        after_bn(model)
    return recovery.finetune(progress)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """One optimiser step on ``loss`` (scaled when fp16 needs it)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _finetune(
    model: nn.Module,
    task: Task,
    settings: RecoveryConfig,
    teacher: Teacher | None,
    judge: _Judge,
    report: RecoveryReport,
    total: int,
    fit: Sequence[int],
    progress: Callable[[int, int], None] | None,
    hooks: FinetuneHooks | None = None,
) -> int:
    """SGD with warm-up and cosine decay for ``total`` steps, judged at ``settings.checkpoints`` points.

    With ``settings.amp`` the forward passes run under autocast (fp16 with a gradient scaler).  With
    ``hooks`` it continues a saved finetune and hands its state out at every judged checkpoint."""
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, settings.warmup_steps))
    checkpoints = {max(1, round(total * i / settings.checkpoints)) for i in range(1, settings.checkpoints + 1)}
    device = model_device(model)
    scaler = torch.amp.GradScaler(device.type) if settings.amp == "fp16" else None
    hooks = hooks or FinetuneHooks()
    start = hooks.resume.restore(model, optimizer, scheduler, scaler, judge, report, total) if hooks.resume else 0
    model.train()
    batches = _batches(task, settings, fit, start)
    for step in range(start + 1, total + 1):
        with autocast(settings.amp, device):
            loss = _loss(model, task, settings, teacher, next(batches))
        _step(optimizer, loss, scaler)
        scheduler.step()
        if step in checkpoints:
            if judge.score(model, step, report):
                judge.restore(model)
                optimizer.state.clear()  # momentum of the steps that made things worse
                report.restores += 1
            model.train()
            if hooks.on_checkpoint is not None:
                hooks.on_checkpoint(FinetuneState.capture(step, total, model, optimizer, scheduler, scaler, judge, report))
            if progress is not None:
                progress(step, total)
    return total


@dataclass
class FinetuneState:
    """Where a finetune stands at a judged checkpoint: enough for another process to continue it exactly.

    Holds only tensors, numbers, lists and dicts, so :meth:`as_dict` saves with ``torch.save`` and reads back
    with ``torch.load(weights_only=True)``.  The model and optimizer tensors are the live ones: save the
    state before the next step.

    Attributes:
        step / total: steps taken, and the finetune's length.
        model / optimizer / scheduler / scaler: their ``state_dict`` (``scaler``: ``None`` without fp16).
        rng: torch's CPU random state; ``cuda_rng``: every GPU's (``None`` without CUDA).
        judge: the best state seen and its score (``best_value, best_stderr, best_step, best_state``).
        curve / restores: the report so far.
    """

    step: int
    total: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: torch.Tensor
    judge: dict[str, Any]
    curve: list[list[float]]
    restores: int
    scaler: dict[str, Any] | None = None
    cuda_rng: list[torch.Tensor] | None = None

    @classmethod
    def capture(cls, step: int, total: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: Any, judge: _Judge, report: RecoveryReport) -> FinetuneState:
        """The state of a running finetune after ``step``."""
        best = {"best_value": judge.best_value, "best_stderr": judge.best_stderr, "best_step": judge.best_step,
                "best_state": judge.best_state}
        return cls(step, total, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), torch.get_rng_state(),
                   best, [[s, v] for s, v in report.curve], report.restores, None if scaler is None else scaler.state_dict(),
                   torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                judge: _Judge, report: RecoveryReport, total: int) -> int:
        """Put the saved state back into a freshly set-up finetune of ``total`` steps; returns the steps taken."""
        if self.total != total:
            raise ValueError(f"the saved finetune has {self.total} steps, this one {total}: it was made with another recipe")
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        if scaler is not None and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng)
        judge.best_value, judge.best_stderr = self.judge["best_value"], self.judge["best_stderr"]
        judge.best_step, judge.best_state = self.judge["best_step"], self.judge["best_state"]
        report.curve = [(int(s), float(v)) for s, v in self.curve]
        report.restores = int(self.restores)
        return self.step

    def as_dict(self) -> dict[str, Any]:
        """The state as a plain dict (what ``torch.save`` writes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneState:
        """The state saved by :meth:`as_dict` (``KeyError`` when it is not one; optional fields may be absent)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.default is MISSING})


@dataclass
class FinetuneHooks:
    """What a long finetune adds to the loop: a saved state to continue from, a call at every judged checkpoint.

    Attributes:
        resume: continue this saved finetune instead of starting (same recipe, same model architecture).
        on_checkpoint: called with the :class:`FinetuneState` after every judged checkpoint (to save it).
    """

    resume: FinetuneState | None = None
    on_checkpoint: Callable[[FinetuneState], None] | None = None
