"""Export the chosen trial of a study as an architecture JSON (plus its finetuned weights).

The choice is the fastest trial within the budget (ties: better metric, then fewer MACs, then the lower
trial number); when confirmed figures exist (``autoprune confirm``), they decide, and a pick that fails
the budget on the selection split (with its noise margin) is passed over for the next confirmed candidate
that holds.  Once the JSON is written, the exported model alone is measured on the test split
(:mod:`autoprune.selection.final_test`) and the figure is added to it and stored: reported, never used to choose.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna

from autoprune.analysis import load_analysis
from autoprune.analysis.choice import choose
from autoprune.analysis.choice import passed_over_text
from autoprune.analysis.pareto import as_float
from autoprune.analysis.pareto import unsettled
from autoprune.analysis.points import TrialFigures
from autoprune.errors import SelectionError
from autoprune.redact import storage_place
from autoprune.search.record import TrialRecord
from autoprune.search.record import read
from autoprune.search.storage import open_storage
from autoprune.search.storage import with_retry
from autoprune.search.study_attrs import confirmed_column
from autoprune.search.study_attrs import confirmed_figures
from autoprune.selection.artifacts import fetch
from autoprune.selection.artifacts import study_store
from autoprune.selection.confirm import open_study_for_update
from autoprune.space.bounds import BASELINE_KINDS

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.selection.final_test import FinalTest
    from autoprune.tasks import Task


@dataclass
class ExportResult:
    path: Path
    weights: Path | None
    trial: int
    record: dict[str, Any]
    notes: list[str]
    passed_over: dict[str, Any] | None = None  # the validation pick, when the confirmed choice is another trial
    max_drop: float = math.nan  # the budget it was chosen under
    metric_name: str = "metric"
    selection: str = "validation"  # how it was chosen (Choice.source, or "trial"): the summary names the same
    final_test: FinalTest | None = None  # the exported model on the test split, read after the pick

    @property
    def figures(self) -> TrialFigures:
        """The exported trial's figures, as the summary states a trial (its ``record`` is the table row)."""
        return TrialFigures.from_row(self.record, self.max_drop, self.trial)

    @property
    def passed_over_figures(self) -> TrialFigures | None:
        """The validation pick's figures, when the confirmed choice passed it over."""
        return None if self.passed_over is None else TrialFigures.from_row(self.passed_over, self.max_drop, None)


