"""The distributed deployment: docker-compose.yml, Dockerfile, .env.example, and the same topology without Docker.

No Docker engine runs where these tests run, so the Docker files are checked by parsing them: every service
runs a real autoprune command whose arguments parse, the start order (postgres healthy -> init completed ->
workers and dashboard), the storage URL the containers get, the shared volumes, published ports on 127.0.0.1
only, no password beyond the documented local default, a non-root image with the ``autoprune`` entry point.

The last test runs the compose topology as plain processes: a private PostgreSQL cluster with a password,
one ``autoprune create``, three ``autoprune worker`` and one ``autoprune dashboard``, all reading the storage
from ``$AUTOPRUNE_STORAGE`` and sharing one artifact folder, as the containers do.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HANG_GUARD_S
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

# The one password the Docker files may name: a documented default for local use only.
LOCAL_DEFAULT = "autoprune-local"
PASSWORD_REF = "${POSTGRES_PASSWORD:-" + LOCAL_DEFAULT + "}"
APP_STUDIES = "/app/studies/"  # where ./studies is mounted inside the containers


# Helpers ------------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style variable interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-":
            return value if value else default
        if op == "-":
            return default if value is None else value
        if op in (":?", "?"):
            assert value, f"compose requires ${name}: {default}"
            return value
        return value or ""

    return _VAR.sub(sub, text)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<: *autoprune` merge keys like compose
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def is_autoprune_service(service: Mapping[str, Any]) -> bool:
    """Services that run the image built from this repository (entry point ``autoprune``)."""
    return "build" in service or "autoprune" in str(service.get("image", ""))


def command_args(service: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[str]:
    command = service.get("command")
    assert command, "an autoprune service needs a command (the image's entry point is just `autoprune`)"
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [interpolate(a, env or {}) for a in args]


def environment(service: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: interpolate(str(v), env or {}) for k, v in raw.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or a host path) of every volume of a service."""
    out = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        else:
            source, target = str(vol.get("source", "")), str(vol["target"])
        out[target.rstrip("/") or "/"] = source
    return out


def host_study(container_path: str) -> Path:
    assert container_path.startswith(APP_STUDIES), f"{container_path} is not under {APP_STUDIES} (./studies)"
    return ROOT / "studies" / container_path[len(APP_STUDIES) :]


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of every instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


# docker-compose.yml -------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_every_compose_command_is_a_real_autoprune_command() -> None:
    from autoprune.cli import main

    services = load_compose()["services"]
    ours = {name: svc for name, svc in services.items() if is_autoprune_service(svc)}
    assert {"init", "worker", "dashboard"} <= set(ours), sorted(services)
    seen = set()
    for name, svc in ours.items():
        args = command_args(svc)
        sub = args[0]
        assert sub in main.commands, f"service {name}: `autoprune {sub}` is not a command"
        help_run = run_cli(sub, "--help")
        assert help_run.returncode == 0, f"service {name}: autoprune {sub} --help failed:\n{help_run.stderr}"
        # The arguments parse as click would parse them in the container (option names, types, ranges).
        main.commands[sub].make_context(sub, list(args[1:]))
        # The study file exists in ./studies (mounted at /app/studies) and is a valid study.
        from autoprune.config import load_config

        load_config(host_study(args[1]))
        seen.add(sub)
    assert {"create", "worker", "dashboard"} <= seen
    assert command_args(ours["init"])[0] == "create"
    assert command_args(ours["worker"])[0] == "worker"
    dash = command_args(ours["dashboard"])
    assert dash[0] == "dashboard" and dash[dash.index("--host") + 1] == "0.0.0.0", "inside the container the dashboard must listen on 0.0.0.0"


def test_start_order_init_once_then_workers() -> None:
    services = load_compose()["services"]
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:"), "use the official postgres image"
    assert "pg_isready" in " ".join(map(str, pg["healthcheck"]["test"]))
    assert any(src and not src.startswith((".", "/")) for src in mounts(pg).values()), "postgres data needs a named volume"
    assert depends_on(services["init"]) == {"postgres": "service_healthy"}
    assert depends_on(services["worker"]).get("init") == "service_completed_successfully"
    assert depends_on(services["dashboard"]).get("init") == "service_completed_successfully", (
        "the dashboard opens the storage (and would create the schema) while init does: that races"
    )
    assert str(services["init"].get("restart", "no")) == "no", "init is one-shot"
    # `docker compose up --scale worker=N` needs a worker without a fixed name, port or replica count.
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker and "deploy" not in worker


