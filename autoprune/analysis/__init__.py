"""Analysis of a search study: Pareto front, selection under a drop budget, noise, plots and report.

The math (:mod:`~autoprune.analysis.pareto`, :mod:`~autoprune.analysis.stats`) is pure and works on plain
numbers; :mod:`~autoprune.analysis.frame` reads a study read-only into a trial table; plots and the report
are built from that table.

Example:
    >>> from autoprune.analysis import load_analysis, select, write_report  # doctest: +SKIP
    >>> df, info = load_analysis("sqlite:///studies/resnet.db", "resnet")  # doctest: +SKIP
    >>> select(df, max_drop=0.01)["number"]  # doctest: +SKIP
"""

from __future__ import annotations

from autoprune.analysis.choice import Choice
from autoprune.analysis.choice import choose
from autoprune.analysis.frame import StudyInfo
from autoprune.analysis.frame import load_analysis
from autoprune.analysis.frame import load_study_info
from autoprune.analysis.frame import load_trials
from autoprune.analysis.frame import open_study
from autoprune.analysis.frame import study_info
from autoprune.analysis.frame import trials_frame
from autoprune.analysis.pareto import best_baseline
from autoprune.analysis.pareto import completed
from autoprune.analysis.pareto import hypervolume_2d
from autoprune.analysis.pareto import hypervolume_history
from autoprune.analysis.pareto import pareto_front
from autoprune.analysis.pareto import pareto_mask
from autoprune.analysis.pareto import select
from autoprune.analysis.plots import plot_compare
from autoprune.analysis.plots import plot_pareto
from autoprune.analysis.plots import plot_ratios
from autoprune.analysis.report import Summary
from autoprune.analysis.report import summarize
from autoprune.analysis.report import write_report
from autoprune.analysis.stats import binomial_stderr
from autoprune.analysis.stats import bootstrap_miou_stderr
from autoprune.analysis.stats import bootstrap_stderr
from autoprune.analysis.stats import budget_noise_warning
from autoprune.analysis.stats import drop_interval
from autoprune.analysis.stats import drop_stderr
from autoprune.analysis.stats import miou
from autoprune.analysis.stats import samples_needed

__all__ = [
    "Choice",
    "StudyInfo",
    "best_baseline",
    "binomial_stderr",
    "bootstrap_miou_stderr",
    "bootstrap_stderr",
    "budget_noise_warning",
    "choose",
    "completed",
    "drop_interval",
    "drop_stderr",
    "hypervolume_2d",
    "hypervolume_history",
    "load_analysis",
    "load_study_info",
    "load_trials",
    "miou",
    "open_study",
    "pareto_front",
    "pareto_mask",
    "plot_compare",
    "plot_pareto",
    "plot_ratios",
    "samples_needed",
    "select",
    "study_info",
    "Summary",
    "summarize",
    "trials_frame",
    "write_report",
]
