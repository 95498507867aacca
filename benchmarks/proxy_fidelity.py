"""Benchmark: does the search's short recovery (the proxy) rank candidates as the long final recovery does?

Every trial of a study is judged after a short recovery (on ``studies/reference.yaml`` half an epoch of
finetune with distillation: the "proxy"); ``autoprune finalize`` then recovers the chosen architecture with
the long ``recovery.final`` recipe.  The search is only as good as the proxy's order: if a candidate that
the proxy puts over the budget would be inside it after the final recovery (or the other way round), the
search picks from the wrong set.  This script measures that order on the reference study:

1. **The study** (made once, in ``--workdir``, by the product's own functions): the work folder gets a copy
   of the config (``study.yaml``: its own artifact folder and SQLite storage, ``search.trials = --trials``,
   ``search.torch_threads = 1``, ``recovery.final.epochs = --epochs``) and of the base checkpoint given by
   ``--base`` (``base.pt`` with its ``base.json``: the base is keyed by the file's sha256, so a copy is the
   same base and is not trained again); then ``create_study`` (the uniform and global sweeps over
   ``search.sweep_ratios``, bounds, both best points enqueued), as ``autoprune create`` does, and one
   worker (``run_worker``, as ``autoprune worker`` does) until the study holds ``--trials`` finished trials.
2. **The candidates**, chosen by :func:`choose_candidates` (a rule, not by hand) from every sweep point
   (``uniform``, ``global``) and every fully evaluated searched trial (``search``: COMPLETE, not screened,
   not a duplicate; the enqueued baseline trials are the sweep points again and are not counted twice):
   only candidates whose proxy drop is at most ``2 x max_drop`` (inside the budget and just outside it);
   per kind its fastest candidate within the budget and its fastest just over it (where a feasibility flip
   matters most); the rest filled, up to ``--candidates``, at evenly spaced ranks of the remaining
   candidates ordered by search-time speedup (slow to fast).
3. **The final recovery** of each candidate with the product's :func:`autoprune.selection.finalize.finalize`
   (``--trial N`` for a searched trial; a sweep point pruned again from the base with the product's
   ``_baseline_target`` and finalized as an architecture file): BN recalibration, ``--epochs`` epochs of
   SGD with warm-up and cosine decay and distillation, judged once per epoch on the held-out training
   images with the best state kept, then measured on validation and test and re-timed against the base.
   The results file is written after every candidate and a rerun skips the finished ones (``finalize``'s
   own per-epoch checkpoint resumes a candidate killed mid-recovery).
4. **The report** (pure functions below, tested in ``tests/test_proxy_fidelity.py``): the Spearman rank
   correlation between the proxy drop and the final validation drop with a bootstrap 95% interval (resampled
   candidates, percentile interval); the candidates whose feasibility changes (proxy drop vs final drop on
   validation, the split the search judges feasibility on; test figures reported beside); and the
   end-to-end ratio after the final recovery: the fastest searched candidate within the budget after
   finalize over the fastest baseline (uniform or global) within it, both by their finalize re-timed
   speedup (and, beside it, by their search-time speedup).

The recipe: ``--epochs 3`` by default (the config's ``recovery.final`` with its epochs overridden; the
product's default is 5).  Why 3: a final epoch of the reference network takes about 20-60 s on one thread of
the shared 2-core host (more for the least pruned), so 12-16 candidates x 3 epochs, with their evaluation and
re-timing, fit in about an hour; 3 epochs are still 6x the proxy's half epoch, with the full cosine schedule
and the best-epoch judge, so they show whether more recovery reorders the candidates.  Whether 5 or more
epochs would reorder them further is not measured here.

Run (the base checkpoint copied from where it was trained; writes ``benchmarks/results/proxy_fidelity.json``
and ``.txt``); the committed result is these two runs (8 sweep ratios instead of the config's 12, to fit the
hour), then the report again with ``--report-only``::

    OMP_NUM_THREADS=1 python benchmarks/proxy_fidelity.py --base studies/artifacts/reference/base.pt \
        --sweep-ratios 0.1 0.2 0.3 0.35 0.4 0.45 0.5 0.6
    OMP_NUM_THREADS=1 python benchmarks/proxy_fidelity.py --base studies/artifacts/reference/base.pt \
        --sweep-ratios 0.1 0.2 0.3 0.35 0.4 0.45 0.5 0.6 --beyond --remedy-epochs 1

``--beyond`` also finalizes the pool's candidates past the window (where the final budget binds);
``--remedy-epochs E`` measures a longer proxy (the trial recipe at ``E`` epochs) on every finalized candidate.

``--study-only`` makes the study and stops; ``--quick`` (a 2-epoch base, tiny budgets, a temp folder) proves
the script end to end in a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from search_methods import QUICK  # noqa: E402
from search_methods import quick_folder  # noqa: E402
from search_methods import quick_path  # noqa: E402
from search_methods import quiet_optuna  # noqa: E402
from search_methods import say  # noqa: E402
from search_methods import trial_rows  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "proxy_fidelity.json"
KINDS = ("uniform", "global", "search")
BASELINE_KINDS = ("uniform", "global")
WINDOW = 2.0  # candidates whose proxy drop is at most WINDOW x max_drop


# --- the pure parts: choice, rank correlation, bootstrap, feasibility, end to end ------------------------


def choose_candidates(pool: list[dict[str, Any]], max_drop: float, count: int, window: float = WINDOW) -> list[dict[str, Any]]:
    """The candidates to finalize: a rule that spans the front inside and just outside the budget.

    Args:
        pool: candidates with ``key``, ``kind``, ``speedup`` (search-time) and ``proxy_drop``.
        max_drop: the budget.
        count: how many to choose (fewer when the window holds fewer).
        window: only candidates with ``proxy_drop <= window * max_drop`` are eligible.

    Returns:
        The chosen candidates, ordered by speedup (slow to fast).  First, per kind, the fastest candidate
        within the budget and the fastest one just over it; then the remaining eligible candidates, ordered by
        speedup, at evenly spaced ranks (both ends included) until ``count`` are chosen.

    Example:
        >>> pool = [{"key": str(i), "kind": "search", "speedup": 1.0 + i, "proxy_drop": 0.002 * i} for i in range(10)]
        >>> [c["key"] for c in choose_candidates(pool, 0.01, 4)]
        ['0', '5', '8', '9']
    """
    eligible = sorted((c for c in pool if c["proxy_drop"] <= window * max_drop), key=lambda c: (c["speedup"], c["key"]))
    chosen: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [c for c in reversed(eligible) if c["kind"] == kind]
        for inside in (True, False):
            best = next((c for c in mine if (c["proxy_drop"] <= max_drop) == inside), None)
            if best is not None and len(chosen) < count:
                chosen.setdefault(best["key"], best)
    rest = [c for c in eligible if c["key"] not in chosen]
    need = min(count - len(chosen), len(rest))
    if need > 0:
        for i in sorted({int(round(x)) for x in np.linspace(0, len(rest) - 1, need)}):
            chosen[rest[i]["key"]] = rest[i]
    return sorted(chosen.values(), key=lambda c: (c["speedup"], c["key"]))


def ranks(values: Any) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as Spearman's coefficient needs).

    Example:
        >>> ranks([10, 30, 20, 20]).tolist()
        [1.0, 4.0, 2.5, 2.5]
    """
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    out = np.empty(len(x))
    out[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (``nan`` when either side is constant).

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 6)
        0.8
    """
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap_ci(a: Any, b: Any, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`spearman` over pairs resampled with replacement.

    Resamples where either side is constant (no rank order) are left out.

    Example:
        >>> lo, hi = bootstrap_ci([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
        >>> round(lo, 6), round(hi, 6)
        (1.0, 1.0)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        r = spearman(x[idx], y[idx])
        if not math.isnan(r):
            values.append(r)
    if not values:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def feasibility_changes(candidates: list[dict[str, Any]], max_drop: float) -> list[dict[str, Any]]:
    """Candidates whose feasibility differs between the proxy drop and the final drop (same split).

    Example:
        >>> feasibility_changes([{"key": "a", "proxy_drop": 0.012, "final_drop": 0.004},
        ...                      {"key": "b", "proxy_drop": 0.002, "final_drop": 0.003}], 0.01)
        [{'key': 'a', 'proxy_drop': 0.012, 'final_drop': 0.004, 'became': 'feasible'}]
    """
    out = []
    for c in candidates:
        before, after = c["proxy_drop"] <= max_drop, c["final_drop"] <= max_drop
        if before != after:
            out.append({"key": c["key"], "proxy_drop": c["proxy_drop"], "final_drop": c["final_drop"],
                        "became": "feasible" if after else "infeasible"})
    return out


NOISY = {"final_speedup": "final_noisy", "speedup": "noisy"}  # the flag that says a speedup's timing did not settle


def fastest_feasible(candidates: list[dict[str, Any]], kinds: tuple[str, ...], drop: str, speed: str, max_drop: float) -> dict[str, Any] | None:
    """The fastest candidate of ``kinds`` (by ``speed``) whose ``drop`` holds the budget; ``None`` when none does.

    As the product chooses: among the candidates whose timing settled (not flagged noisy), unless none did.
    """
    ok = [c for c in candidates if c["kind"] in kinds and c.get(drop) is not None and c[drop] <= max_drop]
    ok = [c for c in ok if not c.get(NOISY.get(speed, ""))] or ok
    return max(ok, key=lambda c: (c[speed], -c[drop])) if ok else None


def end_to_end(candidates: list[dict[str, Any]], max_drop: float, drop: str = "final_drop", speed: str = "final_speedup") -> dict[str, Any]:
    """The searched pick's speedup over the best baseline's, each the fastest of its kind within the budget.

    Example:
        >>> rows = [{"key": "s", "kind": "search", "final_drop": 0.005, "final_speedup": 3.0},
        ...         {"key": "u", "kind": "uniform", "final_drop": 0.009, "final_speedup": 2.5},
        ...         {"key": "g", "kind": "global", "final_drop": 0.02, "final_speedup": 4.0}]
        >>> end_to_end(rows, 0.01)["ratio"]
        1.2
    """
    pick = fastest_feasible(candidates, ("search",), drop, speed, max_drop)
    base = fastest_feasible(candidates, BASELINE_KINDS, drop, speed, max_drop)
    ratio = pick[speed] / base[speed] if pick and base else None
    return {"pick": pick and pick["key"], "pick_speedup": pick and pick[speed], "baseline": base and base["key"],
            "baseline_speedup": base and base[speed], "ratio": ratio, "drop": drop, "speedup": speed}


# --- the study -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="studies/reference.yaml", help="the study config")
    parser.add_argument("--base", type=pathlib.Path, default=None,
                        help="base checkpoint to copy into the work folder (default: the config's own; trained when missing)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None, help="work folder (default: <artifact dir>/proxy-fidelity)")
    parser.add_argument("--trials", type=int, default=16, help="finished trials of the study (the 2 enqueued baselines included)")
    parser.add_argument("--candidates", type=int, default=12, help="candidates to finalize")
    parser.add_argument("--epochs", type=int, default=3, help="recovery.final.epochs of the final recipe")
    parser.add_argument("--sweep-ratios", type=float, nargs="+", default=None,
                        help="search.sweep_ratios of the study (default: the config's)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="results JSON (resumed when it exists)")
    parser.add_argument("--study-only", action="store_true", help="make the study and stop")
    parser.add_argument("--beyond", action="store_true",
                        help="also finalize every pool candidate beyond the window (reported apart, and with the rest in 'all')")
    parser.add_argument("--remedy-epochs", type=float, default=None,
                        help="also recover every finalized candidate with the trial recipe at this many epochs (a longer proxy) "
                             "and report how that proxy ranks them")
    parser.add_argument("--report-only", action="store_true",
                        help="finalize nothing more: report on the chosen candidates finished so far (marked partial)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets in a temp folder: proves the script works")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.candidates, args.epochs, args.resamples = QUICK["trials"], 4, 1, 200
    if min(args.trials, args.candidates, args.epochs, args.resamples) < 1:
        parser.error("--trials, --candidates, --epochs and --resamples must be at least 1")
    return args


def work_config(args: argparse.Namespace, workdir: pathlib.Path) -> pathlib.Path:
    """Write the work folder's config: the study's, with its own artifact folder and storage, and the recipe."""
    from autoprune.config import load_config

    src = load_config(args.config)
    data = yaml.safe_load(pathlib.Path(args.config).read_text(encoding="utf-8"))
    data["artifact_dir"] = str((workdir / "artifacts").resolve())
    data["storage"] = f"sqlite:///{(workdir / 'study.db').resolve()}"
    data.setdefault("search", {}).update(trials=args.trials, torch_threads=1)
    if args.sweep_ratios:
        data["search"]["sweep_ratios"] = list(args.sweep_ratios)
    recovery = data.setdefault("recovery", {})
    recovery.setdefault("final", {})["epochs"] = args.epochs
    if args.quick:
        data["base"]["epochs"] = QUICK["base_epochs"]
        data.setdefault("task_options", {}).update(train_size=2000, val_size=1000, test_size=1000)
        data["search"]["sweep_ratios"] = list(QUICK["sweep_ratios"])
        recovery.update(bn_batches=QUICK["bn_batches"], finetune_steps=QUICK["finetune_steps"])
        data.setdefault("latency", {}).update(repeats=QUICK["repeats"], blocks=QUICK["blocks"], warmup=QUICK["warmup"], max_remeasure=0)
    data.get("base", {}).pop("checkpoint", None)
    path = workdir / "study.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    base = args.base if args.base is not None else src.checkpoint_path()
    target = workdir / "artifacts" / "base.pt"
    if not target.is_file() and base.is_file() and not args.quick:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base, target)
        if base.with_suffix(".json").is_file():
            shutil.copy2(base.with_suffix(".json"), target.with_suffix(".json"))
        say(f"base checkpoint copied from {base} (keyed by its sha256: the same base, not trained again)")
    return path


def make_study(config_path: pathlib.Path, trials: int) -> float:
    """Create the study (sweeps, bounds, enqueued baselines) and run one worker until it holds ``trials``."""
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_worker

    start = time.perf_counter()
    create_study(str(config_path), say=say)
    summary = run_worker(str(config_path), target=trials, worker="proxy-fidelity", log_line=say)
    say(f"study holds {summary.finished} finished trials ({summary.ran} run now)")
    return time.perf_counter() - start


# --- the candidates --------------------------------------------------------------------------------------


def sweep_pool(cfg: Any) -> list[dict[str, Any]]:
    """Every sweep point with a timing, as a candidate."""
    from autoprune.space.baselines import baselines_path
    from autoprune.space.baselines import load_baselines

    baselines = load_baselines(baselines_path(cfg.artifact_path()))
    if baselines is None:
        raise SystemExit(f"no baselines.json in {cfg.artifact_path()}: make the study first")
    out = []
    for p in baselines.uniform + baselines.global_:
        if p.speedup is not None:
            out.append({"key": f"{p.kind} r={p.ratio:.2f}", "kind": p.kind, "trial": None, "ratio": p.ratio, "speedup": p.speedup,
                        "proxy_drop": p.drop, "proxy_metric": p.metric, "noisy": bool(p.latency_noisy), "channels": dict(p.channels)})
    return out


def trial_pool(cfg: Any) -> list[dict[str, Any]]:
    """Every fully evaluated searched trial (COMPLETE, not screened, not a duplicate, timed) as a candidate."""
    import optuna

    from autoprune.search.study import storage_for

    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, cfg.storage_url()))
    out = []
    for r in trial_rows(study):
        if r["state"] != "COMPLETE" or r["kind"] != "search" or r["screened"] or r["duplicate_of"] is not None:
            continue
        if r["drop"] is None or r["speedup"] is None:
            continue
        out.append({"key": f"trial {r['number']}", "kind": "search", "trial": r["number"], "ratio": None, "speedup": r["speedup"],
                    "proxy_drop": r["drop"], "proxy_metric": r["metric"], "noisy": bool(r["latency_noisy"]), "channels": r["channels"],
                    "request": r["request"]})
    return out


# --- the final recovery ----------------------------------------------------------------------------------


def sweep_arch(cfg: Any, ctx: Any, cand: dict[str, Any], folder: pathlib.Path) -> pathlib.Path:
    """A sweep point's architecture JSON, pruned again from the base as ``finalize --with-baselines`` does."""
    from autoprune.selection.architecture import write_architecture
    from autoprune.selection.confirm import Candidate
    from autoprune.selection.finalize import _baseline_target

    c = Candidate(cand["kind"], None, cand["ratio"], val_metric=cand["proxy_metric"], val_drop=cand["proxy_drop"], speedup=cand["speedup"])
    target = _baseline_target(cfg, ctx, None, c)
    folder.mkdir(parents=True, exist_ok=True)
    return write_architecture(target.arch, folder / f"{cand['kind']}-{cand['ratio']:.2f}.json")