def test_containers_share_storage_artifacts_and_lock() -> None:
    from sqlalchemy.engine import make_url

    from autoprune.config import load_config

    data = load_compose()
    services = data["services"]
    named = set(data.get("volumes") or {})
    for env in ({}, {"POSTGRES_PASSWORD": "0123abcd"}):
        pg_env = environment(services["postgres"], env)
        for name in ("init", "worker", "dashboard"):
            svc = services[name]
            url = make_url(environment(svc, env)["AUTOPRUNE_STORAGE"])
            assert url.get_backend_name() == "postgresql", f"{name}: {url.drivername}"
            assert url.host == "postgres" and url.host in services and (url.port or 5432) == 5432
            assert url.username == pg_env["POSTGRES_USER"] and url.database == pg_env["POSTGRES_DB"]
            assert url.password == pg_env["POSTGRES_PASSWORD"] == (env.get("POSTGRES_PASSWORD") or LOCAL_DEFAULT)
    # The driver SQLAlchemy picks for that URL is one the image installs (`pip install ".[postgres]"`) and
    # one this environment has.
    driver = url.get_dialect().driver
    extra = re.search(r"(?m)^postgres\s*=\s*\[(.*)\]", (ROOT / "pyproject.toml").read_text())
    assert extra, "pyproject.toml has no `postgres` extra"
    packages = [re.split(r"[\[<>=!~ ;]", req.strip().strip("'\""))[0] for req in extra.group(1).split(",") if req.strip()]
    assert any(p == driver or p.startswith(driver + "-") for p in packages), f"{url.drivername} needs {driver}; the extra has {packages}"
    url.get_dialect().import_dbapi()

    data_sources = set()
    for name in ("init", "worker", "dashboard"):
        svc = services[name]
        vols = mounts(svc)
        cfg = load_config(host_study(command_args(svc)[1]))
        artifacts = cfg.artifact_path().as_posix()
        on = [t for t in vols if artifacts == t or artifacts.startswith(t + "/")]
        assert on, f"{name}: artifact_dir {artifacts} is on no volume ({sorted(vols)})"
        source = vols[max(on, key=len)]
        assert source in named, f"{name}: artifact_dir must be on a named volume, not {source!r}"
        assert cfg.checkpoint_path().as_posix().startswith(max(on, key=len) + "/"), "the base checkpoint must be shared too"
        data_sources.add(source)
        lock_dir = environment(svc)["AUTOPRUNE_LOCK_DIR"]
        assert vols.get(lock_dir) in named, f"{name}: the timing lock folder {lock_dir} must be a shared named volume"
    assert len(data_sources) == 1, f"init, workers and dashboard must share one data volume, got {data_sources}"


def test_compose_study_is_digits_resnet_on_the_shared_volume() -> None:
    """studies/compose-digits.yaml differs from studies/digits-resnet.yaml only where compose needs it."""
    from autoprune.config import load_config

    compose = load_config(ROOT / "studies" / "compose-digits.yaml").model_dump()
    reference = load_config(ROOT / "studies" / "digits-resnet.yaml").model_dump()
    assert compose["artifact_dir"].startswith("/data/") and compose["storage"] is None
    for key in ("name", "artifact_dir"):
        compose.pop(key), reference.pop(key)
    assert compose == reference, "keep studies/compose-digits.yaml in step with studies/digits-resnet.yaml"


def test_published_ports_bind_to_localhost() -> None:
    services = load_compose()["services"]
    published = []
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), str(port.get("target"))
            else:
                parts = interpolate(str(port), {}).split(":")
                assert len(parts) == 3, f"{name}: port {port!r} must name the host address (127.0.0.1:HOST:CONTAINER)"
                host_ip, target = parts[0], parts[2]
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is published on all interfaces"
            published.append((name, target))
    assert published == [("dashboard", "8080")], published
    dash = command_args(services["dashboard"])
    assert dash[dash.index("--port") + 1] == "8080"


_SECRET_KEY = re.compile(r"(?i)(passw(or)?d|passwd|secret|token|api[_-]?key)")
_ASSIGN = re.compile(r"^\s*(?:-\s*)?(?:ENV\s+|ARG\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*[:=]\s*(.*)$")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^\s:/@]+:([^\s@]+)@", re.I)


def _content_lines(path: Path) -> list[tuple[int, str]]:
    return [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]


