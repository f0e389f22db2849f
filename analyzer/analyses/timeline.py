"""Timeline math per GPU device: wall, busy, idle, per-category time, communication overlap.

Accounting rules (tested as conservation laws, see docs/methodology.md):

- ``capture_us`` = last GPU activity end - first GPU activity start on the device.
- ``busy_us`` = length of the union of kernel, memcpy and memset intervals over all streams.
- ``edge_us`` = the idle time at the capture edges (``capture_edges``): before the first step's
  work and after the last step's (without steps: around lone warm-up / teardown activity),
  reported apart and left out of every share; ``edge_us = 0`` with ``include_edges``.
- ``wall_us = capture_us - edge_us`` (the analysed wall, denominator of every share) and
  ``idle_us = wall_us - busy_us``; so ``capture_us = busy_us + idle_us + edge_us``.
- A category's ``time_us`` is the union of its own intervals (so concurrent kernels of one
  category on two streams are not double counted); category times can add up to more than
  ``busy_us`` when categories overlap on different streams, never less.
- Communication ``exposed_us`` is communication time not overlapped by any non-communication
  kernel; ``overlapped_us = time_us - exposed_us``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import intervals as iv
from ..model import CATEGORIES, GPU_ACTIVITY_KINDS, Trace
from .tables import duration_groups, kind_mask, strings_at, take_rows

NS_PER_US = 1000.0
TOP_KERNELS = 25

#: Without steps, a leading (trailing) run of activity is warm-up (teardown) when it has at
#: most this many activities, ...
EDGE_MAX_ACTIVITIES = 8
#: ... holds at most this share of the device's busy time, ...
EDGE_MAX_BUSY_SHARE = 0.01
#: ... and the silence after (before) it lasts at least this long and at least
#: ``EDGE_GAP_RATIO`` times the span of the run itself.
EDGE_MIN_GAP_NS = 1_000_000
EDGE_GAP_RATIO = 10
EDGE_RULES = ("steps", "activity", "none", "included")


@dataclass(frozen=True)
class CaptureEdges:
    """Where the analysed part of a capture starts and ends, and the idle cut at each edge.

    ``core_start_ns``/``core_end_ns``: the first / last activity boundary that is analysed;
    ``before_ns``/``after_ns``: idle time (holes of the busy union) before / after them.
    ``rule``: ``steps`` (the first step's work to the last step's), ``activity`` (lone
    warm-up/teardown activity, no steps), ``none`` (nothing to cut) or ``included``.
    """

    core_start_ns: int
    core_end_ns: int
    before_ns: int
    after_ns: int
    rule: str

    @property
    def edge_ns(self) -> int:
        return self.before_ns + self.after_ns

    def to_dict(self) -> dict[str, Any]:
        return {"before_us": _us(self.before_ns), "after_us": _us(self.after_ns), "rule": self.rule}


def capture_edges(
    start: np.ndarray,
    end: np.ndarray,
    step_window: tuple[int, int] | None = None,
    *,
    include_edges: bool = False,
) -> CaptureEdges:
    """The capture edges of one device's activity intervals (vectorised, any order).

    Activity rule (always): a leading run of at most ``EDGE_MAX_ACTIVITIES`` activities
    holding at most ``EDGE_MAX_BUSY_SHARE`` of the busy time, followed by at least
    ``EDGE_MIN_GAP_NS`` and ``EDGE_GAP_RATIO`` x its own span of silence, is warm-up (the
    latest such gap ends it); a trailing run likewise is teardown.
    Step rule (with ``step_window``: first step's first activity start, last step's last
    activity end, see ``gaps.step_window``): the idle before the window is edge when the
    activity before it is negligible by the same two measures (count, busy share), whatever
    the gaps; otherwise (real untracked work before the first step) only the activity rule
    cuts there, never into the window. Likewise after the window. Busy time at the edges
    stays busy: only the idle there is cut.

        >>> e = capture_edges(np.array([0, 5_000_000]), np.array([1_000, 6_000_000]))
        >>> (e.before_ns, e.after_ns, e.rule)
        (4999000, 0, 'activity')
    """
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    if start.size == 0:
        return CaptureEdges(0, 0, 0, 0, "included" if include_edges else "none")
    lo, hi = int(start.min()), int(end.max())
    if include_edges:
        return CaptureEdges(lo, hi, 0, 0, "included")
    bs, be = busy_blocks(start, end)
    ga, gb = be[:-1], bs[1:]  # the holes, in time order
    cs, ce = _lone_edges(start, bs, be, ga, gb)
    rule = "activity"
    if step_window is not None:
        rule = "steps"
        w0, w1 = int(step_window[0]), int(step_window[1])
        busy = int((be - bs).sum())
        cap = EDGE_MAX_BUSY_SHARE * busy
        n_before = int(np.count_nonzero(start < w0))
        n_after = int(np.count_nonzero(end > w1))
        b_before, b_after = iv.covered_length(np.array([lo, w1]), np.array([w0, hi]), bs, be)
        cs = w0 if n_before <= EDGE_MAX_ACTIVITIES and b_before <= cap else min(cs, w0)
        ce = w1 if n_after <= EDGE_MAX_ACTIVITIES and b_after <= cap else max(ce, w1)
    length = gb - ga
    before = int(length[gb <= cs].sum())
    after = int(length[ga >= ce].sum())
    if before + after == 0 and rule == "activity":
        rule = "none"
    return CaptureEdges(cs, ce, before, after, rule)


def busy_blocks(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of overlapping or touching activity, zero-length activities included (so the
    holes between blocks are exactly the idle gaps of ``gaps._gap_table``)."""
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    run = np.maximum.accumulate(e)
    new = np.ones(s.size, bool)
    new[1:] = s[1:] > run[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], run[last]


