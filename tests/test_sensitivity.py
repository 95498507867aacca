"""Sensitivity curves on a real tiny digits study: measured, stored on the study, resumed; the sensitivity baseline.

Real torch-pruning, BN recalibration, ONNX Runtime timings and a SQLite study (the config's default storage).
"""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import run_cli

import autoprune.space.sensitivity
from autoprune.analysis import StudyInfo
from autoprune.config import load_config
from autoprune.selection.confirm import _candidate_model
from autoprune.selection.confirm import select_candidates
from autoprune.space.allocation import CURVES_VERSION
from autoprune.space.allocation import SensitivityCurves
from autoprune.space.sensitivity import SENSITIVITY_ATTR
from autoprune.space.widths import reachable_widths
from autoprune.trial.candidate import StudyContext
from autoprune.trial.pruning_setup import guard_settings

# Two ratios, a short timing: each point is one BN recalibration, one evaluation and one short timing.
CURVE_OVERRIDES = {"search": {"sensitivity_ratios": [0.3, 0.6]}, "latency": {"repeats": 10, "blocks": 2, "warmup": 1}}


@pytest.fixture(autouse=True)
def _default_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These tests use the config's default storage: an exported AUTOPRUNE_STORAGE must not redirect them."""
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    yield


def _study(config: Path) -> optuna.Study:
    cfg = load_config(config)
    return optuna.load_study(study_name=cfg.name, storage=cfg.storage_url(None))


def _curves(config: Path) -> SensitivityCurves:
    data = _study(config).user_attrs[SENSITIVITY_ATTR]
    assert data["version"] == CURVES_VERSION
    return SensitivityCurves.from_attrs(data)


