"""The foundation commands (train-base, groups, baselines, prune, apply) as a user runs them.

Every bad input must give exit code 2, one ``error:`` line naming the problem and no traceback.  One case
of each kind (config, config file, YAML, flags, architecture JSON, checkpoint) runs in a fresh interpreter,
all started at once in one module fixture, so the real process exit code and stderr are checked; the
other cases go through the same ``main`` in-process with click's runner (starting torch ~20 times would
cost a minute on a small machine).  The happy path prunes and applies in fresh interpreters and checks the
rebuilt model against the in-process one (ONNX Runtime for the ``.onnx``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import CodeOnUnpickle
from conftest import run_cli
from conftest import write_study

from autoprune.cli import main
from autoprune.selection.architecture import SCHEMA_PATH
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import read_architecture
from autoprune.trial.pruning_setup import make_pruner

# case -> (message expected on stderr); the argument lists are built in the fixture (they need files).
BAD_MESSAGES = {
    "unknown key": "key 'search.trails': unknown key",
    "wrong type": "key 'search.trials': Input should be a valid integer",
    "ratio outside [0, 1)": "key 'search.sweep_ratios': every sweep ratio must be in [0, 1), got 1.5",
    "missing config file": "config file not found",
    "missing base checkpoint": "key 'base.checkpoint': file",
    "unknown criterion": "key 'criterion': unknown criterion 'l3'",
    "unknown task": "unknown task 'imagenet' (key 'task'); choose one of",
    "invalid YAML": "(line 3): not valid YAML",
    "prune without a plan": "prune: give exactly one of --uniform R, --global R or --ratios FILE",
    "prune with two plans": "prune: give exactly one of",
    "prune ratio 1.5": "prune: --uniform must be in [0, 1), got 1.5",
    "prune ratio not a number": "Invalid value for '--uniform': 'half' is not a valid float",
    "prune without output": "Missing option '-o' / '--output'",
    "prune unknown group": "unknown group(s) layers.9.conv1; the model's groups are: stem.0",
    "prune ratios file ratio 1.2": "key 'stem.0': ratio must be in [0, 1), got 1.2",
    "apply broken JSON": "not valid JSON",
    "apply kept_channels out of range": "field 'kept_channels' is 99, out of range [1, 32]",
    "base checkpoint with a pickled object": "holds pickled objects, which autoprune never unpickles",
}
# Run in a fresh interpreter; the rest in-process.
SUBPROCESS = {"unknown key", "invalid YAML", "prune ratio 1.5", "apply broken JSON", "base checkpoint with a pickled object"}


def _bad_cases(d: Path, cfg: Path, arch: Path, wait_for) -> dict[str, list[Any]]:
    def study(name: str, overrides: dict[str, Any]) -> Path:
        return write_study(d / name, overrides)

    (d / "yaml").mkdir()
    bad_yaml = d / "yaml" / "study.yaml"
    bad_yaml.write_text("name: x\ntask: digits\n  model: resnet\n")
    (d / "ratios-bad-group.json").write_text(json.dumps({"layers.9.conv1": 0.5}))
    (d / "ratios-1.2.json").write_text(json.dumps({"stem.0": 1.2}))
    (d / "broken.json").write_text('{"schema_version": 1, "groups": [')
    assert wait_for.result().returncode == 0, wait_for.result().stderr  # the architecture JSON to break
    out_of_range = json.loads(arch.read_text())
    out_of_range["groups"][2]["kept_channels"] = 99
    (d / "out-of-range.json").write_text(json.dumps(out_of_range))
    evil = d / "evil.pt"
    torch.save({"stem.0.weight": torch.zeros(1), "x": CodeOnUnpickle(d / "code-ran")}, evil)
    out = str(d / "never.json")
    return {
        "unknown key": ["groups", study("k", {"search": {"trails": 3}})],
        "wrong type": ["train-base", study("t", {"search": {"trials": "many"}})],
        "ratio outside [0, 1)": ["groups", study("r", {"search": {"sweep_ratios": [0.5, 1.5]}})],
        "missing config file": ["prune", d / "nope.yaml", "--uniform", "0.5", "-o", out],
        "missing base checkpoint": ["train-base", study("c", {"base": {"checkpoint": "gone/base.pt"}})],
        "unknown criterion": ["groups", study("cr", {"criterion": "l3"})],
        "unknown task": ["baselines", study("ta", {"task": "imagenet"})],
        "invalid YAML": ["groups", bad_yaml],
        "prune without a plan": ["prune", cfg, "-o", out],
        "prune with two plans": ["prune", cfg, "--uniform", "0.2", "--global", "0.2", "-o", out],
        "prune ratio 1.5": ["prune", cfg, "--uniform", "1.5", "-o", out],
        "prune ratio not a number": ["prune", cfg, "--uniform", "half", "-o", out],
        "prune without output": ["prune", cfg, "--uniform", "0.5"],
        "prune unknown group": ["prune", cfg, "--ratios", d / "ratios-bad-group.json", "-o", out],
        "prune ratios file ratio 1.2": ["prune", cfg, "--ratios", d / "ratios-1.2.json", "-o", out],
        "apply broken JSON": ["apply", d / "broken.json", "-o", d / "never.pt"],
        "apply kept_channels out of range": ["apply", d / "out-of-range.json", "-o", d / "never.pt"],
        "base checkpoint with a pickled object": ["prune", study("e", {"base": {"checkpoint": str(evil)}}), "--uniform", "0.5", "-o", out],
    }


@pytest.fixture(scope="module")
def runs(tiny_study, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fresh-interpreter runs of this file, started in parallel: {case: CompletedProcess} plus paths."""
    d = tmp_path_factory.mktemp("cli")
    cfg = tiny_study.config_path
    arch = d / "arch.json"
    with ThreadPoolExecutor(max_workers=3) as pool:
        prune = pool.submit(run_cli, "prune", cfg, "--ratios", _ratios_file(d), "-o", arch)
        bad_args = _bad_cases(d, cfg, arch, wait_for=prune)
        bad = {case: pool.submit(run_cli, *args) for case, args in bad_args.items() if case in SUBPROCESS}
        apply_onnx = pool.submit(run_cli, "apply", arch, "-o", d / "pruned.onnx", "--config", cfg)
        results = {case: f.result() for case, f in bad.items()}
        results |= {"prune": prune.result(), "apply .onnx": apply_onnx.result()}
    return {"dir": d, "arch": arch, "results": results, "args": bad_args}


