"""Ranks on Dask give the serial report; a real `dask scheduler` + `dask worker` on loopback;
the Parquet cache gives the same report, faster; the per-rank result is compact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer import analyze

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "traces"
MULTI_RANK = [
    SHARED / "kineto" / "hta_recsys_2ranks",
    SHARED / "nsys" / "nsys2026_torchrun_2gpu_flash_nccl.sqlite",
    REPO / "sample_traces" / "synthetic" / "tp8_straggler",
    REPO / "sample_traces" / "synthetic" / "pp4_bubbles",
]
pytest.importorskip("distributed")


def _doc(path: Path, **kw) -> str:
    return json.dumps(analyze([path], **kw).to_dict(), sort_keys=True)


def _available(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of 2 single-threaded worker processes, shared by the tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", scheduler_kwargs={"dashboard": False}) as c:
        yield c.scheduler_address


@pytest.mark.parametrize("path", _available(MULTI_RANK), ids=lambda p: p.name)
def test_dask_gives_the_serial_report(path: Path, cluster: str) -> None:
    serial = _doc(path, workers=1)
    assert _doc(path, scheduler=cluster) == serial


def test_local_cluster_of_workers_gives_the_serial_report() -> None:
    path = REPO / "sample_traces" / "synthetic" / "tp8_straggler"
    assert _doc(path, workers=2) == _doc(path, workers=1)


KINETO = sorted((SHARED / "kineto").glob("*")) + sorted((REPO / "sample_traces" / "synthetic").iterdir())


@pytest.mark.parametrize("path", [p for p in KINETO if p.is_dir() or ".json" in p.name],
                         ids=lambda p: p.name)
def test_frames_pruned_while_reading_give_the_loaded_report(path: Path) -> None:
    """``analyze(paths)`` drops the python frames while reading (``prune.FramePruner``);
    ``analyze(load(paths))`` reads whole tables and prunes after: the same report."""
    from analyzer import load

    from_set = json.dumps(analyze(load([path])).to_dict(), sort_keys=True)
    assert from_set == _doc(path)


def test_the_pruner_keeps_exactly_the_rows_prune_keeps(big_trace: Path) -> None:
    from analyzer.analyses.context import trace_clues
    from analyzer.analyses.prune import FramePruner, prune_python_frames
    from analyzer.readers import read_kineto

    full = read_kineto(big_trace)
    clues, first, n_full = trace_clues(full), int(full.events["ts_ns"].min()), len(full.events)
    dropped = prune_python_frames(full)
    pruner = FramePruner()
    part = read_kineto(big_trace, row_filter=pruner)
    part.events["name"] = part.events["name"].cat.remove_unused_categories()
    assert len(part.events) < 0.2 * n_full  # a with_stack trace: ~90 % frames
    assert part.events.equals(full.events)
    assert list(part.events["name"].cat.categories) == list(full.events["name"].cat.categories)
    assert pruner.state() == {"clues": clues, "first_ts_ns": first, "dropped": dropped}


def test_the_per_rank_result_is_compact() -> None:
    from analyzer import load
    from analyzer.classify import load_rules
    from analyzer.rankwork import analyze_rank

    ts = load([SHARED / "kineto" / "hta_recsys_2ranks"] if (SHARED / "kineto").exists()
              else [REPO / "sample_traces" / "synthetic" / "tp8_straggler"])
    trace = ts.traces[0]
    rows = len(trace.events)
    res = analyze_rank(trace, load_rules())
    assert res.rows_read == rows
    assert len(res.trace.events) < rows  # only the rows the cross-rank half reads
    assert res.first_ts_ns is not None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_through_a_dask_scheduler_and_worker_on_loopback(tmp_path: Path) -> None:
    """`dask scheduler` and `dask worker` as processes, `trace-analyzer --scheduler` as a
    process: the JSON equals the serial one; both are stopped afterwards."""
    path = REPO / "sample_traces" / "synthetic" / "tp8_straggler"
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    sched = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", addr, "--nthreads", "1",
                               "--no-dashboard", "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_for_workers(addr, 1)
        out = tmp_path / "dask.json"
        cmd = [sys.executable, "-m", "analyzer.cli", "analyze", str(path), "--format", "json",
               "-o", str(out), "--scheduler", addr]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        serial = tmp_path / "serial.json"
        res = subprocess.run(cmd[:-4] + ["-o", str(serial), "--workers", "1"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        assert json.loads(out.read_text()) == json.loads(serial.read_text())
    finally:
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert worker.returncode is not None and sched.returncode is not None


def _wait_for_workers(addr: str, n: int, timeout_s: float = 120) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with Client(addr, timeout="10s") as c:
                c.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_bad_input_on_a_worker_is_bad_input_here(tmp_path: Path, cluster: str) -> None:
    from analyzer import BadInputError

    for i in range(2):
        (tmp_path / f"rank{i}.trace.json").write_text('{"traceEvents": [{"ph": "X", "ts": ')
    # an unreadable rank fails the run on a worker as it does here, naming the file
    with pytest.raises(BadInputError, match=r"rank\d\.trace\.json: truncated JSON.*--skip-bad-ranks"):
        analyze([tmp_path], scheduler=cluster)


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory) -> Path:
    source = SHARED / "kineto" / "sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
    if not source.exists():
        pytest.skip("needs ../shared/traces")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_trace import make_trace

    out = tmp_path_factory.mktemp("big") / "rank0.trace.json"
    make_trace(out, 40, source=source)
    return out


def test_a_cache_hit_gives_the_same_report_faster(big_trace: Path, tmp_path: Path) -> None:
    from analyzer.readers.cache import TraceCache

    cache = tmp_path / "cache"
    cold = _doc(big_trace, cache=cache)  # a miss: reads the JSON, writes the entry
    assert sorted(p.suffix for p in cache.iterdir()) == [".parquet", ".pkl"]

    def best_cpu_s(**kw) -> tuple[float, str]:
        runs = []
        for _ in range(3):
            t0 = time.process_time()
            doc = _doc(big_trace, **kw)
            runs.append(time.process_time() - t0)
        return min(runs), doc

    t_json, uncached = best_cpu_s()
    t_hit, warm = best_cpu_s(cache=cache)
    assert warm == cold == uncached
    assert t_hit < t_json, (t_hit, t_json)
    # the table itself round-trips exactly (Categoricals as codes + categories)
    from analyzer.readers import read_kineto

    direct = read_kineto(big_trace).events
    tc = TraceCache(cache)
    hit = tc.read_kineto(big_trace).events
    assert list(hit.columns) == list(direct.columns)
    for col in direct.columns:
        assert hit[col].dtype == direct[col].dtype, col
        assert hit[col].equals(direct[col]), col


def test_a_changed_file_misses_the_cache(big_trace: Path, tmp_path: Path) -> None:
    from analyzer.readers.cache import TraceCache

    tc = TraceCache(tmp_path / "c")
    k1 = tc.key(big_trace)
    st = big_trace.stat()
    os.utime(big_trace, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert tc.key(big_trace) != k1
    finally:
        os.utime(big_trace, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert TraceCache(tmp_path, min_bytes=big_trace.stat().st_size + 1).key(big_trace) is None


def test_cache_is_off_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzer.readers.cache import TraceCache, default_dir

    monkeypatch.setenv("TRACE_ANALYZER_NO_CACHE", "1")
    assert TraceCache.default() is None
    monkeypatch.setenv("TRACE_ANALYZER_NO_CACHE", "0")
    monkeypatch.setenv("TRACE_ANALYZER_CACHE_DIR", "/tmp/somewhere")
    assert TraceCache.default() is not None and default_dir() == Path("/tmp/somewhere")


# ------------------------------------------------------------------------------------------
# fast start
# ------------------------------------------------------------------------------------------

HEAVY = ("numpy", "pandas", "plotly", "streamlit", "msgspec", "dask", "distributed", "pyarrow")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["analyze", "--help"], ["plan", "--help"]])
def test_version_and_help_import_no_heavy_module(argv: list[str]) -> None:
    """What ``--version`` / ``--help`` import, not how long it takes (the machine may be
    loaded); the time is printed and recorded in docs/performance.md."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from analyzer.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - t, file=sys.stderr)\n" % (HEAVY,)
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         cwd=REPO)
    m = re.search(r"HEAVY (\[.*?\]) SECONDS ([0-9.e-]+)", res.stderr)
    assert m, res.stderr
    assert m.group(1) == "[]", m.group(1)
    print(f"{' '.join(argv)}: {float(m.group(2)):.3f} s after interpreter start")


# ------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_shows_ranks_and_mb_per_s_on_a_tty_only() -> None:
    from analyzer.cli import ProgressBar

    tty = _Tty(True)
    bar = ProgressBar(stream=tty)
    analyze([REPO / "sample_traces" / "synthetic" / "tp8_straggler"], progress=bar, on_rank=bar.ranks,
            workers=1)
    last = tty.text.split("\r")[-1]
    assert re.search(r"100\.0%.* MB/s  ranks (\d+)/\1$", last), last  # 8 ranks + a JSON that is no trace
    quiet = _Tty(False)
    bar = ProgressBar(stream=quiet)
    analyze([REPO / "sample_traces" / "synthetic" / "tp8_straggler"], progress=bar, on_rank=bar.ranks)
    assert quiet.text == ""


def test_an_unreachable_scheduler_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzer import BadInputError, parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(BadInputError, match="cannot reach the Dask scheduler"):
        analyze([REPO / "sample_traces" / "synthetic" / "tp8_straggler"], scheduler=f"tcp://127.0.0.1:{_free_port()}")
