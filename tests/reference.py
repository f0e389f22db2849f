"""Independent reference computations shared by the tests (never the analyzer's own code)."""

from __future__ import annotations

from collections.abc import Iterable


def merged_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total covered length of [start, end) intervals: the plain sort-and-merge loop.

    Integer intervals give an int, float ones a float.
    """
    total = 0
    cur_s = cur_e = None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total
