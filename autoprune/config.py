"""Study configuration: one YAML file per study, validated once at load time.

Example:
    >>> from autoprune.config import load_config
    >>> cfg = load_config("studies/digits-resnet.yaml")  # doctest: +SKIP
    >>> cfg.search.trials  # doctest: +SKIP
    24

Every problem with a file is reported as one :class:`~autoprune.errors.ConfigError` that names the file,
the key and the fix: an unknown key, a wrong type, a ratio outside [0, 1), a missing file, an unknown
criterion, task or sampler.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Literal
from typing import TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import ValidationInfo
from pydantic import field_validator
from pydantic import model_validator

from autoprune.device import DEVICE_ENV
from autoprune.device import valid_device
from autoprune.errors import ConfigError
from autoprune.models import MODELS
from autoprune.redact import expand_env
from autoprune.redact import redact_url
from autoprune.search.pruner_options import PRUNERS
from autoprune.search.pruner_options import pruner_options_problem
from autoprune.tasks import BUILTIN_TASKS

CRITERIA = ("l1", "l2", "taylor", "hessian", "bn-scale", "fpgm", "lamp", "random")
SAMPLERS = ("tpe", "nsga2", "random", "gp")


# Bounds of the numbers a study may set: wide enough for any real study, narrow enough that a typo (an extra
# zero run, a negative size) is refused at load time instead of hanging a trial or failing deep in a stage.
SEED_MAX = 2**32 - 1  # numpy's seed range, which Optuna's samplers use
MAX_COUNT = 1_000_000  # trials, steps, batches
MAX_BATCH = 65_536
MAX_EPOCHS = 10_000
MAX_THREADS = 1_024
MAX_ROUND_TO = 1_024  # channels come in multiples of at most this; larger makes every group unprunable
MAX_DIM = 65_536  # one side of an input
MAX_INPUT_ELEMENTS = 2**30  # batch x input elements of one timed run (4 GiB of float32)


def _seed() -> Any:
    return Field(0, ge=0, le=SEED_MAX)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


_Model = TypeVar("_Model", bound=BaseModel)


def validated_copy(model: _Model, **changes: Any) -> _Model:
    """A copy of a config section with ``changes``, checked like a file's values (``model_copy`` checks nothing).

    Configs are never changed in place once validated: a changed setting makes a new config.

    Example:
        >>> validated_copy(LatencyConfig(), blocks=5).blocks
        5
        >>> try:
        ...     validated_copy(LatencyConfig(), blocks=500)
        ... except ValueError as exc:
        ...     print("blocks (500) must not exceed repeats (200)" in str(exc))
        True
    """
    return type(model).model_validate({**dict(model), **changes})


def _one_of(value: str, names: Sequence[str], what: str) -> str:
    """``value`` when it is one of ``names``; else the error that lists them."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(names)}")
    return value


def _check_ratio(value: float, what: str = "ratio") -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value}")
    return value


class BaseTrainingConfig(_Section):
    """How the unpruned base model is trained (``autoprune train-base``) or where it is read from."""

    checkpoint: str | None = None  # a plain state_dict; default: <artifact_dir>/base.pt
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.05, gt=0, le=100)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    seed: int = _seed()


class PruningConfig(_Section):
    """Guards and mechanics of the pruning engine."""

    round_to: int | Literal["auto"] = "auto"
    iterative_steps: int = Field(1, ge=1, le=5)
    min_channels: int = Field(8, ge=1, le=MAX_DIM)
    min_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    first_layer_max_ratio: float = 0.5
    importance_batches: int = Field(4, ge=1, le=MAX_COUNT)  # batches for gradient-based criteria (taylor, hessian)

    @field_validator("round_to")
    @classmethod
    def _round_to_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= MAX_ROUND_TO:
            raise ValueError(
                f"round_to must be a positive integer or 'auto', an integer in [1, {MAX_ROUND_TO}] (kept channels are rounded "
                f"to multiples of it; a value above a group's channels leaves nothing to prune), got {value}"
            )
        return value

    @field_validator("first_layer_max_ratio")
    @classmethod
    def _first_ratio(cls, value: float) -> float:
        return _check_ratio(value, "first_layer_max_ratio")


