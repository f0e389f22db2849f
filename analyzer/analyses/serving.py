"""LLM-serving diagnosis over all ranks: phases, prefill, KV traffic, communication roles,
cross-rank skew, gaps, server-metrics contrast, and the ranked findings.

    >>> result = analyze_serving(traceset.traces, timelines_by_rank)   # doctest: +SKIP
    >>> result.findings[0].id                                           # doctest: +SKIP
    'kv_cache_bandwidth'

Every section is JSON-able and goes into ``report["serving"]``; per-rank figures are in
``sections["ranks"]`` and their min/median/max over ranks in ``sections["summary"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyzer.analyses.bubbles import pipeline_context
from analyzer.analyses.clock import align_clocks
from analyzer.analyses.comm_roles import (
    ROLES,
    comm_roles,
    cross_rank,
    exposed_wait_us,
    rank_communication,
)
from analyzer.analyses.copies import copies_by_kind
from analyzer.analyses.context import RunContext, build_context, sizes_for_roles
from analyzer.analyses.gaps import CAUSES, analyze_gaps
from analyzer.analyses.kv_traffic import analyze_kv, resolve_gpu, resolve_model
from analyzer.analyses.phases import (
    NS_PER_US,
    StepAttribution,
    attribute_steps,
    grouped_union_ns,
    phase_summary,
    step_rows,
)
from analyzer.analyses.prefill import analyze_prefill
from analyzer.analyses.roofline import rank_roofline
from analyzer.analyses.tables import duration_groups
from analyzer.findings import load_thresholds
from analyzer.findings.detectors import detect
from analyzer.model import CATEGORIES, BadInputError, Finding, Trace

SUMMARY_KEYS_SKIP = ("rank", "device")


@dataclass(frozen=True)
class ServingAnalysis:
    """What the serving diagnosis adds to a report (see module doc)."""

    sections: dict[str, Any]
    calibration: dict[str, Any]
    findings: list[Finding]
    abstained: list[str]
    context: RunContext | None = None


def _rank_figures(trace: Trace, attr: StepAttribution, gaps: dict[str, Any], comm: dict[str, Any],
                  wait: dict[str, float]) -> dict[str, Any]:
    """Flat per-rank figures used by the summary and the detectors."""
    act = attr.act
    s = act["ts_ns"].to_numpy(np.int64)
    e = act["end_ns"].to_numpy(np.int64)
    codes = act["category"].cat.codes.to_numpy(np.int64)
    per = grouped_union_ns(codes, s, e, len(CATEGORIES))
    # wall = capture - edge = busy + idle (analyses/gaps.py: capture edges are cut)
    f: dict[str, Any] = {"rank": trace.rank.rank, "device": attr.device,
                         "wall_us": gaps["wall_us"], "busy_us": gaps["busy_us"],
                         "idle_us": gaps["idle_us"], "edge_us": gaps["edge_us"],
                         "capture_us": gaps["capture_us"]}
    for j, c in enumerate(CATEGORIES):
        f[f"cat_{c}_us"] = per[j] / NS_PER_US
    f["steps"] = len(attr.steps) if attr.has_steps else 0
    f["between_steps_idle_us"] = gaps["between_steps_us"]
    f["inside_steps_idle_us"] = gaps["inside_steps_us"]
    f["outside_steps_idle_us"] = gaps["outside_steps_us"]
    f["idle_covered_by_scheduler_us"] = gaps["idle_covered_by_scheduler_us"]
    for c in CAUSES:
        f[f"gap_{c}_us"] = gaps["by_cause_us"][c]
        f[f"between_{c}_us"] = gaps["between_steps_by_cause_us"][c]
        f[f"inside_{c}_us"] = gaps["inside_steps_by_cause_us"][c]
        f[f"outside_{c}_us"] = gaps["outside_steps_by_cause_us"][c]
    for role in ROLES:
        r = comm["by_role"].get(role, {})
        f[f"{role.lower()}_time_us"] = r.get("time_us", 0.0)
        f[f"{role.lower()}_exposed_us"] = r.get("exposed_us", 0.0)
    f["wait_us"] = wait.get("wait_us", 0.0)
    f["transfer_us"] = wait.get("transfer_us", 0.0)
    f["wait_exposed_us"] = wait.get("wait_exposed_us", 0.0)
    f["tp_wait_exposed_us"] = wait.get("wait_exposed_us", 0.0)
    return f


def summarize_ranks(figs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """min / median / max (and the ranks holding min and max) of every numeric figure."""
    out: dict[str, dict[str, Any]] = {}
    if not figs:
        return out
    ranks = [f["rank"] for f in figs]
    for key in figs[0]:
        if key in SUMMARY_KEYS_SKIP:
            continue
        vals = np.array([float(f.get(key) or 0.0) for f in figs])
        out[key] = {"min": float(vals.min()), "median": float(np.median(vals)), "max": float(vals.max()),
                    "min_rank": ranks[int(vals.argmin())], "max_rank": ranks[int(vals.argmax())]}
    return out


def _top_kernels_by_category(attrs: Sequence[StepAttribution], n: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Top kernels (summed duration over the given ranks) per phase-aware category.

    Each rank's kernels are grouped once by (name, category) codes; the small per-rank tables
    are then merged by name (categories in order of first appearance over the ranks).
    """
    import pandas as pd

    parts, offset = [], 0
    for a in attrs:
        if len(a.act):
            g = duration_groups(a.act, ("category", "name"))
            g["first"] += offset
            parts.append(g)
            offset += len(a.act)
    if not parts:
        return {}
    df = pd.concat(parts, ignore_index=True).sort_values("first", kind="stable")
    g = df.groupby(["category", "name"], sort=False).agg(sum=("sum", "sum"), count=("count", "sum")).reset_index()
    out: dict[str, list[dict[str, Any]]] = {}
    for cat, sub in g.groupby("category", sort=False):
        sub = sub.sort_values(["sum", "name"], ascending=[False, True]).head(n)
        out[str(cat)] = [{"name": r["name"][:200], "time_us": float(r["sum"]) / NS_PER_US,
                          "count": int(r["count"])} for _, r in sub.iterrows()]
    return out


