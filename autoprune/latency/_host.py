"""Host provenance: which CPU, instruction sets, cores, ONNX Runtime and provider produced a latency number.

A latency or speedup is only comparable with another one taken on the same kind of host.  Every result
carries :func:`host_fingerprint`; its ``fingerprint_id`` hashes only the fields that change speed, so two
identical machines share an id (and a latency cache) while a different CPU or ORT version never does.
Timed on a GPU provider, the fingerprint also names the provider's options, the GPU model and its driver,
so timings from different targets never mix; on the CPU provider it is what it always was (same id).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Mapping
from typing import Any

import onnxruntime

from autoprune.latency._providers import GPU_PROVIDERS
from autoprune.latency._providers import provider_name

# Instruction-set flags that change which ORT kernels run (x86 names from /proc/cpuinfo "flags",
# ARM names from "Features").  Everything else in the flags line does not affect inference speed.
_RELEVANT_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512cd",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)

# The fields hashed into fingerprint_id: the ones that decide how fast a model runs.  Hostname, affinity
# and Python version are provenance only.
_SPEED_FIELDS = ("cpu_model", "flags", "logical_cores", "physical_cores", "machine", "ort_version", "provider")
# Added to the hashed fields off the CPU provider only (so CPU studies keep their ids and caches).
_TARGET_FIELDS = ("provider_options", "gpu_model", "gpu_driver")

PROVIDER = "CPUExecutionProvider"


def _read_cpuinfo() -> list[dict[str, str]]:
    """Parse ``/proc/cpuinfo`` into one dict per logical CPU (empty where the file does not exist).

    Returns:
        A list of ``{field: value}`` dicts.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []
    cpus: list[dict[str, str]] = []
    for chunk in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields:
            cpus.append(fields)
    return cpus


def _physical_cores(cpus: list[dict[str, str]]) -> int:
    """Count distinct (package, core) pairs; fall back to the logical count when they are not listed.

    Args:
        cpus: Parsed ``/proc/cpuinfo`` entries.

    Returns:
        The number of physical cores.
    """
    pairs = {(c.get("physical id"), c.get("core id")) for c in cpus if "core id" in c}
    if pairs:
        return len(pairs)
    return os.cpu_count() or 1


def _gpu(device_id: int) -> tuple[str, str]:
    """``(model, driver)`` of GPU ``device_id`` from ``nvidia-smi`` (torch's name where that is missing).

    Returns:
        ``"unknown"`` for what cannot be found.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, f"--id={device_id}", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        name, sep, driver = out.partition(",")
        if sep:
            return name.strip(), driver.strip()
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device_id), "unknown"
    except Exception:  # provenance only: a broken CUDA setup must not stop the timing here
        pass
    return "unknown", "unknown"


def _target_fields(provider: str, options: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The fingerprint fields of a provider other than the CPU one (its options, and the GPU it runs on)."""
    fields: dict[str, Any] = {"provider": provider_name(provider), "provider_options": dict(options)}
    gpu_model, gpu_driver = _gpu(int(dict(options).get("device_id", 0))) if provider in GPU_PROVIDERS else ("none", "none")
    fields.update(gpu_model=gpu_model, gpu_driver=gpu_driver)
    return fields


@functools.lru_cache(maxsize=8)
def _cached_fingerprint(provider: str = "cpu", options: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, Any], ...]:
    """Compute the fingerprint once per process and provider (``/proc/cpuinfo`` does not change under us).

    Returns:
        The fingerprint as sorted items, so the cached value cannot be mutated by callers.
    """
    cpus = _read_cpuinfo()
    first = cpus[0] if cpus else {}
    cpu_model = first.get("model name") or first.get("Hardware") or platform.processor() or "unknown"
    flag_words = set((first.get("flags") or first.get("Features") or "").split())
    flags = sorted(f for f in _RELEVANT_FLAGS if f in flag_words)
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu_model": cpu_model,
        "flags": flags,
        "logical_cores": os.cpu_count() or 1,
        "physical_cores": _physical_cores(cpus),
        "machine": platform.machine(),
        "ort_version": onnxruntime.__version__,
        "provider": PROVIDER,
        "hostname": socket.gethostname(),
        "affinity_cores": affinity,
        "python": platform.python_version(),
    }
    hashed: tuple[str, ...] = _SPEED_FIELDS
    if provider != "cpu":
        info.update(_target_fields(provider, options))
        hashed = _SPEED_FIELDS + _TARGET_FIELDS
    speed = json.dumps({k: info[k] for k in hashed}, sort_keys=True)
    info["fingerprint_id"] = hashlib.sha256(speed.encode("utf-8")).hexdigest()[:16]
    return tuple(sorted(info.items()))


def host_fingerprint(provider: str = "cpu", provider_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Describe this host, timed on ``provider``, for provenance and caching.

    Args:
        provider: ``latency.provider`` key; off the CPU the fingerprint adds ``provider_options``,
            ``gpu_model`` and ``gpu_driver`` and hashes them too.
        provider_options: ``latency.provider_options``.

    Returns:
        A dict with ``cpu_model``, ``flags`` (the speed-relevant instruction sets), ``logical_cores``,
        ``physical_cores``, ``machine``, ``ort_version``, ``provider``, ``hostname``, ``affinity_cores``,
        ``python`` and ``fingerprint_id`` (16 hex digits of a sha256 over the speed-relevant fields only).

    Example:
        >>> fp = host_fingerprint()
        >>> len(fp["fingerprint_id"])
        16
    """
    options = tuple(sorted((str(k), str(v)) for k, v in (provider_options or {}).items()))
    info = dict(_cached_fingerprint(provider, options if provider != "cpu" else ()))
    info["flags"] = list(info["flags"])
    if "provider_options" in info:
        info["provider_options"] = dict(info["provider_options"])
    return info


def cpu_round_to() -> int:
    """Channel multiple that suits this CPU's ORT convolution kernels (used for ``round_to: auto``).

    ORT's CPU convolutions work on channel blocks of 16 with AVX-512 and 8 otherwise; channel counts off
    the block fall back to a slower layout.

    Returns:
        16 when the CPU has ``avx512f``, else 8.
    """
    return 16 if "avx512f" in host_fingerprint()["flags"] else 8