class SearchConfig(_Section):
    """The Optuna search and the baseline sweeps that bound it."""

    trials: int = Field(24, ge=1, le=MAX_COUNT)
    sampler: str = "tpe"
    seed: int | None = _seed()
    # Extra widths searched on each side of the baselines' widths, counted in widths a group can reach (after
    # channel rounding and the guards): each group spans from the narrower to the wider of the best uniform
    # and global baselines' kept channels, plus this many reachable widths below and above (0: only between).
    bounds_margin: int = Field(1, ge=0, le=MAX_DIM)
    sweep_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], max_length=100)
    # Stop a trial early (PRUNED) when its metric after BN recalibration is this far below the base.  Off by
    # default: strongly pruned models often score near chance after BN recalibration and still recover fully.
    hopeless_margin: float | None = None
    heartbeat_interval: int = Field(10, ge=1, le=86_400)
    grace_period: int = Field(30, ge=2, le=7 * 86_400)
    max_retry: int = Field(2, ge=0, le=1_000)
    enqueue_baselines: bool = True
    upload_onnx: bool = False
    # fastest: one objective, the speedup, with the metric drop as a constraint (the fastest model within the
    # budget); pareto: two objectives (metric, speedup), the whole trade-off.
    mode: Literal["fastest", "pareto"] = "fastest"
    # Skip the finetune of a candidate whose timing and BN-recalibrated metric say it cannot pay off, once the
    # study holds screen_min_trials completed trials to learn the threshold from (the reason is recorded).
    screening: bool = True
    screen_min_trials: int = Field(6, ge=2, le=MAX_COUNT)
    # torch threads of each worker (training, scoring); default: this host's usable cores / local workers, less the
    # cores other processes keep busy when the worker starts (no oversubscription on a shared machine).
    torch_threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    # Stop a search trial's finetune early when an Optuna pruner, judging its finetune curve against the study's
    # other trials, says so and the curve is over the drop budget (autoprune.search.pruners); baselines never.
    pruner: str = "none"
    pruner_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pruner")
    @classmethod
    def _known_pruner(cls, value: str) -> str:
        return _one_of(value, PRUNERS, "pruner")

    @field_validator("pruner_options")
    @classmethod
    def _pruner_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("pruner")
        if name is None:  # the pruner itself was refused; that error names it
            return value
        problem = pruner_options_problem(str(name), value)
        if problem:
            raise ValueError(problem)
        return value

    # The selection split that judges confirm's candidates: this share of the validation data, carved out by
    # search.seed, unless the task provides its own (autoprune.tasks.Task.own_selection_split).
    selection_fraction: float = Field(0.3, gt=0, lt=0.9)
    # confirm's margin for the selection split's own noise: a candidate holds when its selection drop plus this many
    # standard errors of that drop is within the budget (0: the drop alone).
    selection_z: float = Field(1.0, ge=0, le=10)
    # The sensitivity baseline (autoprune.space.sensitivity): per group pruned alone at sensitivity_ratios (its nearest
    # reachable widths), scored after BN recalibration; greedy allocations of those curves (one drop threshold,
    # the summed sensitivity_cost meeting a target speedup) are swept like the uniform and global baselines at
    # sensitivity_targets (default: the best uniform and global baselines' speedups and 1.25x the faster).
    sensitivity: bool = False
    sensitivity_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], max_length=100)
    sensitivity_cost: Literal["macs", "latency"] = "latency"
    sensitivity_targets: list[float] | None = Field(None, max_length=20)

    @field_validator("sensitivity_ratios")
    @classmethod
    def _sensitivity_ratios(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("sensitivity_ratios must list at least one ratio")
        return sorted({_check_ratio(v, "every sensitivity ratio") for v in values})

    @field_validator("sensitivity_targets")
    @classmethod
    def _speedups(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and (not values or any(not 1.0 < v <= 1000.0 for v in values)):
            raise ValueError(f"sensitivity_targets are target speedups: list at least one, each above 1 (e.g. [1.5, 2.0]), got {values}")
        return sorted(set(values)) if values is not None else None

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        return _one_of(value, SAMPLERS, "sampler")

    @field_validator("bounds_margin", mode="before")
    @classmethod
    def _margin_in_widths(cls, value: Any) -> Any:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(
                f"bounds_margin counts widths (kept-channel counts a group can reach), not a ratio: write a whole "
                f"number such as 1 (got {value})"
            )
        return value

    @field_validator("sweep_ratios")
    @classmethod
    def _ratios(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("sweep_ratios must list at least one ratio")
        return sorted(_check_ratio(v, "every sweep ratio") for v in values)


class CalibrationConfig(_Section):
    """Recipe calibration (``autoprune calibrate-recovery``): which finetune recipes to try on a probe candidate.

    Every pair of ``lrs`` x ``epochs`` recovers the same probe (uniform pruning at ``probe_ratio``); the
    cheapest recipe whose validation metric is within ``tolerance_se`` standard errors of the best one
    becomes the study's recipe.  ``enabled: false`` pins the recipe written in the ``recovery`` section.
    """

    enabled: bool = True
    probe_ratio: float = 0.3
    lrs: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03], max_length=20)
    epochs: list[float] = Field(default_factory=lambda: [0.25, 1.0, 2.0, 4.0], max_length=20)
    tolerance_se: float = Field(2.0, ge=0, le=100)

    @field_validator("probe_ratio")
    @classmethod
    def _probe(cls, value: float) -> float:
        return _check_ratio(value, "probe_ratio")

    @field_validator("lrs", "epochs")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if not values or any(not 0 < v <= MAX_EPOCHS for v in values):
            raise ValueError(f"must list at least one value, every value in (0, {MAX_EPOCHS}]")
        return sorted(set(values))


class FinalRecoveryConfig(_Section):
    """The long recovery of the chosen architecture (``autoprune finalize``), after the search.

    Judged on the same held-out training images as every candidate's recovery (``recovery.calib_size``,
    ``recovery.seed``), once per epoch, the best state kept; the BN recalibration takes ``recovery.bn_batches``.
    """

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.01, gt=0, le=100)
    # Linear warm-up for warmup_steps, then cosine decay to zero (the only schedule so far).
    schedule: Literal["cosine"] = "cosine"
    warmup_steps: int = Field(50, ge=0, le=MAX_COUNT)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(0.0, ge=0, le=1)
    # Share of the loss taken by distillation from the unpruned model (0: plain finetune on the labels).
    distill_weight: float = Field(0.7, ge=0, le=1)
    temperature: float = Field(4.0, gt=0, le=1_000)


