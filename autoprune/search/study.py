"""Study lifecycle: create the schema, the study, the baselines and the bounds exactly once.

Creating the schema from several processes at once races (see Optuna notes), so one process creates
everything (``autoprune run`` or ``autoprune create``) and workers only join: they wait for the study's
``bounds`` attribute, which is written last and marks the study as ready.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable

import optuna

from autoprune.baselines import Baselines
from autoprune.baselines import baselines_path
from autoprune.baselines import load_baselines
from autoprune.baselines import run_baselines
from autoprune.baselines import save_baselines
from autoprune.bounds import SweepPoint
from autoprune.bounds import fastest_feasible
from autoprune.bounds import widen_to_grid
from autoprune.errors import StorageError
from autoprune.pruning.guards import ratio_grid_step
from autoprune.redact import redact_url
from autoprune.search.storage import open_storage
from autoprune.search.storage import study_names
from autoprune.search.storage import with_retry

if TYPE_CHECKING:
    from autoprune.candidate import StudyContext
    from autoprune.config import StudyConfig

log = logging.getLogger("autoprune")
READY_ATTR = "bounds"


def make_sampler(config: "StudyConfig", worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler named in the config; each worker gets its own seed so workers do not sample alike."""
    seed = None if config.search.seed is None else config.search.seed + worker_index
    name = config.search.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(4, config.search.trials // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def storage_for(config: "StudyConfig", url: str) -> optuna.storages.BaseStorage:
    s = config.search
    return open_storage(url, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace_period, max_retry=s.max_retry)


def search_space(ctx: "StudyContext", bounds: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float, float]]:
    """Per searched group: ``(low, high, step)`` on the channel-rounding grid (followers of ties excluded)."""
    space = {}
    for g in ctx.groups:
        if g.tied_to is not None:
            continue
        lo, hi = bounds[g.name]
        step = ratio_grid_step(g.channels, ctx.round_to)
        lo, hi = widen_to_grid(lo, hi, step, g.max_ratio)
        # Optuna checks (high - low) % step in decimal: a step such as 1/6 must be written with a fixed number
        # of digits, and the bounds as whole multiples of that written step, or it silently shrinks the range.
        step9 = round(step, 9)
        space[g.name] = (round(round(lo / step) * step9, 9), round(round(hi / step) * step9, 9), step9)
    return space


def clip_to_space(ratios: dict[str, float], space: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    """A ratio vector moved inside the search space and onto its grid (for enqueued baselines)."""
    out = {}
    for name, (lo, hi, step) in space.items():
        r = min(max(ratios.get(name, lo), lo), hi)
        k = round((r - lo) / step) if step > 0 else 0
        out[name] = round(min(hi, lo + k * step), 9)
    return out


def create_or_load(
    config: "StudyConfig",
    storage_url: str,
    ctx: "StudyContext",
    on_point: Callable[[SweepPoint], None] | None = None,
    say: Callable[[str], None] = print,
) -> optuna.Study:
    """Create the study with its baselines and bounds, or load it when it already exists and is ready.

    Args:
        config: the study config.
        storage_url: the storage URL.
        ctx: the study context (base model, pruner, timing settings) of this process.
        on_point: progress callback for baseline points.
        say: prints one line.

    Returns:
        The ready study.
    """
    storage = storage_for(config, storage_url)
    directions = [ctx.task.metric_direction, "maximize"]
    if config.name in with_retry(lambda: study_names(storage), storage_url, "list studies"):
        study = optuna.load_study(study_name=config.name, storage=storage)
        if READY_ATTR in study.user_attrs:
            _check_same_base(study, ctx, storage_url)
            say(f"study {config.name!r} exists in {redact_url(storage_url)}; joining it")
            return study
    else:
        study = with_retry(
            lambda: optuna.create_study(study_name=config.name, storage=storage, directions=directions, load_if_exists=True),
            storage_url,
            "create the study",
        )
    baselines = _baselines(config, ctx, on_point, say)
    space = search_space(ctx, baselines.bounds)
    attrs: dict[str, Any] = {
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
        "search_space": {k: list(v) for k, v in space.items()},
        "config": _public_config(config),
        "target_trials": config.search.trials,
    }
    for key, value in attrs.items():
        with_retry(lambda k=key, v=value: study.set_user_attr(k, v), storage_url, "store study attributes")
    study.set_metric_names([ctx.task.metric_name, "speedup"])
    if config.search.enqueue_baselines:
        for kind, points in (("uniform", baselines.uniform), ("global", baselines.global_)):
            best = fastest_feasible(points, config.max_drop)
            if best is None:
                continue
            params = clip_to_space(best.ratios, space)
            study.enqueue_trial(params, user_attrs={"kind": kind, "baseline_ratio": best.ratio}, skip_if_exists=True)
    # Written last: workers treat the study as ready once the bounds are there.
    with_retry(lambda: study.set_user_attr(READY_ATTR, {k: list(v) for k, v in baselines.bounds.items()}), storage_url, "store bounds")
    say(f"study {config.name!r} created in {redact_url(storage_url)}")
    return study


def _public_config(config: "StudyConfig") -> dict[str, Any]:
    data = config.model_dump(mode="json")
    if data.get("storage"):
        data["storage"] = redact_url(data["storage"])
    data["source"] = str(config.source) if config.source else None
    return data


def _baselines(
    config: "StudyConfig", ctx: "StudyContext", on_point: Callable[[SweepPoint], None] | None, say: Callable[[str], None]
) -> Baselines:
    """Reuse ``baselines.json`` when it was made for this base model, budget and sweep; else run the sweeps."""
    path = baselines_path(ctx)
    cached = load_baselines(path)
    meta_ok = (
        cached is not None
        and abs(cached.base_metric - ctx.base_metric.value) < 1e-12
        and cached.max_drop == config.max_drop
        and cached.round_to == ctx.round_to
        and [p.ratio for p in cached.uniform] == list(config.search.sweep_ratios)
        and cached.margin == config.search.bounds_margin
    )
    if meta_ok and cached is not None:
        say(f"reusing baselines from {path}")
        return cached
    say(f"running the uniform and global baseline sweeps ({2 * len(config.search.sweep_ratios)} points)")
    result = run_baselines(ctx, on_point=on_point)
    save_baselines(result, path)
    for note in result.notes():
        say(f"note: {note}")
    return result


def _check_same_base(study: optuna.Study, ctx: "StudyContext", url: str) -> None:
    sha = study.user_attrs.get("base_sha256")
    if sha and sha != ctx.base_info.sha256:
        raise StorageError(
            f"study {study.study_name!r} in {redact_url(url)} was created from base checkpoint {sha[:12]}..., but "
            f"{ctx.base_info.path} has {ctx.base_info.sha256[:12]}...; copy the study's base checkpoint to this host"
        )


def wait_for_study(config: "StudyConfig", storage_url: str, timeout: float, say: Callable[[str], None] = print) -> optuna.Study:
    """Wait (bounded) until the study exists and holds its bounds; say so while waiting."""
    storage = storage_for(config, storage_url)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        names = with_retry(lambda: study_names(storage), storage_url, "list studies")
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
