"""Benchmark: the three-network suite (issue 24, items 1 and 5), one network and seed per invocation.

Networks (``--network``): ``resnet`` (``studies/reference.yaml``), ``mobilenet``
(``studies/reference-mobilenet.yaml``), ``segformer`` (``studies/reference-segformer.yaml``); each passes the
room rules of ``benchmarks/reference_space.py`` (see ``reference_space_<name>.txt``).  Per network and seed,
five ways of choosing per-group widths, all with the config's one pinned recovery recipe:

- ``uniform`` and ``global``: the sweeps over ``search.sweep_ratios``, made as ``autoprune create`` makes them
  (``search_methods.run_methods``; seed-independent, measured once per work folder and reused by every seed);
- ``sensitivity``: AIMET-style greedy allocation (:mod:`autoprune.space.allocation`): every group pruned alone at
  ``search.sensitivity_ratios`` and measured after BN recalibration (:func:`autoprune.space.sensitivity.measure_curves`),
  then the greedy allocation by ``search.sensitivity_cost`` at the target speedups ``autoprune create`` uses
  (the best uniform and global points' speedups and 1.25x the faster) evaluated as full trials
  (:func:`autoprune.space.sensitivity.sweep_allocations`).  ``search.sensitivity`` is on in every piece: these are
  the curves and the sweep that ``autoprune create`` measures for autoprune's study, which enqueues the best of
  them as its third baseline; seed-independent, measured once (``--prepare``, in ``<work folder>/prepare``) and
  copied into each seed's study (:func:`prepared_attrs`);
- with ``--aligned``, when the config pins a ``round_to`` other than this host's channel block: both sweeps again
  at that block (``uniform-aligned``, ``global-aligned``; what a user of this host gets with ``round_to: auto``);
- ``random``: unbounded random per-group search (``RandomSampler(seed)``) and ``autoprune``: autoprune's study
  (the config's sampler, ``search.seed = seed``), ``--trials`` each (equal), through autoprune's Objective.

Every method's pick is made the way ``autoprune confirm`` + ``export`` make it: its ``CANDIDATES`` fastest
candidates within the budget on validation (one per channel vector) are judged on the selection split (carved
out of validation with seed 0 for every seed, so that the seed-independent sweeps hold for all; no trial, sweep
or finetune has seen it): a candidate holds when its selection drop plus ``search.selection_z`` standard errors
is within the budget.  When none of a method's candidates holds, its next ``CANDIDATES`` by the same ranking are
judged, and so on until one holds or its feasible candidates run out (``walk_rounds``, as ``autoprune confirm``
walks; ``selection_rounds`` records the labels judged per round).  Every candidate judged is then re-timed
TOGETHER with every other method's, interleaved against the base in one process (``--retime-rounds`` rounds;
``search_methods.retime``).  The
pick is the fastest re-timed candidate that holds and whose re-timing settled (else the fastest that holds; a
method none of whose candidates holds has no pick).  The test split is read once, for the pick only.

Per seed and method: ``speedup`` (re-timed), ``speedup_spread``, ``val_drop``, ``selection_drop``,
``test_drop``, ``trials`` (candidates proposed), ``finetunes`` (candidates pruned and finetuned),
``evaluations`` (validation evaluations of pruned candidates: BN-only sensitivity points and screened trials
count, reused figures do not) and ``seconds`` (wall time of the method; for the seed-independent sweeps,
what they took when measured).  Every piece records the host's load average at its start and end, the host
(``host_id``, the latency fingerprint) and the commit it ran from (``code``; ``+dirty`` when the product or
benchmark code differed from it).

Resumable in pieces: one ``--network``/``--seed`` per invocation; ``benchmarks/results/suite.json`` keeps the
other pieces and replaces this one.  The sweeps, the sensitivity curves and allocations, and finished searches
(``--resume``) are kept in the work folder (``<config artifact dir>/suite``)::

    OMP_NUM_THREADS=1 python benchmarks/suite.py --network resnet --seed 0 [--trials 16]
    OMP_NUM_THREADS=1 python benchmarks/suite.py --network mobilenet --seed 0
    OMP_NUM_THREADS=1 python benchmarks/suite.py --network mobilenet --prepare   # the sweeps alone, ahead of the seeds

Smoke run (a small config, ``studies/digits-resnet.yaml``, with a 2-epoch base and tiny budgets; work folder
and output in ``$TMPDIR/autoprune-bench-quick/``)::

    OMP_NUM_THREADS=1 python benchmarks/suite.py --quick --network resnet --seed 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from functools import partial
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from reference_search import aligned_context  # noqa: E402
from reference_search import aligned_sweeps  # noqa: E402
from reference_search import all_methods  # noqa: E402
from reference_search import context_of  # noqa: E402
from reference_search import method_candidates  # noqa: E402
from reference_search import winner_model  # noqa: E402
from search_methods import QUICK  # noqa: E402
from search_methods import build_context  # noqa: E402
from search_methods import channels_text  # noqa: E402
from search_methods import finetuned  # noqa: E402
from search_methods import indent  # noqa: E402
from search_methods import is_settled  # noqa: E402
from search_methods import prepare_autoprune  # noqa: E402
from search_methods import prepare_config  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import retime  # noqa: E402
from search_methods import run_methods  # noqa: E402
from search_methods import run_paths  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import sweep_printer  # noqa: E402
from search_methods import timed  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "suite.json"
NETWORKS = {
    "resnet": "studies/reference.yaml",
    "mobilenet": "studies/reference-mobilenet.yaml",
    "segformer": "studies/reference-segformer.yaml",
}
QUICK_CONFIG = "studies/digits-resnet.yaml"
SELECTION_SEED = 0  # the selection split of every seed is carved with this seed (see selection_pinned_context)
CANDIDATES = 3  # per method, re-timed together and judged on the selection split (as `autoprune confirm` does)
SECONDS_FILE = "sweep_seconds.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, choices=sorted(NETWORKS), help="which reference network")
    parser.add_argument("--seed", type=int, default=0, help="seed of both searches' samplers (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=None, help="trials of random and of autoprune, each (default: the config's "
                        f"search.trials; {QUICK['trials']} with --quick)")
    parser.add_argument("--retime-rounds", type=int, default=None, help="interleaved re-timing rounds (default 3; 1 with --quick)")
    parser.add_argument("--resume", action="store_true", help="reuse this seed's searches when both already finished")
    parser.add_argument("--aligned", action="store_true", help="also sweep uniform and global at this host's channel block when the "
                        "config pins another round_to (uniform-aligned, global-aligned; once per work folder)")
    parser.add_argument("--prepare", action="store_true", help="only measure what every seed reuses (the sweeps, the sensitivity "
                        "curves and allocations) into the work folder, then stop; writes no results")
    parser.add_argument("--quick", action="store_true", help=f"smoke run on {QUICK_CONFIG}: tiny budgets, 2-epoch base; temp folder")
    parser.add_argument("--config", default=None, help="study YAML instead of the network's (the network name is kept)")
    parser.add_argument("--workdir", default=None, help="work folder kept between seeds (default: <config artifact dir>/suite)")
    parser.add_argument("--out", default=None, help=f"results JSON (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    return args


def piece_paths(args: argparse.Namespace) -> tuple[str, pathlib.Path, pathlib.Path]:
    """``(config path, results JSON, work folder)`` of this invocation (quick runs: a temp folder for both)."""
    config = args.config or (QUICK_CONFIG if args.quick else NETWORKS[args.network])
    return (config, *run_paths(args, RESULTS, config, "suite", f"suite_{args.network}_work"))


# --- the sensitivity method -------------------------------------------------------------------------------


def sensitivity_identity(ctx: Any, targets: list[float]) -> dict[str, Any]:
    """What the sensitivity sweep was measured for (base, recipe, rounding, grid, cost, targets)."""
    cfg = ctx.config
    return {
        "base_sha256": ctx.base_info.sha256, "recovery": cfg.recovery.model_dump(mode="json"), "round_to": ctx.round_to,
        "criterion": cfg.criterion, "grid": list(cfg.search.sensitivity_ratios), "cost": cfg.search.sensitivity_cost,
        "targets": list(targets), "max_drop": cfg.max_drop,
    }


def prepared_attrs(ctx: Any, workdir: pathlib.Path) -> dict[str, Any] | None:
    """The sensitivity curves and sweep that ``--prepare`` measured on autoprune's study in ``workdir/prepare``
    (seed-independent): each seed's study starts with them, so ``autoprune create`` measures neither again.
    None when nothing was prepared."""
    import optuna

    from autoprune.space.sensitivity import SENSITIVITY_ATTR
    from autoprune.space.sensitivity import SWEEP_ATTR

    prepared = workdir / "prepare" / "autoprune.db"
    if not prepared.is_file():
        return None
    attrs = optuna.load_study(study_name=ctx.config.name, storage=f"sqlite:///{prepared}").user_attrs
    if SENSITIVITY_ATTR not in attrs or SWEEP_ATTR not in attrs:
        return None
    indent(f"autoprune's study starts with the sensitivity curves and sweep measured in {prepared.parent}")
    return {key: attrs[key] for key in (SENSITIVITY_ATTR, SWEEP_ATTR)}


def sensitivity_sweep(ctx: Any, folder: pathlib.Path) -> dict[str, Any]:
    """The sensitivity method: the curves and the swept allocations autoprune's study of this seed holds
    (measured by its creation, or copied from ``--prepare``: :func:`prepared_attrs`)."""
    import optuna

    from autoprune.space.sensitivity import SWEEP_ATTR
    from autoprune.space.sensitivity import load_curves

    study = optuna.load_study(study_name=ctx.config.name, storage=f"sqlite:///{folder / 'autoprune.db'}")
    curves, sweep = load_curves(study), study.user_attrs.get(SWEEP_ATTR)
    if curves is None or sweep is None:
        raise RuntimeError(f"{folder / 'autoprune.db'}: autoprune's study holds no sensitivity curves or sweep (search.sensitivity is off?)")
    return {
        "identity": sensitivity_identity(ctx, sweep["targets"]),
        "points": sweep["points"],
        "curve_points": sum(len(c.points) for c in curves.groups.values()),
        "curve_evaluations": curves.evaluations,
        "curve_seconds": curves.seconds,
        "sweep_seconds": sweep["seconds"],
    }


# --- the five methods -------------------------------------------------------------------------------------


def point_clock(measured: dict[str, float]) -> Callable[[Any], None]:
    """An ``on_point`` for the sweeps that prints the point and adds the seconds since the last one to
    ``measured[kind]`` (:func:`run_all` stores them once the sweeps are complete, so that later seeds, which
    reuse the sweeps, report what they took, and an interrupted sweep leaves nothing behind)."""
    last = [time.perf_counter()]

    def on_point(point: Any) -> None:
        now = time.perf_counter()
        measured[point.kind] = measured.get(point.kind, 0.0) + now - last[0]
        last[0] = now
        sweep_printer(point)

    return on_point


def run_all(ctx: Any, workdir: pathlib.Path, folder: pathlib.Path, resume: bool, aligned: Any | None) -> dict[str, Any]:
    """The sweeps, both searches (``run_methods``), the sensitivity sweep and, with an ``aligned`` context
    (:func:`reference_search.aligned_context`), both sweeps at this host's channel block; ``runs["sweeps"]`` gains them."""
    measured: dict[str, float] = {}
    runs = run_methods(ctx, folder, ctx.config.search.trials, resume, on_point=point_clock(measured),
                       seed_attrs=prepared_attrs(ctx, workdir))
    seconds_path = workdir / SECONDS_FILE
    if measured:  # the sweeps ran (complete: run_methods returned) rather than being reused
        seconds_path.write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    if aligned is not None:
        found, runs["walls"]["aligned"] = timed(lambda: aligned_sweeps(aligned, workdir))
        runs["sweeps"] |= found
    sens, wall = timed(lambda: sensitivity_sweep(ctx, folder))
    runs["sweeps"]["sensitivity"] = sens["points"]
    runs["sensitivity"] = sens
    runs["walls"]["sensitivity"] = wall
    runs["sweep_seconds"] = json.loads(seconds_path.read_text(encoding="utf-8")) if seconds_path.is_file() else {}
    return runs


