#!/usr/bin/env python3
"""Regenerate the synthetic sample traces: ``python sample_traces/generate.py [OUT_DIR]``.

Writes every scenario of ``analyzer.synthetic.SCENARIOS`` (default seeds and sizes) into
``OUT_DIR/<scenario>/`` (default: ``sample_traces/synthetic``): SGLang-named Kineto
``.trace.json.gz`` files, ``server_args.json`` and ``ground_truth.json``. Deterministic:
running it twice gives the same JSON content (tests/test_synthetic.py checks that the
committed files equal a fresh run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from analyzer.synthetic import SCENARIOS, write_scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(HERE / "synthetic"))
    ap.add_argument("--only", action="append", choices=sorted(SCENARIOS),
                    help="generate only this scenario (repeatable)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    for name in args.only or list(SCENARIOS):
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        truth = write_scenario(SCENARIOS[name](), target)
        size = sum((target / f["path"]).stat().st_size for f in truth["files"])
        print(f"{name}: {len(truth['files'])} trace files, {size / 1e6:.2f} MB "
              f"-> {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
