"""``autoprune finalize``: the long final recovery of the chosen architecture, resumable, locked, shipped.

One real tiny digits study (small ResNet, SQLite, enqueued uniform and global baseline trials) is searched
once per module.  The final recipe is 3 short epochs.  A first ``finalize`` is killed with SIGKILL right
after its epoch-1 checkpoint (the test hook of :mod:`autoprune.selection.finalize`); a second one continues from it,
and must end exactly where an uninterrupted run (another artifact folder) ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from conftest import TINY_STUDY
from conftest import deep_merge
from conftest import run_cli
from conftest import write_study

from autoprune.config import load_config
from autoprune.errors import ArchitectureError
from autoprune.errors import ArtifactError
from autoprune.errors import ConfigError
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import read_architecture
from autoprune.selection.architecture import validate_architecture
from autoprune.selection.finalize import FINAL_ATTR
from autoprune.selection.finalize import KILL_AFTER_EPOCH_ENV
from autoprune.selection.finalize import architecture_lock
from autoprune.selection.finalize import read_checkpoint
from autoprune.selection.finalize import recipe_record
from autoprune.selection.finalize import write_checkpoint
from autoprune.trial.candidate import example_input
from autoprune.trial.recovery import FinetuneState

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPOCHS = 3
FINAL = {"epochs": EPOCHS, "lr": 0.02, "warmup_steps": 2, "batch_size": 64}
OVERRIDES = {
    "name": "finalize-digits",
    "max_drop": 0.9,
    "search": {"trials": 3, "sweep_ratios": [0.3, 0.5]},
    "recovery": {"final": FINAL},
}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_study) -> Path:
    """A searched tiny study (its baselines enqueued as trials) on the session's trained base."""
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    base = deep_merge(TINY_STUDY, {"base": {"checkpoint": str(tiny_study.checkpoint)}})
    path = write_study(tmp_path_factory.mktemp("finalize"), OVERRIDES, base=base)
    cfg, url, _study = create_study(str(path), None, say=lambda line: None)
    assert run_local(str(path), url, 1, cfg.search.trials) == 0
    return path


@pytest.fixture(scope="module")
def killed_then_resumed(study: Path) -> tuple[Path, str, str]:
    """``finalize`` killed after epoch 1, then run again: (final JSON, second run's stdout, its stderr)."""
    os.environ[KILL_AFTER_EPOCH_ENV] = "1"
    try:
        first = run_cli("finalize", study, raw_newlines=True)
    finally:
        del os.environ[KILL_AFTER_EPOCH_ENV]
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    checkpoints = list((study.parent / "artifacts" / "finalize-digits" / "final").glob("*/checkpoint.pt"))
    assert len(checkpoints) == 1
    second = run_cli("finalize", study, raw_newlines=True)
    assert second.returncode == 0, second.stderr[-3000:]
    arch_json = checkpoints[0].parent / "architecture.json"
    return arch_json, second.stdout, second.stderr


