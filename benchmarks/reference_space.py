"""Benchmark: does the reference study leave room to search?  (issue 12, item 5)

Checks, on this host, every property the reference benchmark (``studies/reference.yaml`` by default) must
have, and prints each with the measured number and PASS/FAIL:

1. **latency**: the base model's median ONNX Runtime latency at the config's latency settings (batch 8,
   1 thread) is at least 3 ms, so it is compute-bound rather than per-operator overhead; timed
   ``--latency-rounds`` times with autoprune's timer (:func:`autoprune.latency.measure`);
2. **room**: at least 8 prunable groups (``Pruner.groups`` of the study) reach at least 4 widths each between
   the guard floor and full width (:func:`autoprune.pruning.kept_channels` on every ratio, the study's
   ``round_to``); the widths under ``round_to`` 16 (AVX-512 hosts) are listed too;
3. **noise**: the base model's validation accuracy standard error is at most a quarter of ``max_drop``;
4. **budget binds**: the largest swept uniform ratio whose validation drop is within ``max_drop`` lies in
   [0.2, 0.6] and a larger swept ratio is over budget.  Every sweep point goes through
   :func:`autoprune.trial.candidate.evaluate_candidate`, i.e. the study's own recovery recipe.  Each recovered
   model is also BN-recalibrated once more and re-measured: a metric that moves beyond noise means the
   recovery left stale BatchNorm statistics, and the sweep is then judged both ways;
5. **base training** takes at most 15 minutes (``train_base``'s own clock; cached as ``base.pt``);
6. **one full trial** (prune, BN recalibration, finetune with distillation, evaluate, export, timing) takes
   at most 90 s: the slowest sweep point's ``evaluate_candidate`` wall time (no latency cache).

Cheap to rerun: the base model is trained once (``train_base`` caches it in the config's artifact folder)
and every sweep point is stored in ``<artifact_dir>/reference_space_sweep.json`` as soon as it is measured,
keyed by the base checkpoint, the settings that change it, this host and the source of the recovery,
candidate, pruning and timer code; an interrupted run resumes, and a rerun only re-times the base.  ``--fresh``
measures every point again.

Run (writes ``benchmarks/results/reference_space.json`` and ``.txt``, the latter exactly what was printed; another
config writes ``reference_space_<name>.json`` and ``.txt``, e.g. ``reference_space_reference-mobilenet.json``)::

    OMP_NUM_THREADS=1 python benchmarks/reference_space.py [--config studies/reference.yaml] [--ratios 0.2 0.4 0.6]

Smoke run (a 2-epoch base in a temp folder, tiny budgets; writes ``*_quick`` files to a temp folder)::

    python benchmarks/reference_space.py --quick
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from search_methods import quick_path  # noqa: E402
from search_methods import shrink_for_quick  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "reference_space.json"
DEFAULT_CONFIG = ROOT / "studies" / "reference.yaml"
SWEEP_CACHE = "reference_space_sweep.json"
# Source files whose changes change a sweep point's figures (the cache is keyed by their contents).
CODE = (
    "trial/candidate.py", "trial/recovery.py", "trial/calibration.py", "pruning/engine.py", "pruning/guards.py", "pruning/criteria.py",
    "latency/_timer.py",
)

REQUIRED = {
    "base_latency_ms": 3.0,  # at least, batch 8, 1 thread
    "groups": 8,  # at least this many groups with ...
    "widths_per_group": 4,  # ... at least this many reachable widths
    "feasible_ratio": (0.2, 0.6),  # the largest feasible uniform ratio lies in this range
    "stderr_share_of_budget": 0.25,  # validation metric SE <= this share of max_drop
    "base_training_s": 15 * 60,
    "trial_s": 90.0,
}


class Report:
    """Prints lines and keeps them (the .txt is exactly what was printed), and collects the checks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.checks: list[dict[str, Any]] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def check(self, name: str, passed: bool, measured: str, requirement: str, value: Any = None) -> None:
        """Record and print one requirement as PASS or FAIL."""
        self.checks.append({"name": name, "passed": bool(passed), "measured": measured, "requirement": requirement, "value": value})
        self.say(f"[{'PASS' if passed else 'FAIL'}] {name}: {measured} (requirement: {requirement})")


