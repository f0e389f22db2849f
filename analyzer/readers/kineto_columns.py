"""Decoded Kineto events -> numpy columns of the event table, slice by slice.

Every column is filled by ``np.fromiter(map(attrgetter(...), events))``, a C loop, with
no per-event Python code:

* ``(cat, name, pid, tid)`` is looked up once per event in a dict of row keys (a trace
  repeats a few thousand of them), whose kind / name code / pid / tid tables then give
  four columns by numpy indexing; names are interned into dense codes in order of first
  appearance.
* ``ts`` and ``dur`` are read as floats and rounded to ns.
* ``args`` are read only from the events whose kind can carry them: Kineto never gives
  ``python_function`` events (most of an SGLang trace) a device, stream, correlation or
  External id.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd

from analyzer.model import EVENT_COLUMNS, KINDS, BadInputError
from analyzer.readers.kineto_decode import (
    ARG_DEFAULT,
    ARG_SPEC,
    COLLECTIVE_KEY,
    DROP,
    BadValue,
    Codes,
    as_int,
    as_str,
    text,
)
from analyzer.readers.limits import MAX_TS_NS, time_problem

__all__ = ["CAT_TO_KIND", "DTYPE_BYTES", "Columns", "SliceArgs"]

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
_PYTHON = _KIND_CODE["python_function"]


def _kinds_mask(kinds: Iterable[str]) -> np.ndarray:
    """Boolean table over kind codes: ``table[kind]`` tells whether a row has one of them."""
    table = np.zeros(len(KINDS), dtype=bool)
    table[[_KIND_CODE[k] for k in kinds]] = True
    return table


_GPU = _kinds_mask(_GPU_KINDS)
_COPY = _kinds_mask(("memcpy", "memset"))
#: kinds that can carry a correlation id / an External id (see ``_ArgColumns``)
_CORR = _kinds_mask((*_GPU_KINDS, "cuda_runtime", "cuda_driver", "other"))
_EXT = _kinds_mask(k for k in KINDS if k != "python_function")

#: NCCL ``dtype`` arg (lower-cased) -> bytes per element.
DTYPE_BYTES: dict[str, int] = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "float16": 2,
    "bfloat16": 2, "int": 4, "int32": 4, "long": 8, "int64": 8, "short": 2, "int16": 2,
    "byte": 1, "uint8": 1, "char": 1, "int8": 1, "bool": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "complexhalf": 4, "complexfloat": 8, "complexdouble": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}  # fmt: skip


class CatKinds(dict):  # type: ignore[type-arg]
    """``cat`` -> kind code; unknown categories are looked up once, then cached."""

    def __missing__(self, cat: str) -> int:
        code = _KIND_CODE[CAT_TO_KIND.get(cat, "other")]
        self[cat] = code
        return code


def _categorical(codes: np.ndarray, table: Codes) -> pd.Categorical:
    """A Categorical from dense codes into ``table`` (categories in first-seen order)."""
    cats = pd.Index(list(table), dtype=object)
    return pd.Categorical.from_codes(codes, categories=cats)


#: largest |ts| and dur in ns (2**62, ~146 years): start + duration, and the difference of
#: any two such times, then fit int64 (no analysis can wrap around)
_MAX_NS = MAX_TS_NS
_MAX_US = _MAX_NS // 1000
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_I32_MAX = 2**31 - 1


def _int64(v: Any, what: str) -> int:
    """``as_int(v)``, refused (``BadValue``) outside int64 (``2**64``, ``1e308``...)."""
    i = v if type(v) is int else as_int(v)
    if not _I64_MIN <= i <= _I64_MAX:
        raise BadValue(f"{what} {_short(v)} is out of the 64-bit integer range")
    return i


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _us_to_ns(us: np.ndarray) -> np.ndarray:
    """Microseconds (float) -> int64 ns: whole microseconds scaled as integers, and the
    fraction (exact in floating point) rounded to the nearest ns (half to even).

    ``round(us * 1000)`` in floating point is off by one ns for timestamps such as
    ``4458676417696.687`` (the product rounds); splitting gives the written ns whenever
    the double holds the value to better than half a ns (up to ~2**42 us).
    """
    whole = np.floor(us)
    out = whole.astype(np.int64) * 1000
    out += np.rint((us - whole) * 1000.0).astype(np.int64)
    return out


_GET_TS, _GET_DUR, _GET_ARGS = (attrgetter(a) for a in ("ts", "dur", "args"))
_GET_KEY = attrgetter("cat", "name", "pid", "tid")


class _RowKeys(dict):  # type: ignore[type-arg]
    """``(cat, name, pid, tid)`` -> code, with the kind/name/pid/tid columns of each code.

    A trace repeats a few thousand such combinations over millions of events, so one dict
    lookup per event (vocabulary members or strings, small ints) replaces four reads and
    conversions; the columns are then gathered from small tables. ``pid``/``tid`` become
    ints as ``as_int`` reads them (``"stream 7"`` -> 7, ``3.0`` -> 3). Events of other
    phases (``cat is DROP``) get kind -1.
    """

    def __init__(self, kinds: CatKinds, names: Codes) -> None:
        super().__init__()
        self.kinds = kinds
        self.names = names
        self._parts: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self._tables: tuple[np.ndarray, ...] = ()
        self.drops = False  # has a code of kind -1

    def __missing__(self, key: tuple[Any, Any, Any, Any]) -> int:
        cat, name, pid, tid = key
        code = self[key] = len(self)
        kind, names, pids, tids = self._parts
        if cat is DROP:
            self.drops = True
            kind.append(-1)
            names.append(-1)
        else:
            kind.append(self.kinds[text(cat)])
            names.append(self.names[text(name)])
        pids.append(_int64(pid, "pid"))
        tids.append(_int64(tid, "tid"))
        return code

    def columns(self, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        """(kind int8, name int32, pid int64, tid int64) of rows with these codes."""
        if not self._tables or len(self._tables[0]) != len(self):
            self._tables = tuple(
                np.array(part, dtype=dt)
                for part, dt in zip(self._parts, (np.int8, np.int32, np.int64, np.int64))
            )
        return tuple(t[codes] for t in self._tables)


class SliceArgs:
    """The args of one slice as columns (every method returns one value per row)."""

    def ints(self, attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
        """Int arg ``attr`` of rows whose kind is in ``kinds`` (a kinds mask; all rows if
        None), else the default."""
        raise NotImplementedError

    def ints_where(self, attr: str, mask: np.ndarray) -> np.ndarray:
        """Int arg ``attr`` where ``mask`` holds, else the default."""
        raise NotImplementedError

    def collective_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(collective code, has a collective name, dtype bytes or -1, process group code)."""
        raise NotImplementedError


