"""One trial's figures as a typed, versioned record: the only module that names a trial's user attributes.

Every writer (the objective, a duplicate, a sweep point's reuse, a screened or pruned candidate, the curve
pruner's bookkeeping) builds a :class:`TrialRecord` and stores it with :func:`write`; every reader (the
analysis table, the screening rules, the duplicate finder, export) turns a trial's user attrs back into one
with :meth:`TrialRecord.from_attrs`.  A trial is written in pieces as it runs (its kind and worker first,
its figures at the end), so every field is optional and :meth:`TrialRecord.to_attrs` stores the fields
that are set.

Versions: ``record_version`` is stored on each trial.  Version 1 is the layout before the attribute
existed (the same names): a trial without it reads as version 1, so studies made before load unchanged.
Attributes this version does not know are kept in :attr:`TrialRecord.extra` and written back as they were.

Example:
    >>> rec = TrialRecord(kind="search", metric=0.97, timing=Timing(speedup=2.0, noisy=False))
    >>> attrs = rec.to_attrs()
    >>> attrs["speedup"], attrs["latency_noisy"], attrs["record_version"]
    (2.0, False, 2)
    >>> TrialRecord.from_attrs(attrs) == rec
    True
    >>> TrialRecord.from_attrs({"metric": 0.9}).version  # written before the version attr
    1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from typing import Protocol

RECORD_VERSION = 2
VERSION_ATTR = "record_version"
# The channel vector a trial records right after sampling, before its evaluation (autoprune.search.duplicates).
KEY_ATTR = "channels_key"
# The trial a duplicate reused the figures of.
DUPLICATE_ATTR = "duplicate_of"
# The curve pruner's bookkeeping (autoprune.search.curves).
STATE_ATTR = "pruner_state"
# The proposal the sampler moved away from (autoprune.search.sampler): its vector was already held.
MOVED_ATTR = "moved_from"
# Prefix of the recovery report's figures (autoprune.trial.recovery.RecoveryReport).
RECOVERY_PREFIX = "recovery_"
# The user attr names of the Timing fields, where a trial's name differs from the field's.
_TIMING_ATTR_NAMES = {"noisy": "latency_noisy", "cached": "latency_cached", "blocks_run": "latency_blocks_run",
                      "repeats_run": "latency_repeats_run", "stopped_early": "latency_stopped_early"}
# The Timing fields that say how much of the timing ran (``latency.early_stop`` can end it before every block).
TIMING_EXTENT = ("blocks_run", "repeats_run", "stopped_early")


class _Settable(Protocol):
    """What :func:`write` needs of a trial (an ``optuna.Trial``; a fake in tests)."""

    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class Timing:
    """One interleaved timing of a candidate against the base model.

    Stored flat on a trial (``speedup``, ``latency_noisy``, ``latency_cached``, ...); a re-timing entry of
    ``autoprune retime`` / ``confirm`` names the flag ``noisy``.  ``blocks_run`` / ``repeats_run`` /
    ``stopped_early`` (stored as ``latency_blocks_run``, ...) say how much of the timing ran; timings
    made before they were recorded leave them unset.

    Example:
        >>> Timing.from_attrs({"speedup": 2.5, "latency_noisy": True}).noisy
        True
        >>> Timing.from_entry({"speedup": 2.5, "noisy": False}).noisy
        False
    """

    speedup: Any = None
    speedup_spread: Any = None
    speedup_interleaved: Any = None
    pooled_base_latency_ms: Any = None
    latency_ms: Any = None
    base_latency_ms: Any = None
    noisy: Any = None
    cached: Any = None
    host: Any = None
    host_id: Any = None
    blocks_run: Any = None
    repeats_run: Any = None
    stopped_early: Any = None

    def to_attrs(self) -> dict[str, Any]:
        """The trial's flat user attrs for this timing (unset fields left out)."""
        return {_TIMING_ATTR_NAMES.get(f.name, f.name): v for f, v in _set_fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Timing | None:
        """The timing stored flat on a trial, or None when it has none."""
        found = {name: attrs[a] for name, a in zip(_TIMING_FIELDS, TIMING_ATTRS, strict=True) if a in attrs}
        return cls(**found) if found else None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Timing:
        """A re-timing entry (``noisy`` by its own name); keys it does not name are ignored."""
        return cls(**{f.name: entry[f.name] for f in dataclasses.fields(cls) if f.name in entry})


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """Everything autoprune records on one trial (every field optional: a trial is written in pieces).

    Attributes:
        kind / worker / device: ``search``, ``uniform`` or ``global``; who ran it; where it was finetuned.
        surplus: closed unrun by the surplus guard.
        baseline_ratio: the sweep ratio an enqueued baseline repeats; ``sweep_point`` the point it reused.
        channels_key / duplicate_of: the channel vector; the trial whose figures a duplicate reused.
        metric ... feasible: the validation figures after the finetune, and the budget verdict.
        timing: the interleaved timing (:class:`Timing`).
        macs / params / channels / ratios / clamps: the pruned architecture.
        stage_seconds / sweep_stage_seconds: seconds per stage (this trial's; the reused sweep point's).
        metric_after_bn ... drop_after_bn: the figures after BN recalibration (screening).
        recovery_recipe / recovery: the recovery settings; the recovery report (unprefixed names).
        screened: why screening skipped the finetune.
        pruned_by / pruned_step / pruned_reason / calib_drop: where and why the curve pruner stopped it.
        pruner_state: the curve pruner's bookkeeping.
        moved_from: the sampler's proposal this trial was moved away from (another trial held its vector).
        arch_artifact_id / weights_artifact_id / onnx_artifact_id: the trial's stored files.
        timings: re-timings by host id stored on the trial itself (older studies; later ones are study attrs).
        confirmed: the ``autoprune confirm`` figures (a study attr, merged in by :func:`with_late`).
        version: the layout it was written in (1: before ``record_version`` existed).
        extra: attrs this version does not name, kept as they are.
    """

    kind: Any = None
    worker: Any = None
    device: Any = None
    surplus: Any = None
    baseline_ratio: Any = None
    channels_key: Any = None
    duplicate_of: Any = None
    sweep_point: Any = None
    metric: Any = None
    metric_stderr: Any = None
    metric_n: Any = None
    drop: Any = None
    drop_stderr: Any = None
    feasible: Any = None
    timing: Timing | None = None
    macs: Any = None
    params: Any = None
    channels: Any = None
    ratios: Any = None
    clamps: Any = None
    stage_seconds: Any = None
    sweep_stage_seconds: Any = None
    metric_after_bn: Any = None
    metric_after_bn_stderr: Any = None
    drop_after_bn: Any = None
    recovery_recipe: Any = None
    recovery: Mapping[str, Any] | None = None
    screened: Any = None
    pruned_by: Any = None
    pruned_step: Any = None
    pruned_reason: Any = None
    calib_drop: Any = None
    pruner_state: Any = None
    moved_from: Any = None
    arch_artifact_id: Any = None
    weights_artifact_id: Any = None
    onnx_artifact_id: Any = None
    timings: Mapping[str, Any] | None = None
    confirmed: Mapping[str, Any] | None = None
    version: int = RECORD_VERSION
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        """The user attrs to store: the set fields by their names, the timing flat, the recovery prefixed."""
        out: dict[str, Any] = {}
        for f, value in _set_fields(self):
            if f.name == "timing":
                out.update(value.to_attrs())
            elif f.name == "recovery":
                out.update(recovery_attrs(value))
            elif f.name == "version":
                out[VERSION_ATTR] = value
            elif f.name not in _NOT_STORED:
                out[f.name] = value
        return out | dict(self.extra)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """The record of a trial's user attrs (values as stored; a trial without a version is version 1)."""
        named = {f.name for f in dataclasses.fields(cls)} - _NOT_PLAIN
        taken = {k: v for k, v in attrs.items() if k in named}
        recovery = {k[len(RECOVERY_PREFIX):]: v for k, v in attrs.items() if k.startswith(RECOVERY_PREFIX) and k != "recovery_recipe"}
        timing = Timing.from_attrs(attrs)
        used = set(taken) | {RECOVERY_PREFIX + k for k in recovery} | (set(TIMING_ATTRS) & set(attrs)) | {VERSION_ATTR}
        return cls(
            **taken,
            timing=timing,
            recovery=recovery or None,
            version=int(attrs.get(VERSION_ATTR, 1)),
            extra={k: v for k, v in attrs.items() if k not in used},
        )

    @property
    def own_timing(self) -> Timing:
        """The trial's own timing (every field None when it has none)."""
        return self.timing or Timing()

    def scalars(self) -> dict[str, Any]:
        """The scalar figures the analysis table shows as columns (:data:`SCALAR_ATTRS`; None where unset)."""
        attrs = self.to_attrs()
        return {k: attrs.get(k) for k in SCALAR_ATTRS}

    def shared(self) -> TrialRecord:
        """What a duplicate copies: everything but the fields that belong to the trial that was evaluated."""
        cleared: dict[str, Any] = {name: None for name in _OWN_FIELDS}
        return dataclasses.replace(self, **cleared, version=RECORD_VERSION)


_TIMING_FIELDS = tuple(f.name for f in dataclasses.fields(Timing))
# The user attrs a trial stores its own timing under.
TIMING_ATTRS = tuple(_TIMING_ATTR_NAMES.get(name, name) for name in _TIMING_FIELDS)
# The scalar user attrs the analysis table copies as columns, in the order a reader wants them.
SCALAR_ATTRS = (
    "metric", "metric_stderr", "drop", "drop_stderr", "feasible", "speedup", "speedup_spread", "speedup_interleaved",
    "latency_ms", "base_latency_ms", "latency_noisy", "macs", "params", "host", "host_id", "worker", "kind",
    "baseline_ratio", "arch_artifact_id", "weights_artifact_id", "metric_after_bn", "screened", "duplicate_of",
)
# Fields with their own storage (flat, prefixed, versioned), or none at all (figures stored as study attrs).
_NOT_PLAIN = frozenset({"timing", "recovery", "version", "extra"})
_NOT_STORED = frozenset({"extra", "confirmed"})
# Fields a duplicate keeps as its own rather than copying them from the trial it reuses: a pruner's bookkeeping
# and a sweep point's origin belong to the trial that was evaluated, not to its duplicates.
_OWN_FIELDS = ("kind", "worker", "surplus", "baseline_ratio", "channels_key", "duplicate_of", "stage_seconds",
               "pruner_state", "sweep_point", "sweep_stage_seconds")


def _set_fields(record: Any) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The dataclass fields of ``record`` that are set (not None), with their values."""
    return [(f, v) for f in dataclasses.fields(record) if (v := getattr(record, f.name)) is not None]


def recovery_attrs(figures: Mapping[str, Any]) -> dict[str, Any]:
    """A recovery report's figures (:meth:`autoprune.trial.recovery.RecoveryReport.figures`) by their stored names."""
    return {RECOVERY_PREFIX + k: v for k, v in figures.items()}


def write(trial: _Settable, record: TrialRecord) -> None:
    """Store ``record`` on a running trial, one user attr per set field (the version with it)."""
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)


