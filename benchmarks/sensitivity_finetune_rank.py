"""Does a short finetune change the sensitivity ranking?  BN-only curves against 20-step-finetuned ones.

Every searched group of a study is pruned alone at the sensitivity grid (its nearest reachable widths, as
``autoprune sensitivity`` does), BN-recalibrated and evaluated (the curve point), then finetuned ``--steps``
steps with the study's recipe and evaluated again.  Printed: Spearman's rho between the two drops over all
points, and over the groups (each group's mean drop), i.e. whether the ranking a search would start from
changes.

Usage:
    python benchmarks/sensitivity_finetune_rank.py studies/digits-resnet.yaml --epochs 8 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from scipy.stats import spearmanr

from autoprune.config import load_config
from autoprune.search.create import train_base_if_missing
from autoprune.space.sensitivity import plan_points
from autoprune.trial.candidate import StudyContext
from autoprune.trial.candidate import prune_and_recalibrate
from autoprune.trial.recovery import Recovery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--epochs", type=int, default=None, help="base epochs (default: the config's)")
    parser.add_argument("--steps", type=int, default=20, help="finetune steps after BN recalibration")
    parser.add_argument("--ratios", default="0.2,0.4,0.6,0.8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg.base.epochs = args.epochs
    train_base_if_missing(cfg, print)
    ctx = StudyContext.build(cfg, use_cache=False)
    settings = cfg.recovery.model_copy(update={"finetune_steps": args.steps})
    rows = []
    for group, planned in plan_points(ctx, [float(r) for r in args.ratios.split(",")]).items():
        for p in planned:
            with ctx.task.forbid_split("test"):
                model, _, _ = prune_and_recalibrate(ctx, {group: p.ratio}, None, None, {}, lambda s: None)
                bn = ctx.drop(ctx.task.evaluate(model, "val").value)
                recovery = Recovery(model, ctx.task, settings, teacher=ctx.teacher)
                recovery.recalibrate()
                recovery.finetune()
                tuned = ctx.drop(ctx.task.evaluate(model, "val").value)
            rows.append({"group": group, "width": p.width, "bn_drop": bn, "finetuned_drop": tuned})
            print(json.dumps(rows[-1]))
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    groups = sorted(by_group)
    rho_points = spearmanr([r["bn_drop"] for r in rows], [r["finetuned_drop"] for r in rows])[0]
    rho_groups = spearmanr([statistics.mean(r["bn_drop"] for r in by_group[g]) for g in groups],
                           [statistics.mean(r["finetuned_drop"] for r in by_group[g]) for g in groups])[0]
    print(f"base {ctx.base_metric.value:.4f}; {len(rows)} points over {len(groups)} groups; {args.steps}-step finetune")
    print(f"Spearman rho, BN-only vs finetuned drop: points {rho_points:.3f}, groups (mean drop) {rho_groups:.3f}")


if __name__ == "__main__":
    main()
