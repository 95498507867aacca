"""Benchmark: how the study storages scale with worker processes (the cost of the machinery, not of pruning).

A trivial objective (sleep 200 ms, 16 per-group float parameters, two objectives) runs with 1, 4 and 16
worker processes on SQLite, the journal file and PostgreSQL.  Storages are opened with autoprune's own
:func:`autoprune.search.storage.open_storage` (pool_pre_ping, heartbeats every 10 s on the RDB storages) and
every worker loops like :func:`autoprune.search.worker.run_worker`: count the finished trials, then
``study.optimize(n_trials=1)``, until the study holds its target.  The sampler is ``RandomSampler`` so
that sampling cost does not hide the storage's (``--sampler tpe`` to see TPE's).

Before the workers start, the parent creates the schema and the study once (concurrent schema creation
races) and enqueues ``--enqueue`` (20) trials with fixed, distinct parameters.  Measured per run:

- trials/s: COMPLETE trials in the study / seconds from the moment every worker was ready (a barrier) to
  the moment the last one finished;
- errors: exceptions that escaped ``study.optimize`` in a worker, plus trials left FAIL or RUNNING;
- duplicates: extra executions of an enqueued parameter set (each enqueued trial carries an ``enq`` user
  attr; every worker logs what it ran), and extra COMPLETE trials per enqueued set;
- storage time: every public call on the study's storage object (``study._storage``: the cached RDB
  storage or the journal storage) from the worker's main thread is timed (outermost calls only); p50/p95/
  p99 per call, and p95 of the storage time per trial (one ``optimize`` call) and of the whole per-trial
  overhead (the ``optimize`` call minus the objective's sleep).

Each PostgreSQL run gets a fresh database (``CREATE DATABASE``, dropped afterwards) on ``--pg-url``'s server.

Target: PostgreSQL with 16 workers >= 10x the trials/s of one worker, zero errors, zero duplicates.

Run (full; writes ``benchmarks/results/storage_scaling.json`` and ``.png``)::

    python benchmarks/storage_scaling.py [--workers 1 4 16] [--backends sqlite journal postgresql]

Smoke run (1 and 2 workers, few short trials; writes ``*_quick`` files to a temp folder)::

    python benchmarks/storage_scaling.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import multiprocessing as mp
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "storage_scaling.json"
BACKENDS = ("sqlite", "journal", "postgresql")
TARGET_SCALING = 10.0
STUDY = "storage-scaling"
FULL = {"workers": [1, 4, 16], "enqueue": 20, "per_worker": 12, "min_trials": 60, "sleep": 0.2}
QUICK = {"workers": [1, 2], "enqueue": 4, "per_worker": 3, "min_trials": 8, "sleep": 0.05}


class StorageTimer:
    """Times every public method call on one storage object (outermost calls only, per thread).

    Install it on the object a study talks to (``study._storage``): Optuna's trials share that object, so
    suggest, tell, user attrs, heartbeats and trial listings are all timed from the caller's side.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []  # main-thread calls: (method, seconds)
        self.background: list[tuple[str, float]] = []  # other threads (heartbeats)
        self.main_total = 0.0
        self._local = threading.local()

    def install(self, storage: Any) -> Any:
        for name in dir(storage):
            if name.startswith("_"):
                continue
            attr = getattr(storage, name, None)
            if callable(attr) and not isinstance(attr, type):
                setattr(storage, name, self._wrap(name, attr))
        return storage

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        local = self._local

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                local.depth = depth
                if depth == 0:
                    spent = time.perf_counter() - start
                    if threading.current_thread() is threading.main_thread():
                        self.calls.append((name, spent))
                        self.main_total += spent
                    else:
                        self.background.append((name, spent))

        return timed


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def fixed_params(index: int, n_params: int) -> dict[str, float]:
    """Distinct, reproducible parameters of enqueued trial ``index``."""
    return {f"g{j:02d}": round(((index * 7919 + j * 104729) % 1000) / 1000.0, 3) for j in range(n_params)}


def open_bench_storage(url: str) -> Any:
    from autoprune.search.storage import open_storage

    return open_storage(url, heartbeat_interval=10, grace_period=30, max_retry=2)


