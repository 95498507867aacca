"""Run the uniform and global baseline sweeps and derive the per-group search bounds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from autoprune.file_schemas import BaselinesFile
from autoprune.jsonfile import read_model
from autoprune.jsonfile import write_json
from autoprune.search.record import recovery_attrs
from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import compute_bounds
from autoprune.space.bounds import fastest_feasible
from autoprune.space.bounds import largest_feasible
from autoprune.space.sweep_records import save_sweep_record
from autoprune.trial.calibration import recipe_settings
from autoprune.trial.candidate import CandidateResult
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import evaluate_candidate
from autoprune.trial.recipe import recovery_warnings

log = logging.getLogger("autoprune")


@dataclass
class Baselines:
    """Both sweeps, the bounds they give, and the base figures they were measured against."""

    uniform: list[SweepPoint]
    global_: list[SweepPoint]
    bounds: dict[str, tuple[float, float]]
    base_metric: float
    base_metric_stderr: float
    max_drop: float
    margin: float  # search.bounds_margin when the sweeps ran (widths; recorded, not applied to ``bounds``)
    round_to: int
    # The recovery every point got: {"recipe": {lr, finetune_epochs, finetune_steps}, "calibration": record or None}.
    recovery: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "uniform": [p.as_dict() for p in self.uniform],
            "global": [p.as_dict() for p in self.global_],
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "base_metric": self.base_metric,
            "base_metric_stderr": self.base_metric_stderr,
            "max_drop": self.max_drop,
            "margin": self.margin,
            "round_to": self.round_to,
            "recovery": self.recovery,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baselines:
        return cls(
            uniform=[SweepPoint.from_dict(p) for p in data["uniform"]],
            global_=[SweepPoint.from_dict(p) for p in data["global"]],
            bounds={k: (float(v[0]), float(v[1])) for k, v in data["bounds"].items()},
            base_metric=data["base_metric"],
            base_metric_stderr=data.get("base_metric_stderr", 0.0),
            max_drop=data["max_drop"],
            margin=data.get("margin", 0.0),
            round_to=data.get("round_to", 1),
            recovery=data.get("recovery") or {},
        )

    def best(self, kind: str) -> SweepPoint | None:
        """The fastest feasible point of a sweep."""
        return fastest_feasible(self.uniform if kind == "uniform" else self.global_, self.max_drop)

    def notes(self) -> list[str]:
        """Warnings about the sweeps (a budget the sweep range does not reach, no feasible point)."""
        out = []
        for kind, points in (("uniform", self.uniform), ("global", self.global_)):
            if not points:
                continue
            feasible = [p for p in points if p.drop <= self.max_drop]
            if not feasible:
                out.append(f"no {kind} sweep point is within max drop {self.max_drop}; its bounds fall back to ratio 0")
            elif max(p.ratio for p in feasible) >= max(p.ratio for p in points):
                out.append(
                    f"the largest {kind} sweep ratio ({max(p.ratio for p in points):.2f}) is still within the budget; "
                    "add larger ratios to search.sweep_ratios to find the real limit"
                )
        sweeps = {"uniform": self.uniform, "global": self.global_}
        return out + recovery_warnings(sweeps, self.max_drop, self.recovery.get("calibration"))

    def table(self) -> str:
        """Both sweeps as a text table."""
        lines = [f"{'sweep':8} {'ratio':>6} {'metric':>8} {'drop':>8} {'speedup':>8} {'MACs':>11} feasible"]
        for p in self.uniform + self.global_:
            lines.append(
                f"{p.kind:8} {p.ratio:6.2f} {p.metric:8.4f} {p.drop:+8.4f} {p.speedup or float('nan'):7.2f}x "
                f"{p.macs or 0:11d} {'yes' if p.feasible else 'no'}" + ("  (timing did not settle)" if p.latency_noisy else "")
            )
        return "\n".join(lines)


def sweep_point(ctx: StudyContext, kind: str, ratio: float, max_drop: float) -> SweepPoint:
    """Evaluate one baseline point with the same recipe as the trials; its figures, architecture and weights
    are kept for its enqueued trial (:mod:`autoprune.space.sweep_records`)."""
    if kind == "uniform":
        res = evaluate_candidate(ctx, uniform=ratio)
    else:
        res = evaluate_candidate(ctx, global_ratio=ratio)
    save_sweep_record(ctx, kind, ratio, res)
    return result_point(kind, ratio, res, max_drop)


def result_point(kind: str, ratio: float, res: CandidateResult, max_drop: float) -> SweepPoint:
    """The sweep point of an evaluated candidate (``ratio``: the sweep's label of it)."""
    return SweepPoint(
        kind=kind,
        ratio=ratio,
        metric=res.metric.value,
        drop=res.drop,
        ratios={k: round(v, 6) for k, v in res.prune.ratios.items()},
        speedup=res.speedup,
        speedup_spread=res.speedup_spread,
        latency_ms=res.latency_ms,
        metric_stderr=res.metric.stderr,
        drop_stderr=res.drop_stderr,
        macs=res.prune.macs,
        params=res.prune.params,
        channels=dict(res.prune.kept),
        clamps=[str(c) for c in res.prune.clamps],
        feasible=res.drop <= max_drop,
        latency_noisy=res.latency_noisy,
        metric_after_bn=res.metric_after_bn.value if res.metric_after_bn else None,
        recovery=recovery_attrs(res.recovery.figures()),
    )


def run_baselines(
    ctx: StudyContext,
    ratios: list[float] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> Baselines:
    """Run both sweeps over ``ratios`` (default: the config's ``search.sweep_ratios``) and compute bounds.

    Args:
        ctx: the study context (its recovery section already holds the calibrated recipe, if any).
        ratios: sweep ratios.
        on_point: called after every point (progress display).
        calibration: the recipe calibration record the recovery came from (kept for the warnings).

    Returns:
        The :class:`Baselines`.
    """
    cfg = ctx.config
    ratios = ratios or list(cfg.search.sweep_ratios)
    max_drop = cfg.max_drop
    sweeps: dict[str, list[SweepPoint]] = {"uniform": [], "global": []}
    for kind in ("uniform", "global"):
        for r in ratios:
            point = sweep_point(ctx, kind, r, max_drop)
            sweeps[kind].append(point)
            if on_point is not None:
                on_point(point)
    limits = {g.name: g.max_ratio for g in ctx.groups}
    ties = {g.name: g.tied_to for g in ctx.groups if g.tied_to}
    # The ratio span of the two best sweep points; search.bounds_margin widens the searched widths around it
    # (counted in widths, by the search space), not these ratios.
    bounds = compute_bounds(sweeps["uniform"], sweeps["global"], max_drop, 0.0, limits, ties)
    return Baselines(
        uniform=sweeps["uniform"],
        global_=sweeps["global"],
        bounds=bounds,
        base_metric=ctx.base_metric.value,
        base_metric_stderr=ctx.base_metric.stderr,
        max_drop=max_drop,
        margin=cfg.search.bounds_margin,
        round_to=ctx.round_to,
        recovery={"recipe": recipe_settings(cfg), "calibration": calibration},
    )


def baselines_path(ctx_or_dir: StudyContext | Path) -> Path:
    folder = ctx_or_dir.config.artifact_path() if isinstance(ctx_or_dir, StudyContext) else ctx_or_dir
    return Path(folder) / "baselines.json"


def save_baselines(baselines: Baselines, path: Path) -> Path:
    return write_json(path, baselines.as_dict())


def load_baselines(path: Path) -> Baselines | None:
    """The sweeps stored in ``path`` (None: not there yet); a torn or foreign file names itself and the fix."""
    if not path.is_file():
        return None
    fix = "delete it and rerun 'autoprune create' (or 'run') to sweep the baselines again"
    return Baselines.from_dict(read_model(path, BaselinesFile, fix).model_dump(by_alias=True))


__all__ = ["Baselines", "largest_feasible", "load_baselines", "result_point", "run_baselines", "save_baselines", "sweep_point"]
