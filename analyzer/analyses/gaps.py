"""GPU idle time (batching and scheduling gaps) split by cause.

Every idle gap of the main device (a hole in the union of its kernels, memcpys and memsets,
between the first and the last activity) is split into causes that add up to the gap:

- ``pp_bubble``: the activity that ends the gap is a pipeline point-to-point transfer
  (``sendrecv``) in a PP>1 run: the stage waited for its neighbour.
- ``scheduler``: host time inside the gap covered by scheduler work (``scheduler.*`` spans,
  ``recv_requests`` / ``get_next_batch_to_run`` / ``process_batch_result`` frames, ...)
  outside the forward step spans, before the next launch.
- ``synchronization``: the host was blocked in a synchronising call (stream/device sync,
  blocking D2H copy, ``.item()``) when the GPU went idle; the rest of the host window.
- ``launch_overhead``: the remaining host window before the next launch (python, launch
  API), plus the launch latency between the launch call and the start on the GPU (up to
  ``LAUNCH_LATENCY_MAX_NS``).
- ``device_wait``: the next activity had been launched before the gap began, or started more
  than ``LAUNCH_LATENCY_MAX_NS`` after its launch (it waited on a stream/event dependency),
  or its launch is unknown. Sub-microsecond dispatch gaps between queued kernels land here.

Gaps are "inside a step" when the activities on both sides belong to the same step,
"between steps" when they belong to two different steps, "outside steps" when one side
belongs to no step (before the first step of the capture, untracked work). Conservation: the causes add up to ``idle_us`` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analyzer import intervals as iv
from analyzer.analyses.phases import NS_PER_US, StepAttribution, markers, match_rows
from analyzer.analyses.tables import strings_at

CAUSES: tuple[str, ...] = ("scheduler", "synchronization", "launch_overhead", "pp_bubble", "device_wait")
SYNC_TOLERANCE_NS = 5_000  # a sync span "holds" the idle moment if it ends at most this later
#: launch -> GPU start latency counted as launch overhead; beyond it the kernel was held back
#: on the device (stream/event dependency) and the rest is ``device_wait``.
LAUNCH_LATENCY_MAX_NS = 50_000


def host_spans(ev: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Union of the host spans of marker ``host.<what>`` (sorted, disjoint)."""
    pos, _ = match_rows(ev, markers()["host"][what])
    if pos.size == 0:
        z = np.zeros(0, np.int64)
        return z, z
    s = ev["ts_ns"].to_numpy(np.int64)[pos]
    e = s + ev["dur_ns"].to_numpy(np.int64)[pos]
    return iv.union(s, e)


def _scheduler_spans(ev: pd.DataFrame, attr: StepAttribution) -> tuple[np.ndarray, np.ndarray]:
    """Scheduler host spans outside the forward step spans."""
    sched_s, sched_e = host_spans(ev, "scheduler")
    steps = attr.steps
    if attr.has_steps and (steps["host_start_ns"] >= 0).any():
        hs = steps["host_start_ns"].to_numpy(np.int64)
        he = steps["host_end_ns"].to_numpy(np.int64)
        sched_s, sched_e = iv.subtract(sched_s, sched_e, hs, he)
    return sched_s, sched_e


def _gap_table(act: pd.DataFrame) -> pd.DataFrame:
    """One row per idle gap: start/end and the activities on both sides."""
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    cols = ["start_ns", "end_ns", "prev_idx", "next_idx"]
    if s.size < 2:
        return pd.DataFrame({c: np.zeros(0, np.int64) for c in cols})
    order = np.argsort(s, kind="stable")  # act is sorted by ts already; keep it explicit
    s, e = s[order], e[order]
    run = np.maximum.accumulate(e)
    new = np.ones(s.size, bool)
    new[1:] = s[1:] > run[:-1]
    first = np.flatnonzero(new)
    block = np.cumsum(new) - 1
    # the activity ending each block: the one with the largest end (last in (block, end) order)
    by_end = np.lexsort((e, block))
    last_of_block = by_end[np.r_[block[by_end][1:] != block[by_end][:-1], True]]
    gap_start = e[last_of_block[:-1]]
    gap_end = s[first[1:]]
    return pd.DataFrame({
        "start_ns": gap_start,
        "end_ns": gap_end,
        "prev_idx": order[last_of_block[:-1]],
        "next_idx": order[first[1:]],
    })


