"""Diff speed: ``trace-analyzer diff`` vs HolisticTraceAnalysis's ``TraceDiff`` on the same pair.

Not a test. Each contender runs in a fresh interpreter (as a user would run it), three times
by default; the best wall time of the call (imports timed apart) is reported, and the ratio.

* ``analyzer`` - ``analyzer.diff.diff_paths(base, new)`` + ``render_diff(..., "json")``:
  both sides analysed (read, classify, every analysis), compared, rendered
* ``hta``      - ``TraceDiff.compare_traces(LabeledTrace(base_dir), LabeledTrace(new_dir))``
  + ``TraceDiff.ops_diff(...)``: HTA parses both traces once and compares op/kernel counts
  and durations (what its TraceDiff does; it has no time-by-category or step statistics)
* ``hta_dirs`` - the same two calls given the trace directories, as HTA's documentation
  shows them: each call parses both traces again

    python benchmarks/bench_diff.py                      # the recsys pair from ../shared
    python benchmarks/bench_diff.py BASE NEW --repeat 1  # any two Kineto trace files
    python benchmarks/bench_diff.py --tile-mb 30         # each side tiled to a 30 MB SYNTHETIC
                                                         # trace (make_trace.py) first

HTA reads a directory per trace: each file is linked into its own folder under
benchmarks/out/diff/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "diff"
DEFAULT_PAIR = (REPO.parent / "shared" / "traces" / "kineto" / "hta_recsys_2ranks" / "sampled_rank-0.json.gz",
                REPO.parent / "shared" / "traces" / "kineto" / "hta_recsys_2ranks" / "sampled_rank-1.json.gz")

CHILD = {
    "analyzer": (
        "from analyzer.diff import diff_paths\nfrom analyzer.render.diff import render_diff",
        "d = diff_paths(BASE, NEW)\nn = len(render_diff(d, 'json'))",
    ),
    "hta": (
        ("import logging\nlogging.disable(logging.WARNING)\n"
         "from hta.trace_diff import LabeledTrace, TraceDiff"),
        ("c = LabeledTrace(label='base', trace_dir=BASE_DIR)\nt = LabeledTrace(label='new', trace_dir=NEW_DIR)\n"
         "df = TraceDiff.compare_traces(c, t)\nops = TraceDiff.ops_diff(c, t)\nn = len(df)"),
    ),
    # as HTA's docs call it: trace directories, parsed again by each call
    "hta_dirs": (
        ("import logging\nlogging.disable(logging.WARNING)\n"
         "from hta.trace_diff import TraceDiff"),
        ("df = TraceDiff.compare_traces(BASE_DIR, NEW_DIR)\nops = TraceDiff.ops_diff(BASE_DIR, NEW_DIR)\n"
         "n = len(df)"),
    ),
}

CODE = """
import sys, time, json
BASE, NEW, BASE_DIR, NEW_DIR = sys.argv[1:5]
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
{imports}
t_imp = time.perf_counter() - t0
t0 = time.perf_counter(); c0 = time.process_time()
{call}
print(json.dumps({{"work_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "import_s": t_imp, "n": n}}))
"""


def _dir_with(path: Path, name: str) -> Path:
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    (d / path.name).symlink_to(path.resolve())
    return d


def run_child(mode: str, base: Path, new: Path, bdir: Path, ndir: Path) -> dict:
    imports, call = CHILD[mode]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a normal install: modules compiled once
    r = subprocess.run([sys.executable, "-c", CODE.format(repo=str(REPO), imports=imports, call=call),
                        str(base), str(new), str(bdir), str(ndir)],
                       check=False, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", nargs="?", default=str(DEFAULT_PAIR[0]))
    ap.add_argument("new", nargs="?", default=str(DEFAULT_PAIR[1]))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="analyzer,hta,hta_dirs")
    ap.add_argument("--tile-mb", type=float, default=0.0,
                    help="tile each side's events in time to a synthetic trace of this size first")
    args = ap.parse_args()
    base, new = Path(args.base), Path(args.new)
    if args.tile_mb:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from make_trace import make_trace

        tiled = []
        for side, src in (("base", base), ("new", new)):
            out = OUT / "tiled" / f"{side}-{src.name.split('.')[0]}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            make_trace(out, args.tile_mb, source=src)
            tiled.append(out)
        base, new = tiled
    bdir, ndir = _dir_with(base, "base"), _dir_with(new, "new")
    print(f"pair: {base.name} ({base.stat().st_size / 1e6:.2f} MB) vs {new.name} "
          f"({new.stat().st_size / 1e6:.2f} MB); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    best: dict[str, dict] = {}
    for mode in args.only.split(","):
        runs = [run_child(mode, base, new, bdir, ndir) for _ in range(args.repeat)]
        best[mode] = min(runs, key=lambda r: r["work_s"])
        b = best[mode]
        print(f"  {mode:<9} work {b['work_s']:7.2f} s (cpu {b['cpu_s']:6.2f} s), imports {b['import_s']:5.2f} s, "
              f"best of {args.repeat}")
    a = best.get("analyzer")
    for mode in ("hta", "hta_dirs"):
        if a and mode in best:
            h = best[mode]
            ratio = h["work_s"] / a["work_s"]
            cpu = h["cpu_s"] / a["cpu_s"]
            total = (h["work_s"] + h["import_s"]) / (a["work_s"] + a["import_s"])
            print(f"  ratio vs {mode}: trace-analyzer diff is {ratio:.1f}x faster (wall), "
                  f"{cpu:.1f}x (cpu), {total:.1f}x counting imports")


if __name__ == "__main__":
    main()