class RecoveryConfig(_Section):
    """Brief recovery of every pruned candidate: BN recalibration, finetune, distillation."""

    bn_batches: int = Field(10, ge=0, le=MAX_COUNT)
    finetune_epochs: float = Field(2.0, ge=0, le=MAX_EPOCHS)
    finetune_steps: int | None = Field(None, ge=0, le=MAX_COUNT * 100)  # when set, overrides finetune_epochs
    lr: float = Field(0.01, gt=0, le=100)
    warmup_steps: int = Field(10, ge=0, le=MAX_COUNT)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(0.0, ge=0, le=1)
    distill: bool = True
    temperature: float = Field(4.0, gt=0, le=1_000)
    distill_weight: float = Field(0.7, ge=0, le=1)
    seed: int = _seed()
    # Training images held out of the finetune to judge it (at most a quarter of the split; 0: no judging).
    calib_size: int = Field(512, ge=0, le=100 * MAX_COUNT)
    # Points of the finetune at which the model is judged and the best state kept.
    checkpoints: int = Field(4, ge=1, le=100)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    # Mixed precision of the finetune's forward passes (autocast); off keeps float32 (bf16 also runs on CPUs).
    amp: Literal["off", "bf16", "fp16"] = "off"
    # The long recovery of the chosen architecture after the search (autoprune finalize); no trial uses it.
    final: FinalRecoveryConfig = Field(default_factory=FinalRecoveryConfig)