def prepare_only(ctx: Any, workdir: pathlib.Path) -> None:
    """``--prepare``: the seed-independent parts of a network (the sweeps, and the sensitivity curves and sweep on
    autoprune's study created beside them in ``workdir/prepare``), stored for every later seed to reuse."""
    measured: dict[str, float] = {}
    prepare_autoprune(ctx, workdir / "prepare", point_clock(measured))
    if measured:
        (workdir / SECONDS_FILE).write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")


def method_counts(runs: dict[str, Any], method: str) -> dict[str, Any]:
    """``trials``, ``finetunes``, ``evaluations`` and ``seconds`` of one method (see the module docstring)."""
    if method in runs["sweeps"] and method != "sensitivity":  # uniform, global and the aligned sweeps (not timed per kind)
        n = len(runs["sweeps"][method])
        return {"trials": n, "finetunes": n, "evaluations": n, "seconds": runs["sweep_seconds"].get(method)}
    if method == "sensitivity":
        sens = runs["sensitivity"]
        n = len(sens["points"])
        return {"trials": n, "finetunes": n, "evaluations": sens["curve_evaluations"] + n,
                "seconds": sens["curve_seconds"] + sens["sweep_seconds"], "curve_points": sens["curve_points"]}
    rows = runs["rows"][method]
    own = [r for r in rows if r.get("duplicate_of") is None and not r.get("sweep_point")]  # not another trial's or a sweep's figures
    evaluated = [r for r in own if r["state"] in ("COMPLETE", "PRUNED") and r.get("metric") is not None]
    return {"trials": len(rows), "finetunes": len(finetuned(own)), "evaluations": len(evaluated), "seconds": runs["walls"][method],
            "reused_sweep_points": sum(1 for r in rows if r.get("sweep_point"))}


