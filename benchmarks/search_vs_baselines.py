"""Benchmark: autoprune's bounded search against uniform, global and unbounded random search.

One base model and one recovery recipe (the config's) for every candidate:

a) uniform sweep and b) global sweep over ``search.sweep_ratios`` (both :func:`autoprune.baselines.run_baselines`);
c) unbounded random per-group search: Optuna's ``RandomSampler`` over every width (kept channels) each group
   can reach after channel rounding and the guards;
d) autoprune's search: :func:`autoprune.search.study.create_or_load` (the sweeps above give its bounds, the
   best uniform and global points are enqueued as its first two trials), the study's sampler
   (:func:`~autoprune.search.study.make_sampler`) and autoprune's :class:`~autoprune.search.objective.Objective`,
   run in this process the way a worker runs it (``study.optimize(n_trials=1)`` until the target).

c) and d) run the same number of trials through the same ``Objective`` (same recovery, timing, artifact
uploads, storage writes), each on a fresh SQLite storage in the work folder, each with a fresh latency cache.
The winner of each method is its fastest feasible candidate (drop <= max_drop).  At the end the four
winners are re-exported and re-timed TOGETHER, interleaved against the base in one process
(:func:`autoprune.latency.measure_speedups`, ``--retime-rounds`` rounds, median), so the comparison does not
depend on when each was timed during the run.  Both the search-time and the re-timed speedups are reported.

Also reported: trials autoprune needed to reach 95% of its final best feasible speedup (and random's), and
the hypervolume of (metric, speedup) after 10/20/40 trials for c) and d), with reference point
``(base_metric - max_drop, 1.0)``: only candidates inside the budget and faster than the base add area.

Targets (reported met or not): autoprune's re-timed speedup >= 1.2x the better of the uniform and global
winners, and above random's at equal trials.

Run (full; writes ``benchmarks/results/search_vs_baselines_<config name>.json`` and ``.png``)::

    python benchmarks/search_vs_baselines.py --config studies/digits-resnet.yaml [--trials 40]

Smoke run (tiny settings, a 2-epoch base model in a temp folder; writes ``*_quick`` files to a temp folder)::

    python benchmarks/search_vs_baselines.py --config studies/digits-resnet.yaml --quick
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
METHODS = ("uniform", "global", "random", "autoprune")
TARGETS = {"autoprune_over_best_baseline": 1.2, "autoprune_over_random": 1.0}
HV_AT = (10, 20, 40)

# Tiny settings for --quick: prove the script works end to end, not measure anything.
QUICK = {
    "trials": 4,
    "base_epochs": 2,
    "sweep_ratios": [0.3, 0.6],
    "bn_batches": 2,
    "finetune_steps": 3,
    "repeats": 20,
    "blocks": 4,
    "warmup": 5,
    "retime_rounds": 1,
}


def say(line: str) -> None:
    """Print one progress line (flushed)."""
    print(line, flush=True)


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and experimental-feature warnings would drown the benchmark's own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    show = warnings.showwarning
    seen: set[tuple[type, str]] = set()

    def once(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        # e.g. a search-space grid Optuna adjusts: worth seeing, not once per trial
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            show(message, category, *args, **kwargs)

    if getattr(show, "__name__", "") != "once":
        warnings.showwarning = once


def quick_path(path: pathlib.Path) -> pathlib.Path:
    """Where a ``--quick`` run writes instead of ``path``: a temp folder, ``_quick`` suffix (never results/)."""
    folder = pathlib.Path(tempfile.gettempdir()) / "autoprune-bench-quick"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{path.stem}_quick{path.suffix}"


def prepare_config(config_path: str, workdir: pathlib.Path, quick: bool, trials: int | None = None) -> Any:
    """Load a study config for a benchmark run.

    The base model is the config's own checkpoint (trained once if missing, as ``autoprune train-base``
    would); everything the run writes (baselines, latency caches, artifacts, storages) goes to ``workdir``.
    With ``quick`` the base is a 2-epoch model in ``workdir`` and every budget is tiny.

    Returns:
        The adjusted :class:`~autoprune.config.StudyConfig`.
    """
    from autoprune.config import load_config
    from autoprune.search.create import train_base_if_missing

    cfg = load_config(config_path)
    if quick:
        cfg.artifact_dir = str(workdir / "base")
        cfg.base.checkpoint = None
        cfg.base.epochs = QUICK["base_epochs"]
        cfg.search.sweep_ratios = list(QUICK["sweep_ratios"])
        cfg.recovery.bn_batches = QUICK["bn_batches"]
        cfg.recovery.finetune_steps = QUICK["finetune_steps"]
        cfg.latency.repeats = QUICK["repeats"]
        cfg.latency.blocks = QUICK["blocks"]
        cfg.latency.warmup = QUICK["warmup"]
        cfg.latency.max_remeasure = 0
    train_base_if_missing(cfg, say=say)
    cfg.base.checkpoint = str(cfg.checkpoint_path())
    cfg.artifact_dir = str(workdir / "artifacts")
    cfg.storage = None
    if trials is not None:
        cfg.search.trials = trials
    return cfg


def build_context(cfg: Any, workdir: pathlib.Path) -> Any:
    """The study context (task, base model, pruner, base ONNX), without a latency cache (set per method)."""
    from autoprune.candidate import StudyContext

    return StudyContext.build(cfg, workdir=workdir / "onnx", use_cache=False)


def fresh_cache(ctx: Any, path: pathlib.Path) -> None:
    """Give the context its own, empty latency cache (so no method reuses another's timings)."""
    from autoprune.latency import LatencyCache

    path.unlink(missing_ok=True)
    ctx.cache = LatencyCache(path)


def sqlite_url(path: pathlib.Path) -> str:
    path.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def run_objective(study: Any, objective: Any, trials: int) -> dict[int, float]:
    """Run trials the way a worker does (``optimize(n_trials=1)`` until ``trials`` are finished).

    Returns:
        trial number -> wall seconds of its ``optimize`` call (ask, sampling, suggest, objective, tell).
    """
    from autoprune.search.objective import SurplusTrial
    from autoprune.search.objective import finished_count

    walls: dict[int, float] = {}
    calls = 0
    while finished_count(study) < trials:
        calls += 1
        if calls > 3 * trials + 5:
            raise RuntimeError(f"study {study.study_name!r}: {calls} optimize calls without reaching {trials} finished trials")
        before = trial_states(study)
        start = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        wall = time.perf_counter() - start
        for number in ran_trials(study, before):
            walls[number] = wall
    return walls


def trial_states(study: Any) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def ran_trials(study: Any, before: dict[int, str]) -> list[int]:
    """Trials that finished since ``before`` (an enqueued WAITING trial keeps its older number)."""
    done = ("COMPLETE", "PRUNED", "FAIL")
    return [n for n, state in trial_states(study).items() if state in done and before.get(n) not in done]


def trial_rows(study: Any, walls: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Every trial of a study as a plain dict, in trial-number order (``request``: the ratios its widths ask for)."""
    from autoprune.widths import in_space
    from autoprune.widths import ratios_for
    from autoprune.widths import space_from_attr

    space = space_from_attr(study.user_attrs.get("search_space") or {})
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ua = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "kind": ua.get("kind"),
                "params": dict(t.params),
                "request": ratios_for(space, t.params) if in_space(space, t.params) else None,
                "duplicate_of": ua.get("duplicate_of"),
                "metric": ua.get("metric"),
                "drop": ua.get("drop"),
                "speedup": ua.get("speedup"),
                "speedup_spread": ua.get("speedup_spread"),
                "feasible": ua.get("feasible"),
                "latency_cached": ua.get("latency_cached"),
                "macs": ua.get("macs"),
                "channels": ua.get("channels"),
                "ratios": ua.get("ratios"),
                "stage_seconds": ua.get("stage_seconds"),
                "wall_s": None if walls is None else walls.get(t.number),
            }
        )
    return rows


def is_feasible(row: dict[str, Any], max_drop: float) -> bool:
    return row.get("state", "COMPLETE") == "COMPLETE" and row.get("drop") is not None and row.get("speedup") is not None and row["drop"] <= max_drop


def fastest(rows: list[dict[str, Any]], max_drop: float) -> dict[str, Any] | None:
    """The fastest feasible row (ties: the smaller drop)."""
    ok = [r for r in rows if is_feasible(r, max_drop)]
    return max(ok, key=lambda r: (r["speedup"], -r["drop"])) if ok else None


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
    return sorted({k for k in HV_AT if k <= n} | ({n} if n > 0 else set()))


def hypervolumes(rows: list[dict[str, Any]], reference: tuple[float, float], direction: str) -> dict[str, float]:
    from autoprune.analysis.pareto import hypervolume_history

    points = [(r["metric"], r["speedup"]) if r["state"] == "COMPLETE" else (None, None) for r in rows]
    hist = hypervolume_history(points, reference, at=hv_checkpoints(len(points)), metric_direction=direction)
    return {str(k): v for k, v in hist.items()}


def channels_text(channels: dict[str, int] | None) -> str:
    return "/".join(str(v) for v in (channels or {}).values()) or "-"


# --- the four methods -----------------------------------------------------------------------------------


def run_sweeps(ctx: Any, workdir: pathlib.Path) -> tuple[Any, float]:
    """Uniform and global sweeps (saved where ``create_or_load`` will reuse them as autoprune's bounds)."""
    from autoprune.baselines import baselines_path
    from autoprune.baselines import run_baselines
    from autoprune.baselines import save_baselines

    fresh_cache(ctx, workdir / "latency-cache-baselines.sqlite")
    start = time.perf_counter()

    def on_point(p: Any) -> None:
        say(f"  {p.kind:7} {p.ratio:.2f}: metric {p.metric:.4f} (drop {p.drop:+.4f}), speedup {p.speedup:.2f}x")

    baselines = run_baselines(ctx, on_point=on_point)
    wall = time.perf_counter() - start
    save_baselines(baselines, baselines_path(ctx))
    for note in baselines.notes():
        say(f"  note: {note}")
    return baselines, wall


def run_random(ctx: Any, workdir: pathlib.Path, trials: int) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Unbounded random per-group search over every width each group can reach."""
    import optuna

    from autoprune.search.objective import Objective
    from autoprune.search.study import search_space
    from autoprune.search.study import storage_for
    from autoprune.widths import space_to_attr

    cfg = ctx.config
    fresh_cache(ctx, workdir / "latency-cache-random.sqlite")
    url = sqlite_url(workdir / "random.db")
    space = space_to_attr(search_space(ctx, [], None))
    study = optuna.create_study(
        study_name=f"{cfg.name}-random",
        storage=storage_for(cfg, url),
        directions=[ctx.task.metric_direction, "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed),
    )
    study.set_user_attr("search_space", space)
    study.set_user_attr("max_drop", cfg.max_drop)
    study.set_user_attr("base_metric", ctx.base_metric.value)
    study.set_metric_names([ctx.task.metric_name, "speedup"])
    objective = Objective(ctx, study, trials, "random", lambda line: say("  " + line))
    start = time.perf_counter()
    walls = run_objective(study, objective, trials)
    return trial_rows(study, walls), space, time.perf_counter() - start


def run_autoprune(ctx: Any, workdir: pathlib.Path, trials: int) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """autoprune's own search: create_or_load (bounds from the sweeps, baselines enqueued), the study's sampler."""
    import optuna

    from autoprune.search.objective import Objective
    from autoprune.search.study import create_or_load
    from autoprune.search.study import make_sampler
    from autoprune.search.study import storage_for

    cfg = ctx.config
    fresh_cache(ctx, workdir / "latency-cache-autoprune.sqlite")
    url = sqlite_url(workdir / "autoprune.db")
    create_or_load(cfg, url, ctx, say=lambda line: say("  " + line))
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url), sampler=make_sampler(cfg, 0))
    objective = Objective(ctx, study, trials, "autoprune", lambda line: say("  " + line))
    start = time.perf_counter()
    walls = run_objective(study, objective, trials)
    return trial_rows(study, walls), dict(study.user_attrs["search_space"]), time.perf_counter() - start


# --- re-timing ------------------------------------------------------------------------------------------


def rebuild(ctx: Any, method: str, winner: dict[str, Any], folder: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """Prune the base again exactly as the winner was pruned and export it (latency needs only the shape).

    Returns:
        The ONNX path and whether the kept channels match the ones recorded for the winner.
    """
    from autoprune.candidate import example_input
    from autoprune.latency import export_onnx

    model = copy.deepcopy(ctx.base_model)
    if method == "uniform":
        result = ctx.pruner.prune(model, uniform=winner["ratio"])
    elif method == "global":
        result = ctx.pruner.prune(model, global_ratio=winner["ratio"])
    else:
        result = ctx.pruner.prune(model, ratios=winner["request"])
    path = export_onnx(result.model, example_input(ctx.task, ctx.config), folder / f"{method}.onnx", opset=ctx.latency.opset)
    recorded = {k: int(v) for k, v in (winner.get("channels") or {}).items()}
    return path, {k: int(v) for k, v in result.kept.items()} == recorded


def retime(ctx: Any, winners: dict[str, dict[str, Any]], folder: pathlib.Path, rounds: int) -> dict[str, dict[str, Any]]:
    """Time every winner interleaved against the base in this process, ``rounds`` times (order rotated)."""
    from autoprune.latency import measure_speedups

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, pathlib.Path] = {}
    same: dict[str, bool] = {}
    for method, winner in winners.items():
        paths[method], same[method] = rebuild(ctx, method, winner, folder)
        if not same[method]:
            say(f"  warning: re-pruned {method} winner has other channels than recorded; timing the re-pruned one")
    order = list(paths)
    per_round: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    for r in range(rounds):
        rotated = order[r % len(order):] + order[: r % len(order)] if order else []
        results = measure_speedups([paths[m] for m in rotated], ctx.base_onnx, ctx.latency)
        for method, res in zip(rotated, results):
            per_round[method].append(
                {
                    "speedup": res.speedup,
                    "speedup_spread": res.speedup_spread,
                    "noisy": res.noisy,
                    "attempts": res.attempts,
                    "latency_ms": res.candidate.median_ms,
                    "base_latency_ms": res.baseline.median_ms,
                }
            )
        say("  round " + str(r + 1) + ": " + ", ".join(f"{m} {per_round[m][-1]['speedup']:.2f}x" for m in order))
    return {
        m: {
            "speedup": statistics.median(x["speedup"] for x in per_round[m]),
            "rounds": per_round[m],
            "channels_match": same[m],
        }
        for m in order
    }


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
        print(f"(autoprune's winner is trial {report['autoprune']['trial']}, the {kind} baseline it enqueued, clipped to its bounds)")
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


def summarize_method(rows_or_point: Any, method: str, trials: int, evaluations: int) -> dict[str, Any]:
    if rows_or_point is None:
        return {"speedup": None, "search_speedup": None, "drop": None, "metric": None, "channels": None, "trials": trials, "evaluations": evaluations}
    return {
        "speedup": None,  # filled in by the re-timing
        "search_speedup": rows_or_point["speedup"],
        "drop": rows_or_point["drop"],
        "metric": rows_or_point["metric"],
        "channels": rows_or_point["channels"],
        "trials": trials,
        "evaluations": evaluations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/digits-resnet.yaml", help="study YAML (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=None, help="trials of the random and the autoprune search (default 40; 4 with --quick)")
    parser.add_argument("--retime-rounds", type=int, default=None, help="interleaved re-timing rounds of the four winners (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, 2-epoch base in a temp folder, output to a temp folder")
    parser.add_argument("--workdir", default=None, help="folder for storages, caches, ONNX files (default: a temp folder, removed)")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/search_vs_baselines_<name>.json)")
    args = parser.parse_args(argv)
    trials = args.trials or (QUICK["trials"] if args.quick else 40)
    rounds = args.retime_rounds or (QUICK["retime_rounds"] if args.quick else 3)

    quiet_optuna()
    from autoprune.config import load_config
    from autoprune.latency import host_fingerprint

    name = load_config(args.config).name
    out = pathlib.Path(args.out) if args.out else RESULTS / f"search_vs_baselines_{name}.json"
    if args.quick and not args.out:
        out = quick_path(out)
    own_workdir = args.workdir is None
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="autoprune-svb-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        cfg = prepare_config(args.config, workdir, args.quick, trials)
        ctx = build_context(cfg, workdir)
        direction = ctx.task.metric_direction
        say(f"{cfg.name}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f} (n={ctx.base_metric.n}), round_to {ctx.round_to}, "
            f"{len(ctx.groups)} groups, max drop {cfg.max_drop}; work folder {workdir}")
        walls: dict[str, float] = {}

        say(f"a+b) uniform and global sweeps over {list(cfg.search.sweep_ratios)}")
        baselines, walls["sweeps"] = run_sweeps(ctx, workdir)
        say(f"c) unbounded random per-group search, {trials} trials")
        random_rows, random_space, walls["random"] = run_random(ctx, workdir, trials)
        say(f"d) autoprune's bounded search ({cfg.search.sampler}), {trials} trials")
        auto_rows, auto_space, walls["autoprune"] = run_autoprune(ctx, workdir, trials)

        max_drop = cfg.max_drop
        sweeps = {"uniform": [p.as_dict() for p in baselines.uniform], "global": [p.as_dict() for p in baselines.global_]}
        n_sweep = len(cfg.search.sweep_ratios)
        winners: dict[str, dict[str, Any]] = {}
        report_methods: dict[str, dict[str, Any]] = {}
        for kind in ("uniform", "global"):
            best = baselines.best(kind)
            row = None if best is None else best.as_dict()
            report_methods[kind] = summarize_method(row, kind, n_sweep, n_sweep)
            if row is not None:
                report_methods[kind]["ratio"] = row["ratio"]
                winners[kind] = row
        for method, rows in (("random", random_rows), ("autoprune", auto_rows)):
            best = fastest(rows, max_drop)
            # autoprune's cost includes the two sweeps that bound it.
            evaluations = len(rows) + (2 * n_sweep if method == "autoprune" else 0)
            report_methods[method] = summarize_method(best, method, len(rows), evaluations)
            if best is not None:
                report_methods[method].update(trial=best["number"], kind=best["kind"], params=best["params"])
                winners[method] = best

        say(f"re-timing the {len(winners)} winners together, interleaved against the base ({rounds} round(s))")
        start = time.perf_counter()
        retimed = retime(ctx, winners, workdir / "retime", rounds)
        walls["retime"] = time.perf_counter() - start
        for method, info in retimed.items():
            report_methods[method]["speedup"] = info["speedup"]
            report_methods[method]["retime"] = info

        reference = hv_reference(ctx.base_metric.value, max_drop, direction)
        for method, rows in (("random", random_rows), ("autoprune", auto_rows)):
            report_methods[method]["trials_to_95"] = trials_to_fraction(rows, max_drop)
            report_methods[method]["hypervolume"] = hypervolumes(rows, reference, direction)
            report_methods[method]["wall_s"] = walls[method]
            report_methods[method]["trials_pruned"] = sum(1 for r in rows if r["state"] == "PRUNED")
            report_methods[method]["trials_feasible"] = sum(1 for r in rows if is_feasible(r, max_drop))
        from autoprune.analysis.pareto import hypervolume_2d

        for kind in ("uniform", "global"):
            report_methods[kind]["hypervolume"] = hypervolume_2d(
                [(p["metric"], p["speedup"]) for p in sweeps[kind]], reference, metric_direction=direction
            )
            report_methods[kind]["wall_s"] = walls["sweeps"] / 2

        def ratio(a: str, *bs: str) -> float | None:
            top = report_methods[a]["speedup"]
            others = [report_methods[b]["speedup"] for b in bs if report_methods[b]["speedup"] is not None]
            if top is None:
                return 0.0 if others else None
            return top / max(others) if others else None  # nothing to compare with

        measured = {
            "autoprune_over_best_baseline": ratio("autoprune", "uniform", "global"),
            "autoprune_over_random": ratio("autoprune", "random"),
        }
        met = {
            "autoprune_over_best_baseline": measured["autoprune_over_best_baseline"] is not None
            and measured["autoprune_over_best_baseline"] >= TARGETS["autoprune_over_best_baseline"],
            "autoprune_over_random": measured["autoprune_over_random"] is not None
            and measured["autoprune_over_random"] > TARGETS["autoprune_over_random"],
        }
        search_time = {
            "autoprune_over_best_baseline": None,
            "autoprune_over_random": None,
        }
        a = report_methods["autoprune"]["search_speedup"]
        b = [report_methods[k]["search_speedup"] for k in ("uniform", "global") if report_methods[k]["search_speedup"] is not None]
        r = report_methods["random"]["search_speedup"]
        if a is not None and b:
            search_time["autoprune_over_best_baseline"] = a / max(b)
        if a is not None and r is not None:
            search_time["autoprune_over_random"] = a / r
        walls["total"] = time.perf_counter() - started

        report: dict[str, Any] = {
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
            "max_drop": max_drop,
            "trials_per_search": trials,
            "settings": {
                "criterion": cfg.criterion,
                "round_to": ctx.round_to,
                "sampler": cfg.search.sampler,
                "seed": cfg.search.seed,
                "sweep_ratios": list(cfg.search.sweep_ratios),
                "bounds_margin": cfg.search.bounds_margin,
                "enqueue_baselines": cfg.search.enqueue_baselines,
                "hopeless_margin": cfg.search.hopeless_margin,
                "retime_rounds": rounds,
                "recovery": cfg.recovery.model_dump(mode="json"),
                "pruning": cfg.pruning.model_dump(mode="json"),
                "latency": ctx.latency.as_dict(),
                "storage": "a fresh SQLite file per search",
                "winner": "fastest feasible candidate (drop <= max_drop) by search-time speedup",
            },
            "hv_reference": list(reference),
            "hv_reference_note": "(base_metric - max_drop, 1.0): only candidates within the budget and faster than the base add area",
            "bounds": {k: list(v) for k, v in baselines.bounds.items()},
            "search_space": {"autoprune": auto_space, "random": random_space},
            **report_methods,
            "targets": TARGETS,
            "measured": measured,
            "met": met,
            "search_time_ratios": search_time,
            "wall_s": walls,
            "sweeps": sweeps,
            "trials": {"random": random_rows, "autoprune": auto_rows},
        }
        png = plot(report, out.with_suffix(".png"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        print_table(report)
        print(f"wall: sweeps {walls['sweeps']:.0f}s, random {walls['random']:.0f}s, autoprune {walls['autoprune']:.0f}s, "
              f"re-timing {walls['retime']:.0f}s, total {walls['total']:.0f}s")
        print(f"wrote {out} and {png}")
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
