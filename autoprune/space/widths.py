"""The search space in widths: per group, the kept-channel counts it can reach (pure: no torch, no database).

A group of ``C`` channels can only end with certain widths: torch-pruning's rounding down to a multiple of
``round_to`` and the guards' floors (:mod:`autoprune.pruning.guards`) decide which; an untouched group keeps
all ``C`` even when ``C`` is no multiple of ``round_to``.  The search draws one of those widths per group
(tied followers follow their leader), from the narrower to the wider of the baselines' widths, widened by
``margin`` reachable widths on each side, and requests it from the pruner as the ratio ``1 - width / C``
(:func:`autoprune.pruning.guards.kept_channels` maps it back to exactly that width).

Example: a 24-channel group with ``round_to`` 16 reaches 16 and 24 channels; with both baselines at 16 and
a margin of one width, the group searches both::

    >>> from autoprune.pruning.guards import GuardSettings
    >>> settings = GuardSettings(min_channels=8, min_fraction=0.1, round_to=16)
    >>> sorted(reachable_widths(24, settings))
    [16, 24]
    >>> g = group_widths(24, settings, targets=[16, 16], margin=1)
    >>> g.widths, kept_channels("g", 24, g.ratio(16), settings)
    ((16, 24), (16, None))
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from autoprune.pruning.guards import GuardSettings
from autoprune.pruning.guards import kept_channels

# Study attribute saying how trials draw widths: "ordered" (an integer grid per group); absent in studies
# made before, whose trials drew one category per width (a parameter keeps its distribution for a study's life).
WIDTH_PARAMS_ATTR = "width_params"

# Maps the width the guards allow to the width the pruner ends with (e.g. whole attention heads); identity
# when None.
Plan = Callable[[int], int]


class GroupLike(Protocol):
    """What the width space needs of a group (:class:`autoprune.pruning.engine.Group` has it)."""

    name: str
    channels: int
    first_layer: bool
    tied_to: str | None


@dataclass(frozen=True)
class GroupShape:
    """A plain :class:`GroupLike` (for tests and readers without torch)."""

    name: str
    channels: int
    first_layer: bool = False
    tied_to: str | None = None


@dataclass(frozen=True)
class GroupWidths:
    """The widths one group (or one tie of groups, by its leader) may take.

    Attributes:
        channels: the group's original channels.
        widths: the searched kept-channel counts, ascending.
        ratios: for each width, the ratio to request from the pruner to end with exactly that width.
    """

    channels: int
    widths: tuple[int, ...]
    ratios: tuple[float, ...]

    def ratio(self, width: int) -> float:
        """The ratio that prunes the group to ``width`` channels (a width outside the space raises)."""
        try:
            return self.ratios[self.widths.index(int(width))]
        except ValueError:
            raise ValueError(f"{width} channels is not one of the searched widths {list(self.widths)}") from None

    def grid(self) -> tuple[int, int, int]:
        """``(low, high, step)`` of an ordered integer grid that holds every width (step: the widths' common
        spacing), for samplers that learn from order: a width's neighbours are the widths around it.

        Example:
            >>> GroupWidths(100, (80, 88, 96, 100), (0.2, 0.12, 0.04, 0.0)).grid()
            (80, 100, 4)
        """
        lo, hi = self.widths[0], self.widths[-1]
        step = 0
        for a, b in itertools.pairwise(self.widths):
            step = math.gcd(step, b - a)
        return lo, hi, max(step, 1)

    def snap(self, value: int) -> int:
        """The searched width nearest to a grid value (ties: the wider); a width maps to itself.

        Example:
            >>> GroupWidths(100, (80, 88, 96, 100), (0.2, 0.12, 0.04, 0.0)).snap(84)
            88
        """
        return min(self.widths, key=lambda w: (abs(w - value), -w))

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "widths": list(self.widths), "ratios": list(self.ratios)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupWidths:
        return cls(int(data["channels"]), tuple(int(w) for w in data["widths"]), tuple(float(r) for r in data["ratios"]))


def width_ratio(width: int, channels: int) -> float:
    """The ratio that asks for ``width`` of ``channels`` channels."""
    return 1.0 - width / channels


def reachable_widths(channels: int, settings: GuardSettings, first_layer: bool = False, plan: Plan | None = None) -> dict[int, int]:
    """Every width a group can end with, mapped to the width to request for it.

    Args:
        channels: the group's original channels.
        settings: the guards (floors, first-layer limit, ``round_to``).
        first_layer: whether the group holds the network's first layer.
        plan: what the pruner makes of a guarded width (None: keeps it as is).

    Returns:
        ``{final width: requested width}``; without a plan every width maps to itself.

    Example:
        >>> reachable_widths(40, GuardSettings(min_channels=8, min_fraction=0.1, round_to=16))
        {16: 16, 32: 32, 40: 40}
    """
    out: dict[int, int] = {}
    for k in range(channels, -1, -1):  # widest first: a plan's width keeps the widest request that gives it
        keep, _clamp = kept_channels("", channels, width_ratio(k, channels), settings, first_layer)
        final = plan(keep) if plan is not None else keep
        if final not in out or keep == final:
            out[final] = keep
    return dict(sorted(out.items()))


def group_widths(
    channels: int,
    settings: GuardSettings,
    targets: Sequence[int],
    margin: int | None,
    first_layer: bool = False,
    plan: Plan | None = None,
) -> GroupWidths:
    """The widths searched for one group.

    Args:
        channels: the group's original channels.
        settings: the guards.
        targets: the baselines' widths of the group (none: the untouched width).
        margin: reachable widths added on each side of the targets' span (None: every reachable width).
        first_layer: whether the group holds the network's first layer.
        plan: what the pruner makes of a guarded width (None: keeps it).

    Returns:
        The :class:`GroupWidths`; every target is inside, even one the guards would not reach today.
    """
    reach = reachable_widths(channels, settings, first_layer, plan)
    wanted = sorted({int(t) for t in targets} or {channels})
    for t in wanted:
        reach.setdefault(t, t)
    widths = sorted(reach)
    if margin is not None:
        low = max(0, widths.index(wanted[0]) - margin)
        high = widths.index(wanted[-1]) + margin
        widths = widths[low : high + 1]
    return GroupWidths(channels, tuple(widths), tuple(width_ratio(reach[w], channels) for w in widths))


def width_space(
    groups: Sequence[GroupLike],
    settings: GuardSettings,
    baselines: Sequence[Mapping[str, int]],
    margin: int | None,
    plans: Mapping[str, Plan] | None = None,
) -> dict[str, GroupWidths]:
    """Per searched group (tie followers excluded: they follow their leader), the widths to search.

    Args:
        groups: the model's groups.
        settings: the guards.
        baselines: kept channels per group of each baseline the space must contain (the best uniform and
            global sweep points).
        margin: reachable widths added on each side (None: every reachable width).
        plans: group name -> what the pruner makes of a guarded width (e.g. whole attention heads).

    Returns:
        ``{group name: GroupWidths}`` in the groups' order.

    Example:
        >>> s = GuardSettings(min_channels=8, min_fraction=0.1, round_to=8)
        >>> gs = [GroupShape("a", 32), GroupShape("b", 32, tied_to="a")]
        >>> {k: v.widths for k, v in width_space(gs, s, [{"a": 16, "b": 16}, {"a": 24, "b": 24}], 0).items()}
        {'a': (16, 24)}
    """
    plans = plans or {}
    space = {}
    for g in groups:
        if g.tied_to is not None:
            continue
        targets = [int(b[g.name]) for b in baselines if g.name in b]
        space[g.name] = group_widths(g.channels, settings, targets, margin, g.first_layer, plans.get(g.name))
    return space


def space_to_attr(space: Mapping[str, GroupWidths]) -> dict[str, dict[str, Any]]:
    """The space as stored in the study's ``search_space`` attribute (plain JSON)."""
    return {name: g.as_dict() for name, g in space.items()}