def method_rankings(runs: dict[str, Any], max_drop: float) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method, every candidate within the budget on validation, fastest first, one per channel vector:
    ``method:rank`` -> candidate (sweep point or trial row)."""
    pools = {**runs["sweeps"], **runs["rows"]}
    return {m: {f"{m}:{i}": row for i, row in enumerate(method_candidates(pools[m], max_drop, len(pools[m])))}
            for m in all_methods(runs["sweeps"])}


def all_candidates(runs: dict[str, Any], max_drop: float) -> dict[str, dict[str, Any]]:
    """``method:index`` -> candidate (sweep point or trial row), up to :data:`CANDIDATES` per method: the first round."""
    return {label: row for ranking in method_rankings(runs, max_drop).values() for label, row in list(ranking.items())[:CANDIDATES]}


def walk_rounds(ranking: list[str], holds: Callable[[str], bool], k: int = CANDIDATES) -> list[list[str]]:
    """Judge a method's candidates ``k`` at a time, fastest first, while none judged holds, as ``autoprune confirm``
    walks down its ranking (:func:`autoprune.analysis.choice.next_round`); ``holds(label)`` judges one.

    Returns:
        The labels judged in each round.
    """
    from autoprune.analysis.choice import next_round

    verdicts: dict[str, bool] = {}
    rounds = []
    while batch := next_round(ranking, verdicts, k):
        verdicts |= {label: holds(label) for label in batch}
        rounds.append(batch)
    return rounds


# --- confirmation: selection split, re-timing, one test reading per pick -----------------------------------


def selection_figures(ctx: Any, model: Any, base: Any, source: str) -> dict[str, Any]:
    """A candidate on the selection split, judged as ``autoprune confirm`` judges it: its drop against ``base`` (the
    base's ``task.evaluate_samples`` on the selection split, evaluated once) with the paired standard error."""
    from autoprune.analysis.choice import holds_on_selection
    from autoprune.selection.confirm import selection_entry

    entry = selection_entry(ctx.task.evaluate_drop(base, model, "selection"), ctx.config.search.selection_z) | {"model_source": source}
    return entry | {"selection_holds": holds_on_selection(entry, ctx.config.max_drop)}


@dataclass
class Judged:
    """The candidates judged on the selection split, over every method's walk.

    Attributes:
        candidates: ``method:rank`` -> candidate, every one judged (all of them are re-timed together).
        figures: ``method:rank`` -> its selection figures.
        models: the models of the candidates that hold (only they can be picked; kept for the pick's test reading).
        rounds: per method, the labels judged in each round.
    """

    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    rounds: dict[str, list[list[str]]] = field(default_factory=dict)


def judge_candidate(ctx: Any, judged: Judged, label: str, row: dict[str, Any], rows: dict[str, list[dict[str, Any]]],
                    folder: pathlib.Path, base: Any, ctx_for: Callable[[str], Any]) -> bool:
    """Judge one candidate on the selection split into ``judged``; whether it holds.  ``ctx_for(label)`` prunes
    a sweep point recovered again (the aligned context for the aligned sweeps)."""
    model, source = winner_model(ctx_for(label), label, row, rows, folder)
    f = judged.figures[label] = selection_figures(ctx, model, base, source)
    judged.candidates[label] = row
    if f["selection_holds"]:
        judged.models[label] = model
    indent(f"{label:14} selection drop {f['selection_drop']:+.4f} ± {f['selection_drop_stderr']:.4f}: "
           f"{'holds' if f['selection_holds'] else 'fails'} ({source})")
    return bool(f["selection_holds"])


def judge_candidates(ctx: Any, rankings: dict[str, dict[str, dict[str, Any]]], rows: dict[str, list[dict[str, Any]]],
                     folder: pathlib.Path, base: Any, ctx_for: Callable[[str], Any]) -> Judged:
    """Every method's :data:`CANDIDATES` fastest on the selection split, and its next ones while none holds."""
    judged = Judged()
    for method, ranking in rankings.items():
        judged.rounds[method] = walk_rounds(
            list(ranking), lambda label, r=ranking: judge_candidate(ctx, judged, label, r[label], rows, folder, base, ctx_for))
        further = judged.rounds[method][1:]
        if further:
            say(f"{method}: none of its {CANDIDATES} fastest held on the selection split; judged {sum(map(len, further))} more "
                f"in {len(further)} further round(s)")
    return judged


def confirmed_pick(method: str, retimed: dict[str, Any], judged: dict[str, Any], cv: float | None) -> str | None:
    """The method's pick as export makes it: the fastest re-timed candidate that holds on the selection split and
    whose re-timing settled; else the fastest that holds; None when none holds."""
    from autoprune.analysis.pareto import unsettled

    holds = [x for x in retimed if x.split(":")[0] == method and judged[x]["selection_holds"]]
    settled = [x for x in holds if not unsettled(retimed[x]["noisy"], retimed[x]["speedup_spread"], cv)]
    pool = settled or holds
    return max(pool, key=lambda x: retimed[x]["speedup"]) if pool else None


def test_reading(ctx: Any, model: Any, base_test: Any) -> dict[str, Any]:
    """The pick's one reading of the test split."""
    import math

    test = ctx.task.evaluate(model, "test")
    return {"test_metric": test.value, "test_drop": ctx.task.drop(base_test.value, test.value),
            "test_drop_stderr": math.hypot(test.stderr, base_test.stderr)}


def method_entry(method: str, label: str | None, candidates: dict[str, Any], retimed: dict[str, Any], judged: dict[str, Any],
                 tested: dict[str, Any], counts: dict[str, Any], cv: float | None) -> dict[str, Any]:
    """One method's figures for one seed."""
    mine = [x for x in candidates if x.split(":")[0] == method]
    listed = [{"label": x, "trial": candidates[x].get("number"), "ratio": candidates[x].get("ratio"), "val_drop": candidates[x]["drop"],
               "search_speedup": candidates[x]["speedup"], "speedup": retimed[x]["speedup"], "speedup_spread": retimed[x]["speedup_spread"],
               "retime_settled": is_settled({"latency_noisy": retimed[x]["noisy"], "speedup_spread": retimed[x]["speedup_spread"]}, cv),
               **judged[x], "picked": x == label} for x in mine]
    if label is None:
        why = ("no candidate within the budget on validation" if not mine
               else f"no candidate holds on the selection split ({len(mine)} judged)")
        return counts | {"speedup": None, "speedup_spread": None, "val_drop": None, "selection_drop": None, "test_drop": None,
                         "note": why, "candidates": listed}
    row = candidates[label]
    return counts | {
        "speedup": retimed[label]["speedup"], "speedup_spread": retimed[label]["speedup_spread"], "val_drop": row["drop"],
        "selection_drop": judged[label]["selection_drop"], **tested,
        "pick": {"label": label, "trial": row.get("number"), "kind": row.get("kind") or "search", "ratio": row.get("ratio"),
                 "channels": row.get("channels"), "search_speedup": row["speedup"], "retime_noisy": retimed[label]["noisy"],
                 "channels_match": retimed[label]["channels_match"], "model_source": judged[label]["model_source"]},
        "candidates": listed,
    }


def confirm_all(ctx: Any, runs: dict[str, Any], folder: pathlib.Path, rounds: int, aligned: Any | None) -> dict[str, Any]:
    """Re-time every method's candidates together, judge them on the selection split, read test for each pick."""
    cfg = ctx.config
    cv = cfg.latency.cv_threshold
    ctx_for = partial(context_of, ctx, aligned)
    base_sel = ctx.task.evaluate_samples(ctx.base_model, "selection")  # once, paired with every candidate
    say(f"judging up to {CANDIDATES} candidates per method on the selection split, more while none holds "
        f"(base {ctx.task.metric_name} {base_sel.result.value:.4f}, n={base_sel.result.n}, z {cfg.search.selection_z:g} paired "
        "standard errors)")
    walk, runs["walls"]["selection"] = timed(
        lambda: judge_candidates(ctx, method_rankings(runs, cfg.max_drop), runs["rows"], folder / "models", base_sel, ctx_for))
    candidates, judged = walk.candidates, walk.figures
    say(f"re-timing the {len(candidates)} candidates judged together, interleaved against the base ({rounds} round(s))")
    retimed, runs["walls"]["retime"] = timed(lambda: retime(ctx, candidates, folder / "retime", rounds, ctx_for))
    picks = {m: confirmed_pick(m, retimed, judged, cv) for m in all_methods(runs["sweeps"])}
    base_test = ctx.task.evaluate(ctx.base_model, "test")
    methods = {}
    for m, label in picks.items():
        tested = test_reading(ctx, walk.models[label], base_test) if label else {}
        counts = method_counts(runs, m) | {"selection_rounds": walk.rounds.get(m, [])}
        methods[m] = method_entry(m, label, candidates, retimed, judged, tested, counts, cv)
    return {"methods": methods, "base_selection_metric": base_sel.result.value, "base_test_metric": base_test.value}


# --- the results file -------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit the piece ran from, ``+dirty`` when the benchmark or product code differed from it."""
    def git(*cmd: str) -> str:
        found = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return found.stdout.strip() if found.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "autoprune", "benchmarks/*.py") else "")


