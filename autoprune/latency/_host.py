"""Host provenance: which CPU, instruction sets, cores and ONNX Runtime produced a latency number.

A latency or speedup is only comparable with another one taken on the same kind of host.  Every result
carries :func:`host_fingerprint`; its ``fingerprint_id`` hashes only the fields that change speed, so two
identical machines share an id (and a latency cache) while a different CPU or ORT version never does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
from typing import Any

import onnxruntime

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


@functools.lru_cache(maxsize=1)
def _cached_fingerprint() -> tuple[tuple[str, Any], ...]:
    """Compute the fingerprint once per process (``/proc/cpuinfo`` does not change under us).

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
    speed = json.dumps({k: info[k] for k in _SPEED_FIELDS}, sort_keys=True)
    info["fingerprint_id"] = hashlib.sha256(speed.encode("utf-8")).hexdigest()[:16]
    return tuple(sorted(info.items()))


def host_fingerprint() -> dict[str, Any]:
    """Describe this host for provenance and caching.

    Returns:
        A dict with ``cpu_model``, ``flags`` (the speed-relevant instruction sets), ``logical_cores``,
        ``physical_cores``, ``machine``, ``ort_version``, ``provider``, ``hostname``, ``affinity_cores``,
        ``python`` and ``fingerprint_id`` (16 hex digits of a sha256 over the speed-relevant fields only).

    Example:
        >>> fp = host_fingerprint()
        >>> len(fp["fingerprint_id"])
        16
    """
    info = dict(_cached_fingerprint())
    info["flags"] = list(info["flags"])
    return info


def cpu_round_to() -> int:
    """Channel multiple that suits this CPU's ORT convolution kernels (used for ``round_to: auto``).

    ORT's CPU convolutions work on channel blocks of 16 with AVX-512 and 8 otherwise; channel counts off
    the block fall back to a slower layout.

    Returns:
        16 when the CPU has ``avx512f``, else 8.
    """
    return 16 if "avx512f" in host_fingerprint()["flags"] else 8
