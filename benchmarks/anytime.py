"""Benchmark: the anytime curve of autoprune's search, with and without Optuna pruners (issue 27, item 5).

On the reference network (``studies/reference.yaml``), per seed, each arm runs autoprune's study for the same
wall-clock budget (``--budget`` seconds of search, trials that end after it are not counted): ``none`` (every
finetune runs to its end) against each pruner worth trying (``median``, ``successive-halving``; ``search.pruner``
with Optuna's default options).  Every arm starts from the same study: the sweeps, and the sensitivity curves and
allocations, are measured once (``--prepare``, in the work folder, shared by every seed and arm) and each arm's
fresh study is created from them (``autoprune create``: the three enqueued baselines reuse their sweep points).
The arms of one seed run one after another, in an order rotated by the seed, so that none always runs first or
last on a host whose load drifts.

The curve of an arm is the **best confirmed feasible speedup against search seconds**: at the end of each trial,
the pick ``autoprune confirm`` + ``export`` would make from the trials finished by then (the ``CANDIDATES``
fastest within the budget on validation judged on the selection split, the next ones while none holds; the pick
is the fastest re-timed candidate that holds and whose re-timing settled, as :mod:`suite` confirms).  Every
candidate any point of any arm's curve judges is judged once on the selection split (carved with seed 0, as in
the suite) and re-timed with all the others, interleaved against the base in one process (``--retime-rounds``).
``search_curve`` is the incumbent the search itself believed: the fastest trial ended by then that holds the budget
with confirm's margin on validation, by its search-time speedup (no selection split, no re-timing).
The test split is read once per arm, for its final pick.

Per seed and arm (``benchmarks/results/anytime.json``): ``curve`` [[seconds, speedup]], ``search_curve``,
``trials`` (finished within the budget), ``pruned`` (stopped by the curve pruner), ``screened`` (finetune skipped by
the screening, which every arm has), ``finetune_steps`` (spent by trials within the budget: a
pruned trial's up to its stop, a reused sweep point or duplicate none), ``over_budget`` (the trial running when the
budget ran out), ``pick`` {``speedup``, ``speedup_spread``, ``drop``, ``selection_drop``, ``test_drop``, ``trial``,
``channels``}, ``incumbent`` (the search curve's end point) and ``feasible`` (trials within the time and drop
budgets); per seed and pruner arm ``target``: the search seconds it took to reach the ``none`` arm's final pick
within the re-timing spread, as a fraction of the budget, whether it found a better pick at the end and whether
that meets the target, and ``target.search``: the same on the search curves (against ``none``'s final incumbent).

Resumable per seed and arm: a finished arm's study and trial table stay in ``<work folder>/seed-N/<arm>``; the
results file keeps other seeds::

    OMP_NUM_THREADS=1 python benchmarks/anytime.py --prepare
    OMP_NUM_THREADS=1 python benchmarks/anytime.py --seed 0 [--budget 600]
    python benchmarks/anytime.py --plot            # the PNG from the results file

Smoke run (``studies/digits-resnet.yaml``, 2-epoch base, tiny budgets; everything in ``$TMPDIR/autoprune-bench-quick/``)::

    OMP_NUM_THREADS=1 python benchmarks/anytime.py --quick --seed 0 --budget 30
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from reference_search import method_candidates  # noqa: E402
from reference_search import trial_model  # noqa: E402
from search_methods import QUICK  # noqa: E402
from search_methods import fresh_cache  # noqa: E402
from search_methods import indent  # noqa: E402
from search_methods import prepare_autoprune  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import ran_trials  # noqa: E402
from search_methods import retime  # noqa: E402
from search_methods import run_paths  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import trial_rows  # noqa: E402
from search_methods import trial_states  # noqa: E402
from suite import code_version  # noqa: E402
from suite import confirmed_pick  # noqa: E402
from suite import load_text  # noqa: E402
from suite import piece_config  # noqa: E402
from suite import prepare_only  # noqa: E402
from suite import prepared_attrs  # noqa: E402
from suite import selection_figures  # noqa: E402
from suite import selection_pinned_context  # noqa: E402
from suite import test_reading  # noqa: E402
from suite import walk_rounds  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "anytime.json"
CONFIG = "studies/reference.yaml"
QUICK_CONFIG = "studies/digits-resnet.yaml"
# The arms: search.pruner -> search.pruner_options.  Optuna's defaults: the median pruner after 5 trials with a
# value at the step; successive halving with rungs from the first checkpoint, reduction factor 4.
ARMS: dict[str, dict[str, Any]] = {"none": {}, "median": {}, "successive-halving": {}}
BUDGET = 600.0  # seconds of search per arm (about the config's 40 trials on a 2-core host)
REACH = 0.6  # the target: reach the none arm's final pick within this fraction of the budget
TRIAL_CAP = 100_000  # the Objective's target of trials: the budget, not a count, ends an arm
RUN_FILE = "run.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the searches' sampler seed (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=None, help=f"seconds of search per arm (default {BUDGET:g}; 30 with --quick)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: %(default)s)")
    parser.add_argument("--retime-rounds", type=int, default=None, help="interleaved re-timing rounds (default 3; 1 with --quick)")
    parser.add_argument("--prepare", action="store_true", help="only measure what every seed and arm reuses (sweeps, sensitivity), then stop")
    parser.add_argument("--plot", action="store_true", help="only draw the PNG of the results file's curves")
    parser.add_argument("--quick", action="store_true", help=f"smoke run on {QUICK_CONFIG}: tiny budgets, 2-epoch base; temp folder")
    parser.add_argument("--workdir", default=None, help="work folder kept between seeds (default: <config artifact dir>/anytime)")
    parser.add_argument("--out", default=None, help=f"results JSON (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown or "none" not in args.arms.split(","):
        parser.error(f"--arms: {', '.join(unknown) or 'none is missing'}; the arms are {', '.join(ARMS)} and 'none' is always one")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    return args


def paths(args: argparse.Namespace) -> tuple[str, pathlib.Path, pathlib.Path]:
    """``(config path, results JSON, work folder)`` (quick runs: a temp folder for both)."""
    config = QUICK_CONFIG if args.quick else CONFIG
    return (config, *run_paths(args, RESULTS, config, "anytime", "anytime_work"))


def arm_order(arms: list[str], seed: int) -> list[str]:
    """The arms in the order a seed runs them: rotated by the seed.

    Example:
        >>> arm_order(["none", "median", "successive-halving"], 1)
        ['median', 'successive-halving', 'none']
    """
    k = seed % len(arms)
    return arms[k:] + arms[:k]


# --- one arm: the search for a wall-clock budget ------------------------------------------------------------


def finetune_steps(row: dict[str, Any]) -> int:
    """Finetune steps a trial spent: none for a reused sweep point, a duplicate or a screened trial, a trial the
    curve pruner stopped up to its stop.

    Example:
        >>> finetune_steps({"state": "PRUNED", "pruned_step": 76, "recovery_steps": None})
        76
        >>> finetune_steps({"state": "COMPLETE", "sweep_point": {"kind": "uniform"}, "recovery_steps": 152})
        0
    """
    if row.get("sweep_point") or row.get("duplicate_of") is not None or row.get("screened"):
        return 0
    if row.get("pruned_step") is not None:
        return int(row["pruned_step"])
    return int(row.get("recovery_steps") or 0)


def arm_rows(study: Any, ends: dict[int, float]) -> list[dict[str, Any]]:
    """The arm's trials as rows (:func:`search_methods.trial_rows`) with ``seconds`` (search seconds at its end),
    the pruner's record and ``finetune_steps``."""
    from autoprune.search.record import read

    rows = trial_rows(study)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for row in rows:
        rec = read(by_number[row["number"]])
        row["seconds"] = ends.get(row["number"])
        row |= {"pruned_step": rec.pruned_step, "pruned_reason": rec.pruned_reason, "drop_stderr": rec.drop_stderr,
                "recovery_steps": (rec.recovery or {}).get("steps")}
        row["finetune_steps"] = finetune_steps(row)
    return rows


