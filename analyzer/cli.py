"""Command line: argument parsing, exit codes, output files. No analysis here.

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 a ``--fail-on`` threshold breached.
"""

from __future__ import annotations

import argparse
import importlib
import operator
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import BadInputError
from .fileio import write_atomically

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_THRESHOLD = 0, 1, 2, 3

#: Modules that add subcommands: each has ``register(subparsers)``.
SUBCOMMAND_MODULES = (
    "analyzer.capacity.cli",
    "analyzer.collect.cli",
    "analyzer.calibrate.cli",
    "analyzer.diff.cli",
)

FORMATS = ("text", "json", "markdown", "html")


def one_line(text: str) -> str:
    """A message for stderr: one line, no terminal control characters, no secrets."""
    from .safety import redact_text, terminal_safe

    return terminal_safe(redact_text(text))


class ThresholdBreached(Exception):
    """A --fail-on expression was true."""


# ------------------------------------------------------------------------------------------
# --fail-on
# ------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_:.-]*)\s*(>=|<=|>|<)\s*([0-9.eE+-]+%?)\s*$")


def parse_fail_on(expr: str) -> tuple[str, str, float]:
    """``"idle>0.30"`` -> ("idle", ">", 0.30); ``"communication>25%"`` works too."""
    m = _EXPR.match(expr)
    if not m:
        raise BadInputError(
            f"bad --fail-on expression {expr!r}: expected NAME>VALUE, e.g. idle>0.30"
        )
    name, op, raw = m.groups()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BadInputError(f"bad number in --fail-on {expr!r}") from None
    check_fail_on_name(name)
    return name, op, value


#: --fail-on names that are not a category or a finding (see ``fail_on_value``).
FAIL_ON_SHARES: tuple[str, ...] = ("idle", "busy", "edge", "comm_exposed", "communication_exposed")


def fail_on_names() -> list[str]:
    """Every valid --fail-on name: the shares, the categories, ``finding:<id>`` per finding id."""
    from .findings import FINDING_IDS
    from .model import CATEGORIES

    return [*FAIL_ON_SHARES, *CATEGORIES, *(f"finding:{fid}" for fid in FINDING_IDS)]


def check_fail_on_name(name: str) -> None:
    """Raise BadInputError naming the valid names when ``name`` is none of them (a typo must
    not turn a CI gate off)."""
    valid = fail_on_names()
    if name in valid:
        return
    from .findings import FINDING_IDS

    if name.startswith("finding:"):
        raise BadInputError(f"unknown finding id {name.removeprefix('finding:')!r} in --fail-on; "
                            f"finding ids: {', '.join(FINDING_IDS)}")
    hint = f" (a finding: write finding:{name})" if name in FINDING_IDS else ""
    raise BadInputError(f"unknown --fail-on name {name!r}{hint}; use one of {', '.join(valid)}")


def fail_on_value(doc: dict[str, Any], name: str) -> float:
    """Share of wall time for a --fail-on name: idle, busy, edge, comm_exposed, a category or finding id."""
    s = doc["summary"]
    if name == "idle":
        return s["idle_share"]
    if name == "busy":
        return s["busy_share"]
    if name == "edge":  # of the capture (wall + edge); the other shares are of the wall
        return s.get("edge_share", 0.0)
    if name in ("comm_exposed", "communication_exposed"):
        return s["communication"]["exposed_us"] / s["wall_us"] if s["wall_us"] else 0.0
    if name in s["categories"]:
        return s["categories"][name]["share"]
    check_fail_on_name(name)
    fid = name.removeprefix("finding:")
    for f in doc["findings"]:
        if f["id"] == fid:
            return f["share"]
    return 0.0  # a known category or finding absent from this report: no time


def check_thresholds(doc: dict[str, Any], exprs: Sequence[str]) -> list[str]:
    """The breached expressions, each with the measured value."""
    breached = []
    for expr in exprs:
        name, op, limit = parse_fail_on(expr)
        value = fail_on_value(doc, name)
        if _OPS[op](value, limit):
            breached.append(f"{expr} (measured {value:.3f})")
    return breached