# -- config and base model ---------------------------------------------------------------------------


def load(config_path: str, quick: bool, workdir: pathlib.Path) -> Any:
    """The study config; with ``quick`` a 2-epoch base in ``workdir`` and tiny budgets (proves the script runs)."""
    from autoprune.config import load_config

    cfg = load_config(config_path)
    if quick:
        shrink_for_quick(cfg, workdir / "artifacts")
    return cfg


def base_training(cfg: Any, report: Report, retrain: bool) -> dict[str, Any]:
    """Train the base model unless it is cached (``train_base``), and check its training time."""
    from autoprune.base_model import train_base
    from autoprune.tasks import build_task

    task = build_task(cfg)
    cached = cfg.checkpoint_path().is_file() and not retrain
    start = time.perf_counter()
    if cached:
        report.say(f"base model: reusing {cfg.checkpoint_path()}")
    else:
        report.say(f"training the base model ({cfg.base.epochs} epochs, {torch_threads()} thread(s)) -> {cfg.checkpoint_path()}")

    def progress(epoch: int, epochs: int, loss: float) -> None:
        report.say(f"  epoch {epoch}/{epochs}: loss {loss:.4f}, {time.perf_counter() - start:.0f}s")

    with task.forbid_split("test"):
        info = train_base(cfg, task, force=retrain, progress=progress)
    seconds = info.trained_seconds
    limit = REQUIRED["base_training_s"]
    how = "cached: measured when base.pt was trained" if cached else f"trained now; {time.perf_counter() - start:.0f}s with data and evaluation"
    if seconds is not None:
        measured = f"{seconds:.0f}s ({seconds / 60:.1f} min, {cfg.base.epochs} epochs; {how})"
    else:
        measured = "unknown (no trained_seconds in base.json)"
    report.check("base training time", seconds is not None and seconds <= limit, measured, f"<= {limit / 60:.0f} min", seconds)
    return {"cached": cached, "trained_seconds": seconds, "epochs": cfg.base.epochs, "checkpoint": str(info.path), "sha256": info.sha256}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def apply_study_recipe(ctx: Any, report: Report) -> dict[str, Any] | None:
    """Apply the study's calibrated recovery recipe when the config asks for calibration (as a study does)."""
    try:
        from autoprune.trial.calibration import ensure_recipe
    except ImportError:  # a tree without recipe calibration: the recovery section is the recipe
        return None
    return ensure_recipe(ctx, say=lambda line: report.say("recovery: " + line))


# -- room to search ------------------------------------------------------------------------------------


def reachable_widths(group: Any, settings: Any) -> list[int]:
    """Every width a group can keep under the guards: ``kept_channels`` at each ratio of one channel steps."""
    from autoprune.pruning import kept_channels

    c = group.channels
    return sorted({kept_channels(group.name, c, k / c, settings, group.first_layer)[0] for k in range(c)})


def check_room(ctx: Any, report: Report) -> list[dict[str, Any]]:
    """List each group's reachable widths (study's round_to and 16) and check the count of roomy groups."""
    import dataclasses

    from autoprune.trial.pruning_setup import guard_settings

    settings = guard_settings(ctx.config)
    avx512 = dataclasses.replace(settings, round_to=16)
    rows = []
    report.say(f"prunable groups (round_to {settings.round_to}; floor max(min_channels {settings.min_channels}, "
               f"{settings.min_fraction:.0%}), first layer keeps >= {1 - settings.first_layer_max_ratio:.0%}):")
    report.say(f"  {'group':24} {'channels':>8} {'n':>3}  widths (round_to {settings.round_to})  [n with round_to 16]")
    for g in ctx.groups:
        widths = reachable_widths(g, settings)
        wide = reachable_widths(g, avx512)
        note = " (first layer)" if g.first_layer else (f" (tied to {g.tied_to})" if g.tied_to else "")
        report.say(f"  {g.name:24} {g.channels:8d} {len(widths):3d}  {' '.join(map(str, widths))}  [{len(wide)}]{note}")
        rows.append({"name": g.name, "channels": g.channels, "first_layer": g.first_layer, "tied_to": g.tied_to,
                     "widths": widths, "widths_round_to_16": wide})
    free = [r for r in rows if r["tied_to"] is None]
    roomy = [r for r in free if len(r["widths"]) >= REQUIRED["widths_per_group"]]
    space = 1
    for r in free:
        space *= len(r["widths"])
    report.say(f"  {len(free)} searchable groups, {space:,} architectures in the space")
    report.check("groups with room", len(roomy) >= REQUIRED["groups"],
                 f"{len(roomy)} of {len(free)} groups reach >= {REQUIRED['widths_per_group']} widths (min {min(len(r['widths']) for r in free)})",
                 f">= {REQUIRED['groups']} groups with >= {REQUIRED['widths_per_group']} widths", len(roomy))
    return rows