def run_for(study: Any, objective: Any, budget: float, log: Callable[[str], None]) -> dict[int, float]:
    """Run trials one at a time (as a worker does) until ``budget`` seconds have passed.

    Returns:
        trial number -> search seconds when it ended (a trial running at the budget ends after it).
    """
    from autoprune.search.objective import SurplusTrial

    start = time.perf_counter()
    ends: dict[int, float] = {}
    while (elapsed := time.perf_counter() - start) < budget:
        before = trial_states(study)
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        now = time.perf_counter() - start
        states = trial_states(study)
        for number in ran_trials(study, before):
            ends[number] = now
            log(f"{now:6.0f}s  trial {number} {states[number].lower()} ({now - elapsed:.0f}s)")
    return ends


def run_arm(ctx: Any, workdir: pathlib.Path, folder: pathlib.Path, arm: str, budget: float) -> dict[str, Any]:
    """One arm's search (resumed from ``folder/run.json`` when it finished with this budget)."""
    saved = folder / RUN_FILE
    if saved.is_file():
        run = json.loads(saved.read_text(encoding="utf-8"))
        if run["budget_seconds"] == budget and run["options"] == ARMS[arm]:
            say(f"{arm}: reusing its finished search in {folder}")
            return dict(run)
    from autoprune.search.objective import Objective

    study, _, _ = prepare_autoprune(ctx, folder, seed_attrs=prepared_attrs(ctx, workdir))
    ctx.config.search.pruner = arm
    ctx.config.search.pruner_options = dict(ARMS[arm])
    fresh_cache(ctx, folder / "latency-cache-search.sqlite")
    load_start = os.getloadavg()
    say(f"{arm}: {budget:g} s of search (load average {load_text(load_start)})")
    ends = run_for(study, Objective(ctx, study, TRIAL_CAP, arm, indent), budget, indent)
    run = {"arm": arm, "options": ARMS[arm], "budget_seconds": budget, "rows": arm_rows(study, ends),
           "load_average": {"start": list(load_start), "end": list(os.getloadavg())}, "code": code_version()}
    saved.write_text(json.dumps(run, indent=1, default=float) + "\n", encoding="utf-8")
    return run


