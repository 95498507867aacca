"""Host-wide timing lock and training markers, so timings on one host do not corrupt each other.

Two processes that time at the same moment slow each other down, and so does a worker that trains while
another one times.  Two mechanisms keep timings clean:

* :func:`timing_lock` takes an exclusive ``fcntl.flock`` on ``<lock_dir>/timing.lock`` around every timed
  section, so at most one process per host times at any moment.  The kernel drops the lock when its holder
  dies, so a crashed worker never blocks the host.  The lock is re-entrant within one process.
* :func:`training_section` marks a worker as training with a per-process marker file in
  ``<lock_dir>/training/``.  With ``exclusive=True`` the timer, once it holds the lock, also raises an
  "exclusive" marker and waits (bounded, with a log line) until no other live process is training; new
  training sections wait while that marker stands.  Markers of dead processes are ignored and removed.

Trade-off of ``exclusive``: timings are cleaner (no neighbour trains on the shared cores and memory
bandwidth), but every worker stalls while any one of them times, and a timer may wait for the longest
running training step to finish.  With many workers the search slows down roughly in proportion to the
share of time spent timing.  Without ``exclusive`` workers never wait for each other's training, and the
interleaved base/candidate blocks cancel most of the load that training puts on the timer.

Both waits are bounded: past the bound the process goes on and logs a warning, because a stuck neighbour
must not stop a whole study.  The timing lock itself raises :class:`~autoprune.errors.LatencyError` after
``lock_timeout_s``, naming the lock file and the process that holds it: the holder writes an owner record
(pid, command line with passwords masked, since when, PID namespace and host) into the lock file, and
:func:`describe_holder` reads it back or says why the holder cannot be named.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pathlib
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from autoprune.errors import LatencyError
from autoprune.latency._settings import LatencySettings
from autoprune.redact import redact_url

try:  # fcntl is POSIX-only; without it timing still works, just without the host lock.
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux/macOS
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("autoprune.latency")

LOCK_FILE = "timing.lock"
EXCLUSIVE_FILE = "exclusive.marker"
TRAINING_DIR = "training"
DEFAULT_LOCK_TIMEOUT_S = 1800.0
DEFAULT_EXCLUSIVE_WAIT_S = 300.0
_POLL_S = 0.02
_ARG_CHARS = 120  # per argument of the holder's command line in its owner record
_COMMAND_CHARS = 400

# Re-entrancy: flock locks belong to an open file description, so a second open+flock by the thread that
# already holds the lock would deadlock against itself.  Count nesting per thread and lock file; other
# threads of the process open their own descriptor and wait like any other process.
_held = threading.local()


def default_lock_dir() -> pathlib.Path:
    """Folder used when ``LatencySettings.lock_dir`` is ``None``.

    ``$AUTOPRUNE_LOCK_DIR`` wins; otherwise ``/tmp/autoprune-locks``.  ``$XDG_RUNTIME_DIR`` and
    ``$TMPDIR`` are deliberately not used: they are per user, and the lock must be host-wide.

    Returns:
        The lock folder (not created).
    """
    env = os.environ.get("AUTOPRUNE_LOCK_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path("/tmp") / "autoprune-locks"


def _lock_dir(lock_dir: str | os.PathLike[str] | None) -> pathlib.Path:
    """Resolve and create the lock folder, world-writable so every user on the host shares one lock.

    Args:
        lock_dir: Folder from the settings, or ``None`` for the default.

    Returns:
        The existing folder.
    """
    path = pathlib.Path(lock_dir) if lock_dir is not None else default_lock_dir()
    try:
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        (path / TRAINING_DIR).mkdir(exist_ok=True)
        if created and lock_dir is None:
            # Sticky and world-writable like /tmp: other users can lock and add markers, not delete ours.
            os.chmod(path, 0o1777)
            os.chmod(path / TRAINING_DIR, 0o1777)
    except OSError as exc:
        raise LatencyError(
            f"cannot use lock folder {path}: {exc}; set LatencySettings.lock_dir (or $AUTOPRUNE_LOCK_DIR) "
            "to a writable folder shared by the workers of this host"
        ) from exc
    return path


def _pid_alive(pid: int) -> bool:
    """Tell whether a process with this pid exists (a pid of another user counts as alive).

    Args:
        pid: Process id.

    Returns:
        True when the process exists.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_start(pid: int) -> str:
    """Start time of a process in clock ticks, to tell a live marker from one whose pid was reused.

    Args:
        pid: Process id.

    Returns:
        The start time as text, or ``""`` where ``/proc`` is not available.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    return stat.rsplit(")", 1)[-1].split()[19]


def _write_marker(path: pathlib.Path) -> None:
    """Write a marker file holding this process's pid and start time.

    Args:
        path: Marker file to create.
    """
    pid = os.getpid()
    path.write_text(f"{pid} {_proc_start(pid)}\n", encoding="utf-8")


def _marker_live(path: pathlib.Path) -> int | None:
    """Read a marker and return its pid when the process that wrote it still runs.

    Stale markers (dead pid, or a pid reused by another process) are removed on the way.

    Args:
        path: Marker file.

    Returns:
        The pid of a live owner, else ``None``.
    """
    try:
        fields = path.read_text(encoding="utf-8").split()
        pid = int(fields[0])
        start = fields[1] if len(fields) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None  # vanished between listing and reading, or half written: not a live owner
    alive = _pid_alive(pid) and (not start or _proc_start(pid) in ("", start))
    if not alive:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return pid


def training_pids(lock_dir: str | os.PathLike[str] | None = None) -> list[int]:
    """List the live processes (other than this one) that are inside :func:`training_section`.

    Args:
        lock_dir: Lock folder; ``None`` for the default.

    Returns:
        Sorted pids, possibly empty.
    """
    folder = _lock_dir(lock_dir) / TRAINING_DIR
    me = os.getpid()
    pids = set()
    for marker in folder.glob("*.marker"):
        pid = _marker_live(marker)
        if pid is not None and pid != me:
            pids.add(pid)
    return sorted(pids)


def _exclusive_owner(folder: pathlib.Path) -> int | None:
    """Pid of another live process that is timing in exclusive mode, if any.

    Args:
        folder: Lock folder.

    Returns:
        The pid, or ``None``.
    """
    pid = _marker_live(folder / EXCLUSIVE_FILE)
    return None if pid == os.getpid() else pid


@contextlib.contextmanager
def training_section(
    lock_dir: str | os.PathLike[str] | None = None, max_wait_s: float = DEFAULT_EXCLUSIVE_WAIT_S
) -> Iterator[None]:
    """Mark this process as training for the duration of the block.

    An exclusive timer (``LatencySettings.exclusive=True``) on the same host waits until no training
    section is open; while such a timer runs, entering a training section waits for it (at most
    ``max_wait_s``, then goes on with a warning).

    Args:
        lock_dir: Lock folder shared with the timers; ``None`` for the default.
        max_wait_s: Longest wait for an exclusive timing to finish.

    Yields:
        Nothing; the marker exists while the block runs.

    Example:
        >>> import tempfile
        >>> with training_section(tempfile.mkdtemp()):
        ...     pass  # train here
    """
    folder = _lock_dir(lock_dir)
    marker = folder / TRAINING_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.marker"
    deadline = time.monotonic() + max_wait_s
    logged = False
    while True:
        # Write first, then look: the timer raises its marker first and then looks, so at least one of
        # the two sees the other and nobody trains during an exclusive timing.
        _write_marker(marker)
        owner = _exclusive_owner(folder)
        if owner is None:
            break
        marker.unlink()
        if time.monotonic() >= deadline:
            logger.warning("training goes on after %.0f s although pid %d is timing exclusively", max_wait_s, owner)
            _write_marker(marker)
            break
        if not logged:
            logger.info("training waits for an exclusive timing in pid %d to finish", owner)
            logged = True
        time.sleep(_POLL_S * 5)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()


def _pid_namespace() -> str:
    """This process's PID namespace (``pid:[4026531836]``), or ``""`` where ``/proc`` does not show it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _command_line() -> str:
    """This process's command line for the owner record, passwords masked, long arguments cut."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    words = []
    for arg in argv[1:] or argv:
        flag, sep, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        word = " ".join((flag + sep + (redact_url(value) or "")).split())  # one line, however the argument ran
        words.append(word if len(word) <= _ARG_CHARS else word[: _ARG_CHARS - 3] + "...")
    return " ".join(words)[:_COMMAND_CHARS]


def _owner_record() -> bytes:
    """What the holder writes into the lock file: who it is and since when, one JSON line."""
    pid = os.getpid()
    record = {"pid": pid, "start": _proc_start(pid), "pid_ns": _pid_namespace(), "host": socket.gethostname(),
              "since": time.time(), "command": _command_line()}
    return (json.dumps(record) + "\n").encode()


def _read_owner(path: pathlib.Path) -> dict[str, Any] | None:
    """The owner record in the lock file; a bare pid (older autoprune) gives ``{"pid": N}``; else ``None``."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if text.isdigit():
        return {"pid": int(text)}
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def describe_holder(path: pathlib.Path) -> str:
    """Who holds the timing lock, for messages: pid, command line and since when, or why that is unknown.

    Args:
        path: Lock file, held by another process.

    Returns:
        A phrase such as ``"pid 4242 (/venv/bin/autoprune worker study.yaml), holding it since 2026-12-06
        14:02:07 UTC (35 s)"``.
    """
    record = _read_owner(path)
    if record is None:
        return (f"a process this one cannot name: {path} holds no owner record (an autoprune older than "
                "this one, another program, or a holder that took the lock this instant)")
    pid = record["pid"]
    what = f" ({record['command']})" if record.get("command") else ""
    since = record.get("since")
    if isinstance(since, (int, float)):
        stamp = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        what += f", holding it since {stamp} ({max(0.0, time.time() - since):.0f} s)"
    host, namespace = record.get("host"), record.get("pid_ns")
    if host and host != socket.gethostname():
        return f"pid {pid} on host or container {host!r}{what}; that process cannot be seen from here"
    if namespace and _pid_namespace() and namespace != _pid_namespace():
        return f"pid {pid} in another PID namespace ({namespace}, e.g. another container){what}; it cannot be seen from here"
    start = record.get("start") or ""
    if _pid_alive(pid) and (not start or _proc_start(pid) in ("", start)):
        return f"pid {pid}{what}"
    return (f"a process this one cannot name: the owner record names pid {pid}{what}, which has exited; "
            "a process it started holds the lock now (flock locks pass to child processes)")