# ------------------------------------------------------------------------------------------
# output helpers
# ------------------------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str = "reading", stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self._last = 0.0
        self._started = time.monotonic()

    ranks_done: int = 0
    ranks_total: int = 0
    _bytes: tuple[int, int] = (0, 0)

    def __call__(self, done: int, total: int, *, force: bool = False) -> None:
        self._bytes = (done, total)
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total and not force:
            return
        self._last = now
        frac = min(1.0, done / total)
        width = 30
        bar = "█" * int(frac * width) + "·" * (width - int(frac * width))
        mb = done / 1e6
        rate = mb / max(now - self._started, 1e-6)
        ranks = f"  ranks {self.ranks_done}/{self.ranks_total}" if self.ranks_total > 1 else ""
        self.stream.write(f"\r{self.label} {bar} {100 * frac:5.1f}%  {mb:,.0f} MB  {rate:,.0f} MB/s{ranks}")
        self.stream.flush()

    def ranks(self, done: int, total: int) -> None:
        """Ranks finished so far (``analyze(on_rank=...)``); shown beside the bytes."""
        self.ranks_done, self.ranks_total = done, total
        self(*self._bytes, force=done == total)

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 78 + "\r")
            self.stream.flush()


# ------------------------------------------------------------------------------------------
# analyze
# ------------------------------------------------------------------------------------------


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse profiler traces and rank the bottlenecks",
        description="Analyse PyTorch profiler (Kineto) traces, SGLang per-rank profile "
        "directories, .zip archives of them, or Nsight Systems SQLite exports.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files, directories or .zip")
    p.add_argument("--format", "-f", choices=FORMATS, default="text", help="report format (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--rules", metavar="FILE", action="append", default=[],
                   help="extra kernel classification rules (TOML); later rules override")
    p.add_argument("--fail-on", metavar="EXPR", action="append", default=[],
                   help='exit 3 when a share of wall time crosses a limit, e.g. "idle>0.30" '
                        '"communication>0.25" "finding:kv_cache_bandwidth>0.2"')
    p.add_argument("--model", metavar="NAME|CONFIG", help="model preset or HF config.json (KV bytes per token)")
    p.add_argument("--gpu", metavar="NAME", help="GPU preset (HBM bandwidth, peak FLOP/s) when the trace lacks it")
    p.add_argument("--metrics", metavar="FILE", help="saved Prometheus text from SGLang's /metrics")
    p.add_argument("--server-args", metavar="FILE", help="SGLang server_args.json (found beside traces otherwise)")
    p.add_argument("--include-edges", action="store_true",
                   help="count the capture edges (idle before the first step and after the last: "
                        "profiler warm-up/teardown) as idle instead of reporting them apart")
    p.add_argument("--roofline", choices=("auto", "on", "off"), default="auto",
                   help="per-op roofline from recorded shapes: auto = when the trace has "
                        "record_shapes (default), on = always try, off = never")
    p.add_argument("--graph-capture", metavar="PATH",
                   help="CUDA-graph capture trace (file, or folder with execution_details.json) "
                        "that maps graph-replayed kernels back to their ops and shapes")
    p.add_argument("--skip-bad-ranks", action="store_true",
                   help="analyse the readable ranks when some cannot be read (the report says so)")
    p.add_argument("--limit", metavar="NAME=VALUE", action="append", default=[],
                   help="raise or lower an input cap, e.g. max_events=1000000000, max_ratio=500, "
                        "max_input_bytes=200GiB (see docs/user-guide.md; also ANALYZER_LIMIT_<NAME>)")
    p.add_argument("--workers", metavar="N", type=_workers, default=None,
                   help="read and analyse ranks in N local processes on Dask (default: one per "
                        "core; 1: one after another in this process, no cluster)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the per-rank work on this Dask cluster instead (its workers must see "
                        "the trace paths: shared storage)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the Parquet cache of large traces "
                        "(also TRACE_ANALYZER_NO_CACHE=1; the cache dir is TRACE_ANALYZER_CACHE_DIR, "
                        "default ~/.cache/trace-analyzer)")
    p.set_defaults(func=run_analyze)


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--workers must be at least 1")
    return n


