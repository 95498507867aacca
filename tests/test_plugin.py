"""Plugin tasks (``task: module:function``): the example end to end, and every way a plugin can be wrong."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_STUDY
from conftest import deep_merge
from conftest import run_cli
from conftest import write_study

from autoprune.config import load_config
from autoprune.errors import TaskError
from autoprune.tasks import Task
from autoprune.tasks import build_task

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLUGIN_BASE = deep_merge(TINY_STUDY, {"task_options": None, "model_options": None})

BAD_PLUGINS = '''
from types import SimpleNamespace
from autoprune.tasks import ClassificationTask

NOT_A_FUNCTION = 3

def raises(config=None, **options):
    raise ValueError("the data folder is gone")

def no_build_model(config=None, **options):
    return SimpleNamespace(dataset=lambda split: [], evaluate_batches=None, metric_name="accuracy", metric_direction="maximize")

class Half(ClassificationTask):
    def dataset(self, split):
        return []

def abstract(config=None, **options):
    return Half()

class Upward(Half):
    metric_direction = "up"
    def build_model(self):
        return None

def bad_direction(config=None, **options):
    return Upward()
'''


def plugin_config(folder: Path, task: str, options: dict | None = None, **overrides) -> Path:
    return write_study(folder, {"task": task, "task_options": options or {}, "model": "plugin", **overrides}, base=PLUGIN_BASE)


@pytest.fixture
def bad_plugins(tmp_path: Path) -> Path:
    (tmp_path / "bad_plugins.py").write_text(BAD_PLUGINS)
    return tmp_path


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("raises", r"plugin task 'bad_plugins:raises' raised ValueError: the data folder is gone"),
        ("no_build_model", r"returned SimpleNamespace, not an autoprune.tasks.Task; it lacks field\(s\) 'build_model', 'evaluate_batches'"),
        ("abstract", r"does not implement field\(s\) 'build_model'"),
        ("bad_direction", r"field 'metric_direction' must be 'maximize' or 'minimize', got 'up'"),
        ("NOT_A_FUNCTION", r"'bad_plugins:NOT_A_FUNCTION' is a int, not a function"),
        ("missing", r"module 'bad_plugins' has no attribute 'missing'"),
    ],
)
def test_broken_plugins_give_one_clear_error(bad_plugins: Path, function: str, message: str) -> None:
    cfg = load_config(plugin_config(bad_plugins, f"bad_plugins:{function}"))
    with pytest.raises(TaskError, match=message):
        build_task(cfg)


def test_unknown_plugin_module_is_named(tmp_path: Path) -> None:
    cfg = load_config(plugin_config(tmp_path, "no_such_plugin_module:make_task"))
    with pytest.raises(TaskError, match="cannot import module 'no_such_plugin_module'.*PYTHONPATH"):
        build_task(cfg)


def test_cli_reports_a_broken_plugin_without_traceback(bad_plugins: Path) -> None:
    out = run_cli("groups", plugin_config(bad_plugins, "bad_plugins:raises"))
    assert out.returncode == 2
    assert "raised ValueError: the data folder is gone" in out.stderr and "Traceback" not in out.stderr


def test_plugin_next_to_its_config_needs_no_pythonpath(tmp_path: Path) -> None:
    # A module name used by no other test, so it is imported here from the config's folder.
    shutil.copy(EXAMPLES / "plugin_task.py", tmp_path / "gratings_plugin_copy.py")
    cfg = load_config(plugin_config(tmp_path, "gratings_plugin_copy:make_task", {"train_size": 16, "val_size": 8, "test_size": 8}))
    task = build_task(cfg)
    assert isinstance(task, Task) and task.metric_direction == "maximize"
    assert len(task.dataset("val")) == 8


def test_example_plugin_builds_prunes_exports_and_times(tmp_path: Path) -> None:
    from autoprune.latency import LatencySettings
    from autoprune.latency import export_onnx
    from autoprune.latency import measure_speedup
    from autoprune.trial.pruning_setup import make_pruner

    cfg = load_config(EXAMPLES / "plugin-study.yaml")
    assert cfg.task == "plugin_task:make_task"
    task = build_task(cfg)
    torch.manual_seed(0)
    base = task.build_model().eval()
    # No selection split of its own: 30% of the validation images are carved out for confirm, by search.seed.
    val, selection = task.evaluate(base, "val").n, task.evaluate(base, "selection").n
    assert val + selection == cfg.task_options["val_size"] and selection == round(cfg.search.selection_fraction * (val + selection))
    pruner = make_pruner(cfg, task)
    groups = pruner.groups(base)
    assert groups and all(not g.name.startswith("head") for g in groups)
    model = copy.deepcopy(base)
    result = pruner.prune(model, uniform=0.5)
    assert result.macs < pruner._count(base)[0]
    x = task.example_input(1)
    base_onnx = export_onnx(base, x, tmp_path / "base.onnx")
    onnx_path = export_onnx(model, x, tmp_path / "pruned.onnx")
    settings = LatencySettings(batch_size=8, repeats=20, warmup=2, blocks=2, cv_threshold=1.0, max_remeasure=0, lock=False)
    assert measure_speedup(onnx_path, base_onnx, settings).speedup > 0


@pytest.mark.slow
def test_example_plugin_runs_a_two_trial_study(tmp_path: Path) -> None:
    """``autoprune run`` on the example plugin (copied beside a small config), then ``autoprune pareto``."""
    shutil.copy(EXAMPLES / "plugin_task.py", tmp_path / "plugin_task.py")
    example = load_config(EXAMPLES / "plugin-study.yaml")
    cfg = plugin_config(
        tmp_path,
        example.task,
        {"image_size": 16, "train_size": 256, "val_size": 128, "test_size": 128, "seed": 0},
        name="plugin-e2e",
        model=example.model,
        base={"epochs": 2, "lr": 0.05, "batch_size": 64},
        search={"trials": 2, "sampler": "random", "seed": 0, "sweep_ratios": [0.5]},
    )
    out = run_cli("run", cfg, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "complete 2" in out.stdout
    pareto = run_cli("pareto", cfg, cwd=tmp_path)
    assert pareto.returncode == 0, pareto.stderr[-2000:]


def test_a_plugin_selection_split_is_its_own_or_carved_from_validation_deterministically(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "plugin_task.py", tmp_path / "gratings_selection_copy.py")
    sizes = {"train_size": 16, "val_size": 20, "test_size": 8}
    carved = [build_task(load_config(plugin_config(tmp_path, "gratings_selection_copy:make_task", sizes))) for _ in range(2)]
    first, again = (t.split_data("selection").indices for t in carved)
    assert first == again and len(first) == 6  # the same images every time: search.selection_fraction 0.3 of 20
    assert set(first).isdisjoint(carved[0].split_data("val").indices)
    assert sorted([*first, *carved[0].split_data("val").indices]) == list(range(20))
    other = build_task(load_config(plugin_config(tmp_path, "gratings_selection_copy:make_task", sizes,
                                                 search={"seed": 7, "selection_fraction": 0.5})))
    assert len(other.split_data("selection")) == 10 and other.split_data("selection").indices != first
    own = build_task(load_config(plugin_config(tmp_path, "gratings_selection_copy:make_task", sizes | {"selection_size": 5})))
    assert len(own.split_data("selection")) == 5 and len(own.split_data("val")) == 20  # validation left whole
