"""``plan()``: KV memory bound + time model -> a :class:`CapacityPlan`.

>>> from analyzer.capacity import load_model, load_gpu, Parallelism, Workload, plan
>>> p = plan(load_model("llama-3.1-70b"), load_gpu("h100"), Parallelism(tp=8),
...          Workload(context_tokens=40_000, output_tokens=1_000, agents=16))
>>> p.max_concurrency_memory, p.recommended_stable, p.to_dict()["knee_concurrency"]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzer.capacity import kv
from analyzer.capacity.calibration import Rates, resolve_rates
from analyzer.capacity.specs import (
    Calibration,
    Efficiency,
    GPUSpec,
    MemoryBudget,
    ModelSpec,
    Parallelism,
    Workload,
    dtype_bytes,
)
from analyzer.capacity.timing import (
    DecodeModel,
    PrefillTime,
    ServingCurve,
    decode_itl_s,
    decode_model,
    decode_scale,
    knee,
    prefill_time,
    serving_curve,
    throughput_optimal,
    weights_bytes_per_gpu,
)
from analyzer.errors import BadInputError
from analyzer.lazy import numpy as np  # imported on first use (fast CLI start)

PLAN_SCHEMA = "trace-analyzer capacity plan v1"
VLLM_BLOCK_SIZE = 16
_MAX_CURVE = 65_536
_TABLE_POINTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)


@dataclass(frozen=True)
class ConcurrencyRow:
    """One row of the TTFT/throughput table (per replica)."""

    concurrency: int
    fits_memory: bool
    ttft_mean_s: float
    ttft_burst_s: float
    itl_s: float
    e2e_s: float
    requests_per_s: float
    output_tokens_per_s: float
    prefill_utilization: float
    decode_bound: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WorkloadEstimate:
    """What the requested agents get: per-replica concurrency and the time to finish."""

    concurrency_per_replica: int
    running_per_replica: int
    queued_per_replica: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_mean_s: float
    call_latency_s: float
    total_calls: int
    makespan_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CapacityPlan:
    """The planner's answer. Per-GPU and per-replica figures; ``to_dict()`` for JSON."""

    model: ModelSpec
    gpu: GPUSpec
    parallel: Parallelism
    workload: Workload
    budget: MemoryBudget
    kv_dtype: str
    efficiency: Efficiency
    calibration: Calibration | None
    # KV memory
    kv_bytes_per_token_per_layer: int
    kv_bytes_per_token: int
    kv_heads_per_gpu: int
    layers_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    kv_bytes_per_sequence_per_gpu: int
    weights_bytes_per_gpu: float
    kv_budget_bytes_per_gpu: float
    max_concurrency_memory: int
    simple_form: kv.SimpleFormCheck
    simple_form_bound: kv.SimpleFormBound
    sglang: kv.SGLangEstimate
    vllm: kv.VLLMEstimate
    # time model
    rates: Rates
    prefill: PrefillTime
    decode: DecodeModel
    decode_scale: float | None
    curve: ServingCurve
    table: tuple[ConcurrencyRow, ...]
    throughput_optimal_concurrency: int
    knee_concurrency: int
    recommended_stable: int
    recommended_upper: int
    estimate: WorkloadEstimate
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: where each input came from (``plan --from-report``): model, gpu, tp, pp, ep, dp, ...
    input_sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def rule_of_thumb(self) -> dict[str, int]:
        """Design-notes rule: 2 x R stable, 4 x R upper bound for long context."""
        r = self.parallel.replicas
        return {"stable": 2 * r, "upper": 4 * r}

    def row(self, concurrency: int) -> ConcurrencyRow:
        """The table row for any concurrency (per replica) within the computed curve."""
        return _row(self.curve, concurrency, self.max_concurrency_memory)

    def curve_points(self, max_points: int = 200) -> list[ConcurrencyRow]:
        """Rows for charts: up to ``max_points`` concurrencies, log-spaced over the curve.

        Always includes 1, the knee, the throughput optimum and the memory bound.
        """
        top = int(self.curve.concurrency[-1])
        grid = np.unique(np.geomspace(1, top, num=max(2, max_points)).round().astype(int))
        marks = (self.knee_concurrency, self.throughput_optimal_concurrency)
        extra = {c for c in (*marks, self.max_concurrency_memory) if 1 <= c <= top}
        return [self.row(int(c)) for c in sorted(set(grid.tolist()) | extra)]

    def to_dict(self) -> dict[str, Any]:
        r = self.parallel.replicas
        return {
            "schema": PLAN_SCHEMA,
            "model": self.model.to_dict(),
            "gpu": self.gpu.to_dict(),
            "parallelism": self.parallel.to_dict(),
            "workload": self.workload.to_dict(),
            "memory_budget": self.budget.to_dict(),
            "kv_dtype": self.kv_dtype,
            "kv_bytes_per_token_per_layer": self.kv_bytes_per_token_per_layer,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_heads_per_gpu": self.kv_heads_per_gpu,
            "layers_per_gpu": self.layers_per_gpu,
            "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token_per_gpu,
            "kv_bytes_per_sequence_per_gpu": self.kv_bytes_per_sequence_per_gpu,
            "weights_bytes_per_gpu": self.weights_bytes_per_gpu,
            "kv_budget_bytes_per_gpu": self.kv_budget_bytes_per_gpu,
            "max_concurrency_memory": self.max_concurrency_memory,
            "max_concurrency_memory_total": self.max_concurrency_memory * r,
            "simple_form": self.simple_form.to_dict() | {"bound": self.simple_form_bound.to_dict()},
            "sglang": self.sglang.to_dict(),
            "vllm": self.vllm.to_dict(),
            "rates": self.rates.to_dict(),
            "calibrated_from_trace": list(self.rates.measured),
            "decode_scale": self.decode_scale,
            "prefill": self.prefill.to_dict(),
            "decode": self.decode.to_dict(),
            "ttft_throughput_table": [row.to_dict() for row in self.table],
            "throughput_optimal_concurrency": self.throughput_optimal_concurrency,
            "knee_concurrency": self.knee_concurrency,
            "recommended_concurrency": {
                "stable": self.recommended_stable * r,
                "upper": self.recommended_upper * r,
                "per_replica": {"stable": self.recommended_stable, "upper": self.recommended_upper},
                "basis": "stable = knee (max throughput/latency), upper = 95% of the best "
                "throughput within the KV memory bound; per replica x R",
            },
            "rule_of_thumb": self.rule_of_thumb,
            "workload_estimate": self.estimate.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "input_sources": dict(self.input_sources),
        }


