"""Re-time a study's best candidates on this machine, so speed can be judged on the deployment host.

A study searched on one machine (or on several) ranks candidates by speedups timed there.  Run on the
deployment host, :func:`retime_study` rebuilds the K fastest feasible candidates (not only the front's, see
:func:`autoprune.selection.confirm.select_candidates`) and the best uniform and global baselines, times them all
interleaved against the base in one process, and stores the figures under this host's fingerprint.
``autoprune pareto CONFIG --host-id <id>`` then judges speed by these timings
(:func:`autoprune.analysis.load_analysis` with ``host_id``); a timing that did not settle stays flagged.

Optuna refuses to change a finished trial, so the timings of one host are the study user attr
``timings:<host_id>``: ``{"host", "measured_at", "settings", "trials": {number: timing}, "baselines":
{kind: timing}}``; the analysis shows them as each trial's ``timings[host_id]``.  One key per host means
hosts re-timing at the same time never overwrite each other; a later re-timing on the same host replaces
that host's entries for the trials it times and keeps the others.

Example:
    >>> from autoprune.config import load_config  # doctest: +SKIP
    >>> summary = retime_study(load_config("studies/digits-resnet.yaml"), top=5)  # doctest: +SKIP
    >>> summary["host_id"]  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from autoprune.search.storage import with_retry
from autoprune.search.study import check_same_base
from autoprune.search.study_attrs import timings_attr
from autoprune.selection.confirm import Candidate
from autoprune.selection.confirm import export_candidates
from autoprune.selection.confirm import load_candidates
from autoprune.selection.confirm import now_utc
from autoprune.selection.confirm import timing_entry

if TYPE_CHECKING:
    import pandas as pd

    from autoprune.config import StudyConfig
    from autoprune.latency import SpeedupResult
    from autoprune.trial.candidate import StudyContext


def retime_study(
    config: StudyConfig,
    top: int = 5,
    storage: str | None = None,
    max_drop: float | None = None,
    echo: Callable[[str], None] = print,
    context: StudyContext | None = None,
) -> dict[str, Any]:
    """Time the K best feasible candidates and the best baselines on this host; store them under its id.

    Args:
        config: the study config.
        top: how many of the fastest feasible candidates to re-time (K).
        storage: storage URL override.
        max_drop: budget that decides feasibility (default: the study's).
        echo: prints one line.
        context: a study context already built in this process (default: built from ``config``).

    Returns:
        The stored value of the study attr ``timings:<host_id>`` plus ``host_id`` and ``retimed`` (the
        trial numbers timed by this call).  Each timing holds ``host, speedup, speedup_spread,
        latency_ms, base_latency_ms, noisy, measured_at``.

    Raises:
        SelectionError: no trial within the budget, or a candidate without stored artifacts.
        StorageError: the study, its artifacts or its base checkpoint cannot be found.
    """
    from autoprune.latency import host_fingerprint
    from autoprune.latency import measure_speedups
    from autoprune.trial.candidate import StudyContext
    loaded = load_candidates(config, storage, top, max_drop)
    url, study, df, candidates = loaded.url, loaded.study, loaded.df, loaded.candidates
    fingerprint = host_fingerprint(config.latency.provider, config.latency.provider_options)
    host_id = str(fingerprint["fingerprint_id"])
    hostname = str(fingerprint.get("hostname", ""))
    echo(f"re-timing {len(candidates)} candidate(s) of study {config.name!r} on host {host_id} ({hostname})")
    ctx = context or StudyContext.build(config)
    check_same_base(study, ctx, url)
    with tempfile.TemporaryDirectory(prefix="autoprune-retime-") as tmp:
        paths = export_candidates(config, ctx, candidates, Path(tmp), recover=False)
        results = measure_speedups(paths, ctx.base_onnx, ctx.latency)
    key = timings_attr(host_id)
    value = _timings_value(study.user_attrs.get(key) or {}, candidates, results, fingerprint, ctx)
    with_retry(lambda: study.set_user_attr(key, value), url, "store the re-timings")
    for line in _report(candidates, results, df):
        echo(line)
    source = config.source or "CONFIG"
    echo(f"stored as the study attr '{key}'; judge speed on this host with: autoprune pareto {source} --host-id {host_id}")
    return value | {"host_id": host_id, "retimed": [c.number for c in candidates if c.number is not None]}


def _timings_value(
    previous: Mapping[str, Any],
    candidates: list[Candidate],
    results: list[SpeedupResult],
    fingerprint: Mapping[str, Any],
    ctx: StudyContext,
) -> dict[str, Any]:
    """The new value of the host's timings attr: ``previous`` with the entries of the timed candidates replaced."""
    hostname = str(fingerprint.get("hostname", ""))
    trials = dict(previous.get("trials") or {})
    baselines = dict(previous.get("baselines") or {})
    for c, measured in zip(candidates, results, strict=True):
        entry = timing_entry(measured, hostname)
        if c.number is not None:
            trials[str(c.number)] = entry
        else:
            baselines[c.kind] = entry | {"ratio": c.ratio}
    return {
        "host": hostname,
        "fingerprint": fingerprint,
        "measured_at": now_utc(),
        "settings": ctx.latency.as_dict(),
        "trials": trials,
        "baselines": baselines,
    }


def _report(candidates: list[Candidate], results: list[SpeedupResult], df: pd.DataFrame) -> list[str]:
    """The table of each candidate's search speedup next to its speedup on this host."""
    lines = [f"{'candidate':16} {'kind':8} {'val drop':>9} {'searched on':>16} {'search':>8} {'here':>8}"]
    hosts = dict(zip(df["number"], df["host_id"], strict=True)) if "host_id" in df else {}
    for c, measured in zip(candidates, results, strict=True):
        searched = str(hosts.get(c.number) or "-") if c.number is not None else "sweep"
        lines.append(f"{c.label:16} {c.kind:8} {c.val_drop:+9.4f} {searched:>16} {c.speedup:7.2f}x {measured.speedup:7.2f}x"
                     + ("  (timing did not settle)" if measured.noisy else ""))
    return lines
