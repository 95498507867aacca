"""``autoprune demo``: the whole pipeline on scikit-learn's digits, in a few minutes on two CPU cores.

Trains (or reuses) a small digits model, runs the uniform and global baselines, a short bounded search on
the embedded SQLite storage, prints the Pareto front and the chosen architecture, exports it and says
where every file is.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any
from typing import Callable
from typing import Mapping

import yaml

DEMO_CONFIG = {
    "task": "digits",
    "task_options": {"image_size": 16, "seed": 0},
    "criterion": "l2",
    "max_drop": 0.01,
    "base": {"epochs": 20, "lr": 0.05, "batch_size": 64},
    "pruning": {"round_to": "auto"},
    "search": {"sampler": "tpe", "seed": 0, "bounds_margin": 1, "sweep_ratios": [0.3, 0.5, 0.6, 0.7, 0.8]},
    "recovery": {"bn_batches": 10, "finetune_epochs": 5, "lr": 0.02, "warmup_steps": 10, "distill": True},
    "latency": {"batch_size": 8, "threads": 1, "repeats": 200, "blocks": 10},
}


# Test-only knob: a YAML/JSON mapping merged into the demo's config section by section, e.g.
# AUTOPRUNE_DEMO_OVERRIDES='{"base": {"epochs": 2}, "latency": {"repeats": 40}}' (shrinks the demo for tests).
DEMO_OVERRIDES_ENV = "AUTOPRUNE_DEMO_OVERRIDES"


def demo_overrides() -> dict[str, Any]:
    """The mapping in ``$AUTOPRUNE_DEMO_OVERRIDES`` (empty when unset)."""
    from autoprune.errors import ConfigError

    text = os.environ.get(DEMO_OVERRIDES_ENV, "").strip()
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"${DEMO_OVERRIDES_ENV}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"${DEMO_OVERRIDES_ENV}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_demo_config(workdir: Path, trials: int, model: str) -> Path:
    """Write the demo's study YAML into ``workdir`` (kept, so users can rerun any command on it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = dict(DEMO_CONFIG, name=f"demo-digits-{model}", model=model)
    cfg["search"] = dict(DEMO_CONFIG["search"], trials=trials)
    cfg = _merge(cfg, demo_overrides())
    path = workdir / f"demo-digits-{model}.yaml"
    path.write_text("# written by 'autoprune demo'\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def _chosen_line(trial: int, record: Mapping[str, Any]) -> str:
    """The exported architecture in one line: confirmed figures when confirmation ran, and in words when the
    pick is a baseline."""
    speed, source = record.get("confirmed:speedup"), "confirmed by a re-timing"
    if speed is None or speed != speed:
        speed, source = record["speedup"], "search timing, unconfirmed"
    test = record.get("confirmed:test_drop")
    test_text = f", test drop {test:+.4f}" if test is not None and test == test else ""
    line = (f"chosen architecture: trial {trial}, accuracy {record['metric']:.4f} (drop {record['drop']:+.4f}{test_text}), "
            f"speedup {speed:.2f}x ({source}), MACs {int(record.get('macs') or 0):,}")
    kind = record.get("kind")
    if kind in ("uniform", "global"):
        line += (f"\nthe search found nothing faster than the {kind} baseline within the budget; "
                 f"exported the {kind} baseline")
    return line


def run_demo(workdir: str | Path, trials: int = 16, model: str = "resnet", echo: Callable[[str], None] = print) -> dict:
    """Run the demo end to end and print its results.

    Args:
        workdir: folder for the config, database, checkpoints and report.
        trials: search trials.
        model: ``resnet`` or ``mobilenet``.
        echo: prints one line.

    Returns:
        The analysis summary (see :func:`autoprune.analysis.summarize`) plus ``files``.
    """
    from autoprune.analysis import load_analysis
    from autoprune.analysis import summarize
    from autoprune.analysis import write_report
    from autoprune.analysis.report import format_table
    from autoprune.analysis.report import table_rows
    from autoprune.config import load_config
    from autoprune.export import export_architecture
    from autoprune.search.create import create_study
    from autoprune.search.worker import run_local

    start = time.perf_counter()
    folder = Path(workdir).resolve()
    config_path = write_demo_config(folder, trials, model)
    max_drop = load_config(config_path).max_drop
    echo(f"autoprune demo: digits 16x16, {model}, max accuracy drop {max_drop:.0%}, {trials} search trials; files in {folder}")
    cfg, url, _study = create_study(str(config_path), None, say=echo)
    from tqdm import tqdm
    import sys

    bar = tqdm(total=trials, desc="search", unit="trial", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, best: float | None) -> None:
        bar.n = min(done, total)
        bar.set_postfix_str(f"best feasible {best:.2f}x" if best is not None else "no feasible trial yet")
        bar.refresh()

    run_local(str(config_path), url, 1, trials, progress=progress)
    bar.close()
    cfg = load_config(config_path)
    df, info = load_analysis(url, cfg.name)
    summary = summarize(df, info, cfg.max_drop)
    report_dir = cfg.artifact_path() / "report"
    files = write_report(df, info, cfg.max_drop, report_dir, summary=summary)
    echo("")
    echo(f"Pareto front (accuracy vs real ONNX Runtime speedup), base accuracy {info.base_metric:.4f}:")
    echo(format_table(table_rows(summary)))
    echo("  * chosen trial   U best uniform baseline   G best global baseline")
    echo("")
    echo(summary["sentence"])
    echo(summary["noise"]["line"])
    if summary["noise"].get("warning"):
        echo(f"warning: {summary['noise']['warning']}")
    arch_path = None
    if summary["chosen"] is not None:
        from autoprune.confirm import confirm_study

        confirm_study(cfg, top=3, echo=echo)
        exported = export_architecture(cfg, folder / "architecture.json")
        for note in exported.notes:
            echo(note)
        arch_path = exported.path
        chosen = exported.record
        echo("")
        echo(_chosen_line(exported.trial, chosen))
        channels = {k.split(":", 1)[1]: int(v) for k, v in chosen.items() if k.startswith("channels:") and v == v}
        if channels:
            echo("kept channels: " + ", ".join(f"{k}={v}" for k, v in channels.items()))
    else:
        echo(f"no architecture within the budget: {summary['selection_error']}")
    echo("")
    echo("files:")
    echo(f"  study config   {config_path}")
    echo(f"  study storage  {url}")
    for name, path in files.items():
        echo(f"  {name:14} {path}")
    if arch_path is not None:
        echo(f"  architecture   {arch_path}  (rebuild: autoprune apply {arch_path} -o pruned.onnx)")
    echo(f"demo finished in {time.perf_counter() - start:.0f}s; watch the study with: autoprune dashboard {config_path}")
    return dict(summary, files={k: str(v) for k, v in files.items()}, architecture=str(arch_path) if arch_path else None)