def _row(curve: ServingCurve, c: int, c_mem: int) -> ConcurrencyRow:
    i = int(np.searchsorted(curve.concurrency, c))
    if i >= len(curve.concurrency) or int(curve.concurrency[i]) != c:
        raise ValueError(f"concurrency {c} is outside the computed curve")
    return ConcurrencyRow(
        concurrency=c,
        fits_memory=c <= c_mem,
        ttft_mean_s=float(curve.ttft_mean_s[i]),
        ttft_burst_s=float(curve.ttft_burst_s[i]),
        itl_s=float(curve.itl_s[i]),
        e2e_s=float(curve.cycle_s[i]),
        requests_per_s=float(curve.requests_per_s[i]),
        output_tokens_per_s=float(curve.output_tokens_per_s[i]),
        prefill_utilization=float(curve.prefill_utilization[i]),
        decode_bound=str(curve.decode_bound[i]),
    )


def _gpu_name_mismatch(gpu: GPUSpec, measured_on: str | None) -> bool:
    if not measured_on:
        return False
    have = measured_on.lower().replace(" ", "").replace("-", "")
    keys = [gpu.name, *gpu.aliases]
    stems = {k.lower().replace("-", "").replace(" ", "")[:4] for k in keys}
    return not any(s and s in have for s in stems)


