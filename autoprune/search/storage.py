"""Study storage: SQLite (embedded default), PostgreSQL/MySQL for many workers, or a journal file.

- RDB storages get ``pool_pre_ping`` (idle connections are dropped by servers), heartbeats with a grace
  period and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, so a trial whose worker died is
  failed and queued again with the same parameters.
- A database that is briefly unreachable is retried with backoff before a clear :class:`StorageError`.
- SQLite with several workers runs enqueued trials more than once, so it is refused for ``workers > 1``.
- URLs are parsed once by structure (:func:`autoprune.redact.parse_storage`) and printed only in their masked
  form; the password reaches SQLAlchemy only in the engine's ``connect_args`` (:func:`autoprune.redact.rdb_target`), so no
  parser re-splits it and Optuna's URL string holds none.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import TypeVar

import optuna

from autoprune.errors import StorageError
from autoprune.redact import rdb_target
from autoprune.redact import redact_text
from autoprune.redact import redact_url
from autoprune.timeouts import connect_timeout
from autoprune.timeouts import statement_timeout

log = logging.getLogger("autoprune")
T = TypeVar("T")

JOURNAL_PREFIX = "journal:"
MIN_ATTEMPT_S = 2  # the shortest connect timeout libpq honours (it reads 1 as 2)
# Key of the PostgreSQL advisory lock held while a storage creates its tables (per database: "autoprun").
SCHEMA_LOCK_KEY = 0x6175746F7072756E


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def journal_path(url: str) -> Path:
    """``journal:/abs/path.log`` or ``journal:///abs/path.log`` -> the file path."""
    rest = url[len(JOURNAL_PREFIX) :]
    if rest.startswith("//"):
        rest = rest[2:]
    return Path(rest)


def server_connect_args(url: str, connect_s: int | None = None) -> dict[str, Any]:
    """Timeouts for a database server: a connection attempt gives up after ``connect_s`` seconds (default
    :func:`connect_timeout`), a statement after :func:`statement_timeout`."""
    connect = connect_s or connect_timeout()
    statement = statement_timeout()
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("postgresql") or scheme.startswith("postgres"):
        return {"connect_timeout": connect, "options": f"-c statement_timeout={statement * 1000}"}
    if scheme.startswith("mysql") or scheme.startswith("mariadb"):
        return {"connect_timeout": connect, "read_timeout": statement, "write_timeout": statement}
    return {}


def check_workers(url: str, workers: int) -> None:
    """Refuse storages that are not safe for ``workers`` concurrent local workers."""
    if workers > 1 and is_sqlite(url):
        raise StorageError(
            f"{workers} workers on SQLite ({redact_url(url)}) would run enqueued trials more than once and lock "
            "the database; use --workers 1, a PostgreSQL URL (--storage postgresql://user@host/db, see README), "
            "or a journal file on a local disk (--storage journal:/path/to/study.log)"
        )


def _transient_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError, ConnectionError)


def transient_cause(exc: BaseException | None) -> BaseException | None:
    """The exception in ``exc``'s chain that says the database is unreachable (None: a logic error)."""
    errors = _transient_errors()
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, errors):
            return exc
        if isinstance(exc, optuna.exceptions.StorageInternalError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) looks like an unreachable database rather than a logic error."""
    return transient_cause(exc) is not None


class _RDBStorage(optuna.storages.RDBStorage):
    """RDBStorage whose heartbeat outlives a database that is briefly away.

    Optuna records heartbeats in a thread that dies, printing a traceback, on the first failed write; the
    trial then goes without heartbeats and is failed as stale although its worker is alive.  Here a failed
    write is logged in one line and the next beat tries again.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("heartbeat of a running trial not recorded: storage unreachable; trying again in %ss", self.heartbeat_interval)


