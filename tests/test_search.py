"""The search on the embedded SQLite storage, as a user runs it: ``autoprune run`` then ``autoprune export``.

One module study runs end to end through the real CLI on the tiny digits model (4 trials, one worker);
the tests read it back with Optuna and export from it.  ``--workers 2`` on SQLite must be refused before
anything is created.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from click.testing import CliRunner
from conftest import TINY_STUDY
from conftest import deep_merge
from conftest import run_cli

from autoprune.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
TrialState = optuna.trial.TrialState

# The trial user attrs the search service promises (analysis, export and the dashboard read them by name).
TRIAL_ATTRS = ("metric", "drop", "feasible", "speedup", "latency_ms", "macs", "params", "channels", "stage_seconds", "host", "worker", "device")
STUDY_ATTRS = ("bounds", "base_metric", "max_drop", "baselines")

# The tiny study with a budget wide enough that both sweeps have feasible points (so both baselines are
# enqueued), a margin that leaves several grid values per 32-channel group, and no early stop (every
# finished trial is COMPLETE).
SEARCH_OVERRIDES: dict[str, Any] = {
    "name": "sqlite-digits",
    "max_drop": 0.9,
    "search": {"trials": 4, "sampler": "random", "sweep_ratios": [0.3, 0.5], "bounds_margin": 2},
    "recovery": {"bn_batches": 2, "finetune_steps": 5},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5},
}


@pytest.fixture(scope="module", autouse=True)
def _default_storage() -> Iterator[None]:
    """These tests use the config's default storage: an exported AUTOPRUNE_STORAGE must not redirect them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOPRUNE_STORAGE", raising=False)
        yield


def write_config(folder: Path, checkpoint: Path) -> Path:
    data = deep_merge(TINY_STUDY, deep_merge(SEARCH_OVERRIDES, {"base": {"checkpoint": str(checkpoint)}}))
    data["search"]["hopeless_margin"] = None  # deep_merge treats None as "delete"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class RunStudy:
    config: Path
    url: str
    run: subprocess.CompletedProcess[str]

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="sqlite-digits", storage=self.url)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, tiny_study) -> RunStudy:
    """``autoprune run CONFIG --trials 4`` on the default SQLite storage (next to the config)."""
    config = write_config(tmp_path_factory.mktemp("sqlite-study"), tiny_study.checkpoint)
    res = run_cli("run", config, "--trials", "4")
    assert res.returncode == 0, f"autoprune run failed:\n{res.stdout}\n{res.stderr[-5000:]}"
    return RunStudy(config, f"sqlite:///{config.parent / 'sqlite-digits.db'}", res)


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def expected_pick(study: optuna.Study, max_drop: float) -> optuna.trial.FrozenTrial:
    """The documented choice: fastest trial within the budget; ties: better metric, fewer MACs, lower number."""
    ok = [t for t in complete_trials(study) if t.user_attrs["drop"] <= max_drop]
    assert ok, "fixture precondition: some trial is within the budget"
    return min(ok, key=lambda t: (-t.user_attrs["speedup"], -t.user_attrs["metric"], t.user_attrs["macs"], t.number))


