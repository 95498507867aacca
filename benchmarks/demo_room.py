"""Benchmark: does ``autoprune demo`` leave the search room, and what does its search find?  (issue 30, item 1)

Runs the README's main command, ``autoprune demo``, once per (``round_to``, search seed) in a fresh folder
of its own, exactly as a user runs it (a fresh interpreter, the base trained anew), and reads back from its
study:

- **room**: the search space's widths per group (study attr ``search_space``: the widths the sampler may
  choose between the baselines' bounds); the demo has room when at least 4 groups keep at least 3 widths;
- **the pick** as ``confirm`` + ``export`` made it (study attr ``confirmation``: trial, kind, re-timed
  speedup and its spread) beside the best uniform and global baselines' confirmed figures, and whether the
  pick beats both beyond the re-timing spreads (speedup / (1 + spread) above the baseline's
  speedup x (1 + its spread));
- the wall time of the whole demo and the host's load average before and after.

The seed is the demo's ``search.seed`` (sampler), set through ``$AUTOPRUNE_DEMO_OVERRIDES`` (which merges
config sections); ``round_to`` is forced the same way (``auto`` leaves the demo's own setting).  Each run is
written to the results file as soon as it ends, and a rerun skips the runs already there (``--fresh``
measures them again), so the benchmark resumes after an interruption.

Run (writes ``benchmarks/results/demo_room.json``)::

    OMP_NUM_THREADS=1 python benchmarks/demo_room.py --seeds 0 1 2 --round-to auto 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

RESULTS = Path(__file__).resolve().parent / "results" / "demo_room.json"
MIN_GROUPS = 4  # groups that must keep ...
MIN_WIDTHS = 3  # ... at least this many widths in the search space


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds of the demo")
    parser.add_argument("--round-to", nargs="+", default=["auto"], help="'auto' (the demo's own) or channel blocks to force")
    parser.add_argument("--model", default=None, help="the demo's --model (default: the demo's default)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (resumed when it exists)")
    parser.add_argument("--fresh", action="store_true", help="measure every run again")
    return parser.parse_args(argv)


def run_demo(folder: Path, model: str | None, seed: int, round_to: str) -> tuple[float, list[float], list[float], int]:
    """Run ``autoprune demo`` in ``folder``; (wall seconds, load before, load after, exit code)."""
    overrides: dict[str, Any] = {"search": {"seed": seed}}
    if round_to != "auto":
        overrides["pruning"] = {"round_to": int(round_to)}
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", "demo", "--out", str(folder)]
    cmd += ["--model", model] if model else []
    env = dict(os.environ, AUTOPRUNE_DEMO_OVERRIDES=json.dumps(overrides))
    load_before = list(os.getloadavg())
    start = time.perf_counter()
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return time.perf_counter() - start, load_before, list(os.getloadavg()), code


def _confirmed(confirmation: dict[str, Any], number: int | None) -> dict[str, Any] | None:
    fig = (confirmation.get("trials") or {}).get(str(number)) if number is not None else None
    if not fig:
        return None
    return {"trial": number, "kind": fig.get("kind"), "speedup": round(float(fig["speedup"]), 4),
            "speedup_spread": round(float(fig["speedup_spread"]), 4), "selection_drop": fig.get("selection_drop")}


def _best_baselines(study: optuna.Study, confirmation: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Per baseline kind, its confirmed figures (the trial ``confirm`` re-timed for it, twins included)."""
    kinds = {t.number: t.user_attrs.get("kind") for t in study.trials}
    figures = confirmation.get("trials") or {}
    # A twin (same kept channels) shares the figure of the trial timed for it: {twin: timed trial}.
    timed_as = {int(k): int(k) for k in figures} | {int(k): int(v) for k, v in (confirmation.get("twins") or {}).items()}
    best: dict[str, dict[str, Any] | None] = {"uniform": None, "global": None}
    for number, timed in timed_as.items():
        kind, fig = kinds.get(number), figures.get(str(timed)) or {}
        if kind in best and fig.get("selection_feasible") and not fig.get("noisy"):
            cur = best[kind]
            if cur is None or fig["speedup"] > cur["speedup"]:
                best[kind] = _confirmed(confirmation, timed) | {"trial": number, "kind": kind}
    return best


