"""``autoprune sensitivity``: per-group sensitivity curves on the study, and which cost allocates better."""

from __future__ import annotations

import click

from autoprune.cli._output import output_options
from autoprune.console import result
from autoprune.search.sensitivity_study import SensitivityRun
from autoprune.search.sensitivity_study import run_sensitivity
from autoprune.space.allocation import SensitivityCurves


def _ratios(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """``--ratios 0.3,0.6``: a comma-separated list of ratios in (0, 1)."""
    if value is None:
        return None
    try:
        ratios = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers (e.g. 0.3,0.6)") from None
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise click.BadParameter(f"every ratio must be in (0, 1), got {value!r} (e.g. 0.3,0.6)")
    return ratios


def curves_table(curves: SensitivityCurves) -> list[str]:
    """One line per measured width: group, width, ratio, drop after BN recalibration, MACs and latency saved."""
    lines = [f"{'group':28} {'width':>9} {'ratio':>6} {'drop(BN)':>9} {'MACs saved':>10} {'latency saved':>13}"]
    for name, curve in curves.groups.items():
        for p in sorted(curve.points, key=lambda q: -q.width):
            latency = "-" if p.latency_saved is None else f"{p.latency_saved:+.3f}" + ("?" if p.noisy else "")
            lines.append(f"{name:28} {p.width:>4}/{curve.channels:<4} {p.ratio:6.2f} {p.drop:+9.4f} {p.macs_saved:10.3f} {latency:>13}")
    return lines


def _print(run: SensitivityRun) -> None:
    curves = run.curves
    for line in curves_table(curves):
        result(line)
    result(f"curves of {len(curves.groups)} group(s): {curves.evaluations} BN-recalibrated evaluations in {curves.seconds:.1f} s "
           f"({run.measured} measured by this run); '?': the timing did not settle")
    for c in run.checks:
        timed = "-" if c.speedup is None else f"{c.speedup:.2f}x"
        result(f"greedy by {c.cost:7}: predicted {c.allocation.speedup:.2f}x{'' if c.allocation.reached else ' (target not reached)'}, "
               f"measured {timed} at drop {c.drop:+.4f} after BN recalibration, {len(c.allocation.widths)} group(s) pruned")
    result(f"cost: {run.verdict()}")


@click.command("sensitivity")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--storage", default=None, help="Storage URL (default: the config's, else a SQLite file next to it).")
@click.option("--ratios", default=None, callback=_ratios, help="Comma-separated ratios (default: search.sensitivity_ratios).")
@click.option("--target", default=1.5, show_default=True, type=click.FloatRange(min=1.0, min_open=True, max=1000.0),
              help="Target speedup at which the MACs and latency allocations are compared.")
@click.option("--no-timing", is_flag=True, help="MACs only: do not time the points (no latency cost, no comparison).")
@output_options
def sensitivity_cmd(config: str, storage: str | None, ratios: list[float] | None, target: float, no_timing: bool) -> None:
    """Measure each group's metric pruned alone (BN-recalibrated) at a grid of ratios and store the curves on the study."""
    _print(run_sensitivity(config, storage, ratios, target, timed=not no_timing))


COMMANDS = [sensitivity_cmd]
