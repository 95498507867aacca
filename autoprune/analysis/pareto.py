"""Pareto front, selection under a drop budget and hypervolume, on plain numbers.

Pure: no torch, no Optuna, no database.  Every function takes either a ``pandas.DataFrame`` (one row per
trial, as built by :func:`autoprune.analysis.load_trials`) or a sequence of mappings with the same keys,
so the sweeps stored as study attributes (lists of dicts) and the trial table go through one code path.

The two objectives are the task metric, in its own direction (``"maximize"`` for accuracy or mIoU,
``"minimize"`` for an error), and the speedup, always maximised.  Rows whose ``state`` (when that key
exists) is not ``COMPLETE``, or whose metric or speedup is missing or not finite, take no part.

A speedup whose timing did not settle (flagged ``latency_noisy``, or a ``speedup_spread`` above the
``cv_threshold`` given) may not lead anything: :func:`settled` keeps a row only when its own timing
settled or a later settled re-timing (``confirmed:*`` from ``autoprune confirm``, ``timings:<host>:*`` from
``autoprune retime``) stands in for it, and :func:`pareto_front`, :func:`select` and :func:`best_baseline`
work on those rows only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import pandas as pd

from autoprune.errors import SelectionError
from autoprune.search.study_attrs import confirmed_column
from autoprune.search.study_attrs import timings_column

Points = TypeVar("Points", pd.DataFrame, Sequence[Mapping[str, Any]])

_DIRECTIONS = ("maximize", "minimize")


def as_float(value: Any) -> float:
    """``value`` as a float, NaN where it is missing or not a number (so comparisons simply fail).

    Example:
        >>> as_float(None), as_float("2.5")
        (nan, 2.5)
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flag(value: Any) -> bool:
    """A recorded boolean flag: only a real True counts (a missing value reads NaN or None, both not set)."""
    return str(value) == "True"  # bool and numpy.bool_ alike


def unsettled(noisy: Any, spread: Any, cv_threshold: float | None = None) -> bool:
    """Whether a timing did not settle: flagged noisy, or its spread is above ``cv_threshold``.

    The recorded spread is judged again because a flag is only as good as the code that set it; an unknown
    spread (older or hand-made rows) leaves the judgment to the flag.

    Args:
        noisy: The recorded flag (``latency_noisy``, ``confirmed:noisy``, ...).
        spread: The recorded relative spread of the speedup (``speedup_spread``).
        cv_threshold: The study's ``latency.cv_threshold``; ``None`` trusts the flag alone.

    Returns:
        True when the timing may not lead a front, a pick or a headline.

    Example:
        >>> unsettled(False, 0.209, 0.05), unsettled(False, 0.02, 0.05), unsettled(True, None)
        (True, False, True)
    """
    s = as_float(spread)
    return _flag(noisy) or (cv_threshold is not None and not math.isnan(s) and not s <= cv_threshold)


def retiming(row: Mapping[str, Any], cv_threshold: float | None = None) -> tuple[float, float, str] | None:
    """A settled re-timing of ``row`` on the host its speedup was judged on, if there is one.

    Args:
        row: A trial row with its ``confirmed:*`` and ``timings:<host>:*`` columns.
        cv_threshold: See :func:`unsettled`.

    Returns:
        ``(speedup, spread, "confirmed" or "retimed")``, or ``None``.
    """
    host = row.get("speedup_host_id")
    host = host if isinstance(host, str) else None
    confirmed_host = row.get(confirmed_column("host_id"))
    same_host = host is None or not isinstance(confirmed_host, str) or confirmed_host == host
    speed = as_float(row.get(confirmed_column("speedup")))
    if same_host and math.isfinite(speed) and not unsettled(
        row.get(confirmed_column("noisy")), row.get(confirmed_column("speedup_spread")), cv_threshold
    ):
        return speed, as_float(row.get(confirmed_column("speedup_spread"))), "confirmed"
    if host is None:
        return None
    speed = as_float(row.get(timings_column(host, "speedup")))
    spread = row.get(timings_column(host, "speedup_spread"))
    if math.isfinite(speed) and not unsettled(row.get(timings_column(host, "noisy")), spread, cv_threshold):
        return speed, as_float(spread), "retimed"
    return None


