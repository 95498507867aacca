"""Several workers on one study in a real PostgreSQL: exact trial counts, a killed worker, a database outage.

Every worker is a real ``autoprune worker`` process started after one ``autoprune create``, on the tiny
digits study (a trial takes a second or two).  The studies of this module share one config folder, so
the baseline sweeps run once (``baselines.json`` is reused by the later ``create`` calls) while each test
gets a fresh database: on the server at 127.0.0.1:5432 when it answers, else in a private cluster
(:mod:`pg`).  The outage test always uses a private cluster, since it stops and restarts the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pg
import pytest
import yaml
from conftest import TINY_STUDY
from conftest import deep_merge
from conftest import run_cli
from dedup_checks import assert_each_vector_evaluated_once

from autoprune.search.duplicates import DUPLICATE_ATTR
from autoprune.search.duplicates import KEY_ATTR
from autoprune.space.widths import channels_key

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]
TrialState = optuna.trial.TrialState

# The tiny study with a generous budget, so both sweeps have feasible points and both baselines get
# enqueued; no early stop, so every finished trial is COMPLETE; seconds-long heartbeats for the kill test.
SEARCH_OVERRIDES: dict[str, Any] = {
    "name": "pg-digits",
    "max_drop": 0.9,
    "search": {
        "trials": 6, "sampler": "random", "sweep_ratios": [0.3, 0.5], "bounds_margin": 2, "heartbeat_interval": 1, "grace_period": 3, "max_retry": 2
    },
    "recovery": {"bn_batches": 2, "finetune_steps": 5},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5},
}


@pytest.fixture
def pg_url() -> Any:
    """A fresh database: on the shared server, else in a private cluster; skip (saying why) when neither works."""
    cm = pg.postgres_url("shared")
    try:
        url = cm.__enter__()
    except pg.PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL available: {exc}")
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def private_cluster() -> Any:
    try:
        cluster = pg.PrivateCluster().start()
    except pg.PostgresUnavailable as exc:
        pytest.skip(f"cannot start a private PostgreSQL cluster (the outage test stops and restarts it): {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def study_config(tmp_path_factory: pytest.TempPathFactory, tiny_study) -> Path:
    """The module's study YAML (trained tiny base, no hopeless early stop)."""
    data = deep_merge(TINY_STUDY, deep_merge(SEARCH_OVERRIDES, {"base": {"checkpoint": str(tiny_study.checkpoint)}}))
    data["search"]["hopeless_margin"] = None  # deep_merge treats None as "delete"
    path = tmp_path_factory.mktemp("pg-study") / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# Processes -------------------------------------------------------------------------------------------
@dataclass
class Proc:
    """A CLI process whose output goes to files (no pipe to fill up while the test polls the database)."""

    name: str
    popen: subprocess.Popen
    out: Path
    err: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not finish within {timeout:.0f}s\n{self.output()}") from None

    def output(self) -> str:
        return f"--- {self.name} stdout\n{self.out.read_text()}\n--- {self.name} stderr\n{self.err.read_text()[-6000:]}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def spawn(folder: Path, name: str, *args: str) -> Proc:
    """Start ``autoprune ARGS`` in a fresh interpreter (one torch thread, as on a shared host)."""
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with out.open("w") as o, err.open("w") as e:
        popen = subprocess.Popen(cmd, stdout=o, stderr=e, env=env, cwd=folder)
    return Proc(name, popen, out, err)


