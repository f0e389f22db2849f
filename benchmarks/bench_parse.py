"""Parse-speed and memory benchmark: this analyzer vs HolisticTraceAnalysis vs json.load.

Not a test. Generates a large SYNTHETIC Kineto trace (a real trace's events tiled in time,
see make_trace.py) under benchmarks/out/, then runs each contender in a fresh subprocess
and reads that child's peak RSS from ``os.wait4`` (the child's own ``ru_maxrss``):

* ``reader``   - ``analyzer.readers.read_kineto(path)`` (the reader alone: the compiled
  scanner when built)
* ``reader_msgspec`` - the same with ``scanner="msgspec"`` (the pure-Python-extension path)
* ``analyzer`` - ``analyzer.analyze([path])`` + ``json.dumps(report.to_dict())`` (end to end;
  falls back to ``load_traces`` + ``classify_trace`` while ``analyze`` does not exist)
* ``hta``      - ``TraceAnalysis(trace_dir=dir)`` + ``get_temporal_breakdown(visualize=False)``
* ``json``     - plain ``json.load`` of the file

    python benchmarks/bench_parse.py                 # 300 MB, all contenders (minutes)
    python benchmarks/bench_parse.py --size-mb 30    # quick run
    python benchmarks/bench_parse.py --only reader,json --repeat 3

Every child runs single-threaded work in one process (HTA may start its own pool for
several ranks; with one file it parses in-process). Wall seconds include interpreter start
and imports; "imports" times the child's imports, "work" (wall) and "cpu" (process time)
the call alone. MB/s per core = file size / cpu seconds of the call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO / "benchmarks"))

from make_trace import make_trace

#: (imports, timed call) of each contender; "import" times the first, "work"/"cpu" the second
CHILD = {
    "reader": (
        "from analyzer.readers import read_kineto",
        "t = read_kineto(PATH)\nn = len(t.events)",
    ),
    "reader_msgspec": (
        "from analyzer.readers import read_kineto",
        't = read_kineto(PATH, scanner="msgspec")\nn = len(t.events)',
    ),
    "analyzer": (
        "import json as _json\nfrom analyzer import analyze",
        "rep = analyze([PATH])\nn = len(_json.dumps(rep.to_dict()))",
    ),
    "hta": (
        "import logging\nlogging.disable(logging.WARNING)\n"
        "from hta.trace_analysis import TraceAnalysis",
        "a = TraceAnalysis(trace_dir=DIR)\n"
        "df = a.get_temporal_breakdown(visualize=False)\nn = len(df)",
    ),
    "json": (
        "import json as _json",
        'with open(PATH, "rb") as fh:\n    doc = _json.load(fh)\nn = len(doc["traceEvents"])',
    ),
}

PRELUDE = """
import os, sys, time, json as _j
PATH = sys.argv[1]
DIR = os.path.dirname(PATH)
sys.path.insert(0, {repo!r})
t_imp, c_imp = time.perf_counter(), time.process_time()
{imports}
t_imp, c_imp = time.perf_counter() - t_imp, time.process_time() - c_imp
t0 = time.perf_counter()
c0 = time.process_time()
"""
EPILOGUE = """
print(_j.dumps({"work_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                "import_s": t_imp, "import_cpu_s": c_imp, "n": n}))
"""


def run_child(mode: str, path: Path) -> dict:
    """Run one contender in a fresh interpreter; reap it with ``os.wait4`` for its rusage."""
    imports, call = CHILD[mode]
    code = PRELUDE.format(repo=str(REPO), imports=imports) + call + "\n" + EPILOGUE
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # as on a normal install: modules compiled once to __pycache__, not on every start
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out_f = OUT / f".child-{mode}.out"
    err_f = OUT / f".child-{mode}.err"
    start = time.perf_counter()
    with open(out_f, "wb") as so, open(err_f, "wb") as se:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", code, str(path)],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, so.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, se.fileno(), 2),
            ],
        )
        _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{mode} failed:\n{err_f.read_text()[-3000:]}")
    res = json.loads(out_f.read_text().strip().splitlines()[-1])
    res["wall_s"] = wall
    res["peak_rss_bytes"] = int(usage.ru_maxrss) * 1024  # Linux: KiB
    return res


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=300.0)
    ap.add_argument("--only", default="reader,reader_msgspec,analyzer,hta,json")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender (best is kept)")
    ap.add_argument("--keep", action="store_true", help="reuse an existing trace of that size")
    a = ap.parse_args()
    d = OUT / f"trace_{int(a.size_mb)}mb"
    path = d / "rank0.trace.json"
    if not (a.keep and path.exists()):
        for old in d.glob("*"):
            old.unlink()
        truth = make_trace(path, a.size_mb)
    else:
        truth = {"bytes": path.stat().st_size}
    size = path.stat().st_size
    print(f"trace: {path} ({size / 1e6:.1f} MB, synthetic tiling of a real SGLang trace)")
    print(f"machine: {machine()}")
    results: dict[str, dict] = {}
    for mode in a.only.split(","):
        best = None
        for _ in range(a.repeat):
            r = run_child(mode, path)
            if best is None or r["wall_s"] < best["wall_s"]:
                best = r
        assert best is not None
        results[mode] = best
        print(f"  {mode:14s} wall {best['wall_s']:7.2f} s  imports {best['import_s']:5.2f} s  "
              f"work {best['work_s']:7.2f} s  cpu {best['cpu_s']:7.2f} s  "
              f"peak RSS {best['peak_rss_bytes'] / 1e6:7.0f} MB", flush=True)  # fmt: skip
    print()
    print(
        "| contender | wall s | MB/s (wall) | imports s | work s | cpu s "
        "| MB/s per core (cpu) | peak RSS MB | RSS / file |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['wall_s']:.2f} | {size / 1e6 / r['wall_s']:.0f} | {r['import_s']:.2f} "
            f"| {r['work_s']:.2f} | {r['cpu_s']:.2f} | {size / 1e6 / r['cpu_s']:.0f} "
            f"| {r['peak_rss_bytes'] / 1e6:.0f} | {r['peak_rss_bytes'] / size:.2f} |"
        )
    ours = results.get("analyzer") or results.get("reader")
    if ours:
        for other in ("hta", "json"):
            if other in results:
                o = results[other]
                print(f"speed-up vs {other}: wall {o['wall_s'] / ours['wall_s']:.1f}x, "
                      f"work {o['work_s'] / ours['work_s']:.1f}x")  # fmt: skip
    (OUT / "bench_results.json").write_text(
        json.dumps(
            {"file_bytes": size, "truth": truth, "machine": machine(), "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
