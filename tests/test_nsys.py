"""Nsight Systems reader: real exports checked against independent SQL, synthetic schemas.

Real files: ../shared/traces/nsys/ (2022 single-GPU MPI saxpy, 2026 2-GPU torchrun with NCCL).
Every expected number below comes from SQL written here (and a plain sort-merge loop for busy
time), never from the reader's output. Synthetic files: a tiny builder (``NsysDb``) writes
only the tables a test asks for, with commented seed rows and known ground truth.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from reference import merged_length

from analyzer.intervals import union_length
from analyzer.model import BadInputError, validate_event_table
from analyzer.readers.nsys import (
    GRAPH_TRACE_NAME,
    read_nsys,
    read_nsys_many,
)

FILES = ("nsys2022_saxpy_mpi.sqlite", "nsys2026_torchrun_2gpu_flash_nccl.sqlite")
GPU_KINDS = ("kernel", "memcpy", "memset")
GPU_TABLES = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
)


# ==========================================================================================
# Real exports vs independent SQL
# ==========================================================================================


@pytest.fixture(scope="module", params=FILES)
def real(request, shared_traces):
    path = shared_traces / "nsys" / request.param
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    yield path, read_nsys(path), con
    con.close()


_CLASSIFIED: dict[str, list] = {}


def classified_gpu(path: Path, traces) -> list:
    """The GPU rows of each trace, classified once per file (host annotation names, e.g.
    torch's unique "aten::copy_, op_id = N" NVTX texts, are not needed for categories)."""
    from analyzer.classify import classify_events, load_rules

    if str(path) not in _CLASSIFIED:
        rules = load_rules()
        _CLASSIFIED[str(path)] = [
            (t, classify_events(t.events[t.events["kind"].isin(GPU_KINDS)], rules)) for t in traces
        ]
    return _CLASSIFIED[str(path)]


def tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def trace_for(traces, device: int, pid: int):
    """The trace of one (device, OS pid) pair."""
    hits = [t for t in traces if t.metadata["device_id"] == device and t.metadata["pid"] == pid]
    assert len(hits) == 1, (device, pid)
    return hits[0]


def sql_pairs(con) -> list[tuple[int, int]]:
    """(deviceId, OS pid) pairs with GPU activity, by plain SQL."""
    union = " UNION ".join(
        f"SELECT deviceId, (globalPid >> 24) & 0xFFFFFF FROM {t}"
        for t in GPU_TABLES
        if t in tables(con)
    )
    return sorted(con.execute(union).fetchall())


def test_one_trace_per_device_and_process(real):
    path, traces, con = real
    pairs = sql_pairs(con)
    assert len(traces) == len(pairs)
    got = sorted((t.metadata["device_id"], t.metadata["pid"]) for t in traces)
    assert got == pairs
    assert [t.rank.rank for t in traces] == list(range(len(pairs)))
    for t in traces:
        assert t.rank.rank_source == "nsys" and t.rank.world_size == len(pairs)
        assert t.sources[0].format == "nsys" and t.sources[0].path == str(path)
        validate_event_table(t.events)
        assert np.all(np.diff(t.events["ts_ns"].to_numpy()) >= 0)


def test_kernel_counts_and_time_per_device(real):
    _, traces, con = real
    rows = con.execute(
        "SELECT deviceId, (globalPid >> 24) & 0xFFFFFF, COUNT(*), SUM(end - start) "
        "FROM CUPTI_ACTIVITY_KIND_KERNEL GROUP BY 1, 2"
    ).fetchall()
    assert rows
    for dev, pid, count, total in rows:
        ev = trace_for(traces, dev, pid).events
        k = ev[ev["kind"] == "kernel"]
        assert len(k) == count
        assert int(k["dur_ns"].sum()) == total


def test_busy_time_per_device(real):
    """Busy = union of kernel + memcpy + memset intervals, per (device, process)."""
    _, traces, con = real
    present = [t for t in GPU_TABLES if t in tables(con)]
    for dev, pid in sql_pairs(con):
        sql = (
            " UNION ALL ".join(
                f"SELECT start, end FROM {t} WHERE deviceId = ? AND (globalPid >> 24) & 0xFFFFFF = ?"
                for t in present
            )
            + " ORDER BY start"
        )
        params = [v for _ in present for v in (dev, pid)]
        expected = merged_length(con.execute(sql, params).fetchall())
        ev = trace_for(traces, dev, pid).events
        g = ev[ev["kind"].isin(GPU_KINDS)]
        got = union_length(g["ts_ns"].to_numpy(), (g["ts_ns"] + g["dur_ns"]).to_numpy())
        assert int(got) == expected > 0


def test_memcpy_memset_counts_and_bytes(real):
    _, traces, con = real
    for table, kind in (
        ("CUPTI_ACTIVITY_KIND_MEMCPY", "memcpy"),
        ("CUPTI_ACTIVITY_KIND_MEMSET", "memset"),
    ):
        if table not in tables(con):
            continue
        for dev, pid, n, total, nbytes in con.execute(
            f"SELECT deviceId, (globalPid >> 24) & 0xFFFFFF, COUNT(*), SUM(end - start), "
            f"SUM(bytes) FROM {table} GROUP BY 1, 2"
        ):
            ev = trace_for(traces, dev, pid).events
            m = ev[ev["kind"] == kind]
            assert (len(m), int(m["dur_ns"].sum()), int(m["msg_bytes"].sum())) == (n, total, nbytes)


def test_memcpy_names_follow_kineto(real):
    _, traces, con = real
    # copyKind 1 = HtoD, 8 = DtoD; nsys memory kinds 0 = Pageable, 2 = Device
    n_htod = con.execute(
        "SELECT COUNT(*) FROM CUPTI_ACTIVITY_KIND_MEMCPY "
        "WHERE copyKind = 1 AND srcKind = 0 AND dstKind = 2"
    ).fetchone()[0]
    names = [n for t in traces for n in t.events.loc[t.events["kind"] == "memcpy", "name"]]
    assert names.count("Memcpy HtoD (Pageable -> Device)") == n_htod > 0


def test_nccl_kernel_time_per_device(real):
    """NCCL kernels (by SQL name match) all classify as communication, with the same time."""
    path, traces, con = real
    sql = (
        "SELECT k.deviceId, (k.globalPid >> 24) & 0xFFFFFF, SUM(k.end - k.start) "
        "FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName "
        "WHERE s.value LIKE 'nccl%' GROUP BY 1, 2"
    )
    expected = {(d, p): t for d, p, t in con.execute(sql)}
    for t, ev in classified_gpu(path, traces):
        comm = ev[(ev["kind"] == "kernel") & (ev["category"] == "communication")]
        key = (t.metadata["device_id"], t.metadata["pid"])
        assert int(comm["dur_ns"].sum()) == expected.get(key, 0)
    if "2026" in str(real[0]):
        assert len(expected) == 2 and all(v > 0 for v in expected.values())


def test_category_times(real):
    """Categories conserve GPU time; memcpy/memset/GEMM/attention match SQL by kernel name."""
    path, traces, con = real

    def sql_sum(table: str, where: str = "1", dev: int = 0, pid: int = 0) -> int:
        if table not in tables(con):
            return 0
        join = "JOIN StringIds s ON s.id = k.shortName" if "s.value" in where else ""
        return con.execute(
            f"SELECT COALESCE(SUM(k.end - k.start), 0) FROM {table} k {join} WHERE {where} "
            "AND k.deviceId = ? AND (k.globalPid >> 24) & 0xFFFFFF = ?",
            (dev, pid),
        ).fetchone()[0]

    for t, g in classified_gpu(path, traces):
        dev, pid = t.metadata["device_id"], t.metadata["pid"]
        by_cat = g.groupby("category", observed=True)["dur_ns"].sum()
        total = sum(sql_sum(tb, dev=dev, pid=pid) for tb in GPU_TABLES)
        assert int(by_cat.sum()) == total
        assert int(by_cat.get("memcpy", 0)) == sql_sum(
            "CUPTI_ACTIVITY_KIND_MEMCPY", dev=dev, pid=pid
        )
        assert int(by_cat.get("memset", 0)) == sql_sum(
            "CUPTI_ACTIVITY_KIND_MEMSET", dev=dev, pid=pid
        )
        kernels = "CUPTI_ACTIVITY_KIND_KERNEL"
        nvjet = sql_sum(kernels, "s.value LIKE 'nvjet%'", dev, pid)
        flash = sql_sum(kernels, "s.value LIKE 'flash_fwd%'", dev, pid)
        attention = int(by_cat.get("attention_prefill", 0) + by_cat.get("attention_decode", 0))
        assert int(by_cat.get("gemm", 0)) >= nvjet
        assert attention >= flash
        if "2026" in str(real[0]):
            assert nvjet > 0 and flash > 0


def test_cuda_api_names_kinds_and_correlation(real):
    _, traces, con = real
    # eventClass 0 = runtime, 1 = driver; 67 = the 2022 "CUDA backtrace" copy of a call that
    # is also stored as class 0 with the same correlation id (checked here by SQL)
    orphans = con.execute(
        "SELECT COUNT(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME b WHERE b.eventClass = 67 AND NOT "
        "EXISTS (SELECT 1 FROM CUPTI_ACTIVITY_KIND_RUNTIME r WHERE r.eventClass IN (0, 1) "
        "AND r.correlationId = b.correlationId AND r.globalTid = b.globalTid)"
    ).fetchone()[0]
    assert orphans == 0
    expected = {
        (p, c): n
        for p, c, n in con.execute(
            "SELECT (globalTid >> 24) & 0xFFFFFF, eventClass, COUNT(*) "
            "FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE eventClass IN (0, 1) GROUP BY 1, 2"
        )
    }
    launches = dict(
        con.execute(
            "SELECT (r.globalTid >> 24) & 0xFFFFFF, COUNT(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME r "
            "JOIN StringIds s ON s.id = r.nameId WHERE s.value LIKE 'cudaLaunchKernel%' "
            "AND r.eventClass = 0 GROUP BY 1"
        )
    )
    for t in traces:
        ev, pid = t.events, t.metadata["pid"]
        rt, dr = ev[ev["kind"] == "cuda_runtime"], ev[ev["kind"] == "cuda_driver"]
        assert len(rt) == expected.get((pid, 0), 0) and len(dr) == expected.get((pid, 1), 0)
        api = ev[ev["kind"].isin(["cuda_runtime", "cuda_driver"])]
        assert not any(re.search(r"_v\d{4,}$", str(n)) for n in api["name"].unique())
        assert int((rt["name"] == "cudaLaunchKernel").sum()) == launches.get(pid, 0)
        assert (api["device"] == -1).all() and (api["pid"] == pid).all()
        # correlation: kernels map back to launch calls of the same process
        k = ev[ev["kind"] == "kernel"]
        share = np.isin(k["correlation"], api["correlation"]).mean()
        assert share >= (1.0 if "2022" in t.sources[0].path else 0.99)


def test_nvtx_ranges_and_domains(real):
    _, traces, con = real
    expected = dict(
        con.execute(
            "SELECT (globalTid >> 24) & 0xFFFFFF, COUNT(*) FROM NVTX_EVENTS "
            "WHERE eventType IN (59, 60, 70, 71) AND end IS NOT NULL GROUP BY 1"
        )
    )
    gpu_pids = {t.metadata["pid"] for t in traces}
    for t in traces:
        ann = t.events[t.events["kind"] == "user_annotation"]
        assert len(ann) == expected.get(t.metadata["pid"], 0)
    assert set(expected) <= gpu_pids  # no NVTX from other processes in these files
    by_text = {}
    for t in traces:
        ann = t.events[t.events["kind"] == "user_annotation"]
        for text, dom in zip(ann["name"].astype(str), ann["domain"].astype(str)):
            by_text.setdefault(text, set()).add(dom)
    if "2026" in str(real[0]):
        # NCCL's own NVTX domain (id 1 by SQL): its ranges carry a non-default domain
        nccl_texts = {
            r[0]
            for r in con.execute(
                "SELECT s.value FROM NVTX_EVENTS n JOIN StringIds s ON s.id = n.textId "
                "WHERE n.domainId = 1 AND n.eventType = 59"
            )
        }
        assert {"ncclSend", "ncclRecv", "ncclGroupStart"} <= nccl_texts
        doms = set().union(*(by_text[x] for x in nccl_texts))
        assert len(doms) == 1 and "" not in doms
        assert by_text["aten::empty, op_id = 990346"] == {""}
    else:
        # 2022: domain "MPI" created by an NvtxDomainCreate row (eventType 75)
        assert (
            con.execute("SELECT text FROM NVTX_EVENTS WHERE eventType = 75").fetchone()[0] == "MPI"
        )
        assert by_text["MPI_Send"] == {"MPI"} and by_text["saxpy"] == {""}


def test_devices_and_clock(real):
    _, traces, con = real
    start = con.execute("SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME").fetchone()[0]
    gpus = {}
    if "TARGET_INFO_GPU" in tables(con):
        gpus = {
            i: (n, m, sm, f"{a}.{b}", bw / 1e9)
            for i, n, m, sm, a, b, bw in con.execute(
                "SELECT id, name, totalMemory, smCount, computeMajor, computeMinor, "
                "memoryBandwidth FROM TARGET_INFO_GPU"
            )
        }
    for t in traces:
        assert t.metadata["clock_zero_utc_ns"] == start
        dev = t.metadata["device_id"]
        info = t.gpu
        assert info is not None and info.index == dev
        if dev in gpus:
            assert (
                info.name,
                info.total_memory_bytes,
                info.num_sms,
                info.compute_capability,
                info.memory_bandwidth_gbps,
            ) == gpus[dev]
    if "2022" in str(real[0]):
        assert traces[0].gpu.name == "NVIDIA A100-SXM4-40GB"


# ==========================================================================================
# Synthetic schemas (tiny builder, known ground truth)
# ==========================================================================================


def gpid(pid: int, vm: int = 1) -> int:
    """nsys globalPid: VM/hardware id in the high bits, OS pid in bits 24..47."""
    return (vm << 48) | (pid << 24)


def gtid(pid: int, tid: int) -> int:
    return gpid(pid) | tid


class NsysDb:
    """A synthetic nsys export with only the tables a test creates (like ``nsys export``,
    which creates tables lazily)."""

    COLUMNS: ClassVar[dict[str, str]] = {
        "META_DATA_EXPORT": "name TEXT, value TEXT",
        "EXPORT_META_DATA": "name TEXT, value TEXT",
        "StringIds": "id INTEGER PRIMARY KEY, value TEXT NOT NULL",
        "TARGET_INFO_SESSION_START_TIME": "utcEpochNs INT, utcTime TEXT, localTime TEXT",
        "TARGET_INFO_GPU": "id INT, name TEXT, totalMemory INT, smCount INT, computeMajor INT, "
        "computeMinor INT, memoryBandwidth INT",
        "PROCESSES": "globalPid INT, pid INT, name TEXT",
        "CUPTI_ACTIVITY_KIND_KERNEL": "start INT, end INT, deviceId INT, streamId INT, "
        "correlationId INT, globalPid INT, demangledName INT, "
        "shortName INT",
        "CUPTI_ACTIVITY_KIND_MEMCPY": "start INT, end INT, deviceId INT, streamId INT, "
        "correlationId INT, globalPid INT, bytes INT, "
        "copyKind INT, srcKind INT, dstKind INT",
        "CUPTI_ACTIVITY_KIND_GRAPH_TRACE": "start INT, end INT, deviceId INT, streamId INT, "
        "correlationId INT, globalPid INT, graphId INT",
        "CUPTI_ACTIVITY_KIND_RUNTIME": "start INT, end INT, eventClass INT, globalTid INT, "
        "correlationId INT, nameId INT",
        "NVTX_EVENTS": "start INT, end INT, eventType INT, text TEXT, globalTid INT, "
        "textId INT, domainId INT",
    }

    def __init__(self, path: Path, columns: dict[str, str] | None = None):
        self.path = path
        self.con = sqlite3.connect(path)
        self.cols = dict(self.COLUMNS, **(columns or {}))
        self.made: set[str] = set()
        self.ids: dict[str, int] = {}

    def s(self, text: str) -> int:
        """StringIds id of ``text`` (inserted once)."""
        if text not in self.ids:
            self.ids[text] = len(self.ids) + 1
            self.add("StringIds", id=self.ids[text], value=text)
        return self.ids[text]

    def add(self, table: str, **row) -> NsysDb:
        if table not in self.made:
            self.con.execute(f"CREATE TABLE {table} ({self.cols[table]})")
            self.made.add(table)
        keys = ", ".join(row)
        self.con.execute(
            f"INSERT INTO {table} ({keys}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        return self

    def kernel(self, start, end, dev, pid, name, corr=-1, stream=7, short=None) -> NsysDb:
        return self.add(
            "CUPTI_ACTIVITY_KIND_KERNEL",
            start=start,
            end=end,
            deviceId=dev,
            streamId=stream,
            correlationId=corr,
            globalPid=gpid(pid),
            demangledName=self.s(name),
            shortName=self.s(short or name),
        )

    def api(self, start, end, pid, tid, name, corr, event_class=0) -> NsysDb:
        return self.add(
            "CUPTI_ACTIVITY_KIND_RUNTIME",
            start=start,
            end=end,
            eventClass=event_class,
            globalTid=gtid(pid, tid),
            correlationId=corr,
            nameId=self.s(name),
        )

    def done(self) -> Path:
        self.con.commit()
        self.con.close()
        return self.path


def modern_two_gpu(path: Path, start_utc_ns: int = 1_700_000_000_000_000_000) -> Path:
    """Two processes on two GPUs (an SGLang TP=2 shape), 2024+ schema without ENUM tables."""
    db = NsysDb(path)
    db.add("META_DATA_EXPORT", name="EXPORT_PRODUCT_VERSION", value="2025.1.1")
    db.add("TARGET_INFO_SESSION_START_TIME", utcEpochNs=start_utc_ns, utcTime="", localTime="")
    for dev in (0, 1):  # 80 GB H100s, 132 SMs, 3.35 TB/s
        db.add(
            "TARGET_INFO_GPU",
            id=dev,
            name="NVIDIA H100 80GB HBM3",
            totalMemory=85_000_000_000,
            smCount=132,
            computeMajor=9,
            computeMinor=0,
            memoryBandwidth=3_352_320_000_000,
        )
    db.add("PROCESSES", globalPid=gpid(100), pid=100, name="sglang::scheduler_TP0")
    db.add("PROCESSES", globalPid=gpid(200), pid=200, name="sglang::scheduler_TP1")
    # TP0 (pid 100) on GPU 0: two overlapping kernels on two streams -> busy [1000, 1150)
    db.kernel(1000, 1100, 0, 100, "void gemm_kernel<float>(int)", corr=11, short="gemm_kernel")
    db.kernel(
        1050,
        1150,
        0,
        100,
        "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(x)",
        corr=12,
        stream=9,
        short="ncclDevKernel_AllReduce_Sum_bf16_RING_LL",
    )
    # ... and a 4 KiB host-to-device copy [1200, 1260): busy total 150 + 60 = 210
    db.add(
        "CUPTI_ACTIVITY_KIND_MEMCPY",
        start=1200,
        end=1260,
        deviceId=0,
        streamId=7,
        correlationId=13,
        globalPid=gpid(100),
        bytes=4096,
        copyKind=1,
        srcKind=0,
        dstKind=2,
    )
    db.api(990, 999, 100, 100, "cudaLaunchKernel_v7000", 11)
    db.api(1001, 1010, 100, 100, "cudaLaunchKernel_v7000", 12)
    db.api(1020, 1030, 100, 100, "cudaMemcpyAsync_v3020", 13)
    db.api(1021, 1029, 100, 100, "cuLaunchKernelEx", 14, event_class=1)  # driver call
    # TP1 (pid 200) on GPU 1: one kernel [2000, 2300)
    db.kernel(2000, 2300, 1, 200, "void gemm_kernel<float>(int)", corr=21, short="gemm_kernel")
    db.api(1990, 1995, 200, 200, "cudaLaunchKernel_v7000", 21)
    # NVTX: NCCL creates its domain 5 in pid 200 (eventType 75), then a push/pop range in it;
    # an SGLang-style range in the default domain 0 (text through StringIds); a range of a
    # process without GPU work (pid 300, the tokenizer) that no trace keeps
    db.add(
        "NVTX_EVENTS",
        start=10,
        end=None,
        eventType=75,
        text="NCCL",
        globalTid=gtid(200, 200),
        domainId=5,
    )
    db.add(
        "NVTX_EVENTS",
        start=1980,
        end=2310,
        eventType=59,
        text="ncclAllReduce",
        globalTid=gtid(200, 200),
        domainId=5,
    )
    db.add(
        "NVTX_EVENTS",
        start=900,
        end=1300,
        eventType=59,
        textId=db.s("scheduler.run_batch"),
        globalTid=gtid(100, 100),
        domainId=0,
    )
    db.add(
        "NVTX_EVENTS",
        start=950,
        end=960,
        eventType=60,
        text="tokenize",
        globalTid=gtid(300, 300),
        domainId=0,
    )
    return db.done()


def test_synthetic_two_gpus_two_traces(tmp_path):
    traces = read_nsys(modern_two_gpu(tmp_path / "tp2.sqlite"))
    assert [(t.rank.rank, t.metadata["device_id"], t.metadata["pid"]) for t in traces] == [
        (0, 0, 100),
        (1, 1, 200),
    ]
    t0, t1 = traces
    assert t0.metadata["process_name"] == "sglang::scheduler_TP0"
    assert t0.metadata["nsys_version"] == "2025.1.1"
    assert t0.gpu.name == "NVIDIA H100 80GB HBM3" and t0.gpu.memory_bandwidth_gbps == 3352.32
    ev = t0.events
    k = ev[ev["kind"] == "kernel"]
    assert list(k["name"]) == [
        "void gemm_kernel<float>(int)",  # demangled name preferred
        "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(x)",
    ]
    assert list(k["stream"]) == [7, 9] and list(k["tid"]) == [7, 9] and list(k["pid"]) == [0, 0]
    m = ev[ev["kind"] == "memcpy"]
    assert list(m["name"]) == ["Memcpy HtoD (Pageable -> Device)"] and list(m["msg_bytes"]) == [
        4096
    ]
    g = ev[ev["kind"].isin(GPU_KINDS)]
    assert union_length(g["ts_ns"].to_numpy(), (g["ts_ns"] + g["dur_ns"]).to_numpy()) == 210
    api = ev[ev["kind"].isin(["cuda_runtime", "cuda_driver"])]
    assert list(zip(api["kind"], api["name"], api["correlation"])) == [
        ("cuda_runtime", "cudaLaunchKernel", 11),
        ("cuda_runtime", "cudaLaunchKernel", 12),
        ("cuda_runtime", "cudaMemcpyAsync", 13),
        ("cuda_driver", "cuLaunchKernelEx", 14),
    ]
    ann = ev[ev["kind"] == "user_annotation"]
    assert list(zip(ann["name"], ann["domain"], ann["dur_ns"])) == [
        ("scheduler.run_batch", "", 400)
    ]
    ann1 = t1.events[t1.events["kind"] == "user_annotation"]
    assert list(zip(ann1["name"], ann1["domain"])) == [("ncclAllReduce", "NCCL")]
    assert not any("tokenize" in set(t.events["name"].astype(str)) for t in traces)
    assert t0.warnings == () and t1.warnings == ()
    for t in traces:
        validate_event_table(t.events)


def test_old_meta_table_and_missing_tables(tmp_path):
    """2022 shape: EXPORT_META_DATA, no ENUM/RUNTIME/NVTX/PROCESSES/GPU/session tables."""
    db = NsysDb(tmp_path / "old.sqlite")
    db.add("EXPORT_META_DATA", name="EXPORT_PRODUCT_VERSION", value="2022.2.1.31")
    db.kernel(5, 25, 0, 42, "saxpy(double *, int)", short="saxpy")
    (t,) = read_nsys(db.done())
    assert t.metadata["nsys_version"] == "2022.2.1.31"
    assert t.metadata["clock_zero_utc_ns"] is None and t.metadata["process_name"] == ""
    assert t.gpu is not None and t.gpu.index == 0 and t.gpu.name == ""
    assert list(t.events["kind"]) == ["kernel"] and list(t.events["dur_ns"]) == [20]


def test_kernel_table_without_demangled_column(tmp_path):
    cols = {
        "CUPTI_ACTIVITY_KIND_KERNEL": "start INT, end INT, deviceId INT, streamId INT, "
        "globalPid INT, shortName INT"
    }
    db = NsysDb(tmp_path / "short.sqlite", cols)
    db.add(
        "CUPTI_ACTIVITY_KIND_KERNEL",
        start=0,
        end=10,
        deviceId=3,
        streamId=1,
        globalPid=gpid(7),
        shortName=db.s("flash_fwd_kernel"),
    )
    (t,) = read_nsys(db.done())
    assert list(t.events["name"]) == ["flash_fwd_kernel"]
    assert list(t.events["correlation"]) == [-1] and list(t.events["device"]) == [3]


def test_name_fallbacks(tmp_path):
    """A demangledName id missing from StringIds falls back to shortName, per row; a runtime
    table with a text ``name`` column and no ``nameId`` still gives stripped names."""
    cols = {
        "CUPTI_ACTIVITY_KIND_RUNTIME": "start INT, end INT, globalTid INT, correlationId INT, "
        "name TEXT"
    }
    db = NsysDb(tmp_path / "fallback.sqlite", cols)
    db.kernel(0, 10, 0, 1, "void good<int>()", corr=1, short="good")
    db.add(
        "CUPTI_ACTIVITY_KIND_KERNEL",
        start=20,
        end=30,
        deviceId=0,
        streamId=7,
        correlationId=2,
        globalPid=gpid(1),
        demangledName=999,
        shortName=db.s("short_only"),
    )
    db.add(
        "CUPTI_ACTIVITY_KIND_RUNTIME",
        start=1,
        end=2,
        globalTid=gtid(1, 1),
        correlationId=1,
        name="cudaLaunchKernel_v7000",
    )
    (t,) = read_nsys(db.done())
    ev = t.events
    assert list(ev.loc[ev["kind"] == "kernel", "name"]) == ["void good<int>()", "short_only"]
    assert list(ev.loc[ev["kind"] == "cuda_runtime", "name"]) == ["cudaLaunchKernel"]


def test_graph_trace_only_capture(tmp_path):
    """--cuda-graph-trace=graph: no kernel table, whole-graph rows count as busy time."""
    db = NsysDb(tmp_path / "graph.sqlite")
    db.add("META_DATA_EXPORT", name="EXPORT_PRODUCT_VERSION", value="2024.6.1")
    db.api(90, 99, 100, 100, "cudaGraphLaunch_v10000", 5)
    # graph 3 replayed twice: [100, 400) and [500, 700) -> 500 ns busy
    for start, end, corr in ((100, 400, 5), (500, 700, 6)):
        db.add(
            "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
            start=start,
            end=end,
            deviceId=0,
            streamId=7,
            correlationId=corr,
            globalPid=gpid(100),
            graphId=3,
        )
    (t,) = read_nsys(db.done())
    k = t.events[t.events["kind"] == "kernel"]
    assert list(k["name"]) == [GRAPH_TRACE_NAME] * 2 and list(k["graph_id"]) == [3, 3]
    assert union_length(k["ts_ns"].to_numpy(), (k["ts_ns"] + k["dur_ns"]).to_numpy()) == 500
    assert len(t.warnings) == 1
    assert "--cuda-graph-trace=node" in t.warnings[0] and "2 graph launches" in t.warnings[0]
    api = t.events[t.events["kind"] == "cuda_runtime"]
    assert list(api["name"]) == ["cudaGraphLaunch"] and list(api["correlation"]) == [5]


def test_backtrace_copies_dropped(tmp_path):
    """nsys 2022 stores slow calls twice: class 0 and a class-67 "CUDA backtrace" copy."""
    db = NsysDb(tmp_path / "bt.sqlite")
    db.kernel(100, 200, 0, 1, "k", corr=8)
    db.api(10, 90, 1, 1, "cudaMalloc_v3020", 8)
    db.api(9, 91, 1, 1, "cudaMalloc", 8, event_class=67)  # copy: dropped
    db.api(95, 99, 1, 1, "cudaFree", 9, event_class=67)  # no twin: kept as runtime
    (t,) = read_nsys(db.done())
    api = t.events[t.events["kind"] == "cuda_runtime"]
    assert list(zip(api["name"], api["dur_ns"])) == [("cudaMalloc", 80), ("cudaFree", 4)]


def test_one_process_two_devices_splits_host_threads(tmp_path):
    """A single process driving GPUs 0 and 1 from threads 301 and 302 -> two traces."""
    db = NsysDb(tmp_path / "mp.sqlite")
    db.kernel(100, 200, 0, 300, "k0", corr=1)
    db.kernel(100, 180, 1, 300, "k1", corr=2)
    db.kernel(300, 330, 1, 300, "k1", corr=3)
    db.api(10, 20, 300, 301, "cudaLaunchKernel", 1)
    db.api(30, 40, 300, 302, "cudaLaunchKernel", 2)
    db.api(50, 60, 300, 302, "cudaLaunchKernel", 3)
    db.api(70, 80, 300, 303, "cudaMalloc", 4)  # thread without launches -> busiest device 1
    t0, t1 = read_nsys(db.done())
    host = {
        t.metadata["device_id"]: sorted(t.events.loc[t.events["device"] == -1, "tid"])
        for t in (t0, t1)
    }
    assert host == {0: [301], 1: [302, 302, 303]}
    assert "drove several GPUs [0, 1]" in t0.warnings[0]


def test_two_processes_same_device_index(tmp_path):
    """CUDA_VISIBLE_DEVICES per process: both see device 0 -> still two ranks."""
    db = NsysDb(tmp_path / "cvd.sqlite")
    db.kernel(0, 10, 0, 11, "k")
    db.kernel(0, 20, 0, 12, "k")
    traces = read_nsys(db.done())
    assert [(t.metadata["pid"], int(t.events["dur_ns"].sum())) for t in traces] == [
        (11, 10),
        (12, 20),
    ]


def test_two_reports_aligned_by_session_start(tmp_path):
    """Node 1's capture started 5 us after node 0's: its kernel at local 1000 ns lands 5 us
    later on the common clock; ranks are numbered across reports."""
    a = modern_two_gpu(tmp_path / "node0.sqlite", start_utc_ns=1_700_000_000_000_000_000)
    b = modern_two_gpu(tmp_path / "node1.sqlite", start_utc_ns=1_700_000_000_000_005_000)
    traces = read_nsys_many([a, b])
    assert [t.rank.rank for t in traces] == [0, 1, 2, 3]
    assert {t.rank.world_size for t in traces} == {4}
    assert len({t.rank.profile_id for t in traces}) == 1
    first = [int(t.events.loc[t.events["kind"] == "kernel", "ts_ns"].min()) for t in traces]
    assert first == [1000, 2000, 6000, 7000]
    assert {t.metadata["clock_zero_utc_ns"] for t in traces} == {1_700_000_000_000_000_000}
    # a report exported with --ts-normalize=true (timestamps already UTC) lands the same way
    c = NsysDb(tmp_path / "node2.sqlite")
    c.add("META_DATA_EXPORT", name="EXPORT_PARAM_TIME_NORMALIZE", value="true")
    c.add(
        "TARGET_INFO_SESSION_START_TIME",
        utcEpochNs=1_700_000_000_000_009_000,
        utcTime="",
        localTime="",
    )
    c.kernel(1_700_000_000_000_010_000, 1_700_000_000_000_010_050, 0, 5, "k")
    traces = read_nsys_many([a, c.done()])
    assert int(traces[-1].events["ts_ns"].min()) == 10_000
    assert read_nsys_many([]) == []


def test_report_without_start_time_is_not_shifted(tmp_path):
    a = modern_two_gpu(tmp_path / "a.sqlite")
    db = NsysDb(tmp_path / "b.sqlite")
    db.kernel(7, 9, 0, 1, "k")
    traces = read_nsys_many([a, db.done()])
    assert int(traces[-1].events["ts_ns"].iloc[0]) == 7
    assert "not aligned" in traces[-1].warnings[-1]


# ------------------------------------------------------------------------------ bad input


def test_not_sqlite(tmp_path):
    p = tmp_path / "x.sqlite"
    p.write_text("hello")
    with pytest.raises(BadInputError, match="not an SQLite database"):
        read_nsys(p)
    with pytest.raises(BadInputError, match="cannot read"):
        read_nsys(tmp_path / "missing.sqlite")


def test_unrelated_sqlite(tmp_path):
    p = tmp_path / "app.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE users (id INT, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(BadInputError, match="not an Nsight Systems export"):
        read_nsys(p)


def test_nsys_export_without_gpu_activity(tmp_path):
    db = NsysDb(tmp_path / "cpu.sqlite")
    db.add("META_DATA_EXPORT", name="EXPORT_PRODUCT_VERSION", value="2025.1.1")
    db.api(0, 5, 1, 1, "cudaMalloc", 1)
    with pytest.raises(BadInputError, match="no CUDA GPU activity"):
        read_nsys(db.done())


def test_truncated_export(tmp_path, shared_traces):
    src = (shared_traces / "nsys" / FILES[1]).read_bytes()
    p = tmp_path / "cut.sqlite"
    p.write_bytes(src[: len(src) // 3])
    with pytest.raises(BadInputError, match="cut.sqlite"):
        read_nsys(p)


# ------------------------------------------------------------------------------ .nsys-rep


def fake_nsys(folder: Path, fixture: Path, exit_code: int = 0) -> Path:
    """An ``nsys`` on PATH that copies ``fixture`` to the ``--output`` path and counts calls."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nsys"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{folder}/calls"\n'
        f"[ {exit_code} -ne 0 ] && {{ echo 'ERROR: report is damaged' >&2; exit {exit_code}; }}\n"
        'out=""\nwhile [ $# -gt 0 ]; do\n'
        '  if [ "$1" = "--output" ] || [ "$1" = "-o" ]; then out="$2"; shift; fi\n'
        "  shift\ndone\n"
        f'cp "{fixture}" "$out"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def test_nsys_rep_exported_once_into_cache(tmp_path, monkeypatch):
    fixture = modern_two_gpu(tmp_path / "fixture.sqlite")
    bin_dir = fake_nsys(tmp_path / "bin", fixture)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TRACE_ANALYZER_NSYS_CACHE", str(cache))
    rep = tmp_path / "run.nsys-rep"
    rep.write_bytes(b"pretend report bytes")
    traces = read_nsys(rep)
    assert len(traces) == 2 and traces[0].sources[0].path == str(rep)
    assert traces[0].rank.profile_id == "run"
    assert read_nsys(rep)[1].metadata["pid"] == 200
    calls = (bin_dir / "calls").read_text().splitlines()
    assert len(calls) == 1  # second read hit the cache
    assert calls[0].startswith("export --type sqlite --output ") and calls[0].endswith(str(rep))
    cached = list(cache.glob("*.sqlite"))
    assert len(cached) == 1 and len(cached[0].stem) == 64  # sha256 of the report


def test_nsys_rep_without_nsys(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    rep = tmp_path / "run.nsys-rep"
    rep.write_bytes(b"x")
    with pytest.raises(BadInputError) as err:
        read_nsys(rep)
    assert f"nsys export --type sqlite -o run.sqlite {rep}" in str(err.value)


def test_nsys_rep_export_failure(tmp_path, monkeypatch):
    bin_dir = fake_nsys(tmp_path / "bin", tmp_path / "nothing.sqlite", exit_code=3)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TRACE_ANALYZER_NSYS_CACHE", str(tmp_path / "cache"))
    rep = tmp_path / "bad.nsys-rep"
    rep.write_bytes(b"x")
    with pytest.raises(BadInputError, match=r"exit 3: ERROR: report is damaged"):
        read_nsys(rep)
    assert not list((tmp_path / "cache").glob("*"))


# ------------------------------------------------------------------------------ CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analyzer.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cli_reads_nsys() -> bool:
    try:
        from analyzer.readers import load_traces  # noqa: F401  (discovery, another module)
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _cli_reads_nsys(), reason="discovery (load_traces) not available yet")
def test_cli_analyzes_nsys_and_rejects_bad_sqlite(shared_traces, tmp_path):
    res = _cli("analyze", str(shared_traces / "nsys" / FILES[1]), "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["ranks"]) == 2
    bad = tmp_path / "bad.sqlite"
    con = sqlite3.connect(bad)
    con.execute("CREATE TABLE t (x INT)")
    con.commit()
    con.close()
    res = _cli("analyze", str(bad), "--format", "json")
    assert res.returncode == 2
    assert "not an Nsight Systems export" in res.stderr