def _worker(url: str, target: int, index: int, n_params: int, sleep_s: float, sampler_name: str,
            barrier: Any, results: Any) -> None:
    """One worker process: join the study, wait at the barrier, run trials until the target."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    out: dict[str, Any] = {"worker": index, "ran": [], "errors": [], "trial_wall": [], "trial_overhead": [], "trial_storage": []}
    try:
        storage = open_bench_storage(url)
        sampler = optuna.samplers.TPESampler(seed=index, multivariate=True) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=index)
        study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler)
        timer = StorageTimer()
        timer.install(study._storage)  # noqa: SLF001 - the object every trial of this study talks to
        FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    except Exception as exc:  # cannot even join: one error, no trials
        out["errors"].append(f"join: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        barrier.wait()
        out["finished_at"] = time.time()
        results.put(out)
        return

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        values = [trial.suggest_float(f"g{j:02d}", 0.0, 1.0) for j in range(n_params)]
        out["ran"].append([trial.number, trial.user_attrs.get("enq")])
        time.sleep(sleep_s)
        mean = sum(values) / len(values)
        return 1.0 - mean, mean

    barrier.wait()
    calls = 0
    while True:
        try:
            if len(study.get_trials(deepcopy=False, states=FINISHED)) >= target:
                break
        except Exception as exc:
            out["errors"].append(f"count: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        calls += 1
        if calls > 5 * target:
            out["errors"].append("gave up: too many optimize calls")
            break
        before = timer.main_total
        start = time.perf_counter()
        try:
            study.optimize(objective, n_trials=1, gc_after_trial=False)
        except Exception as exc:
            out["errors"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        wall = time.perf_counter() - start
        out["trial_wall"].append(wall)
        out["trial_overhead"].append(wall - sleep_s)
        out["trial_storage"].append(timer.main_total - before)
    out["finished_at"] = time.time()
    out["call_seconds"] = [s for _, s in timer.calls]
    out["call_counts"] = dict(Counter(name for name, _ in timer.calls))
    out["background_calls"] = len(timer.background)
    results.put(out)


# --- storages ---------------------------------------------------------------------------------------------


class PostgresServer:
    """Fresh databases on one PostgreSQL server (trust auth), dropped again afterwards."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)

    def _admin_dsn(self) -> str:
        return self.admin.set(drivername="postgresql").render_as_string(hide_password=False)

    def create(self) -> tuple[str, str]:
        import psycopg

        name = f"autoprune_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.admin.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
        return name, url

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_storage_url(backend: str, folder: pathlib.Path, pg: PostgresServer | None) -> tuple[str, Callable[[], None]]:
    """A fresh, empty storage of ``backend`` and a function that removes it."""
    tag = uuid.uuid4().hex[:8]
    if backend == "sqlite":
        path = folder / f"scaling-{tag}.db"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    if backend == "journal":
        path = folder / f"scaling-{tag}.log"
        return f"journal:{path}", lambda: path.unlink(missing_ok=True)
    assert pg is not None
    name, url = pg.create()
    return url, lambda: pg.drop(name)


# --- one run ----------------------------------------------------------------------------------------------


def run_one(backend: str, url: str, workers: int, target: int, enqueue: int, n_params: int, sleep_s: float, sampler: str) -> dict[str, Any]:
    """Create the study once, start ``workers`` processes, measure, read the study back."""
    import optuna

    storage = open_bench_storage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=["maximize", "maximize"])
    for i in range(enqueue):
        study.enqueue_trial(fixed_params(i, n_params), user_attrs={"enq": i})
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, target, i, n_params, sleep_s, sampler, barrier, results)) for i in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    started = time.time()
    outs = []
    for _ in procs:
        outs.append(results.get(timeout=1800))
    for p in procs:
        p.join(timeout=60)
    wall = max(o["finished_at"] for o in outs) - started

    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    completed_per_enq = Counter(t.user_attrs.get("enq") for t in trials if t.state.name == "COMPLETE" and "enq" in t.user_attrs)
    runs_per_enq = Counter(enq for o in outs for _, enq in o["ran"] if enq is not None)
    errors = [e for o in outs for e in o["errors"]]
    call_seconds = [s for o in outs for s in o.get("call_seconds", [])]
    per_trial_storage = [s for o in outs for s in o["trial_storage"]]
    per_trial_overhead = [s for o in outs for s in o["trial_overhead"]]
    call_counts: Counter[str] = Counter()
    for o in outs:
        call_counts.update(o.get("call_counts", {}))
    completed = states.get("COMPLETE", 0)
    if hasattr(storage, "remove_session"):
        storage.remove_session()
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()
    return {
        "backend": backend,
        "workers": workers,
        "target_trials": target,
        "wall_s": wall,
        "completed": completed,
        "trials_per_s": completed / wall if wall > 0 else None,
        "states": dict(states),
        "errors": len(errors) + states.get("FAIL", 0) + states.get("RUNNING", 0),
        "exceptions": len(errors),
        "error_samples": sorted(Counter(e.split(":")[0] for e in errors).items()),
        "error_messages": errors[:5],
        "duplicates": sum(max(0, c - 1) for c in runs_per_enq.values()),
        "duplicate_completed": sum(max(0, c - 1) for c in completed_per_enq.values()),
        "enqueued": enqueue,
        "enqueued_missing": sum(1 for i in range(enqueue) if completed_per_enq.get(i, 0) == 0),
        "executions": sum(len(o["ran"]) for o in outs),
        "storage_call_s": {
            "n": len(call_seconds),
            "p50": percentile(call_seconds, 0.50),
            "p95": percentile(call_seconds, 0.95),
            "p99": percentile(call_seconds, 0.99),
            "mean": statistics.fmean(call_seconds) if call_seconds else None,
        },
        "storage_per_trial_s": {"p50": percentile(per_trial_storage, 0.50), "p95": percentile(per_trial_storage, 0.95)},
        "overhead_per_trial_s": {"p50": percentile(per_trial_overhead, 0.50), "p95": percentile(per_trial_overhead, 0.95)},
        "calls_per_trial": {k: v / max(1, completed) for k, v in sorted(call_counts.items())},
        "heartbeat_calls": sum(o.get("background_calls", 0) for o in outs),
    }