def run_analyze(args: argparse.Namespace) -> int:
    from .api import analyze
    from .readers.limits import Limits, using
    from .render import render

    limits = Limits.from_env().with_overrides(args.limit)
    for expr in args.fail_on:  # validate before the long work
        parse_fail_on(expr)
    for path in args.paths:
        if not Path(path).exists():
            raise BadInputError(f"no such file or directory: {path}")
    bar = ProgressBar()
    try:
        with using(limits):
            report = analyze(
                args.paths, rules=args.rules, model=args.model, gpu=args.gpu,
                metrics=args.metrics, server_args=args.server_args, progress=bar,
                include_edges=args.include_edges, roofline=args.roofline,
                graph_capture=args.graph_capture, skip_bad_ranks=args.skip_bad_ranks,
                workers=args.workers, scheduler=args.scheduler,
                cache=not args.no_cache, on_rank=bar.ranks,
            )
    finally:
        bar.close()
    for note in report.notes:
        print(f"note: {one_line(note)}", file=sys.stderr)
    doc = report.to_dict()
    text = render(doc, args.format)
    if args.output:
        write_atomically(Path(args.output), text, inputs=args.paths)
    else:
        sys.stdout.write(text)
    breached = check_thresholds(doc, args.fail_on)
    if breached:
        raise ThresholdBreached("threshold breached: " + "; ".join(breached))
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------


def parse_ranks(text: str | None) -> list[int] | None:
    """``"0,2-3"`` -> [0, 2, 3]; ``"all"`` -> [] (every rank); None -> None (the default)."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return []
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise BadInputError(f"bad --ranks {text!r}: expected e.g. 0,2-3 or all") from None
    return out


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the traces with the analysis as tracks, for Perfetto",
        description="Write a Chrome/Perfetto JSON trace: the original GPU and CPU events of the "
        "chosen ranks plus tracks of the analysis (kernel categories, steps by phase, idle gaps "
        "by cause, each finding over the time it accounts for). Open it in ui.perfetto.dev.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace files, directories or .zip")
    p.add_argument("--perfetto", metavar="OUT.json", required=True, help="write the Perfetto JSON trace here")
    p.add_argument("--ranks", metavar="LIST", help="ranks to export, e.g. 0,2-3 or all "
                   "(default: the representative rank, the basis of the findings)")
    p.add_argument("--rules", metavar="FILE", action="append", default=[], help="extra classification rules (TOML)")
    p.add_argument("--model", metavar="NAME|CONFIG", help="model preset or HF config.json")
    p.add_argument("--gpu", metavar="NAME", help="GPU preset when the trace lacks it")
    p.add_argument("--server-args", metavar="FILE", help="SGLang server_args.json")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import json

    from .api import export_perfetto, load

    ranks = parse_ranks(args.ranks)
    for path in args.paths:
        if not Path(path).exists():
            raise BadInputError(f"no such file or directory: {path}")
    bar = ProgressBar()
    try:
        traceset = load(args.paths, progress=bar)
    finally:
        bar.close()
    if ranks == []:
        ranks = sorted(t.rank.rank for t in traceset.traces)
    doc, report = export_perfetto(traceset, ranks=ranks, rules=args.rules, model=args.model,
                                  gpu=args.gpu, server_args=args.server_args)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    write_atomically(Path(args.perfetto), json.dumps(doc, separators=(",", ":"), allow_nan=False))
    n = sum(1 for e in doc["traceEvents"] if e.get("cat") == "trace_analyzer.finding_summary")
    print(f"wrote {args.perfetto}: ranks {', '.join(map(str, doc['otherData']['ranks']))}, "
          f"{len(doc['traceEvents']):,} events, {n} finding track(s); open it in ui.perfetto.dev",
          file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trace-analyzer",
        description="Find where GPU time goes in LLM serving (SGLang, vLLM) and plan capacity.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_analyze(sub)
    _add_export(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the tool is not installed
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # no parser, no imports
        print(f"trace-analyzer {__version__}")
        return EXIT_OK
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except BadInputError as exc:
        print(f"trace-analyzer: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ThresholdBreached as exc:
        print(f"trace-analyzer: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_THRESHOLD
    except KeyboardInterrupt:
        print("trace-analyzer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the one place internal errors become exit 1
        if args.debug:
            raise
        print(
            f"trace-analyzer: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            "(run with --debug for a traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
