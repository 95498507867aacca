"""Build the :class:`~autoprune.pruning.Pruner` a study config and its task describe."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from torch import nn

from autoprune.pruning import Group
from autoprune.pruning import GuardSettings
from autoprune.pruning import Pruner
from autoprune.pruning.engine import head_plan
from autoprune.space.widths import Plan

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.tasks import Task


def resolve_round_to(config: StudyConfig) -> int:
    """``round_to`` of the config, with ``auto`` read from this CPU's flags (16 on AVX-512, else 8)."""
    if config.pruning.round_to == "auto":
        from autoprune.latency import cpu_round_to

        return cpu_round_to()
    return int(config.pruning.round_to)


def round_to_note(configured: int | str, host_block: int, provider: str = "cpu") -> str | None:
    """A note when a pinned ``round_to`` is finer than this CPU's channel block, else ``None``.

    Widths that are multiples of ``round_to`` but not of the block run in ONNX Runtime's slower layout on
    this host, so a search (and its baselines) measured here spend part of the space on slow widths.  Only
    the CPU provider's kernels are meant; pinning a value for another deployment target is legitimate.

    Example:
        >>> round_to_note(8, 16) is not None, round_to_note("auto", 16), round_to_note(16, 16), round_to_note(8, 16, "cuda")
        (True, None, None, None)
    """
    if configured == "auto" or provider != "cpu" or host_block % int(configured) or int(configured) >= host_block:
        return None
    return (
        f"pruning.round_to {configured} is finer than this CPU's ONNX Runtime channel block ({host_block}): widths "
        f"that are not multiples of {host_block} run in a slower layout here, and the timings will show it; set "
        f"round_to: auto (or {host_block}) unless the model ships to CPUs with {configured}-channel blocks"
    )


def guard_settings(config: StudyConfig) -> GuardSettings:
    p = config.pruning
    return GuardSettings(
        min_channels=p.min_channels,
        min_fraction=p.min_fraction,
        first_layer_max_ratio=p.first_layer_max_ratio,
        round_to=resolve_round_to(config),
    )


def make_pruner(config: StudyConfig, task: Task) -> Pruner:
    """The pruner of a study: criterion, guards, steps, ignored layers and ties from the config and task."""
    settings = config.pruning

    def batches():
        loader = task.loader("train", config.recovery.batch_size, shuffle=True, seed=config.recovery.seed)
        return itertools.islice(iter(loader), settings.importance_batches)

    def loss_fn(model: nn.Module, x, y):
        return task.loss(task.logits(model(x)), y)

    return Pruner(
        example_input=task.example_input(1),
        criterion=config.criterion,
        guards=guard_settings(config),
        ignored_layers=task.ignored_layers,
        iterative_steps=settings.iterative_steps,
        batches=batches,
        loss_fn=loss_fn,
        ties=task.group_ties,
        output_transform=lambda out: task.logits(out).sum(),
        num_heads=task.num_heads,
        after_pruning=task.after_pruning,
        seed=config.recovery.seed,
    )


def head_plans(groups: Iterable[Group]) -> dict[str, Plan]:
    """Attention groups keep whole heads of one width: the width the pruner makes of a guarded width."""
    return {g.name: partial(_head_width, channels=g.channels, heads=g.heads) for g in groups if g.heads}


def _head_width(keep: int, channels: int, heads: int) -> int:
    kept_heads, width = head_plan(keep, channels, heads, heads, channels // heads)
    return kept_heads * width
