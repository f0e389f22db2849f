"""Per-operator roofline from recorded shapes: FLOPs, bytes, achieved TFLOP/s and TB/s, bound.

    >>> rf = analyze_roofline(trace, attr, shapes, gpu=gpu_spec)     # doctest: +SKIP
    >>> rf.section["groups"][0]["op"], rf.section["groups"][0]["bound"]  # doctest: +SKIP
    ('aten::mm', 'compute')

Each GPU kernel is linked to the CPU op that launched it: kernel -> runtime launch (same
``correlation``, the latest launch before it: ``merge_asof``) -> cpu_op (same ``External id``,
the latest op before the launch). Kernels replayed from a CUDA graph have no CPU op; when
the graph-capture trace is given, the k-th kernel of the i-th replay is the k-th launch of
the capture it replays (captures are matched in order by kernel count). An op's FLOPs and
bytes come from its shapes (``analyses/op_cost.py``); its time is the sum of its kernels'
durations. Ops are grouped by (op, shapes); kernels without an op are grouped by kernel
name and say why they have no figures.

Bound (thresholds ``[roofline]`` in ``findings/thresholds.toml``): ``latency`` when the
group reaches less than ``latency_fraction`` of the roof at its intensity and its calls
average under ``latency_max_us``; else ``compute`` when the intensity is at or above the
ridge point (peak TFLOP/s for the op's dtype / HBM TB/s), ``memory`` below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.op_cost import OpCost, moe_from_model, op_cost
from analyzer.analyses.phases import StepAttribution
from analyzer.classify.ops import op_family, runtime_role
from analyzer.readers.kineto_shapes import GraphCapture, OpShapes, Signature

#: op groups listed in the report (the rest are summed in ``other_groups``)
MAX_GROUPS = 60
_LAUNCH_KINDS = ("cuda_runtime", "cuda_driver")


@dataclass
class Roofline:
    """What the roofline adds: the JSON ``section`` and the per-op-instance table ``ops``
    (one row per op call with ``time_ns``, ``flops``, ``bytes``, ``family``, ``step``)."""

    section: dict[str, Any]
    ops: pd.DataFrame = field(default_factory=pd.DataFrame)


def unavailable(reason: str) -> Roofline:
    """The section of a trace the roofline cannot read (no shapes, not Kineto)."""
    return Roofline({"available": False, "reason": reason, "groups": [], "by_kernel": [],
                     "missing": [reason]})


# --------------------------------------------------------------------------------------
# linking kernels to ops
# --------------------------------------------------------------------------------------


def _merge_shapes(shapes: Sequence[OpShapes]) -> tuple[pd.DataFrame, list[Signature]]:
    frames, sigs = [], []
    for s in shapes:
        f = s.ops[["ts_ns", "external_id", "sig"]].copy()
        f["name"] = s.ops["name"].astype(str)
        f["sig"] = f["sig"].astype(np.int64) + len(sigs)
        sigs.extend(s.signatures)
        frames.append(f)
    ops = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"ts_ns": np.zeros(0, np.int64), "external_id": np.zeros(0, np.int64),
         "sig": np.zeros(0, np.int64), "name": np.zeros(0, object)})
    ops = ops.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    ops["op_row"] = np.arange(len(ops), dtype=np.int64)
    return ops, sigs


def link_kernels(events: pd.DataFrame, act: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """Per kernel row of ``act``: ``launch_name``, ``launch_corr_ts`` (the launch's start) and
    the linked ``op_row`` (-1 when none)."""
    k = act[(act["kind"] == "kernel").to_numpy()][["ts_ns", "dur_ns", "name", "correlation", "category", "step"]].copy()
    k["row"] = np.arange(len(k))
    ev = events
    is_l = ev["kind"].isin(_LAUNCH_KINDS).to_numpy() & (ev["correlation"].to_numpy() >= 0)
    names = ev["name"]  # categorical: take codes, then the few distinct names
    cats = np.asarray(names.cat.categories, dtype=object)
    ln = pd.DataFrame({"launch_ts": ev["ts_ns"].to_numpy(np.int64)[is_l],
                       "correlation": ev["correlation"].to_numpy(np.int64)[is_l],
                       "external_id": ev["external_id"].to_numpy(np.int64)[is_l],
                       "launch_name": cats[names.cat.codes.to_numpy()[is_l]]})
    ln = ln.sort_values("launch_ts", kind="stable")
    k = k.sort_values("ts_ns", kind="stable")
    k = pd.merge_asof(k, ln, left_on="ts_ns", right_on="launch_ts", by="correlation", direction="backward")
    k["external_id"] = k["external_id"].fillna(-1).astype(np.int64)
    has = k["launch_ts"].notna().to_numpy()
    k["launch_ts"] = k["launch_ts"].fillna(-1).astype(np.int64)
    k["launch_name"] = k["launch_name"].fillna("")
    k["op_row"] = -1
    sel = has & (k["external_id"].to_numpy() >= 0)
    if sel.any() and len(ops):
        q = k.loc[sel, ["launch_ts", "external_id"]].reset_index().sort_values("launch_ts", kind="stable")
        o = ops[["ts_ns", "external_id", "op_row"]].sort_values("ts_ns", kind="stable")
        m = pd.merge_asof(q, o, left_on="launch_ts", right_on="ts_ns", by="external_id", direction="backward")
        k.loc[m["index"].to_numpy(), "op_row"] = m["op_row"].fillna(-1).astype(np.int64).to_numpy()
    return k.sort_values("row").reset_index(drop=True)


def _map_graph_replays(k: pd.DataFrame, capture: GraphCapture, sig_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """For graph-replayed kernels: the capture op's name, signature (global index) and op
    instance key; -1 / "" where the replay could not be matched."""
    n = len(k)
    names = np.full(n, "", dtype=object)
    sig = np.full(n, -1, np.int64)
    inst = np.full(n, -1, np.int64)
    notes: list[str] = []
    roles = np.array(runtime_role(list(pd.unique(k["launch_name"]))), dtype=object)
    role_of = dict(zip(pd.unique(k["launch_name"]), roles))
    is_g = k["launch_name"].map(role_of).to_numpy() == "graph_launch"
    if not is_g.any():
        return names, sig, inst, notes
    g = k[is_g][["ts_ns", "correlation", "launch_ts"]].copy()
    g["pos"] = np.arange(len(g))
    g = g.sort_values(["launch_ts", "correlation", "ts_ns"], kind="stable")
    rid, _ = pd.factorize(pd.MultiIndex.from_arrays([g["launch_ts"], g["correlation"]]), sort=False)
    g["replay"] = rid
    g["k"] = g.groupby("replay").cumcount().to_numpy()
    counts = np.bincount(rid)
    caps = capture.captures
    cap_len = np.array([len(c) for c in caps], dtype=np.int64)
    flat_names = np.array([x[0] or "" for c in caps for x in c], dtype=object)
    flat_sig = np.array([x[1] for c in caps for x in c], dtype=np.int64)
    flat_key = np.array([x[2] for c in caps for x in c], dtype=np.int64)
    cap_start = np.concatenate([[0], np.cumsum(cap_len)[:-1]]) if len(caps) else np.zeros(0, np.int64)
    # replays in order, captures in order: the next capture with the replay's kernel count
    which = np.full(len(counts), -1, np.int64)
    p, unmatched = 0, 0
    for i, c in enumerate(counts.tolist()):  # one step per graph replay, not per kernel
        for d in range(len(caps)):
            j = (p + d) % len(caps)
            if cap_len[j] == c:
                which[i], p = j, (j + 1) % len(caps)
                break
        else:
            unmatched += 1
    if unmatched:
        notes.append(f"{unmatched} of {len(counts)} graph replays match no capture by kernel count")
    rep = g["replay"].to_numpy()
    ok = which[rep] >= 0
    flat = np.where(ok, cap_start[np.maximum(which[rep], 0)] + g["k"].to_numpy(), 0)
    pos = g["pos"].to_numpy()
    target = np.flatnonzero(is_g)[pos]
    names[target[ok]] = flat_names[flat[ok]]
    sig[target[ok]] = np.where(flat_sig[flat[ok]] >= 0, flat_sig[flat[ok]] + sig_offset, -1)
    # an op instance: (replay, op of the capture); capture keys are small ints
    inst[target[ok]] = rep[ok].astype(np.int64) * (int(flat_key.max(initial=0)) + 1) + flat_key[flat[ok]]
    return names, sig, inst, notes


# --------------------------------------------------------------------------------------
# the analysis
# --------------------------------------------------------------------------------------


def _step_work(steps: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per step: attended (query, key) pairs (causal for the context requests) and KV tokens
    read, from the execute_ annotation; NaN where it is absent."""
    if steps is None or not len(steps) or "ctx_sqsk" not in steps:
        return np.zeros(0), np.zeros(0)
    sqsk = steps["ctx_sqsk"].to_numpy(float)
    T = steps["tokens"].to_numpy(float)
    bs = steps["bs"].to_numpy(float)
    sqsq = steps["ctx_sqsq"].to_numpy(float) if "ctx_sqsq" in steps else np.full(len(steps), np.nan)
    ctx_req = steps["ctx_reqs"].to_numpy(float)
    est = np.where(ctx_req > 0, T * T / np.where(ctx_req > 0, ctx_req, 1), np.where(bs > 0, T * T / np.where(bs > 0, bs, 1), T * T))
    sqsq = np.where(np.isnan(sqsq), est, sqsq)
    gen = np.nan_to_num(steps["gen_sk"].to_numpy(float))
    pairs = sqsk - sqsq / 2.0 + gen
    return pairs, steps["kv_tokens"].to_numpy(float)


def _bound(tflops: float | None, tbps: float | None, intensity: float | None, peak: float | None,
           hbm_tbps: float | None, mean_us: float, th: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """``(bound, fraction of the attainable roof)``."""
    if intensity is None or peak is None or not hbm_tbps:
        if tbps is not None and hbm_tbps:  # no FLOP peak for the dtype: judged on bytes alone
            frac = tbps / hbm_tbps
            lat = frac < th["latency_fraction"] and mean_us < th["latency_max_us"]
            return ("latency" if lat else "memory"), frac
        return None, None
    roof = min(peak, intensity * hbm_tbps)
    frac = (tflops or 0.0) / roof if roof > 0 else None
    if frac is not None and frac < th["latency_fraction"] and mean_us < th["latency_max_us"]:
        return "latency", frac
    return ("compute" if intensity >= peak / hbm_tbps else "memory"), frac


def analyze_roofline(
    trace: Any,
    attr: StepAttribution,
    shapes: Sequence[OpShapes],
    *,
    gpu: Any = None,
    capture: GraphCapture | None = None,
    thresholds: Mapping[str, Any] | None = None,
    model: Any = None,
) -> Roofline:
    """The per-op roofline of one rank (``shapes``: ``read_op_shapes`` of its files).
    ``model``: a ``ModelSpec`` for the MoE calls whose inputs carry no expert weights."""
    from analyzer.findings import load_thresholds

    th = dict(thresholds or load_thresholds()["roofline"])
    ops, sigs = _merge_shapes(shapes)
    k = link_kernels(trace.events, attr.act, ops)
    missing: list[str] = []
    notes: list[str] = []
    n = len(k)
    op_row = k["op_row"].to_numpy(np.int64)
    name = np.full(n, "", dtype=object)
    sig = np.full(n, -1, np.int64)
    has_op = op_row >= 0
    name[has_op] = ops["name"].to_numpy(object)[op_row[has_op]]
    sig[has_op] = ops["sig"].to_numpy(np.int64)[op_row[has_op]]
    roles = dict(zip(pd.unique(k["launch_name"]), runtime_role(list(pd.unique(k["launch_name"])))))
    is_graph = k["launch_name"].map(roles).to_numpy() == "graph_launch"
    # a graph launch's External id is the op that replayed the graph (a compiled region, a
    # runner's forward), not the op of each kernel: those kernels are never given that op
    has_op &= ~is_graph
    name[is_graph], sig[is_graph] = "", -1
    inst = np.where(has_op, op_row, -1)
    source = np.where(has_op, "cpu_op", "").astype(object)
    if capture is not None:
        cn, cs, ci, cnotes = _map_graph_replays(k, capture, len(sigs))
        sigs = sigs + capture.shapes.signatures
        notes += cnotes
        got = (ci >= 0) & ~has_op
        name[got], sig[got] = cn[got], cs[got]
        inst[got] = ci[got] + (int(op_row.max(initial=0)) + 1)  # disjoint from cpu-op rows
        source[got] = "graph_capture"
    why_none = np.where(is_graph, "graph-replayed kernel" + ("" if capture is not None else " (no graph capture given)"),
                        np.where(k["launch_ts"].to_numpy() < 0, "no runtime launch linked", "no CPU op linked"))
    k["op"], k["sig"], k["inst"], k["source"] = name, sig, inst, source

    # ---- op instances: one row per op call (its kernels' time summed) ----
    sel = k["inst"].to_numpy() >= 0
    inst_all = k["inst"].to_numpy()[sel]
    order = np.argsort(inst_all, kind="stable")  # kernels of one call together, in time order
    uniq, first = np.unique(inst_all[order], return_index=True)
    take = np.flatnonzero(sel)[order[first]] if len(first) else np.zeros(0, np.int64)
    dur_sorted = k["dur_ns"].to_numpy(np.int64)[np.flatnonzero(sel)[order]]
    inst_df = pd.DataFrame({
        "inst": uniq,
        "op": k["op"].to_numpy(object)[take], "sig": k["sig"].to_numpy(np.int64)[take],
        "time_ns": np.add.reduceat(dur_sorted, first) if len(first) else np.zeros(0, np.int64),
        "kernels": np.diff(np.append(first, len(order))),
        "step": k["step"].to_numpy(np.int64)[take], "source": k["source"].to_numpy(object)[take],
        "ts_ns": k["ts_ns"].to_numpy(np.int64)[take],
    })
    # costs per distinct (op, signature)
    pair_codes, pairs_u = pd.factorize(pd.MultiIndex.from_arrays([inst_df["op"], inst_df["sig"]]), sort=False)
    costs: list[OpCost] = []
    fams: list[str] = []
    for op_name, s in pairs_u:
        fam = op_family(str(op_name))
        fams.append(fam.family or "other")
        if not fam.family:
            costs.append(OpCost(None, None, reason="op not in the op-family table"))
        elif fam.formula == "none" and fam.family == "moe_gemm" and model is not None and s >= 0:
            costs.append(moe_from_model(sigs[int(s)], model))
        elif fam.formula == "none" or s < 0:
            costs.append(OpCost(None, None, reason=fam.reason or "no shapes"))
        else:
            costs.append(op_cost(fam.formula, str(op_name), sigs[int(s)]))
    c_flops = np.array([np.nan if c.flops is None else c.flops for c in costs], float)
    c_bytes = np.array([np.nan if c.bytes is None else c.bytes for c in costs], float)
    c_pp = np.array([c.flops_per_pair for c in costs], float)
    c_kvt = np.array([c.kv_bytes_per_token for c in costs], float)
    c_kvr = np.array([c.kv_read_bytes for c in costs], float)
    c_kvw = np.array([c.kv_write_bytes for c in costs], float)
    flops = c_flops[pair_codes] if len(costs) else np.zeros(0)
    nbytes = c_bytes[pair_codes] if len(costs) else np.zeros(0)
    kv_read = c_kvr[pair_codes] if len(costs) else np.zeros(0)
    # varlen / paged attention: sequence counts of the op's step
    pairs_step, kvtok_step = _step_work(attr.steps if attr.has_steps else None)
    st = inst_df["step"].to_numpy(np.int64)
    var = (c_pp[pair_codes] > 0) if len(costs) else np.zeros(0, bool)
    if var.any():
        ok_step = (st >= 0) & (st < len(pairs_step))
        pw = np.where(ok_step, pairs_step[np.clip(st, 0, max(len(pairs_step) - 1, 0))] if len(pairs_step) else np.nan, np.nan)
        kt = np.where(ok_step, kvtok_step[np.clip(st, 0, max(len(kvtok_step) - 1, 0))] if len(kvtok_step) else np.nan, np.nan)
        flops = np.where(var, c_pp[pair_codes] * pw, flops)
        kv_read = np.where(var, c_kvt[pair_codes] * kt, kv_read)
        nbytes = np.where(var, nbytes + kv_read, nbytes)
        if np.isnan(pw[var]).any():
            missing.append("varlen/paged attention FLOPs and KV bytes: steps without an execute_ "
                           "annotation give no sequence lengths")
    inst_df["family"] = np.array(fams, dtype=object)[pair_codes] if len(costs) else np.zeros(0, object)
    inst_df["flops"] = flops
    inst_df["bytes"] = nbytes
    inst_df["kv_read_bytes"] = kv_read
    inst_df["kv_write_bytes"] = c_kvw[pair_codes] if len(costs) else np.zeros(0)
    inst_df["pair"] = pair_codes

    # ---- groups by (op, shapes) ----
    total_ns = float(k["dur_ns"].sum())
    peak_cache: dict[str, tuple[float | None, str]] = {}
    hbm_tbps = float(gpu.hbm_gbps) / 1000.0 if gpu is not None else None
    groups = []
    # per (op, shapes) group: bincounts over the pair codes (a group's FLOPs are unknown when
    # any of its calls' are)
    npair = len(pairs_u)
    pc = np.asarray(pair_codes, np.int64)

    def _sum(v: np.ndarray) -> np.ndarray:
        return np.bincount(pc, weights=np.nan_to_num(v.astype(float)), minlength=npair)

    unknown_f = np.bincount(pc, weights=np.isnan(flops).astype(float), minlength=npair) > 0
    unknown_b = np.bincount(pc, weights=np.isnan(nbytes).astype(float), minlength=npair) > 0
    _, pfirst = np.unique(pc, return_index=True)
    gdf = pd.DataFrame({
        "pair": np.arange(npair), "count": np.bincount(pc, minlength=npair),
        "kernels": _sum(inst_df["kernels"].to_numpy()).astype(np.int64),
        "time_ns": _sum(inst_df["time_ns"].to_numpy()),
        "flops": np.where(unknown_f, np.nan, _sum(flops)), "bytes": np.where(unknown_b, np.nan, _sum(nbytes)),
        "source": inst_df["source"].to_numpy(object)[pfirst] if npair else np.zeros(0, object),
    })
    for r in gdf.itertuples(index=False):  # one row per distinct (op, shapes): small
        c = costs[int(r.pair)]
        op_name, s = pairs_u[int(r.pair)]
        t_s = r.time_ns * 1e-9
        fl = None if np.isnan(r.flops) else float(r.flops)
        by = None if np.isnan(r.bytes) else float(r.bytes)
        tf = fl / t_s / 1e12 if fl is not None and t_s > 0 else None
        tb = by / t_s / 1e12 if by is not None and t_s > 0 else None
        inten = fl / by if fl is not None and by else None
        if c.dtype not in peak_cache:
            peak_cache[c.dtype] = gpu.peak_tflops(c.dtype) if gpu is not None else (None, "")
        peak, peak_dt = peak_cache[c.dtype]
        mean_us = r.time_ns / 1e3 / max(r.count, 1)
        bound, frac = _bound(tf, tb, inten if fl else None, peak, hbm_tbps, mean_us, th)
        reason = c.reason or None
        if tb is not None and hbm_tbps and tb > th["max_hbm_multiple"] * hbm_tbps and (fl or 0) / max(by or 1, 1) < 50:
            # more than the HBM can move: the op does not read all its inputs (a fused gather)
            bound, frac, reason = None, None, "byte count above the HBM peak: not every input is read in full"
            by = tb = inten = None  # an overstated byte count is not reported
        groups.append({
            "op": str(op_name)[:200], "family": fams[int(r.pair)], "shapes": c.shape, "dtype": c.dtype or None,
            "count": int(r.count), "kernels": int(r.kernels), "time_us": r.time_ns / 1e3,
            "share": r.time_ns / total_ns if total_ns else 0.0,
            "flops": fl, "bytes": by, "tflops": tf, "tbps": tb, "intensity": inten,
            "peak_tflops": peak, "peak_dtype": peak_dt or None, "roof_fraction": frac, "bound": bound,
            "source": r.source, "flops_source": ("model" if c.from_model else "shapes") if fl is not None else None,
            "reason": reason,
        })
    groups.sort(key=lambda g: (-g["time_us"], g["op"], g["shapes"]))
    # ---- kernels without an op ----
    nk = k[k["inst"] < 0].copy()
    nk["why"] = why_none[(k["inst"] < 0).to_numpy()]
    by_kernel = []
    if len(nk):
        kg = nk.groupby(["name", "why"], sort=False, observed=True).agg(
            count=("dur_ns", "size"), time_ns=("dur_ns", "sum")).reset_index()
        kg = kg.sort_values(["time_ns", "name"], ascending=[False, True]).head(MAX_GROUPS)
        by_kernel = [{"kernel": str(r.name)[:200], "count": int(r.count), "time_us": r.time_ns / 1e3,
                      "share": r.time_ns / total_ns if total_ns else 0.0, "reason": r.why,
                      "missing": ["flops", "bytes", "tflops", "tbps", "intensity", "bound"]}
                     for r in kg.itertuples(index=False)]
    linked_ns = float(inst_df["time_ns"].sum())
    counted_ns = float(inst_df.loc[inst_df["flops"].notna() & inst_df["bytes"].notna(), "time_ns"].sum())
    graph_ns = float(k.loc[is_graph, "dur_ns"].sum())
    if graph_ns and capture is None:
        missing.append(f"{graph_ns / total_ns:.0%} of kernel time is graph-replayed without a CPU op: "
                       "FLOPs, bytes, rates and bound of those kernels are missing (pass the graph "
                       "capture trace, --graph-capture)")
    if gpu is None:
        missing.append("no GPU preset: rates are not compared with a peak (bound is missing)")
    if not total_ns:
        missing.append("no GPU kernels on the main device: nothing to put on the roofline")
    shown = groups[:MAX_GROUPS]
    rest = groups[MAX_GROUPS:]
    section = {
        "available": True,
        "reason": None,
        "gpu": gpu.name if gpu is not None else None,
        "hbm_tbps": hbm_tbps,
        "peaks_tflops": ({d: gpu.peak_tflops(d)[0] for d in ("fp4", "fp8", "bf16", "fp16", "tf32", "fp32")}
                         if gpu is not None else {}),
        "kernel_time_us": total_ns / 1e3,
        "linked_share": linked_ns / total_ns if total_ns else 0.0,
        "counted_share": counted_ns / total_ns if total_ns else 0.0,
        "graph_replayed_share": graph_ns / total_ns if total_ns else 0.0,
        "capture": capture.path if capture is not None else None,
        "groups": shown,
        "other_groups": {"groups": len(rest), "time_us": float(sum(g["time_us"] for g in rest))},
        "by_kernel": by_kernel,
        "families": _families(inst_df, total_ns),
        "missing": missing,
        "notes": notes,
    }
    return Roofline(section, inst_df)


def _families(inst: pd.DataFrame, total_ns: float) -> list[dict[str, Any]]:
    if not len(inst):
        return []
    codes, fams = pd.factorize(inst["family"], sort=False)
    n = len(fams)
    t = inst["time_ns"].to_numpy(float)
    fl = inst["flops"].to_numpy(float)
    by = inst["bytes"].to_numpy(float)
    ok = ~np.isnan(fl) & ~np.isnan(by)
    tt = np.bincount(codes, weights=t, minlength=n)
    tc = np.bincount(codes, weights=np.where(ok, t, 0.0), minlength=n)
    fc = np.bincount(codes, weights=np.where(ok, fl, 0.0), minlength=n)
    bc = np.bincount(codes, weights=np.where(ok, by, 0.0), minlength=n)
    out = [{"family": str(fams[j]), "time_us": tt[j] / 1e3, "share": tt[j] / total_ns if total_ns else 0.0,
            "counted_share": tc[j] / tt[j] if tt[j] else 0.0,
            "tflops": fc[j] / (tc[j] * 1e-9) / 1e12 if tc[j] else None,
            "tbps": bc[j] / (tc[j] * 1e-9) / 1e12 if tc[j] else None} for j in range(n)]
    return sorted(out, key=lambda r: -r["time_us"])


# --------------------------------------------------------------------------------------
# serving figures from the op table
# --------------------------------------------------------------------------------------


def serving_figures(rf: Roofline, attr: StepAttribution, gpu: Any = None, llm: bool = True) -> dict[str, Any]:
    """Prefill GEMM / attention TFLOP/s and decode KV bytes read from the op table.

    Only op calls with FLOPs (GEMM, attention) or KV bytes are used; ``*_coverage`` is the
    share of the phase's kernel time of that category (``gemm``, ``attention_prefill``) that
    those op calls cover. ``None`` when the table has none for the phase. ``llm``: decode KV
    figures only for an LLM run (not a diffusion pipeline)."""
    out: dict[str, Any] = {"gemm_tflops": None, "attention_tflops": None, "gemm_coverage": None,
                           "attention_coverage": None, "decode_kv_bytes_read": None,
                           "decode_kv_gbps": None, "decode_fraction_of_hbm": None}
    ops = rf.ops
    if not len(ops) or not attr.has_steps:
        return out
    steps = attr.steps
    phase = steps["attention"].astype(str).to_numpy()
    st = ops["step"].to_numpy(np.int64)
    ph = np.where(st >= 0, phase[np.clip(st, 0, len(phase) - 1)], "")
    fam = ops["family"].to_numpy(object)
    ok = ops["flops"].notna().to_numpy()
    t = ops["time_ns"].to_numpy(float)
    fl = ops["flops"].to_numpy(float)
    act = attr.act
    ast = act["step"].to_numpy(np.int64)
    aph = np.where(ast >= 0, phase[np.clip(ast, 0, len(phase) - 1)], "")
    acat = act["category"].astype(str).to_numpy()
    adur = act["dur_ns"].to_numpy(float)
    for key, family, cat in (("gemm", "gemm", "gemm"), ("attention", "attention", "attention_prefill")):
        good = (ph == "prefill") & (fam == family) & ok
        if good.any() and t[good].sum() > 0:
            out[f"{key}_tflops"] = float(fl[good].sum() / (t[good].sum() * 1e-9) / 1e12)
            denom = float(adur[(aph == "prefill") & (acat == cat)].sum())
            out[f"{key}_coverage"] = min(1.0, float(t[good].sum()) / denom) if denom else None
    dec = (ph == "decode") & (fam == "attention") if llm else np.zeros(len(ops), bool)
    kv = ops["kv_read_bytes"].to_numpy(float)
    if dec.any() and np.isfinite(kv[dec]).any():
        d = ops[dec & np.isfinite(kv) & (kv > 0)]
        if len(d):
            per = d.groupby("step").agg(b=("kv_read_bytes", "sum"))
            att = steps.set_index("step")["attention_decode_us"].reindex(per.index).to_numpy(float)
            gbps = per["b"].to_numpy(float) / (att * 1e3)
            gbps = gbps[np.isfinite(gbps)]
            out["decode_kv_bytes_read"] = float(per["b"].sum())
            if gbps.size:
                out["decode_kv_gbps"] = float(np.median(gbps))
                if gpu is not None:
                    out["decode_fraction_of_hbm"] = out["decode_kv_gbps"] / float(gpu.hbm_gbps)
    return out


def rank_roofline(trace: Any, attr: StepAttribution, shapes: Any, gpu: Any, capture: GraphCapture | None,
                  prefill: dict[str, Any], kv: dict[str, Any], th: Mapping[str, Any],
                  llm: bool = True, model: Any = None) -> dict[str, Any]:
    """The roofline section of one rank; also gives ``prefill`` and ``kv`` (the serving
    sections of that rank, changed in place) their shape-based figures and a ``*_source``
    for each: "shapes" (the recorded shapes), "model" (``--model`` / server_args) or None
    (could not tell). A model-based figure that a shape-based one replaces stays as
    ``*_model``. A shape-based rate that covers less than ``roofline.min_coverage`` of its
    category's prefill kernel time (graph-replayed GEMMs without a capture) gives way to the
    model-based one when there is one."""
    if isinstance(shapes, str):
        rf = unavailable(shapes)
    else:
        rf = analyze_roofline(trace, attr, shapes, gpu=gpu, capture=capture, thresholds=th["roofline"],
                              model=model)
    fig = serving_figures(rf, attr, gpu, llm)
    min_cov = th["roofline"]["min_coverage"]
    why = rf.section["reason"] or "no prefill op of this family has shapes"
    for key in ("gemm", "attention"):
        name = f"{key}_tflops"
        model_val = prefill.get(name)
        prefill[f"{name}_model"] = model_val
        cov = fig[f"{key}_coverage"]
        if fig[name] is not None and (cov is None or cov >= min_cov):
            prefill[name], prefill[f"{name}_source"] = fig[name], "shapes"
            prefill[f"{name}_coverage"] = cov
        else:
            if fig[name] is not None:  # too little of the phase's time has shapes
                prefill[f"{name}_partial"], prefill[f"{name}_coverage"] = fig[name], cov
                why = (f"the recorded shapes cover only {100 * (cov or 0):.0f}% of the prefill "
                       f"{key} kernel time (graph-replayed kernels: pass --graph-capture)")
            prefill[f"{name}_source"] = "model" if model_val is not None else None
            if model_val is None:
                prefill[f"{name}_missing"] = f"no --model / server_args and {why}"
    for k_ in ("bytes_read", "achieved_gbps", "fraction_of_hbm"):
        kv[f"{k_}_model"] = kv.get(k_)
    if fig["decode_kv_bytes_read"] is not None:
        kv["bytes_read"] = fig["decode_kv_bytes_read"]
        kv["achieved_gbps"] = fig["decode_kv_gbps"]
        kv["fraction_of_hbm"] = fig["decode_fraction_of_hbm"]
        if kv["fraction_of_hbm"] is not None:
            kv["memory_bound"] = bool(kv["fraction_of_hbm"] >= th["kv"]["memory_bound_fraction"])
        kv["bytes_read_source"] = "shapes"
    else:
        kv["bytes_read_source"] = "model" if kv.get("bytes_read") is not None else None
    return rf.section


__all__ = ["Roofline", "analyze_roofline", "link_kernels", "rank_roofline", "serving_figures", "unavailable"]
