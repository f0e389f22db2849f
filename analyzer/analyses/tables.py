"""Cheap row selection on event tables (no copy of the whole table).

pandas' row selections on a DataFrame (``df[mask]``, ``df.loc[mask, cols]``, ``df.take``)
first *consolidate* the frame: every group of same-dtype columns is copied into one 2-D
block. The readers build the event table one block per column, so on a large trace that
consolidation copies most of the table (time, and a second table's worth of memory) just to
pick a few thousand rows. The helpers here work column by column on the codes and arrays.

    >>> import numpy as np, pandas as pd
    >>> df = pd.DataFrame({"ts_ns": np.arange(4), "kind": pd.Categorical(["kernel", "cpu_op"] * 2)})
    >>> kind_mask(df, ("kernel",)).tolist()
    [True, False, True, False]
    >>> take_rows(df, np.array([3, 0]))["ts_ns"].tolist()
    [3, 0]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def kind_mask(events: pd.DataFrame, kinds: Iterable[str], column: str = "kind") -> np.ndarray:
    """Boolean mask of the rows whose ``column`` value is one of ``kinds`` (NaN never is).

    On a Categorical column only the categories are compared, then the codes are looked up.
    """
    col = events[column]
    wanted = set(kinds)
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        lut = np.zeros(len(cats) + 1, bool)  # last slot: missing (code -1)
        lut[:-1] = [str(c) in wanted for c in cats]
        return lut[col.cat.codes.to_numpy()]
    return col.isin(list(wanted)).to_numpy(bool)


def codes_of(col: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Integer codes of ``col`` over ``categories`` (-1: missing or not one of them)."""
    if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == list(categories):
        return col.cat.codes.to_numpy()
    return pd.Categorical(col.astype(str), categories=list(categories)).codes


def strings_at(col: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The values of ``col`` at positions ``rows`` as an object array of ``str``.

    Same values as ``col.astype(str).to_numpy()[rows]`` (NaN where missing) without
    converting the whole column.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.asarray([str(c) for c in col.cat.categories] + [np.nan], dtype=object)
        return cats[col.cat.codes.to_numpy()[rows]]
    return col.iloc[rows].astype(str).to_numpy(object)


def take_rows(df: pd.DataFrame, rows: np.ndarray, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows ``rows`` (positions or a boolean mask) of ``df``, in that order, as a new frame
    with a fresh RangeIndex; only ``columns`` (those of them that exist) when given.

    Taken column by column, so ``df`` is never consolidated or copied as a whole.
    """
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    cols = list(df.columns) if columns is None else [c for c in columns if c in df.columns]
    data = {}
    for c in cols:
        s = df[c]
        data[c] = s.to_numpy()[rows] if isinstance(s.dtype, np.dtype) else s.array.take(rows)
    return pd.DataFrame(data, columns=cols, copy=False)
