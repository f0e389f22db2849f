"""Read a PyTorch profiler (Kineto) trace, ``.json`` or ``.json.gz``, into a ``Trace``.

    >>> trace = read_kineto("rank0.trace.json.gz")          # doctest: +SKIP
    >>> trace.events.groupby("kind", observed=True)["dur_ns"].sum()  # doctest: +SKIP

Only complete events (``"ph": "X"``) become rows; metadata (``M``), instants (``i``) and
flow arrows (``s``/``f``) are skipped (the launch <-> kernel link is already in
``args.correlation``). Both the current schema (``kernel``, ``cuda_runtime``, ``External
id``) and the 2021 one (``Kernel``, ``Runtime``, ``external id``, ``"tid": "stream 7"``)
are read. Timestamps in float microseconds become int64 nanoseconds, rounded to the
nearest ns. Rows are sorted by ``ts_ns`` (stable).

The file is decoded in slices of a few MB with typed msgspec Structs that declare only
the fields used (unknown keys are skipped by the decoder), so memory stays near the size
of the resulting columns rather than of the JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from analyzer.model import (
    EVENT_COLUMNS,
    KINDS,
    BadInputError,
    DeviceInfo,
    RankInfo,
    SourceFile,
    Trace,
)
from analyzer.readers.jsonstream import TraceSplitter

__all__ = ["read_kineto", "CAT_TO_KIND", "DTYPE_BYTES"]

#: Kineto ``cat`` -> event kind (anything else is "other").
CAT_TO_KIND: dict[str, str] = {
    "kernel": "kernel",
    "Kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "Memcpy": "memcpy",
    "gpu_memset": "memset",
    "Memset": "memset",
    "cuda_runtime": "cuda_runtime",
    "Runtime": "cuda_runtime",
    "cuda_driver": "cuda_driver",
    "Driver": "cuda_driver",
    "cpu_op": "cpu_op",
    "Operator": "cpu_op",
    "user_annotation": "user_annotation",
    "User annotation": "user_annotation",
    "gpu_user_annotation": "gpu_user_annotation",
    "python_function": "python_function",
}
_GPU_KINDS = ("kernel", "memcpy", "memset", "gpu_user_annotation")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}

#: NCCL ``dtype`` arg (lower-cased) -> bytes per element.
DTYPE_BYTES: dict[str, int] = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "float16": 2,
    "bfloat16": 2, "int": 4, "int32": 4, "long": 8, "int64": 8, "short": 2, "int16": 2,
    "byte": 1, "uint8": 1, "char": 1, "int8": 1, "bool": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "complexhalf": 4, "complexfloat": 8, "complexdouble": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}  # fmt: skip


# --------------------------------------------------------------------------------------
# typed decoding: only the fields we use
# --------------------------------------------------------------------------------------


class _Args(msgspec.Struct, frozen=True, gc=False):
    device: int = -1
    stream: int = -1
    correlation: int = -1
    external_id: int = msgspec.field(default=-1, name="External id")
    external_id_old: int = msgspec.field(default=-1, name="external id")
    collective: str = msgspec.field(default="", name="Collective name")
    in_nelems: int = msgspec.field(default=-1, name="In msg nelems")
    dtype: str = ""
    group_size: int = msgspec.field(default=-1, name="Group size")
    pg_name: str = msgspec.field(default="", name="Process Group Name")
    seq: int = msgspec.field(default=-1, name="Seq")
    seq_lower: int = msgspec.field(default=-1, name="seq")
    nbytes: int = msgspec.field(default=-1, name="bytes")


_NO_ARGS = _Args()


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = -1
    tid: int | str = -1
    ts: float = math.nan
    dur: float = 0.0
    args: _Args = _NO_ARGS


class _LooseEvent(msgspec.Struct, gc=False):
    """Fallback when a slice has unexpected types (e.g. float pids): coerced in Python."""

    ph: Any = ""
    cat: Any = ""
    name: Any = ""
    pid: Any = -1
    tid: Any = -1
    ts: Any = math.nan
    dur: Any = 0.0
    args: Any = None


_STRICT = msgspec.json.Decoder(list[_Event])
_LOOSE = msgspec.json.Decoder(list[_LooseEvent])
_ARG_KEYS = {f.encode_name: f.name for f in msgspec.structs.fields(_Args)}


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    if isinstance(v, str):
        m = re.search(r"-?\d+$", v.strip())
        return int(m.group()) if m else -1
    return -1


def _as_num(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise ValueError(f"non-numeric {what} {v!r}")


def _coerce(e: _LooseEvent) -> _Event | None:
    """Turn a loosely typed event into ``_Event`` (None for non-"X" events)."""
    if e.ph != "X":
        return None
    ts = _as_num(e.ts, "ts")
    dur = _as_num(e.dur, "dur")
    a = e.args if isinstance(e.args, dict) else {}
    kw: dict[str, Any] = {}
    for key, field_name in _ARG_KEYS.items():
        if key in a:
            default = getattr(_NO_ARGS, field_name)
            kw[field_name] = str(a[key]) if isinstance(default, str) else _as_int(a[key])
    pid = e.pid if isinstance(e.pid, (int, str)) else _as_int(e.pid)
    tid = e.tid if isinstance(e.tid, (int, str)) else _as_int(e.tid)
    return _Event(
        ph="X",
        cat=str(e.cat),
        name=str(e.name),
        pid=pid,
        tid=tid,
        ts=ts,
        dur=dur,
        args=_Args(**kw) if kw else _NO_ARGS,
    )


_BYTE_AT = re.compile(r"\(byte (\d+)\)")


def _decode_slice(piece: bytes) -> list[_Event]:
    """Decode one ``[...]`` slice; raise ``msgspec.DecodeError`` on malformed JSON."""
    try:
        events = _STRICT.decode(piece)
    except msgspec.ValidationError:
        return _decode_loose(piece)
    except msgspec.DecodeError as exc:
        # the parser got this far from a known-good start, so a NaN/Infinity token here is
        # a real (non-JSON) value written by Python's json module, not a bad cut
        m = _BYTE_AT.search(str(exc))
        if m:
            at = int(m.group(1))
            token = piece[at : at + 9].lstrip(b"-")
            if token.startswith((b"NaN", b"Infinity")):
                raise _BadValue(
                    "non-finite number (NaN/Infinity) in an event: invalid duration or timestamp"
                ) from None
        raise
    return [e for e in events if e.ph == "X"]


def _decode_loose(piece: bytes) -> list[_Event]:
    loose = _LOOSE.decode(piece)  # malformed JSON raises DecodeError here
    try:
        coerced = [_coerce(e) for e in loose]
    except ValueError as exc:
        raise _BadValue(str(exc)) from None
    return [e for e in coerced if e is not None]


class _BadValue(Exception):
    """A well-formed event with an unusable value (not a JSON syntax problem)."""


# --------------------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------------------


class _Interner:
    """Global string -> code table shared by all slices of one file."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, values: list[str]) -> np.ndarray:
        codes, uniques = pd.factorize(np.array(values, dtype=object))
        table = self.codes
        remap = np.fromiter(
            (table.setdefault(u, len(table)) for u in uniques), dtype=np.int32, count=len(uniques)
        )
        return remap[codes] if len(codes) else np.zeros(0, dtype=np.int32)

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        cats = pd.Index(list(self.codes), dtype=object)
        return pd.Categorical.from_codes(codes, categories=cats)