def _sqlite_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging and relaxed fsync for an embedded SQLite study.

    Every user attr of a trial is its own transaction; with SQLite's default rollback journal each one waits
    for an fsync, which made storage writes a large share of a short trial.  WAL also lets the analyzer read
    while a worker writes.
    """
    import sqlalchemy

    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # reconnect through the listener


def with_retry(
    action: Callable[[], T],
    url: str,
    what: str,
    attempts: int = 8,
    first_delay: float = 0.5,
    max_delay: float = 8.0,
    budget_s: float | None = None,
) -> T:
    """Run ``action``; on a transient database error retry with exponential backoff, then fail clearly.

    ``budget_s`` bounds the whole wait (e.g. a worker's ``--wait``): no retry starts that would not have
    :data:`MIN_ATTEMPT_S` left after its backoff (:func:`open_storage` cuts that attempt's connect timeout to
    what is left, so the last attempt ends at the budget instead of one connect timeout past it).
    """
    delay = first_delay
    start = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            out_of_time = budget_s is not None and time.monotonic() - start + delay + MIN_ATTEMPT_S > budget_s
            if attempt == attempts or out_of_time:
                detail = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
                raise StorageError(
                    f"storage {redact_url(url)} unreachable while trying to {what} ({attempt} attempts in "
                    f"{time.monotonic() - start:.0f}s): {detail}; "
                    "check that the database server is running and the URL is right"
                ) from None
            log.warning("storage unreachable while trying to %s (attempt %d/%d); retrying in %.1fs", what, attempt, attempts, delay)
            time.sleep(delay)
            delay = min(max_delay, delay * 2)
    raise AssertionError("unreachable")


def _open_journal(url: str) -> optuna.storages.BaseStorage:
    """The journal storage of a ``journal:/path`` URL (its folder created)."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal import JournalStorage

    path = journal_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def attempt_timeout(deadline: float | None) -> int:
    """The connect timeout of one attempt: :func:`connect_timeout`, cut to the seconds left before ``deadline``
    (a ``time.monotonic()`` value; None: no deadline), never below :data:`MIN_ATTEMPT_S`."""
    configured = connect_timeout()
    if deadline is None:
        return configured
    return max(MIN_ATTEMPT_S, min(configured, int(deadline - time.monotonic())))


def _rdb_kwargs(url: str, heartbeat_interval: int | None, grace_period: int | None, deadline: float | None = None) -> dict[str, Any]:
    """The keyword arguments of an RDB storage (a SQLite file's folder created first); a server's connect
    timeout is cut to what is left before ``deadline`` (see :func:`attempt_timeout`)."""
    if is_sqlite(url):
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
    if is_sqlite(url):
        kwargs["engine_kwargs"]["connect_args"] = {"timeout": 60}
    elif server_connect_args(url):
        kwargs["engine_kwargs"]["connect_args"] = server_connect_args(url, attempt_timeout(deadline))
    if heartbeat_interval:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    return kwargs


def _is_postgres(url: str) -> bool:
    return url.split("://", 1)[0].lower().startswith("postgres")


@contextlib.contextmanager
def schema_lock(url: str, deadline: float | None = None) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock on the study database for the block (other storages: nothing).

    Optuna's ``RDBStorage`` creates its tables, its version row and its alembic stamp when it opens; several
    processes opening one fresh database at once (``kubectl apply`` starts create, workers and dashboard
    together) raced there and all but one failed with ``duplicate key ... pg_type_typname_nsp_index``.  Under
    this lock one of them creates the schema and the others find it.  The lock belongs to a connection of its
    own, closed on leaving (which releases it, also when the process dies); the wait for it is bounded by
    :func:`statement_timeout`.  Advisory locks are per database, so other databases on the server are not held.
    """
    if not _is_postgres(url):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    target, engine_kwargs = rdb_target(url, {"connect_args": server_connect_args(url, attempt_timeout(deadline))})
    engine = sqlalchemy.create_engine(target, poolclass=NullPool, **engine_kwargs)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            yield
    finally:
        engine.dispose()


def _new_rdb(url: str, kwargs: dict[str, Any], max_retry: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (when ``kwargs`` ask for them) and their retry callback."""
    with warnings.catch_warnings():
        # Heartbeats and their retry callback are marked experimental; they are what makes dead workers' trials re-run.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kwargs.get("heartbeat_interval"):
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        target, engine_kwargs = rdb_target(url, kwargs["engine_kwargs"])
        storage = _RDBStorage(target, **{**kwargs, "engine_kwargs": engine_kwargs})
    if is_sqlite(url):
        _sqlite_wal(storage)
    return storage


def open_storage(
    url: str,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = 30,
    max_retry: int = 2,
    attempts: int = 8,
    budget_s: float | None = None,
) -> optuna.storages.BaseStorage:
    """Open (and create the schema of) a study storage.

    Several processes may open one fresh database at once: the schema is created under
    :func:`schema_lock`.  With ``budget_s`` no attempt's connect timeout reaches past the budget.

    Args:
        url: ``sqlite:///...``, ``postgresql://...``, ``mysql+pymysql://...`` or ``journal:/path``.
        heartbeat_interval: seconds between heartbeats of running trials (None: no heartbeats).
        grace_period: seconds without heartbeat after which a running trial is failed and retried.
        max_retry: how often a failed trial is re-queued.
        attempts: connection attempts before giving up.
        budget_s: seconds the attempts may take in all (None: as many as ``attempts`` take).

    Returns:
        The Optuna storage.
    """
    if is_journal(url):
        return _open_journal(url)
    _rdb_kwargs(url, heartbeat_interval, grace_period)  # a bad timeout variable is refused before any attempt
    deadline = None if budget_s is None else time.monotonic() + budget_s

    def connect() -> optuna.storages.BaseStorage:
        with schema_lock(url, deadline):
            # Computed after the lock's connection: that one may have taken part of what is left.
            return _new_rdb(url, _rdb_kwargs(url, heartbeat_interval, grace_period, deadline), max_retry)

    try:
        return with_retry(connect, url, "open the study storage", attempts=attempts, budget_s=budget_s)
    except ImportError as exc:
        raise StorageError(
            f"storage {redact_url(url)} needs a database driver that is not installed ({exc}); "
            "install it with: pip install 'autoprune[postgres]' (or [mysql])"
        ) from None
    except StorageError:
        raise
    except Exception as exc:  # bad URL, wrong scheme, permissions
        detail = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        raise StorageError(f"cannot open storage {redact_url(url)}: {detail}") from None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage=storage, include_best_trial=False)]
