"""Remove secrets from storage URLs before they are printed, logged or written to a file."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*")


def redact_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (also ``?password=``).

    Example:
        >>> redact_url("postgresql://bob:hunter2@db:5432/optuna")
        'postgresql://bob:***@db:5432/optuna'
    """
    if url is None:
        return None
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def redact_text(text: str, url: str | None) -> str:
    """Replace every occurrence of ``url``'s password in ``text`` (for third-party error messages)."""
    if not url:
        return text
    m = _USERINFO.match(url)
    if m and m["password"]:
        text = text.replace(m["password"], "***")
    return text
