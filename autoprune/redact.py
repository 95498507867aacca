"""Remove secrets from storage URLs before they are printed, logged or written to a file; expand ``${VAR}``.

A password may hold any character, also ones a URL should have encoded (``/``, ``@``, ``:``, ``%``, ``$``), so
the userinfo is not found by a URL parser (SQLAlchemy's reads ``u:p@ss@host`` as password ``p``): it is
everything between ``scheme://`` and the LAST ``@`` before the query, and everything after its first ``:`` is
the password.  A host never holds ``@``, so no part of a password survives.
"""

from __future__ import annotations

import os
import re
from typing import overload
from urllib.parse import quote
from urllib.parse import quote_plus
from urllib.parse import unquote

from autoprune.errors import ConfigError

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "***"
MIN_PIECE = 3  # pieces of a password between URL delimiters masked on their own (shorter ones are too common)


def _userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme, user, password or None, rest after the '@')`` of a URL with userinfo, else None."""
    m = _SCHEME.match(url)
    if not m:
        return None
    tail = url[m.end() :]
    query = tail.find("?")
    head = tail if query < 0 else tail[:query]
    at = head.rfind("@")
    if at < 0:
        return None
    info = head[:at]
    user, sep, password = info.partition(":")
    return m["scheme"], user, password if sep else None, tail[at + 1 :]


@overload
def redact_url(url: str) -> str: ...
@overload
def redact_url(url: None) -> None: ...
def redact_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (also ``?password=``).

    Example:
        >>> redact_url("postgresql://bob:hunter2@db:5432/optuna")
        'postgresql://bob:***@db:5432/optuna'
        >>> redact_url("postgresql://bob:p@s/s:w$rd@db/optuna")
        'postgresql://bob:***@db/optuna'
    """
    if url is None:
        return None
    parts = _userinfo(url)
    if parts is not None:
        scheme, user, password, rest = parts
        url = f"{scheme}{user}:{MASK}@{rest}" if password is not None else url
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", url)


def redact_text(text: str, url: str | None) -> str:
    """Replace every occurrence of ``url``'s password in ``text``, as written, decoded or encoded (for
    third-party error messages, which may show any of them)."""
    if not url:
        return text
    parts = _userinfo(url)
    if parts is None or not parts[2]:
        return text
    password = parts[2]
    forms = {password, unquote(password), quote(password, safe=""), quote_plus(password)}
    # A parser that split the URL inside the password shows pieces of it (e.g. "port 'w%2$v@host'").
    forms |= {piece for piece in re.split(r"[/@:?#]", password) if len(piece) >= MIN_PIECE}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return text


def expand_env(url: str, where: str = "the storage URL") -> str:
    """Expand ``${VAR}`` from the environment (a bare ``$`` is kept: passwords may hold it).

    Raises:
        ConfigError: a named variable is not set (the message names it, never a value).

    Example:
        >>> os.environ["AUTOPRUNE_DOC_PW"] = "s3cret"
        >>> expand_env("postgresql://u:${AUTOPRUNE_DOC_PW}@h/db$1")
        'postgresql://u:s3cret@h/db$1'
    """

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where} names ${{{name}}}, which is not set in the environment; export it or write the value")
        return os.environ[name]

    return _ENV.sub(value, url)
