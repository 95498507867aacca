"""Fuzzing the files autoprune writes and reads back (base.json, baselines, recovery calibration, latency cache
rows, ``prune --ratios`` files): a mutated file is read, refused with one message naming it (exit 2 at the CLI),
or, for what autoprune rebuilds (calibration, cache row), set aside or missed; never another error, never a hang.

Mutations (seeded, :mod:`fuzzing`, 200 per kind here, thousands in ``benchmarks/fuzz_files.py``): values at any
JSON path replaced by other types, keys dropped, values nested, raw tokens json.dumps never writes (5000-digit
integers, nesting 100k deep, invalid UTF-8, NaN, 1e999), the text truncated, bytes flipped.  The library readers
run in-process; ``test_file_probes.py`` checks the exit code at the CLI.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from fuzzing import FILE_KINDS
from fuzzing import read_mutated
from fuzzing import write_mutated

CASES = 200
# Reading one small file takes milliseconds; a hang (a loop over a huge count) would take forever.
SECONDS_PER_CASE = 5.0


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_mutated_file_is_read_refused_or_rebuilt(tmp_path: Path, kind: str) -> None:
    spec = FILE_KINDS[kind]
    rng = random.Random(kind)
    outcomes: dict[str, int] = {}
    for i in range(CASES):
        path = write_mutated(tmp_path / f"case-{i}", spec, kind, rng)
        start = time.perf_counter()
        outcome = read_mutated(spec, path)
        assert time.perf_counter() - start < SECONDS_PER_CASE, (i, outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("read", 0) > 0 and sum(v for k, v in outcomes.items() if k != "read") > CASES // 3, outcomes


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_the_valid_example_is_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(FILE_KINDS[kind].valid))
    assert read_mutated(FILE_KINDS[kind], path) == "read"
