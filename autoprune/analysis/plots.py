"""PNG plots of a study: the trade-off with its front and baselines, the chosen ratios, several studies.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``) rather than
through ``pyplot``, so plotting never changes the process-wide backend or leaks figures.

In every metric plot "up is better": the y axis is inverted for a metric that is minimised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import cast

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoprune.analysis.frame import StudyInfo
from autoprune.analysis.pareto import as_float
from autoprune.analysis.pareto import best_baseline
from autoprune.analysis.pareto import completed
from autoprune.analysis.pareto import pareto_front
from autoprune.analysis.pareto import select
from autoprune.analysis.points import BaselinePoint
from autoprune.errors import SelectionError

_BASELINE_STYLE: dict[str, dict[str, Any]] = {
    "uniform": {"color": "tab:blue", "marker": "s"},
    "global": {"color": "tab:orange", "marker": "^"},
    "sensitivity": {"color": "tab:purple", "marker": "D"},
}
_FRONT_COLOR = "tab:green"
_BUDGET_COLOR = "tab:red"
# The chosen star's marker area (points^2); a ring drawn where the star may sit is larger, and drawn above it.
_STAR_SIZE = 320
_RING_SIZE = 560
# Height (axes fraction) of the strip of screened trials.
_SCREENED_Y = 0.03


def _save(fig: Figure, path: str | Path, description: str | None = None) -> Path:
    """Write ``fig`` as PNG (``description`` in its ``Description`` text chunk) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=110, metadata={"Description": description} if description else None)
    return out


def _error_bars(df: pd.DataFrame, name: str, scale: str | None = None) -> list[float] | None:
    """Error-bar half-widths from column ``name`` (times column ``scale``), or ``None`` when unrecorded.

    ``speedup_spread`` is a relative spread (robust CV of the timing ratios), so the speedup bar is
    ``speedup * speedup_spread``.
    """
    if name not in df:
        return None
    values = [as_float(v) * (as_float(k) if scale else 1.0) for v, k in zip(df[name], df[scale] if scale else df[name], strict=True)]
    return [0.0 if math.isnan(v) else v for v in values] if any(not math.isnan(v) for v in values) else None


def _metric_limits(ax: Axes, values: list[float], info: StudyInfo, max_drop: float) -> int:
    """Fit the metric axis to the points, the budget line and the unpruned model; collapsed trials stay off it.

    A value more than four budgets below the budget line is left off the bottom, so one collapsed trial does
    not flatten the front.

    Returns:
        How many values fall outside the shown range (for a note on the plot).
    """
    budget = info.metric_at_drop(max_drop)
    finite = [v for v in values if math.isfinite(v)]
    if not finite or not math.isfinite(budget) or max_drop <= 0:
        return 0
    sign = 1.0 if info.metric_direction == "maximize" else -1.0
    worst_shown = budget - sign * 4 * max_drop
    kept = [v for v in finite if sign * v >= sign * worst_shown]
    refs = kept + [budget] + ([info.base_metric] if math.isfinite(info.base_metric) else [])
    low, high = min(refs), max(refs)
    pad = max(0.08 * (high - low), 0.1 * max_drop)
    ax.set_ylim(low - pad, high + pad)
    if sign < 0:
        ax.invert_yaxis()
    return len(finite) - len(kept)


def plot_pareto(
    df: pd.DataFrame,
    info: StudyInfo,
    max_drop: float,
    path: str | Path,
    *,
    chosen_number: int | None = None,
    chosen_note: str = "",
    passed_over: int | None = None,
    chosen_speedup: float | None = None,
    best: Mapping[str, BaselinePoint | None] | None = None,
) -> Path:
    """Metric against speedup for every complete trial, with the front, the sweeps and the budget.

    The front is highlighted and connected (with error bars where recorded: one ``metric_stderr``
    vertically, ``speedup * speedup_spread`` horizontally); the uniform and global sweeps are drawn as curves
    with their best feasible point ringed; the horizontal line is the budget ``base - max_drop``.

    Args:
        df: the trial table.
        info: the study info (base metric, direction, baselines).
        max_drop: the budget the plot is drawn for.
        path: where to write the PNG.
        chosen_number: the trial to mark as chosen (``None``: no mark).
        chosen_note: what the chosen trial's legend entry adds, e.g. ``"confirmed 2.03x"`` (default: its
            search speedup).
        passed_over: the validation-time pick to mark when the confirmed choice is another trial.
        chosen_speedup: where the chosen star goes on the speed axis: the figure ``chosen_note`` states
            (default: the trial's search timing).
        best: per baseline kind, the point the summary compares with (:attr:`Summary.best <autoprune.analysis.report.Summary>`), ringed at its
            figures (default: each sweep's best feasible point).

    The chosen trial's legend entry is also the PNG's ``Description`` text, for tools that check the picture.

    Returns:
        The PNG path.

    Example:
        >>> plot_pareto(df, info, 0.01, "out/pareto.png", chosen_number=12)  # doctest: +SKIP
    """
    fig, chosen_label = pareto_figure(df, info, max_drop, chosen_number=chosen_number, chosen_note=chosen_note,
                                      passed_over=passed_over, chosen_speedup=chosen_speedup, best=best)
    return _save(fig, path, description=chosen_label)


