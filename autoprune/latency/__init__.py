"""Real latency: ONNX export, ONNX Runtime timing, host lock, host fingerprint and a latency cache.

Typical use::

    from autoprune.latency import LatencySettings, export_onnx, measure_speedup

    export_onnx(base_model, x, "base.onnx")
    export_onnx(pruned_model, x, "pruned.onnx")
    result = measure_speedup("pruned.onnx", "base.onnx", LatencySettings(batch_size=8, threads=1))
    print(result.speedup, result.speedup_spread, result.noisy)
"""

from __future__ import annotations

from autoprune.latency._cache import LatencyCache
from autoprune.latency._export import compare_outputs
from autoprune.latency._export import export_onnx
from autoprune.latency._host import cpu_round_to
from autoprune.latency._host import host_fingerprint
from autoprune.latency._lock import default_lock_dir
from autoprune.latency._lock import timing_lock
from autoprune.latency._lock import training_pids
from autoprune.latency._lock import training_section
from autoprune.latency._report import latency_report
from autoprune.latency._settings import LatencySettings
from autoprune.latency._timer import LatencyStats
from autoprune.latency._timer import SpeedupResult
from autoprune.latency._timer import measure
from autoprune.latency._timer import measure_speedup
from autoprune.latency._timer import measure_speedups

__all__ = [
    "LatencyCache",
    "LatencySettings",
    "LatencyStats",
    "SpeedupResult",
    "compare_outputs",
    "cpu_round_to",
    "default_lock_dir",
    "export_onnx",
    "host_fingerprint",
    "latency_report",
    "measure",
    "measure_speedup",
    "measure_speedups",
    "timing_lock",
    "training_pids",
    "training_section",
]