# --- the curves: what confirm would pick at each point -----------------------------------------------------


def finished_by(rows: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """The trials that had ended ``seconds`` into the search."""
    return [r for r in rows if r.get("seconds") is not None and r["seconds"] <= seconds]


def ranking(arm: str, rows: list[dict[str, Any]], max_drop: float) -> dict[str, dict[str, Any]]:
    """``arm:trial`` -> trial row: every candidate within the budget on validation, fastest first, one per channel vector."""
    return {f"{arm}:{r['number']}": r for r in method_candidates(rows, max_drop, len(rows))}


def curve_times(rows: list[dict[str, Any]], budget: float) -> list[float]:
    """The search seconds at which a trial ended within the budget, in order (the curve's points)."""
    return sorted({r["seconds"] for r in rows if r.get("seconds") is not None and r["seconds"] <= budget})


@dataclass
class Judge:
    """Selection-split verdicts, each candidate judged once however many curve points walk past it."""

    judge_one: Callable[[str, dict[str, Any]], dict[str, Any]]
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def holds(self, label: str, row: dict[str, Any]) -> bool:
        if label not in self.figures:
            self.figures[label] = self.judge_one(label, row)
            self.rows[label] = row
        return bool(self.figures[label]["selection_holds"])


def judged_at(arm: str, rows: list[dict[str, Any]], seconds: float, max_drop: float, holds: Callable[[str, dict[str, Any]], bool]) -> list[str]:
    """The candidates ``autoprune confirm`` would judge on the trials ended by ``seconds``."""
    ranked = ranking(arm, finished_by(rows, seconds), max_drop)
    return [label for batch in walk_rounds(list(ranked), lambda label: holds(label, ranked[label])) for label in batch]


def search_incumbent(rows: list[dict[str, Any]], seconds: float, max_drop: float, z: float) -> dict[str, Any] | None:
    """The fastest trial ended by ``seconds`` that holds with confirm's margin on validation, by its search-time
    speedup (the incumbent the search itself believed), or None."""
    from autoprune.trial.screening import holds_with_margin

    ok = [r for r in method_candidates(finished_by(rows, seconds), max_drop, len(rows))
          if holds_with_margin(r["drop"], r.get("drop_stderr"), max_drop, z)]
    return max(ok, key=lambda r: r["speedup"], default=None)


def arm_curves(arm: str, rows: list[dict[str, Any]], budget: float, judge: Judge, retimed: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The arm's confirmed and search-time curves, the label of its final pick and its final incumbent."""
    curve, search, pick, incumbent = [], [], None, None
    for t in curve_times(rows, budget):
        labels = judged_at(arm, rows, t, cfg.max_drop, judge.holds)
        pick = confirmed_pick(arm, {x: retimed[x] for x in labels}, judge.figures, cfg.latency.cv_threshold)
        curve.append([round(t, 2), None if pick is None else retimed[pick]["speedup"]])
        incumbent = search_incumbent(rows, t, cfg.max_drop, cfg.search.selection_z)
        search.append([round(t, 2), None if incumbent is None else incumbent["speedup"]])
    return {"curve": curve, "search_curve": search, "pick_label": pick, "incumbent": incumbent}


def judge_all(ctx: Any, runs: dict[str, dict[str, Any]], folder: pathlib.Path, budget: float) -> Judge:
    """Walk every curve point of every arm, judging each candidate it reaches once on the selection split."""
    base_sel = ctx.task.evaluate_samples(ctx.base_model, "selection")

    def judge_one(label: str, row: dict[str, Any]) -> dict[str, Any]:
        arm = label.split(":")[0]
        model = trial_model(ctx, row, folder / arm / "models" / label.replace(":", "-"))
        figures = selection_figures(ctx, model, base_sel, f"{label} (stored weights)")
        indent(f"{label:24} selection drop {figures['selection_drop']:+.4f} ± {figures['selection_drop_stderr']:.4f}: "
               f"{'holds' if figures['selection_holds'] else 'fails'}")
        return figures

    judge = Judge(judge_one)
    for arm, run in runs.items():
        for t in curve_times(run["rows"], budget):
            judged_at(arm, run["rows"], t, ctx.config.max_drop, judge.holds)
    return judge


# --- the seed: every arm, its curve, its pick, the target --------------------------------------------------


def reach_fraction(curve: list[list[Any]], goal: float, spread: float, budget: float) -> float | None:
    """The fraction of the budget after which a confirmed curve reaches ``goal`` within ``spread`` (relative), or None.

    Example:
        >>> reach_fraction([[10, 1.5], [40, 2.0], [90, 2.4]], 2.45, 0.03, 100)
        0.9
        >>> reach_fraction([[10, 1.5]], 2.0, 0.03, 100) is None
        True
    """
    for seconds, speedup in curve:
        if speedup is not None and speedup >= goal * (1 - spread):
            return float(seconds) / budget
    return None


def curve_target(curve: list[list[Any]], mine: dict[str, Any] | None, goal: dict[str, Any] | None, budget: float) -> dict[str, Any]:
    """Whether a curve reaches the ``goal`` end point (``speedup``, ``speedup_spread``) within the larger spread in
    at most :data:`REACH` of the budget, or ends better (``mine``: its own end point); with no goal, any end point
    is better."""
    if goal is None:
        return {"reach_fraction": None, "better_at_end": mine is not None, "met": mine is not None}
    spread = max(goal["speedup_spread"] or 0.0, (mine or {}).get("speedup_spread") or 0.0)
    fraction = reach_fraction(curve, goal["speedup"], spread, budget)
    better = mine is not None and mine["speedup"] > goal["speedup"] * (1 + spread)
    return {"reach_fraction": fraction, "better_at_end": better, "met": better or (fraction is not None and fraction <= REACH)}


def arm_target(entry: dict[str, Any], none: dict[str, Any], budget: float) -> dict[str, Any]:
    """Whether a pruner arm met the target against the ``none`` arm of the same seed: by the confirmed curve (the
    issue's measure), and by the search-time curve (``search``: what the search itself believed, before confirm)."""
    return curve_target(entry["curve"], entry.get("pick"), none.get("pick"), budget) | {
        "search": curve_target(entry["search_curve"], entry.get("incumbent"), none.get("incumbent"), budget)}


def arm_entry(run: dict[str, Any], curves: dict[str, Any], budget: float, retimed: dict[str, Any], judge: Judge,
              tested: dict[str, Any], max_drop: float) -> dict[str, Any]:
    """One arm's figures for one seed (``feasible``: trials ended within the time budget and the drop budget)."""
    inside = finished_by(run["rows"], budget)
    label = curves["pick_label"]
    pick = None
    if label is not None:
        row = judge.rows[label]
        pick = {"trial": row["number"], "kind": row.get("kind"), "speedup": retimed[label]["speedup"],
                "speedup_spread": retimed[label]["speedup_spread"], "search_speedup": row["speedup"], "drop": row["drop"],
                "selection_drop": judge.figures[label]["selection_drop"], **tested, "channels": row.get("channels")}
    trials = [{"number": r["number"], "state": r["state"], "kind": r.get("kind"), "seconds": r["seconds"], "speedup": r.get("speedup"),
               "drop": r.get("drop"), "finetune_steps": r["finetune_steps"], "pruned_step": r.get("pruned_step"),
               "screened": r.get("screened"), "sweep_point": bool(r.get("sweep_point")), "duplicate_of": r.get("duplicate_of")}
              for r in run["rows"]]
    best = curves["incumbent"]
    incumbent = None if best is None else {"trial": best["number"], "kind": best.get("kind"), "speedup": best["speedup"],
                                            "speedup_spread": best.get("speedup_spread"), "drop": best["drop"]}
    return {"options": run["options"], "curve": curves["curve"], "search_curve": curves["search_curve"], "incumbent": incumbent,
            "feasible": sum(1 for r in inside if r["state"] == "COMPLETE" and r.get("drop") is not None and r["drop"] <= max_drop),
            "trials": len(inside),
            "pruned": sum(1 for r in inside if r.get("pruned_step") is not None),
            "screened": sum(1 for r in inside if r.get("screened")), "finetune_steps": sum(r["finetune_steps"] for r in inside),
            "over_budget": len(run["rows"]) - len(inside), "pick": pick, "load_average": run["load_average"], "code": run["code"],
            "trial_table": trials}


def confirm_seed(ctx: Any, runs: dict[str, dict[str, Any]], folder: pathlib.Path, budget: float, rounds: int) -> dict[str, Any]:
    """Judge every curve's candidates, re-time them together, build each arm's curve and read test for its pick."""
    say("judging every candidate the curves walk past on the selection split, once each")
    judge = judge_all(ctx, runs, folder, budget)
    say(f"re-timing the {len(judge.rows)} candidates judged together, interleaved against the base ({rounds} round(s))")
    retimed = retime(ctx, dict(judge.rows), folder / "retime", rounds)
    base_test = ctx.task.evaluate(ctx.base_model, "test")
    arms = {}
    for arm, run in runs.items():
        curves = arm_curves(arm, run["rows"], budget, judge, retimed, ctx.config)
        label = curves["pick_label"]
        tested = {}
        if label is not None:
            model = trial_model(ctx, judge.rows[label], folder / arm / "models" / label.replace(":", "-"))
            tested = test_reading(ctx, model, base_test)
        arms[arm] = arm_entry(run, curves, budget, retimed, judge, tested, ctx.config.max_drop)
    for arm, entry in arms.items():
        if arm != "none":
            entry["target"] = arm_target(entry, arms["none"], budget)
    return {"arms": arms, "candidates_judged": len(judge.rows), "base_test_metric": base_test.value}


# --- the results file and the picture ----------------------------------------------------------------------


def merge_seed(data: dict[str, Any] | None, head: dict[str, Any], seed: int, piece: dict[str, Any]) -> dict[str, Any]:
    """The results file with this seed in it (others kept).

    Raises:
        ValueError: the file was made with another config, base, budget or recipe.

    Example:
        >>> a = merge_seed(None, {"identity": {"x": 1}, "host": "h"}, 0, {"v": 1})
        >>> sorted(merge_seed(a, {"identity": {"x": 1}, "host": "h"}, 2, {"v": 2})["seeds"])
        ['0', '2']
    """
    data = dict(data or {})
    if data.get("identity") not in (None, head["identity"]):
        known, new = data["identity"], head["identity"]
        diff = sorted(k for k in set(known) | set(new) if known.get(k) != new.get(k))
        raise ValueError(f"the results file was made with other settings ({', '.join(diff)}); move it away or pass --out")
    seeds = dict(data.get("seeds") or {})
    seeds[str(seed)] = piece
    return {"benchmark": "anytime", **data, **head, "seeds": dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))}


