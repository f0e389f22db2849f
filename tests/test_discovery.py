"""Input discovery: ranks from distributedInfo / SGLang names / order, stage-split merge,
profiles, server_args, skipped files, zip safety, Nsight dispatch, progress."""

from __future__ import annotations

import gzip
import json
import stat
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

import analyzer.readers
from analyzer.model import BadInputError, validate_event_table
from analyzer.readers import load_traces
from analyzer.readers.discovery import sniff
from analyzer.readers.naming import parse_sglang_name

# ------------------------------------------------------------------ tiny trace builder


def _doc(rank: int | None = None, world: int = 1, kernels: int = 2, t0_us: float = 0.0,
         name: str = "k") -> dict[str, Any]:  # fmt: skip
    """A minimal Kineto trace: one cpu_op and ``kernels`` kernels named ``name<i>``."""
    events: list[dict[str, Any]] = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10, "tid": 10,
         "ts": t0_us, "dur": 1.0, "args": {"External id": 1}},
    ]  # fmt: skip
    for i in range(kernels):
        events.append({"ph": "X", "cat": "kernel", "name": f"{name}{i}", "pid": 0, "tid": 7,
                       "ts": t0_us + 10 * i, "dur": 5.0,
                       "args": {"device": 0, "stream": 7, "correlation": i}})  # fmt: skip
    doc: dict[str, Any] = {"schemaVersion": 1, "traceEvents": events}
    if rank is not None:
        doc["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": world}
    return doc


def _put(d: Path, fname: str, doc: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / fname
    data = json.dumps(doc).encode()
    p.write_bytes(gzip.compress(data) if fname.endswith(".gz") else data)
    return p


def _ranks(ts) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [
        (t.rank.rank, t.rank.rank_source, t.rank.tp_rank, t.rank.pp_rank, t.rank.profile_id)
        for t in ts.traces
    ]


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("fname", "want"),
    [
        ("1767.5-TP-3.trace.json.gz", ("1767.5", 3, None, None, None, None)),
        ("p-TP-1-DP-2-PP-3-EP-4.trace.json.gz", ("p", 1, 2, 3, 4, None)),
        ("p-TP-0-PP-1-EXTEND.trace.json.gz", ("p", 0, None, 1, None, "EXTEND")),
        ("p-TP-0-decode.trace.json.gz", ("p", 0, None, None, None, "DECODE")),
        ("p-TP-0-prefill.trace.json", ("p", 0, None, None, None, "EXTEND")),
        ("rank0.json.gz", None),
        ("TP-0.trace.json.gz", None),
        ("p-TP-0-bogus.trace.json.gz", None),
        ("p-PP-1.trace.json.gz", None),
    ],
)
def test_parse_sglang_name(fname: str, want: tuple | None) -> None:
    got = parse_sglang_name(fname)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert (got.profile_id, got.tp, got.dp, got.pp, got.ep, got.stage) == want


# ------------------------------------------------------------------ ranks


def test_tp_pp_ranks_from_names_when_distributed_info_repeats(tmp_path: Path) -> None:
    for pp in range(2):
        for tp in range(2):
            _put(tmp_path, f"prof-TP-{tp}-PP-{pp}.trace.json.gz", _doc(rank=0, world=4))
    ts = load_traces([tmp_path])
    assert _ranks(ts) == [
        (0, "filename", 0, 0, "prof"),
        (1, "filename", 1, 0, "prof"),
        (2, "filename", 0, 1, "prof"),
        (3, "filename", 1, 1, "prof"),
    ]
    assert {t.rank.world_size for t in ts.traces} == {4}
    assert not ts.notes


def test_distinct_distributed_info_wins_and_names_still_parsed(tmp_path: Path) -> None:
    _put(tmp_path, "prof-TP-0-DP-1-EP-0.trace.json.gz", _doc(rank=5, world=8))
    _put(tmp_path, "prof-TP-1-DP-1-EP-1.trace.json.gz", _doc(rank=4, world=8))
    ts = load_traces([tmp_path])
    got = [(t.rank.rank, t.rank.rank_source, t.rank.tp_rank, t.rank.dp_rank, t.rank.ep_rank,
            t.rank.world_size) for t in ts.traces]  # fmt: skip
    assert got == [(4, "distributedInfo", 1, 1, 1, 8), (5, "distributedInfo", 0, 1, 0, 8)]


def test_dp_replicas_get_distinct_ranks(tmp_path: Path) -> None:
    for dp in range(2):
        for tp in range(2):
            _put(tmp_path, f"p-TP-{tp}-DP-{dp}.trace.json.gz", _doc())
    ts = load_traces([tmp_path])
    got = sorted((t.rank.dp_rank, t.rank.tp_rank, t.rank.rank) for t in ts.traces)
    assert got == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]


