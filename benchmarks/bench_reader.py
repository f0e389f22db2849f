"""Reader-only benchmark: CPU seconds (per core) and peak RSS of ``read_kineto``.

Not a test. Each run reads the trace in a fresh interpreter (single-threaded BLAS) and
reports the child's CPU time for the call (user + sys of all its threads, so MB of JSON
per CPU second, i.e. per core), its peak RSS (``ru_maxrss`` from ``os.wait4``) and, with
``--stages``, where the time went. Peak RSS includes the interpreter and its imports
(about 105 MB). On a shared machine CPU time varies from run to run: the best of several
runs is the figure to compare, and ``--against`` interleaves runs of another checkout
(A/B) so that both see the same load:

    python benchmarks/bench_reader.py                      # 300 MB synthetic trace, 5 runs
    python benchmarks/bench_reader.py --runs 9 --stages
    git archive HEAD~3 analyzer | tar -x -C /tmp/old && \\
        python benchmarks/bench_reader.py --against /tmp/old
    python benchmarks/bench_reader.py --trace some/rank0.trace.json.gz
    ANALYZER_SCANNER=msgspec python benchmarks/bench_reader.py   # the msgspec path
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from make_trace import make_trace

CHILD = r"""
import json, os, resource, sys, time
root, path, stages = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
sys.path.insert(0, root)
from analyzer.readers import read_kineto
spent = {}
try:  # the stages of this layout of the reader (another checkout may differ)
    from analyzer.readers import kineto_columns, kineto_decode
except ImportError:
    stages = False
if stages:

    def timed(owner, name, key):
        real = getattr(owner, name)
        def run(*a, **k):
            t = time.process_time()
            try:
                return real(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - t
        setattr(owner, name, run)

    timed(kineto_decode, "_decode", "decode (msgspec)")
    timed(kineto_columns.Columns, "add", "columns (msgspec)")
    try:  # the compiled path (absent in older checkouts)
        from analyzer.readers import kineto_fast, kineto_scan
        timed(kineto_scan, "scan", "scan (C)")
        timed(kineto_fast.FastSliceDecoder, "_columns", "names (compiled)")
        timed(kineto_columns.Columns, "add_scanned", "columns (compiled)")
    except (ImportError, AttributeError):
        pass
    timed(kineto_columns.Columns, "frame", "sort+frame")
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.process_time()
trace = read_kineto(path)
cpu = time.process_time() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
if stages:
    spent["read+cut+other"] = cpu - sum(spent.values())
print(json.dumps({"cpu_s": cpu, "user_s": r1.ru_utime - r0.ru_utime,
                  "sys_s": r1.ru_stime - r0.ru_stime, "rows": len(trace.events),
                  "stages": spent}))
"""


def run_once(root: Path, path: Path, stages: bool) -> dict:
    """One read in a fresh interpreter, reaped with ``os.wait4`` for its peak RSS."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = [sys.executable, "-c", CHILD, str(root), str(path), "1" if stages else "0"]
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        pid = os.posix_spawn(
            sys.executable,
            args,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, so.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, se.fileno(), 2),
            ],
        )
        _pid, status, usage = os.wait4(pid, 0)
        so.seek(0)
        se.seek(0)
        out, err = so.read().decode(), se.read().decode()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(err[-3000:])
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux: KiB
    return res


def _uncompressed_bytes(path: Path) -> int:
    """Size of the JSON itself (a .json.gz is inflated once to count it)."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            total += len(block)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="trace to read (default: a synthetic one)")
    ap.add_argument("--size-mb", type=float, default=300.0, help="size of the synthetic trace")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stages", action="store_true", help="time decode / columns / sort")
    ap.add_argument("--against", type=Path, help="root of another checkout to interleave")
    a = ap.parse_args()
    path = a.trace
    if path is None:
        path = REPO / "benchmarks" / "out" / f"trace_{int(a.size_mb)}mb" / "rank0.trace.json"
        if not path.exists():
            make_trace(path, a.size_mb)
    size_mb = _uncompressed_bytes(path) / 1e6
    roots = {"this": REPO} | ({"against": a.against.resolve()} if a.against else {})
    runs: dict[str, list[dict]] = {k: [] for k in roots}
    for _ in range(a.runs):
        for key, root in roots.items():
            runs[key].append(run_once(root, path, a.stages))
    rows = runs["this"][0]["rows"]
    print(f"trace: {path} ({size_mb:.1f} MB of JSON, {rows} rows), {a.runs} runs")
    for key, rs in runs.items():
        cpu = [r["cpu_s"] for r in rs]
        best = min(rs, key=lambda r: r["cpu_s"])
        rss = max(r.get("peak_rss_bytes", 0) for r in rs)
        print(
            f"  {key:8s} best {best['cpu_s']:.2f} s CPU = {size_mb / best['cpu_s']:.0f} MB/s per "
            f"core (user {best['user_s']:.2f}, sys {best['sys_s']:.2f}); median "
            f"{statistics.median(cpu):.2f} s; peak RSS {rss / 1e6:.0f} MB "
            f"({rss / 1e6 / size_mb:.2f}x the JSON)"
        )
        if best["stages"]:
            print("           " + ", ".join(f"{k} {v:.2f} s" for k, v in best["stages"].items()))


if __name__ == "__main__":
    main()