def space_from_attr(data: Mapping[str, Any]) -> dict[str, GroupWidths]:
    """The space read back from the study's ``search_space`` attribute."""
    return {name: GroupWidths.from_dict(g) for name, g in data.items()}


def ratios_for(space: Mapping[str, GroupWidths], widths: Mapping[str, int]) -> dict[str, float]:
    """The per-group ratios that prune every searched group to its width in ``widths``."""
    return {name: g.ratio(widths[name]) for name, g in space.items()}


def ratios_for_kept(space: Mapping[str, GroupWidths], kept: Mapping[str, int]) -> dict[str, float]:
    """The per-group ratios that rebuild the kept channels a trial recorded (:func:`ratios_for` where a width
    is searched; ``1 - width / C`` for one outside the space; a group ``kept`` does not name keeps all).

    Example:
        >>> space = {"a": GroupWidths(32, (16, 24), (0.5, 0.25)), "b": GroupWidths(16, (8, 16), (0.5, 0.0))}
        >>> ratios_for_kept(space, {"a": 24, "b": 16, "a.follower": 24}), ratios_for_kept(space, {"a": 32})
        ({'a': 0.25, 'b': 0.0}, {'a': 0.0, 'b': 0.0})
    """
    widths = {name: int(kept.get(name, g.channels)) for name, g in space.items()}
    searched = ratios_for({n: g for n, g in space.items() if widths[n] in g.widths}, widths)
    return {name: searched.get(name, width_ratio(widths[name], g.channels)) for name, g in space.items()}


