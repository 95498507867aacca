"""Commands ``confirm`` and ``retime``: re-measure a study's best candidates after the search."""

from __future__ import annotations

import click

from autoprune.config import load_config
from autoprune.confirm import confirm_study
from autoprune.errors import ConfigError
from autoprune.retime import retime_study


def _check_drop(max_drop: float | None) -> None:
    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop must be in [0, 1), got {max_drop}")


@click.command("confirm")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Front candidates to confirm (the best baselines come on top).")
@click.option("--max-drop", type=float, default=None, help="Budget (default: the study's max_drop).")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
def confirm(config: str, top: int, max_drop: float | None, storage: str | None) -> None:
    """Re-time the best candidates together and measure them on the held-out test split."""
    _check_drop(max_drop)
    confirm_study(load_config(config), top=top, max_drop=max_drop, storage=storage, echo=click.echo)


@click.command("retime")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Front candidates to re-time (the best baselines come on top).")
@click.option("--max-drop", type=float, default=None, help="Budget that decides feasibility (default: the study's).")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
def retime(config: str, top: int, max_drop: float | None, storage: str | None) -> None:
    """Time the best candidates on this host and store the timings under its fingerprint."""
    _check_drop(max_drop)
    retime_study(load_config(config), top=top, storage=storage, max_drop=max_drop, echo=click.echo)


COMMANDS = [confirm, retime]
