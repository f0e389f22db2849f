"""Property tests: vectorised interval math against a brute-force reference on integer grids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import intervals as iv

interval_lists = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 15)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=25,
)


def cells(pairs) -> set[int]:
    """Brute force: the set of unit cells [k, k+1) covered."""
    out: set[int] = set()
    for s, e in pairs:
        out.update(range(s, e))
    return out


def arrays(pairs):
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64))


def as_cells(s, e) -> set[int]:
    return cells(zip(s.tolist(), e.tolist()))


@settings(max_examples=300, deadline=None)
@given(interval_lists)
def test_union_matches_brute_force(a):
    s, e = iv.union(*arrays(a))
    assert as_cells(s, e) == cells(a)
    assert iv.union_length(*arrays(a)) == len(cells(a))
    # disjoint, sorted, non-touching
    assert np.all(s[1:] > e[:-1])


@settings(max_examples=200, deadline=None)
@given(interval_lists)
def test_union_idempotent(a):
    s, e = iv.union(*arrays(a))
    s2, e2 = iv.union(s, e)
    assert s.tolist() == s2.tolist() and e.tolist() == e2.tolist()


@settings(max_examples=300, deadline=None)
@given(interval_lists, interval_lists)
def test_intersect_and_subtract(a, b):
    ca, cb = cells(a), cells(b)
    s, e = iv.intersect(*arrays(a), *arrays(b))
    assert as_cells(s, e) == ca & cb
    s, e = iv.subtract(*arrays(a), *arrays(b))
    assert as_cells(s, e) == ca - cb
    # subtraction is a subset and conserves length: |A| = |A-B| + |A&B|
    assert iv.union_length(*arrays(a)) == iv.total_length(s, e) + iv.overlap_length(*arrays(a), *arrays(b))


@settings(max_examples=200, deadline=None)
@given(interval_lists)
def test_gaps_fill_the_span(a):
    us, ue = iv.union(*arrays(a))
    if us.size == 0:
        return
    gs, ge = iv.gaps(*arrays(a))
    span = int(ue[-1] - us[0])
    assert iv.total_length(us, ue) + iv.total_length(gs, ge) == span
    assert not (as_cells(gs, ge) & cells(a))


@settings(max_examples=300, deadline=None)
@given(interval_lists, interval_lists)
def test_covered_length_each(a, b):
    us, ue = iv.union(*arrays(b))
    cb = cells(b)
    s, e = arrays(a)
    got = iv.covered_length(s, e, us, ue)
    want = [len(set(range(x, y)) & cb) for x, y in a]
    assert got.tolist() == want
