"""Guards from the pruning guidance, as pure arithmetic on channel counts (no torch).

- No group falls below a floor: ``max(min_channels, ceil(min_fraction * C))`` (no 256-1-256 bottlenecks).
- The first layer keeps at least ``1 - first_layer_max_ratio`` of its channels.
- Kept channels are rounded *down* to a multiple of ``round_to`` (ONNX Runtime's channel blocks), like
  torch-pruning, but never to zero: a count torch-pruning would silently ignore is clamped and reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from dataclasses import dataclass


@dataclass(frozen=True)
class GuardSettings:
    """Settings of the guards (mirrors the ``pruning`` section of a study config)."""

    min_channels: int = 8
    min_fraction: float = 0.1
    first_layer_max_ratio: float = 0.5
    round_to: int = 1


@dataclass(frozen=True)
class Clamp:
    """A requested ratio that could not be applied as asked, and why."""

    group: str
    requested_ratio: float
    requested_channels: int
    applied_channels: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"group {self.group}: ratio {self.requested_ratio:.3f} asked for {self.requested_channels} channels, "
            f"kept {self.applied_channels} ({self.reason})"
        )


def min_keep(channels: int, settings: GuardSettings, first_layer: bool = False) -> int:
    """The fewest channels a group may keep."""
    floor = max(settings.min_channels, math.ceil(settings.min_fraction * channels))
    if first_layer:
        floor = max(floor, math.ceil(channels * (1.0 - settings.first_layer_max_ratio) - 1e-9))
    return min(channels, floor)


def max_ratio(channels: int, settings: GuardSettings, first_layer: bool = False) -> float:
    """The largest ratio the guards allow for a group of ``channels`` channels."""
    keep = _round_up(min_keep(channels, settings, first_layer), settings.round_to, channels)
    return max(0.0, 1.0 - keep / channels)


def _round_up(keep: int, round_to: int, channels: int) -> int:
    if round_to <= 1:
        return keep
    rounded = math.ceil(keep / round_to) * round_to
    return rounded if rounded <= channels else channels


def kept_channels(
    name: str, channels: int, ratio: float, settings: GuardSettings, first_layer: bool = False
) -> tuple[int, Clamp | None]:
    """Channels a group keeps at ``ratio``, after rounding and the guards.

    Args:
        name: group name (for the clamp report).
        channels: the group's original channels.
        ratio: requested share of channels to remove.
        settings: guard settings.
        first_layer: whether the group holds the network's first layer.

    Returns:
        ``(kept, clamp)``; ``clamp`` is None when the ratio was applied as asked (up to rounding).
    """
    if not 0.0 <= ratio < 1.0:
        requested = 0 if ratio >= 1.0 else channels
    else:
        # The tolerance absorbs float error of ratios on the channel grid (k * round_to / C, stored with 9 digits).
        requested = int(channels * (1.0 - ratio) + 1e-4)
    keep = requested
    # An untouched group keeps its channels even when they are not a multiple of round_to.
    if settings.round_to > 1 and keep < channels:
        keep = (keep // settings.round_to) * settings.round_to
    floor = min_keep(channels, settings, first_layer)
    if keep >= floor and keep > 0:
        return keep, None
    applied = _round_up(floor, settings.round_to, channels)
    if requested == 0:
        reason = "would remove every channel, which torch-pruning silently ignores"
    elif keep == 0:
        reason = f"rounding {requested} down to a multiple of round_to={settings.round_to} would remove every channel"
    elif first_layer and floor > max(settings.min_channels, math.ceil(settings.min_fraction * channels)):
        reason = f"the first layer keeps at least {1 - settings.first_layer_max_ratio:.0%} of its channels"
    else:
        reason = f"below the floor of {floor} channels (min_channels={settings.min_channels}, min_fraction={settings.min_fraction})"
    return applied, Clamp(name, float(ratio), requested, applied, reason)
