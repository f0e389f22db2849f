"""Kineto reader: real traces against an independent json.load computation, schema variants,
slice framing with tricky strings, and bad inputs."""

from __future__ import annotations

import functools
import gzip
import json
import math
import threading
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reference import merged_length

from analyzer.model import BadInputError, validate_event_table
from analyzer.readers import jsonstream, read_kineto

KINETO_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "kineto"
REAL = sorted(str(p.relative_to(KINETO_DIR)) for p in KINETO_DIR.rglob("*.json.gz")) or ["-"]

GPU_CATS = {
    "kernel": "kernel",
    "Kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "Memcpy": "memcpy",
    "gpu_memset": "memset",
    "Memset": "memset",
}


# ------------------------------------------------------------------ independent reference


@functools.lru_cache(maxsize=2)
def _load_events(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        doc = json.load(fh)
    if isinstance(doc, list):
        return doc, {}
    return doc["traceEvents"], doc


def _ns(x: float) -> int:
    """us -> ns from the number as written (``repr`` gives back the JSON text's digits);
    ``round(x * 1000)`` in floats is off by one for values such as 4458676446802.237."""
    return int((Decimal(repr(x)) * 1000).to_integral_value(ROUND_HALF_EVEN))


def _reference(events: list[dict[str, Any]]) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "kernel_n": 0,
        "kernel_ns": 0,
        "memcpy_n": 0,
        "memset_n": 0,
        "nccl_ns": 0,
        "complete_n": 0,
    }
    busy: dict[int, list[tuple[int, int]]] = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        ref["complete_n"] += 1
        kind = GPU_CATS.get(e.get("cat", ""))
        if kind is None:
            continue
        ts, dur = _ns(e["ts"]), _ns(e.get("dur", 0))
        args = e.get("args", {})
        device = args.get("device", e["pid"])
        busy.setdefault(device, []).append((ts, ts + dur))
        ref[f"{kind}_n"] += 1
        if kind == "kernel":
            ref["kernel_ns"] += dur
            if "nccl" in e["name"].lower():
                ref["nccl_ns"] += dur
    ref["busy_ns"] = {d: merged_length(iv) for d, iv in busy.items()}
    return ref


def _busy_from_table(ev) -> dict[int, int]:  # type: ignore[no-untyped-def]
    g = ev[ev["kind"].isin(["kernel", "memcpy", "memset"])]
    out = {}
    for dev, sub in g.groupby("device"):
        s = sub["ts_ns"].to_numpy()
        e = s + sub["dur_ns"].to_numpy()
        out[int(dev)] = merged_length(list(zip(s.tolist(), e.tolist(), strict=True)))
    return out


# ------------------------------------------------------------------ real traces


@pytest.mark.parametrize("name", REAL)
def test_real_trace_matches_json_load(shared_traces: Path, name: str) -> None:
    path = shared_traces / "kineto" / name
    if not path.is_file():
        pytest.skip("no Kineto traces in ../shared/traces/kineto")
    trace = read_kineto(path)
    ev = trace.events
    validate_event_table(ev)
    raw, doc = _load_events(path)
    ref = _reference(raw)
    kind = ev["kind"].astype(str)
    tol = len(ev)  # per-event rounding of float us may differ by at most 1 ns
    assert len(ev) == ref["complete_n"]
    assert (kind == "kernel").sum() == ref["kernel_n"]
    assert (kind == "memcpy").sum() == ref["memcpy_n"]
    assert (kind == "memset").sum() == ref["memset_n"]
    assert abs(int(ev.loc[kind == "kernel", "dur_ns"].sum()) - ref["kernel_ns"]) <= tol
    nccl = (kind == "kernel") & ev["name"].astype(str).str.lower().str.contains("nccl")
    assert abs(int(ev.loc[nccl, "dur_ns"].sum()) - ref["nccl_ns"]) <= tol
    busy = _busy_from_table(ev)
    assert set(busy) == set(ref["busy_ns"])
    for dev, ns in ref["busy_ns"].items():
        assert abs(busy[dev] - ns) <= tol
    assert (np.diff(ev["ts_ns"].to_numpy()) >= 0).all()
    if "distributedInfo" in doc:
        assert trace.rank.rank == doc["distributedInfo"]["rank"]
        assert trace.rank.rank_source == "distributedInfo"
        assert trace.distributed_info == doc["distributedInfo"]
    if doc.get("deviceProperties"):
        assert trace.devices[0].name == doc["deviceProperties"][0]["name"]
        assert trace.devices[0].num_sms == doc["deviceProperties"][0]["numSms"]


