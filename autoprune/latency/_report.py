"""One flat summary of a timing, as printed by ``autoprune latency`` (text or JSON)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autoprune.latency._settings import LatencySettings
from autoprune.latency._timer import measure
from autoprune.latency._timer import measure_speedup

_STAT_FIELDS = ("median_ms", "p90_ms", "mean_ms", "mad_ms", "cv", "n")


def latency_report(
    model_path: str | os.PathLike[str],
    baseline_path: str | os.PathLike[str] | None = None,
    settings: LatencySettings | None = None,
    input_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Time a model (and, with a baseline, its interleaved speedup) and flatten the result.

    Args:
        model_path: The ONNX model.
        baseline_path: Optional baseline ONNX model.
        settings: Timing settings.
        input_shape: Explicit input shape, or ``None`` for the model's.

    Returns:
        ``path``, ``median_ms``, ``p90_ms``, ``mean_ms``, ``mad_ms``, ``cv``, ``n``, ``noisy``,
        ``attempts``, ``input_shape``, ``batch_size``, ``threads``, ``repeats``, ``graph_optimization``,
        ``host`` and ``settings``; with a baseline also ``baseline_path``, ``baseline_median_ms``,
        ``baseline_p90_ms``, ``baseline_cv``, ``speedup``, ``speedup_spread``, ``spread_kind`` and
        ``block_ratios``.  With a baseline, ``noisy`` refers to the speedup spread.

    Example:
        >>> # report = latency_report("pruned.onnx", "base.onnx")
        >>> # report["speedup"], report["speedup_spread"]
    """
    settings = settings or LatencySettings()
    if baseline_path is None:
        stats = measure(model_path, settings, input_shape)
        result = stats.as_dict()
        result.pop("block_medians_ms")
        return result
    speed = measure_speedup(model_path, baseline_path, settings, input_shape)
    cand, base = speed.candidate, speed.baseline
    report: dict[str, Any] = {"path": cand.path}
    report.update({name: getattr(cand, name) for name in _STAT_FIELDS})
    report.update(
        {
            "noisy": speed.noisy,
            "attempts": speed.attempts,
            "baseline_path": base.path,
            "baseline_median_ms": base.median_ms,
            "baseline_p90_ms": base.p90_ms,
            "baseline_cv": base.cv,
            "speedup": speed.speedup,
            "speedup_spread": speed.speedup_spread,
            "spread_kind": speed.spread_kind,
            "block_ratios": speed.block_ratios,
            "input_shape": speed.input_shape,
            "batch_size": speed.batch_size,
            "threads": speed.threads,
            "repeats": speed.repeats,
            "graph_optimization": cand.graph_optimization,
            "measured_at": speed.measured_at,
            "wall_s": speed.wall_s,
            "host": speed.host,
            "settings": speed.settings,
        }
    )
    return report
