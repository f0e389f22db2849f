"""A Chrome/Perfetto JSON trace: the original events of the chosen ranks plus our own tracks.

Input: classified traces, their ``analyses.spans.RankSpans`` and the report dict; output: a
dict in the Trace Event Format (``{"traceEvents": [...], "displayTimeUnit": "ns",
"otherData": {...}}``) that ui.perfetto.dev, Perfetto's trace_processor and chrome://tracing
open. No analysis here: every interval comes from ``analyses.spans``.

Layout, per rank r (process ids ``1000 * (r + 1) + k``):

- ``rank r · host`` (k = 0): the CPU events (operators, runtime calls, annotations), one
  thread per original thread id;
- ``rank r · GPU d`` (k = 100 + d): kernels, copies and memsets, one thread per stream, each
  with ``args.category`` (the phase-aware category), ``collective``, ``role`` (TP/PP/EP/DP/
  P2P/OTHER), ``step`` and ``phase``; GPU copies of annotations on their own threads;
- ``rank r · trace-analyzer`` (k = 999): ``steps`` (each step's GPU span, named by phase,
  more lanes when spans overlap), ``idle gaps`` (named ``idle: <cause>`` by the dominant
  cause, colour by name; ``args`` has every cause's share of the gap) and, on the
  representative rank, one track per finding: a summary slice ``#n title`` over the range
  the finding covers (category ``trace_analyzer.finding_summary``) holding one slice per
  interval it accounts for (category ``trace_analyzer.finding``, ``args.counted_us``).

Times are microseconds from the earliest exported event (``otherData.t0_ns`` on the trace's
clock).

    >>> doc = perfetto_trace(traces, spans, report.to_dict())          # doctest: +SKIP
    >>> json.dump(doc, open("out.json", "w"))                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.gaps import CAUSES
from analyzer.analyses.spans import RankSpans
from analyzer.model import Trace

CAT_STEP = "trace_analyzer.step"
CAT_GAP = "trace_analyzer.gap"
CAT_FINDING = "trace_analyzer.finding"
CAT_SUMMARY = "trace_analyzer.finding_summary"
#: Chrome's reserved colour names per gap cause (chrome://tracing; Perfetto colours by name).
GAP_COLORS: dict[str, str] = {
    "scheduler": "thread_state_runnable", "synchronization": "thread_state_iowait",
    "launch_overhead": "yellow", "pp_bubble": "olive", "device_wait": "grey",
}
GPU_KINDS = ("kernel", "memcpy", "memset")
KIND_CAT = {"memcpy": "gpu_memcpy", "memset": "gpu_memset"}
TID_STEPS, TID_GAPS, TID_FINDING0 = 1, 10, 20
ANNOTATION_TID_OFFSET = 1 << 20  # GPU copies of annotations: stream + this


def host_pid(rank: int) -> int:
    return 1000 * (rank + 1)


def gpu_pid(rank: int, device: int) -> int:
    return 1000 * (rank + 1) + 100 + device


def analysis_pid(rank: int) -> int:
    return 1000 * (rank + 1) + 999


def _us(ns: np.ndarray | int, t0: int) -> Any:
    return np.round((np.asarray(ns, np.int64) - t0) / 1000.0, 3)


def _meta(pid: int, tid: int | None, what: str, value: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"ph": "M", "pid": pid, "name": what, "args": {}}
    if tid is not None:
        ev["tid"] = tid
    ev["args"]["name" if what.endswith("_name") else "sort_index"] = value
    return ev


def _strings(col: pd.Series) -> np.ndarray:
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.asarray([str(c) for c in col.cat.categories] + [""], dtype=object)
        return cats[col.cat.codes.to_numpy()]
    return col.astype(str).to_numpy(object)


def _lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A lane per interval so that no two intervals of one lane overlap (greedy, in start order)."""
    lane = np.zeros(start.size, np.int64)
    ends: list[int] = []
    for i in np.argsort(start, kind="stable").tolist():
        for k, e in enumerate(ends):
            if start[i] >= e:
                ends[k], lane[i] = int(end[i]), k
                break
        else:
            ends.append(int(end[i]))
            lane[i] = len(ends) - 1
    return lane


def _slices(out: list, pid: int, tids: np.ndarray | int, ts: np.ndarray, dur: np.ndarray, names: Sequence[str],
            cat: str | Sequence[str], args: Sequence[dict[str, Any]] | None = None) -> None:
    tids = np.broadcast_to(np.asarray(tids), ts.shape)
    cats = [cat] * ts.size if isinstance(cat, str) else cat
    for i in range(ts.size):
        ev = {"ph": "X", "pid": pid, "tid": int(tids[i]), "ts": float(ts[i]), "dur": float(dur[i]),
              "name": names[i], "cat": cats[i]}
        if args is not None:
            ev["args"] = args[i]
        out.append(ev)