def plan(
    model: ModelSpec,
    gpu: GPUSpec,
    parallel: Parallelism | None = None,
    workload: Workload | None = None,
    budget: MemoryBudget | None = None,
    calibration: Calibration | None = None,
    kv_dtype: str = "bf16",
    efficiency: Efficiency | None = None,
) -> CapacityPlan:
    """Plan one deployment: KV memory bound, time model, recommended concurrency.

    All inputs are typed specs; ``calibration`` (from :func:`load_report_calibration` /
    :func:`load_hardware_profile`) replaces datasheet rates with measured ones.
    """
    parallel = parallel or Parallelism()
    workload = workload or Workload()
    budget = budget or MemoryBudget()
    efficiency = efficiency or Efficiency()
    for value, cls in (
        (model, ModelSpec),
        (gpu, GPUSpec),
        (parallel, Parallelism),
        (workload, Workload),
        (budget, MemoryBudget),
        (efficiency, Efficiency),
    ):
        if not isinstance(value, cls):
            raise TypeError(f"plan() expected a {cls.__name__}, got {type(value).__name__}")
    b = dtype_bytes(kv_dtype)
    if parallel.pp > model.num_layers:
        raise BadInputError(f"pp {parallel.pp} exceeds the model's {model.num_layers} layers")
    warnings: list[str] = []
    notes: list[str] = list(model.notes)

    # ---- KV memory -------------------------------------------------------------------
    per_layer = kv.kv_bytes_per_token_per_layer(model, kv_dtype)
    per_token = kv.kv_bytes_per_token(model, kv_dtype)
    heads_gpu = kv.kv_heads_per_gpu(model, parallel)
    layers_gpu = kv.layers_per_gpu(model, parallel)
    per_token_gpu = kv.kv_bytes_per_token_per_layer_per_gpu(model, parallel, kv_dtype) * kv.kv_layers_per_gpu(
        model, parallel)
    S = workload.context_tokens
    seq_gpu = kv.kv_bytes_per_sequence_per_gpu(model, parallel, S, kv_dtype)
    weights_gpu = weights_bytes_per_gpu(model, parallel)
    kv_budget = budget.kv_bytes_per_gpu(gpu, weights_gpu)
    c_mem = kv.max_concurrency_memory(kv_budget, seq_gpu, parallel)
    if weights_gpu > gpu.memory_bytes:
        warnings.append(
            f"weights need {weights_gpu / 1e9:.1f} GB per GPU, more than the "
            f"{gpu.memory_gb:g} GB of a {gpu.name}: use more GPUs (TP/PP) or smaller weights"
        )
    elif kv_budget <= 0:
        warnings.append(
            f"no memory left for KV: {budget.describe()} leaves {kv_budget / 1e9:.1f} GB "
            f"per GPU after {weights_gpu / 1e9:.1f} GB of weights"
        )
    elif budget.kv_budget_gb is not None and weights_gpu + kv_budget > gpu.memory_bytes:
        warnings.append(
            f"weights ({weights_gpu / 1e9:.1f} GB) + the explicit KV budget "
            f"({kv_budget / 1e9:.1f} GB) exceed the {gpu.memory_gb:g} GB of a {gpu.name}"
        )
    if c_mem == 0 and kv_budget > 0 and weights_gpu <= gpu.memory_bytes:
        warnings.append(
            f"one sequence of {S:,} tokens needs {seq_gpu / 1e9:.2f} GB per GPU, more than "
            f"the {kv_budget / 1e9:.2f} GB KV budget"
        )
    if model.attention == "mha" and model.num_kv_heads < parallel.attn_tp:
        notes.append(
            f"TP {parallel.attn_tp} > {model.num_kv_heads} KV heads: each GPU keeps one KV "
            f"head, so KV is replicated {parallel.attn_tp // model.num_kv_heads}x across the "
            "TP group"
        )
    if model.attention == "mha" and (
        model.num_kv_heads % parallel.attn_tp and parallel.attn_tp % model.num_kv_heads
    ):
        warnings.append(
            f"{model.num_kv_heads} KV heads do not split evenly over attention TP "
            f"{parallel.attn_tp}; SGLang/vLLM reject or pad this layout"
        )
    if model.attention == "mla" and parallel.attn_tp > 1:
        notes.append(
            f"MLA: the KV latent is not sharded by TP; each of the {parallel.attn_tp} GPUs of "
            "an attention group holds it whole (DP attention, --enable-dp-attention, "
            "divides sequences over groups instead)"
        )
    if model.max_position_embeddings and S > model.max_position_embeddings:
        warnings.append(
            f"context {S:,} exceeds the model's max_position_embeddings "
            f"{model.max_position_embeddings:,}"
        )
    if model.sliding_window and model.swa_layer_ids:
        notes.append(
            f"{len(model.swa_layer_ids)} of {model.num_layers} layers use a sliding window of "
            f"{model.sliding_window:,} tokens: their KV is capped at the window"
        )

    r_ratio = model.num_kv_heads / model.num_heads
    simple = kv.simple_form_check(model, kv_dtype)
    simple_bound = kv.simple_form_bound(
        S, model.num_layers, model.hidden_size, r_ratio, b, parallel.pp, max(kv_budget, 0.0)
    )
    if simple.verdict != "exact":
        notes.append(f"design-notes form 2 x H x r x b {simple.verdict}: {simple.explanation}")

    sglang = kv.sglang_estimate(
        model, parallel, kv_budget, S, kv_dtype, budget.mem_fraction_if_used
    )
    vllm = kv.vllm_estimate(model, parallel, kv_budget, S, kv_dtype, VLLM_BLOCK_SIZE)

    # ---- time model ------------------------------------------------------------------
    gpn = gpu.gpus_per_node
    tp_cross = parallel.tp > gpn
    pp_cross = parallel.tp * parallel.pp > gpn
    if tp_cross:
        warnings.append(f"TP {parallel.tp} spans nodes of {gpn} GPUs: all-reduce over the network")
    rates = resolve_rates(gpu, model, efficiency, calibration, pp_cross, tp_cross)
    if calibration is not None:
        notes.extend(calibration.notes)
        preset_differs = calibration.gpu_preset is not None and (
            calibration.gpu_preset.lower() not in {gpu.name, *gpu.aliases}
        )
        mismatch = preset_differs or _gpu_name_mismatch(gpu, calibration.gpu_name)
        if mismatch and not calibration.is_empty():
            warnings.append(
                f"calibration was measured on "
                f"{calibration.gpu_name or calibration.gpu_preset!r} but the plan is for "
                f"{gpu.name}: measured rates may not transfer"
            )
    pf = prefill_time(model, parallel, workload, rates)
    dm = decode_model(model, parallel, workload, kv_dtype)
    agents_per_replica = math.ceil(workload.agents / parallel.replicas)
    top = int(min(max(c_mem, agents_per_replica, 4 * 1), _MAX_CURVE))
    C = np.arange(1, top + 1)
    itl, bound = decode_itl_s(model, parallel, rates, dm, C)
    scale = None
    if rates.decode_step_us is not None:
        bs = max(1.0, float(rates.decode_batch_size or 1.0))
        pred, _ = decode_itl_s(model, parallel, rates, dm, np.array([bs]))
        scale = decode_scale(rates, float(pred[0]))
        if scale is not None:
            itl = itl * scale
            notes.append(
                f"decode step calibrated: trace {rates.decode_step_us:g} us at batch {bs:g} vs "
                f"model {pred[0] * 1e6:.0f} us -> all decode steps x {scale:.2f} (assumes the "
                "trace ran this model and layout at a similar context)"
            )
            if not 0.5 <= scale <= 2.0:
                warnings.append(
                    f"trace decode step differs from the model by {scale:.2f}x: check that the "
                    "trace ran the same model, parallelism and context"
                )
    curve = serving_curve(pf.total_s, workload.output_tokens, C, itl, bound)
    limit = min(c_mem, top)
    opt = throughput_optimal(curve, limit)
    kn = knee(curve, limit)
    stable, upper = kn, max(opt, kn)

    points = sorted(
        {p for p in _TABLE_POINTS if p <= top}
        | {c for c in (kn, opt, limit, agents_per_replica, 2, 4) if 1 <= c <= top}
    )
    table = tuple(_row(curve, c, c_mem) for c in points)

    # ---- the requested workload ------------------------------------------------------
    running = max(1, min(agents_per_replica, c_mem)) if c_mem else agents_per_replica
    row = _row(curve, running, c_mem)
    x_total = row.requests_per_s * parallel.replicas
    total_calls = workload.agents * workload.calls_per_agent
    est = WorkloadEstimate(
        concurrency_per_replica=agents_per_replica,
        running_per_replica=running,
        queued_per_replica=max(0, agents_per_replica - running),
        requests_per_s=x_total,
        output_tokens_per_s=row.output_tokens_per_s * parallel.replicas,
        ttft_mean_s=row.ttft_mean_s,
        call_latency_s=agents_per_replica / row.requests_per_s,
        total_calls=total_calls,
        makespan_s=total_calls / x_total,
    )
    R = parallel.replicas
    if workload.agents > 4 * R:
        warnings.append(
            f"{workload.agents} agents exceed 4 x R = {4 * R} (rule of thumb upper bound for "
            f"long context); the computed upper bound for this workload is {upper * R}"
        )
    if c_mem and agents_per_replica > c_mem:
        warnings.append(
            f"{agents_per_replica} concurrent calls per replica exceed the KV memory bound of "
            f"{c_mem}: {agents_per_replica - c_mem} wait in the queue (or get retracted)"
        )
    elif c_mem and agents_per_replica > upper:
        warnings.append(
            f"{agents_per_replica} concurrent calls per replica are past the throughput-optimal "
            f"point ({upper}): the extra ones add latency, not throughput"
        )
    notes.append(
        "agents are counted as always having a call in flight (no tool time between calls)"
    )
    return CapacityPlan(
        model=model,
        gpu=gpu,
        parallel=parallel,
        workload=workload,
        budget=budget,
        kv_dtype=kv_dtype,
        efficiency=efficiency,
        calibration=calibration,
        kv_bytes_per_token_per_layer=per_layer,
        kv_bytes_per_token=per_token,
        kv_heads_per_gpu=heads_gpu,
        layers_per_gpu=layers_gpu,
        kv_bytes_per_token_per_gpu=per_token_gpu,
        kv_bytes_per_sequence_per_gpu=seq_gpu,
        weights_bytes_per_gpu=weights_gpu,
        kv_budget_bytes_per_gpu=kv_budget,
        max_concurrency_memory=c_mem,
        simple_form=simple,
        simple_form_bound=simple_bound,
        sglang=sglang,
        vllm=vllm,
        rates=rates,
        prefill=pf,
        decode=dm,
        decode_scale=scale,
        curve=curve,
        table=table,
        throughput_optimal_concurrency=opt,
        knee_concurrency=kn,
        recommended_stable=stable,
        recommended_upper=upper,
        estimate=est,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )
