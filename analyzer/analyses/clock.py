"""Cross-rank clock alignment from collectives whose ends are synchronous.

Each rank's trace is on its own clock (Kineto: the host clock of its node; the monotonic
clocks of two nodes can differ by days, and even NTP-synced clocks by milliseconds). Before
start times of different ranks are compared (skew, wait, straggler, pipeline bubbles) they
are put on the clock of one reference rank (rank 0 where possible).

    >>> import pandas as pd
    >>> ends = pd.DataFrame({"rank": [0, 1, 0, 1], "instance": [0, 0, 1, 1],
    ...                      "end_ns": [1_000, 4_000, 9_000, 12_000]})
    >>> al = fit_alignment(ends, ranks=[0, 1])
    >>> al.ranks[1].offset_ns, al.ranks[1].source
    (3000, 'collectives')

Model: ``local = reference + offset_ns + drift_ppm * 1e-6 * (reference - anchor_ns)``.

Observations: all-reduce, all-gather, reduce-scatter and barrier cannot finish on one rank
before every rank of the group has contributed, and NCCL's ring/tree kernels of one
instance end within a few microseconds of each other: their END times are one instant seen
by every member. All-to-all(v), send/recv and broadcast/reduce are not used (their ends
are not tied: a sender may finish before its receiver, a root before its leaves). The n-th
instance of one (process group, collective) on each rank is the same operation (``seq``
when the trace has it, else the order of starts), as in ``comm_roles.cross_rank``. A
process group is named by its member ranks from ``distributedInfo.pg_config`` when the
trace lists it with the rank among the members, else by its name and the rank's (PP, DP)
indices.

Fit (robust, per rank): ranks are solved outward from the reference in rounds. In a round,
every instance with at least one solved member gets a reference time, the median of its
solved members' corrected ends; each unsolved rank that shares instances with solved ranks
gets ``y = its end - reference time`` against ``x = reference time``. The offset is the
median of ``y`` (after the drift term); the drift is a Theil-Sen slope (median of pairwise
slopes between at most ``DRIFT_POINTS`` points evenly spread in time) when the shared instances span at least
``DRIFT_MIN_SPAN_NS`` and the drift moves the ends by at least ``DRIFT_MIN_EFFECT_NS`` over
that span, else 0. Groups chain: a rank in rank 0's TP group is solved in round one, a rank
that only shares a DP all-reduce with it in round two, and so on. Ranks that no
synchronous collective links to the reference are "not aligned" (offset 0, with a reason),
or, when they are linked among themselves, aligned to the lowest rank of their own
component (``reference_rank`` says which).

Residual (per rank): the median absolute deviation of its corrected ends from the median
corrected end of each instance (µs). A few µs is the kernels' own end jitter; much more
means the instances are mismatched (a capture that missed the first collectives on one
rank) or the ends are not synchronous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.tables import kind_mask, strings_at

#: Collectives whose kernel ends are one instant on every member.
END_SYNC_COLLECTIVES: tuple[str, ...] = ("allreduce", "allgather", "reducescatter", "barrier")
#: Drift is fitted only over at least this span of shared instances (ns) ...
DRIFT_MIN_SPAN_NS = 50_000_000
#: ... with at least this many of them ...
DRIFT_MIN_POINTS = 16
#: ... and kept only when it moves the ends by at least this much over the span (ns).
DRIFT_MIN_EFFECT_NS = 1_000
#: Theil-Sen runs on at most this many points (evenly spaced in time) of each rank.
DRIFT_POINTS = 400
#: Offsets or residuals at least this large are shown in the text report (µs).
NOTABLE_OFFSET_US = 100.0
NOTABLE_RESIDUAL_US = 20.0


@dataclass(frozen=True)
class RankClock:
    """One rank's clock against the reference rank's."""

    rank: int
    offset_ns: int = 0
    drift_ppm: float = 0.0
    residual_us: float | None = None
    n_collectives: int = 0
    source: str = "not aligned"  # "reference" | "collectives" | "not aligned"
    reference_rank: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"offset_ns": self.offset_ns, "offset_us": self.offset_ns / 1e3,
                "drift_ppm": self.drift_ppm, "residual_us": self.residual_us,
                "n_collectives": self.n_collectives, "source": self.source,
                "reference_rank": self.reference_rank, "reason": self.reason}


@dataclass(frozen=True)
class ClockAlignment:
    """Per-rank clock corrections; ``correct`` maps a rank's times onto the reference clock."""

    enabled: bool
    reference_rank: int | None = None
    anchor_ns: int = 0
    ranks: Mapping[int, RankClock] = field(default_factory=dict)
    reason: str | None = None

    def correct(self, rank: int, t_ns: np.ndarray) -> np.ndarray:
        """``t_ns`` (int64, rank's clock) on the reference clock (int64)."""
        t = np.asarray(t_ns, np.int64)
        rc = self.ranks.get(rank)
        if not self.enabled or rc is None or (rc.offset_ns == 0 and rc.drift_ppm == 0.0):
            return t
        x = t - np.int64(rc.offset_ns) - np.int64(self.anchor_ns)
        if rc.drift_ppm:
            d = rc.drift_ppm * 1e-6
            x = x - np.rint(x.astype(np.float64) * (d / (1.0 + d))).astype(np.int64)
        return x + np.int64(self.anchor_ns)

    @property
    def notable(self) -> bool:
        """Offsets or residuals large enough to mention in the text report."""
        return self.enabled and any(
            abs(r.offset_ns) / 1e3 >= NOTABLE_OFFSET_US
            or (r.residual_us is not None and r.residual_us >= NOTABLE_RESIDUAL_US)
            for r in self.ranks.values())

    def to_dict(self) -> dict[str, Any]:
        res = [r.residual_us for r in self.ranks.values() if r.residual_us is not None]
        return {"enabled": self.enabled, "reason": self.reason, "notable": self.notable,
                "reference_rank": self.reference_rank, "anchor_ns": self.anchor_ns,
                "collectives": list(END_SYNC_COLLECTIVES),
                "max_abs_offset_us": max((abs(r.offset_ns) / 1e3 for r in self.ranks.values()),
                                         default=0.0),
                "max_residual_us": max(res) if res else None,
                "ranks": {r: c.to_dict() for r, c in sorted(self.ranks.items())}}