@contextlib.contextmanager
def _flock(path: pathlib.Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (re-entrant within the process).

    Args:
        path: Lock file (created when missing).
        timeout_s: Longest wait for the lock.

    Yields:
        Nothing; the lock is held while the block runs.

    Raises:
        LatencyError: The lock was not obtained within ``timeout_s``.
    """
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    key = str(path)
    if depth.get(key, 0) > 0:
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise LatencyError(
            f"cannot open timing lock {path}: {exc}; set LatencySettings.lock_dir (or $AUTOPRUNE_LOCK_DIR) to a "
            "writable folder shared by the workers of this host"
        ) from exc
    try:
        start = time.monotonic()
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout_s:
                    raise LatencyError(
                        f"timing lock {path} is still held after {waited:.0f} s, by {describe_holder(path)}; "
                        "stop that process or point LatencySettings.lock_dir elsewhere"
                    ) from None
                if not logged and waited > 1.0:
                    logger.info("waiting for timing lock %s, held by %s", path, describe_holder(path))
                    logged = True
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_record(), 0)
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def timing_lock(
    settings: LatencySettings,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    exclusive_wait_s: float = DEFAULT_EXCLUSIVE_WAIT_S,
) -> Iterator[None]:
    """Hold the host-wide timing lock (and, in exclusive mode, a training-free window) around a block.

    Does nothing when ``settings.lock`` is false.

    Args:
        settings: Uses ``lock``, ``exclusive`` and ``lock_dir``.
        lock_timeout_s: Longest wait for the lock before :class:`LatencyError`.
        exclusive_wait_s: Longest wait for training neighbours to finish in exclusive mode; the timing
            then goes on with a warning.

    Yields:
        Nothing; the host is reserved while the block runs.

    Example:
        >>> import tempfile
        >>> with timing_lock(LatencySettings(lock_dir=tempfile.mkdtemp())):
        ...     pass  # time here
    """
    if not settings.lock:
        yield
        return
    if fcntl is None:  # pragma: no cover - non-POSIX
        raise LatencyError("the host timing lock needs fcntl (POSIX); set LatencySettings.lock=False")
    folder = _lock_dir(settings.lock_dir)
    with _flock(folder / LOCK_FILE, lock_timeout_s):
        if not settings.exclusive:
            yield
            return
        exclusive = folder / EXCLUSIVE_FILE
        _write_marker(exclusive)
        try:
            _wait_for_trainers(settings.lock_dir, exclusive_wait_s)
            yield
        finally:
            with contextlib.suppress(OSError):
                exclusive.unlink()


def _wait_for_trainers(lock_dir: str | None, max_wait_s: float) -> None:
    """Wait until no other live process is in a training section, at most ``max_wait_s``.

    Args:
        lock_dir: Lock folder.
        max_wait_s: Bound on the wait.
    """
    start = time.monotonic()
    pids = training_pids(lock_dir)
    if not pids:
        return
    logger.info("exclusive timing waits for training pids %s to leave their training sections", pids)
    while pids:
        if time.monotonic() - start >= max_wait_s:
            logger.warning("exclusive timing goes on after %.0f s with training pids %s", max_wait_s, pids)
            return
        time.sleep(_POLL_S * 5)
        pids = training_pids(lock_dir)
