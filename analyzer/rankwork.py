"""The per-rank half of the pipeline, and the compact result that leaves a worker.

    >>> res = analyze_rank(trace, load_rules())            # doctest: +SKIP
    >>> res.attribution.steps.shape, len(res.trace.events)  # doctest: +SKIP

``analyze_rank`` does everything about one rank that needs no other rank: the context clues
(before the python frames go), pruning, classification, step attribution and the rank's
timelines. What it returns is small enough to send from a Dask worker to the client, where
the cross-rank half runs (``analyses/serving.py``: run context, clock alignment, skew,
pipeline bubbles, then the per-rank figures that depend on those, and the findings):

- ``trace``: the rank's ``Trace`` with its event table cut to the rows the cross-rank half
  reads (``slim_events``): GPU activity, communication rows, kernel launches (the roofline's
  kernel -> op link) and the host spans of the ``[host.*]`` markers. On a ``with_stack`` trace that is a few percent of the rows.
- ``attribution``: the ``StepAttribution`` (steps and the main device's activity).
- ``clues``: ``trace_clues`` of the unpruned table; ``timelines``: one per device.
- ``first_ts_ns``: the earliest timestamp of the unpruned table (``readers.jobs`` dates the
  capture from it).

The cross-rank half gives the same report from these as from the whole traces: a test
compares the JSON of both (``tests/test_parallel.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.phases import StepAttribution
from analyzer.analyses.timeline import RankTimeline
from analyzer.model import GPU_ACTIVITY_KINDS, RankInfo, Trace

#: ``[host.*]`` markers of ``serving_markers.toml`` whose rows the cross-rank half reads
#: (``analyses/gaps.py``: scheduler and sync spans, the overlap / normal event loop frames).
HOST_MARKERS: tuple[str, ...] = ("scheduler", "sync", "overlap_loop", "normal_loop")


@dataclass(frozen=True)
class RankResult:
    """What one rank's worker sends back (see module doc)."""

    trace: Trace
    attribution: StepAttribution
    clues: dict[str, int]
    timelines: tuple[RankTimeline, ...]
    first_ts_ns: int | None
    rows_read: int = 0

    def with_rank(self, info: RankInfo) -> RankResult:
        """The same result under its final rank (ranks are given once all files are read)."""
        trace = replace(self.trace, rank=info)
        tls = tuple(replace(tl, rank=info.rank) for tl in self.timelines)
        return replace(self, trace=trace, timelines=tls)

    def header(self) -> Trace:
        """What ``readers.jobs`` reads: the devices of the GPU rows (``Trace.gpu``) and the
        earliest timestamp of the unpruned table."""
        ev = self.trace.events
        first = [] if self.first_ts_ns is None else [self.first_ts_ns]
        table = pd.DataFrame({
            "ts_ns": np.concatenate([np.array(first, np.int64), ev["ts_ns"].to_numpy(np.int64)]),
            "device": np.concatenate([np.full(len(first), -1, np.int64), ev["device"].to_numpy(np.int64)]),
        })
        return replace(self.trace, events=table)


def slim_events(ev: pd.DataFrame) -> pd.DataFrame:
    """The rows of a classified table that the cross-rank half reads (module doc)."""
    from analyzer.analyses.phases import markers, match_rows
    from analyzer.analyses.tables import kind_mask, take_rows

    keep = kind_mask(ev, GPU_ACTIVITY_KINDS)
    # kernel launches: the roofline links kernels to their CPU ops through them (correlation
    # -> External id; analyses/roofline.py), one row per launch
    keep |= kind_mask(ev, ("cuda_runtime", "cuda_driver")) & (ev["correlation"].to_numpy() >= 0)
    if "category" in ev:
        keep |= kind_mask(ev, ("communication",), column="category")
    host = markers()["host"]
    for what in HOST_MARKERS:
        pos, _ = match_rows(ev, host[what])
        keep[pos] = True
    out = take_rows(ev, keep)
    out["name"] = out["name"].cat.remove_unused_categories()
    return out


def analyze_rank(trace: Trace, ruleset: Any, *, include_edges: bool = False,
                 read_state: dict[str, Any] | None = None) -> RankResult:
    """Clues, prune, classify, attribute steps and timelines of one rank (changes ``trace``).

    ``read_state``: the trace was read with its frames already pruned
    (``analyses.prune.FramePruner``); this is the pruner's state (clues, earliest timestamp
    and dropped rows of the unpruned table), used instead of the table.
    """
    from analyzer.analyses.context import trace_clues
    from analyzer.analyses.gaps import step_window
    from analyzer.analyses.phases import attribute_steps, reassign_attention_by_phase
    from analyzer.analyses.prune import prune_python_frames
    from analyzer.analyses.timeline import trace_timelines
    from analyzer.classify import classify_trace

    ev = trace.events
    rows = len(ev)
    if read_state is None:
        first = int(ev["ts_ns"].min()) if rows else None
        clues = trace_clues(trace)  # engine/workload clues, before the frames go
        prune_python_frames(trace)  # python frames no marker reads (most rows of a stack trace)
    else:  # pruned while reading: what the unpruned table would have given
        first = read_state["first_ts_ns"]
        clues = dict(read_state["clues"])
        rows += int(read_state["dropped"])
        if read_state["dropped"]:  # as prune_python_frames leaves the names
            trace.events["name"] = trace.events["name"].cat.remove_unused_categories()
    classify_trace(trace, ruleset)
    attr = attribute_steps(trace)  # found once, reused by the serving diagnosis
    reassign_attention_by_phase(trace, attr)  # attention kernels in decode steps are decode
    win = step_window(attr)
    windows = {attr.device: win} if win is not None else {}
    tls = tuple(trace_timelines(trace, step_windows=windows, include_edges=include_edges))
    slim = replace(trace, events=slim_events(trace.events))
    return RankResult(slim, attr, clues, tls, first, rows)


__all__ = ["HOST_MARKERS", "RankResult", "analyze_rank", "slim_events"]
