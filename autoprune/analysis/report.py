"""What a study found, in numbers (:func:`summarize`) and as files (:func:`write_report`).

The summary is plain JSON-friendly data shared by the CLI, the HTML report and the demo, so every view
states the same chosen trial, baselines, ratios and noise floor.  The HTML report is one self-contained
file: inline CSS, images as base64 data URIs, no script and no remote URL, so it can be mailed or archived.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from types import SimpleNamespace
from typing import Any

import pandas as pd

from autoprune.analysis.choice import Choice
from autoprune.analysis.choice import choose
from autoprune.analysis.choice import holds_on_selection
from autoprune.analysis.choice import margin_text
from autoprune.analysis.choice import passed_over_text
from autoprune.analysis.frame import StudyInfo
from autoprune.analysis.frame import finetune_curves
from autoprune.analysis.frame import load_analysis
from autoprune.analysis.frame import redact
from autoprune.analysis.pareto import as_float
from autoprune.analysis.pareto import best_baseline
from autoprune.analysis.pareto import completed
from autoprune.analysis.pareto import hypervolume_2d
from autoprune.analysis.pareto import hypervolume_history
from autoprune.analysis.pareto import pareto_front
from autoprune.analysis.pareto import retiming
from autoprune.analysis.pareto import settled
from autoprune.analysis.pareto import unsettled as timing_unsettled
from autoprune.analysis.plots import plot_pareto
from autoprune.analysis.plots import plot_ratios
from autoprune.analysis.plots import plot_recovery_curve
from autoprune.analysis.points import SELECTION_KEYS
from autoprune.analysis.points import BaselinePoint
from autoprune.analysis.points import LeftOut
from autoprune.analysis.points import TrialFigures
from autoprune.analysis.points import plain
from autoprune.analysis.points import prefixed
from autoprune.analysis.stats import budget_noise_warning
from autoprune.analysis.stats import drop_stderr
from autoprune.errors import ConfigError
from autoprune.jsonfile import write_json
from autoprune.search.study_attrs import CONFIRMED_PREFIX
from autoprune.search.study_attrs import confirmed_column
from autoprune.space.bounds import BASELINE_KINDS
from autoprune.space.bounds import OPTIONAL_BASELINE_KINDS
from autoprune.space.widths import channels_key
from autoprune.trial.recipe import recovery_warnings
from autoprune.trial.screening import spearman

Z95 = 1.96
# How many left-out trials the headline names before it counts the rest.
_NAMED_LEFT_OUT = 3


def _median(df: pd.DataFrame, col: str) -> float:
    """Median of the finite values of ``col``; NaN when none."""
    if col not in df:
        return math.nan
    values = pd.to_numeric(df[col], errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _versus(chosen: TrialFigures, point: BaselinePoint, kind: str) -> str:
    """"1.30x faster than", "1.08x slower than", or "as fast as, within timing noise (±x%)," when the ratio lies
    inside the two timings' combined spread (or within half a percent)."""
    ratio = chosen.speedup / as_float(point.speedup)
    spreads = [as_float(chosen.speedup_spread), as_float(point.speedup_spread)]
    noise = math.hypot(*[v for v in spreads if math.isfinite(v)]) if any(math.isfinite(v) for v in spreads) else 0.0
    if abs(ratio - 1) <= max(noise, 0.005):
        return f"as fast as, within timing noise (±{noise:.1%})," if noise > 0.005 else "as fast as"
    return f"{ratio:.2f}x faster than" if ratio > 1 else f"{1 / ratio:.2f}x slower than"


def _same_architecture(chosen: TrialFigures, point: BaselinePoint) -> bool:
    """Whether the chosen trial keeps exactly the baseline point's channels (then no speed ratio is meaningful:
    two timings of one model differ only by the timing's noise)."""
    mine, theirs = chosen.channels or {}, point.channels or {}
    return bool(mine) and channels_key(mine) == channels_key(theirs)


def _comparison_sentence(
    chosen: TrialFigures | None,
    best: Mapping[str, BaselinePoint | None],
    baselines: Mapping[str, list[BaselinePoint]],
    max_drop: float,
    selection_error: str | None,
) -> str:
    """The headline: how the chosen trial compares with each baseline's best feasible point; a pick that is
    itself a baseline is said in words."""
    if chosen is None:
        return f"No architecture was chosen at max drop {max_drop:g}: {selection_error}."
    own = chosen.kind if chosen.kind in BASELINE_KINDS else None
    compared, missing = [], []
    for kind in BASELINE_KINDS:
        point = best.get(kind)
        timed = [p for p in baselines.get(kind, []) if math.isfinite(as_float(p.speedup))]
        if kind == own or (kind in OPTIONAL_BASELINE_KINDS and point is None and not baselines.get(kind)):
            continue
        if point is not None and _same_architecture(chosen, point):
            # One architecture runs at one speed: a second figure would only show the timing's noise.
            twin = f" (trial {point.number})" if point.number is not None else ""
            compared.append(f"the same architecture as the best {kind} baseline{twin}")
        elif point is not None:
            selection = point.selection_figures()
            fails = "selection_drop" in selection and not holds_on_selection(selection, max_drop)
            caveat = f", which fails the budget on the selection split (selection drop {margin_text(selection)})" if fails else ""
            compared.append(f"{_versus(chosen, point, kind)} the best {kind} baseline ({as_float(point.speedup):.2f}x{caveat})")
        elif not baselines.get(kind):
            missing.append(f"no {kind} baseline was recorded")
        elif not timed:
            missing.append(f"the {kind} baseline was not timed on this host")
        else:
            missing.append(_no_comparison(kind, baselines[kind], max_drop))
    if own is not None:
        text = (f"The search found nothing faster than the {own} baseline within the budget (max drop {max_drop:g}): "
                f"the chosen architecture is the {own} baseline (trial {chosen.number}, {chosen.speedup:.2f}x)")
        text += f", {' and '.join(compared)}" if compared else ""
    elif compared:
        text = f"The chosen architecture (trial {chosen.number}) is {' and '.join(compared)} at max drop {max_drop:g}"
    else:
        text = f"The chosen architecture (trial {chosen.number}) reaches {chosen.speedup:.2f}x at max drop {max_drop:g}"
    return text + ("; " + " and ".join(missing) if missing else "") + "."