# -- latency and noise ---------------------------------------------------------------------------------


def base_macs(ctx: Any) -> int:
    """Multiply-accumulates of the base model for one image (torch-pruning's counter, as the pruner uses)."""
    import torch_pruning as tp

    macs, _params = tp.utils.count_ops_and_params(copy.deepcopy(ctx.base_model).eval(), ctx.task.example_input(1))
    return int(macs)


def check_latency(ctx: Any, report: Report, rounds: int) -> dict[str, Any]:
    """Time the base model ``rounds`` times with the project's timer; check the median of the medians."""
    from autoprune.latency import measure

    stats = [measure(ctx.base_onnx, ctx.latency) for _ in range(rounds)]
    medians = [s.median_ms for s in stats]
    median = statistics.median(medians)
    macs = base_macs(ctx)
    batch = ctx.latency.batch_size
    for i, s in enumerate(stats, 1):
        report.say(f"  base latency round {i}: median {s.median_ms:.3f} ms, p90 {s.p90_ms:.3f} ms, block CV {s.cv:.3f}"
                   f"{' (noisy)' if s.noisy else ''}, {s.attempts} attempt(s)")
    gmacs = macs * batch / (median / 1000.0) / 1e9
    report.say(f"  base: {macs / 1e6:.1f} M MACs per image, {gmacs:.1f} GMAC/s at batch {batch}")
    spread = (max(medians) - min(medians)) / median
    report.check("base latency", median >= REQUIRED["base_latency_ms"],
                 f"median {median:.2f} ms over {rounds} round(s) (range {min(medians):.2f}-{max(medians):.2f} ms, {spread:.1%}; "
                 f"block CV {statistics.median(s.cv for s in stats):.3f}) at batch {batch}, {ctx.latency.threads} thread(s)",
                 f">= {REQUIRED['base_latency_ms']:.0f} ms", median)
    return {"median_ms": median, "round_medians_ms": medians, "round_spread": spread, "macs_per_image": macs,
            "gmac_per_s": gmacs, "rounds": [s.as_dict() for s in stats]}


def check_noise(ctx: Any, report: Report) -> dict[str, Any]:
    """The base model's validation standard error against a quarter of the budget."""
    m = ctx.base_metric
    budget = ctx.config.max_drop
    limit = REQUIRED["stderr_share_of_budget"] * budget
    report.check("validation noise", m.stderr <= limit,
                 f"{ctx.task.metric_name} {m.value:.4f} on {m.n} images, SE {m.stderr:.4f} = {m.stderr / budget:.0%} of max_drop {budget:g} "
                 f"(SE of a drop, base and candidate independent: {m.stderr * 2 ** 0.5:.4f})",
                 f"SE <= {limit:.4f} (a quarter of max_drop)", m.stderr)
    return m.as_dict()


# -- the uniform sweep ---------------------------------------------------------------------------------


