"""The four ways of choosing per-group ratios that the search benchmarks compare, and their re-timing.

Shared by ``search_vs_baselines.py``, ``reference_search.py`` and ``trial_overhead.py``:

a) uniform and b) global sweeps over ``search.sweep_ratios`` and d) autoprune's study: made by
   :func:`autoprune.search.study.create_or_load` exactly as ``autoprune create`` makes them (recipe
   calibration when the config enables it, the sweeps with that recipe, or ``baselines.json`` reused when it
   was made for the same base, budget, sweep and recipe; bounds from the sweeps; both best points enqueued);
c) unbounded random per-group search: Optuna's ``RandomSampler`` over every width (kept channels) each group
   can reach after channel rounding and the guards, in the same search mode as autoprune's study and with
   the recovery recipe autoprune's study stores (so every candidate gets the same recovery);

c) and d) run their trials through autoprune's :class:`~autoprune.search.objective.Objective` the way a
worker does (``study.optimize(n_trials=1)`` until the target), each on a fresh SQLite storage with a fresh
latency cache.  :func:`retime` times the winners together, interleaved against the base in one process.
"""

from __future__ import annotations

import copy
import pathlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

METHODS = ("uniform", "global", "random", "autoprune")

# Tiny settings for --quick: prove the scripts work end to end, not measure anything.
QUICK = {
    "trials": 4,
    "base_epochs": 2,
    "sweep_ratios": [0.3, 0.6],
    "bn_batches": 2,
    "finetune_steps": 3,
    "calibration_epochs": [0.02, 0.05],
    "repeats": 20,
    "blocks": 4,
    "warmup": 5,
    "retime_rounds": 1,
}


def say(line: str) -> None:
    """Print one progress line (flushed)."""
    print(line, flush=True)


def indent(line: str) -> None:
    """Print one progress line of a stage (indented)."""
    say("  " + line)


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


def quick_folder() -> pathlib.Path:
    """The temp folder ``--quick`` runs write to (never ``benchmarks/results/``)."""
    folder = pathlib.Path(tempfile.gettempdir()) / "autoprune-bench-quick"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def quick_path(path: pathlib.Path) -> pathlib.Path:
    """Where a ``--quick`` run writes instead of ``path``: a temp folder, ``_quick`` suffix (never results/)."""
    return quick_folder() / f"{path.stem}_quick{path.suffix}"


def run_paths(args: Any, results: pathlib.Path, config: str, work: str, quick_work: str) -> tuple[pathlib.Path, pathlib.Path]:
    """``(results JSON, work folder)`` of a benchmark invocation with ``--out``, ``--workdir`` and ``--quick``.

    The paths given win; else ``results`` and ``<config's artifact dir>/<work>``, or with ``--quick`` both in the
    quick temp folder (:func:`quick_path` of ``results``, ``<quick folder>/<quick_work>``).  A quick run never
    writes to ``results``' folder.
    """
    from autoprune.config import load_config

    out = pathlib.Path(args.out) if args.out else (quick_path(results) if args.quick else results)
    if args.quick and out.resolve().is_relative_to(results.parent.resolve()):
        raise SystemExit(f"--quick never writes to {results.parent}: pass another --out")
    if args.workdir:
        workdir = pathlib.Path(args.workdir)
    elif args.quick:
        workdir = quick_folder() / quick_work
    else:
        workdir = load_config(config).artifact_path() / work
    return out, workdir.resolve()


def shrink_for_quick(cfg: Any, artifact_dir: pathlib.Path) -> Any:
    """Tiny budgets for a smoke run: a 2-epoch base in ``artifact_dir``, short recovery, timing and calibration."""
    cfg.artifact_dir = str(artifact_dir)
    cfg.base.checkpoint = None
    cfg.base.epochs = QUICK["base_epochs"]
    cfg.search.sweep_ratios = list(QUICK["sweep_ratios"])
    cfg.recovery.bn_batches = QUICK["bn_batches"]
    cfg.recovery.finetune_steps = QUICK["finetune_steps"]
    cfg.recovery.calibration.lrs = [cfg.recovery.lr]
    cfg.recovery.calibration.epochs = list(QUICK["calibration_epochs"])
    cfg.latency.repeats = QUICK["repeats"]
    cfg.latency.blocks = QUICK["blocks"]
    cfg.latency.warmup = QUICK["warmup"]
    cfg.latency.max_remeasure = 0
    return cfg


