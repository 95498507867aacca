"""Export the chosen trial of a study as an architecture JSON (plus its finetuned weights).

The choice is the fastest trial within the budget (ties: better metric, then fewer MACs, then the lower
trial number); when confirmed figures exist (``autoprune confirm``), they decide, and a pick that fails
the budget on the test split is passed over for the next confirmed candidate that holds.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna

from autoprune.analysis.choice import choose
from autoprune.errors import SelectionError
from autoprune.redact import redact_url

if TYPE_CHECKING:
    from autoprune.config import StudyConfig


@dataclass
class ExportResult:
    path: Path
    weights: Path | None
    trial: int
    record: dict[str, Any]
    notes: list[str]
    passed_over: dict[str, Any] | None = None  # the validation pick, when the confirmed choice is another trial


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def choose_trial(
    df, info, max_drop: float, trial: int | None = None, use_confirmed: bool = True
) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """The trial to export: ``trial`` if given, else the study's choice (:func:`autoprune.analysis.choose`).

    Returns:
        ``(record, notes, validation pick passed over or None)``.

    Raises:
        SelectionError: ``trial`` is not a complete trial, or nothing is chosen under ``max_drop``.
    """
    if trial is not None:
        rows = df[df["number"] == trial]
        if rows.empty or rows.iloc[0]["state"] != "COMPLETE":
            raise SelectionError(f"trial {trial} is not a COMPLETE trial of study {info.name!r}")
        return rows.iloc[0].to_dict(), [], None
    choice = choose(df, max_drop, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold,
                    use_confirmed=use_confirmed)
    if choice.row is None:
        raise SelectionError(choice.error or f"no trial is chosen at max drop {max_drop:g}")
    return choice.row, choice.notes, choice.passed_over


def export_architecture(
    config: "StudyConfig",
    output: str | Path,
    max_drop: float | None = None,
    trial: int | None = None,
    storage: str | None = None,
    use_confirmed: bool = True,
) -> ExportResult:
    """Write the architecture JSON of the chosen trial, its finetuned weights beside it.

    Args:
        config: the study config.
        output: the JSON path; weights go to ``<output stem>.weights.pt``.
        max_drop: budget (default: the study's).
        trial: export this trial instead of choosing.
        storage: storage URL override.
        use_confirmed: prefer confirmed (test split, re-timed) figures when they exist.

    Returns:
        Paths, the trial number, its record and notes on fallbacks.
    """
    from autoprune.analysis import load_analysis
    from autoprune.architecture import validate_architecture
    from autoprune.architecture import write_architecture
    from autoprune.artifacts import fetch
    from autoprune.artifacts import study_store
    from autoprune.search.storage import open_storage

    url = config.storage_url(storage)
    df, info = load_analysis(url, config.name, max_drop=max_drop)
    budget = info.max_drop if max_drop is None else max_drop
    record, notes, passed_over = choose_trial(df, info, budget, trial, use_confirmed)
    number = int(record["number"])
    study = optuna.load_study(study_name=config.name, storage=open_storage(url, heartbeat_interval=None))
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    attrs = frozen.user_attrs
    arch_id = attrs.get("arch_artifact_id")
    if not arch_id:
        raise SelectionError(f"trial {number} has no stored architecture (user attr 'arch_artifact_id'); it was not run by an autoprune worker")
    store = study_store(config)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights_path: Path | None = None
    with tempfile.TemporaryDirectory(prefix="autoprune-export-") as tmp:
        arch_file = Path(tmp) / "arch.json"
        fetch(store, arch_id, arch_file, config, f"trial {number}")
        arch = json.loads(arch_file.read_text())
        if attrs.get("weights_artifact_id"):
            weights_path = out.with_name(out.stem + ".weights.pt")
            tmp_w = Path(tmp) / "w.pt"
            fetch(store, attrs["weights_artifact_id"], tmp_w, config, f"trial {number}")
            shutil.move(str(tmp_w), weights_path)
    metrics = dict(arch.get("metrics") or {})
    metrics.update(
        {
            "val_metric": attrs.get("metric"),
            "val_metric_stderr": attrs.get("metric_stderr"),
            "val_drop": attrs.get("drop"),
            "max_drop": budget,
            "feasible": bool(attrs.get("drop", math.inf) <= budget),
        }
    )
    # Confirmed figures are study attrs (a finished trial cannot change); the analysis row carries them.
    confirmed = {k.partition(":")[2]: v for k, v in record.items() if k.startswith("confirmed:") and not _missing(v)}
    latency = dict(arch.get("latency") or {})
    if confirmed:
        metrics.update(
            {
                "test_metric": confirmed.get("test_metric"),
                "test_metric_stderr": confirmed.get("test_metric_stderr"),
                "test_drop": confirmed.get("test_drop"),
                "test_feasible": confirmed.get("test_feasible"),
            }
        )
        latency["confirmed_speedup"] = confirmed.get("speedup")
        latency["confirmed_speedup_spread"] = confirmed.get("speedup_spread")
        latency["confirmed_host_id"] = confirmed.get("host_id")
    latency["search_speedup"] = attrs.get("speedup")
    prov = dict(arch.get("provenance") or {})
    prov.update(
        {
            "study": config.name,
            "trial": number,
            "storage": redact_url(url),
            "config": str(config.source) if config.source else prov.get("config"),
            "checkpoint": str(config.checkpoint_path()),
            "weights": str(weights_path.resolve()) if weights_path else None,
            "selection": "trial" if trial is not None else ("confirmed" if confirmed and use_confirmed else "validation"),
        }
    )
    arch.update(metrics=metrics, latency=latency, provenance=prov)
    validate_architecture(arch, out)
    write_architecture(arch, out)
    return ExportResult(out, weights_path, number, record, notes, passed_over)
