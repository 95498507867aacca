"""Pruning engine: dependency groups with stable names, criteria, guards, ratio vectors, replay by index."""

from __future__ import annotations

from autoprune.pruning.criteria import CRITERIA
from autoprune.pruning.criteria import Criterion
from autoprune.pruning.criteria import make_criterion
from autoprune.pruning.engine import Group
from autoprune.pruning.engine import Pruner
from autoprune.pruning.engine import PruneResult
from autoprune.pruning.guards import Clamp
from autoprune.pruning.guards import GuardSettings
from autoprune.pruning.guards import kept_channels
from autoprune.pruning.guards import max_ratio
from autoprune.pruning.guards import min_keep

__all__ = [
    "CRITERIA",
    "Clamp",
    "Criterion",
    "Group",
    "GuardSettings",
    "PruneResult",
    "Pruner",
    "kept_channels",
    "make_criterion",
    "max_ratio",
    "min_keep",
]
