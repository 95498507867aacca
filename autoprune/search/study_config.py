"""The config a study was created with, rebuilt from the study for every process that joins or reads it.

``autoprune create`` stores the whole config on the study (the study attr ``config``).  A worker, ``pareto``,
``confirm``, ``retime`` and ``export`` read their local YAML only to find the study; then they take its settings
from the study itself, so a host whose copy of the file drifted cannot mix trials made under other settings
into the study.  The local file may differ only in keys that say where or how to run
(:data:`autoprune.config.RUN_KEYS`); those differences are said in one line, any other refuses with exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from autoprune.analysis.frame import open_study
from autoprune.config import StudyConfig
from autoprune.config import stored_config
from autoprune.config import study_config
from autoprune.config import validated_copy
from autoprune.trial.calibration import RECIPE_ATTR
from autoprune.trial.calibration import with_recipe

CONFIG_ATTR = "config"


def reconcile(
    attrs: Mapping[str, Any], local: StudyConfig, say: Callable[[str], None], study_name: str | None = None
) -> StudyConfig:
    """The study's config, with this host's run keys, from the study attrs ``attrs``.

    Args:
        attrs: the study's user attrs.
        local: the config read on this host (not changed).
        say: prints one line (a note on run keys that differ, or on a study that stored no config).
        study_name: the study (default: the local config's name).

    Returns:
        The config every trial of the study is made with; the local one when the study stored none.

    Raises:
        ConfigError: the local file differs from the study's config in a key that changes results.
    """
    name = study_name or local.name
    stored, why = stored_config(attrs.get(CONFIG_ATTR))
    where = local.source or "the local config"
    if stored is None:
        say(f"note: study {name!r} was made by an older autoprune ({why}); using {where} as it is")
        return local
    # The name finds a study and changes no trial: --study may name it, and a copied study keeps the config
    # stored under its first name.
    # a calibrated study stores its recipe in place of the file's
    mine = with_recipe(validated_copy(local, name=name), attrs.get(RECIPE_ATTR))
    config, runs = study_config(validated_copy(stored, name=name), mine, name)
    if runs:
        say(f"note: {where} differs from the config of study {name!r} only where or how it runs "
            f"({', '.join(runs)}); using this host's values for those")
    return config


def config_for_study(
    local: StudyConfig, storage: str | None, say: Callable[[str], None], study_name: str | None = None
) -> StudyConfig:
    """Open the study of ``local`` (read-only) and :func:`reconcile` the local config with it.

    Args:
        local: the config read on this host.
        storage: storage URL override (default: the config's).
        say: prints one line.
        study_name: the study (default: the config's name).

    Raises:
        StorageError: the storage cannot be read or holds no such study.
        ConfigError: see :func:`reconcile`.
    """
    name = study_name or local.name
    with open_study(local.storage_url(storage), name) as study:
        attrs = dict(study.user_attrs)
    return reconcile(attrs, local, say, name)


__all__ = ["CONFIG_ATTR", "config_for_study", "reconcile"]
