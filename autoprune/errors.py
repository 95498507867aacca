"""The few exceptions raised at autoprune's boundaries.

Every message names the thing that is wrong (file, key, layer, field) and the fix.  The CLI turns any
:class:`AutopruneError` into one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class: a problem the user can fix from the message alone."""


class ConfigError(AutopruneError):
    """A study config file is missing, malformed or has an invalid value."""


class TaskError(AutopruneError):
    """A task (built-in or plugin) cannot be built or breaks its contract."""


class PruningError(AutopruneError):
    """A ratio vector or group name cannot be applied to the model."""


class LatencyError(AutopruneError):
    """A model cannot be exported, loaded or timed."""


class StorageError(AutopruneError):
    """The study storage cannot be reached or does not hold what was asked for."""


class ArchitectureError(AutopruneError):
    """An architecture JSON is invalid or does not fit the base model."""


class SelectionError(AutopruneError):
    """No trial satisfies what was asked (for example nothing is within the budget)."""


class ArtifactError(AutopruneError):
    """A file autoprune wrote in an earlier stage (baselines, calibration, reports) is torn or unreadable."""