def test_no_password_beyond_the_documented_local_default() -> None:
    allowed = {"", PASSWORD_REF}
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        for number, line in _content_lines(path):
            where = f"{path.name}:{number}: {line.strip()}"
            # The local default only ever appears as the fallback of $POSTGRES_PASSWORD.
            assert line.count(LOCAL_DEFAULT) == line.count(PASSWORD_REF), where
            for secret in _URL_PASSWORD.findall(line):
                assert secret in allowed, f"password in a URL: {where}"
            m = _ASSIGN.match(line)
            if m and _SECRET_KEY.search(m.group(1)):
                value = m.group(2).strip().strip("'\"")
                assert value in allowed, f"hard-coded secret: {where}"
    env_example = dict(line.split("=", 1) for _, line in _content_lines(ENV_EXAMPLE))
    assert env_example.get("POSTGRES_PASSWORD") == "", ".env.example must not suggest a password value"
    # Every setting .env.example offers is one docker-compose.yml reads, with a default (empty = default).
    compose_text = COMPOSE.read_text()
    for key in env_example:
        assert "${" + key + ":-" in compose_text, f".env.example offers {key}, which docker-compose.yml does not read with a default"
    assert LOCAL_DEFAULT in DEPLOYMENT_DOC.read_text(), "the local default password must be documented"
    ignored = dockerignore_patterns()
    assert ".env" in ignored and ".git" in ignored, ".env and .git must stay out of the image's build context"