def network_identity(ctx: Any, quick: bool) -> dict[str, Any]:
    """What every seed of one network must share to sit in one entry."""
    cfg = ctx.config
    return {"config": cfg.name, "base_sha256": ctx.base_info.sha256, "max_drop": cfg.max_drop, "trials_per_search": cfg.search.trials,
            "sweep_ratios": list(cfg.search.sweep_ratios), "sampler": cfg.search.sampler, "round_to": ctx.round_to,
            "recovery": cfg.recovery.model_dump(mode="json"), "quick": quick}


def merge_piece(data: dict[str, Any] | None, network: str, head: dict[str, Any], seed: int, piece: dict[str, Any],
                top: dict[str, Any]) -> dict[str, Any]:
    """The results file with this piece in it: other networks and seeds kept, this seed replaced.

    Raises:
        ValueError: the file's entry for this network was made with other settings (``head["identity"]``).

    Example:
        >>> a = merge_piece(None, "n", {"identity": {"x": 1}}, 0, {"v": 1}, {"host": "h"})
        >>> b = merge_piece(a, "n", {"identity": {"x": 1}}, 1, {"v": 2}, {"host": "h"})
        >>> sorted(b["networks"]["n"]["seeds"]), merge_piece(b, "n", {"identity": {"x": 1}}, 0, {"v": 3}, {})["networks"]["n"]["seeds"]["0"]
        (['0', '1'], {'v': 3})
    """
    data = dict(data or {})
    networks = dict(data.get("networks") or {})
    old = networks.get(network)
    if old is not None and old.get("identity") != head["identity"]:
        known = old.get("identity") or {}
        diff = sorted(k for k in set(known) | set(head["identity"]) if known.get(k) != head["identity"].get(k))
        raise ValueError(f"the results file's {network!r} entry was made with other settings ({', '.join(diff)}); move it away or pass --out")
    seeds = dict((old or {}).get("seeds") or {})
    seeds[str(seed)] = piece
    networks[network] = head | {"seeds": dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))}
    return {"benchmark": "suite", **data, **top, "networks": dict(sorted(networks.items()))}


