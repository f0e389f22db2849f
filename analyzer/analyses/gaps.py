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

Location is decided on the time axis, not by the step ids of the two neighbours (work that
the scheduler launches outside the step spans, e.g. sampling or the D2H copy of next-token
ids, has no step): a gap is "inside a step" when it lies within one step's work span (first
to last activity attributed to the step), "between steps" when it lies between the end of
one step's work and the start of another's, "outside steps" when the trace has no steps (or
with ``include_edges``, before the first / after the last step). Idle before the first
step's work and after the last step's, where the activity out there is negligible (without
steps, or with real work out there: around lone warm-up / teardown activity; see
``timeline.capture_edges``), is the capture edge: reported as ``edge_us`` and left out of
``idle_us``, the causes and the locations.

Conservation: ``capture_us = busy_us + idle_us + edge_us``; ``wall_us = busy_us + idle_us``;
the causes add up to ``idle_us`` exactly, and so do the three locations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from analyzer import intervals as iv
from analyzer.analyses.phases import NS_PER_US, StepAttribution, markers, match_rows
from analyzer.analyses.tables import strings_at
from analyzer.analyses.timeline import CaptureEdges, capture_edges

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


def step_window(attr: StepAttribution) -> tuple[int, int] | None:
    """(first step's first activity start, last step's last activity end) in ns, or None
    when no step has GPU work: the analysed window of a trace with steps. A stage-split
    file's one pseudo step (the whole file) is no window: the activity rule decides there."""
    if not attr.has_steps or "kernels" not in attr.steps or attr.source == "stage_file":
        return None
    st = attr.steps[attr.steps["kernels"].to_numpy() > 0]
    if len(st) == 0:
        return None
    return int(st["gpu_start_ns"].min()), int(st["gpu_end_ns"].max())


def rank_edges(attr: StepAttribution, include_edges: bool = False) -> CaptureEdges:
    """The capture edges of a step attribution's main device (as ``trace_timelines`` cuts them)."""
    act = attr.act
    return capture_edges(act["ts_ns"].to_numpy(np.int64), act["end_ns"].to_numpy(np.int64),
                         step_window(attr), include_edges=include_edges)


