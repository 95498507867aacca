"""``--quiet`` and ``--log-file``: the output options of the long-running commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from autoprune import console


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--quiet`` and ``--log-file PATH`` to a click command and apply them before it runs.

    ``--quiet`` keeps warnings, errors and the command's results (no notes, no progress bars);
    ``--log-file`` appends the full log, with times, to a file.
    """

    @click.option("--quiet", is_flag=True, help="Show only warnings, errors and the results (no notes, no progress bars).")
    @click.option("--log-file", type=click.Path(dir_okay=False), default=None,
                  help="Append the full log (notes, results, warnings, with times) to this file.")
    @functools.wraps(command)
    def wrapper(*args: Any, quiet: bool, log_file: str | None, **kwargs: Any) -> Any:
        console.configure(quiet=quiet, log_file=log_file)
        return command(*args, **kwargs)

    return wrapper
