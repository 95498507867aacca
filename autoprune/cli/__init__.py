"""The ``autoprune`` command line: parse, call the library, print.

Each command lives in a module of this package and only turns arguments into library calls.  Every
:class:`~autoprune.errors.AutopruneError` becomes one line on stderr and exit code 2.

Start-up: the command modules import the library at their top, and the library imports torch, ONNX
Runtime, pandas and matplotlib (seconds on a busy host).  So :data:`COMMANDS` names each command's module
and summary, and a module is imported only when one of its commands runs (or shows its own ``--help``):
``autoprune --help`` lists the commands from the summaries alone, and a command says it is loading,
on a terminal, before its libraries load.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Iterator
from collections.abc import Mapping

import click

from autoprune import console
from autoprune.errors import AutopruneError


@dataclasses.dataclass(frozen=True)
class CommandEntry:
    """Where a command lives and what ``autoprune --help`` says about it without importing it.

    Attributes:
        module: the module whose ``COMMANDS`` list holds the click command.
        summary: the command's short help (the first sentence of its docstring; a test keeps them equal).
        announce: print that line on stderr even when it is not a terminal (long-lived servers, whose log
            should show at once that they are on their way).
    """

    module: str
    summary: str
    announce: bool = False


_FOUNDATION = "autoprune.cli._foundation"
_SEARCH = "autoprune.cli._search"
_ANALYSIS = "autoprune.cli._analysis"
_CONFIRM = "autoprune.cli._confirm"

COMMANDS: dict[str, CommandEntry] = {
    "train-base": CommandEntry(_FOUNDATION, "Train the base model once and cache its checkpoint (a plain state_dict)."),
    "groups": CommandEntry(_FOUNDATION, "Print the prunable dependency groups (name, channels, members, bounds once known)."),
    "calibrate-recovery": CommandEntry(
        _FOUNDATION, "Try finetune recipes on a probe candidate; keep the cheapest within noise of the best for the study."
    ),
    "baselines": CommandEntry(_FOUNDATION, "Run the uniform and global sweeps, print them and store the per-group bounds."),
    "sensitivity": CommandEntry(
        "autoprune.cli._sensitivity",
        "Measure each group's metric pruned alone (BN-recalibrated) at a grid of ratios and store the curves on the study.",
    ),
    "prune": CommandEntry(_FOUNDATION, "Prune the base model (no recovery) and write its architecture JSON."),
    "apply": CommandEntry(_FOUNDATION, "Rebuild the pruned model from the base checkpoint and an architecture JSON (no pickle)."),
    "export-base": CommandEntry(_FOUNDATION, "Export the study's base model to ONNX (the baseline of 'autoprune latency ..."),
    "latency": CommandEntry("autoprune.cli._latency", "Time MODEL.onnx with ONNX Runtime on the CPU (and its speedup over --baseline)."),
    "create": CommandEntry(_SEARCH, "Create the study once: base model, baselines, bounds, enqueued baseline trials (no search)."),
    "run": CommandEntry(_SEARCH, "Create the study if needed, then run local workers until it holds the requested trials."),
    "worker": CommandEntry(_SEARCH, "Join an existing study (from any machine) and run trials; never recomputes the bounds."),
    "dashboard": CommandEntry(_SEARCH, "Start optuna-dashboard for the study, with its artifact store.", announce=True),
    "demo": CommandEntry(_SEARCH, "Train a digits model, run the baselines and a short search, print the Pareto front and the choice."),
    "pareto": CommandEntry(_ANALYSIS, "Print the Pareto front of a study and the fastest trial within the drop budget; write a report."),
    "compare": CommandEntry(_ANALYSIS, "Put the best feasible speedup of several studies side by side (CONFIG files and/or --study)."),
    "export": CommandEntry("autoprune.cli._export", "Write the architecture JSON of the fastest trial within the budget (or of --trial N)."),
    "finalize": CommandEntry(
        "autoprune.cli._finalize", "Recover the chosen architecture with the long final recipe; write its weights, ONNX model and JSON."
    ),
    "confirm": CommandEntry(_CONFIRM, "Re-time the best candidates together and judge them on the selection split (never the test split)."),
    "retime": CommandEntry(_CONFIRM, "Time the best candidates on this host and store the timings under its fingerprint."),
    "make-synthetic-seg": CommandEntry(
        "autoprune.cli._data",
        "Write DIRECTORY/images/*.jpg and DIRECTORY/masks/*.png: figures on textured backgrounds with alpha-matte masks, "
        "for task 'segmentation' with mask_mode: alpha.",
    ),
}


class _LazyCommands(Mapping[str, click.Command]):
    """``main.commands``: every registered name, each command imported from its module on first access."""

    def __init__(self, entries: Mapping[str, CommandEntry]) -> None:
        self.entries = entries

    def __getitem__(self, name: str) -> click.Command:
        entry = self.entries[name]
        module = importlib.import_module(entry.module)
        return next(command for command in module.COMMANDS if command.name == name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def starting_line(name: str, args: list[str]) -> str | None:
    """The line a command prints before its libraries load, or ``None`` where it stays silent.

    Silent under ``--quiet``, once its module is loaded, and off a terminal unless the command announces
    itself anyway (so piped output and the one-line errors scripts read stay as they were).

    Args:
        name: the command's name.
        args: its arguments.

    Returns:
        ``"autoprune NAME: loading its libraries ..."`` or ``None``.
    """
    entry = COMMANDS.get(name)
    if entry is None or entry.module in sys.modules or "--quiet" in args or os.environ.get(console.QUIET_ENV):
        return None
    if not (entry.announce or sys.stderr.isatty()):
        return None
    return f"autoprune {name}: loading its libraries ..."


class _Group(click.Group):
    """Click group of lazily imported commands that maps boundary errors to exit code 2 without a traceback."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # noqa: D401 - click API
        line = starting_line(args[0], args[1:]) if args else None
        if line:
            click.echo(line, err=True)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the registered summaries (no command module is imported)."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit)) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except AutopruneError as exc:
            console.error(str(exc))  # also in --log-file
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; finished trials are kept in the study", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="autoprune")
def main() -> None:
    """autoprune: search per-layer pruning ratios, judged by real latency."""
    console.configure()  # notes and log records above progress bars; --quiet/--log-file where a command has them


main.commands = _LazyCommands(COMMANDS)  # type: ignore[assignment]  # click reads it as a mapping
