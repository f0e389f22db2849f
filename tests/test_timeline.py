"""Timeline figures on small hand-built event tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyzer.analyses.timeline import device_timeline, summarize, top_level_cpu_ops, trace_timelines
from analyzer.model import CATEGORIES, EVENT_COLUMNS, KINDS, RankInfo, SourceFile, Trace


def table(rows: list[dict]) -> pd.DataFrame:
    """Rows with ts/dur in us; fills the model's columns with their sentinels."""
    base = {"pid": 0, "tid": 7, "device": 0, "stream": 7, "correlation": -1, "external_id": -1,
            "collective": "", "msg_bytes": -1, "pg_name": "", "pg_size": -1, "seq": -1}
    full = [{**base, **r, "ts_ns": int(r["ts"] * 1000), "dur_ns": int(r["dur"] * 1000)} for r in rows]
    df = pd.DataFrame(full).drop(columns=["ts", "dur"])
    for col, dt in EVENT_COLUMNS.items():
        if dt == "category":
            df[col] = df[col].astype("category")
        else:
            df[col] = df[col].astype(dt)
    df["kind"] = pd.Categorical(df["kind"], categories=KINDS)
    cats = df["category"] if "category" in df else ["other"] * len(df)
    df["category"] = pd.Categorical(cats, categories=CATEGORIES)
    return df


def k(ts, dur, cat, stream=7, kind="kernel", **kw):
    return {"ts": ts, "dur": dur, "kind": kind, "name": f"{cat}_kernel", "category": cat,
            "stream": stream, **kw}


def test_overlapping_streams_and_exposed_communication():
    # stream 7: gemm 0-10, attention 12-20 ; stream 9: allreduce 5-15 (overlaps gemm 5-10)
    rows = [k(0, 10, "gemm"), k(12, 8, "attention_prefill"),
            k(5, 10, "communication", stream=9, collective="allreduce"),
            k(30, 2, "memcpy", kind="memcpy")]
    tl = device_timeline(table(rows), rank=0, device=0)
    assert tl.wall_us == pytest.approx(32.0)
    assert tl.busy_us == pytest.approx(22.0)  # 0-20 merged, plus the memcpy 30-32
    assert tl.idle_us == pytest.approx(10.0)
    c = tl.communication
    assert c.time_us == pytest.approx(10.0)
    assert c.exposed_us == pytest.approx(2.0)  # 10-12 only: 5-10 under gemm, 12-15 under attention
    assert c.overlapped_us == pytest.approx(8.0)
    assert c.by_collective["allreduce"]["count"] == 1
    assert tl.categories["gemm"].share == pytest.approx(10 / 32)
    assert sum(x.count for x in tl.categories.values()) == 4


def test_same_category_on_two_streams_counts_once():
    rows = [k(0, 10, "gemm"), k(5, 10, "gemm", stream=9)]
    tl = device_timeline(table(rows), rank=0, device=0)
    assert tl.categories["gemm"].time_us == pytest.approx(15.0)
    assert tl.categories["gemm"].count == 2
    assert tl.top_kernels[0]["time_us"] == pytest.approx(20.0)  # kernel time is summed


def test_summary_sums_and_spreads():
    a = device_timeline(table([k(0, 10, "gemm"), k(20, 10, "gemm")]), rank=0, device=0)
    b = device_timeline(table([k(0, 30, "gemm")]), rank=1, device=1)
    s = summarize([a, b])
    assert s["wall_us"] == pytest.approx(60.0)
    assert s["busy_us"] == pytest.approx(50.0)
    assert s["idle_share"] == pytest.approx(10 / 60)
    assert s["across_ranks"]["idle_us"] == {"min": 0.0, "median": 5.0, "max": 10.0}
    assert s["categories"]["gemm"]["share"] == pytest.approx(50 / 60)


