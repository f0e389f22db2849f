"""Timeline math per GPU device: wall, busy, idle, per-category time, communication overlap.

Accounting rules (tested as conservation laws, see docs/methodology.md):

- ``wall_us`` = last GPU activity end - first GPU activity start on the device.
- ``busy_us`` = length of the union of kernel, memcpy and memset intervals over all streams;
  ``idle_us = wall_us - busy_us``.
- A category's ``time_us`` is the union of its own intervals (so concurrent kernels of one
  category on two streams are not double counted); category times can add up to more than
  ``busy_us`` when categories overlap on different streams, never less.
- Communication ``exposed_us`` is communication time not overlapped by any non-communication
  kernel; ``overlapped_us = time_us - exposed_us``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import intervals as iv
from ..model import CATEGORIES, GPU_ACTIVITY_KINDS, Trace
from .tables import duration_groups, kind_mask, strings_at, take_rows

NS_PER_US = 1000.0
TOP_KERNELS = 25


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
    wall_start_ns: int
    wall_end_ns: int
    wall_us: float
    busy_us: float
    idle_us: float
    categories: dict[str, CategoryTime]
    communication: CommTime
    top_kernels: list[dict[str, Any]]
    activity_source: str = "gpu"  # "gpu", or "cpu" when a trace has no GPU activity

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "device": self.device,
            "gpu": self.gpu,
            "activity_source": self.activity_source,
            "wall_us": self.wall_us,
            "busy_us": self.busy_us,
            "idle_us": self.idle_us,
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
    act: pd.DataFrame, *, rank: int, device: int, gpu: str = "", source: str = "gpu"
) -> RankTimeline:
    """Compute the figures for one device's activity rows (classified: ``category`` column)."""
    start = act["ts_ns"].to_numpy(np.int64)
    end = start + act["dur_ns"].to_numpy(np.int64)
    if start.size == 0:
        empty = CommTime(0.0, 0.0, 0.0, {})
        return RankTimeline(rank, device, gpu, 0, 0, 0.0, 0.0, 0.0, {}, empty, [], source)
    wall_start = int(start.min())
    wall_end = int(end.max())
    wall_ns = wall_end - wall_start
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


def trace_timelines(trace: Trace) -> list[RankTimeline]:
    """One timeline per GPU device with activity in the trace (classified events).

    A trace without any GPU activity (e.g. recorded on CPU) falls back to its top-level
    ``cpu_op`` events as activity, marked ``activity_source="cpu"``.
    """
    ev = trace.events
    act = gpu_activity(ev)
    gpu_name = trace.gpu.name if trace.gpu else ""
    if len(act):
        out = []
        devices = act["device"].to_numpy()
        for dev in sorted(np.unique(devices).tolist()):
            sub = take_rows(act, devices == dev)
            name = next((d.name for d in trace.devices if d.index == dev), gpu_name)
            out.append(device_timeline(sub, rank=trace.rank.rank, device=int(dev), gpu=name))
        return out
    host = top_level_cpu_ops(ev)
    if len(host) == 0:
        return []
    return [device_timeline(host, rank=trace.rank.rank, device=-1, gpu="cpu", source="cpu")]


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
            "ranks": 0, "wall_us": 0.0, "busy_us": 0.0, "idle_us": 0.0,
            "busy_share": 0.0, "idle_share": 0.0, "categories": {},
            "communication": CommTime(0.0, 0.0, 0.0, {}).to_dict(), "across_ranks": {},
        }
    wall = sum(t.wall_us for t in timelines)
    busy = sum(t.busy_us for t in timelines)
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
        "busy_share": busy / wall if wall else 0.0,
        "idle_share": (wall - busy) / wall if wall else 0.0,
        "categories": cats,
        "communication": {
            "time_us": comm_t,
            "exposed_us": comm_x,
            "overlapped_us": comm_t - comm_x,
            "by_collective": by,
        },
        "across_ranks": across,
    }
