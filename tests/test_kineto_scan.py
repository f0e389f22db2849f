"""The compiled Kineto scanner (``_kscan.c``) against the msgspec path and against ``json``.

The scanner must give exactly the msgspec path's event table (that path's numbers are
checked against independent computations in test_kineto_reader.py), reject whatever is not
JSON (so a slice cut inside a string or an object is never taken), and hand on, rather
than guess, every value it does not convert.
"""

from __future__ import annotations

import json
import tempfile
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.model import BadInputError
from analyzer.readers import kineto_fast
from analyzer.readers import kineto_scan as ks
from analyzer.readers.kineto import read_kineto

pytestmark = pytest.mark.skipif(
    not ks.available(), reason="the compiled scanner is not built (no C compiler at install)"
)
REPO = Path(__file__).resolve().parent.parent


def _strict_json(text: bytes) -> Any:
    """``json.loads`` without the NaN/Infinity extension (JSON proper)."""

    def constant(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, parse_constant=constant)


def _scan(text: bytes, cap: int = 64) -> tuple[int, int, bool, np.ndarray]:
    while True:
        out = np.empty((ks.N_FIELDS, cap), dtype=np.int64)
        status, n, needle = ks.scan(text, out)
        if status != ks.FULL:
            return status, n, needle, out[:, :n]
        cap *= 2


def _both(path: Path) -> tuple[Any, Any]:
    """(msgspec result, compiled result): a Trace, or the BadInputError message."""
    res = []
    for scanner in ("msgspec", "compiled"):
        try:
            res.append(read_kineto(path, scanner=scanner))
        except BadInputError as exc:
            res.append(str(exc))
    return res[0], res[1]


def _assert_same(path: Path) -> None:
    a, b = _both(path)
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    pd.testing.assert_frame_equal(a.events, b.events)


