"""Study lifecycle: create the schema, the study, the baselines and the bounds exactly once.

Creating the schema from several processes at once races (see Optuna notes), so one process creates
everything (``autoprune run`` or ``autoprune create``) and workers only join: they wait for the study's
``bounds`` attribute, which is written last and marks the study as ready.

The search space is one parameter per searched group (tie followers follow their leader): its kept channels,
drawn from the widths the group can reach between the best uniform and global baselines' widths, widened by
``search.bounds_margin`` widths (:mod:`autoprune.space.widths`).  Both baselines are enqueued with exactly their
sweep points' kept channels.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING
from typing import Any

import optuna

from autoprune.config import public_config
from autoprune.errors import StorageError
from autoprune.latency import cpu_round_to
from autoprune.redact import redact_url
from autoprune.search.record import TrialRecord
from autoprune.search.record import read
from autoprune.search.sampler import FreshSampler
from autoprune.search.storage import open_storage
from autoprune.search.storage import study_names
from autoprune.search.storage import with_retry
from autoprune.search.study_config import CONFIG_ATTR
from autoprune.space.baselines import Baselines
from autoprune.space.baselines import baselines_path
from autoprune.space.baselines import load_baselines
from autoprune.space.baselines import run_baselines
from autoprune.space.baselines import save_baselines
from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import baseline_points
from autoprune.space.sensitivity import KIND as SENSITIVITY_KIND
from autoprune.space.sensitivity import sensitivity_baseline
from autoprune.space.widths import WIDTH_PARAMS_ATTR
from autoprune.space.widths import GroupWidths
from autoprune.space.widths import space_bounds
from autoprune.space.widths import space_to_attr
from autoprune.space.widths import width_space
from autoprune.trial.calibration import CALIBRATION_KEYS
from autoprune.trial.calibration import RECIPE_ATTR
from autoprune.trial.calibration import ensure_recipe
from autoprune.trial.calibration import recipe_settings
from autoprune.trial.calibration import with_recipe
from autoprune.trial.pruning_setup import head_plans
from autoprune.trial.pruning_setup import round_to_note

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.trial.candidate import StudyContext

log = logging.getLogger("autoprune")
READY_ATTR = "bounds"


def make_sampler(config: StudyConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler named in the config; each worker gets its own seed so workers do not sample alike.

    TPE and GP propose whole vectors; they are wrapped in :class:`~autoprune.search.sampler.FreshSampler`, which
    moves a proposal that the study already holds to a fresh neighbour.
    """
    seed = None if config.search.seed is None else config.search.seed + worker_index
    name = config.search.sampler
    if name == "tpe":
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(4, config.search.trials // 3)))
        return FreshSampler(tpe, seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return FreshSampler(optuna.samplers.GPSampler(seed=seed), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def objective_directions(mode: str, metric_direction: str) -> list[Any]:
    """The study's directions: the speedup alone (``fastest``, the drop is a constraint), or metric and speedup."""
    return ["maximize"] if mode == "fastest" else [metric_direction, "maximize"]


def objective_names(mode: str, metric_name: str) -> list[str]:
    return ["speedup"] if mode == "fastest" else [metric_name, "speedup"]


def storage_for(config: StudyConfig, url: str, budget_s: float | None = None) -> optuna.storages.BaseStorage:
    s = config.search
    return open_storage(url, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace_period, max_retry=s.max_retry, budget_s=budget_s)


def search_space(ctx: StudyContext, points: Iterable[SweepPoint], margin: int | None) -> dict[str, GroupWidths]:
    """Per searched group (followers of ties excluded), the kept-channel counts the search draws from.

    Args:
        ctx: the study context (groups and guards).
        points: the baselines whose widths the space spans (see :func:`autoprune.space.bounds.baseline_points`).
        margin: reachable widths added on each side (None: every reachable width).

    Returns:
        ``{group name: GroupWidths}`` (:func:`autoprune.space.widths.width_space`).
    """
    channels = {g.name: g.channels for g in ctx.groups}
    targets = [p.widths(channels) for p in points]
    return width_space(ctx.groups, ctx.pruner.guards, targets, margin, head_plans(ctx.groups))


def enqueue_baselines(study: optuna.Study, ctx: StudyContext, points: Mapping[str, SweepPoint], space: Mapping[str, GroupWidths]) -> None:
    """Queue each baseline as a trial with exactly its sweep point's kept channels (once per kind)."""
    channels = {g.name: g.channels for g in ctx.groups}
    queued = {read(t).kind for t in study.get_trials(deepcopy=False)}
    for kind, point in points.items():
        if kind in queued:
            continue
        widths = point.widths(channels)
        params = {name: widths[name] for name in space}
        study.enqueue_trial(params, user_attrs=TrialRecord(kind=kind, baseline_ratio=point.ratio).to_attrs())


def create_or_load(
    config: StudyConfig,
    storage_url: str,
    ctx: StudyContext,
    on_point: Callable[[SweepPoint], None] | None = None,
    say: Callable[[str], None] = print,
    on_stage: Callable[[str, int, int], None] | None = None,
) -> optuna.Study:
    """Create the study with its baselines and bounds, or load it when it already exists and is ready.

    Args:
        config: the study config.
        storage_url: the storage URL.
        ctx: the study context (base model, pruner, timing settings) of this process.
        on_point: progress callback for baseline points.
        say: prints one line.
        on_stage: progress of the slow stages, called with ``(stage, done, total)``: ``calibration`` (recipes)
            as the recipe calibration runs, ``baselines`` (points) once before the sweeps run.

    Returns:
        The ready study.
    """
    storage = storage_for(config, storage_url)
    directions = objective_directions(config.search.mode, ctx.task.metric_direction)
    if config.name in with_retry(lambda: study_names(storage), storage_url, "list studies"):
        study = optuna.load_study(study_name=config.name, storage=storage)
        if READY_ATTR in study.user_attrs:
            check_same_base(study, ctx, storage_url)
            ctx.config = with_recipe(ctx.config, study.user_attrs.get(RECIPE_ATTR))
            say(f"study {config.name!r} exists in {redact_url(storage_url)}; joining it")
            return study
    else:
        study = with_retry(
            lambda: optuna.create_study(study_name=config.name, storage=storage, directions=directions, load_if_exists=True),
            storage_url,
            "create the study",
        )
    _note_round_to(config, say)
    calibration = ensure_recipe(ctx, say, None if on_stage is None else partial(on_stage, "calibration"))
    config = ctx.config  # with the calibrated recipe, when there is one
    baselines = _baselines(config, ctx, on_point, say, calibration, on_stage)
    points = baseline_points(baselines.uniform, baselines.global_, config.max_drop)
    sensitivity = sensitivity_baseline(ctx, study, attr_writer(study, storage_url), points, say)  # opt-in: search.sensitivity or stored curves
    if sensitivity.best is not None:
        points[SENSITIVITY_KIND] = sensitivity.best
    space = search_space(ctx, points.values(), config.search.bounds_margin)
    attrs = _study_attrs(config, ctx, baselines, space, calibration)
    if sensitivity.points:
        attrs["baselines"][SENSITIVITY_KIND] = [p.as_dict() for p in sensitivity.points]
    for key, value in attrs.items():
        with_retry(partial(study.set_user_attr, key, value), storage_url, "store study attributes")
    with warnings.catch_warnings():  # experimental in Optuna; what names the objectives in the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objective_names(config.search.mode, ctx.task.metric_name))
    if config.search.enqueue_baselines:
        enqueue_baselines(study, ctx, points, space)
    # Written last: workers treat the study as ready once the bounds are there.
    bounds = space_bounds(space, ctx.groups)
    with_retry(lambda: study.set_user_attr(READY_ATTR, {k: list(v) for k, v in bounds.items()}), storage_url, "store bounds")
    say(f"study {config.name!r} created in {redact_url(storage_url)}")
    return study


def attr_writer(study: optuna.Study, url: str) -> Callable[[str, Any], None]:
    """``write(key, value)``: set a study attr, retrying transient database errors."""

    def write(key: str, value: Any) -> None:
        with_retry(lambda: study.set_user_attr(key, value), url, f"store the study attr {key!r}")

    return write


def _note_round_to(config: StudyConfig, say: Callable[[str], None]) -> None:
    """Say when the config pins a ``round_to`` finer than this CPU's channel block (see :func:`round_to_note`)."""
    note = round_to_note(config.pruning.round_to, cpu_round_to(), config.latency.provider)
    if note:
        say(f"note: {note}")


def _study_attrs(
    config: StudyConfig,
    ctx: StudyContext,
    baselines: Baselines,
    space: Mapping[str, GroupWidths],
    calibration: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The study's user attrs (besides the bounds, written last); ``search_space`` holds per searched group
    its ``channels``, the searched ``widths`` (kept channels, the trial parameters) and the ``ratios`` that
    prune to them; ``recovery_recipe`` the recipe every worker applies."""
    return {
        "base_metric": ctx.base_metric.value,
        "base_metric_stderr": ctx.base_metric.stderr,
        "base_metric_n": ctx.base_metric.n,
        "base_sha256": ctx.base_info.sha256,
        "max_drop": config.max_drop,
        "metric_name": ctx.task.metric_name,
        "metric_direction": ctx.task.metric_direction,
        "criterion": config.criterion,
        "round_to": ctx.round_to,
        "groups": [{"name": g.name, "channels": g.channels, "max_ratio": g.max_ratio, "tied_to": g.tied_to} for g in ctx.groups],
        "baselines": {"uniform": [p.as_dict() for p in baselines.uniform], "global": [p.as_dict() for p in baselines.global_]},
        "search_space": space_to_attr(space),
        CONFIG_ATTR: _public_config(config),
        "target_trials": config.search.trials,
        RECIPE_ATTR: recipe_settings(config),
        "search_mode": config.search.mode,
        WIDTH_PARAMS_ATTR: "ordered",
        "recovery_calibration": {k: calibration[k] for k in CALIBRATION_KEYS} if calibration else None,
    }


def _public_config(config: StudyConfig) -> dict[str, Any]:
    data = public_config(config)
    data["source"] = str(config.source) if config.source else None
    return data


def _baselines(
    config: StudyConfig,
    ctx: StudyContext,
    on_point: Callable[[SweepPoint], None] | None,
    say: Callable[[str], None],
    calibration: Mapping[str, Any] | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
) -> Baselines:
    """Reuse ``baselines.json`` when it was made for this base model, budget, sweep and recovery recipe; else
    run the sweeps.

    The margin is not compared: it widens the width space around the sweeps' widths, not the sweeps.
    """
    path = baselines_path(ctx)
    cached = load_baselines(path)
    meta_ok = (
        cached is not None
        and abs(cached.base_metric - ctx.base_metric.value) < 1e-12
        and cached.max_drop == config.max_drop
        and cached.round_to == ctx.round_to
        and [p.ratio for p in cached.uniform] == list(config.search.sweep_ratios)
        and cached.recovery.get("recipe") == recipe_settings(config)
    )
    if meta_ok and cached is not None:
        say(f"reusing baselines from {path}")
        return cached
    say(f"running the uniform and global baseline sweeps ({2 * len(config.search.sweep_ratios)} points)")
    if on_stage is not None:
        on_stage("baselines", 0, 2 * len(config.search.sweep_ratios))
    result = run_baselines(ctx, on_point=on_point, calibration=calibration)
    save_baselines(result, path)
    for note in result.notes():
        say(f"note: {note}")
    return result


def check_same_base(study: optuna.Study, ctx: StudyContext, url: str) -> None:
    """Refuse to measure against a different base checkpoint than the study's."""
    sha = study.user_attrs.get("base_sha256")
    if sha and sha != ctx.base_info.sha256:
        raise StorageError(
            f"study {study.study_name!r} in {redact_url(url)} was created from base checkpoint {sha[:12]}..., but "
            f"{ctx.base_info.path} has {ctx.base_info.sha256[:12]}...; copy the study's base checkpoint to this host"
        )


def wait_for_study(config: StudyConfig, storage_url: str, timeout: float, say: Callable[[str], None] = print) -> optuna.Study:
    """Wait (bounded) until the study exists and holds its bounds; say so while waiting."""
    deadline = time.monotonic() + timeout
    storage = storage_for(config, storage_url, budget_s=timeout)
    announced = False
    while True:
        left = max(1.0, deadline - time.monotonic())
        names = with_retry(lambda: study_names(storage), storage_url, "list studies", budget_s=left)
        if config.name in names:
            study = optuna.load_study(study_name=config.name, storage=storage)
            if READY_ATTR in study.user_attrs:
                return study
        if time.monotonic() >= deadline:
            raise StorageError(
                f"study {config.name!r} is not ready in {redact_url(storage_url)} after {timeout:.0f}s; "
                f"create it first with 'autoprune create {config.source or 'CONFIG'}' (existing studies: {', '.join(names) or 'none'})"
            )
        if not announced:
            say(f"waiting for study {config.name!r} to be created in {redact_url(storage_url)} (up to {timeout:.0f}s)")
            announced = True
        time.sleep(2.0)
