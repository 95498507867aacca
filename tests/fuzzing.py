"""Seeded mutations of the two file formats users hand around (study YAML, architecture JSON).

Shared by the fuzz tests (a few hundred cases) and ``benchmarks/fuzz_files.py`` (thousands).
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import yaml

ODD_VALUES: list[Any] = [None, True, -1, 0, 10**12, 1.5, 1e308, float("nan"), float("inf"), "", "x" * 300, [], [1, "a"], [[1, 2]],
                         {}, {"a": {"b": 1}}, "${NOPE}", "../../etc", "0" * 64, 123]


def paths(data: Any, prefix: tuple = (), list_items: int = 6) -> list[tuple]:
    """Every key path of nested dicts (and the first ``list_items`` items of lists)."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, prefix + (k,), list_items)
    elif isinstance(data, list):
        for i, v in enumerate(data[:list_items]):
            out += paths(v, prefix + (i,), list_items)
    return out


def mutate_data(rng: random.Random, data: Any, changes: int = 3) -> Any:
    """Replace values by other types, drop keys, nest values one level deeper or wrap list items."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, changes)):
        found = paths(data)
        if not found:
            break
        path = rng.choice(found)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        kind = rng.random()
        if kind < 0.6:
            parent[path[-1]] = rng.choice(ODD_VALUES)
        elif kind < 0.8 and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = {"nested": parent[path[-1]]} if isinstance(parent, dict) else [parent[path[-1]]]
    return data


def mutate_bytes(rng: random.Random, text: bytes) -> bytes:
    """Truncate, flip or insert bytes (also invalid UTF-8)."""
    kind = rng.random()
    if kind < 0.3:
        return text[: rng.randint(0, len(text))]
    buf = bytearray(text)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, max(0, len(buf) - 1))
        if kind < 0.65 and buf:
            buf[pos] = rng.randint(0, 255)
        else:
            buf[pos:pos] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 4)))
    return bytes(buf)


def mutated_yaml(rng: random.Random, valid: dict) -> bytes:
    if rng.random() < 0.5:
        return yaml.safe_dump(mutate_data(rng, valid), sort_keys=False).encode()
    return mutate_bytes(rng, yaml.safe_dump(valid, sort_keys=False).encode())


def mutated_json(rng: random.Random, valid: dict) -> bytes:
    if rng.random() < 0.7:
        return json.dumps(mutate_data(rng, valid, changes=2)).encode()
    return mutate_bytes(rng, json.dumps(valid).encode())