@pytest.mark.slow  # runs the CLI end to end: the fast lane skips it
def test_the_command_stores_curves_on_reachable_widths_and_resumes(study_factory) -> None:
    config = study_factory(CURVE_OVERRIDES)
    res = run_cli("sensitivity", config, "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    curves = _curves(config)
    cfg = load_config(config)
    assert curves.grid == (0.3, 0.6) and curves.meta["round_to"] == 8 and curves.base_macs > 0
    settings = guard_settings(cfg)
    n_points = 0
    for name, curve in curves.groups.items():
        assert curve.points, f"group {name} has no point"
        reach = reachable_widths(curve.channels, settings, first_layer=name == "stem.0")
        for p in curve.points:
            assert p.width in reach and p.width < curve.channels  # a reachable width that prunes the group
            assert 0.0 < p.macs_saved < 1.0 and p.speedup is not None and p.latency_saved == pytest.approx(1 - 1 / p.speedup)
        n_points += len(curve.points)
    assert curves.evaluations == n_points and curves.seconds > 0
    assert f"({n_points} measured by this run)" in res.stdout
    assert "cost: " in res.stdout and "greedy by macs" in res.stdout and "greedy by latency" in res.stdout

    # Resume: drop one group from the stored curves, as if the measurement had stopped before it.
    study = _study(config)
    dropped = next(iter(curves.groups))
    partial = curves.to_attrs()
    del partial["groups"][dropped]
    study.set_user_attr(SENSITIVITY_ATTR, partial)
    res = run_cli("sensitivity", config, "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = _curves(config)
    remeasured = len(resumed.groups[dropped].points)
    assert f"({remeasured} measured by this run)" in res.stdout
    assert resumed.evaluations == n_points + remeasured
    for name, curve in curves.groups.items():
        if name != dropped:
            assert resumed.groups[name] == curve  # kept as stored, not measured again


@pytest.mark.slow  # runs the CLI end to end: the fast lane skips it
def test_bad_ratios_and_targets_exit_2_with_one_line(study_factory) -> None:
    config = study_factory(CURVE_OVERRIDES)
    for args, needle in ((["--ratios", "0.3,x"], "comma-separated"), (["--ratios", "0.3,1.2"], "(0, 1)"), (["--target", "0.5"], "--target")):
        res = run_cli("sensitivity", config, *args)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # runs the CLI end to end: the fast lane skips it
def test_a_study_with_sensitivity_on_enqueues_the_sensitivity_baseline_inside_its_space(study_factory) -> None:
    # A generous budget so the allocation is feasible whatever the tiny base's accuracy; one target: one sweep point.
    config = study_factory({**CURVE_OVERRIDES, "max_drop": 0.6,
                            "search": {**CURVE_OVERRIDES["search"], "sensitivity": True, "sensitivity_targets": [1.3],
                                       "sensitivity_cost": "macs"}})
    # Curves measured first by the command at its own grid (one ratio): create uses them, measuring nothing again.
    res = run_cli("sensitivity", config, "--ratios", "0.3", "--no-timing", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    measured = _curves(config)
    assert measured.grid == (0.3,) and measured.meta["latency"] is None
    res = run_cli("create", config, "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    study = _study(config)
    attrs = study.user_attrs
    assert _curves(config) == measured
    [point] = attrs["baselines"]["sensitivity"]
    assert point["kind"] == "sensitivity" and point["ratio"] == pytest.approx(1 - 1 / 1.3, abs=1e-6) and point["feasible"]
    queued = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("kind") == "sensitivity"]
    assert len(queued) == 1
    space = attrs["search_space"]
    params = queued[0].system_attrs["fixed_params"]
    assert params == {name: point["channels"][name] for name in space}
    assert all(params[name] in space[name]["widths"] for name in space)


def test_the_enqueued_sensitivity_trial_reuses_its_sweep_point_and_a_stored_sweep_is_not_swept_again(
    study_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No finetune twice: the sensitivity baseline's trial takes over its sweep point's figures and weights, as
    the uniform and global ones do; the swept allocations are kept on the study and reused for the same curves,
    targets and cost (a study seeded with another's curves and sweep measures and sweeps nothing)."""
    from autoprune.search.create import create_study
    from autoprune.search.objective import Objective
    from autoprune.search.study import attr_writer
    from autoprune.space import sensitivity as sensitivity_module
    from autoprune.space.sensitivity import SWEEP_ATTR
    from autoprune.space.sensitivity import sensitivity_baseline

    config = study_factory({**CURVE_OVERRIDES, "max_drop": 0.6,
                            "search": {**CURVE_OVERRIDES["search"], "sensitivity": True, "sensitivity_targets": [1.3],
                                       "sensitivity_cost": "macs", "trials": 4}})
    cfg, url, study = create_study(str(config), None, say=lambda line: None)
    swept = study.user_attrs[SWEEP_ATTR]
    assert swept["targets"] == [1.3] and swept["cost"] == "macs" and len(swept["points"]) == 1
    assert swept["points"] == study.user_attrs["baselines"]["sensitivity"]
    ctx = StudyContext.build(load_config(config), workdir=tmp_path / "w")
    study.optimize(Objective(ctx, study, 10, "w0", lambda line: None), n_trials=3)  # the three enqueued baselines
    trials = {t.user_attrs["kind"]: t for t in study.get_trials(deepcopy=False)}
    sens = trials["sensitivity"]
    assert sens.state == optuna.trial.TrialState.COMPLETE and sens.user_attrs.get("sweep_point")
    assert sens.user_attrs["drop"] == pytest.approx(swept["points"][0]["drop"])

    def no_sweep(*args: object, **kwargs: object) -> None:
        raise AssertionError("swept again")

    monkeypatch.setattr(sensitivity_module, "sweep_allocations", no_sweep)
    seeded = optuna.create_study(study_name="seeded", storage=url)
    for key in (SENSITIVITY_ATTR, SWEEP_ATTR):
        seeded.set_user_attr(key, study.user_attrs[key])
    points = {}  # the targets are the config's, so the baselines do not matter here
    again = sensitivity_baseline(ctx, seeded, attr_writer(seeded, url), points, lambda line: None)
    assert [p.as_dict() for p in again.points] == swept["points"] and again.best is not None
    assert cfg.name == study.study_name


def test_the_default_study_has_no_sensitivity_baseline(study_factory) -> None:
    assert load_config(study_factory()).search.sensitivity is False


def test_doctests() -> None:
    result = doctest.testmod(autoprune.space.sensitivity)
    assert result.attempted > 0 and result.failed == 0


def test_confirm_rebuilds_a_sensitivity_point_without_a_trial_from_its_per_group_ratios(tiny_config, tmp_path: Path) -> None:
    # A sensitivity allocation has no single ratio: confirm must rebuild it from the point's per-group ratios.
    point = {"kind": "sensitivity", "ratio": 0.2, "metric": 0.95, "drop": 0.01, "speedup": 1.3, "speedup_spread": 0.01,
             "ratios": {"layers.1.conv1": 0.5, "layers.2.conv1": 0.25}}
    info = StudyInfo(name="s", base_metric=0.96, max_drop=0.05, baselines={"sensitivity": [point]})
    df = pd.DataFrame([{"number": 0, "state": "COMPLETE", "metric": 0.95, "drop": 0.01, "speedup": 1.1, "macs": 1000,
                        "kind": "search", "channels:a": 8, "arch_artifact_id": "a", "weights_artifact_id": "w"}])
    [rebuilt] = [c for c in select_candidates(df, info, 1, 0.05) if c.kind == "sensitivity"]
    assert rebuilt.number is None and rebuilt.ratios == point["ratios"]
    ctx = StudyContext.build(tiny_config, workdir=tmp_path, use_cache=False)
    model = _candidate_model(tiny_config, ctx, rebuilt, tmp_path, None, recover=False)
    assert model.get_submodule("layers.1.conv1").out_channels == 16
    assert model.get_submodule("layers.2.conv1").out_channels == 24
    assert model.get_submodule("layers.1.conv2").out_channels == 32  # groups the point leaves alone stay whole
