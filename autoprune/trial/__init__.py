"""One candidate: prune the base model, recover it, evaluate it and time it.

The study context, the recovery recipes and their calibration, the cheap screening that stops hopeless
candidates early, and the pruning setup shared by every trial.  Modules are imported directly (no
re-exports), so importing this package loads nothing heavy.
"""
