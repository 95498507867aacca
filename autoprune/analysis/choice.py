"""The chosen trial of a study: one decision shared by ``pareto``, the report, ``confirm``, ``export`` and the demo.

Before ``autoprune confirm`` has run, the choice is the validation pick (:func:`~autoprune.analysis.select`:
the fastest trial with a settled timing whose validation drop is within the budget), and its figures are
unconfirmed.  Once confirmation figures exist (``confirmed:*`` columns of the trial table), the choice is
the fastest confirmed candidate whose re-timing settled and which holds the budget on the selection split
(its selection drop plus ``confirmed:selection_z`` standard errors), with its confirmed speedup; the
validation pick is kept beside it so every view can say when the two differ.  The test split plays no part:
it is read afterwards, for the exported model only.

Pure: works on the trial table, no database.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import pandas as pd

from autoprune.analysis.pareto import as_float
from autoprune.analysis.pareto import completed
from autoprune.analysis.pareto import ranked
from autoprune.analysis.pareto import select
from autoprune.analysis.pareto import unsettled
from autoprune.analysis.twins import one_per_architecture
from autoprune.errors import SelectionError
from autoprune.search.study_attrs import confirmed_column
from autoprune.search.study_attrs import confirmed_figures
from autoprune.trial.screening import holds_with_margin


@dataclasses.dataclass(frozen=True)
class Choice:
    """What a study chose at one budget.

    Attributes:
        row: the chosen trial's row (``speedup`` is the figure the choice rests on: the confirmed one when
            ``source`` is ``"confirmed"``; ``speedup_searched`` keeps the search figure), or ``None``.
        source: ``"confirmed"`` (selection split, re-timed together), ``"validation"`` (unconfirmed) or ``"trial"``
            (named by the user).
        validation: the validation pick's row (``None`` when no trial with a settled timing is feasible).
        notes: why confirmed candidates were passed over.
        error: why nothing was chosen (``row`` is ``None``), else ``None``.

    Example:
        >>> df = pd.DataFrame([{"number": 0, "state": "COMPLETE", "metric": 0.9, "drop": 0.0, "speedup": 2.0}])
        >>> c = choose(df, 0.01)
        >>> c.row["number"], c.source, c.confirmed
        (0, 'validation', False)
    """

    row: dict[str, Any] | None
    source: str
    validation: dict[str, Any] | None
    notes: list[str]
    error: str | None = None

    @property
    def number(self) -> int | None:
        """The chosen trial's number, or ``None``."""
        return None if self.row is None else int(self.row["number"])

    @property
    def confirmed(self) -> bool:
        """Whether the choice rests on confirmed figures."""
        return self.source == "confirmed"

    @property
    def passed_over(self) -> dict[str, Any] | None:
        """The validation pick when the confirmed choice is another trial (``None`` otherwise)."""
        if self.validation is None or self.row is None or int(self.validation["number"]) == self.number:
            return None
        return self.validation


def passed_over_text(number: Any, search_speedup: Any, confirmed: Mapping[str, Any], max_drop: float) -> str:
    """What became of a validation-time pick that the confirmed choice passed over, in one clause.

    Args:
        number: its trial number.
        search_speedup: its speedup in the search.
        confirmed: its confirmed figures (``speedup``, ``speedup_spread``, ``selection_drop``,
            ``selection_drop_stderr``, ``selection_z``; empty when not confirmed).
        max_drop: the budget.

    Example:
        >>> passed_over_text(2, 2.6, {"speedup": 1.95, "speedup_spread": 0.01, "selection_drop": 0.004}, 0.01)
        'the validation-time pick, trial 2 (2.60x in the search), was re-timed at 1.95x ± 1.0%'
    """
    text = f"the validation-time pick, trial {number} ({as_float(search_speedup):.2f}x in the search),"
    speed, spread = as_float(confirmed.get("speedup")), as_float(confirmed.get("speedup_spread"))
    if not math.isfinite(speed):
        return text + " was not confirmed"
    text += f" was re-timed at {speed:.2f}x" + (f" ± {spread:.1%}" if math.isfinite(spread) else "")
    if not holds_on_selection(confirmed, max_drop):
        text += f" and fails the budget on the selection split (selection drop {margin_text(confirmed)})"
    return text


