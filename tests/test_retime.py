"""``autoprune retime``: time a study's best candidates on this host, store them under its fingerprint, and
let the analyzer judge speed by them (``--host-id``).

A real tiny study is searched once per module (with its uniform and global baseline trials).  A study
searched on *another* machine is made from it with Optuna's public API: the same trials, parameters,
values and artifacts, added to a new study with their ``host_id`` set to that machine's.  Its speedups are
then foreign here, so the analyzer has nothing to judge them by on this host until they are re-timed.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from conftest import write_study

from autoprune.analysis import load_analysis
from autoprune.config import load_config
from autoprune.errors import ArtifactError
from autoprune.errors import StorageError
from autoprune.latency import host_fingerprint
from autoprune.search.record import TIMING_EXTENT
from autoprune.selection.confirm import select_candidates
from autoprune.selection.retime import retime_study

# Every test here reads the study the module fixture searches (base training, baseline sweeps, trials).
pytestmark = pytest.mark.slow

MAX_DROP = 0.3
SEARCH_HOST = "0123456789abcdef"
OVERRIDES = {
    "name": "retime-digits",
    "max_drop": MAX_DROP,
    "base": {"epochs": 3},
    "search": {"trials": 4, "sweep_ratios": [0.3, 0.5], "bounds_margin": 99},
    "recovery": {"bn_batches": 2, "finetune_steps": 20, "lr": 0.02},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5},
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The searched study's config: uniform and global baseline trials, an enqueued unpruned trial, random ones."""
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    path = write_study(tmp_path_factory.mktemp("retime"), OVERRIDES)
    cfg, url, study = create_study(str(path), None, say=lambda line: None)
    study.enqueue_trial({k: v["channels"] for k, v in study.user_attrs["search_space"].items()})
    assert run_local(str(path), url, 1, cfg.search.trials) == 0
    kinds = [t.user_attrs.get("kind") for t in optuna.load_study(study_name=cfg.name, storage=url).trials]
    assert {"uniform", "global"} <= set(kinds), kinds
    return path


def _elsewhere(searched: Path, folder: Path, name: str, keep_baseline_trials: bool) -> Path:
    """A copy of the searched study, as if searched on host SEARCH_HOST (same storage and artifacts)."""
    source_cfg = load_config(searched)
    url = source_cfg.storage_url()
    path = write_study(folder, {
        **OVERRIDES, "name": name, "storage": url, "artifact_dir": str(source_cfg.artifact_path()),
        "base": {"epochs": 3, "checkpoint": str(source_cfg.checkpoint_path())},
    }, filename=f"{name}.yaml")
    source = optuna.load_study(study_name=source_cfg.name, storage=url)
    copy = optuna.create_study(study_name=name, storage=url, directions=source.directions)
    for key, value in source.user_attrs.items():
        copy.set_user_attr(key, value)
    for t in source.trials:
        if not keep_baseline_trials and t.user_attrs.get("kind") != "search":
            continue
        attrs = dict(t.user_attrs, host_id=SEARCH_HOST, host="search-box")
        copy.add_trial(optuna.trial.create_trial(
            state=t.state, params=t.params, distributions=t.distributions, values=t.values,
            user_attrs=attrs, system_attrs=t.system_attrs,
        ))
    return path


