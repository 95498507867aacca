"""Benchmark: does autoprune's search beat uniform, global and random search on the reference study, seed by seed?

Issue 12, item 7, one seed per invocation (``--seed N``).  Per seed, with the methods of
``search_methods.py`` (shared with ``search_vs_baselines.py``):

- the recovery recipe (calibrated once when the config enables it), the uniform and global sweeps over
  ``search.sweep_ratios`` and autoprune's study (:func:`autoprune.search.study.create_or_load`): the recipe
  calibration and ``baselines.json`` live in ``--workdir`` and are reused by every later seed (the sweeps are
  deterministic; they run once);
- unbounded random search (``RandomSampler(seed)`` over every reachable width per group) and autoprune's
  search (the config's sampler with ``search.seed = seed``), ``--trials`` each (default: the config's
  ``search.trials``), both through autoprune's ``Objective`` with the study's recovery recipe, each on a
  fresh SQLite storage and latency cache in ``<workdir>/seed-<N>/``;
- each method's winner: its fastest candidate within the budget on validation (a timing that did not settle
  only when no settled one is feasible); the four winners are re-timed TOGETHER, interleaved against the base
  in one process (``--retime-rounds`` rounds, median; spread = the larger of the rounds' median robust CV and
  half their relative range), and measured on the held-out test split: search winners rebuilt from their
  stored architecture JSON and weights (:func:`autoprune.confirm.rebuild_trial`), a sweep winner from the
  stored artifacts of autoprune's trial with the same kept channels (its enqueued baseline), else recovered
  again.

Counted per seed: ``trials`` and ``finetunes`` per method (search trials that were pruned and finetuned:
COMPLETE and not ``duplicate_of``; a sweep point counts one), repeated full evaluations (a finetuned channel
vector finetuned again in the same search) and baseline mismatches (enqueued uniform/global trials whose
kept channels differ from their sweep point's).

Targets, per seed: autoprune / best(uniform, global) >= 1.2 re-timed; autoprune's pick within the budget on
the test split; autoprune above random by more than the re-timing spread (autoprune / random - 1 >
hypot(both speedups' spreads)).  Printed per seed and, with mean and spread, over every seed in the file.

Run one seed at a time (resumable: the results file keeps the other seeds' entries and replaces this one's),
after the seed-independent part (base model, recipe, sweeps; optional: the first seed runs it otherwise)::

    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --sweeps-only
    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --seed 0
    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --seed 1
    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --seed 2

The same seed in the other search mode (to choose the default by measurement; ``--mode pareto`` writes
``reference_search_pareto.json``)::

    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --seed 0 --mode pareto

Output: ``benchmarks/results/reference_search.json`` (``reference_search_<name>.json`` for another config).
Smoke run (2-epoch base, tiny budgets; work folder and output in ``$TMPDIR/autoprune-bench-quick/``)::

    OMP_NUM_THREADS=1 python benchmarks/reference_search.py --config studies/shapes-resnet.yaml --quick --seed 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from search_methods import METHODS  # noqa: E402
from search_methods import QUICK  # noqa: E402
from search_methods import baseline_mismatches  # noqa: E402
from search_methods import build_context  # noqa: E402
from search_methods import channels_text  # noqa: E402
from search_methods import finetuned  # noqa: E402
from search_methods import indent  # noqa: E402
from search_methods import is_settled  # noqa: E402
from search_methods import pick_winners  # noqa: E402
from search_methods import prepare_autoprune  # noqa: E402
from search_methods import prepare_config  # noqa: E402
from search_methods import quick_folder  # noqa: E402
from search_methods import quick_path  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import ratio_of  # noqa: E402
from search_methods import repeated_evaluations  # noqa: E402
from search_methods import retime  # noqa: E402
from search_methods import run_methods  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import settings_of  # noqa: E402
from search_methods import timed  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = {"autoprune_over_best_baseline": 1.2, "autoprune_test_within_budget": True, "autoprune_above_random_beyond_spread": True}
SEEDS_ASKED = 3  # issue 12: three seeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/reference.yaml", help="study YAML (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both searches' samplers (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=None, help="trials of random and of autoprune (default: the config's search.trials; 4 with --quick)")
    parser.add_argument("--retime-rounds", type=int, default=None, help="interleaved re-timing rounds of the four winners (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, 2-epoch base; work folder and output in a temp folder")
    parser.add_argument("--workdir", default=None, help="folder kept between seeds: recipe calibration, sweeps, storages, artifacts "
                        "(default: <config artifact dir>/reference-search; with --quick a temp folder)")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/reference_search.json)")
    parser.add_argument("--mode", choices=("fastest", "pareto"), default=None, help="search.mode of both searches (default: the "
                        "config's); another mode than the config's writes <results>_<mode>.json and seed-<N>-<mode>/ (the sweeps are shared)")
    parser.add_argument("--resume", action="store_true", help="reuse the seed folder's searches when both already finished "
                        "(a run that stopped after them) and only re-time and test their winners")
    parser.add_argument("--sweeps-only", action="store_true", help="train the base, calibrate the recipe and run the sweeps into "
                        "--workdir, then stop (so that no seed's run pays for them)")
    return parser.parse_args(argv)


def default_paths(args: argparse.Namespace) -> tuple[pathlib.Path, pathlib.Path]:
    """``(results JSON, work folder)`` for these arguments (quick runs: both in the quick temp folder)."""
    from autoprune.config import load_config

    cfg = load_config(args.config)
    stem = "reference_search" if cfg.name == "reference" else f"reference_search_{cfg.name}"
    if args.mode and args.mode != cfg.search.mode:
        stem += f"_{args.mode}"
    out = pathlib.Path(args.out) if args.out else RESULTS / f"{stem}.json"
    if args.quick and not args.out:
        out = quick_path(out)
    if args.quick and out.resolve().is_relative_to(RESULTS.resolve()):
        raise SystemExit(f"--quick never writes to {RESULTS}: pass another --out")
    if args.workdir:
        workdir = pathlib.Path(args.workdir)
    else:
        workdir = quick_folder() / f"{stem}_work" if args.quick else cfg.artifact_path() / "reference-search"
    return out, workdir.resolve()


def identity(ctx: Any, quick: bool) -> dict[str, Any]:
    """What every seed of one results file must share (else the seeds are not comparable)."""
    from autoprune.calibration import recipe_settings

    cfg = ctx.config
    return {
        "config": cfg.name,
        "base_sha256": ctx.base_info.sha256,
        "max_drop": cfg.max_drop,
        "trials_per_search": cfg.search.trials,
        "sweep_ratios": list(cfg.search.sweep_ratios),
        "sampler": cfg.search.sampler,
        "mode": cfg.search.mode,
        "recipe": recipe_settings(cfg) if not cfg.recovery.calibration.enabled else "calibrated",
        "quick": quick,
    }


def earlier_seeds(out: pathlib.Path, ident: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The other seeds' entries of an existing results file; refuses a file made with other settings."""
    if not out.is_file():
        return []
    data = json.loads(out.read_text(encoding="utf-8"))
    if data.get("identity") != ident:
        diff = {k: (data.get("identity", {}).get(k), v) for k, v in ident.items() if data.get("identity", {}).get(k) != v}
        raise SystemExit(f"{out} holds seeds run with other settings ({diff}: file, now); move it away or pass --out")
    return [s for s in data.get("seeds", []) if s.get("seed") != seed]