def point_key(ctx: Any, ratio: float, fingerprint_id: str) -> str:
    """What a cached sweep point must match: base, settings, host and the code that produced it."""
    import autoprune

    package = pathlib.Path(autoprune.__file__).resolve().parent
    code = hashlib.sha256()
    for name in CODE:
        path = package / name
        code.update(path.read_bytes() if path.is_file() else b"-")
    cfg = ctx.config
    identity = {
        "ratio": round(float(ratio), 6), "base": ctx.base_info.sha256, "criterion": cfg.criterion,
        "pruning": cfg.pruning.model_dump(mode="json"), "round_to": ctx.round_to,
        "recovery": cfg.recovery.model_dump(mode="json"), "latency": ctx.latency.as_dict(),
        "task": cfg.task, "task_options": cfg.task_options, "host": fingerprint_id, "code": code.hexdigest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def evaluate_point(ctx: Any, ratio: float, base_macs_: int) -> dict[str, Any]:
    """One full trial at a uniform ratio (``evaluate_candidate``), plus the metric after one more BN recalibration."""
    from autoprune.trial.candidate import evaluate_candidate
    from autoprune.trial.recovery import recalibrate_bn

    rec = ctx.config.recovery
    start = time.perf_counter()
    result = evaluate_candidate(ctx, uniform=ratio)
    wall = time.perf_counter() - start
    with ctx.task.forbid_split("test"):
        recalibrate_bn(result.model, ctx.task, rec.bn_batches, rec.batch_size, seed=rec.seed)
        again = ctx.task.evaluate(result.model, "val")
    after_bn = getattr(result, "metric_after_bn", None)
    recovery = getattr(result, "recovery", None)
    return {
        "ratio": ratio, "metric": result.metric.value, "metric_stderr": result.metric.stderr,
        "drop": result.drop, "drop_stderr": result.drop_stderr,
        "metric_after_bn": after_bn.value if after_bn is not None else None,
        "metric_bn_again": again.value, "drop_bn_again": ctx.drop(again.value),
        "speedup": result.speedup, "speedup_spread": result.speedup_spread, "latency_ms": result.latency_ms,
        "base_latency_ms": result.base_latency_ms, "noisy": result.latency_noisy,
        "macs": result.prune.macs, "mac_reduction": base_macs_ / max(1, result.prune.macs), "params": result.prune.params,
        "kept": dict(result.prune.kept), "clamps": [str(c) for c in result.prune.clamps],
        "stage_seconds": {k: round(v, 3) for k, v in result.stage_seconds.items()}, "wall_s": wall,
        "recovery": recovery.attrs() if hasattr(recovery, "attrs") else None,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_sweep(ctx: Any, ratios: list[float], cache_path: pathlib.Path, fresh: bool, report: Report, macs: int) -> list[dict[str, Any]]:
    """Every uniform ratio through ``evaluate_candidate``, reusing (and extending) the per-point cache."""
    from autoprune.latency import host_fingerprint

    cache = {} if fresh or not cache_path.is_file() else json.loads(cache_path.read_text())
    fid = host_fingerprint()["fingerprint_id"]
    points = []
    report.say(f"uniform sweep {', '.join(f'{r:g}' for r in ratios)} (each a full trial with the study's recovery recipe)")
    report.say(f"  {'ratio':>5} {'acc':>7} {'drop':>8} {'±':>6} {'acc+BN':>7} {'drop+BN':>8} {'speedup':>8} {'±':>6} "
               f"{'MACs/':>6} {'trial s':>8}  kept channels")
    for ratio in ratios:
        key = point_key(ctx, ratio, fid)
        point = cache.get(key)
        if point is None:
            point = {**evaluate_point(ctx, ratio, macs), "cached": False}
            cache[key] = {**point, "cached": True}
            tmp = cache_path.with_suffix(".json.tmp")
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(cache, indent=1) + "\n")
            tmp.replace(cache_path)
        points.append(point)
        note = " (cached)" if point["cached"] else ""
        report.say(f"  {ratio:5.2f} {point['metric']:7.4f} {point['drop']:+8.4f} {point['drop_stderr']:6.4f} "
                   f"{point['metric_bn_again']:7.4f} {point['drop_bn_again']:+8.4f} {point['speedup']:7.2f}x {point['speedup_spread']:6.3f} "
                   f"{point['mac_reduction']:5.2f}x {point['wall_s']:8.1f}  {'/'.join(str(v) for v in point['kept'].values())}{note}")
    return points


def largest_feasible(points: list[dict[str, Any]], key: str, max_drop: float) -> tuple[float | None, bool, list[float]]:
    """``(largest swept ratio with key <= max_drop, whether a larger swept ratio exists, infeasible ratios below it)``."""
    feasible = [p["ratio"] for p in points if p[key] <= max_drop]
    best = max(feasible, default=None)
    if best is None:
        return None, bool(points), []
    larger = any(p["ratio"] > best for p in points)
    below = [p["ratio"] for p in points if p["ratio"] < best and p[key] > max_drop]
    return best, larger, below


def check_budget(points: list[dict[str, Any]], max_drop: float, report: Report) -> dict[str, Any]:
    """The largest feasible uniform ratio (as evaluated, and after one more BN recalibration)."""
    lo, hi = REQUIRED["feasible_ratio"]
    worst_gap = max(abs(p["drop_bn_again"] - p["drop"]) / max(p["metric_stderr"], 1e-9) for p in points)
    stale = [p["ratio"] for p in points if p["metric_bn_again"] - p["metric"] > 2 * p["metric_stderr"]]
    if stale:
        report.say(f"  note: one more BN recalibration after evaluate_candidate raises the metric beyond 2 SE at {stale}: "
                   "the recovery in this tree leaves stale BatchNorm statistics after the finetune; judged both ways below")
    else:
        report.say(f"  BN statistics after the recovery are fresh: one more recalibration moves the metric by at most "
                   f"{worst_gap:.1f} SE (evaluate_candidate recalibrates after the finetune)")
    out: dict[str, Any] = {"stale_bn_ratios": stale}
    for key, label in (("drop", "as evaluated"), ("drop_bn_again", "with one more BN recalibration")):
        best, larger, below = largest_feasible(points, key, max_drop)
        passed = best is not None and lo <= best <= hi and larger
        if best is None:
            measured = f"no swept ratio is within max_drop {max_drop:g}"
        else:
            binds = "a larger swept ratio is over budget" if larger else "no larger ratio was swept: the budget may not bind"
            measured = f"{best:g} ({binds})" + (f"; also over budget below it at {below} (noise)" if below else "")
        out[key] = {"largest_feasible": best, "larger_infeasible": larger, "infeasible_below": below, "passed": passed}
        if key == "drop" or stale:
            target = f"largest feasible uniform ratio in [{lo:g}, {hi:g}], drop <= {max_drop:g}"
            report.check(f"budget binds ({label})", passed, measured, target, best)
    return out


def check_trial_time(points: list[dict[str, Any]], report: Report) -> dict[str, Any]:
    """The slowest sweep point's full-trial wall time (timings never come from a latency cache here)."""
    slowest = max(points, key=lambda p: p["wall_s"])
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in slowest["stage_seconds"].items())
    cached = " (cached point: measured " + slowest["measured_at"] + ")" if slowest["cached"] else ""
    report.check("full trial time", slowest["wall_s"] <= REQUIRED["trial_s"],
                 f"slowest {slowest['wall_s']:.1f}s at uniform {slowest['ratio']:g} ({stages}){cached}; "
                 f"median {statistics.median(p['wall_s'] for p in points):.1f}s",
                 f"<= {REQUIRED['trial_s']:.0f}s", slowest["wall_s"])
    return {"slowest_s": slowest["wall_s"], "slowest_ratio": slowest["ratio"], "stage_seconds": slowest["stage_seconds"]}


