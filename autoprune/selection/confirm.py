"""Honest selection: confirm a search's best candidates on the selection split, re-timed together.

The search picks the fastest candidate whose *validation* drop is within the budget.  Picking the best
of many candidates on one validation set favours the ones that were lucky on it, and each trial's speedup
was timed at a different moment.  :func:`confirm_study` therefore takes the K fastest feasible candidates
(all of them, not only the front's: one outlying timing would dominate the front and hide the real best,
and a candidate whose timing did not settle is exactly one that needs re-timing) plus the best uniform
and the best global baseline, rebuilds each finetuned model exactly
from its stored architecture JSON and weights, times all of them interleaved against the base in one
process, and measures each on the selection split (:mod:`autoprune.tasks.base`), which no trial, sweep or
finetune has seen.  A candidate holds when its selection drop plus ``search.selection_z`` standard errors of
that drop is within the budget: the margin for the selection split's own noise, so the fastest of K is not
picked for a drop that came out low by chance.  The standard error is *paired* (:meth:`Task.evaluate_drop`):
base and candidate are measured on the same images, so the drop's noise is that of the per-image
differences (a pruned, distilled model agrees with the base on most images), not the ``hypot`` of the two
metrics' errors, which would count the images both find hard twice and overstate the margin.  The base is
evaluated once and paired with every candidate.  A plugin task that keeps no per-sample figures falls back
to the unpaired ``hypot``; each entry says which it got (``selection_drop_paired``).  When none of the K holds,
confirmation walks further down the same ranking (:func:`autoprune.analysis.choice.next_round`): it judges the
next K feasible candidates, then the next, until one holds or every feasible candidate has been judged (the
baselines are judged once, in the first round).  Judging on the selection split needs no timing, so the walk
comes first and every candidate judged, in whatever round, is then timed in the one interleaved run against
the base: the stored figures stay one timing run.  ``autoprune export`` then picks the fastest candidate that
holds (see :func:`autoprune.analysis.choose`).  The test split stays closed here (:meth:`Task.forbid_split`):
``export`` reads it once, for the exported model, and reports it (:mod:`autoprune.selection.final_test`).

A candidate whose re-timing disagrees with its previous timing, or whose spread did not settle, is re-timed,
``TIMING_ROUNDS`` timings at most, so two confirmations on one study agree on the pick unless the host's
load keeps changing (then it is said once, and the figure leads no pick).

Optuna refuses to change a finished trial (``UpdateFinishedTrialError``, through the Trial API and the
storage API alike, in RDB and journal storages), so the figures are stored as the study user attr
``confirmation``: ``{"trials": {number: confirmed}, ...summary}``.  The analysis table reads them back
as each trial's ``confirmed:<key>`` columns (:func:`autoprune.search.study_attrs.late_trial_attrs`).  A new
confirmation replaces the previous one whole, so every confirmed speedup comes from one timing run.

Example:
    >>> from autoprune.config import load_config  # doctest: +SKIP
    >>> summary = confirm_study(load_config("studies/digits-resnet.yaml"), top=3)  # doctest: +SKIP
    >>> summary["pick"], summary["val_pick_holds"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import tempfile
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna
import pandas as pd

from autoprune.analysis import best_baseline
from autoprune.analysis import completed
from autoprune.analysis import load_analysis
from autoprune.analysis import select
from autoprune.analysis.choice import choose
from autoprune.analysis.choice import holds_on_selection
from autoprune.analysis.choice import margin_text
from autoprune.analysis.choice import next_round
from autoprune.analysis.pareto import ranked
from autoprune.analysis.pareto import unsettled
from autoprune.analysis.twins import architecture_keys
from autoprune.analysis.twins import one_per_architecture
from autoprune.errors import SelectionError
from autoprune.errors import StorageError
from autoprune.latency import export_onnx
from autoprune.redact import redact_url
from autoprune.search.record import TIMING_EXTENT
from autoprune.search.storage import is_sqlite
from autoprune.search.storage import open_storage
from autoprune.search.storage import study_names
from autoprune.search.storage import with_retry
from autoprune.search.study import check_same_base
from autoprune.search.study_attrs import CONFIRMATION_ATTR
from autoprune.search.study_attrs import confirmed_column
from autoprune.search.study_attrs import confirmed_columns
from autoprune.selection.artifacts import fetch
from autoprune.selection.artifacts import study_store
from autoprune.space.bounds import BASELINE_KINDS
from autoprune.space.widths import row_channels_key
from autoprune.tasks.base import PairedDrop

if TYPE_CHECKING:
    from torch import nn

    from autoprune.analysis import StudyInfo
    from autoprune.config import StudyConfig
    from autoprune.latency import SpeedupResult
    from autoprune.trial.candidate import StudyContext

# Timings of one candidate in one confirmation at most: the first and two re-timings while it disagrees with
# the timing before it or does not settle.
TIMING_ROUNDS = 3
SELECTION_SPLIT = "selection"


@dataclass(frozen=True)
class Candidate:
    """One model to re-measure: a stored trial, or a baseline sweep point that has no trial.

    Attributes:
        kind: ``search``, ``uniform``, ``global`` or ``sensitivity`` (the trial's user attr ``kind``).
        number: the trial number; ``None`` for a sweep point rebuilt from the study attr ``baselines``.
        ratio: the sweep ratio of such a point (``None`` for trials).
        val_metric: the validation metric recorded by the search.
        val_drop: the validation drop recorded by the search.
        speedup: the speedup recorded by the search (on the host that ran it).
        arch_artifact_id: the trial's stored architecture JSON.
        weights_artifact_id: the trial's stored finetuned weights.
        on_front: whether it comes from the ranking of feasible candidates (the K fastest, or a later round of
            confirmation's walk down that ranking); a baseline trial may be too.
        channels: its channel key (:func:`autoprune.space.widths.row_channels_key`; ``None`` for a sweep point).
        speedup_spread: the spread of the recorded speedup.
        host_id: the host that recorded the speedup (``None``: unknown, taken as this one).
        ratios: per-group ratios of a sweep point that no single ratio rebuilds (a sensitivity allocation).

    Example:
        >>> Candidate("uniform", None, 0.3, val_metric=0.95, val_drop=0.01, speedup=1.8).label
        'uniform r=0.30'
    """

    kind: str
    number: int | None
    ratio: float | None
    val_metric: float
    val_drop: float
    speedup: float
    arch_artifact_id: str | None = None
    weights_artifact_id: str | None = None
    on_front: bool = False
    channels: str | None = None
    speedup_spread: float = math.nan
    host_id: str | None = None
    ratios: dict[str, float] | None = None

    @property
    def label(self) -> str:
        """``trial 12`` or ``uniform r=0.30``."""
        return f"trial {self.number}" if self.number is not None else f"{self.kind} r={self.ratio:.2f}"

    @property
    def key(self) -> str:
        """Its architecture on the ranking: the channel key (twins are one), else ``#<number>``."""
        return self.channels or f"#{self.number}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan




def _from_row(row: Mapping[str, Any], on_front: bool) -> Candidate:
    kind = row.get("kind")
    return Candidate(
        kind=str(kind) if isinstance(kind, str) else "search",
        number=int(row["number"]),
        ratio=None,
        val_metric=_float(row.get("metric")),
        val_drop=_float(row.get("drop")),
        speedup=_float(row.get("speedup")),
        arch_artifact_id=row.get("arch_artifact_id") if isinstance(row.get("arch_artifact_id"), str) else None,
        weights_artifact_id=row.get("weights_artifact_id") if isinstance(row.get("weights_artifact_id"), str) else None,
        on_front=on_front,
        channels=row_channels_key(row),
        speedup_spread=_float(row.get("speedup_spread")),
        host_id=row.get("host_id") if isinstance(row.get("host_id"), str) else None,
    )


def select_candidates(df: pd.DataFrame, info: StudyInfo, top: int, max_drop: float) -> list[Candidate]:
    """The candidates to re-measure, by validation figures: the K fastest feasible first, then the baselines.

    The K fastest complete trials within ``max_drop`` by their recorded speedup, whatever their place on
    the front and whether or not their timing settled (ties as in :func:`autoprune.analysis.select`);
    twins (the same kept channels) count once, as their lowest-numbered trial
    (:func:`autoprune.analysis.twins.one_per_architecture`), so no timing noise picks between them.  Taking them
    from the front alone would let one outlying timing, which dominates the front,
    push the real best candidates out.  Then, per baseline kind, the best feasible trial of that ``kind``
    (none when it is a twin of a candidate), or, when the study has no such trial, the fastest feasible settled point of the study attr
    ``baselines`` (rebuilt without a trial).

    Args:
        df: the trial table (:func:`autoprune.analysis.load_analysis`).
        info: the study info.
        top: how many of the fastest feasible candidates (K).
        max_drop: the budget.

    Returns:
        The candidates, the K fastest first (fastest first), then the uniform and global baselines.

    Raises:
        SelectionError: no complete trial is within the budget.
    """
    if top < 1:
        raise SelectionError(f"--top must be at least 1, got {top}")
    direction = info.metric_direction
    usable = completed(df)
    picks = feasible_ranking(df, info, max_drop)[:top]
    picked = {c.number for c in picks} | {c.channels for c in picks if c.channels}
    kinds = usable["kind"] if "kind" in usable else pd.Series(None, index=usable.index, dtype=object)
    for kind in BASELINE_KINDS:
        runs = one_per_architecture(usable[kinds == kind], max_drop)
        baseline = _sweep_candidate(kind, info, max_drop) if runs.empty else _baseline_trial(runs, direction, max_drop, picked)
        if baseline is not None:
            picks.append(baseline)
            picked |= {baseline.number, baseline.channels} - {None}
    return picks


def feasible_ranking(df: pd.DataFrame, info: StudyInfo, max_drop: float) -> list[Candidate]:
    """Every complete trial within ``max_drop``, fastest first by its recorded speedup, twins as one: the ranking
    whose first K :func:`select_candidates` takes and down which confirmation walks when none of them holds.

    Raises:
        SelectionError: no complete trial is within the budget.
    """
    usable = completed(df)
    feasible = usable[usable["drop"] <= max_drop]
    if feasible.empty:
        select(usable, max_drop, metric_direction=info.metric_direction)  # raises with the closest trial named
    rows = ranked(one_per_architecture(feasible), info.metric_direction)
    return [_from_row(row, on_front=True) for _, row in rows.iterrows()]


def _baseline_trial(runs: pd.DataFrame, metric_direction: str, max_drop: float, picked: set[Any]) -> Candidate | None:
    """The best feasible trial among a baseline kind's ``runs``; ``None`` when none is feasible, or it (or a twin,
    by channel key in ``picked``) is picked already."""
    ok = runs[runs["drop"] <= max_drop]
    if ok.empty:
        return None
    best = _from_row(ranked(ok, metric_direction).iloc[0], on_front=False)
    return None if best.number in picked or (best.channels and best.channels in picked) else best


def _sweep_candidate(kind: str, info: StudyInfo, max_drop: float) -> Candidate | None:
    """The fastest feasible settled point of the ``kind`` sweep (study attr ``baselines``), to rebuild without a trial."""
    point = best_baseline(info.baselines.get(kind) or [], max_drop, metric_direction=info.metric_direction,
                          cv_threshold=info.cv_threshold)
    if point is None:
        return None
    return Candidate(
        kind=kind,
        number=None,
        ratio=_float(point.get("ratio")),
        val_metric=_float(point.get("metric")),
        val_drop=_float(point.get("drop")),
        speedup=_float(point.get("speedup")),
        speedup_spread=_float(point.get("speedup_spread")),
        ratios=None if kind in ("uniform", "global") else {str(k): float(v) for k, v in (point.get("ratios") or {}).items()},
    )


def open_study_for_update(config: StudyConfig, storage: str | None) -> tuple[str, optuna.storages.BaseStorage, optuna.Study]:
    """Open the study of ``config`` for reading and for writing study attrs (it must exist).

    Returns:
        ``(storage URL, storage, study)``.
    """
    url = config.storage_url(storage)
    if is_sqlite(url):
        db = url.split(":///", 1)[-1]
        if db in ("", ":memory:") or not Path(db).is_file():
            raise StorageError(f"no study database at {redact_url(url)}; run the search first or pass --storage")
    backend = open_storage(url, heartbeat_interval=None)
    names = with_retry(lambda: study_names(backend), url, "list studies")
    if config.name not in names:
        raise StorageError(
            f"study {config.name!r} does not exist in {redact_url(url)} (studies there: {', '.join(sorted(names)) or 'none'}); "
            "run the search first or pass --storage"
        )
    return url, backend, optuna.load_study(study_name=config.name, storage=backend)


@dataclass
class _Loaded:
    url: str
    backend: optuna.storages.BaseStorage
    study: optuna.Study
    df: Any
    info: Any
    budget: float
    candidates: list[Candidate]
    ranking: list[Candidate]


def load_candidates(config: StudyConfig, storage: str | None, top: int, max_drop: float | None) -> _Loaded:
    """Open the study and pick the candidates a confirmation or a re-timing measures (shared by both)."""
    url, backend, study = open_study_for_update(config, storage)
    df, info = load_analysis(backend, config.name, max_drop=max_drop)
    budget = info.max_drop if max_drop is None else max_drop
    if budget is None:
        raise SelectionError(f"study {config.name!r} records no max_drop; pass --max-drop")
    candidates = select_candidates(df, info, top, budget)
    return _Loaded(url, backend, study, df, info, budget, candidates, feasible_ranking(df, info, budget))


def rebuild_trial(config: StudyConfig, candidate: Candidate, folder: Path) -> nn.Module:
    """The trial's finetuned model, rebuilt exactly from its stored architecture JSON and weights."""
    from autoprune.device import resolve_device
    from autoprune.selection.architecture import apply_architecture
    from autoprune.selection.architecture import read_architecture

    if not candidate.arch_artifact_id or not candidate.weights_artifact_id:
        raise SelectionError(
            f"{candidate.label} has no stored architecture and weights (user attrs 'arch_artifact_id', "
            "'weights_artifact_id'); it was not run by an autoprune worker"
        )
    store = study_store(config)
    arch_path = folder / f"arch-{candidate.number}.json"
    weights_path = folder / f"weights-{candidate.number}.pt"
    for artifact_id, path in ((candidate.arch_artifact_id, arch_path), (candidate.weights_artifact_id, weights_path)):
        fetch(store, artifact_id, path, config, candidate.label)
    arch = read_architecture(arch_path)
    model = apply_architecture(arch, config, weights=weights_path, where=f"{candidate.label} architecture").model
    return model.to(resolve_device(config.device))  # evaluated where the study's task puts its batches


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def timing_entry(measured: SpeedupResult, hostname: str) -> dict[str, Any]:
    """The figures stored for one interleaved re-timing."""
    return {
        "host": hostname,
        "speedup": measured.speedup,
        "speedup_spread": measured.speedup_spread,
        "latency_ms": measured.candidate.median_ms,
        "base_latency_ms": measured.baseline.median_ms,
        "noisy": measured.noisy,
        **{k: getattr(measured, k) for k in TIMING_EXTENT},
        "measured_at": measured.measured_at,
    }


def _fmt(value: Any, spec: str) -> str:
    v = _float(value)
    return format(v, spec) if math.isfinite(v) else "-"


def _candidate_model(config: StudyConfig, ctx: StudyContext, c: Candidate, folder: Path,
                     echo: Callable[[str], None] | None, recover: bool) -> nn.Module:
    """The candidate's model: a trial rebuilt from its artifacts, or a sweep point pruned (and recovered if ``recover``).

    A re-timing passes ``recover=False`` (speed needs no recovery) and no ``echo``.
    """
    from autoprune.trial.candidate import evaluate_candidate

    plan: dict[str, Any] = {"ratios": c.ratios} if c.ratios is not None else {
        "uniform": c.ratio if c.kind == "uniform" else None, "global_ratio": c.ratio if c.kind == "global" else None}
    if c.number is not None:
        if echo is not None:
            echo(f"  {c.label} ({c.kind}): rebuilding from its architecture and weights")
        return rebuild_trial(config, c, folder)
    if not recover:
        return ctx.pruner.prune(copy.deepcopy(ctx.base_model), **plan).model
    if echo is not None:
        echo(f"  {c.label}: no baseline trial in the study; rebuilding the sweep point (prune and recover)")
    model = evaluate_candidate(ctx, **plan).model
    if model is None:
        raise SelectionError(f"{c.label}: rebuilding the sweep point gave no model (the candidate was refused)")
    return model


def export_candidates(
    config: StudyConfig,
    ctx: StudyContext,
    candidates: list[Candidate],
    folder: Path,
    recover: bool = True,
    echo: Callable[[str], None] | None = None,
    on_model: Callable[[nn.Module], None] | None = None,
    first: int = 0,
) -> list[Path]:
    """Rebuild each candidate and export it to ONNX in ``folder`` (shared by confirmation and re-timing).

    Args:
        config: the study config.
        ctx: the study context.
        candidates: the candidates, in timing order.
        folder: where the artifacts and the ONNX files go.
        recover: whether a sweep point without a trial is recovered after pruning (a re-timing needs no recovery).
        echo: says how each candidate is rebuilt (default: silent).
        on_model: called with each rebuilt model before its export (the confirmation measures it on the selection split).
        first: the number of the first file (``candidate-<first>.onnx``), so that rounds share one folder.

    Returns:
        The ONNX paths, one per candidate.
    """
    from autoprune.trial.candidate import example_input
    paths: list[Path] = []
    for c in candidates:
        model = _candidate_model(config, ctx, c, folder, echo, recover)
        if on_model is not None:
            on_model(model)
        path = folder / f"candidate-{first + len(paths)}.onnx"
        paths.append(export_onnx(model, example_input(ctx.task, config), path, opset=ctx.latency.opset))
        del model
    return paths


@dataclass(frozen=True)
class Timed:
    """One candidate's timing in one confirmation.

    Attributes:
        result: the timing kept (the last one taken).
        speedups: every speedup this confirmation measured for it, in order.
        previous: the speedup it was first compared with (the previous confirmation's on this host, else the
            search's; ``None`` when there was none).
        reproduced: whether the kept timing agrees with the one before it within both spreads
            (:func:`timings_agree`); ``None`` when there was nothing to compare it with.
    """

    result: SpeedupResult
    speedups: list[float]
    previous: float | None
    reproduced: bool | None


def timings_agree(speedup: float, spread: Any, other: float, other_spread: Any) -> bool:
    """Whether two timings of one architecture agree: their log ratio is within the sum of both relative spreads.

    A wider gap is no timing noise but a change in the host's load between the two timings.

    Example:
        >>> timings_agree(16.02, 0.048, 8.77, 0.03), timings_agree(4.35, 0.021, 4.28, 0.03)
        (False, True)
    """
    spreads = sum(v for v in (_float(spread), _float(other_spread)) if math.isfinite(v))
    return speedup > 0 and other > 0 and abs(math.log(speedup / other)) <= spreads


def previous_timing(c: Candidate, confirmation: Mapping[str, Any] | None, host_id: str) -> tuple[float, float] | None:
    """The last timing of the candidate on this host: the previous confirmation's, else the search's; ``None``.

    Returns:
        ``(speedup, spread)`` or ``None`` when neither was timed on this host.
    """
    prev = confirmation or {}
    if prev.get("host_id") == host_id:
        entry = ((prev.get("trials") or {}).get(str(c.number)) if c.number is not None
                 else (prev.get("baselines") or {}).get(c.kind))
        same = isinstance(entry, Mapping) and (c.number is not None or _float(entry.get("ratio")) == c.ratio)
        if same and isinstance(entry, Mapping) and math.isfinite(_float(entry.get("speedup"))):
            return _float(entry["speedup"]), _float(entry.get("speedup_spread"))
    if c.host_id in (None, host_id) and math.isfinite(c.speedup):
        return c.speedup, c.speedup_spread
    return None


def reproducible_timings(
    paths: list[Path],
    previous: list[tuple[float, float] | None],
    measure: Callable[[list[Path]], list[SpeedupResult]],
    echo: Callable[[str], None],
    cv_threshold: float | None = None,
) -> list[Timed]:
    """Time every candidate; re-time each whose timing disagrees with its last one or did not settle,
    ``TIMING_ROUNDS`` timings at most.

    A timing is reproduced when it agrees with the timing before it (:func:`timings_agree`): the previous one
    of the same architecture first, then this confirmation's own.  A timing that did not settle (flagged
    noisy, or a spread above ``cv_threshold``: :func:`autoprune.analysis.pareto.unsettled`) is taken again
    too, so that whether a candidate may lead the pick does not depend on which of two confirmations caught
    the host busy.  One that still disagrees or has not settled after the last round is said once: the host
    is too busy, and the figure leads no pick.

    Args:
        paths: the candidates' ONNX files.
        previous: per candidate, :func:`previous_timing`.
        measure: times some of the files interleaved with the base in one process.
        echo: prints one line.
        cv_threshold: the study's ``latency.cv_threshold``.

    Returns:
        One :class:`Timed` per candidate.
    """
    results = list(measure(paths))
    speedups = [[r.speedup] for r in results]
    last = list(previous)
    for _ in range(TIMING_ROUNDS - 1):
        disagree = [i for i, (r, lt) in enumerate(zip(results, last, strict=True))
                    if lt is not None and not timings_agree(r.speedup, r.speedup_spread, *lt)]
        loose = [i for i, r in enumerate(results) if i not in disagree and unsettled(r.noisy, r.speedup_spread, cv_threshold)]
        if not disagree and not loose:
            break
        echo(f"  re-timing {len(disagree) + len(loose)} candidate(s): {_retime_reason(len(disagree), len(loose))}")
        todo = sorted(disagree + loose)
        for i in todo:
            last[i] = (results[i].speedup, results[i].speedup_spread)
        for i, again in zip(todo, measure([paths[i] for i in todo]), strict=True):
            results[i] = again
            speedups[i].append(again.speedup)
    _say_still_loose(results, speedups, cv_threshold, echo)
    return [Timed(r, s, None if p is None else p[0], None if lt is None else timings_agree(r.speedup, r.speedup_spread, *lt))
            for r, s, p, lt in zip(results, speedups, previous, last, strict=True)]


def _retime_reason(disagree: int, loose: int) -> str:
    """Why candidates are re-timed, in words."""
    parts = [f"{disagree} disagree(s) with the previous timing beyond both spreads"] if disagree else []
    parts += [f"{loose} did not settle (spread or noisy flag)"] if loose else []
    return "; ".join(parts)


def _say_still_loose(results: list[SpeedupResult], speedups: list[list[float]], cv_threshold: float | None,
                     echo: Callable[[str], None]) -> None:
    """One line naming the candidates whose last timing still did not settle after every round (none: silent)."""
    loose = [f"candidate {i} ({r.speedup:.2f}x, spread {_float(r.speedup_spread):.1%})"
             for i, r in enumerate(results) if len(speedups[i]) >= TIMING_ROUNDS and unsettled(r.noisy, r.speedup_spread, cv_threshold)]
    if loose:
        echo(f"the host is too busy to time reliably: {'; '.join(loose)} did not settle in {TIMING_ROUNDS} timings, "
             "so those figures lead no pick (run 'autoprune confirm' again on a quieter host)")


@dataclass
class _Walk:
    """What one confirmation judged on the selection split, in judging order, and the one timing of them all.

    Attributes:
        candidates: every candidate judged: the first round's (the K fastest and the baselines), then each later
            round's.
        scores: each one's selection-split evaluation.
        paths: each one's ONNX file.
        rounds: the ranking's trials judged in each round (the first round's baselines left out).
        exhausted: whether the walk ran out of feasible candidates with none of the ranking's holding.
        timed: each one's timing, all in one interleaved run against the base (filled after the walk).
    """

    candidates: list[Candidate] = field(default_factory=list)
    scores: list[PairedDrop] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    rounds: list[list[int]] = field(default_factory=list)
    exhausted: bool = False
    timed: list[Timed] = field(default_factory=list)


@dataclass(frozen=True)
class _Judge:
    """How the walk judges a candidate on the selection split.

    Attributes:
        evaluate: a rebuilt candidate's drop against the base, paired (:meth:`Task.evaluate_drop`).
        holds: whether that drop holds the budget with its margin (:func:`holds_on_selection`).
    """

    evaluate: Callable[[Any], PairedDrop]
    holds: Callable[[PairedDrop], bool]


def _judge_round(config: StudyConfig, ctx: StudyContext, batch: list[Candidate], folder: Path, walk: _Walk,
                 judge: _Judge, echo: Callable[[str], None]) -> None:
    """Rebuild each candidate of ``batch``, evaluate it on the selection split and export it; append all to ``walk``."""
    walk.paths += export_candidates(config, ctx, batch, folder, recover=True, echo=echo, first=len(walk.paths),
                                    on_model=lambda model: walk.scores.append(judge.evaluate(model)))
    walk.candidates += batch
    walk.rounds.append([c.number for c in batch if c.on_front and c.number is not None])


def _walk_ranking(config: StudyConfig, ctx: StudyContext, loaded: _Loaded, top: int, judge: _Judge,
                  folder: Path, echo: Callable[[str], None]) -> _Walk:
    """Judge the first round (the K fastest and the baselines), then the next K of the ranking while none holds.

    ``judge`` evaluates each candidate and says whether it holds the budget.  Walking stops when a candidate of the
    ranking holds and nothing unjudged is ranked before it, or when the ranking is exhausted
    (:func:`autoprune.analysis.choice.next_round`).
    """
    walk = _Walk()
    ranking = {c.key: c for c in loaded.ranking}
    verdicts: dict[str, bool] = {}
    batch = loaded.candidates
    while batch:
        start = len(walk.scores)
        _judge_round(config, ctx, batch, folder, walk, judge, echo)
        verdicts |= {c.key: judge.holds(score) for c, score in zip(batch, walk.scores[start:], strict=True) if c.number is not None}
        batch = [ranking[key] for key in next_round(list(ranking), verdicts, top)]
        if batch:
            echo(f"  none of the fastest judged so far holds on the selection split; judging the next {len(batch)} feasible candidate(s)")
    walk.exhausted = not any(verdicts.get(key) for key in ranking)
    return walk


def _measure_candidates(
    config: StudyConfig,
    ctx: StudyContext,
    loaded: _Loaded,
    top: int,
    judge: _Judge,
    host_id: str,
    echo: Callable[[str], None],
) -> _Walk:
    """Judge candidates on the selection split down the ranking until one holds, then time every one judged,
    reproduced, interleaved with the base in one process (one timing run, however many rounds were judged)."""
    from autoprune.latency import measure_speedups

    with tempfile.TemporaryDirectory(prefix="autoprune-confirm-") as tmp:
        walk = _walk_ranking(config, ctx, loaded, top, judge, Path(tmp), echo)
        previous = [previous_timing(c, loaded.info.confirmation, host_id) for c in walk.candidates]
        echo(f"  timing {len(walk.paths)} candidates interleaved with the base in one process")
        walk.timed = reproducible_timings(walk.paths, previous, lambda some: measure_speedups(some, ctx.base_onnx, ctx.latency),
                                          echo, cv_threshold=ctx.latency.cv_threshold)
    return walk


def selection_entry(paired: PairedDrop, z: float) -> dict[str, Any]:
    """A candidate's selection-split figures against the base's (paired on the same images when the task keeps
    per-sample figures, :meth:`Task.evaluate_drop`): what :func:`holds_on_selection` judges."""
    score = paired.candidate
    return {
        "selection_metric": score.value,
        "selection_metric_stderr": score.stderr,
        "selection_n": score.n,
        "selection_drop": paired.drop,
        "selection_drop_stderr": paired.stderr,
        "selection_drop_paired": paired.paired,
        "selection_z": z,
    }


def _reproduction(t: Timed) -> dict[str, Any]:
    """The figures that say whether a timing was reproduced; one that was not counts as unsettled (``noisy``)."""
    out: dict[str, Any] = {"reproduced": t.reproduced, "speedups": t.speedups, "previous_speedup": t.previous}
    return out | ({"noisy": True} if t.reproduced is False else {})


def _confirmed_figures(
    candidates: list[Candidate],
    scores: list[PairedDrop],
    timed: list[Timed],
    budget: float,
    z: float,
    fingerprint: Mapping[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The confirmed figures (selection split, re-timing): ``(by trial number, by baseline kind for sweep points
    without a trial)``."""
    hostname = str(fingerprint.get("hostname", ""))
    figures: dict[str, dict[str, Any]] = {}
    baselines: dict[str, dict[str, Any]] = {}
    for c, paired, t in zip(candidates, scores, timed, strict=True):
        entry = timing_entry(t.result, hostname) | selection_entry(paired, z) | {
            "host_id": fingerprint["fingerprint_id"],
            "max_drop": budget,
            "kind": c.kind,
        } | _reproduction(t)
        entry["selection_feasible"] = holds_on_selection(entry, budget)
        if c.number is not None:
            figures[str(c.number)] = entry
        else:
            sweep = {"ratio": c.ratio, "val_metric": c.val_metric, "val_drop": c.val_drop, "search_speedup": c.speedup}
            baselines[c.kind] = entry | sweep
    return figures, baselines


def twins_timed(df: pd.DataFrame, candidates: list[Candidate]) -> dict[str, int]:
    """The complete trials that share a candidate's timing, as twins (same kept channels): ``{number: candidate}``."""
    done = df[df["state"] == "COMPLETE"]
    keys = architecture_keys(done)
    timed = {c.number for c in candidates}
    out: dict[str, int] = {}
    for c in candidates:
        if c.number is None or not c.channels:
            continue
        for number in done.loc[keys == c.channels, "number"]:
            if int(number) not in timed:
                out.setdefault(str(int(number)), c.number)
    return out


def _val_pick(df: pd.DataFrame, info: StudyInfo, budget: float) -> int | None:
    """The trial the search picks by validation figures (twins as one), or ``None`` when no feasible timing settled."""
    # None: every feasible search timing was unsettled, so only the confirmation can pick.
    return choose(df, budget, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold,
                  use_confirmed=False).number


def confirm_study(
    config: StudyConfig,
    top: int = 5,
    max_drop: float | None = None,
    storage: str | None = None,
    echo: Callable[[str], None] = print,
    context: StudyContext | None = None,
) -> dict[str, Any]:
    """Re-time the best candidates together and measure them on the selection split; store the figures.

    When none of the K fastest holds on the selection split, the next K of the same ranking are judged, and so
    on, until one holds or every feasible candidate has been judged; every candidate judged is then timed in the
    one interleaved run, so all confirmed speedups stay comparable.  The test split is never read here (the
    whole confirmation runs inside ``forbid_split("test")``).

    Args:
        config: the study config.
        top: how many of the fastest feasible candidates to confirm (K), and how many more each further round
            judges; the best uniform and global baselines come on top, in the first round.
        max_drop: budget (default: the study's).
        storage: storage URL override.
        echo: prints one line.
        context: a study context already built in this process (its task's selection split is the one read);
            default: built from ``config``.

    Returns:
        The summary stored as the study attr ``confirmation``: ``trials`` (number -> confirmed figures:
        ``selection_metric, selection_metric_stderr, selection_n, selection_drop, selection_drop_stderr,
        selection_drop_paired, selection_z, selection_feasible, speedup, speedup_spread, latency_ms,
        base_latency_ms, noisy, host_id, host, measured_at``), ``baselines`` (kind -> figures of a sweep point rebuilt without a trial),
        ``base_selection_metric``, ``val_pick`` / ``val_pick_holds`` (the validation choice among settled
        timings, or ``None``, and whether it holds on the selection split), ``pick`` (what export chooses: the
        fastest confirmed candidate that holds on the selection split and whose re-timing settled, or ``None``),
        ``walk`` (``rounds``: the ranking's trials judged per round; ``exhausted``: whether every feasible
        candidate was judged and none held; ``feasible``: how many there are) and the host and settings of the timing.

    Raises:
        SelectionError: no trial within the budget, or a candidate without stored artifacts.
        StorageError: the study, its artifacts or its base checkpoint cannot be found.
    """
    from autoprune.latency import host_fingerprint
    from autoprune.trial.candidate import StudyContext
    loaded = load_candidates(config, storage, top, max_drop)
    candidates, info = loaded.candidates, loaded.info
    front = [c for c in candidates if c.on_front]
    z = config.search.selection_z
    echo(
        f"confirming the {len(front)} fastest feasible candidate(s) and {len(candidates) - len(front)} baseline(s) of study "
        f"{config.name!r} on the selection split (max drop {loaded.budget:g}, with {z:g} standard error(s) of margin)"
    )
    _say_replaced(loaded.study.user_attrs.get(CONFIRMATION_ATTR), echo)
    ctx = context or StudyContext.build(config)
    check_same_base(loaded.study, ctx, loaded.url)
    with ctx.task.forbid_split("test"):  # the pick is made without the test split; export reads it afterwards
        fingerprint = host_fingerprint(ctx.latency.provider, ctx.latency.provider_options)
        base_samples = ctx.task.evaluate_samples(ctx.base_model, SELECTION_SPLIT)  # once, paired with every candidate
        base = base_samples.result

        judge = _Judge(
            evaluate=lambda model: ctx.task.evaluate_drop(base_samples, model, SELECTION_SPLIT),
            holds=lambda paired: holds_on_selection(selection_entry(paired, z), loaded.budget),
        )
        walk = _measure_candidates(config, ctx, loaded, top, judge, str(fingerprint["fingerprint_id"]), echo)
    figures, baselines = _confirmed_figures(walk.candidates, walk.scores, walk.timed, loaded.budget, z, fingerprint)
    summary = _summary(loaded, walk, top, ctx, fingerprint, base, figures, baselines) | {"selection_z": z}
    with_retry(lambda: loaded.study.set_user_attr(CONFIRMATION_ATTR, summary), loaded.url, "store the confirmation")
    for line in _report(walk.candidates, summary, info.metric_name):
        echo(line)
    return summary


def _say_replaced(previous: Any, echo: Callable[[str], None]) -> None:
    """One line when an earlier confirmation is about to be replaced (``export`` confirms again by default)."""
    if isinstance(previous, Mapping):
        echo(f"replacing the confirmation stored at {previous.get('measured_at', '?')} on host {previous.get('host_id', '?')} "
             f"(max drop {previous.get('max_drop', '?')}, top {previous.get('top', '?')}) with this one")


def _summary(
    loaded: _Loaded,
    walk: _Walk,
    top: int,
    ctx: StudyContext,
    fingerprint: Mapping[str, Any],
    base: Any,
    figures: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The value of the study attr ``confirmation``: the figures, the validation pick and export's pick."""
    df, info, budget, timed = loaded.df, loaded.info, loaded.budget, walk.timed
    val_pick = _val_pick(df, info, budget)
    pick, selection, notes, pick_error = _pick(df, info, budget, figures)
    return {
        "max_drop": budget,
        "top": top,
        "metric_name": info.metric_name,
        "base_val_metric": info.base_metric,
        "base_selection_metric": base.value,
        "base_selection_metric_stderr": base.stderr,
        "selection_n": base.n,
        "host_id": fingerprint["fingerprint_id"],
        "host": str(fingerprint.get("hostname", "")),
        "measured_at": now_utc(),
        "settings": ctx.latency.as_dict(),
        "timing": {"candidates": len(timed), "wall_s": timed[0].result.wall_s if timed else 0.0,
                   "rounds": max((len(t.speedups) for t in timed), default=0)},
        "trials": figures,
        "twins": twins_timed(df, walk.candidates),
        "baselines": baselines,
        "order": [c.number for c in walk.candidates if c.number is not None],
        "walk": {"rounds": walk.rounds, "exhausted": walk.exhausted, "feasible": len(loaded.ranking)},
        "val_pick": val_pick,
        "val_pick_holds": bool(figures.get(str(val_pick), {}).get("selection_feasible", False)),
        "pick": pick,
        "selection": selection,
        "notes": notes + ([pick_error] if pick_error else []),
    }


def _pick(
    df: pd.DataFrame, info: StudyInfo, budget: float, figures: Mapping[str, Mapping[str, Any]]
) -> tuple[int | None, str, list[str], str | None]:
    """What the study chooses with the new figures (:func:`autoprune.analysis.choose`, as export and the report do).

    Args:
        df: the trial table.
        info: the study info.
        budget: the max drop.
        figures: the new confirmed figures by trial number.

    Returns:
        ``(picked trial or None, "confirmed" or "validation", notes, the selection error or None)``.
    """
    table = df.drop(columns=confirmed_columns(df.columns))
    numeric = ("selection_drop", "selection_drop_stderr", "selection_z", "speedup", "speedup_spread")
    for key in (*numeric, "noisy", "reproduced"):
        table[confirmed_column(key)] = table["number"].map(lambda n, k=key: figures.get(str(n), {}).get(k))
    for key in numeric:
        table[confirmed_column(key)] = pd.to_numeric(table[confirmed_column(key)], errors="coerce")
    choice = choose(table, budget, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold)
    return choice.number, choice.source, choice.notes, choice.error


def _row_note(fig: Mapping[str, Any]) -> str:
    """What a table row adds about its timing: not reproduced, or not settled."""
    if fig.get("reproduced") is False:
        return "  (re-timings disagree)"
    return "  (timing did not settle)" if fig.get("noisy") else ""


def _unstable_line(candidates: list[Candidate], summary: Mapping[str, Any]) -> list[str]:
    """One line naming every candidate whose re-timings kept disagreeing (empty when none did)."""
    named = []
    for c in candidates:
        fig = summary["trials"].get(str(c.number)) if c.number is not None else summary["baselines"].get(c.kind)
        if fig.get("reproduced") is False:
            timings = [fig.get("previous_speedup"), *fig.get("speedups", [])]
            named.append(f"{c.label} ({', '.join(f'{_float(v):.2f}x' for v in timings if v is not None)})")
    if not named:
        return []
    return [f"the host's load kept changing: the timings of {'; '.join(named)} disagree beyond their spreads "
            f"after {TIMING_ROUNDS} tries, so those figures stay unsettled and lead no pick "
            "(run 'autoprune confirm' again on a quieter host)"]


def walk_lines(walk: Mapping[str, Any] | None) -> list[str]:
    """Why confirmation judged candidates beyond the K fastest, and how many, one line per further round
    (empty when the first round settled it, or for a confirmation stored before the walk existed).

    Example:
        >>> for line in walk_lines({"rounds": [[3, 1, 4], [5, 9, 2], [6]], "exhausted": True, "feasible": 7}):
        ...     print(line)
        none of the 3 fastest feasible candidates held on the selection split; judged the next 3 (trials 5, 9, 2)
        none of those 3 held either; judged the next 1 (trial 6)
        walked down the ranking: 7 candidates judged in 3 rounds; every one of the 7 feasible candidates is judged; none held
    """
    rounds = list((walk or {}).get("rounds") or [])
    if len(rounds) < 2:
        return []
    lines = []
    for i, judged in enumerate(rounds[1:], start=1):
        trials = f"trial{'s' if len(judged) > 1 else ''} {', '.join(str(n) for n in judged)}"
        before = (f"none of the {len(rounds[0])} fastest feasible candidates held on the selection split" if i == 1
                  else f"none of those {len(rounds[i - 1])} held either")
        lines.append(f"{before}; judged the next {len(judged)} ({trials})")
    total = sum(len(r) for r in rounds)
    end = (f"; every one of the {walk.get('feasible', '?')} feasible candidates is judged; none held"
           if walk and walk.get("exhausted") else ", until one held on the selection split")
    return lines + [f"walked down the ranking: {total} candidates judged in {len(rounds)} rounds{end}"]


def _verdict(summary: Mapping[str, Any]) -> list[str]:
    """The validation pick on the selection split, and what export picks."""
    budget, val_pick, pick = summary["max_drop"], summary["val_pick"], summary["pick"]
    fig = summary["trials"].get(str(val_pick))
    settled = fig is not None and not fig.get("noisy")
    if val_pick is None:
        lines = ["no validation pick: the timing of every feasible trial was unsettled before this re-timing"]
    elif fig is None:
        lines = [f"the validation pick, trial {val_pick}, was not confirmed"]
    elif summary["val_pick_holds"]:
        speed = f"at a confirmed {fig['speedup']:.2f}x" if settled else f"(its re-timing, {fig['speedup']:.2f}x, is unsettled)"
        lines = [f"the validation pick, trial {val_pick}, holds on the selection split: selection drop "
                 f"{margin_text(fig)} <= {budget:g} {speed}"]
    else:
        lines = [f"the validation pick, trial {val_pick}, FAILS on the selection split: selection drop "
                 f"{margin_text(fig)} > {budget:g}"]
    if pick is None:
        lines.append(f"nothing is chosen: {summary['notes'][-1]}")
    elif summary.get("selection") != "confirmed":
        lines.append(f"export picks trial {pick} on its search timing, unconfirmed: no feasible candidate's re-timing settled")
    elif pick != val_pick:
        pf = summary["trials"][str(pick)]
        lines.append(f"export picks trial {pick} instead: the fastest confirmed candidate that holds on the selection split "
                     f"({pf['speedup']:.2f}x)")
    return lines


def _report(candidates: list[Candidate], summary: Mapping[str, Any], metric_name: str) -> list[str]:
    """The confirmation table, the host's instability (once), and the verdict on the validation pick."""
    lines = [
        f"base {metric_name}: validation {summary['base_val_metric']:.4f}, selection {summary['base_selection_metric']:.4f} "
        f"(n={summary['selection_n']}); the test split is not read here (export reports it for the exported model)",
        f"{'candidate':16} {'kind':8} {'val drop':>9} {'selection drop ± 95%':>21} {'search':>8} {'confirmed':>10}  on selection",
    ]
    for c in candidates:
        fig = summary["trials"].get(str(c.number)) if c.number is not None else summary["baselines"].get(c.kind)
        drop = f"{_fmt(fig['selection_drop'], '+.4f')} ± {_fmt(1.96 * fig['selection_drop_stderr'], '.4f')}"
        verdict = "holds" if fig["selection_feasible"] else "FAILS"
        lines.append(
            f"{c.label:16} {c.kind:8} {_fmt(c.val_drop, '+.4f'):>9} {drop:>21} {_fmt(c.speedup, '.2f') + 'x':>8} "
            f"{_fmt(fig['speedup'], '.2f') + 'x':>10}  {verdict}" + _row_note(fig)
        )
    twins = summary.get("twins") or {}
    if twins:
        lines.append("twins (same kept channels, one timing): "
                     + ", ".join(f"trial {n} shares trial {of}'s" for n, of in sorted(twins.items(), key=lambda kv: int(kv[0]))))
    lines += walk_lines(summary.get("walk"))
    lines += _unstable_line(candidates, summary)
    lines += [note for note in summary["notes"] if "did not settle" in note]
    lines += _verdict(summary)
    lines.append(f"stored as the study attr 'confirmation' on host {summary['host_id']} ({summary['host']})")
    return lines