def holds_on_selection(confirmed: Mapping[str, Any], max_drop: float) -> bool:
    """Whether confirmed figures hold ``max_drop`` on the selection split: the selection drop plus
    ``selection_z`` standard errors of it (no margin where either is unknown).

    Example:
        >>> holds_on_selection({"selection_drop": 0.004, "selection_drop_stderr": 0.004, "selection_z": 1.0}, 0.01)
        True
    """
    z, se = as_float(confirmed.get("selection_z")), as_float(confirmed.get("selection_drop_stderr"))
    return holds_with_margin(as_float(confirmed.get("selection_drop")), se, max_drop, z if math.isfinite(z) else 0.0)


Key = TypeVar("Key", bound=Hashable)


def next_round(ranked: Sequence[Key], verdicts: Mapping[Key, bool], size: int) -> list[Key]:
    """The next ``size`` candidates to judge on the selection split, walking down a ranking when none held.

    Confirmation judges the fastest feasible candidates first; when none of them holds on the selection split,
    the next ones by the same ranking are judged, and so on.  This gives the next ones: the first ``size``
    of ``ranked`` without a verdict yet.  The walk stops (an empty list) once a candidate judged to hold
    is ranked before every candidate still unjudged (nothing slower than it could be picked instead), or
    when every candidate has a verdict.  Unjudged candidates ranked before a holding one are still returned:
    they are faster, so they could lead the pick.

    Args:
        ranked: candidate keys, fastest first.
        verdicts: key -> whether it holds on the selection split, for every candidate judged so far (a key
            may be judged outside the ranking's order, e.g. a baseline trial judged in the first round).
        size: how many at most (K).

    Example:
        >>> next_round(["a", "b", "c", "d", "e"], {"a": False, "b": False}, 2)
        ['c', 'd']
        >>> next_round(["a", "b", "c", "d", "e"], {"a": False, "b": False, "d": True}, 2)
        ['c']
        >>> next_round(["a", "b", "c"], {"a": True}, 2), next_round(["a", "b"], {"a": False, "b": False}, 2)
        ([], [])
    """
    out: list[Key] = []
    for key in ranked:
        if len(out) == size:
            break
        if key not in verdicts:
            out.append(key)
        elif verdicts[key]:
            break
    return out


def margin_text(confirmed: Mapping[str, Any]) -> str:
    """The selection drop with its margin in words: ``+0.0040 + 1 x 0.0030``."""
    z, se = as_float(confirmed.get("selection_z")), as_float(confirmed.get("selection_drop_stderr"))
    text = f"{as_float(confirmed.get('selection_drop')):+.4f}"
    return text + (f" + {z:g} x {se:.4f}" if math.isfinite(z) and math.isfinite(se) and z > 0 else "")


def _confirmed_speed(row: pd.Series) -> float:
    """The confirmed speedup of a row, its search speedup where none was recorded."""
    value = as_float(row.get(confirmed_column("speedup")))
    return value if math.isfinite(value) else as_float(row.get("speedup"))


