"""Benchmark: does the recovery ever make a candidate worse, and what does calibration pick?

For each config (default: a plain VGG-style CNN of our own on digits 24x24, and the built-in digits
ResNet and MobileNetV2) the base model is pruned uniformly at each ``--ratios`` (criterion l2) and
recovered with the recipes of the table below, each two ways:

- *plain finetune*: BN recalibration, then the finetune, evaluated as it ends (the recovery before this
  benchmark was written: stale BatchNorm statistics, no judging);
- *autoprune recovery*: :func:`autoprune.trial.recovery.recover` (BN recalibration after the finetune, best state
  kept on a calibration part of the training split).

Then ``autoprune calibrate-recovery``'s choice (:func:`autoprune.trial.calibration.calibrate_recovery`) is run at
every ratio.  The guarantee checked: no autoprune recovery scores below its BN-recalibrated metric by more
than 2 standard errors (of the difference).  Writes ``benchmarks/results/recovery.json`` and ``recovery.md``
(exactly what it printed).

Run::

    python benchmarks/recovery.py [--config ...] [--ratios 0.2 0.4] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

import torch

from autoprune.config import load_config
from autoprune.latency import host_fingerprint
from autoprune.latency import training_section
from autoprune.trial.calibration import calibrate_recovery
from autoprune.trial.candidate import StudyContext
from autoprune.trial.recovery import _batches
from autoprune.trial.recovery import _Judge
from autoprune.trial.recovery import _loss
from autoprune.trial.recovery import _schedule
from autoprune.trial.recovery import calibration_split
from autoprune.trial.recovery import finetune_steps
from autoprune.trial.recovery import recalibrate_bn
from autoprune.trial.recovery import recover

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIGS = [
    ROOT / "recovery" / "recovery-vgg.yaml",
    ROOT.parent / "studies" / "digits-resnet.yaml",
    ROOT.parent / "studies" / "digits-mobilenet.yaml",
]
# (finetune epochs, learning rate): the rows of the table in the recovery issue.
RECIPES = [(0.25, 0.02), (1.0, 0.02), (1.0, 0.002), (5.0, 0.02)]
OUT = ROOT / "results"


def plain_finetune(model: torch.nn.Module, ctx: StudyContext, settings: Any) -> None:
    """BN recalibration, then SGD for the recipe's steps, evaluated as it ends (no judging, no recalibration)."""
    task = ctx.task
    fit, _ = calibration_split(len(task.dataset("train")), 0, settings.seed)  # the whole training split
    recalibrate_bn(model, task, settings.bn_batches, settings.batch_size, seed=settings.seed)
    total = finetune_steps(settings, len(fit) // settings.batch_size)
    torch.manual_seed(settings.seed)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, settings.warmup_steps))
    batches = _batches(task, settings, fit)
    model.train()
    for _ in range(total):
        loss = _loss(model, task, settings, ctx.teacher if settings.distill else None, next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def one_recipe(ctx: StudyContext, probe: torch.nn.Module, epochs: float, lr: float) -> dict[str, Any]:
    """Both recoveries of one recipe on one pruned model, with the BN-only metric they start from."""
    settings = ctx.config.recovery.model_copy(update={"finetune_epochs": epochs, "finetune_steps": None, "lr": lr})
    task = ctx.task
    bn_model = copy.deepcopy(probe)
    fit, calib = calibration_split(len(task.dataset("train")), settings.calib_size, settings.seed)
    _Judge(task, settings, fit, calib).recalibrate(bn_model)
    bn = task.evaluate(bn_model, "val")
    plain = copy.deepcopy(probe)
    plain_finetune(plain, ctx, settings)
    ours = copy.deepcopy(probe)
    start = time.perf_counter()
    report = recover(ours, task, settings, teacher=ctx.teacher)
    seconds = time.perf_counter() - start
    new = task.evaluate(ours, "val")
    plain_metric = task.evaluate(plain, "val")
    margin = 2 * math.hypot(bn.stderr, new.stderr)
    return {
        "epochs": epochs, "lr": lr, "steps": report.steps, "bn_only": bn.value, "bn_only_stderr": bn.stderr,
        "plain_finetune": plain_metric.value, "recovery": new.value, "recovery_stderr": new.stderr,
        "kept_step": report.kept_step, "restores": report.restores, "seconds": round(seconds, 2),
        "below_bn_beyond_2se": bool(new.value < bn.value - margin),
    }


def run_config(path: Path, ratios: list[float], quick: bool) -> dict[str, Any]:
    cfg = load_config(path)
    if quick:
        cfg.base.epochs = 2
        cfg.artifact_dir = str(Path("/tmp/autoprune-bench-quick") / cfg.name)
        cfg.recovery.calibration.lrs = [0.01]
        cfg.recovery.calibration.epochs = [0.25, 1.0]
    torch.manual_seed(0)
    ctx = StudyContext.build(cfg, use_cache=False)
    rows = []
    with ctx.task.forbid_split("test"), training_section():
        record = calibrate_recovery(ctx)
        chosen = record["chosen"]
        recipes = RECIPES[:2] if quick else RECIPES
        for ratio in ratios:
            probe = copy.deepcopy(ctx.base_model)
            ctx.pruner.prune(probe, uniform=ratio)
            for epochs, lr in [*recipes, (float(chosen["epochs"]), float(chosen["lr"]))]:
                row = one_recipe(ctx, probe, epochs, lr)
                row["ratio"] = ratio
                row["calibrated"] = (epochs, lr) == (float(chosen["epochs"]), float(chosen["lr"]))
                rows.append(row)
                print(f"  {cfg.name}: uniform {ratio:.2f}, {epochs:g} epochs lr {lr:g}: bn {row['bn_only']:.4f} "
                      f"plain {row['plain_finetune']:.4f} recovery {row['recovery']:.4f}", file=sys.stderr, flush=True)
    return {"config": str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path),
            "name": cfg.name, "base_metric": ctx.base_metric.value, "base_metric_stderr": ctx.base_metric.stderr,
            "criterion": cfg.criterion, "rows": rows, "calibration": {k: record[k] for k in ("probe_ratio", "results", "chosen")}}