def _no_comparison(kind: str, points: list[BaselinePoint], max_drop: float) -> str:
    """Why a timed baseline has no point to compare with: none is feasible, or no feasible one's timing settled."""
    feasible = [as_float(p.ratio) for p in points if as_float(p.drop) <= max_drop]
    if not feasible:
        return f"the {kind} baseline has no feasible point"
    ratios = ", ".join(f"r={r:.2f}" for r in sorted(feasible))
    return (f"the {kind} baseline is feasible ({ratios}) but its timing did not settle, so no speed is compared "
            "with it (re-time it with autoprune confirm or retime)")


def _passed_over_note(passed: TrialFigures | None, max_drop: float) -> str:
    """What became of the validation-time pick when the confirmed choice is another trial (empty otherwise)."""
    if passed is None:
        return ""
    text = passed_over_text(passed.number, passed.speedup, passed.confirmed or {}, max_drop)
    return f" {text[0].upper()}{text[1:]}."


def _unsettled(done: pd.DataFrame, max_drop: float, cv_threshold: float | None) -> list[LeftOut]:
    """The complete trials left out of the analysis because their timing did not settle, fastest recorded first."""
    kept = settled(done, cv_threshold).index
    out = done[~done.index.isin(kept)].sort_values(["speedup", "number"], ascending=[False, True])
    return [LeftOut.from_row(r, max_drop) for r in out.to_dict("records")]


def _timing_note(
    chosen: TrialFigures | None,
    retimed: bool,
    best: Mapping[str, BaselinePoint | None],
    unsettled: list[LeftOut],
) -> str:
    """What the headline's figures rest on: confirmed figures, re-timings or search timings, and the faster
    trials left out.

    Args:
        chosen: the chosen trial's record (``None``: nothing chosen, nothing to qualify).
        retimed: whether the chosen trial's speedup is a settled re-timing (confirmed or retimed).
        best: the best baseline points the headline compares with (``timing`` ``"confirmed"`` where re-timed
            with the chosen trial).
        unsettled: :func:`_unsettled`.

    Returns:
        Sentences to append to the headline (empty, or starting with a space).
    """
    if chosen is None:
        return ""
    parts = []
    points = [p for p in best.values() if p is not None]
    if not retimed and math.isfinite(as_float(chosen.confirmed_figure("speedup"))):
        parts.append(f"These speedups are search timings: the chosen trial's re-timing "
                     f"({as_float(chosen.confirmed_figure('speedup')):.2f}x) is unsettled, so nothing is confirmed yet")
    elif not retimed:
        parts.append("These speedups are search timings, not yet confirmed by a re-timing (run autoprune confirm)")
    elif chosen.timing == "confirmed" and points and all(p.timing == "confirmed" for p in points):
        parts.append("Confirmed figures: the chosen trial holds the budget on the selection split, and these speedups were "
                     "re-timed together in one process (autoprune confirm)")
    elif points:
        parts.append("The chosen speedup is a settled re-timing; the baselines' are search timings")
    faster = [u for u in unsettled if u.feasible and as_float(u.speedup) > as_float(chosen.speedup)]
    if faster:
        named = ", ".join(f"trial {u.number} ({_speed(u.speedup, u.speedup_spread)})"
                          for u in faster[:_NAMED_LEFT_OUT])
        more = f" and {len(faster) - _NAMED_LEFT_OUT} more" if len(faster) > _NAMED_LEFT_OUT else ""
        parts.append(f"Left out until re-timed, as their timings did not settle: {named}{more}")
    return "".join(f" {part}." for part in parts)


def _confirmed_baseline(kind: str, done: pd.DataFrame, info: StudyInfo) -> BaselinePoint | None:
    """The best ``kind`` baseline as ``autoprune confirm`` re-timed it beside the candidates, or ``None``.

    It is the ``kind`` trial re-timed by the confirmation (or the sweep point it rebuilt without a trial), so
    the headline compares figures of one timing run; ``None`` when none was re-timed or its timing did not
    settle (the sweep's search timing stands then).  Its label (the ratio) is its own, never another sweep
    point's: the trial's ``baseline_ratio``, the rebuilt point's ``ratio``.
    """
    kinds = done["kind"] if "kind" in done else pd.Series(None, index=done.index, dtype=object)
    speeds = pd.to_numeric(done.get(confirmed_column("speedup"), pd.Series(math.nan, index=done.index)), errors="coerce")
    rows = done[(kinds == kind) & speeds.notna()]
    if not rows.empty:
        row = rows.iloc[0]
        point = {"ratio": as_float(row.get("baseline_ratio")), "number": plain(row["number"]), "metric": row["metric"], "drop": row["drop"],
                 "macs": row.get("macs"), "params": row.get("params"), "noisy": row.get(confirmed_column("noisy")),
                 "speedup_searched": row["speedup"], "channels": prefixed(row, "channels:"),
                 **{k: row.get(confirmed_column(k)) for k in ("speedup", "speedup_spread", "latency_ms", *SELECTION_KEYS)}}
    else:
        entry = ((info.confirmation or {}).get("baselines") or {}).get(kind)
        if not isinstance(entry, Mapping) or not math.isfinite(as_float(entry.get("speedup"))):
            return None
        point = {"ratio": entry.get("ratio"), "metric": entry.get("val_metric"), "drop": entry.get("val_drop"),
                 "speedup_searched": entry.get("search_speedup"),
                 **{k: entry.get(k) for k in ("speedup", "speedup_spread", "latency_ms", *SELECTION_KEYS, "noisy")}}
    if timing_unsettled(point.pop("noisy"), point.get("speedup_spread"), info.cv_threshold):
        return None
    return BaselinePoint.from_point(point | {"timing": "confirmed"})


def _best_points(
    done: pd.DataFrame, info: StudyInfo, baselines: Mapping[str, list[BaselinePoint]], max_drop: float, confirmed: bool
) -> dict[str, BaselinePoint | None]:
    """Per baseline kind, the point the chosen trial is compared with: its confirmed re-timing when the choice
    is confirmed and the confirmation re-timed it, else the sweep's best feasible settled point."""
    out: dict[str, BaselinePoint | None] = {}
    for kind in BASELINE_KINDS:
        sweep = best_baseline([p.to_json() for p in baselines.get(kind, [])], max_drop,
                              metric_direction=info.metric_direction, cv_threshold=info.cv_threshold)
        out[kind] = (_confirmed_baseline(kind, done, info) if confirmed else None) or (
            None if sweep is None else BaselinePoint.from_point(sweep))
    return out