# -- the run -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, report: Report, workdir: pathlib.Path) -> dict[str, Any]:
    """Every check in turn; returns the result document (without host and date)."""
    from autoprune.trial.candidate import StudyContext

    cfg = load(args.config, args.quick, workdir)
    report.say(f"{cfg.name}: task {cfg.task} {json.dumps(cfg.task_options)}, model {cfg.model} {json.dumps(cfg.model_options)}")
    base = base_training(cfg, report, args.retrain)
    ctx = StudyContext.build(cfg, workdir=workdir / "onnx", use_cache=False)
    calibration = apply_study_recipe(ctx, report)
    rec = ctx.config.recovery
    report.say(f"round_to {ctx.round_to} (config: {cfg.pruning.round_to}; this CPU's ORT block: {host_block()}), criterion {cfg.criterion}, "
               f"max_drop {cfg.max_drop:g}; recovery: {rec.bn_batches} BN batches, finetune "
               f"{rec.finetune_steps if rec.finetune_steps is not None else rec.finetune_epochs} "
               f"{'steps' if rec.finetune_steps is not None else 'epochs'} at lr {rec.lr:g}, batch {rec.batch_size}, distill {rec.distill}")
    groups = check_room(ctx, report)
    latency = check_latency(ctx, report, args.latency_rounds)
    noise = check_noise(ctx, report)
    ratios = sorted(args.ratios or cfg.search.sweep_ratios)
    cache_path = cfg.artifact_path() / SWEEP_CACHE
    points = run_sweep(ctx, ratios, cache_path, args.fresh, report, latency["macs_per_image"])
    tracking = [p["speedup"] / p["mac_reduction"] for p in points]
    report.say(f"  speedup / MAC reduction over the sweep: median {statistics.median(tracking):.2f} "
               f"(range {min(tracking):.2f}-{max(tracking):.2f}; near 1 when the latency is compute-bound)")
    budget = check_budget(points, cfg.max_drop, report)
    trial = check_trial_time(points, report)
    return {
        "config_path": str(args.config), "config": cfg.model_dump(mode="json"), "round_to": ctx.round_to,
        "recovery_used": rec.model_dump(mode="json"), "recovery_calibration": calibration,
        "base": {**base, "val": noise}, "latency": latency, "groups": groups, "sweep": points,
        "speedup_over_mac_reduction": tracking, "budget": budget, "trial": trial, "sweep_cache": str(cache_path),
    }


