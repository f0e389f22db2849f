"""The capacity-planning page as data, from ``analyzer.capacity``'s public API.

    >>> page = capacity_page(CapacityInputs(model="llama-3.1-70b", gpu="h100-sxm", tp=8))  # doctest: +SKIP
    >>> page.metrics[0].value, page.figure                                                   # doctest: +SKIP

With a report dict (the trace the user just analysed) and ``calibrate=True``, the measured
rates of that trace replace the datasheet ones (``calibration_from_report``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..render import charts
from .page import Download, Metric


@dataclass(frozen=True)
class CapacityInputs:
    """What the page asks for (the same as ``trace-analyzer plan`` options)."""

    model: str = "llama-3.1-70b"
    gpu: str = "h100-sxm"
    tp: int = 8
    pp: int = 1
    replicas: int = 1
    context_tokens: int = 40_000
    output_tokens: int = 512
    agents: int = 16
    calls_per_agent: int = 1
    kv_dtype: str = "bf16"
    mem_fraction: float = 0.88
    calibrate: bool = False


@dataclass(frozen=True)
class CapacityPage:
    metrics: list[Metric]
    figure: Any
    table: pd.DataFrame
    warnings: list[str]
    notes: list[str]
    calibrated: list[str]
    downloads: list[Download]
    plan_dict: dict[str, Any] = field(default_factory=dict)


def _kb(n: float) -> str:
    return f"{n / 1e3:,.1f} kB"


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def _download(label: str, name: str, mime: str, fn: Callable[[], str]) -> Download:
    return Download(label, name, mime, fn)


def capacity_page(inputs: CapacityInputs, report: Mapping[str, Any] | None = None) -> CapacityPage:
    """Run the planner for ``inputs``; raises ``BadInputError`` for impossible layouts."""
    from .. import capacity as cap

    model = cap.load_model(inputs.model)
    gpu = cap.load_gpu(inputs.gpu)
    calibration = None
    if inputs.calibrate and report is not None:
        calibration = cap.calibration_from_report(report, "the analysed trace")
    p = cap.plan(
        model, gpu,
        cap.Parallelism(tp=inputs.tp, pp=inputs.pp, replicas=inputs.replicas),
        cap.Workload(context_tokens=inputs.context_tokens, output_tokens=inputs.output_tokens,
                     agents=inputs.agents, calls_per_agent=inputs.calls_per_agent),
        cap.MemoryBudget(mem_fraction=inputs.mem_fraction),
        calibration=calibration, kv_dtype=inputs.kv_dtype,
    )
    r = p.parallel.replicas
    thumb = p.rule_of_thumb
    metrics = [
        Metric("KV per token", _kb(p.kv_bytes_per_token),
               f"{p.kv_bytes_per_token:,} B over all {model.num_layers} layers ({inputs.kv_dtype}); "
               f"{p.kv_bytes_per_token_per_layer:,} B per layer"),
        Metric("KV / sequence / GPU", _gb(p.kv_bytes_per_sequence_per_gpu),
               f"{inputs.context_tokens:,} tokens on {p.layers_per_gpu} layers and "
               f"{p.kv_heads_per_gpu} KV head(s) per GPU"),
        Metric("Memory bound", f"{p.max_concurrency_memory:,}",
               f"concurrent sequences per replica that fit in KV memory: KV budget {_gb(p.kv_budget_bytes_per_gpu)} per GPU after {_gb(p.weights_bytes_per_gpu)} of weights"),
        Metric("Recommended", f"{p.recommended_stable * r:,} – {p.recommended_upper * r:,}",
               "stable (knee) – upper (95% of the best throughput within memory), all replicas"),
        Metric("Rule of thumb", f"{thumb['stable']} – {thumb['upper']}",
               "2 x R stable, 4 x R upper bound for long context (R replicas)"),
    ]
    points = [row.to_dict() for row in p.curve_points()]
    marks = {"knee": p.knee_concurrency, "throughput optimum": p.throughput_optimal_concurrency,
             "KV memory bound": p.max_concurrency_memory,
             "requested": p.estimate.concurrency_per_replica}
    fig = charts.capacity_figure(points, marks, rule_of_thumb=(2, 4))
    table = pd.DataFrame([row.to_dict() for row in p.table]).rename(columns={
        "concurrency": "concurrency / replica", "fits_memory": "fits KV memory",
        "ttft_mean_s": "TTFT mean (s)", "ttft_burst_s": "TTFT burst (s)", "itl_s": "ITL (s)",
        "e2e_s": "call latency (s)", "requests_per_s": "requests/s", "output_tokens_per_s": "output tokens/s",
        "prefill_utilization": "prefill utilisation", "decode_bound": "decode bound by"})
    stem = f"capacity-{model.name}-{gpu.name}-tp{inputs.tp}"
    downloads = [
        _download("Markdown", f"{stem}.md", "text/markdown", lambda: cap.render_markdown(p)),
        _download("JSON", f"{stem}.json", "application/json", lambda: cap.render_json(p)),
    ]
    return CapacityPage(metrics=metrics, figure=fig, table=table, warnings=list(p.warnings),
                        notes=list(p.notes), calibrated=list(p.rates.measured), downloads=downloads,
                        plan_dict=p.to_dict())
