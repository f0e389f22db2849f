"""End-to-end figures on every real Kineto trace in ../shared/traces/kineto.

Each figure is recomputed here independently: plain gzip+json, a sort-and-merge loop for
interval unions, and a test-local rule (name starts with "nccl") for communication kernels.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import analyzer
from analyzer.report import validate_report

GPU_CATS = {"kernel", "Kernel", "gpu_memcpy", "Memcpy", "gpu_memset", "Memset"}


def kineto_files(root: Path) -> list[Path]:
    return sorted((root / "kineto").rglob("*.json.gz"))


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def length(intervals) -> int:
    return sum(e - s for s, e in intervals)


def minus(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Length of merged a not covered by merged b (two-pointer walk)."""
    total, j = 0, 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while cur < e:
            if k < len(b) and b[k][0] < e:
                bs, be = b[k]
                if bs > cur:
                    total += bs - cur
                cur = max(cur, be)
                k += 1
            else:
                total += e - cur
                cur = e
    return total


def to_ns(us) -> int:
    """Exact for integer microseconds (float math loses ns above 2**53)."""
    return int(us) * 1000 if isinstance(us, int) else round(float(us) * 1000)


def independent_figures(path: Path) -> dict[int, dict[str, float]]:
    data = json.load(gzip.open(path))
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_dev: dict[int, dict[str, list]] = {}
    for ev in events:
        if ev.get("ph") != "X" or ev.get("cat") not in GPU_CATS:
            continue
        args = ev.get("args", {})
        dev = int(args.get("device", ev.get("pid")))
        s = to_ns(ev["ts"])
        e = s + to_ns(ev["dur"])
        d = per_dev.setdefault(dev, {"all": [], "comm": [], "noncomm_kernels": []})
        d["all"].append((s, e))
        if ev["cat"] in ("kernel", "Kernel"):
            if ev["name"].lower().startswith("nccl"):
                d["comm"].append((s, e))
            else:
                d["noncomm_kernels"].append((s, e))
    out = {}
    for dev, d in per_dev.items():
        allm = merge(d["all"])
        wall = max(e for _, e in d["all"]) - min(s for s, _ in d["all"])
        comm = merge(d["comm"])
        out[dev] = {
            "wall_us": wall / 1000,
            "busy_us": length(allm) / 1000,
            "comm_us": length(comm) / 1000,
            "exposed_us": minus(comm, merge(d["noncomm_kernels"])) / 1000,
        }
    return out


@pytest.fixture(scope="module")
def real_files(shared_traces):
    files = kineto_files(shared_traces)
    assert files, "no kineto traces found in ../shared/traces/kineto"
    return files


@pytest.fixture(scope="module")
def real_reports(real_files) -> dict[Path, dict]:
    """Each real trace analysed once per test module."""
    return {path: analyzer.analyze([path]).to_dict() for path in real_files}


def test_every_real_trace_matches_independent_figures(real_reports):
    for path, doc in real_reports.items():
        validate_report(doc)
        want = independent_figures(path)
        got = {r["device"]: r for r in doc["ranks"]}
        assert set(got) == set(want), path.name
        for dev, w in want.items():
            r = got[dev]
            assert r["wall_us"] == pytest.approx(w["wall_us"], abs=0.002), path.name
            assert r["busy_us"] == pytest.approx(w["busy_us"], abs=0.002), path.name
            assert r["idle_us"] == pytest.approx(w["wall_us"] - w["busy_us"], abs=0.004), path.name
            assert r["communication"]["time_us"] == pytest.approx(w["comm_us"], abs=0.002), path.name
            assert r["communication"]["exposed_us"] == pytest.approx(w["exposed_us"], abs=0.002), path.name
            assert r["communication"]["overlapped_us"] == pytest.approx(
                w["comm_us"] - w["exposed_us"], abs=0.004
            ), path.name


def test_category_times_bound_busy_time(real_reports):
    """Conservation: the union of all categories is busy time, so their sum is at least busy."""
    for doc in real_reports.values():
        for r in doc["ranks"]:
            total = sum(c["time_us"] for c in r["categories"].values())
            assert total >= r["busy_us"] - 0.01
            assert all(c["time_us"] <= r["busy_us"] + 0.01 for c in r["categories"].values())
            counts = sum(c["count"] for c in r["categories"].values())
            assert counts > 0


def test_ddp_allreduce_time_is_by_collective(shared_traces, real_reports):
    """HTA DDP trace: NCCL AllReduce and Broadcast kernels, split by collective."""
    path = shared_traces / "kineto" / "hta_ddp_a100_nccl_allreduce_rank0.json.gz"
    data = json.load(gzip.open(path))
    per: dict[str, list] = {}
    for ev in data["traceEvents"]:
        if ev.get("cat") == "kernel" and ev["name"].startswith("ncclKernel_"):
            op = ev["name"].split("_")[1].lower()
            s = to_ns(ev["ts"])
            per.setdefault(op, []).append((s, s + to_ns(ev["dur"])))
    doc = real_reports[path]
    by = doc["ranks"][0]["communication"]["by_collective"]
    assert set(by) == set(per)
    for op, iv in per.items():
        assert by[op]["count"] == len(iv)
        assert by[op]["time_us"] == pytest.approx(length(merge(iv)) / 1000, abs=0.002)


def test_two_rank_recsys_directory_gets_both_ranks(shared_traces):
    doc = analyzer.analyze([shared_traces / "kineto" / "hta_recsys_2ranks"]).to_dict()
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert {i["rank_source"] for i in doc["inputs"]} == {"distributedInfo"}
    assert doc["summary"]["ranks"] == 2
    assert doc["summary"]["busy_us"] == pytest.approx(sum(r["busy_us"] for r in doc["ranks"]))
