"""Benchmark: how repeatable is an interleaved ONNX Runtime speedup on this host?

Times one fixed pruned digits-sized ResNet against its base 10 times, each in a fresh process, first on
an idle host and then next to one CPU-burning neighbour, and reports the spread (max/min) of the
speedups and the seconds one candidate timing takes.  Then times the same uniform ratio (0.3) with
kept channels rounded to 1, 4, 8 and 16, all interleaved against the base in one process, to show how
much channel alignment matters.

Targets: idle max/min <= 1.05, loaded max/min <= 1.10, one candidate timing <= 3 s.  The numbers are
written as measured, met or not, to ``benchmarks/results/latency_repeatability.json``.

With ``--compare-early-stop`` it times the same candidate both ways, the full count (``latency.early_stop``
off, the default) and with the opt-in early stop on, alternating the two modes process by process (the
order swaps every run), idle and next to the neighbour; it reports per mode the max/min across processes,
the seconds one timing takes on this digits-sized model (the timing machinery a trial pays) and how many
blocks ran, to ``benchmarks/results/latency_early_stop.json`` (no alignment table).

Run:
    python benchmarks/latency_repeatability.py [--runs 10] [--compare-early-stop] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "latency_repeatability.json"
COMPARE_RESULTS = RESULTS.with_name("latency_early_stop.json")
MODES = ("full", "early_stop")  # latency.early_stop off (the default), on
SIDE = 16
BATCH = 8
THREADS = 1
CANDIDATE_RATIO = 0.5
ALIGN_RATIO = 0.3
ALIGNMENTS = (1, 4, 8, 16)
_T = TypeVar("_T")
TARGETS = {"idle_max_over_min": 1.05, "loaded_max_over_min": 1.10, "seconds_per_candidate": 3.0}


def _settings(mode: str = "full") -> Any:
    """The benchmark's timing settings: the defaults at its batch and threads, early stop on in ``early_stop`` mode."""
    from autoprune.latency import LatencySettings

    return LatencySettings(batch_size=BATCH, threads=THREADS, early_stop=mode == "early_stop")


def _worker(candidate: str, base: str, mode: str = "full") -> None:
    """Child process: time one candidate against the base with the default settings, print JSON.

    Args:
        candidate: Candidate ONNX file.
        base: Base ONNX file.
        mode: ``full`` (the defaults) or ``early_stop`` (the same with ``early_stop`` on).
    """
    from autoprune.latency import measure_speedup

    settings = _settings(mode)
    start = time.perf_counter()
    result = measure_speedup(candidate, base, settings)
    timing_s = time.perf_counter() - start
    print(json.dumps({
        "speedup": result.speedup,
        "speedup_spread": result.speedup_spread,
        "noisy": result.noisy,
        "attempts": result.attempts,
        "timing_s": timing_s,
        "base_median_ms": result.baseline.median_ms,
        "candidate_median_ms": result.candidate.median_ms,
        "blocks_run": result.blocks_run,
        "repeats_run": result.repeats_run,
        "stopped_early": result.stopped_early,
    }))


def _build(folder: pathlib.Path) -> dict[str, Any]:
    """Export the base ResNet, the fixed candidate and the alignment variants.

    Args:
        folder: Where the ONNX files go.

    Returns:
        Paths and descriptions of every model.
    """
    import torch

    from autoprune.latency import compare_outputs
    from autoprune.latency import cpu_round_to
    from autoprune.latency import export_onnx
    from autoprune.models import build_model
    from autoprune.pruning import GuardSettings
    from autoprune.pruning import Pruner

    torch.manual_seed(0)
    base = build_model("resnet", num_classes=10, in_channels=1).eval()
    x = torch.randn(BATCH, 1, SIDE, SIDE)
    out: dict[str, Any] = {"base": str(export_onnx(base, x, folder / "base.onnx"))}
    round_to = cpu_round_to()

    def classifier(model: torch.nn.Module) -> list[torch.nn.Module]:
        return [model.fc]  # the 10 class outputs are not channels to prune

    pruned = Pruner(x, criterion="l2", guards=GuardSettings(round_to=round_to), ignored_layers=classifier).prune(
        copy.deepcopy(base), uniform=CANDIDATE_RATIO
    )
    path = export_onnx(pruned.model, x, folder / "candidate.onnx")
    compare_outputs(pruned.model, path, x)
    out["candidate"] = {"path": str(path), "uniform": CANDIDATE_RATIO, "round_to": round_to, "kept": pruned.kept,
                        "macs": pruned.macs}
    out["base_macs"] = Pruner(x, ignored_layers=classifier).prune(copy.deepcopy(base), uniform=0.0).macs
    out["alignment"] = []
    for align in ALIGNMENTS:
        variant = Pruner(x, guards=GuardSettings(round_to=align), ignored_layers=classifier).prune(copy.deepcopy(base), uniform=ALIGN_RATIO)
        vpath = export_onnx(variant.model, x, folder / f"align{align}.onnx")
        out["alignment"].append({"round_to": align, "path": str(vpath), "kept": variant.kept, "macs": variant.macs})
    return out


