"""Recipe calibration: try a few finetune recipes on one probe candidate and keep the cheapest good one.

The probe is the base model pruned uniformly at ``recovery.calibration.probe_ratio``.  Every pair of
learning rate x finetune length (``recovery.calibration.lrs`` x ``epochs``) recovers a copy of it with
:func:`~autoprune.trial.recovery.recover` and is measured on the validation split; :func:`~autoprune.trial.recipe.pick_recipe`
takes the cheapest recipe within noise of the best.  The result is written to
``<artifact_dir>/recovery-calibration.json`` (reused while the base, the probe and the settings are the
same), drawn as ``recovery-curve.png``, and stored on the study as the ``recovery_recipe`` attribute that
every worker applies before its first trial.

Example:
    >>> from autoprune.trial.candidate import StudyContext  # doctest: +SKIP
    >>> record = calibrate_recovery(StudyContext.build(load_config("studies/shapes-resnet.yaml")))  # doctest: +SKIP
    >>> record["chosen"]["lr"], record["chosen"]["epochs"]  # doctest: +SKIP
    (0.01, 1.0)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from autoprune.config import validated_copy
from autoprune.errors import ArtifactError
from autoprune.file_schemas import CalibrationRecord
from autoprune.jsonfile import read_model
from autoprune.jsonfile import set_aside
from autoprune.jsonfile import write_json
from autoprune.trial.recipe import RecipeResult
from autoprune.trial.recipe import pick_recipe
from autoprune.trial.recovery import recover

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.trial.candidate import StudyContext

RECIPE_ATTR = "recovery_recipe"
CALIBRATION_FILE = "recovery-calibration.json"
CURVE_FILE = "recovery-curve.png"
# What a study keeps of its calibration record (for the report, the curve and the warnings).
CALIBRATION_KEYS = ("probe_ratio", "results", "chosen", "base_metric", "max_drop", "metric_name", "metric_direction")
# Settings of the recovery section that change what a recipe gives; lr and finetune length are what is tried.
_TRIED = ("lr", "finetune_epochs", "finetune_steps", "calibration")


def calibration_path(config: StudyConfig) -> Path:
    return config.artifact_path() / CALIBRATION_FILE


def recipe_settings(config: StudyConfig) -> dict[str, Any]:
    """The finetune recipe of a config's recovery section (what calibration may change)."""
    rec = config.recovery
    return {"lr": rec.lr, "finetune_epochs": rec.finetune_epochs, "finetune_steps": rec.finetune_steps}


def recipe_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The recovery settings a calibration record fixes (``lr`` and ``finetune_epochs``)."""
    chosen = record["chosen"]
    return {"lr": float(chosen["lr"]), "finetune_epochs": float(chosen["epochs"]), "finetune_steps": None}


def with_recipe(config: StudyConfig, recipe: Mapping[str, Any] | None) -> StudyConfig:
    """``config`` with the study's calibrated recipe in its ``recovery`` (``config`` itself for ``None``)."""
    if not recipe:
        return config
    recovery = validated_copy(config.recovery, **{k: recipe[k] for k in ("lr", "finetune_epochs", "finetune_steps") if k in recipe})
    return validated_copy(config, recovery=recovery)


def _identity(ctx: StudyContext) -> dict[str, Any]:
    """What a cached calibration must match to be reused."""
    rec = ctx.config.recovery.model_dump(mode="json")
    return {
        "base_sha256": ctx.base_info.sha256,
        "criterion": ctx.config.criterion,
        "round_to": ctx.round_to,
        "calibration": rec["calibration"],
        "recovery": {k: v for k, v in rec.items() if k not in _TRIED and k != "final"},  # final: after the search only
    }


def read_calibration(path: Path) -> dict[str, Any] | None:
    """The calibration record in ``path`` (None: not there).  A record that fails its schema
    (:class:`~autoprune.file_schemas.CalibrationRecord`) is set aside with one warning and None returned, so the
    caller calibrates again."""
    if not path.is_file():
        return None
    try:
        return read_model(path, CalibrationRecord, "autoprune calibrates again").model_dump()
    except ArtifactError as exc:
        set_aside(path, str(exc))
        return None


def load_calibration(ctx: StudyContext) -> dict[str, Any] | None:
    """The cached calibration record of this study, when it was made with the same base and settings."""
    record = read_calibration(calibration_path(ctx.config))
    return record if record is not None and record["identity"] == _identity(ctx) else None