def prepare_config(config_path: str, workdir: pathlib.Path, quick: bool, trials: int | None = None) -> Any:
    """Load a study config for a benchmark run.

    The base model is the config's own checkpoint (trained once if missing, as ``autoprune train-base``
    would); everything the run writes (calibration, baselines, latency caches, artifacts, storages) goes to
    ``workdir``.  With ``quick`` the base is a 2-epoch model in ``workdir`` and every budget is tiny (the
    recipe calibration, when enabled, tries two very short finetunes).

    Returns:
        The adjusted :class:`~autoprune.config.StudyConfig`.
    """
    from autoprune.config import load_config
    from autoprune.search.create import train_base_if_missing

    cfg = load_config(config_path)
    if quick:
        shrink_for_quick(cfg, workdir / "base")
    train_base_if_missing(cfg, say=say)
    cfg.base.checkpoint = str(cfg.checkpoint_path())
    cfg.artifact_dir = str(workdir / "artifacts")
    cfg.storage = None
    if trials is not None:
        cfg.search.trials = trials
    return cfg


def build_context(cfg: Any, workdir: pathlib.Path) -> Any:
    """The study context (task, base model, pruner, base ONNX), without a latency cache (set per method)."""
    from autoprune.trial.candidate import StudyContext

    return StudyContext.build(cfg, workdir=workdir / "onnx", use_cache=False)


def fresh_cache(ctx: Any, path: pathlib.Path) -> None:
    """Give the context its own, empty latency cache (so no method reuses another's timings)."""
    from autoprune.latency import LatencyCache

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    ctx.cache = LatencyCache(path)


def sqlite_url(path: pathlib.Path) -> str:
    """The URL of a fresh SQLite file (an old one is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
    """Trial number -> state name."""
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def ran_trials(study: Any, before: dict[int, str]) -> list[int]:
    """Trials that finished since ``before`` (an enqueued WAITING trial keeps its older number)."""
    done = ("COMPLETE", "PRUNED", "FAIL")
    return [n for n, state in trial_states(study).items() if state in done and before.get(n) not in done]


ROW_ATTRS = (
    "kind", "baseline_ratio", "duplicate_of", "screened", "metric", "drop", "speedup", "speedup_spread", "latency_noisy", "feasible",
    "latency_cached", "macs", "channels", "ratios", "stage_seconds", "arch_artifact_id", "weights_artifact_id", "sweep_point",
)  # fmt: skip


def trial_rows(study: Any, walls: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Every trial of a study as a plain dict, in trial-number order (``request``: the ratios its widths ask for)."""
    from autoprune.space.widths import in_space
    from autoprune.space.widths import ratios_for
    from autoprune.space.widths import space_from_attr

    space = space_from_attr(study.user_attrs.get("search_space") or {})
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        row = {"number": t.number, "state": t.state.name, "params": dict(t.params)}
        row["request"] = ratios_for(space, t.params) if in_space(space, t.params) else None
        row |= {key: t.user_attrs.get(key) for key in ROW_ATTRS}
        row["wall_s"] = None if walls is None else walls.get(t.number)
        rows.append(row)
    return rows


def is_feasible(row: dict[str, Any], max_drop: float) -> bool:
    """A complete trial (or a sweep point) with a timing and a drop within the budget."""
    return row.get("state", "COMPLETE") == "COMPLETE" and row.get("drop") is not None and row.get("speedup") is not None and row["drop"] <= max_drop


def is_settled(row: dict[str, Any], cv_threshold: float | None) -> bool:
    """Whether a trial's or sweep point's timing settled (not flagged noisy, spread within the threshold)."""
    from autoprune.analysis.pareto import unsettled

    return not unsettled(row.get("latency_noisy"), row.get("speedup_spread"), cv_threshold)