@pytest.fixture
def procs() -> Any:
    """Started processes; any still alive when the test ends are killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


# Reading the study -----------------------------------------------------------------------------------
_readers: dict[str, optuna.Study] = {}


def load(url: str) -> optuna.Study:
    """The study, read through one storage per URL (the tests poll it many times a second)."""
    if url not in _readers:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=True)
        _readers[url] = optuna.load_study(study_name="pg-digits", storage=storage)
    return _readers[url]


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return load(url).get_trials(deepcopy=False)


@pytest.fixture(autouse=True)
def _close_readers() -> Any:
    yield
    for study in _readers.values():
        study._storage._backend.engine.dispose()  # type: ignore[attr-defined]
    _readers.clear()


def wait_for(what: str, check: Callable[[], Any], timeout: float, procs: list[Proc], poll: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with every process's output on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p in procs:
            if p.popen.poll() is not None and p.popen.returncode != 0:
                raise AssertionError(f"{p.name} exited with {p.popen.returncode} while waiting for {what}\n{p.output()}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(p.output() for p in procs))


def create(config: Path, url: str) -> subprocess.CompletedProcess[str]:
    res = run_cli("create", config, "--storage", url)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def assert_exact_outcome(all_trials: list[optuna.trial.FrozenTrial], target: int, baseline_params: dict[str, dict[str, float]]) -> None:
    """Exactly ``target`` COMPLETE trials, nothing left RUNNING/WAITING, each baseline completed once."""
    states = Counter(t.state.name for t in all_trials)
    assert states["COMPLETE"] == target, f"{states}"
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, f"trials left behind: {states}"
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    for kind, params in baseline_params.items():
        runs = [t for t in complete if t.user_attrs.get("kind") == kind]
        assert len(runs) == 1, f"enqueued {kind} baseline completed {len(runs)} times: {[t.number for t in runs]}"
        assert runs[0].params == pytest.approx(params), f"{kind} baseline ran with {runs[0].params}, enqueued {params}"


# Tests ------------------------------------------------------------------------------------------------
def test_three_workers_finish_exactly_the_target(study_config: Path, pg_url: str, tmp_path: Path, procs: list[Proc]) -> None:
    target = 6
    create(study_config, pg_url)
    study = load(pg_url)
    assert study.user_attrs["target_trials"] == 6 and "bounds" in study.user_attrs
    queued = {t.user_attrs["kind"]: t for t in study.get_trials(states=(TrialState.WAITING,))}
    assert set(queued) == {"uniform", "global"}, f"create should enqueue both baselines, got {sorted(queued)}"
    baseline_params = {kind: _fixed_params(t) for kind, t in queued.items()}

    for i in range(3):
        procs.append(spawn(tmp_path, f"w{i}", "worker", study_config, "--storage", pg_url, "--trials", str(target), "--id", f"w{i}"))
    for p in procs:
        assert p.wait(timeout=400) == 0, p.output()

    all_trials = trials(pg_url)
    assert_exact_outcome(all_trials, target, baseline_params)
    for t in all_trials:
        if t.state == TrialState.FAIL:  # only the guard's refusals: a trial started when the target was already in reach
            assert t.user_attrs.get("surplus") is True, f"trial {t.number} failed: {t.user_attrs}"
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    by_worker = Counter(t.user_attrs["worker"] for t in complete)
    assert set(by_worker) <= {"w0", "w1", "w2"} and len(by_worker) >= 2, f"the workers did not share the study: {by_worker}"
    for t in complete:
        for key in ("metric", "drop", "feasible", "speedup", "latency_ms", "macs", "params", "channels", "stage_seconds", "host", "worker"):
            assert key in t.user_attrs, f"trial {t.number} lacks user attr {key!r}"
    for p in procs:
        assert f"study holds {target}/{target}" in p.out.read_text(), p.output()
        assert "Traceback" not in p.err.read_text(), p.output()


def _fixed_params(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The parameters an enqueued (WAITING) trial will run with."""
    return dict(trial.system_attrs["fixed_params"])


def test_two_workers_never_evaluate_one_channel_vector_twice(study_config: Path, pg_url: str, tmp_path: Path, procs: list[Proc]) -> None:
    # Nothing queued but copies of one channel vector: the two workers start together and pop the first two
    # copies side by side, so one finds the other evaluating the vector and waits for it (or finds it done).
    data = yaml.safe_load(study_config.read_text())
    data["search"]["enqueue_baselines"] = False
    data["artifact_dir"] = str(study_config.parent / "artifacts" / "pg-digits")  # the module's baselines.json
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    target = 4
    create(config, pg_url)
    study = load(pg_url)
    assert not study.get_trials(states=(TrialState.WAITING,))
    narrowest = {name: space["widths"][0] for name, space in study.user_attrs["search_space"].items()}
    for _ in range(target):
        study.enqueue_trial(narrowest)
    for i in range(2):
        procs.append(spawn(tmp_path, f"w{i}", "worker", config, "--storage", pg_url, "--trials", str(target), "--id", f"w{i}"))
    for p in procs:
        assert p.wait(timeout=400) == 0, p.output()

    everything = trials(pg_url)
    all_trials = [t for t in everything if t.state == TrialState.COMPLETE]
    assert len(all_trials) == target
    # Duplicates finish in a moment, so a worker may open a trial just as the other's brings the study to
    # its target: the surplus guard closes it unrun (FAIL, marked), which is all a non-COMPLETE trial may be.
    assert all(t.user_attrs.get("surplus") for t in everything if t.state != TrialState.COMPLETE), Counter(t.state.name for t in everything)
    assert {t.user_attrs[KEY_ATTR] for t in all_trials} == {channels_key(narrowest)}
    assert_each_vector_evaluated_once({channels_key(narrowest): all_trials})
    assert sum(DUPLICATE_ATTR in t.user_attrs for t in all_trials) == target - 1
    for p in procs:
        assert "Traceback" not in p.err.read_text(), p.output()


