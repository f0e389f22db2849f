"""``trace-analyzer calibrate``: argument parsing only (torch is imported when it runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analyzer.errors import BadInputError
from analyzer.fileio import write_atomically


def _contexts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--contexts wants comma-separated integers, got {text!r}"
        ) from None
    if len(set(values)) < 3 or min(values) < 1:
        raise argparse.ArgumentTypeError("--contexts needs at least 3 different positive lengths")
    return tuple(sorted(set(values)))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` subcommand."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure this machine's rates for the capacity planner (needs PyTorch)",
        description="Microbenchmarks of what the capacity planner needs: causal prefill attention over "
        "growing contexts (with a fitted a + b*S + c*S^2), GEMM at serving shapes, memory copy "
        "bandwidth, a decode-like KV read, and an all-reduce sweep under torchrun. Writes a hardware "
        "profile for `trace-analyzer plan --hardware-profile FILE` and keeps torch.profiler traces.",
    )
    p.add_argument(
        "--device", choices=("cuda", "cpu"), help="default: cuda when a GPU is visible, else cpu"
    )
    p.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        help="default: bf16 on cuda, fp32 on cpu (most CPUs lack fast bf16)",
    )
    p.add_argument(
        "--contexts",
        type=_contexts,
        metavar="S1,S2,...",
        help="prefill context lengths (default cuda 512..16384, cpu 128..2048)",
    )
    p.add_argument(
        "--output",
        "-o",
        default="hardware_profile.json",
        metavar="FILE",
        help="hardware profile to write (default hardware_profile.json)",
    )
    p.add_argument(
        "--trace-dir",
        metavar="DIR",
        help="where to keep the torch.profiler traces (default calibration_traces/ beside --output)",
    )
    p.add_argument("--no-traces", action="store_true", help="do not record torch.profiler traces")
    p.add_argument(
        "--threads", type=int, metavar="N", help="torch CPU threads (default torch's choice)"
    )
    p.add_argument(
        "--repeats", type=int, metavar="N", help="timed samples per measurement (median kept)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``trace-analyzer calibrate``."""
    try:
        import torch
    except ImportError:
        raise BadInputError(
            "calibrate needs PyTorch: pip install 'llm-trace-analyzer[torch]' (or torch itself)"
        ) from None
    from .bench import DTYPES, default_settings
    from .run import calibrate, summary

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device == "cuda" else "fp32")
    if dtype not in DTYPES:  # pragma: no cover - argparse choices
        raise BadInputError(f"unknown --dtype {dtype}")
    if args.threads is not None:
        if args.threads < 1:
            raise BadInputError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    settings = default_settings(device, dtype, args.contexts)
    if args.repeats is not None:
        if args.repeats < 1:
            raise BadInputError("--repeats must be at least 1")
        from dataclasses import replace

        settings = replace(settings, repeats=args.repeats)
    out = Path(args.output)
    if not out.parent.exists() and str(out.parent):
        raise BadInputError(f"output directory {out.parent} does not exist")
    trace_dir = (
        None
        if args.no_traces
        else Path(args.trace_dir)
        if args.trace_dir
        else out.parent / "calibration_traces"
    )
    progress = sys.stderr.isatty()
    doc = calibrate(
        settings,
        trace_dir=trace_dir,
        note=(lambda m: print(f"calibrate: {m}", file=sys.stderr))
        if progress
        else (lambda m: None),
    )
    if doc is None:  # a torchrun rank other than 0
        return 0
    write_atomically(out, json.dumps(doc, indent=2) + "\n")
    print(summary(doc))
    for n in doc["details"]["notes"]:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"wrote {out}"
        + (f"; traces in {trace_dir}" if trace_dir and doc["details"]["traces"] else "")
    )
    return 0
