"""Replay the median pruner offline on the finetune curves of ``anytime.py``'s ``none`` arms: which finetunes would
its verdict have stopped, and how many of those ended within the budget on validation?

Every finetuned trial of a ``none`` arm ran to its end, so its whole curve (the calibration drop at each judged
checkpoint) and its validation drop are known.  In trial order, each trial's curve is shown to Optuna's
``MedianPruner`` (default options) at each checkpoint before the last, against the earlier trials, exactly as
:class:`autoprune.search.curves.CurveReporter` asks it (:func:`autoprune.search.curves.pruning_view`).  A verdict
stops the trial when a guard agrees:

- ``max_drop`` (autoprune's rule): the calibration drop at that checkpoint is over ``max_drop``;
- ``envelope``: it is over the worst calibration drop, at that checkpoint, of the earlier trials that ended within
  the budget on validation (a trial whose curve is worse than every feasible one's is not expected to end feasible).

The replay cannot say what the sampler would have done with the stopped trials (``anytime.py`` measures that); it
says how often a stop would have thrown away a candidate that ends within the budget.  Successive halving is not
replayed: its rungs live in each trial's system attrs, which the ``none`` arm never wrote.

    python benchmarks/pruner_replay.py [--seeds 0,1,2]      # after anytime.py; prints a table, writes results/pruner_replay.txt
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "pruner_replay.txt"


def replay(trials: list[Any], guard: str, max_drop: float) -> dict[str, Any]:
    """The median pruner's stops over one arm's finished trials (in number order) under one guard."""
    import optuna

    from autoprune.search.curves import pruning_view
    from autoprune.search.pruner_options import build_pruner

    pruner = build_pruner("median", {})
    before: list[Any] = []
    out = {"finetunes": 0, "stopped": 0, "stopped_feasible": 0, "fastest_lost": None, "steps": 0, "steps_saved": 0}
    for t in sorted(trials, key=lambda t: t.number):
        a, curve = t.user_attrs, dict(t.intermediate_values)
        if t.state.name == "COMPLETE" and not a.get("screened") and not a.get("sweep_point") and a.get("drop") is not None and len(curve) > 1:
            last = max(curve)
            out["finetunes"] += 1
            out["steps"] += last
            for step in sorted(k for k in curve if 0 < k < last):
                part = {k: v for k, v in curve.items() if k <= step}
                view, running = pruning_view("replay", before, part, {})
                feasible_curves = [c[1][step] for c in before if c[2] is not None and c[2] <= max_drop and step in c[1]]
                bar = max_drop if guard == "max_drop" else (max(feasible_curves) if feasible_curves else float("inf"))
                if pruner.prune(view, running) and part[step] > bar:
                    out["stopped"] += 1
                    out["steps_saved"] += last - step
                    if a["drop"] <= max_drop:
                        out["stopped_feasible"] += 1
                        out["fastest_lost"] = max(out["fastest_lost"] or 0.0, float(a["speedup"]))
                    break
        kept = {} if a.get("screened") else curve
        before.append((optuna.trial.TrialState.COMPLETE if t.state.name == "COMPLETE" else t.state, kept, a.get("drop"), {}))
    return out


def main(argv: list[str] | None = None) -> int:
    import optuna

    from autoprune.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="anytime.py seeds whose none arms to replay (default: %(default)s)")
    parser.add_argument("--config", default="studies/reference.yaml")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    cfg = load_config(args.config)
    lines = [f"median pruner replayed on anytime.py's none arms ({args.config}, max_drop {cfg.max_drop})",
             f"{'seed':>4} {'guard':9} {'finetunes':>9} {'stopped':>7} {'of them feasible':>16} {'fastest lost':>12} {'steps saved':>12}"]
    for seed in args.seeds.split(","):
        db = cfg.artifact_path() / "anytime" / f"seed-{seed}" / "none" / "autoprune.db"
        if not db.is_file():
            print(f"{db}: no none arm for seed {seed}; run anytime.py --seed {seed} first", file=sys.stderr)
            return 2
        trials = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
        for guard in ("max_drop", "envelope"):
            r = replay(trials, guard, cfg.max_drop)
            lost = "-" if r["fastest_lost"] is None else f"{r['fastest_lost']:.2f}x"
            lines.append(f"{seed:>4} {guard:9} {r['finetunes']:>9} {r['stopped']:>7} {r['stopped_feasible']:>16} {lost:>12} "
                         f"{r['steps_saved']:>6}/{r['steps']}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