def test_nccl_args(shared_traces: Path) -> None:
    path = shared_traces / "kineto" / "hta_ddp_a100_nccl_allreduce_rank0.json.gz"
    ev = read_kineto(path).events
    raw, _doc = _load_events(path)
    size = {"Float": 4, "Long": 8, "Byte": 1}
    want = sorted(
        (
            _ns(e["ts"]),
            e["args"]["Collective name"],
            e["args"]["In msg nelems"] * size[e["args"]["dtype"]],
            e["args"]["Group size"],
            e["args"].get("Process Group Name", ""),
        )
        for e in raw
        if e.get("ph") == "X" and "Collective name" in e.get("args", {})
    )
    coll = ev[ev["collective"] != ""]
    cols = ["ts_ns", "collective", "msg_bytes", "pg_size", "pg_name"]
    got = sorted(tuple(r) for r in coll[cols].astype(object).itertuples(index=False))
    assert got == want
    assert len(want) == 48


def test_old_schema_external_ids(shared_traces: Path) -> None:
    path = shared_traces / "kineto" / "kineto2021_resnet50_v100.pt.trace.json.gz"
    ev = read_kineto(path).events
    raw, _doc = _load_events(path)
    runtime = [e for e in raw if e.get("ph") == "X" and e.get("cat") == "Runtime"]
    rt = ev[ev["kind"] == "cuda_runtime"]
    assert len(rt) == len(runtime)
    assert sorted(rt["external_id"].tolist()) == sorted(e["args"]["external id"] for e in runtime)
    kernels = ev[ev["kind"] == "kernel"]
    assert (kernels["stream"] == 7).mean() > 0.5  # "tid": "stream 7"
    assert (kernels["external_id"] >= 0).all()


# ------------------------------------------------------------------ schema variants


def _ev(**kw: Any) -> dict[str, Any]:
    base = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0, "dur": 1}
    base.update(kw)
    return base


def _write(tmp_path: Path, doc: Any, name: str = "t.json", **dump: Any) -> Path:
    p = tmp_path / name
    text = json.dumps(doc, **dump)
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text)
    return p


def test_bare_list_old_caps_string_tids_int_ts(tmp_path: Path) -> None:
    events = [
        _ev(cat="Operator", ts=1000, dur=50, args={"External id": 3}),
        _ev(cat="Runtime", name="cudaLaunchKernel", ts=1010, dur=5, tid="77",
            args={"correlation": 9, "external id": 3}),
        _ev(cat="Kernel", name="k1", pid=0, tid="stream 7", ts=1020, dur=30,
            args={"device": 0, "stream": 7, "correlation": 9, "external id": 3}),
        _ev(cat="Memcpy", name="Memcpy HtoD", pid=0, tid="stream 7", ts=1060, dur=2,
            args={"device": 0, "correlation": 10, "bytes": 4096}),
        _ev(cat="Memset", name="Memset", pid=1, tid="stream 9", ts=1070, dur=1),
        {"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": "x"}},
        {"ph": "i", "name": "instant", "pid": "", "tid": "", "ts": 5, "s": "g"},
        {"ph": "s", "cat": "ac2g", "id": 9, "pid": 1, "tid": 1, "ts": 1010},
    ]  # fmt: skip
    p = _write(tmp_path, events)
    t = read_kineto(p)
    ev = t.events
    validate_event_table(ev)
    assert ev["kind"].astype(str).tolist() == [
        "cpu_op",
        "cuda_runtime",
        "kernel",
        "memcpy",
        "memset",
    ]
    assert ev["ts_ns"].tolist() == [1_000_000, 1_010_000, 1_020_000, 1_060_000, 1_070_000]
    assert ev["external_id"].tolist() == [3, 3, 3, -1, -1]
    assert ev["tid"].tolist() == [1, 77, 7, 7, 9]
    assert ev["stream"].tolist() == [-1, -1, 7, 7, 9]
    assert ev["device"].tolist() == [-1, -1, 0, 0, 1]  # memset: device from pid
    assert ev["correlation"].tolist() == [-1, 9, 9, 10, -1]
    assert ev["msg_bytes"].tolist() == [-1, -1, -1, 4096, -1]
    assert t.rank.rank_source == "order"
    assert t.distributed_info is None


