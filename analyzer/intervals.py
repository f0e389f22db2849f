"""Interval arithmetic on numpy arrays: union, total length, subtraction, intersection, gaps.

Intervals are half-open ``[start, end)`` with integer (ns) or float endpoints, given as two
arrays. Every function is vectorised (sort + cumulative max), O(n log n), no Python loops.

>>> s, e = union(np.array([0, 5, 2]), np.array([3, 8, 4]))
>>> s.tolist(), e.tolist()
([0, 5], [4, 8])
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "union",
    "total_length",
    "union_length",
    "intersect",
    "subtract",
    "gaps",
    "overlap_length",
    "clip",
    "covered_length",
]


def _as_arrays(starts, ends) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(starts)
    e = np.asarray(ends)
    if s.shape != e.shape:
        raise ValueError("starts and ends differ in shape")
    keep = e > s  # empty and inverted intervals contribute nothing
    return s[keep], e[keep]


def union(starts, ends) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping or touching intervals; returns sorted, disjoint ``(starts, ends)``."""
    s, e = _as_arrays(starts, ends)
    if s.size == 0:
        return s, e
    order = np.argsort(s, kind="stable")
    s = s[order]
    e = e[order]
    run_end = np.maximum.accumulate(e)
    # a new group starts where the start lies beyond every earlier end
    new_group = np.empty(s.size, dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] > run_end[:-1]
    first = np.flatnonzero(new_group)
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], run_end[last]


def total_length(starts, ends):
    """Sum of lengths of already disjoint intervals."""
    s = np.asarray(starts)
    e = np.asarray(ends)
    return (e - s).sum() if s.size else 0


def union_length(starts, ends):
    """Length covered by the union of the intervals."""
    s, e = union(starts, ends)
    return total_length(s, e)


def intersect(a_starts, a_ends, b_starts, b_ends) -> tuple[np.ndarray, np.ndarray]:
    """Intersection of two interval sets (each merged first); sorted and disjoint."""
    as_, ae = union(a_starts, a_ends)
    bs, be = union(b_starts, b_ends)
    if as_.size == 0 or bs.size == 0:
        return as_[:0], ae[:0]
    # Sweep: +1 at starts, -1 at ends of both disjoint sets; covered where depth == 2.
    pts = np.concatenate([as_, ae, bs, be])
    delta = np.concatenate(
        [np.ones(as_.size, np.int8), -np.ones(ae.size, np.int8),
         np.ones(bs.size, np.int8), -np.ones(be.size, np.int8)]
    )
    # at equal coordinates apply ends before starts (half-open intervals)
    order = np.lexsort((delta, pts))
    pts = pts[order]
    depth = np.cumsum(delta[order])
    inside = depth == 2
    idx = np.flatnonzero(inside)
    s = pts[idx]
    e = pts[idx + 1]
    keep = e > s
    return union(s[keep], e[keep])


def subtract(a_starts, a_ends, b_starts, b_ends) -> tuple[np.ndarray, np.ndarray]:
    """Parts of set A not covered by set B; sorted and disjoint."""
    as_, ae = union(a_starts, a_ends)
    bs, be = union(b_starts, b_ends)
    if as_.size == 0 or bs.size == 0:
        return as_, ae
    pts = np.concatenate([as_, ae, bs, be])
    # depth_a in {0,1}, depth_b in {0,1}; keep where a==1 and b==0
    da = np.concatenate([np.ones(as_.size, np.int8), -np.ones(ae.size, np.int8),
                         np.zeros(bs.size + be.size, np.int8)])
    db = np.concatenate([np.zeros(as_.size + ae.size, np.int8),
                         np.ones(bs.size, np.int8), -np.ones(be.size, np.int8)])
    order = np.lexsort((da + db, pts))
    pts = pts[order]
    depth_a = np.cumsum(da[order])
    depth_b = np.cumsum(db[order])
    idx = np.flatnonzero((depth_a == 1) & (depth_b == 0))
    idx = idx[idx + 1 < pts.size]
    s = pts[idx]
    e = pts[idx + 1]
    keep = e > s
    return union(s[keep], e[keep])


def overlap_length(a_starts, a_ends, b_starts, b_ends):
    """Length of the intersection of two interval sets."""
    s, e = intersect(a_starts, a_ends, b_starts, b_ends)
    return total_length(s, e)


def gaps(starts, ends) -> tuple[np.ndarray, np.ndarray]:
    """The holes between the union's intervals (from first start to last end)."""
    s, e = union(starts, ends)
    return e[:-1], s[1:]


def clip(starts, ends, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Clip intervals to ``[lo, hi)``, dropping the ones that end up empty."""
    s = np.clip(np.asarray(starts), lo, hi)
    e = np.clip(np.asarray(ends), lo, hi)
    keep = e > s
    return s[keep], e[keep]


def covered_length(starts, ends, union_starts, union_ends) -> np.ndarray:
    """For each interval ``[starts[i], ends[i])``, the length covered by a disjoint sorted set.

    ``union_starts``/``union_ends`` must come from :func:`union`. Vectorised with a prefix sum:
    ``F(t)`` = covered length of the set before ``t``; coverage of ``[x, y)`` is ``F(y) - F(x)``.
    """
    us = np.asarray(union_starts)
    ue = np.asarray(union_ends)
    x = np.asarray(starts)
    y = np.maximum(np.asarray(ends), x)
    if us.size == 0 or x.size == 0:
        return np.zeros(x.shape, dtype=np.result_type(x.dtype, np.int64) if x.size else np.int64)
    cum = np.concatenate([[0], np.cumsum(ue - us)])

    def cover_before(t):
        i = np.searchsorted(us, t, side="right") - 1  # last set interval starting at or before t
        inside = np.where(i >= 0, np.minimum(t, ue[np.maximum(i, 0)]) - us[np.maximum(i, 0)], 0)
        return np.where(i >= 0, cum[np.maximum(i, 0)] + inside, 0)

    return cover_before(y) - cover_before(x)
