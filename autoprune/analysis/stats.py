"""How much of a metric drop is noise: standard errors, intervals and the budget-vs-noise check.

Pure (numpy only).  A search that selects the best of many candidates on one validation set is biased
towards candidates that were lucky on it; these helpers let the report say how large that luck can be,
and warn when the drop budget is smaller than the measurement can resolve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np

# Keep one bootstrap block under ~16 MB of float64 weights however large the validation set is.
_BLOCK_ELEMENTS = 2_000_000


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of a proportion (accuracy) measured on ``n`` independent samples.

    Args:
        p: the measured proportion, in [0, 1].
        n: the number of samples, > 0.

    Returns:
        ``sqrt(p * (1 - p) / n)``.

    Example:
        >>> round(binomial_stderr(0.98, 500), 5)
        0.00626
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a proportion in [0, 1], got {p}")
    if n <= 0:
        raise ValueError(f"n must be a positive sample count, got {n}")
    return math.sqrt(p * (1.0 - p) / n)


def _bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks of resampling weights (how often each sample is drawn), ``n_boot`` rows in all.

    Multinomial counts are the same resampling as drawing indices with replacement, but let a statistic
    that is a sum (mean, intersection/union totals) be one matrix product per block.
    """
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_boot:
        rows = min(block, n_boot - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=rows).astype(np.float64)
        done += rows


def _check_boot(n: int, n_boot: int) -> None:
    """Reject inputs a bootstrap cannot say anything about."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 samples, got {n}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")


def bootstrap_stderr(
    per_sample_values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of a statistic of per-sample values.

    Args:
        per_sample_values: one value per validation sample (for example per-image loss or correctness).
        statistic: function of a resampled 1-D array; ``None`` means the mean (computed in blocks,
            without materialising every resample).
        n_boot: number of bootstrap resamples.
        seed: random seed, so a report is reproducible.

    Returns:
        The standard deviation (ddof=1) of the statistic over the resamples.

    Example:
        >>> se = bootstrap_stderr([1.0] * 490 + [0.0] * 10, n_boot=2000, seed=0)
        >>> abs(se - binomial_stderr(0.98, 500)) < 0.0005
        True
    """
    values = np.asarray(per_sample_values, dtype=np.float64).ravel()
    n = values.size
    _check_boot(n, n_boot)
    if statistic is None:
        stats = np.concatenate([w @ values / n for w in _bootstrap_weights(n, n_boot, seed)])
    else:
        rng = np.random.default_rng(seed)
        stats = np.array([statistic(values[rng.integers(0, n, size=n)]) for _ in range(n_boot)])
    return float(np.std(stats, ddof=1))


def miou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean intersection-over-union from per-sample counts, over classes that occur (union > 0).

    Args:
        inter: samples x classes intersection pixel counts.
        union: samples x classes union pixel counts.

    Returns:
        The dataset-level mIoU (totals summed over samples first, as segmentation benchmarks do).
    """
    total_i = np.asarray(inter, dtype=np.float64).sum(axis=0)
    total_u = np.asarray(union, dtype=np.float64).sum(axis=0)
    present = total_u > 0
    return float((total_i[present] / total_u[present]).mean()) if present.any() else math.nan


def bootstrap_miou_stderr(
    inter: np.ndarray | Sequence[Sequence[float]],
    union: np.ndarray | Sequence[Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of the dataset-level mIoU, resampling images.

    mIoU is a ratio of totals, not a mean of per-image values, so the per-image counts are resampled
    and the totals recomputed for every resample.  A class absent from a resample (union 0) is left out
    of that resample's mean, as :func:`miou` does.

    Args:
        inter: samples x classes intersection counts.
        union: samples x classes union counts (same shape).
        n_boot: number of resamples.
        seed: random seed.

    Returns:
        The standard deviation (ddof=1) of the resampled mIoU.

    Example:
        >>> import numpy as np
        >>> inter = np.array([[5, 0], [3, 2], [4, 1]]); union = np.array([[6, 1], [4, 2], [5, 2]])
        >>> bootstrap_miou_stderr(inter, union, n_boot=200, seed=1) > 0
        True
    """
    inter_a = np.asarray(inter, dtype=np.float64)
    union_a = np.asarray(union, dtype=np.float64)
    if inter_a.ndim != 2 or inter_a.shape != union_a.shape:
        raise ValueError(
            f"inter and union must both be samples x classes arrays of one shape, got {inter_a.shape} "
            f"and {union_a.shape}"
        )
    n = inter_a.shape[0]
    _check_boot(n, n_boot)
    out = []
    for w in _bootstrap_weights(n, n_boot, seed):
        tot_i, tot_u = w @ inter_a, w @ union_a
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.nanmean(np.where(tot_u > 0, tot_i / tot_u, np.nan), axis=1))
    return float(np.std(np.concatenate(out), ddof=1))


