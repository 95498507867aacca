"""No repeated work, on real Optuna and SQLite.

First the rules of :mod:`autoprune.search.duplicates` on hand-made trials (no torch, no training): a
COMPLETE twin is reused, an earlier RUNNING twin is waited for (and reused, or left to evaluate when it
fails), a later one never holds an earlier trial up, waits are bounded.  Then a real search on a model whose
24-channel stem group is no multiple of ``round_to`` 16: the width space keeps the baselines' widths, every
reachable width prunes to exactly itself, the enqueued baselines reproduce their sweep points, and queued
copies of a channel vector are reused, not finetuned again.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
import pytest
from dedup_checks import assert_each_vector_evaluated_once

from autoprune.search.duplicates import DUPLICATE_ATTR
from autoprune.search.duplicates import KEY_ATTR
from autoprune.search.duplicates import WaitLimits
from autoprune.search.duplicates import reuse
from autoprune.search.duplicates import settle
from autoprune.space.bounds import SweepPoint
from autoprune.space.bounds import baseline_points
from autoprune.space.widths import channels_key
from autoprune.space.widths import ratios_for

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
TrialState = optuna.trial.TrialState
NAMES = ["a", "b"]
KEY = channels_key({"a": 16, "b": 24})
FAST = WaitLimits(same_key_s=30.0, keyless_s=30.0, poll_s=0.05)
SETTLE_TOLERANCE_S = 10.0  # beyond the configured waits: the SQLite reads of each poll on a busy host


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(study_name="dup", storage=f"sqlite:///{tmp_path / 'dup.db'}", directions=["maximize", "maximize"])


def _complete(study: optuna.Study, key: str | None, values: list[float], **attrs: Any) -> optuna.trial.FrozenTrial:
    user_attrs = dict(attrs, **({KEY_ATTR: key} if key is not None else {}))
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs=user_attrs, system_attrs={"constraints:drop": -0.01}))
    return study.get_trials(deepcopy=False)[-1]


def _running(study: optuna.Study, key: str | None) -> optuna.Trial:
    trial = study.ask()
    if key is not None:
        trial.set_user_attr(KEY_ATTR, key)
    return trial


# The rules -------------------------------------------------------------------------------------------
def test_a_complete_twin_is_reused_with_its_figures(study: optuna.Study) -> None:
    _complete(study, channels_key({"a": 16, "b": 32}), [0.8, 2.0])
    twin = _complete(study, KEY, [0.9, 1.5], metric=0.9, speedup=1.5, kind="global", worker="w1", arch_artifact_id="x",
                     stage_seconds={"finetune": 3.0}, baseline_ratio=0.3)
    me = _running(study, KEY)
    me.set_user_attr("kind", "search")
    me.set_user_attr("worker", "w0")
    found = settle(study, me.number, KEY, NAMES, FAST)
    assert found is not None and found.number == twin.number
    values = reuse(me, found, 0.25)
    study.tell(me, values)
    got = study.get_trials(deepcopy=False)[-1]
    assert got.values == [0.9, 1.5] and got.constraints == {"drop": -0.01}
    ua = got.user_attrs
    assert ua[DUPLICATE_ATTR] == twin.number and ua["metric"] == 0.9 and ua["speedup"] == 1.5 and ua["arch_artifact_id"] == "x"
    assert (ua["kind"], ua["worker"], ua[KEY_ATTR]) == ("search", "w0", KEY)  # its own, not the twin's
    assert "baseline_ratio" not in ua and ua["stage_seconds"] == {"duplicate": 0.25}  # no finetune of its own

    # A duplicate of the duplicate points at the trial that was evaluated; so does one found by `channels`
    # alone (a trial recorded before channels_key existed).
    again = _running(study, KEY)
    reuse(again, settle(study, again.number, KEY, NAMES, FAST), 0.0)
    assert study.get_trials(deepcopy=False)[-1].user_attrs[DUPLICATE_ATTR] == twin.number
    old = _complete(study, None, [0.7, 3.0], channels={"a": 8, "b": 8, "c": 16})
    me = _running(study, channels_key({"a": 8, "b": 8}))
    assert settle(study, me.number, channels_key({"a": 8, "b": 8}), NAMES, FAST).number == old.number


def test_an_earlier_running_twin_is_waited_for_then_reused(study: optuna.Study) -> None:
    first = _running(study, KEY)
    me = _running(study, KEY)
    said: list[str] = []

    def finish_first(line: str) -> None:  # called once, as the wait starts: the twin completes meanwhile
        said.append(line)
        first.set_user_attr("metric", 0.5)
        study.tell(first, [0.5, 2.5])

    found = settle(study, me.number, KEY, NAMES, FAST, say=finish_first)
    assert len(said) == 1 and f"trial {first.number} is evaluating the same channels" in said[0]
    assert found is not None and found.number == first.number and found.values == [0.5, 2.5]


def test_a_failed_twin_leaves_the_vector_to_evaluate(study: optuna.Study) -> None:
    first = _running(study, KEY)
    me = _running(study, KEY)
    said: list[str] = []
    found = settle(study, me.number, KEY, NAMES, FAST, say=lambda line: (said.append(line), study.tell(first, state=TrialState.FAIL)))
    assert found is None and len(said) == 1


def test_a_later_twin_or_another_vector_never_holds_a_trial_up(study: optuna.Study) -> None:
    me = _running(study, KEY)
    _running(study, KEY)  # started later, same vector: it waits for me, not I for it
    _running(study, channels_key({"a": 16, "b": 16}))  # another vector
    limits = WaitLimits(same_key_s=60, keyless_s=60, poll_s=0.05)
    start = time.monotonic()
    assert settle(study, me.number, KEY, NAMES, limits, say=pytest.fail) is None
    assert time.monotonic() - start < limits.keyless_s  # it waited out no limit, however slow the host


def test_waits_are_bounded(study: optuna.Study) -> None:
    _running(study, KEY)  # an earlier twin that never finishes
    me = _running(study, KEY)
    limits = WaitLimits(same_key_s=0.5, keyless_s=0.2, poll_s=0.05)
    start = time.monotonic()
    assert settle(study, me.number, KEY, NAMES, limits) is None
    # The twin's limit, then at most the keyless one, plus SETTLE_TOLERANCE_S for the polls' reads.
    assert limits.same_key_s <= time.monotonic() - start < limits.same_key_s + limits.keyless_s + SETTLE_TOLERANCE_S


def test_an_earlier_trial_is_waited_for_until_it_records_its_vector(study: optuna.Study, tmp_path: Path) -> None:
    first = _running(study, None)  # still drawing its parameters
    me = _running(study, KEY)
    # It records the same vector a moment later, from another connection (another worker), then completes.
    other = optuna.load_study(study_name="dup", storage=f"sqlite:///{tmp_path / 'dup.db'}")

    def other_worker() -> None:
        time.sleep(0.5)
        other._storage.set_trial_user_attr(first._trial_id, KEY_ATTR, KEY)
        time.sleep(0.5)
        other.tell(first.number, [0.6, 1.2])

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        found = settle(study, me.number, KEY, NAMES, FAST)
    finally:
        thread.join()
    assert found is not None and found.number == first.number
    # Without a key it is waited for only briefly.
    _running(study, None)
    me = _running(study, KEY)
    start = time.monotonic()
    assert settle(study, me.number, channels_key({"a": 8, "b": 8}), NAMES, WaitLimits(keyless_s=0.3, poll_s=0.05)) is None
    assert time.monotonic() - start >= 0.3


# A real search ---------------------------------------------------------------------------------------
# A ResNet whose stem chain has 24 channels (no multiple of round_to 16); a generous budget so both sweeps
# have feasible points; no early stop.
OVERRIDES = {
    "name": "dup-digits",
    "model_options": {"widths": [24, 40, 32]},
    "max_drop": 0.9,
    "pruning": {"round_to": 16},
    "search": {"trials": 5, "sampler": "random", "sweep_ratios": [0.3, 0.5], "bounds_margin": 1},
    "recovery": {"bn_batches": 2, "finetune_steps": 4},
}


@pytest.mark.slow
def test_search_keeps_baseline_widths_and_reuses_duplicates(study_factory, tmp_path: Path) -> None:
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    path = study_factory(OVERRIDES, trained_base=False)
    cfg, url, study = create_study(str(path), None, say=lambda line: None)
    attrs = study.user_attrs
    space = attrs["search_space"]
    groups = {g["name"]: g["channels"] for g in attrs["groups"]}
    assert groups["stem.0"] == 24 and space["stem.0"]["widths"] == [16, 24]  # both reachable widths, margin 1
    points = baseline_points(*(list(map(SweepPoint.from_dict, attrs["baselines"][k])) for k in ("uniform", "global")), cfg.max_drop)
    assert set(points) == {"uniform", "global"}
    for point in points.values():
        for name, widths in space.items():
            assert point.channels[name] in widths["widths"], (point.kind, name)
    _assert_every_reachable_width_prunes_to_itself(cfg, tmp_path)

    # Copies of the uniform baseline's vector queued behind the two baselines: 5 trials, at most 2 vectors.
    (uniform,) = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("kind") == "uniform"]
    for _ in range(3):
        study.enqueue_trial(dict(uniform.system_attrs["fixed_params"]))
    assert run_local(str(path), url, 1, 5) == 0
    trials = optuna.load_study(study_name=cfg.name, storage=url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5

    for t in trials:  # the baselines pruned to exactly their sweep points' kept channels
        kind = t.user_attrs["kind"]
        if kind in points:
            assert t.user_attrs["channels"] == points[kind].channels, kind
    by_key: dict[str, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in trials:
        assert t.user_attrs[KEY_ATTR] == channels_key(t.params)
        by_key[t.user_attrs[KEY_ATTR]].append(t)
    assert_each_vector_evaluated_once(by_key)
    assert sum(DUPLICATE_ATTR in t.user_attrs for t in trials) >= 3


def _assert_every_reachable_width_prunes_to_itself(cfg: Any, tmp_path: Path) -> None:
    """On the real pruner: every width of every group, requested as its ratio, gives exactly that width."""
    from autoprune.search.study import search_space
    from autoprune.trial.candidate import StudyContext

    ctx = StudyContext.build(cfg, workdir=tmp_path / "work")
    space = search_space(ctx, [], None)  # every width every group can reach
    assert space["stem.0"].widths == (16, 24) and space["layers.1.conv1"].widths == (16, 32, 40)
    for i in range(max(len(g.widths) for g in space.values())):
        widths = {name: g.widths[min(i, len(g.widths) - 1)] for name, g in space.items()}
        result = ctx.pruner.prune(copy.deepcopy(ctx.base_model), ratios=ratios_for(space, widths))
        assert {name: result.kept[name] for name in space} == widths and not result.clamps


def test_unclaimed_running_trial_is_failed_after_the_grace_period(tmp_path: Path) -> None:
    """A trial opened by Optuna but cut off before the objective claimed it must not hold the study up."""
    from autoprune.search.worker import _fail_unclaimed

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'u.db'}", study_name="u")
    orphan = study.ask()
    claimed = study.ask()
    claimed.set_user_attr("worker", "w1")
    assert _fail_unclaimed(study, grace_period=60) == []  # too young to be dead
    time.sleep(1.2)
    assert _fail_unclaimed(study, grace_period=0.1) == [orphan.number]
    states = {t.number: t.state for t in study.trials}
    assert states == {orphan.number: optuna.trial.TrialState.FAIL, claimed.number: optuna.trial.TrialState.RUNNING}