def fastest(rows: list[dict[str, Any]], max_drop: float, cv_threshold: float | None = None) -> dict[str, Any] | None:
    """The fastest feasible row (ties: the smaller drop), among the settled timings unless none settled.

    Args:
        rows: trial rows (:func:`trial_rows`) or sweep points (``SweepPoint.as_dict``).
        max_drop: the budget.
        cv_threshold: the config's ``latency.cv_threshold`` (None: trust the ``latency_noisy`` flag alone).
    """
    ok = [r for r in rows if is_feasible(r, max_drop)]
    pool = [r for r in ok if is_settled(r, cv_threshold)] or ok
    return max(pool, key=lambda r: (r["speedup"], -r["drop"])) if pool else None


def pick_winners(runs: dict[str, Any], cfg: Any) -> dict[str, dict[str, Any]]:
    """Each method's winner: its fastest feasible candidate, settled timings first (:func:`fastest`).

    Args:
        runs: what :func:`run_methods` returned.
        cfg: the study config (budget, ``latency.cv_threshold``).

    Returns:
        method -> its winning sweep point or trial row; methods without a feasible candidate are left out.
    """
    pools = {**runs["sweeps"], **runs["rows"]}
    best = {m: fastest(pools[m], cfg.max_drop, cfg.latency.cv_threshold) for m in METHODS}
    return {m: row for m, row in best.items() if row is not None}


def ratio_of(report: dict[str, dict[str, Any]], key: str, top: str, *others: str) -> float | None:
    """``report[top][key]`` over the best of ``report[o][key]`` (0.0 when ``top`` has none; None: nothing to compare)."""
    values = [report[o][key] for o in others if report[o].get(key) is not None]
    if report[top].get(key) is None:
        return 0.0 if values else None
    return report[top][key] / max(values) if values else None


def settings_of(cfg: Any, ctx: Any, rounds: int) -> dict[str, Any]:
    """The settings the run used (for the report)."""
    return {
        "criterion": cfg.criterion,
        "round_to": ctx.round_to,
        "sampler": cfg.search.sampler,
        "mode": cfg.search.mode,
        "screening": cfg.search.screening,
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
        "winner": "fastest feasible candidate (drop <= max_drop) by search-time speedup, settled timings first",
    }


def channels_text(channels: dict[str, int] | None) -> str:
    """Kept channels per group, ``/``-separated."""
    return "/".join(str(v) for v in (channels or {}).values()) or "-"


def sweeps_of(baselines: Any) -> dict[str, list[dict[str, Any]]]:
    """Both sweeps as plain dicts."""
    return {"uniform": [p.as_dict() for p in baselines.uniform], "global": [p.as_dict() for p in baselines.global_]}


# --- trial accounting -------------------------------------------------------------------------------------


