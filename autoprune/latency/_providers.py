"""The ONNX Runtime execution providers a study can be timed on (``latency.provider``), and their devices.

A model that ships to a GPU must be timed on one: which widths are fast differs between a CPU and a GPU.
The config names a target by a short key; this module maps it to ORT's provider name, refuses a provider
the installed ONNX Runtime lacks (naming what it has) and says where a provider keeps its tensors, so the
timer can bind inputs and outputs there (host copies excluded from the timing).

Example:
    >>> provider_name("cuda")
    'CUDAExecutionProvider'
    >>> require_provider("cpu")
    'CPUExecutionProvider'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnxruntime

from autoprune.errors import LatencyError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
# Where a provider's inputs and outputs live (OrtValue device names); the others work on host memory.
_DEVICE_MEMORY = {"cuda": "cuda", "tensorrt": "cuda", "rocm": "cuda", "directml": "dml"}
# Providers on a GPU: their fingerprint names the GPU and driver.
GPU_PROVIDERS = ("cuda", "tensorrt", "rocm", "directml")


def provider_name(key: str) -> str:
    """ORT's name of the provider a ``latency.provider`` key names.

    Raises:
        LatencyError: an unknown key (the known ones are listed).
    """
    if key not in PROVIDERS:
        raise LatencyError(f"latency.provider: unknown provider {key!r}; choose one of {', '.join(PROVIDERS)}")
    return PROVIDERS[key]


def require_provider(key: str) -> str:
    """ORT's name of ``key``'s provider, refused when the installed ONNX Runtime lacks it.

    Raises:
        LatencyError: one line naming the key, the provider needed, what ORT has and the fix.
    """
    name = provider_name(key)
    have = onnxruntime.get_available_providers()
    if name in have:
        return name
    install = "install autoprune[gpu] (onnxruntime-gpu)" if key in ("cuda", "tensorrt") else f"install an ONNX Runtime build with {name}"
    raise LatencyError(
        f"latency.provider: {key} needs {name}; this ONNX Runtime {onnxruntime.__version__} has {', '.join(have)}; "
        f"{install} or set latency.provider: cpu"
    )


def session_providers(key: str, options: Mapping[str, Any] | None = None) -> list[Any]:
    """The ``providers`` argument of an InferenceSession timed on ``key``.

    The CPU provider is named alone (as it always was).  Another provider gets its options and the CPU
    provider behind it for the few nodes it cannot run (TensorRT also gets CUDA when that is installed).
    """
    name = require_provider(key)
    if key == "cpu":
        return [name]
    chain: list[Any] = [(name, {str(k): str(v) for k, v in (options or {}).items()})]
    if key == "tensorrt" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        chain.append("CUDAExecutionProvider")
    return chain + ["CPUExecutionProvider"]


def device_memory(key: str, options: Mapping[str, Any] | None = None) -> tuple[str, int]:
    """``(OrtValue device name, device id)`` where ``key``'s provider keeps its tensors (``("cpu", 0)`` for host ones)."""
    device_id = int((options or {}).get("device_id", 0))
    return _DEVICE_MEMORY.get(key, "cpu"), device_id if key in _DEVICE_MEMORY else 0


__all__ = ["GPU_PROVIDERS", "PROVIDERS", "device_memory", "provider_name", "require_provider", "session_providers"]
