"""The compiled path of the Kineto reader: slices scanned into columns (``kineto_scan``).

``FastSliceDecoder`` stands in for ``kineto_decode.SliceDecoder``: it scans a slice with
the compiled scanner and returns a ``ScannedSlice`` (numpy columns, strings already turned
into codes); when the scanner answers anything but OK (a value it does not convert, or
malformed JSON), the slice goes to the msgspec decoder, which has the full semantics and
error messages. Both kinds of result go into the same ``Columns``, so names get the same
codes whichever path read them.

Strings arrive as two 63-bit hashes and a span. ``StringTable`` keeps the hashes seen so
far in a ``pandas.Index``: a slice's distinct hashes are looked up in one vectorised call,
and only strings never seen before are decoded in Python (a few thousand per file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from analyzer.model import KINDS
from analyzer.readers import kineto_scan as ks
from analyzer.readers.kineto_columns import DTYPE_BYTES, Columns, SliceArgs, _int64
from analyzer.readers.kineto_decode import ARG_DEFAULT, COLLECTIVE_KEY, SliceDecoder

__all__ = ["FastSliceDecoder", "ScannedSlice", "StringTable"]

_CPU_OP = KINDS.index("cpu_op")

class _Collision(Exception):
    """The slice goes to msgspec: two different strings with the same first hash (never
    seen in practice), or a string that is not valid UTF-8 (msgspec reports it)."""


class StringTable:
    """Distinct strings of one field family, by hash, with the value each one stands for.

    ``value(text)`` gives the int stored for a new string (a name code, a kind code...).
    """

    def __init__(self, value: Callable[[str], int]) -> None:
        self._value = value
        self._h2 = np.empty(0, dtype=np.int64)
        self._values = np.empty(0, dtype=np.int64)
        self._index = pd.Index(np.empty(0, dtype=np.int64))
        self._pending: list[tuple[int, int, int]] = []

    def values(
        self, a: np.ndarray, h1: np.ndarray, h2: np.ndarray, start: np.ndarray, end: np.ndarray
    ) -> np.ndarray:
        """The value of every row's string (raises ``_Collision``)."""
        local, uniq = pd.factorize(h1, sort=False)
        first = np.empty(len(uniq), dtype=np.int64)
        first[local[::-1]] = np.arange(len(local) - 1, -1, -1)
        uh2 = h2[first]
        if (h2 != uh2[local]).any():
            raise _Collision
        pos = self._index.get_indexer(uniq)
        new = np.flatnonzero(pos < 0)
        if new.size:
            self._learn(a, uniq[new], uh2[new], start[first[new]], end[first[new]])
            pos = self._index.get_indexer(uniq)
        if (self._h2[pos] != uh2).any():
            raise _Collision
        return self._values[pos][local]

    def _learn(
        self, a: np.ndarray, h1: np.ndarray, h2: np.ndarray, start: np.ndarray, end: np.ndarray
    ) -> None:
        vals = np.empty(len(h1), dtype=np.int64)
        for k, (s, e) in enumerate(zip(start.tolist(), end.tolist())):
            vals[k] = self._value(_text(a, s, e))
        self._h2 = np.concatenate([self._h2, h2])
        self._values = np.concatenate([self._values, vals])
        self._index = pd.Index(np.concatenate([self._index.to_numpy(), h1]))


def _text(a: np.ndarray, s: int, e: int) -> str:
    """The JSON string whose raw bytes are ``a[s:e]`` (start -1: missing -> "")."""
    if s < 0:
        return ""
    raw = a[s:e].tobytes()
    try:
        if b"\\" in raw:
            return msgspec.json.decode(b'"' + raw + b'"')  # type: ignore[no-any-return]
        return raw.decode("utf-8")
    except (UnicodeDecodeError, msgspec.DecodeError):
        raise _Collision from None


def _string(out: np.ndarray, field: int, n: int) -> tuple[np.ndarray, ...]:
    """(hash 1, hash 2, start, end) columns of the string field starting at ``field``."""
    return tuple(out[field + k, :n] for k in range(4))


@dataclass
class ScannedSlice(SliceArgs):
    """The columns of one scanned slice (complete events only).

    ``ts_ns``, ``dur_ns`` and ``arg_rows`` are views into the scanner's reused output
    matrix: valid until the next slice is scanned (``Columns`` copies what it keeps).
    """

    n: int
    ts_ns: np.ndarray
    dur_ns: np.ndarray
    kind: np.ndarray
    name: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    arg_rows: np.ndarray  # int args, one row per ``kineto_scan.ARG_INT_FIELDS``
    collective: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def ints(self, attr: str, kinds: np.ndarray | None = None) -> np.ndarray:
        row = self.arg_rows[ks.FIELDS[attr] - ks.FIELDS["device"]]
        if kinds is None:
            return row
        return np.where(kinds[self.kind], row, ARG_DEFAULT[attr])

    def ints_where(self, attr: str, mask: np.ndarray) -> np.ndarray:
        row = self.arg_rows[ks.FIELDS[attr] - ks.FIELDS["device"]]
        return np.where(mask, row, ARG_DEFAULT[attr])

    def collective_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        assert self.collective is not None
        return self.collective


