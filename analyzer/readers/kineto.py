"""Read a PyTorch profiler (Kineto) trace, ``.json`` or ``.json.gz``, into a ``Trace``.

    >>> trace = read_kineto("rank0.trace.json.gz")          # doctest: +SKIP
    >>> trace.events.groupby("kind", observed=True)["dur_ns"].sum()  # doctest: +SKIP

Only complete events (``"ph": "X"``) become rows; metadata (``M``), instants (``i``) and
flow arrows (``s``/``f``) are skipped (the launch <-> kernel link is already in
``args.correlation``). Both the current schema (``kernel``, ``cuda_runtime``, ``External
id``) and the 2021 one (``Kernel``, ``Runtime``, ``external id``, ``"tid": "stream 7"``)
are read. Timestamps in float microseconds become int64 nanoseconds, rounded to the
nearest ns (``round(x * 1000)``, exact for integer epoch microseconds). Rows are sorted by ``ts_ns`` (stable).

The file is decoded in slices of a few MB with typed msgspec Structs that declare only
the fields used (unknown keys are skipped by the decoder), so memory stays near the size
of the resulting columns rather than of the JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, count
from operator import attrgetter
from pathlib import Path
from typing import Any, Union

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

__all__ = ["CAT_TO_KIND", "DTYPE_BYTES", "read_kineto"]

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
_GPU_CODES = np.array([_KIND_CODE[k] for k in _GPU_KINDS], dtype=np.int8)
_COPY_CODES = np.array([_KIND_CODE["memcpy"], _KIND_CODE["memset"]], dtype=np.int8)
#: kinds that can carry a correlation id / an External id (see ``_ArgColumns``)
_CORR_CODES = np.array(
    [_KIND_CODE[k] for k in (*_GPU_KINDS, "cuda_runtime", "cuda_driver", "other")], dtype=np.int8
)
_EXT_CODES = np.array([i for k, i in _KIND_CODE.items() if k != "python_function"], dtype=np.int8)

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


#: (JSON key in ``args``, attribute, type, default) of every arg the reader uses.
#: Arg values as found in the wild: ROCm writes ``"bytes": "60"``, some exporters floats.
_LooseInt = Union[int, float, str, None]  # noqa: UP007 - a runtime type for msgspec
_LooseStr = Union[str, int, float, None]  # noqa: UP007

#: (JSON key in ``args``, attribute, type, default) of every arg the reader uses.
_ARG_SPEC: tuple[tuple[str, str, Any, Any], ...] = (
    ("device", "device", _LooseInt, -1),
    ("stream", "stream", _LooseInt, -1),
    ("correlation", "correlation", _LooseInt, -1),
    ("External id", "external_id", _LooseInt, -1),
    ("external id", "external_id_old", _LooseInt, -1),
    ("Collective name", "collective", _LooseStr, ""),
    ("In msg nelems", "in_nelems", _LooseInt, -1),
    ("dtype", "dtype", _LooseStr, ""),
    ("Group size", "group_size", _LooseInt, -1),
    ("Process Group Name", "pg_name", _LooseStr, ""),
    ("Seq", "seq", _LooseInt, -1),
    ("seq", "seq_lower", _LooseInt, -1),
    ("bytes", "nbytes", _LooseInt, -1),
)
_ARG_DEFAULT = {attr: default for _k, attr, _t, default in _ARG_SPEC}
#: args always decoded; the others only when the slice's bytes contain the needle
_COMMON_KEYS = frozenset(("device", "stream", "correlation", "External id", "external id", "bytes"))
_COLLECTIVE = (
    b'"Collective name',
    frozenset(("Collective name", "In msg nelems", "dtype", "Group size", "Process Group Name",
               "Seq", "seq")),
)  # fmt: skip
#: Chrome trace phases other than "X": decoded as empty structs (their bodies are skipped).
_OTHER_PHASES = "BEiIbneCstfPONDMRcv()"


class _Other(msgspec.Struct, gc=False, tag_field="ph"):
    """An event of another phase (metadata, instant, flow...): nothing is kept."""


class _Decoders:
    """Typed decoders specialised to the ``args`` keys present in a slice.

    A slice whose bytes never contain ``"Collective name"`` is decoded without that field,
    which keeps msgspec's per-key matching short (the bulk of the decode time).
    """

    def __init__(self) -> None:
        self._cache: dict[frozenset[str], tuple[msgspec.json.Decoder, type, type | None]] = {}
        others = tuple(
            msgspec.defstruct(f"_P{i}", [], bases=(_Other,), tag=p)
            for i, p in enumerate(_OTHER_PHASES)
        )
        self._others = others

    def get(self, keys: frozenset[str]) -> tuple[msgspec.json.Decoder, type, type | None]:
        hit = self._cache.get(keys)
        if hit is not None:
            return hit
        fields: list[tuple[str, Any, Any]] = [
            ("cat", str, ""),
            ("name", str, ""),
            ("pid", Union[int, float, str], -1),  # noqa: UP007
            ("tid", Union[int, float, str], -1),  # noqa: UP007
            ("ts", float, math.nan),
            ("dur", float, 0.0),
        ]
        args_type: type | None = None
        if keys:
            args_type = msgspec.defstruct(
                "_Args",
                [
                    (attr, typ, msgspec.field(default=default, name=key))
                    for key, attr, typ, default in _ARG_SPEC
                    if key in keys
                ],
                frozen=True,
                gc=False,
            )
            fields.append(("args", args_type, args_type()))
        event_type = msgspec.defstruct("_Complete", fields, tag_field="ph", tag="X", gc=False)
        union = Union[(event_type, *self._others)]
        dec = msgspec.json.Decoder(list[union])  # type: ignore[valid-type]
        out = (dec, event_type, args_type)
        self._cache[keys] = out
        return out


_DECODERS = _Decoders()
_ALL_KEYS = frozenset(k for k, *_r in _ARG_SPEC)


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


_LOOSE = msgspec.json.Decoder(list[_LooseEvent])


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    if isinstance(v, str):
        v = v.strip()
        if v[:2].lower() == "0x":
            try:
                return int(v, 16)
            except ValueError:
                return -1
        m = re.search(r"-?\d+$", v)  # "stream 7" -> 7, "25738" -> 25738
        return int(m.group()) if m else -1
    return -1


def _as_str(v: Any) -> str:
    return "" if v is None else str(v)


def _as_num(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise ValueError(f"non-numeric {what} {v!r}")


def _coerce(e: _LooseEvent, event_type: type, args_type: type) -> Any:
    """Turn a loosely typed event into the typed complete event (None for non-"X" events)."""
    if e.ph != "X":
        return None
    ts = _as_num(e.ts, "ts")
    dur = _as_num(e.dur, "dur")
    a = e.args if isinstance(e.args, dict) else {}
    kw: dict[str, Any] = {}
    for key, attr, typ, _default in _ARG_SPEC:
        if key in a:
            kw[attr] = _as_str(a[key]) if typ is _LooseStr else _as_int(a[key])
    pid = e.pid if isinstance(e.pid, (int, str)) else _as_int(e.pid)
    tid = e.tid if isinstance(e.tid, (int, str)) else _as_int(e.tid)
    return event_type(
        cat=str(e.cat), name=str(e.name), pid=pid, tid=tid, ts=ts, dur=dur, args=args_type(**kw)
    )


_BYTE_AT = re.compile(r"\(byte (\d+)\)")


_Decoded = tuple[list[Any], frozenset[str]]


class _SliceDecoder:
    """Decode ``[...]`` slices of one file into (complete events, args keys decoded).

    The collective args are decoded from the first slice whose bytes mention
    ``"Collective name`` on (one byte search per slice until then).
    """

    def __init__(self) -> None:
        self.keys = _COMMON_KEYS

    def __call__(self, piece: memoryview, buf: bytearray, lo: int, hi: int) -> _Decoded:
        if self.keys is _COMMON_KEYS and buf.find(_COLLECTIVE[0], lo, hi) >= 0:
            self.keys = _COMMON_KEYS | _COLLECTIVE[1]
        return _decode_slice(piece, self.keys)


def _decode_slice(piece: memoryview, keys: frozenset[str]) -> _Decoded:
    """Decode one slice; raise ``msgspec.DecodeError`` on malformed JSON (cut is retried)."""
    dec, event_type, _args_type = _DECODERS.get(keys)
    try:
        events = dec.decode(piece)
    except msgspec.ValidationError:
        return _decode_loose(piece), _ALL_KEYS
    except msgspec.DecodeError as exc:
        # the parser got this far from a known-good start, so a NaN/Infinity token here is
        # a real (non-JSON) value written by Python's json module, not a bad cut
        m = _BYTE_AT.search(str(exc))
        if m:
            at = int(m.group(1))
            token = bytes(piece[at : at + 9]).lstrip(b"-")
            if token.startswith((b"NaN", b"Infinity")):
                raise _BadValue(
                    "non-finite number (NaN/Infinity) in an event: invalid duration or timestamp"
                ) from None
        raise
    return [e for e in events if type(e) is event_type], keys


def _decode_loose(piece: memoryview) -> list[Any]:
    loose = _LOOSE.decode(piece)  # malformed JSON raises DecodeError here
    _dec, event_type, args_type = _DECODERS.get(_ALL_KEYS)
    try:
        coerced = [_coerce(e, event_type, args_type) for e in loose]  # type: ignore[arg-type]
    except ValueError as exc:
        raise _BadValue(str(exc)) from None
    return [e for e in coerced if e is not None]


class _BadValue(Exception):
    """A well-formed event with an unusable value (not a JSON syntax problem)."""


# --------------------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------------------


class _Interner:
    """Global string -> code table shared by all slices of one file.

    ``encode`` runs ``dict.setdefault`` from C (``map``) with a running counter as the
    candidate code, so codes are unique but sparse; ``categorical`` makes them dense.
    """

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.counter = count()

    def encode(self, values: Iterable[str], n: int) -> np.ndarray:
        return np.fromiter(
            map(self.codes.setdefault, values, self.counter), dtype=np.int32, count=n
        )

    def constant(self, value: str, n: int) -> np.ndarray:
        return np.full(n, self.codes.setdefault(value, next(self.counter)), dtype=np.int32)

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        sparse = np.fromiter(self.codes.values(), dtype=np.int32, count=len(self.codes))
        lut = np.zeros(int(sparse.max()) + 1 if len(sparse) else 1, dtype=np.int32)
        lut[sparse] = np.arange(len(sparse), dtype=np.int32)
        cats = pd.Index(list(self.codes), dtype=object)
        np.take(lut, codes, out=codes)  # dense codes, in place
        return pd.Categorical.from_codes(codes, categories=cats)


class _CatKinds(dict):  # type: ignore[type-arg]
    """``cat`` -> kind code; unknown categories are looked up once, then cached."""

    def __missing__(self, cat: str) -> int:
        code = _KIND_CODE[CAT_TO_KIND.get(cat, "other")]
        self[cat] = code
        return code


def _int_column(events: list[Any], get: Callable[[Any], Any], n: int) -> np.ndarray:
    """int64 column from ints, floats or strings such as ``"stream 7"`` (-1 if no number)."""
    try:
        return np.fromiter(map(get, events), dtype=np.int64, count=n)
    except (ValueError, TypeError, OverflowError):
        pass
    codes, uniques = pd.factorize(np.array(list(map(get, events)), dtype=object))
    table = np.array([_as_int(u) for u in uniques], dtype=np.int64)
    return table[codes]


def _us_to_ns(us: np.ndarray) -> np.ndarray:
    """Microseconds -> int64 ns as ``round(us * 1000)``; exact for integral epoch values.

    Past 2**53 ns (~104 days of ns) a float product loses ns, so there the whole
    microseconds are scaled as integers and only the fraction is rounded.
    """
    scaled = us * 1000.0
    out = np.rint(scaled).astype(np.int64)
    big = np.abs(scaled) >= 2.0**53
    if big.any():
        whole = np.floor(us[big])
        out[big] = whole.astype(np.int64) * 1000 + np.rint((us[big] - whole) * 1000.0).astype(
            np.int64
        )
    return out


_GET_TS, _GET_DUR, _GET_CAT, _GET_NAME, _GET_PID, _GET_TID, _GET_ARGS = (
    attrgetter(a) for a in ("ts", "dur", "cat", "name", "pid", "tid", "args")
)


class _ArgColumns:
    """Typed ``args`` of one slice; ints are read only for the kinds that can carry them.

    Kineto writes device/stream/correlation only on GPU and runtime events and never gives
    ``python_function`` events an External id, so reading those fields for the other kinds
    (most of the events) would only return the default.
    """

    def __init__(self, events: list[Any], keys: frozenset[str], kind: np.ndarray) -> None:
        self.args = list(map(_GET_ARGS, events))
        self.kind = kind
        self.n = len(events)
        self.attrs = {attr for key, attr, _t, _d in _ARG_SPEC if key in keys}

    def ints(self, attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
        """Int arg ``attr`` of events whose kind is in ``kinds`` (all if None), else default."""
        mask = None if kinds is None else np.isin(self.kind, kinds)
        return self.ints_where(attr, mask)

    def ints_where(self, attr: str, mask: np.ndarray | None) -> np.ndarray:
        default = _ARG_DEFAULT[attr]
        if attr not in self.attrs:
            return np.full(self.n, default, dtype=np.int64)
        get = attrgetter(attr)
        k = self.n if mask is None else int(mask.sum())
        if k == self.n:
            return _ints(map(get, self.args), self.n)
        out = np.full(self.n, default, dtype=np.int64)
        if k:
            out[mask] = _ints(map(get, compress(self.args, mask)), k)
        return out

    def values(self, attr: str) -> list[str]:
        if attr not in self.attrs:
            return [_ARG_DEFAULT[attr]] * self.n
        out = list(map(attrgetter(attr), self.args))
        if not all(type(v) is str for v in out):
            out = [_as_str(v) for v in out]
        return out


def _ints(values: Iterable[Any], n: int) -> np.ndarray:
    """int64 array from arg values (ints fast; floats, numeric strings, None coerced)."""
    items = list(values)
    try:
        return np.fromiter(items, dtype=np.int64, count=n)
    except (ValueError, TypeError, OverflowError):
        return np.array([_as_int(v) for v in items], dtype=np.int64)


class _Columns:
    """Accumulates numpy columns slice by slice."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in EVENT_COLUMNS}
        self.names = _Interner()
        self.collectives = _Interner()
        self.pg_names = _Interner()
        self.kinds = _CatKinds()
        self.n = 0

    def add(self, events: list[Any], keys: frozenset[str], file_name: str) -> None:
        """Append the columns of one decoded slice (``keys``: the args keys decoded)."""
        n = len(events)
        if n == 0:
            return
        ts_us = np.fromiter(map(_GET_TS, events), dtype=np.float64, count=n)
        dur_us = np.fromiter(map(_GET_DUR, events), dtype=np.float64, count=n)
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
        kind = np.fromiter(map(self.kinds.__getitem__, map(_GET_CAT, events)), np.int8, count=n)
        pid = _int_column(events, _GET_PID, n)
        tid = _int_column(events, _GET_TID, n)
        cols = _ArgColumns(events, keys, kind) if keys else None

        def arg(attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
            if cols is None:
                return np.full(n, _ARG_DEFAULT[attr], dtype=np.int64)
            return cols.ints(attr, kinds)

        gpu = np.isin(kind, _GPU_CODES)
        if gpu.any():
            a_dev, a_stream = arg("device", _GPU_CODES), arg("stream", _GPU_CODES)
            device = np.where(gpu, np.where(a_dev >= 0, a_dev, pid), -1).astype(np.int32)
            stream = np.where(gpu, np.where(a_stream >= 0, a_stream, tid), -1).astype(np.int32)
        else:
            device = stream = np.full(n, -1, dtype=np.int32)
        ext = arg("external_id", _EXT_CODES)
        missing = (ext < 0) & np.isin(kind, _EXT_CODES)
        if cols is not None and missing.any():  # the 2021 schema's "external id"
            ext = np.where(missing, cols.ints_where("external_id_old", missing), ext)
        msg = np.full(n, -1, dtype=np.int64)
        seq = np.full(n, -1, dtype=np.int64)
        pg_size = np.full(n, -1, dtype=np.int32)
        if cols is not None and "Collective name" in keys:
            coll_strs = cols.values("collective")
            coll = self.collectives.encode(coll_strs, n)
            has_coll = np.fromiter(map(bool, coll_strs), dtype=bool, count=n)
            nelems = arg("in_nelems")
            dt_codes, dt_uniques = pd.factorize(
                np.array([d.lower() for d in cols.values("dtype")], dtype=object)
            )
            size = np.array([DTYPE_BYTES.get(u, -1) for u in dt_uniques], dtype=np.int64)
            size = size[dt_codes]
            ok = has_coll & (nelems >= 0) & (size > 0)
            msg[ok] = nelems[ok] * size[ok]
            pg = self.pg_names.encode(cols.values("pg_name"), n)
            pg_size = arg("group_size").astype(np.int32)
            seq = arg("seq")
            seq = np.where(seq >= 0, seq, arg("seq_lower"))
        else:
            coll = self.collectives.constant("", n)
            pg = self.pg_names.constant("", n)
        copy = np.isin(kind, _COPY_CODES)
        if copy.any():
            nbytes = arg("nbytes", _COPY_CODES)
            copy &= nbytes >= 0
            msg[copy] = nbytes[copy]
        self._put("ts_ns", _us_to_ns(ts_us))
        self._put("dur_ns", _us_to_ns(dur_us))
        self._put("kind", kind)
        self._put("name", self.names.encode(map(_GET_NAME, events), n))
        self._put("pid", pid)
        self._put("tid", tid)
        self._put("device", device)
        self._put("stream", stream)
        self._put("correlation", arg("correlation", _CORR_CODES))
        self._put("external_id", ext)
        self._put("collective", coll)
        self._put("msg_bytes", msg)
        self._put("pg_name", pg)
        self._put("pg_size", pg_size)
        self._put("seq", seq)
        self.n += n

    def _put(self, key: str, arr: np.ndarray) -> None:
        """Keep a slice's column; a constant one (e.g. all -1) is kept as ``_Const``."""
        constant = key not in ("ts_ns", "dur_ns") and arr.size and arr[0] == arr[-1]
        if constant and (arr == arr[0]).all():
            self.parts[key].append(_Const(arr.size, arr[0].item()))  # type: ignore[arg-type]
            return
        self.parts[key].append(arr)

    def frame(self) -> pd.DataFrame:
        """The event table, sorted by ``ts_ns`` (stable).

        Columns are assembled one at a time; the sort gathers into a spare array that is
        then reused for the next column of the same dtype (fewer fresh pages to fault in).
        """
        cols: dict[str, Any] = {}
        order: np.ndarray | None = None
        ts, _const = _cat(self.parts.pop("ts_ns"), np.int64)
        if ts.size and (np.diff(ts) < 0).any():
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
        cols["ts_ns"] = ts
        spare: dict[Any, np.ndarray] = {}
        for key, dtype in EVENT_COLUMNS.items():
            if key == "ts_ns":
                continue
            np_dtype = np.dtype(np.int8 if key == "kind" else _NP_DTYPE[dtype])
            arr, const = _cat(self.parts.pop(key), np_dtype)
            if order is not None and not const:
                out = spare.pop(np_dtype, None)
                if out is None:
                    out = np.empty_like(arr)
                np.take(arr, order, out=out)
                spare[np_dtype], arr = arr, out
            if key == "kind":
                cols[key] = pd.Categorical.from_codes(arr, categories=pd.Index(KINDS, dtype=object))
            elif key == "name":
                cols[key] = self.names.categorical(arr)
            elif key == "collective":
                cols[key] = self.collectives.categorical(arr)
            elif key == "pg_name":
                cols[key] = self.pg_names.categorical(arr)
            else:
                cols[key] = arr
        return pd.DataFrame(cols, copy=False)


_NP_DTYPE = {"category": np.int32, "int32": np.int32, "int64": np.int64}


@dataclass(frozen=True)
class _Const:
    """A slice's column whose rows all hold one value (saves memory while reading)."""

    n: int
    value: int


def _cat(parts: list[Any], dtype: Any) -> tuple[np.ndarray, bool]:
    """One array of ``dtype`` from a column's slices (arrays or ``_Const``); constant?"""
    total = sum(p.n if isinstance(p, _Const) else len(p) for p in parts)
    values = {p.value for p in parts if isinstance(p, _Const)}
    if all(isinstance(p, _Const) for p in parts) and len(values) <= 1:
        parts.clear()
        return np.full(total, values.pop() if values else 0, dtype=dtype), True
    out = np.empty(total, dtype=dtype)
    pos = 0
    for p in parts:
        n = p.n if isinstance(p, _Const) else len(p)
        out[pos : pos + n] = p.value if isinstance(p, _Const) else p
        pos += n
    parts.clear()
    return out, False


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


def read_kineto(path: str | Path, *, progress: Callable[[int], None] | None = None) -> Trace:
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
        for events, keys in splitter.iter_decoded(_SliceDecoder()):  # type: ignore[misc]
            cols.add(events, keys, path.name)
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
