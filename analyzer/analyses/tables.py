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


def used_codes(codes: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """The codes in ``[0, size)`` that occur where ``mask`` is set (sorted; -1 left out).

    Counts instead of sorting: one pass over the rows whatever their number.
    """
    sel = codes[mask]
    return np.flatnonzero(np.bincount(sel[sel >= 0], minlength=size)) if sel.size else sel[:0]


def codes_of(col: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Integer codes of ``col`` over ``categories`` (-1: missing or not one of them)."""
    if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == list(categories):
        return col.cat.codes.to_numpy()
    return pd.Categorical(col.astype(str), categories=list(categories)).codes


def strings_at(col: pd.Series, rows: np.ndarray | None = None) -> np.ndarray:
    """The values of ``col`` at positions ``rows`` (all rows when None) as an object array
    of ``str``.

    Same values as ``col.astype(str).to_numpy()[rows]`` (NaN where missing); on a
    Categorical only the categories are converted, then looked up through the codes.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.asarray([str(c) for c in col.cat.categories] + [np.nan], dtype=object)
        codes = col.cat.codes.to_numpy()
        return cats[codes if rows is None else codes[rows]]
    sub = col if rows is None else col.iloc[rows]
    return sub.astype(str).to_numpy(object)


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


def codes_and_labels(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 = missing) and the ``str`` label of each code of a column."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64), [str(c) for c in col.cat.categories]
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def duration_groups(act: pd.DataFrame, by: Sequence[str] = ("name", "category")) -> pd.DataFrame:
    """Sum, count and max of ``dur_ns`` per unique value of the ``by`` columns, in order of
    first appearance (``first`` = position of the group's first row); rows with a missing
    key are left out.

    Same groups and order as ``act.assign(**{c: act[c].astype(str)}).groupby(list(by),
    sort=False)["dur_ns"].agg(["sum", "count", "max"])``, from the codes (no strings per row).
    """
    cols = ["sum", "count", "max", "first"]
    coded = [codes_and_labels(act[c]) for c in by]
    ok = np.ones(len(act), bool)
    key = np.zeros(len(act), np.int64)
    for codes, labels in coded:
        ok &= codes >= 0
        key = key * (len(labels) + 1) + codes
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return pd.DataFrame({**{c: pd.Series([], dtype=object) for c in by},
                             **{c: np.zeros(0, np.int64) for c in cols}})
    order = idx[np.argsort(key[idx], kind="stable")]
    ks = key[order]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    dur = act["dur_ns"].to_numpy(np.int64)[order]
    first = order[start]
    out = {}
    rest = ks[start]
    labels_out = []
    for codes, labels in reversed(coded):
        base = len(labels) + 1
        labels_out.append(np.asarray(labels + [""], dtype=object)[rest % base])
        rest = rest // base
    for c, lab in zip(by, reversed(labels_out)):
        out[c] = lab
    out["sum"] = np.add.reduceat(dur, start)
    out["count"] = np.diff(np.r_[start, ks.size]).astype(np.int64)
    out["max"] = np.maximum.reduceat(dur, start)
    out["first"] = first
    g = pd.DataFrame(out)
    return g.iloc[np.argsort(first, kind="stable")].reset_index(drop=True)
