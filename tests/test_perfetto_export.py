"""`trace-analyzer export --perfetto`: the Chrome/Perfetto JSON trace, checked independently.

Perfetto's own trace_processor cannot run here: the `perfetto` wheel (0.59.1) ships no
trace_processor_shell binary and downloads it at run time, and no PyPI/Debian/npm package
ships one. So the output is checked by (1) a schema check of the Trace Event Format as
trace_processor's JSON importer reads it (ph/ts/dur/pid/tid/name, metadata naming every
process and thread, slices of one thread strictly nested), and (2) loading it into SQLite
with a loader written here and querying the finding slices with SQL, against figures
computed from the exported kernel slices and the report, not from the exporter's code.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces" / "synthetic"
TOL_US = 0.01  # per slice: the export rounds times to 1 ns


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def export(tmp_path: Path, *paths: str, ranks: str | None = None) -> tuple[dict, dict]:
    out = tmp_path / "trace.perfetto.json"
    extra = ["--ranks", ranks] if ranks else []
    res = run("export", "--perfetto", str(out), *paths, *extra)
    assert res.returncode == 0, res.stderr
    rep = run("analyze", *paths, "--format", "json")
    assert rep.returncode == 0, rep.stderr
    return json.loads(out.read_text()), json.loads(rep.stdout)


# ----------------------------------------------------------------------------------------
# an independent checker of the Trace Event Format
# ----------------------------------------------------------------------------------------


def check_schema(doc: dict) -> list[str]:
    """Problems trace_processor's JSON importer would have with ``doc`` (empty: none).
    Original CPU events are allowed improper nesting (the profiler's own rounding); our
    tracks (category trace_analyzer.*) are not."""
    problems: list[str] = []
    events = doc.get("traceEvents")
    if not isinstance(events, list) or not events:
        return ["no traceEvents list"]
    procs, threads = set(), set()
    used: dict[tuple[int, int], list[tuple[float, float, str]]] = defaultdict(list)
    for e in events:
        ph = e.get("ph")
        if not isinstance(e.get("pid"), int):
            problems.append(f"pid not an int: {e}")
            continue
        if ph == "M":
            if e.get("name") == "process_name":
                procs.add(e["pid"])
            elif e.get("name") == "thread_name":
                threads.add((e["pid"], e["tid"]))
            if e.get("name", "").endswith("_name") and not isinstance(e.get("args", {}).get("name"), str):
                problems.append(f"metadata without a name: {e}")
        elif ph == "X":
            ok = (isinstance(e.get("tid"), int) and isinstance(e.get("name"), str)
                  and isinstance(e.get("ts"), (int, float)) and isinstance(e.get("dur"), (int, float))
                  and e["dur"] >= 0 and e["ts"] >= 0)
            if not ok:
                problems.append(f"bad complete event: {e}")
                continue
            used[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e.get("cat", "")))
        else:
            problems.append(f"unexpected ph {ph!r}")
    for pid, tid in used:
        if pid not in procs:
            problems.append(f"process {pid} has no process_name")
        if (pid, tid) not in threads:
            problems.append(f"thread {pid}/{tid} has no thread_name")
    for key, sl in used.items():
        if not any(c.startswith("trace_analyzer.") for _, _, c in sl):
            continue
        stack: list[float] = []
        for a, b, _ in sorted(sl, key=lambda x: (x[0], -x[1])):
            while stack and stack[-1] <= a + 1e-9:
                stack.pop()
            if stack and b > stack[-1] + 1e-9:
                problems.append(f"slices on {key} overlap without nesting at ts={a}")
                break
            stack.append(b)
    return problems


def load_sqlite(doc: dict) -> sqlite3.Connection:
    """The trace as SQL tables ``process``, ``thread`` and ``slice`` (Perfetto's names)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE process (pid INTEGER, name TEXT)")
    db.execute("CREATE TABLE thread (pid INTEGER, tid INTEGER, name TEXT)")
    db.execute("CREATE TABLE slice (pid INTEGER, tid INTEGER, ts REAL, dur REAL, name TEXT, "
               "category TEXT, args TEXT)")
    for e in doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "process_name":
            db.execute("INSERT INTO process VALUES (?, ?)", (e["pid"], e["args"]["name"]))
        elif e["ph"] == "M" and e["name"] == "thread_name":
            db.execute("INSERT INTO thread VALUES (?, ?, ?)", (e["pid"], e["tid"], e["args"]["name"]))
        elif e["ph"] == "X":
            db.execute("INSERT INTO slice VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (e["pid"], e["tid"], e["ts"], e["dur"], e["name"], e.get("cat"),
                        json.dumps(e.get("args", {}))))
    return db


def union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


# ----------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------


def test_export_of_a_shared_sglang_trace_is_valid_and_its_findings_are_queryable(shared_traces, tmp_path):
    trace = shared_traces / "kineto" / "sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
    doc, report = export(tmp_path, str(trace))
    assert check_schema(doc) == []
    db = load_sqlite(doc)
    rows = db.execute(
        "SELECT s.name, COUNT(*), SUM(s.dur) FROM slice s JOIN thread t USING (pid, tid) "
        "WHERE s.category = 'trace_analyzer.finding' AND t.name LIKE 'finding #%' GROUP BY s.name").fetchall()
    found = {name: (n, total) for name, n, total in rows}
    assert set(found) == {f["id"] for f in report["findings"]}
    # the original GPU events carry their category; the finding slices are their union
    kernels = db.execute("SELECT ts, dur, json_extract(args, '$.category') FROM slice "
                         "WHERE category IN ('kernel', 'gpu_memcpy', 'gpu_memset')").fetchall()
    assert kernels and all(c for _, _, c in kernels)
    cats = {"gemm_compute": ("gemm",), "prefill_attention": ("attention_prefill",)}
    for f in report["findings"]:
        if f["id"] in cats:
            n, total = found[f["id"]]
            expected = union_us([(ts, ts + d) for ts, d, c in kernels if c in cats[f["id"]]])
            assert total == pytest.approx(expected, abs=TOL_US * n)
            assert total == pytest.approx(f["time_us"], abs=TOL_US * n)
    # one step (EXTEND, 15 requests) with its phase, and idle gaps named by cause
    steps = db.execute("SELECT name, json_extract(args, '$.annotation') FROM slice "
                       "WHERE category = 'trace_analyzer.step'").fetchall()
    assert steps == [("prefill step", "step[EXTEND bs=15 toks=15360]")]
    gaps = db.execute("SELECT SUM(dur) FROM slice WHERE category = 'trace_analyzer.gap' "
                      "AND name != 'capture edge'").fetchone()[0]
    assert gaps == pytest.approx(report["ranks"][0]["idle_us"], rel=1e-4)
    edge = db.execute("SELECT SUM(dur) FROM slice WHERE name = 'capture edge'").fetchone()[0]
    assert edge == pytest.approx(report["ranks"][0]["edge_us"], rel=1e-4)


@pytest.mark.parametrize("scenario", ["tp8_straggler", "pp4_bubbles", "batching_gaps"])
def test_every_finding_slice_sums_to_the_findings_time(scenario, tmp_path):
    doc, report = export(tmp_path, str(SAMPLES / scenario), ranks="all")
    assert check_schema(doc) == []
    assert doc["otherData"]["unmapped_findings"] == []
    db = load_sqlite(doc)
    rep = report["serving"]["representative_rank"]
    pids = {p for (p,) in db.execute("SELECT pid FROM process WHERE name = ?", (f"rank {rep} · trace-analyzer",))}
    assert len(pids) == 1
    pid = pids.pop()
    for f in report["findings"]:
        rows = db.execute("SELECT dur, json_extract(args, '$.counted_us') FROM slice WHERE pid = ? "
                          "AND category = 'trace_analyzer.finding' AND name = ?", (pid, f["id"])).fetchall()
        assert rows, f["id"]
        counted = sum(c for _, c in rows)
        assert counted == pytest.approx(f["time_us"], abs=TOL_US * len(rows) + 1e-6 * f["time_us"]), f["id"]
        assert all(c <= d + TOL_US for d, c in rows)
    ranks = {n for (n,) in db.execute("SELECT name FROM process WHERE name LIKE '%· host'")}
    assert len(ranks) == report["summary"]["ranks"]


def test_gap_slices_add_up_to_the_idle_time_by_cause(tmp_path):
    doc, report = export(tmp_path, str(SAMPLES / "batching_gaps"))
    by_cause: dict[str, float] = defaultdict(float)
    for e in doc["traceEvents"]:
        if e.get("cat") == "trace_analyzer.gap":
            if e["args"]["location"] == "edge":  # the capture edge is not idle
                assert e["name"] == "capture edge"
                continue
            assert e["name"] == f"idle: {e['args']['cause']}"
            for k, v in e["args"].items():
                if k.endswith("_us"):
                    by_cause[k.removesuffix("_us")] += v
    want = report["serving"]["gaps"]["summary"]["by_cause_us"]
    for cause, us in want.items():
        assert by_cause.get(cause, 0.0) == pytest.approx(us, abs=1.0), cause


def test_bad_ranks_exit_2(tmp_path):
    res = run("export", "--perfetto", str(tmp_path / "x.json"), str(SAMPLES / "batching_gaps"), "--ranks", "7")
    assert res.returncode == 2 and "no rank 7" in res.stderr
    assert not (tmp_path / "x.json").exists()
    res = run("export", "--perfetto", str(tmp_path / "x.json"), str(SAMPLES / "batching_gaps"), "--ranks", "x")
    assert res.returncode == 2 and "--ranks" in res.stderr


def test_kernel_step_args_point_at_the_step_slice_that_spans_them(tmp_path):
    """A kernel's args.step is the step whose GPU-span slice contains it (independent join)."""
    doc, _ = export(tmp_path, str(SAMPLES / "batching_gaps"))
    steps = {e["args"]["step"]: e for e in doc["traceEvents"] if e.get("cat") == "trace_analyzer.step"}
    kernels = [e for e in doc["traceEvents"] if e.get("cat") == "kernel" and "step" in e.get("args", {})]
    assert steps and kernels
    for k in kernels:
        s = steps[k["args"]["step"]]
        assert s["ts"] - TOL_US <= k["ts"] and k["ts"] + k["dur"] <= s["ts"] + s["dur"] + TOL_US
        assert k["args"]["phase"] == s["args"]["phase"]
