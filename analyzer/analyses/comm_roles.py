"""Communication by role (TP / PP / EP / DP) and across ranks: skew, wait, straggler.

Role of a communication kernel (first rule that applies; sizes from the run context,
``analyzer.analyses.context``, 0 = unknown):

1. ``alltoall`` -> EP in a serving run, when EP>1 or when the rank runs MoE kernels (MoE
   dispatch/combine, DeepEP); other all-to-all (e.g. a recsys embedding exchange in
   training) -> OTHER;
2. ``sendrecv`` -> PP when the run has PP>1, else EP when EP>1, else P2P;
3. a collective whose process group size (``pg_size``) equals the DP size but not the TP
   size -> DP; one whose group size equals the TP size -> TP;
4. any other collective -> TP when TP>1 (or TP unknown in a serving run), DP when DP>1
   (a training run's gradient all-reduce), else OTHER (unattributed).

Cross-rank: ranks of one TP group (same ``pp_rank``/``dp_rank``) run the same collectives in
the same order. The n-th collective of one (type, process group) on each rank is the same
operation (``seq`` is used instead when the trace has it). For each aligned instance:
``skew`` = latest start - earliest start; a rank's ``wait`` = min(latest start - its start,
its kernel duration): time spent inside the kernel waiting for the last rank to arrive, not
moving data; ``transfer`` = duration - wait. The straggler is the rank that arrives last
most often (and by the largest mean delay).

Clocks: with ``clock`` (``analyses.clock``, fitted from the synchronous ends of the
collectives) every rank's times are put on the reference rank's clock first; without it
start times of different ranks are compared directly. The spread of end times, which should
be ~0 for a synchronous collective, is reported as ``end_spread_us`` to check that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer import intervals as iv
from analyzer.analyses.clock import ClockAlignment
from analyzer.analyses.phases import NS_PER_US, StepAttribution
from analyzer.analyses.tables import kind_mask, strings_at
from analyzer.model import Trace

ROLES: tuple[str, ...] = ("TP", "PP", "EP", "DP", "P2P", "OTHER")
SYNC_COLLECTIVES = ("allreduce", "allgather", "reducescatter", "alltoall", "broadcast", "reduce", "barrier")


def comm_roles(act: pd.DataFrame, sizes: Mapping[str, int], workload: str = "serving") -> np.ndarray:
    """Role per row of ``act`` ("" for non-communication rows); rules in the module doc."""
    coll = strings_at(act["collective"])
    pg = act["pg_size"].to_numpy(np.int64) if "pg_size" in act else np.full(len(act), -1)
    is_comm = kind_mask(act, ("communication",), column="category")
    tp, pp, ep, dp = (int(sizes.get(k) or 0) for k in ("tp", "pp", "ep", "dp"))
    serving = workload == "serving"
    has_moe = bool(kind_mask(act, ("moe",), column="category").any())
    a2a = "EP" if (serving or ep > 1 or has_moe) else "OTHER"
    p2p = "PP" if pp > 1 else ("EP" if ep > 1 else "P2P")
    dp_group = (pg > 1) & (pg == dp) & (pg != tp)
    tp_group = (pg > 1) & (pg == tp)
    default = "TP" if (tp > 1 or (tp == 0 and serving)) else ("DP" if dp > 1 else "OTHER")
    role = np.where(coll == "alltoall", a2a,
                    np.where(coll == "sendrecv", p2p,
                             np.where(dp_group, "DP", np.where(tp_group, "TP", default))))
    return np.where(is_comm, role, "").astype(object)


def rank_communication(attr: StepAttribution, sizes: Mapping[str, int], workload: str = "serving") -> dict[str, Any]:
    """Per role and per role/collective: time, exposed, overlapped, count, bytes (one rank)."""
    act = attr.act
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    role = comm_roles(act, sizes, workload)
    is_comm = role != ""
    is_kernel = kind_mask(act, ("kernel",))
    os_, oe = iv.union(s[~is_comm & is_kernel], e[~is_comm & is_kernel])
    coll = strings_at(act["collective"])
    nbytes = act["msg_bytes"].to_numpy(np.int64) if "msg_bytes" in act else np.full(len(act), -1)
    out: dict[str, Any] = {"by_role": {}, "by_role_collective": {}}

    def fig(sel: np.ndarray) -> dict[str, float]:
        t = int(iv.union_length(s[sel], e[sel]))
        ex = int(iv.total_length(*iv.subtract(s[sel], e[sel], os_, oe)))
        b = nbytes[sel]
        return {"time_us": t / NS_PER_US, "exposed_us": ex / NS_PER_US,
                "overlapped_us": (t - ex) / NS_PER_US, "count": int(sel.sum()),
                "bytes": int(b[b > 0].sum()) if (b > 0).any() else None}  # None: sizes not in the trace

    for r in sorted(set(role[is_comm].tolist())):
        sel = role == r
        out["by_role"][r] = fig(sel)
        for c in sorted(set(coll[sel].tolist())):
            out["by_role_collective"][f"{r}/{c or 'other'}"] = fig(sel & (coll == c))
    return out


def _instances(rank: int, group: tuple, attr: StepAttribution, clock: ClockAlignment | None = None) -> pd.DataFrame:
    act = attr.act
    sel = np.flatnonzero(kind_mask(act, ("communication",), column="category")
                         & kind_mask(act, SYNC_COLLECTIVES, column="collective"))
    df = pd.DataFrame({
        "rank": rank,
        "group": [group] * sel.size,
        "collective": strings_at(act["collective"], sel),
        "pg": strings_at(act["pg_name"], sel) if "pg_name" in act else "",
        "start_ns": act["ts_ns"].to_numpy(np.int64)[sel],
        "end_ns": act["end_ns"].to_numpy(np.int64)[sel],
        "seq": act["seq"].to_numpy(np.int64)[sel] if "seq" in act else -1,
        "bytes": act["msg_bytes"].to_numpy(np.int64)[sel] if "msg_bytes" in act else -1,
    })
    df = df.sort_values("start_ns", kind="stable")
    df["local_start_ns"] = df["start_ns"]  # the rank's own clock, for its exposed wait
    if clock is not None:  # compare ranks on the reference clock (analyses/clock.py)
        df["start_ns"] = clock.correct(rank, df["start_ns"].to_numpy(np.int64))
        df["end_ns"] = clock.correct(rank, df["end_ns"].to_numpy(np.int64))
    df["ord"] = np.where(df["seq"] >= 0, df["seq"], df.groupby(["collective", "pg"]).cumcount())
    return df


def cross_rank(
    traces: Sequence[Trace], attrs: Sequence[StepAttribution], *, min_ranks: int = 2,
    clock: ClockAlignment | None = None,
) -> dict[str, Any]:
    """Align collectives across ranks; skew, per-rank wait/transfer, last-arrival counts.

    ``clock``: per-rank clock corrections (``analyses.clock.align_clocks``) applied to the
    start and end times before ranks are compared; None compares the raw clocks.
    """
    parts = []
    for t, a in zip(traces, attrs):
        group = (t.rank.pp_rank or 0, t.rank.dp_rank or 0)
        parts.append(_instances(t.rank.rank, group, a, clock))
    if not parts:
        return {"instances": 0, "ranks": {}, "groups": []}
    df = pd.concat(parts, ignore_index=True)
    if len(df) == 0:
        return {"instances": 0, "ranks": {}, "groups": []}
    keys = ["group", "collective", "pg", "ord"]
    gb = df.groupby(keys, sort=False)
    df["n"] = gb["rank"].transform("size")
    df["last_start"] = gb["start_ns"].transform("max")
    df["first_start"] = gb["start_ns"].transform("min")
    df["end_max"] = gb["end_ns"].transform("max")
    df["end_min"] = gb["end_ns"].transform("min")
    df = df[df["n"] >= min_ranks].copy()
    if len(df) == 0:
        return {"instances": 0, "ranks": {}, "groups": []}
    dur = (df["end_ns"] - df["start_ns"]).to_numpy(np.int64)
    df["wait_ns"] = np.minimum(np.maximum(df["last_start"] - df["start_ns"], 0), dur)
    df["transfer_ns"] = dur - df["wait_ns"]
    df["delay_ns"] = df["start_ns"] - df["first_start"]
    spread = (df["last_start"] - df["first_start"]).to_numpy(np.int64)
    df["is_last"] = (df["start_ns"] == df["last_start"]) & (spread > 0)
    inst = df.drop_duplicates(keys)
    skew = (inst["last_start"] - inst["first_start"]).to_numpy(np.int64) / NS_PER_US
    end_spread = (inst["end_max"] - inst["end_min"]).to_numpy(np.int64) / NS_PER_US
    n_inst = len(inst)
    per = df.groupby("rank").agg(
        wait_ns=("wait_ns", "sum"), transfer_ns=("transfer_ns", "sum"),
        last=("is_last", "sum"), delay_ns=("delay_ns", "mean"), count=("wait_ns", "size"))
    ranks: dict[int, dict[str, Any]] = {}
    for r, row in per.iterrows():  # one row per rank
        ranks[int(r)] = {
            "collectives": int(row["count"]),
            "wait_us": float(row["wait_ns"]) / NS_PER_US,
            "transfer_us": float(row["transfer_ns"]) / NS_PER_US,
            "last_arrivals": int(row["last"]),
            "last_arrival_share": float(row["last"]) / max(int(row["count"]), 1),
            "mean_delay_us": float(row["delay_ns"]) / NS_PER_US,
        }
    straggler = None
    if ranks:
        straggler = max(ranks, key=lambda r: (ranks[r]["last_arrivals"], ranks[r]["mean_delay_us"], -r))
        if ranks[straggler]["last_arrivals"] == 0:
            straggler = None
    ar = df[(df["collective"] == "allreduce") & (df["bytes"] > 0) & (df["transfer_ns"] > 0)]
    bw = None
    us_per_mb = None
    if len(ar):
        n = ar["n"].to_numpy(float)
        algbw = ar["bytes"].to_numpy(float) / ar["transfer_ns"].to_numpy(float)  # bytes/ns = GB/s
        bw = float(np.median(algbw * 2 * (n - 1) / n))
        us_per_mb = float(np.median(ar["transfer_ns"].to_numpy(float) / NS_PER_US
                                    / (ar["bytes"].to_numpy(float) / 1e6)))
    return {
        "instances": int(n_inst),
        "aligned_by": "seq" if (df["seq"] >= 0).any() else "order",
        "skew_us": _pcts(skew),
        "skew_total_us": float(skew.sum()),
        "end_spread_us": _pcts(end_spread),
        "ranks": ranks,
        "last_arrival_leader": straggler,
        "straggler_last_share": ranks[straggler]["last_arrival_share"] if straggler is not None else None,
        "allreduce_busbw_gbps": bw,
        "allreduce_us_per_mb": us_per_mb,
        "wait_by_rank_ns": {r: int(v) for r, v in df.groupby("rank")["wait_ns"].sum().items()},
        "_wait_intervals": df[["rank", "local_start_ns", "wait_ns"]].rename(columns={"local_start_ns": "start_ns"}),
    }


def exposed_wait_us(attr: StepAttribution, waits: pd.DataFrame, rank: int) -> float:
    """Wait time of ``rank`` inside collectives not overlapped by its non-comm kernels."""
    w = waits[(waits["rank"] == rank) & (waits["wait_ns"] > 0)]
    if len(w) == 0:
        return 0.0
    act = attr.act
    is_comm = kind_mask(act, ("communication",), column="category")
    is_kernel = kind_mask(act, ("kernel",))
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    os_, oe = iv.union(s[~is_comm & is_kernel], e[~is_comm & is_kernel])
    ws = w["start_ns"].to_numpy(np.int64)
    we = ws + w["wait_ns"].to_numpy(np.int64)
    return float(iv.total_length(*iv.subtract(ws, we, os_, oe))) / NS_PER_US


def _pcts(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"p50": None, "p90": None, "max": None}
    return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)), "max": float(x.max())}
