"""The architecture JSON: the unit of exchange that rebuilds a pruned model from the base checkpoint.

It records, per group, the kept channel *indices*, so :func:`apply_architecture` replays the prune on a
freshly built base model loaded with ``weights_only=True``: no pickle of a pruned model is ever needed.
The JSON Schema is published as ``autoprune/schemas/architecture.schema.json``.

Example:
    >>> arch = read_architecture("arch.json")  # doctest: +SKIP
    >>> model = apply_architecture(arch).model  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import jsonschema
import torch
from torch import nn

from autoprune.base_model import cpu_state
from autoprune.base_model import file_sha256
from autoprune.base_model import load_state_dict
from autoprune.base_model import load_weights
from autoprune.config import load_config
from autoprune.errors import ArchitectureError
from autoprune.errors import AutopruneError
from autoprune.jsonfile import read_json
from autoprune.jsonfile import write_json
from autoprune.redact import storage_place
from autoprune.space.widths import reachable_widths
from autoprune.tasks import build_task
from autoprune.trial.pruning_setup import make_pruner

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.pruning import Group
    from autoprune.pruning import PruneResult
    from autoprune.pruning.guards import GuardSettings
    from autoprune.tasks import Task

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "architecture.schema.json"
REQUIRED = ("schema_version", "task", "model", "base_checkpoint_sha256", "input_shape", "criterion", "groups", "metrics", "latency", "provenance")
GROUP_REQUIRED = ("name", "original_channels", "kept_channels", "ratio", "kept_indices")


def build_architecture(
    config: StudyConfig,
    task: Task,
    result: PruneResult,
    base_sha256: str,
    round_to: int,
    metrics: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The architecture dict of a prune result.

    Args:
        config: the study config (task, model, criterion, storage).
        task: the task (input shape).
        result: the prune result (kept channels and indices).
        base_sha256: sha256 of the base checkpoint the indices refer to.
        round_to: channel rounding used.
        metrics: measured metrics, if any.
        latency: latency figures and their provenance, if any.
        provenance: extra provenance (trial number, weights path, ...).

    Returns:
        A JSON-serialisable dict following the published schema.
    """
    prov = _provenance(config, provenance)
    return {
        "schema_version": SCHEMA_VERSION,
        "task": config.task,
        "task_options": dict(config.task_options),
        "model": config.model,
        "model_options": dict(config.model_options),
        "base_checkpoint_sha256": base_sha256,
        "input_shape": list(task.input_shape()),
        "criterion": config.criterion,
        "round_to": round_to,
        "groups": _group_entries(result),
        "clamps": [c.as_dict() for c in result.clamps],
        "macs": result.macs,
        "params": result.params,
        "metrics": metrics or {},
        "latency": latency or {},
        "provenance": prov,
    }


def _provenance(config: StudyConfig, provenance: dict[str, Any] | None) -> dict[str, Any]:
    """Where an architecture comes from: the study's defaults, updated with ``provenance``.

    The file is handed on, so it names the study's storage only by :func:`storage_place` (no user, no
    password); a ``storage`` given in ``provenance`` (older callers) becomes that place.
    """
    prov = {
        "study": config.name,
        "trial": None,
        "locator": storage_place(config.storage_url()),
        "config": str(config.source) if config.source else None,
        "checkpoint": str(config.checkpoint_path()),
        "weights": None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "autoprune_version": _version(),
    }
    prov.update(provenance or {})
    if "storage" in prov:
        prov["locator"] = storage_place(prov.pop("storage"))
    return prov


def _group_entries(result: PruneResult) -> list[dict[str, Any]]:
    """The kept channels and indices of each group, as the schema lists them."""
    return [
        {
            "name": g.name,
            "original_channels": g.channels,
            "kept_channels": result.kept[g.name],
            "ratio": round(1.0 - result.kept[g.name] / g.channels, 6),
            "kept_indices": list(result.kept_indices[g.name]),
        }
        for g in result.groups
    ]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("autoprune")
    except Exception:
        return "unknown"


