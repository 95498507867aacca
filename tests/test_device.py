"""Devices and execution providers: the config keys, the refusals, the provider plumbing, GPU workers, the GPU check.

No GPU here: the CUDA paths are checked by what they refuse, ONNX Runtime's CPU provider is named explicitly,
and ``worker --gpus`` runs with ``$AUTOPRUNE_FAKE_GPUS`` (one process per listed GPU, each on the CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import onnxruntime
import optuna
import pytest
import torch
from conftest import run_cli
from conftest import write_study

from autoprune.config import LatencyConfig
from autoprune.config import parse_config
from autoprune.device import DEVICE_ENV
from autoprune.device import FAKE_GPUS_ENV
from autoprune.device import DeviceLoader
from autoprune.device import check_device
from autoprune.device import check_targets
from autoprune.device import gpu_devices
from autoprune.errors import ConfigError
from autoprune.errors import LatencyError
from autoprune.latency import LatencyCache
from autoprune.latency import LatencySettings
from autoprune.latency import export_onnx
from autoprune.latency import host_fingerprint
from autoprune.latency import measure
from autoprune.latency._providers import PROVIDERS
from autoprune.latency._providers import _probe
from autoprune.latency._providers import probe_provider
from autoprune.latency._providers import require_provider
from autoprune.latency._session import open_session
from autoprune.latency._timer import _Subject
from autoprune.latency._timer import bind_io
from autoprune.trial.recovery import recover

ROOT = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
ORT_HAS_CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture
def net_onnx(tmp_path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    return export_onnx(net, torch.zeros(1, 1, 8, 8), tmp_path / "net.onnx")


# Config --------------------------------------------------------------------------------------------------
def test_config_reads_device_amp_loader_and_provider(monkeypatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    cfg = parse_config({"name": "s"})
    assert (cfg.device, cfg.recovery.amp, cfg.latency.provider, cfg.latency.include_copies) == ("auto", "off", "cpu", False)
    cfg = parse_config({
        "name": "s", "device": "cuda:1", "recovery": {"amp": "bf16"}, "loader": {"workers": 2, "pin_memory": True},
        "latency": {"provider": "tensorrt", "provider_options": {"device_id": 1, "trt_fp16_enable": True}, "include_copies": True},
    })
    assert (cfg.device, cfg.recovery.amp, cfg.loader.workers, cfg.loader.pin_memory) == ("cuda:1", "bf16", 2, True)
    assert cfg.latency.provider_options == {"device_id": 1, "trt_fp16_enable": True}
    # Every provider the timer knows is a value the config accepts, and no other.
    assert set(typing.get_args(LatencyConfig.model_fields["provider"].annotation)) == set(PROVIDERS)


@pytest.mark.parametrize(("data", "key"), [
    ({"device": "gpu"}, "key 'device': unknown device 'gpu'"),
    ({"recovery": {"amp": "int8"}}, "key 'recovery.amp'"),
    ({"latency": {"provider": "vulkan"}}, "key 'latency.provider'"),
    ({"latency": {"provider_options": {"x": [1]}}}, "key 'latency.provider_options'"),
])
def test_config_refuses_unknown_values(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(".", r"\.")):
        parse_config({"name": "s", **data}, source=Path("s.yaml"))


def test_device_env_overrides_the_file(monkeypatch, tmp_path: Path) -> None:
    from autoprune.config import load_config

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndevice: cuda\n")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert load_config(path).device == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match="AUTOPRUNE_DEVICE"):
        load_config(path)


# Refusals ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="this host has CUDA")
def test_cuda_device_is_refused_with_what_is_available() -> None:
    with pytest.raises(ConfigError, match=r"device: cuda:2 is not available; this torch .* has cpu.*set device: cpu"):
        check_device("cuda:2")
    assert check_device("auto") == torch.device("cpu") == check_device("cpu")


@pytest.mark.skipif(ORT_HAS_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_missing_provider_is_refused_with_what_ort_has() -> None:
    with pytest.raises(LatencyError, match=r"latency.provider: cuda needs CUDAExecutionProvider; this ONNX Runtime [0-9.]+ has .*"
                                            r"CPUExecutionProvider.*install autoprune\[gpu\].*or set latency.provider: cpu"):
        require_provider("cuda")


@pytest.mark.skipif(HAS_CUDA or ORT_HAS_CUDA, reason="this host has CUDA")
@pytest.mark.parametrize(("overrides", "args", "says"), [
    ({"latency": {"provider": "cuda"}}, ["run"], "latency.provider: cuda needs CUDAExecutionProvider; this ONNX Runtime"),
    ({}, ["worker", "--device", "cuda"], "device: cuda is not available; this torch"),
])
@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_cli_refuses_before_training(study_factory, overrides: dict, args: list[str], says: str) -> None:
    config = study_factory(overrides, trained_base=False)
    res = run_cli(args[0], config, *args[1:])
    err = res.stderr.strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert err.startswith(f"error: {config}") and says in err, err
    assert not list(config.parent.rglob("base.pt")), "nothing may be trained before the refusal"


# A provider list that lies ------------------------------------------------------------------------------
# onnxruntime-gpu lists CUDA and TensorRT on hosts without their libraries; here the CPU wheel is made to
# list them, and a real session on them falls back to the CPU, as it does on such a host.
LYING = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
LIE_SITECUSTOMIZE = """
import onnxruntime
onnxruntime.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
"""


def lying_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess whose ONNX Runtime lists ``LYING`` (a ``sitecustomize`` first on its path)."""
    lie = tmp_path / "lie"
    lie.mkdir()
    (lie / "sitecustomize.py").write_text(LIE_SITECUSTOMIZE)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(lie), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def lying_providers(monkeypatch):
    _probe.cache_clear()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(LYING))
    yield
    _probe.cache_clear()