# --- output -----------------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'backend':10} {'workers':>7} {'trials':>6} {'wall s':>7} {'trials/s':>8} {'x 1w':>6} {'errors':>6} {'dups':>5} "
          f"{'call p50 ms':>11} {'call p95 ms':>11} {'stor/trial p95':>14} {'ovh/trial p95':>13}")
    base = {r["backend"]: r["trials_per_s"] for r in rows if r.get("workers") == 1 and r.get("trials_per_s")}
    for r in rows:
        if r.get("skipped"):
            print(f"{r['backend']:10} {r['workers']:>7}   skipped: {r['skipped']}")
            continue
        speed = r["trials_per_s"]
        rel = f"{speed / base[r['backend']]:.1f}" if speed and base.get(r["backend"]) else "-"
        print(f"{r['backend']:10} {r['workers']:>7} {r['completed']:>6} {r['wall_s']:>7.1f} {speed:>8.2f} {rel:>6} {r['errors']:>6} "
              f"{r['duplicates']:>5} {ms(r['storage_call_s']['p50']):>11} {ms(r['storage_call_s']['p95']):>11} "
              f"{ms(r['storage_per_trial_s']['p95']):>14} {ms(r['overhead_per_trial_s']['p95']):>13}")


def plot(rows: list[dict[str, Any]], path: pathlib.Path, sleep_s: float) -> pathlib.Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for backend, marker in zip(BACKENDS, "osD", strict=True):
        pts = sorted((r["workers"], r["trials_per_s"]) for r in rows if r["backend"] == backend and not r.get("skipped") and r["trials_per_s"])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=backend)
            ones = [s for w, s in pts if w == 1]
            if ones and backend == "postgresql":
                ax.plot([1, max(p[0] for p in pts)], [ones[0], ones[0] * max(p[0] for p in pts)], linestyle=":", color="gray",
                        label="postgresql, linear from 1 worker")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xticks(sorted({r["workers"] for r in rows}))
    ax.set_xlabel("worker processes")
    ax.set_ylabel(f"trials/s (trivial {1000 * sleep_s:.0f} ms objective)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``--quick``'s smaller defaults filled in where an option was not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 4 16)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--enqueue", type=int, default=None, help="fixed-parameter trials enqueued first (default 20)")
    parser.add_argument("--per-worker", type=int, default=None, help="target trials per worker beyond the enqueued ones (default 12)")
    parser.add_argument("--min-trials", type=int, default=None, help="smallest target of finished trials (default 60)")
    parser.add_argument("--sleep", type=float, default=None, help="objective sleep in seconds (default 0.2)")
    parser.add_argument("--params", type=int, default=16, help="float parameters per trial (default %(default)s)")
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="admin connection to the PostgreSQL server; each run creates and drops its own database")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 workers, few 50 ms trials, output to a temp folder")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out:
        args.out = pathlib.Path(args.out)
    elif args.quick:
        args.out = pathlib.Path(tempfile.gettempdir()) / "autoprune-bench-quick" / "storage_scaling_quick.json"
    else:
        args.out = RESULTS
    return args


