"""Render a :class:`CapacityPlan` as text, Markdown or a JSON-ready dict.

One builder (:func:`_sections`) decides what is shown; the two renderers only lay it out.

    >>> print(render_text(p))        # terminal
    >>> md = render_markdown(p)      # reports, the app
    >>> d = p.to_dict()              # JSON
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from analyzer.capacity.planner import CapacityPlan

_TABLE_HEAD = (
    "concurrency",
    "fits KV",
    "TTFT mean",
    "TTFT burst",
    "ITL",
    "call e2e",
    "calls/s",
    "out tok/s",
    "prefill busy",
    "decode bound",
)


@dataclass
class _Section:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    table: list[tuple[str, ...]] | None = None
    bullets: list[str] = field(default_factory=list)


def _b(x: float) -> str:
    return f"{x:,.0f} B"


def _gb(x: float) -> str:
    return f"{x / 1e9:,.2f} GB"


def _s(x: float) -> str:
    if x == 0:
        return "0"
    if x < 1e-3:
        return f"{x * 1e6:,.0f} us"
    if x < 1:
        return f"{x * 1e3:,.1f} ms"
    return f"{x:,.2f} s"


def _sections(p: CapacityPlan) -> tuple[str, list[_Section]]:
    par, w, m, g = p.parallel, p.workload, p.model, p.gpu
    R = par.replicas
    title = (
        f"Capacity plan: {m.name} on {g.name}, TP {par.tp} x PP {par.pp}"
        + (f" (DP attention {par.dp_attention})" if par.dp_attention > 1 else "")
        + f", {R} replica{'s' if R != 1 else ''} ({par.gpus_per_replica * R} GPUs)"
    )
    out: list[_Section] = []

    wl = _Section("Workload")
    wl.rows = [
        ("agents x calls per agent", f"{w.agents} x {w.calls_per_agent}"),
        ("context S / output tokens", f"{w.context_tokens:,} / {w.output_tokens:,}"),
        ("prefix cache hit", f"{w.prefix_hit:.0%}"),
        ("KV dtype / weight dtype", f"{p.kv_dtype} / {m.weight_dtype}"
         + (f" (experts {m.expert_weight_dtype})" if m.expert_weight_dtype else "")),
        (
            "model",
            (
                f"{m.attention_label}, {m.num_layers} layers, hidden {m.hidden_size:,}, "
                f"{m.num_heads} heads, {m.num_kv_heads} KV heads x {m.head_dim}, "
                f"{m.total_params / 1e9:,.1f}B params ({m.active_params / 1e9:,.1f}B active)"
            ),
        ),
    ]
    out.append(wl)

    mem = _Section("KV memory")
    mem.rows = [
        ("KV per token per layer (whole model)", _b(p.kv_bytes_per_token_per_layer)),
        ("KV per token, all layers (whole model)", _b(p.kv_bytes_per_token)),
        ("KV heads per GPU / layers per GPU", f"{p.kv_heads_per_gpu} / {p.layers_per_gpu}"),
        ("KV per token per GPU", _b(p.kv_bytes_per_token_per_gpu)),
        (
            "KV per sequence per GPU",
            f"{_gb(p.kv_bytes_per_sequence_per_gpu)} ({w.context_tokens:,} tokens)",
        ),
        ("weights per GPU", _gb(p.weights_bytes_per_gpu)),
        ("KV budget per GPU", f"{_gb(p.kv_budget_bytes_per_gpu)} ({p.budget.describe()})"),
        (
            "max concurrent sequences (memory)",
            f"{p.max_concurrency_memory:,} per replica, {p.max_concurrency_memory * R:,} total",
        ),
        (
            "SGLang max_total_num_tokens",
            f"{p.sglang.max_total_num_tokens:,} (cell_size {p.sglang.cell_size_bytes:,} B)",
        ),
        (
            f"vLLM blocks of {p.vllm.block_size} tokens",
            (
                f"{p.vllm.num_gpu_blocks:,} (page {p.vllm.page_size_bytes:,} B per layer), "
                f"max concurrency {p.vllm.max_concurrency_at_context:,.1f}"
            ),
        ),
        (
            "design-notes form 2 x H x r x b",
            f"{_b(p.simple_form.simple_bytes)} per token per layer: {p.simple_form.verdict}"
            + (
                f" ({max(p.simple_form.ratio, 1 / p.simple_form.ratio):.1f}x); "
                f"its bound would be {p.simple_form_bound.max_concurrency:,}"
                if p.simple_form.verdict != "exact"
                else ""
            ),
        ),
    ]
    out.append(mem)

    pf = p.prefill
    tm = _Section("Time model (per replica)")
    c1 = p.table[0]
    tm.rows = [
        (
            "prefill of one call",
            (
                f"{_s(pf.total_s)} (GEMM {_s(pf.gemm_s)}, attention {_s(pf.attention_s)}, "
                f"TP comm {_s(pf.tp_comm_s)}, PP comm {_s(pf.pp_comm_s)})"
            ),
        ),
        ("prefill FLOPs", f"GEMM {pf.gemm_flops:.3g}, attention {pf.attention_flops:.3g}"),
        ("decode step at concurrency 1", _s(c1.itl_s)),
        ("throughput-optimal concurrency", f"{p.throughput_optimal_concurrency} (95% of best)"),
        (
            "knee (past it, concurrency mostly adds latency)",
            f"{p.knee_concurrency}",
        ),
    ]
    tm.table = [_TABLE_HEAD] + [
        (
            str(r.concurrency),
            "yes" if r.fits_memory else "NO",
            _s(r.ttft_mean_s),
            _s(r.ttft_burst_s),
            _s(r.itl_s),
            _s(r.e2e_s),
            f"{r.requests_per_s:.3g}",
            f"{r.output_tokens_per_s:,.0f}",
            f"{r.prefill_utilization:.0%}",
            r.decode_bound,
        )
        for r in p.table
    ]
    out.append(tm)

    rec = _Section("Recommended concurrency (all replicas)")
    rot = p.rule_of_thumb
    rec.rows = [
        (
            "computed: stable / upper",
            (
                f"{p.recommended_stable * R} / {p.recommended_upper * R} "
                f"({p.recommended_stable} / {p.recommended_upper} per replica)"
            ),
        ),
        ("rule of thumb: 2 x R stable / 4 x R upper", f"{rot['stable']} / {rot['upper']}"),
        ("memory bound", f"{p.max_concurrency_memory * R:,}"),
    ]
    e = p.estimate
    rec.rows += [
        (
            "your workload",
            (
                f"{e.running_per_replica} running + {e.queued_per_replica} queued per replica: "
                f"{e.requests_per_s:.3g} calls/s, {e.output_tokens_per_s:,.0f} output tok/s, "
                f"TTFT ~{_s(e.ttft_mean_s)}, call ~{_s(e.call_latency_s)}, "
                f"all {e.total_calls:,} calls in ~{_s(e.makespan_s)}"
            ),
        )
    ]
    out.append(rec)

    rates = _Section("Rates used (per GPU)")
    for name, info in p.rates.to_dict().items():
        mark = " [measured]" if info["measured"] else ""
        rates.rows.append((name, f"{info['value']:,.4g}{mark}  <- {info['source']}"))
    if p.decode_scale is not None:
        rates.rows.append(("decode scale (trace / model)", f"{p.decode_scale:.3f}"))
    out.append(rates)

    if p.input_sources:
        out.append(_Section("Inputs from", rows=[(k, v) for k, v in p.input_sources.items()]))
    if p.warnings:
        out.append(_Section("Warnings", bullets=list(p.warnings)))
    if p.notes:
        out.append(_Section("Notes", bullets=list(p.notes)))
    return title, out


def render_text(p: CapacityPlan) -> str:
    """Plain-text report for a terminal."""
    title, sections = _sections(p)
    lines = [title, "=" * len(title)]
    for sec in sections:
        lines += ["", sec.title, "-" * len(sec.title)]
        width = max((len(k) for k, _ in sec.rows), default=0)
        lines += [f"  {k:<{width}}  {v}" for k, v in sec.rows]
        if sec.table:
            widths = [max(len(row[i]) for row in sec.table) for i in range(len(sec.table[0]))]
            lines.append("")
            for row in sec.table:
                lines.append("  " + "  ".join(c.rjust(wd) for c, wd in zip(row, widths)))
        lines += [f"  - {b}" for b in sec.bullets]
    return "\n".join(lines) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(p: CapacityPlan) -> str:
    """Markdown report (tables) for files and the app."""
    title, sections = _sections(p)
    lines = [f"# {title}"]
    for sec in sections:
        lines += ["", f"## {sec.title}", ""]
        if sec.rows:
            lines += ["| | |", "|---|---|"]
            lines += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in sec.rows]
        if sec.table:
            head, *body = sec.table
            lines += ["", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
        lines += [f"- {_md_escape(b)}" for b in sec.bullets]
    return "\n".join(lines) + "\n"


def render_json(p: CapacityPlan) -> str:
    """``p.to_dict()`` as indented JSON."""
    return json.dumps(p.to_dict(), indent=2, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render(p: CapacityPlan, fmt: str = "text") -> str:
    """Render in ``fmt``: "text", "markdown" or "json"."""
    if fmt == "text":
        return render_text(p)
    if fmt in ("markdown", "md"):
        return render_markdown(p)
    if fmt == "json":
        return render_json(p)
    raise ValueError(f"unknown format {fmt!r}")


def render_presets(presets: dict[str, list[dict[str, Any]]], fmt: str = "text") -> str:
    """``plan --list``: model and GPU presets."""
    if fmt == "json":
        return json.dumps(presets, indent=2) + "\n"
    lines = ["Model presets (names are case-insensitive):"]
    for m in presets["models"]:
        alias = f"  aliases: {', '.join(m['aliases'])}" if m["aliases"] else ""
        kind = f"{m['attention_label']}{', MoE' if m['moe'] else ''}"
        lines.append(
            f"  {m['name']:<18} {kind:<9} {m['layers']:>3} layers  "
            f"{m['total_params_b']:>6.1f}B total {m['active_params_b']:>6.1f}B active{alias}"
        )
    lines.append("GPU presets:")
    for g in presets["gpus"]:
        fp8 = f"{g['fp8_tflops']:g}" if g["fp8_tflops"] else "-"
        alias = f"  aliases: {', '.join(g['aliases'])}" if g["aliases"] else ""
        lines.append(
            f"  {g['name']:<10} {g['memory_gb']:>5g} GB  {g['hbm_gbps']:>6g} GB/s  "
            f"BF16 {g['bf16_tflops']:>7g}  FP8 {fp8:>7} TFLOP/s{alias}"
        )
    return "\n".join(lines) + "\n"
