"""Commands ``confirm`` and ``retime``: re-measure a study's best candidates after the search."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from autoprune import console
from autoprune.analysis.report import refresh_report
from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.search.study_config import reconcile
from autoprune.selection.confirm import confirm_study
from autoprune.selection.confirm import open_study_for_update
from autoprune.selection.retime import retime_study

if TYPE_CHECKING:
    from autoprune.config import StudyConfig


def _check_drop(max_drop: float | None) -> None:
    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop must be in [0, 1), got {max_drop}")


def study_config(config: str, storage: str | None) -> StudyConfig:
    """The config the study of the file ``config`` was created with, this host's run keys kept (see
    :func:`autoprune.search.study_config.reconcile`); the study must exist."""
    local = load_config(config)
    study = open_study_for_update(local, storage)[2]
    return reconcile(study.user_attrs, local, console.note)


@click.command("confirm")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1),
              help="Fastest feasible candidates to confirm, and how many more each round judges while none holds (the best baselines come on top).")
@click.option("--max-drop", type=float, default=None, help="Budget (default: the study's max_drop).")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
def confirm(config: str, top: int, max_drop: float | None, storage: str | None) -> None:
    """Re-time the best candidates together and judge them on the selection split (never the test split)."""
    _check_drop(max_drop)
    cfg = study_config(config, storage)
    confirm_study(cfg, top=top, max_drop=max_drop, storage=storage, echo=click.echo)
    click.echo(refreshed_line(cfg, storage, max_drop))


def refreshed_line(cfg: StudyConfig, storage: str | None, max_drop: float | None) -> str:
    """Rewrite the study's report with the figures just stored; the line that says where it is."""
    _summary, paths = refresh_report(cfg.storage_url(storage), cfg.name, max_drop, cfg.artifact_path() / "report")
    return f"updated the report with these figures: {paths['summary_json']}, {paths['report_html']}"


@click.command("retime")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Front candidates to re-time (the best baselines come on top).")
@click.option("--max-drop", type=float, default=None, help="Budget that decides feasibility (default: the study's).")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
def retime(config: str, top: int, max_drop: float | None, storage: str | None) -> None:
    """Time the best candidates on this host and store the timings under its fingerprint."""
    _check_drop(max_drop)
    retime_study(study_config(config, storage), top=top, storage=storage, max_drop=max_drop, echo=click.echo)


COMMANDS = [confirm, retime]
