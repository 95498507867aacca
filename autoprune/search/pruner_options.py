"""The names of ``search.pruner`` and the check of ``search.pruner_options`` (light: config loading imports it).

Each name maps to one of Optuna's pruners; ``search.pruner_options`` are passed to its constructor as they are,
so an option is exactly Optuna's (``n_startup_trials`` of ``MedianPruner``, ``reduction_factor`` of
``HyperbandPruner``...).  Optuna is imported only when a pruner is configured.

Example:
    >>> pruner_options_problem("median", {"n_startup_trials": 3})
    >>> print(pruner_options_problem("median", {"n_startup": 3}))  # doctest: +NORMALIZE_WHITESPACE
    unknown option 'n_startup' of pruner 'median' (optuna.pruners.MedianPruner);
    its options: n_startup_trials, n_warmup_steps, interval_steps, n_min_trials
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

# search.pruner -> the Optuna pruner class (in optuna.pruners); "none" runs every finetune to its end.
PRUNER_CLASSES = {
    "none": None,
    "median": "MedianPruner",
    "successive-halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "wilcoxon": "WilcoxonPruner",
}
PRUNERS = tuple(PRUNER_CLASSES)


def pruner_class(name: str) -> Any:
    """The Optuna pruner class of a ``search.pruner`` name (None for ``none``)."""
    cls_name = PRUNER_CLASSES[name]
    if cls_name is None:
        return None
    import optuna  # heavy; only studies that configure a pruner pay for it here

    return getattr(optuna.pruners, cls_name)


def build_pruner(name: str, options: Mapping[str, Any]) -> Any:
    """The configured Optuna pruner (None for ``none``); Optuna's experimental warnings are silenced."""
    cls = pruner_class(name)
    if cls is None:
        return None
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**dict(options))


def pruner_options_problem(name: str, options: Mapping[str, Any]) -> str | None:
    """What is wrong with ``options`` for pruner ``name`` (None: nothing), naming the option and the fix."""
    cls = pruner_class(name)
    if cls is None:
        if options:
            return f"pruner 'none' takes no options (got {', '.join(map(repr, options))}); set search.pruner or drop them"
        return None
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    label = f"pruner {name!r} (optuna.pruners.{cls.__name__})"
    for key in options:
        if key not in known:
            return f"unknown option {key!r} of {label}; its options: {', '.join(known)}"
    try:
        build_pruner(name, options)
    except (TypeError, ValueError) as exc:
        return f"options {dict(options)} are refused by {label}: {exc}"
    return None


__all__ = ["PRUNERS", "PRUNER_CLASSES", "build_pruner", "pruner_class", "pruner_options_problem"]