class LoaderConfig(_Section):
    """How training and evaluation batches are loaded (every stage that reads data)."""

    workers: int = Field(0, ge=0, le=MAX_THREADS)  # DataLoader worker processes (0: load in the training process)
    pin_memory: bool = False  # page-locked batches: faster host-to-GPU copies


class LatencyConfig(_Section):
    """How candidates are timed in ONNX Runtime."""

    batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    # (C, H, W) without batch; default: the task's example input
    input_shape: list[int] | None = Field(None, min_length=1, max_length=5)
    threads: int = Field(1, ge=1, le=MAX_THREADS)
    repeats: int = Field(200, ge=10, le=100_000)
    warmup: int = Field(20, ge=0, le=10_000)
    blocks: int = Field(10, ge=2, le=1_000)
    cv_threshold: float = Field(0.05, gt=0, le=10)
    max_remeasure: int = Field(3, ge=0, le=100)
    lock: bool = True
    exclusive: bool = False
    opset: int = Field(17, ge=11, le=30)
    # The ONNX Runtime execution provider the deployment runs on (cpu, cuda, tensorrt, openvino, ...).
    provider: Literal["cpu", "cuda", "tensorrt", "openvino", "coreml", "directml", "rocm"] = "cpu"
    provider_options: dict[str, Any] = Field(default_factory=dict)  # passed to the provider (device_id, trt_fp16_enable)
    # On a GPU provider, time the host-device copies too (default: inputs and outputs stay on the device).
    include_copies: bool = False
    # Ceiling on one candidate's timing (all attempts, while the host timing lock is held); the trial fails past it.
    max_seconds: float = Field(600.0, gt=0, allow_inf_nan=False)
    # Opt-in: end a candidate's interleaved timing once, after at least early_stop_min_blocks blocks, its speedup
    # spread is below early_stop_fraction x cv_threshold (never more than repeats); off, every block runs.
    early_stop: bool = False
    early_stop_min_blocks: int = Field(4, ge=2, le=1_000)
    early_stop_fraction: float = Field(0.5, gt=0, le=1)

    @field_validator("provider_options")
    @classmethod
    def _scalar_options(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key, value in values.items():
            if not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"option {key!r} must be a string, number or boolean (ONNX Runtime takes text)")
        return values

    @field_validator("input_shape")
    @classmethod
    def _runnable_shape(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and not all(1 <= side <= MAX_DIM for side in shape):
            raise ValueError(f"every side of input_shape must be an integer in [1, {MAX_DIM}], got {shape}")
        return shape

    @model_validator(mode="after")
    def _runnable_batch(self) -> LatencyConfig:
        elements = self.batch_size * math.prod(self.input_shape or [1])
        if elements > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"batch_size x input_shape is {elements:,} elements, more than one timed run can hold "
                f"({MAX_INPUT_ELEMENTS:,}); lower latency.batch_size or latency.input_shape"
            )
        if self.blocks > self.repeats:
            raise ValueError(f"blocks ({self.blocks}) must not exceed repeats ({self.repeats}): each block times at least one run")
        if self.early_stop and self.early_stop_min_blocks > self.blocks:
            raise ValueError(
                f"early_stop_min_blocks ({self.early_stop_min_blocks}) must not exceed blocks ({self.blocks}): the timing "
                "could never stop early; lower latency.early_stop_min_blocks or raise latency.blocks"
            )
        return self