def _lone_edges(start: np.ndarray, bs: np.ndarray, be: np.ndarray, ga: np.ndarray,
                gb: np.ndarray) -> tuple[int, int]:
    """Core window without steps: cut lone warm-up / teardown runs (see ``capture_edges``)."""
    lo, hi = int(bs[0]), int(be[-1])
    if ga.size == 0:
        return lo, hi
    starts = np.sort(start)
    length = gb - ga
    block = be - bs
    busy = int(block.sum())
    busy_before = np.cumsum(block)[:-1]  # busy time before gap i
    busy_after = busy - busy_before
    n_before = np.searchsorted(starts, ga, side="left")  # activities starting before gap i
    n_after = starts.size - np.searchsorted(starts, gb, side="left")
    big = length >= EDGE_MIN_GAP_NS
    lead = (big & (n_before <= EDGE_MAX_ACTIVITIES) & (busy_before <= EDGE_MAX_BUSY_SHARE * busy)
            & (length >= EDGE_GAP_RATIO * (ga - lo)))
    trail = (big & (n_after <= EDGE_MAX_ACTIVITIES) & (busy_after <= EDGE_MAX_BUSY_SHARE * busy)
             & (length >= EDGE_GAP_RATIO * (hi - gb)))
    i = np.flatnonzero(lead)
    j = np.flatnonzero(trail)
    cs = int(gb[i[-1]]) if i.size else lo
    ce = int(ga[j[0]]) if j.size else hi
    if cs >= ce:  # nothing but warm-up and teardown: keep everything
        return lo, hi
    return cs, ce


@dataclass(frozen=True)
class CategoryTime:
    time_us: float
    count: int
    share: float  # of wall time

    def to_dict(self) -> dict[str, Any]:
        return {"time_us": self.time_us, "count": self.count, "share": self.share}


@dataclass(frozen=True)
class CommTime:
    time_us: float
    exposed_us: float
    overlapped_us: float
    by_collective: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_us": self.time_us,
            "exposed_us": self.exposed_us,
            "overlapped_us": self.overlapped_us,
            "by_collective": {k: dict(v) for k, v in self.by_collective.items()},
        }