def drop_stderr(base_se: float, cand_se: float) -> float:
    """Standard error of ``drop = base - candidate``, treating the two errors as independent.

    ``sqrt(base_se**2 + cand_se**2)``.  Both metrics are usually measured on the same validation set,
    where their errors are positively correlated and the paired standard error is smaller; the
    independent formula therefore overstates the noise, which is the safe side for a budget check.

    Args:
        base_se: standard error of the unpruned model's metric.
        cand_se: standard error of the candidate's metric.

    Returns:
        The standard error of the drop.

    Example:
        >>> round(drop_stderr(0.003, 0.004), 6)
        0.005
    """
    return math.hypot(base_se, cand_se)


def drop_interval(drop: float, se: float, z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation interval ``drop ± z·se`` (z = 1.96: about 95 %).

    Args:
        drop: the measured drop.
        se: its standard error.
        z: the number of standard errors on each side.

    Returns:
        ``(low, high)``.

    Example:
        >>> [round(x, 6) for x in drop_interval(0.01, 0.005)]
        [0.0002, 0.0198]
    """
    half = z * se
    return (drop - half, drop + half)


def samples_needed(max_drop: float, drop_se: float, n_val: int, k: float = 2.0) -> int:
    """Validation samples needed so that ``k`` standard errors of the drop fit under ``max_drop``.

    Standard errors of a proportion (and, roughly, of a bootstrapped metric) scale as ``1/sqrt(n)``, so
    ``se(n') = drop_se * sqrt(n_val / n')`` and ``k * se(n') <= max_drop`` needs
    ``n' >= n_val * (k * drop_se / max_drop) ** 2``.

    Args:
        max_drop: the drop budget (> 0).
        drop_se: the drop's standard error measured with ``n_val`` samples.
        n_val: the current number of validation samples.
        k: how many standard errors must fit under the budget.

    Returns:
        The smallest such sample count (smaller than ``n_val`` when the budget is already resolved).

    Example:
        >>> samples_needed(0.005, 0.00626, 500)
        3136
    """
    if max_drop <= 0:
        raise ValueError(f"max_drop must be > 0 to be resolvable by any sample count, got {max_drop}")
    if n_val <= 0:
        raise ValueError(f"n_val must be a positive sample count, got {n_val}")
    return math.ceil(n_val * (k * drop_se / max_drop) ** 2 - 1e-9)


def budget_noise_warning(
    max_drop: float, drop_se: float, n_val: int | None = None, k: float = 2.0
) -> str | None:
    """A warning when the drop budget is within ``k`` standard errors of the drop, else ``None``.

    Below that, "feasible" mostly means "lucky on this validation set": the search will pick candidates
    whose true drop exceeds the budget.

    Args:
        max_drop: the drop budget.
        drop_se: the standard error of a drop (see :func:`drop_stderr`).
        n_val: validation samples behind ``drop_se``; when known, the message gives the sample count
            that would resolve the budget, otherwise the factor.
        k: the margin, in standard errors.

    Returns:
        The warning text, or ``None`` when ``max_drop >= k * drop_se`` (or the noise is unknown).

    Example:
        >>> budget_noise_warning(0.02, 0.00626, 500) is None
        True
        >>> "3136" in budget_noise_warning(0.005, 0.00626, 500)
        True
    """
    if not math.isfinite(drop_se) or drop_se <= 0 or max_drop >= k * drop_se:
        return None
    head = (
        f"max drop {max_drop:g} is below {k:g} standard errors of the drop ({k:g} x {drop_se:.4g} = "
        f"{k * drop_se:.4g}): which trials look feasible is largely measurement noise"
    )
    if max_drop <= 0:
        return head + "; no validation set resolves a zero budget, allow some drop"
    factor = (k * drop_se / max_drop) ** 2
    if n_val:
        need = samples_needed(max_drop, drop_se, n_val, k)
        return head + f"; about {need} validation samples (now {n_val}, {factor:.1f}x) would resolve it"
    return head + f"; about {factor:.1f}x the current validation samples would resolve it"
