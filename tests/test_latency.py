"""Tests of autoprune.latency: export, timing, interleaved speedups, host lock, fingerprint, cache, CLI.

Everything runs real torch and real ONNX Runtime on small CNNs (16x16 inputs).  Timing settings are kept
small so the file runs in well under a minute; timing targets live in benchmarks/.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import HANG_GUARD_S
from torch import nn

from autoprune.errors import LatencyError
from autoprune.latency import BaseLatencyPool
from autoprune.latency import LatencyCache
from autoprune.latency import LatencySettings
from autoprune.latency import SpeedupResult
from autoprune.latency import compare_outputs
from autoprune.latency import cpu_round_to
from autoprune.latency import export_onnx
from autoprune.latency import host_fingerprint
from autoprune.latency import is_noisy
from autoprune.latency import measure
from autoprune.latency import measure_checked_speedup
from autoprune.latency import measure_speedup
from autoprune.latency import measure_speedups
from autoprune.latency import pooled_verdict
from autoprune.latency import timing_lock
from autoprune.latency import training_pids
from autoprune.latency import training_section
from autoprune.latency._stats import block_cv
from autoprune.latency._stats import robust_spread
from autoprune.latency._stats import summarize

SIDE = 16


def _cnn(widths: list[int], in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A plain conv+BN+ReLU stack with a linear head."""
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    torch.manual_seed(0)
    model = nn.Sequential(*layers)
    # Non-trivial BN statistics, so a wrong eval/train mode in the export shows in the outputs.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def _fast(tmp_path: pathlib.Path, **changes: object) -> LatencySettings:
    """Small timing settings for tests, with a private lock folder."""
    base = dict(repeats=40, blocks=4, warmup=3, max_remeasure=0, cv_threshold=10.0, lock_dir=str(tmp_path / "locks"))
    base.update(changes)
    return LatencySettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Exported ONNX files shared by the timing tests."""
    folder = tmp_path_factory.mktemp("onnx")
    x = torch.randn(2, 1, SIDE, SIDE)
    out = {
        "small": export_onnx(_cnn([8, 16]), x, folder / "small.onnx"),
        "base": export_onnx(_cnn([64, 128, 128]), x, folder / "base.onnx"),
        "half": export_onnx(_cnn([32, 64, 64]), x, folder / "half.onnx"),
        "wide_input": export_onnx(_cnn([8, 16]), torch.randn(2, 1, 20, 20), folder / "wide_input.onnx"),
    }
    garbage = folder / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model\x00\x01")
    out["garbage"] = garbage
    return out


# ----------------------------------------------------------------------------------------- export


def test_export_passes_checker_and_matches_torch(tmp_path: pathlib.Path) -> None:
    model = _cnn([8, 16, 16])
    x = torch.randn(4, 1, SIDE, SIDE)
    path = export_onnx(model, x, tmp_path / "sub" / "m.onnx")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["output"]
    assert compare_outputs(model, path, x, rtol=1e-3, atol=1e-4) < 1e-4


def test_export_restores_each_module_mode(tmp_path: pathlib.Path) -> None:
    model = _cnn([8, 16])
    model.train()
    model[1].eval()  # a frozen BN inside a training model must stay frozen
    export_onnx(model, torch.randn(2, 1, SIDE, SIDE), tmp_path / "m.onnx")
    assert model.training and model[0].training
    assert not model[1].training


def test_export_of_model_output_with_logits(tmp_path: pathlib.Path) -> None:
    class Output:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    class HFLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _cnn([8])

        def forward(self, x: torch.Tensor) -> Output:
            return Output(self.body(x))

    model = HFLike()
    x = torch.randn(2, 1, SIDE, SIDE)
    path = export_onnx(model, x, tmp_path / "hf.onnx")
    assert compare_outputs(model, path, x) < 1e-4


def test_compare_outputs_raises_when_model_changed(tmp_path: pathlib.Path) -> None:
    model = _cnn([8, 16])
    x = torch.randn(2, 1, SIDE, SIDE)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    with torch.no_grad():
        model[-1].bias.add_(1.0)
    with pytest.raises(LatencyError, match="m.onnx"):
        compare_outputs(model, path, x)


# ---------------------------------------------------------------------------------------- settings


def test_settings_validate_and_split_repeats() -> None:
    settings = LatencySettings(repeats=23, blocks=5)
    assert settings.block_sizes == [5, 5, 5, 4, 4]
    assert sum(settings.block_sizes) == 23
    assert json.loads(json.dumps(settings.as_dict()))["repeats"] == 23
    with pytest.raises(LatencyError, match="repeats"):
        LatencySettings(repeats=3, blocks=10)
    with pytest.raises(LatencyError, match="threads"):
        LatencySettings(threads=0)


def test_pure_statistics() -> None:
    assert block_cv([2.0, 2.0, 2.0]) == 0.0
    assert block_cv([1.0, 3.0]) == pytest.approx(1.0 / 2.0)
    # One wild block moves the standard deviation a lot but the robust spread hardly at all.
    ratios = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 5.0]
    assert robust_spread(ratios) < 0.03 < float(np.std(ratios))
    summary = summarize([[1.0, 2.0, 3.0], [2.0, 2.0, 10.0]])
    assert summary["median_ms"] == 2.0
    assert summary["n"] == 6
    assert summary["block_medians_ms"] == [2.0, 2.0]
    assert summary["mad_ms"] == 0.5  # deviations 1, 0, 1, 0, 0, 8
    assert summary["p90_ms"] > summary["median_ms"]


# -------------------------------------------------------------------------------------------- timer


def test_measure_gives_sane_stats(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    settings = _fast(tmp_path, batch_size=4)
    stats = measure(models["small"], settings)
    assert 0 < stats.median_ms <= stats.p90_ms
    assert stats.mean_ms > 0 and stats.mad_ms >= 0 and stats.cv >= 0
    assert stats.n == 40 and len(stats.block_medians_ms) == 4
    assert stats.input_shape == [4, 1, SIDE, SIDE] and stats.batch_size == 4
    assert stats.attempts == 1 and stats.noisy is False
    assert stats.threads == 1 and stats.repeats == 40
    assert stats.graph_optimization == "ORT_ENABLE_ALL"
    assert stats.host["fingerprint_id"] == host_fingerprint()["fingerprint_id"]
    assert stats.settings["batch_size"] == 4
    assert json.loads(json.dumps(stats.as_dict()))["median_ms"] == stats.median_ms


def test_unsettled_measurement_is_flagged_noisy(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    settings = _fast(tmp_path, cv_threshold=0.0, max_remeasure=2, repeats=12, blocks=4)
    stats = measure(models["small"], settings)
    assert stats.noisy is True and stats.attempts == 3
    result = measure_speedup(models["small"], models["small"], settings)
    assert result.noisy is True and result.attempts == 3


def test_model_against_itself_is_about_one(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    result = measure_speedup(models["base"], models["base"], _fast(tmp_path, repeats=60, blocks=6))
    assert 0.8 <= result.speedup <= 1.25
    assert len(result.block_ratios) == 6
    assert result.spread_kind == "robust_cv" and result.speedup_spread >= 0
    assert result.baseline.n == result.candidate.n == 60
    assert result.input_shape == [8, 1, SIDE, SIDE]


def test_half_channels_is_faster(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    # Half the channels in every layer is ~4x fewer MACs; even a busy 2-core host shows > 1.5x.
    result = measure_speedup(models["half"], models["base"], _fast(tmp_path, repeats=60, blocks=6))
    assert result.speedup > 1.5
    assert result.candidate.median_ms < result.baseline.median_ms
    assert json.loads(json.dumps(result.as_dict()))["baseline"]["median_ms"] == result.baseline.median_ms


def test_several_candidates_interleaved(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    results = measure_speedups([models["half"], models["base"]], models["base"], _fast(tmp_path, repeats=48, blocks=6))
    assert [pathlib.Path(r.candidate_path).name for r in results] == ["half.onnx", "base.onnx"]
    assert results[0].speedup > 1.5
    assert 0.8 <= results[1].speedup <= 1.25


def test_the_baseline_session_is_reused_until_its_file_changes(models: dict[str, pathlib.Path], tmp_path: pathlib.Path, monkeypatch) -> None:
    import shutil

    from autoprune.latency import _timer

    opened: list[str] = []
    real_open = _timer.open_session
    monkeypatch.setattr(_timer, "open_session", lambda path, *args: opened.append(pathlib.Path(path).name) or real_open(path, *args))
    monkeypatch.setattr(_timer, "_BASELINES", {})
    base = tmp_path / "base.onnx"
    shutil.copyfile(models["base"], base)
    settings = _fast(tmp_path, repeats=10, blocks=2)
    first = measure_speedup(models["half"], base, settings)
    second = measure_speedup(models["small"], base, settings)
    assert opened == ["base.onnx", "half.onnx", "small.onnx"]  # the base was opened once
    assert first.speedup > 1 and second.speedup > 1
    shutil.copyfile(models["half"], base)  # another model under the same name is opened afresh
    assert measure_speedup(models["half"], base, settings).speedup > 0
    assert opened[-2:] == ["base.onnx", "half.onnx"]  # the changed base file was opened afresh, not the cached session
    monkeypatch.setattr(_timer, "BASELINE_SESSIONS", 0)  # reuse off
    measure_speedup(models["half"], base, settings)
    assert opened[-2:] == ["base.onnx", "half.onnx"] and len(opened) == 7


def test_shape_mismatch_names_both_shapes(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    settings = _fast(tmp_path)
    with pytest.raises(LatencyError) as info:
        measure_speedup(models["wide_input"], models["small"], settings)
    message = str(info.value)
    assert "wide_input.onnx" in message and "(8, 1, 20, 20)" in message and "(8, 1, 16, 16)" in message
    with pytest.raises(LatencyError, match=r"\(8, 1, 32, 32\)"):
        measure(models["small"], settings, input_shape=(8, 1, 32, 32))


def test_missing_and_garbage_files(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatencyError, match="nope.onnx.*does not exist"):
        measure(tmp_path / "nope.onnx", _fast(tmp_path))
    with pytest.raises(LatencyError, match="garbage.onnx.*not a loadable ONNX model"):
        measure(models["garbage"], _fast(tmp_path))


# ------------------------------------------------------------------------------ pooled base check


def test_noisy_flag_is_the_spread_against_the_threshold() -> None:
    assert is_noisy(0.209, 0.05) and not is_noisy(0.05, 0.05) and not is_noisy(0.0, 0.0)
    # a spread that could not be computed never passes as settled
    assert is_noisy(float("nan"), 0.05) and is_noisy(float("inf"), 0.05)


def test_noisy_flag_follows_the_speedup_spread_not_each_side(
    models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    # Whatever the host does, the flag is exactly "the kept speedup spread is above the threshold".
    for threshold in (0.0, 10.0):
        result = measure_speedup(models["half"], models["base"], _fast(tmp_path, cv_threshold=threshold))
        assert result.noisy is is_noisy(result.speedup_spread, threshold)
        assert result.speedup_spread == robust_spread(result.block_ratios)


# ------------------------------------------------------------------------------ early stop (opt-in)


def test_early_stop_settings_are_validated_and_off_by_default() -> None:
    assert LatencySettings().early_stop is False
    LatencySettings(repeats=30, blocks=3)  # off, a minimum above the blocks is never consulted: no error
    bad = {
        r"early_stop_min_blocks \(12\) must not exceed blocks \(10\)": dict(early_stop=True, early_stop_min_blocks=12, blocks=10),
        "early_stop_min_blocks must be an integer >= 2": dict(early_stop_min_blocks=1),
        r"early_stop_fraction must be a number in \(0, 1\]": dict(early_stop_fraction=0.0),
        "early_stop_fraction must be a number": dict(early_stop_fraction=1.5),
        "early_stop must be true or false": dict(early_stop="yes"),
    }
    for words, changes in bad.items():
        with pytest.raises(LatencyError, match=words):
            LatencySettings(**changes)  # type: ignore[arg-type]


def _extent_is_consistent(result: SpeedupResult, settings: LatencySettings) -> None:
    """What every timing guarantees about how much of it ran, stopped early or not."""
    assert 1 <= result.blocks_run <= settings.blocks and result.repeats_run <= settings.repeats
    assert result.repeats_run == sum(settings.block_sizes[: result.blocks_run])
    assert result.baseline.n == result.candidate.n == result.repeats_run
    assert len(result.block_ratios) == len(result.candidate.block_medians_ms) == result.blocks_run
    assert result.stopped_early is (result.blocks_run < settings.blocks)
    assert result.repeats == settings.repeats
    assert json.loads(json.dumps(result.as_dict()))["blocks_run"] == result.blocks_run


def test_without_early_stop_every_configured_run_is_timed(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    # A threshold no spread can miss: with the option off the timing still runs every block.
    settings = _fast(tmp_path, repeats=48, blocks=8, cv_threshold=1000.0)
    result = measure_speedup(models["half"], models["base"], settings)
    _extent_is_consistent(result, settings)
    assert (result.blocks_run, result.repeats_run, result.stopped_early) == (8, 48, False)


def test_early_stop_ends_a_settled_timing_after_the_minimum_blocks_and_a_whole_rotation(
    models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    # The limit (0.5 x 1000) is far above any spread, so the first allowed block ends the timing.
    settings = _fast(tmp_path, repeats=48, blocks=12, cv_threshold=1000.0, early_stop=True, early_stop_min_blocks=4)
    result = measure_speedup(models["half"], models["base"], settings)
    _extent_is_consistent(result, settings)
    assert result.stopped_early and settings.early_stop_min_blocks <= result.blocks_run < settings.blocks
    assert result.blocks_run % 2 == 0  # base and candidate went first equally often
    assert result.speedup_spread < settings.early_stop_fraction * settings.cv_threshold and not result.noisy
    assert result.speedup > 1.5  # the shorter timing still sees the half-width model's speed
    # With two candidates a rotation is three blocks; each candidate reports the same extent.
    several = measure_speedups([models["half"], models["base"]], models["base"], settings)
    for r in several:
        _extent_is_consistent(r, settings)
        assert r.stopped_early and r.blocks_run % 3 == 0 and r.blocks_run >= settings.early_stop_min_blocks
    assert len({r.blocks_run for r in several}) == 1
    assert measure(models["small"], settings).n == settings.repeats  # a single model has no ratio: every block runs


def test_early_stop_runs_every_block_while_the_spread_stays_high(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    # A threshold of 0 leaves no spread below its fraction: the full count runs, flagged as not settled.
    settings = _fast(tmp_path, repeats=48, blocks=8, cv_threshold=0.0, early_stop=True, early_stop_min_blocks=2)
    result = measure_speedup(models["half"], models["base"], settings)
    _extent_is_consistent(result, settings)
    assert (result.blocks_run, result.repeats_run, result.stopped_early) == (8, 48, False)
    assert result.noisy is True


def test_pool_is_a_running_median_over_a_window() -> None:
    pool = BaseLatencyPool(window=3, min_samples=2)
    assert pool.estimate() is None and pool.missing == 2
    pool.add(6.3)
    pool.add(float("nan"))  # ignored, like non-positive values
    pool.add(0.0)
    assert pool.estimate() is None and len(pool) == 1
    pool.add(12.96)  # one disturbed base timing moves a median of two...
    assert pool.estimate() == pytest.approx((6.3 + 12.96) / 2)
    pool.add(6.2)  # ...but not a median of three
    assert pool.estimate() == 6.3
    for ms in (8.0, 8.1, 8.2):  # a lasting change of the host's load is followed within the window
        pool.add(ms)
    assert pool.estimate() == 8.1 and len(pool) == 3
    with pytest.raises(ValueError, match="min_samples"):
        BaseLatencyPool(window=2, min_samples=3)


def test_pooled_verdict_on_the_issues_numbers() -> None:
    # 12.96 ms base instead of ~6.3: the interleaved 5.67x disagrees with 6.3 / 2.13 = 2.96x.
    v = pooled_verdict(5.67, 0.01, candidate_ms=2.13, pooled_base_ms=6.3)
    assert v.agrees is False and v.speedup == pytest.approx(6.3 / 2.13) and v.speedup_interleaved == 5.67
    # a clean timing agrees and keeps the interleaved figure (the precise one)
    v = pooled_verdict(3.0, 0.01, candidate_ms=2.0, pooled_base_ms=6.3)
    assert v.agrees is True and v.speedup == 3.0
    # nothing to check against yet
    v = pooled_verdict(5.67, 0.01, candidate_ms=2.13, pooled_base_ms=None)
    assert v.agrees is None and v.speedup == 5.67 and v.speedup_pooled is None
    # a wide spread widens what counts as agreement
    assert pooled_verdict(3.9, 0.0, 2.0, 6.3).agrees is False
    assert pooled_verdict(3.9, 0.15, 2.0, 6.3).agrees is True


def test_pooled_verdict_never_reports_above_the_pooled_reference_beyond_the_limit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        interleaved, spread = float(rng.uniform(0.2, 8.0)), float(rng.uniform(0.0, 0.3))
        candidate_ms, pooled_ms = float(rng.uniform(0.5, 10.0)), float(rng.uniform(0.5, 20.0))
        v = pooled_verdict(interleaved, spread, candidate_ms, pooled_ms)
        assert v.speedup <= interleaved
        assert v.speedup <= np.exp(v.limit) * pooled_ms / candidate_ms * (1 + 1e-12)
        assert (v.speedup == interleaved) or v.agrees is False


def _fake_timing(base_ms: float, candidate_ms: float, spread: float = 0.01) -> SimpleNamespace:
    """What measure_checked_speedup reads of a SpeedupResult, with chosen numbers."""
    return SimpleNamespace(speedup=base_ms / candidate_ms, speedup_spread=spread, noisy=spread > 0.05,
                           baseline=SimpleNamespace(median_ms=base_ms), candidate=SimpleNamespace(median_ms=candidate_ms))


@pytest.mark.parametrize(("second_base_ms", "noisy", "speedup"), [(6.3, False, 6.3 / 2.0), (12.96, True, 6.3 / 2.0)])
def test_checked_speedup_remeasures_a_disturbed_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, second_base_ms: float, noisy: bool, speedup: float
) -> None:
    from autoprune.latency import _pool

    alone = iter([6.3, 6.2, 6.4])
    interleaved = iter([_fake_timing(12.96, 2.0), _fake_timing(second_base_ms, 2.0)])
    monkeypatch.setattr(_pool, "measure", lambda *a, **k: SimpleNamespace(median_ms=next(alone)))
    monkeypatch.setattr(_pool, "measure_speedup", lambda *a, **k: next(interleaved))
    pool = BaseLatencyPool()
    checked = measure_checked_speedup("c.onnx", "b.onnx", _fast(tmp_path), pool)
    assert checked.seeded == 3 and checked.timings == 2 and checked.pooled_base_ms == 6.3
    assert checked.noisy is noisy and checked.speedup == pytest.approx(speedup)
    assert len(pool) == 5 and pool.estimate() <= 6.4  # both base timings pooled; the median barely moves
    # the pool answers now: the next candidate is not seeded again, and a clean timing is taken once
    monkeypatch.setattr(_pool, "measure_speedup", lambda *a, **k: _fake_timing(6.3, 3.0))
    again = measure_checked_speedup("c.onnx", "b.onnx", _fast(tmp_path), pool)
    assert (again.seeded, again.timings, again.noisy, again.speedup) == (0, 1, False, 2.1)


@pytest.mark.parametrize("disturbed", ["first", "every"])
def test_one_disturbed_base_timing_cannot_inflate_the_speedup(
    models: dict[str, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, disturbed: str
) -> None:
    """A base timed twice too slow, injected into real ONNX Runtime timings, cannot inflate the speedup.

    Whatever the host does, the reported speedup never exceeds the candidate's own latency over the base
    latency pooled from undisturbed timings by more than the tolerance, a timing that disagrees with that
    reference is taken again, and a kept timing that still disagrees is flagged noisy.
    """
    from autoprune.latency import _pool
    from autoprune.latency import _timer

    real_attempt, real_speedup = _timer._attempt, _pool.measure_speedup
    timed: list[object] = []

    def attempt(subjects, settings, ceiling):  # type: ignore[no-untyped-def]
        times = real_attempt(subjects, settings, ceiling)
        if len(subjects) > 1 and (disturbed == "every" or not timed):  # interleaved; the base is subject 0
            times[0] = [[2.0 * t for t in block] for block in times[0]]
        return times

    def speedup(*args, **kwargs):  # type: ignore[no-untyped-def]
        timed.append(real_speedup(*args, **kwargs))
        return timed[-1]

    monkeypatch.setattr(_timer, "_attempt", attempt)
    monkeypatch.setattr(_pool, "measure_speedup", speedup)
    pool = BaseLatencyPool()
    # cv_threshold 10: the spread flags nothing here, so only the pooled check can.
    checked = measure_checked_speedup(models["half"], models["base"], _fast(tmp_path, cv_threshold=10.0), pool)
    v, pooled = checked.verdict, checked.pooled_base_ms
    # the reference is the median of three base timings made alone (never disturbed here)
    assert checked.seeded == 3 and pooled is not None and len(pool) == 3 + len(timed)
    assert checked.speedup <= v.speedup_interleaved
    assert checked.speedup <= np.exp(v.limit) * v.speedup_pooled * (1 + 1e-12)
    assert checked.noisy is (v.agrees is False)
    # a timing that disagreed with the pooled reference was taken again, once
    verdicts = [pooled_verdict(r.speedup, r.speedup_spread, r.candidate.median_ms, pooled) for r in timed]
    assert len(timed) == (2 if verdicts[0].agrees is False else 1) == checked.timings
    assert v in verdicts and v.disagreement == min(x.disagreement for x in verdicts)


# --------------------------------------------------------------------------------------------- lock

_LOCK_CHILD = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from autoprune.latency import LatencySettings, timing_lock
    lock_dir, ready_dir, name, use_lock = sys.argv[1:5]
    ready = pathlib.Path(ready_dir)
    (ready / name).touch()
    # Both children start their attempt at the same moment, so without a lock they would overlap.
    while len(list(ready.iterdir())) < 2:
        time.sleep(0.002)
    with timing_lock(LatencySettings(lock_dir=lock_dir, lock=use_lock == "1")):
        enter = time.time()
        (ready.parent / f"inside-{name}").touch()
        if use_lock == "1":
            time.sleep(0.6)  # the other one waits at the lock meanwhile
        else:  # the control: stay until the other is inside too, however late a busy host lets it start
            while len(list(ready.parent.glob("inside-*"))) < 2:
                time.sleep(0.002)
        leave = time.time()
    print(json.dumps([enter, leave]))
    """
)


