"""PostgreSQL for tests: a private throwaway cluster, or a fresh database on the shared server.

Two ways to get a real PostgreSQL URL:

- :class:`PrivateCluster`: ``initdb`` + ``pg_ctl`` in a temporary folder on a free port, listening on
  127.0.0.1 only, with a login role that needs a password (scram-sha-256), so tests also see that the
  password never gets printed.  It can be stopped and started again on the same port (the "database
  went away" tests).  As root, ``initdb`` refuses to run, so the server runs as the ``postgres`` user
  (``runuser``) in a folder that user owns.
- :func:`shared_database`: a fresh ``CREATE DATABASE`` on the server at 127.0.0.1:5432 (trust auth; the
  admin connection is tried as ``postgres`` then ``root``), dropped again afterwards.  Override the admin
  connection with ``AUTOPRUNE_TEST_PG_ADMIN`` (a libpq URL such as ``postgresql://postgres@host:5432/postgres``).

Both raise :class:`PostgresUnavailable` with the reason when they cannot work; tests turn that into a
skip that says why (:func:`postgres_url`).

Example:
    >>> with PrivateCluster() as pg:  # doctest: +SKIP
    ...     url = pg.create_database("study")
    ...     pg.stop(); pg.start()   # same port, same data
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 5432
ADMIN_ENV = "AUTOPRUNE_TEST_PG_ADMIN"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be had this way; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then the newest /usr/lib/postgresql/*/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent

    def version(path: str) -> float:
        try:
            return float(Path(path).parts[-3])
        except ValueError:
            return 0.0

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


class PrivateCluster:
    """A PostgreSQL cluster of its own: temporary folder, free port, 127.0.0.1 only.

    Args:
        user: login role created for the tests (owner of the databases made by :meth:`create_database`).
        password: its password (random by default); the URLs carry it.
    """

    def __init__(self, user: str = "autoprune", password: str | None = None) -> None:
        self.user = user
        self.password = password or "pw-" + secrets.token_hex(8)
        self.bin = find_pg_bin()
        if self.bin is None:
            raise PostgresUnavailable("no initdb/pg_ctl found (install the postgresql server package)")
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root, and initdb refuses root, but there is no 'postgres' user to run it as") from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root, and initdb refuses root, but 'runuser' is missing")
        # Not pytest's tmp_path: as root that lies under a 0700 folder the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.running = False
        if self._as_root:
            os.chown(self.root, self._pw.pw_uid, self._pw.pw_gid)
        os.chmod(self.root, 0o700)
        try:
            self._initdb()
        except Exception:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    # Low-level --------------------------------------------------------------------------------------
    def _cmd(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # cwd: the postgres user may not be able to read the current folder.
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, LC_ALL="C"))

    def _initdb(self) -> None:
        proc = self._cmd(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )
        if proc.returncode != 0:
            raise PostgresUnavailable(f"initdb failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # Lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> PrivateCluster:
        """Start the server (on a free port the first time, on the same port afterwards); wait until it answers."""
        attempts = 3 if self.port == 0 else 1
        for _ in range(attempts):
            port = self.port or free_port()
            opts = (
                f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
            )
            proc = self._cmd(
                "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", str(int(timeout)), "start", timeout=timeout + 30
            )
            if proc.returncode == 0:
                self.port = port
                self.running = True
                if not self._has_role():
                    self._create_role()
                return self
        message = f"pg_ctl start failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}\n{self._log_tail()}"
        if self.port == 0:  # never ran: nothing worth keeping
            shutil.rmtree(self.root, ignore_errors=True)
        raise PostgresUnavailable(message)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` ends client sessions; ``immediate`` is a crash stop)."""
        if not self.running:
            return
        proc = self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {proc.stderr.strip()[-300:]}\n{self._log_tail()}")
        self.running = False

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        """Stop the server (if running) and remove its folder."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # Roles, databases, URLs -------------------------------------------------------------------------
    def _admin(self, dbname: str = "postgres"):
        import psycopg2

        # The unix socket in our folder, trust auth: no password for the superuser.
        conn = psycopg2.connect(host=str(self.root), port=self.port, user="postgres", dbname=dbname, connect_timeout=10)
        conn.autocommit = True
        return conn

    def _has_role(self) -> bool:
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
            return cur.fetchone() is not None

    def _create_role(self) -> None:
        from psycopg2 import sql

        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(self.user)), (self.password,))

    def create_database(self, name: str | None = None) -> str:
        """Create a database owned by the test role; returns its URL (with the password)."""
        from psycopg2 import sql

        name = name or f"t_{uuid.uuid4().hex[:10]}"
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))
        return self.url(name)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"


# The shared server ------------------------------------------------------------------------------------
def _admin_candidates() -> list[dict[str, object]]:
    env = os.environ.get(ADMIN_ENV)
    if env:
        parts = urlsplit(env)
        return [
            {
                "host": parts.hostname or SHARED_HOST,
                "port": parts.port or SHARED_PORT,
                "user": parts.username or "postgres",
                "password": parts.password,
                "dbname": (parts.path or "/postgres").lstrip("/") or "postgres",
            }
        ]
    return [
        {"host": SHARED_HOST, "port": SHARED_PORT, "user": user, "password": None, "dbname": db}
        for user in ("postgres", "root")
        for db in ("postgres", "test")
    ]


def _shared_admin():
    """An autocommit admin connection to the shared server (or PostgresUnavailable saying why not)."""
    try:
        import psycopg2
    except ImportError:
        raise PostgresUnavailable("psycopg2 is not installed (pip install 'autoprune[postgres]')") from None
    candidates = _admin_candidates()
    first = candidates[0]
    if not port_answers(str(first["host"]), int(first["port"])):  # type: ignore[arg-type]
        raise PostgresUnavailable(f"nothing answers at {first['host']}:{first['port']}")
    errors = []
    for c in candidates:
        kwargs = {k: v for k, v in c.items() if v is not None}
        try:
            conn = psycopg2.connect(connect_timeout=5, **kwargs)  # type: ignore[arg-type]
        except psycopg2.Error as exc:
            errors.append(f"{c['user']}@{c['dbname']}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            continue
        conn.autocommit = True
        return conn, c
    raise PostgresUnavailable(f"cannot log in to {first['host']}:{first['port']}: " + "; ".join(errors))


@contextlib.contextmanager
def shared_database(prefix: str = "autoprune_t") -> Iterator[str]:
    """A fresh database on the shared server; yields its URL and drops the database afterwards."""
    from psycopg2 import sql

    conn, c = _shared_admin()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except Exception as exc:
        conn.close()
        raise PostgresUnavailable(f"CREATE DATABASE on {c['host']}:{c['port']} as {c['user']} failed: {str(exc).strip()}") from None
    auth = f"{c['user']}:{c['password']}@" if c.get("password") else f"{c['user']}@"
    try:
        yield f"postgresql://{auth}{c['host']}:{c['port']}/{name}"
    finally:
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()


@contextlib.contextmanager
def postgres_url(prefer: str = "shared") -> Iterator[str]:
    """A fresh PostgreSQL database URL: the shared server when it answers, else a private cluster.

    Args:
        prefer: ``shared`` (cheap; falls back to a private cluster) or ``private`` (falls back to shared).

    Raises:
        PostgresUnavailable: neither works; the message gives both reasons.
    """
    reasons = []
    for kind in (["shared", "private"] if prefer == "shared" else ["private", "shared"]):
        cleanup: contextlib.ExitStack = contextlib.ExitStack()
        try:
            if kind == "shared":
                url = cleanup.enter_context(shared_database())
            else:
                pg = cleanup.enter_context(PrivateCluster())
                url = pg.create_database()
        except PostgresUnavailable as exc:
            cleanup.close()
            reasons.append(f"{kind} server: {exc}")
            continue
        with cleanup:
            yield url
        return
    raise PostgresUnavailable("; ".join(reasons))
