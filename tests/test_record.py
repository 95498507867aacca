"""The trial record: one typed, versioned layout of a trial's user attrs, written and read in one module."""

from __future__ import annotations

import optuna

from autoprune.search.record import RECORD_VERSION
from autoprune.search.record import VERSION_ATTR
from autoprune.search.record import Timing
from autoprune.search.record import TrialRecord
from autoprune.search.record import read
from autoprune.search.record import with_late
from autoprune.search.record import write

# The user attrs of a complete trial as autoprune wrote them before the record had a version.
OLD_ATTRS = {
    "kind": "search", "worker": "w0", "device": "cpu", "channels_key": "a=8", "ratios": {"a": 0.5},
    "metric": 0.97, "metric_stderr": 0.004, "metric_n": 900, "drop": 0.01, "drop_stderr": 0.006, "feasible": True,
    "speedup": 2.1, "speedup_spread": 0.02, "speedup_interleaved": 2.2, "pooled_base_latency_ms": None,
    "latency_ms": 1.0, "base_latency_ms": 2.1, "latency_noisy": False, "latency_cached": False,
    "macs": 1000, "params": 50, "channels": {"a": 8}, "clamps": [], "stage_seconds": {"finetune": 1.5},
    "host": "box", "host_id": "abc", "metric_after_bn": 0.9, "metric_after_bn_stderr": 0.01,
    "recovery_recipe": {"lr": 0.01}, "recovery_steps": 4, "recovery_curve": [[0, 0.9], [4, 0.95]],
    "arch_artifact_id": "x", "weights_artifact_id": "y", "something_newer": {"kept": True},
}


def test_a_trial_written_before_the_version_reads_as_version_1_with_every_figure() -> None:
    rec = TrialRecord.from_attrs(OLD_ATTRS)
    assert rec.version == 1
    assert (rec.metric, rec.drop, rec.feasible, rec.channels) == (0.97, 0.01, True, {"a": 8})
    assert rec.timing == Timing(2.1, 0.02, 2.2, None, 1.0, 2.1, False, False, "box", "abc")
    assert rec.recovery == {"steps": 4, "curve": [[0, 0.9], [4, 0.95]]}
    assert rec.extra == {"something_newer": {"kept": True}}  # unknown attrs are kept, not dropped
    # Written back, it is the same attrs (bar the unset one) with the current version.
    stored = {k: v for k, v in OLD_ATTRS.items() if v is not None}
    assert rec.to_attrs() == stored | {VERSION_ATTR: 1}
    assert TrialRecord.from_attrs(rec.to_attrs()) == rec


def test_how_much_of_a_timing_ran_is_stored_under_latency_names_and_read_back() -> None:
    timing = Timing(speedup=2.0, noisy=False, blocks_run=4, repeats_run=80, stopped_early=True)
    attrs = TrialRecord(timing=timing).to_attrs()
    assert (attrs["latency_blocks_run"], attrs["latency_repeats_run"], attrs["latency_stopped_early"]) == (4, 80, True)
    assert TrialRecord.from_attrs(attrs).timing == timing
    assert Timing.from_entry({"speedup": 2.0, "blocks_run": 4, "stopped_early": True}).stopped_early is True


def test_a_duplicate_shares_the_figures_but_not_the_evaluated_trial_s_own_fields() -> None:
    rec = TrialRecord.from_attrs(OLD_ATTRS | {"pruner_state": {"r": 1}, "sweep_point": {"kind": "uniform"}})
    shared = rec.shared()
    assert (shared.kind, shared.worker, shared.channels_key, shared.stage_seconds, shared.pruner_state, shared.sweep_point) == (None,) * 6
    assert shared.metric == rec.metric and shared.timing == rec.timing and shared.version == RECORD_VERSION


def test_writes_in_pieces_build_one_record_on_a_real_trial() -> None:
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    write(trial, TrialRecord(kind="search", worker="w0"))
    write(trial, TrialRecord(metric=0.9, timing=Timing(speedup=1.5, noisy=True)))
    study.tell(trial, [0.9, 1.5])
    rec = read(study.trials[0])
    assert (rec.kind, rec.worker, rec.metric, rec.own_timing.speedup, rec.own_timing.noisy) == ("search", "w0", 0.9, 1.5, True)
    assert study.trials[0].user_attrs[VERSION_ATTR] == RECORD_VERSION
    assert "latency_noisy" in study.trials[0].user_attrs and "noisy" not in study.trials[0].user_attrs


def test_late_figures_win_over_the_trial_s_own() -> None:
    rec = TrialRecord(timings={"h1": {"speedup": 1.0}, "h2": {"speedup": 2.0}})
    late = with_late(rec, {"timings": {"h1": {"speedup": 3.0}}, "confirmed": {"speedup": 4.0}})
    assert late.timings == {"h1": {"speedup": 3.0}, "h2": {"speedup": 2.0}} and late.confirmed == {"speedup": 4.0}
    assert "confirmed" not in late.to_attrs()  # confirmed figures are study attrs, never written on a trial
