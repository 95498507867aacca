"""autoprune.console: routing log records leaves a verbosity set on purpose alone."""

import logging

import optuna

from autoprune import console


def test_configure_keeps_an_optuna_verbosity_set_on_purpose() -> None:
    before = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # as a worker or a benchmark sets it
        console.configure()
        assert logging.getLogger("optuna").level == logging.WARNING  # Optuna's per-trial INFO lines stay off
        assert logging.getLogger("autoprune").level == logging.INFO  # autoprune's notes still reach the handlers
        optuna.logging.set_verbosity(optuna.logging.INFO)
        console.configure()
        assert logging.getLogger("optuna").level == logging.INFO
    finally:
        optuna.logging.set_verbosity(before)