def _gpu_events(out: list, trace: Trace, sp: RankSpans, t0: int, threads: dict) -> None:
    act = sp.attr.act
    r = trace.rank.rank
    dev = sp.attr.device
    pid = gpu_pid(r, dev)
    steps = sp.attr.steps
    phase = _strings(steps["phase"]) if sp.attr.has_steps and "phase" in steps else np.zeros(0, object)
    st = act["step"].to_numpy(np.int64)
    stream = act["stream"].to_numpy(np.int64)
    kinds, names, cats = _strings(act["kind"]), _strings(act["name"]), _strings(act["category"])
    coll = _strings(act["collective"]) if "collective" in act else np.full(len(act), "", object)
    corr = act["correlation"].to_numpy(np.int64) if "correlation" in act else np.full(len(act), -1)
    s = act["ts_ns"].to_numpy(np.int64)
    args = []
    for i in range(len(act)):
        a: dict[str, Any] = {"category": cats[i]}
        if coll[i]:
            a["collective"] = coll[i]
        if sp.roles.size and sp.roles[i]:
            a["role"] = sp.roles[i]
        if st[i] >= 0:
            a["step"] = int(st[i])
            if phase.size:
                a["phase"] = phase[st[i]]
        if corr[i] >= 0:
            a["correlation"] = int(corr[i])
        args.append(a)
    _slices(out, pid, stream, _us(s, t0), np.round(act["dur_ns"].to_numpy(np.int64) / 1000.0, 3), list(names),
            [KIND_CAT.get(k, k) for k in kinds], args)
    threads.setdefault(pid, (f"rank {r} · GPU {dev}", {}))[1].update(
        {int(x): f"stream {int(x)}" for x in np.unique(stream)})
    # the rank's other GPU rows: other devices' activity, GPU copies of annotations
    ev = trace.events
    dv = ev["device"].to_numpy(np.int64)
    ekind = _strings(ev["kind"])
    other = (dv >= 0) & (((dv != dev) & np.isin(ekind, GPU_KINDS)) | (ekind == "gpu_user_annotation"))
    if other.any():
        rows = np.flatnonzero(other)
        ecat = _strings(ev["category"])[rows] if "category" in ev else np.full(rows.size, "", object)
        ann = ekind[rows] == "gpu_user_annotation"
        tid = ev["stream"].to_numpy(np.int64)[rows] + np.where(ann, ANNOTATION_TID_OFFSET, 0)
        for d in np.unique(dv[rows]).tolist():
            sel = dv[rows] == d
            p = gpu_pid(r, d)
            names_d = _strings(ev["name"])[rows[sel]]
            k = ekind[rows[sel]]
            _slices(out, p, tid[sel], _us(ev["ts_ns"].to_numpy(np.int64)[rows[sel]], t0),
                    np.round(ev["dur_ns"].to_numpy(np.int64)[rows[sel]] / 1000.0, 3), list(names_d),
                    [KIND_CAT.get(x, x) for x in k],
                    [{"category": c} if not a else {} for c, a in zip(ecat[sel], ann[sel])])
            names_t = threads.setdefault(p, (f"rank {r} · GPU {d}", {}))[1]
            for t, a in zip(tid[sel].tolist(), ann[sel].tolist()):
                names_t.setdefault(int(t), f"stream {t - ANNOTATION_TID_OFFSET} annotations" if a else f"stream {t}")


def _host_events(out: list, trace: Trace, t0: int, threads: dict) -> None:
    ev = trace.events
    r = trace.rank.rank
    sel = np.flatnonzero(ev["device"].to_numpy(np.int64) < 0)
    if not sel.size:
        return
    pid = host_pid(r)
    tid = ev["tid"].to_numpy(np.int64)[sel]
    kinds = _strings(ev["kind"])[sel]
    corr = ev["correlation"].to_numpy(np.int64)[sel]
    args = [{"correlation": int(c)} if c >= 0 else {} for c in corr.tolist()]
    _slices(out, pid, tid, _us(ev["ts_ns"].to_numpy(np.int64)[sel], t0),
            np.round(ev["dur_ns"].to_numpy(np.int64)[sel] / 1000.0, 3), list(_strings(ev["name"])[sel]),
            list(kinds), args)
    threads.setdefault(pid, (f"rank {r} · host", {}))[1].update(
        {int(t): f"thread {int(t)}" for t in np.unique(tid)})


