"""Twins: trials that kept the same channels (the same architecture, :func:`autoprune.space.widths.row_channels_key`).

Two twins run at one speed, so any gap between their timings is the timing's noise.  Every pick (the
candidates ``confirm`` re-measures, the validation pick, the confirmed pick) therefore sees one trial per
architecture, chosen without looking at a timing: the lowest-numbered twin within the budget, else the
lowest-numbered one.  Pure: works on the trial table, no database.
"""

from __future__ import annotations

import pandas as pd

from autoprune.analysis.pareto import as_float
from autoprune.space.widths import row_channels_key


def architecture_keys(df: pd.DataFrame) -> pd.Series:
    """Each row's channel key (``None`` where the row records no channels), index kept."""
    return pd.Series([row_channels_key(r) for r in df.to_dict("records")], index=df.index, dtype=object)


def one_per_architecture(df: pd.DataFrame, max_drop: float | None = None) -> pd.DataFrame:
    """``df`` with one row per channel key: the lowest-numbered twin within ``max_drop``, else the lowest-numbered.

    Rows without recorded channels are all kept (nothing says they are twins).  The rows keep their order.

    Example:
        >>> df = pd.DataFrame({"number": [0, 1, 2], "drop": [0.05, 0.01, 0.0], "channels:a": [8, 8, 16]})
        >>> list(one_per_architecture(df, 0.02)["number"])
        [1, 2]
    """
    if df.empty:
        return df
    keys = architecture_keys(df)
    over = [not as_float(d) <= max_drop if max_drop is not None else False for d in df.get("drop", [0.0] * len(df))]
    order = df.assign(_key=keys, _over=over).sort_values(["_over", "number"], kind="stable")
    keep = set(order[order["_key"].isna()].index) | set(order[order["_key"].notna()].drop_duplicates("_key").index)
    return df[df.index.isin(keep)]


def twins_of(df: pd.DataFrame, number: int) -> list[int]:
    """The other trials of ``df`` with the same channel key as trial ``number`` (lowest first; empty when none)."""
    keys = architecture_keys(df)
    mine = keys[df["number"] == number]
    if mine.empty or mine.iloc[0] is None:
        return []
    same = df[(keys == mine.iloc[0]) & (df["number"] != number)]
    return sorted(int(n) for n in same["number"])