@dataclass(frozen=True)
class RankTimeline:
    """Figures of one GPU device of one rank."""

    rank: int
    device: int
    gpu: str
    wall_start_ns: int  # first activity start (the capture, edges included)
    wall_end_ns: int  # last activity end
    wall_us: float  # analysed wall: capture_us - edge_us = busy_us + idle_us
    busy_us: float
    idle_us: float
    categories: dict[str, CategoryTime]
    communication: CommTime
    top_kernels: list[dict[str, Any]]
    activity_source: str = "gpu"  # "gpu", or "cpu" when a trace has no GPU activity
    edges: CaptureEdges = field(default_factory=lambda: CaptureEdges(0, 0, 0, 0, "none"))

    @property
    def edge_us(self) -> float:
        return _us(self.edges.edge_ns)

    @property
    def capture_us(self) -> float:
        return _us(self.wall_end_ns - self.wall_start_ns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "device": self.device,
            "gpu": self.gpu,
            "activity_source": self.activity_source,
            "wall_us": self.wall_us,
            "busy_us": self.busy_us,
            "idle_us": self.idle_us,
            "edge_us": self.edge_us,
            "capture_us": self.capture_us,
            "edge": self.edges.to_dict(),
            "categories": {k: v.to_dict() for k, v in self.categories.items()},
            "communication": self.communication.to_dict(),
            "top_kernels": self.top_kernels,
        }


def gpu_activity(events: pd.DataFrame) -> pd.DataFrame:
    """Rows of GPU activity (kernels, memcpy, memset), in table order, fresh index."""
    return take_rows(events, kind_mask(events, GPU_ACTIVITY_KINDS))


def _us(ns) -> float:
    return float(ns) / NS_PER_US


def device_timeline(
    act: pd.DataFrame, *, rank: int, device: int, gpu: str = "", source: str = "gpu",
    step_window: tuple[int, int] | None = None, include_edges: bool = False,
) -> RankTimeline:
    """Compute the figures for one device's activity rows (classified: ``category`` column).

    ``step_window``: the device's step work window (``gaps.step_window``), which decides the
    capture edges; ``include_edges`` keeps them in the idle time (``edge_us = 0``).
    """
    start = act["ts_ns"].to_numpy(np.int64)
    end = start + act["dur_ns"].to_numpy(np.int64)
    if start.size == 0:
        empty = CommTime(0.0, 0.0, 0.0, {})
        return RankTimeline(rank, device, gpu, 0, 0, 0.0, 0.0, 0.0, {}, empty, [], source)
    wall_start = int(start.min())
    wall_end = int(end.max())
    edges = capture_edges(start, end, step_window, include_edges=include_edges)
    wall_ns = wall_end - wall_start - edges.edge_ns
    busy_ns = int(iv.union_length(start, end))
    cat_codes = act["category"].cat.codes.to_numpy()
    cat_names = list(act["category"].cat.categories)

    categories: dict[str, CategoryTime] = {}
    for code in np.unique(cat_codes):
        sel = cat_codes == code
        t = int(iv.union_length(start[sel], end[sel]))
        name = cat_names[code]
        categories[name] = CategoryTime(_us(t), int(sel.sum()), t / wall_ns if wall_ns else 0.0)
    categories = dict(sorted(categories.items(), key=lambda kv: (-kv[1].time_us, kv[0])))

    comm = _communication(act, start, end, cat_codes, cat_names)
    top = _top_kernels(act, busy_ns)
    return RankTimeline(
        rank=rank,
        device=device,
        gpu=gpu,
        wall_start_ns=wall_start,
        wall_end_ns=wall_end,
        wall_us=_us(wall_ns),
        busy_us=_us(busy_ns),
        idle_us=_us(wall_ns - busy_ns),
        categories=categories,
        communication=comm,
        top_kernels=top,
        activity_source=source,
        edges=edges,
    )


