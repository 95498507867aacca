"""Pruning engine: dependency groups with stable names, criteria, guards, ratio vectors, replay by index.

Public names are imported lazily, so the pure guards (:mod:`autoprune.pruning.guards`) load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CRITERIA": "autoprune.pruning.criteria",
    "Criterion": "autoprune.pruning.criteria",
    "make_criterion": "autoprune.pruning.criteria",
    "Group": "autoprune.pruning.engine",
    "Pruner": "autoprune.pruning.engine",
    "PruneResult": "autoprune.pruning.engine",
    "Clamp": "autoprune.pruning.guards",
    "GuardSettings": "autoprune.pruning.guards",
    "kept_channels": "autoprune.pruning.guards",
    "max_ratio": "autoprune.pruning.guards",
    "min_keep": "autoprune.pruning.guards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autoprune.pruning' has no attribute {name!r}")