def write_architecture(arch: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate and write an architecture JSON (atomically)."""
    validate_architecture(arch, Path(path))
    return write_json(path, arch)


def read_architecture(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an architecture JSON."""
    p = Path(path)
    if not p.is_file():
        raise ArchitectureError(f"{p}: architecture file not found")
    arch = read_json(p, f"pass an architecture JSON written by autoprune (see {SCHEMA_PATH.name})", expect=object, error=ArchitectureError)
    validate_architecture(arch, p)
    return arch


@lru_cache(maxsize=1)
def _schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _field(path: Iterable[Any]) -> str:
    """A JSON path as the messages name it: ``groups[0].kept_indices[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the whole file)"


def validate_architecture(arch: Any, where: Path | str = "<architecture>") -> None:
    """Check what a reader relies on first, naming the group (kept channels and their indices agree and fit),
    then every field against the published JSON Schema; raise :class:`ArchitectureError` naming the first field
    that is wrong."""
    if not isinstance(arch, dict):
        raise ArchitectureError(f"{where}: an architecture file holds a JSON object")
    for key in REQUIRED:
        if key not in arch:
            raise ArchitectureError(f"{where}: field '{key}' is missing")
    if arch["schema_version"] != SCHEMA_VERSION:
        raise ArchitectureError(
            f"{where}: field 'schema_version' is {arch['schema_version']!r}; this autoprune reads version {SCHEMA_VERSION}"
        )
    if not isinstance(arch["groups"], list) or not arch["groups"]:
        raise ArchitectureError(f"{where}: field 'groups' must be a non-empty list")
    for i, g in enumerate(arch["groups"]):
        _check_group(i, g, where)
    shape = arch["input_shape"]
    if not isinstance(shape, list) or not all(_is_int(s) and s > 0 for s in shape):
        raise ArchitectureError(f"{where}: field 'input_shape' must be a list of positive integers")
    errors = sorted(_schema_validator().iter_errors(arch), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        first = errors[0]
        more = f" ({len(errors) - 1} more problem(s) after fixing it)" if len(errors) > 1 else ""
        raise ArchitectureError(f"{where}: field '{_field(first.path)}': {_short(first.message)}{more}; see {SCHEMA_PATH.name}")


def _check_group(i: int, g: Any, where: Path | str) -> None:
    """One entry of ``groups``: its kept channels fit its original channels, its indices list them."""
    if not isinstance(g, dict):
        raise ArchitectureError(f"{where}: field 'groups[{i}]' must be an object")
    for key in GROUP_REQUIRED:
        if key not in g:
            raise ArchitectureError(f"{where}: field 'groups[{i}].{key}' is missing")
    name = g["name"]
    orig, kept, idx = g["original_channels"], g["kept_channels"], g["kept_indices"]
    if not _is_int(orig) or orig < 1:
        raise ArchitectureError(f"{where}: group {name}: field 'original_channels' must be a positive integer")
    if not _is_int(kept) or not 1 <= kept <= orig:
        raise ArchitectureError(f"{where}: group {name}: field 'kept_channels' is {kept!r}, out of range [1, {orig}]")
    if isinstance(idx, list) and any(not _is_int(c) or not 0 <= c < orig for c in idx):
        raise ArchitectureError(f"{where}: group {name}: field 'kept_indices' has a channel outside [0, {orig})")
    if not isinstance(idx, list) or len(idx) != kept or len(set(idx)) != kept:
        raise ArchitectureError(f"{where}: group {name}: field 'kept_indices' must list {kept} distinct channel numbers (kept_channels)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(message: str, limit: int = 160) -> str:
    """A validator's message, cut to one readable line (it quotes the offending value, which may be huge)."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class AppliedArchitecture:
    """A model rebuilt from an architecture JSON (``warnings``: kept channels that break the config's guards)."""

    model: nn.Module
    task: Task
    config: StudyConfig
    result: PruneResult
    weights_loaded: bool
    warnings: list[str] = field(default_factory=list)


def apply_architecture(
    arch: dict[str, Any],
    config: StudyConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    where: str = "<architecture>",
    strict: bool = False,
) -> AppliedArchitecture:
    """Rebuild the pruned model from the base checkpoint and the JSON alone.

    Args:
        arch: a validated architecture dict.
        config: the study config; default: ``provenance.config``, only for a built-in task (plugin code is
            imported only from a config the caller names).
        checkpoint: the base checkpoint; default: the config's, then ``provenance.checkpoint``.
        weights: finetuned weights of the pruned model (state_dict); default: ``provenance.weights`` if present.
        where: name of the JSON file, for messages.
        strict: refuse kept channels that break the config's guards (floors, first-layer limit, the JSON's
            ``round_to``) instead of warning.

    Returns:
        The rebuilt model (eval mode) and what it was built from.
    """
    validate_architecture(arch, where)
    prov = arch.get("provenance") or {}
    config = _config_for(arch, config, where)
    task = build_task(config)
    ckpt = _checkpoint_for(arch, config, checkpoint, where)
    if list(task.input_shape()) != list(arch["input_shape"]):
        raise ArchitectureError(f"{where}: field 'input_shape' is {arch['input_shape']} but the task gives {list(task.input_shape())}")
    model = load_weights(task.build_model(), ckpt)
    pruner = make_pruner(config, task)
    groups = _matching_groups(arch, pruner.groups(model), where)
    breaches = guard_breaches(arch, groups, pruner.guards)
    if breaches and strict:
        raise ArchitectureError(f"{where}: {'; '.join(breaches)} (refused with --strict)")
    try:
        result = pruner.apply_indices(model, {g["name"]: g["kept_indices"] for g in arch["groups"]})
    except AutopruneError as exc:
        raise ArchitectureError(f"{where}: {exc}") from None
    weights_path = Path(weights) if weights else (Path(prov["weights"]) if prov.get("weights") else None)
    loaded = weights_path is not None and _load_pruned_weights(result.model, weights_path, where)
    result.model.eval()
    return AppliedArchitecture(result.model, task, config, result, loaded, breaches)


def _config_for(arch: dict[str, Any], config: StudyConfig | None, where: str) -> StudyConfig:
    """The caller's config, else ``provenance.config`` when its task is built in; it must build the JSON's model."""
    if config is None:
        if ":" in str(arch["task"]):
            raise ArchitectureError(
                f"{where}: field 'task' is the plugin {arch['task']!r}; apply imports plugin code only from a config "
                "you name: pass --config STUDY.yaml (never the path inside the JSON)"
            )
        cfg_path = (arch.get("provenance") or {}).get("config")
        if not cfg_path:
            raise ArchitectureError(f"{where}: field 'provenance.config' is empty; pass the study config with --config")
        config = load_config(cfg_path)
        if ":" in config.task:
            raise ArchitectureError(
                f"{where}: field 'provenance.config' names {cfg_path}, whose task is a plugin; pass --config STUDY.yaml "
                "(apply imports plugin code only from a config named on the command line)"
            )
    if config.task != arch["task"] or (config.model != arch["model"]):
        raise ArchitectureError(
            f"{where}: field 'task'/'model' is {arch['task']}/{arch['model']} but the config builds {config.task}/{config.model}"
        )
    return config


def _checkpoint_for(arch: dict[str, Any], config: StudyConfig, checkpoint: str | os.PathLike[str] | None, where: str) -> Path:
    """The base checkpoint the JSON's indices refer to (its sha256 must match)."""
    prov = arch.get("provenance") or {}
    ckpt = Path(checkpoint) if checkpoint else config.checkpoint_path()
    if not ckpt.is_file() and not checkpoint and prov.get("checkpoint"):
        ckpt = Path(prov["checkpoint"])
    if not ckpt.is_file():
        raise ArchitectureError(f"{where}: base checkpoint {ckpt} not found; pass it with --checkpoint")
    sha = file_sha256(ckpt)
    if sha != arch["base_checkpoint_sha256"]:
        raise ArchitectureError(
            f"{where}: field 'base_checkpoint_sha256' is {arch['base_checkpoint_sha256'][:12]}... but {ckpt} has "
            f"{sha[:12]}...; this architecture was made from another base checkpoint"
        )
    return ckpt


def _matching_groups(arch: dict[str, Any], model_groups: Iterable[Group], where: str) -> dict[str, Group]:
    """The model's groups by name; every one of them is in the JSON with its original channels."""
    groups = {g.name: g for g in model_groups}
    for g in arch["groups"]:
        if g["name"] not in groups:
            raise ArchitectureError(f"{where}: group {g['name']!r} (field 'groups') does not exist in the {arch['model']} model")
        if g["original_channels"] != groups[g["name"]].channels:
            raise ArchitectureError(
                f"{where}: group {g['name']}: field 'original_channels' is {g['original_channels']} but the model has {groups[g['name']].channels}"
            )
    missing = sorted(set(groups) - {g["name"] for g in arch["groups"]})
    if missing:
        raise ArchitectureError(f"{where}: field 'groups' lacks group(s) {', '.join(missing)} of the model")
    return groups


def guard_breaches(arch: dict[str, Any], groups: Mapping[str, Group], guards: GuardSettings) -> list[str]:
    """Groups whose kept channels the guards would never give (below a floor, past the first-layer limit, off the
    JSON's ``round_to`` grid); attention groups (whole heads) are left to the pruner's own check."""
    settings = dataclasses.replace(guards, round_to=int(arch.get("round_to") or guards.round_to))
    out = []
    for g in arch["groups"]:
        group = groups[g["name"]]
        if group.heads or group.tied_to:
            continue
        reach = reachable_widths(group.channels, settings, group.first_layer)
        if g["kept_channels"] not in reach:
            near = ", ".join(str(w) for w in sorted(reach, key=lambda w: abs(w - g["kept_channels"]))[:3])
            out.append(f"group {g['name']} keeps {g['kept_channels']} of {group.channels} channels, which the guards "
                       f"(min_channels {settings.min_channels}, min_fraction {settings.min_fraction}, "
                       f"round_to {settings.round_to}) never give; nearest: {near}")
    return out


def _load_pruned_weights(model: nn.Module, path: Path, where: str) -> bool:
    if not path.is_file():
        raise ArchitectureError(f"{where}: finetuned weights {path} (provenance.weights) not found; pass --weights or --no-weights")
    state = load_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArchitectureError(f"{path}: weights do not fit the rebuilt model: {str(exc).splitlines()[0]}") from None
    return True


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a pruned model's weights as a plain CPU state_dict (load it back with ``weights_only=True``, anywhere)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cpu_state(model), p)
    return p