def _communication(act, start, end, cat_codes, cat_names) -> CommTime:
    if "communication" not in cat_names:
        return CommTime(0.0, 0.0, 0.0, {})
    is_comm = cat_codes == cat_names.index("communication")
    if not is_comm.any():
        return CommTime(0.0, 0.0, 0.0, {})
    is_kernel = kind_mask(act, ("kernel",))
    other_s, other_e = iv.union(start[~is_comm & is_kernel], end[~is_comm & is_kernel])
    cs, ce = start[is_comm], end[is_comm]
    comm_ns = int(iv.union_length(cs, ce))
    exposed_ns = int(iv.total_length(*iv.subtract(cs, ce, other_s, other_e)))
    by: dict[str, dict[str, float]] = {}
    coll = strings_at(act["collective"], np.flatnonzero(is_comm))
    for name in sorted(set(coll.tolist())):
        sel = coll == name
        t = int(iv.union_length(cs[sel], ce[sel]))
        ex = int(iv.total_length(*iv.subtract(cs[sel], ce[sel], other_s, other_e)))
        by[name or "other"] = {
            "time_us": _us(t),
            "count": int(sel.sum()),
            "exposed_us": _us(ex),
            "overlapped_us": _us(t - ex),
        }
    return CommTime(_us(comm_ns), _us(exposed_ns), _us(comm_ns - exposed_ns), by)


def _top_kernels(act: pd.DataFrame, busy_ns: int, n: int = TOP_KERNELS) -> list[dict[str, Any]]:
    g = duration_groups(act, ("name", "category"))  # in order of first appearance
    sums, counts = g["sum"].to_numpy(np.int64), g["count"].to_numpy(np.int64)
    top = np.lexsort((np.arange(len(g)), -counts, -sums))[:n]  # biggest first, stable
    out = []
    for i in top.tolist():
        total, count = int(sums[i]), int(counts[i])
        out.append(
            {
                "name": g["name"].iat[i],
                "category": g["category"].iat[i],
                "time_us": _us(total),
                "count": count,
                "mean_us": _us(total) / count,
                "max_us": _us(int(g["max"].iat[i])),
                "share_of_busy": total / busy_ns if busy_ns else 0.0,
            }
        )
    return out


def trace_timelines(
    trace: Trace,
    *,
    step_windows: Mapping[int, tuple[int, int]] | None = None,
    include_edges: bool = False,
) -> list[RankTimeline]:
    """One timeline per GPU device with activity in the trace (classified events).

    ``step_windows``: device -> step work window (``gaps.step_window`` of the trace's step
    attribution); devices without one get the lone-activity edge rule (``capture_edges``).
    A trace without any GPU activity (e.g. recorded on CPU) falls back to its top-level
    ``cpu_op`` events as activity, marked ``activity_source="cpu"``.
    """
    windows = step_windows or {}
    ev = trace.events
    act = gpu_activity(ev)
    gpu_name = trace.gpu.name if trace.gpu else ""
    if len(act):
        out = []
        devices = act["device"].to_numpy()
        for dev in sorted(np.unique(devices).tolist()):
            sub = take_rows(act, devices == dev)
            name = next((d.name for d in trace.devices if d.index == dev), gpu_name)
            out.append(device_timeline(sub, rank=trace.rank.rank, device=int(dev), gpu=name,
                                       step_window=windows.get(int(dev)),
                                       include_edges=include_edges))
        return out
    host = top_level_cpu_ops(ev)
    if len(host) == 0:
        return []
    return [device_timeline(host, rank=trace.rank.rank, device=-1, gpu="cpu", source="cpu",
                            include_edges=include_edges)]


