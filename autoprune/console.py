"""Terminal output of long commands: notes, results and progress bars that never share a line.

Every line autoprune prints while a progress bar may be on screen goes through tqdm's writer, which lifts
the bar, writes the line and draws the bar again below it; log records of autoprune and Optuna take the
same way (Optuna's own handler, which would write over a bar, is replaced).  Three kinds of output:

- :func:`note`: progress ("[w0] trial 3 ..."), on stderr; hidden by ``--quiet``.
- :func:`result`: what the command found (tables, the chosen architecture, files), on stdout; always shown.
- warnings and errors (``logging.getLogger("autoprune").warning(...)``), on stderr; always shown.

:func:`configure` sets ``--quiet`` and ``--log-file`` (the full log, notes and results with times, for long
runs).  It also exports them to the environment, so worker processes started by ``autoprune run`` follow
the same settings.

Example:
    >>> from autoprune import console
    >>> console.configure(quiet=False)  # doctest: +SKIP
    >>> with console.progress(3, "search", "trial") as bar:  # doctest: +SKIP
    ...     console.note("[w0] joined study")  # written above the bar, never glued to it
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

QUIET_ENV = "AUTOPRUNE_QUIET"
LOG_FILE_ENV = "AUTOPRUNE_LOG_FILE"
_LOGGERS = ("autoprune", "optuna")
log = logging.getLogger("autoprune")
_results = logging.getLogger("autoprune.results")  # results and the final error reach the log file only (the terminal gets them directly)
_state = {"configured": False, "quiet": False}


class _BarSafeHandler(logging.Handler):
    """Writes each record on stderr through tqdm's writer, so it never lands on a progress bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


class _Forwarder(logging.Handler):
    """Sends each record, formatted for the terminal, to the process that owns the terminal (a queue).

    Worker processes started by ``autoprune run --workers N`` write no line of their own: the parent draws
    the progress bar, so the parent writes their lines too (:func:`write_forwarded`), above its bar.
    """

    def __init__(self, queue: Any, level: int) -> None:
        super().__init__(level)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


class _ConsoleFormat(logging.Formatter):
    """``message`` for autoprune's notes, ``warning: message`` for its warnings, ``optuna: message`` for Optuna's."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name.startswith("optuna"):
            return f"optuna: {text}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure(quiet: bool = False, log_file: str | Path | None = None) -> None:
    """Route autoprune's and Optuna's log records through tqdm's writer; set ``--quiet`` and ``--log-file``.

    Args:
        quiet: show only warnings, errors and results (no notes, no progress bars).
        log_file: also append the full log (notes, results, warnings, with times) to this file.
    """
    _state.update(configured=True, quiet=quiet)
    path = None if log_file is None else str(Path(log_file).resolve())
    for key, value in ((QUIET_ENV, "1" if quiet else None), (LOG_FILE_ENV, path)):
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    import optuna  # heavy (numpy, SQLAlchemy): loaded when a command configures its output, not by --help

    optuna.logging.disable_default_handler()
    console = _BarSafeHandler(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(_ConsoleFormat())
    handlers: list[logging.Handler] = [console]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handlers.append(to_file)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, (_BarSafeHandler, logging.FileHandler))]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            logger.addHandler(handler)
        if name == "autoprune" or not logger.level:
            logger.setLevel(logging.INFO)  # the handlers filter (--quiet); Optuna keeps a verbosity set on purpose
        logger.propagate = False
    _results.handlers = [h for h in handlers if isinstance(h, logging.FileHandler)]
    _results.setLevel(logging.INFO)
    _results.propagate = False


def forward_to(queue: Any) -> None:
    """In a worker process: send the terminal's share of the log to ``queue`` instead of writing it.

    The log file (``--log-file``) is still appended to directly, and ``--quiet`` still hides notes.

    Args:
        queue: a multiprocessing queue the parent drains with :func:`write_forwarded`.
    """
    _ensure_configured()
    forwarder = _Forwarder(queue, logging.WARNING if _state["quiet"] else logging.INFO)
    forwarder.setFormatter(_ConsoleFormat())
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _BarSafeHandler)]:
            logger.removeHandler(old)
        logger.addHandler(forwarder)


def write_forwarded(line: str) -> None:
    """In the parent: write a line a worker process forwarded, above any progress bar (on stderr)."""
    tqdm.write(line, file=sys.stderr)


def _ensure_configured() -> None:
    """Configure from the environment on first use (worker processes inherit the parent's settings)."""
    if not _state["configured"]:
        configure(quiet=bool(os.environ.get(QUIET_ENV)), log_file=os.environ.get(LOG_FILE_ENV) or None)


def is_quiet() -> bool:
    """Whether ``--quiet`` is in effect."""
    _ensure_configured()
    return bool(_state["quiet"])


def note(line: str) -> None:
    """A progress note on stderr (hidden by ``--quiet``; always in the log file)."""
    _ensure_configured()
    log.info(line)


def result(line: str = "") -> None:
    """A result line on stdout, always shown, never on a progress bar's line; also in the log file."""
    _ensure_configured()
    tqdm.write(line, file=sys.stdout)
    _results.info(line)


def error(message: str) -> None:
    """The line a command stops with (``error: message``) on stderr, and in the log file: a reader of
    ``--log-file`` sees why the command stopped.  Bars still open are closed first: the command ends here,
    and ``tqdm.write`` would draw them again below the error."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()
    tqdm.write(f"error: {message}", file=sys.stderr)
    if _results.handlers:  # without one, logging's last resort would print the line a second time
        _results.error(f"error: {message}")


def progress(total: int, desc: str, unit: str, leave: bool = True, initial: int = 0) -> tqdm:
    """A progress bar on stderr, drawn once more when closed (``leave``) and not at all under ``--quiet``;
    ``initial``: the units done before this process started (a resumed run)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave,
                disable=is_quiet(), initial=initial)