def test_order_fallback_with_note(tmp_path: Path) -> None:
    _put(tmp_path, "b.json", _doc())
    _put(tmp_path, "a.json.gz", _doc())
    ts = load_traces([tmp_path])
    assert [(t.rank.rank, t.rank.rank_source) for t in ts.traces] == [(0, "order"), (1, "order")]
    assert [Path(t.sources[0].path).name for t in ts.traces] == ["a.json.gz", "b.json"]
    assert any("guessed from file order" in n for n in ts.notes)


def test_single_file_without_rank_has_no_note(tmp_path: Path) -> None:
    p = _put(tmp_path, "one.json", _doc())
    ts = load_traces([p])
    assert _ranks(ts) == [(0, "order", None, None, None)]
    assert ts.notes == []


def test_recsys_pair_ranks(shared_traces: Path) -> None:
    ts = load_traces([shared_traces / "kineto" / "hta_recsys_2ranks"])
    assert [(t.rank.rank, t.rank.rank_source, t.rank.world_size) for t in ts.traces] == [
        (0, "distributedInfo", 128),
        (1, "distributedInfo", 128),
    ]


# ------------------------------------------------------------------ merge, profiles, server_args


def test_stage_split_files_merge_into_one_trace_per_rank(tmp_path: Path) -> None:
    for tp in range(2):
        _put(tmp_path, f"p-TP-{tp}-EXTEND.trace.json.gz",
             _doc(rank=0, kernels=3, t0_us=0, name="prefill"))  # fmt: skip
        _put(tmp_path, f"p-TP-{tp}-DECODE.trace.json.gz",
             _doc(rank=0, kernels=4, t0_us=1000, name="decode"))  # fmt: skip
    ts = load_traces([tmp_path])
    assert len(ts.traces) == 2
    for t in ts.traces:
        validate_event_table(t.events)
        assert len(t.events) == (1 + 3) + (1 + 4)
        assert sorted(s.stage for s in t.sources) == ["DECODE", "EXTEND"]
        assert t.events["ts_ns"].is_monotonic_increasing
        names = set(t.events["name"].astype(str))
        assert {"prefill0", "prefill2", "decode3", "aten::mm"} <= names
        assert list(t.events["kind"].cat.categories)[:3] == ["kernel", "memcpy", "memset"]
    assert [t.rank.tp_rank for t in ts.traces] == [0, 1]


def test_several_profiles_are_grouped(tmp_path: Path) -> None:
    for prof in ("1000.1", "2000.2"):
        for tp in range(2):
            _put(tmp_path, f"{prof}-TP-{tp}.trace.json.gz", _doc(rank=0))
    ts = load_traces([tmp_path])
    assert sorted(ts.profiles) == ["1000.1", "2000.2"]
    for traces in ts.profiles.values():
        assert [t.rank.rank for t in traces] == [0, 1]


def test_server_args_and_non_trace_files(tmp_path: Path) -> None:
    _put(tmp_path, "p-TP-0.trace.json.gz", _doc(rank=0))
    (tmp_path / "server_args.json").write_text(json.dumps({"tp_size": 1, "model_path": "m"}))
    (tmp_path / "README.md").write_text("# notes")
    (tmp_path / "ground_truth.json").write_text(json.dumps({"answer": 42}))
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    (tmp_path / "sub").mkdir()
    _put(tmp_path / "sub", "bad.json.gz", {"traceEvents": [1, 2]})
    # a damaged rank fails the run (naming it) unless it is skipped on purpose
    with pytest.raises(BadInputError, match=r"bad\.json\.gz.*--skip-bad-ranks"):
        load_traces([tmp_path])
    ts = load_traces([tmp_path], skip_bad=True)
    assert any("bad.json.gz" in w for w in ts.warnings)
    assert len(ts.traces) == 1
    assert ts.server_args == {"tp_size": 1, "model_path": "m"}
    joined = "\n".join(ts.notes)
    for name in ("README.md", "blob.bin", "ground_truth.json", "bad.json.gz"):
        assert name in joined
    assert all("\n" not in n for n in ts.notes)


def test_server_args_beside_an_explicit_file(tmp_path: Path) -> None:
    p = _put(tmp_path, "p-TP-0.trace.json.gz", _doc())
    (tmp_path / "server_args.json").write_text('{"tp_size": 1}')
    assert load_traces([p]).server_args == {"tp_size": 1}


# ------------------------------------------------------------------ errors


