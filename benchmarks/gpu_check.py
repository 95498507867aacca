"""GPU check: a short study end to end on a CUDA GPU, finetuned there and timed with ONNX Runtime's CUDA provider.

What it asserts (and records in ``benchmarks/results/gpu_check.json``):

- the study (``autoprune run`` on a built-in task, a few trials, tiny budgets) completes, and every finished
  trial records ``device: cuda:N`` and the host id of the CUDA provider's fingerprint (GPU model and driver);
- one candidate evaluated directly leaves its finetuned model on the GPU, and its timing names
  ``CUDAExecutionProvider``; where a session on ``TensorrtExecutionProvider`` really opens with it first,
  the same candidate is timed with TensorRT too;
- the same candidate on the CPU (device cpu, provider cpu) gives the CPU-vs-GPU trial time ratio; both
  sides are timed afresh (the latency cache is bypassed: after the study it holds the GPU timing of these
  widths, keyed by channels, host fingerprint and settings, and a cached timing would make the GPU side look
  seconds faster).

Every GPU provider ONNX Runtime lists is probed first with a one-node session
(:func:`autoprune.latency._providers.probe_provider`): onnxruntime-gpu lists CUDA and TensorRT whether or
not their libraries are installed.  Those that do not start are recorded under ``unusable_providers`` (name
and reason); when CUDA itself does not start, the GPU steps are skipped and the record says so.  The JSON is
written in every case, with ``ok`` and the ``error`` that ended the check, if any (exit 1 then).

The JSON holds the device, the providers, per-stage seconds of both candidate runs and of every trial, and
the ratio.  A machine without a GPU cannot run it; ``--dry-run`` runs the same steps on the CPU (device cpu,
provider cpu, a tiny model and budget; the GPU providers ORT lists are still probed) and writes to a temp
folder, never to ``benchmarks/results/``.

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
    """Evaluate one uniform candidate of the study directly, timed afresh: where its model ended, its timing, its stage seconds."""
    from autoprune.config import load_config
    from autoprune.device import model_device
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import evaluate_candidate

    ctx = StudyContext.build(load_config(config_path), use_cache=False)  # fresh on both sides of the ratio
    start = time.perf_counter()
    result = evaluate_candidate(ctx, uniform=ratio)
    assert not result.latency["cached"], "the candidate's timing came from a cache"
    return {
        "model_device": str(model_device(result.model)),
        "provider": result.latency["host"]["provider"],
        "host_id": result.latency["host"]["fingerprint_id"],
        "gpu_model": result.latency["host"].get("gpu_model"),
        "gpu_driver": result.latency["host"].get("gpu_driver"),
        "latency_cached": result.latency["cached"],
        "stage_seconds": {k: round(v, 4) for k, v in result.stage_seconds.items()},
        "trial_seconds": round(time.perf_counter() - start, 4),
        "speedup": result.speedup,
    }


def probe_providers(wanted: str) -> tuple[list[str], list[dict[str, str]]]:
    """Open a one-node session on ``wanted`` and on every GPU provider ORT lists: ``(usable keys, unusable ones)``.

    Each unusable provider is ``{"provider": ORT name, "key": latency.provider key, "reason": why}``.
    """
    import onnxruntime

    from autoprune.errors import AutopruneError
    from autoprune.latency._providers import GPU_PROVIDERS
    from autoprune.latency._providers import PROVIDERS
    from autoprune.latency._providers import probe_provider

    listed = onnxruntime.get_available_providers()
    keys = [wanted] + [k for k in GPU_PROVIDERS if k != wanted and PROVIDERS[k] in listed]
    usable, unusable = [], []
    for key in keys:
        try:
            probe_provider(key)
            usable.append(key)
        except AutopruneError as exc:
            unusable.append({"provider": PROVIDERS[key], "key": key, "reason": str(exc)})
    return usable, unusable


def tensorrt_timing(config_path: pathlib.Path) -> dict[str, Any]:
    """The study's base against a uniform candidate, timed afresh with TensorRT (whose probe session opened on it)."""
    from autoprune.config import load_config
    from autoprune.latency import export_onnx
    from autoprune.latency import measure_speedup
    from autoprune.trial.candidate import StudyContext
    from autoprune.trial.candidate import example_input

    ctx = StudyContext.build(load_config(config_path), use_cache=False)
    pruned = ctx.pruner.prune(copy.deepcopy(ctx.base_model), uniform=0.5).model
    path = export_onnx(pruned, example_input(ctx.task, ctx.config), ctx.workdir / "trt-candidate.onnx")
    measured = measure_speedup(path, ctx.base_onnx, ctx.latency.replace(provider="tensorrt"))
    assert measured.candidate.provider == "TensorrtExecutionProvider", measured.candidate.provider
    return {"provider": measured.candidate.provider, "speedup": measured.speedup, "latency_ms": measured.candidate.median_ms}


