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
- when the config pins a ``round_to`` other than this host's channel block (what ``round_to: auto`` gives: 16
  on AVX-512 hosts, where widths that are multiples of 8 but not 16 run in a slower layout), both sweeps again
  at that block (``uniform-aligned``, ``global-aligned``; once per work folder): the baselines a user of
  this host would get, so that the search is never credited with the pinned rounding's handicap;
- each method's pick made as ``autoprune confirm`` + ``export`` make it for a study, the same way for every
  method: its ``CANDIDATES`` fastest candidates within the budget on validation (one per channel vector) are
  re-timed TOGETHER with every other method's, interleaved against the base in one process
  (``--retime-rounds`` rounds, median; spread = the larger of the rounds' median robust CV and half their
  relative range), and measured on the test split (search candidates rebuilt from their stored architecture
  JSON and weights with :func:`autoprune.selection.confirm.rebuild_trial`; a sweep point from the stored artifacts of
  autoprune's trial with the same kept channels, else recovered again; sweep points' test figures are cached
  in the work folder for later seeds); the pick is the fastest re-timed candidate whose re-timing settled
  and whose test drop holds the budget (when none holds, the fastest, which then fails the test target).
  The test split is thus the confirmation split, as in the product; every method gets the same rule.

Counted per seed: ``trials`` and ``finetunes`` per method (search trials that were pruned and finetuned:
COMPLETE and not ``duplicate_of``; a sweep point counts one), repeated full evaluations (a finetuned channel
vector finetuned again in the same search) and baseline mismatches (enqueued uniform/global trials whose
kept channels differ from their sweep point's).

Targets, per seed: autoprune / best baseline (uniform, global and, where run, the aligned sweeps) >= 1.2
re-timed; autoprune's pick within the budget on the test split; autoprune above random by more than the
re-timing spread (autoprune / random - 1 > hypot(both speedups' spreads)).  Printed per seed and, with mean and spread, over every seed in the file.

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
import dataclasses
import datetime
import json
import math
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from search_methods import METHODS  # noqa: E402
from search_methods import QUICK  # noqa: E402
from search_methods import baseline_mismatches  # noqa: E402
from search_methods import build_context  # noqa: E402
from search_methods import channels_text  # noqa: E402
from search_methods import finetuned  # noqa: E402
from search_methods import fresh_cache  # noqa: E402
from search_methods import indent  # noqa: E402
from search_methods import is_feasible  # noqa: E402
from search_methods import is_settled  # noqa: E402
from search_methods import prepare_autoprune  # noqa: E402
from search_methods import prepare_config  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import ratio_of  # noqa: E402
from search_methods import repeated_evaluations  # noqa: E402
from search_methods import retime  # noqa: E402
from search_methods import run_methods  # noqa: E402
from search_methods import run_paths  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import settings_of  # noqa: E402
from search_methods import sweep_plan  # noqa: E402
from search_methods import sweep_printer  # noqa: E402
from search_methods import sweeps_of  # noqa: E402
from search_methods import timed  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = {"autoprune_over_best_baseline": 1.2, "autoprune_test_within_budget": True, "autoprune_above_random_beyond_spread": True}
SEEDS_ASKED = 3  # issue 12: three seeds
# Candidates per method confirmed on the test split and re-timed together, as `autoprune confirm` does for a study.
CANDIDATES = 3
# Suffix of the methods that sweep at this host's channel block when the config pins another round_to.
ALIGNED = "-aligned"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/reference.yaml", help="study YAML (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both searches' samplers (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials of random and of autoprune (default: the config's search.trials; 4 with --quick)")
    parser.add_argument("--retime-rounds", type=int, default=None,
                        help="interleaved re-timing rounds of the four winners (default 3; 1 with --quick)")
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
    return run_paths(args, RESULTS / f"{stem}.json", args.config, "reference-search", f"{stem}_work")


def identity(ctx: Any, quick: bool) -> dict[str, Any]:
    """What every seed of one results file must share (else the seeds are not comparable)."""
    from autoprune.trial.calibration import recipe_settings

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


# --- baselines at the host's channel block ------------------------------------------------------------------


def aligned_context(ctx: Any) -> Any | None:
    """The study context with ``round_to`` at this host's channel block (what ``round_to: auto`` gives), or None
    when the config's pinned ``round_to`` is that block already.

    The reference config pins ``round_to: 8`` so that the search space is the same on every host; on a host
    whose ONNX Runtime runs convolutions in 16-channel blocks (AVX-512), widths that are multiples of 8 but not
    of 16 run in a slower layout, and uniform or global pruning rounded to 16 would be what a user gets there.
    The benchmark holds autoprune against those sweeps too (same base, task, recipe and teacher).
    """
    from autoprune.trial.pruning_setup import make_pruner
    from autoprune.trial.pruning_setup import resolve_round_to

    cfg = ctx.config.model_copy(deep=True)
    cfg.pruning.round_to = "auto"
    block = resolve_round_to(cfg)
    if block == ctx.round_to:
        return None
    cfg.pruning.round_to = block
    pruner = make_pruner(cfg, ctx.task)
    return dataclasses.replace(ctx, config=cfg, pruner=pruner, groups=pruner.groups(ctx.base_model), round_to=block)


def aligned_sweeps(aligned: Any, workdir: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
    """Both sweeps at the host's channel block (run once per work folder; ``baselines.json`` is reused after)."""
    from autoprune.space.baselines import load_baselines
    from autoprune.space.baselines import run_baselines
    from autoprune.space.baselines import save_baselines

    folder = workdir / f"aligned-round-to-{aligned.round_to}"
    path = folder / "baselines.json"
    baselines = load_baselines(path) if path.exists() else None
    if baselines is None or baselines.base_metric != aligned.base_metric.value:
        say(f"uniform and global sweeps at round_to {aligned.round_to} (this host's channel block), once for every seed")
        fresh_cache(aligned, folder / "latency-cache.sqlite")
        baselines = run_baselines(aligned, on_point=sweep_printer)
        save_baselines(baselines, path)
    return {f"{kind}{ALIGNED}": points for kind, points in sweeps_of(baselines).items()}


def context_of(ctx: Any, aligned: Any | None, label: str) -> Any:
    """The context that prunes a candidate: the aligned one for the aligned sweeps' points."""
    return aligned if aligned is not None and label.split(":")[0].endswith(ALIGNED) else ctx


# --- test split -------------------------------------------------------------------------------------------


def twin_trial(rows: list[dict[str, Any]], kind: str, channels: dict[str, int]) -> dict[str, Any] | None:
    """A finetuned trial with stored artifacts and exactly these kept channels (its own ``kind`` first)."""
    want = {k: int(v) for k, v in channels.items()}
    same = [r for r in finetuned(rows) if r.get("weights_artifact_id") and {k: int(v) for k, v in (r.get("channels") or {}).items()} == want]
    same.sort(key=lambda r: (r.get("kind") != kind, r["number"]))
    return same[0] if same else None


def trial_model(ctx: Any, row: dict[str, Any], folder: pathlib.Path) -> Any:
    """A trial's finetuned model, rebuilt from its stored architecture JSON and weights."""
    from autoprune.selection.confirm import Candidate
    from autoprune.selection.confirm import rebuild_trial

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


def winner_model(ctx: Any, label: str, winner: dict[str, Any], rows: dict[str, list[dict[str, Any]]], folder: pathlib.Path) -> tuple[Any, str]:
    """A candidate's finetuned model and where it came from (stored artifacts, else recovered again).

    ``ctx`` prunes a sweep point recovered again (the aligned context for the aligned sweeps); a stored
    trial with the same kept channels is the same model whatever rounding reached them.
    """
    from autoprune.trial.candidate import evaluate_candidate

    name = label.replace(":", "-")
    if "number" in winner:
        return trial_model(ctx, winner, folder / name), f"{label} trial {winner['number']} (stored weights)"
    kind = winner["kind"]
    twin = twin_trial(rows["autoprune"], kind, winner["channels"])
    if twin is not None:
        return trial_model(ctx, twin, folder / name), f"autoprune trial {twin['number']} ({twin.get('kind')}, same channels; stored weights)"
    indent(f"{label}: no stored trial with its channels; recovering the {kind} sweep point {winner['ratio']:.2f} again")
    return evaluate_candidate(ctx, **sweep_plan(winner)).model, f"{kind} sweep point {winner['ratio']:.2f} recovered again"


def test_figures(ctx: Any, model: Any, base: Any, source: str) -> dict[str, Any]:
    """A model's metric on the held-out test split (and on validation again, to show the rebuild is exact)."""
    task = ctx.task
    test = task.evaluate(model, "test")
    drop = task.drop(base.value, test.value)
    return {
        "test_metric": test.value,
        "test_metric_stderr": test.stderr,
        "test_drop": drop,
        "test_drop_stderr": math.hypot(test.stderr, base.stderr),
        "test_feasible": bool(drop <= ctx.config.max_drop),
        "test_model": source,
        "test_model_val_drop": ctx.drop(task.evaluate(model, "val").value),
    }


def sweep_key(ctx: Any, point: dict[str, Any]) -> str:
    """A sweep point's key in the test cache (the sweeps are deterministic: one base, one recipe, one rounding)."""
    return f"{ctx.base_info.sha256[:16]}:{point['kind']}@{point['ratio']}:round_to={ctx.round_to}"


def test_winners(
    ctx: Any, winners: dict[str, dict[str, Any]], rows: dict[str, list[dict[str, Any]]], folder: pathlib.Path, cache: pathlib.Path,
    context_for: Callable[[str], Any],
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each candidate's metric on the held-out test split; a sweep point's figures are kept in ``cache`` for later seeds.

    ``context_for(label)`` is the context that prunes the candidate (:func:`context_of`).

    Returns:
        ``(label -> test figures, the base model's test MetricResult)``.
    """
    base = ctx.task.evaluate(ctx.base_model, "test")
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.exists() else {}
    out = {}
    for label, winner in winners.items():
        own = context_for(label)
        key = None if "number" in winner else sweep_key(own, winner)
        if key in known:
            out[label] = known[key]
        else:
            model, source = winner_model(own, label, winner, rows, folder)
            out[label] = test_figures(ctx, model, base, source)
            if key is not None:
                known[key] = out[label]
                cache.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
        f = out[label]
        indent(f"{label:12} test {ctx.task.metric_name} {f['test_metric']:.4f} (drop {f['test_drop']:+.4f}) from {f['test_model']}")
    return out, base


# --- the confirmed picks ----------------------------------------------------------------------------------


def method_candidates(pool: list[dict[str, Any]], max_drop: float, k: int = CANDIDATES) -> list[dict[str, Any]]:
    """A method's ``k`` fastest candidates within the budget on validation, one per channel vector."""
    ok = sorted((r for r in pool if is_feasible(r, max_drop)), key=lambda r: (r["speedup"], -r["drop"]), reverse=True)
    from autoprune.space.widths import channels_key

    seen: set[str] = set()
    out = []
    for row in ok:
        key = channels_key(row.get("channels") or {})
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out[:k]


def all_candidates(runs: dict[str, Any], max_drop: float) -> dict[str, dict[str, Any]]:
    """``method:index`` -> candidate row, for every method (what ``autoprune confirm`` would re-measure)."""
    pools = {**runs["sweeps"], **runs["rows"]}
    return {f"{m}:{i}": row for m in all_methods(runs["sweeps"]) for i, row in enumerate(method_candidates(pools[m], max_drop))}


def all_methods(sweeps: Any) -> tuple[str, ...]:
    """The methods of a run (or of a seed's entry): uniform, global, the other sweeps when run (the aligned
    sweeps, a sensitivity sweep), random, autoprune."""
    others = tuple(k for k in sweeps if k.endswith(ALIGNED) or k == "sensitivity")
    return METHODS[:2] + others + METHODS[2:]


def baseline_methods(methods: Any) -> tuple[str, ...]:
    """The sweeps among the methods."""
    return tuple(m for m in all_methods(methods) if m not in ("random", "autoprune"))


def confirmed_pick(method: str, retimed: dict[str, Any], tested: dict[str, Any], cv: float | None) -> str | None:
    """The method's pick as ``autoprune export`` makes it after ``confirm``: the fastest re-timed candidate whose
    re-timing settled and whose test drop holds the budget; when none holds, its fastest re-timed candidate
    (the pick then fails the test-split target)."""
    from autoprune.analysis.pareto import unsettled

    mine = [label for label in retimed if label.split(":")[0] == method]
    holds = [x for x in mine if tested[x]["test_feasible"] and not unsettled(retimed[x]["noisy"], retimed[x]["speedup_spread"], cv)]
    pool = holds or mine
    return max(pool, key=lambda x: retimed[x]["speedup"]) if pool else None


def candidate_summary(label: str, row: dict[str, Any], retimed: dict[str, Any], tested: dict[str, Any], picked: bool) -> dict[str, Any]:
    """One confirmed candidate, for the seed's record."""
    return {
        "label": label,
        "trial": row.get("number"),
        "ratio": row.get("ratio"),
        "search_speedup": row["speedup"],
        "speedup": retimed["speedup"],
        "speedup_spread": retimed["speedup_spread"],
        "retime_noisy": retimed["noisy"],
        "drop": row["drop"],
        "test_drop": tested["test_drop"],
        "test_feasible": tested["test_feasible"],
        "picked": picked,
    }


# --- one seed ---------------------------------------------------------------------------------------------


def method_counts(runs: dict[str, Any], method: str) -> dict[str, Any]:
    """Trials and finetunes of a method (a sweep point counts one of each), and a search's other counts."""
    if method in runs["sweeps"]:
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


def method_entry(winner: dict[str, Any] | None, info: dict[str, Any], tested: dict[str, Any], counts: dict[str, Any], cv: float) -> dict[str, Any]:
    """One method's figures for one seed: its confirmed pick re-timed (``speedup``), on validation and on test."""
    if winner is None:
        return counts | {"speedup": None, "drop": None, "test_drop": None, "speedup_spread": None, "note": "no candidate within the budget"}
    return counts | {
        "speedup": info["speedup"],
        "drop": winner["drop"],
        "test_drop": tested["test_drop"],
        "speedup_spread": info["speedup_spread"],
        "search_speedup": winner["speedup"],
        "search_timing_settled": is_settled(winner, cv),
        "retime_noisy": info["noisy"],
        "metric": winner["metric"],
        **tested,
        "channels": winner["channels"],
        "trial": winner.get("number"),
        "kind": winner.get("kind") or "search",
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
    from autoprune.space.widths import in_space
    from autoprune.space.widths import space_from_attr

    everything = all_methods(methods)
    baselines = baseline_methods(methods)
    found = best_method(methods, everything)
    space = space_from_attr(auto_space)
    widths = {k: v for k, v in ((methods[found].get("channels") or {}) if found else {}).items() if k in space}
    return {
        "autoprune_over_best_baseline": ratio_of(methods, "speedup", "autoprune", *baselines),
        "best_baseline": best_method(methods, baselines),
        "autoprune_over_best_pinned_baseline": ratio_of(methods, "speedup", "autoprune", "uniform", "global"),
        "autoprune_over_random": ratio_of(methods, "speedup", "autoprune", "random"),
        "random_comparison_spread": math.hypot(methods["autoprune"]["speedup_spread"] or 0.0, methods["random"]["speedup_spread"] or 0.0),
        "best_found": found,
        "autoprune_over_best_found": ratio_of(methods, "speedup", "autoprune", *everything),
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


def seed_methods(ctx: Any, runs: dict[str, Any], candidates: dict[str, Any], retimed: dict[str, Any], tested: dict[str, Any]) -> dict[str, Any]:
    """Per method: its counts, its confirmed pick's figures and every candidate it had confirmed."""
    cv = ctx.config.latency.cv_threshold
    methods = {}
    for m in all_methods(runs["sweeps"]):
        label = confirmed_pick(m, retimed, tested, cv)
        winner = candidates.get(label) if label else None
        entry = method_entry(winner, retimed.get(label, {}), tested.get(label, {}), method_counts(runs, m), cv)
        entry["candidates"] = [candidate_summary(x, candidates[x], retimed[x], tested[x], x == label) for x in candidates if x.split(":")[0] == m]
        methods[m] = entry
    return methods


def seed_entry(
    ctx: Any,
    runs: dict[str, Any],
    candidates: dict[str, Any],
    retimed: dict[str, Any],
    tested: dict[str, Any],
    host: dict[str, Any],
) -> dict[str, Any]:
    """Everything one seed measured."""
    cfg = ctx.config
    methods = seed_methods(ctx, runs, candidates, retimed, tested)
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
    """The four methods, then each method's confirmation: its fastest feasible candidates re-timed together and tested.

    Returns:
        ``(the seed's entry, what run_methods returned, the base's test MetricResult)``.
    """
    started = time.perf_counter()
    runs = run_methods(ctx, folder, ctx.config.search.trials, resume)
    aligned = aligned_context(ctx)
    if aligned is not None:
        runs["sweeps"] |= aligned_sweeps(aligned, folder.parent)
        runs["aligned_round_to"] = aligned.round_to
    candidates = all_candidates(runs, ctx.config.max_drop)
    ctx_for = partial(context_of, ctx, aligned)
    say(f"re-timing the {len(candidates)} candidates (up to {CANDIDATES} per method) together, interleaved against the base ({rounds} round(s))")
    retimed, runs["walls"]["retime"] = timed(lambda: retime(ctx, candidates, folder / "retime", rounds, ctx_for))
    say("measuring the candidates on the test split")
    cache = folder.parent / "sweep_tests.json"
    (tested, base_test), runs["walls"]["test"] = timed(lambda: test_winners(ctx, candidates, runs["rows"], folder / "test", cache, ctx_for))
    runs["walls"]["total"] = time.perf_counter() - started
    return seed_entry(ctx, runs, candidates, retimed, tested, host), runs, base_test


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
    for key in ("autoprune_over_best_baseline", "autoprune_over_best_pinned_baseline", "autoprune_over_random", "autoprune_over_best_found"):
        summary[key] = spread_stats([s["ratios"][key] for s in seeds if s["ratios"].get(key) is not None])
    methods = all_methods(seeds[-1]) if seeds else METHODS
    summary["speedup"] = {m: spread_stats([s[m]["speedup"] for s in seeds if m in s and s[m]["speedup"] is not None]) for m in methods}
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
        "aligned_round_to": runs.get("aligned_round_to"),
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
    print(f"{'method':16} {'trials':>6} {'finetunes':>9} {'search x':>9} {'re-timed x':>11} {'spread':>7} "
          f"{'val drop':>9} {'test drop':>10}  kept channels")
    for m in all_methods(entry):
        w = entry[m]
        if w["speedup"] is None:
            print(f"{m:16} {w['trials']:>6} {w['finetunes']:>9}   no candidate within the budget")
            continue
        print(f"{m:16} {w['trials']:>6} {w['finetunes']:>9} {w['search_speedup']:>8.2f}x {w['speedup']:>10.2f}x {w['speedup_spread']:>7.1%} "
              f"{w['drop']:>+9.4f} {w['test_drop']:>+10.4f}  {channels_text(w['channels'])}")
    r, met = entry["ratios"], entry["met"]
    ok = {True: "met", False: "NOT met"}
    best_baseline = r["best_baseline"] or "no baseline within the budget"
    for m in all_methods(entry):
        for c in entry[m].get("candidates", []):
            what = f"trial {c['trial']}" if c["trial"] is not None else f"ratio {c['ratio']:.2f}"
            print(f"    {c['label']:18} {what:10} search {c['search_speedup']:.2f}x, re-timed {c['speedup']:.2f}x ±{c['speedup_spread']:.1%}, "
                  f"val drop {c['drop']:+.4f}, test drop {c['test_drop']:+.4f}{'  <- pick' if c['picked'] else ''}")
    print(f"autoprune / best baseline ({', '.join(baseline_methods(entry))}) = {fmt(r['autoprune_over_best_baseline'], '.3f')} ({best_baseline}); "
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
    pairs = (
        ("autoprune_over_best_baseline", "autoprune / best baseline"),
        ("autoprune_over_best_pinned_baseline", "autoprune / best(uniform, global)"),
        ("autoprune_over_random", "autoprune / random"),
    )
    for key, label in pairs:
        v = s[key]
        if not v["n"]:
            print(f"  {label:34} no seed with both figures")
            continue
        print(f"  {label:34} mean {v['mean']:.3f}, stdev {v['stdev']:.3f}, range {v['min']:.3f}-{v['max']:.3f} ({v['n']} seed(s))")
    means = {m: v["mean"] for m, v in s["speedup"].items()}
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
        aligned = aligned_context(ctx)
        if aligned is not None:
            aligned_sweeps(aligned, workdir)
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