def confirmed_pick(
    df: pd.DataFrame,
    max_drop: float,
    notes: list[str],
    cv_threshold: float | None = None,
    metric_direction: str = "maximize",
) -> dict[str, Any] | None:
    """The fastest confirmed candidate whose re-timing settled and which holds the budget on the selection split.

    A candidate whose re-timing did not settle (flagged noisy, or a spread above ``cv_threshold``) never
    leads: it is passed over with a note, like one that fails the budget on the selection split.

    Args:
        df: complete trials with ``confirmed:*`` columns.
        max_drop: the budget, on the validation drop and on the selection drop with its margin
            (:func:`holds_on_selection`).
        notes: receives one line per candidate passed over, fastest first.
        cv_threshold: the study's ``latency.cv_threshold``.
        metric_direction: ``"maximize"`` or ``"minimize"``; candidates are ranked by
            :func:`~autoprune.analysis.pareto.rank_key` on their confirmed speedup.

    Returns:
        The row as a dict (figures as recorded), or ``None`` when no candidate with a settled re-timing was
        confirmed.

    Raises:
        SelectionError: candidates with settled re-timings were confirmed, and none holds on the selection split.
    """
    if confirmed_column("selection_drop") not in df.columns:
        return None
    conf = df[df[confirmed_column("selection_drop")].notna() & (df["drop"] <= max_drop)]
    conf = ranked(conf.assign(_speed=[_confirmed_speed(r) for _, r in conf.iterrows()]), metric_direction, speed_key="_speed")
    settled_seen = False
    for _, row in conf.iterrows():
        number, speed = int(row["number"]), row["_speed"]
        if unsettled(row.get(confirmed_column("noisy")), row.get(confirmed_column("speedup_spread")), cv_threshold):
            notes.append(f"trial {number} ({speed:.2f}x): {_unsettled_reason(row)}; "
                         "left out of the pick: run 'autoprune confirm' again on a quieter host")
            continue
        settled_seen = True
        figures = _confirmed_of(row)
        if holds_on_selection(figures, max_drop):
            return row.drop(labels=["_speed"]).to_dict()
        notes.append(
            f"trial {number} ({speed:.2f}x) fails the budget on the selection split "
            f"(selection drop {margin_text(figures)} > {max_drop}); falling back to the next confirmed candidate"
        )
    if not settled_seen:
        return None
    raise SelectionError(
        f"no confirmed candidate holds the budget {max_drop} on the selection split; "
        "relax --max-drop (a confirmation stored before confirm walked down the ranking may also be run again: "
        "'autoprune confirm' now judges slower candidates until one holds)"
    )


def _confirmed_of(row: pd.Series) -> dict[str, Any]:
    """The ``confirmed:*`` figures of a row by their plain names."""
    return confirmed_figures(row)


def _unsettled_reason(row: pd.Series) -> str:
    """Why a confirmed re-timing may not lead: its re-timings disagreed, or its spread was too wide."""
    if str(row.get(confirmed_column("reproduced"))) == "False":  # bool and numpy.bool_ alike; missing: an older record
        return "its re-timings disagreed beyond their spreads (the host's load changed)"
    return f"its re-timing did not settle (spread {as_float(row.get(confirmed_column('speedup_spread'))):.1%})"


def _with_confirmed_figures(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its confirmed speedup as ``speedup`` (the search figure kept as ``speedup_searched``)."""
    out = dict(row)
    out["speedup_searched"] = row.get("speedup_searched", row.get("speedup"))
    if math.isfinite(as_float(row.get(confirmed_column("speedup")))):
        out["speedup"] = as_float(row.get(confirmed_column("speedup")))
        out["speedup_spread"] = as_float(row.get(confirmed_column("speedup_spread")))
        out["timing"] = "confirmed"
    return out


def choose(
    df: pd.DataFrame,
    max_drop: float,
    *,
    metric_direction: str = "maximize",
    cv_threshold: float | None = None,
    use_confirmed: bool = True,
) -> Choice:
    """The chosen trial at ``max_drop``: the confirmed pick when confirmation figures exist, else the validation pick.

    Args:
        df: the trial table (:func:`autoprune.analysis.load_analysis`).
        max_drop: the budget.
        metric_direction: ``"maximize"`` or ``"minimize"``.
        cv_threshold: the study's ``latency.cv_threshold`` (see :func:`autoprune.analysis.pareto.unsettled`).
        use_confirmed: ``False`` ignores confirmation figures (the validation pick, unconfirmed).

    Returns:
        The :class:`Choice`; nothing chosen is a ``Choice`` with ``row=None`` and ``error`` saying why.
    """
    done = one_per_architecture(completed(df), max_drop)  # twins are one candidate, never picked between by noise
    notes: list[str] = []
    try:
        validation: dict[str, Any] | None = select(done, max_drop, metric_direction=metric_direction,
                                                   cv_threshold=cv_threshold)
        error = None
    except SelectionError as exc:
        validation, error = None, str(exc)
    if use_confirmed:
        try:
            picked = confirmed_pick(done, max_drop, notes, cv_threshold, metric_direction)
        except SelectionError as exc:
            return Choice(None, "confirmed", validation, notes, str(exc))
        if picked is not None:
            return Choice(_with_confirmed_figures(picked), "confirmed", validation, notes)
    return Choice(validation, "validation", validation, notes, error)
