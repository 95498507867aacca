"""Storage URLs parsed once by their structure; secrets removed before anything is printed, logged or written.

A password may hold any character, also ones a URL should have encoded (``/``, ``@``, ``:``, ``?``, ``#``,
``%``), so the userinfo is not found by a URL parser (SQLAlchemy's ``make_url`` reads ``u:p@ss@host`` as
password ``p`` and ``u:pa?ss@host`` as host ``u``).  It is found by structure instead: a host never holds
``@``, ``/`` or ``?``, so the userinfo is everything between ``scheme://`` and the LAST ``@``, and everything
after its first ``:`` is the password.  (An ``@`` in a database name or query must therefore be written
``%40``.)  SQLite and journal locators are file paths and hold no password.

:func:`parse_storage` builds a :class:`StorageLocator` (a :class:`sqlalchemy.engine.URL` for a database
server); everything shown is rendered from it with the password masked (:attr:`StorageLocator.shown`), and
only the connecting code reads :attr:`StorageLocator.url`'s password.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any
from typing import overload
from urllib.parse import parse_qsl
from urllib.parse import quote
from urllib.parse import quote_plus
from urllib.parse import unquote

from sqlalchemy.engine import URL

from autoprune.errors import ConfigError

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*")
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>[^:]*))?$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_SCHEMES = ("sqlite", "journal")
MASK = "***"
MIN_PIECE = 3  # pieces of a password between URL delimiters masked on their own (shorter ones are too common)
_DELIMITERS = r"[/@:?#&=%\s'\"\\]"  # where a URL parser, a DSN or a quoted message may cut a password


@dataclasses.dataclass(frozen=True)
class StorageLocator:
    """A storage URL parsed once.  Its ``repr`` and ``str`` show the masked form only.

    Attributes:
        text: the URL as given (it may hold the password: never show it).
        url: for a database server, the structured URL that connects (None for file paths).
        written_password: the password as written in ``text`` (before percent-decoding), if any.

    Example:
        >>> loc = parse_storage("postgresql://bob:pa?ss@w0rd@db:5432/optuna")
        >>> loc.url.password, loc.url.host, loc.url.port, loc.url.database
        ('pa?ss@w0rd', 'db', 5432, 'optuna')
        >>> loc.shown, loc.place
        ('postgresql://bob:***@db:5432/optuna', 'postgresql://db:5432/optuna')
    """

    text: str = dataclasses.field(repr=False)
    url: URL | None = dataclasses.field(default=None, repr=False)
    written_password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def password(self) -> str | None:
        """The decoded password (None: none given)."""
        return None if self.url is None else self.url.password

    @property
    def shown(self) -> str:
        """The URL as messages, logs and files show it: the password (also a ``?password=``) masked."""
        if self.url is None:
            return _QUERY_PASSWORD.sub(rf"\1{MASK}", self.text)
        return _QUERY_PASSWORD.sub(rf"\1{MASK}", self.url.render_as_string(hide_password=True))

    @property
    def place(self) -> str:
        """Where the study lives, without user or password (what an architecture JSON records)."""
        if self.url is None:
            return self.shown
        bare = URL.create(self.url.drivername, host=self.url.host, port=self.url.port, database=self.url.database)
        return bare.render_as_string(hide_password=True)

    def without_password(self) -> URL | None:
        """The server URL with its password left out (None for file paths)."""
        if self.url is None:
            return None
        u = self.url
        return URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database, query=u.query)

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"StorageLocator({self.shown!r})"


def parse_storage(text: str) -> StorageLocator:
    """Parse a storage URL by structure (see the module docstring).

    Raises:
        ConfigError: a server URL whose port is not a number (the message shows no password).
    """
    m = _SCHEME.match(text)
    if not m or m["scheme"].split("+")[0].lower() in _PATH_SCHEMES:
        return StorageLocator(text)
    tail = text[m.end() :]
    at = tail.rfind("@")
    user = password = None
    if at >= 0:
        user, sep, password = tail[:at].partition(":")
        password = password if sep else None
    rest = tail[at + 1 :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host_port, path = rest[:cut], rest[cut:]
    path, _, query = path.partition("?")
    hp = _HOST_PORT.match(host_port)
    port = hp["port"] if hp else None
    if hp is None or (port and not port.isdigit()):
        raise ConfigError(f"storage URL {m['scheme']}://...@{host_port}: the port is not a number; write host:port")
    host = hp["host"].strip("[]") or None
    url = URL.create(
        m["scheme"],
        username=unquote(user) if user else None,
        password=unquote(password) if password is not None else None,
        host=unquote(host) if host else None,
        port=int(port) if port else None,
        database=unquote(path[1:]) if path[1:] else None,
        query=_query(query),
    )
    return StorageLocator(text, url, password)


def rdb_target(url: str, engine_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL string to give Optuna's RDBStorage (no password in it) and ``engine_kwargs`` whose
    ``connect_args`` carry the password under the name the URL's database driver takes.

    Optuna's RDBStorage takes a string only (it formats it, reads its prefix and hands it to Alembic), and a
    string is parsed again by SQLAlchemy, which splits an unencoded ``@``/``?`` in a password.  The string
    given here has no password; the dialect itself turns the structured URL into its connect arguments and
    the one that differs (the password) travels in ``connect_args``.
    """
    loc = parse_storage(url)
    bare = loc.without_password()
    if bare is None or loc.url is None or loc.password is None:
        return url, engine_kwargs
    dialect = loc.url.get_dialect()()
    with_password = dialect.create_connect_args(loc.url)[1]
    without = dialect.create_connect_args(bare)[1]
    secret = {k: v for k, v in with_password.items() if without.get(k) != v}
    kwargs = dict(engine_kwargs)
    kwargs["connect_args"] = {**engine_kwargs.get("connect_args", {}), **secret}
    return bare.render_as_string(hide_password=False), kwargs


