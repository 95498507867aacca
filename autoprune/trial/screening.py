"""Cheap screening before the finetune, learned from the study itself (pure: no torch, no database).

A candidate's timing and its metric after BN recalibration cost seconds; the finetune costs most of a
trial.  Two rules skip the finetune, each with its reason recorded on the trial:

- **cannot be faster** (fastest-within-budget mode): even at the top of its timing spread, the candidate
  is slower than the fastest feasible trial so far (the incumbent, at the bottom of its own spread).  The
  incumbent must hold the budget with confirm's margin (:attr:`Outcome.secure`: its drop plus
  ``search.selection_z`` standard errors within ``max_drop``): a trial feasible only by its noise is likely to
  fail on the selection split, and a search that screened everything slower than it would be left with no
  pick;
- **predicted over budget**: its drop after BN recalibration is worse than that of every completed trial
  that ended within the budget, by more than those feasible trials' after-BN drops spread among themselves
  (learned from the study's own trials, once it holds a few, at least two feasible and one not; never a fixed
  constant).  The after-BN drop ranks candidates only roughly (the finetune recovers most of it, more for
  some architectures than others), and in the fastest mode the candidates that matter sit near the budget,
  so the margin is as wide as the spread the study has seen among feasible trials.

Baselines are never screened.

The incumbent's timing is one measurement, perhaps taken by another process under another load (a baseline
reuses its sweep point's); a claim that skips finetunes needs more.  A worker confirms it before it screens
anything: it re-times the incumbent's architecture side by side with its own candidates and gives the rules
:meth:`Outcome.retimed` (the lower of the stored and re-timed speedups, with the spread of the one kept) through
``ScreeningRules.learn(..., retimed={number: outcome})``.  Re-learned, the rules may name another incumbent,
which is confirmed in turn (the caller's loop ends: each trial is re-timed once).  The reason then says the
incumbent's figure was re-timed here.

Example:
    >>> done = [Outcome(0.05, True, 2.0, 0.02), Outcome(0.40, False, 3.0, 0.02), Outcome(0.10, True, 2.5, 0.03)]
    >>> rules = ScreeningRules.learn(done, min_trials=3)
    >>> rules.reason(drop_after_bn=0.30, stderr=0.01, speedup=3.1, spread=0.02, mode="pareto")[:24]
    'predicted over budget: d'
    >>> rules.reason(drop_after_bn=0.14, stderr=0.01, speedup=3.1, spread=0.02, mode="pareto") is None  # within 0.10 + 0.05
    True
    >>> rules.reason(drop_after_bn=0.02, stderr=0.01, speedup=1.5, spread=0.02, mode="fastest")[:21]
    'cannot beat the incum'

    Trial 7 stores 2.5x; re-timed here at 1.4x, it no longer screens a 1.5x candidate out (trial 5's 2.0x does):

    >>> done = [Outcome(0.05, True, 2.0, 0.02, number=5), Outcome(0.10, True, 2.5, 0.03, number=7)]
    >>> confirmed = {7: done[1].retimed(speedup=1.4, spread=0.02, noisy=False)}
    >>> rules = ScreeningRules.learn(done, min_trials=3, retimed=confirmed)
    >>> rules.incumbent.number, rules.reason(drop_after_bn=0.02, stderr=0.01, speedup=1.5, spread=0.02, mode="fastest")[:41]
    (5, 'cannot beat the incumbent: 1.50x ±2.0% is')
    >>> rules = ScreeningRules.learn(done, 3, {7: confirmed[7], 5: done[0].retimed(1.45, 0.02, False)})
    >>> rules.reason(drop_after_bn=0.02, stderr=0.01, speedup=1.39, spread=0.02, mode="fastest").split("below ")[1]
    "trial 5's feasible 1.45x ±2.0% (re-timed here; stored 2.00x)"

    A trial feasible only within its noise (not ``secure``) screens nothing out:

    >>> edge = [Outcome(0.05, True, 2.0, 0.02, number=3, secure=False)]
    >>> ScreeningRules.learn(edge, min_trials=3).incumbent is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

# How the reason of each rule begins (readers tell the rules apart by it).
CANNOT_BEAT = "cannot beat the incumbent"
OVER_BUDGET = "predicted over budget"

# The smallest relative spread a timing is credited with (a spread of 0 is luck, not precision).
MIN_SPREAD = 0.02


@dataclass(frozen=True)
class Outcome:
    """What a completed (fully evaluated) trial showed.

    Attributes:
        drop_after_bn: its metric drop after BN recalibration alone.
        feasible: whether its recovered metric met the budget.
        speedup: its speedup.
        speedup_spread: its timing's relative spread.
        noisy: whether its timing did not settle (a noisy incumbent does not screen anything).
        number: the trial number (for the reason text).
        secure: whether it holds the budget with confirm's margin (drop + ``selection_z`` standard errors
            within ``max_drop``); only a secure feasible trial can be the incumbent of the speed rule.
        stored_speedup / retimed_speedup: once confirmed in this process (:meth:`retimed`), the speedup the
            study stores for the trial and the one re-timed here (``speedup`` is the lower); None before.
    """

    drop_after_bn: float | None
    feasible: bool
    speedup: float
    speedup_spread: float
    noisy: bool = False
    number: int | None = None
    secure: bool = True
    stored_speedup: float | None = None
    retimed_speedup: float | None = None

    def retimed(self, speedup: float, spread: float, noisy: bool) -> Outcome:
        """This outcome confirmed by a re-timing in this process: the lower of the stored and re-timed speedups,
        with the spread (and the settling) of the one kept; ``stored_speedup`` keeps the stored figure."""
        confirmed = replace(self, stored_speedup=self.speedup, retimed_speedup=speedup)
        if not math.isfinite(speedup) or (math.isfinite(self.speedup) and self.speedup <= speedup):
            return confirmed
        return replace(confirmed, speedup=speedup, speedup_spread=spread, noisy=self.noisy or noisy)

    def confirmation(self) -> str:
        """How this figure was confirmed here, for a reason text (empty when it was not)."""
        if self.stored_speedup is None or self.retimed_speedup is None:
            return ""
        if self.speedup < self.stored_speedup:
            return f" (re-timed here; stored {self.stored_speedup:.2f}x)"
        return f" (stored; re-timed here at {self.retimed_speedup:.2f}x)"

    def moved_beyond_spreads(self, speedup: float, spread: float) -> bool:
        """Whether a re-timing ``speedup ±spread`` lies outside this timing's spread and this one outside its
        (each spread at least :data:`MIN_SPREAD`): the two timings disagree, not only jitter."""
        mine = max(self.speedup_spread, MIN_SPREAD)
        theirs = max(spread, MIN_SPREAD)
        return abs(speedup - self.speedup) > max(self.speedup * mine, speedup * theirs)


@dataclass(frozen=True)
class ScreeningRules:
    """The thresholds learned from a study's completed trials.

    Attributes:
        worst_feasible_drop: the largest after-BN drop of a trial that still ended within budget (None: not
            learned yet, too few trials, fewer than two feasible ones or no infeasible example to learn from).
        feasible_spread: how far the after-BN drops of the feasible trials spread (largest - smallest): the
            margin beyond ``worst_feasible_drop`` before a candidate is predicted over budget.
        incumbent: the fastest secure feasible trial with a settled timing (None: none yet).
        trials: how many completed trials the rules were learned from.
    """

    worst_feasible_drop: float | None
    incumbent: Outcome | None
    trials: int
    feasible_spread: float = 0.0

    @classmethod
    def learn(
        cls, outcomes: Sequence[Outcome], min_trials: int, retimed: Mapping[int, Outcome] | None = None
    ) -> ScreeningRules:
        """Learn the rules from completed trials (duplicates left out by the caller).

        Args:
            outcomes: the completed trials' outcomes, as stored.
            min_trials: completed trials needed before the over-budget rule is learned.
            retimed: by trial number, outcomes confirmed in this process (:meth:`Outcome.retimed`); each
                replaces the stored outcome of its trial.
        """
        if retimed:
            outcomes = [o if o.number is None else retimed.get(o.number, o) for o in outcomes]
        known = [o for o in outcomes if o.drop_after_bn is not None and math.isfinite(o.drop_after_bn)]
        feasible = [o for o in known if o.feasible]
        worst, spread = None, 0.0
        if len(known) >= min_trials and len(feasible) >= 2 and len(feasible) < len(known):
            drops = [float(o.drop_after_bn) for o in feasible]  # type: ignore[arg-type]
            worst, spread = max(drops), max(drops) - min(drops)
        timed = [o for o in outcomes if o.feasible and o.secure and not o.noisy and math.isfinite(o.speedup)]
        incumbent = max(timed, key=lambda o: o.speedup, default=None)
        return cls(worst, incumbent, len(known), spread)

    def reason(self, drop_after_bn: float, stderr: float, speedup: float, spread: float, mode: str) -> str | None:
        """Why the finetune of this candidate cannot pay off, or None: finetune it.

        Args:
            drop_after_bn: the candidate's drop after BN recalibration.
            stderr: the standard error of that metric.
            speedup: the candidate's speedup.
            spread: its timing's relative spread.
            mode: ``fastest`` (the speed rule applies) or ``pareto``.
        """
        inc = self.incumbent
        if mode == "fastest" and inc is not None and math.isfinite(speedup):
            best_case = speedup * (1 + max(spread, MIN_SPREAD))
            bar = inc.speedup * (1 - max(inc.speedup_spread, MIN_SPREAD))
            if best_case < bar:
                who = f"trial {inc.number}" if inc.number is not None else "the incumbent"
                return (f"{CANNOT_BEAT}: {speedup:.2f}x ±{spread:.1%} is below {who}'s feasible "
                        f"{inc.speedup:.2f}x ±{inc.speedup_spread:.1%}{inc.confirmation()}")
        worst = self.worst_feasible_drop
        margin = max(self.feasible_spread, 2 * stderr)
        if worst is not None and drop_after_bn > worst + margin:
            return (f"{OVER_BUDGET}: drop after BN recalibration {drop_after_bn:+.4f} exceeds {worst:+.4f}, the worst of "
                    f"any trial that ended within budget, by more than {margin:.4f} (the feasible trials' spread, at "
                    f"least 2 standard errors; {self.trials} trials)")
        return None


def holds_with_margin(drop: float | None, stderr: float | None, max_drop: float, z: float) -> bool:
    """Whether a drop holds the budget with confirm's margin: ``drop + z * stderr <= max_drop`` (no margin where
    the error is unknown; False where the drop is).

    Example:
        >>> holds_with_margin(0.0098, 0.0022, 0.01, 1.0), holds_with_margin(0.0073, 0.0021, 0.01, 1.0)
        (False, True)
    """
    if drop is None or not math.isfinite(float(drop)):
        return False
    se = 0.0 if stderr is None or not math.isfinite(float(stderr)) else float(stderr)
    return float(drop) + z * se <= max_drop


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant side.

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 25])
        0.8
    """
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(x)) and math.isfinite(float(y))]
    if len(pairs) < 3:
        return math.nan
    rx = _ranks([p[0] for p in pairs])
    ry = _ranks([p[1] for p in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return math.nan
    return round(cov / math.sqrt(vx * vy), 12)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
