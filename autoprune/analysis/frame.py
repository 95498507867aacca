"""Read a search study into a trial table and a small record of its settings, without writing anything.

Workers may be adding trials while a user analyses the study, so storages are opened read-only in
practice: no table creation, short read transactions (SQLite readers wait for a writer instead of failing,
and never hold a lock between reads), and the connection pool is closed when loading is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend

from autoprune.analysis.pareto import as_float
from autoprune.analysis.pareto import unsettled
from autoprune.errors import ConfigError
from autoprune.errors import StorageError
from autoprune.redact import rdb_target
from autoprune.redact import redact_text
from autoprune.redact import redact_url
from autoprune.search.record import SCALAR_ATTRS
from autoprune.search.record import Timing
from autoprune.search.record import TrialRecord
from autoprune.search.record import read
from autoprune.search.record import with_late
from autoprune.search.storage import journal_path
from autoprune.search.storage import server_connect_args
from autoprune.search.study_attrs import CONFIRMATION_ATTR
from autoprune.search.study_attrs import FINAL_ATTR
from autoprune.search.study_attrs import FINAL_TEST_ATTR
from autoprune.search.study_attrs import confirmed_column
from autoprune.search.study_attrs import late_trial_attrs
from autoprune.search.study_attrs import mapping_attr
from autoprune.search.study_attrs import timed_hosts
from autoprune.search.study_attrs import timings_attr
from autoprune.search.study_attrs import timings_row

# Columns ``curve:<finetune step>``: a trial's finetune curve (its Optuna intermediate values).
CURVE_PREFIX = "curve:"
_TIMING_FIELDS = ("speedup", "speedup_spread", "latency_ms", "base_latency_ms")
_NUMERIC_COLUMNS = (
    "metric",
    "metric_stderr",
    "drop",
    "drop_stderr",
    "speedup",
    "speedup_spread",
    "speedup_interleaved",
    "latency_ms",
    "base_latency_ms",
    "macs",
    "params",
    "constraint_drop",
    "metric_after_bn",
)
_INT_COLUMNS = ("number", "macs", "params")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def redact(value: Any) -> Any:
    """A copy of a JSON-like value (a config dict) with every URL password replaced by ``***``.

    Example:
        >>> redact({"storage": "postgresql://me:pw@db/s", "trials": 50})
        {'storage': 'postgresql://me:***@db/s', 'trials': 50}
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """What the analysis needs to know about a study besides its trials.

    Example:
        >>> info = StudyInfo(name="demo", metric_name="accuracy", base_metric=0.98, max_drop=0.01)
        >>> info.budget_metric
        0.97
    """

    name: str
    storage: str = ""
    metric_name: str = "metric"
    metric_direction: str = "maximize"
    base_metric: float = math.nan
    base_metric_stderr: float = math.nan
    max_drop: float | None = None
    bounds: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    baselines: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    round_to: int | None = None
    n_val: int | None = None
    host_id: str | None = None
    recovery_calibration: dict[str, Any] | None = None  # the recipe calibration the study's recovery came from
    confirmation: dict[str, Any] | None = None  # the study attr ``confirmation`` (autoprune confirm), if any
    final_test: dict[str, Any] | None = None  # the study attr ``final_test``: the exported model on the test split
    final: dict[str, Any] | None = None  # the study attr ``final`` (autoprune finalize), if any

    @property
    def cv_threshold(self) -> float | None:
        """The study's ``latency.cv_threshold`` (``None`` when its config does not record one)."""
        value = as_float((self.config.get("latency") or {}).get("cv_threshold"))
        return value if math.isfinite(value) else None

    @property
    def budget_metric(self) -> float:
        """The worst metric still within the study's ``max_drop`` (NaN when either is unknown)."""
        return self.metric_at_drop(self.max_drop)

    def metric_at_drop(self, drop: float | None) -> float:
        """The metric value whose drop from the base is ``drop``, in the metric's own direction."""
        if drop is None or not math.isfinite(self.base_metric):
            return math.nan
        sign = 1.0 if self.metric_direction == "maximize" else -1.0
        return round(self.base_metric - sign * drop, 12)

    @property
    def group_names(self) -> list[str]:
        """Group names in the study's order (the order of ``groups``, then of ``bounds``)."""
        names = [str(g["name"]) for g in self.groups if isinstance(g, Mapping) and "name" in g]
        return names + [n for n in self.bounds if n not in names]