def _step_location(attr: StepAttribution, a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per gap ``[a, b)``: inside a step's work span, between two steps' spans, and the step
    before / after it (the containing step for inside gaps; -1 where none). Vectorised:
    searchsorted on the union of the step spans and on the sorted step starts / ends."""
    n = a.size
    none = np.full(n, -1, np.int64)
    if not attr.has_steps or "kernels" not in attr.steps or n == 0:
        return np.zeros(n, bool), np.zeros(n, bool), none, none
    st = attr.steps[attr.steps["kernels"].to_numpy() > 0]
    if len(st) == 0:
        return np.zeros(n, bool), np.zeros(n, bool), none, none
    ids = st["step"].to_numpy(np.int64)
    gs = st["gpu_start_ns"].to_numpy(np.int64)
    ge = st["gpu_end_ns"].to_numpy(np.int64)
    us_, ue_ = iv.union(gs, ge)
    if us_.size == 0:  # only zero-length step spans
        return np.zeros(n, bool), np.zeros(n, bool), none, none
    k = np.searchsorted(us_, a, side="right") - 1
    inside = (k >= 0) & (b <= ue_[np.maximum(k, 0)])
    between = ~inside & (a >= us_[0]) & (b <= ue_[-1])
    by_s = np.argsort(gs, kind="stable")
    by_e = np.argsort(ge, kind="stable")
    i = np.searchsorted(ge[by_e], a, side="right") - 1  # last step ending at or before a
    j = np.searchsorted(gs[by_s], b, side="left")  # first step starting at or after b
    prev = np.where(i >= 0, ids[by_e[np.maximum(i, 0)]], -1)
    nxt = np.where(j < ids.size, ids[by_s[np.minimum(j, ids.size - 1)]], -1)
    c = np.searchsorted(gs[by_s], a, side="right") - 1  # step containing an inside gap
    holder = ids[by_s[np.maximum(c, 0)]]
    prev = np.where(inside, holder, prev)
    nxt = np.where(inside, holder, nxt)
    return inside, between, prev, nxt


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


def _scheduler_spans(ev: pd.DataFrame, attr: StepAttribution) -> tuple[np.ndarray, np.ndarray]:
    """Scheduler host spans outside the forward step spans."""
    sched_s, sched_e = host_spans(ev, "scheduler")
    steps = attr.steps
    if attr.has_steps and (steps["host_start_ns"] >= 0).any():
        hs = steps["host_start_ns"].to_numpy(np.int64)
        he = steps["host_end_ns"].to_numpy(np.int64)
        sched_s, sched_e = iv.subtract(sched_s, sched_e, hs, he)
    return sched_s, sched_e


def gap_causes(
    ev: pd.DataFrame,
    attr: StepAttribution,
    *,
    pp_size: int | None = None,
    include_edges: bool = False,
    pipeline: Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """One row per hole in the main device's activity: ``start_ns``, ``end_ns``, ``prev_idx`` /
    ``next_idx`` (rows of ``attr.act`` on both sides), ``location`` (``inside`` / ``between`` /
    ``outside`` steps, or ``edge`` for the capture edge), ``before`` / ``after`` (the edge side),
    ``prev_step`` / ``next_step``, the nanoseconds of each cause in ``CAUSES`` (``<cause>_ns``,
    adding up to the gap) and the dominant ``cause``. The rules are in the module doc;
    ``analyze_gaps`` sums this table, the Perfetto export draws it."""
    act = attr.act
    g = _gap_table(act)
    n = len(g)
    a = g["start_ns"].to_numpy(np.int64)
    b = g["end_ns"].to_numpy(np.int64)
    length = b - a
    nxt = g["next_idx"].to_numpy(np.int64)
    launch = act["launch_ns"].to_numpy(np.int64)[nxt] if n else np.zeros(0, np.int64)
    coll = strings_at(act["collective"]) if "collective" in act else np.full(len(act), "")
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
        if pipeline is not None:  # PP>1: idle while another stage computes is a bubble
            causes = pipeline(a, b, causes)

    edges = rank_edges(attr, include_edges)
    before = b <= edges.core_start_ns
    after = a >= edges.core_end_ns
    idle = ~(before | after) if not include_edges else np.ones(n, bool)
    if pipeline is not None and n:
        # a stage's lead-in / tail while another stage computes is pipeline fill / drain
        # (a bubble), not the capture edge: only idle while the whole pipeline idles is edge
        idle |= causes["pp_bubble"] > 0
    in_step, btw, prev_step, next_step = _step_location(attr, a, b)
    inside = in_step & idle
    between = btw & idle
    out = g.copy()
    out["location"] = np.where(~idle, "edge", np.where(inside, "inside", np.where(between, "between", "outside")))
    out["before"] = before & ~idle
    out["after"] = after & ~idle
    out["prev_step"] = prev_step
    out["next_step"] = next_step
    for c in CAUSES:
        out[f"{c}_ns"] = causes[c]
    out["cause"] = _dominant(causes, n)
    out.attrs["edge_rule"] = edges.rule
    return out


def analyze_gaps(
    ev: pd.DataFrame,
    attr: StepAttribution,
    *,
    pp_size: int | None = None,
    server_args: Mapping[str, Any] | None = None,
    include_edges: bool = False,
    pipeline: Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Idle gaps of the main device by cause and location, and the capture edges (JSON-able).

    ``include_edges``: count the idle before the first / after the last step as idle
    (``outside steps``) instead of cutting it as the capture edge.
    ``pipeline``: the cross-stage bubble verdict (``analyses.bubbles``) that may move gap
    time to ``pp_bubble``: ``pipeline(gap_starts, gap_ends, causes) -> causes``.
    """
    act = attr.act
    g = gap_causes(ev, attr, pp_size=pp_size, include_edges=include_edges, pipeline=pipeline)
    n = len(g)
    a = g["start_ns"].to_numpy(np.int64)
    b = g["end_ns"].to_numpy(np.int64)
    length = b - a
    causes = {c: g[f"{c}_ns"].to_numpy(np.int64) for c in CAUSES}
    loc = g["location"].to_numpy()
    idle = loc != "edge"
    inside, between, outside = loc == "inside", loc == "between", loc == "outside"
    before, after = g["before"].to_numpy(bool), g["after"].to_numpy(bool)
    prev_step, next_step = g["prev_step"].to_numpy(np.int64), g["next_step"].to_numpy(np.int64)
    sched_all_s, sched_all_e = host_spans(ev, "scheduler")
    sched_s, sched_e = _scheduler_spans(ev, attr)

    def split(mask: np.ndarray) -> dict[str, float]:
        return {c: float(causes[c][mask].sum()) / NS_PER_US for c in CAUSES}

    s_act = act["ts_ns"].to_numpy(np.int64)
    e_act = act["end_ns"].to_numpy(np.int64)
    busy_ns = int(iv.union_length(s_act, e_act)) if len(act) else 0
    capture_ns = int(e_act.max() - s_act.min()) if len(act) else 0
    idle_ns = int(length[idle].sum())
    edge_ns = int(length[~idle].sum())
    cause_of_gap = g["cause"].tolist() if n else []
    idle_idx = np.flatnonzero(idle)
    largest = idle_idx[np.argsort(-length[idle_idx], kind="stable")[:5]]
    t0 = int(s_act.min()) if len(act) else 0
    covered = (float(iv.overlap_length(a[idle], b[idle], sched_all_s, sched_all_e)) / NS_PER_US
               if sched_all_s.size and idle.any() else 0.0)
    out: dict[str, Any] = {
        "idle_us": idle_ns / NS_PER_US,
        "gaps": int(idle.sum()),
        "capture_us": capture_ns / NS_PER_US,
        "busy_us": busy_ns / NS_PER_US,
        "wall_us": (capture_ns - edge_ns) / NS_PER_US,
        "edge_us": edge_ns / NS_PER_US,
        "edge": {"before_us": float(length[before].sum()) / NS_PER_US,
                 "after_us": float(length[after].sum()) / NS_PER_US,
                 "rule": g.attrs.get("edge_rule", "none")},
        "between_steps_us": float(length[between].sum()) / NS_PER_US,
        "inside_steps_us": float(length[inside].sum()) / NS_PER_US,
        "outside_steps_us": float(length[outside].sum()) / NS_PER_US,
        "by_cause_us": split(idle),
        "between_steps_by_cause_us": split(between),
        "inside_steps_by_cause_us": split(inside),
        "outside_steps_by_cause_us": split(outside),
        "gap_us": _pcts(length[idle] / NS_PER_US),
        "largest": [
            {
                "start_offset_us": float(a[i] - t0) / NS_PER_US,
                "dur_us": float(length[i]) / NS_PER_US,
                "cause": cause_of_gap[i],
                "location": str(loc[i]),
                "prev_step": int(prev_step[i]),
                "next_step": int(next_step[i]),
            }
            for i in largest.tolist()
        ],
        "idle_covered_by_scheduler_us": covered,
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