def pareto_figure(
    df: pd.DataFrame,
    info: StudyInfo,
    max_drop: float,
    *,
    chosen_number: int | None = None,
    chosen_note: str = "",
    passed_over: int | None = None,
    chosen_speedup: float | None = None,
    best: Mapping[str, BaselinePoint | None] | None = None,
) -> tuple[Figure, str | None]:
    """The figure :func:`plot_pareto` writes (same arguments, no path), and the chosen trial's legend entry."""
    done = completed(df)
    front = pareto_front(done, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold)
    fig = Figure(figsize=(8.5, 6.6))
    ax = fig.add_subplot(1, 1, 1)
    _draw_trials(ax, done, front)
    _draw_screened(ax, df)
    shown = list(done["metric"].astype(float)) + _draw_sweeps(ax, info, max_drop, best)
    _draw_references(ax, info, max_drop)
    chosen_label = _draw_picks(ax, done, chosen_number, chosen_note, passed_over, chosen_speedup)
    hidden = _metric_limits(ax, shown, info, max_drop)
    _label_pareto_axes(ax, info, max_drop, (len(done), _screened(df).shape[0]), hidden)
    fig.tight_layout()
    return fig, chosen_label


def _draw_trials(ax: Axes, done: pd.DataFrame, front: pd.DataFrame) -> None:
    """The complete trials, within and over budget, and the front connected with its error bars."""
    ok = done["feasible"].astype(bool) if "feasible" in done else pd.Series(True, index=done.index)
    ax.scatter(done.loc[ok, "speedup"], done.loc[ok, "metric"], s=14, color="0.55", alpha=0.6,
               label=f"trials within budget ({int(ok.sum())})", zorder=2)
    ax.scatter(done.loc[~ok, "speedup"], done.loc[~ok, "metric"], s=14, facecolors="none",
               edgecolors="0.6", alpha=0.7, label=f"trials over budget ({int((~ok).sum())})", zorder=2)
    if not front.empty:
        ax.errorbar(front["speedup"], front["metric"], yerr=_error_bars(front, "metric_stderr"),
                    xerr=_error_bars(front, "speedup_spread", scale="speedup"), color=_FRONT_COLOR, marker="o",
                    ms=5, lw=1.6,
                    elinewidth=0.8, capsize=2, label=f"Pareto front ({len(front)})", zorder=4)


def _screened(df: pd.DataFrame) -> pd.DataFrame:
    """The trials screened before their finetune that recorded a speedup and a metric after BN recalibration."""
    if "screened" not in df or "metric_after_bn" not in df:
        return df.iloc[0:0]
    speed = pd.to_numeric(df["speedup"], errors="coerce") if "speedup" in df else pd.Series(math.nan, index=df.index)
    metric = pd.to_numeric(df["metric_after_bn"], errors="coerce")
    return df[df["screened"].notna() & speed.notna() & metric.notna()]


def _draw_screened(ax: Axes, df: pd.DataFrame) -> None:
    """The screened trials in their own style: at their speedup, in a strip along the bottom of the plot.

    They have no finetuned metric; their metric after BN recalibration alone lies far below the finetuned
    ones, so drawn at it they would stretch the metric axis and flatten every finetuned point.
    """
    rows = _screened(df)
    if rows.empty:
        return
    speeds = pd.to_numeric(rows["speedup"], errors="coerce").astype(float)
    ax.scatter(speeds, [_SCREENED_Y] * len(rows), marker="|", s=160, color="0.4", lw=1.2, alpha=0.8, zorder=2,
               transform=ax.get_xaxis_transform(), clip_on=False,
               label=f"screened, not finetuned ({len(rows)}): speedup only, along the bottom")


