"""The planted scenarios. Each function returns a ``Scenario``; sizes are parameters.

=========================== ======================== ========================================
scenario                    expected top finding     what is planted
=========================== ======================== ========================================
long_prefill_tp2            prefill_attention        TP2 EXTEND steps whose attention grows
                                                     with context squared, then some decode
kv_bound_decode_cuda_graph  kv_cache_bandwidth       TP1 H200, bs=128 decode under CUDA graphs
tp8_straggler               cross_rank_skew          TP8 decode; one rank computes 2x slower,
                                                     the others wait inside all-reduces
pp4_bubbles                 pipeline_bubbles         PP4 decode, 2 micro-batches, GPU idle
                                                     before every pipeline receive
batching_gaps               batching_gaps            small-model decode; scheduler spans on
                                                     the host cover long GPU idle gaps
tensor_core_decode          kv_cache_bandwidth       decode attention runs FlashInfer's
                                                     BatchPrefillWithPagedKVCacheKernel
stage_split                 kv_cache_bandwidth       profile_by_stage: -EXTEND/-DECODE files
                                                     per rank, python frames, no step spans;
                                                     bs=128 decode dominates
demo                        (mixed)                  TP2 mix of prefill (with prefix cache),
                                                     CUDA-graph decode, NCCL
=========================== ======================== ========================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .kernels import Costs
from .spec import (
    H100,
    H200,
    LLAMA_1B,
    LLAMA_8B,
    LLAMA_70B,
    QWEN_7B,
    GpuSpec,
    KernelSpec,
    ModelSpec,
    RankSpec,
    Scenario,
    StepSpec,
)


@dataclass(frozen=True)
class Plan:
    """One step of a plan shared by all ranks of a TP group."""

    phase: str
    bs: int
    tokens: int
    context: int
    extend_lens: tuple[int, ...] = ()
    prefix_lens: tuple[int, ...] = ()
    graph: bool = False
    recv_ns: int = 20_000
    input_ns: int = 0
    next_batch_ns: int = 40_000
    result_ns: int = 60_000
    execute: bool = False


def server_args(model: ModelSpec, *, tp: int = 1, pp: int = 1, chunked: int = 8192,
                page_size: int = 1, cuda_graph_max_bs: int = 256, mem: float = 0.88,
                **extra: Any) -> dict[str, Any]:
    """A ``server_args.json`` the way SGLang dumps its ``ServerArgs`` (the usual subset)."""
    args: dict[str, Any] = {
        "model_path": model.path, "tokenizer_path": model.path, "tokenizer_mode": "auto",
        "skip_tokenizer_init": False, "load_format": "auto", "trust_remote_code": False,
        "dtype": "auto", "kv_cache_dtype": "auto", "quantization": None,
        "context_length": None, "device": "cuda", "served_model_name": model.path,
        "is_embedding": False, "host": "127.0.0.1", "port": 30000,
        "mem_fraction_static": mem, "max_running_requests": None, "max_total_tokens": None,
        "chunked_prefill_size": chunked, "max_prefill_tokens": 16384,
        "schedule_policy": "fcfs", "schedule_conservativeness": 1.0, "page_size": page_size,
        "tp_size": tp, "pp_size": pp, "dp_size": 1, "ep_size": 1, "random_seed": 0,
        "attention_backend": "flashinfer", "sampling_backend": "flashinfer",
        "disable_radix_cache": False, "disable_cuda_graph": False,
        "cuda_graph_max_bs": cuda_graph_max_bs, "cuda_graph_bs": None,
        "disable_overlap_schedule": True, "enable_dp_attention": False,
        "enable_torch_compile": False, "disable_custom_all_reduce": True,
        "enable_mixed_chunk": False, "num_continuous_decode_steps": 1,
    }
    args.update(extra)
    return args


def _profile_id(seed: int) -> str:
    return f"{1767225600 + seed * 3600}.{seed * 7919 % 1000000:06d}"


def _steps_for_rank(costs: Costs, plans: Sequence[Plan], tp_ranks: Sequence[int],
                    graph_comm_args: bool = True, key: str = "") -> list[StepSpec]:
    out: list[StepSpec] = []
    for i, pl in enumerate(plans):
        prep = costs.prepare(pl.phase, pl.tokens, pl.bs)
        fwd = costs.forward(pl.phase, pl.tokens, pl.context, key=f"{key}s{i}", tp_ranks=tp_ranks,
                            extend_lens=pl.extend_lens, prefix_lens=pl.prefix_lens, bs=pl.bs,
                            comm_args=graph_comm_args or not pl.graph)
        samp = costs.sample(pl.bs)
        out.append(StepSpec(
            phase=pl.phase, bs=pl.bs, tokens=pl.tokens, context_tokens=pl.context,
            kernels=prep + fwd + samp, cuda_graph=pl.graph, graph_prefix=len(prep),
            graph_suffix=len(samp), recv_requests_ns=pl.recv_ns, process_input_ns=pl.input_ns,
            get_next_batch_ns=pl.next_batch_ns, process_result_ns=pl.result_ns,
            execute_annotation=pl.execute, extend_lens=pl.extend_lens,
            prefix_lens=pl.prefix_lens))
    return out


def _tp_group(gpu: GpuSpec, model: ModelSpec, tp: int, seed: int, plans: Sequence[Plan], *,
              tensor_core_decode: bool = False, graph_comm_args: bool = True,
              slow: dict[int, tuple[int, int]] | None = None) -> list[RankSpec]:
    ranks = list(range(tp))
    out = []
    for r in ranks:
        costs = Costs(gpu, model, tp, seed * 1000 + r, tensor_core_decode=tensor_core_decode)
        if slow and r in slow:
            costs.slow_num, costs.slow_den = slow[r]
        steps = _steps_for_rank(costs, plans, ranks, graph_comm_args)
        out.append(RankSpec(rank=r, device=r, tp_rank=r, steps=steps,
                            start_offset_ns=r * 37_000))
    return out


def _decode_plans(n: int, bs: int, ctx0: int, *, graph: bool = True, **kw: Any) -> list[Plan]:
    return [Plan("DECODE", bs, bs, ctx0 + i * bs, graph=graph, **kw) for i in range(n)]


# ----------------------------------------------------------------------------------------
def long_prefill_tp2(seed: int = 1, prompt_lens: Sequence[int] = (2048, 4096, 8192, 16384,
                                                                  32768, 65536),
                     decode_steps: int = 6) -> Scenario:
    """TP2 long-context prefill: one request per EXTEND step, attention ~ tokens squared."""
    plans = [Plan("EXTEND", 1, n, n, extend_lens=(n,), prefix_lens=(0,), execute=True)
             for n in prompt_lens]
    plans += _decode_plans(decode_steps, len(prompt_lens), sum(prompt_lens))
    return Scenario(
        name="long_prefill_tp2", seed=seed, profile_id=_profile_id(seed), gpu=H100,
        model=LLAMA_8B, tp_size=2, pp_size=1,
        description="TP2 Llama-3.1-8B on H100: EXTEND steps of 2k..64k-token prompts (one "
                    "request each) whose attention time grows with the prompt length squared, "
                    "then CUDA-graph decode of those requests.",
        ranks=_tp_group(H100, LLAMA_8B, 2, seed, plans),
        expected_top_finding="prefill_attention",
        server_args=server_args(LLAMA_8B, tp=2, chunked=-1, max_prefill_tokens=65536,
                                context_length=131072),
        params={"prompt_lens": list(prompt_lens), "decode_steps": decode_steps},
        notes=[("execute_<n>_context_... spans accompany each EXTEND step (as in the shared "
                "SGLang trace)")])


def kv_bound_decode_cuda_graph(seed: int = 2, decode_steps: int = 24, bs: int = 128,
                               context_per_request: int = 4096) -> Scenario:
    """TP1 H200 large-batch decode under CUDA graphs: decode attention (KV reads) dominates."""
    plans = [Plan("EXTEND", 1, 1024, 1024, extend_lens=(1024,), prefix_lens=(0,))]
    plans += _decode_plans(decode_steps, bs, bs * context_per_request, execute=True)
    return Scenario(
        name="kv_bound_decode_cuda_graph", seed=seed, profile_id=_profile_id(seed), gpu=H200,
        model=LLAMA_8B, tp_size=1, pp_size=1,
        description=f"TP1 Llama-3.1-8B on H200: one 1024-token EXTEND step, then "
                    f"{decode_steps} decode steps of bs={bs} (~{context_per_request} tokens of "
                    "context each) replayed by one cudaGraphLaunch per step; decode attention "
                    "reads the whole KV cache and dominates.",
        ranks=_tp_group(H200, LLAMA_8B, 1, seed, plans),
        expected_top_finding="kv_cache_bandwidth",
        server_args=server_args(LLAMA_8B, tp=1, chunked=8192, page_size=1,
                                cuda_graph_max_bs=256, mem=0.88),
        params={"decode_steps": decode_steps, "bs": bs,
                "context_per_request": context_per_request},
        notes=[("KV bytes read per decode step = context_tokens x kv_bytes_per_token "
                "(bf16 KV, all layers)")])


def tp8_straggler(seed: int = 3, straggler: int = 5, slowdown: tuple[int, int] = (2, 1),
                  decode_steps: int = 4, bs: int = 64, context_per_request: int = 2048) -> Scenario:
    """TP8 decode where one rank's compute is ``slowdown`` slower: the rest wait in NCCL."""
    plans = _decode_plans(decode_steps, bs, bs * context_per_request)
    return Scenario(
        name="tp8_straggler", seed=seed, profile_id=_profile_id(seed), gpu=H100,
        model=LLAMA_70B, tp_size=8, pp_size=1,
        description=f"TP8 Llama-3.1-70B decode on H100; rank {straggler} runs every "
                    f"non-communication kernel {slowdown[0]}/{slowdown[1]}x slower, so the "
                    "other ranks' all-reduce kernels start early and all end together.",
        ranks=_tp_group(H100, LLAMA_70B, 8, seed, plans, slow={straggler: slowdown}),
        expected_top_finding="cross_rank_skew", straggler_rank=straggler,
        server_args=server_args(LLAMA_70B, tp=8, chunked=8192),
        params={"straggler": straggler, "slowdown": list(slowdown), "decode_steps": decode_steps,
                "bs": bs, "context_per_request": context_per_request},
        notes=["per-rank communication.wait_us is the time spent waiting for the straggler"])