def space_bounds(space: Mapping[str, GroupWidths], groups: Iterable[GroupLike]) -> dict[str, tuple[float, float]]:
    """Per group (followers: their leader's), the ``(low, high)`` ratios the space spans, for readers of bounds."""
    bounds = {}
    for g in groups:
        widths = space.get(g.tied_to or g.name)
        if widths is not None:
            bounds[g.name] = (round(width_ratio(widths.widths[-1], widths.channels), 6), round(width_ratio(widths.widths[0], widths.channels), 6))
    return bounds


def nearest_widths(space: Mapping[str, GroupWidths], ratios: Mapping[str, float]) -> dict[str, int]:
    """Per searched group, the width nearest to ``ratios`` (default 0: unpruned); ties: the wider.

    Example:
        >>> nearest_widths({"a": GroupWidths(32, (8, 16, 24, 32), (0.75, 0.5, 0.25, 0.0))}, {"a": 0.3})
        {'a': 24}
    """
    out = {}
    for name, g in space.items():
        want = g.channels * (1.0 - ratios.get(name, 0.0))
        out[name] = min(g.widths, key=lambda w: (abs(w - want), -w))
    return out


def channels_key(widths: Mapping[str, int]) -> str:
    """A canonical text key of a channel vector (same key: same architecture).

    Example:
        >>> channels_key({"b": 16, "a": 24})
        '{"a":24,"b":16}'
    """
    return json.dumps({k: int(widths[k]) for k in sorted(widths)}, separators=(",", ":"))


def row_channels_key(row: Mapping[str, Any]) -> str | None:
    """The :func:`channels_key` of a trial-table row's ``channels:<group>`` columns; ``None`` when it has none.

    Rows with the same key are twins: the same architecture, whatever trial or baseline produced them.

    Example:
        >>> row_channels_key({"number": 3, "channels:b": 16.0, "channels:a": 24, "channels:c": float("nan")})
        '{"a":24,"b":16}'
    """
    kept = {str(k)[len("channels:"):]: v for k, v in row.items() if str(k).startswith("channels:")}
    kept = {k: v for k, v in kept.items() if not _missing(v)}
    return channels_key(kept) if kept else None


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (whose comparisons are neither true nor false)."""
    try:
        return value is None or bool(value != value)
    except TypeError:
        return True


def in_space(space: Mapping[str, GroupWidths], widths: Mapping[str, int]) -> bool:
    """Whether ``widths`` names every searched group with one of its searched widths."""
    return all(name in widths and int(widths[name]) in g.widths for name, g in space.items())


__all__ = [
    "WIDTH_PARAMS_ATTR",
    "GroupShape",
    "GroupWidths",
    "channels_key",
    "group_widths",
    "in_space",
    "nearest_widths",
    "ratios_for",
    "ratios_for_kept",
    "reachable_widths",
    "row_channels_key",
    "space_bounds",
    "space_from_attr",
    "space_to_attr",
    "width_ratio",
    "width_space",
]