def _analysis_events(out: list, sp: RankSpans, t0: int, threads: dict, findings: Sequence[Mapping[str, Any]]) -> None:
    pid = analysis_pid(sp.rank)
    names = threads.setdefault(pid, (f"rank {sp.rank} · trace-analyzer", {}))[1]
    steps = sp.attr.steps
    if sp.attr.has_steps and "gpu_start_ns" in steps:
        has = steps["gpu_start_ns"].to_numpy(np.int64) >= 0
        pos = np.flatnonzero(has)  # step = row position in attr.steps, as act["step"]
        st = steps[has]
        a = st["gpu_start_ns"].to_numpy(np.int64)
        b = st["gpu_end_ns"].to_numpy(np.int64)
        lane = _lanes(a, b)
        phase = _strings(st["phase"])
        sname = _strings(st["name"]) if "name" in st else np.full(len(st), "", object)
        args = []
        for j, (_, row) in enumerate(st.iterrows()):
            d = {"step": int(pos[j]), "phase": phase[j], "annotation": sname[j]}
            for k in ("mode", "bs", "tokens", "kv_tokens", "kernels", "gpu_busy_us"):
                if k in st and pd.notna(row[k]):
                    v = row[k]
                    d[k] = v.item() if hasattr(v, "item") else v
            args.append(d)
        _slices(out, pid, TID_STEPS + lane, _us(a, t0), np.round((b - a) / 1000.0, 3),
                [f"{p} step" for p in phase], CAT_STEP, args)
        for k in np.unique(lane).tolist():
            names[TID_STEPS + k] = "steps (GPU span, by phase)" if k == 0 else f"steps, overlapping ({k + 1})"
    g = sp.gaps
    if len(g):
        a = g["start_ns"].to_numpy(np.int64)
        b = g["end_ns"].to_numpy(np.int64)
        cause = g["cause"].tolist()
        loc = g["location"].tolist()
        parts = {c: g[f"{c}_ns"].to_numpy(np.int64) for c in CAUSES}
        args = [{"cause": cause[i], "location": loc[i],
                 **{f"{c}_us": round(int(parts[c][i]) / 1000.0, 3) for c in CAUSES if parts[c][i]}}
                for i in range(len(g))]
        start = len(out)
        _slices(out, pid, TID_GAPS, _us(a, t0), np.round((b - a) / 1000.0, 3),
                ["capture edge" if lo == "edge" else f"idle: {c}" for c, lo in zip(cause, loc)], CAT_GAP, args)
        for ev, c, lo in zip(out[start:], cause, loc):
            ev["cname"] = "grey" if lo == "edge" else GAP_COLORS.get(c, "grey")
        names[TID_GAPS] = "idle gaps (by cause)"
    rank_of = {f["id"]: i for i, f in enumerate(findings, 1)}
    rec = {f["id"]: f.get("recommendation") for f in findings}
    for fs in sp.findings:
        n = rank_of.get(fs.id, len(rank_of) + 1)
        tid = TID_FINDING0 + n
        names[tid] = f"finding #{n}: {fs.id}"
        if fs.start_ns.size == 0:
            continue
        lo, hi = int(fs.start_ns[0]), int(fs.end_ns[-1])
        out.append({"ph": "X", "pid": pid, "tid": tid, "ts": float(_us(lo, t0)), "dur": round((hi - lo) / 1000.0, 3),
                    "name": f"#{n} {fs.title}", "cat": CAT_SUMMARY,
                    "args": {"id": fs.id, "severity": fs.severity, "share": fs.share, "time_us": fs.time_us,
                             "intervals": int(fs.start_ns.size), "counted_us": round(fs.total_ns / 1000.0, 3),
                             "basis": fs.basis, "recommendation": rec.get(fs.id)}})
        _slices(out, pid, tid, _us(fs.start_ns, t0), np.round((fs.end_ns - fs.start_ns) / 1000.0, 3),
                [fs.id] * fs.start_ns.size, CAT_FINDING,
                [{"counted_us": round(int(c) / 1000.0, 3)} for c in fs.counted_ns.tolist()])


def perfetto_trace(traces: Sequence[Trace], spans: Sequence[RankSpans], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The Trace Event Format dict for ``traces`` (one ``RankSpans`` each, same order)."""
    starts = [int(t.events["ts_ns"].min()) for t in traces if len(t.events)]
    t0 = min(starts) if starts else 0
    out: list[dict[str, Any]] = []
    threads: dict[int, tuple[str, dict[int, str]]] = {}
    findings = list(doc.get("findings") or [])
    for trace, sp in zip(traces, spans):
        _host_events(out, trace, t0, threads)
        _gpu_events(out, trace, sp, t0, threads)
        _analysis_events(out, sp, t0, threads, findings)
    meta: list[dict[str, Any]] = []
    for pid in sorted(threads):
        pname, tnames = threads[pid]
        meta += [_meta(pid, None, "process_name", pname), _meta(pid, None, "process_sort_index", pid)]
        for tid in sorted(tnames):
            meta += [_meta(pid, tid, "thread_name", tnames[tid]), _meta(pid, tid, "thread_sort_index", tid)]
    rep = (doc.get("serving") or {}).get("representative_rank")
    return {
        "traceEvents": meta + out,
        "displayTimeUnit": "ns",
        "otherData": {
            "producer": f"trace-analyzer {(doc.get('tool') or {}).get('version', '')}".strip(),
            "t0_ns": t0,
            "ranks": [t.rank.rank for t in traces],
            "representative_rank": rep,
            "unmapped_findings": [u for sp in spans for u in sp.unmapped],
            "inputs": [i.get("path", "").rsplit("/", 1)[-1] for i in doc.get("inputs") or []],
        },
    }


__all__ = ["CAT_FINDING", "CAT_GAP", "CAT_STEP", "CAT_SUMMARY", "GAP_COLORS", "perfetto_trace"]
