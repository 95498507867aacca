"""No password reaches any output or file, whatever printable ASCII characters it holds.

Two levels:

- In process, a few hundred Hypothesis examples (derandomized) through the structured parser, the
  renderers and the masker of driver messages (:mod:`autoprune.redact`).
- Through the CLI, a small fixed sample (2 passwords from the security review, 6 drawn from the same strategy)
  through every command that takes a storage URL: ``pareto`` (``--storage`` and ``$AUTOPRUNE_STORAGE``) and
  ``worker`` against a closed port on 127.0.0.1; ``worker``, ``run`` (up to the storage open: an unknown
  artifact store stops it right after), ``export``, ``confirm`` and ``dashboard`` (start-up: a busy port stops
  it after it opened the storage) against the real PostgreSQL at 127.0.0.1:5432, whose trust auth accepts any
  password; and one full ``run`` + ``export`` there, checking the study's attributes and the exported JSON.

What "appears" means.  A 1- or 2-character password occurs by chance in any text, so the CLI-level check draws
passwords of at least 8 characters with at least 5 distinct ones, and looks for (a) the password, as written
and percent-decoded, and (b) every run of it that a parser splitting at a URL delimiter (``@ : / ? #``) could
show on its own (``cd@ef`` of ``ab@cd@ef``), of at least 4 characters: a 3-character run such as ``127`` or
``tcp`` occurs in any message that names the host, while a given run of 4 printable characters occurs by chance
in a few kB of output with probability about 1e-5 (and the sample is fixed, so a pass is reproducible).  The
in-process masker check is exact instead: it compares with the same message without the password in it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from urllib.parse import unquote

import optuna
import pg
import pytest
from click.testing import CliRunner
from conftest import TINY_STUDY
from conftest import deep_merge
from conftest import write_study
from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from autoprune.cli import main
from autoprune.redact import MASK
from autoprune.redact import parse_storage
from autoprune.redact import rdb_target
from autoprune.redact import redact_text
from autoprune.redact import redact_url

PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
# ${NAME} is expanded from the environment before a URL is parsed (an unset one is refused by name).
ANY_PASSWORD = st.text(PRINTABLE, min_size=1, max_size=32).filter(lambda p: "${" not in p)
DELIMITERS = "@:/?#"
REVIEW_PASSWORDS = ("pa?ssW0rd", "ab@cd@ef")  # printed in full by 5 commands at the review


def exposed(password: str, min_run: int = 4) -> set[str]:
    """The password as written and decoded, and its runs between URL delimiters of ``min_run`` or more."""
    out = {password, unquote(password)}
    for form in (password, unquote(password)):
        cuts = [-1] + [i for i, c in enumerate(form) if c in DELIMITERS] + [len(form)]
        out |= {form[a + 1 : b] for a in cuts for b in cuts if b - a - 1 >= min_run}
    return {s for s in out if len(s) >= min_run}


def leaks(password: str, text: str) -> list[str]:
    return sorted(s for s in exposed(password) if s in text)


# A drawn password must be detectable: every form `leaks` looks for holds a character that is neither a letter
# nor a digit, so it cannot be a word or number autoprune prints anyway ("attempts", a port, a year). The
# explicit review examples below keep all-alphanumeric runs covered.
PASSWORDS = st.text(PRINTABLE, min_size=8, max_size=24).filter(
    lambda p: len(set(p)) >= 5 and "${" not in p and not any(s.isalnum() for s in exposed(p)))


# In process ---------------------------------------------------------------------------------------------

HOSTS = st.sampled_from(["127.0.0.1", "db.example", "db-1", "[::1]"])
DATABASES = st.sampled_from(["", "optuna", "my_db"])
QUERIES = st.sampled_from(["", "?sslmode=disable", "?application_name=ap&connect_timeout=5"])  # keys sorted, as rendered


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(password=ANY_PASSWORD, user=st.sampled_from(["u", "bob", "svc_x"]), host=HOSTS, port=st.sampled_from([None, 5432]),
       database=DATABASES, query=QUERIES)
def test_the_parser_finds_every_part_of_any_password(password: str, user: str, host: str, port: int | None, database: str, query: str) -> None:
    where = host + (f":{port}" if port else "")
    text = f"postgresql+psycopg://{user}:{password}@{where}/{database}{query}"
    loc = parse_storage(text)
    assert loc.url is not None
    assert (loc.url.username, loc.url.password) == (user, unquote(password))
    assert (loc.url.host, loc.url.port, loc.url.database or "") == (host.strip("[]"), port, database)
    path = f"/{database}" if database else ""  # rendered without an empty database
    shown = f"postgresql+psycopg://{user}:{MASK}@{where}{path}{query}"
    assert loc.shown == shown and redact_url(text) == shown and str(loc) == shown and shown in repr(loc)
    assert loc.place == f"postgresql+psycopg://{where}{path}"
    target, kwargs = rdb_target(text, {"connect_args": {"connect_timeout": 3}})
    parsed = make_url(target)  # what Optuna hands SQLAlchemy: no password, nothing re-split
    assert parsed.password is None and (parsed.username, parsed.host, parsed.port) == (user, host.strip("[]"), port)
    assert kwargs["connect_args"] == {"connect_timeout": 3, "password": unquote(password)}


MESSAGES = [
    'connection to server at "127.0.0.1", port 1 failed: {pw}',
    "could not translate host name \"{pw}@127.0.0.1\" to address",
    "password authentication failed for {pw!r} ({pw})",
    "invalid dsn: password='{esc}' host=127.0.0.1",
    "url postgresql://u:{enc}@h/db and {json}",
]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(password=ANY_PASSWORD, template=st.sampled_from(MESSAGES), cut=st.integers(0, 40))
def test_driver_messages_keep_no_form_or_piece_of_the_password(password: str, template: str, cut: int) -> None:
    """Every form (written, decoded, encoded, repr, JSON, DSN-escaped) and every run between delimiters of 3 or
    more characters (a message may show what a parser split off) is masked; the rest of the message stays."""
    url = f"postgresql://u:{password}@127.0.0.1:1/db"
    decoded = unquote(password)
    cuts = [i for i, c in enumerate(decoded) if c in DELIMITERS]
    piece = decoded[cuts[cut % len(cuts)] + 1 :] if cuts else decoded  # what a parser cutting there shows
    forms = {"pw": decoded, "esc": decoded.replace("\\", "\\\\").replace("'", "\\'"), "enc": quote(decoded, safe=""),
             "json": json.dumps(decoded)}
    message = template.format(**forms) + f" [{piece}]"
    blank = template.format(pw="", esc="", enc="", json='""') + " []"
    masked = redact_text(message, url)
    for run in exposed(decoded, min_run=3) | {decoded}:
        assert masked.count(run) <= blank.count(run), (run, masked)


def test_a_question_mark_in_a_password_is_not_the_query() -> None:
    """Review finding: ``pa?ssW0rd`` was shown in full (the first ``?`` was taken as the query)."""
    assert redact_url("postgresql://u:pa?ssW0rd@127.0.0.1:1/db") == "postgresql://u:***@127.0.0.1:1/db"
    assert redact_url("postgresql://u:ab@cd@ef@127.0.0.1:1/db?sslmode=disable") == "postgresql://u:***@127.0.0.1:1/db?sslmode=disable"


def test_a_port_that_is_no_number_is_refused_without_the_password() -> None:
    with pytest.raises(Exception, match="port is not a number") as info:
        parse_storage("postgresql://u:s3cr3tpw@127.0.0.1:abc/db")
    assert "s3cr3tpw" not in str(info.value)
    assert redact_url("postgresql://u:s3cr3tpw@127.0.0.1:abc/db") == "postgresql://***@127.0.0.1:abc/db"


# Through the CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_database() -> Iterator[tuple[str, str, int, str]]:
    """(user, host, port, database) of a fresh database on the trust-auth server at 127.0.0.1:5432."""
    cm = pg.shared_database()
    try:
        url = cm.__enter__()
    except pg.PostgresUnavailable as exc:
        pytest.skip(f"no shared PostgreSQL at 127.0.0.1:5432: {exc}")
    optuna.storages.RDBStorage(url).engine.dispose()  # the schema, before commands race to create it
    u = make_url(url)
    try:
        yield str(u.username), str(u.host), int(u.port or 5432), str(u.database)
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def fuzz_study(tmp_path_factory: pytest.TempPathFactory, tiny_study) -> Path:
    """The tiny study (its trained base), with an artifact store no command can open (``run`` stops there)."""
    folder = tmp_path_factory.mktemp("fuzz")
    return write_study(folder, None, base=deep_merge(TINY_STUDY, {"base": {"checkpoint": str(tiny_study.checkpoint)}}))


def _invoke(args: list[str], log: Path | None, env: dict[str, str]) -> tuple[str, int]:
    """Run a command in this process (torch imported once: a fresh interpreter per command costs seconds)."""
    full = {"AUTOPRUNE_STORAGE": None, "AUTOPRUNE_CONNECT_TIMEOUT": "5", **env}
    res = CliRunner().invoke(main, [*args, *(["--log-file", str(log)] if log else [])], env=full, catch_exceptions=False)
    return res.stdout + res.stderr, res.exit_code


def _commands(study: Path, closed: str, served: str, out: Path, busy_port: int) -> dict[str, tuple[list[str], Path | None, dict[str, str]]]:
    """Every command that takes a storage URL, each stopping with exit code 2 within a second or two."""
    s = str(study)
    return {
        "pareto": (["pareto", s, "--storage", closed], None, {}),
        "pareto $AUTOPRUNE_STORAGE": (["pareto", s], None, {"AUTOPRUNE_STORAGE": closed}),
        "worker (closed port)": (["worker", s, "--storage", closed, "--wait", "0.5"], out / "worker-closed.log", {}),
        "worker": (["worker", s, "--storage", served, "--wait", "0.5"], out / "worker.log", {}),
        "run": (["run", s, "--storage", served], out / "run.log", {"AUTOPRUNE_ARTIFACT_STORE": "ftp://nowhere/x"}),
        "export": (["export", s, "--storage", served, "-o", str(out / "arch.json")], out / "export.log", {}),
        "confirm": (["confirm", s, "--storage", served], None, {}),
        "dashboard": (["dashboard", s, "--storage", served, "--port", str(busy_port)], None, {}),
    }


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
@settings(max_examples=8, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(password=PASSWORDS)
@example(password=REVIEW_PASSWORDS[0])
@example(password=REVIEW_PASSWORDS[1])
def test_no_command_shows_or_writes_the_password(password: str, fuzz_study: Path, pg_database: tuple[str, str, int, str],
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    user, host, port, database = pg_database
    closed = f"postgresql://fuzzer:{password}@127.0.0.1:{pg.free_port()}/optuna"
    served = f"postgresql://{user}:{password}@{host}:{port}/{database}"
    out = tmp_path_factory.mktemp("out")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        for name, (args, log, env) in _commands(fuzz_study, closed, served, out, busy.getsockname()[1]).items():
            text, code = _invoke(args, log, env)
            logged = log.read_text() if log and log.exists() else ""
            assert code == 2 and "error: " in text, (name, text)
            assert not leaks(password, text + logged), (name, leaks(password, text + logged), text)
            assert not log or "error: " in logged, (name, "the final error line is missing from --log-file", logged)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(not leaks(password, p.read_text(errors="replace")) for p in files)


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", *args, "--log-file", str(log)]
    full = dict(os.environ, OMP_NUM_THREADS="1")
    full.pop("AUTOPRUNE_STORAGE", None)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**full, **env})


@pytest.mark.slow
def test_a_study_created_with_a_password_keeps_it_out_of_attrs_and_exports(tiny_study, pg_database: tuple[str, str, int, str],
                                                                            tmp_path: Path) -> None:
    """A real search on the trust-auth server with ``pa?ss@W0rd#%/:"' x`` in the URL: nothing written holds it."""
    user, host, port, database = pg_database
    password = "pa?ss@W0rd#%25/:\"' x"
    url = f"postgresql://{user}:{password}@{host}:{port}/{database}"
    study = write_study(tmp_path, {"name": "fuzz-full", "max_drop": 0.9, "search": {"trials": 1}},
                        base=deep_merge(TINY_STUDY, {"base": {"checkpoint": str(tiny_study.checkpoint)}}))
    env = {"AUTOPRUNE_STORAGE": url}
    for args, log in ((["run", str(study), "--trials", "1"], tmp_path / "run.log"),
                      (["export", str(study), "-o", str(tmp_path / "arch.json")], tmp_path / "export.log")):
        proc = _start(args, log, env)
        stdout, stderr = proc.communicate(timeout=600)
        text = stdout + stderr + log.read_text()
        assert proc.returncode == 0, (args, text)
        assert not leaks(password, text), (args, leaks(password, text))
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert "storage" not in arch["provenance"] and arch["provenance"]["locator"] == f"postgresql://{host}:{port}/{database}"
    target, kwargs = rdb_target(url, {})
    loaded = optuna.load_study(study_name="fuzz-full", storage=optuna.storages.RDBStorage(target, engine_kwargs=kwargs))
    stored = json.dumps([loaded.user_attrs, [t.user_attrs for t in loaded.trials]], default=str)
    assert not leaks(password, stored)
    assert len(loaded.trials) >= 1
    for path in [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".log", ".html", ".yaml", ".csv", ".txt")]:
        assert not leaks(password, path.read_text(errors="replace")), path



def test_a_server_that_checks_the_password_gets_it_whole() -> None:
    """scram-sha-256 on a private cluster: the unencoded password (``?``, ``@@``, ``#``, ``%``, quotes, a space)
    reaches the server whole (the writer and the analyzer connect), and a wrong one is refused without a trace."""
    from autoprune.analysis.frame import open_study
    from autoprune.errors import StorageError
    from autoprune.search.storage import open_storage

    password = "pa?ss@W0rd#%/:\"' x@@"
    try:
        cluster = pg.PrivateCluster(password=password).start()
    except pg.PostgresUnavailable as exc:
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    try:
        written = cluster.create_database("fuzz")
        assert password in written  # unencoded, as a user would paste it
        optuna.create_study(study_name="s", storage=open_storage(written, heartbeat_interval=None))
        with open_study(written, "s") as study:
            assert study.study_name == "s"
        wrong = written.replace(password, password[::-1])
        with pytest.raises(StorageError, match="password authentication failed") as info:
            open_storage(wrong, heartbeat_interval=None, attempts=1)
        assert not leaks(password, str(info.value)) and not leaks(password[::-1], str(info.value))
    finally:
        cluster.destroy()