def test_cpu_only_trace_falls_back_to_top_level_ops():
    rows = [
        {"ts": 0, "dur": 10, "kind": "cpu_op", "name": "aten::linear", "device": -1, "stream": -1, "tid": 1},
        {"ts": 2, "dur": 5, "kind": "cpu_op", "name": "aten::mm", "device": -1, "stream": -1, "tid": 1},
        {"ts": 12, "dur": 4, "kind": "cpu_op", "name": "aten::mm", "device": -1, "stream": -1, "tid": 1},
        {"ts": 1, "dur": 3, "kind": "cpu_op", "name": "aten::add", "device": -1, "stream": -1, "tid": 2},
    ]
    df = table(rows)
    top = top_level_cpu_ops(df)
    assert sorted(top["ts_ns"].tolist()) == [0, 1000, 12000]
    trace = Trace(RankInfo(rank=0), df, (SourceFile("x.json", "kineto"),))
    (tl,) = trace_timelines(trace)
    assert tl.activity_source == "cpu" and tl.device == -1
    assert tl.busy_us == pytest.approx(14.0)  # 0-10 (with 1-4 inside) and 12-16


def test_empty_device():
    tl = device_timeline(table([k(0, 1, "gemm")]).iloc[:0], rank=0, device=0)
    assert tl.busy_us == 0 and tl.wall_us == 0 and tl.categories == {}
    assert np.isfinite(tl.idle_us)


def test_cpu_recorded_sample_gets_categories(repo_root):
    """The real CPU TP2 sample: c10d collectives and aten GEMMs are classified, not 'other'."""
    import gzip
    import json

    import analyzer

    folder = repo_root / "sample_traces" / "cpu_tp2"
    doc = analyzer.analyze([folder]).to_dict()
    for r, path in zip(doc["ranks"], sorted(folder.glob("*.trace.json.gz"))):
        assert r["activity_source"] == "cpu"
        events = json.load(gzip.open(path))["traceEvents"]
        n_allreduce = sum(1 for e in events if e.get("cat") == "cpu_op" and e["name"] == "c10d::allreduce_")
        assert r["communication"]["by_collective"]["allreduce"]["count"] == n_allreduce
        assert "other" not in r["categories"]
        assert r["categories"]["gemm"]["count"] > 0


def test_capture_edges_leave_the_wall_and_sum_in_the_summary():
    # a 2 us warm-up memset, 10 ms of silence, then work 10_002-12_507 us with a 5 us hole
    rows = [k(0, 2, "memset", kind="memset"), k(10_002, 1000, "gemm"), k(11_007, 1500, "gemm")]
    win = (10_002_000, 12_507_000)
    a = device_timeline(table(rows), rank=0, device=0, step_window=win)
    assert a.capture_us == pytest.approx(12_507.0)
    assert a.edge_us == pytest.approx(10_000.0) and a.edges.rule == "steps"
    assert a.busy_us == pytest.approx(2502.0)
    assert a.idle_us == pytest.approx(5.0)
    assert a.wall_us == pytest.approx(2507.0)  # busy + idle: the edge is out of the wall
    assert a.categories["gemm"].share == pytest.approx(2500 / 2507)
    b = device_timeline(table([k(0, 30, "gemm")]), rank=1, device=1)
    assert b.edge_us == 0 and b.edges.rule == "none"
    s = summarize([a, b])
    assert s["wall_us"] == pytest.approx(2537.0)
    assert s["edge_us"] == pytest.approx(10_000.0)
    assert s["capture_us"] == pytest.approx(12_537.0)
    assert s["idle_share"] == pytest.approx(5 / 2537)
    assert s["edge_share"] == pytest.approx(10_000 / 12_537)
    inc = device_timeline(table(rows), rank=0, device=0, step_window=win, include_edges=True)
    assert inc.edge_us == 0 and inc.wall_us == pytest.approx(12_507.0)
    assert inc.idle_us == pytest.approx(10_005.0)
    # a warm-up holding more than 1% of the busy time is real work: its silence stays idle
    big = device_timeline(table([k(0, 30, "memset", kind="memset"), *rows[1:]]), rank=0, device=0,
                          step_window=win)
    assert big.edge_us == 0 and big.idle_us == pytest.approx(12_507 - 2530.0)
