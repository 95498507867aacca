"""The exported model's final report on the test split: the one place autoprune reads it.

``confirm`` picks on the selection split and ``export`` writes the pick's architecture JSON; only then is
the exported model (and the base, for its drop) measured on the test split.  The figure is reported (the
JSON's ``metrics.test_*``, the study attr ``final_test``, ``summary.json`` and ``report.html``), never used
to choose: a test drop over the budget is said, and the pick stands, so the figure stays an unbiased
estimate of the exported model's quality.

Example:
    >>> report = measure_final_test(arch, config, weights, trial=12, max_drop=0.01)  # doctest: +SKIP
    >>> report.test_drop, report.within_budget  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from autoprune.base_model import load_weights
from autoprune.search.study_attrs import FINAL_TEST_ATTR
from autoprune.selection.architecture import apply_architecture
from autoprune.selection.confirm import now_utc

if TYPE_CHECKING:
    from autoprune.config import StudyConfig
    from autoprune.tasks import Task

TEST_SPLIT = "test"
__all__ = ["FINAL_TEST_ATTR", "FinalTest", "measure_final_test"]


@dataclass(frozen=True)
class FinalTest:
    """The exported model measured on the test split, after the pick was fixed.

    Attributes:
        trial: the exported trial.
        selection: how it was chosen (``confirmed``, ``validation`` or ``trial``).
        test_metric: its metric on the test split, with ``test_metric_stderr`` over ``test_n`` samples.
        base_test_metric: the base model's, with ``base_test_metric_stderr``.
        test_drop: the drop on test (positive = worse), with ``test_drop_stderr`` (both models' errors).
        max_drop: the budget it was chosen under.
        measured_at: when (UTC, ISO 8601).

    Example:
        >>> r = FinalTest(3, "confirmed", 0.95, 0.01, 400, 0.96, 0.01, 0.01, 0.014, 0.02, "2026-12-06T18:00:00+00:00")
        >>> r.within_budget, FinalTest.from_attrs(r.to_attrs()) == r
        (True, True)
    """

    trial: int
    selection: str
    test_metric: float
    test_metric_stderr: float
    test_n: int
    base_test_metric: float
    base_test_metric_stderr: float
    test_drop: float
    test_drop_stderr: float
    max_drop: float
    measured_at: str

    @property
    def within_budget(self) -> bool:
        """Whether the test drop is within the budget (reported only: the pick was made before)."""
        return bool(self.test_drop <= self.max_drop)

    def to_attrs(self) -> dict[str, Any]:
        """The study attr's value (plain JSON)."""
        return asdict(self) | {"split": TEST_SPLIT, "within_budget": self.within_budget}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any] | None) -> FinalTest | None:
        """Read the study attr back; ``None`` when absent or not a final test report."""
        if not isinstance(attrs, Mapping):
            return None
        try:
            return cls(**{name: attrs[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None

    def metrics(self) -> dict[str, Any]:
        """The architecture JSON's ``metrics`` entries (``test_*``: reported, never used to choose)."""
        return {
            "test_metric": self.test_metric,
            "test_metric_stderr": self.test_metric_stderr,
            "test_n": self.test_n,
            "base_test_metric": self.base_test_metric,
            "test_drop": self.test_drop,
            "test_drop_stderr": self.test_drop_stderr,
            "test_feasible": self.within_budget,
        }

    def line(self, metric_name: str) -> str:
        """The report in one line."""
        verdict = "within" if self.within_budget else "OVER"
        return (f"test split (read once, after the pick): {metric_name} {self.test_metric:.4f} ± {1.96 * self.test_metric_stderr:.4f} "
                f"(n={self.test_n}), test drop {self.test_drop:+.4f} ± {1.96 * self.test_drop_stderr:.4f}, {verdict} the "
                f"budget {self.max_drop:g}; reported only, it chose nothing")


def measure_final_test(
    arch: Mapping[str, Any],
    config: StudyConfig,
    weights: Path | None,
    selection: str,
    max_drop: float,
    task: Task | None = None,
) -> FinalTest:
    """Rebuild the exported model from its architecture JSON and weights and measure it and the base on test.

    Args:
        arch: the exported architecture (its ``provenance.trial`` names the trial).
        config: the study config.
        weights: the exported finetuned weights (``None``: the pruned base weights).
        selection: how the trial was chosen.
        max_drop: the budget.
        task: the task to read the test split with (default: the one the architecture rebuilds).

    Returns:
        The :class:`FinalTest`.
    """
    applied = apply_architecture(dict(arch), config, weights=weights, where="exported architecture")
    task = task or applied.task
    base = load_weights(task.build_model(), config.checkpoint_path()).to(task.device)
    base_m = task.evaluate(base, TEST_SPLIT)
    model_m = task.evaluate(applied.model.to(task.device), TEST_SPLIT)
    return FinalTest(
        trial=int(arch["provenance"]["trial"]),
        selection=selection,
        test_metric=model_m.value,
        test_metric_stderr=model_m.stderr,
        test_n=model_m.n,
        base_test_metric=base_m.value,
        base_test_metric_stderr=base_m.stderr,
        test_drop=task.drop(base_m.value, model_m.value),
        test_drop_stderr=math.hypot(model_m.stderr, base_m.stderr),
        max_drop=max_drop,
        measured_at=now_utc(),
    )
