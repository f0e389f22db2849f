"""Serving detectors: per-rank figures -> ``Finding`` objects (compute, judge, format apart).

Each detector reads the flat per-rank figures built by ``analyzer.analyses.serving`` (one
dict per rank, keys such as ``cat_gemm_us`` or ``between_scheduler_us``) and the section
dicts. **One basis per finding**: every figure a finding lists (its time, the wall it is a
share of, its top kernels and example steps) is of the *representative rank*, the rank
whose wall time is the median (``sections["representative_rank"]``); cross-rank figures
(skew, straggler, bubbles by rank) say so in their key. ``time_us`` is the cost on the wall
timeline (docs/methodology.md, "Ranking"):

- idle causes (batching gaps, launch/sync gaps, PP bubbles, waiting inside a collective for
  a straggler) count all of their time: it is waste that can be won back;
- busy causes (attention, GEMM, MoE, memcpy, exposed communication transfer) count the time
  they occupy on the wall timeline; their distance from the roofline, when it can be
  computed, is evidence that shapes the recommendation, not the rank.

Recommendations are data (``advice.toml``, chosen by ``advice.recommend`` for the run's
engine, workload and the facts below); titles say what the trace is (a training trace's
attention is not "prefill").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from analyzer.findings import load_thresholds, rank_findings, severity_for
from analyzer.findings.advice import recommend
from analyzer.model import Finding

Figures = Sequence[Mapping[str, Any]]


def med(figs: Figures, key: str) -> float:
    """Median over ranks of ``key`` (missing -> 0)."""
    vals = [float(f.get(key) or 0.0) for f in figs]
    return float(np.median(vals)) if vals else 0.0


def _fmt_us(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


class Context:
    """What the detectors may read: figures per rank, sections, server args, run context."""

    def __init__(self, figs: Figures, sections: Mapping[str, Any], server_args: Mapping[str, Any] | None,
                 planner: Mapping[str, Any] | None = None, run: Any = None) -> None:
        self.figs = figs
        self.sections = sections
        self.sa = server_args or {}
        self.th = load_thresholds()
        self.planner = planner or {}
        self.run = run
        rep_rank = sections.get("representative_rank")
        self.rep = next((f for f in figs if f.get("rank") == rep_rank), None) if rep_rank is not None else None
        if self.rep is None and figs:
            walls = np.array([float(f.get("wall_us") or 0) for f in figs])
            self.rep = figs[int(np.argsort(walls, kind="stable")[(len(walls) - 1) // 2])]
        self.rep = self.rep or {}
        self.wall_us = self.v("wall_us")
        self.engine = getattr(run, "engine", None) or _engine_from_args(self.sa)
        self.workload = getattr(run, "workload", None) or ("serving" if self.engine in ("sglang", "vllm") else "unknown")
        self.facts = _facts(self)

    def v(self, key: str) -> float:
        """The representative rank's value of ``key`` (missing -> 0)."""
        return float(self.rep.get(key) or 0.0)

    @property
    def basis(self) -> str:
        r = self.rep.get("rank")
        return f"rank {r} (median wall time of {len(self.figs)})" if len(self.figs) > 1 else f"rank {r}"

    def make(self, fid: str, title: str, time_us: float, evidence: dict[str, Any], values: Mapping[str, Any]
             ) -> Finding | None:
        share = time_us / self.wall_us if self.wall_us > 0 else 0.0
        if time_us <= 0 or share < self.th["min_share"]:
            return None
        rec = recommend(fid, self.engine, self.workload, self.facts, values)
        if self.workload == "training" and self.engine in ("sglang", "vllm", "trtllm"):
            rec = "Training trace: no serving flags apply. " + rec
        evidence = {"representative": self.basis, "wall_us": self.wall_us, **evidence}
        return Finding(fid, title, severity_for(share, self.th), share, time_us, evidence, rec)


