"""Finetune curves in the study, ``search.pruner`` over them, and enqueued baselines that reuse their sweep points.

First the rules on hand-made trials in real SQLite studies with two objectives (no torch): the curve is
stored as intermediate values Optuna reads back, the configured Optuna pruner stops only a curve over the
budget, its bookkeeping is kept on the trial, and the duplicate rule never reuses a pruned trial.  Then real
searches on the tiny digits study: ``autoprune run`` with a pruner (curves per trial, baselines without a
finetune of their own, curves in ``pareto --json``), and a search where a hopeless candidate is pruned with
its reason and step while baselines, evaluated, run to their end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import run_cli
from conftest import write_study

from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.search.curves import STATE_ATTR
from autoprune.search.curves import CurvePruned
from autoprune.search.curves import CurveReporter
from autoprune.search.duplicates import KEY_ATTR
from autoprune.search.duplicates import evaluated_twin
from autoprune.space.sweep_records import SWEEP_DIR

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
TrialState = optuna.trial.TrialState
STEPS = (0, 2, 4)  # the tiny recipe: 4 finetune steps judged at 2 checkpoints, after BN recalibration first


# Config -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("search", "key", "words"),
    [
        ({"pruner": "medain"}, "search.pruner", "unknown pruner 'medain'; choose one of none, median"),
        ({"pruner": "median", "pruner_options": {"n_startup": 2}}, "search.pruner_options", "unknown option 'n_startup'"),
        ({"pruner": "median", "pruner_options": {"n_startup_trials": -1}}, "search.pruner_options", "refused by pruner 'median'"),
        ({"pruner_options": {"n_startup_trials": 2}}, "search.pruner_options", "pruner 'none' takes no options"),
    ],
)
def test_a_bad_pruner_or_option_is_a_config_error_naming_the_key(tmp_path: Path, search: dict, key: str, words: str) -> None:
    path = write_study(tmp_path, {"search": search})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path.resolve()) in msg and f"key '{key}'" in msg and words in msg, msg


def test_pruner_options_are_passed_through(tmp_path: Path) -> None:
    cfg = load_config(write_study(tmp_path, {"search": {"pruner": "successive-halving", "pruner_options": {"reduction_factor": 2}}}))
    assert cfg.search.pruner == "successive-halving" and cfg.search.pruner_options == {"reduction_factor": 2}
    assert load_config(write_study(tmp_path, {})).search.pruner == "none"


def test_the_cli_refuses_an_unknown_pruner_option_with_exit_code_2(tmp_path: Path) -> None:
    path = write_study(tmp_path, {"search": {"pruner": "wilcoxon", "pruner_options": {"p": 0.1}}})
    res = run_cli("run", path, "--trials", "1")
    assert res.returncode == 2, res.stderr
    assert "unknown option 'p'" in res.stderr and "p_threshold" in res.stderr and "Traceback" not in res.stderr


# The rules on hand-made trials ------------------------------------------------------------------------
@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    """A two-objective study (as ``search.mode: pareto`` makes) holding three finished trials whose curves
    sit at drop 0.1 at every step."""
    url = f"sqlite:///{tmp_path / 'curves.db'}"
    study = optuna.create_study(study_name="curves", storage=url, directions=["maximize", "maximize"])
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.9, 1.5], user_attrs={"drop": 0.1}, intermediate_values={s: 0.1 for s in STEPS},
        ))
    return study


def _reporter(study: optuna.Study, trial: optuna.Trial, pruner: str, **options: Any) -> CurveReporter:
    # Base metric 1.0 on the calibration images; a drop is the base metric minus the candidate's.
    return CurveReporter(study, trial, 1.0, lambda base, m: base - m, 0.05, pruner, options)


def test_a_curve_is_stored_as_intermediate_values_of_a_multi_objective_study(study: optuna.Study) -> None:
    trial = study.ask()
    report = _reporter(study, trial, "none")
    for step, metric in zip(STEPS, (0.5, 0.8, 0.9), strict=True):
        report(step, metric)
    study.tell(trial, [0.9, 1.2])
    again = optuna.load_study(study_name="curves", storage=study._storage)
    assert again.trials[-1].intermediate_values == pytest.approx({0: 0.5, 2: 0.2, 4: 0.1})


def test_the_pruner_stops_a_curve_over_the_budget_that_it_ranks_worse(study: optuna.Study) -> None:
    # The median pruner stops a trial whose best drop so far is above the finished curves' median (0.1).
    better = study.ask()
    report = _reporter(study, better, "median", n_startup_trials=0)
    report(0, 0.92)  # drop 0.08: over the budget, but better than the median: runs on
    report(2, 0.92)
    study.tell(better, state=TrialState.FAIL)
    worse = study.ask()
    report = _reporter(study, worse, "median", n_startup_trials=0)
    report(0, 0.5)  # drop 0.5 after BN recalibration alone: the screening's point, never the pruner's
    with pytest.raises(CurvePruned) as stop:
        report(2, 0.85)  # drop 0.15 in the finetune: over the budget and worse than the median
    assert stop.value.step == 2 and stop.value.drop == pytest.approx(0.15)
    assert "pruner median at finetune step 2" in stop.value.reason and "over the budget 0.05" in stop.value.reason


def test_a_worse_curve_within_the_budget_runs_on(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}", directions=["maximize", "maximize"])
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(values=[0.9, 1.5], user_attrs={"drop": 0.0}, intermediate_values={s: 0.0 for s in STEPS}))
    trial = study.ask()
    report = _reporter(study, trial, "median", n_startup_trials=0)
    report(0, 0.96)  # drop 0.04: worse than every finished curve (0.0), within the budget 0.05: runs on
    report(2, 0.96)
    with pytest.raises(CurvePruned):
        report(4, 0.9)  # the same verdict stops it once it is over the budget
    assert optuna.load_study(study_name="c", storage=study._storage).trials[-1].intermediate_values == pytest.approx(
        {0: 0.04, 2: 0.04, 4: 0.1}
    )


def test_the_last_checkpoint_is_never_the_pruners(study: optuna.Study) -> None:
    # The finetune is over at its last step: a curve over the budget and worse than the median is stopped before
    # it, but at the last step the validation figures decide (nothing is left to save).
    trial = study.ask()
    report = CurveReporter(study, trial, 1.0, lambda base, m: base - m, 0.05, "median", {"n_startup_trials": 0}, last_step=STEPS[-1])
    report(0, 0.5)
    with pytest.raises(CurvePruned):
        report(STEPS[1], 0.85)
    trial = study.ask()
    report = CurveReporter(study, trial, 1.0, lambda base, m: base - m, 0.05, "median", {"n_startup_trials": 0}, last_step=STEPS[1])
    report(0, 0.5)
    report(STEPS[1], 0.85)  # the same curve, but this finetune ends here
    assert study.trials[-1].intermediate_values == pytest.approx({0: 0.5, STEPS[1]: 0.15})


def test_planned_steps_are_the_steps_a_finetune_takes() -> None:
    from autoprune.config import RecoveryConfig
    from autoprune.models import build_model
    from autoprune.tasks.digits import DigitsTask
    from autoprune.trial.recovery import Recovery
    from autoprune.trial.recovery import planned_steps

    task = DigitsTask("resnet", image_size=12)
    settings = RecoveryConfig(finetune_epochs=0.3, batch_size=32, calib_size=256, checkpoints=3, distill=False, bn_batches=1)
    recovery = Recovery(build_model("resnet", 10, 1, widths=[8, 8]), task, settings)
    recovery.recalibrate()
    report = recovery.finetune()
    assert report.steps == planned_steps(len(task.dataset("train")), settings) == report.curve[-1][0]  # the last judged point


def test_successive_halving_keeps_its_rungs_on_the_trial(study: optuna.Study) -> None:
    trial = study.ask()
    report = _reporter(study, trial, "successive-halving", min_resource=1, reduction_factor=2)
    report(0, 0.99)
    report(2, 0.99)
    state = optuna.load_study(study_name="curves", storage=study._storage).trials[-1].user_attrs[STATE_ATTR]
    assert "completed_rung_0" in state  # Optuna's own bookkeeping, kept where the next copy finds it


def test_hyperband_and_wilcoxon_judge_the_copy(study: optuna.Study) -> None:
    for pruner in ("hyperband", "wilcoxon"):
        trial = study.ask()
        report = _reporter(study, trial, pruner)
        for step in STEPS:
            try:
                report(step, 0.99)  # drop 0.01: within the budget, never stopped whatever the verdict
            except CurvePruned as stop:  # pragma: no cover - the assertion explains
                pytest.fail(f"{pruner} stopped a curve within the budget: {stop}")
        study.tell(trial, state=TrialState.FAIL)


def test_the_duplicate_rule_never_reuses_a_pruned_trial(study: optuna.Study) -> None:
    trial = study.ask()
    trial.set_user_attr(KEY_ATTR, "k")
    study.tell(trial, state=TrialState.PRUNED)
    me = study.ask()
    assert evaluated_twin(study.get_trials(deepcopy=False), "k", [], me.number) is None


# Real searches on the tiny study ----------------------------------------------------------------------
RUN_OVERRIDES: dict[str, Any] = {
    "name": "pruned-digits",
    "max_drop": 0.3,
    "search": {"trials": 4, "sampler": "random", "sweep_ratios": [0.3, 0.5], "bounds_margin": 2,
               "pruner": "median", "pruner_options": {"n_startup_trials": 0}},
}


def _baseline_points(study: optuna.Study) -> dict[str, dict]:
    attrs = study.user_attrs
    out = {}
    for t in study.get_trials(deepcopy=False):
        kind = t.user_attrs.get("kind")
        if kind in ("uniform", "global"):
            (point,) = [p for p in attrs["baselines"][kind] if p["ratio"] == t.user_attrs["baseline_ratio"]]
            out[kind] = point
    return out


@pytest.mark.slow
def test_a_run_with_a_pruner_stores_curves_and_reuses_the_sweep_points(study_factory) -> None:
    config = study_factory(RUN_OVERRIDES)
    res = run_cli("run", config, "--trials", "4")
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr[-4000:]}"
    url = f"sqlite:///{config.parent / 'pruned-digits.db'}"
    study = optuna.load_study(study_name="pruned-digits", storage=url)
    trials = study.get_trials(deepcopy=False)
    points = _baseline_points(study)
    assert points, "fixture precondition: a feasible baseline was enqueued"
    for t in trials:
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
            assert sorted(t.intermediate_values) == list(STEPS), (t.number, t.intermediate_values)
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["pruned_step"] in t.intermediate_values and "pruner median" in t.user_attrs["pruned_reason"]
    for t in trials:
        kind = t.user_attrs["kind"]
        if kind not in points:
            continue
        a, point = t.user_attrs, points[kind]
        assert t.state == TrialState.COMPLETE
        assert a["sweep_point"] == {"kind": kind, "ratio": point["ratio"]}
        assert set(a["stage_seconds"]) == {"sweep_point", "storage"}, a["stage_seconds"]  # no finetune of its own
        assert "finetune" in a["sweep_stage_seconds"]  # the sweep's, paid once
        assert (a["metric"], a["speedup"], a["channels"]) == (point["metric"], point["speedup"], point["channels"])
        assert a["recovery_curve"] == point["recovery"]["recovery_curve"]
        assert a["weights_artifact_id"] and a["arch_artifact_id"]
    out = run_cli("pareto", config, "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    curves = json.loads(out.stdout)["curves"]
    for t in trials:
        if t.intermediate_values:
            assert curves[str(t.number)] == [[s, pytest.approx(v)] for s, v in sorted(t.intermediate_values.items())]


@pytest.mark.slow
def test_a_hopeless_candidate_is_pruned_with_its_reason_and_baselines_run_to_their_end(study_factory) -> None:
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    path = study_factory(RUN_OVERRIDES | {"name": "hopeless-digits"})
    cfg, url, study = create_study(str(path), None, say=lambda line: None)
    shutil.rmtree(cfg.artifact_path() / SWEEP_DIR)  # the baselines evaluate themselves this time
    for _ in range(3):  # finished trials whose curves never dropped: anything worse is below the median
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"drop": 0.0, "kind": "hand-made"},
                                                  intermediate_values={s: 0.0 for s in STEPS}))
    space = study.user_attrs["search_space"]
    narrowest = {name: min(g["widths"]) for name, g in space.items()}  # more pruned than either baseline
    study.enqueue_trial(narrowest, user_attrs={"kind": "search"})
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    assert run_local(str(path), url, 1, 3 + waiting) == 0

    trials = optuna.load_study(study_name=cfg.name, storage=url).get_trials(deepcopy=False)
    (pruned,) = [t for t in trials if t.params == narrowest]
    a = pruned.user_attrs
    assert pruned.state == TrialState.PRUNED and a["pruned_by"] == "median"
    assert a["pruned_step"] == max(pruned.intermediate_values) and a["pruned_step"] in STEPS[1:]  # in the finetune
    assert f"at finetune step {a['pruned_step']}" in a["pruned_reason"]
    assert a["feasible"] is False and pruned.constraints["drop"] > 0  # the sampler sees it over budget
    assert pruned.intermediate_values[a["pruned_step"]] > 0.3
    for t in trials:
        if t.user_attrs.get("kind") in ("uniform", "global"):  # curves worse than the median, never pruned
            assert t.state == TrialState.COMPLETE and "finetune" in t.user_attrs["stage_seconds"]
            assert sorted(t.intermediate_values) == list(STEPS) and max(t.intermediate_values.values()) > 0.0


# Progress of study creation ---------------------------------------------------------------------------
def test_calibration_has_its_own_bar_and_the_baselines_bar_opens_when_the_sweeps_start() -> None:
    from autoprune.search.create import StageBars

    bars = StageBars()
    bars.stage("calibration", 0, 12)
    assert set(bars.bars) == {"calibration"}  # no baselines bar (and no ETA) while the recipes run
    bars.stage("calibration", 5, 12)
    assert bars.bars["calibration"].n == 5 and bars.bars["calibration"].total == 12
    bars.stage("calibration", 12, 12)
    assert bars.bars == {}  # closed once every recipe ran
    bars.stage("baselines", 0, 4)
    assert set(bars.bars) == {"baselines"} and bars.bars["baselines"].n == 0
    bars.update("baselines", 1, "uniform 0.30")
    assert bars.bars["baselines"].n == 1
    bars.close()
    assert bars.bars == {}
