"""A speedup that one disturbed base timing cannot inflate: the interleaved ratio checked against a pooled base.

Interleaving cancels load that hits both models alike, and the spread of the per-block ratios catches load
that comes and goes.  It cannot see a disturbance that stays on the base for the whole measurement (an
unlucky session, a neighbour's burst that lines up with the base's blocks): every block ratio is then
inflated alike and the spread stays small.  Seen once: a base timed at 12.96 ms instead of the usual
6.3 ms made a candidate read 5.67x instead of about 3.2x.

So each process keeps a running median of the base latencies it has timed (:class:`BaseLatencyPool`,
seeded with a few timings of the base alone, each in its own session) and checks every interleaved
speedup against the candidate's own latency over that pooled base (:func:`pooled_verdict`).  When the two
disagree by more than the tolerance, the candidate is timed again in fresh sessions; if they still
disagree, the timing is flagged ``noisy`` and the smaller of the two speedups is reported, so an outlier
can never read faster than the pooled reference allows (:func:`measure_checked_speedup`).

Example:
    >>> pool = BaseLatencyPool()
    >>> for ms in (6.3, 6.2, 6.4):
    ...     pool.add(ms)
    >>> v = pooled_verdict(5.67, 0.01, candidate_ms=2.13, pooled_base_ms=pool.estimate())
    >>> v.agrees, round(v.speedup, 2)
    (False, 2.96)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import statistics
from collections.abc import Sequence

from autoprune.latency._settings import LatencySettings
from autoprune.latency._timer import SpeedupResult
from autoprune.latency._timer import measure
from autoprune.latency._timer import measure_speedup

logger = logging.getLogger("autoprune.latency")

# Largest relative disagreement between the interleaved speedup and the pooled one that still counts as
# agreement.  Session-to-session drift of a base timing on a shared 2-core host stays well inside it; a
# doubled base timing (the case seen) is five times beyond it.
POOL_TOLERANCE = 0.2
# How many base latencies the running median covers: long enough that one outlier cannot move it, short
# enough to follow a lasting change of the host's load within a handful of trials.
POOL_WINDOW = 15
# Base latencies needed before the pool vouches for anything (timed alone at the first trial of a process).
POOL_MIN_SAMPLES = 3
# Extra interleaved timings of a candidate whose speedup disagrees with the pooled one.
POOL_REMEASURE = 1


class BaseLatencyPool:
    """Running median of the base model's latency over the timings one process has made.

    Args:
        window: How many of the latest base latencies the median covers.
        min_samples: How many it needs before :meth:`estimate` answers.

    Example:
        >>> pool = BaseLatencyPool(min_samples=3)
        >>> pool.estimate() is None, pool.missing
        (True, 3)
        >>> for ms in (6.3, 12.96, 6.2):
        ...     pool.add(ms)
        >>> pool.estimate(), pool.missing
        (6.3, 0)
    """

    def __init__(self, window: int = POOL_WINDOW, min_samples: int = POOL_MIN_SAMPLES) -> None:
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"need window >= min_samples >= 1, got window={window}, min_samples={min_samples}")
        self.min_samples = min_samples
        self._samples: collections.deque[float] = collections.deque(maxlen=window)

    def add(self, base_ms: float) -> None:
        """Record one base latency (median of a timing, ms); non-finite or non-positive values are ignored.

        Args:
            base_ms: The base model's median latency in one timing.
        """
        if math.isfinite(base_ms) and base_ms > 0:
            self._samples.append(float(base_ms))

    @property
    def missing(self) -> int:
        """How many more base latencies :meth:`estimate` needs (0 when it answers)."""
        return max(0, self.min_samples - len(self._samples))

    def estimate(self) -> float | None:
        """The pooled base latency (median of the window), or ``None`` while samples are missing.

        Returns:
            Milliseconds, or ``None``.
        """
        return statistics.median(self._samples) if not self.missing else None

    def __len__(self) -> int:
        return len(self._samples)


@dataclasses.dataclass(frozen=True)
class PoolVerdict:
    """An interleaved speedup judged against the pooled base latency.

    Attributes:
        speedup: The speedup to report: the interleaved one when the two agree (or nothing could be
            checked), else the smaller of the two.
        speedup_interleaved: Median of the per-block ratios of the interleaved timing.
        speedup_pooled: ``pooled_base_ms / candidate_ms`` (``None`` without a pooled base).
        disagreement: ``|log(interleaved / pooled)|`` (``None`` without a pooled base).
        limit: The largest disagreement accepted: ``log(1 + max(tolerance, 3 * spread))``.
        agrees: Whether the two agree; ``None`` when there was nothing to check against.
    """

    speedup: float
    speedup_interleaved: float
    speedup_pooled: float | None
    disagreement: float | None
    limit: float
    agrees: bool | None


def pooled_verdict(
    interleaved: float,
    spread: float,
    candidate_ms: float,
    pooled_base_ms: float | None,
    tolerance: float = POOL_TOLERANCE,
) -> PoolVerdict:
    """Check an interleaved speedup against the candidate's own latency over the pooled base latency.

    The two estimates fail differently: the interleaved ratio is inflated by a disturbance that stays on
    the base, the pooled one is deflated when the whole host is slower during this timing.  Where they
    disagree the smaller is kept, so a disagreement can only ever cost a candidate speed, never add it.

    Args:
        interleaved: The interleaved speedup (median of the per-block ratios).
        spread: Its robust spread; a wide spread widens the accepted disagreement (``3 * spread``).
        candidate_ms: The candidate's median latency in the same timing.
        pooled_base_ms: The pooled base latency, or ``None`` when the pool cannot answer yet.
        tolerance: Smallest accepted relative disagreement.

    Returns:
        The :class:`PoolVerdict`.

    Example:
        >>> pooled_verdict(3.2, 0.02, candidate_ms=2.0, pooled_base_ms=6.3).agrees
        True
    """
    width = max(tolerance, 3 * spread) if math.isfinite(spread) else tolerance
    limit = math.log1p(width)
    unusable = not candidate_ms > 0 or not interleaved > 0 or not math.isfinite(interleaved)
    if unusable or pooled_base_ms is None or not (math.isfinite(pooled_base_ms) and pooled_base_ms > 0):
        return PoolVerdict(interleaved, interleaved, None, None, limit, None)
    pooled = float(pooled_base_ms) / float(candidate_ms)
    disagreement = abs(math.log(interleaved / pooled))
    agrees = disagreement <= limit
    return PoolVerdict(interleaved if agrees else min(interleaved, pooled), interleaved, pooled, disagreement, limit, agrees)


@dataclasses.dataclass(frozen=True)
class CheckedSpeedup:
    """An interleaved timing checked against the pooled base latency (see :func:`measure_checked_speedup`).

    Attributes:
        result: The kept interleaved timing (the one closest to the pooled reference).
        verdict: Its :class:`PoolVerdict`.
        speedup: The speedup to report (``verdict.speedup``).
        noisy: The kept timing's spread is above the threshold, or it still disagrees with the pool.
        pooled_base_ms: The pooled base latency it was checked against (``None``: unchecked).
        timings: Interleaved timings made for this candidate (1 + re-measures).
        seeded: Base-alone timings made to seed the pool.
    """

    result: SpeedupResult
    verdict: PoolVerdict
    speedup: float
    noisy: bool
    pooled_base_ms: float | None
    timings: int
    seeded: int


def _closer(new: PoolVerdict, old: PoolVerdict) -> bool:
    """Whether ``new`` sits closer to the pooled reference than ``old`` (unchecked verdicts never win)."""
    if new.disagreement is None:
        return False
    return old.disagreement is None or new.disagreement < old.disagreement


def seed_pool(
    pool: BaseLatencyPool,
    base_path: str | os.PathLike[str],
    settings: LatencySettings,
    input_shape: Sequence[int] | None = None,
) -> int:
    """Time the base alone, each time in a new session, until the pool can answer.

    Args:
        pool: The pool to fill.
        base_path: The base ONNX file.
        settings: Timing settings (taken without re-measures: the median of several sessions is the point).
        input_shape: Explicit input shape, or ``None``.

    Returns:
        How many timings were made.
    """
    needed = pool.missing
    once = settings.replace(max_remeasure=0)
    for _ in range(needed):
        pool.add(measure(base_path, once, input_shape).median_ms)
    return needed


def measure_checked_speedup(
    candidate_path: str | os.PathLike[str],
    base_path: str | os.PathLike[str],
    settings: LatencySettings,
    pool: BaseLatencyPool,
    *,
    tolerance: float = POOL_TOLERANCE,
    remeasure: int = POOL_REMEASURE,
    input_shape: Sequence[int] | None = None,
) -> CheckedSpeedup:
    """Time a candidate interleaved with the base and check it against the process's pooled base latency.

    Args:
        candidate_path: Candidate ONNX file.
        base_path: Base ONNX file (the pool must hold latencies of this file with these settings).
        settings: Timing settings.
        pool: This process's pool; seeded here when it cannot answer yet, and fed every base timing.
        tolerance: See :func:`pooled_verdict`.
        remeasure: Extra interleaved timings while the speedup disagrees with the pooled one.
        input_shape: Explicit input shape, or ``None``.

    Returns:
        The :class:`CheckedSpeedup`: its ``speedup`` never exceeds ``(1 + max(tolerance, 3 * spread))``
        times the pooled speedup, and ``noisy`` is set when the kept timing did not settle or still disagrees.

    Example:
        >>> # checked = measure_checked_speedup("pruned.onnx", "base.onnx", LatencySettings(), BaseLatencyPool())
        >>> # checked.speedup, checked.verdict.speedup_interleaved, checked.noisy
    """
    seeded = seed_pool(pool, base_path, settings, input_shape)
    pooled = pool.estimate()
    kept: tuple[SpeedupResult, PoolVerdict] | None = None
    timings = 0
    for _ in range(remeasure + 1):
        result = measure_speedup(candidate_path, base_path, settings, input_shape)
        timings += 1
        verdict = pooled_verdict(result.speedup, result.speedup_spread, result.candidate.median_ms, pooled, tolerance)
        pool.add(result.baseline.median_ms)
        if kept is None or _closer(verdict, kept[1]):
            kept = (result, verdict)
        if verdict.agrees is not False:
            break
        logger.info("%s: interleaved speedup %.3f disagrees with %.3f over the pooled base %.3f ms; re-measuring",
                    candidate_path, verdict.speedup_interleaved, verdict.speedup_pooled, pooled)
    assert kept is not None  # the loop times at least once
    result, verdict = kept
    noisy = result.noisy or verdict.agrees is False
    return CheckedSpeedup(result, verdict, verdict.speedup, noisy, pooled, timings, seeded)