def _draw_sweeps(
    ax: Axes, info: StudyInfo, max_drop: float, best_points: Mapping[str, BaselinePoint | None] | None = None
) -> list[float]:
    """The baseline sweeps as curves, each best point ringed where its figures put it (above a star there).

    Returns:
        The metrics of the points drawn (for the metric axis limits).
    """
    shown: list[float] = []
    for i, (kind, points) in enumerate(sorted(info.baselines.items())):
        style = _BASELINE_STYLE.get(kind, {"color": "tab:purple", "marker": "D"})
        timed = (p for p in points if math.isfinite(as_float(p.get("speedup"))))
        pts = sorted(timed, key=lambda p: as_float(p["speedup"]))
        if not pts:
            continue
        shown += [as_float(p.get("metric")) for p in pts]
        ax.plot([p["speedup"] for p in pts], [p["metric"] for p in pts], ls="--", lw=1.2, ms=5, alpha=0.9,
                label=f"{kind} sweep", zorder=3, **style)
        best = best_points.get(kind) if best_points is not None else _best_sweep_point(pts, max_drop, info)
        if best is not None:
            # Each kind's ring wider than the last: two best points at one place (twins) both stay visible.
            ax.scatter([as_float(best.speedup)], [as_float(best.metric)], s=_RING_SIZE * (1 + 0.6 * i), facecolors="none",
                       lw=1.8, edgecolors=style["color"], zorder=7, label=f"best {kind}: {as_float(best.speedup):.2f}x")
    return shown


def _best_sweep_point(points: list[dict[str, Any]], max_drop: float, info: StudyInfo) -> BaselinePoint | None:
    """A sweep's best feasible point (:func:`autoprune.analysis.pareto.best_baseline`), where no summary gave one."""
    best = best_baseline(points, max_drop, metric_direction=info.metric_direction)
    return None if best is None else BaselinePoint.from_point(best)


def _draw_references(ax: Axes, info: StudyInfo, max_drop: float) -> None:
    """The budget line and the unpruned model."""
    budget = info.metric_at_drop(max_drop)
    if math.isfinite(budget):
        ax.axhline(budget, color=_BUDGET_COLOR, ls=":", lw=1.3, label=f"budget: drop {max_drop:g}")
    if math.isfinite(info.base_metric):
        ax.scatter([1.0], [info.base_metric], marker="P", s=90, color="black", zorder=5, label="unpruned")


def _draw_picks(
    ax: Axes,
    done: pd.DataFrame,
    chosen_number: int | None,
    chosen_note: str,
    passed_over: int | None,
    chosen_speedup: float | None = None,
) -> str | None:
    """The passed-over validation pick (drawn above the star, so a pick at the same place stays visible) and
    the chosen trial's star, at ``chosen_speedup`` when given (the figure its label states).

    Returns:
        The chosen trial's legend entry, or ``None`` when no chosen trial is drawn.
    """
    if passed_over is not None:
        row = done[done["number"] == passed_over]
        if not row.empty:
            ax.scatter(row["speedup"], row["metric"], marker="X", s=110, color="tab:red", edgecolors="black", lw=0.6,
                       zorder=8, label=f"validation-time pick: trial {passed_over} (passed over)")
    if chosen_number is None:
        return None
    row = done[done["number"] == chosen_number]
    if row.empty:
        return None
    x, y = float(row["speedup"].iloc[0]), float(row["metric"].iloc[0])
    x = x if chosen_speedup is None or not math.isfinite(as_float(chosen_speedup)) else float(chosen_speedup)
    chosen_label = f"chosen: trial {chosen_number} ({chosen_note or f'{x:.2f}x'})"
    ax.scatter([x], [y], marker="*", s=_STAR_SIZE, color="gold", edgecolors="black", lw=0.8, zorder=6,
               label=chosen_label)
    ax.annotate(f"trial {chosen_number}", (x, y), xytext=(14, 14), textcoords="offset points", fontsize=9)
    return chosen_label