def finetuned(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials that were pruned and finetuned: COMPLETE and not a reuse of another trial's figures."""
    return [r for r in rows if r["state"] == "COMPLETE" and r.get("duplicate_of") is None]


def repeated_evaluations(rows: list[dict[str, Any]]) -> int:
    """Finetuned trials whose kept channels an earlier finetuned trial of the same search already had."""
    seen: set[tuple[tuple[str, int], ...]] = set()
    repeats = 0
    for row in finetuned(rows):
        key = tuple(sorted((k, int(v)) for k, v in (row.get("channels") or {}).items()))
        repeats += key in seen
        seen.add(key)
    return repeats


def baseline_mismatches(rows: list[dict[str, Any]], sweeps: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Enqueued uniform/global trials whose kept channels differ from their sweep point's (by ``baseline_ratio``).

    Returns:
        One ``{"trial", "kind", "ratio", "channels", "sweep_channels"}`` per mismatch.
    """
    out = []
    for row in rows:
        kind = row.get("kind")
        if kind not in sweeps or row["state"] != "COMPLETE":
            continue
        ratio = row.get("baseline_ratio")
        point = next((p for p in sweeps[kind] if ratio is None or abs(p["ratio"] - ratio) < 1e-9), None)
        got = {k: int(v) for k, v in (row.get("channels") or {}).items()}
        want = {k: int(v) for k, v in ((point or {}).get("channels") or {}).items()}
        if got != want:
            out.append({"trial": row["number"], "kind": kind, "ratio": ratio, "channels": got, "sweep_channels": want})
    return out


# --- the four methods -----------------------------------------------------------------------------------


def sweep_printer(point: Any) -> None:
    """Progress line of one sweep point."""
    indent(f"{point.kind:7} {point.ratio:.2f}: metric {point.metric:.4f} (drop {point.drop:+.4f}), speedup {point.speedup:.2f}x")


def prepare_autoprune(
    ctx: Any, folder: pathlib.Path, on_point: Callable[[Any], None] = sweep_printer, seed_attrs: dict[str, Any] | None = None
) -> tuple[Any, Any, float]:
    """Calibrate, sweep and create autoprune's study on a fresh SQLite file in ``folder``, as ``autoprune create``.

    The sweeps get their own fresh latency cache; ``baselines.json`` (and the recipe calibration) in the
    config's artifact folder are reused when they were made for this base, budget, sweep and recipe.  The
    study's recovery recipe is left applied to ``ctx.config``: every later candidate gets it.  ``seed_attrs``:
    study attrs the fresh study holds before ``autoprune create`` runs on it (e.g. sensitivity curves and
    sweep measured once for several seeds, which creation then reuses).

    Returns:
        ``(study with the config's sampler, the Baselines, wall seconds of calibration + sweeps + creation)``.
    """
    import optuna

    from autoprune.search.study import create_or_load
    from autoprune.search.study import make_sampler
    from autoprune.search.study import objective_directions
    from autoprune.search.study import storage_for
    from autoprune.space.baselines import baselines_path
    from autoprune.space.baselines import load_baselines
    from autoprune.trial.calibration import RECIPE_ATTR
    from autoprune.trial.calibration import with_recipe

    cfg = ctx.config
    fresh_cache(ctx, folder / "latency-cache-baselines.sqlite")
    url = sqlite_url(folder / "autoprune.db")
    if seed_attrs:
        seeded = optuna.create_study(study_name=cfg.name, storage=url, directions=objective_directions(cfg.search.mode, ctx.task.metric_direction))
        for key, value in seed_attrs.items():
            seeded.set_user_attr(key, value)
    start = time.perf_counter()
    create_or_load(cfg, url, ctx, on_point=on_point, say=indent)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, url), sampler=make_sampler(cfg, 0))
    ctx.config = with_recipe(ctx.config, study.user_attrs.get(RECIPE_ATTR))
    baselines = load_baselines(baselines_path(ctx))
    if baselines is None:
        raise RuntimeError(f"create_or_load left no {baselines_path(ctx)}")
    return study, baselines, wall


def create_random(ctx: Any, folder: pathlib.Path) -> Any:
    """The unbounded random search's study: every reachable width per group, ``RandomSampler(search.seed)``.

    Same search mode (directions, screening rules) as autoprune's study; the recovery recipe is the one
    ``ctx.config`` holds (call :func:`prepare_autoprune` first so that it is autoprune's study's recipe).
    """
    import optuna

    from autoprune.search.study import objective_directions
    from autoprune.search.study import objective_names
    from autoprune.search.study import search_space
    from autoprune.search.study import storage_for
    from autoprune.space.widths import space_to_attr
    from autoprune.trial.calibration import RECIPE_ATTR
    from autoprune.trial.calibration import recipe_settings

    cfg = ctx.config
    mode = cfg.search.mode
    study = optuna.create_study(
        study_name=f"{cfg.name}-random",
        storage=storage_for(cfg, sqlite_url(folder / "random.db")),
        directions=objective_directions(mode, ctx.task.metric_direction),
        sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed),
    )
    attrs = {
        "search_space": space_to_attr(search_space(ctx, [], None)),
        "max_drop": cfg.max_drop,
        "base_metric": ctx.base_metric.value,
        "search_mode": mode,
        RECIPE_ATTR: recipe_settings(cfg),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.set_metric_names(objective_names(mode, ctx.task.metric_name))
    return study


def run_search(ctx: Any, study: Any, folder: pathlib.Path, trials: int, label: str) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Run ``trials`` trials of a study through autoprune's Objective, with a fresh latency cache.

    Returns:
        ``(trial rows, the study's search space attr, wall seconds)``.
    """
    from autoprune.search.objective import Objective

    fresh_cache(ctx, folder / f"latency-cache-{label}.sqlite")
    objective = Objective(ctx, study, trials, label, indent)
    start = time.perf_counter()
    walls = run_objective(study, objective, trials)
    return trial_rows(study, walls), dict(study.user_attrs["search_space"]), time.perf_counter() - start


# --- re-timing ------------------------------------------------------------------------------------------


def sweep_plan(point: dict[str, Any]) -> dict[str, Any]:
    """How a sweep point prunes the base: ``uniform`` or ``global_ratio`` by its ratio; a sensitivity point (its
    ``ratio`` is the targeted share of the cost) by its per-group ``ratios``.

    Example:
        >>> sweep_plan({"kind": "global", "ratio": 0.3})
        {'global_ratio': 0.3}
        >>> sweep_plan({"kind": "sensitivity", "ratio": 0.25, "ratios": {"a": 0.5}})
        {'ratios': {'a': 0.5}}
    """
    if point["kind"] == "uniform":
        return {"uniform": point["ratio"]}
    if point["kind"] == "global":
        return {"global_ratio": point["ratio"]}
    return {"ratios": dict(point["ratios"])}


def rebuild(ctx: Any, label: str, winner: dict[str, Any], folder: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """Prune the base again exactly as the winner was pruned and export it (latency needs only the shape).

    Args:
        label: the ONNX file's name (a method, or ``method:index`` for one of its candidates).
        winner: a sweep point (:func:`sweep_plan`) or a search trial row (by its requested ratios).

    Returns:
        The ONNX path and whether the kept channels match the ones recorded for the winner.
    """
    from autoprune.latency import export_onnx
    from autoprune.trial.candidate import example_input

    model = copy.deepcopy(ctx.base_model)
    # A trial by the ratios its widths ask for; one whose params lie outside the space it records (a reused
    # sweep point's trial can carry head widths the space leaves out) by the ratios it recorded.
    plan = {"ratios": winner["request"] or winner["ratios"]} if "number" in winner else sweep_plan(winner)
    result = ctx.pruner.prune(model, **plan)
    name = label.replace(":", "-")
    path = export_onnx(result.model, example_input(ctx.task, ctx.config), folder / f"{name}.onnx", opset=ctx.latency.opset)
    recorded = {k: int(v) for k, v in (winner.get("channels") or {}).items()}
    return path, {k: int(v) for k, v in result.kept.items()} == recorded


def retime(
    ctx: Any, winners: dict[str, dict[str, Any]], folder: pathlib.Path, rounds: int, context_for: Callable[[str], Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Time every winner interleaved against the base in this process, ``rounds`` times (order rotated).

    ``context_for(label)`` gives the context whose pruner rebuilds a winner (default: ``ctx`` for all).

    Returns:
        Per method ``speedup`` (median over rounds), ``speedup_spread`` (the larger of the rounds' median
        robust CV and half their relative range), ``noisy`` (any round unsettled), ``rounds`` and
        ``channels_match`` (the re-pruned model has the recorded kept channels).
    """
    from autoprune.latency import measure_speedups

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, pathlib.Path] = {}
    same: dict[str, bool] = {}
    for method, winner in winners.items():
        paths[method], same[method] = rebuild(context_for(method) if context_for else ctx, method, winner, folder)
        if not same[method]:
            indent(f"warning: re-pruned {method} winner has other channels than recorded; timing the re-pruned one")
    order = list(paths)
    per_round: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    for r in range(rounds):
        rotated = order[r % len(order):] + order[: r % len(order)] if order else []
        results = measure_speedups([paths[m] for m in rotated], ctx.base_onnx, ctx.latency)
        for method, res in zip(rotated, results, strict=True):
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
        indent("round " + str(r + 1) + ": " + ", ".join(f"{m} {per_round[m][-1]['speedup']:.2f}x" for m in order))
    return {m: round_summary(per_round[m]) | {"channels_match": same[m]} for m in order}


def round_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One winner's re-timing over its rounds: median speedup, its spread, whether any round was unsettled."""
    speedups = [x["speedup"] for x in rounds]
    median = statistics.median(speedups)
    within = statistics.median(x["speedup_spread"] for x in rounds)
    across = (max(speedups) - min(speedups)) / (2 * median) if median else 0.0
    return {"speedup": median, "speedup_spread": max(within, across), "noisy": any(x["noisy"] for x in rounds), "rounds": rounds}


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    """``(step(), wall seconds)``."""
    start = time.perf_counter()
    return step(), time.perf_counter() - start


def finished_search(path: pathlib.Path, name: str, trials: int) -> Any | None:
    """The study ``name`` in the SQLite file ``path`` when it already holds ``trials`` finished trials, else None."""
    import optuna

    if not path.is_file():
        return None
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    except KeyError:
        return None
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    return study if len(finished) >= trials else None


def resumed_methods(ctx: Any, folder: pathlib.Path, trials: int) -> dict[str, Any] | None:
    """What :func:`run_methods` returns, read from a seed folder whose two searches already finished (a run
    that stopped after them); None when either search is missing or short of ``trials``."""
    from autoprune.space.baselines import baselines_path
    from autoprune.space.baselines import load_baselines
    from autoprune.trial.calibration import RECIPE_ATTR
    from autoprune.trial.calibration import with_recipe

    cfg = ctx.config
    studies = {"random": finished_search(folder / "random.db", f"{cfg.name}-random", trials),
               "autoprune": finished_search(folder / "autoprune.db", cfg.name, trials)}
    baselines = load_baselines(baselines_path(ctx))
    if any(s is None for s in studies.values()) or baselines is None:
        return None
    ctx.config = with_recipe(ctx.config, studies["autoprune"].user_attrs.get(RECIPE_ATTR))
    durations = {label: {t.number: t.duration.total_seconds() for t in s.get_trials(deepcopy=False) if t.duration}
                 for label, s in studies.items()}
    return {
        "baselines": baselines,
        "sweeps": sweeps_of(baselines),
        "rows": {label: trial_rows(s, durations[label]) for label, s in studies.items()},
        "spaces": {label: dict(s.user_attrs["search_space"]) for label, s in studies.items()},
        "walls": {"sweeps": 0.0, **{label: sum(d.values()) for label, d in durations.items()}},
    }


def run_methods(
    ctx: Any, folder: pathlib.Path, trials: int, resume: bool = False, on_point: Callable[[Any], None] = sweep_printer,
    seed_attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All four methods: sweeps and autoprune's study first (they fix the recovery recipe), then random, then autoprune.

    Args:
        resume: reuse both searches when ``folder`` already holds them finished (:func:`resumed_methods`).
        on_point: called with each sweep point measured (default: a progress line).
        seed_attrs: attrs autoprune's fresh study holds before creation (:func:`prepare_autoprune`).

    Returns:
        ``baselines`` (the :class:`~autoprune.space.baselines.Baselines`), ``sweeps`` (both as dicts), ``rows`` and
        ``spaces`` (per search), ``walls`` (seconds: ``sweeps`` = calibration + sweeps + study creation,
        ``random``, ``autoprune``; resumed: the trials' own durations).
    """
    cfg = ctx.config
    if resume:
        found = resumed_methods(ctx, folder, trials)
        if found is not None:
            say(f"resuming: both searches of this seed are finished in {folder}; re-timing and testing their winners")
            return found
    say(f"a+b) recovery recipe, uniform and global sweeps over {list(cfg.search.sweep_ratios)}, autoprune's study")
    study, baselines, sweeps_wall = prepare_autoprune(ctx, folder, on_point, seed_attrs)
    say(f"c) unbounded random per-group search, {trials} trials")
    random_rows, random_space, random_wall = run_search(ctx, create_random(ctx, folder), folder, trials, "random")
    say(f"d) autoprune's bounded search ({cfg.search.sampler}, {cfg.search.mode} mode), {trials} trials")
    auto_rows, auto_space, auto_wall = run_search(ctx, study, folder, trials, "autoprune")
    return {
        "baselines": baselines,
        "sweeps": sweeps_of(baselines),
        "rows": {"random": random_rows, "autoprune": auto_rows},
        "spaces": {"random": random_space, "autoprune": auto_space},
        "walls": {"sweeps": sweeps_wall, "random": random_wall, "autoprune": auto_wall},
    }
