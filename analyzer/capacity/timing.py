"""Time model: prefill, decode step, and the serving curve versus concurrency.

Conventions (docs/capacity-planning.md, "Time model"):

* A FLOP is one multiply or one add; a multiply-add is 2 FLOPs.
* Prefill GEMMs: ``2 x n x (active params - input embedding - lm_head) + 2 x vocab x H``
  (logits of the last token only), ``n`` = new (uncached) prompt tokens.
* Causal attention per layer: ``2 x heads x (d_qk + d_v) x pairs``, pairs = query-key pairs
  ``= (S^2 - P^2) / 2`` for P cached tokens (continuous approximation); with
  ``d_qk = d_v = head_dim`` and P = 0 that is ``2 x S^2 x heads x head_dim`` per layer.
  Sliding-window layers cap each query's keys at the window.
* Decode step (one token for every running sequence) on one GPU:
  ``max(bytes / bandwidth, FLOPs / rate)`` + communication, with bytes = weights read
  (for MoE only the experts the batch touches) + the batch's KV. With PP the batch runs as
  PP micro-batches, a token crosses all PP stages per step: ``ITL = PP x stage time``.
* TP all-reduce (ring): ``latency + 2 (t-1)/t x message / bus bandwidth``, 2 per layer
  (after attention and after the MLP); with EP > 1 a MoE layer does the attention
  all-reduce plus dispatch and combine all-to-alls (``(ep-1)/ep x tokens x k x H x 2`` B);
  PP: one send/recv of the activations per stage.
* Serving curve with C sequences in a replica (closed loop, no tool time): per cycle of
  ``C x T_prefill + O x ITL(C)`` every sequence gets its prefill and O tokens, so
  throughput ``X(C) = C / cycle`` requests/s; mean TTFT from the prefill queue (M/D/1,
  its wait capped at ``(C - 1) / 2 x T_prefill``, the mean wait of a burst of C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analyzer.capacity.calibration import Rates
from analyzer.capacity.kv import (
    kv_bytes_per_sequence_per_gpu,
    kv_layers_per_gpu,
    layers_per_gpu,
)
from analyzer.capacity.specs import ModelSpec, Parallelism, Workload
from analyzer.lazy import numpy as np  # imported on first use (fast CLI start)

ACTIVATION_BYTES = 2  # bf16 hidden states on the wire


def attention_pairs(cached: float, total: float, window: float | None = None) -> float:
    """Query-key pairs of causal attention for queries at positions (cached, total].

    Continuous form ``integral_cached^total min(x, window) dx``; no window: ``(S^2-P^2)/2``.
    """
    P, S = float(cached), float(total)
    if window is None or S <= window:
        return (S * S - P * P) / 2.0
    W = float(window)
    if P >= W:
        return W * (S - P)
    return (W * W - P * P) / 2.0 + W * (S - W)


def prefill_flops(model: ModelSpec, workload: Workload) -> tuple[float, float]:
    """(GEMM FLOPs, attention FLOPs) of one request's prefill, whole model."""
    n = workload.new_tokens
    S = workload.context_tokens
    P = S - n
    matmul_params = model.active_params - model.embedding_params - model.lm_head_params
    gemm = 2.0 * n * max(matmul_params, 0.0) + 2.0 * model.vocab_size * model.hidden_size
    per_pair = 2.0 * model.num_heads * (model.head_dim + model.v_head_dim)
    n_swa = len(model.swa_layer_ids)
    n_full = model.kv_layers - n_swa  # linear-attention layers: no quadratic term
    full = attention_pairs(P, S, model.sparse_topk) * n_full  # DSA: each query reads top-k keys
    swa = attention_pairs(P, S, model.sliding_window) * n_swa if n_swa else 0.0
    return gemm, per_pair * (full + swa)


def allreduce_s(message_bytes: np.ndarray | float, t: int, rates: Rates) -> np.ndarray | float:
    """Time of one all-reduce of ``message_bytes`` over ``t`` GPUs (0 when t = 1)."""
    if t <= 1:
        return np.zeros_like(message_bytes) if isinstance(message_bytes, np.ndarray) else 0.0
    lat = rates.allreduce_latency_us * 1e-6
    if rates.allreduce_us_per_mb is not None:
        return lat + np.asarray(message_bytes) / 1e6 * rates.allreduce_us_per_mb * 1e-6
    return lat + 2.0 * (t - 1) / t * np.asarray(message_bytes) / (rates.allreduce_bus_gbps * 1e9)