def test_killed_worker_trial_is_failed_and_retried(study_config: Path, pg_url: str, tmp_path: Path, procs: list[Proc]) -> None:
    target = 4
    create(study_config, pg_url)
    study = load(pg_url)
    space = study.user_attrs["search_space"]
    baseline_params = {t.user_attrs["kind"]: _fixed_params(t) for t in study.get_trials(states=(TrialState.WAITING,))}

    def victim_running() -> optuna.trial.FrozenTrial | None:
        for t in trials(pg_url):
            # All parameters suggested: the trial is in its (second-long) evaluation.
            if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == "victim" and len(t.params) == len(space):
                return t
        return None

    victim = spawn(tmp_path, "victim", "worker", study_config, "--storage", pg_url, "--trials", str(target), "--id", "victim")
    survivor = spawn(tmp_path, "survivor", "worker", study_config, "--storage", pg_url, "--trials", str(target), "--id", "survivor")
    procs += [victim, survivor]
    killed = wait_for("the victim's first running trial", victim_running, timeout=240, procs=procs)
    os.kill(victim.popen.pid, signal.SIGKILL)
    victim.popen.wait()
    state = next(t.state for t in trials(pg_url) if t.number == killed.number)
    assert state == TrialState.RUNNING, f"trial {killed.number} finished ({state.name}) before the kill landed; the test raced"

    assert survivor.wait(timeout=400) == 0, survivor.output()

    all_trials = trials(pg_url)
    by_number = {t.number: t for t in all_trials}
    assert by_number[killed.number].state == TrialState.FAIL, "the dead worker's trial was not failed after the grace period"
    retries = [t for t in all_trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1, f"expected one retry of trial {killed.number}, got {[t.number for t in retries]}"
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["worker"] == "survivor"
    assert retry.params == killed.params, "the retry did not run the killed trial's parameters"
    assert retry.user_attrs.get("kind") == killed.user_attrs.get("kind")
    assert_exact_outcome(all_trials, target, baseline_params)
    assert "Traceback" not in survivor.err.read_text(), survivor.output()


def test_database_outage_loses_nothing(study_config: Path, private_cluster: pg.PrivateCluster, tmp_path: Path, procs: list[Proc]) -> None:
    target = 6
    url = private_cluster.create_database("outage")
    secret = private_cluster.password
    created = create(study_config, url)
    assert secret not in created.stdout + created.stderr
    n_params = len(load(url).user_attrs["search_space"])
    for i in range(2):
        procs.append(spawn(tmp_path, f"w{i}", "worker", study_config, "--storage", url, "--trials", str(target), "--id", f"w{i}"))

    def mid_study() -> list[optuna.trial.FrozenTrial] | None:
        ts = trials(url)
        done = [t for t in ts if t.state == TrialState.COMPLETE]
        running = [t for t in ts if t.state == TrialState.RUNNING and t.params]
        return done if len(done) >= 2 and running and len(done) < target - 1 else None

    before = wait_for("two completed trials and one running", mid_study, timeout=300, procs=procs, poll=0.2)
    private_cluster.restart(down_seconds=5)

    codes = [p.wait(timeout=400) for p in procs]
    outputs = "\n".join(p.output() for p in procs)
    assert secret not in outputs, "a worker printed the database password"
    assert "Traceback" not in outputs, outputs
    for p, code in zip(procs, codes, strict=True):
        if code != 0:  # giving up is allowed, but only with one clear line
            last = p.err.read_text().strip().splitlines()[-1]
            assert code == 2 and last.startswith("error: storage") and "unreachable" in last, p.output()
    noticed = [p.name for p in procs if "storage unreachable" in p.err.read_text() or "error: storage" in p.err.read_text()]
    assert noticed, "no worker saw the outage; it did not happen mid-study\n" + outputs

    after = {t.number: t for t in trials(url)}
    for t in before:
        assert after[t.number].state == TrialState.COMPLETE and after[t.number].values == t.values, f"trial {t.number} was lost"
    if all(code == 0 for code in codes):
        states = Counter(t.state.name for t in after.values())
        assert states["COMPLETE"] == target and states["RUNNING"] == 0 and states["WAITING"] == 0, f"{states}"
        # A trial cut off in its evaluation (all parameters drawn) was failed as stale after the grace
        # period, and its retry completed with the same parameters.
        retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
        table = "\n".join(
            f"trial {t.number}: {t.state.name}, {len(t.params)} params, retry of {retried(t)}, "
            f"{ {k: t.user_attrs.get(k) for k in ('kind', 'worker', 'surplus')} }"
            for t in sorted(after.values(), key=lambda t: t.number)
        )
        for t in after.values():
            if t.state == TrialState.FAIL and len(t.params) == n_params:
                retry = [r for r in after.values() if retried(r) == t.number]
                assert any(r.state == TrialState.COMPLETE and r.params == t.params for r in retry), f"trial {t.number} was lost\n{table}\n{outputs}"
