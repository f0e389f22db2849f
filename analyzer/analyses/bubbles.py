"""Pipeline bubbles judged across stages, on the aligned clock (PP > 1).

    >>> ctx = pipeline_context(traces, attrs, sizes, clock)          # doctest: +SKIP
    >>> gaps = analyze_gaps(ev, attr, pipeline=ctx.judge(rank))      # doctest: +SKIP
    >>> ctx.section()["by_stage"][1]["bubble_us"]                    # doctest: +SKIP

A stage's local view of an idle gap (``analyses/gaps.py``) sees only its own host: a stage
that waits for activations often sits in scheduler or receive code (``recv_requests``, a
CPU-side receive of the batch metadata), and the gap would read as "scheduling". Across
stages the same gap reads differently: while stage k is idle, the work is elsewhere in the
pipeline. Rule, per idle gap ``[a, b)`` of a rank of stage k (times put on the reference
clock with ``analyses.clock`` first):

- **bubble time** = the part of the gap during which any other stage of the same pipeline
  (same DP index) computes (runs a non-communication GPU activity), or the whole gap when
  the activity that ends it is a pipeline receive (``sendrecv``, the rule of
  ``gaps.py``); whichever is larger. The upstream stage computing the micro-batch that k
  then receives is the common case; the rest of the pipeline computing covers the chain
  (k-1 itself waiting for k-2, the first stage waiting for the last one's tokens);
- idle while every stage of the pipeline is idle is not a bubble: it keeps its local
  cause (scheduler, launch, synchronisation, device wait).

The bubble verdict overrides the local causes of that gap: the extra bubble time is taken
from ``scheduler`` first, then ``device_wait``, ``launch_overhead``, ``synchronization``,
so the causes still add up to the gap exactly (``reassign``).

Also reported per stage: what the upstream (``pp_rank - 1``; for the first stage the last
stage, which sends it the next tokens in a serving loop) and downstream (``pp_rank + 1``;
for the last stage the first) stages were doing during its gaps (computing /
communicating only / idle); bubble time by schedule part on the aligned timeline: *fill*
before every stage of the pipeline has started (``max`` over stages of the first GPU
activity), *drain* after the first stage to finish has finished (``min`` of the last
activity), *steady* between; the lead-in (before the stage's own first activity) and tail
(after its last) that lie outside its own wall; and the measured bubble fraction,
``(bubble in gaps + lead-in + tail) / pipeline window``, median over stages, beside the
expected ``(p - 1) / (m + p - 1)`` of a GPipe-style schedule with ``m`` micro-batches.
``m`` is counted from the step annotations: the first stage's steps that end before the
last stage's first step ends (the micro-batches in flight when the first one leaves the
pipeline; a full pipeline, ``m >= p``, counts about ``p``). Without step annotations on
both stages ``m`` is unknown and so is the expected fraction. A serving loop that keeps
``m < p`` micro-batches circulating idles each stage ``(p - m) / p`` of the steady state
(``expected_fraction_loop``), which the GPipe figure does not model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analyzer import intervals as iv
from analyzer.analyses.clock import ClockAlignment
from analyzer.analyses.phases import NS_PER_US, StepAttribution
from analyzer.analyses.tables import kind_mask
from analyzer.model import Trace

#: Order in which the bubble verdict takes time from the local causes of a gap.
TAKE_ORDER: tuple[str, ...] = ("scheduler", "device_wait", "launch_overhead", "synchronization")

Judge = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]]


def reassign(causes: Mapping[str, np.ndarray], bubble_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Raise each gap's ``pp_bubble`` to ``bubble_ns`` taking the time from the other causes
    in ``TAKE_ORDER``; the causes of every gap keep their sum."""
    out = {c: np.asarray(v, np.int64).copy() for c, v in causes.items()}
    extra = np.maximum(np.asarray(bubble_ns, np.int64) - out["pp_bubble"], 0)
    moved = np.zeros_like(extra)
    for c in TAKE_ORDER:
        if c not in out:
            continue
        take = np.minimum(out[c], extra - moved)
        out[c] = out[c] - take
        moved = moved + take
    out["pp_bubble"] = out["pp_bubble"] + moved
    return out


@dataclass
class _Stage:
    rank: int
    pp: int
    dp: int
    comp: tuple[np.ndarray, np.ndarray]  # aligned union of non-communication activity
    comm: tuple[np.ndarray, np.ndarray]  # aligned communication not overlapping compute
    first_ns: int
    last_ns: int
    steps: tuple[np.ndarray, np.ndarray]  # aligned GPU start/end of the rank's steps