def markdown(results: list[dict[str, Any]], host: dict[str, Any]) -> str:
    lines = ["# Recovery: never worse than BN recalibration, with a calibrated recipe", ""]
    lines.append(f"Host: {host.get('cpu_model', '?')}, {host.get('logical_cores', '?')} cores, "
                 f"ONNX Runtime {host.get('ort_version', '?')}, torch {torch.__version__}; "
                 f"{datetime.now(timezone.utc):%Y-%m-%d}. Validation accuracy; ± is one standard error.")
    for res in results:
        cal = res["calibration"]["chosen"]
        lines += ["", f"## {res['name']} ({res['config']}), base {res['base_metric']:.4f}, criterion {res['criterion']}", "",
                  f"Calibrated recipe (probe uniform {res['calibration']['probe_ratio']:.2f}): lr {cal['lr']:g}, "
                  f"{cal['epochs']:g} epochs ({cal['steps']} steps).", "",
                  "| uniform ratio | recipe | BN recalibration only | plain finetune | autoprune recovery | kept step | restores |",
                  "|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            recipe = f"{r['epochs']:g} ep ({r['steps']} steps), lr {r['lr']:g}" + (" **calibrated**" if r["calibrated"] else "")
            flag = " **below BN-only**" if r["below_bn_beyond_2se"] else ""
            lines.append(f"| {r['ratio']:.2f} | {recipe} | {r['bn_only']:.4f} ± {r['bn_only_stderr']:.4f} | "
                         f"{r['plain_finetune']:.4f} | {r['recovery']:.4f} ± {r['recovery_stderr']:.4f}{flag} | "
                         f"{r['kept_step']}/{r['steps']} | {r['restores']} |")
    bad = sum(r["below_bn_beyond_2se"] for res in results for r in res["rows"])
    total = sum(len(res["rows"]) for res in results)
    lines += ["", f"Guarantee (autoprune recovery >= BN-only - 2 SE): {total - bad}/{total} candidates hold it "
              f"({'met' if bad == 0 else 'NOT met'})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path, help="study YAML (repeatable)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.4, 0.6])
    parser.add_argument("--quick", action="store_true", help="2-epoch bases in a temp folder, fewer recipes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = args.config or DEFAULT_CONFIGS
    results = [run_config(Path(c).resolve(), args.ratios, args.quick) for c in configs]
    host = host_fingerprint()
    text = markdown(results, host)
    print(text)
    out = Path("/tmp/autoprune-bench-quick") if args.quick else OUT
    out.mkdir(parents=True, exist_ok=True)
    stem = "recovery_quick" if args.quick else "recovery"
    (out / f"{stem}.md").write_text(text + "\n")
    data = {"benchmark": "recovery", "host": host, "date": datetime.now(timezone.utc).isoformat(), "ratios": args.ratios, "results": results}
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {out / (stem + '.md')} and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
