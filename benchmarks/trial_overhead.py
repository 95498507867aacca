"""Benchmark: where the time of one search trial goes, what reuse between trials saves, and how much is machinery.

For each config (default: both digits configs and shapes) two studies run in one process, each on a fresh
SQLite file and latency cache, created with autoprune's :func:`~autoprune.search.study.create_or_load` (the
uniform/global sweeps run once, or are reused from the config's ``baselines.json`` when it was made for the
same base model, budget and sweep): first with the reuse between trials ON (the teacher's outputs per finetune
batch, the unpruned model's importance scores, the base's ONNX Runtime session), then with it OFF.  Each runs
``--trials`` trials through autoprune's :class:`~autoprune.search.objective.Objective` the way a worker runs
them (``study.optimize(n_trials=1)``), drawn by ``RandomSampler(search.seed)`` with screening off, so both runs
evaluate the same candidates in full and must give the same kept channels and metrics.

Per trial, the stages the trial records in its ``stage_seconds`` user attr: prune, bn_recalibration,
evaluate_after_bn, finetune, evaluate, export, latency, storage (artifact uploads and user-attr writes); plus "other": the
rest of the ``optimize`` call (sampling, the per-group ``suggest`` calls, ask/tell, the surplus check).
Every call on the study's storage object is also timed (outermost calls, main thread) and reported as
"storage calls": it overlaps "storage" and "other" (it is the database's share of both).

Per config: ``reuse_speedup`` (mean trial time off / on; target >= 1.3), ``machinery_share`` (with the reuse on,
the share of trial time outside BN recalibration, finetune and the two evaluations; target <= 0.10) and
``same_results``.

Run (full; writes ``benchmarks/results/trial_overhead.json``)::

    OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py [--config studies/reference.yaml ...] [--trials 12]

Smoke run (tiny settings, 2-epoch base models in a temp folder; writes a ``*_quick`` file to a temp folder)::

    python benchmarks/trial_overhead.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    """Copy the config's own ``baselines.json`` (if any) where create_or_load looks; it re-checks it fits."""
    from autoprune.baselines import load_baselines
    from autoprune.config import load_config

    source = load_config(config_path).artifact_path() / "baselines.json"
    if load_baselines(source) is None:
        return None
    target = cfg.artifact_path() / "baselines.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(source)


def set_reuse(ctx: Any, on: bool, defaults: tuple[int, int]) -> None:
    """Switch every reuse between trials on or off: the teacher's outputs, the unpruned model's importance
    scores, the base's ONNX Runtime session (the latency cache is fresh per run either way).

    Args:
        defaults: the teacher's cache bytes and the timer's baseline sessions when on.
    """
    from autoprune.latency import _timer

    teacher_bytes, sessions = defaults
    ctx.teacher.max_bytes = teacher_bytes if on else 0
    ctx.teacher.cache.clear()
    ctx.teacher.bytes = 0
    ctx.pruner.reuse_scores = on
    ctx.pruner._score_cache.clear()  # noqa: SLF001 - each run starts cold
    _timer.BASELINE_SESSIONS = sessions if on else 0
    _timer._BASELINES.clear()  # noqa: SLF001