# --- test split -------------------------------------------------------------------------------------------


def twin_trial(rows: list[dict[str, Any]], kind: str, channels: dict[str, int]) -> dict[str, Any] | None:
    """A finetuned trial with stored artifacts and exactly these kept channels (its own ``kind`` first)."""
    want = {k: int(v) for k, v in channels.items()}
    same = [r for r in finetuned(rows) if r.get("weights_artifact_id") and {k: int(v) for k, v in (r.get("channels") or {}).items()} == want]
    same.sort(key=lambda r: (r.get("kind") != kind, r["number"]))
    return same[0] if same else None


def trial_model(ctx: Any, row: dict[str, Any], folder: pathlib.Path) -> Any:
    """A trial's finetuned model, rebuilt from its stored architecture JSON and weights."""
    from autoprune.confirm import Candidate
    from autoprune.confirm import rebuild_trial

    folder.mkdir(parents=True, exist_ok=True)
    candidate = Candidate(
        kind=row.get("kind") or "search",
        number=row["number"],
        ratio=None,
        val_metric=row["metric"],
        val_drop=row["drop"],
        speedup=row["speedup"],
        arch_artifact_id=row.get("arch_artifact_id"),
        weights_artifact_id=row.get("weights_artifact_id"),
    )
    return rebuild_trial(ctx.config, candidate, folder)