# autoprune run ---------------------------------------------------------------------------------------
def test_run_reaches_the_target_with_documented_attrs(ran: RunStudy) -> None:
    study = ran.study()
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert states == {"COMPLETE": 4}, f"one SQLite worker should run exactly the 4 trials: {states}"
    assert "trials: complete 4" in ran.run.stdout
    assert "Traceback" not in ran.run.stderr

    attrs = study.user_attrs
    for key in STUDY_ATTRS:
        assert key in attrs, f"study user attr {key!r} missing"
    assert attrs["max_drop"] == 0.9 and attrs["target_trials"] == 4
    assert 0.5 < attrs["base_metric"] <= 1.0
    assert [p["ratio"] for p in attrs["baselines"]["uniform"]] == [0.3, 0.5]
    assert [p["ratio"] for p in attrs["baselines"]["global"]] == [0.3, 0.5]
    groups = {g["name"] for g in attrs["groups"]}
    assert set(attrs["bounds"]) == groups
    for name, (lo, hi) in attrs["bounds"].items():
        assert 0.0 <= lo <= hi < 1.0, (name, lo, hi)

    space = attrs["search_space"]
    for t in trials:
        for key in TRIAL_ATTRS:
            assert key in t.user_attrs, f"trial {t.number} lacks user attr {key!r}"
        a = t.user_attrs
        assert a["worker"] == "w0" and a["device"] == "cpu"  # device: auto on a host without a GPU
        assert a["feasible"] == (a["drop"] <= 0.9)
        assert a["speedup"] > 0 and a["latency_ms"] > 0 and a["macs"] > 0 and a["params"] > 0
        assert math.isclose(a["drop"], attrs["base_metric"] - a["metric"], abs_tol=1e-9)
        assert set(a["channels"]) == groups and all(isinstance(c, int) and c > 0 for c in a["channels"].values())
        if "duplicate_of" in a:  # the same channels as an earlier trial: its figures, no work of its own
            assert set(a["stage_seconds"]) == {"duplicate"}
        elif "sweep_point" in a:  # an enqueued baseline: its sweep point's figures and weights, no finetune again
            assert set(a["stage_seconds"]) == {"sweep_point", "storage"} and "finetune" in a["sweep_stage_seconds"]
        else:
            assert {"prune", "finetune", "evaluate", "latency", "storage"} <= set(a["stage_seconds"])
        assert t.values == [a["speedup"]]  # search.mode fastest: one objective, the drop is a constraint
        assert t.constraints == {"drop": pytest.approx(a["drop"] - 0.9)}
        # One parameter per searched group: its kept channels, one of the group's searched widths.
        assert set(t.params) == set(space)
        for name, value in t.params.items():
            assert value in space[name]["widths"] and a["channels"][name] == value, (t.number, name, value, space[name])

    # The best feasible uniform and global points were enqueued and ran first, once each.
    kinds = [t.user_attrs["kind"] for t in sorted(trials, key=lambda t: t.number)]
    assert sorted(kinds[:2]) == ["global", "uniform"] and kinds[2:] == ["search", "search"], kinds


def test_enqueued_baselines_reproduce_their_sweep_points(ran: RunStudy) -> None:
    study = ran.study()
    attrs = study.user_attrs
    groups = {g["name"]: g for g in attrs["groups"]}
    space = attrs["search_space"]
    for kind in ("uniform", "global"):
        (trial,) = [t for t in complete_trials(study) if t.user_attrs["kind"] == kind]
        (point,) = [p for p in attrs["baselines"][kind] if p["ratio"] == trial.user_attrs["baseline_ratio"]]
        # Exactly the sweep point's kept channels, in every group (followers included), not a nearby grid point.
        assert trial.user_attrs["channels"] == point["channels"], kind
        for name, widths in space.items():
            assert point["channels"][name] in widths["widths"], (kind, name)
            assert trial.params[name] == point["channels"][name]
        assert set(point["channels"]) == set(groups)


def test_run_stores_architecture_and_weights_per_trial(ran: RunStudy, tmp_path: Path) -> None:
    from autoprune.config import load_config
    from autoprune.selection.artifacts import study_store

    study = ran.study()
    store = study_store(load_config(ran.config))
    for t in complete_trials(study):
        out = tmp_path / f"arch-{t.number}.json"
        optuna.artifacts.download_artifact(artifact_store=store, artifact_id=t.user_attrs["arch_artifact_id"], file_path=str(out))
        arch = json.loads(out.read_text())
        assert arch["provenance"]["trial"] == t.user_attrs.get("duplicate_of", t.number)
        assert arch["metrics"]["metric"] == t.user_attrs["metric"]
        assert {g["name"]: g["kept_channels"] for g in arch["groups"]} == t.user_attrs["channels"]
        assert all(len(g["kept_indices"]) == g["kept_channels"] for g in arch["groups"])
        weights = tmp_path / f"w-{t.number}.pt"
        optuna.artifacts.download_artifact(artifact_store=store, artifact_id=t.user_attrs["weights_artifact_id"], file_path=str(weights))
        assert weights.stat().st_size > 0


def test_several_workers_on_sqlite_are_refused(tmp_path: Path, tiny_study) -> None:
    config = write_config(tmp_path, tiny_study.checkpoint)
    res = run_cli("run", config, "--workers", "2", "--trials", "2")
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert "Traceback" not in err
    assert err.startswith("error: 2 workers on SQLite") and len(err.splitlines()) == 1, err
    for alternative in ("--workers 1", "postgresql://", "journal:"):
        assert alternative in err, f"the refusal should name {alternative!r}: {err}"
    assert not (tmp_path / "sqlite-digits.db").exists(), "nothing may be created before the refusal"
    assert not (tmp_path / "artifacts").exists()


