"""``trace-analyzer diff BASE NEW``: argument parsing and exit codes only (registered by cli.py).

Exit codes: 0 ok (also "no change"), 2 bad input or a bad ``--fail-on`` expression (the
valid names listed), 3 a ``--fail-on`` gate breached (after the diff is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..fileio import write_atomically

FORMATS = ("text", "json", "markdown", "html")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diff", help="compare two runs (traces or saved JSON reports); a regression gate for CI",
        description="Compare two runs: BASE and NEW are each anything `analyze` reads (a trace "
                    "file, a per-rank directory, a .zip, an Nsight export) or a saved JSON report.",
    )
    p.add_argument("base", metavar="BASE", help="the reference run (trace, directory, .zip or report.json)")
    p.add_argument("new", metavar="NEW", help="the run to judge")
    p.add_argument("--format", "-f", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the diff here instead of stdout")
    p.add_argument("--fail-on", metavar="EXPR", action="append", default=[],
                   help='exit 3 on a regression, e.g. "decode_step_p50>+5%%" "busy>+10%%" '
                        '"communication.exposed>+2ms" "finding:new"')
    p.add_argument("--rules", metavar="FILE", action="append", default=[],
                   help="extra kernel classification rules (TOML), for trace inputs")
    p.add_argument("--model", metavar="NAME|CONFIG", help="model preset or HF config.json, for trace inputs")
    p.add_argument("--gpu", metavar="NAME", help="GPU preset when the traces lack it")
    p.add_argument("--include-edges", action="store_true",
                   help="count the capture edges as idle (as in analyze --include-edges)")
    p.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from ..cli import EXIT_OK, EXIT_THRESHOLD
    from ..model import BadInputError
    from ..render.diff import render_diff
    from . import check_gates, diff_paths, parse_gate

    for expr in args.fail_on:  # a typo fails before the long work
        parse_gate(expr)
    for path in (args.base, args.new):
        if not Path(path).exists():
            raise BadInputError(f"no such file or directory: {path}")
    diff = diff_paths(args.base, args.new, rules=args.rules, model=args.model, gpu=args.gpu,
                      include_edges=args.include_edges)
    gates = check_gates(diff, args.fail_on)
    if gates:
        diff["gate"] = gates
    text = render_diff(diff, args.format)
    if args.output:
        write_atomically(Path(args.output), text)
    else:
        sys.stdout.write(text)
    breached = [g for g in gates if g["breached"]]
    if breached:  # the diff is written first; the gate only decides the exit code
        print("trace-analyzer: regression gate breached: " + "; ".join(
            f"{g['expr']} (measured {g['measured']})" for g in breached), file=sys.stderr)
        return EXIT_THRESHOLD
    return EXIT_OK