def alignment_off(ranks: Sequence[int], reason: str) -> ClockAlignment:
    """Alignment switched off: every rank keeps its own clock."""
    return ClockAlignment(False, None, 0, {r: RankClock(r, reason=reason) for r in ranks}, reason)


# --------------------------------------------------------------------------------------
# instances from traces
# --------------------------------------------------------------------------------------


def collective_ends(traces: Sequence[Any], acts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One row per end-synchronous collective kernel: ``rank``, ``instance`` (int code of
    (process group, collective, n-th)), ``end_ns``."""
    parts = []
    for t, act in zip(traces, acts):
        sel = np.flatnonzero(kind_mask(act, ("communication",), column="category")
                             & kind_mask(act, END_SYNC_COLLECTIVES, column="collective"))
        if sel.size == 0:
            continue
        pg = strings_at(act["pg_name"], sel) if "pg_name" in act else np.full(sel.size, "", object)
        pg = np.where(pd.isna(pg), "", pg)
        members = _pg_members(t)
        local = f"local/{t.rank.pp_rank or 0}/{t.rank.dp_rank or 0}/"
        lut = {p: members.get(str(p)) or local + str(p) for p in pd.unique(pg)}
        gkey = pd.Series(pg).map(lut).to_numpy(object)
        df = pd.DataFrame({
            "rank": t.rank.rank,
            "group": gkey,
            "collective": pd.Series(strings_at(act["collective"], sel)).fillna("").to_numpy(object),
            "start_ns": act["ts_ns"].to_numpy(np.int64)[sel],
            "end_ns": act["end_ns"].to_numpy(np.int64)[sel],
            "seq": act["seq"].to_numpy(np.int64)[sel] if "seq" in act else -1,
        }).sort_values("start_ns", kind="stable")
        df["ord"] = np.where(df["seq"] >= 0, df["seq"], df.groupby(["group", "collective"]).cumcount())
        parts.append(df)
    if not parts:
        return pd.DataFrame({"rank": np.zeros(0, np.int64), "instance": np.zeros(0, np.int64),
                             "end_ns": np.zeros(0, np.int64)})
    df = pd.concat(parts, ignore_index=True)
    df["instance"] = df.groupby(["group", "collective", "ord"], sort=False).ngroup()
    return df[["rank", "instance", "end_ns"]].reset_index(drop=True)


def _pg_members(trace: Any) -> dict[str, str]:
    """pg_name -> "ranks/<r0,r1,..>" from distributedInfo.pg_config (names the group by
    its members, so that two TP groups that reuse one name stay apart). Only groups that
    list the trace's own rank: a copied or foreign ``distributedInfo`` (SGLang may write
    rank 0's into every file) falls back to the name and the rank's (PP, DP) indices."""
    info = trace.distributed_info or {}
    out: dict[str, str] = {}
    me = trace.rank.rank
    for pg in info.get("pg_config") or []:
        if isinstance(pg, dict) and isinstance(pg.get("ranks"), list) and pg.get("pg_name") is not None \
                and me in pg["ranks"]:
            out[str(pg["pg_name"])] = "ranks/" + ",".join(str(r) for r in pg["ranks"])
    return out


def align_clocks(traces: Sequence[Any], acts: Sequence[pd.DataFrame]) -> ClockAlignment:
    """Clock alignment of ``traces`` (one per rank) from their GPU activity tables."""
    ranks = [t.rank.rank for t in traces]
    if len(traces) < 2:
        return alignment_off(ranks, "one rank: nothing to align")
    return fit_alignment(collective_ends(traces, acts), ranks)


# --------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------


def fit_alignment(ends: pd.DataFrame, ranks: Sequence[int]) -> ClockAlignment:
    """Fit per-rank offsets and drifts from ``ends`` (``rank``, ``instance``, ``end_ns``)."""
    ranks = sorted({int(r) for r in ranks} | set(ends["rank"].astype(int).unique().tolist()))
    df = ends[["rank", "instance", "end_ns"]].copy()
    df = df.drop_duplicates(["rank", "instance"], keep="first")
    n_members = df.groupby("instance")["rank"].transform("size")
    df = df[n_members >= 2].reset_index(drop=True)
    if len(df) == 0:
        return alignment_off(ranks, "no synchronous collective (allreduce / allgather / reducescatter / "
                          "barrier) is matched on two or more ranks")
    rank_arr = df["rank"].to_numpy(np.int64)
    inst = df["instance"].to_numpy(np.int64)
    end = df["end_ns"].to_numpy(np.int64)
    n_inst = int(inst.max()) + 1
    ridx = np.searchsorted(np.array(ranks, np.int64), rank_arr)
    have = np.bincount(ridx, minlength=len(ranks)) > 0
    root_of = np.full(len(ranks), -1, np.int64)
    offset = np.zeros(len(ranks), np.float64)  # ns, relative to anchor frame
    drift = np.zeros(len(ranks), np.float64)   # fraction (ppm * 1e-6)
    solved = np.zeros(len(ranks), bool)
    anchor: int | None = None
    while True:
        cand = np.flatnonzero(have & ~solved)
        if cand.size == 0:
            break
        root = int(cand[0])  # lowest unsolved rank with collectives starts a component
        solved[root] = True
        root_of[root] = root
        if anchor is None:
            anchor = int(np.median(end[ridx == root]))
        rel = (end - np.int64(anchor)).astype(np.float64)
        while True:
            s_rows = solved[ridx] & (root_of[ridx] == root)
            corr = _to_ref(rel, offset[ridx], drift[ridx])
            ref_t = _group_median(inst[s_rows], corr[s_rows], n_inst)
            usable = ~solved[ridx] & ~np.isnan(ref_t[inst])
            if not usable.any():
                break
            new = np.unique(ridx[usable])
            for k in new.tolist():  # one fit per rank (ranks are few; events are vectorised)
                m = usable & (ridx == k)
                x = ref_t[inst[m]]
                y = rel[m] - x
                offset[k], drift[k] = _robust_line(x, y)
                solved[k] = True
                root_of[k] = root
    assert anchor is not None
    rel = (end - np.int64(anchor)).astype(np.float64)
    corr = _to_ref(rel, offset[ridx], drift[ridx])
    med_all = _group_median(inst, corr, n_inst)
    dev = np.abs(corr - med_all[inst])
    out: dict[int, RankClock] = {}
    ref0 = int(np.flatnonzero(have)[0])
    for i, r in enumerate(ranks):
        if not have[i]:
            out[r] = RankClock(r, reason="no synchronous collective shared with another rank")
            continue
        m = ridx == i
        resid = float(np.median(dev[m])) / 1e3
        root = int(root_of[i])
        src = "reference" if root == i else "collectives"
        reason = None
        if root != ref0:
            reason = (f"no synchronous collective links it to rank {ranks[ref0]}: aligned within "
                      f"its own group to rank {ranks[root]}, whose clock is taken as is")
        out[r] = RankClock(r, int(np.rint(offset[i])), round(float(drift[i]) * 1e6, 4), round(resid, 3),
                           int(m.sum()), src, ranks[root], reason)
    return ClockAlignment(True, ranks[ref0], int(anchor), out, None)


def _to_ref(rel: np.ndarray, off: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Reference time (relative to the anchor) of local times ``rel`` (relative to the anchor)."""
    return (rel - off) / (1.0 + d)


def _group_median(inst: np.ndarray, val: np.ndarray, n: int) -> np.ndarray:
    """Median of ``val`` per instance code (NaN where an instance has no value)."""
    out = np.full(n, np.nan)
    if inst.size == 0:
        return out
    med = pd.Series(val).groupby(inst).median()
    out[med.index.to_numpy(np.int64)] = med.to_numpy(np.float64)
    return out


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept at x=0, slope): Theil-Sen when the span allows, else the
    median of ``y`` with slope 0."""
    slope = 0.0
    span = float(x.max() - x.min()) if x.size else 0.0
    if x.size >= DRIFT_MIN_POINTS and span >= DRIFT_MIN_SPAN_NS:
        order = np.argsort(x, kind="stable")
        pick = order[np.linspace(0, x.size - 1, min(x.size, DRIFT_POINTS)).astype(np.int64)]
        px, py = x[pick], y[pick]
        i, j = np.triu_indices(px.size, 1)
        dx = px[j] - px[i]
        ok = dx > 0
        if ok.any():
            slope = float(np.median((py[j] - py[i])[ok] / dx[ok]))
        if abs(slope) * span < DRIFT_MIN_EFFECT_NS:
            slope = 0.0
    intercept = float(np.median(y - slope * x))
    return intercept, slope


__all__ = [
    "END_SYNC_COLLECTIVES",
    "ClockAlignment",
    "RankClock",
    "align_clocks",
    "alignment_off",
    "collective_ends",
    "fit_alignment",
]