def test_float_us_to_ns_and_sorting(tmp_path: Path) -> None:
    events = [
        _ev(ts=1_623_142_623_531_625, dur=0.0015),  # integer epoch us: exact
        _ev(ts=4458676524648.797, dur=189.626),
        _ev(ts=10.0004, dur=2),
    ]
    ev = read_kineto(_write(tmp_path, {"traceEvents": events})).events
    assert ev["ts_ns"].tolist() == [10_000, 4458676524648797, 1_623_142_623_531_625_000]
    assert ev["dur_ns"].tolist() == [2000, 189626, 2]
    assert ev["ts_ns"].tolist()[:2] == [round(10.0004 * 1000), round(4458676524648.797 * 1000)]


def test_gzip_pretty_metadata_and_unknown_fields(tmp_path: Path) -> None:
    doc = {
        "schemaVersion": 1,
        "deviceProperties": [{"id": 0, "name": "NVIDIA H100", "totalGlobalMem": 80,
                              "numSms": 132, "computeMajor": 9, "computeMinor": 0}],
        "distributedInfo": {"backend": "nccl", "rank": 3, "world_size": 8},
        "traceEvents": [
            _ev(cat="kernel", name="ncclDevKernel_AllGather", pid=0, tid=20, ts=5, dur=3,
                extra_top={"nested": [1, {"a": "}"}]},
                args={"device": 2, "stream": 20, "Collective name": "allgather",
                      "In msg nelems": 10, "dtype": "BFloat16", "Group size": 8,
                      "Process Group Name": "tp", "Seq": 41, "weird": [[{}]]}),
            _ev(cat="gpu_user_annotation", name="ann", pid=2, tid=20, ts=5, dur=9),
            _ev(cat="something_new", name="x", ts=6),
        ],
        "traceName": "after the events",
        "baseTimeNanoseconds": 17,
    }  # fmt: skip
    t = read_kineto(_write(tmp_path, doc, "t.json.gz", indent=2))
    ev = t.events
    validate_event_table(ev)
    k = ev[ev["kind"] == "kernel"].iloc[0]
    assert (k["device"], k["stream"], k["collective"], k["msg_bytes"]) == (2, 20, "allgather", 20)
    assert (k["pg_name"], k["pg_size"], k["seq"]) == ("tp", 8, 41)
    ann = ev[ev["kind"] == "gpu_user_annotation"].iloc[0]
    assert (ann["device"], ann["stream"]) == (2, 20)
    assert ev["kind"].astype(str).tolist()[-1] == "other"
    assert t.rank.rank == 3 and t.rank.world_size == 8
    assert t.devices[0].compute_capability == "9.0" and t.devices[0].num_sms == 132
    assert t.metadata["traceName"] == "after the events"
    assert t.metadata["baseTimeNanoseconds"] == 17
    assert "deviceProperties" not in t.metadata