class _NoArgs(SliceArgs):
    """A slice none of whose rows carries args that are read."""

    def __init__(self, n: int) -> None:
        self.n = n

    def ints(self, attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
        return np.full(self.n, ARG_DEFAULT[attr], dtype=np.int64)

    def ints_where(self, attr: str, mask: np.ndarray) -> np.ndarray:
        return self.ints(attr)


class _ArgColumns(SliceArgs):
    """Typed ``args`` of the rows of one slice that may carry them.

    ``rows`` (a boolean mask over the slice, or None for all rows) selects the events
    whose args are read at all; ints are then read only for the kinds that can carry
    them (e.g. device/stream on GPU events).
    """

    def __init__(
        self,
        events: list[Any],
        keys: frozenset[str],
        kind: np.ndarray,
        rows: np.ndarray | None,
        tables: tuple[Codes, Codes],
    ) -> None:
        self.n = len(events)
        self.tables = tables  # collectives, process group names
        self.rows = rows
        sub = events if rows is None else list(compress(events, rows))
        self.args = list(map(_GET_ARGS, sub))
        self.kind = kind if rows is None else kind[rows]
        self.attrs = {attr for key, attr, _t, _d in ARG_SPEC if key in keys}

    def _spread(self, values: np.ndarray, default: Any) -> np.ndarray:
        if self.rows is None:
            return values
        out = np.full(self.n, default, dtype=values.dtype)
        out[self.rows] = values
        return out

    def ints(self, attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
        """Int arg ``attr`` of events whose kind is in ``kinds`` (a ``_kinds_mask``; all if
        None), else the default."""
        mask = None if kinds is None else kinds[self.kind]
        return self._spread(self._ints_where(attr, mask), ARG_DEFAULT[attr])

    def ints_where(self, attr: str, mask: np.ndarray) -> np.ndarray:
        """Int arg ``attr`` where ``mask`` (over the whole slice) holds, else default."""
        sub = mask if self.rows is None else mask[self.rows]
        return self._spread(self._ints_where(attr, sub), ARG_DEFAULT[attr])

    def _ints_where(self, attr: str, mask: np.ndarray | None) -> np.ndarray:
        default = ARG_DEFAULT[attr]
        n = len(self.args)
        if attr not in self.attrs:
            return np.full(n, default, dtype=np.int64)
        get = attrgetter(attr)
        k = n if mask is None else int(mask.sum())
        if k == n:
            return _ints(map(get, self.args), n, attr)
        out = np.full(n, default, dtype=np.int64)
        if k:
            out[mask] = _ints(map(get, compress(self.args, mask)), k, attr)
        return out

    def collective_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        collectives, pg_names = self.tables
        coll_strs = self.values("collective")
        coll = np.fromiter(map(collectives.__getitem__, coll_strs), np.int32, count=n)
        has_coll = np.fromiter(map(bool, coll_strs), dtype=bool, count=n)
        dt_codes, dt_uniques = pd.factorize(
            np.array([d.lower() for d in self.values("dtype")], dtype=object)
        )
        size = np.array([DTYPE_BYTES.get(u, -1) for u in dt_uniques], dtype=np.int64)[dt_codes]
        pg = np.fromiter(map(pg_names.__getitem__, self.values("pg_name")), np.int32, n)
        return coll, has_coll, size, pg

    def values(self, attr: str) -> list[str]:
        """String arg ``attr`` of every row of the slice (requires ``rows`` None)."""
        if attr not in self.attrs:
            return [ARG_DEFAULT[attr]] * self.n
        out = list(map(attrgetter(attr), self.args))
        if not all(type(v) is str for v in out):
            out = [as_str(v) for v in out]
        return out


def _ints(values: Iterable[Any], n: int, attr: str = "arg") -> np.ndarray:
    """int64 array from arg values (ints fast; floats, numeric strings, None coerced);
    ``BadValue`` for a value outside int64."""
    items = list(values)
    try:
        return np.fromiter(items, dtype=np.int64, count=n)
    except (ValueError, TypeError, OverflowError):
        what = f"args.{_ARG_KEY.get(attr, attr)}"
        return np.array([_int64(v, what) for v in items], dtype=np.int64)


_ARG_KEY = {attr: key for key, attr, _t, _d in ARG_SPEC}


#: largest message or copy size in bytes (1 PiB; sums over millions still fit int64)
_MAX_MSG = 1 << 50


def _check_times(ts_ns: np.ndarray, dur_ns: np.ndarray) -> None:
    """Refuse (``BadValue``) times out of ``limits.time_problem``'s bounds, whichever path
    read them (vectorised)."""
    problem = time_problem(ts_ns, dur_ns)
    if problem:
        raise BadValue(problem)


def _int32(values: np.ndarray, what: str) -> np.ndarray:
    """int64 -> int32, refused (``BadValue``) when a value does not fit (no wrap-around)."""
    if values.size and (int(values.max()) > _I32_MAX or int(values.min()) < -_I32_MAX - 1):
        bad = int(values[(values > _I32_MAX) | (values < -_I32_MAX - 1)][0])
        raise BadValue(f"{what} {bad} is out of range")
    return values.astype(np.int32)


class Columns:
    """Accumulates numpy columns slice by slice.

    ``names``/``cats`` are shared with the decoder's ``Vocabulary``: every name and
    category seen is interned there.
    """

    def __init__(self, rows_hint: int = 0) -> None:
        """``rows_hint``: a guess of the number of rows (capacity reserved, not touched)."""
        self.columns = {
            k: _Column(np.int8 if k == "kind" else _NP_DTYPE[d], rows_hint)
            for k, d in EVENT_COLUMNS.items()
        }
        self.names = Codes()
        self.collectives = Codes()
        self.pg_names = Codes()
        self.kinds = CatKinds()
        self.rows = _RowKeys(self.kinds, self.names)
        self.n = 0
        #: ``row_filter(kind, name_codes, ts_ns, names) -> keep mask | None``, called on every
        #: slice before its rows are stored (``analyses.prune.FramePruner``: frames dropped
        #: while reading); None keeps every row
        self.row_filter: Any = None
        self._keep: np.ndarray | None = None

    def add(self, events: list[Any], keys: frozenset[str], file_name: str) -> None:
        """Append the columns of one decoded slice (``keys``: the args keys decoded).

        Events with ``cat is DROP`` (other phases than "X") are left out.
        """
        n = len(events)
        if n == 0:
            return
        codes = np.fromiter(map(self.rows.__getitem__, map(_GET_KEY, events)), np.int32, count=n)
        kind, names, pid, tid = self.rows.columns(codes)
        if self.rows.drops:
            keep = kind >= 0
            if not keep.all():
                events = list(compress(events, keep))
                n = len(events)
                if n == 0:
                    return
                kind, names, pid, tid = kind[keep], names[keep], pid[keep], tid[keep]
        ts_us = np.fromiter(map(_GET_TS, events), dtype=np.float64, count=n)
        dur_us = np.fromiter(map(_GET_DUR, events), dtype=np.float64, count=n)
        if not np.isfinite(ts_us).all():
            bad = int(np.flatnonzero(~np.isfinite(ts_us))[0])
            raise BadInputError(
                f"{file_name}: event {text(events[bad].name)!r} has no numeric timestamp (ts)"
            )
        huge = (np.abs(ts_us) > _MAX_US) | (dur_us > _MAX_US)
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise BadInputError(
                f"{file_name}: event {text(events[i].name)!r} has an absurd time "
                f"(ts {float(ts_us[i])!r} us, dur {float(dur_us[i])!r} us; over 146 years)"
            )
        bad_dur = ~np.isfinite(dur_us) | (dur_us < 0)
        if bad_dur.any():
            i = int(np.flatnonzero(bad_dur)[0])
            raise BadInputError(
                f"{file_name}: event {text(events[i].name)!r} has an invalid duration "
                f"{float(dur_us[i])!r} us"
            )
        collectives = COLLECTIVE_KEY in keys
        tables = (self.collectives, self.pg_names)
        args: SliceArgs = _NoArgs(n)
        if collectives:  # collective args are read from every kind
            args = _ArgColumns(events, keys, kind, None, tables)
        else:
            rows = kind != _PYTHON
            if rows.all():
                args = _ArgColumns(events, keys, kind, None, tables)
            elif rows.any():
                args = _ArgColumns(events, keys, kind, rows, tables)
        self._add_rows(
            n, kind, names, pid, tid, _us_to_ns(ts_us), _us_to_ns(dur_us), args, collectives
        )

    def add_scanned(self, s: Any, keys: frozenset[str]) -> None:
        """Append the columns of a slice read by the compiled scanner (``ScannedSlice``)."""
        if s.n:
            collectives = COLLECTIVE_KEY in keys
            self._add_rows(s.n, s.kind, s.name, s.pid, s.tid, s.ts_ns, s.dur_ns, s, collectives)

    def _add_rows(
        self,
        n: int,
        kind: np.ndarray,
        names: np.ndarray,
        pid: np.ndarray,
        tid: np.ndarray,
        ts_ns: np.ndarray,
        dur_ns: np.ndarray,
        args: SliceArgs,
        collectives: bool,
    ) -> None:
        """Derive the event-table columns of one slice from its fields and args."""
        _check_times(ts_ns, dur_ns)
        self._keep = None
        if self.row_filter is not None:
            keep = self.row_filter(kind, names, ts_ns, self.names)
            self._keep = keep if keep is not None and not keep.all() else None
        gpu = _GPU[kind]
        if gpu.any():
            a_dev, a_stream = args.ints("device", _GPU), args.ints("stream", _GPU)
            device = _int32(np.where(gpu, np.where(a_dev >= 0, a_dev, pid), -1), "device")
            stream = _int32(np.where(gpu, np.where(a_stream >= 0, a_stream, tid), -1), "stream")
        else:
            device = stream = np.full(n, -1, dtype=np.int32)
        ext = args.ints("external_id", _EXT)
        missing = (ext < 0) & _EXT[kind]
        if missing.any():  # the 2021 schema's "external id"
            ext = np.where(missing, args.ints_where("external_id_old", missing), ext)
        msg = np.full(n, -1, dtype=np.int64)
        seq = np.full(n, -1, dtype=np.int64)
        pg_size = np.full(n, -1, dtype=np.int32)
        if collectives:
            coll, has_coll, size, pg = args.collective_columns()
            nelems = args.ints("in_nelems")
            ok = has_coll & (nelems >= 0) & (size > 0)
            if (nelems[ok] > _MAX_MSG // 16).any():  # 16: the widest dtype (complexdouble)
                raise BadValue(f"message size In msg nelems {int(nelems[ok].max())} is absurd")
            msg[ok] = nelems[ok] * size[ok]
            pg_size = _int32(args.ints("group_size"), "Group size")
            seq = args.ints("seq")
            seq = np.where(seq >= 0, seq, args.ints("seq_lower"))
        else:
            coll = np.full(n, self.collectives[""], dtype=np.int32)
            pg = np.full(n, self.pg_names[""], dtype=np.int32)
        copy = _COPY[kind]
        if copy.any():
            nbytes = args.ints("nbytes", _COPY)
            copy &= nbytes >= 0
            if (nbytes[copy] > _MAX_MSG).any():
                raise BadValue(f"copy size bytes {int(nbytes[copy].max())} is absurd")
            msg[copy] = nbytes[copy]
        self._put("ts_ns", ts_ns)
        self._put("dur_ns", dur_ns)
        self._put("kind", kind)
        self._put("name", names)
        self._put("pid", pid)
        self._put("tid", tid)
        self._put("device", device)
        self._put("stream", stream)
        self._put("correlation", args.ints("correlation", _CORR))
        self._put("external_id", ext)
        self._put("collective", coll)
        self._put("msg_bytes", msg)
        self._put("pg_name", pg)
        self._put("pg_size", pg_size)
        self._put("seq", seq)
        self.n += n if self._keep is None else int(np.count_nonzero(self._keep))

    def _put(self, key: str, arr: np.ndarray) -> None:
        """Append a slice's values (the kept rows) to column ``key``."""
        self.columns[key].append(arr if self._keep is None else arr[self._keep])

    def frame(self) -> pd.DataFrame:
        """The event table, sorted by ``ts_ns`` (stable).

        Columns are taken one at a time; the sort gathers into a spare array that is then
        reused for the next column of the same dtype (fewer fresh pages to fault in), and a
        column's buffer is released as soon as it is sorted.
        """
        cols: dict[str, Any] = {}
        order: np.ndarray | None = None
        dur = self.columns["dur_ns"]
        dur_arr = dur.data[: dur.n] if dur.data is not None else np.full(dur.n, dur.value, np.int64)
        ts_col = self.columns["ts_ns"]
        ts_arr = ts_col.data[: ts_col.n] if ts_col.data is not None else np.full(ts_col.n, ts_col.value, np.int64)
        problem = time_problem(ts_arr, dur_arr, whole=True)
        if problem:
            raise BadValue(problem)
        ts, _const = self.columns.pop("ts_ns").array()
        if ts.size and (np.diff(ts) < 0).any():
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
        cols["ts_ns"] = ts
        spare: dict[Any, np.ndarray] = {}
        for key, dtype in EVENT_COLUMNS.items():
            if key == "ts_ns":
                continue
            np_dtype = np.dtype(np.int8 if key == "kind" else _NP_DTYPE[dtype])
            arr, const = self.columns.pop(key).array()
            if order is not None and not const:
                out = spare.pop(np_dtype, None)
                if out is None:
                    out = np.empty_like(arr)
                # "clip": a valid permutation needs no bounds check, and numpy then writes
                # straight into ``out`` instead of into a temporary copy
                np.take(arr, order, out=out, mode="clip")
                spare[np_dtype], arr = arr, out
            if key == "kind":
                cols[key] = pd.Categorical.from_codes(arr, categories=pd.Index(KINDS, dtype=object))
            elif key == "name":
                cols[key] = _categorical(arr, self.names)
            elif key == "collective":
                cols[key] = _categorical(arr, self.collectives)
            elif key == "pg_name":
                cols[key] = _categorical(arr, self.pg_names)
            else:
                cols[key] = arr
        return pd.DataFrame(cols, copy=False)


_NP_DTYPE = {"category": np.int32, "int32": np.int32, "int64": np.int64}


class _Column:
    """One column filled slice by slice, without a concatenation at the end.

    It stays a single value (e.g. all -1: no collectives) until two values differ; then
    its rows live in one buffer that doubles when full. Capacity that is never written
    is never touched, so it costs address space, not memory; and one large buffer goes
    back to the system when freed (many small per-slice arrays would stay in the heap and
    keep the reader's peak at their sum plus the final table).
    """

    def __init__(self, dtype: Any, capacity: int) -> None:
        self.dtype = np.dtype(dtype)
        self.capacity = max(capacity, 1 << 16)
        self.n = 0
        self.value = 0  # of every row while ``data`` is None
        self.data: np.ndarray | None = None

    def append(self, arr: np.ndarray) -> None:
        k = len(arr)
        if not k:
            return
        if self.data is None:
            first = arr[0]
            if (self.n == 0 or first == self.value) and arr[-1] == first and (arr == first).all():
                self.value = first.item()
                self.n += k
                return
            self.data = np.empty(max(self.capacity, self.n + k), dtype=self.dtype)
            self.data[: self.n] = self.value
        if self.n + k > len(self.data):
            grown = np.empty(max(2 * len(self.data), self.n + k), dtype=self.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : self.n + k] = arr
        self.n += k

    def array(self) -> tuple[np.ndarray, bool]:
        """(the rows, whether they all hold one value); the column is emptied."""
        data, self.data = self.data, None
        if data is None:
            return np.full(self.n, self.value, dtype=self.dtype), True
        return data[: self.n], False
