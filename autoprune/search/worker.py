"""Workers: join a ready study and run trials until it holds its target of finished trials.

A worker runs ``study.optimize(n_trials=1)`` in a loop (heartbeats only work inside ``optimize``), checks
the target before every trial, survives a database that is briefly away (retry with backoff, then exit
with a clear message) and never recomputes the bounds.  :func:`run_local` starts N worker processes and
shows one progress bar.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing as mp
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING

import optuna

from autoprune import console
from autoprune.config import load_config
from autoprune.config import validated_copy
from autoprune.device import DEVICE_ENV
from autoprune.device import check_device
from autoprune.device import check_targets
from autoprune.device import gpu_devices
from autoprune.errors import AutopruneError
from autoprune.errors import StorageError
from autoprune.redact import redact_url
from autoprune.search.duplicates import fail_stale
from autoprune.search.objective import FINISHED
from autoprune.search.objective import Objective
from autoprune.search.objective import SurplusTrial
from autoprune.search.objective import finished_count
from autoprune.search.record import read
from autoprune.search.storage import check_workers
from autoprune.search.storage import transient_cause
from autoprune.search.storage import with_retry
from autoprune.search.study import make_sampler
from autoprune.search.study import storage_for
from autoprune.search.study import wait_for_study
from autoprune.search.study_config import reconcile
from autoprune.selection.artifacts import study_store
from autoprune.trial.calibration import RECIPE_ATTR
from autoprune.trial.calibration import with_recipe
from autoprune.trial.candidate import StudyContext

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.trial.candidate import StudyContext

log = logging.getLogger("autoprune")


def _echo(line: str) -> None:
    console.note(line)  # above the progress bar, never glued to it; hidden by --quiet


@dataclass
class WorkerSummary:
    worker: str
    ran: int
    finished: int
    target: int


def run_worker(
    config_path: str,
    storage_url: str | None = None,
    target: int | None = None,
    worker: str | None = None,
    worker_index: int = 0,
    wait_timeout: float = 600.0,
    log_line: Callable[[str], None] = _echo,
    local_workers: int = 1,
) -> WorkerSummary:
    """Join the study of ``config_path`` and run trials until it holds ``target`` finished trials.

    Args:
        config_path: the study YAML.
        storage_url: storage override (default: the config's).
        target: finished trials to reach (default: the study's ``target_trials``).
        worker: worker id for logs and trial attrs (default: ``host:pid``).
        worker_index: offsets the sampler seed.
        wait_timeout: seconds to wait for the study to be created.
        log_line: prints one line.
        local_workers: worker processes sharing this host's cores (sets the default torch thread count).

    Returns:
        How many trials this worker ran and how many the study holds.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    local = load_config(config_path)
    check_targets(local)  # before waiting for the study: a worker that cannot run should say so at once
    url = local.storage_url(storage_url)
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_timeout
    store = study_store(local, budget_s=wait_timeout)  # a store that never answers is reported within --wait too
    study = wait_for_study(local, url, max(0.0, deadline - time.monotonic()), say=log_line)
    # Every setting that changes results comes from the study; a local file that differs in one is refused.
    config = reconcile(study.user_attrs, local, log_line)
    ctx = _study_context(config, study)
    threads = set_torch_threads(config.search.torch_threads, local_workers)
    goal = int(target or study.user_attrs.get("target_trials") or config.search.trials)
    study = optuna.load_study(study_name=config.name, storage=storage_for(config, url), sampler=make_sampler(config, worker_index))
    objective = Objective(ctx, study, goal, worker, log_line, store=store)
    log_line(
        f"[{worker}] joined study {config.name!r} at {redact_url(url)}; target {goal} finished trials; {threads} torch threads; "
        f"device {objective.device}, timing on {ctx.latency.provider}"
    )
    _quiet_surplus_logs()
    ran = _run_until_target(study, objective, url, goal, worker, config.search.grace_period, log_line)
    done = finished_count(study)
    log_line(f"[{worker}] done: ran {ran} trials; the study holds {done}/{goal} finished trials")
    return WorkerSummary(worker, ran, done, goal)


def _study_context(config: StudyConfig, study: optuna.Study) -> StudyContext:
    """The study context on this host, set up as the study was created (grid, recipe, base checkpoint)."""
    if not config.checkpoint_path().is_file():
        sha = study.user_attrs.get("base_sha256", "?")
        raise StorageError(
            f"base checkpoint {config.checkpoint_path()} not found on this host; copy the study's base checkpoint "
            f"(sha256 {sha[:12]}...) there or point 'base.checkpoint' at a shared path"
        )
    if config.pruning.round_to == "auto" and study.user_attrs.get("round_to"):
        # Every worker prunes on the grid the study was created with, whatever this host's CPU prefers.
        config = validated_copy(config, pruning=validated_copy(config.pruning, round_to=int(study.user_attrs["round_to"])))
    config = with_recipe(config, study.user_attrs.get(RECIPE_ATTR))  # the study's calibrated recovery recipe
    ctx = StudyContext.build(config)
    if study.user_attrs.get("base_sha256") not in (None, ctx.base_info.sha256):
        raise StorageError(
            f"study {config.name!r} was created from another base checkpoint than {ctx.base_info.path}; "
            "copy the study's checkpoint to this host"
        )
    return ctx


def _run_until_target(
    study: optuna.Study,
    objective: Objective,
    url: str,
    goal: int,
    worker: str,
    grace_period: float,
    log_line: Callable[[str], None],
) -> int:
    """Run trials until the study holds ``goal`` finished trials; returns how many this worker ran."""
    ran = 0
    waiting_said = False
    while True:
        done, running, waiting = with_retry(lambda: _trial_counts(study), url, "count finished trials")
        if done >= goal:
            break
        if not waiting and done + running >= goal:
            # Other workers' running trials will reach the target: wait for them instead of opening trials
            # that the surplus guard would close unrun (a busy loop of FAIL trials).
            if not waiting_said:
                log_line(f"[{worker}] {done}/{goal} finished, {running} running elsewhere; waiting for them")
                waiting_said = True
            _clear_dead_trials(study, url, worker, grace_period, log_line)
            time.sleep(_WAIT_POLL_S)
            continue
        ran += _run_one_trial(study, objective, url, worker, log_line)
    return ran


def _clear_dead_trials(study: optuna.Study, url: str, worker: str, grace_period: float, log_line: Callable[[str], None]) -> None:
    """Fail stale and unclaimed trials, so a dead worker's trial cannot block the study (its retry comes back WAITING)."""
    with_retry(lambda: fail_stale(study), url, "check for stale trials")
    for number in with_retry(lambda: _fail_unclaimed(study, grace_period), url, "check for unclaimed trials"):
        log_line(f"[{worker}] trial {number} was opened but never claimed by a worker (cut off by an outage); failed it")


def _run_one_trial(study: optuna.Study, objective: Objective, url: str, worker: str, log_line: Callable[[str], None]) -> int:
    """Run one trial, riding out a storage outage; returns 1 when it ran (not closed as surplus), else 0."""
    try:
        surplus_before = objective.surplus
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        return int(objective.surplus == surplus_before)
    except AutopruneError:
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker failed this trial as stale (no heartbeat got through, e.g. during an outage)
        # and queued its retry; the retry runs it again, so this run's result is dropped.
        log_line(f"[{worker}] the running trial was failed as stale by another worker; its retry is queued; carrying on")
    except Exception as exc:
        cause = transient_cause(exc)
        if cause is None:
            raise
        _reconnect(study, objective, url, worker, cause, log_line)
    return 0


def _reconnect(
    study: optuna.Study, objective: Objective, url: str, worker: str, cause: BaseException, log_line: Callable[[str], None]
) -> None:
    """Wait for the storage to come back, then fail the trial the outage cut off and queue its retry."""
    log_line(f"[{worker}] storage unreachable ({type(cause).__name__}); reconnecting with backoff")
    with_retry(lambda: finished_count(study), url, "reconnect to the study storage", attempts=10)
    orphan = with_retry(lambda: _fail_orphan(study, objective.current_trial_id), url, "fail the interrupted trial")
    if orphan is not None:
        log_line(f"[{worker}] trial {orphan} was cut off by the outage; failed it and queued its retry")
    log_line(f"[{worker}] storage reachable again; carrying on")


_WAIT_POLL_S = 1.0


def _trial_counts(study: optuna.Study) -> tuple[int, int, int]:
    """``(finished, running, waiting)`` trials of the study."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return (
        sum(s in FINISHED for s in states),
        states.count(optuna.trial.TrialState.RUNNING),
        states.count(optuna.trial.TrialState.WAITING),
    )


def _fail_orphan(study: optuna.Study, trial_id: int | None) -> int | None:
    """Fail this worker's trial that an outage left RUNNING, and queue its retry like a stale trial's.

    Optuna only fails trials whose heartbeat went stale; a trial cut off before its first heartbeat got
    through has none and would stay RUNNING for ever, holding the other workers at the target.  Optuna has
    no public call to fail another trial, hence the storage methods.
    """
    if trial_id is None:
        return None
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING:
        return None
    try:
        if not storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if callback is not None and frozen.params:
        callback(study, storage.get_trial(trial_id))
    return frozen.number


def _fail_unclaimed(study: optuna.Study, grace_period: float) -> list[int]:
    """Fail RUNNING trials that no worker claimed (no ``worker`` attr) for longer than the grace period.

    An outage can cut ``study.optimize`` off after Optuna opened a trial and before the objective ran (the
    sampler reads the study in between): no worker knows the trial, no heartbeat was ever recorded, so
    neither the worker's own orphan check nor Optuna's stale check fails it, and the study would wait for
    it for ever.  The objective claims a trial within a second of its start, so an older unclaimed trial is
    dead.  It has drawn no parameters of ours, so nothing is lost and no retry is queued.

    Returns:
        The numbers of the trials failed.
    """
    now = datetime.datetime.now()  # Optuna reports datetime_start as local time without a zone
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if read(t).worker is not None or t.datetime_start is None:
            continue
        if (now - t.datetime_start).total_seconds() > grace_period + _WAIT_POLL_S:
            if _fail_orphan(study, t._trial_id) is not None:
                failed.append(t.number)
    return failed


class _SurplusNote(logging.Filter):
    """Optuna logs a failed trial with a traceback.  A trial closed by the surplus guard gets one plain line
    instead; one ended by an :class:`AutopruneError` (e.g. ``latency.max_seconds`` reached) gets none, because
    the worker stops on it and prints its message once."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SurplusTrial):
            record.msg, record.args = f"{exc}; closed without running", ()
            record.exc_info, record.exc_text = None, None
        return not isinstance(exc, AutopruneError)


def _quiet_surplus_logs() -> None:
    root = logging.getLogger("optuna")
    for handler in root.handlers:
        if not any(isinstance(f, _SurplusNote) for f in handler.filters):
            handler.addFilter(_SurplusNote())


def _worker_main(config_path: str, storage_url: str | None, target: int, index: int, queue: mp.Queue[str], workers: int) -> None:
    """One process of ``autoprune run --workers N``: its lines go to the parent, which writes them above its bar."""
    console.forward_to(queue)
    try:
        run_worker(config_path, storage_url, target, worker=f"w{index}", worker_index=index, local_workers=workers)
    except AutopruneError as exc:
        log.error(f"[w{index}] {exc}")
        sys.exit(2)


def _gpu_worker_main(
    config_path: str, storage_url: str | None, target: int | None, worker: str, index: int, device: str, workers: int,
    wait_s: float,
) -> None:
    """One process of ``autoprune worker --gpus``: its own device, then the ordinary worker loop."""
    os.environ[DEVICE_ENV] = device
    try:
        run_worker(config_path, storage_url, target, worker=worker, worker_index=index, wait_timeout=wait_s, local_workers=workers)
    except AutopruneError as exc:
        _echo(f"[{worker}] error: {exc}")
        sys.exit(2)


def run_gpu_workers(
    config_path: str,
    storage_url: str | None,
    target: int | None,
    gpus: str,
    worker: str | None = None,
    wait_timeout: float = 600.0,
) -> int:
    """``autoprune worker --gpus 0,1``: one worker process per listed GPU, each on its own device.

    Args:
        config_path: the study YAML.
        storage_url: storage override (a server or journal storage: several processes write to it).
        target: finished trials to reach (default: the study's).
        gpus: comma-separated GPU numbers (``$AUTOPRUNE_FAKE_GPUS`` maps each to the CPU, for tests).
        worker: worker id prefix (default: ``host``); each process appends ``-gpuN``.
        wait_timeout: seconds to wait for the study to be created.

    Returns:
        The number of worker processes that failed.
    """
    devices = gpu_devices(gpus)
    config = load_config(config_path)
    for device in devices:  # refused here once, not by every process
        check_device(device, where="--gpus", fix="list GPUs this host has (or drop --gpus)")
        check_targets(validated_copy(config, device=device))  # the provider too, on the GPU that device times on
    check_workers(config.storage_url(storage_url), len(devices))
    numbers = [p.strip() for p in gpus.split(",") if p.strip()]
    prefix = worker or socket.gethostname()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_gpu_worker_main,
            args=(config_path, storage_url, target, f"{prefix}-gpu{n}", i, device, len(devices), wait_timeout),
        )
        for i, (n, device) in enumerate(zip(numbers, devices, strict=True))
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    return sum(1 for p in procs if p.exitcode != 0)


def set_torch_threads(configured: int | None, local_workers: int = 1) -> int:
    """Set torch's intra-op threads for this worker and return the count.

    Args:
        configured: ``search.torch_threads`` (None: this process's usable cores shared by the local workers,
            less the cores other processes keep busy right now).
        local_workers: worker processes on this host.

    Returns:
        The thread count set.  N workers on one host share its cores: without this each would start one
        training thread per core, 5-10x slower as soon as they contend; a host another job keeps busy gets
        fewer threads for the same reason.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, local_workers))
    threads = configured or max(1, min(share, cores - round(others_busy_cores())))
    torch.set_num_threads(threads)
    return threads


def others_busy_cores(window_s: float = 0.3) -> float:
    """Cores that processes other than this one keep busy, measured over ``window_s`` (0 where /proc is missing).

    The host's busy time (``/proc/stat``) less this process's own CPU time over the same window.
    """
    def host_busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(f) for f in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    before, own_before, start = host_busy(), time.process_time(), time.monotonic()
    time.sleep(window_s)
    after, own_after, elapsed = host_busy(), time.process_time(), time.monotonic() - start
    if before is None or after is None or elapsed <= 0:
        return 0.0
    return max(0.0, (after - before) - (own_after - own_before)) / elapsed


def run_local(
    config_path: str,
    storage_url: str,
    workers: int,
    target: int,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> int:
    """Run ``workers`` worker processes on this host until the study holds ``target`` finished trials.

    Args:
        config_path: the study YAML.
        storage_url: the storage (must be safe for several workers when ``workers > 1``).
        workers: number of processes (1 runs in this process).
        target: finished trials to reach.
        progress: called with ``(finished, target, best feasible speedup)`` as trials finish.

    Returns:
        The number of workers that failed.
    """
    config = load_config(config_path)
    reader = optuna.load_study(study_name=config.name, storage=storage_for(config, storage_url)) if progress else None

    def refresh() -> None:
        if reader is not None and progress is not None:
            report_progress(reader, target, progress)

    if workers == 1:
        def tick(line: str) -> None:
            _echo(line)
            refresh()

        run_worker(config_path, storage_url, target, worker="w0", log_line=tick)
        refresh()
        return 0
    return _run_processes(config_path, storage_url, workers, target, refresh)


def _run_processes(config_path: str, storage_url: str, workers: int, target: int, refresh: Callable[[], None]) -> int:
    """Start ``workers`` spawned worker processes, write their lines and refresh the bar until all end.

    Returns:
        The number of processes that failed.
    """
    ctx = mp.get_context("spawn")
    queue: mp.Queue[str] = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(config_path, storage_url, target, i, queue, workers), daemon=False)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            try:
                refresh()
            except Exception:  # the bar is cosmetic; workers report storage problems themselves
                pass
            _write_lines(queue, 2.0)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    for p in procs:
        p.join()
    _write_lines(queue, 0.0)
    refresh()
    return sum(1 for p in procs if p.exitcode != 0)


def _write_lines(queue: mp.Queue[str], seconds: float) -> None:
    """Write the worker processes' lines as they arrive, for ``seconds`` (0: only those already there)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            console.write_forwarded(queue.get(timeout=max(0.0, deadline - time.monotonic()) or 0.05))
        except Empty:
            if time.monotonic() >= deadline:
                return


def report_progress(study: optuna.Study, target: int, progress: Callable[[int, int, float | None], None]) -> None:
    """Read the study and call ``progress(finished, target, best feasible speedup)``."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    records = [read(t) for t in trials]
    feasible = [r.own_timing.speedup for r in records if r.feasible]
    best = max((s for s in feasible if s is not None), default=None)
    progress(len(trials), target, best)


__all__ = ["WorkerSummary", "run_gpu_workers", "run_local", "run_worker"]
