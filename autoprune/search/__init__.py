"""The search service: study lifecycle and storage, the trial objective, workers.

Public names are imported lazily (as in :mod:`autoprune`), so that reading a storage
(:mod:`autoprune.search.storage`, used by the analysis) loads neither torch nor the workers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from autoprune.search.create import create_study
    from autoprune.search.storage import check_workers
    from autoprune.search.storage import open_storage
    from autoprune.search.study import create_or_load
    from autoprune.search.study import make_sampler
    from autoprune.search.study import wait_for_study
    from autoprune.search.worker import run_local
    from autoprune.search.worker import run_worker

_EXPORTS = {
    "check_workers": "autoprune.search.storage",
    "create_or_load": "autoprune.search.study",
    "create_study": "autoprune.search.create",
    "make_sampler": "autoprune.search.study",
    "open_storage": "autoprune.search.storage",
    "run_local": "autoprune.search.worker",
    "run_worker": "autoprune.search.worker",
    "wait_for_study": "autoprune.search.study",
}

__all__ = [
    "check_workers",
    "create_or_load",
    "create_study",
    "make_sampler",
    "open_storage",
    "run_local",
    "run_worker",
    "wait_for_study",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autoprune.search' has no attribute {name!r}")
