"""Exact ground truth from the intervals the engine placed (integer ns, plain loops).

Accounting rules (the same ones the analyzer documents):

* ``wall``: first to last GPU activity (kernel, memcpy, memset) of the rank/file.
* ``busy``: union of all GPU activity intervals; ``idle = wall - busy``.
* category time: union of that category's intervals; ``count``: number of activities.
  Attention kernels take the phase of their step: EXTEND/MIXED/TARGET_VERIFY ->
  ``attention_prefill``, DECODE -> ``attention_decode`` (whatever the kernel's name).
* communication ``exposed``: communication union minus the union of all other activity;
  ``overlapped = time - exposed``. ``wait``: time inside a collective beyond its transfer
  (waiting for the slowest rank); ``transfer = time - wait`` per kernel, summed.
* gaps: idle time between steps (between one step's last GPU activity and the next
  step's first) vs inside steps; idle covered by host ``scheduler.*`` spans; idle
  right before a pipeline receive (``before_recv``: the PP bubble).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from .engine import Placed, RankTimeline
from .spec import CATEGORIES

Interval = tuple[int, int]
PREFILL_PHASES = ("EXTEND", "MIXED", "TARGET_VERIFY")


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, merged intervals (touching ones merge)."""
    out: list[Interval] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def total(merged: Sequence[Interval]) -> int:
    return sum(e - s for s, e in merged)


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s = max(a[i][0], b[j][0])
        e = min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a`` minus ``b`` for merged lists."""
    out: list[Interval] = []
    j = 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def us(ns: int) -> float:
    """ns -> µs as the nearest float to the exact 3-decimal value."""
    return round(ns / 1000, 3)


def category_of(p: Placed, phase: str) -> str:
    cat = p.spec.category
    if cat == "attention":
        return "attention_prefill" if phase in PREFILL_PHASES else "attention_decode"
    return cat


def collective_key(name: str) -> str:
    return "sendrecv" if name in ("send", "recv") else name


def measure(tl: RankTimeline, gpu: list[Placed], steps: list[int]) -> dict[str, Any]:
    """Ground-truth figures of one rank (or one stage-split file) as a JSON-able dict."""
    iv = [(p.start, p.end) for p in gpu]
    busy = union(iv)
    wall_s, wall_e = busy[0][0], busy[-1][1]
    idle = subtract([(wall_s, wall_e)], busy)
    phase_of = {r.index: r.spec.phase for r in tl.steps}
    cats: dict[str, list[Interval]] = defaultdict(list)
    for p in gpu:
        cats[category_of(p, phase_of[p.step])].append((p.start, p.end))
    categories = {c: {"time_us": us(total(union(cats.get(c, [])))), "count": len(cats.get(c, []))}
                  for c in CATEGORIES}
    comm = [p for p in gpu if p.spec.comm is not None]
    comm_u = union((p.start, p.end) for p in comm)
    other_u = union((p.start, p.end) for p in gpu if p.spec.comm is None)
    exposed = total(subtract(comm_u, other_u))
    by_coll: dict[str, dict[str, Any]] = {}
    for name in sorted({collective_key(p.spec.comm.collective) for p in comm if p.spec.comm}):
        ks = [p for p in comm if p.spec.comm and collective_key(p.spec.comm.collective) == name]
        wait = sum(p.wait_ns for p in ks)
        t = total(union((p.start, p.end) for p in ks))
        by_coll[name] = {"time_us": us(t), "count": len(ks), "wait_us": us(wait),
                         "transfer_us": us(sum(p.end - p.start - p.wait_ns for p in ks))}
    wait_all = sum(p.wait_ns for p in comm)
    communication = {
        "time_us": us(total(comm_u)), "count": len(comm), "exposed_us": us(exposed),
        "overlapped_us": us(total(comm_u) - exposed), "wait_us": us(wait_all),
        "transfer_us": us(sum(p.end - p.start - p.wait_ns for p in comm)),
        "by_collective": by_coll,
    }
    recs = [tl.steps[i] for i in steps]
    between: list[Interval] = []
    for a, b in pairwise(recs):
        if b.gpu_start > a.gpu_end:
            between.append((a.gpu_end, b.gpu_start))
    idle_between = total(intersect(idle, union(between)))
    sched = union((h.start, h.start + h.dur) for h in tl.host
                  if h.cat == "user_annotation" and h.name.startswith("scheduler."))
    recv_starts = {p.start for p in gpu if p.spec.comm and p.spec.comm.collective == "recv"}
    before_recv = sum(e - s for s, e in idle if e in recv_starts)
    phases: dict[str, dict[str, Any]] = {}
    for ph in sorted({r.spec.phase for r in recs}):
        prs = [r for r in recs if r.spec.phase == ph]
        pk = [p for p in gpu if phase_of[p.step] == ph]
        pc: dict[str, list[Interval]] = defaultdict(list)
        for p in pk:
            pc[category_of(p, ph)].append((p.start, p.end))
        phases[ph] = {
            "steps": len(prs),
            "tokens": sum(r.spec.tokens for r in prs),
            "requests": sum(r.spec.bs for r in prs),
            "gpu_time_us": us(total(union((p.start, p.end) for p in pk))),
            "step_span_us": [us(r.gpu_end - r.gpu_start) for r in prs],
            "categories": {c: us(total(union(v))) for c, v in sorted(pc.items())},
        }
    return {
        "wall_us": us(wall_e - wall_s),
        "wall_start_us": us(wall_s),
        "busy_us": us(total(busy)),
        "idle_us": us(total(idle)),
        "activities": len(gpu),
        "categories": categories,
        "communication": communication,
        "phases": phases,
        "gaps": {
            "between_steps_us": us(idle_between),
            "within_steps_us": us(total(idle) - idle_between),
            "covered_by_scheduler_us": us(total(intersect(idle, sched))),
            "before_recv_us": us(before_recv),
        },
        "steps": [
            {"index": r.index, "phase": r.spec.phase, "bs": r.spec.bs, "tokens": r.spec.tokens,
             "context_tokens": r.spec.context_tokens, "cuda_graph": r.spec.cuda_graph,
             "stage": r.stage, "gpu_start_us": us(r.gpu_start), "gpu_end_us": us(r.gpu_end)}
            for r in recs
        ],
    }
