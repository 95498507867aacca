"""Time ONNX models with ONNX Runtime, alone or interleaved against a baseline in one process.

Absolute times on a shared host drift with the neighbours' load; a ratio measured side by side does not.
So speedups come from blocks of baseline and candidate runs that alternate in one process (the order
rotates every block), and the speedup is the median of the per-block ratios.  Every attempt runs under
the host timing lock (:mod:`autoprune.latency._lock`).  An attempt whose spread exceeds
``cv_threshold`` is repeated up to ``max_remeasure`` times; the best-settled attempt is kept and flagged
``noisy`` if none settled.  For a speedup the gated spread is the speedup's (the robust spread of the
per-block ratios, :func:`~autoprune.latency._stats.is_noisy`), not either side's own CV.

With ``early_stop`` on, an interleaved attempt ends before its last block once every candidate's ratio
spread is below ``early_stop_fraction * cv_threshold`` (after at least ``early_stop_min_blocks`` blocks,
and only after a full rotation of the block order); it never runs more than ``repeats``.  Off (the
default), every block runs.

The spread cannot see a disturbance that stays on one side for the whole timing (every block ratio is
then off alike); :mod:`autoprune.latency._pool` checks speedups against a base latency pooled over
timings for that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import logging
import math
import os
import pathlib
import time
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime

from autoprune.errors import LatencyError
from autoprune.latency._host import host_fingerprint
from autoprune.latency._lock import timing_lock
from autoprune.latency._providers import device_memory
from autoprune.latency._providers import provider_name
from autoprune.latency._session import GRAPH_OPTIMIZATION
from autoprune.latency._session import open_session
from autoprune.latency._session import random_input
from autoprune.latency._session import resolve_input
from autoprune.latency._settings import LatencySettings
from autoprune.latency._stats import block_medians
from autoprune.latency._stats import block_ratios
from autoprune.latency._stats import is_noisy
from autoprune.latency._stats import robust_spread
from autoprune.latency._stats import summarize

logger = logging.getLogger("autoprune.latency")

SPREAD_KIND = "robust_cv"  # (IQR / 1.349) / median of the per-block ratios; see _stats.robust_spread


@dataclasses.dataclass
class LatencyStats:
    """Latency of one ONNX model, with everything needed to judge and reproduce the number.

    Attributes:
        path: The ONNX file.
        median_ms: Median run time over all timed runs of the kept attempt.
        p90_ms: 90th percentile run time.
        mean_ms: Mean run time.
        mad_ms: Median absolute deviation of run times (unscaled).
        cv: ``std(block medians) / median(block medians)``: the spread that is gated.
        n: Number of timed runs in the kept attempt.
        noisy: True when no attempt reached ``cv <= settings.cv_threshold``.
        attempts: Attempts made (1 + re-measures).
        block_medians_ms: Median of each block of the kept attempt.
        input_shape: Shape of the timed input.
        batch_size: Batch actually timed (``input_shape[0]``).
        threads: Intra-op threads.
        repeats: Timed runs per attempt requested.
        provider: ORT execution provider.
        graph_optimization: ORT graph optimisation level.
        measured_at: UTC time the measurement finished (ISO 8601).
        wall_s: Seconds the whole call took (sessions, warm-up, all attempts, lock waits).
        host: :func:`~autoprune.latency.host_fingerprint` of this host.
        settings: The :class:`LatencySettings` used, as a dict.

    Example:
        >>> # stats = measure("model.onnx", LatencySettings(repeats=100))
        >>> # print(stats.median_ms, stats.cv, stats.noisy)
    """

    path: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    mad_ms: float
    cv: float
    n: int
    noisy: bool
    attempts: int
    block_medians_ms: list[float]
    input_shape: list[int]
    batch_size: int
    threads: int
    repeats: int
    provider: str
    graph_optimization: str
    measured_at: str
    wall_s: float
    host: dict[str, Any]
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict of every field.

        Returns:
            The fields by name.
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SpeedupResult:
    """Speedup of a candidate over a baseline, timed interleaved in one process.

    Attributes:
        candidate_path: The candidate ONNX file.
        base_path: The baseline ONNX file.
        speedup: Median over blocks of ``baseline block median / candidate block median``.
        speedup_spread: Robust CV of the per-block ratios: ``(IQR / 1.349) / median``; the value gated
            against ``cv_threshold``.
        spread_kind: Name of the spread statistic (``"robust_cv"``).
        block_ratios: The per-block ratios of the kept attempt.
        noisy: True when no attempt reached ``speedup_spread <= settings.cv_threshold``.
        attempts: Attempts that included this candidate.
        baseline: Baseline statistics from the kept attempt (its own ``noisy`` gates its own CV).
        candidate: Candidate statistics from the kept attempt.
        input_shape: Shape of the timed input.
        batch_size: Batch actually timed.
        threads: Intra-op threads.
        repeats: Timed runs per side per attempt requested (``settings.repeats``).
        blocks_run: Blocks the kept attempt ran (``settings.blocks`` unless it stopped early).
        repeats_run: Timed runs per side in the kept attempt (``repeats`` unless it stopped early).
        stopped_early: Whether the kept attempt stopped before its last block (``settings.early_stop``).
        measured_at: UTC time the measurement finished.
        wall_s: Seconds the whole call took (shared by all candidates of a ``measure_speedups`` call).
        host: Host fingerprint.
        settings: The settings used, as a dict.
    """

    candidate_path: str
    base_path: str
    speedup: float
    speedup_spread: float
    spread_kind: str
    block_ratios: list[float]
    noisy: bool
    attempts: int
    baseline: LatencyStats
    candidate: LatencyStats
    input_shape: list[int]
    batch_size: int
    threads: int
    repeats: int
    blocks_run: int
    repeats_run: int
    stopped_early: bool
    measured_at: str
    wall_s: float
    host: dict[str, Any]
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict, the two ``LatencyStats`` nested.

        Returns:
            The fields by name.
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Subject:
    """One open session ready to be timed (with its I/O binding when it is timed on a device's memory)."""

    path: pathlib.Path
    session: onnxruntime.InferenceSession
    feed: dict[str, np.ndarray]
    outputs: list[str]
    binding: onnxruntime.IOBinding | None = None

    def run(self) -> None:
        """One inference: from the bound device buffers, or from the host arrays."""
        if self.binding is not None:
            self.session.run_with_iobinding(self.binding)
        else:
            self.session.run(self.outputs, self.feed)


def bind_io(subject: _Subject, device: str, device_id: int = 0) -> _Subject:
    """Keep ``subject``'s input and outputs in ``device`` memory, so its timing excludes host copies.

    Args:
        subject: The session and its host input.
        device: OrtValue device name (``cuda``, ``dml``, or ``cpu``).
        device_id: The device's number.

    Returns:
        The subject, with its binding set.
    """
    binding = subject.session.io_binding()
    for name, array in subject.feed.items():
        binding.bind_ortvalue_input(name, onnxruntime.OrtValue.ortvalue_from_numpy(array, device, device_id))
    for name in subject.outputs:
        binding.bind_output(name, device, device_id)
    subject.binding = binding
    return subject


def uses_binding(settings: LatencySettings) -> bool:
    """Whether inputs and outputs stay in the provider's device memory (a device provider, copies excluded)."""
    return device_memory(settings.provider, settings.provider_options)[0] != "cpu" and not settings.include_copies


def _open(path: str | os.PathLike[str], settings: LatencySettings) -> onnxruntime.InferenceSession:
    """A fresh timing session on the settings' provider."""
    return open_session(path, settings.threads, settings.provider, settings.provider_options)


# The baseline's session, kept per process: every timing of a study compares against the same base file.
_BASELINES: dict[tuple[Any, ...], onnxruntime.InferenceSession] = {}
BASELINE_SESSIONS = 2  # 0: open the baseline afresh for every timing (benchmarks measure what reuse saves)


def baseline_session(path: str | os.PathLike[str], settings: LatencySettings) -> onnxruntime.InferenceSession:
    """The baseline's session, reused while its file is unchanged (same inode, size and modification time)."""
    file = pathlib.Path(path)
    try:
        st = file.resolve().stat()
    except OSError:
        return _open(path, settings)  # open_session says what is wrong with the path
    if BASELINE_SESSIONS <= 0:
        return _open(path, settings)
    options = tuple(sorted(settings.provider_options.items()))
    key = (str(file.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, settings.threads, settings.provider, options)
    session = _BASELINES.get(key)
    if session is None:
        session = _open(path, settings)
        if len(_BASELINES) >= BASELINE_SESSIONS:
            _BASELINES.pop(next(iter(_BASELINES)))
        _BASELINES[key] = session
    return session


def _open_subjects(
    paths: Sequence[str | os.PathLike[str]],
    settings: LatencySettings,
    input_shape: Sequence[int] | None,
) -> tuple[list[_Subject], tuple[int, ...]]:
    """Open every model, check they take the same input, and build one shared random input.

    Args:
        paths: ONNX files; the first one is the reference for shape messages (the baseline).
        settings: Timing settings.
        input_shape: Explicitly requested shape, or ``None``.

    Returns:
        The subjects and the common input shape.

    Raises:
        LatencyError: A file cannot be opened or the input shapes or types differ.
    """
    opened = []
    for i, path in enumerate(paths):
        session = baseline_session(path, settings) if i == 0 else _open(path, settings)
        name, shape, dtype = resolve_input(session, path, settings.batch_size, input_shape)
        opened.append((pathlib.Path(path), session, name, shape, dtype))
    ref_path, _, _, ref_shape, ref_dtype = opened[0]
    for path, _, _, shape, dtype in opened[1:]:
        if shape != ref_shape:
            raise LatencyError(
                f"input shape mismatch: {path} takes {shape} but the baseline {ref_path} takes {ref_shape}; "
                "export both models with the same input shape"
            )
        if dtype is not ref_dtype:
            raise LatencyError(
                f"input type mismatch: {path} takes {np.dtype(dtype)} but the baseline {ref_path} takes "
                f"{np.dtype(ref_dtype)}; export both models with the same input type"
            )
    if ref_shape and ref_shape[0] != settings.batch_size:
        logger.info("%s has a fixed batch of %d; timing that instead of batch_size=%d", ref_path, ref_shape[0],
                    settings.batch_size)
    data = random_input(ref_shape, ref_dtype)
    subjects = [
        _Subject(path, session, {name: data}, [o.name for o in session.get_outputs()])
        for path, session, name, _, _ in opened
    ]
    if uses_binding(settings):
        device, device_id = device_memory(settings.provider, settings.provider_options)
        subjects = [bind_io(s, device, device_id) for s in subjects]
    return subjects, ref_shape


class _Ceiling:
    """What is left of ``settings.max_seconds`` for one timing call; it runs down only while the lock is held.

    Waiting for the host lock does not count (another study's timing is not this one's fault); warm-up and
    timed runs of every attempt do.
    """

    def __init__(self, settings: LatencySettings, path: str | os.PathLike[str]) -> None:
        self.settings = settings
        self.path = path
        self.left = float(settings.max_seconds)
        self.deadline = math.inf

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Count the block against the ceiling."""
        self.deadline = time.perf_counter() + self.left
        try:
            yield
        finally:
            self.left = max(0.0, self.deadline - time.perf_counter())
            self.deadline = math.inf

    def reached(self) -> LatencyError:
        """The error that ends a timing at the ceiling: the key, the settings that made it long, the fix."""
        s = self.settings
        return LatencyError(
            f"timing {self.path} stopped at latency.max_seconds ({s.max_seconds:g} s) with latency.repeats {s.repeats}, "
            f"latency.warmup {s.warmup}, latency.max_remeasure {s.max_remeasure}; lower latency.repeats (or warmup, "
            "max_remeasure), or raise latency.max_seconds if this model really needs that long"
        )


def _time_block(subject: _Subject, runs: int, ceiling: _Ceiling) -> list[float]:
    """Time ``runs`` consecutive runs of one session.

    Args:
        subject: The session and its input.
        runs: Number of runs.
        ceiling: Raises its :class:`LatencyError` once a run would start past the deadline.

    Returns:
        Run times in milliseconds.
    """
    clock = time.perf_counter
    times: list[float] = []
    deadline = ceiling.deadline
    # run_with_iobinding waits for the device, so the clock sees the whole inference.
    args: tuple[Any, ...]
    if subject.binding is not None:
        run, args = subject.session.run_with_iobinding, (subject.binding,)
    else:
        run, args = subject.session.run, (subject.outputs, subject.feed)
    for _ in range(runs):
        start = clock()
        if start > deadline:
            raise ceiling.reached()
        run(*args)
        times.append((clock() - start) * 1000.0)
    return times


def _settled_early(times: Sequence[Sequence[Sequence[float]]], settings: LatencySettings) -> bool:
    """Whether an interleaved attempt may stop after the blocks it has run (``settings.early_stop``).

    It may once it has run at least ``early_stop_min_blocks`` blocks, a whole number of rotations of the
    block order (every subject has gone first equally often, so an order effect cancels as in a full
    attempt), and every candidate's ratio spread is below ``early_stop_fraction * cv_threshold``.  A
    spread that is not a number never stops it.

    Args:
        times: ``times[subject][block]`` so far; subject 0 is the base.
        settings: Timing settings.

    Returns:
        True when the attempt can end here.
    """
    done = len(times[0])
    if done < settings.early_stop_min_blocks or done % len(times):
        return False
    limit = settings.early_stop_fraction * settings.cv_threshold
    base = block_medians(times[0])
    return all(robust_spread(block_ratios(base, block_medians(side))) < limit for side in times[1:])


def _attempt(subjects: Sequence[_Subject], settings: LatencySettings, ceiling: _Ceiling) -> list[list[list[float]]]:
    """One timed attempt: warm up every session, then time rotating blocks, all under the timing lock.

    In block ``b`` the subjects run in the order rotated by ``b``, so with two subjects each goes first
    every other block and a load drift cannot favour one side.

    Args:
        subjects: Sessions to time; with more than one, the first is the base the others are compared to.
        settings: Timing settings.  With ``early_stop`` on and candidates to compare, the attempt ends
            after the first block at which :func:`_settled_early` holds; otherwise (a single model, or
            the option off: the default) every block of ``settings.block_sizes`` runs.
        ceiling: What is left of ``settings.max_seconds``; past it :class:`LatencyError`, and the lock is
            released on the way out (as on any exception: :func:`timing_lock` releases in a ``finally``).

    Returns:
        ``times[subject][block]`` = run times (ms).
    """
    times: list[list[list[float]]] = [[] for _ in subjects]
    order = list(range(len(subjects)))
    stop_early = settings.early_stop and len(subjects) > 1
    gc_was_enabled = gc.isenabled()
    with timing_lock(settings), ceiling.running():
        # Collector pauses would land in random runs; timeit disables it for the same reason.
        gc.disable()
        try:
            for subject in subjects:
                _time_block(subject, settings.warmup, ceiling)  # warm-up: times thrown away
            for b, runs in enumerate(settings.block_sizes):
                shift = b % len(order)
                for index in order[shift:] + order[:shift]:
                    times[index].append(_time_block(subjects[index], runs, ceiling))
                if stop_early and _settled_early(times, settings):
                    break
        finally:
            if gc_was_enabled:
                gc.enable()
    return times


def _now() -> str:
    """Current UTC time, ISO 8601.

    Returns:
        The timestamp.
    """
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _stats(
    path: pathlib.Path,
    blocks_ms: list[list[float]],
    attempts: int,
    shape: tuple[int, ...],
    settings: LatencySettings,
    wall_s: float,
) -> LatencyStats:
    """Build :class:`LatencyStats` from one attempt's blocks.

    Args:
        path: The model file.
        blocks_ms: Run times per block.
        attempts: Attempts made.
        shape: Timed input shape.
        settings: Settings used.
        wall_s: Seconds the call took.

    Returns:
        The statistics.
    """
    summary = summarize(blocks_ms)
    return LatencyStats(
        path=str(path),
        median_ms=float(summary["median_ms"]),
        p90_ms=float(summary["p90_ms"]),
        mean_ms=float(summary["mean_ms"]),
        mad_ms=float(summary["mad_ms"]),
        cv=float(summary["cv"]),
        n=int(summary["n"]),
        noisy=is_noisy(float(summary["cv"]), settings.cv_threshold),
        attempts=attempts,
        block_medians_ms=list(summary["block_medians_ms"]),
        input_shape=list(shape),
        batch_size=int(shape[0]) if shape else 1,
        threads=settings.threads,
        repeats=settings.repeats,
        provider=provider_name(settings.provider),
        graph_optimization=GRAPH_OPTIMIZATION.name,
        measured_at=_now(),
        wall_s=wall_s,
        host=host_fingerprint(settings.provider, settings.provider_options),
        settings=settings.as_dict(),
    )


def measure(
    onnx_path: str | os.PathLike[str],
    settings: LatencySettings | None = None,
    input_shape: Sequence[int] | None = None,
) -> LatencyStats:
    """Time one ONNX model on the settings' execution provider (the CPU by default).

    Args:
        onnx_path: The ``.onnx`` file.
        settings: Timing settings (defaults: batch 8, 1 thread, 200 runs in 10 blocks).
        input_shape: Time this exact input shape instead of the model's (batch replaced) shape.

    Returns:
        The statistics of the best-settled attempt.

    Raises:
        LatencyError: The file cannot be loaded or timed.

    Example:
        >>> # stats = measure("model.onnx", LatencySettings(threads=1, batch_size=8))
        >>> # stats.median_ms, stats.cv, stats.noisy
    """
    settings = settings or LatencySettings()
    start = time.perf_counter()
    subjects, shape = _open_subjects([onnx_path], settings, input_shape)
    best: list[list[float]] | None = None
    best_cv = float("inf")
    attempts = 0
    ceiling = _Ceiling(settings, onnx_path)
    for _ in range(settings.max_remeasure + 1):
        attempts += 1
        blocks = _attempt(subjects, settings, ceiling)[0]
        cv = float(summarize(blocks)["cv"])
        if best is None or cv < best_cv:
            best, best_cv = blocks, cv
        if best_cv <= settings.cv_threshold:
            break
        logger.info("%s: block CV %.3f > %.3f, re-measuring", onnx_path, cv, settings.cv_threshold)
    assert best is not None
    return _stats(subjects[0].path, best, attempts, shape, settings, time.perf_counter() - start)


def measure_speedups(
    candidate_paths: Sequence[str | os.PathLike[str]],
    base_path: str | os.PathLike[str],
    settings: LatencySettings | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[SpeedupResult]:
    """Time several candidates against one baseline, all interleaved in each block, in this process.

    Re-measures only the candidates whose ratio spread is still above ``cv_threshold`` (together with
    the baseline), up to ``max_remeasure`` times, and keeps each candidate's best-settled attempt.

    Args:
        candidate_paths: Candidate ONNX files.
        base_path: Baseline ONNX file.
        settings: Timing settings.
        input_shape: Time this exact input shape; every model must accept it.

    Returns:
        One :class:`SpeedupResult` per candidate, in order.

    Raises:
        LatencyError: A file cannot be loaded or the models take different input shapes.

    Example:
        >>> # results = measure_speedups(["a.onnx", "b.onnx"], "base.onnx")
        >>> # [r.speedup for r in results]
    """
    settings = settings or LatencySettings()
    if not candidate_paths:
        return []
    start = time.perf_counter()
    subjects, shape = _open_subjects([base_path, *candidate_paths], settings, input_shape)
    base, candidates = subjects[0], subjects[1:]
    best, attempts = _best_attempts(base, candidates, settings)
    wall = time.perf_counter() - start
    return [
        _speedup_result(subject, base, best[index], attempts[index], shape, settings, wall)
        for index, subject in enumerate(candidates)
    ]


_Best = tuple[float, list[float], list[list[float]], list[list[float]]]


def _best_attempts(base: _Subject, candidates: Sequence[_Subject], settings: LatencySettings) -> tuple[dict[int, _Best], list[int]]:
    """Time the candidates interleaved with the base, re-measuring the unsettled ones (with the base).

    Returns:
        Per candidate index, its best-settled attempt ``(spread, block ratios, base blocks, candidate
        blocks)``, and the attempts each candidate took part in.
    """
    best: dict[int, _Best] = {}
    attempts = [0] * len(candidates)
    pending = list(range(len(candidates)))
    ceiling = _Ceiling(settings, candidates[0].path if len(candidates) == 1 else f"of {len(candidates)} candidates against {base.path}")
    for _ in range(settings.max_remeasure + 1):
        times = _attempt([base] + [candidates[i] for i in pending], settings, ceiling)
        base_medians = summarize(times[0])["block_medians_ms"]
        for slot, index in enumerate(pending, start=1):
            attempts[index] += 1
            ratios = block_ratios(base_medians, summarize(times[slot])["block_medians_ms"])
            spread = robust_spread(ratios)
            if index not in best or spread < best[index][0] or math.isnan(best[index][0]):
                best[index] = (spread, ratios, times[0], times[slot])
        pending = [i for i in pending if is_noisy(best[i][0], settings.cv_threshold)]
        if not pending:
            break
        logger.info("%d candidate(s) above speedup spread %.3f, re-measuring", len(pending), settings.cv_threshold)
    return best, attempts


def _speedup_result(
    subject: _Subject,
    base: _Subject,
    best: _Best,
    attempts: int,
    shape: tuple[int, ...],
    settings: LatencySettings,
    wall: float,
) -> SpeedupResult:
    """The :class:`SpeedupResult` of one candidate's best-settled attempt."""
    spread, ratios, base_blocks, cand_blocks = best
    return SpeedupResult(
        candidate_path=str(subject.path),
        base_path=str(base.path),
        speedup=float(np.median(ratios)),
        speedup_spread=spread,
        spread_kind=SPREAD_KIND,
        block_ratios=ratios,
        noisy=is_noisy(spread, settings.cv_threshold),
        attempts=attempts,
        baseline=_stats(base.path, base_blocks, attempts, shape, settings, wall),
        candidate=_stats(subject.path, cand_blocks, attempts, shape, settings, wall),
        input_shape=list(shape),
        batch_size=int(shape[0]) if shape else 1,
        threads=settings.threads,
        repeats=settings.repeats,
        blocks_run=len(ratios),
        repeats_run=sum(len(block) for block in cand_blocks),
        stopped_early=len(ratios) < settings.blocks,
        measured_at=_now(),
        wall_s=wall,
        host=host_fingerprint(settings.provider, settings.provider_options),
        settings=settings.as_dict(),
    )


def measure_speedup(
    candidate_path: str | os.PathLike[str],
    base_path: str | os.PathLike[str],
    settings: LatencySettings | None = None,
    input_shape: Sequence[int] | None = None,
) -> SpeedupResult:
    """Time a candidate against a baseline, interleaved in blocks in this process.

    Args:
        candidate_path: Candidate ONNX file.
        base_path: Baseline ONNX file.
        settings: Timing settings.
        input_shape: Time this exact input shape; both models must accept it.

    Returns:
        The speedup (``> 1`` means the candidate is faster) with its spread and both sides' statistics.

    Raises:
        LatencyError: A file cannot be loaded or the two models take different input shapes.

    Example:
        >>> # r = measure_speedup("pruned.onnx", "base.onnx", LatencySettings(repeats=200))
        >>> # r.speedup, r.speedup_spread, r.noisy
    """
    return measure_speedups([candidate_path], base_path, settings, input_shape)[0]