def write_stored(storage: Any, trial_id: int, record: TrialRecord) -> None:
    """Store ``record`` on a trial through its storage (where only a ``FrozenTrial`` is at hand: a sampler)."""
    for key, value in record.to_attrs().items():
        storage.set_trial_user_attr(trial_id, key, value)


def is_blank(trial: Any) -> bool:
    """Whether ``trial`` carries no record yet (a fresh trial; enqueued ones and retries carry theirs)."""
    return not trial.user_attrs


def read(trial: Any) -> TrialRecord:
    """The record of a trial (an ``optuna.Trial`` or ``FrozenTrial``)."""
    return TrialRecord.from_attrs(trial.user_attrs)


def is_duplicate(trial: Any) -> bool:
    """Whether ``trial`` reused another trial's figures."""
    return DUPLICATE_ATTR in trial.user_attrs


def has_key(trial: Any) -> bool:
    """Whether ``trial`` recorded its channel vector yet."""
    return KEY_ATTR in trial.user_attrs


def with_late(record: TrialRecord, late: Mapping[str, Any] | None) -> TrialRecord:
    """``record`` with its late figures (:func:`autoprune.search.study_attrs.late_trial_attrs`) merged in;
    they win: they are the newer measurement."""
    if not late:
        return record
    changes: dict[str, Any] = {}
    if "confirmed" in late:
        changes["confirmed"] = late["confirmed"]
    if "timings" in late:
        changes["timings"] = {**(record.timings or {}), **late["timings"]}
    return dataclasses.replace(record, **changes)


__all__ = [
    "DUPLICATE_ATTR",
    "KEY_ATTR",
    "MOVED_ATTR",
    "RECORD_VERSION",
    "SCALAR_ATTRS",
    "TIMING_ATTRS",
    "STATE_ATTR",
    "VERSION_ATTR",
    "Timing",
    "TrialRecord",
    "has_key",
    "is_blank",
    "is_duplicate",
    "read",
    "recovery_attrs",
    "with_late",
    "write",
    "write_stored",
]
