"""``autoprune latency``: time an ONNX model, optionally against a baseline."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click

from autoprune.latency import LatencySettings
from autoprune.latency import latency_report


def _text(report: dict[str, Any]) -> str:
    """Format a latency report for people.

    Args:
        report: From :func:`autoprune.latency.latency_report`.

    Returns:
        Several lines of text.
    """
    host = report["host"]
    lines = [
        f"model       {report['path']}",
        f"input       {tuple(report['input_shape'])}  threads={report['threads']}  runs={report['n']}",
        f"median      {report['median_ms']:.4f} ms",
        f"p90         {report['p90_ms']:.4f} ms",
        f"mean        {report['mean_ms']:.4f} ms",
        f"MAD         {report['mad_ms']:.4f} ms",
        f"CV          {report['cv']:.3f} (std/median of block medians)",
    ]
    if "speedup" in report:
        lines += [
            f"baseline    {report['baseline_path']}  median {report['baseline_median_ms']:.4f} ms",
            f"speedup     {report['speedup']:.3f}x  spread {report['speedup_spread']:.3f} ({report['spread_kind']})",
        ]
    lines += [
        f"noisy       {_noisy(report)} after {report['attempts']} attempt(s)",
        f"host        {host['cpu_model']}  {host['physical_cores']} cores  ORT {host['ort_version']}  "
        f"{host['provider']}  id {host['fingerprint_id']}",
    ]
    return "\n".join(lines)


def _noisy(report: dict[str, Any]) -> str:
    """The noisy verdict with the figure it judges: the speedup's spread with a baseline, else the CV."""
    threshold = (report.get("settings") or {}).get("cv_threshold")
    judged, value = ("speedup spread", report["speedup_spread"]) if "speedup" in report else ("CV", report["cv"])
    verdict = "yes" if report["noisy"] else "no"
    if threshold is None:
        return f"{verdict} ({judged} {value:.3f})"
    return f"{verdict} ({judged} {value:.3f} {'above' if report['noisy'] else 'within'} the threshold {threshold:g})"


@click.command("latency")
@click.argument("model", type=click.Path(path_type=pathlib.Path))
@click.option("--baseline", type=click.Path(path_type=pathlib.Path), default=None,
              help="Baseline ONNX model; prints the interleaved speedup over it.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="ORT intra-op threads.")
@click.option("--repeats", type=click.IntRange(min=1), default=200, show_default=True,
              help="Timed runs per model, split into blocks.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Batch timed where the model's batch dimension is symbolic.")
@click.option("--blocks", type=click.IntRange(min=1), default=10, show_default=True, help="Blocks of timed runs.")
@click.option("--no-lock", is_flag=True, help="Do not take the host-wide timing lock.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def latency(
    model: pathlib.Path,
    baseline: pathlib.Path | None,
    threads: int,
    repeats: int,
    batch_size: int,
    blocks: int,
    no_lock: bool,
    as_json: bool,
) -> None:
    """Time MODEL.onnx with ONNX Runtime on the CPU (and its speedup over --baseline)."""
    settings = LatencySettings(
        batch_size=batch_size, threads=threads, repeats=repeats, blocks=min(blocks, repeats), lock=not no_lock
    )
    report = latency_report(model, baseline, settings)
    click.echo(json.dumps(report) if as_json else _text(report))


COMMANDS = [latency]
