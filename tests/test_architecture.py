"""The architecture JSON: prune -> JSON -> apply gives the same model; bad JSON is refused naming the field.

Every architecture written here is also validated against the published JSON Schema with ``jsonschema``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from conftest import CodeOnUnpickle
from torch import nn

from autoprune.base_model import file_sha256
from autoprune.base_model import load_state_dict
from autoprune.base_model import load_weights
from autoprune.config import load_config
from autoprune.errors import ArchitectureError
from autoprune.errors import TaskError
from autoprune.selection.architecture import SCHEMA_PATH
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import build_architecture
from autoprune.selection.architecture import read_architecture
from autoprune.selection.architecture import save_weights
from autoprune.selection.architecture import validate_architecture
from autoprune.selection.architecture import write_architecture
from autoprune.tasks import build_task
from autoprune.trial.pruning_setup import make_pruner
from autoprune.trial.pruning_setup import resolve_round_to

RATIOS = {"stem.0": 0.5, "layers.1.conv1": 0.5, "layers.1.conv2": 0.25, "layers.2.conv1": 0.75}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def _schema_errors(schema: dict[str, Any], arch: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(arch)]


def _prune_to_arch(config, base: nn.Module, **plan: Any):
    task = build_task(config)
    result = make_pruner(config, task).prune(copy.deepcopy(base), **plan)
    sha = file_sha256(config.checkpoint_path())
    arch = build_architecture(config, task, result, sha, resolve_round_to(config))
    return result, arch


@pytest.fixture
def pruned(tiny_config, tiny_base_model):
    """(prune result, architecture dict) of the tiny study at RATIOS."""
    return _prune_to_arch(tiny_config, tiny_base_model, ratios=RATIOS)


def test_published_schema_is_packaged_and_strict_where_it_matters(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == [
        "schema_version", "task", "model", "base_checkpoint_sha256", "input_shape",
        "criterion", "groups", "metrics", "latency", "provenance",
    ]
    assert schema["$defs"]["group"]["required"] == ["name", "original_channels", "kept_channels", "ratio", "kept_indices"]
    from autoprune.config import CRITERIA

    assert schema["properties"]["criterion"]["enum"] == list(CRITERIA)


def test_round_trip_resnet(tiny_config, pruned, schema, tmp_path: Path) -> None:
    result, arch = pruned
    path = write_architecture(arch, tmp_path / "arch.json")
    assert _schema_errors(schema, json.loads(path.read_text())) == []
    loaded = read_architecture(path)
    assert loaded == json.loads(json.dumps(arch))

    # config=None: the JSON's provenance.config names the study file.
    applied = apply_architecture(loaded, where=str(path))
    assert applied.config.source == tiny_config.source and not applied.weights_loaded
    assert applied.result.kept == result.kept
    assert applied.result.kept_indices == result.kept_indices
    assert {g["name"]: g["kept_channels"] for g in loaded["groups"]} == result.kept
    assert (applied.result.macs, applied.result.params) == (result.macs, result.params)
    a, b = result.model.eval().state_dict(), applied.model.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    x = next(iter(applied.task.loader("val", 64)))[0]
    with torch.no_grad():
        assert torch.allclose(result.model(x), applied.model(x), atol=1e-6)


def test_round_trip_mobilenet_global(study_factory, untrained_checkpoint, schema, tmp_path: Path) -> None:
    ckpt = untrained_checkpoint("mobilenet")
    cfg = load_config(study_factory(
        {"model": "mobilenet", "model_options": None, "criterion": "fpgm", "base": {"checkpoint": str(ckpt)}},
        trained_base=False,
    ))
    base = load_weights(build_task(cfg).build_model(), ckpt)
    result, arch = _prune_to_arch(cfg, base, global_ratio=0.4)
    assert any(g["kept_channels"] < g["original_channels"] for g in arch["groups"])
    assert _schema_errors(schema, arch) == []
    applied = apply_architecture(read_architecture(write_architecture(arch, tmp_path / "m.json")))
    assert applied.result.kept == result.kept
    convs = lambda m: [(n, tuple(c.weight.shape), c.groups) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert convs(applied.model) == convs(result.model)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), applied.model(x), atol=1e-5)


def test_finetuned_weights_travel_beside_the_json(tiny_config, pruned, tmp_path: Path) -> None:
    result, arch = pruned
    model = result.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # stands in for the finetune: differs from the base weights
    weights = save_weights(model, tmp_path / "w.pt")
    arch = dict(arch, provenance=dict(arch["provenance"], weights=str(weights)))
    applied = apply_architecture(arch, config=tiny_config)
    assert applied.weights_loaded
    for key, value in model.state_dict().items():
        assert torch.equal(applied.model.state_dict()[key], value), key
    # Explicit weights that do not fit the rebuilt model (the unpruned base) are refused.
    with pytest.raises(ArchitectureError, match="weights do not fit the rebuilt model"):
        apply_architecture(arch, config=tiny_config, weights=tiny_config.checkpoint_path())
    gone = dict(arch, provenance=dict(arch["provenance"], weights=str(tmp_path / "gone.pt")))
    with pytest.raises(ArchitectureError, match=r"provenance\.weights\) not found"):
        apply_architecture(gone, config=tiny_config)


# Refusals ---------------------------------------------------------------------------------------------

def _group(arch: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in arch["groups"] if g["name"] == name)


def test_another_base_checkpoint_is_refused(tiny_config, tiny_base_model, pruned, tmp_path: Path) -> None:
    _, arch = pruned
    other = tmp_path / "other.pt"
    state = {k: (v + 1 if v.is_floating_point() else v) for k, v in tiny_base_model.state_dict().items()}
    torch.save(state, other)
    with pytest.raises(ArchitectureError) as err:
        apply_architecture(arch, config=tiny_config, checkpoint=other, where="a.json")
    msg = str(err.value)
    assert msg.startswith("a.json: field 'base_checkpoint_sha256'")
    assert arch["base_checkpoint_sha256"][:12] in msg and file_sha256(other)[:12] in msg


def test_a_missing_group_is_refused(tiny_config, pruned) -> None:
    _, arch = pruned
    arch["groups"] = [g for g in arch["groups"] if g["name"] != "layers.2.conv1"]
    with pytest.raises(ArchitectureError, match=r"field 'groups' lacks group\(s\) layers\.2\.conv1"):
        apply_architecture(arch, config=tiny_config)


def test_an_unknown_group_is_refused(tiny_config, pruned) -> None:
    _, arch = pruned
    _group(arch, "layers.2.conv1")["name"] = "layers.7.conv1"
    with pytest.raises(ArchitectureError, match=r"group 'layers\.7\.conv1' \(field 'groups'\) does not exist in the resnet model"):
        apply_architecture(arch, config=tiny_config)


def test_original_channels_that_do_not_match_the_model(tiny_config, pruned, schema) -> None:
    _, arch = pruned
    g = _group(arch, "layers.2.conv2")
    g["original_channels"] = 64
    assert _schema_errors(schema, arch) == []  # well-formed, but not this model
    with pytest.raises(ArchitectureError, match=r"group layers\.2\.conv2: field 'original_channels' is 64 but the model has 32"):
        apply_architecture(arch, config=tiny_config)


# (mutation of the "layers.1.conv1" group, message, JSON path the schema flags)
BAD_GROUP = {
    "no channel kept": ({"kept_channels": 0, "kept_indices": []}, r"field 'kept_channels' is 0, out of range \[1, 32\]", "groups/2/kept_channels"),
    "more than original": ({"kept_channels": 40}, r"field 'kept_channels' is 40, out of range \[1, 32\]", None),
    "count not an integer": ({"kept_channels": 16.5}, r"field 'kept_channels' is 16\.5", "groups/2/kept_channels"),
    "index out of range": ({"kept_indices": list(range(15)) + [32]}, r"field 'kept_indices' has a channel outside \[0, 32\)", None),
    "negative index": ({"kept_indices": [-1] + list(range(1, 16))}, r"field 'kept_indices' has a channel outside", "groups/2/kept_indices/0"),
    "duplicate index": (
        {"kept_indices": [0] + list(range(15))}, r"field 'kept_indices' must list 16 distinct channel numbers", "groups/2/kept_indices"
    ),
    "count and indices disagree": ({"kept_indices": list(range(8))}, r"field 'kept_indices' must list 16 distinct", None),
    "ratio missing": ({"ratio": None}, r"field 'groups\[2\]\.ratio' is missing", "groups/2"),
}


@pytest.mark.parametrize("case", list(BAD_GROUP), ids=list(BAD_GROUP))
def test_a_bad_group_is_refused_naming_the_field(tiny_config, pruned, schema, tmp_path: Path, case: str) -> None:
    _, arch = pruned
    change, message, schema_path = BAD_GROUP[case]
    g = arch["groups"][2]
    assert g["name"] == "layers.1.conv1" and g["kept_channels"] == 16
    for key, value in change.items():
        if value is None:
            del g[key]
        else:
            g[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(arch))
    with pytest.raises(ArchitectureError, match=message):
        read_architecture(path)
    with pytest.raises(ArchitectureError, match=message):
        apply_architecture(arch, config=tiny_config)
    with pytest.raises(ArchitectureError, match=message):
        write_architecture(arch, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()
    if schema_path is not None:  # what JSON Schema can express, the published schema rejects too
        assert any(e.startswith(schema_path + ":") for e in _schema_errors(schema, arch)), _schema_errors(schema, arch)


BAD_TOP = {
    "missing metrics": (lambda a: a.pop("metrics"), r"field 'metrics' is missing"),
    "missing provenance": (lambda a: a.pop("provenance"), r"field 'provenance' is missing"),
    "newer version": (lambda a: a.update(schema_version=2), r"field 'schema_version' is 2; this autoprune reads version 1"),
    "no groups": (lambda a: a.update(groups=[]), r"field 'groups' must be a non-empty list"),
    "bad input shape": (lambda a: a.update(input_shape=[1, 0, 16]), r"field 'input_shape' must be a list of positive integers"),
    "group not an object": (lambda a: a["groups"].append("stem.0"), r"field 'groups\[6\]' must be an object"),
}


@pytest.mark.parametrize("case", list(BAD_TOP), ids=list(BAD_TOP))
def test_a_bad_document_is_refused_naming_the_field(pruned, schema, case: str) -> None:
    _, arch = pruned
    change, message = BAD_TOP[case]
    change(arch)
    with pytest.raises(ArchitectureError, match=message):
        validate_architecture(arch)
    assert _schema_errors(schema, arch), "the published schema accepts what the reader refuses"


def test_semantic_mismatches_are_refused(tiny_config, pruned) -> None:
    _, arch = pruned
    with pytest.raises(ArchitectureError, match=r"field 'input_shape' is \[1, 8, 8\] but the task gives \[1, 16, 16\]"):
        apply_architecture(dict(arch, input_shape=[1, 8, 8]), config=tiny_config)
    with pytest.raises(ArchitectureError, match=r"field 'task'/'model' is digits/mobilenet but the config builds digits/resnet"):
        apply_architecture(dict(arch, model="mobilenet"), config=tiny_config)
    no_config = dict(arch, provenance=dict(arch["provenance"], config=None))
    with pytest.raises(ArchitectureError, match=r"field 'provenance\.config' is empty; pass the study config with --config"):
        apply_architecture(no_config)
    with pytest.raises(ArchitectureError, match="base checkpoint .* not found; pass it with --checkpoint"):
        apply_architecture(arch, config=tiny_config, checkpoint="/nonexistent/base.pt")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="architecture file not found"):
        read_architecture(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1, "groups": [')
    with pytest.raises(ArchitectureError, match=r"broken\.json: not valid JSON"):
        read_architecture(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ArchitectureError, match="holds a JSON object"):
        read_architecture(listed)


def test_provenance_names_where_the_study_lives_without_user_or_password(
    tiny_config, tiny_base_model, schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The architecture JSON is handed on: it records the study and its locator, never a storage URL (was the
    whole URL, and a password holding ``?`` was written in full)."""
    tiny_config.storage = "postgresql://bob:pa?ssW0rd@db:5432/studies"
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    _, arch = _prune_to_arch(tiny_config, tiny_base_model, uniform=0.25)
    text = json.dumps(arch)
    assert "ssW0rd" not in text and "bob" not in text and "storage" not in arch["provenance"]
    assert arch["provenance"]["locator"] == "postgresql://db:5432/studies"
    assert arch["provenance"]["study"] == "tiny-digits" and arch["provenance"]["config"] == str(tiny_config.source)
    assert _schema_errors(schema, arch) == []