def _engine_from_args(sa: Mapping[str, Any]) -> str:
    from analyzer.analyses.context import _SGLANG_KEYS, _VLLM_KEYS

    if any(k in sa for k in _SGLANG_KEYS):
        return "sglang"
    if any(k in sa for k in _VLLM_KEYS):
        return "vllm"
    return "unknown"


def _facts(ctx: Context) -> dict[str, bool]:
    run, sa, th = ctx.run, ctx.sa, ctx.th["context"]
    gpu = getattr(run, "gpu", None) or {}
    cc = str(gpu.get("compute_capability") or "")
    try:
        major, minor = (int(x) for x in cc.split(".")[:2])
    except ValueError:
        major = minor = 0
    vendor = gpu.get("vendor")
    fp8_gpu = (vendor == "nvidia" and (major, minor) >= (8, 9)) or (vendor == "amd" and (major, minor) >= (9, 4))
    if not cc and gpu.get("preset"):
        fp8_gpu = bool(re.search(r"(?i)h100|h200|h800|h20|b200|mi300|mi325|mi355", str(gpu.get("preset"))))
    copies = memory_shares(ctx)
    kv = ctx.sections.get("kv_cache", {}).get("summary", {}) or {}
    sched = ctx.sections.get("gaps", {}).get("summary", {}).get("overlap_scheduler")
    q = (ctx.sections.get("metrics") or {}).get("num_queue_reqs")
    kv_dtype = str(sa.get("kv_cache_dtype", "auto"))
    return {
        "serving": ctx.workload == "serving",
        "training": ctx.workload == "training",
        "diffusion": getattr(run, "domain", None) == "diffusion",
        "cuda_graph_disabled": bool(sa.get("disable_cuda_graph", False) or sa.get("enforce_eager", False)),
        "gemm_low_precision": bool(run is not None and run.low_precision_share(("gemm",)) >= th["low_precision_share"]),
        "gemm_full_precision": bool(run is not None and run.full_precision_share(("gemm",)) >= th["full_precision_share"]),
        "fp8_gpu": bool(fp8_gpu),
        "overlap_on": sched is True,
        "queue_empty": q is not None and q <= ctx.th["metrics"]["queue_empty_reqs"],
        "copies_pageable": copies["pageable"] >= th["copy_kind_share"],
        "copies_pinned": copies["pinned"] >= th["copy_kind_share"],
        "copies_d2d": copies["device"] >= th["copy_kind_share"],
        "custom_ar_disabled": bool(sa.get("disable_custom_all_reduce", False)),
        "kv_fp8": "fp8" in kv_dtype.lower(),
        "kv_far_from_roofline": kv.get("memory_bound") is False,
        "kv_at_roofline": kv.get("memory_bound") is True,
        "has_planner": bool(ctx.planner.get("concurrency_per_replica")),
        "quadratic": (ctx.sections.get("prefill", {}).get("summary", {}) or {}).get("growth") == "quadratic",
    }


def memory_shares(ctx: Context) -> dict[str, float]:
    from analyzer.analyses.copies import memory_kind_shares

    return memory_kind_shares(ctx.sections.get("copies") or {})


def _top_kernels(ctx: Context, category: str, n: int = 3) -> list[dict[str, Any]]:
    return list(ctx.sections.get("top_kernels", {}).get(category, []))[:n]


def _example_steps(ctx: Context, key: str, n: int = 3) -> list[dict[str, Any]]:
    rows = [r for r in ctx.sections.get("example_steps", []) if (r.get(key) or 0) > 0]
    return sorted(rows, key=lambda r: -(r.get(key) or 0))[:n]


def _size_text(ctx: Context, key: str) -> str:
    p = getattr(ctx.run, "parallel", {}).get(key) if ctx.run is not None else None
    if p is None:
        v = (ctx.sections.get("communication", {}).get("sizes", {}) or {}).get(key)
        return f"{key.upper()}={v}" if v else f"{key.upper()} size unknown"
    return f"{key.upper()}={p.value}" if p.value else f"{key.upper()} size unknown"


