"""Serving detectors: per-rank figures -> ``Finding`` objects (compute, judge, format apart).

Each detector reads the flat per-rank figures built by ``analyzer.analyses.serving`` (one
dict per rank, keys such as ``cat_gemm_us`` or ``between_scheduler_us``) and the section
dicts, takes the representative value over ranks (the median), and returns a Finding or
None. ``time_us`` is the cost on the wall timeline (docs/methodology.md, "Ranking"):

- idle causes (batching gaps, launch/sync gaps inside steps, PP bubbles, waiting inside a
  collective for a straggler) count all of their time: it is waste that can be won back;
- busy causes (attention, GEMM, MoE, memcpy, exposed communication transfer) count the time
  they occupy on the wall timeline; their distance from the roofline, when it can be
  computed, is evidence (``fraction_of_peak``, ``roofline_us``) that shapes the severity
  wording and the recommendation, not the rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from analyzer.findings import load_thresholds, rank_findings, severity_for
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
    """What the detectors may read: figures per rank, sections, server args, thresholds."""

    def __init__(self, figs: Figures, sections: Mapping[str, Any], server_args: Mapping[str, Any] | None,
                 planner: Mapping[str, Any] | None = None) -> None:
        self.figs = figs
        self.sections = sections
        self.sa = server_args or {}
        self.th = load_thresholds()
        self.wall_us = med(figs, "wall_us")
        self.planner = planner or {}

    def make(self, fid: str, title: str, time_us: float, evidence: dict[str, Any], rec: str) -> Finding | None:
        share = time_us / self.wall_us if self.wall_us > 0 else 0.0
        if time_us <= 0 or share < self.th["min_share"]:
            return None
        evidence = {"representative": "median over ranks", "wall_us": self.wall_us, **evidence}
        return Finding(fid, title, severity_for(share, self.th), share, time_us, evidence, rec)


def _top_kernels(ctx: Context, category: str, n: int = 3) -> list[dict[str, Any]]:
    return list(ctx.sections.get("top_kernels", {}).get(category, []))[:n]


def _example_steps(ctx: Context, key: str, n: int = 3) -> list[dict[str, Any]]:
    rows = [r for r in ctx.sections.get("example_steps", []) if (r.get(key) or 0) > 0]
    return sorted(rows, key=lambda r: -(r.get(key) or 0))[:n]


def prefill_attention(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "cat_attention_prefill_us")
    pf = ctx.sections.get("prefill", {}).get("summary", {})
    growth = pf.get("growth", "unknown")
    chunk = ctx.sa.get("chunked_prefill_size")
    dominates = t / ctx.wall_us >= ctx.th["prefill"]["dominates_share"] if ctx.wall_us else False
    title = "Prefill attention dominates: long-context prefill" if dominates and growth == "quadratic" \
        else "Prefill attention time"
    chunk_txt = f"(now {chunk})" if chunk not in (None, -1) else "(now unset/disabled)"
    how = (f"Prefill attention grows {growth}ly with the prompt length" if growth in ("linear", "quadratic")
           else "How prefill attention grows with the prompt length is unknown (fewer than "
                "three EXTEND steps, or fewer than two distinct prompt lengths)")
    rec = (how + ". Cap prefill chunks with "
           f"--chunked-prefill-size 4096-8192 {chunk_txt} so long prompts interleave with decode; "
           "keep prefix caching on (RadixAttention) for shared prefixes; use the fastest prefill "
           "backend for the GPU (FA3/FlashInfer on Hopper, aiter on MI300); for long prompts at scale split prefill and decode "
           "(PD disaggregation) or raise TP for the prefill instances.")
    ev = {"attention_prefill_us": t, "growth": growth, "fit": pf.get("fit"),
          "attention_tflops": pf.get("attention_tflops"), "chunked_prefill_size": chunk,
          "top_kernels": _top_kernels(ctx, "attention_prefill"),
          "example_steps": _example_steps(ctx, "attention_prefill_us")}
    return ctx.make("prefill_attention", title, t, ev, rec)


def kv_cache_bandwidth(ctx: Context) -> Finding | None:
    att = med(ctx.figs, "cat_attention_decode_us")
    wr = med(ctx.figs, "cat_kv_cache_us")
    kv = ctx.sections.get("kv_cache", {}).get("summary", {})
    frac = kv.get("fraction_of_hbm")
    bound = kv.get("memory_bound")
    conc = ctx.planner.get("concurrency_per_replica")
    dtype = str(ctx.sa.get("kv_cache_dtype", "auto"))
    state = (" and runs at %.0f%% of the HBM peak: memory-bound" % (100 * frac)) if frac is not None else \
        "; its bandwidth could not be computed (" + "; ".join(kv.get("missing") or ["no model/GPU"]) + ")"
    rec = ("Decode attention is KV-cache read traffic" + state + ". Cut the bytes: FP8 KV cache "
           f"(--kv-cache-dtype fp8_e5m2; now {dtype}), shorter retained context, a GQA/MLA model; "
           + (_planner_advice(ctx.planner) if conc else
              "size concurrency per replica with `trace-analyzer plan`; ")
           + ("the kernel is far from the HBM roofline: try another attention backend "
              "(--attention-backend fa3/flashinfer) and CUDA graphs for decode."
              if bound is False else "more decode replicas (DP) rather than larger batches."))
    ev = {"attention_decode_us": att, "kv_cache_write_us": wr, "achieved_gbps": kv.get("achieved_gbps"),
          "hbm_gbps": kv.get("hbm_gbps"), "fraction_of_hbm": frac, "memory_bound": bound,
          "bytes_read": kv.get("bytes_read"), "kv_bytes_per_token": kv.get("kv_bytes_per_token"),
          "top_kernels": _top_kernels(ctx, "attention_decode"),
          "example_steps": _example_steps(ctx, "attention_decode_us")}
    return ctx.make("kv_cache_bandwidth", "Decode is bound by KV-cache reads (decode attention)",
                    att + wr, ev, rec)


def tp_communication(ctx: Context) -> Finding | None:
    t = float(np.median([max(float(f.get("tp_exposed_us") or 0) - float(f.get("tp_wait_exposed_us") or 0), 0.0)
                         for f in ctx.figs])) if ctx.figs else 0.0
    comm = ctx.sections.get("communication", {}).get("summary", {})
    bw = ctx.sections.get("skew", {}).get("allreduce_busbw_gbps")
    tp = ctx.sections.get("communication", {}).get("sizes", {}).get("tp")
    custom = not bool(ctx.sa.get("disable_custom_all_reduce", False))
    rec = (f"Exposed TP collectives (TP={tp}) not hidden behind compute. Keep the custom all-reduce "
           f"{'on' if custom else 'ON (remove --disable-custom-all-reduce)'}; check the links: "
           "`nvidia-smi topo -m` shows NV# between all TP GPUs and `nvidia-smi nvlink -s` has no "
           "down links" + (f" (measured all-reduce bus bandwidth {bw:.0f} GB/s)" if bw else "")
           + "; keep TP inside one node; for attention-heavy MoE models try DP attention "
           "(--enable-dp-attention) or a smaller TP with more replicas.")
    ev = {"tp_exposed_transfer_us": t, "tp_exposed_us": med(ctx.figs, "tp_exposed_us"),
          "tp_time_us": med(ctx.figs, "tp_time_us"), "by_collective": comm.get("by_role_collective"),
          "allreduce_busbw_gbps": bw}
    return ctx.make("tp_communication", "Exposed tensor-parallel communication", t, ev, rec)


def pp_communication(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "pp_exposed_us")
    rec = ("Pipeline send/recv is exposed: check the inter-stage link (NVLink inside a node, "
           "InfiniBand/RoCE across nodes: `ibstat`, NCCL_IB_HCA, GPUDirect RDMA), and overlap it "
           "with compute by running more micro-batches in flight.")
    return ctx.make("pp_communication", "Exposed pipeline-parallel send/recv", t,
                    {"pp_exposed_us": t, "pp_time_us": med(ctx.figs, "pp_time_us")}, rec)


def ep_communication(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "ep_exposed_us")
    rec = ("Expert-parallel all-to-all is exposed: use DeepEP (--moe-a2a-backend deepep) with "
           "two-batch overlap (--enable-two-batch-overlap), check IB/NVLink bandwidth, balance "
           "experts (EPLB).")
    return ctx.make("ep_communication", "Exposed expert-parallel all-to-all", t,
                    {"ep_exposed_us": t}, rec)


def pipeline_bubbles(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "gap_pp_bubble_us")
    pp = ctx.sections.get("communication", {}).get("sizes", {}).get("pp")
    per_rank = {int(f["rank"]): f.get("gap_pp_bubble_us") for f in ctx.figs}
    rec = (f"PP={pp} stages idle waiting for their neighbour. Keep more micro-batches in flight "
           "(more concurrent requests, --pp-max-micro-batch-size), balance layers across stages, "
           "prefer TP inside a node and PP only across nodes.")
    ev: dict[str, Any] = {"bubble_us_by_rank": per_rank, **_bubble_evidence(ctx)}
    return ctx.make("pipeline_bubbles", "Pipeline bubbles (stages idle waiting for activations)", t,
                    ev, rec)


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
    t = med(ctx.figs, "wait_exposed_us")
    s = skew.get("straggler_rank")
    share = skew.get("straggler_last_share") or 0.0
    named = s is not None  # named by analyses.serving with the [skew] thresholds
    title = f"Cross-rank skew: rank {s} is the straggler" if named else "Cross-rank skew in collectives"
    slower = skew.get("straggler_slower_categories") if named else None
    rec = ((f"Rank {s} arrives last at {100 * share:.0f}% of the collectives; the other ranks wait for it. "
            if named else "Ranks reach the collectives at different times. ")
           + "Check that GPU: clocks and throttling (`nvidia-smi -q -d PERFORMANCE,CLOCK`), ECC/XID "
           "errors, its NVLink/PCIe link; the CPU side: process affinity/NUMA binding and noisy "
           "neighbours; uneven work (DP attention load balance, expert imbalance).")
    ev = {"straggler_rank": s if named else None, "straggler_last_share": share,
          "wait_exposed_us": t, "skew_us": skew.get("skew_us"), "instances": skew.get("instances"),
          "wait_us_by_rank": {r: v.get("wait_us") for r, v in (skew.get("ranks") or {}).items()},
          "straggler_slower_categories": slower}
    return ctx.make("cross_rank_skew", title, t, ev, rec)


def batching_gaps(ctx: Context) -> Finding | None:
    causes = ("scheduler", "synchronization", "launch_overhead", "device_wait")
    t = float(np.median([sum(float(f.get(f"between_{c}_us") or 0) for c in causes) for f in ctx.figs])) \
        if ctx.figs else 0.0
    by = {c: med(ctx.figs, f"between_{c}_us") for c in causes}
    sched = ctx.sections.get("gaps", {}).get("summary", {}).get("overlap_scheduler")
    m = ctx.sections.get("metrics") or {}
    q = m.get("num_queue_reqs")
    rec = ("The GPU idles between batches while the host schedules the next one. "
           + ("Enable the overlap scheduler (remove --disable-overlap-schedule) so scheduling runs "
              "while the GPU computes; " if sched is not True else
              "The overlap scheduler is on, so the host work itself is too slow: profile the "
              "scheduler (grammar, tokenizer, detokenizer, radix-cache ops); ")
           + (f"the queue is empty (num_queue_reqs={q:g}): raise client concurrency so batches fill. "
              if q is not None and q <= ctx.th["metrics"]["queue_empty_reqs"] else "")
           + "Avoid per-step host syncs in custom logits processors.")
    ev = {"between_steps_idle_us": t, "by_cause_us": by, "overlap_scheduler": sched,
          "num_queue_reqs": q}
    return ctx.make("batching_gaps", "GPU idle between batches (scheduling gaps)", t, ev, rec)


def host_launch_overhead(ctx: Context) -> Finding | None:
    t = float(np.median([float(f.get("inside_launch_overhead_us") or 0) + float(f.get("outside_launch_overhead_us") or 0)
                         for f in ctx.figs])) if ctx.figs else 0.0
    graphs = not bool(ctx.sa.get("disable_cuda_graph", False))
    rec = ("Inside steps the GPU waits for kernel launches (host-bound). "
           + ("Enable CUDA graphs (remove --disable-cuda-graph)" if not graphs else
              "Raise --cuda-graph-max-bs to cover the running batch size so decode replays a graph")
           + "; use torch.compile / piecewise CUDA graphs for prefill; fewer, fused kernels.")
    return ctx.make("host_launch_overhead", "Host launch overhead inside steps", t,
                    {"inside_steps_launch_us": t, "cuda_graph_disabled": not graphs}, rec)


def synchronization(ctx: Context) -> Finding | None:
    t = float(np.median([float(f.get("inside_synchronization_us") or 0) + float(f.get("outside_synchronization_us") or 0)
                         for f in ctx.figs])) if ctx.figs else 0.0
    rec = ("The host blocks on the GPU inside steps (stream/device synchronize, .item(), blocking "
           "device-to-host copies) so the launch queue drains. Remove the syncs or make the copies "
           "non_blocking into pinned memory.")
    return ctx.make("synchronization", "Host synchronisation inside steps drains the GPU queue", t,
                    {"inside_steps_sync_us": t}, rec)


def gemm_compute(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "cat_gemm_us")
    tf = ctx.sections.get("prefill", {}).get("summary", {}).get("gemm_tflops")
    rec = ("GEMMs are the largest busy share: FP8 weights (--quantization fp8) roughly halve "
           "their time on FP8-capable GPUs (Hopper, Blackwell, MI300); larger batches raise their efficiency; check the achieved "
           "TFLOP/s against the GPU peak" + (f" (prefill GEMMs: {tf:.0f} TFLOP/s)" if tf else "") + ".")
    return ctx.make("gemm_compute", "GEMM compute", t,
                    {"gemm_us": t, "gemm_tflops": tf, "top_kernels": _top_kernels(ctx, "gemm")}, rec)


def moe(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "cat_moe_us")
    rec = ("MoE kernels: tune the fused-MoE kernel configs for this GPU and batch sizes, use expert "
           "parallelism (--ep-size) with DeepEP, and EPLB to balance experts.")
    return ctx.make("moe", "MoE expert compute", t,
                    {"moe_us": t, "top_kernels": _top_kernels(ctx, "moe")}, rec)


def memcpy(ctx: Context) -> Finding | None:
    t = med(ctx.figs, "cat_memcpy_us") + med(ctx.figs, "cat_memset_us")
    rec = ("Host/device copies and memsets on the GPU timeline: use pinned memory with "
           "non_blocking copies, keep per-step inputs on the GPU, avoid re-uploading sampling "
           "parameters every step.")
    return ctx.make("memcpy", "Memory copies and memsets", t, {"memcpy_memset_us": t}, rec)


DETECTORS: tuple[Callable[[Context], Finding | None], ...] = (
    prefill_attention, kv_cache_bandwidth, tp_communication, pp_communication, ep_communication,
    pipeline_bubbles, cross_rank_skew, batching_gaps, host_launch_overhead, synchronization,
    gemm_compute, moe, memcpy,
)


def detect(figs: Figures, sections: Mapping[str, Any], server_args: Mapping[str, Any] | None,
           planner: Mapping[str, Any] | None = None) -> list[Finding]:
    """Run every detector and rank the findings."""
    ctx = Context(figs, sections, server_args, planner)
    found = [f for f in (d(ctx) for d in DETECTORS) if f is not None]
    return rank_findings(found)


def _planner_advice(planner: Mapping[str, Any]) -> str:
    """The capacity planner's concurrency figures as one clause of a recommendation."""
    return (f"keep concurrency per replica near {planner['concurrency_per_replica']} "
            f"(upper bound {planner.get('concurrency_upper')}, KV memory fits "
            f"{planner.get('max_concurrency_memory')} sequences of ~{planner.get('context_tokens')} "
            + ("tokens, an assumed context; " if str(planner.get("context_source", "")).startswith("assumed")
               else "tokens; ")
            + "`trace-analyzer plan`); ")
