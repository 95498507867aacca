"""Benchmark: where the time of one search trial goes, what reuse between trials saves, and how much is machinery.

For each config (default: both digits configs and shapes) two studies run in one process, each on a fresh
SQLite file and latency cache, created with autoprune's :func:`~autoprune.search.study.create_or_load` (the
uniform/global sweeps run once, or are reused from the config's ``baselines.json`` when it was made for the
same base model, budget and sweep): one with the reuse between trials ON (the teacher's outputs per finetune
batch, the unpruned model's importance scores, the base's ONNX Runtime session), one with it OFF.  Their trials
alternate (on, off, off, on, ...), each run's reuse swapped in before its own trial, so a change of the host's
load between trials falls on both runs alike.  Each runs ``--trials`` trials through autoprune's
:class:`~autoprune.search.objective.Objective` the way a worker runs them (``study.optimize(n_trials=1)``),
drawn by ``RandomSampler(search.seed)`` with screening off, so both runs evaluate the same candidates in full
and must give the same kept channels and metrics.

Per trial, the stages the trial records in its ``stage_seconds`` user attr: prune, bn_recalibration,
evaluate_after_bn, finetune, evaluate, export, latency, storage (artifact uploads and user-attr writes); plus "other": the
rest of the ``optimize`` call (sampling, the per-group ``suggest`` calls, ask/tell, the surplus check).
Every call on the study's storage object is also timed (outermost calls, main thread) and reported as
"storage calls": it overlaps "storage" and "other" (it is the database's share of both).

Per config: ``reuse_speedup`` (mean trial time off / on; target >= 1.3) with the per-candidate ratios
(``paired_ratios``), ``reuse_ceiling`` (the most any reuse could give: the off run's trial time over that time
less its reusable work, the seconds spent in teacher forwards, unpruned-model scoring and base session opens),
``machinery_share`` (with the reuse on, the share of trial time outside BN recalibration, finetune and the two
evaluations; target <= 0.10) and ``same_results``.  The load average at the start and end is recorded: other
jobs on the host inflate every trial time, and did inflate an earlier run's ratios.

Run (full; writes ``benchmarks/results/trial_overhead.json``)::

    OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py [--config studies/reference.yaml ...] [--trials 12]

Smoke run (tiny settings, 2-epoch base models in a temp folder; writes a ``*_quick`` file to a temp folder)::

    python benchmarks/trial_overhead.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from search_methods import QUICK  # noqa: E402
from search_methods import build_context  # noqa: E402
from search_methods import fresh_cache  # noqa: E402
from search_methods import prepare_config  # noqa: E402
from search_methods import quick_path  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import ran_trials  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import sqlite_url  # noqa: E402
from search_methods import trial_rows  # noqa: E402
from search_methods import trial_states  # noqa: E402
from storage_scaling import StorageTimer  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "trial_overhead.json"
CONFIGS = ("studies/digits-resnet.yaml", "studies/digits-mobilenet.yaml", "studies/shapes-resnet.yaml")
STAGES = ("prune", "bn_recalibration", "evaluate_after_bn", "finetune", "evaluate", "export", "latency", "storage")
# The work a trial is for: recovering the candidate and measuring it.  The rest (pruning, export, timing,
# storage, sampling) is machinery.
USEFUL = ("bn_recalibration", "evaluate_after_bn", "finetune", "evaluate")
TARGETS = {"reuse_speedup": 1.3, "machinery_share": 0.10}
METRIC_TOLERANCE = 1e-6


def reuse_baselines(config_path: str, cfg: Any) -> str | None:
    """Copy the config's own ``baselines.json`` (if any) where create_or_load looks, with its recipe calibration
    (``recovery-calibration.json``) when there is one; create_or_load re-checks that both fit this base."""
    from autoprune.config import load_config
    from autoprune.space.baselines import load_baselines

    folder = load_config(config_path).artifact_path()
    if load_baselines(folder / "baselines.json") is None:
        return None
    target = cfg.artifact_path()
    target.mkdir(parents=True, exist_ok=True)
    for name in ("baselines.json", "recovery-calibration.json"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, target / name)
    return str(folder / "baselines.json")


class ReuseState:
    """What one run keeps between its trials, swapped into the shared context before each of its trials.

    Both runs share one process and one context (the base model, task and pruner), so their trials can
    alternate: ``on`` keeps the teacher's outputs, the unpruned model's importance scores and the base's
    ONNX Runtime session between its own trials; ``off`` keeps none of them.  Each run has its own latency
    cache (fresh, so neither reuses the other's timings).
    """

    def __init__(self, on: bool, defaults: tuple[int, int], cache: Any) -> None:
        self.on = on
        self.teacher_bytes_limit, self.sessions = defaults
        self.cache = cache
        self.teacher_cache: dict[Any, Any] = {}
        self.teacher_bytes = 0
        self.score_cache: dict[Any, Any] = {}
        self.baselines: dict[Any, Any] = {}

    def enter(self, ctx: Any) -> None:
        """Make this run's reuse (and latency cache) the context's."""
        from autoprune.latency import _timer

        ctx.teacher.max_bytes = self.teacher_bytes_limit if self.on else 0
        ctx.teacher.cache = self.teacher_cache if self.on else {}
        ctx.teacher.bytes = self.teacher_bytes if self.on else 0
        ctx.pruner.reuse_scores = self.on
        ctx.pruner._score_cache = self.score_cache if self.on else {}  # noqa: SLF001
        _timer.BASELINE_SESSIONS = self.sessions if self.on else 0
        _timer._BASELINES = self.baselines if self.on else {}  # noqa: SLF001
        ctx.cache = self.cache

    def leave(self, ctx: Any) -> None:
        """Keep what this run's trial added (the cache dicts are this run's own objects)."""
        self.teacher_bytes = ctx.teacher.bytes


class ReusableWork:
    """Seconds spent in the work the reuse saves: the teacher's forward passes, the unpruned model's importance
    scores, opening the base's ONNX Runtime session.  In the reuse-off run this is the whole of what reuse
    could ever save, so ``1 / (1 - reusable share of its trials)`` bounds ``reuse_speedup`` from above."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def install(self, ctx: Any) -> None:
        from autoprune.latency import _timer

        ctx.teacher.outputs = self._timed(ctx.teacher.outputs)
        ctx.pruner._step_scores = self._timed(ctx.pruner._step_scores)  # noqa: SLF001
        _timer.baseline_session = self._timed(_timer.baseline_session)

    def _timed(self, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


@dataclasses.dataclass
class Run:
    """One of the two studies of a config: its study, objective, reuse state and per-trial measurements."""

    label: str
    reuse: ReuseState
    study: Any
    objective: Any
    setup_s: float
    timer: StorageTimer
    walls: dict[int, float] = dataclasses.field(default_factory=dict)
    storage_calls: dict[int, float] = dataclasses.field(default_factory=dict)
    reusable: dict[int, float] = dataclasses.field(default_factory=dict)
    calls: int = 0


def open_run(ctx: Any, workdir: pathlib.Path, trials: int, on: bool, defaults: tuple[int, int]) -> Run:
    """Create one run's study (a fresh SQLite file, the config's baselines) and its objective."""
    import optuna

    from autoprune.search.objective import Objective
    from autoprune.search.study import create_or_load
    from autoprune.search.study import storage_for

    cfg = ctx.config
    tag = "on" if on else "off"
    label = f"reuse {tag}"
    url = sqlite_url(workdir / f"study-{tag}.db")
    start = time.perf_counter()
    create_or_load(cfg, url, ctx, say=lambda line: say(f"  [{label}] {line}"))
    setup_s = time.perf_counter() - start
    fresh_cache(ctx, workdir / f"latency-cache-{tag}.sqlite")
    reuse = ReuseState(on, defaults, ctx.cache)
    # A seeded random sampler draws the same candidates in both runs (TPE would follow the timings' noise).
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url), sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed))
    timer = StorageTimer()
    timer.install(study._storage)  # noqa: SLF001 - the object the study's trials talk to
    objective = Objective(ctx, study, trials, "overhead", lambda line: say(f"  [{label}] {line}"))
    return Run(label, reuse, study, objective, setup_s, timer)


