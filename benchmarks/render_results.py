"""Render the README's "Results" tables from ``benchmarks/results/*.json``.

The tables replace whatever lies between the ``<!-- results:start -->`` and ``<!-- results:end -->``
markers in README.md; nothing outside the markers is touched.  Numbers are copied from the JSON files as
the benchmarks wrote them (rounded for display only); quick (smoke) results are never rendered.

Run::

    python benchmarks/render_results.py            # rewrite README.md between the markers
    python benchmarks/render_results.py --check    # exit 1 when README.md is not up to date
    python benchmarks/render_results.py --stdout   # print the block only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
START = "<!-- results:start -->"
END = "<!-- results:end -->"
METHODS = ("uniform", "global", "random", "autoprune")


def load_results(folder: pathlib.Path) -> list[tuple[pathlib.Path, dict[str, Any]]]:
    """Every full-run result file in ``folder`` (``*_quick*`` files and ``"quick": true`` results skipped)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if "_quick" in path.stem:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: not readable JSON ({exc})") from None
        if isinstance(data, dict) and not data.get("quick"):
            out.append((path, data))
    return out


# --- formatting helpers -----------------------------------------------------------------------------------


def num(value: Any, fmt: str = "{:.2f}", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return fmt.format(value)


def speed(value: Any) -> str:
    return num(value, "{:.2f}x")


def pct(value: Any) -> str:
    return num(value, "{:.1%}")


def yes(flag: Any) -> str:
    return "met" if flag else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def host_line(data: dict[str, Any]) -> str:
    host = data.get("host") or {}
    date = str(data.get("date") or data.get("created") or "?")[:10]
    return (f"_{host.get('cpu_model', '?')}, {host.get('logical_cores', '?')} cores, ONNX Runtime {host.get('ort_version', '?')}, "
            f"{date}_")


def image(path: pathlib.Path, readme: pathlib.Path, alt: str) -> list[str]:
    if not path.is_file():
        return []
    rel = os.path.relpath(path, readme.parent).replace(os.sep, "/")
    return ["", f"![{alt}]({rel})"]


def source(path: pathlib.Path, readme: pathlib.Path) -> str:
    return os.path.relpath(path, readme.parent).replace(os.sep, "/")


# --- one renderer per benchmark ---------------------------------------------------------------------------


def render_search(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    metric = data.get("metric_name", "metric")
    lines = [
        f"### autoprune against uniform, global and random search: {data.get('config', '?')}",
        "",
        f"Base {metric} {num(data.get('base_metric'), '{:.4f}')}, at most {num(data.get('max_drop'), '{:g}')} drop; "
        f"{data.get('trials_per_search', '?')} trials for random and for autoprune; winner = fastest candidate within the "
        "budget; *re-timed* = the four winners timed again together, interleaved against the base in one process "
        f"(median of {data.get('settings', {}).get('retime_rounds', '?')} rounds). {host_line(data)}",
        "",
    ]
    rows = []
    for m in METHODS:
        w = data.get(m) or {}
        evals = w.get("evaluations")
        swept = evals and w.get("trials") is not None and evals > w["trials"]
        trials = f"{w.get('trials', '-')}" + (f" (+{evals - w['trials']} sweep)" if swept else "")
        channels = "/".join(str(v) for v in (w.get("channels") or {}).values()) or "-"
        if w.get("search_speedup") is None:
            rows.append([m, trials, "none within the budget", "-", "-", "-", "-"])
            continue
        rows.append([m, trials, f"**{speed(w.get('speedup'))}**", speed(w.get("search_speedup")), num(w.get("metric"), "{:.4f}"),
                     num(w.get("drop"), "{:+.4f}"), channels])
    lines += table(["method", "candidates", "re-timed speedup", "search-time speedup", metric, "drop", "kept channels"], rows)
    measured, met, targets = data.get("measured", {}), data.get("met", {}), data.get("targets", {})
    lines += [""]
    hv_auto = (data.get("autoprune") or {}).get("hypervolume") or {}
    hv_rand = (data.get("random") or {}).get("hypervolume") or {}
    counts = sorted(set(hv_auto) | set(hv_rand), key=int)
    if counts:
        lines += table(
            ["hypervolume after", *[f"{c} trials" for c in counts]],
            [[m, *[num(hv.get(c), "{:.4f}") for c in counts]] for m, hv in (("random", hv_rand), ("autoprune", hv_auto))],
        )
        lines += [""]
    ref = data.get("hv_reference")
    auto = data.get("autoprune") or {}
    if auto.get("kind") not in (None, "search"):
        lines.append(f"- autoprune's winner is trial {auto.get('trial')}, the {auto['kind']} baseline it enqueued (clipped to its bounds)")
    lines += [
        f"- autoprune / best of uniform and global (re-timed): {num(measured.get('autoprune_over_best_baseline'), '{:.2f}')} "
        f"(target >= {targets.get('autoprune_over_best_baseline', 1.2)}): {yes(met.get('autoprune_over_best_baseline'))}",
        f"- autoprune / random at equal trials (re-timed): {num(measured.get('autoprune_over_random'), '{:.2f}')} "
        f"(target > {targets.get('autoprune_over_random', 1.0)}): {yes(met.get('autoprune_over_random'))}",
        f"- trials autoprune needed to reach 95% of its best speedup: {num((data.get('autoprune') or {}).get('trials_to_95'), '{}')} "
        f"(random: {num((data.get('random') or {}).get('trials_to_95'), '{}')})",
    ]
    if ref:
        lines.append(f"- hypervolume of (metric, speedup) with reference point ({num(ref[0], '{:.4f}')}, {num(ref[1], '{:g}')}) "
                     "= (base - max drop, no speedup)")
    lines.append(f"- source: [`{source(path, readme)}`]({source(path, readme)})")
    lines += image(path.with_suffix(".png"), readme, f"metric vs speedup, {data.get('config', '')}")
    return lines


def reference_methods(data: dict[str, Any]) -> list[str]:
    """The methods of a reference results file: uniform, global, the aligned sweeps where run, random, autoprune."""
    seeds = data.get("seeds") or [{}]
    aligned = [k for k in seeds[-1] if isinstance(k, str) and k.endswith("-aligned")]
    return [*METHODS[:2], *aligned, *METHODS[2:]]


def render_reference(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """reference_search.py: per seed every method's confirmed pick re-timed together, autoprune's ratios and test drop."""
    s = data.get("summary") or {}
    methods = reference_methods(data)
    aligned = data.get("aligned_round_to")
    lines = [
        f"### Reference benchmark: autoprune against uniform, global and random search ({data.get('config', '?')}, "
        f"search.mode {(data.get('identity') or {}).get('mode', '?')}, per seed)",
        "",
        f"Base {data.get('metric_name', 'metric')} {num(data.get('base_metric'), '{:.4f}')} (test {num(data.get('base_test_metric'), '{:.4f}')}), "
        f"at most {num(data.get('max_drop'), '{:g}')} drop; {data.get('trials_per_search', '?')} trials for random and for autoprune per seed; "
        "each method's pick made as confirm + export make it (its fastest validation-feasible candidates re-timed together with "
        "every other method's, interleaved against the base, median of "
        f"{(data.get('settings') or {}).get('retime_rounds', '?')} rounds, and tested; the fastest that holds the budget on test)"
        + (f"; *-aligned* = the sweeps at round_to {aligned}, this host's channel block" if aligned else "") + f". {host_line(data)}",
        "",
    ]
    rows = []
    for seed in data.get("seeds", []):
        r = seed.get("ratios") or {}
        auto = seed.get("autoprune") or {}
        rows.append([str(seed.get("seed")), *[speed((seed.get(m) or {}).get("speedup")) for m in methods],
                     num(r.get("autoprune_over_best_baseline")),
                     f"{num(r.get('autoprune_over_random'))} (spread {pct(r.get('random_comparison_spread'))})",
                     num(auto.get("test_drop"), "{:+.4f}"),
                     f"{(seed.get('random') or {}).get('finetunes', '-')} / {auto.get('finetunes', '-')}"])
    lines += table(["seed", *methods, "autoprune / best baseline", "autoprune / random", "autoprune test drop",
                    "finetunes random / autoprune"], rows)
    met, targets = data.get("met") or {}, data.get("targets") or {}
    over_base, over_random = s.get("autoprune_over_best_baseline") or {}, s.get("autoprune_over_random") or {}
    lines += [
        "",
        f"- autoprune / best baseline ({', '.join(m for m in methods if m not in ('random', 'autoprune'))}) over "
        f"{over_base.get('n', 0)} seed(s): mean {num(over_base.get('mean'))}, "
        f"stdev {num(over_base.get('stdev'), '{:.3f}')} (target >= {targets.get('autoprune_over_best_baseline', 1.2)} every seed): "
        f"{yes(met.get('autoprune_over_best_baseline'))}",
        f"- autoprune / random: mean {num(over_random.get('mean'))}, stdev {num(over_random.get('stdev'), '{:.3f}')} "
        f"(target: above the re-timing spread every seed): {yes(met.get('autoprune_above_random_beyond_spread'))}",
        f"- autoprune's pick within the budget on the test split every seed: {yes(met.get('autoprune_test_within_budget'))}",
        f"- repeated full evaluations {data.get('repeated_full_evaluations', '-')}, baseline mismatches "
        f"{data.get('baseline_mismatches', '-')} (target 0)",
        f"- source: [`{source(path, readme)}`]({source(path, readme)})",
    ]
    return lines


SUITE_METHODS = ("uniform", "global", "sensitivity", "random", "autoprune")


def suite_means(net: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per method of one suite network: mean re-timed speedup and spread over the seeds with a pick, how many
    seeds had one, and the worst test drop.

    Example:
        >>> net = {"max_drop": 0.01, "seeds": {"0": {"methods": {"uniform": {"speedup": 2.0, "speedup_spread": 0.02, "test_drop": 0.005}}},
        ...        "1": {"methods": {"uniform": {"speedup": 1.8, "speedup_spread": 0.04, "test_drop": 0.007}}}}}
        >>> m = suite_means(net)["uniform"]; (round(m["speedup"], 2), round(m["spread"], 2), m["picks"], m["seeds"], m["worst_test_drop"])
        (1.9, 0.03, 2, 2, 0.007)
    """
    seeds = list((net.get("seeds") or {}).values())
    found: dict[str, dict[str, float]] = {}
    for method in SUITE_METHODS:
        picks = [p["methods"][method] for p in seeds if (p.get("methods") or {}).get(method, {}).get("speedup") is not None]
        if not picks:
            found[method] = {"picks": 0, "seeds": len(seeds)}
            continue
        found[method] = {
            "speedup": sum(e["speedup"] for e in picks) / len(picks),
            "spread": sum(e.get("speedup_spread") or 0.0 for e in picks) / len(picks),
            "picks": len(picks), "seeds": len(seeds),
            "worst_test_drop": max(e.get("test_drop", float("nan")) for e in picks),
        }
    return found


def suite_verdict(auto: dict[str, float], other: dict[str, float]) -> str:
    """autoprune against one other method, both with a pick in every seed: wins / ties / loses, beyond the larger of
    the two mean re-timing spreads (the caller says when autoprune lacks a pick in some seed).

    Example:
        >>> suite_verdict({"speedup": 2.0, "spread": 0.02, "picks": 3, "seeds": 3}, {"speedup": 1.9, "spread": 0.03, "picks": 3, "seeds": 3})
        'wins'
        >>> suite_verdict({"speedup": 2.0, "spread": 0.02, "picks": 3, "seeds": 3}, {"speedup": 2.1, "spread": 0.03, "picks": 2, "seeds": 3})
        'against 2.10x in the 2 seeds where it has a pick'
    """
    if not other["picks"]:
        return "wins (it has no pick in any seed)"
    if other["picks"] < other["seeds"]:  # neither wins nor loses: the seeds differ
        return f"against {speed(other['speedup'])} in the {other['picks']} seeds where it has a pick"
    ratio = auto["speedup"] / other["speedup"]
    noise = max(auto["spread"], other["spread"])
    return "wins" if ratio > 1 + noise else "loses" if ratio < 1 - noise else "ties"


def suite_network_row(name: str, net: dict[str, Any]) -> tuple[list[str], float]:
    """One network's row of the suite's summary and its ratio autoprune / best(uniform, global) (NaN when
    autoprune or both baselines lack a pick in some seed: a mean over the seeds that had one would flatter it)."""
    means = suite_means(net)
    auto = means["autoprune"]
    complete = auto["picks"] == auto["seeds"] > 0
    baselines = [means[m]["speedup"] for m in ("uniform", "global") if means[m]["picks"] == means[m]["seeds"] > 0]
    ratio = auto["speedup"] / max(baselines) if complete and baselines else float("nan")
    if complete:
        versus = "; ".join(f"{m}: {suite_verdict(auto, means[m])}" for m in SUITE_METHODS if m != "autoprune")
    else:
        versus = f"no pick in {auto['seeds'] - auto['picks']} of {auto['seeds']} seeds"
    budget = net.get("max_drop") or 0.0
    over = [f"{m} {num(v['worst_test_drop'], '{:+.4f}')}" for m, v in means.items() if v["picks"] and v["worst_test_drop"] > budget]
    cells = [f"{speed(m.get('speedup'))} ({m['picks']}/{m['seeds']})" for m in means.values()]
    return [name, *cells, num(ratio), versus, "yes" if not over else "no: " + ", ".join(over)], ratio


def suite_summary(data: dict[str, Any]) -> list[str]:
    """The suite's targets per network: mean re-timed speedup per method, autoprune against each, and the ratio
    autoprune / best(uniform, global); then the mean of that ratio over networks (target >= 1.15)."""
    found = [suite_network_row(name, net) for name, net in (data.get("networks") or {}).items()]
    lines = table(["network", *[f"{m} (seeds with a pick)" for m in SUITE_METHODS], "autoprune / best(uniform, global)",
                   "autoprune against each (beyond the re-timing spread)", "every pick within the budget on test"],
                  [row for row, _ in found])
    ratios = [ratio for _, ratio in found]
    mean = sum(ratios) / len(ratios) if ratios and all(r == r for r in ratios) else float("nan")
    missing = "" if mean == mean else " (not computable: autoprune or both baselines lack a pick in some seed of some network)"
    return lines + ["", f"Mean over networks of autoprune / best(uniform, global): {num(mean)}{missing}; target >= 1.15: "
                        f"{yes(mean >= 1.15)}."]


def _suite_row(seed: str, method: str, e: dict[str, Any], load: dict[str, Any]) -> list[str]:
    counts = f"{e.get('trials', '-')} / {e.get('finetunes', '-')} / {e.get('evaluations', '-')}"
    spread = f"{speed(e.get('speedup'))} ±{pct(e.get('speedup_spread'))}" if e.get("speedup") is not None else e.get("note", "-")
    start = (load.get("start") or [None])[0]
    return [seed, method, spread, num(e.get("val_drop"), "{:+.4f}"), num(e.get("selection_drop"), "{:+.4f}"),
            num(e.get("test_drop"), "{:+.4f}"), counts, num(e.get("seconds"), "{:.0f} s"), num(start)]


def render_suite(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """suite.py: per network, seed and method the confirmed pick re-timed, its drops and what the method spent."""
    lines = [
        "### The three-network suite: uniform, global, sensitivity, random and autoprune",
        "",
        "Per network and seed, each method's pick made as confirm + export make it: its fastest validation-feasible "
        "candidates re-timed together with every other method's (interleaved against the base), judged on the selection "
        "split; the fastest that holds; the test split read once, for the pick. Trials / finetunes / evaluations as "
        f"counted in [benchmarks/suite.py](benchmarks/suite.py); load = 1-minute load average at the piece's start. {host_line(data)}",
    ]
    lines += ["", "Mean over seeds (re-timed speedup of each method's pick; in brackets, seeds with a pick):", ""]
    lines += suite_summary(data)
    for name, net in (data.get("networks") or {}).items():
        lines += ["", f"**{name}** (`{net.get('config', '?')}`): base {net.get('metric_name', 'metric')} {num(net.get('base_metric'), '{:.4f}')}, "
                  f"at most {num(net.get('max_drop'), '{:g}')} drop, {(net.get('identity') or {}).get('trials_per_search', '?')} trials "
                  "for random and for autoprune", ""]
        rows = [_suite_row(seed, m, e, piece.get("load_average") or {})
                for seed, piece in (net.get("seeds") or {}).items() for m, e in (piece.get("methods") or {}).items()]
        lines += table(["seed", "method", "re-timed speedup", "val drop", "selection drop", "test drop",
                        "trials / finetunes / evaluations", "seconds", "load"], rows)
    lines += ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


def load_line(data: dict[str, Any]) -> str:
    """The host's load average at the start and end of a run, when the file has it ("" otherwise)."""
    load = data.get("load_average") or {}
    if not load.get("start") or not load.get("end"):
        return ""
    return f"Load average (1 min) {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end. "


def render_overhead(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """trial_overhead.py: per config and run (reuse between trials on / off), mean seconds per stage."""
    stages = ["prune", "bn_recalibration", "evaluate_after_bn", "finetune", "evaluate", "export", "latency", "storage", "other"]
    targets = data.get("targets") or {}
    lines = [
        "### Where a trial's time goes, and what reuse between trials saves",
        "",
        f"Mean seconds per trial by stage ({data.get('settings', {}).get('trials', '?')} trials per config and run, one worker, "
        "SQLite, the same seeded candidates in both runs, screening off); *on*/*off* = reuse between trials (teacher outputs, "
        "unpruned-model scores, base ONNX session); *other* = sampling, suggest, ask/tell; *machinery* = share of the trial "
        f"outside BN recalibration, finetune and evaluation (target <= {pct(targets.get('machinery_share'))}); *reusable* = "
        "share of the trial spent in the work reuse saves (in the off run: all there is to save). "
        f"{load_line(data)}{host_line(data)}",
        "",
    ]
    rows = []
    for cfg in data.get("configs", []):
        for key in ("on", "off"):
            s = ((cfg.get("runs") or {}).get(key) or {}).get("summary") or {}
            st = s.get("stages") or {}
            rows.append([f"{cfg.get('config', '?')} ({key})", num(s.get("wall_mean_s"), "{:.2f}"),
                         *[num((st.get(k) or {}).get("mean_s"), "{:.3f}") for k in stages], pct(s.get("machinery_share")),
                         pct(s.get("reusable_share"))])
    lines += table(["config (reuse)", "trial s", *stages, "machinery", "reusable"], rows)
    lines.append("")
    for cfg in data.get("configs", []):
        met = (data.get("met") or {}).get(cfg.get("config"))
        met = met if isinstance(met, dict) else {}  # files written before the reuse runs hold one flag per config
        same = cfg.get("same_results") or {}
        pairs = cfg.get("paired_ratios") or {}
        paired = (f"; per candidate median {num(pairs.get('median'))} (quartiles {num(pairs.get('q1'))}-{num(pairs.get('q3'))})"
                  f"; ceiling {num(cfg.get('reuse_ceiling'))}") if pairs.get("pairs") else ""
        lines.append(
            f"- {cfg.get('config', '?')}: reuse_speedup {num(cfg.get('reuse_speedup'))} (target >= {targets.get('reuse_speedup', '?')}: "
            f"{yes(met.get('reuse_speedup'))}{paired}), machinery_share {pct(cfg.get('machinery_share'))} ({yes(met.get('machinery_share'))}), "
            f"same results {same.get('same_channels', '-')}/{same.get('trials_compared', '-')} trials "
            f"(metrics within {num(same.get('max_metric_difference'), '{:.1e}')}): {yes(met.get('identical'))}"
        )
    lines += [f"- source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


def render_recovery(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    lines = [
        "### Recovery: never worse than BN recalibration",
        "",
        "Uniform pruning at each ratio, every recipe of the recovery issue's table plus the calibrated one; "
        "*plain* = the finetune evaluated as it ends (stale BN statistics, no judging), *autoprune* = "
        f"`autoprune.trial.recovery.recover`. Validation accuracy. {host_line(data)}",
        "",
    ]
    rows = []
    for res in data.get("results", []):
        cal = (res.get("calibration") or {}).get("chosen") or {}
        got = res.get("rows", [])
        worst_plain = min((r["plain_finetune"] - r["bn_only"] for r in got), default=None)
        worst_ours = min((r["recovery"] - r["bn_only"] for r in got), default=None)
        held = sum(not r["below_bn_beyond_2se"] for r in got)
        rows.append([res.get("name", "?"), num(res.get("base_metric"), "{:.4f}"),
                     f"lr {cal.get('lr', '?')}, {cal.get('epochs', '?')} epochs", num(worst_plain, "{:+.4f}"),
                     num(worst_ours, "{:+.4f}"), f"{held}/{len(got)}"])
    lines += table(["model", "base", "calibrated recipe", "worst plain - BN-only", "worst autoprune - BN-only",
                    "autoprune >= BN-only - 2 SE"], rows)
    lines += ["", f"- every row: [`benchmarks/results/recovery.md`](benchmarks/results/recovery.md); "
                  f"source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


def render_scaling(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    settings = data.get("settings", {})
    lines = [
        "### Study storages under concurrent workers",
        "",
        f"Trivial objective ({num(settings.get('objective_sleep_s'), '{:.3g}', '?')} s sleep, "
        f"{settings.get('params', '?')} float parameters, 2 objectives, {settings.get('sampler', '?')} sampler), "
        f"{settings.get('enqueued', '?')} fixed trials enqueued first; errors = exceptions + FAIL/RUNNING trials; "
        f"duplicates = extra runs of an enqueued trial; storage p95 = per call on the study storage. {host_line(data)}",
        "",
    ]
    rows_in = data.get("rows", [])
    one = {r["backend"]: r.get("trials_per_s") for r in rows_in if r.get("workers") == 1 and not r.get("skipped")}
    rows = []
    for r in rows_in:
        if r.get("skipped"):
            rows.append([r["backend"], str(r["workers"]), "skipped", "-", "-", "-", "-", "-"])
            continue
        rel = r["trials_per_s"] / one[r["backend"]] if one.get(r["backend"]) and r.get("trials_per_s") else None
        rows.append([r["backend"], str(r["workers"]), num(r.get("trials_per_s")), num(rel, "{:.1f}x"), str(r.get("errors", "-")),
                     str(r.get("duplicates", 0) + r.get("duplicate_completed", 0)),
                     num((r.get("storage_call_s") or {}).get("p95"), "{:.4f}"), num((r.get("storage_per_trial_s") or {}).get("p95"), "{:.3f}")])
    lines += table(["storage", "workers", "trials/s", "vs 1 worker", "errors", "duplicates", "p95 call s", "p95 storage s / trial"], rows)
    measured, met = data.get("measured", {}), data.get("met", {})
    lines += [
        "",
        f"- PostgreSQL {measured.get('postgresql_max_workers', '?')} workers over 1: {num(measured.get('postgresql_scaling'), '{:.1f}x')} "
        f"(target >= 10x with 16 workers): {yes(met.get('postgresql_scaling'))}; errors {measured.get('postgresql_errors', '?')}, "
        f"duplicates {measured.get('postgresql_duplicates', '?')} (target 0): "
        f"{yes(met.get('postgresql_errors') and met.get('postgresql_duplicates'))}",
        f"- source: [`{source(path, readme)}`]({source(path, readme)})",
    ]
    lines += image(path.with_suffix(".png"), readme, "trials/s vs workers")
    return lines


def render_latency(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    measured, targets, met = data.get("measured", {}), data.get("targets", {}), data.get("met", {})
    labels = {
        "idle_max_over_min": "speedup max/min over 10 processes, idle host",
        "loaded_max_over_min": "speedup max/min over 10 processes, one CPU-burning neighbour",
        "seconds_per_candidate": "seconds to time one candidate",
    }
    rows = [[labels.get(k, k), num(measured.get(k), "{:.3f}"), f"<= {targets[k]}", yes(met.get(k))] for k in targets]
    lines = ["### Latency repeatability", "", host_line(data), ""]
    lines += table(["measure", "value", "target", ""], rows)
    align = (data.get("alignment") or {}).get("rows") or []
    if align:
        lines += ["", f"Uniform {data['alignment'].get('uniform_ratio')} pruning with kept channels rounded to:", ""]
        lines += table(["round_to", "MACs reduction", "speedup"],
                       [[str(r["round_to"]), num(r.get("macs_ratio"), "{:.2f}x"), speed(r.get("speedup"))] for r in align])
    lines += ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


def render_early_stop(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """``latency_repeatability.py --compare-early-stop``: both timing modes side by side."""
    measured = data.get("measured") or {}
    rows = [[mode, num(m.get("idle_max_over_min"), "{:.3f}"), num(m.get("loaded_max_over_min"), "{:.3f}"),
             num(m.get("seconds_per_timing"), "{:.2f} s"), num(m.get("median_blocks_run"), "{:.0f}"), str(m.get("stopped_early"))]
            for mode, m in measured.items()]
    lines = ["### Latency: the full timing against the opt-in early stop", "", host_line(data), ""]
    lines += table(["mode", "max/min, idle", "max/min, busy neighbour", "seconds per timing", "median blocks", "stopped early"], rows)
    return lines + ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]


def _reach_text(target: dict[str, Any]) -> str:
    reach = "never" if target["reach_fraction"] is None else f"at {target['reach_fraction']:.2f}"
    return f"{reach}{', better at the end' if target['better_at_end'] else ''}: {yes(target['met'])}"


def _anytime_row(seed: str, arm: str, e: dict[str, Any]) -> list[str]:
    p, inc = e.get("pick") or {}, e.get("incumbent") or {}
    target = e.get("target")
    return [seed, arm, str(e["trials"]), str(e["pruned"]), str(e.get("feasible", "-")), str(e["finetune_steps"]),
            f"{speed(inc.get('speedup'))} ({num(inc.get('drop'), '{:+.4f}')})" if inc else "none",
            f"{speed(p.get('speedup'))} ±{pct(p.get('speedup_spread'))}" if p else "no pick",
            num(p.get("selection_drop"), "{:+.4f}"), num(p.get("test_drop"), "{:+.4f}"),
            "(the reference)" if target is None else _reach_text(target["search"]),
            "(the reference)" if target is None else _reach_text(target)]


def render_anytime(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """``anytime.py``: per seed and arm the trials, pruned trials, finetune steps, the incumbent, the pick and the targets."""
    budget, reach = data.get("budget_seconds"), data.get("reach", 0.6)
    lines = [f"### Anytime curve: Optuna pruners against none ({data.get('config')}, {num(budget, '{:g}')} s of search per arm)", "",
             host_line(data), "",
             f"Target: a pruner arm reaches the `none` arm's final pick (within the re-timing spread) in at most {reach:g} of the "
             "budget, or ends with a better one. *Incumbent*: the fastest trial within the budget on validation with confirm's "
             "margin, by its search-time speedup (validation drop in brackets); *pick*: what `confirm` picks from the trials ended "
             "by then, re-timed (selection and test drops). Both targets are judged: on the incumbents' curves and on the picks'.", ""]
    rows = [_anytime_row(seed, arm, e) for seed, piece in data.get("seeds", {}).items() for arm, e in piece["arms"].items()]
    lines += table(["seed", "arm", "trials", "pruned", "feasible", "finetune steps", "incumbent", "pick", "sel drop", "test drop",
                    "target (incumbent)", "target (pick)"], rows)
    lines += image(path.with_suffix(".png"), readme, "confirmed pick and search incumbent against search seconds per arm")
    return lines + ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]


def render_other(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    config = data.get("config")
    name = f" ({config['name']})" if isinstance(config, dict) and config.get("name") else ""  # e.g. reference_space per study
    lines = [f"### {data.get('benchmark', path.stem)}{name}", ""]
    measured, met = data.get("measured") or {}, data.get("met") or {}
    if measured:
        lines += table(["measure", "value", ""], [[k, json.dumps(v) if not isinstance(v, float) else f"{v:.3f}", yes(met.get(k)) if k in met else ""]
                                                  for k, v in measured.items()])
        lines.append("")
    lines.append(f"- source: [`{source(path, readme)}`]({source(path, readme)})")
    return lines


def _demo_pick(fig: dict[str, Any] | None) -> str:
    return "-" if not fig else f"{fig['kind']} {fig['speedup']:.2f}x ±{100 * fig['speedup_spread']:.1f}%"


def render_demo_room(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    runs = data.get("runs") or {}
    rows = [[key, str(r["groups_with_room"]), _demo_pick(r.get("pick")), _demo_pick((r.get("baselines") or {}).get("uniform")),
             _demo_pick((r.get("baselines") or {}).get("global")), yes(bool(r.get("beats_uniform") and r.get("beats_global"))),
             f"{r['wall_s']:.0f} s", f"{r['load_before'][0]:.2f}"] for key, r in runs.items()]
    study = next(iter(runs.values()), {}).get("study", path.stem)
    lines = [f"### Demo room ({study})", "", f"host: {data.get('host', '?')}", ""]
    lines += table(["run", "groups with >= 3 widths", "pick", "uniform", "global", "beats both", "wall", "load"], rows)
    lines += ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


def _proxy_row(r: dict[str, Any], note: str = "") -> list[str]:
    final = speed(r.get("final_speedup")) + (" (did not settle)" if r.get("final_noisy") else "")
    return [str(r.get("key")) + note, str(r.get("kind")), speed(r.get("speedup")), final, num(r.get("proxy_drop"), "{:+.4f}"),
            num(r.get("final_drop"), "{:+.4f}"), num(r.get("final_test_drop"), "{:+.4f}")]


def _proxy_figures(label: str, fig: dict[str, Any], e2e_key: str) -> str:
    lo, hi = fig.get("spearman_ci") or [None, None]
    e2e = fig.get(e2e_key) or {}
    return (f"{label}: Spearman **{num(fig.get('spearman'))}** [{num(lo)}, {num(hi)}], feasibility changes "
            f"**{len(fig.get('feasibility_changes') or [])}**, end to end **{num(e2e.get('ratio'))}** ({e2e.get('pick')} / {e2e.get('baseline')})")


def render_proxy_fidelity(path: pathlib.Path, data: dict[str, Any], readme: pathlib.Path) -> list[str]:
    """proxy_fidelity.py: does the search's short recovery order candidates as the final recovery does?"""
    rows, beyond = data.get("candidates") or [], data.get("beyond_window") or []
    loads = [x for run in data.get("runs") or [] for x in (run["load_average"]["start"][0], run["load_average"]["end"][0])]
    proxy = data.get("proxy_end_to_end") or {}
    lines = [
        "### Does the search's short recovery rank candidates like the final recovery?", "", host_line(data), "",
        f"Reference study; each candidate finalized with the same recipe ({(data.get('recipe') or {}).get('summary', '?')}); "
        f"the search's proxy: {data.get('proxy_recipe', '?')}; budget {data.get('max_drop')} on the validation drop. "
        + ("**Partial run.** " if data.get("partial") else "")
        + (f"Load average (1 min) {min(loads):.2f}-{max(loads):.2f} over {len(data['runs'])} runs, {data.get('wall_s', 0) / 60:.0f} min in all."
           if loads else ""), "",
        "- " + _proxy_figures(f"{len(rows)} candidates chosen by the rule (proxy drop <= 2 x budget), proxy drop against final drop",
                              data, "end_to_end") + f"; by the proxy alone the end to end was {num(proxy.get('ratio'))}",
    ]
    if data.get("all"):
        label = f"with the {len(beyond)} candidates past the window ({len(rows) + len(beyond)})"
        lines.append("- " + _proxy_figures(label, data["all"], "end_to_end"))
    remedy = data.get("remedy_report")
    if remedy:
        lines.append("- " + _proxy_figures(f"a longer proxy ({remedy['finetune_epochs']:g} epoch of the trial recipe, {remedy['candidates']} "
                                           "candidates), its drop against the final drop", remedy, "proxy_end_to_end") + " (by its own figures)")
    lines += [""] + table(["candidate", "kind", "search speedup", "final speedup", "proxy drop", "final drop", "final test drop"],
                          [_proxy_row(r) for r in rows] + [_proxy_row(r, " (past the window)") for r in beyond])
    lines += ["", f"- source: [`{source(path, readme)}`]({source(path, readme)})"]
    return lines


RENDERERS: dict[str, Callable[[pathlib.Path, dict[str, Any], pathlib.Path], list[str]]] = {
    "suite": render_suite,
    "reference_search": render_reference,
    "search_vs_baselines": render_search,
    "trial_overhead": render_overhead,
    "recovery": render_recovery,
    "storage_scaling": render_scaling,
    "latency_repeatability": render_latency,
    "latency_early_stop": render_early_stop,
    "demo_room": render_demo_room,
    "proxy_fidelity": render_proxy_fidelity,
    "anytime": render_anytime,
}
ORDER = (
    "suite",
    "anytime",
    "reference_search",
    "proxy_fidelity",
    "search_vs_baselines",
    "recovery",
    "trial_overhead",
    "storage_scaling",
    "latency_repeatability",
    "latency_early_stop",
)


def render(results: list[tuple[pathlib.Path, dict[str, Any]]], readme: pathlib.Path) -> str:
    """The markdown that goes between the markers (without the markers)."""
    def rank(item: tuple[pathlib.Path, dict[str, Any]]) -> tuple[int, str]:
        name = item[1].get("benchmark", item[0].stem)
        return (ORDER.index(name) if name in ORDER else len(ORDER), item[0].name)

    lines = ["", "_Rendered by `python benchmarks/render_results.py` from `benchmarks/results/*.json`; "
                 "see [benchmarks/README.md](benchmarks/README.md) for what each benchmark measures and how to rerun it._", ""]
    if not results:
        lines += ["No benchmark results yet.", ""]
    for path, data in sorted(results, key=rank):
        renderer = RENDERERS.get(data.get("benchmark", ""), render_other)
        lines += renderer(path, data, readme)
        lines.append("")
    return "\n".join(lines)


def replace_block(text: str, block: str, where: str = "README.md") -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start or text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{where}: needs exactly one {START} followed by one {END}; add them where the Results tables go")
    return text[: start + len(START)] + "\n" + block.strip("\n") + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--results", default=str(HERE / "results"))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's block is not what the JSON files give")
    mode.add_argument("--stdout", action="store_true", help="print the block instead of writing the README")
    args = parser.parse_args(argv)
    readme = pathlib.Path(args.readme).resolve()
    block = render(load_results(pathlib.Path(args.results)), readme)
    if args.stdout:
        print(block)
        return 0
    text = readme.read_text(encoding="utf-8")
    try:
        new = replace_block(text, block, str(readme))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{readme}: the results block is out of date; run python benchmarks/render_results.py", file=sys.stderr)
            return 1
        print(f"{readme}: results block up to date")
        return 0
    if new != text:
        readme.write_text(new, encoding="utf-8")
        print(f"updated the results block of {readme}")
    else:
        print(f"{readme}: results block already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