class StudyConfig(_Section):
    """A whole study, as read from one YAML file."""

    name: str
    task: str = "digits"
    task_options: dict[str, Any] = Field(default_factory=dict)
    model: str | None = "resnet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    criterion: str = "l2"
    max_drop: float = Field(0.01, ge=0.0, lt=1.0)
    base: BaseTrainingConfig = Field(default_factory=BaseTrainingConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    # Where the torch stages run (base training, scoring, BN recalibration, finetune, evaluation):
    # auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:N or mps.  $AUTOPRUNE_DEVICE overrides it.
    device: str = "auto"
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    storage: str | None = None
    artifact_dir: str | None = None
    # Where trials keep their architecture JSON and weights: file:///path or s3://bucket/prefix (AWS settings from
    # the environment); default <artifact_dir>/optuna-artifacts.  $AUTOPRUNE_ARTIFACT_STORE overrides it.
    artifact_store: str | None = None

    # Where the file was read from; set by load_config, not by the YAML.
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value):
            raise ValueError("name must start with a letter or digit and use only letters, digits, '.', '_', '-'")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not valid_device(value):
            raise ValueError(f"unknown device {value!r}; choose auto, cpu, cuda, cuda:N (a GPU number) or mps")
        return value

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, value: str) -> str:
        return _one_of(value, CRITERIA, "criterion")

    @model_validator(mode="after")
    def _task_known(self) -> StudyConfig:
        if ":" not in self.task and self.task not in BUILTIN_TASKS:
            raise ValueError(
                f"unknown task {self.task!r} (key 'task'); choose one of {', '.join(sorted(BUILTIN_TASKS))} "
                "or name a plugin as 'package.module:function'"
            )
        if ":" not in self.task and self.model is not None:
            if self.model not in MODELS:
                raise ValueError(f"unknown model {self.model!r} (key 'model'); choose one of {', '.join(MODELS)}")
        return self

    # Paths -----------------------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """The folder of the config file (relative paths in the file are relative to it)."""
        return self.source.parent if self.source is not None else Path.cwd()

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(os.path.expandvars(os.path.expanduser(str(path))))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def artifact_path(self) -> Path:
        """Folder for checkpoints, baselines, exported models and reports of this study."""
        if self.artifact_dir:
            return self.resolve(self.artifact_dir)
        return (self.base_dir / "artifacts" / self.name).resolve()

    def checkpoint_path(self) -> Path:
        """Base model checkpoint (a plain state_dict)."""
        if self.base.checkpoint:
            return self.resolve(self.base.checkpoint)
        return self.artifact_path() / "base.pt"

    def storage_url(self, override: str | None = None) -> str:
        """The study storage URL: CLI override, then ``AUTOPRUNE_STORAGE``, then the file, then SQLite.

        ``${VAR}`` in it is taken from the environment (a bare ``$`` stays: passwords may hold one).
        """
        url = override or os.environ.get("AUTOPRUNE_STORAGE") or self.storage
        if url:
            where = ("--storage" if override else "$AUTOPRUNE_STORAGE" if os.environ.get("AUTOPRUNE_STORAGE")
                     else f"{self.source or 'the config'}: key 'storage'")
            return expand_env(url, where)
        return f"sqlite:///{(self.base_dir / (self.name + '.db')).resolve()}"


# Keys of a study's config that only say where or how a process runs, never what a trial computes: each host
# of a study may set them its own way (its storage URL or credentials, its device, its torch threads, its
# data loader, where it keeps artifacts, where its copy of the base checkpoint and of the data lives; the
# checkpoint's identity is checked by its sha256, the data's by the metric the base reaches).  Every other key
# changes what a trial measures (criterion, budget, sweep, sampler, recovery recipe, timing settings,
# heartbeats every worker must agree on), so a worker whose file differs in one is refused: its trials would
# be mixed silently with trials made under other settings.  Listed as dotted paths; a path covers its subkeys.
RUN_KEYS: tuple[str, ...] = (
    "storage",
    "device",
    "loader",
    "search.torch_threads",
    "artifact_dir",
    "artifact_store",
    "base.checkpoint",
    "task_options.root",
    "task_options.cache_dir",
    # Not a where-or-how key, but no trial reads it: the final recipe may be tuned after the search.
    "recovery.final",
)