def pp4_bubbles(seed: int = 4, rounds: int = 6, micro_batches: int = 2, bs: int = 16,
                context_per_request: int = 1024) -> Scenario:
    """PP4 (TP1) decode: stage k idles until stage k-1's send arrives (pipeline bubbles)."""
    model, gpu, pp = LLAMA_8B, H100, 4
    per = model.num_layers // pp
    progs: list[list[StepSpec]] = [[] for _ in range(pp)]
    costs = [Costs(gpu, model, 1, seed * 1000 + s) for s in range(pp)]
    ctx = bs * context_per_request
    for r in range(rounds):
        for m in range(micro_batches):
            for s in range(pp):
                c = costs[s]
                ks: list[KernelSpec] = list(c.prepare("DECODE", bs, bs))
                prefix = len(ks)
                if s > 0 or r > 0:
                    src = (s - 1) % pp
                    ks.append(_p2p(c, "recv", r - (1 if s == 0 else 0), m, src, s, bs, model))
                    prefix += 1
                fwd = c.forward("DECODE", bs, ctx + r * bs, key=f"r{r}m{m}", tp_ranks=[s],
                                layers=range(s * per, (s + 1) * per), first_stage=(s == 0),
                                last_stage=(s == pp - 1), bs=bs)
                suffix: list[KernelSpec] = []
                if s == pp - 1:
                    suffix += c.sample(bs)
                if s < pp - 1 or r < rounds - 1:
                    suffix.append(_p2p(c, "send", r, m, s, (s + 1) % pp, bs, model))
                progs[s].append(StepSpec(
                    phase="DECODE", bs=bs, tokens=bs, context_tokens=ctx + r * bs,
                    kernels=ks + fwd + suffix, cuda_graph=True, graph_prefix=prefix,
                    graph_suffix=len(suffix), recv_requests_ns=8_000, get_next_batch_ns=12_000,
                    process_result_ns=15_000, blocking_sync=False))
    ranks = [RankSpec(rank=s, device=s, tp_rank=0, pp_rank=s, steps=progs[s],
                      start_offset_ns=s * 41_000) for s in range(pp)]
    return Scenario(
        name="pp4_bubbles", seed=seed, profile_id=_profile_id(seed), gpu=gpu, model=model,
        tp_size=1, pp_size=pp,
        description=f"PP4 TP1 Llama-3.1-8B decode on H100: {micro_batches} micro-batches of "
                    f"bs={bs} for {rounds} rounds; hidden states go stage to stage with NCCL "
                    "send/recv and next-token ids from the last stage back to the first; each "
                    "stage idles until its receive can start.",
        ranks=ranks, expected_top_finding="pipeline_bubbles",
        server_args=server_args(model, tp=1, pp=pp, chunked=8192,
                                pp_max_micro_batch_size=bs),
        params={"rounds": rounds, "micro_batches": micro_batches, "bs": bs,
                "context_per_request": context_per_request},
        notes=["gaps.before_recv_us is the pipeline bubble: GPU idle that ends at a receive",
               "no blocking sync per step (the PP event loop does not wait for the GPU)"])


