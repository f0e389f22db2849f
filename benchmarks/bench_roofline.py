"""What the roofline (the lazy shapes pass + the per-op analysis) adds to analysis time.

Runs ``analyze([trace], roofline="off")`` and ``roofline="auto"`` (the benchmark trace has
``record_shapes``, so auto reads the shapes) in fresh interpreters, alternating, ``--repeat``
times each, and prints the best CPU seconds of each and their ratio. The input is the large
benchmark trace (``make_trace.py``, written when missing).

    python benchmarks/bench_roofline.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "benchmarks/out/big/trace.json"

CHILD = r"""
import json, sys, time
from analyzer import analyze
mode = sys.argv[2]
c0, w0 = time.process_time(), time.perf_counter()
rep = analyze([sys.argv[1]], roofline=mode)
doc = json.dumps(rep.to_dict())
c1, w1 = time.process_time(), time.perf_counter()
rf = rep.serving["roofline"]["summary"]
print(json.dumps({"cpu_s": c1 - c0, "wall_s": w1 - w0, "available": rf.get("available"),
                  "groups": len(rf.get("groups") or []),
                  "gemm_tflops": rep.serving["prefill"]["summary"].get("gemm_tflops")}))
"""


def run(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], check=True,
                         capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size-mb", type=float, default=300.0)
    a = ap.parse_args()
    if not a.trace.is_file():
        sys.path.insert(0, str(REPO / "benchmarks"))
        from make_trace import make_trace

        make_trace(a.trace, a.size_mb)
    best: dict[str, dict] = {}
    for _ in range(a.repeat):
        for mode in ("off", "auto"):
            r = run(a.trace, mode)
            if mode not in best or r["cpu_s"] < best[mode]["cpu_s"]:
                best[mode] = r
    ratio = best["auto"]["cpu_s"] / best["off"]["cpu_s"]
    print(json.dumps({"trace_mb": round(a.trace.stat().st_size / 1e6, 1), "off": best["off"],
                      "auto": best["auto"], "cpu_ratio": round(ratio, 3),
                      "added_pct": round(100 * (ratio - 1), 1)}, indent=1))


if __name__ == "__main__":
    main()
