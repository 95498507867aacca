"""The review's probes of issue 28, one by one: every file autoprune reads (study YAML, architecture JSON, ratios,
base.json, baselines, recovery calibration, latency cache) with a hostile value is refused in one line naming the
file, the key and the fix (exit 2 at the CLI), or, where autoprune can rebuild it, set aside and rebuilt; none
hangs, none ends in a traceback."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_STUDY
from conftest import run_cli
from conftest import write_study
from fuzzing import BASELINES
from fuzzing import CALIBRATION
from fuzzing import TIMING
from test_artifacts import _study_with_own_checkpoint

from autoprune.config import load_config
from autoprune.errors import ArtifactError
from autoprune.errors import ConfigError
from autoprune.file_schemas import CachedTiming
from autoprune.latency import LatencyCache
from autoprune.space.baselines import load_baselines
from autoprune.trial.calibration import read_calibration

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"9" * 5000
# A CLI call imports torch and reads one small file; the bound is the test's subprocess timeout.
CLI_TIMEOUT = 120


def _one_clear_line(res: Any, *words: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), res.stderr


# Study YAML numbers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key, allowed", [
    ({"latency": {"repeats": 10**40}}, "latency.repeats", "[10, 100000]"),
    ({"search": {"seed": 10**30}}, "search.seed", "[0, 4294967295]"),
    ({"search": {"seed": -5}}, "search.seed", "[0, 4294967295]"),
    ({"latency": {"input_shape": [1, -16, 16]}}, "latency.input_shape", "[1, 65536]"),
    ({"latency": {"input_shape": [3, 60000, 60000]}}, "latency", "lower latency.batch_size or latency.input_shape"),
    ({"pruning": {"round_to": 10**12}}, "pruning.round_to", "[1, 1024]"),
    ({"base": {"seed": 2**32}}, "base.seed", "[0, 4294967295]"),
    ({"recovery": {"finetune_epochs": 1e300}}, "recovery.finetune_epochs", "[0, 10000]"),
])
def test_config_numbers_out_of_range_name_key_and_range(tmp_path: Path, overrides: dict, key: str, allowed: str) -> None:
    path = write_study(tmp_path, overrides)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert path.name in msg and f"key '{key}'" in msg and allowed in msg and "\n" not in msg, msg


def test_the_largest_allowed_numbers_still_load(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path, {"search": {"seed": 2**32 - 1}, "pruning": {"round_to": 1024},
                                             "latency": {"repeats": 100_000, "input_shape": [1, 16, 16]}}))
    assert cfg.search.seed == 2**32 - 1 and cfg.pruning.round_to == 1024


@pytest.mark.parametrize("command, overrides, key", [
    ("create", {"search": {"seed": -5}}, "search.seed"),
    ("export-base", {"latency": {"input_shape": [1, -16, 16]}}, "latency.input_shape"),
])
def test_cli_refuses_bad_numbers_before_doing_anything(tmp_path: Path, command: str, overrides: dict, key: str) -> None:
    path = write_study(tmp_path, overrides)
    res = (
        run_cli(command, path, "-o", tmp_path / "base.onnx", timeout=CLI_TIMEOUT)
        if command == "export-base"
        else run_cli(command, path, timeout=CLI_TIMEOUT)
    )
    _one_clear_line(res, path.name, f"key '{key}'")
    assert not (tmp_path / f"{TINY_STUDY['name']}.db").exists()  # no study was created


# Architecture JSON and ratios files ----------------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [(DEEP, "nested too deeply"), (b'{"schema_version": ' + HUGE + b"}", "integer of 5000 digits"),
                                            (b'{"groups": "\xff\xfe"}', "not UTF-8")])
def test_apply_refuses_hostile_json(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "arch.json"
    path.write_bytes(content)
    _one_clear_line(run_cli("apply", path, "-o", tmp_path / "out.pt", timeout=CLI_TIMEOUT), path.name, words)


@pytest.mark.parametrize("content, words", [(DEEP, "nested too deeply"), (b'{"stem.0": ' + HUGE + b"}", "integer of 5000 digits"),
                                            (b'{"stem.0": 0.5, "\xff": 0.1}', "not UTF-8"), (b'{"stem.0": "abc"}', "key 'stem.0'")])
def test_prune_refuses_hostile_ratios(tiny_config, tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "ratios.json"
    path.write_bytes(content)
    res = run_cli("prune", tiny_config.source, "--ratios", path, "-o", tmp_path / "out.json", timeout=CLI_TIMEOUT)
    _one_clear_line(res, path.name, words)


# Files autoprune wrote earlier ---------------------------------------------------------------------------------
@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
@pytest.mark.parametrize("content, words", [(b'{"val_metric": "abc"}', "field 'val_metric'"),
                                            (b'{"val_metric": ' + HUGE + b"}", "integer of 5000 digits"),
                                            (b'{"val_metric": 10' + b"0" * 400 + b".5}", "field 'val_metric'")])
def test_train_base_refuses_a_hostile_base_json(study_factory, tiny_study, tmp_path: Path, content: bytes, words: str) -> None:
    path = _study_with_own_checkpoint(study_factory, tiny_study, tmp_path)
    meta = load_config(path).checkpoint_path().with_suffix(".json")
    meta.write_bytes(content)
    _one_clear_line(run_cli("train-base", path, timeout=CLI_TIMEOUT), str(meta), words, "delete it")


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_groups_refuses_baselines_with_a_bound_that_is_no_pair(study_factory, tmp_path: Path) -> None:
    path = study_factory()
    target = load_config(path).artifact_path() / "baselines.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({**BASELINES, "bounds": {"stem.0": [0.1]}}))
    _one_clear_line(run_cli("groups", path, timeout=CLI_TIMEOUT), str(target), "field 'bounds.stem.0", "rerun 'autoprune create'")


@pytest.mark.parametrize("change, field", [({"base_metric": "abc"}, "base_metric"), ({"bounds": {"stem.0": [0.3, 0.1]}}, "bounds"),
                                           ({"max_drop": float("nan")}, "max_drop")])
def test_load_baselines_names_the_field(tmp_path: Path, change: dict, field: str) -> None:
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({**BASELINES, **change}))
    with pytest.raises(ArtifactError, match=rf"baselines\.json: field '{field}"):
        load_baselines(path)
    assert load_baselines(_write(tmp_path / "ok.json", BASELINES)).base_metric == BASELINES["base_metric"]


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change", [{"chosen": {**CALIBRATION["chosen"], "lr": "abc"}}, {"metric_name": None}, {"results": []}])
def test_a_hostile_calibration_is_set_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict) -> None:
    record = {k: v for k, v in {**CALIBRATION, **change}.items() if v is not None}
    path = _write(tmp_path / "recovery-calibration.json", record)
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        assert read_calibration(path) is None  # the caller calibrates again
    aside = list(tmp_path.glob("recovery-calibration.json.invalid-*"))
    assert not path.exists() and len(aside) == 1 and json.loads(aside[0].read_text()) == record  # kept, not deleted
    assert len(caplog.records) == 1 and path.name in caplog.text and aside[0].name in caplog.text, caplog.text
    assert read_calibration(_write(path, CALIBRATION))["chosen"]["lr"] == CALIBRATION["chosen"]["lr"]


@pytest.mark.parametrize("row", [b"{not json", b"\xff\xfe", DEEP, b"[1, 2]", json.dumps({**TIMING, "speedup": "fast"}).encode()])
def test_a_hostile_latency_cache_row_is_a_miss_then_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture, row: bytes) -> None:
    cache = LatencyCache(tmp_path / "latency.sqlite")
    with sqlite3.connect(cache.path) as conn:
        conn.execute("INSERT INTO latency (key, value, created) VALUES ('k', ?, 0)", (row,))
    conn.close()
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        assert cache.get("k", CachedTiming) is None  # the trial times the candidate again
    assert len(caplog.records) == 1 and "latency.sqlite" in caplog.text and "row k" in caplog.text, caplog.text
    cache.put("k", TIMING)
    assert cache.get("k", CachedTiming)["speedup"] == TIMING["speedup"]