def _label_pareto_axes(ax: Axes, info: StudyInfo, max_drop: float, trials: tuple[int, int], hidden: int) -> None:
    """Title (``trials``: complete and screened, both drawn), axis labels, grid and the legend of the trade-off plot."""
    complete, screened = trials
    title = f"{info.name}: {complete} complete trials" + (f", {screened} screened" if screened else "")
    title += f", max drop {max_drop:g}"
    if hidden:
        title += f" ({hidden} {'point' if hidden == 1 else 'points'} off the bottom)"
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("speedup over the unpruned model (x, measured latency; right is better)")
    better = "higher is better" if info.metric_direction == "maximize" else "lower is better; axis inverted"
    ax.set_ylabel(f"{info.metric_name} ({better})")
    ax.grid(True, alpha=0.3)
    # Below the axes: inside, "best" still lands on sweep points when the trials fill the plot.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False, markerscale=0.6)


def plot_ratios(
    chosen_ratios: Mapping[str, float],
    bounds: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    reference: Mapping[str, float | Mapping[str, float]] | None = None,
    title: str = "",
) -> Path:
    """Per-group ratio of the chosen trial against the ratios the search spanned for the group.

    Args:
        chosen_ratios: ``{group: applied ratio}``.
        bounds: ``{group: (low, high)}`` the search spanned (the study's ``bounds``: its width space as ratios).
        path: where to write the PNG.
        reference: other ratios to draw: a number is one ratio for every group (a vertical line, e.g.
            ``{"best uniform": 0.3}``), a mapping gives one ratio per group (markers).
        title: the figure title.

    Returns:
        The PNG path.

    Example:
        >>> plot_ratios({"stem": 0.2, "block1": 0.45}, {"stem": (0.0, 0.3), "block1": (0.2, 0.6)},
        ...             "out/ratios.png")  # doctest: +SKIP
    """
    names = list(bounds) + [g for g in chosen_ratios if g not in bounds]
    fig = Figure(figsize=(8.0, max(2.6, 0.38 * len(names) + 1.4)))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(names)))
    for y, name in zip(ys, names, strict=True):
        if name in bounds:
            low, high = float(bounds[name][0]), float(bounds[name][1])
            ax.barh(y, high - low, left=low, height=0.75, color="0.88", edgecolor="0.6",
                    label="search space (widths searched)" if y == 0 else None)
        ratio = as_float(chosen_ratios.get(name))
        if math.isfinite(ratio):
            ax.barh(y, ratio, height=0.35, color=_FRONT_COLOR, label="chosen ratio" if y == 0 else None)
            ax.text(ratio + 0.01, y, f"{ratio:.2f}", va="center", fontsize=8)
    styles = [("tab:blue", "--", "|"), ("tab:orange", ":", "D"), ("tab:purple", "-.", "o")]
    for i, (label, value) in enumerate((reference or {}).items()):
        color, line, marker = styles[i % len(styles)]
        if isinstance(value, Mapping):
            points = [(as_float(value.get(n)), y) for y, n in zip(ys, names, strict=True) if math.isfinite(as_float(value.get(n)))]
            ax.scatter([x for x, _ in points], [y for _, y in points], marker=marker, s=36, color=color,
                       zorder=4, label=label)
        else:
            ax.axvline(float(value), ls=line, lw=1.4, color=color, label=f"{label}: {float(value):.2f}")
    ax.set_yticks(ys, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("pruning ratio (fraction of channels removed)")
    ax.set_title(title or "chosen ratio per group against the space searched", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if handles:  # below the axes, never over a group's bars
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(handles)), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_compare(
    studies: Sequence[tuple[str, pd.DataFrame, StudyInfo]],
    max_drop: float | None,
    path: str | Path,
) -> Path:
    """The Pareto fronts of several studies on one drop-vs-speedup plot.

    Drops, not metrics, so that studies with different base metrics share an axis; the drop axis is
    inverted so that better is up, as in :func:`plot_pareto`.

    Args:
        studies: ``(label, trial table, info)`` per study.
        max_drop: one budget for all (drawn and used to ring each study's best point), or ``None`` to use
            each study's own ``max_drop`` (each drawn).
        path: where to write the PNG.

    Returns:
        The PNG path.
    """
    fig = Figure(figsize=(8.5, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:cyan"]
    best_drop = 0.0
    for i, (label, df, info) in enumerate(studies):
        color = colors[i % len(colors)]
        done = completed(df)
        front = pareto_front(done, metric_direction=info.metric_direction)
        ax.scatter(done["speedup"], done["drop"], s=8, color=color, alpha=0.25, zorder=2)
        ax.plot(front["speedup"], front["drop"], marker="o", ms=4, lw=1.5, color=color, label=label, zorder=3)
        best_drop = min([best_drop, *front["drop"].astype(float)])
        budget = max_drop if max_drop is not None else info.max_drop
        if budget is None:
            continue
        try:
            best = select(done, budget, metric_direction=info.metric_direction)
        except SelectionError:
            continue
        ax.scatter([best["speedup"]], [best["drop"]], s=160, facecolors="none", edgecolors=color, lw=1.8,
                   zorder=4, label=f"{label} best: {best['speedup']:.2f}x (trial {best['number']})")
    budgets = sorted({max_drop} if max_drop is not None else {i.max_drop for _, _, i in studies if i.max_drop is not None})
    for budget in budgets:
        ax.axhline(budget, color=_BUDGET_COLOR, ls=":", lw=1.3, label=f"max drop {budget:g}")
    if budgets and budgets[-1] > 0:
        # Focus on the budget region (collapsed trials would squash it); inverted so better is up.
        ax.set_ylim(4 * budgets[-1], best_drop - 0.5 * budgets[-1])
    else:
        ax.invert_yaxis()
    ax.set_xlabel("speedup (x, right is better)")
    ax.set_ylabel("metric drop vs. unpruned (lower is better, axis inverted)")
    ax.set_title("studies compared", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def plot_recovery_curve(record: Mapping[str, object], path: str | Path) -> Path:
    """The recovery curve of a calibration: probe metric against finetune steps, one line per learning rate.

    The probe's metric after BN recalibration alone (step 0), the base metric and the budget are drawn as
    references, and the chosen recipe is ringed.

    Args:
        record: a calibration record (:func:`autoprune.trial.calibration.calibrate_recovery`).
        path: where to write the PNG.

    Returns:
        The PNG path.
    """
    results = list(cast("Iterable[Mapping[str, Any]]", record["results"]))
    chosen = record["chosen"]
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    bn = [as_float(r.get("metric_after_bn")) for r in results]
    bn_value = next((v for v in bn if math.isfinite(v)), float("nan"))
    for i, lr in enumerate(sorted({float(r["lr"]) for r in results})):
        rows = sorted((r for r in results if float(r["lr"]) == lr), key=lambda r: int(r["steps"]))
        xs = [0] + [int(r["steps"]) for r in rows]
        ys = [bn_value] + [float(r["metric"]) for r in rows]
        errs = [0.0] + [float(r.get("stderr") or 0.0) for r in rows]
        ax.errorbar(xs, ys, yerr=errs, marker="o", ms=4, lw=1.4, capsize=2, label=f"lr {lr:g}", color=f"C{i}")
    ax.scatter([int(chosen["steps"])], [float(chosen["metric"])], s=180, facecolors="none", edgecolors="black",  # type: ignore[index]
               lw=1.6, zorder=5, label=f"chosen: lr {float(chosen['lr']):g}, {float(chosen['epochs']):g} epochs")  # type: ignore[index]
    base = as_float(record.get("base_metric"))
    if math.isfinite(base):
        ax.axhline(base, color="0.4", ls="--", lw=1.1, label=f"base {base:.4f}")
        max_drop = as_float(record.get("max_drop"))
        if math.isfinite(max_drop):
            sign = 1.0 if record.get("metric_direction", "maximize") == "maximize" else -1.0
            ax.axhline(base - sign * max_drop, color=_BUDGET_COLOR, ls=":", lw=1.3, label=f"budget: drop {max_drop:g}")
    if math.isfinite(bn_value):
        ax.axhline(bn_value, color="0.6", ls="-.", lw=1.0, label=f"BN recalibration only {bn_value:.4f}")
    if record.get("metric_direction") == "minimize":
        ax.invert_yaxis()
    ax.set_xlabel("finetune steps")
    ax.set_ylabel(f"validation {record.get('metric_name', 'metric')}")
    ax.set_title(f"recovery of the probe (uniform {as_float(record.get('probe_ratio')):.2f}) per recipe", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)