def prefill_attention(ctx: Context) -> Finding | None:
    t = ctx.v("cat_attention_prefill_us")
    pf = ctx.sections.get("prefill", {}).get("summary", {}) or {}
    growth = pf.get("growth", "unknown")
    chunk = ctx.sa.get("chunked_prefill_size")
    serving_llm = ctx.workload in ("serving", "generate") and not ctx.facts["diffusion"]
    dominates = t / ctx.wall_us >= ctx.th["prefill"]["dominates_share"] if ctx.wall_us else False
    if ctx.workload == "training":
        title = "Attention compute (forward and backward)"
    elif not serving_llm:
        title = "Attention compute"
    else:
        title = "Prefill attention dominates: long-context prefill" if dominates and growth == "quadratic" \
            else "Prefill attention time"
    growth_text = ""
    if serving_llm:
        growth_text = (f"Prefill attention grows {growth}ly with the prompt length ({pf.get('growth_reason')})."
                       if growth in ("linear", "quadratic") else
                       f"How prefill attention grows with the prompt length is unknown ({pf.get('growth_reason') or 'no fit'}).")
    ev = {"attention_prefill_us": t, "growth": growth, "growth_reason": pf.get("growth_reason"),
          "fit": pf.get("fit") if growth != "unknown" else None,
          "attention_tflops": pf.get("attention_tflops"), "chunked_prefill_size": chunk,
          "top_kernels": _top_kernels(ctx, "attention_prefill"),
          "example_steps": _example_steps(ctx, "attention_prefill_us")}
    vals = {"growth_text": growth_text, "chunk_now": f"now {chunk}" if chunk not in (None, -1) else "now unset/disabled"}
    return ctx.make("prefill_attention", title, t, ev, vals)


def kv_cache_bandwidth(ctx: Context) -> Finding | None:
    att = ctx.v("cat_attention_decode_us")
    wr = ctx.v("cat_kv_cache_us")
    kv = ctx.sections.get("kv_cache", {}).get("summary", {}) or {}
    frac = kv.get("fraction_of_hbm")
    state = (" and runs at %.0f%% of the HBM peak: memory-bound" % (100 * frac)) if frac is not None else \
        "; its bandwidth could not be computed (" + "; ".join(kv.get("missing") or ["no model/GPU"]) + ")"
    planner = (_planner_advice(ctx.planner) if ctx.planner.get("concurrency_per_replica")
               else "size concurrency per replica with `trace-analyzer plan`.")
    ev = {"attention_decode_us": att, "kv_cache_write_us": wr, "achieved_gbps": kv.get("achieved_gbps"),
          "hbm_gbps": kv.get("hbm_gbps"), "fraction_of_hbm": frac, "memory_bound": kv.get("memory_bound"),
          "bytes_read": kv.get("bytes_read"), "kv_bytes_per_token": kv.get("kv_bytes_per_token"),
          "top_kernels": _top_kernels(ctx, "attention_decode"),
          "example_steps": _example_steps(ctx, "attention_decode_us")}
    vals = {"kv_state": state, "kv_dtype": str(ctx.sa.get("kv_cache_dtype", "auto")), "planner": planner}
    return ctx.make("kv_cache_bandwidth", "Decode is bound by KV-cache reads (decode attention)",
                    att + wr, ev, vals)


def _bw_text(ctx: Context) -> str:
    bw = ctx.sections.get("skew", {}).get("allreduce_busbw_gbps")
    return f" (measured all-reduce bus bandwidth {bw:.0f} GB/s)" if bw else ""


def _role_collectives(ctx: Context, role: str) -> dict[str, Any]:
    by = (ctx.sections.get("communication", {}).get("summary", {}) or {}).get("by_role_collective") or {}
    return {k: v for k, v in by.items() if k.split("/")[0] == role}


