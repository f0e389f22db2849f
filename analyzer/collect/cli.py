"""``trace-analyzer collect`` and ``trace-analyzer nsys-command``: argument parsing only."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from analyzer.errors import BadInputError

from .collector import CollectOptions, CollectResult, collect, validate_activities
from .nsys import nsys_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``collect`` and ``nsys-command`` subcommands."""
    _register_collect(subparsers)
    _register_nsys(subparsers)


def _register_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="capture traces from a running SGLang server (with its args and metrics)",
        description="Ask a running SGLang server for a torch.profiler capture through its HTTP API, "
        "wait until every rank's trace is complete, and keep server_args.json and the /metrics "
        "scrapes from before and after beside the traces.",
    )
    p.add_argument(
        "--url", required=True, metavar="URL", help="the server, e.g. http://127.0.0.1:30000"
    )
    p.add_argument(
        "--num-steps",
        type=int,
        metavar="N",
        help="capture N forward steps (the server stops by itself; it needs traffic)",
    )
    p.add_argument(
        "--start-step", type=int, metavar="N", help="skip ahead: start at forward step N"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="S",
        help="without --num-steps: seconds to capture before /stop_profile (default 10)",
    )
    p.add_argument(
        "--activities",
        default="CPU,GPU",
        metavar="LIST",
        help="comma list of CPU, GPU, MEM, RPD, CUDA_PROFILER, XPU (default CPU,GPU)",
    )
    p.add_argument(
        "--profile-by-stage",
        action="store_true",
        help="separate prefill (EXTEND) and decode traces per rank",
    )
    p.add_argument(
        "--with-stack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record Python stacks (server default: on)",
    )
    p.add_argument(
        "--record-shapes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record operator input shapes (server default: off)",
    )
    p.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="where the traces land (default ./sglang-profile-<time>); the server writes "
        "there itself, so it must see this directory",
    )
    p.add_argument(
        "--server-output-dir",
        metavar="DIR",
        help="the same directory as the server sees it (container or remote mount)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up waiting for complete traces after S seconds (default 300)",
    )
    p.add_argument(
        "--expect-files",
        type=int,
        metavar="N",
        help="ranks to wait for (default TP x PP x DP from /get_server_info)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("SGLANG_API_KEY"),
        metavar="KEY",
        help="the server's --api-key (default $SGLANG_API_KEY)",
    )
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help=argparse.SUPPRESS)
    p.add_argument(
        "--analyze",
        action="store_true",
        help="analyse the traces at once, with the metrics and server args attached",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=("text", "markdown", "json"),
        default="text",
        help="report format with --analyze (default text)",
    )
    p.set_defaults(func=run)


def _register_nsys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nsys-command",
        help="print the Nsight Systems commands to profile an SGLang server",
        description="Print how to run an SGLang launch command under Nsight Systems, how to open "
        "and close the capture with /start_profile, and how to export the report for the analyzer. "
        "Usage: trace-analyzer nsys-command -- python -m sglang.launch_server --model-path M",
    )
    p.add_argument(
        "--mode",
        choices=("api", "timed"),
        default="api",
        help="api: capture range bound to /start_profile CUDA_PROFILER (default); "
        "timed: --delay/--duration",
    )
    p.add_argument(
        "--num-steps",
        type=int,
        default=20,
        metavar="N",
        help="forward steps to capture in api mode (default 20; 0: stop by hand)",
    )
    p.add_argument(
        "--delay", type=float, default=60.0, metavar="S", help="timed mode: seconds before capture"
    )
    p.add_argument(
        "--duration", type=float, default=30.0, metavar="S", help="timed mode: seconds captured"
    )
    p.add_argument(
        "--output",
        default="sglang_%p",
        metavar="NAME",
        help="nsys report name (default sglang_%%p: %%p becomes the process id)",
    )
    p.add_argument(
        "--url", metavar="URL", help="server URL for the curl commands (default from --host/--port)"
    )
    p.add_argument("launch", nargs=argparse.REMAINDER, help="the SGLang launch command, after --")
    p.set_defaults(func=run_nsys)


def _print_result(result: CollectResult, stream) -> None:
    n = len(result.trace_files)
    print(
        f"collected {n} trace file{'s' * (n != 1)} in {result.output_dir} "
        f"(capture {result.capture_s:.1f} s, then {result.waited_s:.1f} s until complete)",
        file=stream,
    )
    for f in result.trace_files:
        print(f"  {f.name}  {f.stat().st_size / 1e6:,.2f} MB", file=stream)
    info = result.server_info
    layout = ", ".join(
        f"{k.split('_')[0].upper()} {info[k]}"
        for k in ("tp_size", "pp_size", "dp_size")
        if k in info
    )
    model = info.get("model_path", "?")
    print(
        f"server args: {result.server_args_path.name} (model {model}{', ' + layout if layout else ''})",
        file=stream,
    )
    if result.metrics is not None and result.metrics_before_path and result.metrics_after_path:
        print(
            f"metrics: {result.metrics_before_path.name}, {result.metrics_after_path.name} "
            f"- during the capture: {result.metrics.summary_line()}",
            file=stream,
        )


def run(args: argparse.Namespace) -> int:
    """``trace-analyzer collect``."""
    out = (
        Path(args.output_dir)
        if args.output_dir
        else Path(f"sglang-profile-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    if args.expect_files is not None and args.expect_files < 1:
        raise BadInputError("--expect-files must be at least 1")
    opts = CollectOptions(
        url=args.url,
        output_dir=out,
        server_output_dir=args.server_output_dir,
        num_steps=args.num_steps,
        start_step=args.start_step,
        duration_s=args.duration,
        activities=validate_activities(args.activities),
        profile_by_stage=args.profile_by_stage,
        with_stack=args.with_stack,
        record_shapes=args.record_shapes,
        timeout_s=args.timeout,
        expect_files=args.expect_files,
        api_key=args.api_key,
        poll_s=args.poll,
    )
    result = collect(
        opts, note=lambda m: print(f"note: {m}", file=sys.stderr), progress_stream=sys.stderr
    )
    if not args.analyze:
        _print_result(result, sys.stdout)
        if result.trace_files:
            extra = f" --metrics {result.output_dir}" if result.metrics is not None else ""
            print(f"next: trace-analyzer analyze {result.output_dir}{extra}")
        return 0
    _print_result(result, sys.stderr)
    if not result.trace_files:
        raise BadInputError("nothing to analyse: the capture wrote no torch.profiler traces")
    from analyzer.api import analyze
    from analyzer.render import render

    report = analyze(result.trace_files, metrics=result.metrics, server_args=result.server_info)
    for n in getattr(report, "notes", []):
        print(f"note: {n}", file=sys.stderr)
    sys.stdout.write(render(report.to_dict(), args.format))
    return 0


def run_nsys(args: argparse.Namespace) -> int:
    """``trace-analyzer nsys-command``."""
    launch = list(args.launch)
    if launch and launch[0] == "--":
        launch = launch[1:]
    plan = nsys_plan(
        launch,
        output=args.output,
        mode=args.mode,
        num_steps=args.num_steps or None,
        delay_s=args.delay,
        duration_s=args.duration,
        url=args.url,
    )
    sys.stdout.write(plan.render())
    return 0