def test_empty_dir_and_dir_without_traces(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no trace file found"):
        load_traces([tmp_path])
    (tmp_path / "notes.txt").write_text("hello")
    _put(tmp_path, "cfg.json", {"a": 1})
    with pytest.raises(BadInputError, match="no readable trace"):
        load_traces([tmp_path])


def test_explicit_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_traces([tmp_path / "missing.json"])
    txt = tmp_path / "x.txt"
    txt.write_text("not a trace")
    with pytest.raises(BadInputError, match="not a trace file"):
        load_traces([txt])
    trunc = tmp_path / "t.json.gz"
    data = gzip.compress(json.dumps(_doc(kernels=3000)).encode())
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="truncated gzip"):
        load_traces([trunc])


def test_sniff(tmp_path: Path) -> None:
    assert sniff(_put(tmp_path, "a.json.gz", _doc())) == "kineto"
    assert sniff(_put(tmp_path, "b.trace", [])) == "kineto"
    (tmp_path / "c.gz").write_bytes(gzip.compress(b"plain text"))
    assert sniff(tmp_path / "c.gz") is None
    (tmp_path / "d.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
    assert sniff(tmp_path / "d.db") == "nsys"


# ------------------------------------------------------------------ zip


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _gz(doc: Any) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def test_zip_good_and_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    z = _zip(tmp_path / "run.zip", {
        "run/p-TP-0.trace.json.gz": _gz(_doc(rank=0)),
        "run/p-TP-1.trace.json.gz": _gz(_doc(rank=0)),
        "run/server_args.json": b'{"tp_size": 2}',
    })  # fmt: skip
    ts = load_traces([z])
    assert [(t.rank.rank, t.rank.rank_source) for t in ts.traces] == [
        (0, "filename"),
        (1, "filename"),
    ]
    assert ts.server_args == {"tp_size": 2}
    assert ts.traces[0].sources[0].path.startswith(str(z))
    assert list(scratch.iterdir()) == []  # temp dir removed


@pytest.mark.parametrize(
    ("members", "symlink", "match"),
    [
        ({"../evil.json": b"[]"}, None, "path traversal"),
        ({"a/../../evil.json": b"[]"}, None, "path traversal"),
        ({"/abs/evil.json": b"[]"}, None, "absolute"),
        ({"ok.json": b"[]"}, "link.json", "symlink"),
    ],
)
def test_zip_unsafe_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: dict, symlink: str | None, match: str
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    z = _zip(tmp_path / "bad.zip", members, symlink)
    with pytest.raises(BadInputError, match=match):
        load_traces([z])
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "evil.json").exists()


def test_zip_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI's zip path takes its caps from readers/limits.py (the same as the app's)
    z = _zip(tmp_path / "many.zip", {f"f{i}.json": b"[]" for i in range(5)})
    monkeypatch.setenv("ANALYZER_LIMIT_MAX_ZIP_MEMBERS", "4")
    with pytest.raises(BadInputError, match="too many members"):
        load_traces([z])
    monkeypatch.delenv("ANALYZER_LIMIT_MAX_ZIP_MEMBERS")
    big = _zip(tmp_path / "big.zip", {"t.json": b" " * 5000 + b"[]"})
    monkeypatch.setenv("ANALYZER_LIMIT_MAX_ZIP_BYTES", "1000")
    with pytest.raises(BadInputError, match="too large"):
        load_traces([big])


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "x.zip"
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BadInputError, match="zip"):
        load_traces([p])


# ------------------------------------------------------------------ nsys, progress


def test_nsys_dispatch(shared_traces: Path) -> None:
    path = shared_traces / "nsys" / "nsys2026_torchrun_2gpu_flash_nccl.sqlite"
    ts = load_traces([path])
    assert len(ts.traces) == 2
    assert {t.sources[0].format for t in ts.traces} == {"nsys"}


def test_nsys_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "r.sqlite"
    p.write_bytes(b"SQLite format 3\x00" + bytes(200))
    monkeypatch.delattr(analyzer.readers, "nsys", raising=False)
    monkeypatch.setitem(sys.modules, "analyzer.readers.nsys", None)
    with pytest.raises(BadInputError, match="Nsight input is not supported yet"):
        load_traces([p])


def test_progress_reaches_total(tmp_path: Path) -> None:
    for tp in range(3):
        _put(tmp_path, f"p-TP-{tp}.trace.json.gz", _doc(kernels=500))
    _put(tmp_path, "p-TP-3.trace.json", _doc(kernels=500))
    calls: list[tuple[int, int]] = []
    load_traces([tmp_path], progress=lambda done, total: calls.append((done, total)))
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert calls and calls[-1] == (total, total)
    dones = [d for d, _t in calls]
    assert dones == sorted(dones)
