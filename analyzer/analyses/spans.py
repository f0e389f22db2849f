"""Where on the timeline each figure of a report comes from: steps, idle gaps by cause,
communication roles, and the time intervals each finding accounts for.

The report holds sums; this module gives the intervals behind them, for a timeline export
(``analyzer.render.perfetto``). Rules (docs/user-guide.md, "Perfetto export"), per finding
of the representative rank, as sorted disjoint ``[start, end)`` intervals in ns:

- a busy cause (``prefill_attention``, ``kv_cache_bandwidth``, ``gemm_compute``, ``moe``,
  ``memcpy``): the union of its categories' GPU activity, the same union the finding's
  time is (``FINDING_CATEGORIES``);
- exposed communication (``tp``/``pp``/``ep``/``dp``/``other_communication``): the
  communication kernels of that role minus the other kernels running at the same time;
- an idle cause: the idle gaps holding it (``batching_gaps``: gaps between two steps;
  ``host_launch_overhead`` / ``synchronization``: gaps inside or outside steps with that
  cause; ``pipeline_bubbles``: gaps ended by a PP transfer), each with the nanoseconds of
  the cause the finding counts (``counted_ns``);
- ``cross_rank_skew``: this rank's wait at the start of aligned collectives, minus the
  other kernels.

    >>> spans = rank_spans(trace, attr, sizes, findings=report.findings)   # doctest: +SKIP
    >>> spans.findings[0].id, spans.findings[0].total_ns                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyzer import intervals as iv
from analyzer.analyses.comm_roles import comm_roles
from analyzer.analyses.gaps import CAUSES, gap_causes
from analyzer.analyses.phases import StepAttribution
from analyzer.analyses.tables import kind_mask
from analyzer.model import Finding, Trace

#: Busy findings -> the categories whose GPU activity they sum.
FINDING_CATEGORIES: dict[str, tuple[str, ...]] = {
    "prefill_attention": ("attention_prefill",),
    "kv_cache_bandwidth": ("attention_decode", "kv_cache"),
    "gemm_compute": ("gemm",),
    "moe": ("moe",),
    "memcpy": ("memcpy", "memset"),
}
#: Exposed-communication findings -> the communication roles they sum.
FINDING_ROLES: dict[str, tuple[str, ...]] = {
    "tp_communication": ("TP",),
    "pp_communication": ("PP",),
    "ep_communication": ("EP",),
    "dp_communication": ("DP",),
    "other_communication": ("P2P", "OTHER"),
}
#: Idle findings -> (gap locations, causes counted).
FINDING_GAPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "batching_gaps": (("between",), ("scheduler", "synchronization", "launch_overhead", "device_wait")),
    "host_launch_overhead": (("inside", "outside"), ("launch_overhead",)),
    "synchronization": (("inside", "outside"), ("synchronization",)),
    "pipeline_bubbles": (("inside", "between", "outside"), ("pp_bubble",)),
}


@dataclass(frozen=True)
class FindingSpans:
    """The intervals one finding accounts for (sorted, disjoint, ns on the trace's clock).

    ``counted_ns``: per interval, the nanoseconds of it the finding's time counts (the whole
    interval for busy and communication findings, the cause's part of a gap for idle ones).
    ``basis`` says in words what the intervals are.
    """

    id: str
    title: str
    severity: str
    share: float
    time_us: float
    basis: str
    start_ns: np.ndarray
    end_ns: np.ndarray
    counted_ns: np.ndarray

    @property
    def total_ns(self) -> int:
        return int(self.counted_ns.sum())


@dataclass(frozen=True)
class RankSpans:
    """One rank's timeline annotations: the GPU activity rows with their role, the steps,
    the idle gaps by cause and (for the representative rank) the findings' intervals."""

    rank: int
    attr: StepAttribution
    roles: np.ndarray  # communication role per row of attr.act ("" otherwise)
    gaps: pd.DataFrame  # analyses.gaps.gap_causes
    findings: list[FindingSpans] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # finding ids without intervals


def _empty() -> tuple[np.ndarray, np.ndarray]:
    z = np.zeros(0, np.int64)
    return z, z


def _non_comm_kernels(act: pd.DataFrame, roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    sel = (roles == "") & kind_mask(act, ("kernel",))
    return iv.union(s[sel], e[sel])


def _wait_spans(waits: pd.DataFrame, rank: int) -> tuple[np.ndarray, np.ndarray]:
    w = waits[(waits["rank"] == rank) & (waits["wait_ns"] > 0)]
    ws = w["start_ns"].to_numpy(np.int64)
    return iv.union(ws, ws + w["wait_ns"].to_numpy(np.int64))


def _intervals(fid: str, act: pd.DataFrame, roles: np.ndarray, gaps: pd.DataFrame,
               waits: pd.DataFrame | None, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    if fid in FINDING_CATEGORIES:
        cats = FINDING_CATEGORIES[fid]
        a, b = iv.union(*(x[kind_mask(act, cats, column="category")] for x in (s, e)))
        return a, b, b - a, "GPU activity of categories " + ", ".join(cats)
    if fid in FINDING_ROLES:
        rl = FINDING_ROLES[fid]
        sel = np.isin(roles, rl)
        a, b = iv.subtract(*iv.union(s[sel], e[sel]), *_non_comm_kernels(act, roles))
        basis = f"{'/'.join(rl)} communication kernels not overlapped by other kernels"
        if fid == "tp_communication" and waits is not None:  # the finding counts the transfer only
            a, b = iv.subtract(a, b, *_wait_spans(waits, rank))
            basis += ", less the wait for the last rank"
        return a, b, b - a, basis
    if fid in FINDING_GAPS:
        locs, causes = FINDING_GAPS[fid]
        counted = sum((gaps[f"{c}_ns"].to_numpy(np.int64) for c in causes), np.zeros(len(gaps), np.int64))
        sel = gaps["location"].isin(locs).to_numpy() & (counted > 0)
        return (gaps["start_ns"].to_numpy(np.int64)[sel], gaps["end_ns"].to_numpy(np.int64)[sel],
                counted[sel], f"idle gaps ({'/'.join(locs)} steps) holding {', '.join(causes)}")
    if fid == "cross_rank_skew":
        if waits is None:
            return None
        a, b = iv.subtract(*_wait_spans(waits, rank), *_non_comm_kernels(act, roles))
        return a, b, b - a, "wait for the last rank at the start of aligned collectives, not overlapped"
    return None


def rank_spans(
    trace: Trace,
    attr: StepAttribution,
    sizes: Mapping[str, int],
    *,
    workload: str = "serving",
    findings: Sequence[Finding] | Sequence[Mapping[str, Any]] = (),
    waits: pd.DataFrame | None = None,
    pipeline: Any = None,
) -> RankSpans:
    """Annotations of one classified trace (see module doc). ``findings``: those of the
    report when this is its representative rank (Finding objects or report dicts);
    ``waits``: ``cross_rank(...)["_wait_intervals"]`` when the job has several ranks;
    ``pipeline``: the rank's cross-stage bubble judge (``analyses.bubbles``) in a PP run."""
    act = attr.act
    roles = comm_roles(act, sizes, workload) if len(act) else np.zeros(0, object)
    gaps = gap_causes(trace.events, attr, pp_size=int(sizes.get("pp") or 1), pipeline=pipeline)
    out: list[FindingSpans] = []
    unmapped: list[str] = []
    for f in findings:
        d = f if isinstance(f, Mapping) else f.to_dict()
        got = _intervals(d["id"], act, roles, gaps, waits, trace.rank.rank)
        if got is None:
            unmapped.append(d["id"])
            continue
        a, b, counted, basis = got
        out.append(FindingSpans(d["id"], d["title"], d["severity"], float(d["share"]), float(d["time_us"]),
                                basis, a, b, np.asarray(counted, np.int64)))
    return RankSpans(trace.rank.rank, attr, roles, gaps, out, unmapped)


__all__ = [
    "CAUSES",
    "FINDING_CATEGORIES",
    "FINDING_GAPS",
    "FINDING_ROLES",
    "FindingSpans",
    "RankSpans",
    "rank_spans",
]
