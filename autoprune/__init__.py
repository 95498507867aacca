"""autoprune: per-layer structured pruning ratios searched with Optuna, judged by real latency.

The data flow, one package (or module) per step::

    config -> tasks -> pruning -> space (sweeps, bounds, widths) -> trial (prune, recover, evaluate, time)
           -> search (study, workers) -> analysis (Pareto front, choice, report)
           -> selection (confirm, export, finalize, architecture JSON and apply)

Public names are imported lazily so that the pure parts (bounds, Pareto front, statistics) load without
torch or a database.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "StudyConfig": "autoprune.config",
    "load_config": "autoprune.config",
    "Task": "autoprune.tasks",
    "build_task": "autoprune.tasks",
    "Pruner": "autoprune.pruning",
    "GuardSettings": "autoprune.pruning",
    "compute_bounds": "autoprune.space.bounds",
    "SweepPoint": "autoprune.space.bounds",
    "StudyContext": "autoprune.trial.candidate",
    "evaluate_candidate": "autoprune.trial.candidate",
    "run_baselines": "autoprune.space.baselines",
    "read_architecture": "autoprune.selection.architecture",
    "apply_architecture": "autoprune.selection.architecture",
    "AutopruneError": "autoprune.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