def network_head(args: argparse.Namespace, config: str, ctx: Any) -> dict[str, Any]:
    """The per-network figures every seed shares."""
    cfg = ctx.config
    return {"config": config, "max_drop": cfg.max_drop, "metric_name": ctx.task.metric_name, "base_metric": ctx.base_metric.value,
            "base_metric_stderr": ctx.base_metric.stderr, "identity": network_identity(ctx, args.quick)}


def load_text(load: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in load)


def print_piece(network: str, seed: int, piece: dict[str, Any], metric: str) -> None:
    """The piece's table."""
    print()
    print(f"{network}, seed {seed}: {piece['trials_per_search']} trials per search; load average {load_text(piece['load_average']['start'])} "
          f"-> {load_text(piece['load_average']['end'])}; {piece['wall_s']:.0f}s")
    print(f"{'method':16} {'trials':>6} {'finetunes':>9} {'evals':>5} {'seconds':>8} {'re-timed x':>10} {'spread':>7} "
          f"{'val drop':>9} {'sel drop':>9} {'test drop':>9}  ({metric})")
    for m, e in piece["methods"].items():
        head = f"{m:16} {e['trials']:>6} {e['finetunes']:>9} {e['evaluations']:>5} {e['seconds'] or 0:>8.0f}"
        if e["speedup"] is None:
            print(f"{head}  {e['note']}")
            continue
        print(f"{head} {e['speedup']:>9.2f}x {e['speedup_spread']:>7.1%} {e['val_drop']:>+9.4f} {e['selection_drop']:>+9.4f} "
              f"{e['test_drop']:>+9.4f}  {channels_text(e['pick']['channels'])}")