def test_dockerfile_non_root_with_autoprune_entrypoint() -> None:
    steps = dockerfile_instructions()
    kinds = [k for k, _ in steps]
    first_from = kinds.index("FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in steps[:first_from], "ARG BASE_IMAGE (default a CPU Python base) before FROM"
    assert steps[first_from][1] == "${BASE_IMAGE}"
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"') for k, rest in steps[first_from:] if k == "ARG" and "=" in rest}
    assert "TORCH_SPEC" in args and "TORCH_INDEX_URL" in args and args["TORCH_INDEX_URL"].endswith("/cpu")
    runs = [rest for k, rest in steps if k == "RUN"]
    assert any(
        "pip install" in r and "$TORCH_SPEC" in r and "$TORCH_INDEX_URL" in r for r in runs
    ), "torch must come from TORCH_SPEC / TORCH_INDEX_URL"
    assert any("pip install" in r and re.search(r"/src\[[^\]]*\bpostgres\b", r) for r in runs), "install autoprune with the postgres extra"
    users = [rest for k, rest in steps if k == "USER"]
    assert users, "the image must switch to an unprivileged USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"final USER is {users[-1]!r}"
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN"), "USER must come after the last RUN"
    entry = [rest for k, rest in steps if k == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["autoprune"], f"ENTRYPOINT must be the exec form [\"autoprune\"], got {entry}"
    # The compose file's build arguments match the Dockerfile's, defaults included.
    build_args = {k: interpolate(str(v), {}) for k, v in load_compose()["x-autoprune"]["build"]["args"].items()}
    assert build_args == {"BASE_IMAGE": "python:3.11-slim", **args}
    # What the Dockerfile copies exists and is not excluded from the build context.
    ignored = set(dockerignore_patterns())
    for k, rest in steps:
        if k == "COPY":
            for src in rest.split()[:-1]:
                if src.startswith("--"):
                    continue
                assert (ROOT / src).exists(), f"COPY {src}: missing in the repository"
                assert src not in ignored, f"COPY {src}: excluded by .dockerignore"


# The same topology without Docker ---------------------------------------------------------------------------


@contextmanager
def private_postgres(password: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (tests/pg.py) with role and database ``autoprune``, as in compose; yields the URL."""
    from pg import PostgresUnavailable
    from pg import PrivateCluster

    try:
        cluster = PrivateCluster(user="autoprune", password=password).start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no private PostgreSQL cluster: {exc}")
    try:
        yield cluster.create_database("autoprune")
    finally:
        cluster.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autoprune(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("autoprune")
    if script.is_file():
        return [str(script), *args]  # the console script, as the image's entry point runs it
    return [sys.executable, "-c", "from autoprune.cli import main; main()", *args]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


TOPOLOGY_STUDY: dict[str, Any] = {
    "name": "deploy-digits",
    "task": "digits",
    "task_options": {"image_size": 16, "seed": 0},
    "model": "resnet",
    "model_options": {"widths": [16, 32, 32]},
    "criterion": "l2",
    "max_drop": 0.05,
    "base": {"epochs": 3, "lr": 0.05, "batch_size": 32},
    "pruning": {"round_to": 8},
    "search": {"trials": 4, "sampler": "random", "seed": 0, "sweep_ratios": [0.3, 0.5], "heartbeat_interval": 5, "grace_period": 20},
    "recovery": {"bn_batches": 2, "finetune_steps": 5, "warmup_steps": 1},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5, "max_remeasure": 1, "lock": True},
}


@pytest.mark.slow
@pytest.mark.postgres
def test_compose_topology_without_docker(tmp_path: Path) -> None:
    """postgres -> create once -> 3 workers + dashboard, storage from $AUTOPRUNE_STORAGE, one shared data folder."""
    import optuna

    shared = tmp_path / "data"  # the `autoprune-data` volume
    study = dict(TOPOLOGY_STUDY, artifact_dir=str(shared / "artifacts" / "deploy-digits"))
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study, sort_keys=False))
    password = secrets.token_hex(12)  # generated: nothing to hard-code, and easy to spot if it leaks
    logs = tmp_path / "logs"
    logs.mkdir()
    with private_postgres(password) as url:
        env = dict(os.environ, AUTOPRUNE_STORAGE=url, AUTOPRUNE_LOCK_DIR=str(tmp_path / "locks"), OMP_NUM_THREADS="1")
        env.pop("PGPASSWORD", None)

        t0 = time.monotonic()
        created = subprocess.run(_autoprune("create", str(config)), capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
        assert created.returncode == 0, f"autoprune create failed:\n{created.stdout}\n{created.stderr}"
        assert "127.0.0.1" in created.stdout and password not in created.stdout + created.stderr
        create_s = time.monotonic() - t0

        port = _free_port()
        procs: dict[str, subprocess.Popen[str]] = {}
        try:
            for name, args in [("dashboard", ["dashboard", str(config), "--host", "127.0.0.1", "--port", str(port)])] + [
                (f"w{i}", ["worker", str(config), "--id", f"w{i}", "--wait", "60"]) for i in range(3)
            ]:
                out = open(logs / f"{name}.log", "w")
                procs[name] = subprocess.Popen(_autoprune(*args), stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
                out.close()

            # The dashboard lists the study (polled while the workers run).
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + HANG_GUARD_S  # start-up beside three workers may take minutes under load
            summaries = None
            while summaries is None:
                assert procs["dashboard"].poll() is None, (logs / "dashboard.log").read_text()
                try:
                    summaries = _get_json(base_url + "/api/studies")["study_summaries"]
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    assert time.monotonic() < deadline, f"the dashboard did not answer within {HANG_GUARD_S:.0f} s"
                    time.sleep(1.0)
            assert [s["study_name"] for s in summaries] == ["deploy-digits"]

            for i in range(3):
                rc = procs[f"w{i}"].wait(timeout=HANG_GUARD_S)
                assert rc == 0, f"worker w{i} exited {rc}:\n{(logs / f'w{i}.log').read_text()}"
            workers_s = time.monotonic() - t0 - create_s

            # Every trial is finished; the only failures allowed are surplus trials closed unrun at the target.
            trials = optuna.load_study(study_name="deploy-digits", storage=url).get_trials(deepcopy=False)
            states = Counter(t.state.name for t in trials)
            finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
            assert len(finished) >= 4, states
            assert not states.get("RUNNING") and not states.get("WAITING"), states
            assert all(t.user_attrs.get("surplus") for t in trials if t.state == optuna.trial.TrialState.FAIL), states
            complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
            assert complete, states
            store = shared / "artifacts" / "deploy-digits" / "optuna-artifacts"
            for t in complete:
                assert t.user_attrs["worker"] in {"w0", "w1", "w2"} and t.user_attrs.get("host_id"), t.user_attrs
                assert (store / t.user_attrs["arch_artifact_id"]).is_file(), "artifacts go to the shared folder"

            # The dashboard shows those trials and serves their artifacts from the shared store.
            study_id = summaries[0]["study_id"]
            detail = _get_json(f"{base_url}/api/studies/{study_id}")
            assert len(detail["trials"]) == len(trials)
            one = complete[0]
            with urllib.request.urlopen(f"{base_url}/artifacts/{study_id}/{one._trial_id}/{one.user_attrs['arch_artifact_id']}", timeout=10) as r:
                assert r.status == 200 and json.loads(r.read())["groups"]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        outputs = "".join(p.read_text() for p in logs.iterdir())
        assert password not in outputs, "the database password leaked into a log"
        ran_by = Counter(t.user_attrs.get("worker") for t in complete)
        print(f"create {create_s:.0f}s, workers {workers_s:.0f}s, states {dict(states)}, trials per worker {dict(ran_by)}")
