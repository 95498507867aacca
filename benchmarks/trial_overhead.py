"""Benchmark: where the time of one search trial goes, and how much of it is machinery.

For each config (default: both digits configs) a study is created on a fresh SQLite file with autoprune's
:func:`~autoprune.search.study.create_or_load` (the uniform/global sweeps are run first, or reused from
the config's ``baselines.json`` when it was made for the same base model, budget and sweep), then
``--trials`` trials run through autoprune's :class:`~autoprune.search.objective.Objective` the way a worker
runs them (``study.optimize(n_trials=1)``), with a fresh latency cache.

Per trial, the stages the trial records in its ``stage_seconds`` user attr: prune, bn_recalibration,
evaluate_after_bn, finetune, evaluate, export, latency, storage (artifact uploads and user-attr writes); plus "other": the
rest of the ``optimize`` call (sampling, the per-group ``suggest`` calls, ask/tell, the surplus check).
Every call on the study's storage object is also timed (outermost calls, main thread) and reported as
"storage calls": it overlaps "storage" and "other" (it is the database's share of both).

Target: the share of a trial's wall time spent outside finetune + evaluation <= 15%.

Run (full; writes ``benchmarks/results/trial_overhead.json``)::

    python benchmarks/trial_overhead.py [--config studies/digits-resnet.yaml --config studies/digits-mobilenet.yaml] [--trials 12]

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
CONFIGS = ("studies/digits-resnet.yaml", "studies/digits-mobilenet.yaml")
STAGES = ("prune", "bn_recalibration", "evaluate_after_bn", "finetune", "evaluate", "export", "latency", "storage")
USEFUL = ("finetune", "evaluate")
TARGET_OUTSIDE = 0.15


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


def run_config(config_path: str, trials: int, quick: bool, workdir: pathlib.Path) -> dict[str, Any]:
    """Create the study, run ``trials`` trials, break every trial's time down."""
    import optuna

    from autoprune.search.objective import Objective
    from autoprune.search.objective import SurplusTrial
    from autoprune.search.objective import finished_count
    from autoprune.search.study import create_or_load
    from autoprune.search.study import make_sampler
    from autoprune.search.study import storage_for

    cfg = prepare_config(config_path, workdir, quick, trials)
    reused = None if quick else reuse_baselines(config_path, cfg)
    ctx = build_context(cfg, workdir)
    fresh_cache(ctx, workdir / "latency-cache.sqlite")
    url = sqlite_url(workdir / "study.db")
    say(f"{cfg.name}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f}; creating the study"
        + (f" (baselines offered from {reused})" if reused else " (running the baseline sweeps)"))
    start = time.perf_counter()
    create_or_load(cfg, url, ctx, say=lambda line: say("  " + line))
    setup_s = time.perf_counter() - start
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url), sampler=make_sampler(cfg, 0))
    timer = StorageTimer()
    timer.install(study._storage)  # noqa: SLF001 - the object the study's trials talk to
    objective = Objective(ctx, study, trials, "overhead", lambda line: say("  " + line))
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
    rows = []
    for row in trial_rows(study, walls):
        if row["state"] != "COMPLETE" or not row["stage_seconds"] or row["wall_s"] is None:
            continue
        stages = {k: float(row["stage_seconds"].get(k, 0.0)) for k in STAGES}
        wall = float(row["wall_s"])
        stages["other"] = max(0.0, wall - sum(stages.values()))
        rows.append(
            {
                "number": row["number"],
                "kind": row["kind"],
                "latency_cached": bool(row["latency_cached"]),
                "wall_s": wall,
                "stages": stages,
                "storage_calls_s": storage_calls.get(row["number"]),
                "channels": row["channels"],
            }
        )
    return {
        "config": cfg.name,
        "config_path": config_path,
        "base_metric": ctx.base_metric.value,
        "round_to": ctx.round_to,
        "groups": len(ctx.groups),
        "setup_s": setup_s,
        "baselines_reused_from": reused,
        "recovery": cfg.recovery.model_dump(mode="json"),
        "latency_settings": ctx.latency.as_dict(),
        "trials": rows,
        "summary": summarize(rows),
        "summary_uncached": summarize([r for r in rows if not r["latency_cached"]]),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median seconds and share of the total per stage, and the share outside finetune + evaluation."""
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
        "outside_finetune_evaluate": 1.0 - useful / total,
    }


def print_table(result: dict[str, Any]) -> None:
    s = result["summary"]
    print()
    if not s.get("trials"):
        print(f"{result['config']}: no completed trial")
        return
    print(f"{result['config']}: {s['trials']} trials ({s['latency_cached']} with a cached timing), "
          f"mean {s['wall_mean_s']:.2f}s, median {s['wall_median_s']:.2f}s per trial; study setup {result['setup_s']:.0f}s")
    print(f"  {'stage':30} {'mean s':>8} {'median s':>9} {'share':>7}")
    for name, v in s["stages"].items():
        label = "other (sampler, suggest, tell)" if name == "other" else name
        print(f"  {label:30} {v['mean_s']:>8.3f} {v['median_s']:>9.3f} {v['share']:>7.1%}")
    if s["storage_calls"]["mean_s"] is not None:
        print(f"  {'(storage calls)':30} {s['storage_calls']['mean_s']:>8.3f} {'':>9} {s['storage_calls']['share']:>7.1%}  "
              "all calls on the study storage; overlaps storage + other")
    share = s["outside_finetune_evaluate"]
    print(f"  outside finetune + evaluate: {share:.1%} (target <= {TARGET_OUTSIDE:.0%}) {'met' if share <= TARGET_OUTSIDE else 'NOT met'}")


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
    measured = {r["config"]: r["summary"].get("outside_finetune_evaluate") for r in results}
    report = {
        "benchmark": "trial_overhead",
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "settings": {
            "trials": trials,
            "storage": "a fresh SQLite file per config (one worker, in process)",
            "sampler": "the config's (make_sampler)",
            "latency_cache": "fresh per config",
            "stages": list(STAGES) + ["other"],
            "quick_overrides": QUICK if args.quick else None,
        },
        "targets": {"outside_finetune_evaluate": TARGET_OUTSIDE},
        "measured": measured,
        "met": {name: value is not None and value <= TARGET_OUTSIDE for name, value in measured.items()},
        "configs": results,
        "wall_s": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({report['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