class FastSliceDecoder:
    """Scan slices into ``ScannedSlice``; hand the rest to the msgspec ``SliceDecoder``."""

    def __init__(self, fallback: SliceDecoder, cols: Columns) -> None:
        self.fallback = fallback
        self.out = np.empty((ks.N_FIELDS, 1 << 14), dtype=np.int64)
        self._names = StringTable(cols.names.__getitem__)
        self._kinds = StringTable(cols.kinds.__getitem__)
        # string pids/tids ("stream 7"), refused outside int64 like the msgspec path does
        self._ids = {ks.PID: StringTable(lambda t: _int64(t, "pid")),
                     ks.TID: StringTable(lambda t: _int64(t, "tid"))}
        self._collectives = StringTable(cols.collectives.__getitem__)
        self._pg_names = StringTable(cols.pg_names.__getitem__)
        self._dtype_sizes = StringTable(lambda d: DTYPE_BYTES.get(d.lower(), -1))
        # where each cpu_op's name starts in the file (``OpIndex``, for the lazy shapes pass)
        self.splitter: Any = None
        self.op_offsets: list[np.ndarray] = []
        self.op_ext: list[np.ndarray] = []
        self.op_complete = True

    def __call__(self, piece: memoryview, buf: bytearray, lo: int, hi: int) -> Any:
        while True:
            status, n, collective = ks.scan(piece, self.out)
            if status != ks.FULL:
                break
            self.out = np.empty((ks.N_FIELDS, 2 * self.out.shape[1]), dtype=np.int64)
        if status == ks.OK:
            keys = self.fallback.collective_seen() if collective else self.fallback.keys
            a = np.frombuffer(piece, dtype=np.uint8)
            try:
                return self._columns(a, n, keys, lo), keys
            except _Collision:
                pass  # msgspec decodes this slice
        self.op_complete = False  # its cpu_ops have no recorded offsets
        return self.fallback(piece, buf, lo, hi)

    def _columns(self, a: np.ndarray, n: int, keys: frozenset[str], lo: int = 1) -> ScannedSlice:
        out = self.out
        kind = self._kinds.values(a, *_string(out, ks.CAT, n)).astype(np.int8)
        name = self._names.values(a, *_string(out, ks.NAME, n)).astype(np.int32)
        pid, tid = (self._id_column(a, field, n) for field in (ks.PID, ks.TID))
        collective = None
        if COLLECTIVE_KEY in keys:
            coll = self._collectives.values(a, *_string(out, ks.FIELDS["collective"], n))
            start, end = out[ks.FIELDS["collective"] + 2 : ks.FIELDS["collective"] + 4, :n]
            size = self._dtype_sizes.values(a, *_string(out, ks.FIELDS["dtype"], n))
            pg = self._pg_names.values(a, *_string(out, ks.FIELDS["pg_name"], n))
            collective = (coll.astype(np.int32), end > start, size, pg.astype(np.int32))
        first_arg = ks.FIELDS["device"]
        cpu = kind == _CPU_OP
        if self.splitter is not None and cpu.any():
            # piece[p] is buf[lo - 1 + p]; buf[0] is file byte total_bytes - end
            base = self.splitter.total_bytes - self.splitter.end + lo - 1
            self.op_offsets.append(base + out[ks.NAME + 2, :n][cpu])
            ext = out[ks.FIELDS["external_id"], :n][cpu]
            old = out[ks.FIELDS["external_id_old"], :n][cpu]
            self.op_ext.append(np.where(ext >= 0, ext, old))
        return ScannedSlice(
            n=n,
            ts_ns=out[ks.TS, :n],
            dur_ns=out[ks.DUR, :n],
            kind=kind,
            name=name,
            pid=pid,
            tid=tid,
            arg_rows=out[first_arg : first_arg + len(ks.ARG_INT_FIELDS), :n],
            collective=collective,
        )

    def _id_column(self, a: np.ndarray, field: int, n: int) -> np.ndarray:
        """pid/tid: the ints, with string ids (``"stream 7"``) read as ``as_int`` does."""
        col = self.out[field, :n].copy()
        strings = np.flatnonzero(self.out[field + 2, :n] >= 0)
        if strings.size:
            h1, h2, s, e = (self.out[field + k, strings] for k in range(4))
            col[strings] = self._ids[field].values(a, h1, h2, s, e)
        return col