def top_level_cpu_ops(ev: pd.DataFrame) -> pd.DataFrame:
    """``cpu_op`` events not nested inside another ``cpu_op`` of the same thread, ordered by
    thread, start and longest first."""
    pos = np.flatnonzero(kind_mask(ev, ("cpu_op",)))
    tid = ev["tid"].to_numpy()[pos]
    start = ev["ts_ns"].to_numpy(np.int64)[pos]
    dur = ev["dur_ns"].to_numpy(np.int64)[pos]
    order = np.lexsort((-dur, start, tid))  # stable
    pos, tid, start, dur = pos[order], tid[order], start[order], dur[order]
    if pos.size == 0:
        return take_rows(ev, pos)
    end = start + dur
    # an op is nested if it starts before the running max of earlier ends in its thread
    new_thread = np.r_[True, tid[1:] != tid[:-1]]
    grp = np.cumsum(new_thread) - 1
    cummax = pd.Series(end).groupby(grp).cummax().to_numpy(np.int64)
    prev_max = np.empty_like(end)
    prev_max[1:] = cummax[:-1]
    prev_max[new_thread] = np.iinfo(np.int64).min
    top = start >= prev_max
    return take_rows(ev, pos[top])


def summarize(timelines: list[RankTimeline]) -> dict[str, Any]:
    """The same figures over all ranks: sums (shares of the summed wall time) and spread."""
    if not timelines:
        return {
            "ranks": 0, "wall_us": 0.0, "busy_us": 0.0, "idle_us": 0.0, "edge_us": 0.0,
            "capture_us": 0.0, "busy_share": 0.0, "idle_share": 0.0, "edge_share": 0.0,
            "categories": {},
            "communication": CommTime(0.0, 0.0, 0.0, {}).to_dict(), "across_ranks": {},
        }
    wall = sum(t.wall_us for t in timelines)
    busy = sum(t.busy_us for t in timelines)
    edge = sum(t.edge_us for t in timelines)
    capture = sum(t.capture_us for t in timelines)
    cats: dict[str, dict[str, float]] = {}
    for t in timelines:
        for name, c in t.categories.items():
            d = cats.setdefault(name, {"time_us": 0.0, "count": 0})
            d["time_us"] += c.time_us
            d["count"] += c.count
    for d in cats.values():
        d["share"] = d["time_us"] / wall if wall else 0.0
    cats = dict(sorted(cats.items(), key=lambda kv: (-kv[1]["time_us"], kv[0])))
    comm_t = sum(t.communication.time_us for t in timelines)
    comm_x = sum(t.communication.exposed_us for t in timelines)
    by: dict[str, dict[str, float]] = {}
    for t in timelines:
        for k, v in t.communication.by_collective.items():
            d = by.setdefault(k, {"time_us": 0.0, "count": 0, "exposed_us": 0.0, "overlapped_us": 0.0})
            for key in d:
                d[key] += v[key]

    def spread(values: list[float]) -> dict[str, float]:
        a = np.asarray(values, dtype=float)
        return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}

    across = {
        "wall_us": spread([t.wall_us for t in timelines]),
        "busy_us": spread([t.busy_us for t in timelines]),
        "idle_us": spread([t.idle_us for t in timelines]),
        "idle_share": spread([t.idle_us / t.wall_us if t.wall_us else 0.0 for t in timelines]),
        "edge_us": spread([t.edge_us for t in timelines]),
        "communication_us": spread([t.communication.time_us for t in timelines]),
        "communication_exposed_us": spread([t.communication.exposed_us for t in timelines]),
    }
    for name in CATEGORIES:
        if name in cats:
            across[f"{name}_us"] = spread(
                [t.categories[name].time_us if name in t.categories else 0.0 for t in timelines]
            )
    return {
        "ranks": len(timelines),
        "wall_us": wall,
        "busy_us": busy,
        "idle_us": wall - busy,
        "edge_us": edge,
        "capture_us": capture,
        "busy_share": busy / wall if wall else 0.0,
        "idle_share": (wall - busy) / wall if wall else 0.0,
        "edge_share": edge / capture if capture else 0.0,
        "categories": cats,
        "communication": {
            "time_us": comm_t,
            "exposed_us": comm_x,
            "overlapped_us": comm_t - comm_x,
            "by_collective": by,
        },
        "across_ranks": across,
    }
