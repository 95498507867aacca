"""Schemas of the JSON files autoprune writes in one stage and reads back in a later one.

Each file is checked at the one place it is read (:func:`autoprune.jsonfile.read_model`), so a hand-edited,
foreign or damaged file is refused with a message naming the file, the field and the fix instead of failing
later with a ``TypeError`` deep in a stage.  Numbers are bounded where a wild value would make a later stage
misbehave (a metric that is not finite, a ratio outside [0, 1), a bound pair that is not a pair).

The architecture JSON has its own published JSON Schema (``schemas/architecture.schema.json``); the study YAML
is :class:`autoprune.config.StudyConfig`.

Example:
    >>> BaseMeta.model_validate({"sha256": "ab" * 32, "val_metric": 0.9}).val_metric
    0.9
    >>> RatiosFile.model_validate({"layer1": 0.25}).root
    {'layer1': 0.25}
"""

from __future__ import annotations

import math
from typing import Annotated
from typing import Any
from typing import Literal

from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import RootModel
from pydantic import StringConstraints
from pydantic import field_validator

# Finite numbers only: a NaN or an infinity read back would poison every comparison made with it.
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


def _estimate(value: float) -> float:
    if not (math.isnan(value) or 0.0 <= value < math.inf):
        raise ValueError(f"must be a finite number >= 0 (or NaN: not estimated), got {value}")
    return value


def _ratio(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {value}")
    return value


Ratio = Annotated[float, AfterValidator(_ratio)]
# A standard error or spread that could not be computed is written as NaN (json's default); read back as such.
Estimate = Annotated[float, AfterValidator(_estimate)]
Count = Annotated[int, Field(ge=0, le=2**62)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class _File(BaseModel):
    """Known fields are checked; fields a newer autoprune adds are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow", strict=False)


class BaseMeta(_File):
    """``base.json`` beside the base checkpoint: what training it measured."""

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    val_metric: Finite | None = None
    val_stderr: Estimate | None = None
    trained_seconds: NonNegative | None = None


class SweepPointRow(_File):
    """One point of a baseline sweep (:class:`autoprune.space.bounds.SweepPoint`)."""

    kind: Literal["uniform", "global"]
    ratio: Ratio
    metric: Finite
    drop: Finite
    ratios: dict[GroupName, Ratio]
    speedup: Positive | None = None
    speedup_spread: Estimate | None = None
    latency_ms: Positive | None = None
    metric_stderr: Estimate | None = None
    drop_stderr: Estimate | None = None
    macs: Count | None = None
    params: Count | None = None
    channels: dict[GroupName, Count] = Field(default_factory=dict)
    clamps: list[str] = Field(default_factory=list)
    feasible: bool | None = None
    latency_noisy: bool | None = None
    metric_after_bn: Finite | None = None
    recovery: dict[str, Any] = Field(default_factory=dict)


class RecipeRow(_File):
    """One recovery recipe tried on the probe (:class:`autoprune.trial.recipe.RecipeResult`)."""

    lr: Positive
    epochs: Positive
    steps: Count
    metric: Finite
    stderr: Estimate
    metric_after_bn: Finite | None = None
    seconds: NonNegative = 0.0


class CalibrationRecord(_File):
    """``recovery-calibration.json``: the recipes tried, the one chosen, and what it must match to be reused
    (``identity``; the copy kept in ``baselines.json`` has none)."""

    probe_ratio: Ratio
    results: list[RecipeRow] = Field(min_length=1, max_length=10_000)
    chosen: RecipeRow
    base_metric: Finite
    max_drop: Ratio
    metric_name: Name
    metric_direction: Literal["maximize", "minimize"]
    identity: dict[str, Any] | None = None


class BaselinesRecovery(_File):
    """The recovery every sweep point got: the recipe, and the calibration it came from."""

    recipe: dict[str, Any] = Field(default_factory=dict)
    calibration: CalibrationRecord | None = None


class BaselinesFile(_File):
    """``baselines.json``: both sweeps, the ratio bounds they give and the base figures they were measured against."""

    uniform: list[SweepPointRow]
    global_: list[SweepPointRow] = Field(alias="global")
    bounds: dict[GroupName, tuple[Ratio, Ratio]]
    base_metric: Finite
    base_metric_stderr: Estimate = 0.0
    max_drop: Ratio
    margin: NonNegative = 0.0
    round_to: Annotated[int, Field(ge=1, le=2**20)] = 1
    recovery: BaselinesRecovery | None = None

    @field_validator("bounds")
    @classmethod
    def _ordered_bounds(cls, bounds: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in bounds.items():
            if low > high:
                raise ValueError(f"bounds of group {name!r} are [{low}, {high}]: the low ratio is above the high one")
        return bounds


class CachedTiming(_File):
    """One row of the latency cache: the figures a trial reads back instead of timing again."""

    speedup: Positive
    speedup_spread: Estimate
    latency_ms: Positive
    base_latency_ms: Positive
    noisy: bool


class RatiosFile(RootModel[dict[GroupName, Ratio]]):
    """A ratios file for ``autoprune prune --ratios``: ``{group name: ratio in [0, 1)}``."""

    root: Annotated[dict[GroupName, Ratio], Field(min_length=1, max_length=100_000)]


__all__ = ["BaseMeta", "BaselinesFile", "BaselinesRecovery", "CachedTiming", "CalibrationRecord", "RatiosFile", "RecipeRow", "SweepPointRow"]
