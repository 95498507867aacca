"""``autoprune pareto`` and ``autoprune compare``: read studies, print the front and the choice, write reports.

This module loads pandas, matplotlib and Optuna (through the analysis library); ``autoprune`` imports it
only when one of its commands runs (see :data:`autoprune.cli.COMMANDS`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import click

from autoprune import console
from autoprune.analysis import load_analysis
from autoprune.analysis import plot_compare
from autoprune.analysis import summarize
from autoprune.analysis import write_report
from autoprune.analysis.pareto import as_float
from autoprune.analysis.points import BaselinePoint
from autoprune.analysis.report import format_table
from autoprune.analysis.report import table_legend
from autoprune.analysis.report import table_rows
from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.errors import SelectionError
from autoprune.search.study_config import config_for_study


@dataclasses.dataclass(frozen=True)
class _Target:
    """Where a study lives and the defaults its config gives."""

    name: str
    storage: str
    max_drop: float | None
    out_dir: pathlib.Path


def resolve_study(config: pathlib.Path | None, study: str | None, storage: str | None) -> _Target:
    """The study name, storage URL, default budget and report folder, from a config and/or options.

    ``--study``/``--storage`` override the config's name and storage; without a config both are needed.

    Args:
        config: a study YAML, or ``None``.
        study: ``--study``.
        storage: ``--storage``.

    Returns:
        The resolved target.

    Raises:
        ConfigError: neither a config nor both options were given.
    """
    if config is not None:
        local = load_config(config)
        name = study or local.name
        cfg = config_for_study(local, storage, console.note, name)  # the study's settings, not the file's
        return _Target(name, cfg.storage_url(storage), cfg.max_drop, cfg.artifact_path() / "report")
    if not (study and storage):
        raise ConfigError("give a study CONFIG file, or both --study NAME and --storage URL")
    return _Target(study, storage, None, pathlib.Path("reports") / study)


@click.command("pareto")
@click.argument("config", required=False, type=click.Path(path_type=pathlib.Path))
@click.option("--study", default=None, help="Study name (default: the config's name).")
@click.option("--storage", default=None, help="Storage URL or journal file (default: the config's storage).")
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=None,
              help="Largest acceptable metric drop (default: the config's, then the study's).")
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Report folder (default: <artifact_dir>/report, or reports/<study> without a config).")
@click.option("--host-id", default=None,
              help="Judge speed on this host fingerprint id, using re-timings of trials searched elsewhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
def pareto(
    config: pathlib.Path | None,
    study: str | None,
    storage: str | None,
    max_drop: float | None,
    out_dir: pathlib.Path | None,
    host_id: str | None,
    as_json: bool,
) -> None:
    """Print the Pareto front of a study and the fastest trial within the drop budget; write a report."""
    target = resolve_study(config, study, storage)
    budget = max_drop if max_drop is not None else target.max_drop
    df, info = load_analysis(target.storage, target.name, max_drop=budget, host_id=host_id)
    summary = summarize(df, info, budget)
    paths = write_report(df, info, budget, out_dir or target.out_dir, summary=summary)
    if as_json:
        click.echo(json.dumps(summary.to_json() | {"files": {k: str(v) for k, v in paths.items()}}, default=str))
    else:
        click.echo("\n".join([
            f"study {info.name} ({info.storage}): {summary.n_complete} complete of {summary.n_trials} "
            f"trials, {summary.n_feasible} within max drop {summary.max_drop:g}; {info.metric_name} "
            f"({info.metric_direction}), unpruned {info.base_metric:.4f}"
            + (f"; speed judged on host {info.host_id}" if info.host_id else ""),
            "",
            format_table(table_rows(summary)),
            table_legend(summary),
            "",
            summary.sentence,
            summary.noise["line"],
        ]))
        for warning in [summary.noise["warning"], *summary.recovery_warnings]:
            if warning:
                click.echo(f"warning: {warning}")
        click.echo("\nwrote:\n" + "\n".join(f"  {p}" for p in paths.values()))
    if summary.chosen is None:
        raise SelectionError(summary.selection_error)


@click.command("compare")
@click.argument("configs", nargs=-1, type=click.Path(path_type=pathlib.Path))
@click.option("--study", "studies", multiple=True, help="A study in --storage to compare (repeatable).")
@click.option("--storage", default=None, help="Storage URL holding the studies (CONFIG files' and --study ones; default: each config's).")
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=None,
              help="One budget for all studies (default: each one's own).")
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path), default=pathlib.Path("reports"),
              show_default=True, help="Folder for compare.png.")
def compare(
    configs: tuple[pathlib.Path, ...],
    studies: tuple[str, ...],
    storage: str | None,
    max_drop: float | None,
    out_dir: pathlib.Path,
) -> None:
    """Put the best feasible speedup of several studies side by side (CONFIG files and/or --study)."""
    targets = [resolve_study(c, None, storage) for c in configs]  # --storage holds the configs' studies too
    if studies and not storage:
        raise ConfigError("--study needs --storage URL (the storage that holds those studies)")
    targets += [resolve_study(None, name, storage) for name in studies]
    if not targets:
        raise ConfigError("give study CONFIG files, or --storage URL with one --study NAME per study")

    loaded, rows = [], []
    for i, target in enumerate(targets):
        budget = max_drop if max_drop is not None else target.max_drop
        df, info = load_analysis(target.storage, target.name, max_drop=budget)
        summary = summarize(df, info, budget)
        label = info.name if [t.name for t in targets].count(info.name) == 1 else f"{info.name} #{i + 1}"
        loaded.append((label, df, info))
        chosen, vs = summary.chosen, summary.speedup_vs
        rows.append({
            "study": label,
            "budget": f"{summary.max_drop:g}",
            "trials": f"{summary.n_feasible}/{summary.n_complete}",
            "best": "none" if chosen is None else str(chosen.number),
            "drop": "-" if chosen is None else f"{chosen.drop:.4f}",
            "speedup": "-" if chosen is None else f"{chosen.speedup:.2f}x",
            **{kind: _best_speed(summary.best.get(kind)) for kind in ("uniform", "global", "sensitivity")},
            "vs": "/".join("-" if vs[k] is None else f"{vs[k]:.2f}" for k in ("uniform", "global")),
        })
    headers = {"study": "study", "budget": "max drop", "trials": "feasible/complete", "best": "best trial",
               "drop": "drop", "speedup": "speedup", "uniform": "best uniform", "global": "best global",
               "sensitivity": "best sensitivity", "vs": "x uniform/global"}
    if all(row["sensitivity"] == "-" for row in rows):  # an opt-in baseline: no column where no study has it
        headers.pop("sensitivity")
    click.echo(format_table(rows, headers))
    path = plot_compare(loaded, max_drop, out_dir / "compare.png")
    click.echo("")
    click.echo(f"wrote: {path}")


def _best_speed(point: BaselinePoint | None) -> str:
    """A best baseline point's speedup as a table cell ('-' where the sweep has none)."""
    return "-" if point is None else f"{as_float(point.speedup):.2f}x"


COMMANDS = [pareto, compare]
