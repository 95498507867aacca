"""Fuzz every file autoprune reads, at a scale the test suite does not afford.

Seeded mutations (``tests/fuzzing.py``, the same ones the suite runs a few hundred of) of a valid study YAML,
of a valid architecture JSON (the tiny test study's, base trained in a temp folder) and of each file autoprune
writes and reads back (``fuzzing.FILE_KINDS``: base.json, baselines, recovery calibration, latency cache rows,
``prune --ratios`` files): every mutated YAML must load or raise one ``ConfigError`` naming the file; every
mutated architecture JSON must validate or raise one ``ArchitectureError`` naming the file, and the first
``--apply`` JSONs that validate are applied, which may only succeed or raise an ``AutopruneError``; every other
file must be read, refused with its kind's error naming the file in one line, or (calibration, cache row) set
aside or missed, each within ``--case-seconds``.  Anything else is a failure, printed with its case number and
the exception.

    python benchmarks/fuzz_files.py [--cases 3000] [--seed 0]

Writes ``benchmarks/results/fuzz_files.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import pathlib
import random
import sys
import tempfile
import time
import traceback
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY_STUDY  # noqa: E402
from conftest import write_study  # noqa: E402
from fuzzing import FILE_KINDS  # noqa: E402
from fuzzing import mutated_json  # noqa: E402
from fuzzing import mutated_yaml  # noqa: E402
from fuzzing import read_mutated  # noqa: E402
from fuzzing import write_mutated  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz_files.json"


def fuzz_yaml(folder: pathlib.Path, rng: random.Random, cases: int) -> dict[str, Any]:
    from autoprune.config import load_config
    from autoprune.errors import ConfigError

    counts: dict[str, Any] = {"cases": cases, "loaded": 0, "refused": 0, "failures": []}
    for i in range(cases):
        path = folder / f"yaml-{i}.yaml"
        path.write_bytes(mutated_yaml(rng, TINY_STUDY))
        try:
            load_config(path)
            counts["loaded"] += 1
        except ConfigError as exc:
            counts["refused"] += 1
            if path.name not in str(exc):
                counts["failures"].append({"case": i, "error": f"message does not name the file: {exc}"})
        except Exception as exc:  # noqa: BLE001 - what the benchmark looks for
            counts["failures"].append({"case": i, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)})
    return counts


def valid_architecture(folder: pathlib.Path) -> tuple[dict[str, Any], Any]:
    """The tiny study's architecture at a mixed ratio vector (base trained in ``folder``) and its config."""
    from autoprune.base_model import load_base
    from autoprune.config import load_config
    from autoprune.selection.architecture import build_architecture
    from autoprune.tasks import build_task
    from autoprune.trial.pruning_setup import make_pruner
    from autoprune.trial.pruning_setup import resolve_round_to

    config = load_config(write_study(folder))
    task = build_task(config)
    with task.forbid_split("test"):
        base, info = load_base(config, task)
    pruner = make_pruner(config, task)
    ratios = {g.name: 0.25 * (i % 3) for i, g in enumerate(pruner.groups(base)) if g.tied_to is None}
    result = pruner.prune(copy.deepcopy(base), ratios=ratios)
    return build_architecture(config, task, result, info.sha256, resolve_round_to(config)), config


def fuzz_json(folder: pathlib.Path, rng: random.Random, cases: int, apply_at_most: int) -> dict[str, Any]:
    from autoprune.errors import ArchitectureError
    from autoprune.errors import AutopruneError
    from autoprune.selection.architecture import apply_architecture
    from autoprune.selection.architecture import read_architecture

    valid, config = valid_architecture(folder)
    counts: dict[str, Any] = {"cases": cases, "valid": 0, "refused": 0, "applied": 0, "apply_refused": 0, "failures": []}
    for i in range(cases):
        path = folder / f"json-{i}.json"
        path.write_bytes(mutated_json(rng, valid))
        try:
            arch = read_architecture(path)
        except ArchitectureError as exc:
            counts["refused"] += 1
            if path.name not in str(exc):
                counts["failures"].append({"case": i, "error": f"message does not name the file: {exc}"})
            continue
        except Exception as exc:  # noqa: BLE001
            counts["failures"].append({"case": i, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)})
            continue
        counts["valid"] += 1
        if counts["applied"] + counts["apply_refused"] >= apply_at_most:
            continue
        try:
            apply_architecture(arch, config=config, where=str(path))
            counts["applied"] += 1
        except AutopruneError:
            counts["apply_refused"] += 1
        except Exception as exc:  # noqa: BLE001
            counts["failures"].append({"case": i, "error": f"apply: {type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)})
    return counts


def fuzz_file_kind(folder: pathlib.Path, name: str, rng: random.Random, cases: int, case_seconds: float) -> dict[str, Any]:
    """Mutations of one kind of file autoprune reads back, read by its library reader."""
    kind = FILE_KINDS[name]
    counts: dict[str, Any] = {"cases": cases, "read": 0, "refused": 0, "set aside": 0, "missed": 0, "slowest_s": 0.0, "failures": []}
    for i in range(cases):
        path = write_mutated(folder / f"{name}-{i}", kind, name, rng)
        start = time.perf_counter()
        try:
            counts[read_mutated(kind, path)] += 1
        except Exception as exc:  # noqa: BLE001 - what the benchmark looks for
            counts["failures"].append({"case": i, "error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc(limit=3)})
        seconds = time.perf_counter() - start
        counts["slowest_s"] = round(max(counts["slowest_s"], seconds), 4)
        if seconds > case_seconds:
            counts["failures"].append({"case": i, "error": f"took {seconds:.1f}s (bound {case_seconds}s)"})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="mutations per format (default: %(default)s)")
    parser.add_argument("--apply", type=int, default=100, help="validating JSONs to apply at most (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case-seconds", type=float, default=5.0, help="bound on reading one file (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.getLogger("autoprune").setLevel(logging.ERROR)  # one "set aside" warning per rebuilt file is expected
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoprune-fuzz-") as tmp:
        folder = pathlib.Path(tmp)
        yaml_counts = fuzz_yaml(folder, random.Random(args.seed), args.cases)
        json_counts = fuzz_json(folder, random.Random(args.seed + 1), args.cases, args.apply)
        kinds = {name: fuzz_file_kind(folder, name, random.Random(f"{args.seed}-{name}"), args.cases, args.case_seconds)
                 for name in sorted(FILE_KINDS)}
    everything = {"study YAML": yaml_counts, "architecture JSON": json_counts, **kinds}
    failures = sum(len(counts["failures"]) for counts in everything.values())
    report = {
        "benchmark": "fuzz_files",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"cases_per_format": args.cases, "apply_at_most": args.apply, "seed": args.seed, "case_seconds": args.case_seconds},
        "study_yaml": yaml_counts,
        "architecture_json": json_counts,
        "files_read_back": kinds,
        "measured": {"failures": failures},
        "met": {"failures": failures == 0},
        "wall_s": round(time.perf_counter() - start, 1),
    }
    for name, counts in everything.items():
        summary = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "failures")
        print(f"{name}: {summary}, failures {len(counts['failures'])}")
        for failure in counts["failures"][:5]:
            print(f"  case {failure['case']}: {failure['error']}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({report['wall_s']:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