def test_retime_stores_per_host_and_the_analyzer_judges_by_it(searched: Path, tmp_path: Path) -> None:
    path = _elsewhere(searched, tmp_path, "retime-elsewhere", keep_baseline_trials=True)
    cfg = load_config(path)
    here = host_fingerprint()["fingerprint_id"]
    # Another deployment host re-timed one trial already; its entry must survive ours.
    other = {"host": "edge-box", "trials": {"0": {"host": "edge-box", "speedup": 9.5, "latency_ms": 0.1}}}
    optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).set_user_attr("timings:feedfacefeedface", other)
    with pytest.raises(StorageError, match=f"no trial of study 'retime-elsewhere' was timed on host '{here}'"):
        load_analysis(cfg.storage_url(), cfg.name, host_id=here)

    df, info = load_analysis(cfg.storage_url(), cfg.name)
    candidates = select_candidates(df, info, 2, MAX_DROP)
    kinds = {c.kind: c.number for c in candidates if c.kind in ("uniform", "global")}
    assert set(kinds) == {"uniform", "global"}  # the best baseline trials are re-timed, on the front or not
    lines: list[str] = []
    stored = retime_study(cfg, top=2, echo=lines.append)
    assert stored["host_id"] == here
    assert sorted(stored["retimed"]) == sorted(c.number for c in candidates)
    assert set(stored["trials"]) == {str(c.number) for c in candidates}
    for entry in stored["trials"].values():
        assert set(entry) >= {"host", "speedup", "speedup_spread", "latency_ms", "base_latency_ms", "measured_at", *TIMING_EXTENT}
        assert entry["speedup"] > 0 and entry["host"] == host_fingerprint()["hostname"]
    attrs = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs
    assert attrs[f"timings:{here}"]["trials"] == stored["trials"]
    assert attrs["timings:feedfacefeedface"] == other
    assert any(f"--host-id {here}" in line for line in lines)

    # Judged on this host: re-timed trials take these timings, the others have no speed here.
    on_here, info_here = load_analysis(cfg.storage_url(), cfg.name, host_id=here)
    on_here = on_here.set_index("number")
    for number, entry in stored["trials"].items():
        assert on_here.loc[int(number), "speedup"] == entry["speedup"]
        assert on_here.loc[int(number), "speedup_host_id"] == here
    untimed = set(on_here.index) - {int(n) for n in stored["trials"]}
    assert untimed and all(math.isnan(on_here.loc[n, "speedup"]) for n in untimed)
    # The best baselines were re-timed through their trials, so the baseline points have speed here.
    for kind, number in kinds.items():
        timed = [p for p in info_here.baselines[kind] if p.get("host_id") == here]
        assert timed and all(p["speedup"] == stored["trials"][str(number)]["speedup"] for p in timed)
    # The other host's entry is still what judges speed there.
    assert load_analysis(cfg.storage_url(), cfg.name, host_id="feedfacefeedface")[0].set_index("number").loc[0, "speedup"] == 9.5

    # A later re-timing of fewer trials on this host replaces theirs and keeps the rest.
    again = retime_study(cfg, top=1, echo=lambda line: None)
    assert set(again["trials"]) == set(stored["trials"])
    first = str(candidates[0].number)
    assert again["trials"][first]["measured_at"] >= stored["trials"][first]["measured_at"]

    proc = run_cli("pareto", path, "--host-id", here, "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    assert f"speed judged on host {here}" in proc.stdout
    # The chosen trial is the fastest feasible one by this host's timings (all candidates are feasible).
    fastest = max(again["trials"].items(), key=lambda item: item[1]["speedup"])
    chosen = next(line for line in proc.stdout.splitlines() if line.startswith("*"))
    assert chosen.split()[1] == fastest[0] and f"{fastest[1]['speedup']:.2f}x" in chosen


def test_retime_rebuilds_sweep_baselines_without_trials(searched: Path, tmp_path: Path) -> None:
    path = _elsewhere(searched, tmp_path, "retime-no-baseline-trials", keep_baseline_trials=False)
    cfg = load_config(path)
    here = host_fingerprint()["fingerprint_id"]
    proc = run_cli("retime", path, "--top", "1")
    assert proc.returncode == 0, proc.stderr
    assert "uniform r=" in proc.stdout and "global r=" in proc.stdout
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url()).user_attrs[f"timings:{here}"]
    assert len(stored["trials"]) == 1 and set(stored["baselines"]) == {"uniform", "global"}
    _, info = load_analysis(cfg.storage_url(), cfg.name, host_id=here)
    for kind, entry in stored["baselines"].items():
        point = next(p for p in info.baselines[kind] if p["ratio"] == entry["ratio"])
        assert point["speedup"] == entry["speedup"] and point["host_id"] == here
        others = [p for p in info.baselines[kind] if p["ratio"] != entry["ratio"]]
        assert all(math.isnan(p["speedup"]) for p in others)


def test_retime_names_missing_artifacts(searched: Path, tmp_path: Path) -> None:
    path = _elsewhere(searched, tmp_path, "retime-moved-artifacts", keep_baseline_trials=True)
    cfg = load_config(path)
    moved = cfg.model_copy(update={"artifact_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(ArtifactError, match=r"trial \d+: artifact .* is missing from .*elsewhere"):
        retime_study(moved, top=1, echo=lambda line: None)
