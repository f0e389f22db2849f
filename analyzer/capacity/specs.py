"""Typed inputs of the capacity planner: model, GPU, parallelism, workload, memory budget.

Units are in the names. ``GB`` is 10^9 bytes throughout (as in the design notes); ``GiB``
(2^30) is only used where SGLang itself counts in GiB. Bandwidths ``_gbps`` are GB/s
(10^9 bytes per second), compute rates ``_tflops`` are 10^12 FLOP/s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from analyzer.errors import BadInputError

#: bytes per element of the supported KV / weight dtypes.
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp8": 1}


#: Bytes per weight of the formats expert weights may be stored in (``expert_weight_dtype``):
#: MXFP4 (OCP microscaling) = 4-bit E2M1 values + one 8-bit E8M0 scale per block of 32
#: = 4.25 bits per weight.
EXPERT_WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype`` ("bf16", "fp16", "fp8")."""
    try:
        return DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise BadInputError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)})") from None


@dataclass(frozen=True)
class ModelSpec:
    """The dimensions of a decoder-only transformer that decide KV memory and time.

    ``attention`` is ``"mha"`` (multi-head / grouped-query: K and V per KV head) or
    ``"mla"`` (DeepSeek multi-head latent attention: one compressed latent of
    ``kv_lora_rank + qk_rope_head_dim`` per token per layer, shared by all heads).
    ``swa_layer_ids`` are the layers that use a sliding window of ``sliding_window`` tokens.
    ``total_params`` / ``active_params`` count every weight (embeddings included);
    ``params_source`` says where they came from ("config formula", "preset", "explicit",
    "estimated"). ``attention_params`` (all layers), ``expert_params`` (routed experts, all
    layers), ``embedding_params`` (input table) and ``lm_head_params`` split the total.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    v_head_dim: int
    vocab_size: int
    total_params: float
    active_params: float
    attention: str = "mha"
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    sliding_window: int | None = None
    swa_layer_ids: tuple[int, ...] = ()
    #: hybrid linear attention (Qwen3-Next Gated DeltaNet): these layers keep no KV cache but
    #: a fixed recurrent state of ``linear_state_bytes_per_layer`` per sequence (TP 1).
    linear_attention_layer_ids: tuple[int, ...] = ()
    linear_state_bytes_per_layer: int = 0
    #: DeepSeek sparse attention (V3.2): the indexer's key cache, bytes per token per layer
    #: (FP8 key + FP32 scale per 128 values, whatever the KV dtype), and the top-k tokens
    #: each query attends to.
    indexer_bytes_per_token_per_layer: int = 0
    sparse_topk: int | None = None
    intermediate_size: int = 0
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_moe_layers: int = 0
    tie_word_embeddings: bool = False
    attention_params: float = 0.0
    expert_params: float = 0.0
    embedding_params: float = 0.0
    lm_head_params: float = 0.0
    max_position_embeddings: int | None = None
    weight_dtype: str = "bf16"
    expert_weight_dtype: str | None = None  # routed experts stored differently (gpt-oss: mxfp4)
    params_source: str = "config formula"
    source: str = ""
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise BadInputError(f"model {self.name!r}: {name} must be a positive integer")
        if self.attention not in ("mha", "mla"):
            raise BadInputError(f"model {self.name!r}: attention must be 'mha' or 'mla'")
        if self.attention == "mla" and self.kv_lora_rank <= 0:
            raise BadInputError(f"model {self.name!r}: MLA needs kv_lora_rank > 0")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise BadInputError(f"model {self.name!r}: sliding_window must be positive")
        if set(self.linear_attention_layer_ids) & set(self.swa_layer_ids) or any(
                i < 0 or i >= self.num_layers for i in self.linear_attention_layer_ids):
            raise BadInputError(f"model {self.name!r}: linear-attention layer ids out of range or sliding")
        if any(i < 0 or i >= self.num_layers for i in self.swa_layer_ids):
            raise BadInputError(f"model {self.name!r}: sliding-window layer id out of range")
        if self.total_params <= 0 or self.active_params <= 0:
            raise BadInputError(f"model {self.name!r}: parameter counts must be positive")
        if self.expert_weight_dtype is not None and self.expert_weight_dtype not in EXPERT_WEIGHT_BYTES:
            raise BadInputError(f"model {self.name!r}: expert_weight_dtype must be one of "
                                f"{', '.join(EXPERT_WEIGHT_BYTES)}")
        if self.num_heads % self.num_kv_heads and self.attention == "mha":
            raise BadInputError(
                f"model {self.name!r}: num_heads {self.num_heads} is not a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )

    @property
    def kv_layers(self) -> int:
        """Layers that keep a KV cache (all but the linear-attention ones)."""
        return self.num_layers - len(self.linear_attention_layer_ids)

    @property
    def attention_label(self) -> str:
        """``MLA``; else ``MHA`` (one KV head per query head), ``MQA`` (one KV head shared by
        all) or ``GQA`` (groups of query heads share a KV head)."""
        if self.attention == "mla":
            return "MLA"
        if self.num_kv_heads == self.num_heads:
            return "MHA"
        return "MQA" if self.num_kv_heads == 1 else "GQA"

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and self.experts_per_token > 0

    @property
    def weight_bytes_per_param(self) -> int:
        return dtype_bytes(self.weight_dtype)

    @property
    def expert_weight_bytes_per_param(self) -> float:
        """Bytes per routed-expert weight: ``expert_weight_dtype`` when set, else the weights'."""
        if self.expert_weight_dtype is None:
            return float(self.weight_bytes_per_param)
        return EXPERT_WEIGHT_BYTES[self.expert_weight_dtype]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attention_label"] = self.attention_label
        d["swa_layer_ids"] = list(self.swa_layer_ids)
        d["linear_attention_layer_ids"] = list(self.linear_attention_layer_ids)
        d["aliases"] = list(self.aliases)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet figures of one accelerator (dense, no sparsity).

    ``nvlink_gbps`` is the datasheet's total (both directions) scale-up bandwidth per GPU;
    the time model uses half of it as the per-direction bus bandwidth of a ring.
    ``network_gbps`` is the scale-out bandwidth per GPU in GB/s (400 Gb/s NIC = 50 GB/s).
    """

    name: str
    memory_gb: float
    hbm_gbps: float
    bf16_tflops: float
    fp8_tflops: float | None = None
    fp16_tflops: float | None = None  # dense matrix peaks per dtype (roofline); None: unknown
    fp4_tflops: float | None = None
    tf32_tflops: float | None = None
    fp32_tflops: float | None = None
    peaks_source: str = ""
    nvlink_gbps: float = 0.0
    network_gbps: float = 0.0
    gpus_per_node: int = 8
    allreduce_latency_us: float = 10.0
    p2p_latency_us: float = 10.0
    vendor: str = ""
    source: str = ""
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("memory_gb", "hbm_gbps", "bf16_tflops"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"GPU {self.name!r}: {name} must be positive")
        if self.fp8_tflops is not None and self.fp8_tflops <= 0:
            raise BadInputError(f"GPU {self.name!r}: fp8_tflops must be positive")
        if self.nvlink_gbps < 0 or self.network_gbps < 0:
            raise BadInputError(f"GPU {self.name!r}: link bandwidths cannot be negative")

    def peak_tflops(self, dtype: str) -> tuple[float | None, str]:
        """``(dense TFLOP/s, dtype it is quoted for)`` of the matrix units for ``dtype``
        ("bf16", "fp16", "fp8", "fp4", "tf32", "fp32", ...); ``(None, "")`` when unknown.
        int8 uses the fp8 rate, int4/fp4 the fp4 rate, fp16 falls back to bf16."""
        dtype = {"int8": "fp8", "uint8": "fp8", "int4": "fp4", "fp64": "fp32"}.get(dtype, dtype)
        table = {"bf16": self.bf16_tflops, "fp16": self.fp16_tflops or self.bf16_tflops,
                 "fp8": self.fp8_tflops, "fp4": self.fp4_tflops, "tf32": self.tf32_tflops,
                 "fp32": self.fp32_tflops}
        v = table.get(dtype)
        return (float(v), dtype) if v else (None, "")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class Parallelism:
    """How one replica is laid out, and how many replicas serve.

    ``tp`` x ``pp`` GPUs per replica. ``dp_attention`` (SGLang ``--dp N
    --enable-dp-attention``) splits the TP group into ``dp_attention`` attention groups of
    ``tp / dp_attention`` GPUs that each hold their own sequences (KV heads are then
    sharded over ``tp / dp_attention`` only; MLA latents are not replicated across groups).
    ``ep`` is the expert-parallel size (must divide ``tp``). ``replicas`` is R, independent
    serving instances (SGLang ``--dp`` without DP attention).
    """

    tp: int = 1
    pp: int = 1
    dp_attention: int = 1
    ep: int = 1
    replicas: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp_attention", "ep", "replicas"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.tp % self.dp_attention:
            raise BadInputError(f"dp-attention size {self.dp_attention} must divide tp {self.tp}")
        if self.tp % self.ep and self.ep % self.tp:
            raise BadInputError(f"ep {self.ep} must divide tp {self.tp} (or be a multiple)")

    @property
    def attn_tp(self) -> int:
        """GPUs that share one sequence's attention (SGLang ``get_attention_tp_size``)."""
        return self.tp // self.dp_attention

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "attn_tp": self.attn_tp,
            "gpus_per_replica": self.gpus_per_replica,
            "gpus_total": self.gpus_per_replica * self.replicas,
        }


