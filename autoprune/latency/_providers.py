"""The ONNX Runtime execution providers a study can be timed on (``latency.provider``), and their devices.

A model that ships to a GPU must be timed on one: which widths are fast differs between a CPU and a GPU.
The config names a target by a short key; this module maps it to ORT's provider name, refuses a provider
the installed ONNX Runtime lacks (naming what it has) and says where a provider keeps its tensors, so the
timer can bind inputs and outputs there (host copies excluded from the timing).

``get_available_providers()`` lists what the wheel was built with, not what works here: onnxruntime-gpu lists
CUDA and TensorRT on a host without their libraries, and a session asked for them falls back to the CPU
silently (or raises).  :func:`probe_provider` therefore opens and runs a one-node model on the provider, once
per provider and options in a process, and refuses it unless the session really starts with it.

Example:
    >>> provider_name("cuda")
    'CUDAExecutionProvider'
    >>> require_provider("cpu")
    'CPUExecutionProvider'
    >>> probe_provider("cpu")
    'CPUExecutionProvider'
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import numpy as np
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


def probe_provider(key: str, options: Mapping[str, Any] | None = None) -> str:
    """ORT's name of ``key``'s provider, refused unless a session on it really opens and runs here.

    A one-node model built in memory is opened on :func:`session_providers` (ORT's own fallback off) and run
    once; the outcome is kept for the process, per provider and options.

    Args:
        key: the ``latency.provider`` key.
        options: ``latency.provider_options`` (``device_id`` picks the GPU).

    Raises:
        LatencyError: one line naming the key, what the session fell back to (or why it failed) and the fix.
    """
    name = require_provider(key)
    frozen = tuple(sorted((str(k), str(v)) for k, v in (options or {}).items()))
    problem = _probe(key, frozen)
    if problem is None:
        return name
    raise LatencyError(f"latency.provider: {key}: {problem}; {_fix(key)}")


@functools.cache
def _probe(key: str, options: tuple[tuple[str, str], ...]) -> str | None:
    """What went wrong opening the probe model on ``key`` (None when its session starts with the provider)."""
    name = provider_name(key)
    model = _probe_model()
    settings = onnxruntime.SessionOptions()
    settings.log_severity_level = 2  # the warnings say why a provider was dropped; they are captured, not shown
    with _captured_stderr() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns about the providers it skips; the verdict below says it once
        try:
            session = onnxruntime.InferenceSession(model, sess_options=settings, providers=session_providers(key, dict(options)),
                                                   enable_fallback=0)
            session.run(None, {"x": np.ones(1, dtype=np.float32)})
        except Exception as exc:  # ORT raises RuntimeError, ValueError or its own Fail/EPFail types
            session, failure = None, _first_line(str(exc)) or type(exc).__name__
    if session is None:
        return f"ONNX Runtime could not open and run a one-node test session on {name} ({failure})"
    used = session.get_providers()
    if used[0] == name:
        return None
    reason = _log_reason(log.text)
    return f"a test session asked for {name} fell back to {', '.join(used)}" + (f" ({reason})" if reason else "")


def _fix(key: str) -> str:
    """What to do so ``key``'s provider starts, or what to time on instead."""
    version = onnxruntime.__version__
    if key == "cuda":
        return (f"install the CUDA and cuDNN libraries onnxruntime {version} was built for (matching the driver; "
                "device_id must name a GPU this host has), or set latency.provider: cpu")
    if key == "tensorrt":
        return (f"install the TensorRT (libnvinfer), CUDA and cuDNN libraries onnxruntime {version} was built for, "
                "or set latency.provider: cuda (or cpu)")
    return f"install the libraries {provider_name(key)} of onnxruntime {version} needs, or set latency.provider: cpu"


@functools.lru_cache(maxsize=1)
def _probe_model() -> bytes:
    """A one-node model (``y = Relu(x)``, one float) built in memory."""
    from onnx import TensorProto  # onnx takes a second or more to import; only the probe needs it
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "autoprune-provider-probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # every ONNX Runtime since 1.14 reads it
    return model.SerializeToString()


class _Log:
    """Text captured by :func:`_captured_stderr` (set when the block ends)."""

    text = ""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Log]:
    """Capture what is written to file descriptor 2 in the block: ORT's C++ logger says there why a provider failed."""
    log = _Log()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.text = sink.read().decode("utf-8", "replace")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_PREFIX = re.compile(r"^.*?\[([VIWEF]):onnxruntime:[^\]]*\]\s*")


def _log_reason(text: str) -> str:
    """The most severe line of ORT's log (errors before warnings), without colour codes and prefix."""
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    ranked = []
    for line in lines:
        match = _LOG_PREFIX.match(line)
        if match:
            ranked.append(("FEWIV".index(match.group(1)), line[match.end():]))
    return min(ranked, key=lambda r: r[0])[1][:300] if ranked else ""


def _first_line(text: str) -> str:
    """The first non-empty line of ``text`` (ORT's exceptions carry a long trail)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:300]


__all__ = [
    "GPU_PROVIDERS",
    "PROVIDERS",
    "device_memory",
    "probe_provider",
    "provider_name",
    "require_provider",
    "session_providers",
]