def test_an_old_architecture_with_a_storage_field_still_loads(tiny_config, tiny_base_model, schema, tmp_path: Path) -> None:
    _, arch = _prune_to_arch(tiny_config, tiny_base_model, uniform=0.25)
    old = dict(arch, provenance={k: v for k, v in arch["provenance"].items() if k != "locator"})
    old["provenance"]["storage"] = "postgresql://bob:***@db:5432/studies"  # as autoprune 0.1.0 wrote it
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert read_architecture(path)["provenance"]["storage"].startswith("postgresql://bob:***@")
    assert _schema_errors(schema, old) == []
    applied = apply_architecture(read_architecture(path), config=tiny_config, where=str(path))
    assert applied.model is not None


# Base checkpoints are read with weights_only=True ---------------------------------------------------

def test_a_checkpoint_with_a_pickled_object_is_refused(tiny_config, tiny_base_model, pruned, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({**tiny_base_model.state_dict(), "extra": CodeOnUnpickle(marker)}, evil)
    with pytest.raises(TaskError, match="not a loadable state_dict checkpoint: it holds pickled objects") as err:
        load_state_dict(evil)
    assert "posix.mkdir" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # The same file as a study's base checkpoint, and as an architecture's base, is refused the same way.
    _, arch = pruned
    arch = dict(arch, base_checkpoint_sha256=file_sha256(evil))
    with pytest.raises(TaskError, match="holds pickled objects, which autoprune never unpickles"):
        apply_architecture(arch, config=tiny_config, checkpoint=evil)
    assert not marker.exists()
    # A plain state_dict with the wrong shapes names the mismatch instead.
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(TaskError, match="checkpoint does not fit the model"):
        load_weights(tiny_base_model, wrong)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(TaskError, match="expected a state_dict .* found Tensor"):
        load_state_dict(tensor_only)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TaskError, match=r"garbage\.pt: not a loadable state_dict checkpoint \(UnpicklingError: ") as err:
        load_state_dict(garbage)
    assert "pickled objects" not in str(err.value) and "weights_only" not in str(err.value)


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_apply_never_imports_plugin_code_named_inside_the_json(pruned, tmp_path: Path) -> None:
    """An untrusted JSON cannot make apply import a module: a plugin task needs a --config on the command line."""
    from conftest import run_cli

    _, arch = pruned
    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).mkdir()\ndef make_task(**kw):\n    raise SystemExit(1)\n"
    )
    evil_config = tmp_path / "evil.yaml"
    evil_config.write_text("name: evil\ntask: evil_plugin:make_task\nmodel: resnet\n")
    for task, config in (("evil_plugin:make_task", arch["provenance"]["config"]), (arch["task"], str(evil_config))):
        bad = copy.deepcopy(arch)
        bad["task"], bad["provenance"]["config"] = task, config
        path = tmp_path / "untrusted.json"
        path.write_text(json.dumps(bad))
        res = run_cli("apply", path, "-o", tmp_path / "out.pt")
        assert res.returncode == 2 and "--config" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not marker.exists()


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_apply_warns_or_refuses_channels_the_guards_never_give(pruned, tiny_config, tmp_path: Path) -> None:
    from conftest import run_cli

    _, arch = pruned
    g = arch["groups"][3]  # 3 channels: below the floors and off the rounding grid
    g["kept_channels"], g["kept_indices"], g["ratio"] = 3, [0, 5, 9], round(1 - 3 / g["original_channels"], 6)
    path = tmp_path / "off-grid.json"
    path.write_text(json.dumps(arch))
    applied = apply_architecture(arch, config=tiny_config, where=str(path))
    assert len(applied.warnings) == 1 and f"group {g['name']} keeps 3 of" in applied.warnings[0]
    with pytest.raises(ArchitectureError, match="refused with --strict"):
        apply_architecture(arch, config=tiny_config, where=str(path), strict=True)
    warned = run_cli("apply", path, "-o", tmp_path / "a.pt")
    assert warned.returncode == 0 and "warning:" in warned.stderr and g["name"] in warned.stderr, warned.stderr
    refused = run_cli("apply", path, "-o", tmp_path / "b.pt", "--strict")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp_path / "b.pt").exists(), refused.stderr