def pooled_base_latency(done: pd.DataFrame, baselines: Mapping[str, list[dict[str, Any]]]) -> float:
    """One estimate of the unpruned model's latency (ms): the median of every timing's own base measurement.

    Each trial and sweep point timed the base beside itself, so their base latencies differ by the timing
    noise; dividing this one estimate by each speedup gives latencies that order exactly as the speedups do.
    """
    values = list(pd.to_numeric(done.get("base_latency_ms", pd.Series(dtype=float)), errors="coerce").dropna())
    for points in baselines.values():
        values += [as_float(p.get("latency_ms")) * as_float(p.get("speedup")) for p in points]
    values = [v for v in values if math.isfinite(v) and v > 0]
    return float(pd.Series(values).median()) if values else math.nan


def _selection_words(confirmed: Mapping[str, Any], max_drop: float) -> str:
    """The chosen trial's figures on the selection split (which the confirmed choice rests on), in a clause."""
    if "selection_drop" not in confirmed:
        return " (not confirmed on the selection split yet)"
    verdict = "within" if holds_on_selection(confirmed, max_drop) else "over"
    text = f", selection drop {margin_text(confirmed)} ({verdict} the budget on the selection split"
    if math.isfinite(as_float(confirmed.get("speedup"))):
        text += f", confirmed speedup {as_float(confirmed['speedup']):.2f}x"
    return text + ")"


def final_test_of(info: StudyInfo, chosen: TrialFigures | None) -> dict[str, Any] | None:
    """The stored final test report (``autoprune export``) when it is the chosen trial's, else ``None``."""
    report = info.final_test or {}
    if chosen is None or report.get("trial") != chosen.number:
        return None
    return {k: plain(v) for k, v in report.items()}


def _final_test_words(report: Mapping[str, Any] | None, metric_name: str) -> str:
    """The exported model's test figure in a clause (read once, after the pick; it chose nothing)."""
    if report is None:
        return "; test split not read yet (export reads it once, for the exported model)"
    verdict = "within" if report.get("within_budget") else "over"
    metric = _pm(report.get("test_metric"), Z95 * as_float(report.get("test_metric_stderr")), ".4f")
    return (f"; test drop {as_float(report.get('test_drop')):+.4f} ({metric_name} {metric} on the test split, read once "
            f"after the pick, {verdict} the budget; reported, not used to choose)")


def _noise(done: pd.DataFrame, info: StudyInfo, max_drop: float, chosen: TrialFigures | None) -> dict[str, Any]:
    """Noise floor of the measurements, the budget-vs-noise warning, and the chosen trial's val/test view."""
    metric_se = _median(done, "metric_stderr")
    drop_se = _median(done, "drop_stderr")
    if not math.isfinite(drop_se) and math.isfinite(metric_se) and math.isfinite(info.base_metric_stderr):
        drop_se = drop_stderr(info.base_metric_stderr, metric_se)
    spread = _median(done, "speedup_spread")
    parts = []
    if math.isfinite(metric_se) or math.isfinite(info.base_metric_stderr):
        parts.append(f"{info.metric_name} standard error {metric_se:.4f} (median over trials; base "
                     f"{info.base_metric_stderr:.4f})")
    if math.isfinite(drop_se):
        parts.append(f"drop standard error {drop_se:.4f} (95% interval ±{Z95 * drop_se:.4f})")
    if math.isfinite(spread):
        parts.append(f"median speedup spread {100 * spread:.1f}% (robust CV of the timing ratios)")
    line = "Noise floor: " + ("; ".join(parts) if parts else "no standard errors or spreads were recorded") + "."
    if chosen is not None:
        se = as_float(chosen.drop_stderr)
        val = f"validation drop {chosen.drop:.4f}" + (f" ± {Z95 * se:.4f}" if math.isfinite(se) else "")
        line += f" Chosen trial {chosen.number}: {val}"
        line += _selection_words(chosen.confirmed or {}, max_drop)
        line += _final_test_words(final_test_of(info, chosen), info.metric_name) + "."
    return {
        "metric_stderr": plain(metric_se),
        "base_metric_stderr": plain(info.base_metric_stderr),
        "drop_stderr": plain(drop_se),
        "speedup_spread": plain(spread),
        "n_val": info.n_val,
        "warning": budget_noise_warning(max_drop, drop_se, info.n_val) if math.isfinite(drop_se) else None,
        "line": line,
    }