def selection_pinned_context(cfg: Any, workdir: pathlib.Path, seed: int) -> Any:
    """The study context with ``search.seed = seed`` but the selection split carved with seed 0 (:data:`SELECTION_SEED`).

    A study carves its selection split out of validation with its ``search.seed``; the suite keeps one carve
    for every seed, so that every seed has the same validation split, base metric and selection split, and the
    seed-independent sweeps (whose figures are validation figures) are measured once and hold for all seeds.
    """
    cfg.search.seed = SELECTION_SEED
    ctx = build_context(cfg, workdir)  # the task takes its selection seed from the config here
    ctx.config.search.seed = seed
    return ctx


def piece_config(args: argparse.Namespace, config: str, workdir: pathlib.Path) -> Any:
    """The config of every piece of this network (``--quick``: tiny budgets and sensitivity grid)."""
    cfg = prepare_config(config, workdir, args.quick, args.trials or (QUICK["trials"] if args.quick else None))
    cfg.search.sensitivity = True  # the sensitivity method's sweep, and autoprune's third baseline
    if args.quick:
        cfg.search.sensitivity_ratios = list(QUICK["sweep_ratios"])
    return cfg


def run_piece(args: argparse.Namespace, config: str, workdir: pathlib.Path) -> tuple[Any, dict[str, Any]]:
    """Everything one network and seed measures; returns the context and the piece's entry."""
    started, load_start, code = time.perf_counter(), os.getloadavg(), code_version()  # the code as this run loaded it
    rounds = args.retime_rounds or (QUICK["retime_rounds"] if args.quick else 3)
    cfg = piece_config(args, config, workdir)
    ctx = selection_pinned_context(cfg, workdir, args.seed)
    say(f"{args.network} ({cfg.name}), seed {args.seed}: base {ctx.task.metric_name} {ctx.base_metric.value:.4f} (n={ctx.base_metric.n}), "
        f"{len(ctx.groups)} groups, round_to {ctx.round_to}, max drop {cfg.max_drop}, {cfg.search.trials} trials per search; "
        f"work folder {workdir}; load average {load_text(load_start)}")
    folder = workdir / f"seed-{args.seed}"
    aligned = aligned_context(ctx) if args.aligned else None
    runs = run_all(ctx, workdir, folder, args.resume, aligned)
    confirmed = confirm_all(ctx, runs, folder, rounds, aligned)
    piece = {
        "seed": args.seed, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code": code,
        "trials_per_search": cfg.search.trials, "retime_rounds": rounds, "candidates_per_method": CANDIDATES,
        "selection_walk": True,  # a method none of whose candidates held judged its next ones (walk_rounds)
        "selection_seed": ctx.task.selection_seed,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())}, "wall_s": time.perf_counter() - started,
        "walls": runs["walls"], "sensitivity_targets": runs["sensitivity"]["identity"]["targets"],
        "aligned_round_to": None if aligned is None else aligned.round_to, **confirmed,
    }
    return ctx, piece


def main(argv: list[str] | None = None) -> int:
    """Run one network and seed, merge it into the results file, print its table."""
    args = parse_args(argv)
    config, out, workdir = piece_paths(args)
    quiet_optuna()
    from autoprune.latency import host_fingerprint

    workdir.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        prepare_only(selection_pinned_context(piece_config(args, config, workdir), workdir, SELECTION_SEED), workdir)
        say(f"prepared {workdir}: the sweeps and the sensitivity sweep every seed of {args.network} reuses")
        return 0
    ctx, piece = run_piece(args, config, workdir)
    host = host_fingerprint()
    piece["host_id"] = host["fingerprint_id"]
    top = {"host": host, "date": piece["date"], "quick": args.quick}
    data = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else None
    try:
        merged = merge_piece(data, args.network, network_head(args, config, ctx), args.seed, piece, top)
    except ValueError as exc:
        print(f"{out}: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2, default=float) + "\n", encoding="utf-8")
    tmp.replace(out)
    print_piece(args.network, args.seed, piece, ctx.task.metric_name)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
