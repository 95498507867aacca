"""A small latency cache shared by the processes of one host.

Two trials often round to the same channel vector; timing it again costs seconds and tells nothing new.
The cache is one SQLite file: SQLite serialises writers across processes by itself, and each call opens
its own short connection, so forked workers never share a connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from autoprune.errors import LatencyError
from autoprune.jsonfile import loads
from autoprune.jsonfile import validated
from autoprune.latency._settings import LatencySettings

log = logging.getLogger("autoprune")

# Bump when the meaning of a cached result changes, so old entries stop matching.
_KEY_VERSION = 1

# Settings that change the timed number itself; repeats, blocks and thresholds only change its precision,
# and the lock settings only its cleanliness.
_KEY_SETTINGS = ("batch_size", "threads", "opset")
# Off the CPU provider the key also holds these (the fingerprint names the provider; whether host copies
# are timed changes the number).  CPU keys stay as they were, so existing caches keep matching.
_TARGET_SETTINGS = ("provider", "provider_options", "include_copies")


def _key_settings(settings: LatencySettings) -> tuple[str, ...]:
    return _KEY_SETTINGS if settings.provider == "cpu" else _KEY_SETTINGS + _TARGET_SETTINGS


class LatencyCache:
    """Latency results keyed by channel vector, host fingerprint and the settings that affect speed.

    Args:
        path: SQLite file (created with its folder when missing).

    Example:
        >>> import tempfile
        >>> from autoprune.latency import LatencySettings
        >>> cache = LatencyCache(tempfile.mkdtemp() + "/latency.sqlite")
        >>> k = cache.key({"layer1": 16}, "abc123", LatencySettings())
        >>> cache.put(k, {"speedup": 1.7})
        >>> cache.get(k)
        {'speedup': 1.7}
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS latency (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)"
                )
        except (OSError, sqlite3.Error) as exc:
            raise LatencyError(
                f"cannot open latency cache {self.path}: {exc}; point it at a writable local file "
                "(SQLite files on network filesystems are not safe to share)"
            ) from exc

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """Open a short-lived connection that waits for other processes' writes instead of failing.

        Yields:
            The connection; committed on success, rolled back on error, always closed.
        """
        conn = sqlite3.connect(str(self.path), timeout=60.0)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    @staticmethod
    def key(
        channels: Mapping[str, int],
        fingerprint_id: str,
        settings: LatencySettings,
        extra: str = "",
    ) -> str:
        """Build the cache key of one timing.

        Args:
            channels: Kept channels per layer or group (the rounded vector that was timed).
            fingerprint_id: ``host_fingerprint()["fingerprint_id"]``.
            settings: Only ``batch_size``, ``threads`` and ``opset`` enter the key (and, off the CPU provider,
                ``provider``, ``provider_options`` and ``include_copies``).
            extra: Anything else that distinguishes the timing (base model name, input shape, baseline).

        Returns:
            A 32-hex-digit key.
        """
        payload = {
            "v": _KEY_VERSION,
            "channels": {str(k): int(v) for k, v in sorted(channels.items())},
            "host": fingerprint_id,
            "settings": {name: getattr(settings, name) for name in _key_settings(settings)},
            "extra": extra,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def get(self, key: str, schema: type[BaseModel] | None = None) -> dict[str, Any] | None:
        """Look a key up.

        Args:
            key: From :meth:`key`.
            schema: what the stored dict must hold (e.g. :class:`~autoprune.file_schemas.CachedTiming`).

        Returns:
            The stored result dict, or ``None``: not cached, or a row that is not a JSON object (or fails
            ``schema``); such a row is a miss, named in one warning, and the next :meth:`put` replaces it.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM latency WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        fix = "timing it again (the new timing replaces the row)"
        try:
            value = loads(row[0])
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, not a JSON object")
            return value if schema is None else validated(schema, value, f"row {key}", fix, LatencyError).model_dump()
        except (ValueError, LatencyError) as exc:
            log.warning("%s", f"latency cache {self.path}: {exc if isinstance(exc, LatencyError) else f'row {key}: {exc}; {fix}'}")
            return None

    def put(self, key: str, result: Mapping[str, Any]) -> None:
        """Store a result (replacing any earlier one under the same key).

        Args:
            key: From :meth:`key`.
            result: A JSON-serialisable dict, e.g. ``SpeedupResult.as_dict()``.

        Raises:
            LatencyError: The result cannot be serialised to JSON.
        """
        try:
            text = json.dumps(dict(result), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise LatencyError(f"cannot cache this result in {self.path}: {exc}; pass a JSON-serialisable dict") from exc
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO latency (key, value, created) VALUES (?, ?, ?)", (key, text, time.time())
            )

    def __len__(self) -> int:
        """Number of cached results.

        Returns:
            The row count.
        """
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