def settle(row: Mapping[str, Any], cv_threshold: float | None = None) -> dict[str, Any] | None:
    """The row as the analysis may use it, or ``None`` when its speedup rests on an unsettled timing.

    A row whose own timing settled keeps it (``timing`` = ``"measured"``); one whose timing did not settle
    counts with a settled re-timing on the same host (``"confirmed"`` or ``"retimed"``: ``speedup`` and
    ``speedup_spread`` replaced), else it is left out.  ``speedup_searched`` keeps the recorded figure.

    Args:
        row: A trial row (or a sweep point).
        cv_threshold: See :func:`unsettled`.

    Returns:
        A new dict with ``timing`` set, or ``None``.

    Example:
        >>> settle({"speedup": 5.67, "speedup_spread": 0.209, "confirmed:speedup": 3.24}, 0.05)["speedup"]
        3.24
    """
    out = dict(row)
    out.setdefault("speedup_searched", row.get("speedup"))
    if not unsettled(row.get("latency_noisy"), row.get("speedup_spread"), cv_threshold):
        out.setdefault("timing", "measured")
        return out
    again = retiming(row, cv_threshold)
    if again is None:
        return None
    out["speedup"], out["speedup_spread"], out["timing"] = again
    return out


def settled(points: Points, cv_threshold: float | None = None) -> Points:
    """The rows of ``points`` whose speedup may lead a front, a pick or a headline (see :func:`settle`).

    Args:
        points: A DataFrame or a sequence of mappings.
        cv_threshold: See :func:`unsettled`.

    Returns:
        The same kind of container (a DataFrame keeps its index), unsettled rows left out.
    """
    rows = [settle(row, cv_threshold) for row in _records(points)]
    if not isinstance(points, pd.DataFrame):
        return [r for r in rows if r is not None]
    kept = [r for r in rows if r is not None]
    # Only the timing columns change: the other columns keep their dtypes (nullable channel counts).
    frame = _take(points, [r is not None for r in rows]).copy()
    for col in ("speedup", "speedup_spread", "speedup_searched"):
        frame[col] = [as_float(r.get(col)) for r in kept]  # by position: an index may repeat labels
    frame["timing"] = [r["timing"] for r in kept]
    return frame


def _sign(metric_direction: str) -> float:
    """+1 when a larger metric is better, -1 when a smaller one is; anything else is a caller bug."""
    if metric_direction not in _DIRECTIONS:
        raise ValueError(f"metric_direction must be 'maximize' or 'minimize', got {metric_direction!r}")
    return 1.0 if metric_direction == "maximize" else -1.0


