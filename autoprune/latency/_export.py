"""Export a torch model to ONNX for timing, and check the export against torch.

torch is imported inside the functions: processes that only time ONNX files (the CLI, the benchmark's
timing subprocesses) then start without paying for it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from autoprune.errors import LatencyError

if TYPE_CHECKING:
    import torch

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _first_tensor(output: Any) -> torch.Tensor:
    """Pick the tensor to export from whatever a model's forward returns.

    Args:
        output: A tensor, an object with ``.logits`` (Hugging Face ``ModelOutput``), a dict with
            ``"logits"``, or a tuple/list whose first item is one of these.

    Returns:
        The tensor.

    Raises:
        LatencyError: Nothing tensor-like was found.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0])
    raise LatencyError(
        f"the model returns {type(output).__name__}, not a tensor or an object with .logits; "
        "wrap the model so that forward() returns one tensor before exporting it"
    )


def _tensor_module(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``model`` so that its forward returns one tensor (the logits for Hugging Face models).

    Args:
        model: Any module.

    Returns:
        A module whose forward returns :func:`_first_tensor` of ``model``'s output.
    """
    import torch

    class _TensorOutput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _first_tensor(self.inner(x))

    return _TensorOutput(model)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode afterwards.

    ``model.train(was_training)`` is not enough: a model may hold submodules in a different mode on
    purpose (frozen BatchNorm during finetuning), and those must come back unchanged.

    Args:
        model: The module.

    Yields:
        Nothing; the model is in eval mode inside the block.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _on_cpu(model: torch.nn.Module, example_input: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and input to export: a CPU copy of a model on another device, so the ONNX file never holds
    device placements (a model already on the CPU is exported as it is)."""
    import copy

    import torch

    from autoprune.device import model_device

    if model_device(model).type == "cpu":
        return model, example_input.cpu()
    return copy.deepcopy(model).to(torch.device("cpu")), example_input.cpu()


def export_onnx(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    opset: int = 17,
    dynamic_batch: bool = True,
) -> pathlib.Path:
    """Export ``model`` to an ONNX file with input ``"input"`` and output ``"output"``.

    Uses the TorchScript exporter (``dynamo=False``), which needs no extra packages.  The model is
    exported in eval mode and left in the modes it had.  Models that return a non-tensor (a Hugging Face
    ``ModelOutput``) are exported with their logits.

    Args:
        model: The torch model.
        example_input: One input batch (its shape, except the batch dimension, is fixed in the graph).
        path: Output ``.onnx`` file; parent folders are created.
        opset: ONNX opset version.
        dynamic_batch: Keep the batch dimension symbolic, so the timer can run the deployment batch size.

    Returns:
        The path of the checked ONNX file.

    Raises:
        LatencyError: The export or the ONNX checker failed.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
        >>> p = export_onnx(net, torch.randn(1, 1, 16, 16), tempfile.mkdtemp() + "/net.onnx")
        >>> p.suffix
        '.onnx'
    """
    import onnx
    import torch

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    model, example_input = _on_cpu(model, example_input)
    wrapped = _tensor_module(model)
    try:
        with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter is chosen on purpose (no onnxscript needed); its deprecation notices
            # would only repeat on every trial.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(
                wrapped,
                (example_input,),
                str(out),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except LatencyError:
        raise
    except Exception as exc:
        raise LatencyError(
            f"exporting {type(model).__name__} to {out} failed: {exc}; check that forward() takes one tensor "
            f"of shape {tuple(example_input.shape)} and that opset {opset} supports its operators"
        ) from exc
    try:
        onnx.checker.check_model(str(out))
    except Exception as exc:
        raise LatencyError(f"the exported file {out} fails onnx.checker: {exc}; re-export with another opset") from exc
    return out


def compare_outputs(
    model: torch.nn.Module,
    onnx_path: str | os.PathLike[str],
    example_input: torch.Tensor,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Run ``model`` in torch and the ONNX file in ONNX Runtime on the same input and compare.

    Args:
        model: The torch model (run in eval mode, its modes restored afterwards).
        onnx_path: The exported file.
        example_input: The input batch fed to both.
        rtol: Relative tolerance of ``numpy.allclose``.
        atol: Absolute tolerance of ``numpy.allclose``.

    Returns:
        The largest absolute difference between the two outputs.

    Raises:
        LatencyError: The outputs differ in shape or beyond the tolerances.
    """
    import torch

    from autoprune.device import model_device
    from autoprune.latency._session import open_session

    with _eval_mode(model), torch.no_grad():
        expected = _first_tensor(model(example_input.to(model_device(model)))).detach().cpu().numpy()
    session = open_session(onnx_path, threads=1)
    name = session.get_inputs()[0].name
    actual = session.run(None, {name: example_input.detach().cpu().numpy()})[0]
    if actual.shape != expected.shape:
        raise LatencyError(
            f"{onnx_path} returns shape {actual.shape} but torch returns {expected.shape}; re-export the model"
        )
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        raise LatencyError(
            f"{onnx_path} disagrees with the torch model: max abs diff {diff:.3g} exceeds rtol={rtol}, atol={atol}; "
            "check for ops that export differently (custom layers, training-only branches) and re-export"
        )
    return diff
