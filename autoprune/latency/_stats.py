"""Pure statistics of timing runs: no ONNX Runtime, no torch, easy to unit test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# IQR of a normal distribution is 1.349 sigma: dividing by it puts the robust spread on the CV scale, so
# one ``cv_threshold`` gates both single-model timings and speedups.
_IQR_TO_SIGMA = 1.349


def is_noisy(spread: float, threshold: float) -> bool:
    """Whether a spread (a block CV or a speedup's robust spread) leaves its timing unsettled.

    A spread that is not a number (NaN: nothing could be compared) counts as unsettled, so a broken
    measurement can never pass as a clean one; ``spread > threshold`` alone would let NaN through.

    Args:
        spread: The measured spread (relative, e.g. 0.03 for 3 %).
        threshold: The largest spread accepted as settled (``LatencySettings.cv_threshold``).

    Returns:
        True unless ``spread <= threshold``.

    Example:
        >>> is_noisy(0.209, 0.05), is_noisy(0.01, 0.05), is_noisy(float("nan"), 0.05)
        (True, False, True)
    """
    return not float(spread) <= float(threshold)


def block_cv(block_medians: Sequence[float]) -> float:
    """Coefficient of variation of the block medians: ``std(medians) / median(medians)``.

    The population standard deviation (``ddof=0``) is used, so one block gives 0.

    Args:
        block_medians: Median time of each block.

    Returns:
        The CV (0 for fewer than two blocks; ``inf`` if the median is not positive).
    """
    values = np.asarray(block_medians, dtype=np.float64)
    if values.size < 2:
        return 0.0
    center = float(np.median(values))
    if center <= 0:
        return float("inf")
    return float(np.std(values) / center)


def robust_spread(values: Sequence[float]) -> float:
    """Robust relative spread: ``(IQR / 1.349) / median``.

    For normally distributed values this equals the CV, but one or two spiked blocks (a neighbour's
    burst of work) barely move it, unlike the standard deviation.

    Args:
        values: For example the per-block speedup ratios.

    Returns:
        The spread (0 for fewer than two values; ``inf`` if the median is not positive).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return 0.0
    center = float(np.median(arr))
    if center <= 0:
        return float("inf")
    q1, q3 = np.percentile(arr, [25, 75])
    return float((q3 - q1) / _IQR_TO_SIGMA / center)


def block_medians(blocks_ms: Sequence[Sequence[float]]) -> list[float]:
    """Median run time of each block.

    Args:
        blocks_ms: One sequence of run times (milliseconds) per block.

    Returns:
        One median per block.

    Example:
        >>> block_medians([[1.0, 3.0, 2.0], [4.0]])
        [2.0, 4.0]
    """
    return [float(np.median(np.asarray(b, dtype=np.float64))) for b in blocks_ms]


def summarize(blocks_ms: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Summarize timed runs grouped in blocks.

    Args:
        blocks_ms: One sequence of run times (milliseconds) per block.

    Returns:
        ``median_ms``, ``p90_ms``, ``mean_ms``, ``mad_ms`` (median absolute deviation, unscaled) over all
        runs; ``cv`` (:func:`block_cv` of the block medians); ``n`` (number of runs) and
        ``block_medians_ms``.

    Example:
        >>> summarize([[1.0, 1.0], [1.0, 3.0]])["median_ms"]
        1.0
    """
    medians = block_medians(blocks_ms)
    runs = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks_ms])
    median = float(np.median(runs))
    return {
        "median_ms": median,
        "p90_ms": float(np.percentile(runs, 90)),
        "mean_ms": float(np.mean(runs)),
        "mad_ms": float(np.median(np.abs(runs - median))),
        "cv": block_cv(medians),
        "n": int(runs.size),
        "block_medians_ms": medians,
    }


def block_ratios(base_medians: Sequence[float], candidate_medians: Sequence[float]) -> list[float]:
    """Per-block speedup ratios ``base / candidate``.

    Args:
        base_medians: Baseline block medians.
        candidate_medians: Candidate block medians, same blocks.

    Returns:
        One ratio per block.
    """
    if len(base_medians) != len(candidate_medians):
        raise ValueError(f"{len(base_medians)} baseline blocks but {len(candidate_medians)} candidate blocks")
    return [float(b) / float(c) if c > 0 else float("inf") for b, c in zip(base_medians, candidate_medians, strict=True)]