def test_several_workers_write_their_lines_above_the_bar(tmp_path: Path, tiny_study) -> None:
    """``run --workers 2``: the workers' lines reach the terminal through the parent, never glued to its bar."""
    from test_demo import rendered_lines

    config = write_config(tmp_path, tiny_study.checkpoint)
    url = f"journal:{tmp_path / 'study.log'}"
    res = run_cli("run", config, "--workers", "2", "--trials", "4", "--storage", url, raw_newlines=True)
    assert res.returncode == 0, res.stderr[-3000:]
    err = rendered_lines(res.stderr)
    bar = re.compile(r"^[a-z ]+: +\d+%\|[^|]*\| \d+/\d+ \[[^\]]*\]$")
    glued = [line for line in err if "%|" in line and not bar.match(line)]
    assert not glued, glued
    for worker in ("w0", "w1"):
        assert any(line.startswith(f"[{worker}] ") for line in err), f"no line of {worker}:\n{res.stderr[-3000:]}"


# a worker takes its settings from the study ------------------------------------------------------------
def _copy_of(ran: RunStudy, folder: Path) -> str:
    """A copy of the module's study (its stored config and trials) in its own SQLite file; returns the URL."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'copy.db'}"
    optuna.copy_study(from_study_name="sqlite-digits", from_storage=ran.url, to_storage=url)
    return url


def _worker_yaml(ran: RunStudy, folder: Path, overrides: dict[str, Any]) -> Path:
    """The study's YAML as another host holds it: in its own folder, with ``overrides``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(ran.config.read_text()), overrides), sort_keys=False))
    return path


