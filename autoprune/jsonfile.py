"""JSON artifacts written atomically and read defensively.

Every JSON file a stage leaves for a later one is written to a temporary file beside it and renamed over it, so a
crash mid-write leaves the old file or the new one, never a torn one.  Reading names the file and the fix when it
is not what it should be (undecodable, truncated, or not the JSON type expected).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from autoprune.errors import ArtifactError


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


def read_json(path: str | os.PathLike[str], fix: str, expect: type = dict) -> Any:
    """The JSON value in ``path``, of type ``expect``.

    Args:
        path: the file.
        fix: what the user should do when it is unreadable (e.g. "delete it and rerun 'autoprune create'").
        expect: the JSON type the file must hold.

    Raises:
        ArtifactError: the file cannot be read, is not JSON, or holds another type; the message names it and the fix.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot be read ({exc.strerror or exc}); {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{p}: torn or not JSON ({type(exc).__name__}); {fix}") from None
    if not isinstance(data, expect):
        raise ArtifactError(f"{p}: holds a JSON {type(data).__name__}, not a JSON {expect.__name__}; {fix}")
    return data


__all__ = ["read_json", "write_json"]
