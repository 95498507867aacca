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

import inspect
import math
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoprune.device import model_device
from autoprune.errors import PruningError
from autoprune.pruning.criteria import Criterion
from autoprune.pruning.criteria import LossFn
from autoprune.pruning.criteria import make_criterion
from autoprune.pruning.guards import Clamp
from autoprune.pruning.guards import GuardSettings
from autoprune.pruning.guards import kept_channels
from autoprune.pruning.guards import max_ratio

ROOT_TYPES = (nn.Conv2d, nn.Linear)
# Sources (weights x criterion) whose first-step importance scores a pruner keeps (see Pruner.prune).
SCORE_CACHE_SIZE = 4


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
        heads: attention heads the group's channels are split into (None: not an attention group).
    """

    name: str
    channels: int
    members: list[str]
    first_layer: bool = False
    max_ratio: float = 0.0
    tied_to: str | None = None
    heads: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": self.channels,
            "members": list(self.members),
            "first_layer": self.first_layer,
            "max_ratio": self.max_ratio,
            "tied_to": self.tied_to,
            "heads": self.heads,
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
        heads: attention module name -> heads it keeps (empty for models without attention).
    """

    model: nn.Module
    groups: list[Group]
    kept: dict[str, int]
    kept_indices: dict[str, list[int]]
    requested: dict[str, float]
    clamps: list[Clamp] = field(default_factory=list)
    macs: int = 0
    params: int = 0
    heads: dict[str, int] = field(default_factory=dict)

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
    last: list[nn.Module] = [m for m in model.modules() if isinstance(m, ROOT_TYPES)]
    return last[-1:]


