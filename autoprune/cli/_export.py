"""Command ``export``: the chosen architecture of a study as a JSON file."""

from __future__ import annotations

import click

from autoprune import console
from autoprune.cli._confirm import refreshed_line
from autoprune.cli._confirm import study_config
from autoprune.cli._output import output_options
from autoprune.errors import ConfigError
from autoprune.selection.confirm import confirm_study
from autoprune.selection.export import chosen_lines
from autoprune.selection.export import export_architecture


@click.command("export")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--max-drop", type=float, default=None, help="Budget (default: the study's max_drop).")
@click.option("--trial", type=int, default=None, help="Export this trial instead of choosing one.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Architecture JSON to write.")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
@click.option("--no-confirm", is_flag=True, help="Do not run the confirmation stage; choose on validation figures.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Candidates confirmed per round (more while none holds).")
@output_options
def export_cmd(config: str, max_drop: float | None, trial: int | None, output: str, storage: str | None, no_confirm: bool, top: int) -> None:
    """Write the architecture JSON of the fastest trial within the budget (or of --trial N)."""
    if max_drop is not None and not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop must be in [0, 1), got {max_drop}")
    cfg = study_config(config, storage)
    confirms = not no_confirm and trial is None
    if confirms:
        confirm_study(cfg, top=top, max_drop=max_drop, storage=storage, echo=console.note)
    result = export_architecture(cfg, output, max_drop=max_drop, trial=trial, storage=storage, use_confirmed=not no_confirm)
    for note in [] if confirms else result.notes:  # the confirmation printed its notes already
        console.note(note)
    for line in chosen_lines(result):
        console.result(line)
    console.result(f"wrote {result.path}" + (f" and {result.weights}" if result.weights else ""))
    console.result(f"rebuild it with: autoprune apply {result.path} -o pruned.onnx")
    if confirms:
        console.result(refreshed_line(cfg, storage, max_drop))


COMMANDS = [export_cmd]