def _p2p(c: Costs, kind: str, r: int, m: int, src: int, dst: int, bs: int,
         model: ModelSpec) -> KernelSpec:
    last_to_first = src > dst
    nelems = bs if last_to_first else bs * model.hidden
    spec = c.comm("sendrecv", f"r{r}m{m}/{src}->{dst}", (src, dst), nelems, pg="4")
    assert spec.comm is not None
    comm = dataclasses.replace(spec.comm, collective=kind, late_post=True, peer=src)
    return dataclasses.replace(spec, comm=comm, grid=(1, 1, 1), block=(256, 1, 1))


def batching_gaps(seed: int = 5, decode_steps: int = 30, bs: int = 8,
                  context_per_request: int = 1500) -> Scenario:
    """Small-model decode with long CPU scheduler time between steps (no overlap schedule)."""
    plans = [Plan("EXTEND", bs, bs * 128, bs * 128, extend_lens=(128,) * bs,
                  prefix_lens=(0,) * bs, recv_ns=400_000, input_ns=300_000,
                  next_batch_ns=900_000, result_ns=1_100_000)]
    for i in range(decode_steps):
        plans.append(Plan("DECODE", bs, bs, bs * context_per_request + i * bs, graph=True,
                          recv_ns=350_000 + (i % 3) * 20_000,
                          input_ns=250_000 if i % 10 == 5 else 0,
                          next_batch_ns=900_000 + (i % 4) * 30_000, result_ns=1_200_000))
    return Scenario(
        name="batching_gaps", seed=seed, profile_id=_profile_id(seed), gpu=H100,
        model=LLAMA_1B, tp_size=1, pp_size=1,
        description=f"TP1 Llama-3.2-1B on H100, {decode_steps} CUDA-graph decode steps of "
                    f"bs={bs}; the non-overlap scheduler spends ~2.5 ms per step in "
                    "scheduler.process_batch_result / recv_requests / get_next_batch_to_run "
                    "while the GPU idles.",
        ranks=_tp_group(H100, LLAMA_1B, 1, seed, plans),
        expected_top_finding="batching_gaps",
        server_args=server_args(LLAMA_1B, tp=1, chunked=8192),
        params={"decode_steps": decode_steps, "bs": bs,
                "context_per_request": context_per_request},
        notes=[("gaps.covered_by_scheduler_us: idle GPU time overlapped by host scheduler.* "
                "spans (same clock)")])