def _first_layer(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if isinstance(module, ROOT_TYPES):
            return module
    return None


def head_layout(kept: Sequence[int], channels: int, heads: int, group: str = "?") -> tuple[int, int]:
    """Heads and per-head width of an attention group that keeps the original channels ``kept``.

    Channel ``i`` belongs to head ``i // (channels // heads)``; a head is removed when none of its channels
    is kept, and every kept head must keep the same number of channels (the attention reshapes with one
    head size).

    Args:
        kept: kept original channel indices.
        channels: the group's original channels.
        heads: the group's original heads.
        group: group name, for the message.

    Returns:
        ``(kept_heads, head_width)``.

    Example:
        >>> head_layout([0, 1, 4, 5], channels=8, heads=2)
        (2, 2)
    """
    width = channels // heads
    counts = Counter(int(i) // width for i in kept)
    widths = sorted(set(counts.values()))
    if len(widths) != 1:
        raise PruningError(
            f"group {group}: attention heads would keep different widths ({', '.join(map(str, widths))} channels); "
            f"every kept head of this {heads}-head layer must keep the same number of its {width} channels"
        )
    return len(counts), widths[0]


def head_plan(keep: int, channels: int, heads: int, current_heads: int, current_width: int) -> tuple[int, int]:
    """How an attention group keeps about ``keep`` channels: whole heads first, then a narrower head.

    Removes as many whole heads as the ratio allows (never the last one), then trims every kept head to the
    same width, rounding up so the group never falls below ``keep`` (the guards' floor stays a floor).

    Args:
        keep: channels to keep (after the guards).
        channels: the group's original channels.
        heads: the group's original heads.
        current_heads: heads kept so far (iterative pruning never brings one back).
        current_width: per-head width kept so far.

    Returns:
        ``(kept_heads, head_width)``; ``kept_heads * head_width >= keep`` unless the current layout is smaller.

    Example:
        >>> head_plan(40, channels=128, heads=8, current_heads=8, current_width=16)
        (3, 14)
    """
    width = channels // heads
    new_heads = min(current_heads, max(1, math.ceil(keep / width - 1e-9)))
    new_width = min(current_width, max(1, math.ceil(keep / new_heads - 1e-9)))
    return new_heads, new_width


def _attention_drop(
    kept: Sequence[int], scores: torch.Tensor, keep: int, channels: int, heads: int, group: str
) -> list[int]:
    """Current positions to drop so that an attention group keeps whole, equally wide heads.

    Heads are ranked by the sum of their channels' scores; inside each kept head the lowest-scored
    channels go.
    """
    width = channels // heads
    current_heads, current_width = head_layout(kept, channels, heads, group)
    new_heads, new_width = head_plan(keep, channels, heads, current_heads, current_width)
    positions: dict[int, list[int]] = {}
    for pos, orig in enumerate(kept):
        positions.setdefault(int(orig) // width, []).append(pos)
    head_ids = sorted(positions)
    head_scores = torch.stack([scores[positions[h]].sum() for h in head_ids])
    best = torch.argsort(head_scores, descending=True, stable=True)[:new_heads].tolist()
    keep_pos: set[int] = set()
    for i in best:
        head_pos = positions[head_ids[i]]
        top = torch.argsort(scores[head_pos], descending=True, stable=True)[:new_width].tolist()
        keep_pos.update(head_pos[j] for j in top)
    return [p for p in range(len(kept)) if p not in keep_pos]


def _follow(leader_kept: int, leader_channels: int, channels: int) -> int:
    """Channels a tied follower keeps: its leader's share of channels (the same count for equal sizes)."""
    return max(1, min(channels, int(round(leader_kept * channels / leader_channels))))


def _takes_heads(hook: Callable[..., Any]) -> bool:
    """Whether an ``after_pruning`` hook accepts the ``heads`` keyword."""
    try:
        params = inspect.signature(hook).parameters
    except (TypeError, ValueError):
        return False
    return "heads" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _requested(
    groups: Sequence[Group], ratios: Mapping[str, float] | None, uniform: float | None, global_ratio: float | None
) -> dict[str, float]:
    """The ratio asked of each group (followers take their leader's); empty in global mode (set after ranking)."""
    if ratios is not None:
        unknown = sorted(set(ratios) - {g.name for g in groups})
        if unknown:
            raise PruningError(
                f"unknown group(s) {', '.join(unknown)}; the model's groups are: {', '.join(g.name for g in groups)} "
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
        return {}
    for g in groups:
        if g.tied_to is not None and g.name in requested:
            requested[g.name] = requested[g.tied_to]
    return requested


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
        ties: tuples of group names that share one ratio (the first one leads); a follower keeps as many
            channels as its leader (scaled by their sizes), so a clamp of the leader applies to it too.
        output_transform: maps the model output to a tensor for tracing (e.g. HF ``.logits``).
        num_heads: callable returning ``{attention module: heads}`` (the q/k/v projections) for transformer
            models; a group holding those output channels keeps whole heads of one width
            (:func:`head_plan`).
        after_pruning: callable patching a pruned model (e.g. attention head sizes); when it takes a
            ``heads`` keyword it also gets ``{attention module: kept heads}``.
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
        after_pruning: Callable[..., None] | None = None,
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
        self.reuse_scores = True  # keep the unpruned model's scores per source (see prune); off: score every time
        self.score_hits = 0
        self._score_cache: dict[tuple[str | None, str], dict[str, torch.Tensor]] = {}

    # -- groups -----------------------------------------------------------------------------------------
    def _input_for(self, model: nn.Module) -> torch.Tensor:
        """The example input on the model's device (the model may be finetuned on a GPU)."""
        return self.example_input.to(model_device(model))

    def _graph(self, model: nn.Module) -> tp.DependencyGraph:
        was_training = model.training
        model.eval()
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=self._input_for(model), output_transform=self._output_transform
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

    def _head_map(self, model: nn.Module) -> dict[nn.Module, int]:
        if self._num_heads is None:
            return {}
        return {module: int(h) for module, h in dict(self._num_heads(model)).items()}

    @staticmethod
    def _group_heads(name: str, group: Any, channels: int, head_map: Mapping[nn.Module, int]) -> int | None:
        """The head count of a group holding attention projections' output channels (None otherwise)."""
        out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        found = {
            head_map[item.dep.target.module]
            for item in group
            if item.dep.handler in out_handlers and item.dep.target.module in head_map
        }
        if not found:
            return None
        if len(found) > 1:
            raise PruningError(f"group {name}: its attention projections disagree on the head count ({sorted(found)})")
        heads = found.pop()
        if heads < 1 or channels % heads:
            raise PruningError(f"group {name}: {channels} channels cannot be split into {heads} attention heads")
        return heads

    def _describe(self, model: nn.Module, graph: tp.DependencyGraph) -> list[Group]:
        names = _module_names(model)
        first = _first_layer(model)
        ties = self._tie_map(model)
        head_map = self._head_map(model)
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
                    heads=self._group_heads(name, group, channels, head_map),
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
        source: str | None = None,
    ) -> PruneResult:
        """Prune ``model`` in place (deep-copy the base model first).

        Exactly one of ``ratios`` (per group; groups not named keep all channels), ``uniform`` (one ratio
        for every group) or ``global_ratio`` (rank every channel together, torch-pruning's mean-normalised
        scores, one threshold) must be given.

        Args:
            source: an identity of the weights ``model`` holds (e.g. the base checkpoint's sha256), or None.
                Pruning many copies of one model scores it once: the first step's importance scores (every
                group is scored on the unpruned model) are kept per source and criterion, and reused while
                :attr:`reuse_scores` is on.

        Returns:
            A :class:`PruneResult` with kept channels, indices and clamps.
        """
        if sum(v is not None for v in (ratios, uniform, global_ratio)) != 1:
            raise PruningError("give exactly one of ratios, uniform or global_ratio")
        graph = self._graph(model)
        groups = self._describe(model, graph)
        raw_groups = self._raw_groups(model, graph)
        raw = {name: (root, handler) for name, root, handler, _ in raw_groups}
        attention = self._attention_members(model, raw_groups)
        requested = _requested(groups, ratios, uniform, global_ratio)
        criterion = make_criterion(self.criterion_name, seed=self.seed)
        kept_idx = {g.name: list(range(g.channels)) for g in groups}
        clamps: dict[str, Clamp] = {}
        steps = self.iterative_steps
        for step in range(1, steps + 1):
            # Every group is scored on the same (unpruned at this step) model, in every mode, so a ratio
            # vector selects the same channels whichever mode produced it (the enqueued global baseline is
            # then exactly the sweep's model) and the result does not depend on group order.
            scores = self._step_scores(model, graph, raw, criterion, kept_idx, source if step == 1 else None)
            targets, requested = self._step_targets(groups, kept_idx, scores, requested, global_ratio, step, steps)
            step_clamps = self._prune_step(graph, groups, raw, kept_idx, scores, targets)
            if step == steps:
                clamps = step_clamps
            if step < steps and self._after_pruning is not None:
                # The next step's data-aware scoring runs the model: patch it (e.g. head sizes) first.
                self._finish(model, groups, kept_idx, attention)
        model.zero_grad(set_to_none=True)
        heads = self._finish(model, groups, kept_idx, attention)
        return self._pruned(model, groups, kept_idx, requested, clamps, heads)

    def _step_targets(
        self,
        groups: list[Group],
        kept_idx: dict[str, list[int]],
        scores: dict[str, torch.Tensor],
        requested: dict[str, float],
        global_ratio: float | None,
        step: int,
        steps: int,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """This step's target width per group, and the requested ratios (a global ratio's, per group, at the last step)."""
        if global_ratio is not None:
            targets = self._global_targets(groups, kept_idx, scores, global_ratio * step / steps)
            if step == steps:
                requested = {g.name: 1.0 - targets[g.name] / g.channels for g in groups}
            for g in groups:
                if g.tied_to is not None:
                    targets[g.name] = targets[g.tied_to]
        else:
            targets = {g.name: g.channels * (1.0 - requested[g.name] * step / steps) for g in groups}
        return targets, requested

    def _pruned(
        self,
        model: nn.Module,
        groups: list[Group],
        kept_idx: dict[str, list[int]],
        requested: dict[str, float],
        clamps: Mapping[str, Clamp],
        heads: dict[str, int],
    ) -> PruneResult:
        """The :class:`PruneResult` of a finished prune (MACs and parameters counted on the pruned model)."""
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
            heads=heads,
        )

    def _step_scores(
        self,
        model: nn.Module,
        graph: tp.DependencyGraph,
        raw: Mapping[str, tuple[nn.Module, Any]],
        criterion: Criterion,
        kept_idx: Mapping[str, Sequence[int]],
        source: str | None,
    ) -> dict[str, torch.Tensor]:
        """Per group, one importance score per current channel (from the cache for a known source)."""
        key = (source, criterion.name)
        cached = self._score_cache.get(key) if source is not None and self.reuse_scores else None
        if cached is not None and all(name in cached and cached[name].numel() == len(kept_idx[name]) for name in raw):
            self.score_hits += 1
            return {name: cached[name].clone() for name in raw}
        self._prepare(model, criterion)
        scores = {name: self._scores(graph, root, handler, criterion, len(kept_idx[name])) for name, (root, handler) in raw.items()}
        if source is not None and self.reuse_scores:
            if len(self._score_cache) >= SCORE_CACHE_SIZE:
                self._score_cache.pop(next(iter(self._score_cache)))
            self._score_cache[key] = {name: t.clone() for name, t in scores.items()}
        return scores

    def _prune_step(
        self,
        graph: tp.DependencyGraph,
        groups: Sequence[Group],
        raw: Mapping[str, tuple[nn.Module, Any]],
        kept_idx: dict[str, list[int]],
        scores: Mapping[str, torch.Tensor],
        targets: Mapping[str, float],
    ) -> dict[str, Clamp]:
        """Prune every group to its target width (leaders before their followers); the guards' clamps."""
        by_name = {g.name: g for g in groups}
        clamps: dict[str, Clamp] = {}
        # A stable sort: without ties this is the dependency order.
        for g in sorted(groups, key=lambda grp: grp.tied_to is not None):
            current = len(kept_idx[g.name])
            if g.tied_to is not None:
                # A tie exists because the model needs equal widths (e.g. a Segformer sr conv and its input):
                # follow the leader's kept channels, not its ratio, so guards and rounding cannot split them.
                keep = _follow(len(kept_idx[g.tied_to]), by_name[g.tied_to].channels, g.channels)
            else:
                keep, clamp = kept_channels(g.name, g.channels, 1.0 - targets[g.name] / g.channels, self.guards, g.first_layer)
                if clamp is not None:
                    clamps[g.name] = clamp
            if keep >= current:
                continue
            if g.heads is not None:
                drop = _attention_drop(kept_idx[g.name], scores[g.name], keep, g.channels, g.heads, g.name)
            else:
                order = torch.argsort(scores[g.name], stable=True)
                drop = sorted(int(i) for i in order[: current - keep])
            if not drop:
                continue
            root, handler = raw[g.name]
            graph.get_pruning_group(root, handler, idxs=drop).prune()
            drop_set = set(drop)
            kept_idx[g.name] = [orig for pos, orig in enumerate(kept_idx[g.name]) if pos not in drop_set]
        return clamps

    def _attention_members(self, model: nn.Module, raw_groups: Sequence[tuple[str, nn.Module, Any, Any]]) -> dict[str, list[nn.Module]]:
        """Group name -> the attention projections (keys of ``num_heads``) whose output channels it holds."""
        head_map = self._head_map(model)
        if not head_map:
            return {}
        out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        found: dict[str, list[nn.Module]] = {}
        for name, _root, _handler, group in raw_groups:
            modules = [item.dep.target.module for item in group if item.dep.handler in out_handlers and item.dep.target.module in head_map]
            if modules:
                found[name] = list(dict.fromkeys(modules))
        return found

    def _finish(
        self,
        model: nn.Module,
        groups: Sequence[Group],
        kept_idx: Mapping[str, Sequence[int]],
        attention: Mapping[str, Sequence[nn.Module]],
    ) -> dict[str, int]:
        """Kept heads per attention module; runs the ``after_pruning`` hook (with them when it takes ``heads``)."""
        names = _module_names(model)
        by_module: dict[nn.Module, int] = {}
        for g in groups:
            if g.heads is None:
                continue
            kept_heads, _width = head_layout(kept_idx[g.name], g.channels, g.heads, g.name)
            for module in attention.get(g.name, []):
                by_module[module] = kept_heads
        if self._after_pruning is not None:
            if _takes_heads(self._after_pruning):
                self._after_pruning(model, heads=dict(by_module))
            else:
                self._after_pruning(model)
        return {names.get(module, "?"): h for module, h in by_module.items()}

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
            macs, params = tp.utils.count_ops_and_params(model, self._input_for(model))
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
        raw_groups = self._raw_groups(model, graph)
        raw = {name: (root, handler) for name, root, handler, _ in raw_groups}
        attention = self._attention_members(model, raw_groups)
        unknown = sorted(set(kept_indices) - set(by_name))
        if unknown:
            raise PruningError(f"group(s) {', '.join(unknown)} do not exist in this model; its groups are {', '.join(by_name)}")
        kept_idx = {}
        for g in groups:  # check everything before pruning anything
            idx = sorted(int(i) for i in kept_indices.get(g.name, range(g.channels)))
            if len(set(idx)) != len(idx) or not idx or idx[0] < 0 or idx[-1] >= g.channels:
                raise PruningError(
                    f"group {g.name}: kept_indices must be distinct channel numbers in [0, {g.channels}) and not empty"
                )
            if g.heads is not None:
                head_layout(idx, g.channels, g.heads, g.name)
            kept_idx[g.name] = idx
        for g in groups:
            if g.tied_to is not None:
                leader = by_name[g.tied_to]
                want = _follow(len(kept_idx[leader.name]), leader.channels, g.channels)
                if len(kept_idx[g.name]) != want:
                    raise PruningError(
                        f"group {g.name}: keeps {len(kept_idx[g.name])} channels but is tied to {leader.name}, "
                        f"which keeps {len(kept_idx[leader.name])}; tied groups must keep {want}"
                    )
        for g in groups:
            drop = sorted(set(range(g.channels)) - set(kept_idx[g.name]))
            if drop:
                root, handler = raw[g.name]
                graph.get_pruning_group(root, handler, idxs=drop).prune()
        heads = self._finish(model, groups, kept_idx, attention)
        macs, params = self._count(model)
        return PruneResult(
            model=model,
            groups=groups,
            kept={name: len(idx) for name, idx in kept_idx.items()},
            kept_indices=kept_idx,
            requested={g.name: 1.0 - len(kept_idx[g.name]) / g.channels for g in groups},
            macs=macs,
            params=params,
            heads=heads,
        )
