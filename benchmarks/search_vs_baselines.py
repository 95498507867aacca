"""Benchmark: autoprune's bounded search against uniform, global and unbounded random search.

One base model and one recovery recipe (the study's: calibrated first when the config enables it) for every
candidate (the methods live in ``search_methods.py``):

a) uniform sweep and b) global sweep over ``search.sweep_ratios`` (run by
   :func:`autoprune.search.study.create_or_load` with the study's recipe, or reused from ``baselines.json``);
c) unbounded random per-group search: Optuna's ``RandomSampler`` over every width (kept channels) each group
   can reach after channel rounding and the guards, in the config's search mode;
d) autoprune's search: :func:`autoprune.search.study.create_or_load` (the sweeps above give its bounds, the
   best uniform and global points are enqueued as its first two trials), the study's sampler
   (:func:`~autoprune.search.study.make_sampler`) and autoprune's :class:`~autoprune.search.objective.Objective`,
   run in this process the way a worker runs it (``study.optimize(n_trials=1)`` until the target).

c) and d) run the same number of trials through the same ``Objective`` (same recovery, screening, timing,
artifact uploads, storage writes), each on a fresh SQLite storage in the work folder, each with a fresh
latency cache.  The winner of each method is its fastest feasible candidate (drop <= max_drop; a timing
that did not settle only when no settled one is feasible).  At the end the four winners are re-exported and
re-timed TOGETHER, interleaved against the base in one process (:func:`autoprune.latency.measure_speedups`,
``--retime-rounds`` rounds, median), so the comparison does not depend on when each was timed during the
run.  Both the search-time and the re-timed speedups are reported.

Also reported: trials autoprune needed to reach 95% of its final best feasible speedup (and random's), the
hypervolume of (metric, speedup) after 10/20/40 trials for c) and d), with reference point
``(base_metric - max_drop, 1.0)``: only candidates inside the budget and faster than the base add area; the
finetunes each search paid for, repeated full evaluations and enqueued baselines that missed their sweep point.

Targets (reported met or not): autoprune's re-timed speedup >= 1.2x the better of the uniform and global
winners, and above random's at equal trials.

Run (full; writes ``benchmarks/results/search_vs_baselines_<config name>.json`` and ``.png``)::

    python benchmarks/search_vs_baselines.py --config studies/digits-resnet.yaml [--trials 40]

Smoke run (tiny settings, a 2-epoch base model in a temp folder; writes ``*_quick`` files to a temp folder)::

    python benchmarks/search_vs_baselines.py --config studies/digits-resnet.yaml --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from search_methods import METHODS  # noqa: E402
from search_methods import QUICK  # noqa: E402
from search_methods import baseline_mismatches  # noqa: E402
from search_methods import build_context  # noqa: E402
from search_methods import channels_text  # noqa: E402
from search_methods import fastest  # noqa: E402
from search_methods import finetuned  # noqa: E402
from search_methods import is_feasible  # noqa: E402
from search_methods import pick_winners  # noqa: E402
from search_methods import prepare_config  # noqa: E402
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
TARGETS = {"autoprune_over_best_baseline": 1.2, "autoprune_over_random": 1.0}
HV_AT = (10, 20, 40)


def trials_to_fraction(rows: list[dict[str, Any]], max_drop: float, fraction: float = 0.95) -> int | None:
    """Trials (in trial order, every trial counted) until the running best feasible speedup reached
    ``fraction`` of the final best; None when no trial was feasible."""
    best_final = fastest(rows, max_drop)
    if best_final is None:
        return None
    best = 0.0
    for i, row in enumerate(rows, start=1):
        if is_feasible(row, max_drop):
            best = max(best, row["speedup"])
        if best >= fraction * best_final["speedup"]:
            return i
    return None


def hv_reference(base_metric: float, max_drop: float, direction: str) -> tuple[float, float]:
    """(metric at the edge of the budget, speedup 1.0)."""
    return (base_metric - max_drop if direction == "maximize" else base_metric + max_drop, 1.0)


def hv_checkpoints(n: int) -> list[int]:
    """Trial counts at which the hypervolume is reported (``HV_AT`` up to ``n``, and ``n``)."""
    return sorted({k for k in HV_AT if k <= n} | ({n} if n > 0 else set()))


def hypervolumes(rows: list[dict[str, Any]], reference: tuple[float, float], direction: str) -> dict[str, float]:
    """Hypervolume of the complete trials' (metric, speedup) after each checkpoint count of trials."""
    from autoprune.analysis.pareto import hypervolume_history

    points = [(r["metric"], r["speedup"]) if r["state"] == "COMPLETE" else (None, None) for r in rows]
    hist = hypervolume_history(points, reference, at=hv_checkpoints(len(points)), metric_direction=direction)
    return {str(k): v for k, v in hist.items()}


