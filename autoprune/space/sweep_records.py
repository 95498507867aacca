"""What a baseline sweep point leaves behind so that its enqueued trial need not finetune it again.

The uniform and global trials a study enqueues (:func:`autoprune.search.study.enqueue_baselines`) have exactly
their sweep point's kept channels and get the same recipe, so evaluating them again repeats the sweep's
finetune for identical figures.  Every sweep point therefore writes, under ``<artifact_dir>/sweep-points/``,
its trial figures (``<kind>-<ratio>.json``: the user attrs a trial records), its architecture JSON and its
finetuned weights; the enqueued trial takes them over (:func:`load_sweep_record`) and uploads the files as
its own artifacts.  A record made under another identity (:func:`record_identity`: base model, criterion,
pruning, recovery or timing settings), a missing or unreadable file (a worker on another host, an artifact
folder from an older autoprune) is not reused: the trial evaluates itself.

Example:
    >>> sweep_stem("uniform", 0.3)
    'uniform-0.3000'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from autoprune.errors import ArtifactError
from autoprune.errors import AutopruneError
from autoprune.jsonfile import read_json
from autoprune.jsonfile import write_json
from autoprune.search.record import TrialRecord
from autoprune.selection.architecture import build_architecture
from autoprune.selection.architecture import save_weights

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.trial.candidate import CandidateResult
    from autoprune.trial.candidate import StudyContext

log = logging.getLogger("autoprune")
SWEEP_DIR = "sweep-points"
RECORD_VERSION = 1


def record_identity(config: StudyConfig, base_sha256: str) -> dict[str, Any]:
    """Everything that decides a candidate's figures besides its widths: a record made under another identity
    (another base, criterion, pruning guard, recovery recipe or timing setting) is not reused."""
    data = config.model_dump(mode="json", include={"task", "task_options", "model", "model_options", "criterion", "pruning", "recovery", "latency"})
    return json.loads(json.dumps({"base_sha256": base_sha256, **data}, sort_keys=True))


def sweep_stem(kind: str, ratio: float) -> str:
    return f"{kind}-{ratio:.4f}"


def write_candidate_files(
    ctx: StudyContext, result: CandidateResult, folder: Path, stem: str, provenance: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write a candidate's architecture JSON and finetuned weights into ``folder``: ``(arch, weights)``.

    Raises:
        ArtifactError: the candidate kept no model (a refused candidate has no files to write).
    """
    if result.model is None:
        raise ArtifactError(f"{stem}: the candidate was refused and kept no model; there are no weights to write")
    arch = build_architecture(
        ctx.config,
        ctx.task,
        result.prune,
        ctx.base_info.sha256,
        ctx.round_to,
        metrics={
            "metric_name": ctx.task.metric_name,
            "metric": result.metric.value,
            "metric_stderr": result.metric.stderr,
            "base_metric": ctx.base_metric.value,
            "drop": result.drop,
            "split": "val",
        },
        latency=result.latency,
        provenance=dict(provenance),
    )
    folder.mkdir(parents=True, exist_ok=True)
    arch_path = write_json(folder / f"arch-{stem}.json", arch, indent=2)
    weights_path = save_weights(result.model, folder / f"weights-{stem}.pt")
    return arch_path, weights_path


def save_sweep_record(ctx: StudyContext, kind: str, ratio: float, result: CandidateResult) -> Path:
    """Write a sweep point's figures, architecture and weights for its enqueued trial; returns the record."""
    folder = ctx.config.artifact_path() / SWEEP_DIR
    stem = sweep_stem(kind, ratio)
    arch, weights = write_candidate_files(ctx, result, folder, stem, {"sweep": kind, "ratio": ratio})
    record = {
        "version": RECORD_VERSION,
        "kind": kind,
        "ratio": ratio,
        "identity": record_identity(ctx.config, ctx.base_info.sha256),
        "attrs": result.attrs(ctx.config.max_drop),
        "arch": arch.name,
        "weights": weights.name,
    }
    return write_json(folder / f"{stem}.json", record)


@dataclass(frozen=True)
class SweepRecord:
    """A sweep point's figures (the trial record it stored) and the paths of its files."""

    kind: str
    ratio: float
    record: TrialRecord
    arch: Path
    weights: Path


def load_sweep_record(
    config: StudyConfig, kind: str, ratio: float, base_sha256: str, widths: Mapping[str, int], names: Sequence[str]
) -> SweepRecord | None:
    """The record of sweep point ``kind`` ``ratio`` when it fits this trial, else None (the trial evaluates).

    Args:
        config: the study config (its artifact folder; its recovery section is the recipe in force).
        kind / ratio: the sweep point the trial was enqueued for.
        base_sha256: the base checkpoint in force.
        widths: the trial's kept channels per searched group.
        names: the searched groups.
    """
    folder = config.artifact_path() / SWEEP_DIR
    path = folder / f"{sweep_stem(kind, ratio)}.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path, "the trial evaluates itself")
    except AutopruneError as exc:
        log.warning("not reusing sweep point %s %g: %s", kind, ratio, exc)
        return None
    raw_attrs = data.get("attrs")
    record = TrialRecord.from_attrs(raw_attrs if isinstance(raw_attrs, dict) else {})
    raw_channels = record.channels
    channels = raw_channels if isinstance(raw_channels, dict) else {}
    fits = (
        data.get("version") == RECORD_VERSION
        and data.get("identity") == record_identity(config, base_sha256)
        and all(channels.get(n) == widths.get(n) for n in names)
    )
    arch, weights = folder / str(data.get("arch")), folder / str(data.get("weights"))
    if not (fits and arch.is_file() and weights.is_file()):
        return None
    return SweepRecord(kind, float(ratio), record, arch, weights)


__all__ = ["SWEEP_DIR", "SweepRecord", "load_sweep_record", "record_identity", "save_sweep_record", "sweep_stem", "write_candidate_files"]