def _confirmed_figures(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``confirmed:*`` figures of a trial row, by their plain names (missing ones left out)."""
    return confirmed_figures(record, drop_missing=True)


def _speed_words(result: ExportResult) -> str:
    """The exported speedup and what it rests on: the same figure the summary's headline gives."""
    rec = result.figures
    confirmed = rec.confirmed or {}
    speed = f"{as_float(rec.speedup):.2f}x"
    if rec.timing == "confirmed":  # a settled re-timing by autoprune confirm
        return f"{speed} (confirmed by a re-timing)"
    source = "re-timed on this host, unconfirmed" if rec.timing == "retimed" else "search timing, unconfirmed"
    if "speedup" in confirmed:
        return f"{speed} ({source}: its re-timing at {as_float(confirmed['speedup']):.2f}x is unsettled)"
    return f"{speed} ({source})"


def chosen_lines(result: ExportResult, *, context: bool = True) -> list[str]:
    """The exported architecture in words: its confirmed figures when the choice rests on them (else the figure it
    rests on, said to be unconfirmed), and with ``context`` the validation-time pick when it was passed over and
    a baseline pick as such (the summary's headline says both, so the demo leaves them out).

    Example:
        >>> print(chosen_lines(export_architecture(cfg, "arch.json"))[0])  # doctest: +SKIP
        chosen architecture: trial 1, accuracy 0.9577 (validation drop +0.0245, selection drop +0.0161),
        speedup 2.03x (confirmed by a re-timing), MACs 612,394
    """
    rec = result.figures
    confirmed = rec.confirmed or {}
    sel = f", selection drop {confirmed['selection_drop']:+.4f}" if "selection_drop" in confirmed else ""
    lines = [f"chosen architecture: trial {result.trial}, {result.metric_name} {rec.metric:.4f} (validation drop "
             f"{rec.drop:+.4f}{sel}), speedup {_speed_words(result)}, MACs {int(rec.macs or 0):,}"]
    if result.final_test is not None:
        lines.append(result.final_test.line(result.metric_name))
    if not context:
        return lines
    passed = result.passed_over_figures
    if passed is not None:
        lines.append(passed_over_text(passed.number, passed.speedup, passed.confirmed or {}, result.max_drop))
    kind = rec.kind
    if kind in BASELINE_KINDS:
        lines.append(f"the search found nothing faster than the {kind} baseline within the budget; exported the {kind} baseline")
    return lines


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def choose_trial(
    df, info, max_drop: float, trial: int | None = None, use_confirmed: bool = True
) -> tuple[dict[str, Any], list[str], dict[str, Any] | None, str]:
    """The trial to export: ``trial`` if given, else the study's choice (:func:`autoprune.analysis.choose`).

    Returns:
        ``(record, notes, validation pick passed over or None, selection)``: the selection is the choice's
        source (``"confirmed"`` or ``"validation"``, as :func:`autoprune.analysis.summarize` says), or ``"trial"``.

    Raises:
        SelectionError: ``trial`` is not a complete trial, or nothing is chosen under ``max_drop``.
    """
    if trial is not None:
        rows = df[df["number"] == trial]
        if rows.empty or rows.iloc[0]["state"] != "COMPLETE":
            raise SelectionError(f"trial {trial} is not a COMPLETE trial of study {info.name!r}")
        return _settled_record(rows.iloc[0].to_dict(), info), [], None, "trial"
    choice = choose(df, max_drop, metric_direction=info.metric_direction, cv_threshold=info.cv_threshold,
                    use_confirmed=use_confirmed)
    if choice.row is None:
        raise SelectionError(choice.error or f"no trial is chosen at max drop {max_drop:g}")
    return choice.row, choice.notes, choice.passed_over, choice.source


def _settled_record(record: dict[str, Any], info: Any) -> dict[str, Any]:
    """A named trial's record with its settled confirmed speedup as ``speedup`` (as a choice would carry it)."""
    if not math.isfinite(as_float(record.get(confirmed_column("speedup")))) or unsettled(
            record.get(confirmed_column("noisy")), record.get(confirmed_column("speedup_spread")), info.cv_threshold):
        return record
    return record | {"speedup_searched": record.get("speedup"), "speedup": as_float(record[confirmed_column("speedup")]),
                     "speedup_spread": as_float(record.get(confirmed_column("speedup_spread"))), "timing": "confirmed"}


def export_architecture(
    config: StudyConfig,
    output: str | Path,
    max_drop: float | None = None,
    trial: int | None = None,
    storage: str | None = None,
    use_confirmed: bool = True,
    final_test: bool = True,
    task: Task | None = None,
) -> ExportResult:
    """Write the architecture JSON of the chosen trial, its finetuned weights beside it; then report the exported
    model on the test split (the only read of it, after the pick is fixed and written).

    Args:
        config: the study config.
        output: the JSON path; weights go to ``<output stem>.weights.pt``.
        max_drop: budget (default: the study's).
        trial: export this trial instead of choosing.
        storage: storage URL override.
        use_confirmed: prefer confirmed (selection split, re-timed) figures when they exist.
        final_test: measure the exported model on the test split and add the figures (``False``: leave it unread).
        task: the task that reads the test split (default: the one the architecture rebuilds).

    Returns:
        Paths, the trial number, its record, notes on fallbacks and the final test report.
    """
    from autoprune.selection.architecture import validate_architecture
    from autoprune.selection.architecture import write_architecture

    url = config.storage_url(storage)
    df, info = load_analysis(url, config.name, max_drop=max_drop)
    budget = info.max_drop if max_drop is None else max_drop
    if budget is None:
        raise SelectionError(f"study {config.name!r} records no max_drop; pass --max-drop")
    record, notes, passed_over, selection = choose_trial(df, info, budget, trial, use_confirmed)
    number = int(record["number"])
    trial_record = _trial_record(config, url, number)
    out = Path(output)
    arch, weights_path = _fetch_artifacts(config, trial_record, number, out)
    # Confirmed figures are study attrs (a finished trial cannot change); the analysis row carries them.
    confirmed = _confirmed_figures(record)
    arch.update(
        metrics=_metrics(arch, trial_record, budget, confirmed),
        latency=_latency(arch, trial_record, confirmed if record.get("timing") == "confirmed" else {}),
        provenance=_provenance(arch, config, number, url, weights_path, selection),
    )
    validate_architecture(arch, out)
    write_architecture(arch, out)  # the pick is fixed and written before the test split is read
    report = _final_test(config, url, arch, out, weights_path, selection, budget, task) if final_test else None
    return ExportResult(out, weights_path, number, record, notes, passed_over, budget, info.metric_name, selection, report)


def _final_test(config: StudyConfig, url: str, arch: dict[str, Any], out: Path, weights: Path | None, selection: str,
                budget: float, task: Task | None) -> FinalTest:
    """Measure the exported model on the test split, add the figures to its JSON and store them as a study attr."""
    from autoprune.search.study_attrs import FINAL_TEST_ATTR
    from autoprune.selection.architecture import write_architecture
    from autoprune.selection.final_test import measure_final_test

    report = measure_final_test(arch, config, weights, selection, budget, task)
    arch["metrics"] = dict(arch["metrics"]) | report.metrics()
    write_architecture(arch, out)
    study = open_study_for_update(config, url)[2]
    with_retry(lambda: study.set_user_attr(FINAL_TEST_ATTR, report.to_attrs()), url, "store the final test report")
    return report


def _trial_record(config: StudyConfig, url: str, number: int) -> TrialRecord:
    """The record of trial ``number``, which must have a stored architecture.

    Raises:
        SelectionError: the trial has no stored architecture.
    """
    study = optuna.load_study(study_name=config.name, storage=open_storage(url, heartbeat_interval=None))
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    rec = read(frozen)
    if not rec.arch_artifact_id:
        raise SelectionError(f"trial {number} has no stored architecture (no architecture artifact id); it was not run by an autoprune worker")
    return rec


def _fetch_artifacts(config: StudyConfig, rec: TrialRecord, number: int, out: Path) -> tuple[dict[str, Any], Path | None]:
    """The trial's stored architecture JSON, and its weights moved beside ``out`` (``None`` when it has none)."""
    from autoprune.selection.architecture import read_architecture
    store = study_store(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights_path: Path | None = None
    with tempfile.TemporaryDirectory(prefix="autoprune-export-") as tmp:
        arch_file = Path(tmp) / "arch.json"
        fetch(store, rec.arch_artifact_id, arch_file, config, f"trial {number}")
        arch = read_architecture(arch_file)
        if rec.weights_artifact_id:
            weights_path = out.with_name(out.stem + ".weights.pt")
            tmp_w = Path(tmp) / "w.pt"
            fetch(store, rec.weights_artifact_id, tmp_w, config, f"trial {number}")
            shutil.move(str(tmp_w), weights_path)
    return arch, weights_path


def _metrics(arch: Mapping[str, Any], rec: TrialRecord, budget: float, confirmed: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture's ``metrics``: the search's validation figures, and the selection figures when confirmed
    (the test figures are added after the JSON is written, by :func:`_final_test`)."""
    metrics = dict(arch.get("metrics") or {})
    metrics.update(
        {
            "val_metric": rec.metric,
            "val_metric_stderr": rec.metric_stderr,
            "val_drop": rec.drop,
            "max_drop": budget,
            "feasible": bool((math.inf if rec.drop is None else rec.drop) <= budget),
        }
    )
    if confirmed:
        metrics.update(
            {
                "selection_metric": confirmed.get("selection_metric"),
                "selection_metric_stderr": confirmed.get("selection_metric_stderr"),
                "selection_drop": confirmed.get("selection_drop"),
                "selection_drop_stderr": confirmed.get("selection_drop_stderr"),
                "selection_drop_paired": confirmed.get("selection_drop_paired"),  # None: confirmed before drops were paired
                "selection_z": confirmed.get("selection_z"),
                "selection_feasible": confirmed.get("selection_feasible"),
            }
        )
    return metrics


def _latency(arch: Mapping[str, Any], rec: TrialRecord, confirmed: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture's ``latency``: the confirmed re-timing when the choice rests on it, and the search's speedup."""
    latency = dict(arch.get("latency") or {})
    if confirmed:
        latency["confirmed_speedup"] = confirmed.get("speedup")
        latency["confirmed_speedup_spread"] = confirmed.get("speedup_spread")
        latency["confirmed_host_id"] = confirmed.get("host_id")
    latency["search_speedup"] = rec.own_timing.speedup
    return latency


def _provenance(
    arch: Mapping[str, Any], config: StudyConfig, number: int, url: str, weights_path: Path | None, selection: str
) -> dict[str, Any]:
    """The architecture's ``provenance``: the study, trial, where the study lives (no user, no password),
    config, checkpoint and weights.  A ``storage`` field of a trial artifact written by an older autoprune is
    dropped: the file is handed on."""
    prov = {k: v for k, v in (arch.get("provenance") or {}).items() if k != "storage"}
    prov.update(
        {
            "study": config.name,
            "trial": number,
            "locator": storage_place(url),
            "config": str(config.source) if config.source else prov.get("config"),
            "checkpoint": str(config.checkpoint_path()),
            "weights": str(weights_path.resolve()) if weights_path else None,
            "selection": selection,
        }
    )
    return prov