RATIOS = {"stem.0": 0.5, "layers.1.conv1": 0.5, "layers.2.conv2": 0.25}


def _ratios_file(d: Path) -> Path:
    path = d / "ratios.json"
    path.write_text(json.dumps(RATIOS))
    return path


@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
@pytest.mark.parametrize("case", list(BAD_MESSAGES), ids=list(BAD_MESSAGES))
def test_bad_input_exits_2_with_its_message(runs, case: str) -> None:
    if case in SUBPROCESS:
        proc = runs["results"][case]
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        result = CliRunner().invoke(main, [str(a) for a in runs["args"][case]])
        assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    assert code == 2, (stdout, stderr)
    assert BAD_MESSAGES[case] in stderr, stderr
    assert "Traceback" not in stderr + stdout
    if case not in ("prune ratio not a number", "prune without output"):  # click's own usage errors
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert not (runs["dir"] / "never.json").exists() and not (runs["dir"] / "never.pt").exists()


@pytest.mark.slow
def test_every_bad_input_in_a_fresh_interpreter(runs) -> None:
    """The in-process cases above, each in its own interpreter (real exit code and stderr)."""
    cases = [case for case in BAD_MESSAGES if case not in SUBPROCESS]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(cases, pool.map(lambda case: run_cli(*runs["args"][case]), cases), strict=True))
    for case, proc in procs.items():
        assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
        assert BAD_MESSAGES[case] in proc.stderr, (case, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, case


@pytest.mark.slow  # runs the CLI end to end: the fast lane skips it
def test_pickled_checkpoint_ran_no_code(runs) -> None:
    assert runs["results"]["base checkpoint with a pickled object"].returncode == 2
    assert not (runs["dir"] / "code-ran").exists()


def test_prune_writes_a_valid_architecture(runs, tiny_study, tiny_config, tiny_task, tiny_base_model) -> None:
    proc = runs["results"]["prune"]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "kept channels: stem.0=8, layers.0.conv1=16, layers.1.conv1=16" in proc.stdout
    assert f"wrote {runs['arch']}" in proc.stdout
    arch = json.loads(runs["arch"].read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(arch)
    assert arch["base_checkpoint_sha256"] == tiny_study.sha256
    assert arch["provenance"]["config"] == str(tiny_study.config_path.resolve())
    # The same prune in this process chooses the same channels under the same group names.
    result = make_pruner(tiny_config, tiny_task).prune(tiny_base_model, ratios=RATIOS)
    assert {g["name"]: g["kept_indices"] for g in arch["groups"]} == result.kept_indices


def test_apply_rebuilds_the_same_model_as_pt_and_onnx(runs, tiny_config) -> None:
    d = runs["dir"]
    onnx_run = runs["results"]["apply .onnx"]
    pt_run = CliRunner().invoke(main, ["apply", str(runs["arch"]), "-o", str(d / "pruned.pt")])
    for code, stdout, stderr in ((onnx_run.returncode, onnx_run.stdout, onnx_run.stderr), (pt_run.exit_code, pt_run.stdout, pt_run.stderr)):
        assert code == 0, stderr
        assert "rebuilt resnet (base weights): stem.0=8" in stdout
    applied = apply_architecture(read_architecture(runs["arch"]), config=tiny_config)
    state = torch.load(d / "pruned.pt", weights_only=True)
    assert state.keys() == applied.model.state_dict().keys()
    for key, value in applied.model.state_dict().items():
        assert torch.equal(state[key], value), key
    x = torch.randn(tiny_config.latency.batch_size, 1, 16, 16)
    with torch.no_grad():
        expected = applied.model(x).numpy()
    session = ort.InferenceSession(str(d / "pruned.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_groups_lists_every_group(tiny_study, tiny_config, tiny_task, tiny_base_model) -> None:
    result = CliRunner().invoke(main, ["groups", str(tiny_study.config_path)])
    assert result.exit_code == 0, result.output
    groups = make_pruner(tiny_config, tiny_task).groups(tiny_base_model)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{len(groups)} groups, criterion l2, round_to 8"
    listed = [line.split()[0] for line in lines[2:] if not line.startswith(" ")]
    assert listed == [g.name for g in groups]
    assert "(first layer)" in next(line for line in lines if line.startswith("stem.0"))
    assert "- layers.0.conv2 (prune_out_channels)" in result.stdout


def test_train_base_reuses_the_checkpoint(tiny_study) -> None:
    result = CliRunner().invoke(main, ["train-base", str(tiny_study.config_path)])
    assert result.exit_code == 0, result.output
    assert f"sha256: {tiny_study.sha256}" in result.stdout
    assert f"validation accuracy: {tiny_study.val_metric:.4f}" in result.stdout


# In-process refusals (click's runner: same exit code and message, no interpreter start) ----------------

def _invoke(*args: Any):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    return result


def test_apply_for_another_base_checkpoint(runs, tiny_base_model, tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in tiny_base_model.state_dict().items()}, other)
    result = _invoke("apply", runs["arch"], "-o", tmp_path / "x.pt", "--checkpoint", other)
    assert result.exit_code == 2
    assert f"error: {runs['arch']}: field 'base_checkpoint_sha256'" in result.output
    assert not (tmp_path / "x.pt").exists()


def test_apply_with_a_missing_group_or_a_bad_output(runs, tmp_path: Path) -> None:
    arch = json.loads(runs["arch"].read_text())
    arch["groups"].pop()
    path = tmp_path / "a.json"
    path.write_text(json.dumps(arch))
    result = _invoke("apply", path, "-o", tmp_path / "x.pt")
    assert result.exit_code == 2 and "field 'groups' lacks group(s) layers.2.conv2" in result.output
    result = _invoke("apply", runs["arch"], "-o", tmp_path / "x.txt")
    assert result.exit_code == 2 and "output must end in .onnx or .pt" in result.output


def test_baselines_with_bad_ratios(tiny_study) -> None:
    result = _invoke("baselines", tiny_study.config_path, "--ratios", "0.1,abc")
    assert result.exit_code == 2 and "--ratios: expected comma-separated numbers" in result.output
    result = _invoke("baselines", tiny_study.config_path, "--ratios", "0.5,1.0")
    assert result.exit_code == 2 and "--ratios: every ratio must be in [0, 1)" in result.output


def test_a_plugin_task_that_cannot_be_imported(tmp_path: Path) -> None:
    cfg = write_study(tmp_path, {"task": "no_such_package.tasks:make"})
    result = _invoke("groups", cfg)
    assert result.exit_code == 2 and "key 'task': cannot import module 'no_such_package.tasks'" in result.output


def test_export_base_makes_the_baseline_latency_needs(runs, tiny_study, tmp_path: Path) -> None:
    """README: export-base, then latency PRUNED --baseline BASE, as written."""
    base = tmp_path / "base.onnx"
    exported = CliRunner().invoke(main, ["export-base", str(tiny_study.config_path), "-o", str(base)])
    assert exported.exit_code == 0 and base.is_file(), exported.output
    timed = CliRunner().invoke(main, ["latency", str(runs["dir"] / "pruned.onnx"), "--baseline", str(base), "--repeats", "20", "--no-lock"])
    assert timed.exit_code == 0 and "speedup" in timed.stdout, timed.output
    assert _invoke("export-base", tiny_study.config_path, "-o", tmp_path / "base.pt").exit_code == 2
