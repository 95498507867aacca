"""Recovery of a pruned candidate: BN recalibration, a short finetune, distillation from the base model.

The pruning guidance: warm up, use a learning rate below the base model's, distil from the unpruned
model.  Every candidate of a study (baselines included) gets the same recipe, so their metrics compare.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from autoprune.config import RecoveryConfig
    from autoprune.tasks import Task


@torch.no_grad()
def recalibrate_bn(model: nn.Module, task: "Task", batches: int, batch_size: int, seed: int = 0) -> int:
    """Re-estimate BatchNorm running statistics on ``batches`` training batches.

    Returns:
        How many batches were used (0 when the model has no BatchNorm or ``batches`` is 0).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    saved = [(bn.momentum, bn.training) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches seen
    model.train()
    used = 0
    for x, _ in task.loader("train", batch_size, shuffle=True, seed=seed):
        model(x)
        used += 1
        if used >= batches:
            break
    for bn, (momentum, _training) in zip(bns, saved):
        bn.momentum = momentum
    model.eval()
    return used


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between softened distributions over dim 1, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean") * t * t


def finetune(
    model: nn.Module,
    task: "Task",
    settings: "RecoveryConfig",
    teacher: nn.Module | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Briefly finetune ``model`` on the training split (SGD, linear warm-up then cosine decay).

    Args:
        model: the pruned model (trained in place).
        task: gives the data and the loss.
        settings: the recovery section of the study config.
        teacher: the unpruned model to distil from (used when ``settings.distill``).
        progress: called with ``(step, total)`` now and then.

    Returns:
        The number of optimisation steps taken.
    """
    loader = task.loader("train", settings.batch_size, shuffle=True, seed=settings.seed, drop_last=True)
    per_epoch = max(1, len(loader))
    total = settings.finetune_steps if settings.finetune_steps is not None else int(math.ceil(settings.finetune_epochs * per_epoch))
    if total <= 0:
        return 0
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    warmup = min(settings.warmup_steps, max(total - 1, 0))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    use_teacher = settings.distill and teacher is not None
    if use_teacher:
        teacher.eval()
    model.train()
    step = 0
    while step < total:
        for x, y in loader:
            out = task.logits(model(x))
            loss = task.loss(out, y)
            if use_teacher:
                with torch.no_grad():
                    t_out = task.logits(teacher(x))
                w = settings.distill_weight
                loss = (1 - w) * loss + w * distillation_loss(out, t_out, settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if progress is not None and (step % 20 == 0 or step == total):
                progress(step, total)
            if step >= total:
                break
    model.eval()
    return step
