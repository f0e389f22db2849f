"""Kineto reader fast paths against an independent json.load reference.

The reader decodes names as members of a per-file vocabulary enum, looks up
``(cat, name, pid, tid)`` once per event, drops other phases by kind, and reads through a
fixed window. Each test builds a small trace whose slices (a few hundred bytes each) hit
one of those paths, and compares every row with a plain Python reading of the JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analyzer.model import validate_event_table
from analyzer.readers import jsonstream, kineto_decode, read_kineto

KIND = {
    "kernel": "kernel", "Kernel": "kernel", "gpu_memcpy": "memcpy", "Memcpy": "memcpy",
    "gpu_memset": "memset", "Memset": "memset", "cuda_runtime": "cuda_runtime",
    "Runtime": "cuda_runtime", "cuda_driver": "cuda_driver", "Driver": "cuda_driver",
    "cpu_op": "cpu_op", "Operator": "cpu_op", "user_annotation": "user_annotation",
    "User annotation": "user_annotation", "gpu_user_annotation": "gpu_user_annotation",
    "python_function": "python_function",
}  # fmt: skip
GPU = {"kernel", "memcpy", "memset", "gpu_user_annotation"}


def _int(v: Any) -> int:
    """The reference reading of an id: ints and floats truncate, strings end in digits."""
    if isinstance(v, (int, float)):
        return int(v)
    m = re.search(r"-?\d+$", str(v).strip())
    return int(m.group()) if m else -1


def _expected(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for e in events:
        if e.get("ph") != "X":
            continue
        kind = KIND.get(e.get("cat", ""), "other")
        args = e.get("args") or {}
        pid, tid = _int(e.get("pid", -1)), _int(e.get("tid", -1))
        gpu = kind in GPU
        rows.append(
            (
                round(e["ts"] * 1000),
                round(e.get("dur", 0) * 1000),
                kind,
                str(e.get("name", "")),
                pid,
                tid,
                _int(args.get("device", pid)) if gpu else -1,
                _int(args.get("stream", tid)) if gpu else -1,
                _int(args["External id"]) if "External id" in args and kind != "python_function"
                else -1,
            )
        )  # fmt: skip
    rows.sort(key=lambda r: r[0])  # stable, like the reader
    return rows


def _got(path: Path) -> list[tuple[Any, ...]]:
    ev = read_kineto(path).events
    validate_event_table(ev)
    cols = [
        ev["ts_ns"].tolist(), ev["dur_ns"].tolist(), ev["kind"].astype(str).tolist(),
        ev["name"].astype(str).tolist(), ev["pid"].tolist(), ev["tid"].tolist(),
        ev["device"].tolist(), ev["stream"].tolist(), ev["external_id"].tolist(),
    ]  # fmt: skip
    return list(zip(*cols, strict=True))


def _write(tmp_path: Path, events: list[dict[str, Any]], **dump: Any) -> Path:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"traceEvents": events}, **dump))
    return p


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "READ_BLOCK_BYTES", 97)
    monkeypatch.setattr(jsonstream, "TARGET_CHUNK_BYTES", 400)


@pytest.fixture
def vocabularies(monkeypatch: pytest.MonkeyPatch) -> list[kineto_decode.Vocabulary]:
    """Every ``Vocabulary`` the reader creates, to see which decoder ran (these tests are
    about the msgspec path, so the compiled scanner is not forced on)."""
    monkeypatch.delenv("ANALYZER_SCANNER", raising=False)
    made: list[kineto_decode.Vocabulary] = []
    real = kineto_decode.Vocabulary.__init__

    def init(self: kineto_decode.Vocabulary, *a: Any) -> None:
        real(self, *a)
        made.append(self)

    monkeypatch.setattr(kineto_decode.Vocabulary, "__init__", init)
    return made


def _ev(i: int, name: str, cat: str = "python_function", **kw: Any) -> dict[str, Any]:
    e = {"ph": "X", "cat": cat, "name": name, "pid": 7, "tid": 8, "ts": i * 1.5, "dur": 1.25}
    e.update(kw)
    return e


@pytest.mark.usefixtures("small_slices")
def test_new_names_after_the_vocabulary_settled(
    tmp_path: Path, vocabularies: list[kineto_decode.Vocabulary]
) -> None:
    """Names repeat for a while (Literal decoding starts), then new ones appear."""
    stack = ["a.py(1): f", 'q "quoted" \\ back', "ünïcødé ⚡", "}, {x", "aten::mm"]
    events = [_ev(i, stack[i % len(stack)], args={"Python id": i}) for i in range(300)]
    events += [_ev(300 + i, f"late {i % 3}") for i in range(30)]  # names outside it
    events += [_ev(330 + i, stack[i % 2]) for i in range(60)]
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)
    voc = vocabularies[-1]
    assert voc.hits > 10 and voc.misses == 0  # new names decoded through _missing_


@pytest.mark.usefixtures("small_slices")
def test_vocabulary_rebuilt_when_new_names_add_up(
    tmp_path: Path, vocabularies: list[kineto_decode.Vocabulary]
) -> None:
    events = [_ev(i, f"first{i % 3}") for i in range(30)]
    events += [_ev(30 + i, f"then{i % 40}") for i in range(1500)]
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)
    assert vocabularies[-1].builds >= 2


@pytest.mark.usefixtures("small_slices")
def test_without_missing_hook_new_names_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vocabularies: list[kineto_decode.Vocabulary]
) -> None:
    """As with msgspec < 0.18.3: a name outside the enum fails and is decoded again."""
    monkeypatch.setattr(kineto_decode._Known, "_missing_", classmethod(lambda cls, v: None))
    stack = ["a", "b", "c"]
    events = [_ev(i, stack[i % 3]) for i in range(200)] + [_ev(200 + i, f"x{i}") for i in range(9)]
    events += [_ev(209 + i, stack[i % 3]) for i in range(200)]
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)
    assert vocabularies[-1].misses >= 1 and vocabularies[-1].hits > 10


@pytest.mark.usefixtures("small_slices")
def test_names_that_never_repeat_stay_plain(
    tmp_path: Path, vocabularies: list[kineto_decode.Vocabulary]
) -> None:
    events = [_ev(i, f"request {i}", cat="user_annotation") for i in range(2500)]
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)
    assert vocabularies[-1].off and vocabularies[-1].builds == 1


@pytest.mark.usefixtures("small_slices")
def test_vocabulary_off_gives_the_same_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    names = [f"n{k}" for k in range(12)]
    cats = ["python_function", "cpu_op", "kernel", "cuda_runtime", "odd cat"]
    events = [
        _ev(int(rng.integers(0, 10**6)), names[int(rng.integers(12))], cat=cats[i % 5],
            args={"External id": i, "device": 2, "stream": 9, "correlation": i})
        for i in range(400)
    ]  # fmt: skip
    p = _write(tmp_path, events)
    fast = read_kineto(p).events
    monkeypatch.setattr(kineto_decode, "MAX_VOCABULARY", 0)
    plain = read_kineto(p).events
    assert fast.equals(plain)
    assert _got(p) == _expected(events)


@pytest.mark.usefixtures("small_slices")
def test_other_phases_are_dropped_even_with_known_cats(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    for i in range(200):
        events.append(_ev(i, "aten::add", cat="cpu_op", args={"External id": i}))
        if i % 3 == 0:  # flows and instants share names and cats with complete events
            events.append({"ph": "f", "id": i, "pid": 7, "tid": 8, "ts": i, "cat": "cpu_op",
                           "name": "aten::add", "bp": "e"})  # fmt: skip
            events.append({"ph": "i", "s": "t", "name": "aten::add", "pid": 7, "tid": 8, "ts": i})
        if i % 50 == 0:
            events.append({"ph": "M", "name": "thread_name", "pid": 7, "tid": 8,
                           "args": {"name": "worker"}})  # fmt: skip
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)
    # a trace holding only other phases gives an empty table
    only = _write(tmp_path, [e for e in events if e["ph"] != "X"])
    assert _got(only) == []


@pytest.mark.usefixtures("small_slices")
def test_pid_tid_forms_share_row_keys(tmp_path: Path) -> None:
    """The same (cat, name) with ints, floats and strings as pid/tid, across slices."""
    forms = [(3, 4), (3.0, 4.0), ("3", "stream 4"), (True, 4), (2**40, -1), ("Spans", "x")]
    events = [
        _ev(i, "k", cat="kernel" if i % 2 else "cpu_op", pid=forms[i % len(forms)][0],
            tid=forms[i % len(forms)][1])
        for i in range(240)
    ]  # fmt: skip
    p = _write(tmp_path, events)
    assert _got(p) == _expected(events)


def test_element_larger_than_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "READ_BLOCK_BYTES", 64)
    monkeypatch.setattr(jsonstream, "TARGET_CHUNK_BYTES", 200)
    big = "x" * 5000
    events = [_ev(i, big if i % 7 == 3 else f"n{i % 4}") for i in range(60)]
    doc = {"meta": {"pad": "y" * 3000}, "traceEvents": events}  # a header past the window
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc, indent=1))
    assert _got(p) == _expected(events)
    assert read_kineto(p).metadata == {}


DTYPE = {"Float": 4, "BFloat16": 2, "Int": 4}


@pytest.mark.usefixtures("small_slices")
def test_collective_args_from_mid_file(tmp_path: Path) -> None:
    """Collective args first show up after many slices; later events carry them too."""
    events = [_ev(i, f"op{i % 5}", cat="cpu_op", args={"External id": i}) for i in range(150)]
    for i in range(150, 300):
        coll = {"Collective name": ["allreduce", "allgather"][i % 2], "In msg nelems": i,
                "dtype": list(DTYPE)[i % 3], "Group size": 8, "Process Group Name": f"pg{i % 2}",
                "Seq": i}  # fmt: skip
        cat = "kernel" if i % 2 else "cpu_op"
        args = {"External id": i, "device": 1, "stream": 5} | (coll if i % 4 else {"Seq": i})
        events.append(_ev(i, f"nccl{i % 3}", cat=cat, args=args))
    ev = read_kineto(_write(tmp_path, events)).events
    assert list(zip(*[ev[c].tolist() for c in ("ts_ns", "name")], strict=True)) == [
        (r[0], r[3]) for r in _expected(events)
    ]
    by_ts = {round(e["ts"] * 1000): e["args"] for e in events}
    for ts, coll, msg, pg, size, seq in zip(
        *[ev[c].astype(object).tolist() for c in
          ("ts_ns", "collective", "msg_bytes", "pg_name", "pg_size", "seq")],
        strict=True,
    ):  # fmt: skip
        a = by_ts[ts]
        name = a.get("Collective name", "")
        assert coll == name
        assert msg == (a["In msg nelems"] * DTYPE[a["dtype"]] if name else -1)
        assert pg == a.get("Process Group Name", "")
        assert size == a.get("Group size", -1)
        assert seq == a.get("Seq", -1)