def _int_column(values: list[Any]) -> np.ndarray:
    """int64 array from ints or strings such as ``"stream 7"`` / ``"25738"`` (-1 if none)."""
    try:
        return np.array(values, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        pass
    codes, uniques = pd.factorize(np.array(values, dtype=object))
    table = np.array([_as_int(u) for u in uniques], dtype=np.int64)
    return table[codes]


def _us_to_ns(us: np.ndarray) -> np.ndarray:
    """Float microseconds -> int64 ns, rounded to the nearest ns without losing precision."""
    whole = np.floor(us)
    frac_ns = np.rint((us - whole) * 1000.0).astype(np.int64)
    return whole.astype(np.int64) * 1000 + frac_ns


class _Columns:
    """Accumulates numpy columns slice by slice."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in EVENT_COLUMNS}
        self.names = _Interner()
        self.collectives = _Interner()
        self.pg_names = _Interner()
        self.n = 0

    def add(self, events: list[_Event], file_name: str) -> None:
        n = len(events)
        if n == 0:
            return
        ts_us = np.array([e.ts for e in events], dtype=np.float64)
        dur_us = np.array([e.dur for e in events], dtype=np.float64)
        if not np.isfinite(ts_us).all():
            bad = int(np.flatnonzero(~np.isfinite(ts_us))[0])
            raise BadInputError(
                f"{file_name}: event {events[bad].name!r} has no numeric timestamp (ts)"
            )
        bad_dur = ~np.isfinite(dur_us) | (dur_us < 0)
        if bad_dur.any():
            i = int(np.flatnonzero(bad_dur)[0])
            raise BadInputError(
                f"{file_name}: event {events[i].name!r} has an invalid duration {dur_us[i]!r} us"
            )
        cat_codes, cat_uniques = pd.factorize(np.array([e.cat for e in events], dtype=object))
        kind_of_cat = np.array(
            [_KIND_CODE[CAT_TO_KIND.get(c, "other")] for c in cat_uniques], dtype=np.int8
        )
        kind = kind_of_cat[cat_codes] if n else np.zeros(0, dtype=np.int8)
        gpu = np.isin(kind, [_KIND_CODE[k] for k in _GPU_KINDS])
        pid = _int_column([e.pid for e in events])
        tid = _int_column([e.tid for e in events])
        args = [e.args for e in events]
        a_dev = np.array([a.device for a in args], dtype=np.int64)
        a_stream = np.array([a.stream for a in args], dtype=np.int64)
        device = np.where(gpu, np.where(a_dev >= 0, a_dev, pid), -1).astype(np.int32)
        stream = np.where(gpu, np.where(a_stream >= 0, a_stream, tid), -1).astype(np.int32)
        ext = np.array([a.external_id for a in args], dtype=np.int64)
        ext_old = np.array([a.external_id_old for a in args], dtype=np.int64)
        seq = np.array([a.seq for a in args], dtype=np.int64)
        seq_lower = np.array([a.seq_lower for a in args], dtype=np.int64)
        nelems = np.array([a.in_nelems for a in args], dtype=np.int64)
        nbytes = np.array([a.nbytes for a in args], dtype=np.int64)
        coll_strs = [a.collective for a in args]
        coll = self.collectives.encode(coll_strs)
        has_coll = np.array([bool(c) for c in coll_strs]) if n else np.zeros(0, dtype=bool)
        msg = np.full(n, -1, dtype=np.int64)
        if has_coll.any():
            dt_codes, dt_uniques = pd.factorize(
                np.array([a.dtype.lower() for a in args], dtype=object)
            )
            size = np.array([DTYPE_BYTES.get(u, -1) for u in dt_uniques], dtype=np.int64)[dt_codes]
            ok = has_coll & (nelems >= 0) & (size > 0)
            msg[ok] = nelems[ok] * size[ok]
        copy = np.isin(kind, [_KIND_CODE["memcpy"], _KIND_CODE["memset"]]) & (nbytes >= 0)
        msg[copy] = nbytes[copy]
        p = self.parts
        p["ts_ns"].append(_us_to_ns(ts_us))
        p["dur_ns"].append(_us_to_ns(dur_us))
        p["kind"].append(kind)
        p["name"].append(self.names.encode([e.name for e in events]))
        p["pid"].append(pid)
        p["tid"].append(tid)
        p["device"].append(device)
        p["stream"].append(stream)
        p["correlation"].append(np.array([a.correlation for a in args], dtype=np.int64))
        p["external_id"].append(np.where(ext >= 0, ext, ext_old))
        p["collective"].append(coll)
        p["msg_bytes"].append(msg)
        p["pg_name"].append(self.pg_names.encode([a.pg_name for a in args]))
        p["pg_size"].append(np.array([a.group_size for a in args], dtype=np.int32))
        p["seq"].append(np.where(seq >= 0, seq, seq_lower))
        self.n += n

    def frame(self) -> pd.DataFrame:
        """The event table, sorted by ``ts_ns`` (stable)."""
        cols: dict[str, Any] = {}
        order: np.ndarray | None = None
        ts = _cat(self.parts.pop("ts_ns"), np.int64)
        if ts.size and (np.diff(ts) < 0).any():
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
        cols["ts_ns"] = ts
        for key, dtype in EVENT_COLUMNS.items():
            if key == "ts_ns":
                continue
            np_dtype = {"category": np.int32, "int32": np.int32, "int64": np.int64}[dtype]
            arr = _cat(self.parts.pop(key), np_dtype if key != "kind" else np.int8)
            if order is not None:
                arr = arr[order]
            if key == "kind":
                cols[key] = pd.Categorical.from_codes(arr, categories=pd.Index(KINDS, dtype=object))
            elif key == "name":
                cols[key] = self.names.categorical(arr)
            elif key == "collective":
                cols[key] = self.collectives.categorical(arr)
            elif key == "pg_name":
                cols[key] = self.pg_names.categorical(arr)
            else:
                cols[key] = arr.astype(dtype, copy=False)
        return pd.DataFrame(cols)


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    parts.clear()
    return out.astype(dtype, copy=False)


# --------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------


def _devices(props: Any) -> tuple[DeviceInfo, ...]:
    out: list[DeviceInfo] = []
    if not isinstance(props, list):
        return ()
    for i, p in enumerate(props):
        if not isinstance(p, dict):
            continue
        major, minor = p.get("computeMajor"), p.get("computeMinor")
        mem = p.get("totalGlobalMem")
        sms = p.get("numSms")
        out.append(
            DeviceInfo(
                index=_as_int(p.get("id", i)),
                name=str(p.get("name") or ""),
                total_memory_bytes=int(mem) if isinstance(mem, (int, float)) else None,
                num_sms=int(sms) if isinstance(sms, (int, float)) else None,
                compute_capability=(
                    f"{major}.{minor}" if major is not None and minor is not None else None
                ),
            )
        )
    return tuple(out)


def _header(path: Path, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadInputError(f"{path.name}: invalid JSON outside traceEvents ({exc})") from None
    return doc if isinstance(doc, dict) else {}


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def read_kineto(
    path: str | Path, *, progress: Callable[[int], None] | None = None
) -> Trace:
    """Read one Kineto trace file into a ``Trace`` (one file = one rank).

    ``progress`` (optional) receives the number of on-disk bytes consumed after each block.
    Raises ``BadInputError`` with a one-line message for anything that is not a readable
    trace: empty, truncated gzip, invalid JSON, no ``traceEvents``, bad durations.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    splitter = TraceSplitter(path, progress)
    cols = _Columns()
    try:
        for events in splitter.iter_decoded(_decode_slice):
            cols.add(events, path.name)  # type: ignore[arg-type]
    except msgspec.ValidationError as exc:
        raise BadInputError(f"{path.name}: traceEvents is not a list of events ({exc})") from None
    except msgspec.DecodeError as exc:
        raise BadInputError(f"{path.name}: invalid JSON ({_describe(exc)})") from None
    except _BadValue as exc:
        raise BadInputError(f"{path.name}: {exc}") from None
    except OSError as exc:
        raise BadInputError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    head = _header(path, splitter.header)
    events = cols.frame()
    dist = head.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else None
    rank = _as_int(dist.get("rank")) if dist and "rank" in dist else -1
    world = _as_int(dist.get("world_size")) if dist and "world_size" in dist else None
    rank_info = RankInfo(
        rank=max(rank, 0),
        rank_source="distributedInfo" if rank >= 0 else "order",
        world_size=world if world and world > 0 else None,
    )
    metadata = {
        k: v
        for k, v in head.items()
        if k != "traceEvents" and (v is None or isinstance(v, (str, int, float, bool)))
    }
    warnings: tuple[str, ...] = ()
    if len(events) == 0:
        warnings = (f"{path.name}: no complete ('X') events",)
    return Trace(
        rank=rank_info,
        events=events,
        sources=(SourceFile(path=str(path), format="kineto"),),
        devices=_devices(head.get("deviceProperties")),
        distributed_info=dist,
        metadata=metadata,
        warnings=warnings,
    )


def _describe(exc: Exception) -> str:
    msg = str(exc)
    return msg[:200]
