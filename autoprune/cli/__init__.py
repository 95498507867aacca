"""The ``autoprune`` command line: parse, call the library, print.

Each command lives in a module of this package and only turns arguments into library calls.  Every
:class:`~autoprune.errors.AutopruneError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from autoprune import console
from autoprune.errors import AutopruneError

# One module per command family; each exposes ``COMMANDS`` (a list of click commands).
_COMMAND_MODULES = [
    "autoprune.cli._foundation",
    "autoprune.cli._latency",
    "autoprune.cli._search",
    "autoprune.cli._analysis",
    "autoprune.cli._export",
    "autoprune.cli._confirm",
    "autoprune.cli._data",
]


class _Group(click.Group):
    """Click group that maps autoprune's boundary errors to exit code 2 without a traceback."""

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


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a command family not built yet
        if exc.name != _name:
            raise
        continue
    for _command in _module.COMMANDS:
        main.add_command(_command)
