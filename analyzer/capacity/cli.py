"""``trace-analyzer plan``: argument parsing for the capacity planner, nothing else.

``analyzer/cli.py`` calls :func:`register` with its subparsers; the chosen subcommand's
``func`` (:func:`run`) returns the exit code. Bad input raises ``BadInputError`` (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from analyzer.capacity.calibration import combine, load_hardware_profile, load_report_calibration
from analyzer.capacity.planner import plan
from analyzer.capacity.presets import (
    DIMENSION_KEYS,
    gpu_with,
    list_presets,
    load_gpu,
    load_model,
    model_from_dims,
)
from analyzer.capacity.render import render, render_presets
from analyzer.capacity.specs import Efficiency, MemoryBudget, Parallelism, Workload
from analyzer.errors import BadInputError
from analyzer.fileio import write_atomically

DEFAULT_GPU = "h100-sxm"

DESCRIPTION = """\
Plan how many concurrent long-context calls one serving replica should take: the KV-cache
memory bound, a prefill/decode time model (TTFT and throughput versus concurrency), the
throughput-optimal concurrency and the knee past which more concurrency only adds latency.
Rates come from GPU datasheets unless --from-report / --hardware-profile give measured ones.
"""

EPILOG = """\
examples:
  trace-analyzer plan --list
  trace-analyzer plan --model llama-3.1-70b --gpu h100 --tp 8 --context 40000 \\
      --output-tokens 1000 --agents 16
  trace-analyzer plan --layers 80 --hidden-size 16384 --heads 128 --kv-heads 16 \\
      --gpu h100 --pp 8 --context 40000 --kv-budget-gb 40      # design-notes example
  trace-analyzer plan --model ./config.json --gpu h200 --tp 8 --from-report report.json \\
      --format json -o plan.json
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``plan`` option (also used by tests and docs)."""
    p.add_argument("--list", action="store_true", help="list model and GPU presets and exit")
    m = p.add_argument_group("model (a preset, a Hugging Face config.json, or dimensions)")
    m.add_argument("--model", metavar="NAME|CONFIG.json", help="preset name or config path")
    m.add_argument("--layers", type=_positive_int, help="num_hidden_layers (overrides preset)")
    m.add_argument("--hidden-size", type=_positive_int, help="hidden_size")
    m.add_argument("--heads", type=_positive_int, help="num_attention_heads")
    m.add_argument("--kv-heads", type=_positive_int, help="num_key_value_heads")
    m.add_argument("--head-dim", type=_positive_int, help="head_dim (default hidden/heads)")
    m.add_argument("--intermediate-size", type=_positive_int, help="MLP intermediate size")
    m.add_argument("--vocab-size", type=_positive_int, help="vocabulary size")
    m.add_argument("--weight-dtype", choices=("bf16", "fp16", "fp8"), help="weight dtype")
    g = p.add_argument_group("GPU (a preset; explicit figures override it)")
    g.add_argument(
        "--gpu",
        metavar="NAME",
        help="GPU preset (default: the report's GPU with --from-report, else h100-sxm)",
    )
    g.add_argument("--hbm-gb", type=_positive_float, help="HBM size, GB (10^9 B)")
    g.add_argument("--hbm-gbps", type=_positive_float, help="HBM bandwidth, GB/s")
    g.add_argument("--bf16-tflops", type=_positive_float, help="dense BF16 TFLOP/s")
    g.add_argument("--fp8-tflops", type=_positive_float, help="dense FP8 TFLOP/s")
    g.add_argument("--nvlink-gbps", type=_positive_float, help="NVLink/xGMI GB/s (both directions)")
    g.add_argument("--network-gbps", type=_positive_float, help="network GB/s per GPU")
    par = p.add_argument_group("parallelism")
    par.add_argument("--tp", type=_positive_int, default=1, help="tensor parallel size")
    par.add_argument("--pp", type=_positive_int, default=1, help="pipeline parallel size")
    par.add_argument(
        "--dp",
        type=_positive_int,
        default=1,
        help="data parallel size: extra replicas, or attention-DP groups with --dp-attention",
    )
    par.add_argument(
        "--dp-attention",
        action="store_true",
        help="--dp is SGLang's --enable-dp-attention (DP groups inside the TP group)",
    )
    par.add_argument("--ep", type=_positive_int, default=1, help="expert parallel size")
    par.add_argument("--replicas", type=_positive_int, default=1, help="serving replicas R")
    wl = p.add_argument_group("workload")
    wl.add_argument("--context", type=_positive_int, default=8192, help="context tokens S")
    wl.add_argument("--output-tokens", type=_positive_int, default=512, help="tokens per call")
    wl.add_argument("--agents", type=_positive_int, default=1, help="concurrent agents")
    wl.add_argument("--calls-per-agent", type=_positive_int, default=1, help="calls per agent")
    wl.add_argument(
        "--prefix-hit", type=float, default=0.0, help="fraction of the context already cached"
    )
    mem = p.add_argument_group("memory budget").add_mutually_exclusive_group()
    mem.add_argument("--kv-budget-gb", type=_positive_float, help="KV memory per GPU, GB")
    mem.add_argument("--mem-fraction", type=float, help="SGLang mem_fraction_static (default 0.88)")
    p.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16", help="KV cache dtype")
    eff = p.add_argument_group("efficiency (fractions of datasheet peak, when not measured)")
    eff.add_argument("--gemm-efficiency", type=float, help="default 0.6")
    eff.add_argument("--attention-efficiency", type=float, help="default 0.45")
    eff.add_argument("--hbm-efficiency", type=float, help="default 0.8")
    eff.add_argument("--link-efficiency", type=float, help="default 0.7")
    cal = p.add_argument_group("calibration (measured rates replace datasheet ones)")
    cal.add_argument("--from-report", metavar="REPORT.json", help="analyzer JSON report")
    cal.add_argument("--hardware-profile", metavar="FILE", help="trace-analyzer calibrate output")
    out = p.add_argument_group("output")
    out.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="output format"
    )
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand to ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "plan",
        help="plan concurrency per replica (KV memory bound + time model)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _model_from_args(args: argparse.Namespace) -> Any:
    dims = {k: getattr(args, k) for k in DIMENSION_KEYS}
    if args.model:
        overrides = {DIMENSION_KEYS[k]: v for k, v in dims.items() if v is not None}
        return load_model(args.model, overrides=overrides, weight_dtype=args.weight_dtype)
    missing = [
        f"--{k.replace('_', '-')}" for k in ("layers", "hidden_size", "heads") if not dims[k]
    ]
    if missing:
        raise BadInputError(
            "give --model NAME|CONFIG.json, or explicit dimensions (missing "
            + ", ".join(missing)
            + ")"
        )
    if dims["hidden_size"] % dims["heads"] and not dims["head_dim"]:
        raise BadInputError("hidden size is not a multiple of heads: give --head-dim")
    return model_from_dims(
        layers=dims["layers"],
        hidden_size=dims["hidden_size"],
        heads=dims["heads"],
        kv_heads=dims["kv_heads"],
        head_dim=dims["head_dim"],
        intermediate_size=dims["intermediate_size"],
        vocab_size=dims["vocab_size"],
        weight_dtype=args.weight_dtype or "bf16",
    )


def build_plan(args: argparse.Namespace) -> Any:
    """Parsed ``plan`` arguments -> CapacityPlan (raises BadInputError)."""
    model = _model_from_args(args)
    report = load_report_calibration(args.from_report) if args.from_report else None
    profile = load_hardware_profile(args.hardware_profile) if args.hardware_profile else None
    gpu_name = args.gpu or (report.gpu_preset if report and report.gpu_preset else DEFAULT_GPU)
    gpu = gpu_with(
        load_gpu(gpu_name),
        memory_gb=args.hbm_gb,
        hbm_gbps=args.hbm_gbps,
        bf16_tflops=args.bf16_tflops,
        fp8_tflops=args.fp8_tflops,
        nvlink_gbps=args.nvlink_gbps,
        network_gbps=args.network_gbps,
    )
    dp_att = args.dp if args.dp_attention else 1
    replicas = args.replicas * (1 if args.dp_attention else args.dp)
    parallel = Parallelism(
        tp=args.tp, pp=args.pp, dp_attention=dp_att, ep=args.ep, replicas=replicas
    )
    workload = Workload(
        context_tokens=args.context,
        output_tokens=args.output_tokens,
        agents=args.agents,
        calls_per_agent=args.calls_per_agent,
        prefix_hit=args.prefix_hit,
    )
    budget = MemoryBudget(kv_budget_gb=args.kv_budget_gb, mem_fraction=args.mem_fraction)
    eff_args = {
        "gemm": args.gemm_efficiency,
        "attention": args.attention_efficiency,
        "hbm": args.hbm_efficiency,
        "link": args.link_efficiency,
    }
    efficiency = Efficiency(**{k: v for k, v in eff_args.items() if v is not None})
    return plan(
        model,
        gpu,
        parallel,
        workload,
        budget,
        calibration=combine(report, profile),
        kv_dtype=args.kv_dtype,
        efficiency=efficiency,
    )


def run(args: argparse.Namespace) -> int:
    """Execute ``plan``; write to stdout or ``-o``; return the exit code."""
    if args.list:
        text = render_presets(list_presets(), "json" if args.format == "json" else "text")
    else:
        text = render(build_plan(args), args.format)
    if args.output:
        try:
            write_atomically(Path(args.output), text)
        except OSError as exc:
            raise BadInputError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        print(text, end="")
    return 0