def run_all(args: argparse.Namespace, pg: PostgresServer | None) -> list[dict[str, Any]]:
    """One row per (backend, worker count): a :func:`run_one` result, or ``skipped`` with the reason."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="autoprune-scaling-"))
    rows: list[dict[str, Any]] = []
    try:
        for backend in args.backends:
            for n in args.workers:
                target = max(args.min_trials, args.enqueue + args.per_worker * n)
                try:
                    url, cleanup = make_storage_url(backend, folder, pg)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    print(f"{backend} x{n}: skipped ({reason})", flush=True)
                    rows.append({"backend": backend, "workers": n, "skipped": reason})
                    continue
                try:
                    row = run_one(backend, url, n, target, args.enqueue, args.params, args.sleep, args.sampler)
                finally:
                    cleanup()
                rows.append(row)
                print(f"{backend} x{n}: {row['completed']} trials in {row['wall_s']:.1f}s = {row['trials_per_s']:.2f}/s, "
                      f"errors {row['errors']}, duplicates {row['duplicates']}, storage call p95 {ms(row['storage_call_s']['p95'])} ms",
                      flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _find(rows: list[dict[str, Any]], backend: str, n: int) -> dict[str, Any] | None:
    """The measured (not skipped) row of ``backend`` with ``n`` workers."""
    return next((r for r in rows if r["backend"] == backend and r["workers"] == n and not r.get("skipped")), None)


def assess(rows: list[dict[str, Any]], workers: list[int]) -> tuple[dict[str, Any], dict[str, bool]]:
    """PostgreSQL's figures against the targets: ``(measured, met)``; nothing is met without a 1-worker run."""
    one, most = _find(rows, "postgresql", 1), _find(rows, "postgresql", max(workers))
    scaling = most["trials_per_s"] / one["trials_per_s"] if one and most and max(workers) > 1 else None
    pg_rows = [r for r in rows if r["backend"] == "postgresql" and not r.get("skipped")]
    measured = {
        "postgresql_scaling": scaling,
        "postgresql_max_workers": max(workers),
        "postgresql_errors": sum(r["errors"] for r in pg_rows),
        "postgresql_duplicates": sum(r["duplicates"] + r["duplicate_completed"] for r in pg_rows),
    }
    met = {
        "postgresql_scaling": scaling is not None and max(workers) >= 16 and scaling >= TARGET_SCALING,
        "postgresql_errors": one is not None and measured["postgresql_errors"] == 0,
        "postgresql_duplicates": one is not None and measured["postgresql_duplicates"] == 0,
    }
    return measured, met


def settings(args: argparse.Namespace, pg: PostgresServer | None) -> dict[str, Any]:
    """What the report records about how it was run (the server URL without its password)."""
    from autoprune.redact import redact_url

    return {
        "workers": args.workers,
        "backends": args.backends,
        "objective_sleep_s": args.sleep,
        "params": args.params,
        "objectives": 2,
        "sampler": args.sampler,
        "enqueued": args.enqueue,
        "target_trials": "max(min_trials, enqueued + per_worker * workers)",
        "min_trials": args.min_trials,
        "per_worker": args.per_worker,
        "storage": "autoprune.search.storage.open_storage (RDB: pool_pre_ping, heartbeat 10 s, grace 30 s)",
        "worker_loop": "count finished trials, then study.optimize(n_trials=1), as autoprune's run_worker",
        "postgresql_server": redact_url(args.pg_url) if pg else None,
    }


def print_verdict(rows: list[dict[str, Any]], measured: dict[str, Any], met: dict[str, bool]) -> None:
    """The table and one line per target."""
    print_table(rows)
    print()
    workers = measured["postgresql_max_workers"]
    if _find(rows, "postgresql", 1) is None:
        print("postgresql: no 1-worker run, targets not assessed")
        return
    scaling = measured["postgresql_scaling"]
    shown = "n/a" if scaling is None else f"{scaling:.1f}x"
    print(f"postgresql {workers} workers over 1: {shown} (target >= {TARGET_SCALING}x with 16 workers) "
          f"{'met' if met['postgresql_scaling'] else 'NOT met'}")
    print(f"postgresql errors {measured['postgresql_errors']} (target 0) {'met' if met['postgresql_errors'] else 'NOT met'}; "
          f"duplicates {measured['postgresql_duplicates']} (target 0) {'met' if met['postgresql_duplicates'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import optuna

    from autoprune.latency import host_fingerprint

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pg = PostgresServer(args.pg_url) if "postgresql" in args.backends else None
    started = time.perf_counter()
    rows = run_all(args, pg)
    measured, met = assess(rows, args.workers)
    report = {
        "benchmark": "storage_scaling",
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "settings": settings(args, pg),
        "targets": {"postgresql_scaling": f">= {TARGET_SCALING} (16 workers over 1)", "postgresql_errors": 0, "postgresql_duplicates": 0},
        "measured": measured,
        "met": met,
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    print_verdict(rows, measured, met)
    out = args.out
    png = plot(rows, out.with_suffix(".png"), args.sleep)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} and {png} ({report['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