def test_loose_types_are_coerced(tmp_path: Path) -> None:
    events = [_ev(pid=3.0, tid=[1], args={"External id": "12", "device": 1.0}), _ev(ts=2)]
    ev = read_kineto(_write(tmp_path, {"traceEvents": events})).events
    assert ev["pid"].tolist() == [3, 1]
    assert ev["tid"].tolist() == [-1, 1]
    assert ev["external_id"].tolist() == [12, -1]


def test_string_and_null_arg_values(tmp_path: Path) -> None:
    """ROCm writes ``"bytes": "60"``; nulls and floats appear in other exporters."""
    events = [
        _ev(cat="cuda_runtime", name="hipMemcpyWithStream", ts=1,
            args={"External id": 5, "correlation": "77", "bytes": "60", "kind": "1"}),
        _ev(cat="gpu_memcpy", name="Memcpy HtoD", pid=9, tid=3, ts=2,
            args={"device": 9, "stream": None, "correlation": 77, "bytes": "4096"}),
        _ev(cat="kernel", name="k", pid="9", tid="stream 4", ts=3,
            args={"device": 9.0, "External id": None, "correlation": 78}),
    ]  # fmt: skip
    ev = read_kineto(_write(tmp_path, {"traceEvents": events})).events
    assert ev["correlation"].tolist() == [77, 77, 78]
    assert ev["msg_bytes"].tolist() == [-1, 4096, -1]
    assert ev["stream"].tolist() == [-1, 3, 4]
    assert ev["device"].tolist() == [-1, 9, 9]
    assert ev["external_id"].tolist() == [5, -1, -1]


TRICKY_NAMES = [
    'a}, {"ph": "X"',
    "void k<{lambda()#1}>(int), {x}",
    'quote \\" and }]',
    "back\\\\slash\\\\",
    "},\n{",
    "ünïcødé ⚡ }",
    "[{]}",
]


@pytest.mark.parametrize("pretty", [False, True])
def test_small_slices_with_tricky_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pretty: bool
) -> None:
    """Many tiny slices cut around strings full of braces/quotes: same rows as json.load."""
    monkeypatch.setattr(jsonstream, "READ_BLOCK_BYTES", 97)
    monkeypatch.setattr(jsonstream, "TARGET_CHUNK_BYTES", 300)
    rng = np.random.default_rng(7)
    events = []
    for i in range(400):
        name = TRICKY_NAMES[i % len(TRICKY_NAMES)] + str(i)
        events.append(
            _ev(name=name, ts=float(rng.integers(0, 10**9)) / 1000, dur=i % 13,
                args={"External id": i, "Input Dims": [[1, 2], []], "s": name})
        )  # fmt: skip
        if i % 50 == 0:
            events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": 1,
                           "args": {"name": "}]},"}})  # fmt: skip
    p = _write(tmp_path, {"a": "traceEvents", "traceEvents": events, "z": 1},
               indent=1 if pretty else None, ensure_ascii=False)  # fmt: skip
    ev = read_kineto(p).events
    want = sorted((_ns(e["ts"]), e["name"]) for e in events if e["ph"] == "X")
    got = sorted(zip(ev["ts_ns"].tolist(), ev["name"].astype(str).tolist(), strict=True))
    assert got == want
    assert sorted(ev["external_id"].tolist()) == list(range(400))


def test_empty_events_list_warns(tmp_path: Path) -> None:
    t = read_kineto(_write(tmp_path, {"traceEvents": []}))
    assert len(t.events) == 0
    validate_event_table(t.events)
    assert t.warnings


# ------------------------------------------------------------------ bad inputs


