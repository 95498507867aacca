"""Tasks: the model, its data, its loss and its metric, behind one contract.

Built-in tasks are named in a study config (``task: digits``); a plugin is named as
``task: package.module:function`` and must return a :class:`Task` (see README, "Bring your own model").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

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


def _import(spec: str, key: str = "task") -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"key '{key}': cannot import module {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskError(f"key '{key}': module {module_name!r} has no attribute {attr!r}") from None


def build_task(config: "StudyConfig") -> Task:
    """Build the task a study config names and check it against the contract.

    Args:
        config: the study config.

    Returns:
        The task.
    """
    options = dict(config.task_options)
    if config.task in BUILTIN_TASKS:
        cls = _import(BUILTIN_TASKS[config.task])
        try:
            task = cls(model=config.model, model_options=config.model_options, **options)
        except TypeError as exc:
            raise TaskError(f"{config.source}: key 'task_options' for task {config.task!r}: {exc}") from None
    else:
        factory = _import(config.task)
        try:
            task = factory(config=config, **options)
        except TaskError:
            raise
        except Exception as exc:  # a plugin's own failure: name it, keep it to one line
            raise TaskError(f"plugin task {config.task!r} raised {type(exc).__name__}: {exc}") from None
    validate_task(task, config.task)
    return task


def validate_task(task: Any, name: str) -> None:
    """Check that ``task`` keeps the :class:`Task` contract; raise :class:`TaskError` naming what is missing."""
    if not isinstance(task, Task):
        raise TaskError(
            f"task {name!r} returned {type(task).__name__}, not an autoprune.tasks.Task; "
            "subclass autoprune.tasks.Task (or ClassificationTask) and implement build_model, dataset, evaluate_batches"
        )
    if task.metric_direction not in ("maximize", "minimize"):
        raise TaskError(f"task {name!r}: field 'metric_direction' must be 'maximize' or 'minimize', got {task.metric_direction!r}")
    if not isinstance(task.metric_name, str) or not task.metric_name:
        raise TaskError(f"task {name!r}: field 'metric_name' must be a non-empty string")


__all__ = ["BUILTIN_TASKS", "SPLITS", "ClassificationTask", "MetricResult", "Task", "build_task", "validate_task"]