def _n_val(attrs: Mapping[str, Any], config: Mapping[str, Any]) -> int | None:
    """Validation sample count if the study recorded it under one of the names workers use."""
    for source in (attrs, config):
        for key in ("base_metric_n", "n_val", "val_samples", "val_size"):
            value = source.get(key)
            if isinstance(value, (int, float)) and value > 0:
                return int(value)
    return None


def study_info(study: optuna.Study, storage_label: str = "") -> StudyInfo:
    """Read a study's settings from its user attributes (falling back on its directions and names).

    Args:
        study: a loaded study.
        storage_label: where it came from, for messages (passwords are stripped here).

    Returns:
        The :class:`StudyInfo`.
    """
    attrs = study.user_attrs
    names = study.metric_names or []
    direction = attrs.get("metric_direction") or study.directions[0].name.lower()
    stored = attrs.get("config")
    config: Mapping[str, Any] = stored if isinstance(stored, Mapping) else {}
    bounds = {
        str(k): (float(v[0]), float(v[1]))
        for k, v in (attrs.get("bounds") or {}).items()
        if isinstance(v, (list, tuple)) and len(v) == 2
    }
    max_drop = attrs.get("max_drop")
    return StudyInfo(
        name=study.study_name,
        storage=redact_url(storage_label),
        metric_name=str(attrs.get("metric_name") or (names[0] if names else "metric")),
        metric_direction=str(direction),
        base_metric=as_float(attrs.get("base_metric")),
        base_metric_stderr=as_float(attrs.get("base_metric_stderr")),
        max_drop=None if max_drop is None else float(max_drop),
        bounds=bounds,
        groups=list(attrs.get("groups") or []),
        baselines={k: [dict(p) for p in v] for k, v in (attrs.get("baselines") or {}).items()},
        config=redact(dict(config)),
        round_to=attrs.get("round_to"),
        n_val=_n_val(attrs, config),
        recovery_calibration=attrs.get("recovery_calibration") if isinstance(attrs.get("recovery_calibration"), Mapping) else None,
        confirmation=mapping_attr(attrs, CONFIRMATION_ATTR),
        final_test=mapping_attr(attrs, FINAL_TEST_ATTR),
        final=mapping_attr(attrs, FINAL_ATTR),
    )


def _timing(rec: TrialRecord, host_id: str | None) -> dict[str, Any]:
    """Speedup, spread and latencies on ``host_id`` (the trial's own timing when ``None``).

    A trial searched on another host is judged by its re-timing on ``host_id``; without one it has no
    speedup there, so it drops out of the front instead of mixing machines.
    """
    own = rec.own_timing
    if host_id is None or own.host_id == host_id:
        return {k: getattr(own, k) for k in _TIMING_FIELDS} | {"speedup_host_id": own.host_id}
    entry = (rec.timings or {}).get(host_id)
    if not isinstance(entry, Mapping):
        return {k: None for k in _TIMING_FIELDS} | {"speedup_host_id": None, "latency_noisy": None}
    timed = Timing.from_entry(entry)
    return {k: getattr(timed, k) for k in _TIMING_FIELDS} | {"speedup_host_id": host_id, "latency_noisy": timed.noisy}