def _timed_process(candidate: str, base: str, index: int, mode: str = "full") -> dict[str, Any]:
    """One fresh process timing the candidate in ``mode``; its row, printed as one line.

    Args:
        candidate: Candidate ONNX file.
        base: Base ONNX file.
        index: The run's number (0-based), for the printed line.
        mode: One of :data:`MODES`.

    Returns:
        The worker's figures and the seconds the whole process took.
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", candidate, base, mode], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"timing process {index} ({mode}) failed:\n{proc.stderr}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - start
    print(f"  run {index + 1:2d} {mode:10s}: speedup {row['speedup']:.3f}  spread {row['speedup_spread']:.3f}  "
          f"noisy {row['noisy']!s:5}  attempts {row['attempts']}  blocks {row['blocks_run']:2d}  timing {row['timing_s']:.2f} s")
    return row


def _series(candidate: str, base: str, runs: int) -> dict[str, Any]:
    """Time the candidate ``runs`` times, one fresh process each.

    Args:
        candidate: Candidate ONNX file.
        base: Base ONNX file.
        runs: Number of processes.

    Returns:
        Speedups, spreads, timings and the max/min ratio.
    """
    load_before = os.getloadavg()[0]
    rows = [_timed_process(candidate, base, i) for i in range(runs)]
    return _summary(rows, load_before)


def _paired_series(candidate: str, base: str, runs: int) -> dict[str, dict[str, Any]]:
    """Time the candidate ``runs`` times in each of :data:`MODES`, alternating, one fresh process each.

    The two modes take turns process by process and the order swaps every run, so a drift of the host's
    load falls on both alike.

    Returns:
        One :func:`_summary` per mode.
    """
    load_before = os.getloadavg()[0]
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for i in range(runs):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            rows[mode].append(_timed_process(candidate, base, i, mode))
    return {mode: _summary(rows[mode], load_before) for mode in MODES}


def _summary(rows: list[dict[str, Any]], load_before: float) -> dict[str, Any]:
    """The figures of one series of timing processes (``load_before``: the 1-minute load when it began)."""
    speedups = [r["speedup"] for r in rows]
    return {
        "speedups": speedups,
        "spreads": [r["speedup_spread"] for r in rows],
        "noisy": [r["noisy"] for r in rows],
        "attempts": [r["attempts"] for r in rows],
        "timing_s": [r["timing_s"] for r in rows],
        "process_s": [r["process_s"] for r in rows],
        "base_median_ms": [r["base_median_ms"] for r in rows],
        "candidate_median_ms": [r["candidate_median_ms"] for r in rows],
        "blocks_run": [r["blocks_run"] for r in rows],
        "stopped_early": [r["stopped_early"] for r in rows],
        "median_speedup": statistics.median(speedups),
        "max_over_min": max(speedups) / min(speedups),
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
    }


def _alignment(models: dict[str, Any]) -> list[dict[str, Any]]:
    """Time the alignment variants interleaved against the base in this process.

    Args:
        models: From :func:`_build`.

    Returns:
        One row per ``round_to``.
    """
    from autoprune.latency import measure_speedups

    variants = models["alignment"]
    results = measure_speedups([v["path"] for v in variants], models["base"], _settings())
    rows = []
    for variant, result in zip(variants, results, strict=True):
        rows.append({
            "round_to": variant["round_to"],
            "kept": variant["kept"],
            "macs": variant["macs"],
            "macs_ratio": models["base_macs"] / variant["macs"],
            "median_ms": result.candidate.median_ms,
            "base_median_ms": result.baseline.median_ms,
            "speedup": result.speedup,
            "speedup_spread": result.speedup_spread,
            "noisy": result.noisy,
        })
    return rows


def _print_series(name: str, series: dict[str, Any]) -> None:
    """Print one summary line of a series.

    Args:
        name: ``idle`` or ``loaded``.
        series: From :func:`_series`.
    """
    print(f"{name:18s} median {series['median_speedup']:.3f}x  min {min(series['speedups']):.3f}  "
          f"max {max(series['speedups']):.3f}  max/min {series['max_over_min']:.3f}  "
          f"timing median {statistics.median(series['timing_s']):.2f} s  max {max(series['timing_s']):.2f} s  "
          f"noisy {sum(series['noisy'])}/{len(series['noisy'])}")


def _next_to_a_neighbour(measure: Callable[[], _T]) -> _T:
    """``measure()`` while one CPU-burning process runs beside it (this process started it and ends it)."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the neighbour reach full speed before timing
        return measure()
    finally:
        burner.kill()
        burner.wait()


