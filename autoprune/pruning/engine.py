"""The pruning engine: named dependency groups, ratio vectors applied with torch-pruning, replay by index.

The one idea everything rests on is the *group*: a set of output channels coupled by residual adds,
depthwise convs or concatenations, pruned together (torch-pruning's DepGraph).  A group is named after
its root module's qualified name, so a ratio vector ``{group_name: ratio}`` is stable across processes.

Channel selection is done here rather than inside torch-pruning's pruner, so that every group's kept
channel *indices* are known (the architecture JSON replays them on a fresh base model), the guards are
enforced per group (torch-pruning does not enforce ``max_pruning_ratio`` in global mode and silently skips
a group that would lose every channel), and every clamp is reported.

Example:
    >>> import torch
    >>> from autoprune.models import build_model
    >>> from autoprune.pruning import Pruner
    >>> model = build_model("resnet", num_classes=10, in_channels=1)
    >>> pruner = Pruner(torch.zeros(1, 1, 16, 16))
    >>> result = pruner.prune(model, uniform=0.5)
    >>> result.kept["layers.0.conv1"]
    16
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Callable
from typing import Iterable
from typing import Mapping
from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import PruningError
from autoprune.pruning.criteria import Criterion
from autoprune.pruning.criteria import LossFn
from autoprune.pruning.criteria import make_criterion
from autoprune.pruning.guards import Clamp
from autoprune.pruning.guards import GuardSettings
from autoprune.pruning.guards import kept_channels
from autoprune.pruning.guards import max_ratio

ROOT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class Group:
    """One prunable dependency group.

    Attributes:
        name: qualified name of the root module (stable across processes).
        channels: original number of coupled channels.
        members: ``"module (handler)"`` strings of every coupled layer.
        first_layer: whether the group holds the network's first layer.
        max_ratio: the largest ratio the guards allow.
        tied_to: name of the group whose ratio this one follows, if any.
    """

    name: str
    channels: int
    members: list[str]
    first_layer: bool = False
    max_ratio: float = 0.0
    tied_to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": self.channels,
            "members": list(self.members),
            "first_layer": self.first_layer,
            "max_ratio": self.max_ratio,
            "tied_to": self.tied_to,
        }


@dataclass
class PruneResult:
    """What a prune did.

    Attributes:
        model: the pruned model (the one passed in, pruned in place).
        groups: the groups of the unpruned model.
        kept: group name -> kept channels.
        kept_indices: group name -> kept original channel indices (sorted).
        requested: group name -> requested ratio (the global ratio's per-group share in global mode).
        clamps: every request that could not be applied as asked.
        macs: multiply-accumulates of the pruned model at the example input.
        params: parameters of the pruned model.
    """

    model: nn.Module
    groups: list[Group]
    kept: dict[str, int]
    kept_indices: dict[str, list[int]]
    requested: dict[str, float]
    clamps: list[Clamp] = field(default_factory=list)
    macs: int = 0
    params: int = 0

    @property
    def ratios(self) -> dict[str, float]:
        """Applied ratio per group (``1 - kept / channels``)."""
        return {g.name: 1.0 - self.kept[g.name] / g.channels for g in self.groups}


def _module_names(model: nn.Module) -> dict[nn.Module, str]:
    return {module: name for name, module in model.named_modules()}


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _last_layer(model: nn.Module) -> list[nn.Module]:
    """The classifier (the last Conv2d or Linear), never pruned unless the caller says otherwise."""
    last = [m for m in model.modules() if isinstance(m, ROOT_TYPES)]
    return last[-1:]


def _first_layer(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if isinstance(module, ROOT_TYPES):
            return module
    return None


class Pruner:
    """Applies ratio vectors to models of one architecture.

    Args:
        example_input: an input of the deployment shape (used to trace the dependency graph).
        criterion: importance criterion name (see :mod:`autoprune.pruning.criteria`).
        guards: floors, first-layer limit and channel rounding.
        ignored_layers: callable returning the modules never pruned (default: the last Conv2d/Linear,
            i.e. the classifier).
        iterative_steps: prune in k steps of growing ratio, re-scoring between steps (1 = one-shot).
        batches: callable returning training batches for data-aware criteria.
        loss_fn: ``loss_fn(model, x, y)`` for data-aware criteria.
        ties: tuples of group names that share one ratio (the first one leads).
        output_transform: maps the model output to a tensor for tracing (e.g. HF ``.logits``).
        num_heads: callable returning ``{attention module: heads}`` for transformer models.
        after_pruning: callable patching a pruned model (e.g. attention head sizes).
        seed: seed of the ``random`` criterion.
    """

    def __init__(
        self,
        example_input: torch.Tensor,
        criterion: str = "l2",
        guards: GuardSettings | None = None,
        ignored_layers: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
        iterative_steps: int = 1,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
        loss_fn: LossFn | None = None,
        ties: Callable[[nn.Module], Sequence[tuple[str, ...]]] | None = None,
        output_transform: Callable[[Any], torch.Tensor] | None = None,
        num_heads: Callable[[nn.Module], Mapping[nn.Module, int]] | None = None,
        after_pruning: Callable[[nn.Module], None] | None = None,
        seed: int = 0,
    ) -> None:
        if not 1 <= iterative_steps <= 5:
            raise PruningError(f"iterative_steps must be between 1 and 5, got {iterative_steps}")
        self.example_input = example_input
        self.criterion_name = criterion
        self.guards = guards or GuardSettings()
        self._ignored = ignored_layers or _last_layer
        self.iterative_steps = iterative_steps
        self._batches = batches
        self._loss_fn = loss_fn
        self._ties = ties or (lambda model: [])
        self._output_transform = output_transform
        self._num_heads = num_heads
        self._after_pruning = after_pruning
        self.seed = seed

    # -- groups -----------------------------------------------------------------------------------------
    def _graph(self, model: nn.Module) -> tp.DependencyGraph:
        was_training = model.training
        model.eval()
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=self.example_input, output_transform=self._output_transform
            )
        finally:
            model.train(was_training)

    def _raw_groups(self, model: nn.Module, graph: tp.DependencyGraph) -> list[tuple[str, nn.Module, Any, Any]]:
        names = _module_names(model)
        order = {module: i for i, module in enumerate(model.modules())}
        out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        found = []
        for group in graph.get_all_groups(ignored_layers=list(self._ignored(model)), root_module_types=list(ROOT_TYPES)):
            root = group[0].dep.target.module
            # Name a group after its earliest producing layer (the stem conv, not the depthwise conv it feeds),
            # which is what a reader looks for; any deterministic choice would be stable across processes.
            producers = [item.dep.target.module for item in group if item.dep.handler in out_handlers] or [root]
            first = min(producers, key=lambda m: order.get(m, len(order)))
            found.append((names[first], root, group[0].dep.handler, group))
        found.sort(key=lambda item: order.get(_module(model, item[0]), 0))
        return found

    def groups(self, model: nn.Module) -> list[Group]:
        """The prunable groups of ``model`` (unpruned), in dependency order, with guard limits and ties."""
        return self._describe(model, self._graph(model))

    def _describe(self, model: nn.Module, graph: tp.DependencyGraph) -> list[Group]:
        names = _module_names(model)
        first = _first_layer(model)
        ties = self._tie_map(model)
        result = []
        for name, root, _handler, group in self._raw_groups(model, graph):
            # Functional ops (adds, concats) of the traced graph are not modules of the model: list layers only.
            members = [
                f"{names[item.dep.target.module]} ({item.dep.handler.__name__})"
                for item in group
                if item.dep.target.module in names
            ]
            is_first = first is not None and any(
                item.dep.target.module is first and item.dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
                for item in group
            )
            channels = graph.get_out_channels(root)
            result.append(
                Group(
                    name=name,
                    channels=channels,
                    members=members,
                    first_layer=is_first,
                    max_ratio=max_ratio(channels, self.guards, is_first),
                    tied_to=ties.get(name),
                )
            )
        known = {g.name for g in result}
        for follower, leader in ties.items():
            if follower not in known or leader not in known:
                missing = follower if follower not in known else leader
                raise PruningError(f"group tie names {missing!r}, which is not a prunable group; known groups: {', '.join(sorted(known))}")
        return result

    def _tie_map(self, model: nn.Module) -> dict[str, str]:
        mapping: dict[str, str] = {}
        for tie in self._ties(model):
            for follower in tie[1:]:
                mapping[follower] = tie[0]
        return mapping

    # -- pruning ----------------------------------------------------------------------------------------
    def prune(
        self,
        model: nn.Module,
        ratios: Mapping[str, float] | None = None,
        uniform: float | None = None,
        global_ratio: float | None = None,
    ) -> PruneResult:
        """Prune ``model`` in place (deep-copy the base model first).

        Exactly one of ``ratios`` (per group; groups not named keep all channels), ``uniform`` (one ratio
        for every group) or ``global_ratio`` (rank every channel together, torch-pruning's mean-normalised
        scores, one threshold) must be given.

        Returns:
            A :class:`PruneResult` with kept channels, indices and clamps.
        """
        if sum(v is not None for v in (ratios, uniform, global_ratio)) != 1:
            raise PruningError("give exactly one of ratios, uniform or global_ratio")
        graph = self._graph(model)
        groups = self._describe(model, graph)
        by_name = {g.name: g for g in groups}
        raw = {name: (root, handler) for name, root, handler, _ in self._raw_groups(model, graph)}

        if ratios is not None:
            unknown = sorted(set(ratios) - set(by_name))
            if unknown:
                raise PruningError(
                    f"unknown group(s) {', '.join(unknown)}; the model's groups are: {', '.join(by_name)} "
                    "(see 'autoprune groups CONFIG')"
                )
            for name, r in ratios.items():
                if not isinstance(r, (int, float)) or math.isnan(r) or not 0.0 <= r < 1.0:
                    raise PruningError(f"group {name}: ratio must be in [0, 1), got {r}")
            requested = {g.name: float(ratios.get(g.name, 0.0)) for g in groups}
        elif uniform is not None:
            if not 0.0 <= uniform < 1.0:
                raise PruningError(f"uniform ratio must be in [0, 1), got {uniform}")
            requested = {g.name: float(uniform) for g in groups}
        else:
            assert global_ratio is not None
            if not 0.0 <= global_ratio < 1.0:
                raise PruningError(f"global ratio must be in [0, 1), got {global_ratio}")
            requested = {}
        for g in groups:  # followers take their leader's ratio
            if g.tied_to is not None and g.name in requested:
                requested[g.name] = requested[g.tied_to]

        criterion = make_criterion(self.criterion_name, seed=self.seed)
        kept_idx = {g.name: list(range(g.channels)) for g in groups}
        clamps: dict[str, Clamp] = {}
        steps = self.iterative_steps
        for step in range(1, steps + 1):
            self._prepare(model, criterion)
            if global_ratio is not None:
                scores = {name: self._scores(graph, root, handler, criterion, len(kept_idx[name])) for name, (root, handler) in raw.items()}
                targets = self._global_targets(groups, kept_idx, scores, global_ratio * step / steps)
                if step == steps:
                    requested = {g.name: 1.0 - targets[g.name] / g.channels for g in groups}
                for g in groups:
                    if g.tied_to is not None:
                        targets[g.name] = targets[g.tied_to]
            else:
                scores = {}
                targets = {g.name: g.channels * (1.0 - requested[g.name] * step / steps) for g in groups}
            for g in groups:
                ratio_now = 1.0 - targets[g.name] / g.channels
                keep, clamp = kept_channels(g.name, g.channels, ratio_now, self.guards, g.first_layer)
                if clamp is not None and step == steps:
                    clamps[g.name] = clamp
                current = len(kept_idx[g.name])
                if keep >= current:
                    continue
                root, handler = raw[g.name]
                group_scores = scores.get(g.name)
                if group_scores is None:  # local mode: score right before pruning, like torch-pruning's pruner
                    group_scores = self._scores(graph, root, handler, criterion, current)
                order = torch.argsort(group_scores, stable=True)
                drop = sorted(int(i) for i in order[: current - keep])
                graph.get_pruning_group(root, handler, idxs=drop).prune()
                drop_set = set(drop)
                kept_idx[g.name] = [orig for pos, orig in enumerate(kept_idx[g.name]) if pos not in drop_set]
        model.zero_grad(set_to_none=True)
        if self._after_pruning is not None:
            self._after_pruning(model)
        macs, params = self._count(model)
        return PruneResult(
            model=model,
            groups=groups,
            kept={name: len(idx) for name, idx in kept_idx.items()},
            kept_indices=kept_idx,
            requested=requested,
            clamps=list(clamps.values()),
            macs=macs,
            params=params,
        )

    def _prepare(self, model: nn.Module, criterion: Criterion) -> None:
        if not criterion.needs_data:
            return
        if self._batches is None or self._loss_fn is None:
            raise PruningError(f"criterion {criterion.name!r} needs training data; the task gives none")
        was_training = model.training
        model.eval()  # gradients at the trained BN statistics, not at a batch's
        try:
            criterion.prepare(model, self._batches(), self._loss_fn)
        finally:
            model.train(was_training)

    @staticmethod
    def _scores(graph: tp.DependencyGraph, root: nn.Module, handler: Any, criterion: Criterion, current: int) -> torch.Tensor:
        group = graph.get_pruning_group(root, handler, idxs=list(range(current)))
        scores = criterion(group).detach().flatten().float()
        if scores.numel() != current:
            raise PruningError(f"criterion {criterion.name!r} returned {scores.numel()} scores for {current} channels")
        return torch.nan_to_num(scores, nan=0.0)

    @staticmethod
    def _global_targets(
        groups: list[Group], kept_idx: dict[str, list[int]], scores: dict[str, torch.Tensor], ratio: float
    ) -> dict[str, float]:
        """Channels per group after removing the globally lowest-ranked share of all original channels."""
        total = sum(g.channels for g in groups)
        current_total = sum(len(kept_idx[g.name]) for g in groups)
        to_remove = int(total * ratio) - (total - current_total)
        targets = {g.name: float(len(kept_idx[g.name])) for g in groups}
        if to_remove <= 0:
            return targets
        owners = []
        values = []
        for g in groups:
            s = scores[g.name]
            values.append(s)
            owners.extend([g.name] * s.numel())
        order = torch.argsort(torch.cat(values), stable=True)[:to_remove]
        for i in order.tolist():
            targets[owners[i]] -= 1
        return targets

    def _count(self, model: nn.Module) -> tuple[int, int]:
        was_training = model.training
        model.eval()
        try:
            macs, params = tp.utils.count_ops_and_params(model, self.example_input)
        finally:
            model.train(was_training)
        return int(macs), int(params)

    # -- replay -----------------------------------------------------------------------------------------
    def apply_indices(self, model: nn.Module, kept_indices: Mapping[str, Sequence[int]]) -> PruneResult:
        """Prune a fresh base model to exactly the given kept channel indices (no scoring, no data).

        Args:
            model: an unpruned model of the same architecture.
            kept_indices: group name -> kept original channel indices; groups not named keep all channels.

        Returns:
            A :class:`PruneResult` (``requested`` holds the applied ratios).
        """
        graph = self._graph(model)
        groups = self._describe(model, graph)
        by_name = {g.name: g for g in groups}
        raw = {name: (root, handler) for name, root, handler, _ in self._raw_groups(model, graph)}
        unknown = sorted(set(kept_indices) - set(by_name))
        if unknown:
            raise PruningError(f"group(s) {', '.join(unknown)} do not exist in this model; its groups are {', '.join(by_name)}")
        kept_idx = {}
        for g in groups:
            idx = sorted(int(i) for i in kept_indices.get(g.name, range(g.channels)))
            if len(set(idx)) != len(idx) or not idx or idx[0] < 0 or idx[-1] >= g.channels:
                raise PruningError(
                    f"group {g.name}: kept_indices must be distinct channel numbers in [0, {g.channels}) and not empty"
                )
            kept_idx[g.name] = idx
            drop = sorted(set(range(g.channels)) - set(idx))
            if drop:
                root, handler = raw[g.name]
                graph.get_pruning_group(root, handler, idxs=drop).prune()
        if self._after_pruning is not None:
            self._after_pruning(model)
        macs, params = self._count(model)
        return PruneResult(
            model=model,
            groups=groups,
            kept={name: len(idx) for name, idx in kept_idx.items()},
            kept_indices=kept_idx,
            requested={g.name: 1.0 - len(kept_idx[g.name]) / g.channels for g in groups},
            macs=macs,
            params=params,
        )