def _row(
    trial: optuna.trial.FrozenTrial, info: StudyInfo, host_id: str | None, late: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One table row for ``trial``; see :func:`trials_frame` for the columns."""
    rec = with_late(read(trial), late)
    values = trial.values or []
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    row["duration_s"] = trial.duration.total_seconds() if trial.duration is not None else math.nan
    row.update(rec.scalars())
    row.update(_timing(rec, host_id))
    # A spread above the study's threshold is unsettled whatever flag was recorded with it.
    row["latency_noisy"] = unsettled(row["latency_noisy"], row["speedup_spread"], info.cv_threshold)
    # Objective values stand in when a writer left the user attrs out (e.g. a hand-made trial); the
    # speedup value only where it is the trial's own timing.  A pruned trial's value is Optuna's copy of its
    # last intermediate value (a curve point or a screened speedup), never a metric.
    if trial.state == optuna.trial.TrialState.PRUNED:
        values = []
    if row["metric"] is None and len(values) >= 1:
        row["metric"] = values[0]
    if row["speedup"] is None and len(values) >= 2 and (host_id is None or rec.own_timing.host_id == host_id):
        row["speedup"] = values[1]
    if row["drop"] is None:
        sign = 1.0 if info.metric_direction == "maximize" else -1.0
        row["drop"] = sign * (info.base_metric - as_float(row["metric"]))
    if row["drop_stderr"] is None and math.isfinite(info.base_metric_stderr):
        row["drop_stderr"] = math.hypot(info.base_metric_stderr, as_float(row["metric_stderr"]))
    constraints = trial.constraints
    row["constraint_drop"] = constraints.get("drop", math.nan)
    if row["feasible"] is None:
        if constraints:
            row["feasible"] = all(v <= 0 for v in constraints.values())
        elif info.max_drop is not None:
            row["feasible"] = as_float(row["drop"]) <= info.max_drop
    for name, ratio in (rec.ratios or trial.params or {}).items():
        row[f"ratio:{name}"] = ratio
    for name, kept in (rec.channels or {}).items():
        row[f"channels:{name}"] = kept
    for stage, seconds in (rec.stage_seconds or {}).items():
        row[f"seconds:{stage}"] = seconds
    if rec.screened is None:  # a screened trial's one value is its speedup (fastest mode), not a curve point
        for step, value in sorted(trial.intermediate_values.items()):
            row[f"{CURVE_PREFIX}{step}"] = value
    for key, value in (rec.confirmed or {}).items():
        row[confirmed_column(key)] = value
    row.update(timings_row(rec.timings or {}))
    return row


def finetune_curves(df: pd.DataFrame) -> dict[str, list[list[float]]]:
    """Per trial number (as text), its finetune curve ``[[step, calibration drop], ...]`` from the ``curve:<step>``
    columns (:mod:`autoprune.search.curves`); trials without one are left out.

    Example:
        >>> finetune_curves(pd.DataFrame({"number": [0, 1], "curve:0": [0.3, None], "curve:4": [0.1, None]}))
        {'0': [[0, 0.3], [4, 0.1]]}
    """
    cols = sorted((int(c[len(CURVE_PREFIX):]), c) for c in df.columns if c.startswith(CURVE_PREFIX))
    out = {}
    for _, row in df.iterrows():
        points = [[step, float(row[c])] for step, c in cols if pd.notna(row[c])]
        if points:
            out[str(int(row["number"]))] = points
    return out


def _ordered_columns(columns: list[str], groups: list[str]) -> list[str]:
    """Fixed columns first, then per-group columns in group order, then the rest as they came."""
    rank = {g: i for i, g in enumerate(groups)}

    def key(col: str) -> tuple[int, int, str]:
        prefix, _, name = col.partition(":")
        if prefix in ("ratio", "channels") and name:
            return (1 if prefix == "ratio" else 2, rank.get(name, len(rank)), name)
        return (3 if ":" in col else 0, 0, "")

    return sorted(columns, key=key)


def trials_frame(
    study: optuna.Study,
    info: StudyInfo | None = None,
    *,
    max_drop: float | None = None,
    host_id: str | None = None,
) -> pd.DataFrame:
    """One row per trial of a loaded study.

    Columns: ``number, state, datetime_start, datetime_complete, duration_s``, the scalar user attrs
    (``metric, metric_stderr, drop, drop_stderr, feasible, speedup, speedup_spread, speedup_interleaved,
    latency_ms, base_latency_ms, latency_noisy, macs, params, host, host_id, worker, kind, arch_artifact_id,
    weights_artifact_id``), ``speedup_host_id`` (the host the speedup was timed on), ``constraint_drop``,
    then ``ratio:<group>``, ``channels:<group>``, ``seconds:<stage>``, ``curve:<finetune step>`` (the
    calibration drop at that step), ``confirmed:<key>`` and
    ``timings:<host_id>:<key>`` where the trials carry them.

    Args:
        study: a loaded study.
        info: its :class:`StudyInfo` (read from the study when ``None``).
        max_drop: recompute ``feasible`` as ``drop <= max_drop`` for this budget; ``None`` keeps what
            the workers recorded.
        host_id: judge speed on this host: a trial timed elsewhere takes its ``timings[host_id]`` entry,
            and has no speedup (NaN) when it was never timed there.

    ``latency_noisy`` is True where the timing the row's speedup comes from did not settle: flagged
    noisy when it was measured, or its spread is above the study's ``latency.cv_threshold``.

    Returns:
        The DataFrame, sorted by trial number.
    """
    info = info or study_info(study)
    trials = study.get_trials(deepcopy=False)
    late = late_trial_attrs(study.user_attrs)
    rows = [_row(t, info, host_id, late.get(t.number)) for t in trials]
    df = pd.DataFrame(rows, columns=None if rows else ["number", "state", *SCALAR_ATTRS])
    for col in ("speedup_host_id", "constraint_drop"):
        if col not in df:
            df[col] = None
    df = df[_ordered_columns(list(df.columns), info.group_names)]
    for col in _NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in [*_INT_COLUMNS, *(c for c in df.columns if c.startswith("channels:"))]:
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    if max_drop is not None:
        df["feasible"] = df["drop"] <= max_drop
    else:
        # Unknown feasibility (no attr, constraint or budget) counts as infeasible: nothing vouches for it.
        df["feasible"] = df["feasible"].map(lambda v: isinstance(v, (bool, np.bool_)) and bool(v)).astype(bool)
    return df.sort_values("number").reset_index(drop=True)


def _engine_kwargs(url: str) -> dict[str, Any]:
    """Connection settings for a reader that must not disturb writers."""
    if url.startswith("sqlite"):
        # Wait for a writer's commit rather than failing with "database is locked".
        return {"connect_args": {"timeout": 60}}
    # Idle connections to a server get dropped; check before use.  A silent server is given up on.
    args = server_connect_args(url)
    return {"pool_pre_ping": True, **({"connect_args": args} if args else {})}


def _reason(exc: BaseException, url: str | None) -> str:
    """First line of the underlying database error (Optuna wraps it), with the URL's password removed."""
    cause = exc.__cause__ or exc.__context__ if isinstance(exc, optuna.exceptions.StorageInternalError) else None
    text = str(cause or exc).strip() or type(exc).__name__
    return redact_text(text.splitlines()[0], url)


def _open_storage(spec: str) -> BaseStorage:
    """A storage for a URL or a journal file path, refusing anything that would create a database."""
    shown = redact_url(spec)
    if spec.startswith("journal:"):  # the search's journal URL (autoprune.search.storage)
        spec = str(journal_path(spec))
    if "://" not in spec:
        path = Path(spec)
        if not path.is_file():
            raise StorageError(f"no study storage at {shown}: give an existing journal file or a database URL")
        with path.open("rb") as fh:
            is_sqlite = fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
        if not is_sqlite:
            return JournalStorage(JournalFileBackend(str(path)))
        spec = f"sqlite:///{path.resolve()}"
    if spec.startswith("sqlite"):
        _check_sqlite_file(spec, shown)
    try:
        target, engine_kwargs = rdb_target(spec, _engine_kwargs(spec))
    except (ConfigError, sqlalchemy.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        raise StorageError(
            f"cannot parse storage URL {shown} ({type(exc).__name__}); write it as scheme://user:password@host:port/database"
        ) from None
    try:
        return RDBStorage(target, engine_kwargs=engine_kwargs, skip_table_creation=True)
    except ImportError:
        raise StorageError(
            f"cannot read study storage {shown}: the database driver for {spec.split('://', 1)[0]!r} is not installed; "
            "install it or name an installed one in the URL (e.g. postgresql+psycopg2://)"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as exc:
        raise StorageError(
            f"cannot read study storage {shown}: {_reason(exc, spec)}; check the URL (--storage or the config's "
            "storage) and that it is an Optuna database"
        ) from None


def _check_sqlite_file(spec: str, shown: str) -> None:
    """SQLite creates a missing file on connect; an analyzer must not leave an empty database behind."""
    try:
        database = sqlalchemy.engine.make_url(spec).database or ""
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise StorageError(f"cannot parse storage URL {shown} ({type(exc).__name__}); write it as sqlite:///path/to/study.db") from None
    if database in ("", ":memory:") or not Path(database).is_file():
        raise StorageError(
            f"no SQLite study database at {database or shown}: check --storage (or the config's "
            "storage) or run the search first"
        )


def _close(storage: BaseStorage) -> None:
    """Release pooled connections so the analyzer holds nothing against running workers."""
    inner = getattr(storage, "_backend", storage)
    engine = getattr(inner, "engine", None)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def open_study(storage: str | BaseStorage, study_name: str) -> Iterator[optuna.Study]:
    """Load ``study_name`` from ``storage`` for reading; storages opened here are closed on exit.

    Args:
        storage: a storage URL (``sqlite:///...``, ``postgresql://...``), a journal file path, or an
            Optuna storage object (left open: its owner closes it).
        study_name: the study to load.

    Yields:
        The loaded study.

    Raises:
        StorageError: the storage cannot be read, or holds no study of that name (the message lists the
            studies it does hold).
    """
    owned = not isinstance(storage, BaseStorage)
    label = redact_url(storage) if isinstance(storage, str) else type(storage).__name__
    backend = _open_storage(storage) if isinstance(storage, str) else storage
    try:
        try:
            study = optuna.load_study(study_name=study_name, storage=backend)
        except KeyError:
            names = optuna.study.get_all_study_names(storage=backend)
            listed = ", ".join(sorted(names)) if names else "none"
            raise StorageError(
                f"study {study_name!r} does not exist in {label}; studies there: {listed}. "
                "Check --study (or the config's name)"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as exc:
            reason = _reason(exc, storage if isinstance(storage, str) else None)
            raise StorageError(f"cannot read study {study_name!r} from {label}: {reason}") from None
        yield study
    finally:
        if owned:
            _close(backend)


def _retime_baselines(
    info: StudyInfo, df: pd.DataFrame, host_id: str, rebuilt: Mapping[str, Any] | None = None
) -> StudyInfo:
    """Baseline sweep points judged on ``host_id``, matched to the sweep's trials by kept channels.

    Sweep points are stored with their search-host speedup; comparing them with re-timed trials would
    mix machines, so a point takes the speedup of the ``kind`` trial with the same channels on
    ``host_id`` (or, for a point re-timed without a trial, its entry in ``rebuilt``: the ``baselines``
    of the study attr ``timings:<host_id>``) and loses its speedup (NaN) where there is none.
    """
    channel_cols = [c for c in df.columns if c.startswith("channels:")]
    retimed: dict[str, list[dict[str, Any]]] = {}
    for kind, points in info.baselines.items():
        runs = df[(df.get("kind") == kind) & df["speedup"].notna()] if "kind" in df else df.iloc[0:0]
        out = []
        for point in points:
            channels = {f"channels:{k}": v for k, v in (point.get("channels") or {}).items()}
            match = runs
            for col in channel_cols:
                match = match[match[col] == channels.get(col)] if col in channels else match.iloc[0:0]
            new = dict(point)
            if channels and not match.empty:
                hit = match.iloc[0]
                new.update(speedup=hit["speedup"], speedup_spread=hit["speedup_spread"], latency_ms=hit["latency_ms"],
                           latency_noisy=hit["latency_noisy"], host_id=host_id)
            elif _same_ratio((rebuilt or {}).get(kind), point):
                # A sweep point without a trial, re-timed from its rebuilt architecture on host_id.
                entry = (rebuilt or {})[kind]
                new.update(speedup=entry.get("speedup"), speedup_spread=entry.get("speedup_spread"),
                           latency_ms=entry.get("latency_ms"), latency_noisy=entry.get("noisy"), host_id=host_id)
            else:
                new.update(speedup=math.nan, speedup_spread=math.nan, latency_ms=math.nan, latency_noisy=None, host_id=None)
            out.append(new)
        retimed[kind] = out
    return dataclasses.replace(info, baselines=retimed, host_id=host_id)


def _same_ratio(entry: Any, point: Mapping[str, Any]) -> bool:
    """Whether a re-timed baseline entry is this sweep point (same sweep ratio)."""
    return isinstance(entry, Mapping) and abs(as_float(entry.get("ratio")) - as_float(point.get("ratio"))) < 1e-9


def load_analysis(
    storage: str | BaseStorage,
    study_name: str,
    *,
    max_drop: float | None = None,
    host_id: str | None = None,
) -> tuple[pd.DataFrame, StudyInfo]:
    """Trial table and study info from one read-only connection.

    Args:
        storage: see :func:`open_study`.
        study_name: the study.
        max_drop: recompute feasibility for this budget (default: what the workers recorded).
        host_id: judge speed on this host (see :func:`trials_frame`); baseline points are matched to
            their re-timed sweep trials or lose their speedup.

    Returns:
        ``(trials DataFrame, StudyInfo)``.

    Raises:
        StorageError: see :func:`open_study`; also when ``host_id`` timed no trial of the study.
    """
    with open_study(storage, study_name) as study:
        label = storage if isinstance(storage, str) else type(storage).__name__
        info = study_info(study, label)
        rebuilt = (study.user_attrs.get(timings_attr(host_id)) or {}).get("baselines") if host_id else None
        df = trials_frame(study, info, max_drop=max_drop, host_id=host_id)
    if host_id is not None:
        if not df["speedup_host_id"].eq(host_id).any():
            seen = sorted({str(h) for h in df["host_id"].dropna()} | timed_hosts(df.columns))
            raise StorageError(
                f"no trial of study {study_name!r} was timed on host {host_id!r}; hosts with timings: "
                f"{', '.join(seen) or 'none'}. Re-time the study on that host or drop --host-id"
            )
        info = _retime_baselines(info, df, host_id, rebuilt)
    return df, info


def load_trials(
    storage: str | BaseStorage,
    study_name: str,
    *,
    max_drop: float | None = None,
    host_id: str | None = None,
) -> pd.DataFrame:
    """One row per trial of a stored study (columns in :func:`trials_frame`), read-only.

    Example:
        >>> df = load_trials("sqlite:///studies/resnet.db", "resnet")  # doctest: +SKIP
        >>> df.loc[df.feasible, ["number", "drop", "speedup"]]  # doctest: +SKIP
    """
    return load_analysis(storage, study_name, max_drop=max_drop, host_id=host_id)[0]


def load_study_info(storage: str | BaseStorage, study_name: str) -> StudyInfo:
    """The :class:`StudyInfo` of a stored study, read-only."""
    with open_study(storage, study_name) as study:
        return study_info(study, storage if isinstance(storage, str) else type(storage).__name__)
