"""``autoprune dashboard``: a smoke test of the real optuna-dashboard server on a study's SQLite storage.

The study is made with Optuna directly (two directions, one trial with autoprune's user attrs) in the
config's SQLite file or in a private PostgreSQL cluster (a URL with a password, which must not be
printed); what is under test is the command: it starts, answers the dashboard's API on 127.0.0.1 and
stops when terminated; a busy port is refused with one clear line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
import pg
import pytest
from conftest import HANG_GUARD_S
from conftest import run_cli
from conftest import write_study

from autoprune.redact import redact_url

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


@pytest.fixture(scope="module", autouse=True)
def _default_storage() -> Iterator[None]:
    """These tests use the config's default storage: an exported AUTOPRUNE_STORAGE must not redirect them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOPRUNE_STORAGE", raising=False)
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The config's default SQLite file, or a database in a private PostgreSQL cluster whose role has a password."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dash-digits.db'}"
        return
    try:
        cm = pg.postgres_url(prefer="private")
        url = cm.__enter__()
    except pg.PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def study_config(tmp_path: Path, storage_url: str) -> Path:
    """A config (default storage: the SQLite file above) and a two-objective study with one finished trial."""
    config = write_study(tmp_path, {"name": "dash-digits"})
    study = optuna.create_study(study_name="dash-digits", storage=storage_url, directions=["maximize", "maximize"])
    study.set_metric_names(["accuracy", "speedup"])
    study.set_user_attr("max_drop", 0.05)
    trial = study.ask({"stem.0": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.5)})
    for key, value in {"metric": 0.95, "drop": 0.01, "feasible": True, "speedup": 1.4, "worker": "w0"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [0.95, 1.4])
    return config


def test_dashboard_serves_the_study(study_config: Path, storage_url: str, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", "dashboard", str(study_config), "--port", str(port)]
    if storage_url.startswith("postgresql"):
        cmd += ["--storage", storage_url]
    err = tmp_path / "dashboard.err"
    with err.open("w") as e:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=e, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + HANG_GUARD_S  # start-up may take minutes on a busy host
        status, body = 0, b""
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the dashboard exited with {proc.returncode}:\n{err.read_text()}"
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                time.sleep(0.3)
        assert status == 200, f"no answer from the dashboard within {HANG_GUARD_S:.0f} s (status {status}):\n{err.read_text()}"
        studies = json.loads(body)["study_summaries"]
        names = {s["study_name"]: s["study_id"] for s in studies}
        assert "dash-digits" in names, studies
        status, body = get(f"http://127.0.0.1:{port}/api/studies/{names['dash-digits']}")
        assert status == 200
        detail = json.loads(body)
        assert detail["name"] == "dash-digits" and len(detail["trials"]) == 1
        assert detail["trials"][0]["values"] == [0.95, 1.4]
        assert get(f"http://127.0.0.1:{port}/api/studies/999999")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the dashboard did not stop on SIGTERM")
    text = err.read_text()
    assert f"optuna-dashboard for {redact_url(storage_url)} at http://127.0.0.1:{port}/" in text and "optuna-artifacts" in text, text
    password = urlsplit(storage_url).password
    assert not password or password not in text, "the dashboard printed the database password"
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{port}/api/studies")


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_dashboard_on_a_busy_port_says_so(study_config: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli("dashboard", study_config, "--port", str(port))
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith(f"error: cannot serve the dashboard on 127.0.0.1:{port}") and "pick another --port" in err[-1], res.stderr
    assert "Traceback" not in res.stderr
