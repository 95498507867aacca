"""Where the torch stages run: base training, importance scoring, BN recalibration, finetune, evaluation.

The study config names a device (``device: auto | cpu | cuda | cuda:N | mps``); ``$AUTOPRUNE_DEVICE`` (set by
``--device`` and by ``autoprune worker --gpus``) overrides it.  ``auto`` is CUDA where torch sees a GPU, else
the CPU.  A device this torch cannot use is refused before any training, with what is available
(:func:`check_device`).  Data reaches the device through :meth:`autoprune.tasks.Task.loader`, which wraps
its loader in a :class:`DeviceLoader` off the CPU; on the CPU nothing changes.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> to_device((torch.zeros(1), [torch.ones(1)]), torch.device("cpu"))[1][0]
    tensor([1.])
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import torch

from autoprune.errors import AutopruneError
from autoprune.errors import ConfigError

if TYPE_CHECKING:
    from autoprune.config import StudyConfig

DEVICE_ENV = "AUTOPRUNE_DEVICE"
# Test seam: with it set, ``autoprune worker --gpus 0,1`` still starts one process per listed GPU, but each
# process runs on the CPU (a machine without GPUs checks the fan-out and the recorded devices).
FAKE_GPUS_ENV = "AUTOPRUNE_FAKE_GPUS"
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def valid_device(spec: str) -> bool:
    """True when ``spec`` is a device name the config accepts (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    return DEVICE_PATTERN.fullmatch(spec) is not None


def available_devices() -> list[str]:
    """The devices this torch can use here, e.g. ``["cpu"]`` or ``["cpu", "cuda:0", "cuda:1"]``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def device_label(device: torch.device) -> str:
    """The name a trial records for ``device``: ``cpu``, ``cuda:N`` (with the GPU's number) or ``mps``."""
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def resolve_device(spec: str) -> torch.device:
    """The torch device of a config value; ``auto`` is ``cuda`` where torch sees a GPU, else ``cpu``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def check_device(spec: str, where: str = "device", fix: str | None = None) -> torch.device:
    """Resolve ``spec`` and refuse one this torch cannot use, naming what it can.

    Args:
        spec: the config value.
        where: the key (or option) it came from, for the message.
        fix: what to change instead of the key (default: ``set <where>: cpu (or auto)``).

    Returns:
        The device.

    Raises:
        ConfigError: one line naming the key, what is available and the fix.
    """
    if not valid_device(spec):
        raise ConfigError(f"{where}: {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    device = resolve_device(spec)
    have = available_devices()
    usable = device.type == "cpu" or (device.type == "cuda" and (device.index or 0) < torch.cuda.device_count())
    usable = usable or (device.type == "mps" and "mps" in have)
    if usable:
        return device
    build = f"torch {torch.__version__}" + ("" if torch.backends.cuda.is_built() else " (built without CUDA)")
    raise ConfigError(
        f"{where}: {spec} is not available; this {build} has {', '.join(have)}; "
        f"install a CUDA build of torch on a machine with that GPU or {fix or f'set {where}: cpu (or auto)'}"
    )


def provider_options(config: StudyConfig) -> dict[str, Any]:
    """``latency.provider_options``; a GPU provider without ``device_id`` times on the GPU the worker trains on."""
    from autoprune.latency._providers import GPU_PROVIDERS  # local: loading a config need not load ONNX Runtime

    options = dict(config.latency.provider_options)
    device = resolve_device(config.device)
    if config.latency.provider in GPU_PROVIDERS and "device_id" not in options and device.type == "cuda" and device.index:
        options["device_id"] = device.index
    return options


def check_targets(config: StudyConfig) -> None:
    """Refuse, before any training, a ``device`` this torch cannot use or a ``latency.provider`` that does not start.

    The provider is checked by opening a one-node session on it (:func:`autoprune.latency._providers.probe_provider`):
    ORT's list of providers names what the wheel was built with, not what runs on this host.

    Raises:
        ConfigError: one line naming the file, the key, what is available (or what the session fell back to)
            and the fix.
    """
    from autoprune.latency._providers import probe_provider  # local: loading a config need not load ONNX Runtime

    where = config.source or "<config>"
    try:
        check_device(config.device)
        probe_provider(config.latency.provider, provider_options(config))
    except AutopruneError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor in it (also inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device, non_blocking) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    return obj


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model without either."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


class DeviceLoader:
    """A DataLoader whose batches arrive on ``device`` (length and dataset are the wrapped loader's)."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        pinned = bool(getattr(self.loader, "pin_memory", False))
        for batch in self.loader:
            yield to_device(batch, self.device, non_blocking=pinned)


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for a finetune step: ``off`` (nothing), ``bf16`` or ``fp16`` autocast on ``device``."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def device_override() -> str | None:
    """The device ``--device`` or ``--gpus`` asked for (``$AUTOPRUNE_DEVICE``), or None."""
    return os.environ.get(DEVICE_ENV) or None


def gpu_devices(gpus: str) -> list[str]:
    """The devices of ``--gpus 0,1,3``: ``cuda:0``, ``cuda:1``, ``cuda:3`` (all ``cpu`` under ``$AUTOPRUNE_FAKE_GPUS``).

    Raises:
        ConfigError: the list is not comma-separated GPU numbers, or names one twice.
    """
    parts = [p.strip() for p in gpus.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--gpus: expected comma-separated GPU numbers such as 0,1,2,3, got {gpus!r}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"--gpus: GPU numbers must differ, got {gpus!r}")
    if os.environ.get(FAKE_GPUS_ENV):
        return ["cpu"] * len(parts)
    return [f"cuda:{int(p)}" for p in parts]


__all__ = [
    "DEVICE_ENV",
    "FAKE_GPUS_ENV",
    "DeviceLoader",
    "autocast",
    "available_devices",
    "check_device",
    "check_targets",
    "device_label",
    "device_override",
    "gpu_devices",
    "model_device",
    "provider_options",
    "resolve_device",
    "to_device",
    "valid_device",
]
