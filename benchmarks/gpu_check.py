"""GPU check: a short study end to end on a CUDA GPU, finetuned there and timed with ONNX Runtime's CUDA provider.

What it asserts (and records in ``benchmarks/results/gpu_check.json``):

- the study (``autoprune run`` on a built-in task, a few trials, tiny budgets) completes, and every finished
  trial records ``device: cuda:N`` and the host id of the CUDA provider's fingerprint (GPU model and driver);
- one candidate evaluated directly leaves its finetuned model on the GPU, and its timing names
  ``CUDAExecutionProvider``; where ONNX Runtime also has ``TensorrtExecutionProvider``, the same candidate is
  timed with it too;
- the same candidate on the CPU (device cpu, provider cpu) gives the CPU-vs-GPU trial time ratio.

The JSON holds the device, the providers, per-stage seconds of both candidate runs and of every trial, and
the ratio.  A machine without a GPU cannot run it; ``--dry-run`` runs the same steps on the CPU (device cpu,
provider cpu, a tiny model and budget) and writes to a temp folder, never to ``benchmarks/results/``.

Run (on a machine with a CUDA GPU and ``pip install autoprune[gpu]``)::

    python benchmarks/gpu_check.py [--config studies/digits-resnet.yaml] [--trials 4]

Dry run (CPU, about half a minute)::

    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "gpu_check.json"
CONFIG = ROOT / "studies" / "digits-resnet.yaml"

# Tiny budgets: the check is about where things run, not about what the search finds.
BUDGET: dict[str, Any] = {
    "base": {"epochs": 3},
    "search": {"sweep_ratios": [0.3, 0.5], "sampler": "random", "screening": False, "bounds_margin": 1},
    "recovery": {"finetune_steps": 20, "bn_batches": 4, "calibration": {"enabled": False}},
    "latency": {"repeats": 40, "blocks": 4, "warmup": 5, "cv_threshold": 1.0, "max_remeasure": 0, "lock": False},
    "max_drop": 0.9,
}
# The dry run also shrinks the model (16/32/32 channels) so it fits in a test.
DRY: dict[str, Any] = {
    "model_options": {"widths": [16, 32, 32]},
    "base": {"epochs": 1, "batch_size": 32},
    "pruning": {"round_to": 8, "importance_batches": 1},
    "recovery": {"finetune_steps": 3, "bn_batches": 1, "calib_size": 0, "checkpoints": 1},
    "latency": {"repeats": 10, "blocks": 2, "warmup": 1},
    "search": {"torch_threads": 1},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def write_study(source: pathlib.Path, folder: pathlib.Path, name: str, device: str, provider: str, dry: bool, trials: int) -> pathlib.Path:
    """The check's study YAML in ``folder``: ``source`` with tiny budgets, on ``device``, timed on ``provider``."""
    data = yaml.safe_load(source.read_text())
    data = merge(data, BUDGET)
    if dry:
        data = merge(data, DRY)
    data = merge(data, {"name": name, "device": device, "latency": {"provider": provider}, "search": {"trials": trials}})
    data["artifact_dir"] = str(folder / "artifacts")
    data["base"].pop("checkpoint", None)  # trained in the check's folder
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_study(config_path: pathlib.Path, trials: int) -> list[dict[str, Any]]:
    """``autoprune run CONFIG --trials N`` (one worker, SQLite next to the config); the finished trials' attrs."""
    import optuna

    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    cfg, url, _ = create_study(str(config_path), None, say=lambda line: None)
    failed = run_local(str(config_path), url, 1, trials)
    assert failed == 0, "the worker failed"
    study = optuna.load_study(study_name=cfg.name, storage=url)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [{"number": t.number, **{k: t.user_attrs.get(k) for k in ("device", "host_id", "stage_seconds", "speedup", "metric")}} for t in done]


def one_candidate(config_path: pathlib.Path, ratio: float = 0.3) -> dict[str, Any]:
    """Evaluate one uniform candidate of the study directly: where its model ended, its timing, its stage seconds."""
    from autoprune.candidate import StudyContext
    from autoprune.candidate import evaluate_candidate
    from autoprune.config import load_config
    from autoprune.device import model_device

    ctx = StudyContext.build(load_config(config_path))
    start = time.perf_counter()
    result = evaluate_candidate(ctx, uniform=ratio)
    return {
        "model_device": str(model_device(result.model)),
        "provider": result.latency["host"]["provider"],
        "host_id": result.latency["host"]["fingerprint_id"],
        "gpu_model": result.latency["host"].get("gpu_model"),
        "gpu_driver": result.latency["host"].get("gpu_driver"),
        "stage_seconds": {k: round(v, 4) for k, v in result.stage_seconds.items()},
        "trial_seconds": round(time.perf_counter() - start, 4),
        "speedup": result.speedup,
    }