def step(ctx: Any, run: Run, trials: int, work: ReusableWork) -> None:
    """Run one ``optimize(n_trials=1)`` call of ``run`` with its reuse swapped in; record what its trial cost."""
    from autoprune.search.objective import SurplusTrial

    run.calls += 1
    if run.calls > 3 * trials + 5:
        raise RuntimeError(f"{run.label}: {run.calls} optimize calls without reaching {trials} finished trials")
    states = trial_states(run.study)
    before, reusable_before = run.timer.main_total, work.seconds
    run.reuse.enter(ctx)
    t0 = time.perf_counter()
    try:
        run.study.optimize(run.objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
    finally:
        wall = time.perf_counter() - t0
        run.reuse.leave(ctx)
    for number in ran_trials(run.study, states):
        run.walls[number] = wall
        run.storage_calls[number] = run.timer.main_total - before
        run.reusable[number] = work.seconds - reusable_before


def run_paired(ctx: Any, workdir: pathlib.Path, trials: int, defaults: tuple[int, int]) -> dict[str, Run]:
    """Both runs' trials alternating, one each in turn (the run that goes first alternates too), so a change
    of the host's load between them falls on both alike."""
    from autoprune.latency import _timer
    from autoprune.search.objective import finished_count

    saved = (_timer.BASELINE_SESSIONS, _timer._BASELINES, _timer.baseline_session)  # noqa: SLF001
    work = ReusableWork()
    work.install(ctx)
    try:
        runs = {"on": open_run(ctx, workdir, trials, True, defaults), "off": open_run(ctx, workdir, trials, False, defaults)}
        seed_base_pool(ctx)
        turn = 0
        while any(finished_count(r.study) < trials for r in runs.values()):
            order = ("on", "off") if turn % 2 == 0 else ("off", "on")
            for key in order:
                if finished_count(runs[key].study) < trials:
                    step(ctx, runs[key], trials, work)
            turn += 1
    finally:  # the next config starts with the timer as the product leaves it
        _timer.BASELINE_SESSIONS, _timer._BASELINES, _timer.baseline_session = saved  # noqa: SLF001
    return runs


def seed_base_pool(ctx: Any) -> None:
    """Time the base alone until this process's pooled base latency can answer, before any trial: it is done
    once per process whatever the reuse (a worker's first trial pays it), so neither run is charged with it."""
    from autoprune.latency import seed_pool

    seed_pool(ctx.latency_pool(), ctx.base_onnx, ctx.latency)


def rows_of(run: Run) -> list[dict[str, Any]]:
    """One row per completed trial of a run, with its stage seconds and the reusable work it did."""
    return [_row(row, run.storage_calls, run.reusable) for row in trial_rows(run.study, run.walls) if _complete(row)]


def _complete(row: dict[str, Any]) -> bool:
    return row["state"] == "COMPLETE" and bool(row["stage_seconds"]) and row["wall_s"] is not None


def _row(row: dict[str, Any], storage_calls: dict[int, float], reusable: dict[int, float]) -> dict[str, Any]:
    stages = {k: float(row["stage_seconds"].get(k, 0.0)) for k in STAGES}
    wall = float(row["wall_s"])
    stages["other"] = max(0.0, wall - sum(stages.values()))
    return {
        "number": row["number"],
        "kind": row["kind"],
        "duplicate_of": row["duplicate_of"],
        "latency_cached": bool(row["latency_cached"]),
        "wall_s": wall,
        "stages": stages,
        "storage_calls_s": storage_calls.get(row["number"]),
        "reusable_s": reusable.get(row["number"]),
        "channels": row["channels"],
        "metric": row["metric"],
    }


def same_results(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether both runs gave every trial the same kept channels and metric (to float tolerance)."""
    by_number = {r["number"]: r for r in off}
    pairs = [(a, by_number[a["number"]]) for a in on if a["number"] in by_number]
    channels = sum(1 for a, b in pairs if a["channels"] == b["channels"])
    worst = max((abs(float(a["metric"]) - float(b["metric"])) for a, b in pairs), default=0.0)
    return {"trials_compared": len(pairs), "same_channels": channels, "max_metric_difference": worst,
            "identical": bool(pairs) and channels == len(pairs) and worst <= METRIC_TOLERANCE}


def run_config(config_path: str, trials: int, quick: bool, workdir: pathlib.Path) -> dict[str, Any]:
    """Run ``trials`` trials with the reuse on, then the same trials with it off; break every trial down."""
    cfg = prepare_config(config_path, workdir, quick, trials)
    cfg.search.screening = False  # every trial a full one, so that both runs do the same work
    reused = None if quick else reuse_baselines(config_path, cfg)
    ctx = build_context(cfg, workdir)
    say(f"{cfg.name}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f}"
        + (f" (baselines offered from {reused})" if reused else " (the first run sweeps the baselines)"))
    from autoprune.latency import _timer

    defaults = (ctx.teacher.max_bytes, _timer.BASELINE_SESSIONS)
    paired = run_paired(ctx, workdir, trials, defaults)
    runs = {key: {"setup_s": run.setup_s, "trials": rows_of(run)} for key, run in paired.items()}
    for run in runs.values():
        run["summary"] = summarize(run["trials"])
    on, off = runs["on"]["summary"], runs["off"]["summary"]
    return {
        "config": cfg.name,
        "config_path": config_path,
        "base_metric": ctx.base_metric.value,
        "round_to": ctx.round_to,
        "groups": len(ctx.groups),
        "baselines_reused_from": reused,
        "recovery": cfg.recovery.model_dump(mode="json"),
        "latency_settings": ctx.latency.as_dict(),
        "runs": runs,
        "reuse_speedup": off["wall_mean_s"] / on["wall_mean_s"] if on.get("trials") and off.get("trials") else None,
        "reuse_ceiling": off.get("reuse_ceiling"),
        "paired_ratios": paired_ratios(runs["on"]["trials"], runs["off"]["trials"]),
        "machinery_share": on.get("machinery_share"),
        "same_results": same_results(runs["on"]["trials"], runs["off"]["trials"]),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median seconds and share of the total per stage, and the machinery's share (outside recovery and
    evaluation)."""
    if not rows:
        return {"trials": 0}
    total = sum(r["wall_s"] for r in rows)
    stages = {}
    for name in (*STAGES, "other"):
        values = [r["stages"][name] for r in rows]
        stages[name] = {"mean_s": statistics.fmean(values), "median_s": statistics.median(values), "share": sum(values) / total}
    useful = sum(r["stages"][k] for r in rows for k in USEFUL)
    storage_calls = [r["storage_calls_s"] for r in rows if r["storage_calls_s"] is not None]
    reusable = sum(r["reusable_s"] or 0.0 for r in rows)
    return {
        "trials": len(rows),
        "latency_cached": sum(1 for r in rows if r["latency_cached"]),
        "wall_mean_s": total / len(rows),
        "wall_median_s": statistics.median(r["wall_s"] for r in rows),
        "stages": stages,
        "storage_calls": {
            "mean_s": statistics.fmean(storage_calls) if storage_calls else None,
            "share": sum(storage_calls) / total if storage_calls else None,
        },
        "machinery_share": 1.0 - useful / total,
        "reusable_share": reusable / total,
        "reuse_ceiling": total / (total - reusable) if reusable < total else None,
    }


def paired_ratios(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """Per candidate (same trial number in both runs), its trial time off / on: median and quartiles."""
    by_number = {r["number"]: r for r in off}
    ratios = sorted(by_number[r["number"]]["wall_s"] / r["wall_s"] for r in on if r["number"] in by_number and r["wall_s"] > 0)
    if not ratios:
        return {"pairs": 0}
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"pairs": len(ratios), "median": statistics.median(ratios), "q1": q[0], "q3": q[2]}


def print_run(name: str, label: str, run: dict[str, Any]) -> None:
    s = run["summary"]
    if not s.get("trials"):
        print(f"{name}, {label}: no completed trial")
        return
    print(f"{name}, {label}: {s['trials']} trials ({s['latency_cached']} with a cached timing), "
          f"mean {s['wall_mean_s']:.2f}s, median {s['wall_median_s']:.2f}s per trial; study setup {run['setup_s']:.0f}s")
    print(f"  {'stage':30} {'mean s':>8} {'median s':>9} {'share':>7}")
    for stage, v in s["stages"].items():
        text = "other (sampler, suggest, tell)" if stage == "other" else stage
        print(f"  {text:30} {v['mean_s']:>8.3f} {v['median_s']:>9.3f} {v['share']:>7.1%}")
    if s["storage_calls"]["mean_s"] is not None:
        print(f"  {'(storage calls)':30} {s['storage_calls']['mean_s']:>8.3f} {'':>9} {s['storage_calls']['share']:>7.1%}  "
              "all calls on the study storage; overlaps storage + other")
    print(f"  machinery (outside {' + '.join(USEFUL)}): {s['machinery_share']:.1%}")
    print(f"  reusable work (teacher forwards, unpruned-model scores, base session opens): {s['reusable_share']:.1%} "
          f"of trial time")


def print_table(result: dict[str, Any]) -> None:
    print()
    for key, label in (("on", "reuse on"), ("off", "reuse off")):
        print_run(result["config"], label, result["runs"][key])
    same = result["same_results"]
    speedup, share, pairs = result["reuse_speedup"], result["machinery_share"], result["paired_ratios"]
    ceiling = result["reuse_ceiling"]
    if pairs.get("pairs"):
        print(f"  per candidate, off / on: median {pairs['median']:.2f} (quartiles {pairs['q1']:.2f}-{pairs['q3']:.2f}, "
              f"{pairs['pairs']} pairs); ceiling if every reusable second were saved: "
              + (f"{ceiling:.2f}" if ceiling else "n/a"))
    print(f"{result['config']}: reuse_speedup {speedup:.2f} (target >= {TARGETS['reuse_speedup']}), machinery_share "
          f"{share:.1%} (target <= {TARGETS['machinery_share']:.0%}); same results: {same['same_channels']}/{same['trials_compared']} "
          f"trials with the same channels, metrics within {same['max_metric_difference']:.1e}")


def build_report(results: list[dict[str, Any]], quick: bool, trials: int, load_start: tuple[float, float, float], wall_s: float) -> dict[str, Any]:
    """The result JSON: per config what was measured and whether each target was met, the settings and host."""
    from autoprune.latency import host_fingerprint

    measured = {
        r["config"]: {"reuse_speedup": r["reuse_speedup"], "reuse_ceiling": r["reuse_ceiling"], "machinery_share": r["machinery_share"],
                      "identical": r["same_results"]["identical"]}
        for r in results
    }
    met = {
        name: {
            "reuse_speedup": m["reuse_speedup"] is not None and m["reuse_speedup"] >= TARGETS["reuse_speedup"],
            "machinery_share": m["machinery_share"] is not None and m["machinery_share"] <= TARGETS["machinery_share"],
            "identical": m["identical"],
        }
        for name, m in measured.items()
    }
    return {
        "benchmark": "trial_overhead",
        "quick": quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "settings": {
            "trials": trials,
            "storage": "a fresh SQLite file per run (one worker, in process)",
            "sampler": "RandomSampler(search.seed): both runs draw the same candidates; screening off (every trial a full one)",
            "runs": "reuse on and reuse off (teacher outputs, unpruned-model scores, base ONNX session) in one process, "
                    "their trials alternating (on, off, off, on, ...), so a change of the host's load falls on both",
            "reuse_ceiling": "off-run trial time / (that time less its reusable work): what reuse_speedup could reach "
                             "if reuse saved every reusable second at no cost",
            "latency_cache": "fresh per run",
            "stages": list(STAGES) + ["other"],
            "useful_stages": list(USEFUL),
            "quick_overrides": QUICK if quick else None,
        },
        "targets": TARGETS,
        "measured": measured,
        "met": met,
        "configs": results,
        "wall_s": wall_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, help=f"study YAML, repeatable (default: {' and '.join(CONFIGS)})")
    parser.add_argument("--trials", type=int, default=None, help="trials per config (default 12; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, 2-epoch bases in a temp folder, output to a temp folder")
    parser.add_argument("--workdir", default=None, help="folder for storages, caches, ONNX files (default: a temp folder, removed)")
    parser.add_argument("--out", default=None, help=f"result JSON (default: {RESULTS.relative_to(HERE.parent)})")
    args = parser.parse_args(argv)
    configs = args.config or list(CONFIGS)
    trials = args.trials or (3 if args.quick else 12)
    out = pathlib.Path(args.out) if args.out else RESULTS
    if args.quick and not args.out:
        out = quick_path(out)

    quiet_optuna()
    own = args.workdir is None
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="autoprune-overhead-")).resolve()
    started = time.perf_counter()
    load_start = os.getloadavg()
    results = []
    try:
        for i, path in enumerate(configs):
            workdir = root / f"{i}-{pathlib.Path(path).stem}"
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(run_config(path, trials, args.quick, workdir))
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    for result in results:
        print_table(result)
    report = build_report(results, args.quick, trials, load_start, time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({report['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
