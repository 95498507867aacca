"""Commands on one model: train-base, groups, calibrate-recovery, baselines, prune, apply."""

from __future__ import annotations

import copy
from pathlib import Path

import click

from autoprune import console
from autoprune.base_model import load_base
from autoprune.base_model import train_base
from autoprune.config import load_config
from autoprune.errors import ArchitectureError
from autoprune.errors import ConfigError
from autoprune.file_schemas import RatiosFile
from autoprune.jsonfile import read_model
from autoprune.latency import export_onnx
from autoprune.search.create import train_base_if_missing
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.architecture import build_architecture
from autoprune.selection.architecture import read_architecture
from autoprune.selection.architecture import save_weights
from autoprune.selection.architecture import write_architecture
from autoprune.space.baselines import baselines_path
from autoprune.space.baselines import load_baselines
from autoprune.space.baselines import run_baselines
from autoprune.space.baselines import save_baselines
from autoprune.tasks import build_task
from autoprune.trial.calibration import CURVE_FILE
from autoprune.trial.calibration import calibrate_recovery
from autoprune.trial.calibration import calibration_path
from autoprune.trial.calibration import ensure_recipe
from autoprune.trial.calibration import format_calibration
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import example_input
from autoprune.trial.pruning_setup import make_pruner
from autoprune.trial.pruning_setup import resolve_round_to


def _load(config_path: str):
    return load_config(config_path)


