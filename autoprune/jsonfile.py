"""JSON artifacts written atomically and read defensively.

Every JSON file a stage leaves for a later one is written to a temporary file beside it and renamed over it, so a
crash mid-write leaves the old file or the new one, never a torn one.  Reading names the file and the fix when it
is not what it should be (undecodable, truncated, nested too deeply, an absurdly long integer, or not the JSON
type expected), and :func:`read_model` checks the value against the file's pydantic schema
(:mod:`autoprune.file_schemas`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError

from autoprune.errors import ArtifactError
from autoprune.errors import AutopruneError

log = logging.getLogger("autoprune")
M = TypeVar("M", bound=BaseModel)
# Longer integers are refused before conversion: no count, size or seed autoprune reads needs more digits, and
# Python's own limit (4300 digits) would raise a bare ValueError.
MAX_INT_DIGITS = 30


def write_json(path: str | os.PathLike[str], data: Any, **dump: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    dump.setdefault("indent", 2)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, **dump) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def loads(text: str | bytes) -> Any:
    """Parse JSON text defensively: integers longer than :data:`MAX_INT_DIGITS` digits, nesting deeper than
    Python's stack and bytes that are not UTF-8 raise :class:`ValueError` naming the problem (never a
    ``RecursionError`` or a slow conversion).

    Example:
        >>> loads('{"a": [1, 2.5]}')
        {'a': [1, 2.5]}
        >>> loads("1" * 50)
        Traceback (most recent call last):
        ...
        ValueError: an integer of 50 digits (at most 30 are read)
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_int=_bounded_int)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON, torn or not JSON at all ({exc.msg}: line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS} are read)")
    return int(text)


def read_json(path: str | os.PathLike[str], fix: str, expect: type = dict, error: type[AutopruneError] = ArtifactError) -> Any:
    """The JSON value in ``path``, of type ``expect``.

    Args:
        path: the file.
        fix: what the user should do when it is unreadable (e.g. "delete it and rerun 'autoprune create'").
        expect: the JSON type the file must hold.
        error: the exception raised (the CLI turns every :class:`AutopruneError` into exit code 2).

    Raises:
        ArtifactError: the file cannot be read, is not JSON, or holds another type; the message names it and the fix.
    """
    p = Path(path)
    try:
        data = loads(p.read_bytes())
    except OSError as exc:
        raise error(f"{p}: cannot be read ({exc.strerror or exc}); {fix}") from None
    except ValueError as exc:
        raise error(f"{p}: {exc}; {fix}") from None
    if not isinstance(data, expect):
        raise error(f"{p}: holds a JSON {type(data).__name__}, not a JSON {expect.__name__}; {fix}")
    return data


def validated(model: type[M], data: Any, where: str, fix: str, error: type[AutopruneError] = ArtifactError, what: str = "field") -> M:
    """``data`` validated by the pydantic ``model``; the first wrong ``what`` (field, key) is named in one ``error``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
        more = f" ({exc.error_count() - 1} more problem(s) after fixing it)" if exc.error_count() > 1 else ""
        raise error(f"{where}: {what} '{field}': {first['msg'].removeprefix('Value error, ')}{more}; {fix}") from None


def read_model(path: str | os.PathLike[str], model: type[M], fix: str, error: type[AutopruneError] = ArtifactError, what: str = "field") -> M:
    """Read ``path`` (:func:`read_json`) and validate it against ``model``; one ``error`` names the file, field and fix."""
    return validated(model, read_json(path, fix, error=error), str(path), fix, error, what)


def set_aside(path: str | os.PathLike[str], why: str) -> Path:
    """Rename a file autoprune can rebuild to ``<name>.invalid-<UTC time>`` (kept for a look, never deleted)
    and warn in one line (``why`` names the file and the problem); returns the new path."""
    p = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = p.with_name(f"{p.name}.invalid-{stamp}")
    n = 1
    while aside.exists():
        aside = p.with_name(f"{p.name}.invalid-{stamp}-{n}")
        n += 1
    os.replace(p, aside)
    log.warning("%s", f"{why} (set aside as {aside.name})")
    return aside


__all__ = ["MAX_INT_DIGITS", "loads", "read_json", "read_model", "set_aside", "validated", "write_json"]
