"""``trace-analyzer plan``: argument parsing for the capacity planner, nothing else.

``analyzer/cli.py`` calls :func:`register` with its subparsers; the chosen subcommand's
``func`` (:func:`run`) returns the exit code. Bad input raises ``BadInputError`` (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from analyzer.capacity.calibration import (
    _read_json,
    calibration_from_report,
    combine,
    load_hardware_profile,
)
from analyzer.capacity.from_report import SIZES, report_setup, resolve_report_model
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
    par.add_argument("--tp", type=_positive_int, help="tensor parallel size (default: the report's, else 1)")
    par.add_argument("--pp", type=_positive_int, help="pipeline parallel size (default: the report's, else 1)")
    par.add_argument(
        "--dp",
        type=_positive_int,
        help="data parallel size: extra replicas, or attention-DP groups with --dp-attention "
        "(default: the report's, else 1)",
    )
    par.add_argument(
        "--dp-attention",
        action="store_true",
        help="--dp is SGLang's --enable-dp-attention (DP groups inside the TP group)",
    )
    par.add_argument("--ep", type=_positive_int, help="expert parallel size (default: the report's, else 1)")
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
    p.add_argument("--kv-dtype", choices=("bf16", "fp8"),
                   help="KV cache dtype (default: the report's server_args.kv_cache_dtype, else bf16)")
    eff = p.add_argument_group("efficiency (fractions of datasheet peak, when not measured)")
    eff.add_argument("--gemm-efficiency", type=float, help="default 0.6")
    eff.add_argument("--attention-efficiency", type=float, help="default 0.45")
    eff.add_argument("--hbm-efficiency", type=float, help="default 0.8")
    eff.add_argument("--link-efficiency", type=float, help="default 0.7")
    cal = p.add_argument_group("calibration (measured rates replace datasheet ones)")
    cal.add_argument("--from-report", metavar="REPORT.json",
                     help="analyzer JSON report: measured rates, and the model, GPU, parallel sizes, "
                     "KV dtype and mem_fraction_static when not given as options")
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


def _explicit_dims(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) for k in ("layers", "hidden_size", "heads"))


def build_plan(args: argparse.Namespace) -> Any:
    """Parsed ``plan`` arguments -> CapacityPlan (raises BadInputError).

    With ``--from-report`` every value not given as an option comes from the report
    (``capacity.from_report``); ``plan.input_sources`` says where each one came from."""
    doc = _read_json(args.from_report, "report") if args.from_report else None
    label = f"trace report {Path(args.from_report).name}" if args.from_report else ""
    report = calibration_from_report(doc, label) if doc is not None else None
    setup = report_setup(doc, label) if doc is not None else None
    profile = load_hardware_profile(args.hardware_profile) if args.hardware_profile else None
    sources: dict[str, str] = {}
    if setup is not None and not args.model and not _explicit_dims(args):
        model, how = resolve_report_model(setup, weight_dtype=args.weight_dtype)
        sources["model"] = f"{label}: {how}"
    else:
        model = _model_from_args(args)
        sources["model"] = "--model" if args.model else "explicit dimensions"
    if args.gpu:
        gpu_name, sources["gpu"] = args.gpu, "--gpu"
    elif setup is not None and setup.gpu is not None:
        gpu_name, sources["gpu"] = setup.gpu.value, f"{label}: {setup.gpu.source}"
    else:
        gpu_name, sources["gpu"] = DEFAULT_GPU, "default (" + (f"{label} names no GPU" if setup else "no --gpu") + ")"
    gpu = gpu_with(
        load_gpu(gpu_name),
        memory_gb=args.hbm_gb,
        hbm_gbps=args.hbm_gbps,
        bf16_tflops=args.bf16_tflops,
        fp8_tflops=args.fp8_tflops,
        nvlink_gbps=args.nvlink_gbps,
        network_gbps=args.network_gbps,
    )
    size: dict[str, int] = {}
    for k in SIZES:
        given = getattr(args, k)
        found = setup.size(k) if setup is not None else None
        if given is not None:
            size[k], sources[k] = given, f"--{k}"
        elif found is not None:
            size[k], sources[k] = int(found.value), f"{label}: {found.source}"
        else:
            size[k], sources[k] = 1, "default"
    dp_attention = args.dp_attention
    if not dp_attention and setup is not None and setup.dp_attention is not None and args.dp is None:
        dp_attention = bool(setup.dp_attention.value)
        if dp_attention:
            sources["dp"] += f", DP attention ({setup.dp_attention.source})"
    dp_att = size["dp"] if dp_attention else 1
    replicas = args.replicas * (1 if dp_attention else size["dp"])
    parallel = Parallelism(
        tp=size["tp"], pp=size["pp"], dp_attention=dp_att, ep=size["ep"], replicas=replicas
    )
    workload = Workload(
        context_tokens=args.context,
        output_tokens=args.output_tokens,
        agents=args.agents,
        calls_per_agent=args.calls_per_agent,
        prefix_hit=args.prefix_hit,
    )
    kv_dtype = args.kv_dtype
    if kv_dtype is not None:
        sources["kv_dtype"] = "--kv-dtype"
    elif setup is not None and setup.kv_dtype is not None:
        kv_dtype, sources["kv_dtype"] = setup.kv_dtype.value, f"{label}: {setup.kv_dtype.source}"
    else:
        kv_dtype, sources["kv_dtype"] = "bf16", "default"
    mem_fraction = args.mem_fraction
    if mem_fraction is not None or args.kv_budget_gb is not None:
        sources["memory_budget"] = "--mem-fraction" if mem_fraction is not None else "--kv-budget-gb"
    elif setup is not None and setup.mem_fraction is not None:
        mem_fraction = setup.mem_fraction.value
        sources["memory_budget"] = f"{label}: {setup.mem_fraction.source}"
    else:
        sources["memory_budget"] = "default mem_fraction_static"
    budget = MemoryBudget(kv_budget_gb=args.kv_budget_gb, mem_fraction=mem_fraction)
    eff_args = {
        "gemm": args.gemm_efficiency,
        "attention": args.attention_efficiency,
        "hbm": args.hbm_efficiency,
        "link": args.link_efficiency,
    }
    efficiency = Efficiency(**{k: v for k, v in eff_args.items() if v is not None})
    result = plan(
        model,
        gpu,
        parallel,
        workload,
        budget,
        calibration=combine(report, profile),
        kv_dtype=kv_dtype,
        efficiency=efficiency,
    )
    if setup is None:
        return result
    values = {"model": model.name, "gpu": gpu.name, **{k: str(v) for k, v in size.items()},
              "kv_dtype": kv_dtype, "memory_budget": budget.describe()}
    shown = {k: f"{values[k]} <- {v}" for k, v in sources.items()}
    return dataclasses.replace(result, input_sources=shown)


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
