"""How a latency measurement is taken: one small dataclass shared by the timer, the lock and the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

from autoprune.errors import LatencyError
from autoprune.latency._providers import PROVIDERS


@dataclasses.dataclass(frozen=True)
class LatencySettings:
    """Settings for timing ONNX models with ONNX Runtime (on the CPU unless ``provider`` says otherwise).

    Args:
        batch_size: Batch size timed when the model's batch dimension is symbolic (the deployment batch).
        threads: ``intra_op_num_threads`` of every session; set explicitly because ORT's default grabs
            every physical core and pins threads, which behaves badly next to other workers.
        repeats: Total timed runs per model (per side of a comparison), split evenly into ``blocks``.
        warmup: Untimed runs per model before every timed attempt.
        blocks: Number of blocks the timed runs are split into; the spread of the block medians is the
            coefficient of variation (CV) that is gated, and speedups are computed per block.
        cv_threshold: Largest CV (or speedup spread) accepted as settled.
        max_remeasure: How many extra attempts are made when the first one is not settled.
        lock: Hold the host-wide timing lock around every timed section.
        exclusive: Also wait (bounded) until no other process on the host is in a training section,
            and make new training sections wait while this timing runs.
        lock_dir: Folder of the lock file and training markers; ``None`` uses the host-wide default.
        opset: ONNX opset used when a model is exported for timing.
        provider: Execution provider key (``cpu``, ``cuda``, ``tensorrt``, ``openvino``, ``coreml``,
            ``directml``, ``rocm``); see :mod:`autoprune.latency._providers`.
        provider_options: Options passed to that provider (e.g. ``device_id``, ``trt_fp16_enable``).
        include_copies: On a GPU provider, time the host-to-device and device-to-host copies too; by
            default inputs and outputs stay on the device (I/O binding) and only the model is timed.
        max_seconds: Ceiling on one timing call (every attempt's warm-up and timed runs, counted while the
            host timing lock is held): past it the timing stops with :class:`~autoprune.errors.LatencyError`
            and the lock is released, so a timing that would run for hours cannot stall the host's other studies.
        early_stop: Stop an interleaved speedup timing before all ``blocks`` once the speedup's spread is
            well inside ``cv_threshold`` (off by default: every block runs).  Single-model timings
            (:func:`~autoprune.latency.measure`) always run every block.
        early_stop_min_blocks: Blocks that run before an early stop is considered.
        early_stop_fraction: An attempt stops early once its speedup spread is below this fraction of
            ``cv_threshold`` (checked only after a full rotation of the block order, so every model has
            gone first equally often).

    Example:
        >>> s = LatencySettings(repeats=100, blocks=5)
        >>> s.block_sizes
        [20, 20, 20, 20, 20]
        >>> s.as_dict()["threads"]
        1
    """

    batch_size: int = 8
    threads: int = 1
    repeats: int = 200
    warmup: int = 20
    blocks: int = 10
    cv_threshold: float = 0.05
    max_remeasure: int = 3
    lock: bool = True
    exclusive: bool = False
    lock_dir: str | None = None
    opset: int = 17
    provider: str = "cpu"
    provider_options: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    include_copies: bool = False
    max_seconds: float = 600.0
    early_stop: bool = False
    early_stop_min_blocks: int = 4
    early_stop_fraction: float = 0.5

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "threads": self.threads, "blocks": self.blocks}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise LatencyError(f"LatencySettings.{name} must be an integer >= 1, got {value!r}")
        for name, value in {"warmup": self.warmup, "max_remeasure": self.max_remeasure}.items():
            if not isinstance(value, int) or value < 0:
                raise LatencyError(f"LatencySettings.{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.repeats, int) or self.repeats < self.blocks:
            raise LatencyError(
                f"LatencySettings.repeats must be an integer >= blocks ({self.blocks}), got {self.repeats!r}; "
                "raise repeats or lower blocks"
            )
        if isinstance(self.max_seconds, bool) or not isinstance(self.max_seconds, (int, float)) or not 0 < self.max_seconds < float("inf"):
            raise LatencyError(f"LatencySettings.max_seconds must be a number of seconds > 0, got {self.max_seconds!r}")
        if self.cv_threshold < 0:
            raise LatencyError(f"LatencySettings.cv_threshold must be >= 0, got {self.cv_threshold!r}")
        if self.provider not in PROVIDERS:
            raise LatencyError(f"LatencySettings.provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        self._check_early_stop()
        object.__setattr__(self, "provider_options", dict(self.provider_options))
        if self.lock_dir is not None:
            # Accept pathlib.Path from callers but store a string so the settings stay JSON-friendly.
            object.__setattr__(self, "lock_dir", str(self.lock_dir))

    def _check_early_stop(self) -> None:
        """Refuse early-stop settings that are not numbers of the right kind, or that could never stop early."""
        if not isinstance(self.early_stop, bool):
            raise LatencyError(f"LatencySettings.early_stop must be true or false, got {self.early_stop!r}")
        if isinstance(self.early_stop_min_blocks, bool) or not isinstance(self.early_stop_min_blocks, int) or self.early_stop_min_blocks < 2:
            raise LatencyError(
                f"LatencySettings.early_stop_min_blocks must be an integer >= 2 (a spread needs two blocks), "
                f"got {self.early_stop_min_blocks!r}"
            )
        fraction = self.early_stop_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise LatencyError(f"LatencySettings.early_stop_fraction must be a number in (0, 1], got {fraction!r}")
        if self.early_stop and self.early_stop_min_blocks > self.blocks:
            raise LatencyError(
                f"LatencySettings.early_stop_min_blocks ({self.early_stop_min_blocks}) must not exceed blocks "
                f"({self.blocks}); lower early_stop_min_blocks or raise blocks"
            )

    @property
    def block_sizes(self) -> list[int]:
        """Timed runs in each block: ``repeats`` split as evenly as possible over ``blocks``.

        Returns:
            One run count per block; they sum to ``repeats`` and differ by at most one.
        """
        base, extra = divmod(self.repeats, self.blocks)
        return [base + (1 if i < extra else 0) for i in range(self.blocks)]

    def replace(self, **changes: Any) -> LatencySettings:
        """Return a copy with some fields changed (validated again).

        Args:
            **changes: Field names and their new values.

        Returns:
            The new settings.
        """
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-friendly dict.

        Returns:
            Every field by name.
        """
        return dataclasses.asdict(self)
