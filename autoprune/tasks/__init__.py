"""Tasks: the model, its data, its loss and its metric, behind one contract.

Built-in tasks are named in a study config (``task: digits``); a plugin is named as
``task: package.module:function`` and must return a :class:`Task` (see README, "Bring your own model").
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.errors import TaskError
from autoprune.tasks.base import SPLITS
from autoprune.tasks.base import ClassificationTask
from autoprune.tasks.base import MetricResult
from autoprune.tasks.base import Task

if TYPE_CHECKING:
    from autoprune.config import StudyConfig

# name -> "module:class"; imported lazily so optional dependencies stay optional.
BUILTIN_TASKS: dict[str, str] = {
    "digits": "autoprune.tasks.digits:DigitsTask",
    "shapes": "autoprune.tasks.shapes:ShapesTask",
    "segmentation": "autoprune.tasks.segmentation:SegmentationTask",
}


def _import(spec: str, key: str = "task", search_dir: Path | None = None) -> Any:
    """``module:attr`` imported; a plugin module not found on ``sys.path`` is looked for in ``search_dir``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TaskError(f"key '{key}': {spec!r} is not 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        # A plugin next to its study config (examples/plugin_task.py beside examples/plugin-study.yaml)
        # needs no PYTHONPATH: the config's folder is searched after everything else.
        if search_dir is None or exc.name not in (top, module_name) or not _has_module(search_dir, top):
            raise TaskError(
                f"key '{key}': cannot import module {module_name!r}: {exc}; put it next to the study config, "
                "install it, or add its folder to PYTHONPATH"
            ) from None
        if str(search_dir) not in sys.path:
            sys.path.append(str(search_dir))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc2:
            raise TaskError(f"key '{key}': cannot import module {module_name!r}: {exc2}") from None
    except ImportError as exc:
        raise TaskError(f"key '{key}': cannot import module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskError(f"key '{key}': module {module_name!r} has no attribute {attr!r}") from None


def _has_module(folder: Path, name: str) -> bool:
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def build_task(config: StudyConfig) -> Task:
    """Build the task a study config names and check it against the contract.

    Args:
        config: the study config.

    Returns:
        The task.
    """
    options = dict(config.task_options)
    if config.task in BUILTIN_TASKS:
        cls = _import(BUILTIN_TASKS[config.task])
        # Options that are paths (e.g. a dataset root) are relative to the config file, like every path in it.
        for key in getattr(cls, "path_options", ()):
            if isinstance(options.get(key), str):
                options[key] = str(config.resolve(options[key]))
        try:
            task = cls(model=config.model, model_options=config.model_options, **options)
        except TypeError as exc:
            raise TaskError(f"{config.source}: key 'task_options' for task {config.task!r}: {exc}") from None
    else:
        factory = _import(config.task, search_dir=config.base_dir)
        if not callable(factory):
            raise TaskError(f"key 'task': {config.task!r} is a {type(factory).__name__}, not a function returning a Task")
        try:
            task = factory(config=config, **options)
        except AutopruneError:
            raise
        except TypeError as exc:
            abstract = _ABSTRACT.search(str(exc))
            if abstract:  # a Task subclass that leaves a required method out
                missing = ", ".join(repr(m.strip(" '")) for m in abstract.group(1).split(","))
                raise TaskError(
                    f"plugin task {config.task!r}: its Task class does not implement field(s) {missing}; "
                    "define them (see autoprune.tasks.Task)"
                ) from None
            raise TaskError(f"plugin task {config.task!r} raised TypeError: {exc}") from None
        except Exception as exc:  # a plugin's own failure: name it, keep it to one line
            raise TaskError(f"plugin task {config.task!r} raised {type(exc).__name__}: {exc}") from None
    validate_task(task, config.task)
    task.device = resolve_device(config.device)
    task.loader_workers = config.loader.workers
    task.pin_memory = config.loader.pin_memory
    task.selection_fraction = config.search.selection_fraction
    task.selection_seed = config.search.seed or 0
    return task


_ABSTRACT = re.compile(r"abstract methods? (.+)$")
# What every task must provide (the abstract methods and the metric's description).
REQUIRED_FIELDS = ("build_model", "dataset", "evaluate_batches", "metric_name", "metric_direction")


def validate_task(task: Any, name: str) -> None:
    """Check that ``task`` keeps the :class:`Task` contract; raise :class:`TaskError` naming what is missing."""
    if not isinstance(task, Task):
        missing = [f for f in REQUIRED_FIELDS if getattr(task, f, None) is None]
        lacks = f"; it lacks field(s) {', '.join(repr(f) for f in missing)}" if missing else ""
        raise TaskError(
            f"task {name!r} returned {type(task).__name__}, not an autoprune.tasks.Task{lacks}; "
            "subclass autoprune.tasks.Task (or ClassificationTask) and implement build_model, dataset, evaluate_batches"
        )
    for field_name in ("build_model", "dataset", "evaluate_batches"):
        if not callable(getattr(task, field_name, None)):
            raise TaskError(f"task {name!r}: field {field_name!r} must be a method, got {type(getattr(task, field_name, None)).__name__}")
    if task.metric_direction not in ("maximize", "minimize"):
        raise TaskError(f"task {name!r}: field 'metric_direction' must be 'maximize' or 'minimize', got {task.metric_direction!r}")
    if not isinstance(task.metric_name, str) or not task.metric_name:
        raise TaskError(f"task {name!r}: field 'metric_name' must be a non-empty string")


__all__ = ["BUILTIN_TASKS", "SPLITS", "ClassificationTask", "MetricResult", "Task", "build_task", "validate_task"]
