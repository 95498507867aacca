"""Fuzzing the study YAML users hand around: a mutated file loads or gives one ConfigError, never another error.

Mutations of a valid config (seeded, :mod:`fuzzing`, a few hundred in the suite; ``benchmarks/fuzz_files.py``
runs thousands): values replaced by other types, keys dropped or nested deeper, the text truncated, bytes
flipped or inserted (also invalid UTF-8), and documents that are not mappings at all.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import TINY_STUDY
from fuzzing import mutated_yaml

from autoprune.config import StudyConfig
from autoprune.config import load_config
from autoprune.errors import ConfigError

CASES = 300


@pytest.mark.parametrize("chunk", range(3))
def test_mutated_study_yaml_loads_or_gives_one_config_error(tmp_path: Path, chunk: int) -> None:
    rng = random.Random(chunk)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(CASES // 3):
        path = tmp_path / f"case-{i}.yaml"
        path.write_bytes(mutated_yaml(rng, TINY_STUDY))
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            assert path.name in str(exc), exc  # one message, naming the file
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
    res = run_cli("groups", path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "binary.yaml" in res.stderr, res.stderr