def _records(points: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``points`` as a list of plain dicts."""
    if isinstance(points, pd.DataFrame):
        return points.to_dict("records")
    return [dict(p) for p in points]


def _take(df: pd.DataFrame, mask: list[bool]) -> pd.DataFrame:
    """Rows of ``df`` where ``mask`` is true (by position: ``df[[]]`` would select columns instead)."""
    return df.iloc[[i for i, keep in enumerate(mask) if keep]]


def _usable(row: Mapping[str, Any], metric_key: str, speedup_key: str) -> bool:
    """Whether a row is a finished measurement with both objectives present."""
    state = row.get("state")
    if state is not None and str(state) != "COMPLETE":
        return False
    return math.isfinite(as_float(row.get(metric_key))) and math.isfinite(as_float(row.get(speedup_key)))


def completed(df: pd.DataFrame, *, metric_key: str = "metric", speedup_key: str = "speedup") -> pd.DataFrame:
    """The rows of a trial table that take part in the analysis (complete, both objectives finite).

    Args:
        df: a trial table.
        metric_key: the column holding the metric.
        speedup_key: the column holding the speedup.

    Returns:
        The usable rows, index kept.
    """
    return _take(df, [_usable(r, metric_key, speedup_key) for r in _records(df)])


def pareto_mask(
    points: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    metric_direction: str = "maximize",
    metric_key: str = "metric",
    speedup_key: str = "speedup",
) -> list[bool]:
    """Flag the non-dominated rows of ``points``, taken as given (:func:`pareto_front` settles them first).

    A row is dominated when another usable row is at least as good on both objectives and strictly better
    on one.  Two rows with exactly the same (metric, speedup) do not dominate each other, so duplicates of
    a non-dominated point are all flagged: the front reports every trial that reached it (rounded channel
    counts make repeated architectures common), not an arbitrary one of them.

    Args:
        points: a DataFrame or a sequence of mappings with ``metric_key`` and ``speedup_key``.
        metric_direction: ``"maximize"`` or ``"minimize"`` for the metric; the speedup is maximised.
        metric_key: the column holding the metric.
        speedup_key: the column holding the speedup.

    Returns:
        One bool per row, in the input order; unusable rows are ``False``.
    """
    return _front_mask(_records(points), _sign(metric_direction), metric_key, speedup_key)


def _front_mask(rows: list[dict[str, Any]], sign: float, metric_key: str, speedup_key: str) -> list[bool]:
    """:func:`pareto_mask` on rows already turned into dicts."""
    usable = [
        (i, sign * as_float(r[metric_key]), as_float(r[speedup_key]))
        for i, r in enumerate(rows)
        if _usable(r, metric_key, speedup_key)
    ]
    mask = [False] * len(rows)
    # Sweep from the fastest speed down: a point survives when it has the best metric among points of
    # its own speed and beats every strictly faster point's metric.  O(n log n) instead of all pairs.
    usable.sort(key=lambda t: -t[2])
    best_faster = -math.inf
    start = 0
    while start < len(usable):
        end = start
        while end < len(usable) and usable[end][2] == usable[start][2]:
            end += 1
        group = usable[start:end]
        group_best = max(m for _, m, _ in group)
        if group_best > best_faster:
            for i, m, _ in group:
                mask[i] = m == group_best
        best_faster = max(best_faster, group_best)
        start = end
    return mask


def pareto_front(
    points: Points,
    *,
    metric_direction: str = "maximize",
    metric_key: str = "metric",
    speedup_key: str = "speedup",
    cv_threshold: float | None = None,
) -> Points:
    """The non-dominated subset of the settled rows of ``points``, sorted by speedup (slowest first), then number.

    Exactly the non-dominated set (see :func:`pareto_mask`) of :func:`settled` rows: a row whose timing did
    not settle and was not re-timed takes no part, and a re-timed one counts with its re-timing.  Duplicates
    of a non-dominated point are all kept.  Slowest first means the table reads along the trade-off, from
    the most accurate to the fastest.

    Args:
        points: a DataFrame or a sequence of mappings (see the module docstring).
        metric_direction: ``"maximize"`` or ``"minimize"``.
        metric_key: the column holding the metric.
        speedup_key: the column holding the speedup.
        cv_threshold: the study's ``latency.cv_threshold`` (see :func:`unsettled`).

    Returns:
        The same kind of container as ``points``: a DataFrame (original index kept) or a list of dicts,
        with ``timing`` saying which timing each speedup rests on.

    Example:
        >>> pts = [{"number": 0, "metric": 0.9, "speedup": 1.0}, {"number": 1, "metric": 0.8, "speedup": 1.0}]
        >>> [p["number"] for p in pareto_front(pts)]
        [0]
    """
    points = settled(points, cv_threshold)
    records = _records(points)
    mask = _front_mask(records, _sign(metric_direction), metric_key, speedup_key)
    rows = [r for r, keep in zip(records, mask, strict=True) if keep]
    order = sorted(range(len(rows)), key=lambda i: (as_float(rows[i][speedup_key]), as_float(rows[i].get("number", i))))
    if isinstance(points, pd.DataFrame):
        return _take(points, mask).iloc[order]
    return [rows[i] for i in order]


def _feasible(row: Mapping[str, Any], max_drop: float) -> bool:
    """``drop <= max_drop``; a missing drop is not feasible (nothing proves it is within the budget)."""
    return as_float(row.get("drop")) <= max_drop


def rank_key(
    row: Mapping[str, Any], metric_direction: str = "maximize", *, speed_key: str = "speedup", tie_key: str = "number"
) -> tuple[float, float, float, float]:
    """The one ranking rule of every pick (``pareto``, ``confirm``, ``export``, the baselines): smallest is best.

    Faster first, then the better metric in its own direction, then fewer MACs, then the lower ``tie_key``
    (missing figures rank last).

    Args:
        row: a trial row or sweep point with ``speed_key``, ``metric`` and optionally ``macs`` and ``tie_key``.
        metric_direction: ``"maximize"`` or ``"minimize"``.
        speed_key: the column holding the speedup the pick rests on (e.g. a confirmed one).
        tie_key: the last tie-breaker (``"number"`` for trials, ``"ratio"`` for sweep points).

    Example:
        >>> a, b = {"number": 0, "metric": 0.2, "speedup": 2.0}, {"number": 1, "metric": 0.1, "speedup": 2.0}
        >>> min([a, b], key=lambda r: rank_key(r, "minimize"))["number"]
        1
    """
    sign = _sign(metric_direction)
    speed, metric = as_float(row.get(speed_key)), as_float(row.get("metric"))
    macs, tie = as_float(row.get("macs")), as_float(row.get(tie_key))
    return (
        -speed if math.isfinite(speed) else math.inf,
        -sign * metric if math.isfinite(metric) else math.inf,
        macs if math.isfinite(macs) else math.inf,
        tie if math.isfinite(tie) else math.inf,
    )


def ranked(rows: pd.DataFrame, metric_direction: str = "maximize", *, speed_key: str = "speedup") -> pd.DataFrame:
    """The rows of a trial table best first by :func:`rank_key` (ties on trial number), index kept."""
    records = _records(rows)
    order = sorted(range(len(records)), key=lambda i: rank_key(records[i], metric_direction, speed_key=speed_key))
    return rows.iloc[order]


def _best_feasible(
    rows: Sequence[Mapping[str, Any]], max_drop: float, metric_direction: str, tie_key: str
) -> dict[str, Any] | None:
    """The best-ranked usable feasible row, or ``None``."""
    feasible = [r for r in rows if _usable(r, "metric", "speedup") and _feasible(r, max_drop)]
    if not feasible:
        return None
    best = min(feasible, key=lambda r: rank_key(r, metric_direction, tie_key=tie_key))
    return dict(best)


def select(
    points: pd.DataFrame | Sequence[Mapping[str, Any]],
    max_drop: float,
    *,
    metric_direction: str = "maximize",
    cv_threshold: float | None = None,
) -> dict[str, Any]:
    """The fastest trial with a settled timing whose metric drop is within ``max_drop``.

    Feasible means ``drop <= max_drop`` (``drop`` is positive when the metric got worse, whatever its
    direction).  Only :func:`settled` rows compete, re-timed ones with their re-timing.  Among equally fast
    feasible trials the better metric wins, then fewer MACs, then the lower trial number, so the choice is
    deterministic.  The chosen trial is always on the Pareto front (:func:`pareto_front` with the same
    ``cv_threshold``): anything dominating it would be feasible and faster or better.

    Args:
        points: trials with ``number``, ``metric``, ``drop``, ``speedup`` and optionally ``macs``,
            ``state``, ``latency_noisy``, ``speedup_spread`` and re-timings (a DataFrame or mappings).
        max_drop: the largest acceptable drop, in metric units.
        metric_direction: ``"maximize"`` or ``"minimize"``.
        cv_threshold: the study's ``latency.cv_threshold`` (see :func:`unsettled`).

    Returns:
        The chosen row as a dict (``timing`` says which timing its speedup rests on).

    Raises:
        SelectionError: when no trial is feasible (the message names the closest trial, smallest drop),
            or when every feasible trial's timing is unsettled (the message names them).

    Example:
        >>> pts = [
        ...     {"number": 0, "metric": 0.90, "drop": 0.005, "speedup": 1.5},
        ...     {"number": 1, "metric": 0.85, "drop": 0.055, "speedup": 3.0},
        ... ]
        >>> select(pts, max_drop=0.01)["number"]
        0
    """
    _sign(metric_direction)  # an unknown direction is refused even where nothing is feasible
    rows = _records(points)
    chosen = _best_feasible(settled(rows, cv_threshold), max_drop, metric_direction, "number")
    if chosen is not None:
        return chosen
    raise _no_choice(rows, max_drop)


def _no_choice(rows: list[dict[str, Any]], max_drop: float) -> SelectionError:
    """Why :func:`select` chose nothing: every feasible timing unsettled, nothing measured, or nothing feasible."""
    held = [r for r in rows if _usable(r, "metric", "speedup") and _feasible(r, max_drop)]
    if held:
        numbers = ", ".join(str(r.get("number", "?")) for r in held[:5]) + (" ..." if len(held) > 5 else "")
        return SelectionError(
            f"no trial within max drop {max_drop:g} has a settled timing: the timings of trial(s) {numbers} did "
            "not settle (flagged noisy or spread above latency.cv_threshold); re-time them with "
            "'autoprune confirm' (or 'autoprune retime') and analyse again"
        )
    measured = [r for r in rows if _usable(r, "metric", "speedup") and math.isfinite(as_float(r.get("drop")))]
    if not measured:
        return SelectionError(
            f"no trial has a measured metric, drop and speedup ({len(rows)} trials in all); "
            "run the search until some trials complete"
        )
    closest = min(measured, key=lambda r: (as_float(r["drop"]), -as_float(r["speedup"]), as_float(r.get("number"))))
    return SelectionError(
        f"no trial is feasible at max drop {max_drop:g} ({len(measured)} complete trials); the closest is "
        f"trial {closest.get('number', '?')} with drop {as_float(closest['drop']):.4g} at "
        f"{as_float(closest['speedup']):.2f}x speedup; raise --max-drop or run more trials"
    )


def best_baseline(
    points: Sequence[Mapping[str, Any]] | pd.DataFrame,
    max_drop: float,
    *,
    metric_direction: str = "maximize",
    cv_threshold: float | None = None,
) -> dict[str, Any] | None:
    """The fastest feasible point with a settled timing of a baseline sweep (uniform or global ratio), or ``None``.

    Same rule as :func:`select` (settled timings only; faster, then better metric, then fewer MACs), with
    the lower ``ratio`` breaking the last tie, so the chosen trial and the baselines are judged alike.

    Args:
        points: sweep points, each ``{"ratio", "metric", "drop", "speedup", "macs", ...}``.
        max_drop: the largest acceptable drop.
        metric_direction: ``"maximize"`` or ``"minimize"``.
        cv_threshold: the study's ``latency.cv_threshold`` (see :func:`unsettled`).

    Returns:
        The best point as a dict, or ``None`` when no point is within the budget.

    Example:
        >>> sweep = [{"ratio": 0.2, "metric": 0.9, "drop": 0.0, "speedup": 1.4},
        ...          {"ratio": 0.5, "metric": 0.7, "drop": 0.2, "speedup": 3.1}]
        >>> best_baseline(sweep, 0.01)["ratio"]
        0.2
    """
    _sign(metric_direction)
    return _best_feasible(settled(_records(points), cv_threshold), max_drop, metric_direction, "ratio")


def hypervolume_2d(
    points: Iterable[tuple[float, float]],
    reference: tuple[float, float],
    *,
    metric_direction: str = "maximize",
) -> float:
    """Area dominated by ``points`` and bounded below by ``reference``, both objectives maximised.

    Points that do not strictly beat the reference on both objectives add nothing.  A natural reference
    is ``(base_metric - max_drop, 1.0)``: the area then measures what the search found inside the budget
    and faster than the unpruned model.

    Args:
        points: ``(metric, speedup)`` pairs.
        reference: ``(metric, speedup)`` reference point.
        metric_direction: with ``"minimize"`` the metric (and the reference's) is negated first.

    Returns:
        The hypervolume (0.0 when no point beats the reference).

    Example:
        >>> round(hypervolume_2d([(0.9, 2.0), (0.8, 3.0)], reference=(0.7, 1.0)), 6)
        0.3
    """
    sign = _sign(metric_direction)
    ref_m, ref_s = sign * as_float(reference[0]), as_float(reference[1])
    pts = [(sign * as_float(m), as_float(s)) for m, s in points]
    pts = [(m, s) for m, s in pts if m > ref_m and s > ref_s]
    # Sweep by speed, fastest first: each point adds the metric strip beyond the best metric seen so far,
    # up to its own speedup (every faster point reached less metric).
    pts.sort(key=lambda p: -p[1])
    volume = 0.0
    best_m = ref_m
    for m, s in pts:
        if m > best_m:
            volume += (m - best_m) * (s - ref_s)
            best_m = m
    return volume


def hypervolume_history(
    points_in_trial_order: Sequence[tuple[float, float]],
    reference: tuple[float, float],
    at: Sequence[int] | None = (10, 20, 40),
    *,
    metric_direction: str = "maximize",
) -> dict[int, float]:
    """Hypervolume of the first ``n`` points, for each ``n`` in ``at``.

    Args:
        points_in_trial_order: ``(metric, speedup)`` pairs in the order the trials finished (or were
            numbered); pairs with a missing value still count as a trial spent.
        reference: see :func:`hypervolume_2d`.
        at: trial counts to report; counts beyond the number of points are left out.  ``None`` reports
            every count from 1 to ``len(points_in_trial_order)``.
        metric_direction: ``"maximize"`` or ``"minimize"``.

    Returns:
        ``{n: hypervolume of the first n points}``.

    Example:
        >>> h = hypervolume_history([(0.9, 2.0), (0.8, 3.0)], (0.7, 1.0), at=[1, 2, 5])
        >>> {n: round(v, 6) for n, v in h.items()}
        {1: 0.2, 2: 0.3}
    """
    counts = range(1, len(points_in_trial_order) + 1) if at is None else at
    return {
        n: hypervolume_2d(points_in_trial_order[:n], reference, metric_direction=metric_direction)
        for n in sorted(set(counts))
        if 0 < n <= len(points_in_trial_order)
    }