def p2p_s(message_bytes: np.ndarray | float, pp: int, rates: Rates) -> np.ndarray | float:
    """One pipeline send/recv of ``message_bytes`` (0 when pp = 1)."""
    if pp <= 1:
        return np.zeros_like(message_bytes) if isinstance(message_bytes, np.ndarray) else 0.0
    return rates.p2p_latency_us * 1e-6 + np.asarray(message_bytes) / (rates.p2p_gbps * 1e9)


def alltoall_s(message_bytes: np.ndarray | float, ep: int, rates: Rates) -> np.ndarray | float:
    """One all-to-all in which each GPU sends ``(ep-1)/ep`` of ``message_bytes`` away."""
    if ep <= 1:
        return np.zeros_like(message_bytes) if isinstance(message_bytes, np.ndarray) else 0.0
    lat = rates.allreduce_latency_us * 1e-6
    return lat + (ep - 1) / ep * np.asarray(message_bytes) / (rates.allreduce_bus_gbps * 1e9)


def layer_comm_s(
    model: ModelSpec, parallel: Parallelism, rates: Rates, tokens: np.ndarray | float
) -> np.ndarray | float:
    """TP/EP communication of one pipeline stage for ``tokens`` tokens.

    Dense layers (and MoE layers without EP): 2 all-reduces of ``tokens x H x 2`` bytes.
    MoE layers with EP > 1: the attention all-reduce, then dispatch and combine
    all-to-alls carrying each token to its ``experts_per_token`` experts.
    """
    msg = np.asarray(tokens, dtype=float) * model.hidden_size * ACTIVATION_BYTES
    stage = layers_per_gpu(model, parallel)
    ar = allreduce_s(msg, parallel.tp, rates)
    if not (model.is_moe and parallel.ep > 1):
        return 2 * stage * ar
    moe = min(stage, -(-model.num_moe_layers // parallel.pp))
    per_gpu = msg / parallel.dp_attention * model.experts_per_token
    a2a = alltoall_s(per_gpu, parallel.ep, rates)
    return 2 * (stage - moe) * ar + moe * (ar + 2 * a2a)


@dataclass(frozen=True)
class PrefillTime:
    """One request's prefill on a replica: FLOPs, and seconds per part."""

    gemm_flops: float
    attention_flops: float
    gemm_s: float
    attention_s: float
    tp_comm_s: float
    pp_comm_s: float

    @property
    def total_s(self) -> float:
        return self.gemm_s + self.attention_s + self.tp_comm_s + self.pp_comm_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "gemm_flops": self.gemm_flops,
            "attention_flops": self.attention_flops,
            "gemm_s": self.gemm_s,
            "attention_s": self.attention_s,
            "tp_comm_s": self.tp_comm_s,
            "pp_comm_s": self.pp_comm_s,
            "total_s": self.total_s,
            "attention_share": self.attention_s / self.total_s if self.total_s else 0.0,
        }


def prefill_time(
    model: ModelSpec, parallel: Parallelism, workload: Workload, rates: Rates
) -> PrefillTime:
    """Prefill service time of one request on one replica.

    Compute is spread over the tp x pp GPUs (PP assumes chunked prefill keeps every stage
    busy); each stage runs 2 all-reduces per layer on its L/PP layers and one send/recv.
    """
    gemm_f, attn_f = prefill_flops(model, workload)
    gpus = parallel.tp * parallel.pp
    gemm_s = gemm_f / (gpus * rates.gemm_tflops * 1e12)
    attn_s = attn_f / (gpus * rates.attention_tflops * 1e12)
    msg = workload.new_tokens * model.hidden_size * ACTIVATION_BYTES
    tp_s = float(layer_comm_s(model, parallel, rates, float(workload.new_tokens)))
    pp_s = float(p2p_s(float(msg), parallel.pp, rates))
    return PrefillTime(gemm_f, attn_f, gemm_s, attn_s, tp_s, pp_s)


@dataclass(frozen=True)
class DecodeModel:
    """Inputs of the decode-step model, precomputed once per plan (all per GPU)."""

    dense_weight_bytes: float  # weights read every step whatever the batch
    expert_weight_bytes: float  # routed-expert weights held by the GPU (MoE)
    kv_bytes_per_sequence: float  # at the mean decode context, fullest stage
    flops_per_token: float  # GEMM FLOPs per token on one GPU
    attn_flops_per_token: float  # attention FLOPs per token on one GPU
    comm_per_stage_tokens_bytes: float  # activation bytes per token on the wire

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def weights_bytes_per_gpu(model: ModelSpec, parallel: Parallelism) -> float:
    """Weight bytes on one GPU: sharded over tp x pp; attention over attn_tp x pp."""
    b = model.weight_bytes_per_param
    experts = model.expert_params if model.is_moe else 0.0
    rest = model.total_params - model.attention_params - experts
    return (b * (rest / (parallel.tp * parallel.pp)
                 + model.attention_params / (parallel.attn_tp * parallel.pp))
            + model.expert_weight_bytes_per_param * experts / (parallel.tp * parallel.pp))


def decode_model(
    model: ModelSpec, parallel: Parallelism, workload: Workload, kv_dtype: str
) -> DecodeModel:
    b = model.weight_bytes_per_param
    tp, pp, atp = parallel.tp, parallel.pp, parallel.attn_tp
    experts = model.expert_params if model.is_moe else 0.0
    dense = model.total_params - experts - model.embedding_params - model.attention_params
    dense_bytes = b * (dense / (tp * pp) + model.attention_params / (atp * pp))
    expert_bytes = model.expert_weight_bytes_per_param * experts / (tp * pp)
    ctx = workload.context_tokens + workload.output_tokens // 2
    kv_seq = kv_bytes_per_sequence_per_gpu(model, parallel, ctx, kv_dtype)
    if model.sparse_topk and ctx > model.sparse_topk:  # DSA: latents of the top-k keys only
        idx = model.indexer_bytes_per_token_per_layer
        latent = kv_bytes_per_sequence_per_gpu(model, parallel, model.sparse_topk, kv_dtype)
        kv_seq = latent - idx * model.sparse_topk * kv_layers_per_gpu(model, parallel) \
            + idx * ctx * kv_layers_per_gpu(model, parallel)
    matmul = model.active_params - model.embedding_params
    flops_tok = 2.0 * matmul / (tp * pp)
    if model.attention == "mla":  # absorbed MLA decode: QK over the latent+rope, PV over latent
        per_key = 2.0 * model.num_heads * (2 * model.kv_lora_rank + model.qk_rope_head_dim)
    else:
        per_key = 2.0 * model.num_heads * (model.head_dim + model.v_head_dim)
    n_swa = len(model.swa_layer_ids)
    full_keys = min(ctx, model.sparse_topk or ctx)
    keys = (model.kv_layers - n_swa) * full_keys + n_swa * min(ctx, model.sliding_window or ctx)
    attn_tok = per_key * keys / (atp * pp)
    return DecodeModel(
        dense_weight_bytes=dense_bytes,
        expert_weight_bytes=expert_bytes,
        kv_bytes_per_sequence=float(kv_seq),
        flops_per_token=flops_tok,
        attn_flops_per_token=attn_tok,
        comm_per_stage_tokens_bytes=float(model.hidden_size * ACTIVATION_BYTES),
    )


def decode_itl_s(
    model: ModelSpec,
    parallel: Parallelism,
    rates: Rates,
    dm: DecodeModel,
    concurrency: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token latency (s) with ``concurrency`` sequences decoding in one replica.

    Returns ``(itl_s, bound)``; bound is "memory" or "compute" per entry.
    """
    C = np.asarray(concurrency, dtype=float)
    pp = parallel.pp
    micro = C / pp  # sequences per micro-batch (PP keeps pp micro-batches in flight)
    per_group = micro / parallel.dp_attention  # sequences whose KV one GPU reads
    if model.is_moe:
        frac = 1.0 - (1.0 - model.experts_per_token / model.num_experts) ** np.maximum(micro, 1)
        expert = dm.expert_weight_bytes * frac
    else:
        expert = np.zeros_like(C)
    weight_s = (dm.dense_weight_bytes + expert) / (rates.hbm_gbps * 1e9)
    kv_s = per_group * dm.kv_bytes_per_sequence / (rates.kv_read_gbps * 1e9)
    mem_s = weight_s + kv_s
    compute_s = micro * dm.flops_per_token / (rates.gemm_tflops * 1e12) + (
        per_group * dm.attn_flops_per_token / (rates.attention_tflops * 1e12)
    )
    tokens = np.maximum(micro, 1)
    msg = tokens * dm.comm_per_stage_tokens_bytes
    comm = layer_comm_s(model, parallel, rates, tokens) + p2p_s(msg, pp, rates)
    itl = pp * (np.maximum(mem_s, compute_s) + comm)
    return itl, np.where(compute_s > mem_s, "compute", "memory")


@dataclass(frozen=True)
class ServingCurve:
    """Per-replica figures versus concurrency C (numpy arrays of equal length)."""

    concurrency: np.ndarray
    itl_s: np.ndarray
    cycle_s: np.ndarray
    requests_per_s: np.ndarray
    output_tokens_per_s: np.ndarray
    prefill_utilization: np.ndarray
    ttft_mean_s: np.ndarray
    ttft_burst_s: np.ndarray
    decode_bound: np.ndarray  # "memory" | "compute" per C


def serving_curve(
    prefill_s: float,
    output_tokens: int,
    concurrency: np.ndarray,
    itl_s: np.ndarray,
    decode_bound: np.ndarray,
) -> ServingCurve:
    """Closed-loop curve: cycle = C x T_prefill + O x ITL(C); X = C / cycle."""
    C = np.asarray(concurrency, dtype=float)
    cycle = C * prefill_s + output_tokens * itl_s
    X = C / cycle
    u = np.clip(C * prefill_s / cycle, 0.0, 0.999999)
    # M/D/1 mean wait, capped at the mean wait of a burst of C calls: the M/D/1 queue has an
    # unbounded population, a closed loop of C calls has at most C - 1 prefills ahead of a
    # call (none at C = 1), so the wait is at most the mean of the burst, (C - 1) / 2 x T.
    wait = np.minimum(u / (2.0 * (1.0 - u)), (C - 1.0) / 2.0)
    ttft = prefill_s * (1.0 + wait)
    return ServingCurve(
        concurrency=np.asarray(concurrency),
        itl_s=itl_s,
        cycle_s=cycle,
        requests_per_s=X,
        output_tokens_per_s=X * output_tokens,
        prefill_utilization=u,
        ttft_mean_s=ttft,
        ttft_burst_s=C * prefill_s,
        decode_bound=decode_bound,
    )


def throughput_optimal(curve: ServingCurve, limit: int, share: float = 0.95) -> int:
    """Smallest C <= limit reaching ``share`` of the best throughput within the limit."""
    if limit < 1:
        return 0
    X = curve.requests_per_s[:limit]
    best = float(X.max())
    return int(curve.concurrency[int(np.argmax(X >= share * best))])


def knee(curve: ServingCurve, limit: int) -> int:
    """C <= limit maximising power X(C) / latency(C) = X^2 / C (Kleinrock).

    Past it, each added sequence raises the per-request latency by more than it raises
    the throughput: more concurrency mostly adds latency (queueing for prefill, longer
    decode steps). In closed form ``C* = O x ITL(0) / (T_prefill + O x dITL/dC)``.
    """
    if limit < 1:
        return 0
    X = curve.requests_per_s[:limit]
    C = curve.concurrency[:limit].astype(float)
    return int(curve.concurrency[int(np.argmax(X * X / C))])


def decode_scale(rates: Rates, predicted_at_batch_s: float) -> float | None:
    """Measured / predicted decode step time at the trace's batch size (None: unmeasured)."""
    if rates.decode_step_us is None or predicted_at_batch_s <= 0:
        return None
    scale = rates.decode_step_us * 1e-6 / predicted_at_batch_s
    return scale if math.isfinite(scale) and scale > 0 else None
