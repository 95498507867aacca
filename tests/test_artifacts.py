"""Files a stage leaves for the next one: written atomically, and a torn one is named with its fix (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from autoprune.errors import ArtifactError
from autoprune.jsonfile import read_json
from autoprune.jsonfile import write_json


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "a" / "x.json", {"v": 1})
    assert json.loads(path.read_text()) == {"v": 1}

    class Boom(Exception):
        pass

    def crash(*args, **kwargs):
        raise Boom

    monkeypatch.setattr("autoprune.jsonfile.os.replace", crash)
    with pytest.raises(Boom):
        write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


@pytest.mark.parametrize("content", [b'{"v": 1', b"\xff\xfe\x00", b"[1, 2]", b""])
def test_read_names_the_file_and_the_fix(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "torn.json"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=r"torn\.json: .*; delete it"):
        read_json(path, "delete it")


def _study_with_own_checkpoint(study_factory, tiny_study, tmp_path: Path) -> Path:
    checkpoint = tmp_path / "own" / "base.pt"
    checkpoint.parent.mkdir()
    shutil.copyfile(tiny_study.checkpoint, checkpoint)
    shutil.copyfile(Path(tiny_study.checkpoint).with_suffix(".json"), checkpoint.with_suffix(".json"))
    return study_factory({"base": {"checkpoint": str(checkpoint)}})


@pytest.mark.parametrize("torn", ["base.json", "baselines.json"])
def test_a_torn_artifact_is_one_message_with_exit_2(study_factory, tiny_study, tmp_path: Path, torn: str) -> None:
    from autoprune.config import load_config

    path = _study_with_own_checkpoint(study_factory, tiny_study, tmp_path)
    cfg = load_config(path)
    target = cfg.checkpoint_path().with_suffix(".json") if torn == "base.json" else cfg.artifact_path() / "baselines.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"uniform": [{"ratio": 0.3, ')  # a crash mid-write of an older autoprune
    res = run_cli("create", path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert str(target) in res.stderr and "delete it" in res.stderr, res.stderr
