"""Start-up of the CLI: ``--version`` and ``--help`` against ``python -c pass``.

Each command runs 10 times in a fresh interpreter; min and median wall seconds are printed.
``tests/test_parallel.py`` checks what these commands import (no numpy, pandas, plotly,
streamlit, Dask); this measures how long they take on this machine.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "trace-analyzer --version": ["-m", "analyzer.cli", "--version"],
    "trace-analyzer --help": ["-m", "analyzer.cli", "--help"],
    "trace-analyzer analyze --help": ["-m", "analyzer.cli", "analyze", "--help"],
}


def timings(args: list[str], n: int = 10) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t)
    return sorted(out)


def main() -> None:
    print("| command | min s | median s |")
    print("|---|---:|---:|")
    for label, args in COMMANDS.items():
        t = timings(args)
        print(f"| `{label}` | {t[0]:.3f} | {t[len(t) // 2]:.3f} |")


if __name__ == "__main__":
    main()