@dataclass
class PipelineContext:
    """The aligned activity of every stage; ``judge(rank)`` is the hook for ``analyze_gaps``."""

    pp: int
    clock: ClockAlignment
    stages: dict[int, _Stage]
    seen: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def _union_of(self, ranks: Sequence[int], what: str) -> tuple[np.ndarray, np.ndarray]:
        parts = [getattr(self.stages[r], what) for r in ranks]
        if not parts:
            z = np.zeros(0, np.int64)
            return z, z
        return iv.union(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def _ranks(self, dp: int, pp: int | None = None, exclude_pp: int | None = None) -> list[int]:
        return [r for r, s in self.stages.items() if s.dp == dp
                and (pp is None or s.pp == pp) and (exclude_pp is None or s.pp != exclude_pp)]

    def judge(self, rank: int) -> Judge | None:
        """The ``pipeline`` hook of ``analyze_gaps`` for ``rank`` (None: not a stage)."""
        st = self.stages.get(rank)
        if st is None:
            return None
        others = self._union_of(self._ranks(st.dp, exclude_pp=st.pp), "comp")

        def hook(a: np.ndarray, b: np.ndarray, causes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            aa, bb = self.clock.correct(rank, a), self.clock.correct(rank, b)
            bb = np.maximum(bb, aa)
            cov = iv.covered_length(aa, bb, *others) if others[0].size else np.zeros(a.size, np.int64)
            bubble = np.minimum(np.maximum(cov.astype(np.int64), causes["pp_bubble"]), b - a)
            new = reassign(causes, bubble)
            self.seen[rank] = {"a": aa, "b": bb, "len": b - a, "recv": causes["pp_bubble"] >= cov,
                               "bubble": new["pp_bubble"], "local_before": dict(causes)}
            return new

        return hook

    def section(self) -> dict[str, Any]:
        """The ``serving.bubbles`` section (after ``judge`` hooks ran in ``analyze_gaps``)."""
        by_stage: dict[int, dict[str, Any]] = {}
        fractions = []
        pipelines: dict[int, dict[str, int]] = {}
        for dp in sorted({s.dp for s in self.stages.values()}):
            ranks = self._ranks(dp)
            firsts = [self.stages[r].first_ns for r in ranks]
            lasts = [self.stages[r].last_ns for r in ranks]
            pipelines[dp] = {"start_ns": min(firsts), "end_ns": max(lasts),
                             "steady_start_ns": max(firsts), "steady_end_ns": min(lasts)}
        per_rank = {}
        for r, st in sorted(self.stages.items()):
            g = self.seen.get(r)
            if g is None:
                continue
            w = pipelines[st.dp]
            others = self._union_of(self._ranks(st.dp, exclude_pp=st.pp), "comp")
            # bubble intervals: the whole gap (receive rule) or the gap while others compute
            whole = g["recv"] & (g["bubble"] > 0)
            ws, we = g["a"][whole], g["b"][whole]
            ps, pe = iv.intersect(g["a"][~whole], g["b"][~whole], *others) if others[0].size \
                else (np.zeros(0, np.int64), np.zeros(0, np.int64))
            bs, be = iv.union(np.r_[ws, ps], np.r_[we, pe])
            total = int(g["bubble"].sum())
            fill = int(iv.overlap_length(bs, be, np.array([w["start_ns"]]), np.array([w["steady_start_ns"]])))
            drain = int(iv.overlap_length(bs, be, np.array([max(w["steady_end_ns"], w["steady_start_ns"])]),
                                          np.array([w["end_ns"]])))
            steady = total - fill - drain  # the rest (also absorbs ns of drift rounding)
            up = self._ranks(st.dp, pp=(st.pp - 1) % self.pp)
            down = self._ranks(st.dp, pp=(st.pp + 1) % self.pp)
            lead = st.first_ns - w["start_ns"]
            tail = w["end_ns"] - st.last_ns
            window = w["end_ns"] - w["start_ns"]
            frac = (total + lead + tail) / window if window > 0 else None
            if frac is not None:
                fractions.append(frac)
            local = {c: float(v.sum()) / NS_PER_US for c, v in g["local_before"].items()}
            per_rank[r] = {
                "rank": r, "pp_rank": st.pp, "dp_rank": st.dp,
                "idle_us": float(g["len"].sum()) / NS_PER_US,
                "bubble_us": total / NS_PER_US,
                "by_part_us": {"fill": fill / NS_PER_US, "steady": steady / NS_PER_US,
                               "drain": drain / NS_PER_US},
                "lead_in_us": lead / NS_PER_US, "tail_us": tail / NS_PER_US,
                "bubble_fraction": frac,
                "local_causes_before_us": local,
                "upstream_stage": (st.pp - 1) % self.pp, "downstream_stage": (st.pp + 1) % self.pp,
                "upstream_us": self._states(g, up), "downstream_us": self._states(g, down),
            }
        for r, row in per_rank.items():
            by_stage.setdefault(row["pp_rank"], []).append(row)  # type: ignore[arg-type]
        m, m_source = self._micro_batches()
        expected = (self.pp - 1) / (m + self.pp - 1) if m else None
        looped = max(self.pp - m, 0) / self.pp if m else None
        measured = float(np.median(fractions)) if fractions else None
        stage_rows = {k: _stage_row(v) for k, v in sorted(by_stage.items())}
        return {
            "enabled": True, "pp": self.pp,
            "rule": "idle while another stage of the pipeline computes, or ending in a pipeline receive",
            "clock_aligned": bool(self.clock.enabled),
            "bubble_us": float(sum(r["bubble_us"] for r in per_rank.values())),
            "by_part_us": {p: float(sum(r["by_part_us"][p] for r in per_rank.values()))
                           for p in ("fill", "steady", "drain")},
            "by_stage": stage_rows,
            "ranks": list(per_rank.values()),
            "micro_batches": m, "micro_batches_source": m_source,
            "expected_fraction": expected, "expected_fraction_loop": looped,
            "measured_fraction": measured,
        }

    def _states(self, g: Mapping[str, np.ndarray], ranks: Sequence[int]) -> dict[str, float]:
        """Neighbour state during the gaps: computing / communicating only / idle (µs)."""
        length = float(np.maximum(g["b"] - g["a"], 0).sum())
        if not ranks:
            return {"computing": 0.0, "communicating": 0.0, "idle": length / NS_PER_US}
        comp = self._union_of(ranks, "comp")
        comm = iv.subtract(*self._union_of(ranks, "comm"), *comp)
        c1 = float(iv.covered_length(g["a"], g["b"], *comp).sum()) if comp[0].size else 0.0
        c2 = float(iv.covered_length(g["a"], g["b"], *comm).sum()) if comm[0].size else 0.0
        return {"computing": c1 / NS_PER_US, "communicating": c2 / NS_PER_US,
                "idle": (length - c1 - c2) / NS_PER_US}

    def _micro_batches(self) -> tuple[int | None, str]:
        first = self._ranks(0, pp=0)
        last = self._ranks(0, pp=self.pp - 1)
        if not first or not last:
            return None, "unknown: the first or the last stage is missing"
        fs = self.stages[first[0]].steps
        ls = self.stages[last[0]].steps
        if fs[0].size == 0 or ls[0].size == 0:
            return None, "unknown: no step annotations on the first and last stages"
        first_out = int(ls[1].min())  # end of the last stage's first step (aligned)
        m = int((fs[1] < first_out).sum())
        return (m or None), ("first-stage steps that ended before the last stage's first step "
                             "ended (step annotations, aligned clock)")


def _stage_row(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One stage: its ranks' figures, median over the ranks (TP peers)."""
    def med(key: str) -> float:
        return float(np.median([float(r[key]) for r in rows]))

    return {"ranks": [r["rank"] for r in rows], "idle_us": med("idle_us"), "bubble_us": med("bubble_us"),
            "by_part_us": {p: float(np.median([r["by_part_us"][p] for r in rows]))
                           for p in ("fill", "steady", "drain")},
            "upstream_us": {k: float(np.median([r["upstream_us"][k] for r in rows]))
                            for k in ("computing", "communicating", "idle")},
            "downstream_us": {k: float(np.median([r["downstream_us"][k] for r in rows]))
                              for k in ("computing", "communicating", "idle")},
            "bubble_fraction": (float(np.median([r["bubble_fraction"] for r in rows]))
                                if all(r["bubble_fraction"] is not None for r in rows) else None)}


def pipeline_context(traces: Sequence[Trace], attrs: Sequence[StepAttribution],
                     sizes: Mapping[str, int], clock: ClockAlignment) -> PipelineContext | None:
    """The aligned stage timelines of a PP > 1 run (None for PP = 1 or a single stage)."""
    pp = int(sizes.get("pp", 1) or 1)
    tp = int(sizes.get("tp", 1) or 1)
    if pp <= 1:
        return None
    stages: dict[int, _Stage] = {}
    for t, a in zip(traces, attrs):
        r = t.rank.rank
        act = a.act
        if len(act) == 0:
            continue
        p = t.rank.pp_rank if t.rank.pp_rank is not None else (r // tp) % pp
        dp = t.rank.dp_rank if t.rank.dp_rank is not None else r // (tp * pp)
        s = clock.correct(r, act["ts_ns"].to_numpy(np.int64))
        e = np.maximum(clock.correct(r, act["end_ns"].to_numpy(np.int64)), s)
        is_comm = kind_mask(act, ("communication",), column="category")
        comp = iv.union(s[~is_comm], e[~is_comm])
        comm = iv.union(s[is_comm], e[is_comm])
        if a.has_steps and "gpu_start_ns" in a.steps and len(a.steps):
            st = a.steps[(a.steps["gpu_start_ns"] >= 0) & (a.steps["kernels"] > 0)]
            steps = (clock.correct(r, st["gpu_start_ns"].to_numpy(np.int64)),
                     clock.correct(r, st["gpu_end_ns"].to_numpy(np.int64)))
        else:
            steps = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        stages[r] = _Stage(r, int(p), int(dp), comp, comm, int(s.min()), int(e.max()), steps)
    if len({s.pp for s in stages.values()}) < 2:
        return None
    return PipelineContext(pp, clock, stages)


__all__ = ["TAKE_ORDER", "PipelineContext", "pipeline_context", "reassign"]
