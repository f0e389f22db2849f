"""Capacity planner: how many concurrent long-context calls should one replica serve?

Library API (typed, frozen dataclasses at the boundary; no printing)::

    from analyzer.capacity import (
        load_model, load_gpu, Parallelism, Workload, MemoryBudget, plan, render_markdown,
        load_report_calibration,
    )
    model = load_model("llama-3.1-70b")          # preset, config.json path, or .toml
    gpu = load_gpu("h100")
    p = plan(model, gpu, Parallelism(tp=8), Workload(context_tokens=40_000, agents=16),
             MemoryBudget(mem_fraction=0.88),
             calibration=load_report_calibration("report.json"))
    p.max_concurrency_memory, p.recommended_stable, p.recommended_upper
    p.to_dict()              # JSON-ready dict
    render_markdown(p)       # or render_text / render_json

See docs/capacity-planning.md for the formulas.
"""

from analyzer.capacity.calibration import (
    Rates,
    calibration_from_profile,
    calibration_from_report,
    combine,
    load_hardware_profile,
    load_report_calibration,
    resolve_rates,
)
from analyzer.capacity.kv import (
    SGLangEstimate,
    SimpleFormBound,
    SimpleFormCheck,
    VLLMEstimate,
    kv_bytes_per_sequence_per_gpu,
    kv_bytes_per_token,
    kv_bytes_per_token_per_layer,
    kv_bytes_per_token_per_layer_per_gpu,
    kv_heads_per_gpu,
    max_concurrency_memory,
    sglang_cell_size,
    sglang_estimate,
    sglang_max_total_num_tokens,
    simple_form_bound,
    simple_form_check,
    simple_kv_bytes_per_token_per_layer,
    vllm_estimate,
    vllm_max_concurrency,
    vllm_num_gpu_blocks,
    vllm_page_size_bytes,
)
from analyzer.capacity.planner import CapacityPlan, ConcurrencyRow, WorkloadEstimate, plan
from analyzer.capacity.presets import (
    list_presets,
    load_gpu,
    load_model,
    model_from_dims,
    model_from_hf_config,
    param_counts,
)
from analyzer.capacity.render import (
    render,
    render_json,
    render_markdown,
    render_presets,
    render_text,
)
from analyzer.capacity.specs import (
    Calibration,
    Efficiency,
    GPUSpec,
    MemoryBudget,
    ModelSpec,
    Parallelism,
    Workload,
)

__all__ = [
    "Calibration",
    "CapacityPlan",
    "ConcurrencyRow",
    "Efficiency",
    "GPUSpec",
    "MemoryBudget",
    "ModelSpec",
    "Parallelism",
    "Rates",
    "SGLangEstimate",
    "SimpleFormBound",
    "SimpleFormCheck",
    "VLLMEstimate",
    "Workload",
    "WorkloadEstimate",
    "calibration_from_profile",
    "calibration_from_report",
    "combine",
    "kv_bytes_per_sequence_per_gpu",
    "kv_bytes_per_token",
    "kv_bytes_per_token_per_layer",
    "kv_bytes_per_token_per_layer_per_gpu",
    "kv_heads_per_gpu",
    "list_presets",
    "load_gpu",
    "load_hardware_profile",
    "load_model",
    "load_report_calibration",
    "max_concurrency_memory",
    "model_from_dims",
    "model_from_hf_config",
    "param_counts",
    "plan",
    "render",
    "render_json",
    "render_markdown",
    "render_presets",
    "render_text",
    "resolve_rates",
    "sglang_cell_size",
    "sglang_estimate",
    "sglang_max_total_num_tokens",
    "simple_form_bound",
    "simple_form_check",
    "simple_kv_bytes_per_token_per_layer",
    "vllm_estimate",
    "vllm_max_concurrency",
    "vllm_num_gpu_blocks",
    "vllm_page_size_bytes",
]
