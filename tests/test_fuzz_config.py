"""Fuzzing the study YAML users hand around: a mutated file loads or gives one ConfigError, never another error.

Mutations of a valid config (seeded, a few hundred in the suite): values replaced by other types, keys dropped
or nested deeper, the text truncated, bytes flipped or inserted (also invalid UTF-8), and documents that are
not mappings at all.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_STUDY

from autoprune.config import StudyConfig
from autoprune.config import load_config
from autoprune.errors import ConfigError

CASES = 300
ODD_VALUES: list[Any] = [None, True, -1, 0, 10**12, 1e308, float("nan"), "", "x" * 300, [], [1, "a"], {}, {"a": {"b": 1}}, "${NOPE}", "../../etc"]


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    return out


def _set(data: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _mutate_data(rng: random.Random) -> dict:
    data = copy.deepcopy(TINY_STUDY)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(data))
        kind = rng.random()
        try:
            if kind < 0.6:
                _set(data, path, rng.choice(ODD_VALUES))
            elif kind < 0.8:
                parent = data
                for key in path[:-1]:
                    parent = parent[key]
                parent.pop(path[-1], None)
            else:
                parent = data
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = {"nested": parent.get(path[-1])}
        except (KeyError, TypeError):
            continue
    return data


def _mutate_bytes(rng: random.Random, text: bytes) -> bytes:
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


@pytest.mark.parametrize("chunk", range(3))
def test_mutated_study_yaml_loads_or_gives_one_config_error(tmp_path: Path, chunk: int) -> None:
    rng = random.Random(chunk)
    valid = yaml.safe_dump(TINY_STUDY, sort_keys=False).encode()
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(CASES // 3):
        path = tmp_path / f"case-{i}.yaml"
        if rng.random() < 0.5:
            path.write_text(yaml.safe_dump(_mutate_data(rng), sort_keys=False))
        else:
            path.write_bytes(_mutate_bytes(rng, valid))
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            text = str(exc)
            assert "\n" not in text.strip() or str(path) in text, text  # one message, naming the file
            assert str(path) in text or path.name in text, text
            outcomes["refused"] += 1
        else:
            assert isinstance(cfg, StudyConfig)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes  # the mutations reach both outcomes


def test_documents_that_are_no_mapping(tmp_path: Path) -> None:
    for i, text in enumerate([b"", b"- a\n- b\n", b"42", b"\x00\x01\x02", b"\xff\xfe\xfd", b"[" * 5000, b"a: &x [*x]"]):
        path = tmp_path / f"doc-{i}.yaml"
        path.write_bytes(text)
        with pytest.raises(ConfigError, match=path.name):
            load_config(path)


def test_a_binary_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    from conftest import run_cli

    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    res = run_cli("groups", path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "binary.yaml" in res.stderr, res.stderr
