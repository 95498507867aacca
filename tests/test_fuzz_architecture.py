"""Fuzzing the architecture JSON users hand around: a mutated file is applied or refused with one
ArchitectureError (CLI: exit 2, no traceback), never another error.

Mutations of a valid file (seeded, a few hundred in the suite): values at any JSON path replaced by other types,
keys dropped, lists emptied or nested, the text truncated, bytes flipped.  Files that still validate are applied.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from test_architecture import RATIOS
from test_architecture import _prune_to_arch

from autoprune.architecture import apply_architecture
from autoprune.architecture import read_architecture
from autoprune.errors import ArchitectureError
from autoprune.errors import AutopruneError

CASES = 240
APPLIED_AT_MOST = 12
ODD: list[Any] = [None, True, -1, 0, 2**40, 1.5, float("inf"), "", "x" * 200, [], [[1, 2]], {}, {"a": 1}, "0" * 64, 123]


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data[:6]):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(rng: random.Random, arch: dict) -> dict:
    data = copy.deepcopy(arch)
    for _ in range(rng.randint(1, 2)):
        path = rng.choice(_paths(data))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        kind = rng.random()
        if kind < 0.7:
            parent[path[-1]] = rng.choice(ODD)
        elif isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = [parent[path[-1]]]
    return data


@pytest.fixture
def valid(tiny_config, tiny_base_model) -> dict:
    return _prune_to_arch(tiny_config, tiny_base_model, ratios=RATIOS)[1]


def test_mutated_architecture_json_is_applied_or_refused_with_one_message(valid, tiny_config, tmp_path: Path) -> None:
    rng = random.Random(0)
    text = json.dumps(valid).encode()
    refused = applied = 0
    for i in range(CASES):
        path = tmp_path / f"case-{i}.json"
        if rng.random() < 0.7:
            path.write_text(json.dumps(_mutate(rng, valid)))
        else:
            buf = bytearray(text[: rng.randint(1, len(text))] if rng.random() < 0.5 else text)
            for _ in range(rng.randint(1, 6)):
                buf[rng.randrange(len(buf))] = rng.randint(0, 255)
            path.write_bytes(bytes(buf))
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
    res = run_cli("apply", path, "-o", tmp_path / "out.pt", "--config", tiny_config.source, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"'{field}'" in res.stderr or f".{field}'" in res.stderr, res.stderr
