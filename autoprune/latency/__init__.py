"""Real latency: ONNX export, ONNX Runtime timing, host lock, host fingerprint and a latency cache.

Typical use::

    from autoprune.latency import LatencySettings, export_onnx, measure_speedup

    export_onnx(base_model, x, "base.onnx")
    export_onnx(pruned_model, x, "pruned.onnx")
    result = measure_speedup("pruned.onnx", "base.onnx", LatencySettings(batch_size=8, threads=1))
    print(result.speedup, result.speedup_spread, result.noisy)

A search times many candidates against the same base; :func:`measure_checked_speedup` also checks each
interleaved speedup against the base latency pooled over the process's timings (:class:`BaseLatencyPool`),
so one disturbed base timing cannot make a candidate look faster than it is.

Public names are imported lazily (as in :mod:`autoprune`): a private module such as ``_providers`` or
``_settings`` loads without the timer and the exporter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from autoprune.latency._cache import LatencyCache
    from autoprune.latency._export import compare_outputs
    from autoprune.latency._export import export_onnx
    from autoprune.latency._host import cpu_round_to
    from autoprune.latency._host import host_fingerprint
    from autoprune.latency._lock import default_lock_dir
    from autoprune.latency._lock import timing_lock
    from autoprune.latency._lock import training_pids
    from autoprune.latency._lock import training_section
    from autoprune.latency._pool import BaseLatencyPool
    from autoprune.latency._pool import CheckedSpeedup
    from autoprune.latency._pool import PoolVerdict
    from autoprune.latency._pool import measure_checked_speedup
    from autoprune.latency._pool import pooled_verdict
    from autoprune.latency._pool import seed_pool
    from autoprune.latency._report import latency_report
    from autoprune.latency._settings import LatencySettings
    from autoprune.latency._stats import is_noisy
    from autoprune.latency._timer import LatencyStats
    from autoprune.latency._timer import SpeedupResult
    from autoprune.latency._timer import measure
    from autoprune.latency._timer import measure_speedup
    from autoprune.latency._timer import measure_speedups

_EXPORTS = {
    "BaseLatencyPool": "autoprune.latency._pool",
    "CheckedSpeedup": "autoprune.latency._pool",
    "LatencyCache": "autoprune.latency._cache",
    "LatencySettings": "autoprune.latency._settings",
    "LatencyStats": "autoprune.latency._timer",
    "PoolVerdict": "autoprune.latency._pool",
    "SpeedupResult": "autoprune.latency._timer",
    "compare_outputs": "autoprune.latency._export",
    "cpu_round_to": "autoprune.latency._host",
    "default_lock_dir": "autoprune.latency._lock",
    "export_onnx": "autoprune.latency._export",
    "host_fingerprint": "autoprune.latency._host",
    "is_noisy": "autoprune.latency._stats",
    "latency_report": "autoprune.latency._report",
    "measure": "autoprune.latency._timer",
    "measure_checked_speedup": "autoprune.latency._pool",
    "measure_speedup": "autoprune.latency._timer",
    "measure_speedups": "autoprune.latency._timer",
    "pooled_verdict": "autoprune.latency._pool",
    "seed_pool": "autoprune.latency._pool",
    "timing_lock": "autoprune.latency._lock",
    "training_pids": "autoprune.latency._lock",
    "training_section": "autoprune.latency._lock",
}

__all__ = [
    "BaseLatencyPool",
    "CheckedSpeedup",
    "LatencyCache",
    "LatencySettings",
    "LatencyStats",
    "PoolVerdict",
    "SpeedupResult",
    "compare_outputs",
    "cpu_round_to",
    "default_lock_dir",
    "export_onnx",
    "host_fingerprint",
    "is_noisy",
    "latency_report",
    "measure",
    "measure_checked_speedup",
    "measure_speedup",
    "measure_speedups",
    "pooled_verdict",
    "seed_pool",
    "timing_lock",
    "training_pids",
    "training_section",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autoprune.latency' has no attribute {name!r}")