def calibrate_recovery(
    ctx: StudyContext,
    on_result: Callable[[RecipeResult], None] | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Try every recipe on the probe candidate, pick the cheapest within noise of the best, save and draw it.

    Args:
        ctx: the study context (its config's recovery section is the starting recipe).
        on_result: called after each recipe (progress display).
        reuse: return the cached record when it matches this base and these settings.

    Returns:
        The calibration record: ``probe_ratio``, ``results``, ``chosen``, ``base_metric``, ``max_drop``,
        ``metric_name``, ``identity``; also written to ``recovery-calibration.json``.
    """
    if reuse and (cached := load_calibration(ctx)) is not None:
        return cached
    cal = ctx.config.recovery.calibration
    with ctx.task.forbid_split("test"):
        probe = copy.deepcopy(ctx.base_model)
        ctx.pruner.prune(probe, uniform=cal.probe_ratio)
        results = []
        for lr in cal.lrs:
            for epochs in cal.epochs:
                results.append(_try_recipe(ctx, probe, lr, epochs))
                if on_result is not None:
                    on_result(results[-1])
    chosen = pick_recipe(results, ctx.task.metric_direction, cal.tolerance_se)
    record = {
        "probe_ratio": cal.probe_ratio,
        "results": [r.as_dict() for r in results],
        "chosen": chosen.as_dict(),
        "base_metric": ctx.base_metric.value,
        "max_drop": ctx.config.max_drop,
        "metric_name": ctx.task.metric_name,
        "metric_direction": ctx.task.metric_direction,
        "identity": _identity(ctx),
    }
    save_calibration(ctx.config, record)
    return record


def _try_recipe(ctx: StudyContext, probe: Any, lr: float, epochs: float) -> RecipeResult:
    from autoprune.latency import training_section

    settings = validated_copy(ctx.config.recovery, lr=lr, finetune_epochs=epochs, finetune_steps=None)
    model = copy.deepcopy(probe)
    after_bn: list[float] = []
    start = time.perf_counter()
    with training_section():
        report = recover(
            model,
            ctx.task,
            settings,
            teacher=ctx.teacher,
            after_bn=lambda m: after_bn.append(ctx.task.evaluate(m, "val").value),
        )
    seconds = time.perf_counter() - start
    metric = ctx.task.evaluate(model, "val")
    return RecipeResult(lr, epochs, report.steps, metric.value, metric.stderr, after_bn[0], round(seconds, 3))


def save_calibration(config: StudyConfig, record: Mapping[str, Any]) -> Path:
    """Write the record (atomically) and its recovery-curve PNG beside it."""
    from autoprune.analysis.plots import plot_recovery_curve

    path = write_json(calibration_path(config), record)
    plot_recovery_curve(record, path.with_name(CURVE_FILE))
    return path


def ensure_recipe(
    ctx: StudyContext, say: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any] | None:
    """Calibrate (or reuse the calibration) when the config asks for it, and apply the recipe to ``ctx``.

    Args:
        ctx: the study context.
        say: prints one line.
        progress: called with ``(recipes done, recipes)`` before the first recipe and after each (only when
            the calibration runs).

    Returns:
        The calibration record, or None when the config pins its recipe (``recovery.calibration.enabled: false``).
    """
    if not ctx.config.recovery.calibration.enabled:
        return None
    cached = load_calibration(ctx)
    record = cached if cached is not None else _calibrate(ctx, say, progress)
    ctx.config = with_recipe(ctx.config, recipe_of(record))
    chosen = record["chosen"]
    say(
        f"recovery recipe: lr {chosen['lr']:g}, {chosen['epochs']:g} epochs ({chosen['steps']} steps): "
        f"{record['metric_name']} {chosen['metric']:.4f} on the probe" + (" (reused)" if cached else "")
    )
    return record


def _calibrate(ctx: StudyContext, say: Callable[[str], None], progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    """Run the calibration, saying so and reporting ``(recipes done, recipes)`` to ``progress``."""
    cal = ctx.config.recovery.calibration
    total = len(cal.lrs) * len(cal.epochs)
    say(f"calibrating the recovery recipe on uniform {cal.probe_ratio:.2f} ({total} recipes)")
    done = 0
    if progress is not None:
        progress(done, total)

    def on_result(_: RecipeResult) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return calibrate_recovery(ctx, on_result=on_result, reuse=False)


def format_calibration(record: Mapping[str, Any]) -> str:
    """The recipes tried, as a text table, the chosen one marked."""
    chosen = RecipeResult.from_dict(record["chosen"])
    lines = [f"{'lr':>8} {'epochs':>7} {'steps':>6} {'after BN':>9} {record['metric_name']:>10} {'±':>7} {'seconds':>8}"]
    for data in record["results"]:
        r = RecipeResult.from_dict(data)
        mark = "  <- chosen" if r == chosen else ""
        bn = f"{r.metric_after_bn:9.4f}" if r.metric_after_bn is not None else f"{'-':>9}"
        lines.append(f"{r.lr:8g} {r.epochs:7g} {r.steps:6d} {bn} {r.metric:10.4f} {r.stderr:7.4f} {r.seconds:8.1f}{mark}")
    return "\n".join(lines)
