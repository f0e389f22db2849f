"""The recorded shapes of a Kineto trace's CPU operators: a second, lazy pass.

The main reader (``kineto.py``) keeps no ``args`` of ``cpu_op`` events. When a roofline is
wanted and the trace was recorded with ``record_shapes``, this pass reads the file again
and keeps, for every ``cpu_op`` only, its ``External id``, start, name and the raw bytes of
``Input Dims`` / ``Input type`` / ``Concrete Inputs``:

    >>> shapes = read_op_shapes("rank0.trace.json.gz")     # doctest: +SKIP
    >>> shapes.ops.head()                                   # doctest: +SKIP

It does not parse the whole JSON: the text is searched for ``"cat": "cpu_op"`` (a bytes
regex, C speed), each hit is cut out from its event's ``{`` to the end of its ``args``
object, and all cut-outs are decoded in one msgspec call with a typed Struct. The
(dims, types, concrete inputs) triples are interned: each distinct one is decoded once
(``OpShapes.signature``), so the per-op work downstream runs per distinct shape.

``read_graph_capture`` reads a CUDA-graph capture trace (a run that records graphs, its
kernels launched one by one with their ops and shapes): for every capture (``...BeginCapture``
.. ``...EndCapture``) the ordered list of the ops that launched its kernels.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from analyzer.readers.jsonstream import GZIP_MAGIC, iter_file_bytes

#: a cpu_op event's category, both schemas ("Operator" is the 2021 one)
_CAT = re.compile(rb'"cat"\s*:\s*"(?:cpu_op|Operator)"')
_ARGS = re.compile(rb'"args"\s*:\s*\{')
#: how far before "cat" the event's "{" may be (Kineto writes "ph" first)
_HEAD_MAX = 256
#: bytes kept from the end of one block for an event cut by the block boundary
_TAIL_KEEP = 1 << 16


class _Args(msgspec.Struct):
    ext: int = msgspec.field(name="External id", default=-1)
    ext_old: int = msgspec.field(name="external id", default=-1)
    dims: msgspec.Raw = msgspec.field(name="Input Dims", default=msgspec.Raw(b"[]"))
    types: msgspec.Raw = msgspec.field(name="Input type", default=msgspec.Raw(b"[]"))
    concrete: msgspec.Raw = msgspec.field(name="Concrete Inputs", default=msgspec.Raw(b"[]"))


class _Op(msgspec.Struct):
    name: str = ""
    ts: float = 0.0
    args: _Args = msgspec.field(default_factory=_Args)


_OPS = msgspec.json.Decoder(list[_Op])
_ANY = msgspec.json.Decoder()


@dataclass(frozen=True)
class Signature:
    """One distinct (Input Dims, Input type, Concrete Inputs) triple, decoded."""

    dims: tuple[Any, ...]
    types: tuple[str, ...]
    concrete: tuple[str, ...]


@dataclass
class OpShapes:
    """The shapes of one file's CPU ops.

    ``ops``: one row per cpu_op with ``ts_ns`` (int64), ``external_id`` (int64), ``name``
    (Categorical) and ``sig`` (int32 index into ``signatures``); sorted by ``ts_ns``.
    ``skipped``: events whose text could not be cut out or decoded (counted, not fatal).
    """

    ops: pd.DataFrame
    signatures: list[Signature]
    path: str = ""
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def has_shapes(self) -> bool:
        return any(s.dims for s in self.signatures)


def _event_end(buf: bytes, cat_end: int) -> int:
    """End (exclusive) of the event whose "cat" ends at ``cat_end``: the "}" that closes its
    args object (cpu_op args hold lists, numbers and strings, no objects), then the event's
    own "}". -1 when the text is not complete in ``buf``. A string holding a "}" cuts the
    event short; its decode then fails and it is counted in ``skipped``."""
    m = _ARGS.search(buf, cat_end, cat_end + _HEAD_MAX * 16)
    if m is None:
        return -1
    close_args = buf.find(b"}", m.end())
    if close_args < 0:
        return -1
    close = buf.find(b"}", close_args + 1)
    return -1 if close < 0 else close + 1


def _cut(buf: bytes) -> tuple[list[bytes], int]:
    """The cpu_op events complete in ``buf`` and where the unfinished rest starts."""
    out: list[bytes] = []
    keep_from = max(0, len(buf) - _TAIL_KEEP)
    for m in _CAT.finditer(buf):
        start = buf.rfind(b"{", max(0, m.start() - _HEAD_MAX), m.start())
        if start < 0:
            continue
        end = _event_end(buf, m.end())
        if end < 0:
            return out, start
        out.append(buf[start:end])
        keep_from = max(keep_from, end)
    return out, keep_from


@dataclass(frozen=True)
class OpIndex:
    """Where the main reader saw each cpu_op: the file offset (uncompressed stream) of the
    first byte of its name, and its External id. Recorded by the compiled scanner for free
    (numpy on columns it already has); ``read_op_shapes(path, index, wanted)`` then decodes
    only the ops whose External id is in ``wanted`` without searching the file."""

    offsets: np.ndarray
    ext: np.ndarray

    @classmethod
    def of(cls, offsets: list[np.ndarray], ext: list[np.ndarray]) -> OpIndex:
        off = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        ex = np.concatenate(ext) if ext else np.zeros(0, np.int64)
        return cls(off.astype(np.int64, copy=False), ex.astype(np.int64, copy=False))


#: the most bytes from an op's name to the end of its args object
_OP_WINDOW = 1 << 15


def _cut_at(buf: bytes, base: int, offs: np.ndarray) -> tuple[list[bytes], int]:
    """The events (rebuilt as ``{"name": ...}``) at file offsets ``offs`` (sorted) in ``buf``
    (which starts at file offset ``base``), and how many offsets it could not finish."""
    out: list[bytes] = []
    n = len(buf)
    for o in (offs - base).tolist():  # only the ops that launched kernels: a few per step
        m = _ARGS.search(buf, o, min(n, o + _OP_WINDOW))
        if m is None:
            return out, len(offs) - len(out)
        close = buf.find(b"}", m.end())
        if close < 0:
            return out, len(offs) - len(out)
        out.append(b'{"name":"' + buf[o : close + 1] + b"}")
    return out, 0


def _read_indexed(path: Path, index: OpIndex, wanted: np.ndarray | None) -> list[bytes]:
    keep = np.ones(len(index.offsets), bool) if wanted is None else np.isin(index.ext, wanted)
    offs = np.sort(index.offsets[keep])
    with open(path, "rb") as fh:
        plain = fh.read(2) != GZIP_MAGIC
    if plain and len(offs):
        # an uncompressed file is mapped: only the pages around the wanted ops are read
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            got, _left = _cut_at(mm, 0, offs)  # type: ignore[arg-type]
            return got
    pieces: list[bytes] = []
    base, tail = 0, b""
    i = 0
    for block in iter_file_bytes(path):
        buf = tail + block if tail else block
        hi = base + len(buf)
        j = int(np.searchsorted(offs, hi - _OP_WINDOW, side="left")) if i < len(offs) else i
        got, _left = _cut_at(buf, base, offs[i:j])
        pieces.extend(got)
        i += len(got)
        cut = len(buf) if i >= len(offs) else max(0, min(int(offs[i]) - base, len(buf)))
        tail = buf[cut:]
        base += cut
    if i < len(offs):
        got, _left = _cut_at(tail, base, offs[i:])
        pieces.extend(got)
    return pieces


def read_op_shapes(path: str | Path, index: OpIndex | None = None,
                   wanted: np.ndarray | None = None) -> OpShapes:
    """The cpu_op shapes of one Kineto file (``.json`` or ``.json.gz``).

    With the ``index`` the main reader recorded, only the ops whose External id is in
    ``wanted`` (all when None) are cut out at their offsets; without it the text is
    searched for every cpu_op."""
    if index is not None:
        return _decode(_read_indexed(Path(path), index, wanted), str(path))
    pieces: list[bytes] = []
    tail = b""
    for block in iter_file_bytes(Path(path)):
        buf = tail + block if tail else block
        got, rest = _cut(buf)
        pieces.extend(got)
        tail = buf[rest:]
    return _decode(pieces, str(path))


def _decode(pieces: list[bytes], path: str) -> OpShapes:
    skipped = 0
    try:
        ops = _OPS.decode(b"[" + b",".join(pieces) + b"]") if pieces else []
    except (msgspec.DecodeError, msgspec.ValidationError):
        ops = []
        for p in pieces:  # one bad cut-out must not lose the others
            try:
                ops.extend(_OPS.decode(b"[" + p + b"]"))
            except (msgspec.DecodeError, msgspec.ValidationError):
                skipped += 1
    n = len(ops)
    ts = np.fromiter((o.ts for o in ops), dtype=np.float64, count=n)
    ext = np.fromiter((o.args.ext if o.args.ext >= 0 else o.args.ext_old for o in ops),
                      dtype=np.int64, count=n)
    keys = [bytes(o.args.dims) + b"\x00" + bytes(o.args.types) + b"\x00" + bytes(o.args.concrete)
            for o in ops]
    codes, uniq = pd.factorize(pd.Series(keys, dtype=object), sort=False) if n else (np.zeros(0, np.int64), [])
    sigs: list[Signature] = []
    for k in uniq:
        d, t, c = bytes(k).split(b"\x00")
        try:
            dims, types, conc = _ANY.decode(d), _ANY.decode(t), _ANY.decode(c)
        except msgspec.DecodeError:
            dims, types, conc = [], [], []
        sigs.append(Signature(tuple(dims) if isinstance(dims, list) else (),
                              tuple(str(x) for x in types) if isinstance(types, list) else (),
                              tuple(str(x) for x in conc) if isinstance(conc, list) else ()))
    frame = pd.DataFrame({
        "ts_ns": np.round(ts * 1000.0).astype(np.int64),
        "external_id": ext,
        "name": pd.Categorical([o.name for o in ops]),
        "sig": np.asarray(codes, dtype=np.int32),
    }).sort_values("ts_ns", kind="stable").reset_index(drop=True)
    return OpShapes(frame, sigs, path=path, skipped=skipped)


# --------------------------------------------------------------------------------------
# CUDA-graph capture traces
# --------------------------------------------------------------------------------------


class _CapArgs(msgspec.Struct):
    correlation: int = -1
    ext: int = msgspec.field(name="External id", default=-1)


class _CapEvent(msgspec.Struct):
    name: str = ""
    cat: str = ""
    ts: float = 0.0
    args: _CapArgs = msgspec.field(default_factory=_CapArgs)


class _CapDoc(msgspec.Struct):
    traceEvents: list[_CapEvent] = msgspec.field(default_factory=list)


@dataclass
class GraphCapture:
    """The captures of one graph-capture trace, in capture order.

    ``captures[j]`` is the ordered list of ``(op name, signature index, op key)`` of the
    kernels recorded into graph ``j`` (``None`` name, -1 when a launch had no CPU op; the op
    key is the op's row in ``shapes.ops``, shared by the kernels one op launched);
    ``shapes`` holds the signatures. ``path`` is the capture file.
    """

    captures: list[list[tuple[str | None, int, int]]]
    shapes: OpShapes
    path: str = ""


def read_graph_capture(path: str | Path, runtime_names: dict[str, set[str]]) -> GraphCapture:
    """Read a graph-capture trace (``path``: the file, or a folder holding
    ``execution_details.json`` or one trace). ``runtime_names``: the runtime API names of
    ``begin_capture``, ``end_capture`` and ``launch`` (data in the op-family table)."""
    p = Path(path)
    if p.is_dir():
        p = _capture_file(p)
    raw = b"".join(iter_file_bytes(p))
    doc = msgspec.json.decode(raw, type=_CapDoc)
    shapes = read_op_shapes(p)
    ops = shapes.ops
    begin, end, launch = runtime_names["begin_capture"], runtime_names["end_capture"], runtime_names["launch"]
    rt = sorted((e for e in doc.traceEvents if e.name in begin or e.name in end or e.name in launch),
                key=lambda e: e.ts)
    # the op of each launch: the latest cpu_op with the launch's External id that starts before it
    ext_ts: dict[int, list[tuple[int, str, int, int]]] = {}
    for row, (ts, x, nm, sg) in enumerate(zip(ops["ts_ns"].to_numpy(), ops["external_id"].to_numpy(),
                                              ops["name"].astype(str), ops["sig"].to_numpy())):
        ext_ts.setdefault(int(x), []).append((int(ts), nm, int(sg), row))
    captures: list[list[tuple[str | None, int, int]]] = []
    cur: list[tuple[str | None, int, int]] | None = None
    for e in rt:  # a capture holds hundreds of launches: a small loop, not per trace event
        if e.name in begin:
            cur = []
        elif e.name in end:
            if cur is not None:
                captures.append(cur)
            cur = None
        elif cur is not None:
            cands = [c for c in ext_ts.get(e.args.ext, []) if c[0] <= round(e.ts * 1000)]
            cur.append((cands[-1][1], cands[-1][2], cands[-1][3]) if cands else (None, -1, -1))
    return GraphCapture(captures, shapes, str(p))


def _capture_file(folder: Path) -> Path:
    details = folder / "execution_details.json"
    if details.is_file():
        info = msgspec.json.decode(details.read_bytes())
        if isinstance(info, list) and info and isinstance(info[0], dict) and info[0].get("file"):
            return folder / str(info[0]["file"])
    files = sorted(x for x in folder.iterdir() if x.name.endswith((".json", ".json.gz")) and x.name != "execution_details.json")
    if len(files) != 1:
        raise FileNotFoundError(f"{folder}: expected one capture trace or an execution_details.json")
    return files[0]


__all__ = ["GraphCapture", "OpIndex", "OpShapes", "Signature", "read_graph_capture", "read_op_shapes"]