def tensor_core_decode(seed: int = 6, decode_steps: int = 16, bs: int = 128,
                       context_per_request: int = 6144) -> Scenario:
    """Decode with FlashInfer's tensor-core path: BatchPrefillWithPagedKVCacheKernel."""
    plans = [Plan("EXTEND", 1, 2048, 2048, extend_lens=(2048,), prefix_lens=(0,))]
    plans += _decode_plans(decode_steps, bs, bs * context_per_request)
    return Scenario(
        name="tensor_core_decode", seed=seed, profile_id=_profile_id(seed), gpu=H100,
        model=QWEN_7B, tp_size=1, pp_size=1,
        description="TP1 Qwen2.5-7B (GQA 7:1) on H100: SGLang's FlashInfer backend decodes "
                    "with tensor cores, i.e. BatchPrefillWithPagedKVCacheKernel inside "
                    "DECODE steps; that time is attention_decode.",
        ranks=_tp_group(H100, QWEN_7B, 1, seed, plans, tensor_core_decode=True),
        expected_top_finding="kv_cache_bandwidth",
        server_args=server_args(QWEN_7B, tp=1, chunked=8192),
        params={"decode_steps": decode_steps, "bs": bs,
                "context_per_request": context_per_request},
        notes=[("decode attention kernels are named BatchPrefillWithPagedKVCacheKernel; "
                "phases.DECODE.categories.attention_decode holds their time")])