def _idle_and_loaded(models: dict[str, Any], series: Callable[[pathlib.Path, pathlib.Path, int], Any], runs: int,
                     how: str) -> tuple[Any, Any]:
    """``(idle, loaded)``: ``series(candidate, base, runs)`` on an idle host, then beside one CPU-burning neighbour."""
    cand = models["candidate"]
    print(f"candidate: uniform {cand['uniform']} round_to {cand['round_to']} kept {cand['kept']}")
    print(f"idle: {runs} timing processes{how}")
    idle = series(cand["path"], models["base"], runs)
    print(f"loaded (one CPU-burning neighbour): {runs} timing processes{how}")
    loaded = _next_to_a_neighbour(lambda: series(cand["path"], models["base"], runs))
    return idle, loaded


def _measure_compare(runs: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(models, idle, loaded)``: each a summary per mode of :data:`MODES`, timed alternately on the same models."""
    with tempfile.TemporaryDirectory(prefix="autoprune-bench-") as tmp:
        models = _build(pathlib.Path(tmp))
        idle, loaded = _idle_and_loaded(models, _paired_series, runs, f" per mode ({', '.join(MODES)}), alternating")
    return models, idle, loaded


def _compare_report(models: dict[str, Any], idle: dict[str, dict[str, Any]], loaded: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparison's results file: per mode the settings, both series and the figures the issue judges by."""
    from autoprune.latency import host_fingerprint

    measured = {
        mode: {
            "idle_max_over_min": idle[mode]["max_over_min"],
            "loaded_max_over_min": loaded[mode]["max_over_min"],
            "seconds_per_timing": statistics.median(idle[mode]["timing_s"] + loaded[mode]["timing_s"]),
            "median_blocks_run": statistics.median(idle[mode]["blocks_run"] + loaded[mode]["blocks_run"]),
            "stopped_early": sum(idle[mode]["stopped_early"]) + sum(loaded[mode]["stopped_early"]),
        }
        for mode in MODES
    }
    return {
        "benchmark": "latency_early_stop",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "settings": {mode: _settings(mode).as_dict() for mode in MODES},
        "model": {"name": "resnet", "input_shape": [BATCH, 1, SIDE, SIDE], "base_macs": models["base_macs"],
                  "candidate": {k: v for k, v in models["candidate"].items() if k != "path"}},
        "idle": idle,
        "loaded": loaded,
        "measured": measured,
        "note": "seconds_per_timing: one measure_speedup call in a fresh process (sessions, warm-up, every attempt, "
                "lock waits), the timing machinery of one trial on this digits-sized model",
    }


def _print_compare(report: dict[str, Any]) -> None:
    """One line per mode and condition, then the per-mode figures."""
    print()
    for name in ("idle", "loaded"):
        for mode in MODES:
            _print_series(f"{name} {mode}", report[name][mode])
    print()
    for mode, row in report["measured"].items():
        print(f"{mode:10s} idle max/min {row['idle_max_over_min']:.3f}  loaded max/min {row['loaded_max_over_min']:.3f}  "
              f"seconds per timing {row['seconds_per_timing']:.3f}  median blocks {row['median_blocks_run']:g}  "
              f"stopped early {row['stopped_early']}")


def _measure(runs: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """``(models, idle series, loaded series, alignment rows)``, measured on models built in a temp folder."""
    with tempfile.TemporaryDirectory(prefix="autoprune-bench-") as tmp:
        models = _build(pathlib.Path(tmp))
        idle, loaded = _idle_and_loaded(models, _series, runs, "")
        print("alignment: uniform 0.3, all variants interleaved against the base in one process")
        alignment = _alignment(models)
    return models, idle, loaded, alignment


def _print_results(idle: dict[str, Any], loaded: dict[str, Any], alignment: list[dict[str, Any]]) -> None:
    """The two series and the alignment table."""
    print()
    print(f"speedup repeatability ({len(idle['speedups'])} processes each)")
    _print_series("idle", idle)
    _print_series("loaded", loaded)
    print()
    print(f"latency vs channel alignment (uniform {ALIGN_RATIO}, batch {BATCH}, {THREADS} thread)")
    print(f"{'round_to':>8}  {'kept channels':<40} {'MACs x':>7} {'median ms':>10} {'speedup':>8} {'spread':>7}")
    for row in alignment:
        kept = "/".join(str(v) for v in row["kept"].values())
        print(f"{row['round_to']:>8}  {kept[:40]:<40} {row['macs_ratio']:>7.2f} {row['median_ms']:>10.3f} "
              f"{row['speedup']:>8.3f} {row['speedup_spread']:>7.3f}")


def _report(models: dict[str, Any], idle: dict[str, Any], loaded: dict[str, Any], alignment: list[dict[str, Any]]) -> dict[str, Any]:
    """The results file's content: settings, both series, the alignment rows and the targets' verdicts."""
    from autoprune.latency import host_fingerprint

    all_timings = idle["timing_s"] + loaded["timing_s"]
    measured = {
        "idle_max_over_min": idle["max_over_min"],
        "loaded_max_over_min": loaded["max_over_min"],
        "seconds_per_candidate": statistics.median(all_timings),
    }
    return {
        "benchmark": "latency_repeatability",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": host_fingerprint(),
        "settings": _settings().as_dict(),
        "model": {
            "name": "resnet",
            "input_shape": [BATCH, 1, SIDE, SIDE],
            "base_macs": models["base_macs"],
            "candidate": {k: v for k, v in models["candidate"].items() if k != "path"},
        },
        "idle": idle,
        "loaded": loaded,
        "seconds_per_candidate": {
            "median": statistics.median(all_timings),
            "max": max(all_timings),
            "note": "one measure_speedup call in a fresh process: sessions, warm-up, every attempt, lock waits",
        },
        "targets": TARGETS,
        "measured": measured,
        "met": {key: measured[key] <= TARGETS[key] for key in TARGETS},
        "alignment": {"uniform_ratio": ALIGN_RATIO, "rows": alignment},
    }


def _write(report: dict[str, Any], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--compare-early-stop", action="store_true",
                        help="time the candidate with latency.early_stop off and on, alternating, and compare the two")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help=f"results file (default {RESULTS.name}, or {COMPARE_RESULTS.name} with --compare-early-stop)")
    args = parser.parse_args()
    if args.compare_early_stop:
        report = _compare_report(*_measure_compare(args.runs))
        _print_compare(report)
        out = args.out or COMPARE_RESULTS
        _write(report, out)
        print(f"wrote {out}")
        return
    models, idle, loaded, alignment = _measure(args.runs)
    _print_results(idle, loaded, alignment)
    report = _report(models, idle, loaded, alignment)
    out = args.out or RESULTS
    _write(report, out)
    print()
    for key, target in TARGETS.items():
        print(f"{key:24s} {report['measured'][key]:.3f} (target <= {target}) {'met' if report['met'][key] else 'NOT met'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:])
    else:
        main()