def identity(ctx: Any, budget: float, arms: list[str], quick: bool) -> dict[str, Any]:
    """What every seed must share to sit in one results file."""
    cfg = ctx.config
    return {"config": cfg.name, "base_sha256": ctx.base_info.sha256, "max_drop": cfg.max_drop, "budget_seconds": budget,
            "arms": {a: ARMS[a] for a in arms}, "sampler": cfg.search.sampler, "round_to": ctx.round_to,
            "recovery": cfg.recovery.model_dump(mode="json"), "quick": quick}


def plot(data: dict[str, Any], png: pathlib.Path) -> None:
    """Each seed's confirmed curves, one panel per seed, the budget's ``REACH`` fraction marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seeds = data["seeds"]
    fig = Figure(figsize=(4.2 * len(seeds), 3.6))
    FigureCanvasAgg(fig)
    budget = data["budget_seconds"]
    for i, (seed, piece) in enumerate(seeds.items()):
        ax = fig.add_subplot(1, len(seeds), i + 1)
        for arm, entry in piece["arms"].items():
            label = f"{arm}: {entry['trials']} trials, {entry['pruned']} pruned, {entry['finetune_steps']} steps"
            color = None
            for key, style in (("curve", "-"), ("search_curve", "--")):
                pts = [(s, v) for s, v in entry[key] if v is not None]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    (line,) = ax.step([*xs, budget], [*ys, ys[-1]], where="post", linestyle=style, color=color,
                                      label=label if style == "-" or color is None else None)
                    color = line.get_color()
        ax.axvline(REACH * budget, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("search seconds")
        ax.set_xlim(0, budget)
        if i == 0:
            ax.set_ylabel("speedup")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.45 * (high - low))  # room for the legend above the curves
        ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(f"{data['config']}, {budget:g} s of search per arm: the confirmed pick (solid, re-timed; none where no candidate "
                 "holds on the selection split)\nand the search's incumbent (dashed, search-time speedup) against search seconds", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def print_seed(seed: int, piece: dict[str, Any], budget: float) -> None:
    """The seed's table."""
    print()
    print(f"seed {seed}: {budget:g} s of search per arm")
    print(f"{'arm':20} {'trials':>6} {'pruned':>6} {'steps':>6} {'search x':>8} {'pick x':>7} {'spread':>7} {'val drop':>9} {'sel drop':>9} "
          f"{'test drop':>9}  target")
    for arm, e in piece["arms"].items():
        p = e["pick"]
        incumbent = "-" if e.get("incumbent") is None else f"{e['incumbent']['speedup']:.2f}x"
        head = f"{arm:20} {e['trials']:>6} {e['pruned']:>6} {e['finetune_steps']:>6} {incumbent:>8}"
        figures = "no pick" if p is None else (f"{p['speedup']:>6.2f}x {p['speedup_spread']:>7.1%} {p['drop']:>+9.4f} "
                                               f"{p['selection_drop']:>+9.4f} {p['test_drop']:>+9.4f}")
        print(f"{head} {figures}  {target_text(e.get('target'))}")