def stage_split(seed: int = 7, extend_steps: int = 3, decode_steps: int = 10) -> Scenario:
    """profile_by_stage capture (TP2): one -EXTEND and one -DECODE file per rank."""
    plans = [Plan("EXTEND", 2, 2048, 2048, extend_lens=(1024, 1024), prefix_lens=(0, 0))
             for _ in range(extend_steps)]
    plans += _decode_plans(decode_steps, 128, 128 * 4096)
    ranks = _tp_group(H100, LLAMA_8B, 2, seed, plans)
    for rs in ranks:
        rs.stage_of_step = ["EXTEND"] * extend_steps + ["DECODE"] * decode_steps
    return Scenario(
        name="stage_split", seed=seed, profile_id=_profile_id(seed), gpu=H100,
        model=LLAMA_8B, tp_size=2, pp_size=1, stage_split=True,
        description="SGLang profile_by_stage capture, TP2 Llama-3.1-8B on H100: each rank "
                    "wrote <id>-TP-<r>-EXTEND.trace.json.gz and -DECODE; like older SGLang, "
                    "no step[...] spans: phases come from the file stage and the "
                    "forward_extend/forward_decode python frames.",
        ranks=ranks, expected_top_finding="kv_cache_bandwidth",
        server_args=server_args(LLAMA_8B, tp=2, chunked=8192),
        params={"extend_steps": extend_steps, "decode_steps": decode_steps},
        notes=["no step[...] user annotations in these files",
               "ranks[].stages holds each file's own figures"])


def demo(seed: int = 42) -> Scenario:
    """The bundled first-impression sample: TP2, prefill (with prefix cache) + decode."""
    plans: list[Plan] = [Plan("EXTEND", 4, 8192, 8192, extend_lens=(2048,) * 4,
                              prefix_lens=(0,) * 4, input_ns=180_000)]
    plans += _decode_plans(10, 4, 4 * 2048)
    plans.append(Plan("EXTEND", 2, 3072, 3072 + 4096, extend_lens=(1536, 1536),
                      prefix_lens=(2048, 2048), input_ns=120_000))
    plans += _decode_plans(14, 6, 6 * 2600)
    plans.append(Plan("EXTEND", 1, 8192, 16384, extend_lens=(8192,), prefix_lens=(8192,),
                      input_ns=90_000))
    plans += _decode_plans(8, 7, 7 * 4200)
    return Scenario(
        name="demo", seed=seed, profile_id=_profile_id(seed), gpu=H100, model=LLAMA_8B,
        tp_size=2, pp_size=1,
        description="TP2 Llama-3.1-8B on H100, a small serving session: three EXTEND steps "
                    "(one hitting the prefix cache: ragged + paged attention + merge_state) "
                    "between CUDA-graph decode runs, NCCL all-reduce per layer.",
        ranks=_tp_group(H100, LLAMA_8B, 2, seed, plans, graph_comm_args=False),
        expected_top_finding="", server_args=server_args(LLAMA_8B, tp=2, chunked=8192),
        params={},
        notes=[("NCCL kernels replayed inside CUDA graphs carry no 'Collective name' args "
                "(SGLang's pynccl path); eager ones do"),
               "no single planted cause: expected_top_finding is empty"])


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "demo": demo,
    "long_prefill_tp2": long_prefill_tp2,
    "kv_bound_decode_cuda_graph": kv_bound_decode_cuda_graph,
    "tp8_straggler": tp8_straggler,
    "pp4_bubbles": pp4_bubbles,
    "batching_gaps": batching_gaps,
    "tensor_core_decode": tensor_core_decode,
    "stage_split": stage_split,
}
