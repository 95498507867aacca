"""The figures a summary states about one trial (:class:`TrialFigures`), one trial left out (:class:`LeftOut`)
and one baseline sweep point (:class:`BaselinePoint`).

Trial figures are built from a row of the analysis table (:func:`autoprune.analysis.frame.trials_frame`)
here and only here, and read by attribute everywhere else; ``to_json()`` is what ``summary.json`` (and
``autoprune pareto --json``) holds for them.  Pure: no torch, no database.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from autoprune.analysis.pareto import as_float
from autoprune.search.study_attrs import CONFIRMED_PREFIX


def plain(value: Any) -> Any:
    """A JSON-friendly scalar: NaN and pandas NA become ``None``, numpy scalars Python ones.

    Example:
        >>> plain(float("nan")), plain(pd.NA), plain(3)
        (None, None, 3)
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime.datetime)):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def prefixed(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A table row's ``<prefix><name>`` columns as ``{name: value}``, missing values left out.

    Example:
        >>> prefixed({"ratio:a": 0.5, "ratio:b": float("nan"), "drop": 0.1}, "ratio:")
        {'a': 0.5}
    """
    part = {str(k)[len(prefix):]: plain(v) for k, v in row.items() if str(k).startswith(prefix)}
    return {k: v for k, v in part.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class TrialFigures:
    """One trial as the summary states it: the chosen trial, the validation pick passed over, a front point.

    ``metric``, ``drop`` and ``speedup`` are finite (the analysis takes only complete trials with both
    objectives); the other figures are ``None`` where the trial recorded none.  ``feasible`` is judged at
    the summary's budget, ``chosen`` says whether it is the summary's chosen trial; ``ratios``, ``channels``
    and ``confirmed`` (``autoprune confirm``'s figures) are ``{name: value}`` or ``None``.

    Example:
        >>> row = {"number": 3, "state": "COMPLETE", "metric": 0.97, "drop": 0.004, "speedup": 1.8, "ratio:a": 0.5}
        >>> rec = TrialFigures.from_row(row, max_drop=0.01, chosen_number=3)
        >>> rec.feasible, rec.chosen, rec.ratios, rec.to_json()["speedup"]
        (True, True, {'a': 0.5}, 1.8)
    """

    number: int
    state: str | None
    kind: str | None
    metric: float
    metric_stderr: float | None
    drop: float
    drop_stderr: float | None
    feasible: bool
    speedup: float
    speedup_spread: float | None
    speedup_searched: float | None
    timing: str | None
    latency_noisy: bool | None
    latency_ms: float | None
    macs: int | None
    params: int | None
    host_id: str | None
    speedup_host_id: str | None
    chosen: bool
    ratios: dict[str, float] | None
    channels: dict[str, int] | None
    confirmed: dict[str, Any] | None
    arch_artifact_id: str | None
    weights_artifact_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], max_drop: float, chosen_number: int | None) -> TrialFigures:
        """The figures of one analysis-table row, feasibility judged at ``max_drop``.

        Args:
            row: a row of the trial table (a choice's row or a front row), as a mapping.
            max_drop: the budget.
            chosen_number: the chosen trial's number (``None``: nothing is marked chosen).
        """
        number = plain(row.get("number"))
        own = {f.name: plain(row.get(f.name)) for f in dataclasses.fields(cls) if f.name in _ROW_KEYS}
        return cls(**own | {
            "feasible": bool(as_float(row.get("drop")) <= max_drop),
            "chosen": chosen_number is not None and number == chosen_number,
            "ratios": prefixed(row, "ratio:") or None,
            "channels": prefixed(row, "channels:") or None,
            "confirmed": prefixed(row, CONFIRMED_PREFIX) or None,
        })

    def confirmed_figure(self, key: str) -> Any:
        """One of the confirmed figures (``speedup``, ``selection_drop``, ...), ``None`` where not confirmed."""
        return (self.confirmed or {}).get(key)

    def to_json(self) -> dict[str, Any]:
        """The record as ``summary.json`` holds it (its fields, in order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# The fields of TrialFigures read as they are from the table row (the rest are judged or gathered).
_ROW_KEYS = frozenset(f.name for f in dataclasses.fields(TrialFigures)) - {
    "feasible", "chosen", "ratios", "channels", "confirmed"}


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """A complete trial the analysis left out because its timing did not settle (``summary.json``'s ``unsettled``).

    Example:
        >>> LeftOut.from_row({"number": 4, "speedup": 2.2, "speedup_spread": 0.3, "drop": 0.02}, 0.01).to_json()
        {'number': 4, 'speedup': 2.2, 'speedup_spread': 0.3, 'feasible': False}
    """

    number: int
    speedup: float | None
    speedup_spread: float | None
    feasible: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any], max_drop: float) -> LeftOut:
        """The left-out trial of one analysis-table row, feasibility judged at ``max_drop``."""
        return cls(number=plain(row["number"]), speedup=plain(row["speedup"]),
                   speedup_spread=plain(row.get("speedup_spread")), feasible=bool(as_float(row.get("drop")) <= max_drop))

    def to_json(self) -> dict[str, Any]:
        """The entry as ``summary.json`` holds it."""
        return dataclasses.asdict(self)


# The confirmed figures on the selection split that a baseline point may carry (its margin judged like a trial's).
SELECTION_KEYS = ("selection_drop", "selection_drop_stderr", "selection_z")


@dataclasses.dataclass(frozen=True)
class BaselinePoint:
    """One point of a baseline sweep as the summary states it (``baselines``, and ``best`` per kind).

    A sweep point is stored by the search (:class:`autoprune.space.bounds.SweepPoint`), judged on another
    host or re-timed by ``autoprune confirm``; which figures it carries depends on where it came from and on
    the version that stored it.  The figures the analysis reads are attributes (``None`` where absent);
    ``keys`` are the figures the point carries, in their order, and ``to_json()`` writes exactly those, the
    ones without an attribute (``clamps``, ``recovery``, ...) from ``other``.

    Example:
        >>> p = BaselinePoint.from_point({"kind": "uniform", "ratio": 0.3, "speedup": 1.5, "clamps": []})
        >>> p.ratio, p.drop, p.to_json()
        (0.3, None, {'kind': 'uniform', 'ratio': 0.3, 'speedup': 1.5, 'clamps': []})
    """

    keys: tuple[str, ...]
    kind: str | None = None
    ratio: float | None = None
    number: int | None = None
    metric: float | None = None
    metric_stderr: float | None = None
    drop: float | None = None
    drop_stderr: float | None = None
    speedup: float | None = None
    speedup_spread: float | None = None
    speedup_searched: float | None = None
    latency_ms: float | None = None
    latency_noisy: bool | None = None
    host_id: str | None = None
    macs: int | None = None
    params: int | None = None
    ratios: dict[str, float] | None = None
    channels: dict[str, int] | None = None
    timing: str | None = None
    selection_drop: float | None = None
    selection_drop_stderr: float | None = None
    selection_z: float | None = None
    other: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_point(cls, point: Mapping[str, Any]) -> BaselinePoint:
        """A stored or re-timed sweep point (a mapping of its figures), each value made JSON-friendly."""
        values = {str(k): plain(v) for k, v in point.items()}
        named = {k: v for k, v in values.items() if k in _POINT_ATTRS}
        return cls(keys=tuple(values), **named, other={k: v for k, v in values.items() if k not in _POINT_ATTRS})

    def selection_figures(self) -> dict[str, Any]:
        """The confirmed figures on the selection split the point carries (empty where it was not confirmed)."""
        return {k: getattr(self, k) for k in SELECTION_KEYS if k in self.keys}

    def confirmed_figures(self) -> dict[str, Any] | None:
        """The re-timing's figures (``speedup``, ``speedup_spread``, ``latency_ms`` and the selection split's) when
        the point is ``autoprune confirm``'s re-timing, shaped like a trial's ``confirmed``; else ``None``."""
        if self.timing != "confirmed":
            return None
        return {"speedup": self.speedup, "speedup_spread": self.speedup_spread, "latency_ms": self.latency_ms,
                **self.selection_figures()}

    def to_json(self) -> dict[str, Any]:
        """The point as ``summary.json`` holds it: the figures it carries, in their order."""
        return {k: getattr(self, k) if k in _POINT_ATTRS else self.other[k] for k in self.keys}


# The figures of a sweep point that BaselinePoint names as attributes.
_POINT_ATTRS = frozenset(f.name for f in dataclasses.fields(BaselinePoint)) - {"keys", "other"}