_ABSENT = object()


def is_run_key(key: str) -> bool:
    """Whether a dotted config key only says where or how to run (:data:`RUN_KEYS`).

    Example:
        >>> is_run_key("loader.workers"), is_run_key("pruning.criterion"), is_run_key("criterion")
        (True, False, False)
    """
    return any(key == k or key.startswith(k + ".") for k in RUN_KEYS)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted key: leaf value}`` (lists are leaves)."""
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def public_config(config: StudyConfig) -> dict[str, Any]:
    """The config as a study stores it (the study attr ``config``): JSON values, the storage URL with its password hidden."""
    data = config.model_dump(mode="json")
    if data.get("storage"):
        data["storage"] = redact_url(data["storage"])
    return data


def config_differences(study: StudyConfig, local: StudyConfig) -> tuple[list[str], list[str]]:
    """The dotted keys in which two configs differ, split into result keys and run keys (:data:`RUN_KEYS`).

    Args:
        study: the config a study was created with.
        local: the config read on this host.

    Returns:
        ``(keys that change results, keys that only say where or how to run)``, each sorted.
    """
    mine, theirs = _flatten(public_config(local)), _flatten(public_config(study))
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k, _ABSENT) != theirs.get(k, _ABSENT))
    return [k for k in differ if not is_run_key(k)], [k for k in differ if is_run_key(k)]


def _get_dotted(data: dict[str, Any], key: str) -> Any:
    """``data[a][b]...`` for the dotted ``key``, ``_ABSENT`` where a part is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set (or, for ``_ABSENT``, remove) ``data[a][b]...`` for the dotted ``key``."""
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    if value is _ABSENT:
        data.pop(leaf, None)
    else:
        data[leaf] = value


def _shown(value: Any) -> str:
    return "unset" if value is _ABSENT else repr(value)


def stored_config(stored: Any) -> tuple[StudyConfig | None, str]:
    """The config a study stored (its attr ``config``), or ``None`` and why when there is none this version reads.

    Example:
        >>> stored_config(None)
        (None, 'it stored no config')
    """
    if not isinstance(stored, dict):
        return None, "it stored no config"
    try:
        return StudyConfig.model_validate({k: v for k, v in stored.items() if k != "source"}), ""
    except ValidationError as exc:
        problems = _format_validation_error(Path("its stored config"), exc).splitlines()
        return None, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def study_config(study: StudyConfig, local: StudyConfig, study_name: str) -> tuple[StudyConfig, list[str]]:
    """The config a study was created with, with this host's run keys, checked against the local file.

    Args:
        study: the study's stored config (:func:`stored_config`).
        local: the config read on this host (its recovery recipe already set to the study's).
        study_name: the study, for messages.

    Returns:
        ``(the study's config with this host's run keys and source, the run keys that differ)``.

    Raises:
        ConfigError: the local file differs in a key that changes results (the keys are named with both values).
    """
    results, runs = config_differences(study, local)
    if results:
        mine, theirs = _flatten(public_config(local)), _flatten(public_config(study))
        shown = ", ".join(f"{k} (here {_shown(mine.get(k, _ABSENT))}, study {_shown(theirs.get(k, _ABSENT))})" for k in results)
        raise ConfigError(
            f"{local.source or 'the config'} differs from the config study {study_name!r} was created with in "
            f"{shown}: its trials would be mixed with trials made under other settings; use the study's values "
            "(or create a new study under another name)"
        )
    return _with_run_keys(study, local), runs


def _with_run_keys(study: StudyConfig, local: StudyConfig) -> StudyConfig:
    """``study`` with every run key (:data:`RUN_KEYS`) and the source of ``local``."""
    merged = study.model_dump(mode="json")
    here = local.model_dump(mode="json")
    for key in RUN_KEYS:  # all of them: the study holds its creator's values (and a redacted storage URL)
        _set_dotted(merged, key, _get_dotted(here, key))
    rebuilt = StudyConfig.model_validate(merged)
    rebuilt.source = local.source
    return rebuilt


# pydantic names each member of a union in the error location ("int", "literal['auto']"); not a key.
_UNION_TAGS = {"int", "float", "str", "bool", "none", "list", "dict"}


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = []
    for part in loc:
        text = str(part)
        if text.startswith("function-") or "[" in text or text in _UNION_TAGS:
            continue
        parts.append(text)
    return ".".join(parts)


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _range_text(loc: tuple[Any, ...], value: Any) -> str:
    """'allowed: [low, high], got value' for the field at ``loc``."""
    model: Any = StudyConfig
    field = None
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            field = model.model_fields[part]
            model = field.annotation
    if field is None:
        return f"got {value!r:.40}"
    meta = field.metadata
    low = next((f"[{m.ge}" for m in meta if hasattr(m, "ge")), None) or next((f"({m.gt}" for m in meta if hasattr(m, "gt")), "(-inf")
    high = next((f"{m.le}]" for m in meta if hasattr(m, "le")), None) or next((f"{m.lt})" for m in meta if hasattr(m, "lt")), "inf)")
    shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:12]}... ({len(str(value))} characters)"
    return f"allowed: {low}, {high}, got {shown}"


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    by_key: dict[str, list[str]] = {}
    for err in exc.errors():
        key = _format_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in _BOUND_ERRORS:
            msg = f"{msg} ({_range_text(err['loc'], err['input'])})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling (see studies/*.yaml for every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if msg not in by_key.setdefault(key, []):
            by_key[key].append(msg)
    # A value that fits no member of a union gets one line with every alternative.
    return "\n".join(
        f"{path}: key '{key}': {'; or '.join(msgs)}" if key else f"{path}: {'; or '.join(msgs)}"
        for key, msgs in by_key.items()
    )


def parse_config(data: dict[str, Any], source: Path | None = None) -> StudyConfig:
    """Validate a config mapping.

    Args:
        data: the parsed YAML mapping.
        source: the file it came from (used in messages and to resolve relative paths).

    Returns:
        The validated :class:`StudyConfig`.
    """
    where = source or Path("<config>")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the file must hold a mapping of keys (name, task, model, ...), got {type(data).__name__}")
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(where, exc)) from None
    cfg = _device_override(validated_copy(cfg, source=source), where)
    if cfg.base.checkpoint and not cfg.checkpoint_path().is_file():
        raise ConfigError(
            f"{where}: key 'base.checkpoint': file {cfg.checkpoint_path()} does not exist; "
            "fix the path or remove the key to train one with 'autoprune train-base'"
        )
    return cfg


def _device_override(cfg: StudyConfig, where: Path) -> StudyConfig:
    """``cfg`` with ``$AUTOPRUNE_DEVICE`` (set by ``--device`` and ``worker --gpus``) over the file's ``device``."""
    override = os.environ.get(DEVICE_ENV)
    if not override:
        return cfg
    if not valid_device(override):
        raise ConfigError(
            f"${DEVICE_ENV} (or --device) = {override!r} for {where}: not a device; use auto, cpu, cuda, cuda:N or mps"
        )
    return validated_copy(cfg, device=override)


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Load and validate a study YAML file.

    Args:
        path: the YAML file.

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: with a message naming the file and key.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass the path of a study YAML such as studies/digits-resnet.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{p}: not a text file ({type(exc).__name__}); pass the path of a study YAML (UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a study YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data or {}, source=p.resolve())
