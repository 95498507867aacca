"""Recovery: never worse than BN recalibration alone, distillation per element, recipe calibration.

These tests train and prune for real (the tiny digits study) and assert what the recovery guarantees,
not a fixed accuracy: a finetune may help a lot or a little on a given CPU, but it never returns a model
below its BN-recalibrated start beyond noise.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autoprune.trial.recovery import calibration_split
from autoprune.trial.recovery import distillation_loss
from autoprune.trial.recovery import recover


def test_calibration_split_is_disjoint_deterministic_and_capped() -> None:
    fit, calib = calibration_split(1000, 128, seed=3)
    assert len(calib) == 128 and len(fit) == 872 and not set(fit) & set(calib)
    assert sorted(fit + calib) == list(range(1000))
    assert calibration_split(1000, 128, seed=3) == (fit, calib)
    assert calibration_split(1000, 128, seed=4)[1] != calib
    assert calibration_split(100, 512, seed=0) == (list(range(100)), [])  # a quarter is 25 < 32 images: no judging
    assert len(calibration_split(1000, 5000, seed=0)[1]) == 250  # at most a quarter of the split
    assert calibration_split(1000, 0, seed=0) == (list(range(1000)), [])  # 0 turns judging off


def test_distillation_averages_per_element_for_dense_outputs() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    expected = F.kl_div(F.log_softmax(s / 2, dim=1), F.softmax(t / 2, dim=1), reduction="batchmean") * 4
    assert float(distillation_loss(s, t, 2.0)) == pytest.approx(float(expected), rel=1e-5)
    # Dense logits: the same as flattening every pixel into the batch, so the term does not grow with H x W.
    ds, dt = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    flat = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731
    assert float(distillation_loss(ds, dt, 4.0)) == pytest.approx(float(distillation_loss(flat(ds), flat(dt), 4.0)), rel=1e-5)
    big_s = ds.repeat(1, 1, 4, 4)  # the same per-pixel distributions on a 16x larger map
    big_t = dt.repeat(1, 1, 4, 4)
    assert float(distillation_loss(big_s, big_t, 4.0)) == pytest.approx(float(distillation_loss(ds, dt, 4.0)), rel=1e-5)
    assert float(distillation_loss(ds, ds, 4.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture
def pruned(tiny_config, tiny_task, tiny_base_model):
    """The tiny base pruned uniformly at 0.25 (not yet recovered), with its pruner."""
    from autoprune.trial.pruning_setup import make_pruner

    pruner = make_pruner(tiny_config, tiny_task)
    model = copy.deepcopy(tiny_base_model)
    pruner.prune(model, uniform=0.25)
    return model


def _bn_only(model, task, settings):
    from autoprune.trial.recovery import recalibrate_bn

    m = copy.deepcopy(model)
    fit, _ = calibration_split(len(task.dataset("train")), settings.calib_size, settings.seed)
    recalibrate_bn(m, task, settings.bn_batches, settings.batch_size, seed=settings.seed, indices=fit)
    return task.evaluate(m, "val")


@pytest.mark.parametrize("epochs", [0.25, 1.0, 5.0])
@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_recovery_never_below_bn_recalibration(pruned, tiny_config, tiny_task, tiny_base_model, epochs, lr) -> None:
    settings = tiny_config.recovery.model_copy(update={"finetune_steps": None, "finetune_epochs": epochs, "lr": lr, "checkpoints": 4})
    start = _bn_only(pruned, tiny_task, settings)
    model = copy.deepcopy(pruned)
    seen = []
    report = recover(model, tiny_task, settings, teacher=tiny_base_model, after_bn=lambda m: seen.append(tiny_task.evaluate(m, "val")))
    after = tiny_task.evaluate(model, "val")
    assert seen[0].value == pytest.approx(start.value)  # the after-BN hook sees the BN-recalibrated model
    # The recovery keeps the best state its judge saw on the held-out calibration images (asserted below); on
    # validation that choice holds up to the noise of both validation figures and of the judge itself
    # (calib_size images: a state one image better there can be a few images worse here).
    p = report.calib_after_bn
    judge_se = math.sqrt(p * (1 - p) / settings.calib_size)
    assert after.value >= start.value - 2 * math.sqrt(start.stderr**2 + after.stderr**2 + judge_se**2), (report, start, after)
    assert report.steps > 0 and report.curve[0][0] == 0 and len(report.curve) >= 2
    assert report.calib_kept is not None and report.calib_kept >= report.calib_after_bn
    if report.kept_step == 0:  # nothing helped: the model is exactly the BN-recalibrated one
        assert after.value == pytest.approx(start.value)
    assert not model.training


def test_destructive_finetune_goes_back_to_the_best_state(pruned, tiny_config, tiny_task, tiny_base_model) -> None:
    settings = tiny_config.recovery.model_copy(update={"finetune_steps": 12, "lr": 20.0, "checkpoints": 3, "distill": False})
    start = _bn_only(pruned, tiny_task, settings)
    model = copy.deepcopy(pruned)
    report = recover(model, tiny_task, settings)
    assert report.restores >= 1 and report.kept_step == 0
    assert tiny_task.evaluate(model, "val").value == pytest.approx(start.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bn_statistics_are_fresh_after_the_finetune(pruned, tiny_config, tiny_task, tiny_base_model) -> None:
    from autoprune.trial.recovery import recalibrate_bn

    settings = tiny_config.recovery.model_copy(update={"finetune_steps": 8, "calib_size": 0})
    model = copy.deepcopy(pruned)
    report = recover(model, tiny_task, settings, teacher=tiny_base_model)
    assert report.calib_after_bn is None and report.kept_step == report.steps == 8  # no calibration part: no judging
    again = copy.deepcopy(model)
    recalibrate_bn(again, tiny_task, settings.bn_batches, settings.batch_size, seed=settings.seed)
    for a, b in zip(model.modules(), again.modules(), strict=True):
        if isinstance(a, torch.nn.BatchNorm2d):
            assert torch.allclose(a.running_mean, b.running_mean, atol=1e-5)


def test_teacher_cache_changes_nothing_and_is_used(pruned, tiny_config, tiny_task, tiny_base_model) -> None:
    from autoprune.trial.recovery import Teacher

    settings = tiny_config.recovery.model_copy(update={"finetune_steps": 6})
    teacher = Teacher(tiny_base_model, tiny_task)
    results = []
    for t in (tiny_base_model, teacher, teacher):  # no cache, filling the cache, reading it
        model = copy.deepcopy(pruned)
        report = recover(model, tiny_task, settings, teacher=t)
        results.append((report, [p.detach().clone() for p in model.parameters()]))
    assert teacher.hits >= 6 and teacher.bytes > 0
    for report, params in results[1:]:
        assert report.curve == results[0][0].curve
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params, results[0][1], strict=True))
    # A cache of 0 bytes keeps nothing and still distils.
    empty = Teacher(tiny_base_model, tiny_task, max_bytes=0)
    recover(copy.deepcopy(pruned), tiny_task, settings, teacher=empty)
    assert empty.bytes == 0 and empty.hits == 0


def test_teacher_cache_never_serves_another_split_of_the_training_data(tiny_config, tiny_task, tiny_base_model) -> None:
    from autoprune.trial.recovery import Teacher
    from autoprune.trial.recovery import _batches

    teacher = Teacher(tiny_base_model, tiny_task)
    settings = tiny_config.recovery
    n = len(tiny_task.dataset("train"))
    part, _ = calibration_split(n, settings.calib_size, settings.seed)
    for fit in (list(range(n)), part, list(range(n))):  # the same seed and batch size, other images
        batches = _batches(tiny_task, settings, fit)
        for _ in range(3):
            key, x, _y = next(batches)
            with torch.no_grad():
                assert torch.allclose(teacher.outputs(key, x), tiny_task.logits(tiny_base_model(x)), atol=1e-5)
    assert teacher.hits == 3  # only the repeated split read the cache


def test_the_finetune_does_its_job(tiny_config, tiny_task, tiny_base_model) -> None:
    """Never-worse must not become never-better: a heavily pruned model recovers far above BN-only."""
    from autoprune.trial.pruning_setup import make_pruner
    from autoprune.trial.recovery import Teacher

    model = copy.deepcopy(tiny_base_model)
    make_pruner(tiny_config, tiny_task).prune(model, uniform=0.5)
    settings = tiny_config.recovery.model_copy(update={"finetune_steps": 30, "lr": 0.01})
    start = _bn_only(model, tiny_task, settings)
    report = recover(model, tiny_task, settings, teacher=Teacher(tiny_base_model, tiny_task))
    after = tiny_task.evaluate(model, "val")
    assert report.kept_step > 0, report
    assert after.value > start.value + 0.1, (start, after, report)  # about +0.45 on this CPU


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_a_seeded_candidate_is_the_same_with_the_caches_on_and_off(study_factory, tmp_path: Path, criterion: str) -> None:
    """Reuse between trials (the teacher's outputs, the unpruned model's scores) changes no result."""
    from autoprune.config import load_config
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    cfg = load_config(study_factory({"criterion": criterion}))
    on = StudyContext.build(cfg, workdir=tmp_path / "on", use_cache=False)
    off = StudyContext.build(cfg, workdir=tmp_path / "off", use_cache=False)
    off.teacher.max_bytes, off.pruner.reuse_scores = 0, False
    plan = {"ratios": {g.name: 0.25 + 0.25 * (i % 2) for i, g in enumerate(on.groups) if g.tied_to is None}}
    first = evaluate_candidate(on, **plan)
    again, fresh = evaluate_candidate(on, **plan), evaluate_candidate(off, **plan)  # `again` reads both caches
    assert on.teacher.hits > 0 and on.pruner.score_hits == 1 and off.teacher.hits == off.pruner.score_hits == 0
    for res in (again, fresh):
        assert res.prune.kept_indices == first.prune.kept_indices
        assert res.metric.value == pytest.approx(first.metric.value, abs=1e-9)
        assert res.metric_after_bn.value == pytest.approx(first.metric_after_bn.value, abs=1e-9)


def test_trials_and_sweep_points_record_both_metrics(study_factory, tmp_path: Path) -> None:
    from autoprune.config import load_config
    from autoprune.space.baselines import sweep_point
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    ctx = StudyContext.build(load_config(study_factory()), workdir=tmp_path / "w", use_cache=False)
    res = evaluate_candidate(ctx, uniform=0.25)
    attrs = res.attrs(0.05)
    assert attrs["metric_after_bn"] is not None and attrs["metric"] is not None
    assert attrs["recovery_steps"] == 4 and attrs["recovery_recipe"] == {"lr": 0.01, "finetune_epochs": 2.0, "finetune_steps": 4}
    assert {"evaluate_after_bn", "finetune", "evaluate"} <= set(attrs["stage_seconds"])
    json.dumps(attrs)  # every attr is stored by Optuna as JSON
    point = sweep_point(ctx, "uniform", 0.25, 0.05)
    assert point.metric_after_bn is not None and point.recovery["recovery_steps"] == 4


def test_calibration_picks_within_noise_stores_and_is_reused(study_factory) -> None:
    from autoprune.config import load_config
    from autoprune.trial.calibration import CURVE_FILE
    from autoprune.trial.calibration import calibrate_recovery
    from autoprune.trial.calibration import calibration_path
    from autoprune.trial.calibration import ensure_recipe
    from autoprune.trial.calibration import load_calibration
    from autoprune.trial.candidate import StudyContext

    overrides = {"recovery": {"finetune_steps": None, "calibration": {"enabled": True, "lrs": [0.003, 0.05], "epochs": [0.25, 1.0]}}}
    cfg = load_config(study_factory(overrides))
    ctx = StudyContext.build(cfg, use_cache=False)
    seen = []
    record = calibrate_recovery(ctx, on_result=seen.append)
    assert len(seen) == len(record["results"]) == 4
    best = max(r["metric"] for r in record["results"])
    chosen = record["chosen"]
    assert chosen["metric"] >= best - 2.0 * max(r["stderr"] for r in record["results"] if r["metric"] == best) - 1e-12
    cheaper = [r for r in record["results"] if r["steps"] < chosen["steps"]]
    assert all(r["metric"] < best - 2.0 * max(x["stderr"] for x in record["results"] if x["metric"] == best) for r in cheaper)
    for r in record["results"]:  # recovery is never worse than BN recalibration alone beyond noise
        assert r["metric"] >= r["metric_after_bn"] - 2 * math.sqrt(2) * r["stderr"] - 1e-9
    path = calibration_path(cfg)
    assert json.loads(path.read_text())["chosen"] == chosen and path.with_name(CURVE_FILE).stat().st_size > 0

    again = StudyContext.build(load_config(study_factory(overrides)), use_cache=False)
    lines: list[str] = []
    assert ensure_recipe(again, say=lines.append) == record and "(reused)" in lines[-1]
    assert (again.config.recovery.lr, again.config.recovery.finetune_epochs) == (chosen["lr"], chosen["epochs"])
    # Other recovery settings (here BN batches) change what a recipe gives: the calibration is not reused.
    changed = {"recovery": {**overrides["recovery"], "bn_batches": 3}}
    other = StudyContext.build(load_config(study_factory(changed)), use_cache=False)
    assert load_calibration(other) is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_run_calibrates_once_and_every_worker_uses_the_recipe(study_factory, monkeypatch) -> None:
    import optuna
    from conftest import run_cli

    from autoprune.config import load_config

    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    overrides = {
        "name": "calibrated", "max_drop": 0.9,
        "search": {"trials": 3, "sampler": "random", "sweep_ratios": [0.3]},
        "recovery": {"finetune_steps": None, "calibration": {"enabled": True, "lrs": [0.003, 0.05], "epochs": [0.25, 0.5]}},
    }
    path = study_factory(overrides)
    res = run_cli("run", path, "--trials", "3")
    assert res.returncode == 0, res.stderr
    assert "calibrating the recovery recipe" in res.stderr and "recovery recipe: lr" in res.stderr
    cfg = load_config(path)
    study = optuna.load_study(study_name="calibrated", storage=cfg.storage_url())
    record = json.loads((cfg.artifact_path() / "recovery-calibration.json").read_text())
    recipe = {"lr": record["chosen"]["lr"], "finetune_epochs": record["chosen"]["epochs"], "finetune_steps": None}
    assert study.user_attrs["recovery_recipe"] == recipe
    assert study.user_attrs["recovery_calibration"]["chosen"] == record["chosen"]
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) >= 3 and all(t.user_attrs["recovery_recipe"] == recipe for t in trials)
    assert all(p["recovery"]["recovery_steps"] == record["chosen"]["steps"] for p in study.user_attrs["baselines"]["uniform"])

    # A second run joins the study and reuses the calibration: no recipe is tried again.
    again = run_cli("run", path, "--trials", "4")
    assert again.returncode == 0, again.stderr
    assert "calibrating" not in again.stderr
    last = optuna.load_study(study_name="calibrated", storage=cfg.storage_url()).trials
    assert all(t.user_attrs["recovery_recipe"] == recipe for t in last if t.state == optuna.trial.TrialState.COMPLETE)

    report = run_cli("pareto", path)
    assert report.returncode in (0, 2), report.stderr
    html = (cfg.artifact_path() / "report" / "report.html").read_text()
    assert "Recovery recipe" in html and "Calibrated on uniform 0.30" in html
    assert (cfg.artifact_path() / "report" / "recovery-curve.png").stat().st_size > 0
