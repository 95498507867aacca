"""Command ``finalize``: the long final recovery of the chosen architecture, and the files to ship."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from autoprune import console
from autoprune.cli._confirm import refreshed_line
from autoprune.cli._confirm import study_config
from autoprune.cli._output import output_options
from autoprune.config import load_config
from autoprune.errors import StorageError
from autoprune.selection.finalize import comparison_lines
from autoprune.selection.finalize import finalize

if TYPE_CHECKING:
    from autoprune.config import StudyConfig


def _config(config: str, storage: str | None, arch: str | None) -> StudyConfig:
    """The study's config with this host's run keys; with ``--arch`` and no study, the file as it is."""
    try:
        return study_config(config, storage)
    except StorageError:
        if arch is None:
            raise
        console.note(f"note: no study of {config} to read its settings from; using {config} as it is")
        return load_config(config)


@click.command("finalize")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--trial", type=int, default=None, help="Finalize this trial instead of the study's pick.")
@click.option("--arch", "arch", default=None, type=click.Path(dir_okay=False), help="Finalize this architecture JSON instead.")
@click.option("--with-baselines", is_flag=True, help="Also finalize the best uniform and global picks and compare them.")
@click.option("--storage", default=None, help="Storage URL (default: the config's).")
@click.option("--restart", is_flag=True, help="Discard the epoch checkpoints of these architectures and start over.")
@output_options
def finalize_cmd(config: str, trial: int | None, arch: str | None, with_baselines: bool, storage: str | None, restart: bool) -> None:
    """Recover the chosen architecture with the long final recipe; write its weights, ONNX model and JSON."""
    cfg = _config(config, storage, arch)
    runs = finalize(cfg, trial=trial, arch_file=arch, with_baselines=with_baselines, storage=storage, restart=restart,
                    say=console.note)
    for run in runs:
        f = run.figures
        resumed = "" if run.resumed_from is None else f", continued after epoch {run.resumed_from}"
        console.result(f"{run.target.label}: final {f['metric_name']} {f['val_metric']:.4f} on validation (drop {f['val_drop']:+.4f}), "
                       f"{f['test_metric']:.4f} on test (drop {f['test_drop']:+.4f}), speedup {f['speedup']:.2f}x"
                       f"{' (did not settle)' if f.get('noisy') else ''}; kept epoch {f['kept_epoch']} of {f['epochs']}{resumed}")
        console.result(f"  deployable ONNX model: {run.paths['onnx']}")
        console.result(f"  architecture JSON:     {run.paths['architecture']}  (rebuild: autoprune apply {run.paths['architecture']} -o final.onnx)")
    if len(runs) > 1:
        for line in comparison_lines(runs):
            console.result(line)
    if any(r.target.trial is not None or r.target.kind in ("uniform", "global") for r in runs):
        console.result(refreshed_line(cfg, storage, None))


COMMANDS = [finalize_cmd]
