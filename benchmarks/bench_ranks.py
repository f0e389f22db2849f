"""Many ranks on Dask: wall time and peak memory with 1, 2 and all workers, on a `dask
scheduler` + 2 `dask worker` processes, and the single-trace run against HTA.

SYNTHETIC input: ``make_trace.make_ranks`` writes ``--ranks`` rank files of ``--size-mb`` MB
each (the real SGLang serving trace tiled, every rank the same events under its own
``distributedInfo.rank``). Each configuration runs ``analyze`` (read, classify, steps,
timelines, the serving diagnosis, the JSON report; no cache) in a fresh interpreter, reaped
with ``os.wait4``:

* ``local N``: ``analyze([dir], workers=N)``, what ``trace-analyzer analyze DIR --workers N``
  does: 1 is the serial path in one process; N > 1 starts a LocalCluster of N forked worker
  processes (its start and stop are inside the wall time). Client peak RSS: the child's own
  ``ru_maxrss``; worker peak RSS: its ``RUSAGE_CHILDREN`` (the largest worker: they are its
  children).
* ``cache warm``: ``local all`` again with the Parquet cache, after a run that filled it.
* ``dask cluster``: the benchmark starts ``dask scheduler`` and 2 ``dask worker --nthreads 1``
  processes on loopback first (not timed), then runs ``analyze([dir], scheduler=...)``
  twice: the first job includes the workers' imports of the analyzer, numpy and pandas (a
  long-lived cluster pays them once; ``dask worker --preload analyzer.api`` pays them at
  start); worker peak RSS (the larger of the two) is read from each worker (``Client.run``).
* ``single``: ``bench_parse.run_child`` for ``analyzer`` and ``hta`` on one trace of
  ``--single-mb`` MB (``--no-hta`` skips HTA).

    python benchmarks/bench_ranks.py --ranks 16 --size-mb 50 --single-mb 300
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from bench_parse import machine, run_child
from make_trace import make_ranks, make_trace

CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
from analyzer import analyze
kw = json.loads(sys.argv[2])
rep = analyze([sys.argv[1]], **kw)
n = len(json.dumps(rep.to_dict()))
wall = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"analyze_s": wall, "client_rss_bytes": me.ru_maxrss * 1024,
                  "worker_rss_bytes": kids.ru_maxrss * 1024, "client_cpu_s": me.ru_utime + me.ru_stime,
                  "workers_cpu_s": kids.ru_utime + kids.ru_stime, "ranks": len(rep.inputs), "n": n}}))
"""


def run_analyze(path: Path, **kw) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO)), str(path), json.dumps(kw)],
                         capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_dask_cluster(path: Path, n_workers: int = 2) -> dict:
    """`dask scheduler` + ``n_workers`` `dask worker` processes on loopback, then analyze."""
    from distributed import Client

    port = _port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen([sys.executable, "-m", "dask", "worker", addr, "--nthreads", "1",
                                    "--no-dashboard", "--host", "127.0.0.1"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(n_workers)]
        deadline = time.monotonic() + 120
        while True:
            try:
                with Client(addr, timeout="10s") as c:
                    c.wait_for_workers(n_workers, timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        cold = run_analyze(path, scheduler=addr)  # the workers import the analyzer on the first task
        warm = run_analyze(path, scheduler=addr)
        with Client(addr, timeout="10s") as c:
            import resource

            rss = c.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        for r in (cold, warm):
            r["worker_rss_bytes"] = max(rss.values())
            r["worker_rss_each_bytes"] = sorted(rss.values())
        return {"first job (workers import the analyzer)": cold, "second job": warm}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--size-mb", type=float, default=300.0, help="size of each rank file")
    ap.add_argument("--single-mb", type=float, default=300.0, help="the single trace against HTA")
    ap.add_argument("--no-hta", action="store_true")
    ap.add_argument("--keep", action="store_true", help="reuse existing traces of those sizes")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    d = OUT / f"ranks_{a.ranks}x{int(a.size_mb)}mb"
    if not (a.keep and (d / f"rank{a.ranks - 1}.trace.json").exists()):
        for old in d.glob("*"):
            old.unlink()
        make_ranks(d, a.ranks, a.size_mb)
    total = sum(p.stat().st_size for p in d.glob("*.trace.json"))
    print(f"traces: {d} ({a.ranks} x {total / a.ranks / 1e6:.1f} MB = {total / 1e6:.0f} MB, synthetic)")
    print(f"machine: {machine()}, {cores} cores usable")
    rows: dict[str, dict] = {}
    counts = sorted({1, 2, cores})
    for n in counts:
        label = f"local {n} worker{'s' if n > 1 else ''}" + (" (all cores)" if n == cores else "")
        rows[label] = run_analyze(d, workers=n, cache=False)
        print(f"  {label}: {rows[label]['wall_s']:.2f} s", flush=True)
    cache_dir = OUT / "cache"
    os.environ["TRACE_ANALYZER_CACHE_DIR"] = str(cache_dir)
    run_analyze(d, workers=cores, cache=True)  # fills the cache
    rows[f"local {cores} workers, cache warm"] = run_analyze(d, workers=cores, cache=True)
    for label, r in on_dask_cluster(d, 2).items():
        rows[f"dask scheduler + 2 dask workers, {label}"] = r
    print()
    print("| configuration | wall s | analyze s | MB/s (wall) | speed-up vs 1 | client peak RSS MB "
          "| worker peak RSS MB | RSS per worker / rank file |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[next(iter(rows))]["wall_s"]
    for label, r in rows.items():
        w = r["worker_rss_bytes"]
        print(f"| {label} | {r['wall_s']:.2f} | {r['analyze_s']:.2f} | {total / 1e6 / r['wall_s']:.0f} "
              f"| {base / r['wall_s']:.2f}x | {r['client_rss_bytes'] / 1e6:.0f} "
              f"| {w / 1e6:.0f} | {w / (total / a.ranks):.2f} |")
    single: dict[str, dict] = {}
    sd = OUT / f"trace_{int(a.single_mb)}mb"
    sp = sd / "rank0.trace.json"
    if not (a.keep and sp.exists()):
        for old in sd.glob("*"):
            old.unlink()
        make_trace(sp, a.single_mb)
    size = sp.stat().st_size
    for mode in ("analyzer",) + (() if a.no_hta else ("hta",)):
        single[mode] = run_child(mode, sp)
    print(f"\nsingle trace {size / 1e6:.1f} MB:")
    for mode, r in single.items():
        print(f"  {mode}: wall {r['wall_s']:.2f} s, work {r['work_s']:.2f} s, cpu {r['cpu_s']:.2f} s "
              f"({size / 1e6 / r['cpu_s']:.0f} MB/s per core), peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB "
              f"({r['peak_rss_bytes'] / size:.2f}x the file)")
    if "hta" in single:
        o, us = single["hta"], single["analyzer"]
        print(f"  vs HTA: wall {o['wall_s'] / us['wall_s']:.1f}x, work {o['work_s'] / us['work_s']:.1f}x")
    (OUT / "bench_ranks.json").write_text(json.dumps(
        {"machine": machine(), "cores": cores, "ranks": a.ranks, "bytes": total, "rows": rows,
         "single_bytes": size, "single": single}, indent=2))


if __name__ == "__main__":
    main()