def storage_place(url: str | None) -> str | None:
    """Where a study lives, as an architecture JSON records it: scheme, host, port and database (or the file),
    never a user or password.

    Example:
        >>> storage_place("postgresql://bob:pa?ss@db:5432/optuna")
        'postgresql://db:5432/optuna'
    """
    if url is None:
        return None
    try:
        return parse_storage(url).place
    except ConfigError:
        return None


def _query(query: str) -> dict[str, str | tuple[str, ...]]:
    """``a=1&a=2&b=x`` -> ``{"a": ("1", "2"), "b": "x"}`` (as SQLAlchemy reads a query)."""
    out: dict[str, str | tuple[str, ...]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        old = out.get(key)
        out[key] = value if old is None else (*((old,) if isinstance(old, str) else old), value)
    return out


def _raw_userinfo(url: str) -> tuple[int, int] | None:
    """Where the userinfo of a URL that does not parse lies: from ``scheme://`` to the last ``@``."""
    m = _SCHEME.match(url)
    at = url.rfind("@")
    return (m.end(), at) if m and at >= m.end() else None


def _mask_userinfo(url: str) -> str:
    """Everything between ``scheme://`` and the last ``@`` masked: for text that does not parse."""
    span = _raw_userinfo(url)
    if span is None:
        return _QUERY_PASSWORD.sub(rf"\1{MASK}", url)
    return f"{url[: span[0]]}{MASK}{url[span[1]:]}"


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
        >>> redact_url("postgresql://bob:pa?ss@db/optuna")
        'postgresql://bob:***@db/optuna'
    """
    if url is None:
        return None
    try:
        return parse_storage(url).shown
    except (ConfigError, ValueError, TypeError):
        return _mask_userinfo(url)


def password_forms(password: str, written: str | None = None) -> set[str]:
    """Every form in which ``password`` could appear in a message: as written, decoded, percent-encoded,
    quoted by Python or JSON or a DSN, and its runs between delimiters (:func:`_runs`)."""
    forms = {password, unquote(password), quote(password, safe=""), quote(password, safe=" +"), quote_plus(password),
             repr(password)[1:-1], json.dumps(password)[1:-1], password.replace("\\", "\\\\").replace("'", "\\'")}
    if written:
        forms |= {written, unquote(written)}
    forms |= {run for form in list(forms) for run in _runs(form)}
    return {f for f in forms if f}


def _runs(form: str) -> set[str]:
    """Every run of ``form`` from one delimiter (or its start) to another (or its end) of :data:`MIN_PIECE` or
    more characters: what a parser cutting at any of those delimiters could show (``cd@ef`` of ``ab@cd@ef``)."""
    cuts = [-1] + [m.start() for m in re.finditer(_DELIMITERS, form)] + [len(form)]
    return {form[a + 1 : b] for i, a in enumerate(cuts) for b in cuts[i + 1 :] if b - a - 1 >= MIN_PIECE}


def redact_text(text: str, url: str | StorageLocator | None) -> str:
    """Replace every form of ``url``'s password in ``text`` (for third-party error messages, which may show
    it written, decoded, encoded, quoted or cut into pieces)."""
    if not url:
        return text
    try:
        loc = url if isinstance(url, StorageLocator) else parse_storage(url)
    except ConfigError:
        return _mask_unparsed(text, url)
    if not loc.password:
        return text
    for form in sorted(password_forms(loc.password, loc.written_password), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def _mask_unparsed(text: str, url: str | StorageLocator) -> str:
    """A URL that does not parse: mask all of its userinfo, and its runs, wherever they appear."""
    raw = url.text if isinstance(url, StorageLocator) else url
    span = _raw_userinfo(raw)
    if span is None:
        return text
    info = raw[span[0] : span[1]]
    for piece in sorted({info} | _runs(info), key=len, reverse=True):
        text = text.replace(piece, MASK)
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
