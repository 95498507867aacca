"""Seeded mutations of the files autoprune reads: the two users hand around (study YAML, architecture JSON) and
the ones it writes and reads back (:data:`FILE_KINDS`: base.json, baselines, recovery calibration, latency cache
rows, ``prune --ratios`` files), each with the library reader that checks it.

Shared by the fuzz tests (a few hundred cases per kind) and ``benchmarks/fuzz_files.py`` (thousands).
"""

from __future__ import annotations

import copy
import json
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoprune.base_model import _read_meta
from autoprune.cli._foundation import _read_ratios
from autoprune.errors import ArtifactError
from autoprune.errors import AutopruneError
from autoprune.errors import ConfigError
from autoprune.file_schemas import CachedTiming
from autoprune.latency import LatencyCache
from autoprune.space.baselines import load_baselines
from autoprune.trial.calibration import format_calibration
from autoprune.trial.calibration import read_calibration
from autoprune.trial.calibration import recipe_of

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
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))  # never the shared object itself
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


# Raw JSON no json.dumps writes: integers past Python's int-string limit, nesting past its stack, invalid UTF-8
# inside a string, values JSON does not define.
HOSTILE_TOKENS: list[bytes] = [b"9" * 5000, b"-" + b"1" * 40, b"1" * 31, b"[" * 100_000 + b"]" * 100_000,
                               b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b'"\xff\xfe"', b'"\\ud800"', b"1e999", b"-1e999",
                               b"NaN", b"-Infinity"]
_SLOT = "\x00slot\x00"


def hostile_json(rng: random.Random, valid: dict) -> bytes:
    """``valid`` with one value (at any path) replaced by a :data:`HOSTILE_TOKENS` token."""
    data = copy.deepcopy(valid)
    found = paths(data)
    if not found:
        return rng.choice(HOSTILE_TOKENS)
    path = rng.choice(found)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = _SLOT
    return json.dumps(data).encode().replace(json.dumps(_SLOT).encode(), rng.choice(HOSTILE_TOKENS), 1)


def mutated_json(rng: random.Random, valid: dict) -> bytes:
    kind = rng.random()
    if kind < 0.6:
        return json.dumps(mutate_data(rng, valid, changes=2)).encode()
    if kind < 0.75:
        return hostile_json(rng, valid)
    return mutate_bytes(rng, json.dumps(valid).encode())


# The files autoprune writes and reads back -------------------------------------------------------------------
_RECIPE = {"lr": 0.01, "epochs": 1.0, "steps": 20, "metric": 0.95, "stderr": 0.005, "metric_after_bn": 0.8, "seconds": 3.2}
CALIBRATION = {
    "probe_ratio": 0.3, "results": [_RECIPE, {**_RECIPE, "epochs": 2.0, "steps": 40, "metric": 0.952}], "chosen": _RECIPE,
    "base_metric": 0.96, "max_drop": 0.02, "metric_name": "accuracy", "metric_direction": "maximize",
    "identity": {"base_sha256": "ab" * 32, "criterion": "l2", "round_to": 8, "calibration": {}, "recovery": {}},
}
_GROUPS = ("stem.0", "layer1.0.conv1")
_POINT = {
    "kind": "uniform", "ratio": 0.1, "metric": 0.955, "drop": 0.005, "ratios": dict.fromkeys(_GROUPS, 0.125), "speedup": 1.1,
    "speedup_spread": 0.02, "latency_ms": 1.2, "metric_stderr": 0.005, "drop_stderr": 0.007, "macs": 123456, "params": 2345,
    "channels": dict.fromkeys(_GROUPS, 14), "clamps": [], "feasible": True, "latency_noisy": False, "metric_after_bn": 0.9,
    "recovery": {"steps": 10},
}
BASELINES = {
    "uniform": [_POINT, {**_POINT, "ratio": 0.3, "drop": 0.03, "feasible": False}],
    "global": [{**_POINT, "kind": "global"}],
    "bounds": {"stem.0": [0.1, 0.3], "layer1.0.conv1": [0.0, 0.2]},
    "base_metric": 0.96, "base_metric_stderr": 0.005, "max_drop": 0.02, "margin": 1, "round_to": 8,
    "recovery": {"recipe": {"lr": 0.01, "finetune_epochs": 1.0, "finetune_steps": None},
                 "calibration": {k: v for k, v in CALIBRATION.items() if k != "identity"}},
}
BASE_META = {"sha256": "ab" * 32, "val_metric": 0.95, "val_stderr": 0.004, "trained_seconds": 12.5}
TIMING = {"speedup": 1.5, "speedup_spread": 0.03, "latency_ms": 1.1, "base_latency_ms": 1.65, "noisy": False, "attempts": 1,
          "settings": {"batch_size": 8}}