@pytest.mark.slow
def test_a_killed_finalize_continues_from_its_last_epoch(study: Path, killed_then_resumed: tuple[Path, str, str]) -> None:
    arch_json, stdout, stderr = killed_then_resumed
    assert f"resuming the final recovery after epoch 1 of {EPOCHS}" in stderr and "not starting over" in stderr
    assert "continued after epoch 1" in stdout
    # The bar starts at epoch 1 and runs epochs 2 and 3 only.
    assert f" 1/{EPOCHS} " in stderr and f" {EPOCHS}/{EPOCHS} " in stderr and f" 0/{EPOCHS} " not in stderr
    final = read_architecture(arch_json)
    assert final["final"]["resumed_from_epoch"] == 1 and final["final"]["epochs"] == EPOCHS
    # The same architecture as the study's pick, as export writes it.
    exported = study.parent / "pick.json"
    assert run_cli("export", study, "--no-confirm", "-o", exported).returncode == 0
    assert final["groups"] == read_architecture(exported)["groups"]
    # An uninterrupted run (same study, another artifact folder) ends exactly where the resumed one ended.
    whole = write_study(study.parent, {**OVERRIDES, "base": {"checkpoint": str(load_config(study).checkpoint_path())},
                                       "artifact_dir": str(study.parent / "uninterrupted"),
                                       "artifact_store": f"file://{study.parent / 'artifacts' / 'finalize-digits' / 'optuna-artifacts'}"},
                       filename="whole.yaml")
    out = run_cli("finalize", whole, "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    uninterrupted = read_architecture(next((study.parent / "uninterrupted" / "final").glob("*/architecture.json")))
    assert uninterrupted["final"]["resumed_from_epoch"] is None
    for key in ("val_metric", "test_metric", "judge_metric", "kept_epoch", "weights_sha256"):
        assert uninterrupted["final"][key] == final["final"][key], key


@pytest.mark.slow
def test_the_finalized_model_is_rebuilt_by_apply_and_reproduces_its_figures(study: Path, killed_then_resumed) -> None:
    arch_json = killed_then_resumed[0]
    arch = json.loads(arch_json.read_text())
    validate_architecture(arch, arch_json)  # the published schema, with the final block
    assert arch["latency"]["search_speedup"] > 0 and arch["metrics"]["val_drop"] is not None  # search figures kept
    final = arch["final"]
    assert arch["provenance"]["weights"] == final["weights"] and Path(final["onnx"]).is_file()
    cfg = load_config(study)
    applied = apply_architecture(arch, cfg, where=str(arch_json))
    assert applied.weights_loaded
    assert applied.task.evaluate(applied.model, "val").value == pytest.approx(final["val_metric"], abs=1e-12)
    assert applied.task.evaluate(applied.model, "test").value == pytest.approx(final["test_metric"], abs=1e-12)
    onnx_path = study.parent / "rebuilt.onnx"
    out = run_cli("apply", arch_json, "-o", onnx_path)
    assert out.returncode == 0 and "finetuned weights" in out.stdout, out.stderr
    x = example_input(applied.task, cfg)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = applied.model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs[FINAL_ATTR]
    assert stored["trials"][str(arch["provenance"]["trial"])]["test_metric"] == final["test_metric"]


@pytest.mark.slow
def test_with_baselines_compares_after_the_same_recovery_and_reports_it(study: Path, killed_then_resumed) -> None:
    out = run_cli("finalize", study, "--with-baselines", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"after the same final recovery ({EPOCHS} epochs)" in out.stdout
    assert re.search(r"against the (uniform|global) baseline: \d+\.\d\dx its speed, test drop [+-]\d\.\d{4} against", out.stdout)
    summary = json.loads((study.parent / "artifacts" / "finalize-digits" / "report" / "summary.json").read_text())
    kinds = {entry["kind"] for entry in summary["final"]["trials"].values()}
    assert kinds & {"uniform", "global"} and len(summary["final"]["trials"]) >= 2
    assert "Final recovery" in (study.parent / "artifacts" / "finalize-digits" / "report" / "report.html").read_text()


@pytest.mark.slow
def test_an_exported_architecture_continues_its_finished_recovery_without_training(study: Path, killed_then_resumed) -> None:
    arch_json = killed_then_resumed[0]
    before = read_architecture(arch_json)["final"]
    exported = study.parent / "pick-for-arch.json"
    assert run_cli("export", study, "--no-confirm", "-o", exported).returncode == 0
    out = run_cli("finalize", study, "--arch", exported)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"all {EPOCHS} epochs are done already" in out.stderr and "%|" not in out.stderr.split("done already")[1].split("timing")[0]
    after = read_architecture(arch_json)["final"]
    assert after["weights_sha256"] == before["weights_sha256"] and after["test_metric"] == before["test_metric"]
    both = run_cli("finalize", study, "--arch", exported, "--trial", "0")
    assert both.returncode == 2 and "pass --trial or --arch, not both" in both.stderr and "Traceback" not in both.stderr


@pytest.mark.slow
def test_a_second_finalize_of_the_same_architecture_is_refused_naming_the_holder(study: Path, killed_then_resumed) -> None:
    folder = killed_then_resumed[0].parent
    with architecture_lock(folder, "held here"):
        out = run_cli("finalize", study)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is being finalized already, by pid" in out.stderr and str(os.getpid()) in out.stderr


def test_a_checkpoint_of_another_recipe_or_a_torn_one_is_refused(tmp_path: Path, study_factory) -> None:
    cfg = load_config(study_factory({"recovery": {"final": FINAL}}))
    recipe = recipe_record(cfg.recovery)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = FinetuneState(3, 9, model.state_dict(), opt.state_dict(), sched.state_dict(), torch.get_rng_state(),
                          {"best_value": 0.5, "best_stderr": 0.1, "best_step": 3, "best_state": model.state_dict()}, [[3, 0.5]], 0)
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, "k" * 16, recipe, state)
    assert read_checkpoint(path, "k" * 16, recipe).step == 3
    with pytest.raises(ConfigError, match=r"another recipe: recovery.final.lr \(checkpoint 0.02, config 0.5\).*--restart"):
        read_checkpoint(path, "k" * 16, recipe | {"recovery.final.lr": 0.5})
    with pytest.raises(ArtifactError, match="another architecture"):
        read_checkpoint(path, "j" * 16, recipe)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="not a readable finalize checkpoint.*--restart"):
        read_checkpoint(path, "k" * 16, recipe)