@dataclasses.dataclass(frozen=True)
class Summary:
    """The findings of a study at one drop budget (:func:`summarize`); :meth:`to_json` is ``summary.json``.

    The trial records are :class:`~autoprune.analysis.points.TrialFigures`, the trials left out
    :class:`~autoprune.analysis.points.LeftOut` and the baseline points
    :class:`~autoprune.analysis.points.BaselinePoint`, read by attribute; the other nested figures (the noise
    floor, the hypervolume, the screening, the final figures) are JSON-like dicts, as ``summary.json`` holds them.

    Attributes:
        study ... n_feasible: the study, its budget and trial counts.
        chosen: a trial record or ``None``: the study's one choice (:func:`autoprune.analysis.choose`), whose
            ``speedup`` is its confirmed figure once ``autoprune confirm`` has run.
        selection: ``"confirmed"`` or ``"validation"`` (unconfirmed); ``validation_pick`` its number;
            ``passed_over`` the validation pick's record when the confirmed choice is another trial;
            ``selection_notes``, ``selection_error``.
        confirmed_at: when the stored confirmation was measured, or ``None``.
        final_test: the chosen trial's report on the test split when it is the exported one
            (:mod:`autoprune.selection.final_test`), else ``None``; it never chooses.
        front: trial records, slowest first; ``baselines`` the sweeps; ``best`` ``{kind: point or None}`` (the
            confirmation's re-timing of that baseline when the choice is confirmed); ``speedup_vs`` ``{kind:
            chosen speedup / best point's, or None}``; ``base_latency_ms`` the pooled base latency.
        sentence: the headline; ``unsettled`` the complete trials left out for an unsettled timing (``number,
            speedup, speedup_spread, feasible``); ``noise``, ``hypervolume``, ``recovery_warnings``.
        curves: per trial number, its finetune curve ``[[step, calibration drop], ...]``
            (:func:`autoprune.analysis.frame.finetune_curves`); ``screening``; ``final`` (autoprune finalize).
    """

    study: str
    storage: str
    metric_name: str
    metric_direction: str
    base_metric: Any
    max_drop: float
    host_id: str | None
    n_trials: int
    n_complete: int
    n_feasible: int
    chosen: TrialFigures | None
    selection: str
    validation_pick: Any
    passed_over: TrialFigures | None
    selection_notes: list[str]
    selection_error: str | None
    confirmed_at: Any
    final_test: dict[str, Any] | None
    front: list[TrialFigures]
    baselines: dict[str, list[BaselinePoint]]
    best: dict[str, BaselinePoint | None]
    speedup_vs: dict[str, Any]
    base_latency_ms: Any
    sentence: str
    unsettled: list[LeftOut]
    noise: dict[str, Any]
    hypervolume: dict[str, Any] | None
    recovery_warnings: list[str]
    curves: dict[str, list[list[float]]]
    screening: Any
    final: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The JSON-friendly dict written as ``summary.json`` (and printed by ``autoprune pareto --json``)."""
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _json(value: Any) -> Any:
    """A summary field as ``summary.json`` holds it: typed figures as their ``to_json()``, lists item by item."""
    if isinstance(value, (TrialFigures, LeftOut, BaselinePoint)):
        return value.to_json()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def summarize(df: pd.DataFrame, info: StudyInfo, max_drop: float | None = None) -> Summary:
    """The findings of a study at one drop budget, as plain JSON-friendly data.

    No front point, pick or headline rests on a timing that did not settle (flagged noisy, or a spread
    above the study's ``latency.cv_threshold``): such a trial counts with its settled re-timing from
    ``autoprune confirm`` or ``retime``, or is left out and listed in ``unsettled``; the headline says so,
    and says when its speedups are search timings not yet confirmed by a re-timing.

    Args:
        df: the trial table (:func:`autoprune.analysis.load_trials`).
        info: the study info.
        max_drop: the budget; ``None`` uses the study's own ``max_drop``.

    Returns:
        The :class:`Summary` (its :meth:`Summary.to_json` is ``summary.json``).

    Raises:
        ConfigError: no ``max_drop`` was given and the study records none.

    Example:
        >>> s = summarize(df, info, max_drop=0.01)  # doctest: +SKIP
        >>> s.chosen.number, s.speedup_vs["uniform"]  # doctest: +SKIP
        (17, 1.24)
    """
    max_drop = _budget(info, max_drop)
    done = completed(df)
    choice = _choose(done, info, max_drop)
    chosen = None if choice.row is None else TrialFigures.from_row(choice.row, max_drop, choice.number)
    passed = None if choice.passed_over is None else TrialFigures.from_row(choice.passed_over, max_drop, None)
    baselines = {k: [BaselinePoint.from_point(p) for p in v] for k, v in info.baselines.items()}
    best = _best_points(done, info, baselines, max_drop, choice.confirmed)
    unsettled = _unsettled(done, max_drop, info.cv_threshold)
    front = pareto_front(done, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold)
    return Summary(**{
        **_study_counts(df, done, info, max_drop),
        **_selection_record(choice, chosen, passed),
        "confirmed_at": (info.confirmation or {}).get("measured_at"),
        "final_test": final_test_of(info, chosen),
        "front": [TrialFigures.from_row(r, max_drop, choice.number) for r in front.to_dict("records")],
        "baselines": baselines,
        "best": best,
        "speedup_vs": {k: (chosen.speedup / as_float(b.speedup) if chosen and b else None) for k, b in best.items()},
        "base_latency_ms": plain(pooled_base_latency(done, info.baselines)),
        "sentence": _headline(choice, chosen, passed, best, baselines, unsettled, max_drop, info.cv_threshold),
        "unsettled": unsettled,
        "noise": _noise(done, info, max_drop, chosen),
        "hypervolume": _hypervolume(df, done, info, max_drop),
        "recovery_warnings": _recovery_warnings(info, max_drop),
        "curves": finetune_curves(df),
        "screening": screening_summary(df),
        "final": info.final,  # autoprune finalize: the figures after the long final recovery, by trial
    })


def _budget(info: StudyInfo, max_drop: float | None) -> float:
    """The budget to judge at: ``max_drop``, else the study's own.

    Raises:
        ConfigError: neither is known.
    """
    if max_drop is None:
        max_drop = info.max_drop
    if max_drop is None:
        raise ConfigError(f"study {info.name!r} records no max_drop; pass --max-drop")
    return max_drop


def _choose(done: pd.DataFrame, info: StudyInfo, max_drop: float) -> Choice:
    """The study's one choice (:func:`autoprune.analysis.choose`) among the complete trials."""
    # Judged on another host (--host-id), confirmed figures count only when that host re-timed them.
    same_host = info.host_id is None or (info.confirmation or {}).get("host_id") == info.host_id
    return choose(done, max_drop, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold,
                  use_confirmed=same_host)


def _study_counts(df: pd.DataFrame, done: pd.DataFrame, info: StudyInfo, max_drop: float) -> dict[str, Any]:
    """The summary's opening keys: what the study is and how many trials it holds."""
    return {
        "study": info.name,
        "storage": info.storage,
        "metric_name": info.metric_name,
        "metric_direction": info.metric_direction,
        "base_metric": plain(info.base_metric),
        "max_drop": max_drop,
        "host_id": info.host_id,
        "n_trials": int(len(df)),
        "n_complete": int(len(done)),
        "n_feasible": int((done["drop"] <= max_drop).sum()) if len(done) else 0,
    }


def _selection_record(choice: Choice, chosen: TrialFigures | None, passed: TrialFigures | None) -> dict[str, Any]:
    """The summary's selection keys: the chosen trial, how it was chosen, and what was passed over."""
    return {
        "chosen": chosen,
        "selection": choice.source,
        "validation_pick": None if choice.validation is None else plain(choice.validation["number"]),
        "passed_over": passed,
        "selection_notes": choice.notes,
        "selection_error": choice.error,
    }


def refresh_report(
    storage: str, study_name: str, max_drop: float | None, out_dir: str | Path
) -> tuple[Summary, dict[str, Path]]:
    """Summarize a study again and rewrite its report files, so every view shows the figures just stored.

    ``confirm`` and ``export`` (which confirms first) change the figures the choice rests on; they call this
    so that ``summary.json``, ``report.html`` and ``pareto.png`` never show an older choice than the terminal.

    Returns:
        ``(summary, paths)`` as :func:`summarize` and :func:`write_report` give them.
    """
    df, info = load_analysis(storage, study_name, max_drop=max_drop)
    summary = summarize(df, info, max_drop)
    return summary, write_report(df, info, max_drop, out_dir, summary=summary)


def _headline(
    choice: Choice,
    chosen: TrialFigures | None,
    passed: TrialFigures | None,
    best: Mapping[str, Any],
    baselines: Mapping[str, Any],
    unsettled: list[LeftOut],
    max_drop: float,
    threshold: float | None,
) -> str:
    """The headline sentence: the choice against the baselines, what it passed over, and how it was timed."""
    retimed = choice.row is not None and (
        choice.row.get("timing") != "measured" or retiming(choice.row, threshold) is not None)
    sentence = _comparison_sentence(chosen, best, baselines, max_drop, choice.error)
    sentence += _passed_over_note(passed, max_drop)
    sentence += _timing_note(chosen, retimed, best, unsettled)
    return sentence


def screening_summary(df: pd.DataFrame) -> dict[str, Any]:
    """How much the screening saved, and how well the metric after BN recalibration ranks the finetuned one.

    Returns:
        ``search_trials`` (search trials that ran or were screened, duplicates left out), ``screened``,
        ``finetunes_saved`` (their share), ``by_reason`` (counts by rule), ``spearman_after_bn`` (rank
        correlation of the metric after BN recalibration with the finetuned metric, over fully evaluated
        trials) and ``pairs`` (how many trials that correlation rests on).
    """
    own = df[df["duplicate_of"].isna()] if "duplicate_of" in df else df
    search = own[own["kind"] == "search"] if "kind" in own else own
    screened = search["screened"].notna() if "screened" in search else pd.Series(False, index=search.index)
    reasons: dict[str, int] = {}
    for text in search.loc[screened, "screened"] if "screened" in search else []:
        rule = str(text).split(":", 1)[0]
        reasons[rule] = reasons.get(rule, 0) + 1
    ran = completed(own)
    pairs = ran[["metric_after_bn", "metric"]].dropna() if "metric_after_bn" in ran else pd.DataFrame()
    rho = spearman(list(pairs["metric_after_bn"]), list(pairs["metric"])) if len(pairs) else math.nan
    return {
        "search_trials": int(len(search)),
        "screened": int(screened.sum()),
        "finetunes_saved": plain(float(screened.sum()) / len(search)) if len(search) else None,
        "by_reason": reasons,
        "spearman_after_bn": plain(rho),
        "pairs": int(len(pairs)),
    }


def _hypervolume(df: pd.DataFrame, done: pd.DataFrame, info: StudyInfo, max_drop: float) -> dict[str, Any] | None:
    """Hypervolume above the budget line and 1.0x, in all and after 10, 20 and 40 trials.

    Args:
        df: every trial.
        done: the complete ones (:func:`completed`).
        info: the study info.
        max_drop: the budget.

    Returns:
        ``{"reference", "value", "history"}``, or ``None`` when no budget line is known.
    """
    reference = (info.metric_at_drop(max_drop), 1.0)
    if not math.isfinite(reference[0]):
        return None
    direction = info.metric_direction
    # Every trial counts as spent in the history, finished or not; only settled complete ones add volume.
    fair = settled(done, info.cv_threshold)
    points = [(float(r["metric"]), float(fair.at[i, "speedup"])) if i in fair.index else (math.nan, math.nan)
              for i, r in df.sort_values("number").iterrows()]
    history = hypervolume_history(points, reference, metric_direction=direction)
    return {
        "reference": [plain(reference[0]), 1.0],
        "value": plain(hypervolume_2d(points, reference, metric_direction=direction)),
        "history": {n: plain(v) for n, v in history.items()},
    }


def _recovery_warnings(info: StudyInfo, max_drop: float) -> list[str]:
    """Where the recovery rather than the pruning decides the outcome (:func:`autoprune.trial.recipe.recovery_warnings`)."""
    sweeps = {
        kind: [SimpleNamespace(kind=kind, ratio=as_float(p.get("ratio")), drop=as_float(p.get("drop")),
                               metric_stderr=as_float(p.get("metric_stderr")) if p.get("metric_stderr") is not None else None)
               for p in points if math.isfinite(as_float(p.get("drop")))]
        for kind, points in info.baselines.items()
    }
    return recovery_warnings(sweeps, max_drop, info.recovery_calibration, info.metric_direction)


# Formatting shared by the CLI table and the HTML tables ----------------------------------------------

def _si(value: Any) -> str:
    """1234567 -> '1.23M' (MACs and parameter counts)."""
    v = as_float(value)
    if not math.isfinite(v):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def _pm(value: Any, err: Any, fmt: str) -> str:
    """'value ± err' (err omitted when unknown), '-' for a missing value."""
    v, e = as_float(value), as_float(err)
    if not math.isfinite(v):
        return "-"
    return f"{v:{fmt}}" + (f" ± {e:{fmt}}" if math.isfinite(e) else "")


def _speed(value: Any, spread: Any) -> str:
    """'2.41x ± 1.2%': the spread is relative (robust CV of the timing ratios)."""
    v, s = as_float(value), as_float(spread)
    if not math.isfinite(v):
        return "-"
    return f"{v:.2f}x" + (f" ± {100 * s:.1f}%" if math.isfinite(s) else "")


def _latency(speedup: Any, base_ms: Any) -> str:
    """The latency a speedup means against the pooled base latency ('-' when either is unknown)."""
    return _pm(as_float(base_ms) / as_float(speedup), None, ".3f")


def _confirmed_cells(conf: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``selection drop`` and ``confirmed`` cells of a row from its confirmed figures."""
    conf = conf or {}
    return {"selection_drop": _pm(conf.get("selection_drop"), None, "+.4f"),
            "confirmed": _speed(conf.get("speedup"), conf.get("speedup_spread"))}


def _row_latency(speed: Any, confirmed: Mapping[str, Any] | None, base_ms: Any) -> str:
    """The latency cell: the confirmed re-timing's own latency where there is one, else base latency / speedup."""
    conf = confirmed or {}
    if math.isfinite(as_float(conf.get("latency_ms"))) and math.isfinite(as_float(conf.get("speedup"))):
        return _pm(conf["latency_ms"], None, ".3f")
    return _latency(speed, base_ms)


def _trial_row(rec: TrialFigures, mark: str, base_ms: Any) -> dict[str, str]:
    """One table row for a trial record (its ``speedup`` column is the search timing, or the re-timing the
    analysis judges it by, marked ``(re-timed)``; ``latency ms`` the confirmed one where there is one)."""
    se = as_float(rec.drop_stderr)
    speed, spread = rec.speedup, rec.speedup_spread
    label = str(rec.number) + (f" ({rec.kind})" if rec.kind not in (None, "search") else "")
    return {
        "mark": mark,
        "trial": label + (" (re-timed)" if rec.timing in ("confirmed", "retimed") else ""),
        "drop": _pm(rec.drop, Z95 * se if math.isfinite(se) else None, ".4f"),
        "speedup": _speed(speed, spread),
        "latency_ms": _row_latency(speed, rec.confirmed, base_ms),
        "macs": _si(rec.macs),
        "params": _si(rec.params),
        "feasible": "yes" if rec.feasible else "no",
        **_confirmed_cells(rec.confirmed),
    }


def _baseline_row(kind: str, point: BaselinePoint, base_ms: Any) -> dict[str, str]:
    """The table row of a baseline's best point (its confirmed figures, when re-timed, in their own columns)."""
    confirmed = point.confirmed_figures()
    speed = point.speedup_searched if confirmed is not None else point.speedup
    spread = None if confirmed is not None else point.speedup_spread
    ratio = as_float(point.ratio)
    return {
        "mark": kind[0].upper(),
        "trial": f"{kind} r={ratio:.2f}" if math.isfinite(ratio) else f"{kind} (trial {point.number})",
        "drop": _pm(point.drop, None, ".4f"),
        "speedup": _speed(speed, spread),
        "latency_ms": _row_latency(speed, confirmed, base_ms),
        "macs": _si(point.macs),
        "params": _si(point.params),
        "feasible": "yes",
        **_confirmed_cells(confirmed),
    }


def table_rows(summary: Summary) -> list[dict[str, str]]:
    """The front table with the chosen trial, the validation pick and the best baselines, as display strings.

    Markers: ``*`` the chosen trial, ``v`` the validation-time pick when the confirmed choice is another
    trial, ``U``/``G`` the best uniform/global baseline point.  The drop is shown with its 95 % half-width
    (1.96 standard errors), the speedup (the search timing) with its relative spread; ``latency ms`` is the
    pooled base latency divided by that speedup, so a faster row never shows a higher latency; ``selection
    drop`` and ``confirmed`` are the figures of ``autoprune confirm`` (selection split, re-timed together),
    which the choice rests on once they exist.  No cell comes from the test split (the noise line reports
    the exported model's test figure).

    Args:
        summary: the output of :func:`summarize`.

    Returns:
        Rows with keys ``mark, trial, drop, selection_drop, speedup, confirmed, latency_ms, macs, params,
        feasible``: the front slowest first, the chosen trial and the validation pick when they are not on
        it, then the best baseline points.
    """
    base_ms = summary.base_latency_ms
    chosen = summary.chosen
    chosen_n = None if chosen is None else chosen.number
    passed_n = summary.validation_pick if summary.validation_pick != chosen_n else None
    marks = {chosen_n: "*", passed_n: "v"}
    rows = [_trial_row(rec, marks.get(rec.number, ""), base_ms) for rec in summary.front]
    on_front = {rec.number for rec in summary.front}
    for rec in (chosen, summary.passed_over):
        if rec is not None and rec.number not in on_front and rec.number in marks:
            rows.append(_trial_row(rec, marks[rec.number], base_ms))
            on_front.add(rec.number)
    for kind in BASELINE_KINDS:
        point = summary.best.get(kind)
        if point is not None:
            rows.append(_baseline_row(kind, point, base_ms))
    return rows


TABLE_HEADERS = {
    "mark": "",
    "trial": "trial",
    "drop": "val drop ± 95%",
    "selection_drop": "selection drop",
    "speedup": "speedup ± spread",
    "confirmed": "confirmed",
    "latency_ms": "latency ms",
    "macs": "MACs",
    "params": "params",
    "feasible": "feasible",
}


def table_legend(summary: Summary) -> str:
    """The line under the table: the markers and where each figure comes from."""
    marks = "* chosen trial" + ("   v validation-time pick" if summary.passed_over else "")
    base = as_float(summary.base_latency_ms)
    latency = f"latency = pooled base latency {base:.3f} ms / speedup" if math.isfinite(base) else "latency: not timed"
    if summary.selection == "confirmed":
        confirmed = "confirmed = re-timed together by autoprune confirm (the choice rests on it)"
    elif summary.confirmed_at:
        confirmed = ("confirmed = re-timed by autoprune confirm, but no feasible candidate's re-timing settled: "
                     "the choice rests on validation figures")
    else:
        confirmed = "figures unconfirmed (run autoprune confirm)"
    latency += "; the confirmed latency where re-timed" if summary.confirmed_at and math.isfinite(base) else ""
    kinds = "U best uniform baseline   G best global baseline" + (
        "   S best sensitivity baseline" if summary.best.get("sensitivity") else "")
    return (f"  {marks}   {kinds}   val drop ± 1.96 standard errors (validation "
            "split); selection drop = autoprune confirm's, on the selection split\n"
            f"  speedup = search timing (or the re-timing that replaced it); {confirmed}; {latency}")


def format_table(rows: list[dict[str, str]], headers: Mapping[str, str] = TABLE_HEADERS) -> str:
    """Fixed-width text table (first column left-aligned, the rest right-aligned)."""
    keys = list(headers)
    widths = {k: max([len(headers[k])] + [len(r.get(k, "")) for r in rows]) for k in keys}

    def line(cells: Mapping[str, str]) -> str:
        return "  ".join(
            cells.get(k, "").ljust(widths[k]) if i < 2 else cells.get(k, "").rjust(widths[k])
            for i, k in enumerate(keys)
        ).rstrip()

    return "\n".join([line(headers), line({k: "-" * widths[k] for k in keys})] + [line(r) for r in rows])


# Files ------------------------------------------------------------------------------------------------

def _html_table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """An escaped HTML table; the first column is left-aligned."""
    head = "".join(f'<th class="l">{html.escape(h)}</th>' if i == 0 else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for j, row in enumerate(rows):
        cls = f' class="{classes[j]}"' if classes and classes[j] else ""
        cells = "".join(f'<td class="l">{html.escape(c)}</td>' if i == 0 else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(path: Path) -> str:
    """A PNG file as a base64 data URI (the report must not reference files or remote URLs)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _baseline_html(summary: Summary) -> str:
    """All sweep points, the best feasible one of each sweep highlighted."""
    rows, classes = [], []
    for kind, points in sorted(summary.baselines.items()):
        best = summary.best.get(kind)
        for p in sorted(points, key=lambda p: as_float(p.ratio)):
            rows.append([kind, f"{as_float(p.ratio):.2f}", _pm(p.metric, None, ".4f"),
                         _pm(p.drop, None, ".4f"), _speed(p.speedup, p.speedup_spread),
                         _latency(p.speedup, summary.base_latency_ms), _si(p.macs), _si(p.params),
                         "yes" if as_float(p.drop) <= summary.max_drop else "no"])
            classes.append("best" if p == best else "")
    if not rows:
        return "<p>No baseline sweeps were recorded in this study.</p>"
    return _html_table(["sweep", "ratio", "metric", "drop", "speedup", "latency ms", "MACs", "params", "feasible"],
                       rows, classes)


def _final_html(summary: Summary) -> str:
    """The figures after the long final recovery (``autoprune finalize``), one row per finalized architecture."""
    final = summary.final or {}
    entries = [*(final.get("trials") or {}).values(), *(final.get("baselines") or {}).values()]
    if not entries:
        return '<p class="meta">No architecture of this study was finalized yet (autoprune finalize).</p>'
    rows = [[str(e.get("label")), str(e.get("kind")), f"{int(e.get('epochs') or 0)}", _pm(e.get("val_drop"), None, "+.4f"),
             _pm(e.get("test_drop"), None, "+.4f"), _speed(e.get("speedup"), e.get("speedup_spread")), str(e.get("measured_at"))]
            for e in entries]
    return _html_table(["architecture", "kind", "epochs", "val drop", "test drop", "final speedup", "timed at"], rows)


def _ratios_html(summary: Summary, info: StudyInfo) -> str:
    """The chosen ratio and kept channels per group, next to the group's bounds."""
    chosen = summary.chosen
    if chosen is None:
        return "<p>No trial was chosen, so no ratios are shown.</p>"
    ratios, channels = chosen.ratios or {}, chosen.channels or {}
    names = info.group_names + [g for g in ratios if g not in info.group_names]
    rows = []
    for g in names:
        low, high = info.bounds.get(g, (math.nan, math.nan))
        rows.append([g, f"{as_float(ratios.get(g)):.3f}", f"{low:.2f} .. {high:.2f}", str(channels.get(g, "-"))])
    return _html_table(["group", "chosen ratio", "bounds", "kept channels"], rows)


def _reference_ratios(summary: Summary) -> dict[str, float | dict[str, float]]:
    """The best baselines' ratios for the ratio chart: per group where recorded (a global ranking prunes
    each group differently), else the sweep's single ratio."""
    out: dict[str, float | dict[str, float]] = {}
    for kind, point in summary.best.items():
        if point is None:
            continue
        per_group = point.ratios
        if isinstance(per_group, Mapping) and per_group and kind != "uniform":
            out[f"best {kind}"] = {g: float(r) for g, r in per_group.items()}
        elif math.isfinite(as_float(point.ratio)):
            out[f"best {kind}"] = as_float(point.ratio)
    return out


def _recovery_html(info: StudyInfo, png: Path | None) -> str:
    """The recovery section: the calibrated recipe and its curve, or a note that the recipe was pinned."""
    record = info.recovery_calibration
    if not record or png is None:
        return '<p class="meta">The recovery recipe was pinned in the config (no calibration).</p>'
    chosen = record["chosen"]
    text = (f"Calibrated on uniform {float(record['probe_ratio']):.2f}: lr {float(chosen['lr']):g}, "
            f"{float(chosen['epochs']):g} epochs ({int(chosen['steps'])} steps), the cheapest recipe within noise of the best tried.")
    return f'<p class="meta">{html.escape(text)}</p>\n<img alt="recovery curve" src="{_data_uri(png)}">'


def _chosen_note(summary: Summary) -> str:
    """The chosen trial's figure for the plot legend: confirmed, or search timing and unconfirmed."""
    chosen = summary.chosen
    if chosen is None:
        return ""
    if summary.selection == "confirmed":
        return f"confirmed {as_float(chosen.speedup):.2f}x"
    return f"{as_float(chosen.speedup):.2f}x, unconfirmed"


def write_report(
    df: pd.DataFrame,
    info: StudyInfo,
    max_drop: float | None,
    out_dir: str | Path,
    *,
    summary: Summary | None = None,
) -> dict[str, Path]:
    """Write the analysis files of a study into ``out_dir``.

    Files: ``trials.csv`` (every trial), ``front.csv`` (the Pareto front, with ``chosen`` and the 95 % drop
    interval), ``pareto.png``, ``ratios.png``, ``summary.json`` (:func:`summarize`) and a self-contained
    ``report.html``.

    Args:
        df: the trial table.
        info: the study info.
        max_drop: the budget (``None``: the study's own).
        out_dir: the folder (created when missing).
        summary: :func:`summarize` of the same arguments when the caller already has it.

    Returns:
        ``{"trials_csv", "front_csv", "pareto_png", "ratios_png", "summary_json", "report_html"}`` -> path.

    Example:
        >>> df, info = load_analysis("sqlite:///studies/resnet.db", "resnet")  # doctest: +SKIP
        >>> write_report(df, info, 0.01, "reports/resnet")["report_html"]  # doctest: +SKIP
        PosixPath('reports/resnet/report.html')
    """
    summary = summary if summary is not None else summarize(df, info, max_drop)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / file for name, file in (
        ("trials_csv", "trials.csv"), ("front_csv", "front.csv"), ("pareto_png", "pareto.png"),
        ("ratios_png", "ratios.png"), ("summary_json", "summary.json"), ("report_html", "report.html"))}
    df.to_csv(paths["trials_csv"], index=False)
    _write_front_csv(df, info, summary, paths["front_csv"])
    _write_plots(df, info, summary, out, paths)
    write_json(paths["summary_json"], summary.to_json(), default=str)
    paths["report_html"].write_text(_report_page(summary, info, paths), encoding="utf-8")
    return paths


def _chosen_number(summary: Summary) -> int | None:
    chosen = summary.chosen
    return None if chosen is None else chosen.number


def _write_front_csv(df: pd.DataFrame, info: StudyInfo, summary: Summary, path: Path) -> None:
    """``front.csv``: the Pareto front with ``feasible``, ``chosen`` and the 95 % drop interval."""
    max_drop, chosen_number = summary.max_drop, _chosen_number(summary)
    front = pareto_front(completed(df), metric_direction=info.metric_direction, cv_threshold=info.cv_threshold).copy()
    front["feasible"] = front["drop"] <= max_drop
    front["chosen"] = (front["number"] == chosen_number) if chosen_number is not None else False
    front["drop_low"] = front["drop"] - Z95 * front["drop_stderr"]
    front["drop_high"] = front["drop"] + Z95 * front["drop_stderr"]
    first = ["number", "state", "metric", "metric_stderr", "drop", "drop_stderr", "drop_low", "drop_high",
             "speedup", "speedup_spread", "latency_ms", "macs", "params", "feasible", "chosen", "kind", "timing",
             "speedup_searched"]
    rest = [c for c in front.columns if c.startswith(("ratio:", "channels:", CONFIRMED_PREFIX))]
    front[[c for c in first if c in front] + rest].to_csv(path, index=False)


def _write_plots(df: pd.DataFrame, info: StudyInfo, summary: Summary, out: Path, paths: dict[str, Path]) -> None:
    """The recovery curve (when calibrated, added to ``paths``), the trade-off plot and the ratio chart."""
    chosen, chosen_number = summary.chosen, _chosen_number(summary)
    if info.recovery_calibration:
        paths["recovery_png"] = plot_recovery_curve(info.recovery_calibration, out / "recovery-curve.png")
    plot_pareto(df, info, summary.max_drop, paths["pareto_png"], chosen_number=chosen_number,
                chosen_note=_chosen_note(summary),
                passed_over=None if summary.passed_over is None else summary.passed_over.number,
                chosen_speedup=None if chosen is None else chosen.speedup, best=summary.best)
    plot_ratios((chosen.ratios if chosen else None) or {}, info.bounds, paths["ratios_png"],
                reference=_reference_ratios(summary),
                title=f"trial {chosen_number}: ratio per group against the space searched" if chosen else
                "no trial chosen: the space searched per group")


def _front_html(summary: Summary) -> str:
    """The front table of the report, the chosen trial and the best baselines highlighted."""
    rows = table_rows(summary)
    return _html_table(
        [TABLE_HEADERS[k] or "mark" for k in TABLE_HEADERS],
        [[r[k] for k in TABLE_HEADERS] for r in rows],
        ["chosen" if r["mark"] == "*" else "best" if r["mark"] in ("U", "G") else "" for r in rows],
    )


def _hypervolume_text(hv: Mapping[str, Any] | None) -> str:
    """The hypervolume line of the report."""
    return "No budget line is known, so no hypervolume." if hv is None else (
        f"Hypervolume above ({hv['reference'][0]:.4f}, 1.0x): {hv['value']:.5f}; after "
        + ", ".join(f"{n} trials {v:.5f}" for n, v in hv["history"].items()) + "."
        if hv["history"] else f"Hypervolume above ({hv['reference'][0]:.4f}, 1.0x): {hv['value']:.5f}.")


def _meta_text(summary: Summary, info: StudyInfo) -> str:
    """The report's line under the title: trial counts, budget, metric, storage and timing host."""
    return (f"{summary.n_complete} complete of {summary.n_trials} trials, {summary.n_feasible} within "
            f"max drop {summary.max_drop:g}. {info.metric_name} ({info.metric_direction}), unpruned "
            f"{info.base_metric:.4f}. Storage: {info.storage or 'n/a'}."
            + (f" Speed judged on host {info.host_id}." if info.host_id else ""))


def _report_page(summary: Summary, info: StudyInfo, paths: Mapping[str, Path]) -> str:
    """The self-contained ``report.html`` page, from the package's template and the PNGs already written."""
    warnings = [summary.noise["warning"], *summary.recovery_warnings]
    template = Template(resources.files("autoprune.analysis").joinpath("report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(f"{info.name}: Pareto front and selection"),
        meta=html.escape(_meta_text(summary, info)),
        sentence=html.escape(summary.sentence),
        warning="".join(f'<p class="warning">Warning: {html.escape(w)}</p>' for w in warnings if w),
        noise=html.escape(summary.noise["line"]),
        metric_name=html.escape(info.metric_name),
        pareto_png=_data_uri(paths["pareto_png"]),
        ratios_png=_data_uri(paths["ratios_png"]),
        front_table=_front_html(summary),
        front_legend=html.escape(table_legend(summary)),
        baseline_table=_baseline_html(summary),
        final_table=_final_html(summary),
        ratios_table=_ratios_html(summary, info),
        recovery=_recovery_html(info, paths.get("recovery_png")),
        hypervolume=html.escape(_hypervolume_text(summary.hypervolume)),
        config=html.escape(json.dumps(redact(info.config), indent=2, sort_keys=True, default=str)),
        footer=html.escape(f"Written by autoprune on {datetime.datetime.now().isoformat(timespec='seconds')}."),
    )