def gpu_steps(dry: bool, study: pathlib.Path, trials: int) -> dict[str, Any]:
    """The study and the direct candidate on the check's device and provider; asserts where every stage ran."""
    want = "cpu" if dry else "cuda"
    start = time.perf_counter()
    trial_rows = run_study(study, trials)
    seconds = time.perf_counter() - start
    gpu = one_candidate(study)
    assert trial_rows and all(str(t["device"]).startswith(want) for t in trial_rows), trial_rows
    assert {t["host_id"] for t in trial_rows} == {gpu["host_id"]}, "trials were timed on another target than the check's"
    assert gpu["model_device"].startswith(want), f"the finetuned model is on {gpu['model_device']}, not {want}"
    expected = "CPUExecutionProvider" if dry else "CUDAExecutionProvider"
    assert gpu["provider"] == expected, f"timed on {gpu['provider']}, not {expected}"
    return {
        "device": gpu["model_device"],
        "gpu_model": gpu["gpu_model"],
        "gpu_driver": gpu["gpu_driver"],
        "trials": trial_rows,
        "candidate_gpu": gpu,
        "study_seconds": round(seconds, 2),
    }


def optional_tensorrt(record: dict[str, Any], study: pathlib.Path) -> None:
    """Time with TensorRT where its probe opened; a timing that still fails joins ``unusable_providers``."""
    from autoprune.errors import AutopruneError

    if "tensorrt" not in record["usable_providers"] or record["dry_run"]:
        return
    try:
        record["tensorrt"] = tensorrt_timing(study)
    except (AutopruneError, AssertionError) as exc:
        reason = str(exc) or type(exc).__name__
        record["unusable_providers"].append({"provider": "TensorrtExecutionProvider", "key": "tensorrt", "reason": reason})


def check(dry: bool, source: pathlib.Path, trials: int, workdir: pathlib.Path, record: dict[str, Any]) -> None:
    """Run every step into ``record`` (filled as far as the check got when a step fails)."""
    device, provider = ("cpu", "cpu") if dry else ("cuda", "cuda")
    record.update(dry_run=dry, ok=False, error=None, device=None, providers=[], tensorrt=None, cpu_vs_gpu_trial_time_ratio=None)
    record["usable_providers"], record["unusable_providers"] = probe_providers(provider)
    cpu_study = write_study(source, workdir, "gpu-check-cpu", "cpu", "cpu", dry, trials)
    if provider not in record["usable_providers"]:
        record["error"] = f"latency.provider {provider} did not start here; the GPU steps were skipped (see unusable_providers)"
        record["candidate_cpu"] = one_candidate(cpu_study)
        return
    gpu_study = write_study(source, workdir, "gpu-check", device, provider, dry, trials)
    record.update(gpu_steps(dry, gpu_study, trials))
    record["candidate_cpu"] = cpu = one_candidate(cpu_study)
    record["cpu_vs_gpu_trial_time_ratio"] = round(cpu["trial_seconds"] / record["candidate_gpu"]["trial_seconds"], 3)
    optional_tensorrt(record, gpu_study)
    record["providers"] = [p for p in (record["candidate_gpu"]["provider"], (record["tensorrt"] or {}).get("provider")) if p]
    record["ok"] = True


def run_check(dry: bool, source: pathlib.Path, trials: int) -> dict[str, Any]:
    """:func:`check` in a temp folder; whatever ends it early is recorded as ``error`` instead of ending the script."""
    record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        try:
            check(dry, source, trials, pathlib.Path(tmp), record)
        except Exception as exc:  # noqa: BLE001 - the record says what stopped the check; the JSON is written regardless
            record["ok"] = False
            record["error"] = f"{type(exc).__name__}: {exc}"
    record["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", "--quick", dest="dry_run", action="store_true",
                        help="run on the CPU (device cpu, provider cpu, tiny budget); output to a temp folder")
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
    if args.out:
        out = pathlib.Path(args.out)
    elif args.dry_run:
        out = pathlib.Path(tempfile.mkdtemp(prefix="gpu-check-out-")) / "gpu_check_dry.json"
    else:
        out = RESULTS
    if args.dry_run and out.resolve() == RESULTS.resolve():
        print("gpu_check: a dry run never writes the committed GPU result; pass another --out", file=sys.stderr)
        return 2
    record = run_check(args.dry_run, pathlib.Path(args.config).resolve(), trials)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for bad in record.get("unusable_providers", []):
        print(f"gpu_check: {bad['provider']} is not usable here: {bad['reason']}", file=sys.stderr)
    if not record["ok"]:
        print(f"gpu_check: failed: {record['error']} -> {out}", file=sys.stderr)
        return 1
    print(f"gpu_check: device {record['device']}, providers {', '.join(record['providers'])}, "
          f"CPU/GPU trial time {record['cpu_vs_gpu_trial_time_ratio']}x -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
