"""How long autoprune waits for a server (database or artifact store) before it says so.

``$AUTOPRUNE_CONNECT_TIMEOUT`` (default 10 s) bounds one connection attempt: a host that accepts TCP and never
answers would otherwise hold a command for minutes.  ``$AUTOPRUNE_STATEMENT_TIMEOUT`` (default 60 s) bounds one
database statement (Optuna's are short).
"""

from __future__ import annotations

import os

from autoprune.errors import ConfigError

CONNECT_ENV = "AUTOPRUNE_CONNECT_TIMEOUT"
STATEMENT_ENV = "AUTOPRUNE_STATEMENT_TIMEOUT"


def connect_timeout() -> int:
    """Seconds one connection attempt may take (``$AUTOPRUNE_CONNECT_TIMEOUT``, default 10)."""
    return _seconds(CONNECT_ENV, 10)


def statement_timeout() -> int:
    """Seconds one database statement may take (``$AUTOPRUNE_STATEMENT_TIMEOUT``, default 60)."""
    return _seconds(STATEMENT_ENV, 60)


def _seconds(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"${name} is {text!r}; give a whole number of seconds (at least 1) or unset it")
    return int(text)
