"""Figures stored on the study after its trials finished, and the table columns that show them per trial.

Optuna refuses to change a finished trial (UpdateFinishedTrialError, in every storage), so what is measured
later lives in study user attrs, and this module alone names and parses them:

- ``confirmation`` (``autoprune confirm``): ``{"trials": {number: figures}, "twins": {number: number}, ...}``;
- ``timings:<host_id>`` (``autoprune retime``): ``{"trials": {number: timing}, "baselines": {kind: timing}, ...}``;
- ``final_test`` (``autoprune export``): the exported model on the test split;
- ``final`` (``autoprune finalize``): ``{"trials": {number: figures}, "baselines": {kind: figures}, ...}``.

The analysis table shows the first two as each trial's ``confirmed:<key>`` and ``timings:<host_id>:<key>``
columns (:func:`late_trial_attrs` gives them per trial).

Example:
    >>> timings_attr("h1"), timings_column("h1", "speedup"), confirmed_column("speedup")
    ('timings:h1', 'timings:h1:speedup', 'confirmed:speedup')
    >>> confirmed_figures({"number": 3, "confirmed:speedup": 2.0, "confirmed:noisy": None}, drop_missing=True)
    {'speedup': 2.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

CONFIRMATION_ATTR = "confirmation"
# The exported model's final report on the test split (autoprune export, autoprune.selection.final_test): read once,
# after the pick, reported beside the chosen trial when it is the one exported; it never chooses.
FINAL_TEST_ATTR = "final_test"
# The figures of 'autoprune finalize' (autoprune.selection.finalize).
FINAL_ATTR = "final"
TIMINGS_ATTR_PREFIX = "timings:"
# Table columns: a trial's confirmed figures, and its re-timings by host (the same prefix as the study attr).
CONFIRMED_PREFIX = "confirmed:"
TIMINGS_PREFIX = TIMINGS_ATTR_PREFIX
# The figures of one timing that a twin (same kept channels, :mod:`autoprune.analysis.twins`) shares with the
# trial ``confirm`` re-timed: one architecture, one speed.  Selection figures belong to each trial's own weights.
TWIN_SHARED_KEYS = ("host", "host_id", "speedup", "speedup_spread", "latency_ms", "base_latency_ms", "noisy",
                    "reproduced", "measured_at")
# The figures of a re-timing entry the table shows per host.
TIMINGS_COLUMN_KEYS = ("host", "speedup", "speedup_spread", "latency_ms", "noisy")


def timings_attr(host_id: str) -> str:
    """The study attr holding the re-timings made on ``host_id``."""
    return TIMINGS_ATTR_PREFIX + host_id


def timings_column(host_id: str, key: str) -> str:
    """The table column of a trial's re-timing figure ``key`` on ``host_id``."""
    return f"{TIMINGS_PREFIX}{host_id}:{key}"


def confirmed_column(key: str) -> str:
    """The table column of a trial's confirmed figure ``key``."""
    return CONFIRMED_PREFIX + key


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def confirmed_figures(row: Mapping[Any, Any], drop_missing: bool = False) -> dict[str, Any]:
    """The ``confirmed:*`` figures of a table row by their plain names (with ``drop_missing``: set ones only)."""
    return {
        str(k)[len(CONFIRMED_PREFIX):]: v
        for k, v in row.items()
        if str(k).startswith(CONFIRMED_PREFIX) and not (drop_missing and _missing(v))
    }


def confirmed_columns(columns: Iterable[Any]) -> list[str]:
    """The ``confirmed:*`` columns among ``columns``."""
    return [str(c) for c in columns if str(c).startswith(CONFIRMED_PREFIX)]


def timed_hosts(columns: Iterable[Any]) -> set[str]:
    """The hosts with ``timings:<host_id>:*`` columns among ``columns``."""
    return {str(c).split(":")[1] for c in columns if str(c).startswith(TIMINGS_PREFIX)}


def timings_row(timings: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's re-timings by host as its ``timings:<host_id>:<key>`` columns."""
    return {timings_column(hid, key): (entry or {}).get(key) for hid, entry in timings.items() for key in TIMINGS_COLUMN_KEYS}


def late_trial_attrs(study_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Per trial number, the ``confirmed`` figures and ``timings`` by host stored as study user attrs.

    Example:
        >>> late_trial_attrs({"timings:h1": {"trials": {"3": {"speedup": 2.0}}}})
        {3: {'timings': {'h1': {'speedup': 2.0}}}}
        >>> late_trial_attrs({"confirmation": {"trials": {"0": {"speedup": 2.0, "selection_drop": 0.01}}, "twins": {"4": 0}}})[4]
        {'confirmed': {'speedup': 2.0, 'twin_of': 0}}
    """
    out: dict[int, dict[str, Any]] = {}
    confirmation = study_attrs.get(CONFIRMATION_ATTR)
    if isinstance(confirmation, Mapping):
        trials = confirmation.get("trials") or {}
        for number, figures in trials.items():
            out.setdefault(int(number), {})["confirmed"] = dict(figures)
        for number, of in (confirmation.get("twins") or {}).items():
            timed = trials.get(str(of)) or {}
            shared = {k: timed[k] for k in TWIN_SHARED_KEYS if k in timed}
            out.setdefault(int(number), {})["confirmed"] = shared | {"twin_of": int(of)}
    for key, value in study_attrs.items():
        if key.startswith(TIMINGS_ATTR_PREFIX) and isinstance(value, Mapping):
            host = key[len(TIMINGS_ATTR_PREFIX) :]
            for number, entry in (value.get("trials") or {}).items():
                out.setdefault(int(number), {}).setdefault("timings", {})[host] = dict(entry)
    return out


def mapping_attr(study_attrs: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """A copy of the study attr ``name`` when it is a mapping, else None."""
    value = study_attrs.get(name)
    return dict(value) if isinstance(value, Mapping) else None


__all__ = [
    "CONFIRMATION_ATTR",
    "CONFIRMED_PREFIX",
    "FINAL_ATTR",
    "FINAL_TEST_ATTR",
    "TIMINGS_ATTR_PREFIX",
    "TIMINGS_PREFIX",
    "TWIN_SHARED_KEYS",
    "confirmed_column",
    "confirmed_columns",
    "confirmed_figures",
    "late_trial_attrs",
    "mapping_attr",
    "timed_hosts",
    "timings_attr",
    "timings_column",
    "timings_row",
]