@click.command("train-base")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Retrain even if the checkpoint exists.")
def train_base_cmd(config: str, force: bool) -> None:
    """Train the base model once and cache its checkpoint (a plain state_dict)."""
    cfg = _load(config)
    task = build_task(cfg)
    trains = force or not cfg.checkpoint_path().is_file()  # a cached checkpoint is only read: no bar
    bar = console.progress(cfg.base.epochs, "train base", "epoch", leave=False) if trains else None

    def progress(epoch: int, epochs: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

    with task.forbid_split("test"):
        info = train_base(cfg, task, force=force, progress=progress)
    if bar is not None:
        bar.close()
    metric = f"{info.val_metric:.4f}" if info.val_metric is not None else "?"
    click.echo(f"base checkpoint: {info.path}\nsha256: {info.sha256}\nvalidation {task.metric_name}: {metric}")


@click.command("groups")
@click.argument("config", type=click.Path(dir_okay=False))
def groups_cmd(config: str) -> None:
    """Print the prunable dependency groups (name, channels, members, bounds once known)."""
    cfg = _load(config)
    task = build_task(cfg)
    pruner = make_pruner(cfg, task)
    groups = pruner.groups(task.build_model())
    base = load_baselines(cfg.artifact_path() / "baselines.json")
    bounds = base.bounds if base else {}
    click.echo(f"{len(groups)} groups, criterion {cfg.criterion}, round_to {resolve_round_to(cfg)}")
    click.echo(f"{'group':32} {'channels':>8} {'max ratio':>9} {'bounds':>15}  members")
    for g in groups:
        b = bounds.get(g.name)
        btxt = f"[{b[0]:.2f}, {b[1]:.2f}]" if b else "-"
        flags = " (first layer)" if g.first_layer else ""
        tie = f" (tied to {g.tied_to})" if g.tied_to else ""
        click.echo(f"{g.name:32} {g.channels:8d} {g.max_ratio:9.3f} {btxt:>15}  {len(g.members)} layers{flags}{tie}")
        for m in g.members:
            click.echo(f"{'':34}- {m}")


@click.command("baselines")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--ratios", default=None, help="Comma-separated sweep ratios (default: search.sweep_ratios).")
def baselines_cmd(config: str, ratios: str | None) -> None:
    """Run the uniform and global sweeps, print them and store the per-group bounds."""
    cfg = _load(config)
    sweep = _parse_ratios(ratios) if ratios else list(cfg.search.sweep_ratios)
    ctx = StudyContext.build(cfg)
    calibration = ensure_recipe(ctx, say=console.note)
    bar = console.progress(2 * len(sweep), "baselines", "point")

    def on_point(p) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{p.kind} {p.ratio:.2f}: drop {p.drop:+.4f}, {p.speedup:.2f}x")

    result = run_baselines(ctx, sweep, on_point=on_point, calibration=calibration)
    bar.close()
    path = save_baselines(result, baselines_path(ctx))
    click.echo(f"base {ctx.task.metric_name} {result.base_metric:.4f} (±{result.base_metric_stderr:.4f}), max drop {cfg.max_drop}")
    click.echo(result.table())
    click.echo("\nper-group bounds:")
    for name, (lo, hi) in result.bounds.items():
        click.echo(f"  {name:32} [{lo:.3f}, {hi:.3f}]")
    for kind in ("uniform", "global"):
        best = result.best(kind)
        click.echo(f"best feasible {kind}: " + (f"ratio {best.ratio:.2f}, {best.speedup:.2f}x, drop {best.drop:+.4f}" if best else "none"))
    for note in result.notes():
        click.echo(f"note: {note}")
    click.echo(f"stored: {path}")


@click.command("calibrate-recovery")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Recalibrate even if a calibration for this base and these settings exists.")
def calibrate_recovery_cmd(config: str, force: bool) -> None:
    """Try finetune recipes on a probe candidate; keep the cheapest within noise of the best for the study."""
    cfg = _load(config)
    train_base_if_missing(cfg, say=console.note)
    ctx = StudyContext.build(cfg, use_cache=False)
    cal = cfg.recovery.calibration
    bar = console.progress(len(cal.lrs) * len(cal.epochs), "recipes", "recipe")

    def on_result(r) -> None:
        bar.update(1)
        bar.set_postfix_str(f"lr {r.lr:g}, {r.epochs:g} epochs: {r.metric:.4f}")

    record = calibrate_recovery(ctx, on_result=on_result, reuse=not force)
    bar.close()
    chosen = record["chosen"]
    click.echo(f"probe: uniform {record['probe_ratio']:.2f}; base {record['metric_name']} {record['base_metric']:.4f}")
    click.echo(format_calibration(record))
    click.echo(f"chosen recipe: lr {chosen['lr']:g}, finetune_epochs {chosen['epochs']:g} ({chosen['steps']} steps)")
    if not cal.enabled:
        click.echo("note: recovery.calibration.enabled is false in the config, so studies keep its pinned recipe")
    path = calibration_path(cfg)
    click.echo(f"stored: {path} and {path.with_name(CURVE_FILE)}")


def _parse_ratios(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--ratios: expected comma-separated numbers such as 0.1,0.3,0.5, got {text!r}") from None
    bad = [v for v in values if not 0 <= v < 1]
    if bad or not values:
        raise ConfigError(f"--ratios: every ratio must be in [0, 1), got {text!r}")
    return values


@click.command("prune")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--uniform", "uniform", type=float, default=None, help="One ratio for every group.")
@click.option("--global", "global_ratio", type=float, default=None, help="Share of all channels, ranked together.")
@click.option("--ratios", "ratios_file", type=click.Path(dir_okay=False), default=None, help="JSON file {group: ratio}.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Architecture JSON to write.")
def prune_cmd(config: str, uniform: float | None, global_ratio: float | None, ratios_file: str | None, output: str) -> None:
    """Prune the base model (no recovery) and write its architecture JSON."""
    if sum(v is not None for v in (uniform, global_ratio, ratios_file)) != 1:
        raise ConfigError("prune: give exactly one of --uniform R, --global R or --ratios FILE")
    for flag, value in (("--uniform", uniform), ("--global", global_ratio)):
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"prune: {flag} must be in [0, 1), got {value}")
    ratios = _read_ratios(ratios_file) if ratios_file else None
    cfg = _load(config)
    task = build_task(cfg)
    base, info = load_base(cfg, task)
    pruner = make_pruner(cfg, task)
    with task.forbid_split("test"):
        result = pruner.prune(copy.deepcopy(base), ratios=ratios, uniform=uniform, global_ratio=global_ratio)
    for clamp in result.clamps:
        click.echo(f"clamped: {clamp}", err=True)
    arch = build_architecture(cfg, task, result, info.sha256, resolve_round_to(cfg))
    path = write_architecture(arch, output)
    kept = ", ".join(f"{k}={v}" for k, v in result.kept.items())
    click.echo(f"kept channels: {kept}\nMACs {result.macs:,}  params {result.params:,}\nwrote {path}")


def _read_ratios(path: str) -> dict[str, float]:
    """The ``{group name: ratio}`` file of ``prune --ratios``, checked against :class:`RatiosFile`."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: ratios file not found")
    fix = "write a JSON object {group name: ratio in [0, 1)} ('autoprune groups' lists the names)"
    return read_model(path, RatiosFile, fix, ConfigError, what="key").root


@click.command("apply")
@click.argument("arch_json", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="pruned.pt (state_dict) or pruned.onnx")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Study config (default: provenance.config, for built-in tasks only; a plugin task needs it).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False), help="Base checkpoint (default: the config's).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False), help="Finetuned weights of the pruned model.")
@click.option("--no-weights", is_flag=True, help="Ignore provenance.weights; keep the base weights of the kept channels.")
@click.option("--strict", is_flag=True, help="Refuse kept channels the config's guards would never give (default: warn).")
def apply_cmd(
    arch_json: str, output: str, config_path: str | None, checkpoint: str | None, weights: str | None, no_weights: bool, strict: bool
) -> None:
    """Rebuild the pruned model from the base checkpoint and an architecture JSON (no pickle)."""
    arch = read_architecture(arch_json)
    if no_weights:
        arch = dict(arch, provenance=dict(arch.get("provenance") or {}, weights=None))
    cfg = _load(config_path) if config_path else None
    applied = apply_architecture(arch, config=cfg, checkpoint=checkpoint, weights=weights, where=arch_json, strict=strict)
    for breach in applied.warnings:
        click.echo(f"warning: {arch_json}: {breach} (--strict refuses it)", err=True)
    out = Path(output)
    if out.suffix == ".onnx":
        export_onnx(applied.model, example_input(applied.task, applied.config), out, opset=applied.config.latency.opset)
    elif out.suffix in (".pt", ".pth"):
        save_weights(applied.model, out)
    else:
        raise ArchitectureError(f"{out}: output must end in .onnx or .pt")
    kept = ", ".join(f"{k}={v}" for k, v in applied.result.kept.items())
    src = "finetuned weights" if applied.weights_loaded else "base weights"
    click.echo(f"rebuilt {arch['model']} ({src}): {kept}\nwrote {out}")


@click.command("export-base")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="base.onnx")
def export_base_cmd(config: str, output: str) -> None:
    """Export the study's base model to ONNX (the baseline of 'autoprune latency ... --baseline')."""
    if not output.endswith(".onnx"):
        raise ArchitectureError(f"{output}: output must end in .onnx")
    cfg = _load(config)
    task = build_task(cfg)
    if not cfg.checkpoint_path().is_file():
        raise ConfigError(f"{cfg.checkpoint_path()}: no base checkpoint yet; train it with 'autoprune train-base {config}'")
    with task.forbid_split("test"):
        model, info = load_base(cfg, task)
    path = export_onnx(model, example_input(task, cfg), Path(output), opset=cfg.latency.opset)
    click.echo(f"wrote {path} (base checkpoint sha256 {info.sha256[:12]}..., input {tuple(example_input(task, cfg).shape)})")


COMMANDS = [train_base_cmd, groups_cmd, calibrate_recovery_cmd, baselines_cmd, prune_cmd, apply_cmd, export_base_cmd]