def run_trials(ctx: Any, workdir: pathlib.Path, trials: int, reuse: bool, defaults: tuple[int, int]) -> tuple[list[dict[str, Any]], float]:
    """Create a study (a fresh SQLite file and latency cache) and run ``trials`` trials with reuse on or off.

    Returns:
        ``(one row per completed trial with its stage seconds, the study's setup seconds)``.
    """
    import optuna

    from autoprune.search.objective import Objective
    from autoprune.search.objective import SurplusTrial
    from autoprune.search.objective import finished_count
    from autoprune.search.study import create_or_load
    from autoprune.search.study import storage_for

    cfg = ctx.config
    label = "reuse on" if reuse else "reuse off"
    url = sqlite_url(workdir / f"study-{'on' if reuse else 'off'}.db")
    start = time.perf_counter()
    create_or_load(cfg, url, ctx, say=lambda line: say(f"  [{label}] {line}"))
    setup_s = time.perf_counter() - start
    # Both runs start cold: no reuse left over from the sweeps or the other run, no timing cached.
    set_reuse(ctx, reuse, defaults)
    fresh_cache(ctx, workdir / f"latency-cache-{'on' if reuse else 'off'}.sqlite")
    # A seeded random sampler draws the same candidates in both runs (TPE would follow the timings' noise).
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url), sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed))
    timer = StorageTimer()
    timer.install(study._storage)  # noqa: SLF001 - the object the study's trials talk to
    objective = Objective(ctx, study, trials, "overhead", lambda line: say(f"  [{label}] {line}"))
    walls: dict[int, float] = {}
    storage_calls: dict[int, float] = {}
    calls = 0
    while finished_count(study) < trials:
        calls += 1
        if calls > 3 * trials + 5:
            raise RuntimeError(f"{calls} optimize calls without reaching {trials} finished trials")
        states = trial_states(study)
        before = timer.main_total
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        wall = time.perf_counter() - t0
        spent = timer.main_total - before
        for number in ran_trials(study, states):
            walls[number] = wall
            storage_calls[number] = spent
    return [_row(row, storage_calls) for row in trial_rows(study, walls) if _complete(row)], setup_s


def _complete(row: dict[str, Any]) -> bool:
    return row["state"] == "COMPLETE" and bool(row["stage_seconds"]) and row["wall_s"] is not None


def _row(row: dict[str, Any], storage_calls: dict[int, float]) -> dict[str, Any]:
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
    runs = {}
    for reuse in (True, False):  # reuse on first: it pays the process's warm-up, so the gain is not flattered
        rows, setup_s = run_trials(ctx, workdir, trials, reuse, defaults)
        runs["on" if reuse else "off"] = {"setup_s": setup_s, "trials": rows, "summary": summarize(rows)}
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
    }


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


def print_table(result: dict[str, Any]) -> None:
    print()
    for key, label in (("on", "reuse on"), ("off", "reuse off")):
        print_run(result["config"], label, result["runs"][key])
    same = result["same_results"]
    speedup, share = result["reuse_speedup"], result["machinery_share"]
    print(f"{result['config']}: reuse_speedup {speedup:.2f} (target >= {TARGETS['reuse_speedup']}), machinery_share "
          f"{share:.1%} (target <= {TARGETS['machinery_share']:.0%}); same results: {same['same_channels']}/{same['trials_compared']} "
          f"trials with the same channels, metrics within {same['max_metric_difference']:.1e}")


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
    from autoprune.latency import host_fingerprint

    own = args.workdir is None
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="autoprune-overhead-")).resolve()
    started = time.perf_counter()
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
    measured = {r["config"]: {"reuse_speedup": r["reuse_speedup"], "machinery_share": r["machinery_share"], "identical": r["same_results"]["identical"]} for r in results}
    met = {
        name: {
            "reuse_speedup": m["reuse_speedup"] is not None and m["reuse_speedup"] >= TARGETS["reuse_speedup"],
            "machinery_share": m["machinery_share"] is not None and m["machinery_share"] <= TARGETS["machinery_share"],
            "identical": m["identical"],
        }
        for name, m in measured.items()
    }
    report = {
        "benchmark": "trial_overhead",
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "settings": {
            "trials": trials,
            "storage": "a fresh SQLite file per run (one worker, in process)",
            "sampler": "RandomSampler(search.seed): both runs draw the same candidates; screening off (every trial a full one)",
            "runs": "reuse on, then reuse off (teacher outputs, unpruned-model scores, base ONNX session), in one process",
            "latency_cache": "fresh per run",
            "stages": list(STAGES) + ["other"],
            "useful_stages": list(USEFUL),
            "quick_overrides": QUICK if args.quick else None,
        },
        "targets": TARGETS,
        "measured": measured,
        "met": met,
        "configs": results,
        "wall_s": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({report['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
