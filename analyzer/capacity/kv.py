"""KV-cache memory: bytes per token, per sequence per GPU, and the concurrency memory bound.

Conventions (docs/capacity-planning.md, "KV memory"):

* MHA/GQA: per token per layer ``kv_heads x (head_dim + v_head_dim) x b`` (= ``2 x kv_heads x
  head_dim x b`` when K and V have the same width), ``head_dim`` from the config when given.
* MLA (DeepSeek-V2/V3/R1): ``(kv_lora_rank + qk_rope_head_dim) x b``; one latent shared by
  all heads, so TP does not shard it: every GPU of an attention group holds all of it.
* Per GPU, KV heads are split over the attention-TP size and each GPU keeps at least one
  (``max(1, kv_heads / attn_tp)``; replicated when TP > kv_heads).
* Pipeline stages hold contiguous blocks of ``ceil(L / PP)`` or ``floor(L / PP)`` layers;
  the fullest stage bounds the replica.
* Sliding-window layers hold at most ``window`` tokens of a sequence.
* Hybrid linear attention (Qwen3-Next): only the full-attention layers hold a KV cache; each
  linear-attention layer holds a fixed recurrent state per sequence (``linear_state_bytes_
  per_layer``, split over attention TP like its heads), whatever the context.
* DeepSeek sparse attention (V3.2): the MLA latent plus the indexer's key cache
  (``indexer_bytes_per_token_per_layer``: FP8 + scale, not split by TP) per token per layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from analyzer.capacity.specs import ModelSpec, Parallelism, dtype_bytes


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def kv_bytes_per_token_per_layer(model: ModelSpec, kv_dtype: str = "bf16") -> int:
    """KV bytes one token adds to one layer, whole model (not divided by TP)."""
    b = dtype_bytes(kv_dtype)
    if model.attention == "mla":
        return (model.kv_lora_rank + model.qk_rope_head_dim) * b + model.indexer_bytes_per_token_per_layer
    return model.num_kv_heads * (model.head_dim + model.v_head_dim) * b


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str = "bf16") -> int:
    """KV bytes one token adds over all KV layers, whole model (no window cap)."""
    return kv_bytes_per_token_per_layer(model, kv_dtype) * model.kv_layers


def linear_state_bytes_per_layer_per_gpu(model: ModelSpec, parallel: Parallelism) -> int:
    """Recurrent state of one sequence in one linear-attention layer on one GPU."""
    return ceil_div(model.linear_state_bytes_per_layer, parallel.attn_tp)


def kv_heads_per_gpu(model: ModelSpec, parallel: Parallelism) -> int:
    """KV heads each GPU stores: ``max(1, ceil(kv_heads / attn_tp))``; MLA: the one latent."""
    if model.attention == "mla":
        return 1
    return max(1, ceil_div(model.num_kv_heads, parallel.attn_tp))


def kv_bytes_per_token_per_layer_per_gpu(
    model: ModelSpec, parallel: Parallelism, kv_dtype: str = "bf16"
) -> int:
    """KV bytes one token adds to one layer on one GPU (after TP sharding/replication)."""
    b = dtype_bytes(kv_dtype)
    if model.attention == "mla":
        return (model.kv_lora_rank + model.qk_rope_head_dim) * b + model.indexer_bytes_per_token_per_layer
    return kv_heads_per_gpu(model, parallel) * (model.head_dim + model.v_head_dim) * b


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """Contiguous layer blocks of each pipeline stage (larger blocks first)."""
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for i in range(pp):
        n = base + (1 if i < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


def layers_per_gpu(model: ModelSpec, parallel: Parallelism) -> int:
    """Layers on the fullest pipeline stage: ``ceil(L / PP)``."""
    return ceil_div(model.num_layers, parallel.pp)


def kv_layers_per_gpu(model: ModelSpec, parallel: Parallelism) -> int:
    """KV-holding layers (not linear attention) on the fullest pipeline stage."""
    linear = set(model.linear_attention_layer_ids)
    return max(sum(1 for i in block if i not in linear) for block in stage_layers(model.num_layers, parallel.pp))


def kv_bytes_per_sequence_per_gpu(
    model: ModelSpec, parallel: Parallelism, context_tokens: int, kv_dtype: str = "bf16"
) -> int:
    """KV bytes of one sequence of ``context_tokens`` on the fullest GPU (window-capped),
    plus the recurrent state of its linear-attention layers."""
    per = kv_bytes_per_token_per_layer_per_gpu(model, parallel, kv_dtype)
    state = linear_state_bytes_per_layer_per_gpu(model, parallel)
    swa = set(model.swa_layer_ids)
    linear = set(model.linear_attention_layer_ids)
    window = model.sliding_window or context_tokens
    capped = min(context_tokens, window)
    best = 0
    for block in stage_layers(model.num_layers, parallel.pp):
        n_swa = sum(1 for i in block if i in swa)
        n_lin = sum(1 for i in block if i in linear)
        tokens = (len(block) - n_swa - n_lin) * context_tokens + n_swa * capped
        best = max(best, per * tokens + n_lin * state)
    return best


def max_concurrency_memory(
    kv_budget_bytes_per_gpu: float, bytes_per_sequence_per_gpu: int, parallel: Parallelism
) -> int:
    """Sequences one replica can hold: ``floor(budget / per-seq) x dp_attention``."""
    if kv_budget_bytes_per_gpu <= 0 or bytes_per_sequence_per_gpu <= 0:
        return 0
    return int(kv_budget_bytes_per_gpu // bytes_per_sequence_per_gpu) * parallel.dp_attention


# --------------------------------------------------------------------------------------
# The simple form of the design notes, and where it goes wrong
# --------------------------------------------------------------------------------------


def simple_kv_bytes_per_token_per_layer(hidden_size: int, r: float, b: int) -> float:
    """Design-notes form ``2 x (H x r) x b``: r = kv_heads / heads (GQA ratio)."""
    return 2 * hidden_size * r * b


@dataclass(frozen=True)
class SimpleFormBound:
    """The design-notes estimate: per token per layer, per sequence per GPU, the bound."""

    kv_bytes_per_token_per_layer: float
    kv_bytes_per_sequence_per_gpu: float
    max_concurrency: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_bytes_per_token_per_layer": self.kv_bytes_per_token_per_layer,
            "kv_bytes_per_sequence_per_gpu": self.kv_bytes_per_sequence_per_gpu,
            "max_concurrency": self.max_concurrency,
        }


def simple_form_bound(
    context_tokens: int,
    num_layers: int,
    hidden_size: int,
    r: float,
    b: int,
    pp: int,
    free_bytes_per_gpu: float,
) -> SimpleFormBound:
    """``S x (L / PP) x 2 x H x r x b`` per sequence per GPU, and ``floor(free / that)``.

    Design notes: S=40,000, L=80, H=16,384, r=1/8, b=2, PP=8 -> 8,192 B per token per layer,
    3.28e9 B (~3.2 GB) per sequence per GPU; 40 GB free -> 12 sequences.
    """
    per_layer = simple_kv_bytes_per_token_per_layer(hidden_size, r, b)
    per_seq = context_tokens * (num_layers / pp) * per_layer
    bound = int(free_bytes_per_gpu // per_seq) if per_seq > 0 else 0
    return SimpleFormBound(per_layer, per_seq, bound)


@dataclass(frozen=True)
class SimpleFormCheck:
    """How the simple form compares with the exact per-token-per-layer KV of a model."""

    simple_bytes: float
    exact_bytes: int
    ratio: float  # simple / exact: > 1 overestimates, < 1 underestimates
    verdict: str  # "exact" | "overestimates" | "underestimates"
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "simple_kv_bytes_per_token_per_layer": self.simple_bytes,
            "exact_kv_bytes_per_token_per_layer": self.exact_bytes,
            "ratio_simple_over_exact": self.ratio,
            "verdict": self.verdict,
            "explanation": self.explanation,
        }


def simple_form_check(model: ModelSpec, kv_dtype: str = "bf16") -> SimpleFormCheck:
    """Compare ``2 x H x (kv_heads/heads) x b`` with the exact KV bytes of ``model``."""
    b = dtype_bytes(kv_dtype)
    r = model.num_kv_heads / model.num_heads
    simple = simple_kv_bytes_per_token_per_layer(model.hidden_size, r, b)
    exact = kv_bytes_per_token_per_layer(model, kv_dtype)
    ratio = simple / exact
    if math.isclose(ratio, 1.0, rel_tol=1e-9):
        verdict = "exact"
        why = (
            f"heads x head_dim = {model.num_heads} x {model.head_dim} = hidden "
            f"{model.hidden_size}, so 2 x H x r x b is exact for this model"
        )
    elif model.attention == "mla":
        verdict = "overestimates" if ratio > 1 else "underestimates"
        why = (
            f"MLA caches one latent of kv_lora_rank + qk_rope_head_dim = "
            f"{model.kv_lora_rank} + {model.qk_rope_head_dim} values per token per layer, "
            f"shared by all {model.num_heads} heads; the simple form counts K and V for "
            f"{model.num_kv_heads} heads over the hidden size ({simple:,.0f} B vs {exact:,} B: "
            f"{verdict} {ratio if ratio > 1 else 1 / ratio:.1f}x)"
        )
    else:
        verdict = "overestimates" if ratio > 1 else "underestimates"
        width = model.num_heads * model.head_dim
        why = (
            f"heads x head_dim = {model.num_heads} x {model.head_dim} = {width:,} != hidden "
            f"{model.hidden_size:,}: each KV head is head_dim wide, not hidden/heads "
            f"({simple:,.0f} B vs {exact:,} B: {verdict} {max(ratio, 1 / ratio):.1f}x)"
        )
    return SimpleFormCheck(simple, exact, ratio, verdict, why)


# --------------------------------------------------------------------------------------
# What SGLang and vLLM compute for the same model
# --------------------------------------------------------------------------------------


def sglang_cell_size(model: ModelSpec, parallel: Parallelism, kv_dtype: str = "bf16") -> int:
    """SGLang ``ModelRunner.get_cell_size_per_token``: KV bytes per token on one GPU.

    MLA: ``(kv_lora_rank + qk_rope_head_dim) x num_layers x elem``; otherwise
    ``get_num_kv_heads(attn_tp) x (head_dim + v_head_dim) x num_layers x elem`` with
    ``get_num_kv_heads(tp) = max(1, total_kv_heads // tp)`` and ``num_layers`` the layers
    of this pipeline stage (``num_effective_layers``).
    """
    b = dtype_bytes(kv_dtype)
    layers = kv_layers_per_gpu(model, parallel)  # hybrid models: the full-attention pool only
    if model.attention == "mla":
        return ((model.kv_lora_rank + model.qk_rope_head_dim) * b
                + model.indexer_bytes_per_token_per_layer) * layers
    heads = max(1, model.num_kv_heads // parallel.attn_tp)
    return heads * (model.head_dim + model.v_head_dim) * layers * b


def sglang_max_total_num_tokens(cell_size: int, kv_budget_bytes_per_gpu: float) -> int:
    """SGLang ``profile_max_num_token``: ``int(rest_memory x 2^30) // cell_size``.

    ``rest_memory`` (GiB) = free after loading - total x (1 - mem_fraction_static); here the
    caller passes that amount in bytes.
    """
    if kv_budget_bytes_per_gpu <= 0:
        return 0
    return int(kv_budget_bytes_per_gpu) // cell_size


@dataclass(frozen=True)
class SGLangEstimate:
    """What SGLang's ``profile_max_num_token`` would compute for this layout."""

    cell_size_bytes: int
    max_total_num_tokens: int
    max_sequences_at_context: int
    mem_fraction_static: float | None
    formula: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sglang_estimate(
    model: ModelSpec,
    parallel: Parallelism,
    kv_budget_bytes_per_gpu: float,
    context_tokens: int,
    kv_dtype: str = "bf16",
    mem_fraction_static: float | None = None,
) -> SGLangEstimate:
    """SGLang's token pool for ``kv_budget_bytes_per_gpu``, and sequences of S it holds."""
    cell = sglang_cell_size(model, parallel, kv_dtype)
    tokens = sglang_max_total_num_tokens(cell, kv_budget_bytes_per_gpu)
    shape = (
        "(kv_lora_rank + qk_rope_head_dim) x layers x elem"
        if model.attention == "mla"
        else "max(1, kv_heads // attn_tp) x (head_dim + v_head_dim) x layers x elem"
    )
    return SGLangEstimate(
        cell_size_bytes=cell,
        max_total_num_tokens=tokens,
        max_sequences_at_context=tokens // context_tokens * parallel.dp_attention,
        mem_fraction_static=mem_fraction_static,
        formula=f"max_total_num_tokens = int(rest_memory_bytes) // cell_size; cell_size = {shape}",
    )


@dataclass(frozen=True)
class VLLMEstimate:
    """What vLLM's KV cache config would compute for this layout."""

    block_size: int
    page_size_bytes: int
    num_gpu_blocks: int
    max_concurrency_at_context: float
    formula: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def vllm_estimate(
    model: ModelSpec,
    parallel: Parallelism,
    kv_budget_bytes_per_gpu: float,
    context_tokens: int,
    kv_dtype: str = "bf16",
    block_size: int = 16,
) -> VLLMEstimate:
    """vLLM's blocks for ``kv_budget_bytes_per_gpu`` and its max concurrency at S."""
    page = vllm_page_size_bytes(model, parallel, kv_dtype, block_size)
    blocks = vllm_num_gpu_blocks(page, kv_layers_per_gpu(model, parallel), kv_budget_bytes_per_gpu)
    shape = (
        "(kv_lora_rank + qk_rope_head_dim) x dtype_size (MLAAttentionSpec)"
        if model.attention == "mla"
        else "num_kv_heads x (head_size + head_size_v) x dtype_size"
    )
    return VLLMEstimate(
        block_size=block_size,
        page_size_bytes=page,
        num_gpu_blocks=blocks,
        max_concurrency_at_context=vllm_max_concurrency(blocks, context_tokens, block_size)
        * parallel.dp_attention,
        formula=f"page_size_bytes = block_size x {shape}; "
        "num_blocks = available // page_size // num_layers",
    )


def vllm_page_size_bytes(
    model: ModelSpec, parallel: Parallelism, kv_dtype: str = "bf16", block_size: int = 16
) -> int:
    """vLLM ``AttentionSpec.page_size_bytes`` of one layer's block.

    Full attention: ``block_size x num_kv_heads x (head_size + head_size_v) x dtype_size`` with
    ``num_kv_heads = max(1, total // tp)``; MLA (``MLAAttentionSpec``): ``block_size x 1 x
    (kv_lora_rank + qk_rope_head_dim) x dtype_size``.
    """
    b = dtype_bytes(kv_dtype)
    if model.attention == "mla":
        return block_size * (model.kv_lora_rank + model.qk_rope_head_dim) * b
    heads = max(1, model.num_kv_heads // parallel.attn_tp)
    return block_size * heads * (model.head_dim + model.v_head_dim) * b


def vllm_num_gpu_blocks(page_size_bytes: int, num_layers: int, available_bytes: float) -> int:
    """vLLM ``get_num_blocks``: ``int(available_memory // page_size // num_layers)``."""
    if available_bytes <= 0:
        return 0
    return int(available_bytes // page_size_bytes // num_layers)


def vllm_max_concurrency(num_blocks: int, max_model_len: int, block_size: int = 16) -> float:
    """vLLM ``get_max_concurrency_for_kv_cache_config``: blocks / blocks per request."""
    return num_blocks / ceil_div(max_model_len, block_size)