# --- output ---------------------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Metric vs search-time speedup of every candidate of the four methods, winners starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"uniform": "tab:blue", "global": "tab:orange", "random": "tab:gray", "autoprune": "tab:green"}
    sweeps = report["sweeps"]
    for kind, marker in (("uniform", "s"), ("global", "^")):
        pts = sorted((p["speedup"], p["metric"]) for p in sweeps[kind] if p.get("speedup") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colors[kind], label=f"{kind} sweep", alpha=0.8)
    for method, marker in (("random", "o"), ("autoprune", "D")):
        pts = [(r["speedup"], r["metric"]) for r in report["trials"][method] if r["state"] == "COMPLETE" and r["speedup"] is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colors[method], alpha=0.55, s=22, label=f"{method} trials")
    for method in METHODS:
        w = report[method]
        if w.get("search_speedup") is None:
            continue
        ax.scatter([w["search_speedup"]], [w["metric"]], marker="*", s=260, color=colors[method], edgecolors="black", zorder=5,
                   label=f"{method} winner: {w['speedup']:.2f}x re-timed")
    budget = report["hv_reference"][0]
    ax.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"budget (drop {report['max_drop']})")
    ax.axhline(report["base_metric"], color="black", linestyle=":", linewidth=1, label="base")
    feasible_metrics = [r["metric"] for m in ("random", "autoprune") for r in report["trials"][m] if r["metric"] is not None]
    feasible_metrics += [p["metric"] for k in ("uniform", "global") for p in sweeps[k]]
    if feasible_metrics:
        low = max(min(feasible_metrics), budget - 6 * max(report["max_drop"], 1e-3))
        ax.set_ylim(low, max(max(feasible_metrics), report["base_metric"]) + 0.3 * max(report["max_drop"], 1e-3))
    ax.set_xlabel("speedup over the base (ONNX Runtime, interleaved, at search time)")
    ax.set_ylabel(f"validation {report['metric_name']}")
    ax.set_title(f"{report['config']}: {report['trials_per_search']} trials per search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def print_table(report: dict[str, Any]) -> None:
    """The winners' table, convergence and hypervolume, and the targets."""
    print()
    print(f"{report['config']}: base {report['metric_name']} {report['base_metric']:.4f}, max drop {report['max_drop']}, "
          f"{report['trials_per_search']} trials per search")
    print(f"{'method':10} {'trials':>6} {'evals':>6} {'search x':>9} {'re-timed x':>11} {report['metric_name'][:8]:>8} {'drop':>8}  channels")
    for m in METHODS:
        w = report[m]
        if w.get("search_speedup") is None:
            print(f"{m:10} {w['trials']:>6} {w['evaluations']:>6}   no feasible candidate")
            continue
        print(f"{m:10} {w['trials']:>6} {w['evaluations']:>6} {w['search_speedup']:>8.2f}x {w['speedup']:>10.2f}x "
              f"{w['metric']:>8.4f} {w['drop']:>+8.4f}  {channels_text(w['channels'])}")
    kind = report["autoprune"].get("kind")
    if kind not in (None, "search"):
        print(f"(autoprune's winner is trial {report['autoprune']['trial']}, the {kind} baseline it enqueued)")
    print()
    for m in ("random", "autoprune"):
        w = report[m]
        hv = ", ".join(f"{k}: {v:.4f}" for k, v in w["hypervolume"].items())
        print(f"{m:10} trials to 95% of its best: {w['trials_to_95']}; hypervolume {hv}")
    print()
    for key, target in TARGETS.items():
        value = report["measured"][key]
        shown = "n/a" if value is None else f"{value:.3f}"
        cmp = ">=" if key == "autoprune_over_best_baseline" else ">"
        print(f"{key:30} {shown} (target {cmp} {target}) {'met' if report['met'][key] else 'NOT met'}")


def summarize_method(row: dict[str, Any] | None, trials: int, evaluations: int) -> dict[str, Any]:
    """A method's winner (a trial row or a sweep point, or None) as the report shows it."""
    if row is None:
        return {"speedup": None, "search_speedup": None, "drop": None, "metric": None, "channels": None, "trials": trials, "evaluations": evaluations}
    return {
        "speedup": None,  # filled in by the re-timing
        "search_speedup": row["speedup"],
        "drop": row["drop"],
        "metric": row["metric"],
        "channels": row["channels"],
        "trials": trials,
        "evaluations": evaluations,
    }


def summarize_methods(runs: dict[str, Any], cfg: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each method's winner (:func:`~search_methods.pick_winners`) and its figures before the re-timing.

    Returns:
        ``(report per method, winner row per method that has one)``.
    """
    winners = pick_winners(runs, cfg)
    n_sweep = len(cfg.search.sweep_ratios)
    report: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        best = winners.get(method)
        if method in ("uniform", "global"):
            report[method] = summarize_method(best, n_sweep, n_sweep)
            if best is not None:
                report[method]["ratio"] = best["ratio"]
            continue
        rows = runs["rows"][method]
        # autoprune's cost includes the two sweeps that bound it.
        report[method] = summarize_method(best, len(rows), len(rows) + (2 * n_sweep if method == "autoprune" else 0))
        if best is not None:
            report[method].update(trial=best["number"], kind=best["kind"], params=best["params"])
    return report, winners


def add_search_figures(report: dict[str, dict[str, Any]], runs: dict[str, Any], reference: tuple[float, float], cfg: Any, direction: str) -> None:
    """Convergence, hypervolume, wall time and trial accounting of each method (in place)."""
    from autoprune.analysis.pareto import hypervolume_2d

    max_drop = cfg.max_drop
    for method in ("random", "autoprune"):
        rows = runs["rows"][method]
        report[method] |= {
            "trials_to_95": trials_to_fraction(rows, max_drop),
            "hypervolume": hypervolumes(rows, reference, direction),
            "wall_s": runs["walls"][method],
            "trials_pruned": sum(1 for r in rows if r["state"] == "PRUNED"),
            "trials_feasible": sum(1 for r in rows if is_feasible(r, max_drop)),
            "finetunes": len(finetuned(rows)),
            "repeated_full_evaluations": repeated_evaluations(rows),
        }
    mismatches = baseline_mismatches(runs["rows"]["autoprune"], runs["sweeps"])
    report["autoprune"] |= {"baseline_mismatches": len(mismatches), "baseline_mismatch_details": mismatches}
    for kind in ("uniform", "global"):
        points = runs["sweeps"][kind]
        report[kind]["hypervolume"] = hypervolume_2d([(p["metric"], p["speedup"]) for p in points], reference, metric_direction=direction)
        report[kind]["wall_s"] = runs["walls"]["sweeps"] / 2
        report[kind]["finetunes"] = len(points)


def comparisons(report: dict[str, dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, bool], dict[str, float | None]]:
    """``(re-timed ratios, targets met, search-time ratios)``."""
    pairs = {"autoprune_over_best_baseline": ("uniform", "global"), "autoprune_over_random": ("random",)}
    measured = {name: ratio_of(report, "speedup", "autoprune", *others) for name, others in pairs.items()}
    best_baseline = measured["autoprune_over_best_baseline"]
    over_random = measured["autoprune_over_random"]
    met = {
        "autoprune_over_best_baseline": best_baseline is not None and best_baseline >= TARGETS["autoprune_over_best_baseline"],
        "autoprune_over_random": over_random is not None and over_random > TARGETS["autoprune_over_random"],
    }
    search_time = {
        name: None if report["autoprune"]["search_speedup"] is None else ratio_of(report, "search_speedup", "autoprune", *others)
        for name, others in pairs.items()
    }
    return measured, met, search_time


def build_report(args: argparse.Namespace, ctx: Any, runs: dict[str, Any], methods: dict[str, dict[str, Any]], rounds: int) -> dict[str, Any]:
    """The result JSON."""
    from autoprune.latency import host_fingerprint

    cfg = ctx.config
    direction = ctx.task.metric_direction
    measured, met, search_time = comparisons(methods)
    return {
        "benchmark": "search_vs_baselines",
        "config": cfg.name,
        "config_path": str(args.config),
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "metric_name": ctx.task.metric_name,
        "metric_direction": direction,
        "base_metric": ctx.base_metric.value,
        "base_metric_stderr": ctx.base_metric.stderr,
        "base_metric_n": ctx.base_metric.n,
        "base_sha256": ctx.base_info.sha256,
        "max_drop": cfg.max_drop,
        "trials_per_search": cfg.search.trials,
        "settings": settings_of(cfg, ctx, rounds),
        "hv_reference": list(hv_reference(ctx.base_metric.value, cfg.max_drop, direction)),
        "hv_reference_note": "(base_metric - max_drop, 1.0): only candidates within the budget and faster than the base add area",
        "bounds": {k: list(v) for k, v in runs["baselines"].bounds.items()},
        "search_space": dict(runs["spaces"]),
        **methods,
        "targets": TARGETS,
        "measured": measured,
        "met": met,
        "search_time_ratios": search_time,
        "wall_s": runs["walls"],
        "sweeps": runs["sweeps"],
        "trials": runs["rows"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/digits-resnet.yaml", help="study YAML (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=None, help="trials of the random and the autoprune search (default 40; 4 with --quick)")
    parser.add_argument("--retime-rounds", type=int, default=None,
                        help="interleaved re-timing rounds of the four winners (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, 2-epoch base in a temp folder, output to a temp folder")
    parser.add_argument("--workdir", default=None, help="folder for storages, caches, ONNX files (default: a temp folder, removed)")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/search_vs_baselines_<name>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the four methods, re-time their winners together, write the JSON and the PNG, print the table."""
    args = parse_args(argv)
    trials = args.trials or (QUICK["trials"] if args.quick else 40)
    rounds = args.retime_rounds or (QUICK["retime_rounds"] if args.quick else 3)
    quiet_optuna()
    from autoprune.config import load_config

    out = pathlib.Path(args.out) if args.out else RESULTS / f"search_vs_baselines_{load_config(args.config).name}.json"
    if args.quick and not args.out:
        out = quick_path(out)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="autoprune-svb-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        cfg = prepare_config(args.config, workdir, args.quick, trials)
        ctx = build_context(cfg, workdir)
        say(f"{cfg.name}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f} (n={ctx.base_metric.n}), round_to {ctx.round_to}, "
            f"{len(ctx.groups)} groups, max drop {cfg.max_drop}; work folder {workdir}")
        runs = run_methods(ctx, workdir, trials)
        methods, winners = summarize_methods(runs, cfg)
        say(f"re-timing the {len(winners)} winners together, interleaved against the base ({rounds} round(s))")
        retimed, runs["walls"]["retime"] = timed(lambda: retime(ctx, winners, workdir / "retime", rounds))
        for method, info in retimed.items():
            methods[method] |= {"speedup": info["speedup"], "retime": info}
        reference = hv_reference(ctx.base_metric.value, cfg.max_drop, ctx.task.metric_direction)
        add_search_figures(methods, runs, reference, cfg, ctx.task.metric_direction)
        runs["walls"]["total"] = time.perf_counter() - started
        report = build_report(args, ctx, runs, methods, rounds)
        png = plot(report, out.with_suffix(".png"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        print_table(report)
        walls = runs["walls"]
        print(f"wall: sweeps {walls['sweeps']:.0f}s, random {walls['random']:.0f}s, autoprune {walls['autoprune']:.0f}s, "
              f"re-timing {walls['retime']:.0f}s, total {walls['total']:.0f}s")
        print(f"wrote {out} and {png}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