def _metrics_section(metrics: Any, figs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Contrast the server's queue with where the GPU time goes."""
    if metrics is None:
        return None
    th = load_thresholds()["metrics"]

    def hist_mean(h: Any) -> float | None:
        return None if h is None else getattr(h, "mean", None)

    q = getattr(metrics, "num_queue_reqs", None)
    run = getattr(metrics, "num_running_reqs", None)
    qt = hist_mean(getattr(metrics, "queue_time_s", None))
    wall = float(np.median([f["wall_us"] for f in figs])) if figs else 0.0
    idle = float(np.median([f["idle_us"] for f in figs])) if figs else 0.0
    idle_share = idle / wall if wall else 0.0
    if q is None:
        verdict = "the metrics carry no num_queue_reqs: cannot contrast the queue with the GPU"
    elif q <= th["queue_empty_reqs"]:
        verdict = (f"nothing is queued (num_queue_reqs={q:g}, running={run}); the GPU is idle "
                   f"{100 * idle_share:.0f}% of the wall time and busy with the causes ranked in "
                   "the findings: the latency comes from the step time, not from waiting")
    else:
        verdict = (f"{q:g} requests wait in the queue (mean queue time {qt if qt is not None else 'n/a'} s) "
                   f"while the GPU is idle {100 * idle_share:.0f}% of the wall time: admission/"
                   "scheduling or KV-pool limits hold requests back")
    return {"num_queue_reqs": q, "num_running_reqs": run, "queue_time_mean_s": qt,
            "ttft_mean_s": hist_mean(getattr(metrics, "ttft_s", None)),
            "token_usage": getattr(metrics, "token_usage", None),
            "gpu_idle_share": idle_share, "verdict": verdict}


def _planner_concurrency(model: Any, gpu: Any, sizes: Mapping[str, int],
                         steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Concurrency per replica from the capacity planner, for the context seen in the trace.

    The context per request is the median over steps of KV tokens per request (decode steps
    with ``execute_`` annotations), else the median prompt tokens per request (EXTEND steps),
    else 8192 tokens (stated in the result).
    """
    from analyzer.capacity import Parallelism, Workload, plan

    per_req = [float(r["kv_tokens"]) / float(r["bs"]) for r in steps
               if r.get("phase") == "decode" and r.get("kv_tokens") and r.get("bs")]
    source = "decode KV tokens per request in the trace"
    if not per_req:
        per_req = [float(r["tokens"]) / float(r["bs"]) for r in steps
                   if r.get("phase") == "prefill" and r.get("tokens") and r.get("bs")]
        source = "prompt tokens per request in the trace"
    context = int(np.median(per_req)) if per_req else 8192
    if not per_req:
        source = "assumed (no token counts in the trace)"
    try:
        res = plan(model, gpu, Parallelism(tp=sizes.get("tp", 1) or 1, pp=sizes.get("pp", 1) or 1),
                   Workload(context_tokens=max(context, 1)))
    except BadInputError:  # the planner refuses shapes it cannot fit (e.g. weights > memory)
        return {}
    rec = res.to_dict()["recommended_concurrency"]
    return {"concurrency_per_replica": rec["stable"], "concurrency_upper": rec["upper"],
            "max_concurrency_memory": res.to_dict()["max_concurrency_memory"],
            "context_tokens": context, "context_source": source}


def analyze_serving(
    traces: list[Trace],
    timelines: Mapping[int, Any] | None = None,
    *,
    server_args: Mapping[str, Any] | None = None,
    model: str | None = None,
    gpu: str | None = None,
    metrics: Any = None,
    attributions: Sequence[StepAttribution] | None = None,
    clues: Sequence[Mapping[str, int]] | None = None,
    include_edges: bool = False,
    op_shapes: Sequence[Any] | None = None,
    graph_capture: Any = None,
) -> ServingAnalysis:
    """Serving diagnosis of classified traces (one per rank).

    ``attributions``: ``attribute_steps`` of each trace (same order as ``traces``) when the
    caller already has them, so the steps are not found and attributed twice.
    ``clues``: ``analyses.context.trace_clues`` of each trace, taken before the python frames
    were pruned (same order as ``traces``); without them the context comes from what is left.
    ``include_edges``: keep the capture edges in the idle time (``analyses/gaps.py``).
    ``op_shapes``: per trace (same order), its ``OpShapes`` list or the reason it has none
    (``analyses/roofline_inputs.py``); ``graph_capture``: a ``GraphCapture`` or None.
    """
    th = load_thresholds()
    abstained: list[str] = []
    if attributions is None:
        attributions = [attribute_steps(t) for t in traces]
    if len(attributions) != len(traces):
        raise ValueError("attributions must have one entry per trace")
    if clues is None:
        from analyzer.analyses.context import trace_clues

        clues = [trace_clues(t) for t in traces]
    shapes_in = list(op_shapes) if op_shapes is not None else ["no shapes were read"] * len(traces)
    pairs3 = sorted(zip(traces, attributions, shapes_in), key=lambda p: p[0].rank.rank)
    traces = [t for t, _, _ in pairs3]
    attrs = [a for _, a, _ in pairs3]
    shapes_by = [s for _, _, s in pairs3]
    model_spec, why_model = resolve_model(model, server_args)
    gpu_spec, why_gpu = resolve_gpu(gpu, traces[0].gpu if traces else None)
    run = build_context(traces, clues, server_args, gpu_spec=gpu_spec, gpu_why=why_gpu)
    sizes = sizes_for_roles(run)
    has_shapes = any(not isinstance(s, str) for s in shapes_by)
    if model_spec is None and run.workload in ("serving", "generate") and run.domain != "diffusion":
        abstained.append(f"could not tell KV bytes or attention FLOPs because {why_model}"
                         + (" (figures that the recorded shapes give are used)" if has_shapes else ""))
    if gpu_spec is None:
        abstained.append(f"could not compare with the GPU's peak because {why_gpu}")
    tp_kv = sizes["tp"] or 1  # KV bytes per GPU: an unknown TP is said in "abstained"
    if not sizes["tp"]:
        abstained.append("could not tell the TP size (collectives present, no group size in the "
                         "trace or server_args): per-GPU KV and FLOP figures assume TP=1")

    clock = align_clocks(traces, [a.act for a in attrs])  # ranks' clocks -> the reference rank's
    xr = cross_rank(traces, attrs, clock=clock) if len(traces) > 1 else {"instances": 0, "ranks": {}}
    xr["alignment"] = clock.to_dict()
    pipe = pipeline_context(traces, attrs, sizes, clock)  # None unless PP > 1
    waits = xr.pop("_wait_intervals", None)
    figs, ph_ranks, gap_ranks, comm_ranks, kv_ranks, pf_ranks, rf_ranks = [], [], [], [], [], [], []
    for t, a, shp in zip(traces, attrs, shapes_by):
        r = t.rank.rank
        gp = analyze_gaps(t.events, a, pp_size=sizes["pp"] or 1, server_args=server_args,
                          include_edges=include_edges,
                          pipeline=pipe.judge(r) if pipe is not None else None)
        cm = rank_communication(a, sizes, run.workload)
        w = {}
        if waits is not None and r in xr.get("ranks", {}):
            w = dict(xr["ranks"][r])
            w["wait_exposed_us"] = exposed_wait_us(a, waits, r)
        f = _rank_figures(t, a, gp, cm, w)
        figs.append(f)
        ph = phase_summary(a, f["wall_us"])
        ph_ranks.append({"rank": r, **ph})
        gap_ranks.append({"rank": r, **gp})
        comm_ranks.append({"rank": r, **cm})
        kv_ranks.append({"rank": r, **analyze_kv(a, model=model_spec, gpu=gpu_spec, tp=tp_kv,
                                                   pp=sizes["pp"] or 1, server_args=server_args,
                                                   memory_bound_fraction=th["kv"]["memory_bound_fraction"],
                                                   missing=[] if model_spec else [str(why_model)])})
        pf_ranks.append({"rank": r, **analyze_prefill(a, model=model_spec, tp=tp_kv, pp=sizes["pp"] or 1,
                                                      quadratic_gain=th["prefill"]["quadratic_gain"],
                                                      quadratic_share=th["prefill"]["quadratic_share"])})
        rf_ranks.append({"rank": r, **rank_roofline(t, a, shp, gpu_spec, graph_capture, pf_ranks[-1],
                                                    kv_ranks[-1], th, llm=run.domain != "diffusion",
                                                    model=model_spec)})
        if not a.has_steps:
            abstained.append(f"rank {r}: could not tell phases because the trace has no step "
                             "annotations (step[..], execute_.., forward frames)")

    rep = _representative(figs)
    straggler = _name_straggler(xr, figs, th)
    xr["straggler_rank"] = straggler
    if straggler is not None:
        xr["straggler_slower_categories"] = _slower_categories(figs, straggler)
    elif len(traces) > 1 and not xr.get("instances"):
        abstained.append("could not tell cross-rank skew because no collective is aligned on >= 2 ranks")
    sections: dict[str, Any] = {
        "phases": {"ranks": ph_ranks, "summary": ph_ranks[rep] if ph_ranks else {}},
        "prefill": {"ranks": pf_ranks, "summary": pf_ranks[rep] if pf_ranks else {}},
        "kv_cache": {"ranks": kv_ranks, "summary": kv_ranks[rep] if kv_ranks else {}},
        "roofline": {"ranks": rf_ranks, "summary": rf_ranks[rep] if rf_ranks else {}},
        "communication": {"sizes": sizes, "ranks": comm_ranks,
                          "summary": comm_ranks[rep] if comm_ranks else {}},
        "skew": _jsonable(xr),
        "gaps": {"ranks": gap_ranks, "summary": _gap_summary(gap_ranks, rep)},
        "bubbles": pipe.section() if pipe is not None else {"enabled": False, "pp": sizes["pp"]},
        "metrics": _metrics_section(metrics, figs),
        "ranks": figs,
        "summary": summarize_ranks(figs),
        "representative_rank": figs[rep]["rank"] if figs else None,
        "top_kernels": _top_kernels_by_category(attrs[rep:rep + 1]) if attrs else {},
        "top_kernels_basis": f"rank {figs[rep]['rank']}" if figs else None,
        "copies": copies_by_kind(attrs[rep].act) if attrs else {"groups": []},
        "example_steps": step_rows(attrs[rep], 50) if attrs else [],
    }
    if metrics is None:
        abstained.append("could not contrast the server queue with GPU time because no --metrics was given")
    planner = (_planner_concurrency(model_spec, gpu_spec, sizes, sections["example_steps"])
               if model_spec and gpu_spec else {})
    findings = detect(figs, sections, server_args, planner, run)
    calibration = _calibration(sections, attrs, rep, gpu_spec, traces)
    return ServingAnalysis(sections, calibration, findings, abstained, run)


def _name_straggler(xr: Mapping[str, Any], figs: Sequence[Mapping[str, Any]], th: Mapping[str, Any]) -> int | None:
    """The last-arriving rank, named only when it is clearly and materially the straggler."""
    lead = xr.get("last_arrival_leader")
    if lead is None or not figs:
        return None
    wall = float(np.median([f["wall_us"] for f in figs]))
    wait = float(np.median([f.get("wait_exposed_us") or 0.0 for f in figs]))
    share = xr.get("straggler_last_share") or 0.0
    skew = (xr.get("skew_us") or {}).get("p50") or 0.0
    ok = (share >= th["skew"]["straggler_last_share"] and skew >= th["skew"]["min_skew_us"]
          and wall > 0 and wait / wall >= th["min_share"])
    return int(lead) if ok else None


def _representative(figs: Sequence[Mapping[str, Any]]) -> int:
    """Index of the most typical rank: the smallest total deviation from the per-figure medians
    (wall, busy, idle, every category, exposed wait), in units of the median wall time; the
    lowest rank on ties. A straggler or an idle stage is never the representative of a job
    whose other ranks agree (docs/methodology.md, "Representative rank")."""
    if not figs:
        return 0
    keys = ["wall_us", "busy_us", "idle_us", "wait_exposed_us"] + [f"cat_{c}_us" for c in CATEGORIES]
    m = np.array([[float(f.get(k) or 0.0) for k in keys] for f in figs])
    scale = max(float(np.median(m[:, 0])), 1e-9)
    dev = np.abs(m - np.median(m, axis=0)).sum(axis=1) / scale
    ranks = np.array([int(f["rank"]) for f in figs])
    order = np.lexsort((ranks, np.round(dev, 9)))
    return int(order[0])


def _slower_categories(figs: Sequence[Mapping[str, Any]], straggler: int) -> list[dict[str, Any]]:
    """Categories where the straggler spends more time than the median other rank."""
    me = next((f for f in figs if f["rank"] == straggler), None)
    others = [f for f in figs if f["rank"] != straggler]
    if me is None or not others:
        return []
    rows = []
    for c in CATEGORIES:
        if c == "communication":
            continue
        mine = me[f"cat_{c}_us"]
        typical = float(np.median([o[f"cat_{c}_us"] for o in others]))
        if mine - typical > 0:
            rows.append({"category": c, "straggler_us": mine, "median_other_us": typical,
                         "extra_us": mine - typical})
    return sorted(rows, key=lambda r: -r["extra_us"])[:3]


def _gap_summary(gap_ranks: Sequence[Mapping[str, Any]], rep: int) -> dict[str, Any]:
    if not gap_ranks:
        return {}
    g = gap_ranks[rep]
    return {"rank": g["rank"], "idle_us": g["idle_us"], "edge_us": g["edge_us"], "edge": g["edge"],
            "between_steps_us": g["between_steps_us"],
            "inside_steps_us": g["inside_steps_us"], "outside_steps_us": g["outside_steps_us"],
            "by_cause_us": g["by_cause_us"],
            "overlap_scheduler": g["scheduler"]["overlap_scheduler"],
            "scheduler": g["scheduler"]}


def _calibration(sections: Mapping[str, Any], attrs: Sequence[StepAttribution], rep: int,
                 gpu_spec: Any, traces: Sequence[Trace]) -> dict[str, Any]:
    pf = sections["prefill"]["summary"] or {}
    kv = sections["kv_cache"]["summary"] or {}
    skew = sections["skew"] or {}
    dec_us = dec_bs = None
    if attrs and attrs[rep].has_steps:
        st = attrs[rep].steps
        d = st[(st["phase"].astype(str) == "decode") & (st["kernels"] > 0)]
        if len(d):
            dec_us = float(np.median(d["gpu_span_us"]))
            b = d["bs"].dropna()
            dec_bs = float(np.median(b)) if len(b) else None
    gpu_name = traces[rep].gpu.name if traces and traces[rep].gpu else (gpu_spec.name if gpu_spec else None)
    return {
        "gpu_name": gpu_name,
        "gpu_preset": gpu_spec.name if gpu_spec is not None else None,
        "prefill_attention_tflops": pf.get("attention_tflops"),
        "gemm_tflops": pf.get("gemm_tflops"),
        "decode_step_us": dec_us,
        "decode_batch_size": dec_bs,
        "hbm_gbps": kv.get("achieved_gbps"),
        "allreduce_gbps": skew.get("allreduce_busbw_gbps"),
        "allreduce_us_per_mb": skew.get("allreduce_us_per_mb"),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k) if not isinstance(k, (str, int)) else k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


__all__ = ["ServingAnalysis", "analyze_serving", "comm_roles", "summarize_ranks"]