@pytest.mark.parametrize("use_lock", [True, False])
def test_lock_serialises_two_processes(tmp_path: pathlib.Path, use_lock: bool) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCK_CHILD, str(tmp_path / "locks"), str(ready), name, "1" if use_lock else "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    intervals = sorted(json.loads(p.communicate(timeout=HANG_GUARD_S)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    overlap = intervals[1][0] < intervals[0][1]
    # The unlocked run is the control: two sections that do overlap are seen to overlap.
    assert overlap is (not use_lock)


CEILING_S = 2.0
CEILING_TOLERANCE_S = 3.0  # opening the sessions, one run past the deadline, a loaded host
_TAKE_LOCK = textwrap.dedent(
    """
    import sys
    from autoprune.latency import LatencySettings, timing_lock
    with timing_lock(LatencySettings(lock_dir=sys.argv[1]), lock_timeout_s=float(sys.argv[2])):
        print("locked")
    """
)


@pytest.mark.parametrize("what", ["measure", "speedup"])
def test_a_timing_stops_at_its_ceiling_and_frees_the_host_lock(models: dict[str, pathlib.Path], tmp_path: pathlib.Path, what: str) -> None:
    """``repeats`` of 10**12 would time for days, holding the lock every study on the host shares."""
    settings = _fast(tmp_path, repeats=10**12, blocks=10, max_remeasure=3, max_seconds=CEILING_S, lock=True)
    start = time.monotonic()
    with pytest.raises(LatencyError, match=r"latency\.max_seconds \(2 s\).*raise latency\.max_seconds") as info:
        if what == "measure":
            measure(models["small"], settings)
        else:
            measure_speedup(models["half"], models["base"], settings)
    took = time.monotonic() - start
    assert took <= CEILING_S + CEILING_TOLERANCE_S, took
    assert "latency.repeats 1000000000000" in str(info.value)
    # The lock was released on the way out: another process takes it at once (it would give up after 5 s).
    taken = subprocess.run([sys.executable, "-c", _TAKE_LOCK, settings.lock_dir, "5"], capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0 and "locked" in taken.stdout, taken.stderr


def test_the_ceiling_counts_the_timing_not_the_wait_for_the_lock(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    """A timing that waits longer than its ceiling for another study's lock still gets its whole ceiling."""
    settings = _fast(tmp_path, max_seconds=CEILING_S, lock=True)
    holder = threading.Thread(target=lambda: _hold_lock(settings, CEILING_S + 1.0))
    holder.start()
    time.sleep(0.3)
    stats = measure(models["small"], settings)
    holder.join()
    assert stats.n == settings.repeats and stats.wall_s > CEILING_S


def _hold_lock(settings: LatencySettings, seconds: float) -> None:
    with timing_lock(settings):
        time.sleep(seconds)


def test_lock_is_reentrant_in_one_thread(tmp_path: pathlib.Path) -> None:
    settings = LatencySettings(lock_dir=str(tmp_path))
    done = threading.Event()

    def nested() -> None:
        with timing_lock(settings), timing_lock(settings):
            done.set()

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set()
    # A second thread must still be kept out while the first holds the lock.
    order: list[str] = []

    def other_thread() -> None:
        with timing_lock(settings):
            order.append("other")

    with timing_lock(settings):
        other = threading.Thread(target=other_thread, daemon=True)
        other.start()
        time.sleep(0.3)
        order.append("main")
    other.join(timeout=10)
    assert order == ["main", "other"]


# Trains until the test lets it go (the file "<signal>.release") or an exclusive timer asks for the host
# (its marker appears): the order then shows the lock's behaviour, however slowly a busy host runs either.
_TRAIN_CHILD = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from autoprune.latency import training_section
    from autoprune.latency._lock import EXCLUSIVE_FILE
    lock_dir, signal = sys.argv[1:3]
    with training_section(lock_dir):
        pathlib.Path(signal).touch()
        release, exclusive = pathlib.Path(signal + ".release"), pathlib.Path(lock_dir) / EXCLUSIVE_FILE
        while not (release.exists() or exclusive.exists()):
            time.sleep(0.01)
        leave = time.time()
    print(json.dumps(leave))
    """
)

_EXCLUSIVE_CHILD = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from autoprune.latency import LatencySettings, timing_lock
    lock_dir, signal = sys.argv[1:3]
    with timing_lock(LatencySettings(lock_dir=lock_dir, exclusive=True)):
        pathlib.Path(signal).touch()
        time.sleep(1.0)
        leave = time.time()
    print(json.dumps(leave))
    """
)


def _start_and_wait(script: str, tmp_path: pathlib.Path) -> subprocess.Popen[str]:
    """Start a child and wait until it signals that it is inside its section."""
    signal = tmp_path / "inside"
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "locks"), str(signal)],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_GUARD_S
    while not signal.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "child never entered its section"
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("exclusive", [True, False])
def test_exclusive_timing_waits_for_training(tmp_path: pathlib.Path, exclusive: bool) -> None:
    proc = _start_and_wait(_TRAIN_CHILD, tmp_path)
    assert training_pids(tmp_path / "locks") == [proc.pid]
    with timing_lock(LatencySettings(lock_dir=str(tmp_path / "locks"), exclusive=exclusive)):
        entered = time.time()
        (tmp_path / "inside.release").touch()
    left = json.loads(proc.communicate(timeout=HANG_GUARD_S)[0])
    # Exclusive timing starts only after the trainer left; the plain lock does not wait for it.
    assert (entered >= left) is exclusive