def tp_communication(ctx: Context) -> Finding | None:
    t = max(ctx.v("tp_exposed_us") - ctx.v("tp_wait_exposed_us"), 0.0)
    ev = {"tp_exposed_transfer_us": t, "tp_exposed_us": ctx.v("tp_exposed_us"),
          "tp_time_us": ctx.v("tp_time_us"), "by_collective": _role_collectives(ctx, "TP"),
          "allreduce_busbw_gbps": ctx.sections.get("skew", {}).get("allreduce_busbw_gbps")}
    vals = {"tp_text": _size_text(ctx, "tp"), "bw_text": _bw_text(ctx),
            "custom_ar_text": " (remove --disable-custom-all-reduce)" if ctx.facts["custom_ar_disabled"] else ""}
    return ctx.make("tp_communication", "Exposed tensor-parallel communication", t, ev, vals)


def dp_communication(ctx: Context) -> Finding | None:
    t = ctx.v("dp_exposed_us")
    title = ("Exposed data-parallel gradient communication" if ctx.workload == "training"
             else "Exposed data-parallel communication")
    ev = {"dp_exposed_us": t, "dp_time_us": ctx.v("dp_time_us"), "by_collective": _role_collectives(ctx, "DP")}
    return ctx.make("dp_communication", title, t, ev, {"dp_text": _size_text(ctx, "dp"), "bw_text": _bw_text(ctx)})


def other_communication(ctx: Context) -> Finding | None:
    p2p, other = ctx.v("p2p_exposed_us"), ctx.v("other_exposed_us")
    t = p2p + other
    what = ("Point-to-point send/recv" if p2p >= other else "Communication no parallel role explains")
    ev = {"p2p_exposed_us": p2p, "p2p_time_us": ctx.v("p2p_time_us"), "unattributed_exposed_us": other,
          "unattributed_time_us": ctx.v("other_time_us"),
          "by_collective": {**_role_collectives(ctx, "P2P"), **_role_collectives(ctx, "OTHER")}}
    title = "Exposed point-to-point communication" if p2p >= other else "Exposed unattributed communication"
    return ctx.make("other_communication", title, t, ev, {"other_text": what})


def pp_communication(ctx: Context) -> Finding | None:
    t = ctx.v("pp_exposed_us")
    return ctx.make("pp_communication", "Exposed pipeline-parallel send/recv", t,
                    {"pp_exposed_us": t, "pp_time_us": ctx.v("pp_time_us")}, {})


def ep_communication(ctx: Context) -> Finding | None:
    t = ctx.v("ep_exposed_us")
    return ctx.make("ep_communication", "Exposed expert-parallel all-to-all", t,
                    {"ep_exposed_us": t, "ep_time_us": ctx.v("ep_time_us"),
                     "by_collective": _role_collectives(ctx, "EP")}, {})


def pipeline_bubbles(ctx: Context) -> Finding | None:
    t = ctx.v("gap_pp_bubble_us")
    per_rank = {int(f["rank"]): f.get("gap_pp_bubble_us") for f in ctx.figs}
    ev: dict[str, Any] = {"bubble_us": t, "bubble_us_by_rank (all ranks)": per_rank, **_bubble_evidence(ctx)}
    return ctx.make("pipeline_bubbles", "Pipeline bubbles (stages idle waiting for activations)", t,
                    ev, {"pp": _size_text(ctx, "pp").split("=")[-1]})


def _bubble_evidence(ctx: Context) -> dict[str, Any]:
    """Cross-stage figures of ``analyses.bubbles`` (by stage, by schedule part, fractions)."""
    b = ctx.sections.get("bubbles") or {}
    if not b.get("enabled"):
        return {}
    return {"measured_fraction": b.get("measured_fraction"), "expected_fraction": b.get("expected_fraction"),
            "micro_batches": b.get("micro_batches"), "bubble_us_by_part": b.get("by_part_us"),
            "bubble_us_by_stage": {k: v.get("bubble_us") for k, v in (b.get("by_stage") or {}).items()},
            "clock_aligned": b.get("clock_aligned")}


