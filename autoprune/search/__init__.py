"""The search service: study lifecycle and storage, the trial objective, workers."""

from __future__ import annotations

from autoprune.search.create import create_study
from autoprune.search.storage import check_workers
from autoprune.search.storage import open_storage
from autoprune.search.study import create_or_load
from autoprune.search.study import make_sampler
from autoprune.search.study import wait_for_study
from autoprune.search.worker import run_local
from autoprune.search.worker import run_worker

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