def test_the_final_block_is_checked_by_the_schema(tiny_study) -> None:
    arch = {"schema_version": 1, "task": "digits", "model": "resnet", "base_checkpoint_sha256": "0" * 64, "input_shape": [1, 16, 16],
            "criterion": "l2", "groups": [{"name": "a", "original_channels": 4, "kept_channels": 2, "ratio": 0.5, "kept_indices": [0, 1]}],
            "metrics": {}, "latency": {}, "provenance": {}}
    validate_architecture(arch)  # a file written before the final block still validates
    validate_architecture(arch | {"final": {"epochs": 2, "val_metric": 0.9, "test_metric": 0.9, "speedup": 2.0}})
    with pytest.raises(ArchitectureError, match=r"field 'final.epochs'"):
        validate_architecture(arch | {"final": {"epochs": "two", "val_metric": 0.9, "test_metric": 0.9, "speedup": 2.0}})


@pytest.mark.slow
def test_finalize_works_on_the_example_plugin_study(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "plugin_task.py", tmp_path / "plugin_task.py")
    example = load_config(EXAMPLES / "plugin-study.yaml")
    base = deep_merge(TINY_STUDY, {"task_options": None, "model_options": None})
    cfg = write_study(tmp_path, {
        "name": "plugin-final", "task": example.task, "model": example.model, "max_drop": 0.9,
        "task_options": {"image_size": 16, "train_size": 256, "val_size": 128, "test_size": 128, "seed": 0},
        "base": {"epochs": 2, "lr": 0.05, "batch_size": 64},
        "search": {"trials": 2, "sampler": "random", "seed": 0, "sweep_ratios": [0.5]},
        "recovery": {"final": {"epochs": 2, "warmup_steps": 1, "batch_size": 32}},
    }, base=base)
    assert run_cli("run", cfg, cwd=tmp_path).returncode == 0
    out = run_cli("finalize", cfg, "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    arch_json = Path(re.search(r"architecture JSON:\s+(\S+)", out.stdout).group(1))
    arch = read_architecture(arch_json)
    assert arch["task"] == "plugin_task:make_task" and arch["final"]["epochs"] == 2
    rebuilt = run_cli("apply", arch_json, "--config", cfg, "-o", tmp_path / "final.onnx", cwd=tmp_path)
    assert rebuilt.returncode == 0 and "finetuned weights" in rebuilt.stdout, rebuilt.stderr