def host_block() -> int:
    from autoprune.latency import cpu_round_to

    return cpu_round_to()


def write(out: pathlib.Path, document: dict[str, Any], report: Report) -> None:
    """The JSON result and a .txt with exactly the lines printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    out.with_suffix(".txt").write_text("\n".join(report.lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(ROOT)), help="study YAML (default: studies/reference.yaml)")
    parser.add_argument("--ratios", type=float, nargs="+", default=None, help="uniform ratios to sweep (default: the config's search.sweep_ratios)")
    parser.add_argument("--latency-rounds", type=int, default=3, help="times the base latency is measured (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and finetuning (default 1)")
    parser.add_argument("--fresh", action="store_true", help="measure every sweep point again (ignore the per-point cache)")
    parser.add_argument("--retrain", action="store_true", help="train the base model again even if base.pt exists")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2-epoch base in a temp folder, tiny budgets, output to a temp folder")
    parser.add_argument("--out", default=None, help=f"result JSON (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    import torch

    torch.set_num_threads(args.threads)
    from autoprune.latency import host_fingerprint

    out = pathlib.Path(args.out) if args.out else default_out(args.config, args.quick)
    report = Report()
    host = host_fingerprint()
    report.say(f"host {host['hostname']}: {host['cpu_model']}, {host['logical_cores']} logical cores, flags {' '.join(host['flags'])}, "
               f"onnxruntime {host['ort_version']}; load average {load_text()}; torch threads {args.threads}")
    started = time.perf_counter()
    load_start = os.getloadavg()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="autoprune-refspace-"))
    try:
        document = run(args, report, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    passed = all(c["passed"] for c in report.checks)
    report.say(f"{sum(c['passed'] for c in report.checks)} of {len(report.checks)} requirements met"
               f"{'' if passed else ': ' + ', '.join(c['name'] for c in report.checks if not c['passed']) + ' failed'}; "
               f"{time.perf_counter() - started:.0f}s; load average {load_text()}")
    document = {
        "benchmark": "reference_space", "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host, "load_average": {"start": load_start, "end": os.getloadavg()}, "torch_threads": args.threads,
        "requirements": REQUIRED, "checks": report.checks, "all_passed": passed,
        # render_results.py's generic table reads these two
        "measured": {c["name"]: c["value"] for c in report.checks}, "met": {c["name"]: c["passed"] for c in report.checks},
        **document,
        "wall_s": time.perf_counter() - started,
    }
    report.say(f"wrote {out} and {out.with_suffix('.txt').name}")
    write(out, document, report)
    return 0 if passed else 1


def default_out(config_path: str, quick: bool) -> pathlib.Path:
    """``reference_space.json`` for the reference study, ``reference_space_<name>.json`` for any other config."""
    from autoprune.config import load_config

    name = load_config(config_path).name
    path = RESULTS if name == "reference" else RESULTS.with_name(f"{RESULTS.stem}_{name}{RESULTS.suffix}")
    return quick_path(path) if quick else path


def load_text() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