def target_text(target: dict[str, Any] | None) -> str:
    """A pruner arm's target verdict in words ("" for the none arm)."""
    if target is None:
        return ""
    def words(t: dict[str, Any], what: str) -> str:
        fraction = t["reach_fraction"]
        reached = f"never reached none's {what}" if fraction is None else f"reached none's {what} at {fraction:.2f} of the budget"
        return reached + (", better at the end" if t["better_at_end"] else "")

    return words(target, "pick") + "; " + words(target["search"], "incumbent")


def run_seed(args: argparse.Namespace, ctx: Any, workdir: pathlib.Path, budget: float, arms: list[str]) -> dict[str, Any]:
    """Every arm of one seed (resumable), then the confirmation of every curve."""
    started, load_start, code = time.perf_counter(), os.getloadavg(), code_version()
    rounds = args.retime_rounds or (QUICK["retime_rounds"] if args.quick else 3)
    folder = workdir / f"seed-{args.seed}"
    runs = {}
    for arm in arm_order(arms, args.seed):
        runs[arm] = run_arm(ctx, workdir, folder / arm, arm, budget)
    runs = {arm: runs[arm] for arm in arms}  # the file's order
    confirmed = confirm_seed(ctx, runs, folder, budget, rounds)
    return {"seed": args.seed, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "code": code,
            "arm_order": arm_order(arms, args.seed), "retime_rounds": rounds, "selection_seed": ctx.task.selection_seed,
            "load_average": {"start": list(load_start), "end": list(os.getloadavg())}, "wall_s": time.perf_counter() - started,
            **confirmed}