def gap_causes(
    ev: pd.DataFrame,
    attr: StepAttribution,
    *,
    pp_size: int | None = None,
) -> pd.DataFrame:
    """One row per idle gap of the main device: ``start_ns``, ``end_ns``, ``prev_idx`` /
    ``next_idx`` (rows of ``attr.act`` on both sides), ``location`` (inside / between /
    outside steps), the nanoseconds of each cause in ``CAUSES`` (``<cause>_ns``, adding up
    to the gap) and the dominant ``cause``. The rules are in the module doc."""
    act = attr.act
    g = _gap_table(act)
    n = len(g)
    a = g["start_ns"].to_numpy(np.int64)
    b = g["end_ns"].to_numpy(np.int64)
    length = b - a
    nxt = g["next_idx"].to_numpy(np.int64)
    prv = g["prev_idx"].to_numpy(np.int64)
    launch = act["launch_ns"].to_numpy(np.int64)[nxt] if n else np.zeros(0, np.int64)
    coll = strings_at(act["collective"]) if "collective" in act else np.full(len(act), "")
    step = act["step"].to_numpy(np.int64)

    sched_s, sched_e = _scheduler_spans(ev, attr)
    sync_s, sync_e = host_spans(ev, "sync")

    causes = {c: np.zeros(n, np.int64) for c in CAUSES}
    if n:
        is_pp = (coll[nxt] == "sendrecv") & ((pp_size or 1) > 1)
        known = launch >= 0
        host_bound = known & (launch > a) & ~is_pp
        w_end = np.where(host_bound, np.minimum(launch, b), a)  # host window [a, w_end)
        sched = iv.covered_length(a, w_end, sched_s, sched_e) if sched_s.size else np.zeros(n, np.int64)
        sched = np.minimum(sched, w_end - a)
        rest = (w_end - a) - sched
        held = _sync_holds(a, sync_s, sync_e)
        causes["scheduler"] = np.where(host_bound, sched, 0)
        causes["synchronization"] = np.where(host_bound & held, rest, 0)
        latency = np.where(host_bound, b - w_end, 0)
        held_back = np.maximum(latency - LAUNCH_LATENCY_MAX_NS, 0)
        causes["launch_overhead"] = np.where(host_bound & ~held, rest, 0) + latency - held_back
        causes["pp_bubble"] = np.where(is_pp, length, 0)
        causes["device_wait"] = np.where(~host_bound & ~is_pp, length, 0) + held_back
    if n:
        attributed = (step[prv] >= 0) & (step[nxt] >= 0)
        inside = attributed & (step[prv] == step[nxt])
        between = attributed & (step[prv] != step[nxt])
    else:
        inside = between = np.zeros(0, bool)
    out = g.copy()
    out["location"] = np.where(inside, "inside", np.where(between, "between", "outside"))
    for c in CAUSES:
        out[f"{c}_ns"] = causes[c]
    out["cause"] = _dominant(causes, n)
    return out