RATIOS = {"stem.0": 0.25, "layer1.0.conv1": 0.5}


def _read_base_meta(path: Path) -> str:
    meta = _read_meta(path)
    assert meta.val_metric is None or meta.val_metric == meta.val_metric  # finite, never NaN
    return "read"


def _read_baselines(path: Path) -> str:
    baselines = load_baselines(path)
    assert baselines is not None
    assert baselines.table() and isinstance(baselines.notes(), list)  # what 'create' and 'groups' print
    baselines.best("uniform")
    return "read"


def _read_calibration(path: Path) -> str:
    record = read_calibration(path)
    if record is None:
        assert not path.exists() and list(path.parent.glob(path.name + ".invalid-*")), "a refused calibration is set aside"
        return "set aside"
    assert recipe_of(record)["lr"] > 0 and format_calibration(record)  # what the workers apply and the report shows
    return "read"


def _read_cache_row(path: Path) -> str:
    """The bytes of ``path`` stored as one latency cache row (as a torn or foreign write would leave it), read back."""
    cache = LatencyCache(path.with_suffix(".sqlite"))
    with sqlite3.connect(cache.path) as conn:
        conn.execute("INSERT OR REPLACE INTO latency (key, value, created) VALUES ('k', ?, 0)", (path.read_bytes(),))
    conn.close()
    return "missed" if cache.get("k", CachedTiming) is None else "read"


def _read_ratios_file(path: Path) -> str:
    _read_ratios(str(path))
    return "read"


@dataclass(frozen=True)
class FileKind:
    """One kind of file autoprune reads back: a valid example, the library reader, and what refusing it raises
    (``None``: autoprune rebuilds it instead, the reader says "set aside" or "missed")."""

    name: str
    valid: dict[str, Any]
    read: Callable[[Path], str]
    error: type[Exception] | None


FILE_KINDS: dict[str, FileKind] = {k.name: k for k in (
    FileKind("base_json", BASE_META, _read_base_meta, ArtifactError),
    FileKind("baselines_json", BASELINES, _read_baselines, ArtifactError),
    FileKind("recovery_calibration_json", CALIBRATION, _read_calibration, None),
    FileKind("latency_cache_row", TIMING, _read_cache_row, None),
    FileKind("prune_ratios_json", RATIOS, _read_ratios_file, ConfigError),
)}


def write_mutated(folder: Path, kind: FileKind, name: str, rng: random.Random) -> Path:
    """A fresh ``folder`` holding one mutation of ``kind``'s valid file, as ``name``.json (its path)."""
    folder.mkdir()
    path = folder / f"{name}.json"
    path.write_bytes(mutated_json(rng, kind.valid))
    return path


def read_mutated(kind: FileKind, path: Path) -> str:
    """Read ``path`` as ``kind``: "read", "set aside", "missed", or "refused" (``kind.error`` naming the file).
    Anything else raises, for the caller to count as a failure."""
    try:
        return kind.read(path)
    except AutopruneError as exc:
        if kind.error is None or not isinstance(exc, kind.error):
            raise
        if path.name not in str(exc) or "\n" in str(exc):
            raise AssertionError(f"the message does not name the file in one line: {exc}") from None
        return "refused"