def test_a_worker_whose_file_differs_in_a_result_key_is_refused(ran: RunStudy, tmp_path: Path) -> None:
    url = _copy_of(ran, tmp_path / "db")
    before = [(t.number, t.state) for t in optuna.load_study(study_name="sqlite-digits", storage=url).get_trials()]
    drifted = _worker_yaml(ran, tmp_path / "host-b", {"criterion": "l1"})
    res = run_cli("worker", drifted, "--storage", url, "--trials", "6", "--id", "drifted", "--wait", "10", timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip()
    assert "Traceback" not in err
    assert "criterion (here 'l1', study 'l2')" in err, err
    study = optuna.load_study(study_name="sqlite-digits", storage=url)
    assert [(t.number, t.state) for t in study.get_trials()] == before, "the refused worker may not add or open a trial"
    assert not any(t.user_attrs.get("worker") == "drifted" for t in study.get_trials())


def test_a_worker_whose_file_differs_only_in_its_storage_joins(ran: RunStudy, tmp_path: Path) -> None:
    url = _copy_of(ran, tmp_path / "db")
    moved = _worker_yaml(ran, tmp_path / "host-c", {"storage": url, "loader": {"workers": 0, "pin_memory": True}})
    res = run_cli("worker", moved, "--trials", "5", "--id", "moved", "--wait", "10", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    notes = [line for line in res.stderr.splitlines() if "only where or how it runs" in line]
    assert len(notes) == 1 and "(loader.pin_memory, storage)" in notes[0], res.stderr[-3000:]
    study = optuna.load_study(study_name="sqlite-digits", storage=url)
    ran_here = [t for t in study.get_trials() if t.user_attrs.get("worker") == "moved"]
    assert [t.state for t in ran_here] == [TrialState.COMPLETE], res.stderr[-3000:]


# autoprune export ------------------------------------------------------------------------------------
def test_export_picks_the_fastest_feasible_trial(ran: RunStudy, tmp_path: Path) -> None:
    study = ran.study()
    want = expected_pick(study, 0.9)
    out = tmp_path / "chosen.json"
    res = run_cli("export", ran.config, "--no-confirm", "-o", out)
    assert res.returncode == 0, res.stderr
    arch = json.loads(out.read_text())
    assert arch["provenance"]["trial"] == want.number
    assert res.stdout.startswith(f"chosen architecture: trial {want.number}, ")
    assert "(search timing, unconfirmed)" in res.stdout.splitlines()[0]
    assert arch["metrics"]["val_metric"] == want.user_attrs["metric"]
    assert arch["metrics"]["max_drop"] == 0.9 and arch["metrics"]["feasible"] is True
    weights = out.with_name("chosen.weights.pt")
    assert weights.is_file() and arch["provenance"]["weights"] == str(weights.resolve())

    # The same study plus a trial that is faster than all but over the budget: the choice must not move.
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name="sqlite-digits", from_storage=ran.url, to_storage=copy_url)
    copy = optuna.load_study(study_name="sqlite-digits", storage=copy_url)
    attrs = {k: v for k, v in want.user_attrs.items() if not k.endswith("_artifact_id")}
    speedup = max(t.user_attrs["speedup"] for t in complete_trials(study)) * 2
    attrs.update(metric=0.05, drop=copy.user_attrs["base_metric"] - 0.05, feasible=False, speedup=speedup, kind="search")
    copy.add_trial(
        optuna.trial.create_trial(params=want.params, distributions=want.distributions, values=[speedup], user_attrs=attrs)
    )
    out2 = tmp_path / "copy.json"
    res = CliRunner().invoke(main, ["export", str(ran.config), "--storage", copy_url, "--no-confirm", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    assert json.loads(out2.read_text())["provenance"]["trial"] == want.number, res.output


def test_export_with_nothing_feasible_names_the_closest_trial(ran: RunStudy, tmp_path: Path) -> None:
    study = ran.study()
    trials = complete_trials(study)
    assert all(t.user_attrs["drop"] > 0 for t in trials), "fixture precondition: every trial loses accuracy"
    closest = min(trials, key=lambda t: (t.user_attrs["drop"], -t.user_attrs["speedup"], t.number))

    out = tmp_path / "none.json"
    res = run_cli("export", ran.config, "--max-drop", "0", "--no-confirm", "-o", out)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip()
    assert "Traceback" not in err
    assert "no trial is feasible at max drop 0" in err, err
    assert f"the closest is trial {closest.number} " in err, err
    assert not out.exists()


def test_a_cached_timing_skips_the_export(study_factory, tmp_path: Path, monkeypatch) -> None:
    """The latency cache is read before the candidate is exported: a hit exports and times nothing."""
    from autoprune.config import load_config
    from autoprune.trial import candidate
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    ctx = StudyContext.build(load_config(study_factory()), workdir=tmp_path / "w", use_cache=True)
    exports: list[Path] = []
    real_export = candidate.export_onnx
    monkeypatch.setattr(candidate, "export_onnx", lambda model, x, path, **kw: exports.append(Path(path)) or real_export(model, x, path, **kw))
    first = evaluate_candidate(ctx, uniform=0.25)
    assert len(exports) == 1 and not first.latency_cached and {"export", "latency"} <= set(first.stage_seconds)
    again = evaluate_candidate(ctx, uniform=0.25)
    assert len(exports) == 1 and again.latency_cached and "export" not in again.stage_seconds  # "latency": the lookup
    assert again.speedup == first.speedup and again.prune.kept == first.prune.kept
    assert not any(p.exists() for p in exports)  # the temporary export is removed after timing


def test_a_timing_past_latency_max_seconds_fails_the_trial_with_one_message(ran: RunStudy, tmp_path: Path) -> None:
    """``latency.repeats`` at its bound (100,000 runs of base and candidate: minutes) under a 2-second ceiling: the trial
    fails at the ceiling, and the worker says why once."""
    for suffix in ("", "-wal"):  # a copy of the finished study, so the other tests see theirs unchanged
        source = ran.config.parent / f"sqlite-digits.db{suffix}"
        if source.exists():
            (tmp_path / source.name).write_bytes(source.read_bytes())
    latency = {"repeats": 100_000, "max_seconds": 2, "max_remeasure": 3}
    data = yaml.safe_load(ran.config.read_text())
    data["latency"].update(latency)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # The copy is a study created with these timing settings: a worker takes its settings from the study.
    copy = optuna.load_study(study_name="sqlite-digits", storage=f"sqlite:///{tmp_path / 'sqlite-digits.db'}")
    stored = copy.user_attrs["config"]
    copy.set_user_attr("config", {**stored, "latency": {**stored["latency"], **latency}})
    res = run_cli("worker", config, "--trials", "5", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out
    assert out.count("latency.max_seconds (2 s)") == 1 and "raise latency.max_seconds" in out, out
    last = optuna.load_study(study_name="sqlite-digits", storage=f"sqlite:///{tmp_path / 'sqlite-digits.db'}").trials[-1]
    assert last.state == optuna.trial.TrialState.FAIL


def test_worker_threads_leave_the_cores_other_processes_use(monkeypatch) -> None:
    import os
    import subprocess
    import sys

    import torch

    from autoprune.search import worker

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(worker, "others_busy_cores", lambda window_s=0.3: 0.0)
        assert worker.set_torch_threads(None) == cores and worker.set_torch_threads(None, local_workers=cores) == 1
        monkeypatch.setattr(worker, "others_busy_cores", lambda window_s=0.3: 1.0)
        assert worker.set_torch_threads(None) == max(1, cores - 1) == torch.get_num_threads()
        assert worker.set_torch_threads(3) == 3  # search.torch_threads wins
    finally:
        torch.set_num_threads(before)
    monkeypatch.undo()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert worker.others_busy_cores(0.5) >= 0.5  # the spinner's core, measured from /proc/stat
    finally:
        spinner.kill()