def beats(pick: dict[str, Any] | None, baseline: dict[str, Any] | None) -> bool | None:
    """Whether the pick is faster than ``baseline`` beyond both re-timing spreads (None: nothing to compare)."""
    if pick is None or baseline is None:
        return None
    return pick["speedup"] / (1 + pick["speedup_spread"]) > baseline["speedup"] * (1 + baseline["speedup_spread"])


def read_study(folder: Path) -> dict[str, Any]:
    """Room, pick and baselines of the demo study in ``folder``."""
    (db,) = folder.glob("demo-digits-*.db")
    name = db.stem
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    attrs = study.user_attrs
    widths = {group: space["widths"] for group, space in attrs["search_space"].items()}
    confirmation = attrs.get("confirmation") or {}
    pick = _confirmed(confirmation, confirmation.get("pick"))
    baselines = _best_baselines(study, confirmation)
    roomy = sum(len(w) >= MIN_WIDTHS for w in widths.values())
    return {
        "study": name, "round_to": attrs.get("round_to"), "search_space": widths, "groups_with_room": roomy,
        "room": roomy >= MIN_GROUPS, "pick": pick, "baselines": baselines,
        "beats_uniform": beats(pick, baselines["uniform"]), "beats_global": beats(pick, baselines["global"]),
        "searched_pick": bool(pick) and pick["kind"] == "search",
    }


def load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"benchmark": "demo_room", "host": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "runs": {}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = load(args.out)
    for round_to in args.round_to:
        for seed in args.seeds:
            key = f"round_to={round_to} seed={seed}"
            if key in results["runs"] and not args.fresh:
                print(f"{key}: measured already (--fresh measures it again)")
                continue
            with tempfile.TemporaryDirectory(prefix="demo-room-") as tmp:
                folder = Path(tmp) / "demo"
                wall, before, after, code = run_demo(folder, args.model, seed, round_to)
                if code != 0:
                    print(f"{key}: the demo exited {code}; see {folder.parent}/demo.log", file=sys.stderr)
                    print((folder.parent / "demo.log").read_text()[-3000:], file=sys.stderr)
                    return 1
                run = read_study(folder) | {"wall_s": round(wall, 1), "load_before": before, "load_after": after}
            run["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            results["runs"][key] = run
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print_run(key, run)
    summarize(results)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def _fmt(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "-"
    return f"trial {fig['trial']} ({fig['kind']}) {fig['speedup']:.2f}x ±{100 * fig['speedup_spread']:.1f}%"


def print_run(key: str, run: dict[str, Any]) -> None:
    print(f"{key}: {run['groups_with_room']} groups with >= {MIN_WIDTHS} widths (room: {run['room']}); "
          f"pick {_fmt(run['pick'])}; uniform {_fmt(run['baselines']['uniform'])}; global {_fmt(run['baselines']['global'])}; "
          f"beats both beyond spread: {bool(run['beats_uniform'] and run['beats_global'])}; {run['wall_s']:.0f} s, "
          f"load {run['load_before'][0]:.2f} -> {run['load_after'][0]:.2f}")


def summarize(results: dict[str, Any]) -> None:
    runs = results["runs"].values()
    results["summary"] = {
        "runs": len(runs),
        "with_room": sum(bool(r["room"]) for r in runs),
        "pick_beats_both_baselines_beyond_spread": sum(bool(r["beats_uniform"] and r["beats_global"]) for r in runs),
        "searched_picks": sum(bool(r["searched_pick"]) for r in runs),
        "wall_s": [r["wall_s"] for r in runs],
    }
    print(json.dumps(results["summary"]))


if __name__ == "__main__":
    raise SystemExit(main())