@dataclass(frozen=True)
class Workload:
    """The traffic: ``agents`` each issue ``calls_per_agent`` calls one after another.

    Each call carries ``context_tokens`` (S) of prompt and generates ``output_tokens``.
    ``prefix_hit`` is the fraction of the prompt already in the prefix (radix) cache, so
    prefill computes only ``(1 - prefix_hit) x S`` new tokens (they still attend to all S).
    """

    context_tokens: int = 8192
    output_tokens: int = 512
    agents: int = 1
    calls_per_agent: int = 1
    prefix_hit: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.context_tokens, int) or self.context_tokens < 1:
            raise BadInputError("context must be a positive number of tokens")
        if not isinstance(self.output_tokens, int) or self.output_tokens < 1:
            raise BadInputError("output-tokens must be a positive number of tokens")
        if not isinstance(self.agents, int) or self.agents < 1:
            raise BadInputError("agents must be >= 1")
        if not isinstance(self.calls_per_agent, int) or self.calls_per_agent < 1:
            raise BadInputError("calls-per-agent must be >= 1")
        if not 0.0 <= self.prefix_hit < 1.0:
            raise BadInputError("prefix-hit must be in [0, 1)")

    @property
    def new_tokens(self) -> int:
        """Prompt tokens that prefill must compute (at least 1)."""
        return max(1, round(self.context_tokens * (1.0 - self.prefix_hit)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: SGLang's fallback ``mem_fraction_static`` when it cannot read the GPU memory.
DEFAULT_MEM_FRACTION = 0.88


@dataclass(frozen=True)
class MemoryBudget:
    """KV memory per GPU: an explicit ``kv_budget_gb``, or SGLang's ``mem_fraction_static``.

    With a fraction F, the KV pool per GPU is ``F x HBM - weights per GPU`` (SGLang's
    ``rest_memory = available_after_load - total x (1 - F)``, taking the memory in use after
    loading as the weights). Neither given: F = 0.88 (SGLang's fallback default).
    """

    kv_budget_gb: float | None = None
    mem_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.kv_budget_gb is not None and self.mem_fraction is not None:
            raise BadInputError("give either kv-budget-gb or mem-fraction, not both")
        if self.kv_budget_gb is not None and not self.kv_budget_gb > 0:
            raise BadInputError("kv-budget-gb must be positive")
        if self.mem_fraction is not None and not 0.0 < self.mem_fraction <= 1.0:
            raise BadInputError("mem-fraction must be in (0, 1]")

    @property
    def mem_fraction_if_used(self) -> float | None:
        """The fraction the budget is computed from, None with an explicit budget."""
        return None if self.kv_budget_gb is not None else self.effective_mem_fraction

    @property
    def effective_mem_fraction(self) -> float:
        return DEFAULT_MEM_FRACTION if self.mem_fraction is None else self.mem_fraction

    def kv_bytes_per_gpu(self, gpu: GPUSpec, weights_bytes_per_gpu: float) -> float:
        """Bytes per GPU left for the KV pool (may be <= 0: the weights do not fit)."""
        if self.kv_budget_gb is not None:
            return self.kv_budget_gb * 1e9
        return self.effective_mem_fraction * gpu.memory_bytes - weights_bytes_per_gpu

    def describe(self) -> str:
        if self.kv_budget_gb is not None:
            return f"explicit KV budget {self.kv_budget_gb:g} GB per GPU"
        src = "given" if self.mem_fraction is not None else "default"
        return f"mem_fraction_static {self.effective_mem_fraction:g} ({src}) x HBM - weights"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_budget_gb": self.kv_budget_gb,
            "mem_fraction": self.effective_mem_fraction if self.kv_budget_gb is None else None,
            "describe": self.describe(),
        }


@dataclass(frozen=True)
class Efficiency:
    """Fractions of datasheet peak that the time model assumes when nothing was measured."""

    gemm: float = 0.6
    attention: float = 0.45
    hbm: float = 0.8
    link: float = 0.7

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not 0.0 < v <= 1.0:
                raise BadInputError(f"{f.name} efficiency must be in (0, 1], got {v}")


@dataclass(frozen=True)
class Calibration:
    """Rates measured by a trace or a hardware profile; ``None`` = not measured.

    All rates are per GPU. ``gpu_name`` is the device the trace ran on, ``gpu_preset`` the
    planner preset the analyzer matched it to (used when no ``--gpu`` is given). ``sources`` maps each field that is set to where it came from.
    """

    gpu_name: str | None = None
    gpu_preset: str | None = None
    gemm_tflops: float | None = None
    attention_prefill_tflops: float | None = None
    hbm_gbps: float | None = None
    kv_read_gbps: float | None = None
    decode_step_us: float | None = None
    decode_batch_size: float | None = None
    allreduce_gbps: float | None = None
    allreduce_us_per_mb: float | None = None
    allreduce_latency_us: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    RATE_FIELDS = (
        "gemm_tflops",
        "attention_prefill_tflops",
        "hbm_gbps",
        "kv_read_gbps",
        "decode_step_us",
        "decode_batch_size",
        "allreduce_gbps",
        "allreduce_us_per_mb",
        "allreduce_latency_us",
    )

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.RATE_FIELDS)

    def merged_over(self, base: Calibration) -> Calibration:
        """This calibration, with fields it lacks taken from ``base``."""
        values: dict[str, Any] = {}
        sources = dict(base.sources)
        for f in ("gpu_name", "gpu_preset", *self.RATE_FIELDS):
            mine = getattr(self, f)
            values[f] = mine if mine is not None else getattr(base, f)
            if mine is not None and f in self.sources:
                sources[f] = self.sources[f]
        return Calibration(**values, sources=sources, notes=base.notes + self.notes)

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in ("gpu_name", "gpu_preset", *self.RATE_FIELDS)}
        return d | {"sources": dict(self.sources), "notes": list(self.notes)}
