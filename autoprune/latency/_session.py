"""Open ONNX Runtime sessions configured for timing, and work out the input they are timed with."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime

from autoprune.errors import LatencyError
from autoprune.latency._providers import provider_name
from autoprune.latency._providers import session_providers

# Recorded with every result; ORT's Python default, kept because deployment uses it too.
GRAPH_OPTIMIZATION = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def open_session(
    path: str | os.PathLike[str],
    threads: int,
    provider: str = "cpu",
    provider_options: Mapping[str, Any] | None = None,
) -> onnxruntime.InferenceSession:
    """Open an ONNX file on one execution provider (the CPU by default) with timing-friendly options.

    ``intra_op_num_threads`` is set explicitly (ORT's default takes every physical core and pins
    threads), inter-op threads are 1 with sequential execution, and spinning is off so idle ORT threads
    do not burn cores that neighbouring workers need.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op thread count.
        provider: ``latency.provider`` key (``cpu``, ``cuda``, ``tensorrt``, ...).
        provider_options: ``latency.provider_options``, passed to that provider.

    Returns:
        The session.

    Raises:
        LatencyError: The file is missing, not a file, or not a loadable ONNX model; the provider is not
            installed, or ORT fell back from it to another one.
    """
    file = pathlib.Path(path)
    providers = session_providers(provider, provider_options)
    if not file.exists():
        raise LatencyError(f"ONNX file {file} does not exist; check the path or export the model first")
    if not file.is_file():
        raise LatencyError(f"{file} is not a file; pass the path of an .onnx model")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPTIMIZATION
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # ORT's warnings about unused initializers are noise here
    try:
        session = onnxruntime.InferenceSession(str(file), sess_options=options, providers=providers)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LatencyError(
            f"{file} is not a loadable ONNX model ({reason}); re-export it with autoprune.latency.export_onnx"
        ) from exc
    wanted = provider_name(provider)
    if session.get_providers()[0] != wanted:
        # ORT falls back silently when a provider fails to initialise (a missing CUDA library, say).
        raise LatencyError(
            f"latency.provider: {provider}: ONNX Runtime opened {file.name} on {session.get_providers()[0]} instead "
            f"of {wanted} (the provider failed to start; check its libraries and latency.provider_options)"
        )
    return session


def resolve_input(
    session: onnxruntime.InferenceSession,
    path: str | os.PathLike[str],
    batch_size: int,
    input_shape: Sequence[int] | None = None,
) -> tuple[str, tuple[int, ...], type]:
    """Work out the name, concrete shape and dtype of the single input a session is timed with.

    A symbolic batch dimension becomes ``batch_size``.  An explicit ``input_shape`` must agree with every
    fixed dimension of the model.

    Args:
        session: The open session.
        path: Its file, for messages.
        batch_size: Batch used where the batch dimension is symbolic.
        input_shape: Shape requested by the caller, or ``None`` to read it from the model.

    Returns:
        ``(input name, shape, numpy dtype)``.

    Raises:
        LatencyError: The model has several inputs, an unsupported input type, other symbolic dimensions
            without an explicit shape, or a shape that contradicts ``input_shape``.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise LatencyError(f"{path} has {len(inputs)} inputs {names}; the timer needs a model with exactly one input")
    info = inputs[0]
    dtype = _DTYPES.get(info.type)
    if dtype is None:
        raise LatencyError(f"{path}: input {info.name!r} has type {info.type}, which the timer cannot generate")
    declared = [d if isinstance(d, int) and d > 0 else None for d in info.shape]
    if input_shape is not None:
        wanted = tuple(int(d) for d in input_shape)
        fits = len(wanted) == len(declared) and all(d is None or d == w for d, w in zip(declared, wanted, strict=True))
        if not fits:
            raise LatencyError(
                f"{path} takes input shape {_show(info.shape)} but input shape {wanted} was requested; "
                "time the model at the shape it was exported with or re-export it"
            )
        return info.name, wanted, dtype
    if declared and declared[0] is None:
        declared[0] = batch_size
    if any(d is None for d in declared):
        raise LatencyError(
            f"{path} has symbolic input dimensions {_show(info.shape)} besides the batch; "
            "pass an explicit input shape or export with fixed spatial sizes"
        )
    return info.name, tuple(d for d in declared if d is not None), dtype  # none is left: refused above


def _show(shape: Sequence[object]) -> str:
    """Format a declared ONNX shape, symbolic dimensions by name.

    Args:
        shape: Dimensions as ORT reports them (ints, strings or None).

    Returns:
        Text like ``(batch, 1, 16, 16)``.
    """
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


def random_input(shape: Sequence[int], dtype: type, seed: int = 0) -> np.ndarray:
    """Make a reproducible random input batch.

    Args:
        shape: Concrete shape.
        dtype: numpy dtype.
        seed: RNG seed.

    Returns:
        Standard-normal floats, or small non-negative integers for integer inputs (valid token ids).
    """
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(tuple(shape)).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, size=tuple(shape)).astype(np.bool_)
    return rng.integers(0, 8, size=tuple(shape)).astype(dtype)
