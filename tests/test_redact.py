"""Passwords never appear, whatever characters they hold; only ``${VAR}`` is taken from the environment."""

from __future__ import annotations

import dataclasses
import doctest
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import silent
from conftest import HANG_GUARD_S
from conftest import write_study
from pg import free_port

import autoprune.redact
from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.redact import redact_text
from autoprune.redact import redact_url

PASSWORDS = ["pa/ss", "p@ss", "p:ss", "p%41ss", "pa$$word", "a/b@c:d%e$f", "@@", "trailing@", "ends/with/", "%2F"]


def test_doctests() -> None:
    result = doctest.testmod(autoprune.redact)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("template", ["postgresql://u:{pw}@db.example:5432/optuna", "mysql+pymysql://user:{pw}@127.0.0.1/db?charset=utf8",
                                      "postgresql+psycopg2://u:{pw}@h/db"])
def test_no_part_of_any_password_is_printed(template: str, password: str) -> None:
    url = template.format(pw=password)
    shown = redact_url(url)
    assert shown is not None and shown == template.format(pw="***")
    message = f"could not connect to {url}: password authentication failed for {password!r} ({password})"
    assert password not in redact_text(message, url)


def test_urls_without_a_password_are_unchanged() -> None:
    for url in ("sqlite:////tmp/a@b/study.db", "journal:/tmp/x.log", "postgresql://u@h/db", "postgresql://h/db", "sqlite:///x.db"):
        assert redact_url(url) == url
    assert redact_url("postgresql://h/db?password=hunter2&x=1") == "postgresql://h/db?password=***&x=1"


def test_only_braced_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    monkeypatch.setenv("PGPASS", "from-env")
    monkeypatch.setenv("HOME", "/root")
    cfg = load_config(write_study(tmp_path, {"storage": "postgresql://u:${PGPASS}@h/db"}))
    assert cfg.storage_url() == "postgresql://u:from-env@h/db"
    cfg = load_config(write_study(tmp_path, {"storage": "postgresql://u:pa$HOME@h/db"}))
    assert cfg.storage_url() == "postgresql://u:pa$HOME@h/db"  # a bare $ is part of the password
    cfg = load_config(write_study(tmp_path, {"storage": "postgresql://u:${NOT_SET_ANYWHERE}@h/db"}))
    with pytest.raises(ConfigError, match=r"key 'storage' names \$\{NOT_SET_ANYWHERE\}, which is not set") as info:
        cfg.storage_url()
    assert "from-env" not in str(info.value)


def test_the_cli_prints_no_part_of_an_unencoded_password(tmp_path: Path) -> None:
    from conftest import run_cli

    password = "zq/x@y:w%2$v"
    url = f"postgresql://autoprune:{password}@127.0.0.1:1/optuna"
    res = run_cli("pareto", write_study(tmp_path), "--storage", url)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out
    assert "autoprune:***@" in out and not any(piece in out for piece in ("zq", "x@y", "y:w", "w%2", "2$v")), out


CONNECT_TIMEOUT_S = 2  # $AUTOPRUNE_CONNECT_TIMEOUT (whole seconds) for the silent-server tests
# Between the last connection attempt's timeout and the process's exit: the error line and interpreter
# shut-down, seconds even on a busy host.  The start-up before the first attempt is not counted at all:
# importing torch may take a minute under load and says nothing about how long the storage is waited on.
EXIT_TOLERANCE_S = 20.0


@dataclasses.dataclass
class SilentServer:
    """A PostgreSQL URL (with a password) at a host that accepts TCP and never answers."""

    url: str
    accepted: list[float]  # time.monotonic() of every connection it accepted


@pytest.fixture
def silent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """A server that accepts connections and never answers; the connect timeout is ``CONNECT_TIMEOUT_S``."""
    accepted: list[float] = []
    with silent.silent_server(on_accept=lambda: accepted.append(time.monotonic())) as (port, held):
        monkeypatch.setenv("AUTOPRUNE_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
        yield SilentServer(f"postgresql://autoprune:s3cr3t-pw@127.0.0.1:{port}/optuna", accepted)
        assert held  # the commands did connect, and then waited on a server that never answered


def _run_against(silent_server: SilentServer, *args: object) -> tuple[str, float]:
    """Run a command against the silent server; return its output and the seconds from its first
    connection attempt to its exit (the storage wait, without the interpreter's start-up)."""
    from conftest import run_cli

    res = run_cli(*args, "--storage", silent_server.url)
    ended = time.monotonic()
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out and "s3cr3t" not in out, out
    assert silent_server.accepted, out
    return out, ended - silent_server.accepted[0]


def test_a_silent_database_server_is_given_up_on_quickly(silent_server: SilentServer, tmp_path: Path) -> None:
    """The connect timeout ends the wait with one message (was 144 s): one attempt, a retry at most."""
    out, waited = _run_against(silent_server, "pareto", write_study(tmp_path))
    assert waited <= 2 * CONNECT_TIMEOUT_S + EXIT_TOLERANCE_S, (waited, silent_server.accepted, out)


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_create_checks_the_storage_before_training(tmp_path: Path) -> None:
    from conftest import run_cli

    path = write_study(tmp_path)
    for url in ("nosuchdb://u:pw@127.0.0.1/x", "postgresql://u:pw@127.0.0.1:1/x"):  # no driver; nothing listening
        res = run_cli("create", path, "--storage", url)
        assert res.returncode == 2 and "Traceback" not in res.stderr and "training" not in res.stderr, res.stderr
        assert not load_config(path).checkpoint_path().exists()  # nothing was trained


def test_a_worker_waits_for_a_silent_server_no_longer_than_its_wait(silent_server: SilentServer, tmp_path: Path) -> None:
    wait_s = 5
    out, waited = _run_against(silent_server, "worker", write_study(tmp_path), "--wait", str(wait_s))
    # --wait, then the attempt under way when it ran out (was 15+ minutes)
    assert "unreachable" in out and waited <= wait_s + CONNECT_TIMEOUT_S + EXIT_TOLERANCE_S, (waited, out)


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_review_findings_through_the_cli(tmp_path: Path) -> None:
    """Security review: ``pa?ssW0rd`` was printed in full (also in --log-file), ``ab@cd@ef`` leaked ``cd@ef`` from
    the driver's message (it split at the first ``@``), and --log-file never recorded the final ``error:`` line."""
    study = write_study(tmp_path)
    log = tmp_path / "worker.log"
    cases = [(["worker", study, "--storage", f"postgresql://u:pa?ssW0rd@127.0.0.1:{free_port()}/db", "--wait", "1", "--log-file", log], {}, "ssW0rd"),
             (["pareto", study], {"AUTOPRUNE_STORAGE": f"postgresql://u:ab@cd@ef@127.0.0.1:{free_port()}/db"}, "cd@ef")]
    for args, env, secret in cases:
        cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
        out = res.stdout + res.stderr
        assert res.returncode == 2 and "Traceback" not in out and "u:***@127.0.0.1" in out, out
        assert secret not in out, out
    logged = log.read_text()
    assert "ssW0rd" not in logged and "error: storage postgresql://u:***@127.0.0.1" in logged, logged