def analyze_gaps(
    ev: pd.DataFrame,
    attr: StepAttribution,
    *,
    pp_size: int | None = None,
    server_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Idle gaps of the main device by cause and location (JSON-able dict)."""
    act = attr.act
    g = gap_causes(ev, attr, pp_size=pp_size)
    n = len(g)
    a = g["start_ns"].to_numpy(np.int64)
    length = g["end_ns"].to_numpy(np.int64) - a
    nxt = g["next_idx"].to_numpy(np.int64)
    prv = g["prev_idx"].to_numpy(np.int64)
    step = act["step"].to_numpy(np.int64)
    causes = {c: g[f"{c}_ns"].to_numpy(np.int64) for c in CAUSES}
    loc = g["location"].to_numpy()
    inside, between = loc == "inside", loc == "between"
    outside = ~inside & ~between
    sched_s, sched_e = _scheduler_spans(ev, attr)

    def split(mask: np.ndarray) -> dict[str, float]:
        return {c: float(causes[c][mask].sum()) / NS_PER_US for c in CAUSES}

    idle_us = float(length.sum()) / NS_PER_US
    cause_of_gap = g["cause"].tolist()
    largest = np.argsort(-length, kind="stable")[:5]
    t0 = int(act["ts_ns"].min()) if len(act) else 0
    out: dict[str, Any] = {
        "idle_us": idle_us,
        "gaps": int(n),
        "between_steps_us": float(length[between].sum()) / NS_PER_US,
        "inside_steps_us": float(length[inside].sum()) / NS_PER_US,
        "outside_steps_us": float(length[outside].sum()) / NS_PER_US,
        "by_cause_us": split(np.ones(n, bool)),
        "between_steps_by_cause_us": split(between),
        "inside_steps_by_cause_us": split(inside),
        "outside_steps_by_cause_us": split(outside),
        "gap_us": _pcts(length / NS_PER_US),
        "largest": [
            {
                "start_offset_us": float(a[i] - t0) / NS_PER_US,
                "dur_us": float(length[i]) / NS_PER_US,
                "cause": cause_of_gap[i],
                "location": "inside" if inside[i] else ("between" if between[i] else "outside"),
                "prev_step": int(step[prv[i]]),
                "next_step": int(step[nxt[i]]),
            }
            for i in largest.tolist()
        ],
        "scheduler": _scheduler_overlap(act, ev, sched_s, sched_e, server_args),
    }
    return out


def _sync_holds(a: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """True where a synchronising host call is in progress at GPU-idle time ``a``."""
    if s.size == 0 or a.size == 0:
        return np.zeros(a.size, bool)
    i = np.searchsorted(s, a, side="right") - 1
    ic = np.maximum(i, 0)
    return (i >= 0) & (a <= e[ic] + SYNC_TOLERANCE_NS)


def _dominant(causes: dict[str, np.ndarray], n: int) -> list[str]:
    if n == 0:
        return []
    m = np.stack([causes[c] for c in CAUSES])
    return [CAUSES[k] for k in np.argmax(m, axis=0).tolist()]


def _pcts(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"p50": None, "p90": None, "max": None}
    return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)), "max": float(x.max())}


def _scheduler_overlap(act, ev, sched_s, sched_e, server_args) -> dict[str, Any]:
    """Scheduler host time, how much of it ran while the GPU was busy, overlap scheduler on/off."""
    total = int(iv.total_length(sched_s, sched_e)) if sched_s.size else 0
    bs, be = iv.union(act["ts_ns"].to_numpy(np.int64), act["end_ns"].to_numpy(np.int64))
    hidden = int(iv.overlap_length(sched_s, sched_e, bs, be)) if total else 0
    enabled: bool | None = None
    source = None
    if server_args is not None and "disable_overlap_schedule" in server_args:
        enabled = not bool(server_args["disable_overlap_schedule"])
        source = "server_args"
    else:
        on, _ = match_rows(ev, markers()["host"]["overlap_loop"])
        off, _ = match_rows(ev, markers()["host"]["normal_loop"])
        if on.size or off.size:
            enabled = bool(on.size >= off.size)
            source = "trace"
    return {
        "host_us": total / NS_PER_US,
        "overlapped_with_gpu_us": hidden / NS_PER_US,
        "exposed_us": (total - hidden) / NS_PER_US,
        "overlap_scheduler": enabled,
        "overlap_scheduler_source": source,
    }