def tensorrt_timing(config_path: pathlib.Path) -> dict[str, Any] | None:
    """The study's base against a uniform candidate, timed with TensorRT (None where ORT lacks it)."""
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        return None
    from autoprune.candidate import StudyContext
    from autoprune.candidate import example_input
    from autoprune.config import load_config
    from autoprune.latency import export_onnx
    from autoprune.latency import measure_speedup

    ctx = StudyContext.build(load_config(config_path), use_cache=False)
    pruned = ctx.pruner.prune(copy.deepcopy(ctx.base_model), uniform=0.5).model
    path = export_onnx(pruned, example_input(ctx.task, ctx.config), ctx.workdir / "trt-candidate.onnx")
    measured = measure_speedup(path, ctx.base_onnx, ctx.latency.replace(provider="tensorrt"))
    assert measured.candidate.provider == "TensorrtExecutionProvider", measured.candidate.provider
    return {"provider": measured.candidate.provider, "speedup": measured.speedup, "latency_ms": measured.candidate.median_ms}


def check(dry: bool, source: pathlib.Path, trials: int, workdir: pathlib.Path) -> dict[str, Any]:
    """Run every step; assert where the stages ran; return the record."""
    device, provider = ("cpu", "cpu") if dry else ("cuda", "cuda")
    gpu_study = write_study(source, workdir, "gpu-check", device, provider, dry, trials)
    cpu_study = write_study(source, workdir, "gpu-check-cpu", "cpu", "cpu", dry, trials)
    stages: dict[str, float] = {}
    start = time.perf_counter()
    trial_rows = run_study(gpu_study, trials)
    stages["study"] = time.perf_counter() - start
    gpu = one_candidate(gpu_study)
    cpu = one_candidate(cpu_study)
    want = "cpu" if dry else "cuda"
    assert trial_rows and all(str(t["device"]).startswith(want) for t in trial_rows), trial_rows
    assert {t["host_id"] for t in trial_rows} == {gpu["host_id"]}, "trials were timed on another target than the check's"
    assert gpu["model_device"].startswith(want), f"the finetuned model is on {gpu['model_device']}, not {want}"
    expected = "CPUExecutionProvider" if dry else "CUDAExecutionProvider"
    assert gpu["provider"] == expected, f"timed on {gpu['provider']}, not {expected}"
    trt = None if dry else tensorrt_timing(gpu_study)
    return {
        "dry_run": dry,
        "device": gpu["model_device"],
        "providers": [p for p in (gpu["provider"], trt and trt["provider"]) if p],
        "gpu_model": gpu["gpu_model"],
        "gpu_driver": gpu["gpu_driver"],
        "trials": trial_rows,
        "candidate_gpu": gpu,
        "candidate_cpu": cpu,
        "tensorrt": trt,
        "cpu_vs_gpu_trial_time_ratio": round(cpu["trial_seconds"] / gpu["trial_seconds"], 3),
        "study_seconds": round(stages["study"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", "--quick", dest="dry_run", action="store_true", help="run on the CPU (device cpu, provider cpu, tiny budget); output to a temp folder")
    parser.add_argument("--config", default=str(CONFIG), help="study YAML of a built-in task (default: studies/digits-resnet.yaml)")
    parser.add_argument("--trials", type=int, default=None, help="trials of the study (default 4; 2 with --dry-run)")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/gpu_check.json; a temp file with --dry-run)")
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: torch sees no CUDA GPU here; run it on a GPU machine, or pass --dry-run", file=sys.stderr)
            return 2
    trials = args.trials or (2 if args.dry_run else 4)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        record = check(args.dry_run, pathlib.Path(args.config).resolve(), trials, pathlib.Path(tmp))
        record["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        out = pathlib.Path(args.out) if args.out else (pathlib.Path(tempfile.mkdtemp(prefix="gpu-check-out-")) / "gpu_check_dry.json" if args.dry_run else RESULTS)
        if args.dry_run and out.resolve() == RESULTS.resolve():
            print("gpu_check: a dry run never writes the committed GPU result; pass another --out", file=sys.stderr)
            return 2
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"gpu_check: device {record['device']}, providers {', '.join(record['providers'])}, "
          f"CPU/GPU trial time {record['cpu_vs_gpu_trial_time_ratio']}x -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
