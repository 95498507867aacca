"""Fuzzing the architecture JSON users hand around: a mutated file is applied or refused with one
ArchitectureError (CLI: exit 2, no traceback), never another error.

Mutations of a valid file (seeded, :mod:`fuzzing`, a few hundred in the suite; ``benchmarks/fuzz_files.py`` runs thousands):
values at any JSON path replaced by other types, keys dropped, lists emptied or nested, the text truncated, bytes flipped.
Files that still validate are applied.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from fuzzing import mutated_json
from test_architecture import RATIOS
from test_architecture import _prune_to_arch

from autoprune.errors import ArchitectureError
from autoprune.errors import AutopruneError
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import read_architecture

CASES = 240
APPLIED_AT_MOST = 12


@pytest.fixture
def valid(tiny_config, tiny_base_model) -> dict:
    return _prune_to_arch(tiny_config, tiny_base_model, ratios=RATIOS)[1]


def test_mutated_architecture_json_is_applied_or_refused_with_one_message(valid, tiny_config, tmp_path: Path) -> None:
    rng = random.Random(0)
    refused = applied = 0
    for i in range(CASES):
        path = tmp_path / f"case-{i}.json"
        path.write_bytes(mutated_json(rng, valid))
        try:
            arch = read_architecture(path)
        except ArchitectureError as exc:
            assert path.name in str(exc), exc
            refused += 1
            continue
        if applied < APPLIED_AT_MOST:
            applied += 1
            try:
                apply_architecture(arch, config=tiny_config, where=str(path))
            except AutopruneError:
                pass
    assert refused > CASES // 2 and applied > 0, (refused, applied)


@pytest.mark.parametrize("field, value", [("kept_indices", [[0, 1]] + list(range(2, 17))), ("base_checkpoint_sha256", 12345)])
def test_apply_refuses_wrong_types_with_exit_2(valid, tiny_config, tmp_path: Path, field: str, value: Any) -> None:
    from conftest import run_cli

    arch = copy.deepcopy(valid)
    if field == "kept_indices":
        arch["groups"][2]["kept_indices"] = value[: arch["groups"][2]["kept_channels"]]
    else:
        arch[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(arch))
    res = run_cli("apply", path, "-o", tmp_path / "out.pt", "--config", tiny_config.source)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"'{field}'" in res.stderr or f".{field}'" in res.stderr, res.stderr