def cross_rank_skew(ctx: Context) -> Finding | None:
    skew = ctx.sections.get("skew", {})
    if not skew or not skew.get("instances"):
        return None
    t = ctx.v("wait_exposed_us")
    s = skew.get("straggler_rank")
    share = skew.get("straggler_last_share") or 0.0
    named = s is not None  # named by analyses.serving with the [skew] thresholds
    title = f"Cross-rank skew: rank {s} is the straggler" if named else "Cross-rank skew in collectives"
    slower = skew.get("straggler_slower_categories") if named else None
    skew_text = (f"Rank {s} arrives last at {100 * share:.0f}% of the collectives; the other ranks wait for it."
                 if named else "Ranks reach the collectives at different times.")
    ev = {"straggler_rank": s if named else None, "straggler_last_share": share,
          "wait_exposed_us": t, "skew_us (across ranks)": skew.get("skew_us"), "instances": skew.get("instances"),
          "wait_us_by_rank (all ranks)": {r: v.get("wait_us") for r, v in (skew.get("ranks") or {}).items()},
          "straggler_slower_categories": slower}
    return ctx.make("cross_rank_skew", title, t, ev, {"skew_text": skew_text})


def batching_gaps(ctx: Context) -> Finding | None:
    causes = ("scheduler", "synchronization", "launch_overhead", "device_wait")
    by = {c: ctx.v(f"between_{c}_us") for c in causes}
    t = sum(by.values())
    m = ctx.sections.get("metrics") or {}
    q = m.get("num_queue_reqs")
    queue_text = (f"the queue is empty (num_queue_reqs={q:g}): raise client concurrency so batches fill; "
                  if ctx.facts["queue_empty"] else "")
    ev = {"between_steps_idle_us": t, "by_cause_us": by,
          "overlap_scheduler": ctx.sections.get("gaps", {}).get("summary", {}).get("overlap_scheduler"),
          "num_queue_reqs": q}
    title = ("GPU idle between iterations" if ctx.workload == "training"
             else "GPU idle between batches (scheduling gaps)" if ctx.workload == "serving"
             else "GPU idle between steps")
    return ctx.make("batching_gaps", title, t, ev, {"queue_text": queue_text})


def host_launch_overhead(ctx: Context) -> Finding | None:
    t = ctx.v("inside_launch_overhead_us") + ctx.v("outside_launch_overhead_us")
    steps = ctx.v("steps") > 0
    title = "Host launch overhead inside steps" if steps else "Host launch overhead (GPU waits for launches)"
    return ctx.make("host_launch_overhead", title, t,
                    {"launch_overhead_us": t, "inside_steps_us": ctx.v("inside_launch_overhead_us") if steps else None,
                     "cuda_graph_disabled": ctx.facts["cuda_graph_disabled"]}, {})


def synchronization(ctx: Context) -> Finding | None:
    t = ctx.v("inside_synchronization_us") + ctx.v("outside_synchronization_us")
    steps = ctx.v("steps") > 0
    title = ("Host synchronisation inside steps drains the GPU queue" if steps
             else "Host synchronisation drains the GPU queue")
    return ctx.make("synchronization", title, t,
                    {"synchronization_us": t, "inside_steps_us": ctx.v("inside_synchronization_us") if steps else None}, {})


def gemm_compute(ctx: Context) -> Finding | None:
    t = ctx.v("cat_gemm_us")
    tf = (ctx.sections.get("prefill", {}).get("summary", {}) or {}).get("gemm_tflops")
    # "prefill" only where the steps are LLM prefill (not a diffusion or training step)
    llm_prefill = ctx.workload in ("serving", "generate") and not ctx.facts["diffusion"]
    dt = ctx.run.dtypes.get("gemm") if ctx.run is not None else None
    main = ctx.run.main_dtype("gemm") if ctx.run is not None else None
    vals = {"gemm_dtype": main.upper() if main else "in a dtype the kernel names do not show",
            "tflops_text": (f" ({'prefill ' if llm_prefill else ''}GEMMs achieve {tf:.0f} TFLOP/s)"
                            if tf else "")}
    return ctx.make("gemm_compute", "GEMM compute", t,
                    {"gemm_us": t, "gemm_tflops": tf, "dtypes": dt, "top_kernels": _top_kernels(ctx, "gemm")}, vals)