def winner_model(ctx: Any, method: str, winner: dict[str, Any], rows: dict[str, list[dict[str, Any]]], folder: pathlib.Path) -> tuple[Any, str]:
    """The winner's finetuned model and where it came from (stored artifacts, else recovered again)."""
    from autoprune.candidate import evaluate_candidate

    if "number" in winner:
        return trial_model(ctx, winner, folder / method), f"{method} trial {winner['number']} (stored weights)"
    twin = twin_trial(rows["autoprune"], method, winner["channels"])
    if twin is not None:
        return trial_model(ctx, twin, folder / method), f"autoprune trial {twin['number']} ({twin.get('kind')}, same channels; stored weights)"
    indent(f"{method}: no stored trial with its channels; recovering the sweep point {winner['ratio']:.2f} again")
    plan = {"uniform": winner["ratio"]} if method == "uniform" else {"global_ratio": winner["ratio"]}
    return evaluate_candidate(ctx, **plan).model, f"{method} sweep point {winner['ratio']:.2f} recovered again"


def test_winners(ctx: Any, winners: dict[str, dict[str, Any]], rows: dict[str, list[dict[str, Any]]], folder: pathlib.Path) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each winner's metric on the held-out test split (and on validation again, to show the rebuild is exact).

    Returns:
        ``(method -> test figures, the base model's test MetricResult)``.
    """
    task = ctx.task
    base = task.evaluate(ctx.base_model, "test")
    out = {}
    for method, winner in winners.items():
        model, source = winner_model(ctx, method, winner, rows, folder)
        test = task.evaluate(model, "test")
        drop = task.drop(base.value, test.value)
        out[method] = {
            "test_metric": test.value,
            "test_metric_stderr": test.stderr,
            "test_drop": drop,
            "test_drop_stderr": math.hypot(test.stderr, base.stderr),
            "test_feasible": bool(drop <= ctx.config.max_drop),
            "test_model": source,
            "test_model_val_drop": ctx.drop(task.evaluate(model, "val").value),
        }
        indent(f"{method:9} test {ctx.task.metric_name} {test.value:.4f} (drop {drop:+.4f}) from {source}")
    return out, base


# --- one seed ---------------------------------------------------------------------------------------------


def method_counts(runs: dict[str, Any], method: str) -> dict[str, Any]:
    """Trials and finetunes of a method (a sweep point counts one of each), and a search's other counts."""
    if method in ("uniform", "global"):
        n = len(runs["sweeps"][method])
        return {"trials": n, "finetunes": n}
    rows = runs["rows"][method]
    return {
        "trials": len(rows),
        "finetunes": len(finetuned(rows)),
        "screened": sum(1 for r in rows if r.get("screened")),
        "duplicates": sum(1 for r in rows if r.get("duplicate_of") is not None),
        "repeated_full_evaluations": repeated_evaluations(rows),
        "wall_s": runs["walls"][method],
    }


def method_entry(method: str, winner: dict[str, Any] | None, retimed: dict[str, Any], tested: dict[str, Any], counts: dict[str, Any], cv: float) -> dict[str, Any]:
    """One method's figures for one seed: its winner re-timed (``speedup``), on validation and on test."""
    if winner is None:
        return counts | {"speedup": None, "drop": None, "test_drop": None, "speedup_spread": None, "note": "no candidate within the budget"}
    info = retimed[method]
    return counts | {
        "speedup": info["speedup"],
        "drop": winner["drop"],
        "test_drop": tested[method]["test_drop"],
        "speedup_spread": info["speedup_spread"],
        "search_speedup": winner["speedup"],
        "search_timing_settled": is_settled(winner, cv),
        "retime_noisy": info["noisy"],
        "metric": winner["metric"],
        **tested[method],
        "channels": winner["channels"],
        "trial": winner.get("number"),
        "kind": winner.get("kind") or method,
        "ratio": winner.get("ratio"),
        "params": winner.get("params"),
        "channels_match": info["channels_match"],
        "retime_rounds": info["rounds"],
    }


def best_method(methods: dict[str, dict[str, Any]], names: tuple[str, ...]) -> str | None:
    """The one of ``names`` with the highest re-timed speedup."""
    timed_ = [m for m in names if methods[m]["speedup"] is not None]
    return max(timed_, key=lambda m: methods[m]["speedup"]) if timed_ else None


def seed_ratios(methods: dict[str, dict[str, Any]], auto_space: dict[str, Any]) -> dict[str, Any]:
    """autoprune against the best baseline, random and the best architecture any method found (re-timed)."""
    from autoprune.widths import in_space
    from autoprune.widths import space_from_attr

    found = best_method(methods, METHODS)
    space = space_from_attr(auto_space)
    widths = {k: v for k, v in ((methods[found].get("channels") or {}) if found else {}).items() if k in space}
    return {
        "autoprune_over_best_baseline": ratio_of(methods, "speedup", "autoprune", "uniform", "global"),
        "best_baseline": best_method(methods, ("uniform", "global")),
        "autoprune_over_random": ratio_of(methods, "speedup", "autoprune", "random"),
        "random_comparison_spread": math.hypot(methods["autoprune"]["speedup_spread"] or 0.0, methods["random"]["speedup_spread"] or 0.0),
        "best_found": found,
        "autoprune_over_best_found": ratio_of(methods, "speedup", "autoprune", *METHODS),
        "best_found_in_autoprune_space": bool(found) and len(widths) == len(space) and in_space(space, widths),
    }


def seed_met(methods: dict[str, dict[str, Any]], ratios: dict[str, Any], max_drop: float) -> dict[str, bool]:
    """The three per-seed targets."""
    over_base, over_random = ratios["autoprune_over_best_baseline"], ratios["autoprune_over_random"]
    auto, rand = methods["autoprune"], methods["random"]
    beyond = auto["speedup"] is not None and (rand["speedup"] is None or over_random - 1.0 > ratios["random_comparison_spread"])
    return {
        "autoprune_over_best_baseline": over_base is not None and over_base >= TARGETS["autoprune_over_best_baseline"],
        "autoprune_test_within_budget": auto["test_drop"] is not None and auto["test_drop"] <= max_drop,
        "autoprune_above_random_beyond_spread": bool(beyond),
    }


def seed_entry(ctx: Any, runs: dict[str, Any], winners: dict[str, Any], retimed: dict[str, Any], tested: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """Everything one seed measured."""
    cfg = ctx.config
    methods = {
        m: method_entry(m, winners.get(m), retimed, tested, method_counts(runs, m), cfg.latency.cv_threshold) for m in METHODS
    }
    ratios = seed_ratios(methods, runs["spaces"]["autoprune"])
    mismatches = baseline_mismatches(runs["rows"]["autoprune"], runs["sweeps"])
    return {
        "seed": cfg.search.seed,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_id": host.get("fingerprint_id"),
        "hostname": host.get("hostname"),
        **methods,
        "ratios": ratios,
        "met": seed_met(methods, ratios, cfg.max_drop),
        "repeated_full_evaluations": sum(methods[m]["repeated_full_evaluations"] for m in ("random", "autoprune")),
        "baseline_mismatches": len(mismatches),
        "baseline_mismatch_details": mismatches,
        "wall_s": runs["walls"],
        "trials": runs["rows"],
    }


def run_seed(ctx: Any, folder: pathlib.Path, rounds: int, host: dict[str, Any], resume: bool = False) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The four methods, the re-timing and the test split for the seed in ``ctx.config.search.seed``.

    Returns:
        ``(the seed's entry, what run_methods returned, the base's test MetricResult)``.
    """
    started = time.perf_counter()
    runs = run_methods(ctx, folder, ctx.config.search.trials, resume)
    winners = pick_winners(runs, ctx.config)
    say(f"re-timing the {len(winners)} winners together, interleaved against the base ({rounds} round(s))")
    retimed, runs["walls"]["retime"] = timed(lambda: retime(ctx, winners, folder / "retime", rounds))
    say("measuring the winners on the test split")
    (tested, base_test), runs["walls"]["test"] = timed(lambda: test_winners(ctx, winners, runs["rows"], folder / "test"))
    runs["walls"]["total"] = time.perf_counter() - started
    return seed_entry(ctx, runs, winners, retimed, tested, host), runs, base_test


# --- over seeds -------------------------------------------------------------------------------------------


def spread_stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, range and count."""
    if not values:
        return {"mean": None, "stdev": None, "min": None, "max": None, "n": 0}
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "stdev": stdev, "min": min(values), "max": max(values), "n": len(values)}


def summarize_seeds(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios' mean and spread over the seeds, each method's re-timed speedup, and the targets over all seeds."""
    summary: dict[str, Any] = {"seeds": [s["seed"] for s in seeds]}
    for key in ("autoprune_over_best_baseline", "autoprune_over_random", "autoprune_over_best_found"):
        summary[key] = spread_stats([s["ratios"][key] for s in seeds if s["ratios"][key] is not None])
    summary["speedup"] = {m: spread_stats([s[m]["speedup"] for s in seeds if s[m]["speedup"] is not None]) for m in METHODS}
    summary["met"] = {k: bool(seeds) and all(s["met"][k] for s in seeds) for k in TARGETS}
    summary["seeds_asked"] = SEEDS_ASKED
    summary["all_met"] = all(summary["met"].values()) and len(seeds) >= SEEDS_ASKED
    return summary


def shared_figures(args: argparse.Namespace, ctx: Any, runs: dict[str, Any], base_test: Any, rounds: int, host: dict[str, Any]) -> dict[str, Any]:
    """The file's top-level figures (the same for every seed; the host and date of the latest run)."""
    cfg = ctx.config
    return {
        "max_drop": cfg.max_drop,
        "base_metric": ctx.base_metric.value,
        "host": host,
        "config": cfg.name,
        "config_path": str(args.config),
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metric_name": ctx.task.metric_name,
        "metric_direction": ctx.task.metric_direction,
        "base_metric_stderr": ctx.base_metric.stderr,
        "base_test_metric": base_test.value,
        "base_test_metric_stderr": base_test.stderr,
        "base_sha256": ctx.base_info.sha256,
        "trials_per_search": cfg.search.trials,
        "identity": identity(ctx, args.quick),
        "settings": settings_of(cfg, ctx, rounds) | {"seed": "per seed (seeds[].seed)"},
        "bounds": {k: list(v) for k, v in runs["baselines"].bounds.items()},
        "search_space": runs["spaces"],
        "sweeps": runs["sweeps"],
    }


def results_file(shared: dict[str, Any], seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The results JSON: the issue's top-level keys first, then the summary, then every seed."""
    seeds = sorted(seeds, key=lambda s: s["seed"])
    summary = summarize_seeds(seeds)
    head = {k: shared[k] for k in ("max_drop", "base_metric", "host", "config")}
    return {
        "benchmark": "reference_search",
        **head,
        "repeated_full_evaluations": sum(s["repeated_full_evaluations"] for s in seeds),
        "baseline_mismatches": sum(s["baseline_mismatches"] for s in seeds),
        **{k: v for k, v in shared.items() if k not in head},
        "targets": TARGETS,
        "summary": summary,
        "met": summary["met"],
        "seeds": seeds,
    }


# --- output -----------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str, missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` for None."""
    return missing if value is None else format(value, spec)


def print_seed(entry: dict[str, Any], data: dict[str, Any]) -> None:
    """The seed's table: per method its counts and its winner re-timed, on validation and on test."""
    metric = data["metric_name"]
    print()
    print(f"seed {entry['seed']} ({data['config']}): base {metric} {data['base_metric']:.4f} val, {data['base_test_metric']:.4f} test; "
          f"max drop {data['max_drop']}; {data['trials_per_search']} trials per search")
    print(f"{'method':10} {'trials':>6} {'finetunes':>9} {'search x':>9} {'re-timed x':>11} {'spread':>7} {'val drop':>9} {'test drop':>10}  kept channels")
    for m in METHODS:
        w = entry[m]
        if w["speedup"] is None:
            print(f"{m:10} {w['trials']:>6} {w['finetunes']:>9}   no candidate within the budget")
            continue
        print(f"{m:10} {w['trials']:>6} {w['finetunes']:>9} {w['search_speedup']:>8.2f}x {w['speedup']:>10.2f}x {w['speedup_spread']:>7.1%} "
              f"{w['drop']:>+9.4f} {w['test_drop']:>+10.4f}  {channels_text(w['channels'])}")
    r, met = entry["ratios"], entry["met"]
    ok = {True: "met", False: "NOT met"}
    best_baseline = r["best_baseline"] or "no baseline within the budget"
    print(f"autoprune / best(uniform, global) = {fmt(r['autoprune_over_best_baseline'], '.3f')} ({best_baseline}); "
          f"target >= {TARGETS['autoprune_over_best_baseline']}: {ok[met['autoprune_over_best_baseline']]}")
    print(f"autoprune's pick on test: drop {fmt(entry['autoprune']['test_drop'], '+.4f')} (budget {data['max_drop']}): "
          f"{ok[met['autoprune_test_within_budget']]}")
    versus = "random found none within the budget" if entry["random"]["speedup"] is None else f"re-timing spread {r['random_comparison_spread']:.1%}"
    print(f"autoprune / random = {fmt(r['autoprune_over_random'], '.3f')} ({versus}): {ok[met['autoprune_above_random_beyond_spread']]}")
    print(f"best architecture found: {r['best_found']} (in autoprune's space: {'yes' if r['best_found_in_autoprune_space'] else 'no'}); "
          f"autoprune's pick is at {fmt(r['autoprune_over_best_found'], '.3f')} of it")
    print(f"repeated full evaluations: {entry['repeated_full_evaluations']}; baseline mismatches: {entry['baseline_mismatches']}")


def print_summary(data: dict[str, Any]) -> None:
    """Mean and spread of the ratios over every seed in the file, and the targets over all of them."""
    s = data["summary"]
    print()
    print(f"over {len(s['seeds'])} seed(s) {s['seeds']} (issue 12 asks for {s['seeds_asked']}):")
    for key, label in (("autoprune_over_best_baseline", "autoprune / best(uniform, global)"), ("autoprune_over_random", "autoprune / random")):
        v = s[key]
        if not v["n"]:
            print(f"  {label:34} no seed with both figures")
            continue
        print(f"  {label:34} mean {v['mean']:.3f}, stdev {v['stdev']:.3f}, range {v['min']:.3f}-{v['max']:.3f} ({v['n']} seed(s))")
    means = {m: s["speedup"][m]["mean"] for m in METHODS}
    print("  re-timed speedup, mean: " + ", ".join(f"{m} " + ("-" if v is None else f"{v:.2f}x") for m, v in means.items()))
    for key, met in s["met"].items():
        print(f"  {key:40} {'met for every seed' if met else 'NOT met for every seed'}")
    print(f"  repeated full evaluations {data['repeated_full_evaluations']}, baseline mismatches {data['baseline_mismatches']} (target 0)")


def main(argv: list[str] | None = None) -> int:
    """Run one seed (or only the seed-independent part), merge it into the results file, print both tables."""
    args = parse_args(argv)
    out, workdir = default_paths(args)
    rounds = args.retime_rounds or (QUICK["retime_rounds"] if args.quick else 3)
    quiet_optuna()
    from autoprune.latency import host_fingerprint

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = prepare_config(args.config, workdir, args.quick, args.trials or (QUICK["trials"] if args.quick else None))
    cfg.search.seed = args.seed
    folder = workdir / (f"seed-{args.seed}" if not args.mode or args.mode == cfg.search.mode else f"seed-{args.seed}-{args.mode}")
    cfg.search.mode = args.mode or cfg.search.mode
    ctx = build_context(cfg, workdir)
    if args.sweeps_only:
        _, _, wall = prepare_autoprune(ctx, workdir / "sweeps-only")
        say(f"recipe and sweeps ready in {workdir} ({wall:.0f}s); every seed reuses them")
        return 0
    others = earlier_seeds(out, identity(ctx, args.quick), args.seed)
    say(f"{cfg.name}, seed {args.seed}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f} (n={ctx.base_metric.n}), "
        f"round_to {ctx.round_to}, {len(ctx.groups)} groups, max drop {cfg.max_drop}, {cfg.search.trials} trials per search; "
        f"work folder {workdir}; {len(others)} other seed(s) in {out}")
    host = host_fingerprint()
    entry, runs, base_test = run_seed(ctx, folder, rounds, host, args.resume)
    data = results_file(shared_figures(args, ctx, runs, base_test, rounds, host), others + [entry])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n", encoding="utf-8")
    tmp.replace(out)
    print_seed(entry, data)
    print_summary(data)
    walls = entry["wall_s"]
    print(f"wall: sweeps {walls['sweeps']:.0f}s, random {walls['random']:.0f}s, autoprune {walls['autoprune']:.0f}s, "
          f"re-timing {walls['retime']:.0f}s, test {walls['test']:.0f}s, total {walls['total']:.0f}s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