class _Counter:
    """Counts the scanner's answers while installed over ``kineto_scan.scan``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.status: list[int] = []
        real = ks.scan

        def counting(a: Any, out: np.ndarray) -> tuple[int, int, bool]:
            r = real(a, out)
            self.status.append(r[0])
            return r

        monkeypatch.setattr(ks, "scan", counting)


# --------------------------------------------------------------------------------------
# same table as the msgspec path
# --------------------------------------------------------------------------------------


def _shared_files() -> list[Path]:
    root = REPO.parent / "shared" / "traces" / "kineto"
    return sorted(p for p in root.rglob("*") if p.name.endswith((".json", ".json.gz")))


#: one entry when ../shared is absent, so the test skips with the fixture's reason
_SHARED_NAMES = [p.relative_to(p.parents[1]).as_posix() for p in _shared_files()] or ["absent"]


@pytest.mark.parametrize("name", _SHARED_NAMES)
def test_same_table_on_shared_traces(
    shared_traces: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = next(p for p in _shared_files() if p.relative_to(p.parents[1]).as_posix() == name)
    counter = _Counter(monkeypatch)
    _assert_same(path)
    assert ks.OK in counter.status  # the scanner read (most of) it: not all handed on


SAMPLES = sorted(
    p
    for p in (REPO / "sample_traces").rglob("*")
    if p.name.endswith((".json", ".json.gz")) and "server_args" not in p.name
    and "metrics" not in p.name
)  # fmt: skip


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_same_table_on_sample_traces(path: Path) -> None:
    _assert_same(path)


@pytest.mark.parametrize(
    "content",
    [
        b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": NaN}]}',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": -3}]}',
        b'{"traceEvents": [{"ph": "X", "name": "k", "dur": 3}]}',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": 3}, {"ph": "X", "ts": 2, "dur"',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": 3} {"ph": "X"}]}',
        b'{"traceEvents": []}',
        b'{"traceEvents": [1, 2]}',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "name": "a\\x"}]}',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "name": "bad \xff\xfe name"}]}',
        b'{"traceEvents": [{"ph": "X", "ts": 1, "name": "ok", "args": {"x": "\xff"}}]}',
    ],
)
def test_bad_input_reads_alike(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    _assert_same(path)


# --------------------------------------------------------------------------------------
# random events (hypothesis)
# --------------------------------------------------------------------------------------

_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
) | st.sampled_from(["ncclDevKernel_AllReduce_Sum", "aten::mm", 'a"b\\c', "é", "💡", ""])
_ints = st.integers(-5, 10**12)
_id = st.one_of(
    st.integers(0, 10**7), st.sampled_from(["stream 7", "25738", "0x1f", "gpu", " 12 "])
)
_us = st.integers(0, 2**40).map(lambda ns: ns / 1000)  # repr gives <= 3 decimals back
_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_arg_values: dict[str, Any] = {
    "device": _ints | st.none(),
    "stream": _ints | st.sampled_from(["7", "stream 3"]),
    "correlation": _ints,
    "External id": _ints,
    "external id": _ints,
    "Collective name": st.sampled_from(["allreduce", "_allgather_base", "", "send"]) | st.none(),
    "In msg nelems": _ints,
    "dtype": st.sampled_from(["Float", "BFloat16", "Half", "Long", "odd"]),
    "Group size": st.integers(1, 64),
    "Process Group Name": st.sampled_from(["0", "1", "tp"]),
    "Seq": _ints,
    "seq": _ints,
    "bytes": _ints | st.sampled_from(["60", "0x10", "n/a"]) | st.none(),
    "Ev Idx": _junk,
    "Input Dims": _junk,
}
_args = st.fixed_dictionaries(
    {}, optional={k: v for k, v in _arg_values.items()}
)
_event = st.fixed_dictionaries(
    {"ph": st.sampled_from(["X", "X", "X", "X", "i", "M", "f", "B"]), "ts": _us},
    optional={
        "cat": st.sampled_from(
            ["kernel", "cpu_op", "python_function", "gpu_memcpy", "gpu_memset",
             "cuda_runtime", "user_annotation", "Kernel", "Runtime", "Memcpy", "odd"]
        ),
        "name": _names,
        "pid": _id,
        "tid": _id,
        "dur": _us,
        "args": _args,
        "id": _junk,
    },
)  # fmt: skip
#: events the scanner hands on to msgspec (or that are errors): one per list at most
_odd_event = st.sampled_from(
    [
        {"ph": "X", "name": "no ts"},
        {"ph": "X", "ts": 1e20},
        {"ph": "X", "ts": 5, "dur": -1.5},
        {"ph": "X", "ts": 5, "args": {"device": 1.5}},
        {"ph": "X", "ts": 5, "args": {"stream": True}},
        {"ph": "X", "ts": 5, "args": None},
        {"ph": "X", "ts": 5, "pid": 2.0},
        {"ph": "X", "ts": 5, "cat": None},
        {"ph": "X", "ts": 5, "args": {"bytes": "\u0036"}},
        7,
    ]
)


def _dump(events: list[dict[str, Any]], style: int, ascii_only: bool) -> bytes:
    doc = {"schemaVersion": 1, "traceEvents": events}
    if style == 0:
        text = json.dumps(doc, ensure_ascii=ascii_only)
    elif style == 1:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=ascii_only)
    else:
        text = json.dumps(doc, indent=2, ensure_ascii=ascii_only)
    return text.encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_event, max_size=25),
    st.none() | st.tuples(st.integers(0, 25), _odd_event),
    st.integers(0, 2),
    st.booleans(),
)
def test_random_events_read_alike(
    events: list[Any], odd: tuple[int, Any] | None, style: int, ascii_only: bool
) -> None:
    if odd is not None:
        events.insert(odd[0], odd[1])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.json"
        path.write_bytes(_dump(events, style, ascii_only))
        _assert_same(path)


# --------------------------------------------------------------------------------------
# the scanner itself
# --------------------------------------------------------------------------------------

_FRAGMENTS = [
    b"1", b"-0", b"0.5", b"-12.25e+3", b"1E5", b'"a\\"b\\u00e9\\n"', b"[]", b"{}", b"[ ]",
    b"{ }", b'[1, [2, {"a": [true, false, null]}], "x"]', b'{"a": {"b": {}}, "c": []}',
    b"01", b"1.", b"-", b".5", b"+1", b"1e", b"[1,]", b'{"a":1,}', b'{"a"}', b"{1:2}",
    b"[1 2]", b'"abc', b"[}", b"{]", b"tru", b"nul", b"NaN", b"Infinity", b"-Infinity",
    b'{"a":1', b"[,1]", b'"\\x"', b'"\\u12"', b'{"a" 1}', b"'a'", b'"a\nb"', b'"\tx"',
    b"[[[[]]]]", b"[[[[]]]", b"true false", b'{"a":1}}',
]  # fmt: skip


@pytest.mark.parametrize("frag", _FRAGMENTS)
def test_skipped_values_are_validated_like_json(frag: bytes) -> None:
    text = b'[{"ph": "X", "ts": 1, "args": {"Input Dims": ' + frag + b"}}]"
    try:
        _strict_json(text)
        valid = True
    except ValueError:
        valid = False
    status, n, _needle, _out = _scan(text)
    if valid:
        assert (status, n) == (ks.OK, 1)
    else:
        assert status == ks.SYNTAX


def test_every_cut_is_accepted_only_where_json_is_complete() -> None:
    events = [
        {"ph": "X", "cat": "kernel", "name": 'x"}, {"', "pid": 1, "tid": 2, "ts": 1.5,
         "dur": 2, "args": {"Input Dims": [[1, 2], {"k": "}, {"}], "correlation": 3}},
        {"ph": "i", "name": "}, {", "ts": 3},
        {"ph": "X", "cat": "cpu_op", "name": "b\\\\}, {", "ts": 4, "dur": 0},
    ]  # fmt: skip
    body = json.dumps(events).encode()[1:-1]
    for k in range(1, len(body) + 1):
        text = b"[" + body[:k] + b"]"
        try:
            parsed = _strict_json(text)
            valid = all(isinstance(e, dict) for e in parsed)
        except ValueError:
            valid = False
        status = _scan(text)[0]
        assert (status == ks.OK) == valid, (k, text)


@pytest.mark.parametrize(
    "event",
    [
        b'{"ph": "X", "ts": 1e3}',  # exponent
        b'{"ph": "X", "ts": 1, "dur": -2}',  # negative duration: msgspec path reports it
        b'{"ph": "X", "name": "a"}',  # no ts: msgspec path reports it
        b'{"ph": "X", "ts": "12"}',
        b'{"ph": "X", "ts": 1, "args": {"device": 1.5}}',
        b'{"ph": "X", "ts": 1, "args": {"stream": true}}',
        b'{"ph": "X", "ts": 1, "args": {"bytes": "\\u0036"}}',
        b'{"ph": "X", "ts": 1, "args": null}',
        b'{"ph": "X", "ts": 1, "pid": 1.0}',
        b'{"ph": "X", "ts": 1, "name": 5}',
        b'{"p\\u0068": "X", "ts": 1}',  # an escaped key could spell "ph"
        b'{"ph": "\\u0058", "ts": 1}',  # an escaped "X"
        b'{"ph": "X", "ts": 1, "args": {"dev\\u0069ce": 1}}',
        b'{"ph": "X", "ts": 99999999999999999}',  # 17 digits of us: past int64 ns
    ],
)
def test_unconverted_values_are_handed_on(event: bytes, tmp_path: Path) -> None:
    status = _scan(b"[" + event + b"]")[0]
    assert status == ks.UNSUPPORTED
    path = tmp_path / "t.json"
    path.write_bytes(b'{"traceEvents": [' + event + b"]}")
    _assert_same(path)  # the slice went to msgspec: same table or same error


@pytest.mark.parametrize("ts", [b"1e20", b"-99999999999999999", b"9223372036854776"])
def test_absurd_times_are_bad_input_on_both_paths(ts: bytes, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b'{"traceEvents": [{"ph": "X", "name": "k", "ts": ' + ts + b', "dur": 1}]}')
    a, b = _both(path)
    assert isinstance(a, str) and a == b and "absurd time" in a


def test_non_object_element_is_handed_on(tmp_path: Path) -> None:
    assert _scan(b'[{"ph": "X", "ts": 1}, 5]')[0] == ks.UNSUPPORTED
    path = tmp_path / "t.json"
    path.write_bytes(b'{"traceEvents": [{"ph": "X", "ts": 1}, 5]}')
    a, b = _both(path)
    assert isinstance(a, str) and a == b


def _exact_ns(text: str) -> int:
    return int((Decimal(text) * 1000).to_integral_value(ROUND_HALF_EVEN))


@pytest.mark.parametrize(
    "text",
    ["0", "1", "1.5", "1.0005", "1.0015", "1.00050001", "1.00049999", "-1.0005", "-0.0015",
     "4458676446802.237", "1623142623460111", "9223372036854.775", "0.000999", "12.3456789"],
)  # fmt: skip
def test_ts_is_the_written_number_in_ns(text: str) -> None:
    status, n, _needle, out = _scan(f'[{{"ph": "X", "ts": {text}, "dur": 0}}]'.encode())
    assert (status, n) == (ks.OK, 1)
    assert int(out[ks.TS, 0]) == _exact_ns(text)


def test_string_ids_and_args() -> None:
    text = (
        b'[{"ph": "X", "ts": 1, "pid": "stream 7", "tid": 3, "args": {"bytes": "60", '
        b'"stream": " 0x1F ", "device": null, "correlation": "n/a", "Seq": -4}}]'
    )
    status, n, _needle, out = _scan(text)
    assert (status, n) == (ks.OK, 1)
    f = ks.FIELDS
    assert out[f["pid"] + 2, 0] >= 0  # a string pid: hashes and span, read in Python
    assert bytes(text[out[f["pid"] + 2, 0] : out[f["pid"] + 3, 0]]) == b"stream 7"
    assert int(out[f["tid"], 0]) == 3 and out[f["tid"] + 2, 0] == -1
    got = {attr: int(out[f[attr], 0]) for attr in ("nbytes", "stream", "device", "correlation", "seq")}
    assert got == {"nbytes": 60, "stream": 31, "device": -1, "correlation": -1, "seq": -4}


def test_equal_strings_hash_alike_and_different_ones_not() -> None:
    names = ["a", "a", "b", "", 'q"x', 'q"x', "x" * 40, "x" * 39 + "y", "x" * 40]
    events = [{"ph": "X", "ts": i, "name": s} for i, s in enumerate(names)]
    status, n, _needle, out = _scan(json.dumps(events).encode())
    assert (status, n) == (ks.OK, len(names))
    pairs = list(zip(out[ks.NAME].tolist(), out[ks.NAME + 1].tolist()))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert (pairs[i] == pairs[j]) == (a == b)


@pytest.mark.parametrize(
    "text",
    [
        b'[{"ph": "X", "ts": 1, "args": {"Collective name": "allreduce"}}]',
        b'[{"ph": "i", "ts": 1, "name": "\\"Collective name"}]',
        b'[{"ph": "X", "ts": 1, "name": "Collective names"}]',
        b'[{"ph": "X", "ts": 1, "name": "my Collective name"}]',
        b'[{"ph": "X", "ts": 1, "name": "Collective nam"}]',
    ],
)
def test_collective_needle_matches_a_byte_search(text: bytes) -> None:
    status, _n, needle, _out = _scan(text)
    assert status == ks.OK
    assert needle == (b'"Collective name' in text)


def test_full_output_asks_for_room() -> None:
    text = json.dumps([{"ph": "X", "ts": i} for i in range(10)]).encode()
    out = np.empty((ks.N_FIELDS, 4), dtype=np.int64)
    assert ks.scan(text, out)[0] == ks.FULL
    assert _scan(text, cap=4)[:2] == (ks.OK, 10)


def test_a_hash_collision_sends_the_slice_to_msgspec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table = kineto_fast.StringTable(lambda s: len(s))
    a = np.frombuffer(b"xxab", dtype=np.uint8)
    h1 = np.array([7, 7], dtype=np.int64)
    h2 = np.array([1, 2], dtype=np.int64)  # same first hash, different strings
    with pytest.raises(kineto_fast._Collision):
        table.values(a, h1, h2, np.array([2, 3]), np.array([3, 4]))

    def collide(*_args: Any) -> np.ndarray:
        raise kineto_fast._Collision

    monkeypatch.setattr(kineto_fast.StringTable, "values", collide)
    path = REPO / "sample_traces" / "synthetic" / "demo"
    trace_file = next(p for p in sorted(path.rglob("*.json*")) if "TP-0" in p.name)
    _assert_same(trace_file)


def test_output_buffer_is_checked() -> None:
    with pytest.raises(ValueError):
        ks.scan(b"[]", np.empty((ks.N_FIELDS + 1, 3), dtype=np.int64))
    with pytest.raises(TypeError):
        ks.scan(b"[]", b"read-only")


def test_auto_uses_the_scanner_for_big_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    events = [{"ph": "X", "cat": "kernel", "name": f"k{i % 50}", "pid": 0, "tid": 7,
               "ts": i, "dur": 1, "args": {"device": 0, "stream": 7}} for i in range(12000)]  # fmt: skip
    path = tmp_path / "big.json"
    path.write_bytes(json.dumps({"traceEvents": events}).encode())
    assert path.stat().st_size >= (1 << 20)
    counter = _Counter(monkeypatch)
    trace = read_kineto(path)
    assert counter.status and set(counter.status) == {ks.OK}
    assert len(trace.events) == 12000
    monkeypatch.setenv("ANALYZER_SCANNER", "msgspec")
    counter.status.clear()
    read_kineto(path)
    assert counter.status == []