def _bad(path: Path, match: str) -> str:
    with pytest.raises(BadInputError, match=match) as info:
        read_kineto(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg
    return msg


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(json.dumps({"traceEvents": [_ev(ts=i) for i in range(2000)]}).encode())
    p = tmp_path / "t.json.gz"
    p.write_bytes(data[: len(data) // 2])
    _bad(p, "truncated gzip")


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(json.dumps({"traceEvents": [_ev()]}).encode()))
    data[20:30] = b"\xff" * 10
    p = tmp_path / "t.json.gz"
    p.write_bytes(bytes(data))
    _bad(p, "gzip|invalid JSON")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("   \n", "empty file"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": 2}', "truncated JSON"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": 2}, {"ph": "X", ', "truncated|invalid"),
        ('{"traceEvents": [{"ph": "X" "ts": 1}]}', "invalid JSON"),
        ('{"foo": 1}', "no top-level traceEvents"),
        ('{"foo": {"traceEvents": []}}', "no top-level traceEvents"),
        ('{"traceEvents": 5}', "traceEvents is not a list"),
        ('{"traceEvents": [1, 2, 3]}', "not a list of events"),
        ("hello", "not a JSON trace"),
        ('[{"ph": "X", "ts": 1, "dur": 2}] trailing', "invalid JSON"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": -5}]}', "invalid duration"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": NaN}]}', "non-finite"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": -Infinity}]}', "non-finite"),
        ('{"traceEvents": [{"ph": "X", "ts": "soon", "dur": 1}]}', "non-numeric ts"),
        ('{"traceEvents": [{"ph": "X", "dur": 1}]}', "no numeric timestamp"),
        ('{"traceEvents": [{"ph": "X", "ts": 1, "dur": 1}], "x": }', "invalid JSON"),
    ],
)
def test_bad_json(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(text)
    _bad(p, match)


def test_nan_duration_written_by_python_json(tmp_path: Path) -> None:
    p = _write(tmp_path, {"traceEvents": [_ev(), _ev(dur=math.nan)]})
    _bad(p, "non-finite")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        read_kineto(tmp_path / "nope.json")


def test_multi_member_gzip_and_early_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "READ_BLOCK_BYTES", 64)
    text = json.dumps({"traceEvents": [_ev(ts=i, name=f"n{i}") for i in range(300)]}).encode()
    p = tmp_path / "multi.json.gz"
    p.write_bytes(gzip.compress(text[:1000]) + gzip.compress(text[1000:]))  # two members
    ev = read_kineto(p).events
    assert ev["name"].astype(str).tolist() == [f"n{i}" for i in range(300)]
    blocks = jsonstream.iter_file_bytes(p)
    assert next(blocks)
    blocks.close()  # stops the inflating thread without hanging
    assert not [t for t in threading.enumerate() if t.name == "trace-gunzip"]


def test_exact_scanner_when_fast_cuts_all_fall_in_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names holding many ``}, {`` defeat the fast cut; the exact scanner takes over."""
    monkeypatch.setattr(jsonstream, "READ_BLOCK_BYTES", 97)
    monkeypatch.setattr(jsonstream, "TARGET_CHUNK_BYTES", 300)
    calls = []
    real = jsonstream.exact_cut
    monkeypatch.setattr(jsonstream, "exact_cut", lambda *a: calls.append(1) or real(*a))
    events = [_ev(name=f"n{i}" + "}, {" * 6, ts=i) for i in range(300)]
    ev = read_kineto(_write(tmp_path, {"traceEvents": events})).events
    assert calls  # the exact path ran
    assert ev["name"].astype(str).tolist() == [e["name"] for e in events]


def test_without_the_compiled_scanner_msgspec_reads_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install without a C compiler has no ``_kscan``: "auto" falls back, "compiled" says so."""
    from analyzer.readers import kineto_scan

    monkeypatch.delenv("ANALYZER_SCANNER", raising=False)
    monkeypatch.setattr(kineto_scan, "_kscan", None)
    events = [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": i, "dur": 1}
              for i in range(30000)]  # fmt: skip
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"traceEvents": events}))
    assert path.stat().st_size >= 1 << 20  # big enough for "auto" to want the scanner
    assert not kineto_scan.available()
    trace = read_kineto(path)
    assert len(trace.events) == 30000
    assert int(trace.events["dur_ns"].sum()) == 30000 * 1000
    with pytest.raises(RuntimeError, match="not built"):
        read_kineto(path, scanner="compiled")