@pytest.mark.skipif(ORT_HAS_CUDA, reason="this ONNX Runtime has the CUDA provider")
@pytest.mark.parametrize(("key", "fix"), [("cuda", "install the CUDA and cuDNN libraries"), ("tensorrt", "install the TensorRT (libnvinfer)")])
def test_probe_refuses_a_listed_provider_whose_session_falls_back(lying_providers, key: str, fix: str) -> None:
    assert require_provider(key) == PROVIDERS[key], "the list alone lets it through"
    with pytest.raises(LatencyError) as info:
        probe_provider(key, {"device_id": 0})
    message = str(info.value)
    assert message.startswith(f"latency.provider: {key}: a test session asked for {PROVIDERS[key]} fell back to CPUExecutionProvider")
    assert fix in message and "latency.provider: c" in message and "\n" not in message, message


@pytest.mark.skipif(ORT_HAS_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_check_targets_names_the_file_and_keeps_one_verdict_per_process(lying_providers, tmp_path: Path) -> None:
    from autoprune.config import load_config

    config = load_config(write_study(tmp_path, {"latency": {"provider": "cuda"}}))
    for _ in range(2):
        with pytest.raises(ConfigError, match=rf"^{config.source}: latency.provider: cuda: a test session .* fell back to CPUExecutionProvider"):
            check_targets(config)
    assert _probe.cache_info().misses == 1 and _probe.cache_info().hits == 1, "the probe session opens once per provider"
    assert probe_provider("cpu") == "CPUExecutionProvider"


def test_probe_turns_a_session_that_raises_into_one_line(lying_providers, monkeypatch) -> None:
    real = onnxruntime.InferenceSession

    def failing(model, sess_options=None, providers=None, **kwargs):
        if providers and "CUDAExecutionProvider" in str(providers[0]):  # what onnxruntime-gpu raises without a GPU
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected ; GPU=0\nstack trace ...")
        return real(model, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", failing)
    with pytest.raises(
        LatencyError,
        match=r"^latency.provider: cuda: ONNX Runtime could not open and run a one-node test session on CUDAExecutionProvider "
        r"\(CUDA failure 100: no CUDA-capable device is detected ; GPU=0\); install",
    ):
        probe_provider("cuda")
    assert probe_provider("cpu") == "CPUExecutionProvider"


@pytest.mark.skipif(HAS_CUDA or ORT_HAS_CUDA, reason="this host has CUDA")
def test_run_with_a_lying_provider_list_exits_before_training(tmp_path: Path) -> None:
    config = write_study(tmp_path / "study", {"latency": {"provider": "cuda"}})
    env = lying_env(tmp_path)
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", "from autoprune.cli import main; main()", "run", str(config)],
                         capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.monotonic() - start
    err = res.stderr.strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, res.stderr
    assert err.startswith(f"error: {config}: latency.provider: cuda: a test session asked for CUDAExecutionProvider fell back to "
                          "CPUExecutionProvider") and "or set latency.provider: cpu" in err, err
    assert sorted(p.name for p in config.parent.rglob("*")) == ["study.yaml"], "nothing may be trained or stored before the refusal"
    # Interpreter start and imports take seconds on this shared host; the 2-epoch base and the sweeps take longer.
    assert elapsed < 60, f"the refusal took {elapsed:.0f} s"


# Provider plumbing ---------------------------------------------------------------------------------------
def test_cpu_provider_named_explicitly_times_on_it(net_onnx: Path) -> None:
    session = open_session(net_onnx, threads=1, provider="cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]
    stats = measure(net_onnx, LatencySettings(provider="cpu", repeats=10, blocks=2, warmup=1, lock=False))
    assert stats.provider == "CPUExecutionProvider" == stats.host["provider"]
    assert stats.settings["provider"] == "cpu" and stats.settings["include_copies"] is False


def test_io_binding_runs_the_model_from_bound_buffers(net_onnx: Path) -> None:
    session = open_session(net_onnx, threads=1, provider="cpu")
    data = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    outputs = [o.name for o in session.get_outputs()]
    subject = bind_io(_Subject(net_onnx, session, {"input": data}, outputs), "cpu")
    subject.run()
    bound = subject.binding.copy_outputs_to_cpu()[0]
    np.testing.assert_allclose(bound, session.run(outputs, {"input": data})[0], rtol=1e-6)


def test_fingerprint_names_the_provider_and_keeps_cpu_ids() -> None:
    cpu = host_fingerprint("cpu")
    assert cpu == host_fingerprint() and cpu["provider"] == "CPUExecutionProvider" and "gpu_model" not in cpu
    cuda = host_fingerprint("cuda", {"device_id": 0})
    assert cuda["provider"] == "CUDAExecutionProvider" and {"gpu_model", "gpu_driver"} <= set(cuda)
    assert cuda["provider_options"] == {"device_id": "0"}
    ids = {cpu["fingerprint_id"], cuda["fingerprint_id"], host_fingerprint("openvino")["fingerprint_id"]}
    assert len(ids) == 3, "timings on different targets must never share a host id"


def test_cache_keys_split_by_provider_only_off_the_cpu() -> None:
    channels = {"g": 8}
    plain = LatencyCache.key(channels, "h", LatencySettings())
    assert LatencyCache.key(channels, "h", LatencySettings(provider="cpu", include_copies=True)) == plain
    bound = LatencyCache.key(channels, "h", LatencySettings(provider="cuda"))
    assert bound != plain and bound != LatencyCache.key(channels, "h", LatencySettings(provider="cuda", include_copies=True))


# Torch stages --------------------------------------------------------------------------------------------
def test_cpu_loader_is_untouched_and_device_loader_moves_batches(tiny_task) -> None:
    loader = tiny_task.loader("val", 16)
    assert isinstance(loader, torch.utils.data.DataLoader)
    wrapped = DeviceLoader(loader, torch.device("cpu"))
    x, y = next(iter(wrapped))
    assert len(wrapped) == len(loader) and x.device.type == "cpu" and y.shape[0] == 16


def test_bf16_finetune_runs_on_the_cpu(tiny_config, tiny_task, tiny_base_model) -> None:
    settings = tiny_config.recovery.model_copy(update={"amp": "bf16", "finetune_steps": 2, "calib_size": 0})
    report = recover(tiny_base_model, tiny_task, settings)
    assert report.steps == 2 and all(p.dtype == torch.float32 for p in tiny_base_model.parameters())


# GPU workers ---------------------------------------------------------------------------------------------
def test_gpu_list_parsing(monkeypatch) -> None:
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    assert gpu_devices("0, 2") == ["cuda:0", "cuda:2"]
    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    assert gpu_devices("0,1,3") == ["cpu"] * 3
    for bad in ("", "a", "0,0"):
        with pytest.raises(ConfigError, match="--gpus"):
            gpu_devices(bad)


def test_worker_gpus_on_sqlite_is_refused(study_factory, monkeypatch) -> None:
    from autoprune.errors import StorageError
    from autoprune.search.worker import run_gpu_workers

    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    monkeypatch.delenv("AUTOPRUNE_STORAGE", raising=False)
    with pytest.raises(StorageError, match="2 workers on SQLite"):
        run_gpu_workers(str(study_factory()), None, None, "0,1")


@pytest.mark.skipif(ORT_HAS_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_worker_gpus_refuses_a_provider_that_does_not_start_before_any_process(lying_providers, monkeypatch, tmp_path: Path) -> None:
    from autoprune.search.worker import run_gpu_workers

    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    config = write_study(tmp_path, {"latency": {"provider": "cuda"}})
    with pytest.raises(ConfigError, match=rf"^{config}: latency.provider: cuda: a test session asked for CUDAExecutionProvider fell back"):
        run_gpu_workers(str(config), f"journal:{tmp_path / 'study.log'}", None, "0,1")
    assert not (tmp_path / "study.log").exists()


@pytest.mark.slow
def test_worker_gpus_starts_one_process_per_device(study_factory, tmp_path: Path) -> None:
    config = study_factory({"search": {"trials": 2, "sweep_ratios": [0.5]}, "max_drop": 0.9})
    url = f"journal:{tmp_path / 'study.log'}"
    created = run_cli("create", config, "--storage", url)
    assert created.returncode == 0, created.stderr[-3000:]
    env = dict(os.environ, OMP_NUM_THREADS="1", **{FAKE_GPUS_ENV: "1"})
    cmd = [sys.executable, "-c", "from autoprune.cli import main; main()", "worker", str(config), "--storage", url,
           "--gpus", "0,1", "--id", "box", "--trials", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for worker in ("box-gpu0", "box-gpu1"):  # each process joins on its own device before looking at the target
        assert f"[{worker}] joined study" in res.stderr and "device cpu, timing on cpu" in res.stderr, res.stderr[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    trials = optuna.load_study(study_name="tiny-digits", storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) >= 3
    assert {t.user_attrs["device"] for t in trials} == {"cpu"}
    assert {t.user_attrs["worker"] for t in trials} <= {"box-gpu0", "box-gpu1"}


# The GPU check -------------------------------------------------------------------------------------------
@pytest.mark.slow  # a fresh interpreter or a training run per case: the fast lane skips it
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """The dry run completes with fresh timings on both sides; GPU providers that are listed but do not start are recorded."""
    import json

    out = tmp_path / "dry.json"
    results = ROOT / "benchmarks" / "results" / "gpu_check.json"
    before = results.read_bytes() if results.is_file() else None
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=240, env=lying_env(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["ok"] and record["error"] is None
    assert record["dry_run"] and record["device"] == "cpu" and record["providers"] == ["CPUExecutionProvider"]
    assert {t["device"] for t in record["trials"]} == {"cpu"} and record["cpu_vs_gpu_trial_time_ratio"] > 0
    assert {"finetune", "latency"} <= set(record["candidate_gpu"]["stage_seconds"])
    assert record["candidate_gpu"]["latency_cached"] is False is record["candidate_cpu"]["latency_cached"]
    assert record["tensorrt"] is None, "a dry run times on the CPU only"
    if not ORT_HAS_CUDA:  # the CPU wheel, made to list CUDA and TensorRT: both are probed, refused and recorded
        unusable = {u["provider"]: u["reason"] for u in record["unusable_providers"]}
        assert set(unusable) == {"CUDAExecutionProvider", "TensorrtExecutionProvider"}, record["unusable_providers"]
        assert all("fell back to CPUExecutionProvider" in reason for reason in unusable.values()), unusable
        assert "TensorrtExecutionProvider is not usable here" in res.stderr
    assert (results.read_bytes() if results.is_file() else None) == before, "a dry run must not write the GPU result"


@pytest.mark.skipif(HAS_CUDA or ORT_HAS_CUDA, reason="this host has CUDA")
def test_gpu_check_records_a_cuda_provider_that_does_not_start(lying_providers, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    source = write_study(tmp_path / "source")
    record = gpu_check.run_check(False, source, 1)
    assert record["ok"] is False and record["error"].startswith("latency.provider cuda did not start here"), record
    assert [u["provider"] for u in record["unusable_providers"]] == ["CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert "fell back to CPUExecutionProvider" in record["unusable_providers"][0]["reason"]
    assert record["providers"] == [] and "trials" not in record and record["cpu_vs_gpu_trial_time_ratio"] is None
    assert record["candidate_cpu"]["provider"] == "CPUExecutionProvider" and not record["candidate_cpu"]["latency_cached"]