def finalize_one(cfg: Any, cand: dict[str, Any], arch: pathlib.Path | None) -> dict[str, Any]:
    """Finalize one candidate with the product's ``finalize``; its final figures, wall time and load."""
    from autoprune.selection.finalize import finalize

    load_before, start = list(os.getloadavg()), time.perf_counter()
    (run,) = finalize(cfg, trial=cand["trial"], arch_file=arch, say=lambda line: say("  " + line))
    f = run.figures
    return {
        "final_drop": f["val_drop"], "final_test_drop": f["test_drop"], "final_metric": f["val_metric"],
        "final_test_metric": f["test_metric"], "final_speedup": f["speedup"], "final_speedup_spread": f["speedup_spread"],
        "final_noisy": bool(f.get("noisy")), "kept_epoch": f["kept_epoch"], "judge_metric": f["judge_metric"],
        "steps": f["steps"], "seconds": round(time.perf_counter() - start, 1), "load_before": load_before,
        "load_after": list(os.getloadavg()),
    }


# --- the results file and the report ---------------------------------------------------------------------


def identity(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What the finished candidates of a results file must share with this run to be kept."""
    from autoprune.base_model import file_sha256
    from autoprune.selection.finalize import recipe_record

    return {"config": args.config, "base_sha256": file_sha256(cfg.checkpoint_path()), "max_drop": cfg.max_drop,
            "trials": args.trials, "sweep_ratios": list(cfg.search.sweep_ratios), "recipe": recipe_record(cfg.recovery),
            "quick": args.quick}


def load_results(path: pathlib.Path, ident: dict[str, Any]) -> dict[str, Any]:
    """The results file to continue (its finished candidates kept), or a new one."""
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("identity") == ident:
            return data
        raise SystemExit(f"{path} was made with other settings ({data.get('identity')}); move it away to measure again")
    return {"benchmark": "proxy_fidelity", "identity": ident, "finished": {}}


def write_results(path: pathlib.Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
    tmp.replace(path)


def report(rows: list[dict[str, Any]], max_drop: float, resamples: int) -> dict[str, Any]:
    """Spearman (proxy drop vs final drop) with its bootstrap interval, feasibility changes, end to end."""
    proxy, final = [r["proxy_drop"] for r in rows], [r["final_drop"] for r in rows]
    test = [r["final_test_drop"] for r in rows]
    lo, hi = bootstrap_ci(proxy, final, resamples)
    tlo, thi = bootstrap_ci(proxy, test, resamples)
    return {
        "spearman": spearman(proxy, final), "spearman_ci": [lo, hi],
        "spearman_test": spearman(proxy, test), "spearman_test_ci": [tlo, thi],
        "feasibility_changes": feasibility_changes(rows, max_drop),
        "feasibility_changes_test": feasibility_changes([r | {"final_drop": r["final_test_drop"]} for r in rows], max_drop),
        "end_to_end": end_to_end(rows, max_drop),
        "end_to_end_search_speedup": end_to_end(rows, max_drop, speed="speedup"),
        "proxy_end_to_end": end_to_end(rows, max_drop, drop="proxy_drop", speed="speedup"),
    }


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(data: dict[str, Any]) -> None:
    rows, max_drop = data["candidates"], data["max_drop"]
    partial = f" (PARTIAL: {len(rows)} of {len(data['chosen'])} chosen)" if data.get("partial") else ""
    print(f"\n{len(rows)} candidates{partial}, budget {max_drop}; proxy: {data['proxy_recipe']}; final: {data['recipe']['summary']}")
    print(f"{'candidate':16} {'kind':8} {'search':>7} {'final':>7} {'proxy drop':>10} {'final drop':>10} {'test drop':>10} {'epoch':>5} {'s':>5}")
    for r in rows:
        flip = "" if (r["proxy_drop"] <= max_drop) == (r["final_drop"] <= max_drop) else "  <- feasibility changes"
        flip += "  (final timing did not settle)" if r.get("final_noisy") else ""
        print(f"{r['key']:16} {r['kind']:8} {r['speedup']:6.2f}x {r['final_speedup']:6.2f}x {r['proxy_drop']:+10.4f} "
              f"{r['final_drop']:+10.4f} {r['final_test_drop']:+10.4f} {r['kept_epoch']:5d} {r['seconds']:5.0f}{flip}")
    for r in data.get("beyond_window") or []:
        print(f"{r['key']:16} {r['kind']:8} {r['speedup']:6.2f}x {r['final_speedup']:6.2f}x {r['proxy_drop']:+10.4f} "
              f"{r['final_drop']:+10.4f} {r['final_test_drop']:+10.4f} {r['kept_epoch']:5d} {r['seconds']:5.0f}  (beyond the window)"
              + ("  (final timing did not settle)" if r.get("final_noisy") else ""))
    lo, hi = data["spearman_ci"]
    print(f"Spearman(proxy drop, final validation drop) = {data['spearman']:.3f}, bootstrap 95% interval [{lo:.3f}, {hi:.3f}] "
          f"({data['resamples']} resamples)")
    tlo, thi = data["spearman_test_ci"]
    print(f"Spearman(proxy drop, final test drop) = {data['spearman_test']:.3f} [{tlo:.3f}, {thi:.3f}]")
    changes = data["feasibility_changes"]
    print(f"feasibility changes (validation, budget {max_drop}): {len(changes)} of {len(rows)}"
          + "".join(f"; {c['key']} became {c['became']} ({c['proxy_drop']:+.4f} -> {c['final_drop']:+.4f})" for c in changes))
    print(f"feasibility changes against the final test drop: {len(data['feasibility_changes_test'])} of {len(rows)}")
    for label, e in (("end to end after finalize (re-timed)", data["end_to_end"]),
                     ("end to end after finalize (search-time speedups)", data["end_to_end_search_speedup"]),
                     ("what the proxy alone would say", data["proxy_end_to_end"])):
        print(f"{label}: {e['pick']} {fmt(e['pick_speedup'], '.2f')}x / {e['baseline']} {fmt(e['baseline_speedup'], '.2f')}x "
              f"= {fmt(e['ratio'], '.3f')}")
    if data.get("all"):
        a = data["all"]
        n = len(rows) + len(data["beyond_window"])
        print(f"with the {len(data['beyond_window'])} beyond the window ({n} in all): Spearman {a['spearman']:.3f} "
              f"[{a['spearman_ci'][0]:.3f}, {a['spearman_ci'][1]:.3f}], feasibility changes {len(a['feasibility_changes'])} of {n}, "
              f"end to end after finalize {a['end_to_end']['pick']} / {a['end_to_end']['baseline']} = {fmt(a['end_to_end']['ratio'], '.3f')}")
    if data.get("remedy_report"):
        m = data["remedy_report"]
        e = m["proxy_end_to_end"]
        print(f"longer proxy ({m['finetune_epochs']:g} epochs of the trial recipe), {m['candidates']} candidates: Spearman with the final "
              f"drop {m['spearman']:.3f} [{m['spearman_ci'][0]:.3f}, {m['spearman_ci'][1]:.3f}], feasibility changes "
              f"{len(m['feasibility_changes'])}, its own end to end {e['pick']} / {e['baseline']} = {fmt(e['ratio'], '.3f')}, "
              f"{m['seconds']:.0f}s")
        for key, d in m["drops"].items():
            print(f"  {key:16} longer-proxy drop {d['drop']:+.4f}" + ("" if d["same_channels"] else "  (channels differ)"))
    print(f"host {data['host']['hostname']} ({data['host']['cpu_model']}, {data['host']['logical_cores']} logical cores); "
          f"finalize {data['finalize_s']:.0f}s; wall {data['wall_s']:.0f}s over {len(data['runs'])} run(s) of the script:")
    for run in data["runs"]:
        load = run["load_average"]
        print(f"  {run['date']}: {run['wall_s']:.0f}s, load average {' '.join(f'{x:.2f}' for x in load['start'])} at the start, "
              f"{' '.join(f'{x:.2f}' for x in load['end'])} at the end")


def proxy_recipe(cfg: Any) -> str:
    r = cfg.recovery
    amount = f"{r.finetune_steps} steps" if r.finetune_steps else f"{r.finetune_epochs:g} epoch"
    return f"{amount} at lr {r.lr:g}, distill weight {r.distill_weight:g}, judged at {r.checkpoints} points"


def recipe_summary(cfg: Any) -> dict[str, Any]:
    from autoprune.selection.finalize import recipe_record

    f = cfg.recovery.final
    why = (f"recovery.final with epochs = {f.epochs} (--epochs; the product's default is 5): 12-16 candidates with their "
           "evaluation and re-timing must fit in about an hour of one thread on the shared 2-core host; 3 epochs are 6x the "
           "proxy's half epoch, with the full cosine schedule and the best-epoch judge")
    return {"summary": f"{f.epochs} epochs at lr {f.lr:g}, cosine, warm-up {f.warmup_steps}, distill weight {f.distill_weight:g}, "
                       f"T {f.temperature:g}, batch {f.batch_size}", "why": why, "settings": recipe_record(cfg.recovery)}


def longer_proxy(cfg: Any, cands: list[dict[str, Any]], epochs: float, data: dict[str, Any], out: pathlib.Path,
                 workdir: pathlib.Path) -> None:
    """The remedy: every candidate's drop after the trial recipe with ``epochs`` of finetune, as a trial measures it."""
    import copy

    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    done = data.setdefault("remedy", {"finetune_epochs": epochs, "drops": {}})
    if done["finetune_epochs"] != epochs:
        raise SystemExit(f"{out} holds a longer proxy of {done['finetune_epochs']} epochs; not {epochs}")
    longer = copy.deepcopy(cfg)
    longer.recovery.finetune_epochs, longer.recovery.finetune_steps = epochs, None
    ctx = None
    for cand in cands:
        if cand["key"] in done["drops"] or (cand["trial"] is not None and not cand.get("request")):
            continue  # measured already, or a trial whose widths lie outside the stored search space (not rebuilt)
        ctx = ctx or StudyContext.build(longer, workdir=workdir / "onnx-remedy", use_cache=False)
        start = time.perf_counter()
        plan = ({"uniform": cand["ratio"]} if cand["kind"] == "uniform" else {"global_ratio": cand["ratio"]}) if cand["trial"] is None \
            else {"ratios": cand["request"]}
        res = evaluate_candidate(ctx, **plan)
        same = cand["trial"] is None or dict(res.prune.kept) == dict(cand["channels"])
        done["drops"][cand["key"]] = {"drop": res.drop, "same_channels": same, "seconds": round(time.perf_counter() - start, 1)}
        write_results(out, data)
        say(f"  longer proxy ({epochs:g} epochs) {cand['key']}: drop {res.drop:+.4f} (proxy {cand['proxy_drop']:+.4f})"
            + ("" if same else "  (kept channels differ from the trial's)"))


def remedy_report(rows: list[dict[str, Any]], remedy: dict[str, Any], max_drop: float, resamples: int) -> dict[str, Any]:
    """How the longer proxy ranks the finalized candidates (the same figures as the proxy's)."""
    drops = remedy["drops"]
    mine = [r | {"proxy_drop": drops[r["key"]]["drop"]} for r in rows if r["key"] in drops]
    longer = [r["proxy_drop"] for r in mine]
    lo, hi = bootstrap_ci(longer, [r["final_drop"] for r in mine], resamples)
    return {"finetune_epochs": remedy["finetune_epochs"], "candidates": len(mine),
            "spearman": spearman(longer, [r["final_drop"] for r in mine]), "spearman_ci": [lo, hi],
            "feasibility_changes": feasibility_changes(mine, max_drop),
            "proxy_end_to_end": end_to_end(mine, max_drop, drop="proxy_drop", speed="speedup"),
            "seconds": sum(drops[r["key"]]["seconds"] for r in mine), "drops": drops}


def spread_order(chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other candidate first, then the rest: a run cut short has finalized candidates across the whole range."""
    return chosen[::2] + chosen[1::2]


def finalize_all(cfg: Any, chosen: list[dict[str, Any]], data: dict[str, Any], out: pathlib.Path, workdir: pathlib.Path) -> None:
    """Finalize every chosen candidate not finished yet, writing the results file after each."""
    from autoprune.trial.candidate import StudyContext

    ctx = None
    for i, cand in enumerate(spread_order(chosen), 1):
        if cand["key"] in data["finished"]:
            say(f"[{i}/{len(chosen)}] {cand['key']}: finalized already (kept from {out})")
            continue
        say(f"[{i}/{len(chosen)}] {cand['key']} ({cand['kind']}, search {cand['speedup']:.2f}x, proxy drop {cand['proxy_drop']:+.4f})")
        arch = None
        if cand["trial"] is None:
            ctx = ctx or StudyContext.build(cfg, workdir=workdir / "onnx", use_cache=False)
            arch = sweep_arch(cfg, ctx, cand, workdir / "sweep-archs")
        figures = finalize_one(cfg, cand, arch)
        data["finished"][cand["key"]] = cand | figures
        write_results(out, data)
        say(f"  final drop {figures['final_drop']:+.4f} (test {figures['final_test_drop']:+.4f}), {figures['final_speedup']:.2f}x, "
            f"{figures['seconds']:.0f}s")


CANDIDATE_FIELDS = ("trial", "kind", "ratio", "speedup", "proxy_drop", "final_drop", "final_test_drop", "final_speedup",
                    "final_speedup_spread", "final_noisy", "noisy", "kept_epoch", "seconds", "load_before", "load_after", "key")


def summary_fields(cfg: Any, args: argparse.Namespace, rows: list[dict[str, Any]], extra: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level figures of the results file (``extra``: the candidates beyond the window, with ``--beyond``)."""
    from autoprune.latency import host_fingerprint

    host = host_fingerprint()
    return {
        "host": host, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": args.config, "max_drop": cfg.max_drop, "proxy_recipe": proxy_recipe(cfg), "recipe": recipe_summary(cfg),
        "rule": f"proxy drop <= {WINDOW:g} x max_drop; per kind the fastest inside and the fastest just over the budget; "
                f"the rest at evenly spaced speedup ranks, {args.candidates} in all",
        "candidates": [{k: r.get(k) for k in CANDIDATE_FIELDS} for r in rows], "resamples": args.resamples,
        "beyond_window": [{k: r.get(k) for k in CANDIDATE_FIELDS} for r in extra],
        "all": report(rows + extra, cfg.max_drop, args.resamples) if extra else None,
        "finalize_s": sum(r["seconds"] for r in rows + extra),
    } | report(rows, cfg.max_drop, args.resamples)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_optuna()
    from autoprune.cli._confirm import study_config
    from autoprune.config import load_config

    out = quick_path(args.out) if args.quick else args.out
    workdir = args.workdir or (quick_folder() / "proxy-fidelity" if args.quick else load_config(args.config).artifact_path() / "proxy-fidelity")
    load_start, start = list(os.getloadavg()), time.perf_counter()
    config_path = work_config(args, workdir)
    say(f"work folder {workdir}; load average {load_start}")
    study_s = make_study(config_path, args.trials)
    if args.study_only:
        say(f"study ready in {study_s:.0f}s")
        return 0
    cfg = study_config(str(config_path), None)
    pool = sweep_pool(cfg) + trial_pool(cfg)
    chosen = choose_candidates(pool, cfg.max_drop, args.candidates)
    say(f"{len(pool)} candidates in the pool, {len(chosen)} chosen: " + ", ".join(c["key"] for c in chosen))
    data = load_results(out, identity(cfg, args))
    data["chosen"] = [c["key"] for c in chosen]
    if "runs" not in data and "wall_s" in data:  # a file written before each run of the script was listed
        data["runs"] = [{k: data.get(k) for k in ("date", "wall_s", "study_s", "load_average")}]
    data["study"] = {"trials": args.trials, "sweep_ratios": list(cfg.search.sweep_ratios), "search_mode": cfg.search.mode,
                     "pool": {k: sum(c["kind"] == k for c in pool) for k in KINDS}, "workdir": str(workdir)}
    beyond = sorted((c for c in pool if c["proxy_drop"] > WINDOW * cfg.max_drop), key=lambda c: (c["speedup"], c["key"])) if args.beyond else []
    if not args.report_only:
        finalize_all(cfg, chosen, data, out, workdir)
        finalize_all(cfg, beyond, data, out, workdir)
        if args.remedy_epochs:
            longer_proxy(cfg, spread_order(chosen) + beyond, args.remedy_epochs, data, out, workdir)
    rows = [data["finished"][c["key"]] for c in chosen if c["key"] in data["finished"]]
    extra = [data["finished"][c["key"]] for c in beyond if c["key"] in data["finished"]]
    data["partial"] = len(rows) < len(chosen)
    if data["partial"]:
        say(f"PARTIAL: {len(rows)} of the {len(chosen)} chosen candidates are finalized; the report covers those only")
    load = {"start": load_start, "end": list(os.getloadavg())}
    data.setdefault("runs", []).append({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                        "wall_s": round(time.perf_counter() - start, 1), "study_s": round(study_s, 1), "load_average": load})
    data |= summary_fields(cfg, args, rows, extra) | {"load_average": load, "wall_s": sum(r["wall_s"] for r in data["runs"])}
    if data.get("remedy"):
        data["remedy_report"] = remedy_report(rows + extra, data["remedy"], cfg.max_drop, args.resamples)
    write_results(out, data)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_report(data)
    print(text.getvalue(), end="")
    out.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    say(f"wrote {out} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