def moe(ctx: Context) -> Finding | None:
    t = ctx.v("cat_moe_us")
    return ctx.make("moe", "MoE expert compute", t,
                    {"moe_us": t, "dtypes": ctx.run.dtypes.get("moe") if ctx.run is not None else None,
                     "top_kernels": _top_kernels(ctx, "moe")}, {})


def memcpy(ctx: Context) -> Finding | None:
    t = ctx.v("cat_memcpy_us") + ctx.v("cat_memset_us")
    copies = ctx.sections.get("copies") or {}
    link = _host_link(ctx)
    groups = []
    for g in copies.get("groups", [])[:4]:
        row = dict(g)
        if link and g.get("gbps") is not None and g["direction"] in ("HtoD", "DtoH"):
            row["link"] = link["link"]
            row["fraction_of_link"] = g["gbps"] / link["gbps"]
        groups.append(row)
    host = [g for g in groups if g["direction"] in ("HtoD", "DtoH") and g.get("gbps") is not None]
    link_text = ""
    if host and link:
        g = host[0]
        link_text = (f"{g['direction']} copies reach {g['gbps']:.1f} GB/s, "
                     f"{100 * g['gbps'] / link['gbps']:.0f}% of the {link['link']} peak ({link['gbps']} GB/s).")
    ev = {"memcpy_memset_us": t, "memcpy_us": ctx.v("cat_memcpy_us"), "memset_us": ctx.v("cat_memset_us"),
          "copies": groups, "host_link": link}
    return ctx.make("memcpy", "Memory copies and memsets", t, ev, {"link_text": link_text})


def _host_link(ctx: Context) -> dict[str, Any] | None:
    gpu = (getattr(ctx.run, "gpu", None) or {}) if ctx.run is not None else {}
    name = str(gpu.get("name") or gpu.get("preset") or "")
    if not name:
        return None
    for row in ctx.th.get("host_link", []):
        if re.search(row["gpu"], name):
            return {"link": row["link"], "gbps": row["gbps"]}
    return None


DETECTORS: tuple[Callable[[Context], Finding | None], ...] = (
    prefill_attention, kv_cache_bandwidth, tp_communication, pp_communication, ep_communication,
    dp_communication, other_communication, pipeline_bubbles, cross_rank_skew, batching_gaps,
    host_launch_overhead, synchronization, gemm_compute, moe, memcpy,
)


def detect(figs: Figures, sections: Mapping[str, Any], server_args: Mapping[str, Any] | None,
           planner: Mapping[str, Any] | None = None, run: Any = None) -> list[Finding]:
    """Run every detector and rank the findings (``run``: the RunContext, when known)."""
    ctx = Context(figs, sections, server_args, planner, run)
    skip = _not_applicable(ctx)
    found = [f for f in (d(ctx) for d in DETECTORS if d.__name__ not in skip) if f is not None]
    return rank_findings(found)


def _not_applicable(ctx: Context) -> set[str]:
    """Detectors whose question does not exist for this run (no KV cache in a diffusion model
    or a training step)."""
    if ctx.facts["diffusion"] or ctx.workload == "training":
        return {"kv_cache_bandwidth"}
    return set()


def _planner_advice(planner: Mapping[str, Any]) -> str:
    """The capacity planner's concurrency figures as one clause of a recommendation."""
    return (f"keep concurrency per replica near {planner['concurrency_per_replica']} "
            f"(upper bound {planner.get('concurrency_upper')}, KV memory fits "
            f"{planner.get('max_concurrency_memory')} sequences of ~{planner.get('context_tokens')} "
            + ("tokens, an assumed context; " if str(planner.get("context_source", "")).startswith("assumed")
               else "tokens; ")
            + "`trace-analyzer plan`).")