def test_training_waits_for_exclusive_timing(tmp_path: pathlib.Path) -> None:
    proc = _start_and_wait(_EXCLUSIVE_CHILD, tmp_path)
    with training_section(tmp_path / "locks"):
        entered = time.time()
    left = json.loads(proc.communicate(timeout=HANG_GUARD_S)[0])
    assert entered >= left


def test_stale_training_marker_is_ignored(tmp_path: pathlib.Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    markers = tmp_path / "locks" / "training"
    markers.mkdir(parents=True)
    (markers / f"{dead.pid}-dead.marker").write_text(f"{dead.pid} 1\n")
    wait_s = 60.0
    start = time.monotonic()
    with timing_lock(LatencySettings(lock_dir=str(tmp_path / "locks"), exclusive=True), exclusive_wait_s=wait_s):
        pass
    assert time.monotonic() - start < wait_s  # a live trainer would have held it up for the whole wait
    assert training_pids(tmp_path / "locks") == []
    assert not list(markers.iterdir())


# ---------------------------------------------------------------------------------------------- host


def test_host_fingerprint_fields_and_round_to() -> None:
    fp = host_fingerprint()
    for key in ("cpu_model", "flags", "logical_cores", "physical_cores", "ort_version", "provider", "hostname",
                "machine", "fingerprint_id"):
        assert key in fp, key
    assert fp["provider"] == "CPUExecutionProvider"
    assert 1 <= fp["physical_cores"] <= fp["logical_cores"]
    assert len(fp["fingerprint_id"]) == 16 and fp == host_fingerprint()
    assert cpu_round_to() == (16 if "avx512f" in fp["flags"] else 8)


# --------------------------------------------------------------------------------------------- cache


def test_cache_round_trip_and_keys(tmp_path: pathlib.Path) -> None:
    cache = LatencyCache(tmp_path / "cache" / "latency.sqlite")
    settings = LatencySettings()
    channels = {"layer1": 16, "layer2": 32}
    key = cache.key(channels, "host-a", settings)
    assert cache.get(key) is None
    cache.put(key, {"speedup": 1.7, "noisy": False})
    assert LatencyCache(tmp_path / "cache" / "latency.sqlite").get(key) == {"speedup": 1.7, "noisy": False}
    assert cache.key(dict(reversed(list(channels.items()))), "host-a", settings) == key
    changed = [
        cache.key({"layer1": 16, "layer2": 24}, "host-a", settings),
        cache.key(channels, "host-b", settings),
        cache.key(channels, "host-a", settings.replace(batch_size=1)),
        cache.key(channels, "host-a", settings.replace(threads=2)),
        cache.key(channels, "host-a", settings, extra="resnet"),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # Precision settings do not change what is being timed.
    assert cache.key(channels, "host-a", settings.replace(repeats=400)) == key


def test_cache_shared_between_processes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latency.sqlite"
    child = textwrap.dedent(
        """
        import sys
        from autoprune.latency import LatencyCache
        cache = LatencyCache(sys.argv[1])
        for i in range(50):
            cache.put(f"{sys.argv[2]}-{i}", {"i": i})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", child, str(path), tag]) for tag in ("a", "b")]
    assert all(p.wait(timeout=HANG_GUARD_S) == 0 for p in procs)
    cache = LatencyCache(path)
    assert len(cache) == 100 and cache.get("b-49") == {"i": 49}


# ----------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str], stdout_only: bool = False) -> tuple[int, str]:
    """Run ``autoprune`` in-process; return the exit code and stdout+stderr (or stdout alone, where a JSON
    document is expected: a re-measuring note on a busy host goes to stderr and is not part of it)."""
    from autoprune.cli import main

    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout if stdout_only else result.output


def test_cli_json_with_baseline(models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    code, out = _cli(["latency", str(models["half"]), "--baseline", str(models["base"]), "--repeats", "30",
                      "--json", "--no-lock"], stdout_only=True)
    assert code == 0, out
    report = json.loads(out)
    for key in ("median_ms", "p90_ms", "cv", "noisy", "host", "baseline_median_ms", "speedup", "speedup_spread"):
        assert key in report, key
    assert report["speedup"] > 1.0


def test_cli_text_without_baseline(models: dict[str, pathlib.Path]) -> None:
    code, out = _cli(["latency", str(models["small"]), "--repeats", "20", "--batch-size", "2", "--no-lock"])
    assert code == 0, out
    assert "median" in out and "MAD" in out and "noisy" in out and "host" in out
    assert "(2, 1, 16, 16)" in out
    noisy = next(line for line in out.splitlines() if line.startswith("noisy"))
    assert "CV" in noisy and "threshold" in noisy  # the verdict names the figure it judges


def test_cli_noisy_line_judges_the_speedup_spread_with_a_baseline(models: dict[str, pathlib.Path]) -> None:
    code, out = _cli(["latency", str(models["half"]), "--baseline", str(models["base"]), "--repeats", "30", "--no-lock"])
    assert code == 0, out
    noisy = next(line for line in out.splitlines() if line.startswith("noisy"))
    verdict = noisy.split()[1]
    assert "speedup spread" in noisy and ("above" in noisy) == (verdict == "yes") and ("within" in noisy) == (verdict == "no"), noisy


@pytest.mark.parametrize(
    ("case", "named"),
    [("missing", "missing.onnx"), ("garbage", "garbage.onnx"), ("mismatch", "wide_input.onnx")],
)
def test_cli_errors_exit_2_without_traceback(
    models: dict[str, pathlib.Path], tmp_path: pathlib.Path, case: str, named: str
) -> None:
    args = {
        "missing": ["latency", str(tmp_path / "missing.onnx")],
        "garbage": ["latency", str(models["garbage"])],
        "mismatch": ["latency", str(models["wide_input"]), "--baseline", str(models["small"])],
    }[case]
    code, out = _cli([*args, "--repeats", "10", "--no-lock"])
    assert code == 2, out
    assert named in out and "Traceback" not in out


def test_cli_error_in_a_real_process(models: dict[str, pathlib.Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from autoprune.cli import main; main()", "latency", str(models["garbage"])],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 2
    assert "garbage.onnx" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