def write_results(out: pathlib.Path, merged: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=1, default=float) + "\n", encoding="utf-8")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    """Prepare, run one seed, or plot."""
    args = parse_args(argv)
    config, out, workdir = paths(args)
    if args.plot:
        if not out.is_file():
            print(f"{out}: no results to plot; run a seed first", file=sys.stderr)
            return 2
        plot(json.loads(out.read_text(encoding="utf-8")), out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
        return 0
    quiet_optuna()
    from autoprune.latency import host_fingerprint

    budget = args.budget or (30.0 if args.quick else BUDGET)
    arms = args.arms.split(",")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = piece_config(argparse.Namespace(quick=args.quick, trials=None), config, workdir)
    if args.prepare:
        prepare_only(selection_pinned_context(cfg, workdir, 0), workdir)
        say(f"prepared {workdir}: the sweeps and the sensitivity sweep every seed and arm reuses")
        return 0
    ctx = selection_pinned_context(cfg, workdir, args.seed)
    piece = run_seed(args, ctx, workdir, budget, arms)
    host = host_fingerprint()
    piece["host_id"] = host["fingerprint_id"]
    head = {"config": config, "budget_seconds": budget, "reach": REACH, "max_drop": ctx.config.max_drop, "host": host,
            "date": piece["date"], "identity": identity(ctx, budget, arms, args.quick)}
    data = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else None
    try:
        merged = merge_seed(data, head, args.seed, piece)
    except ValueError as exc:
        print(f"{out}: {exc}", file=sys.stderr)
        return 2
    write_results(out, merged)
    plot(merged, out.with_suffix(".png"))
    print_seed(args.seed, piece, budget)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
