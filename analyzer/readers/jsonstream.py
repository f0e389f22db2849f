"""Stream a (gzipped) Chrome-trace JSON file as chunks of whole ``traceEvents`` elements.

The file is never held in memory at once: bytes are read (and gunzipped) in blocks, and
the ``traceEvents`` array is cut at element boundaries into slices such as
``b'[{...},{...}]'`` that a typed decoder turns into objects chunk by chunk.

How a cut is found (sound, and cheap in the common case):

* fast path: the last ``}`` in the buffer that is followed by ``,`` and ``{`` (or by the
  closing ``]``).  The caller decodes the slice; the slice starts at a known element
  boundary, so a successful decode proves the cut is a real boundary (JSON is LL(1)).
  A cut inside a string or a nested object makes the slice malformed and is retried.
* exact path: a vectorised numpy scan that masks string contents (quotes not escaped by
  an odd run of backslashes) and tracks bracket depth; used for the header before
  ``traceEvents`` and whenever the fast path fails.

Everything outside the array (``deviceProperties``, ``distributedInfo``, scalars) is
kept as a small "header" document: the bytes before and after the array with the array
replaced by ``null``.
"""

from __future__ import annotations

import queue
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from analyzer.model import BadInputError

_T = TypeVar("_T")
GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK_BYTES = 2 << 20  # compressed/plain bytes per read
TARGET_CHUNK_BYTES = 4 << 20  # uncompressed bytes per decoded slice (bounds memory)
MAX_HEADER_BYTES = 256 << 20  # give up looking for "traceEvents" after this many bytes
_WS = b" \t\r\n"
_NEXT_ELEMENT = re.compile(rb"[ \t\r\n]*(?:,[ \t\r\n]*\{|\])")
_KEY = b'"traceEvents"'
_FIRST = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*([^ \t\r\n])")
_VALUE = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*(.)", re.DOTALL)
_SEP = re.compile(rb"[ \t\r\n]*,?[ \t\r\n]*")

# byte class table for the exact scanner: 1 = opening bracket, 2 = closing bracket, 3 = comma
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord("{")] = _CLASS[ord("[")] = 1
_CLASS[ord("}")] = _CLASS[ord("]")] = 2
_CLASS[ord(",")] = 3


def iter_file_bytes(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Yield the uncompressed content of ``path`` in blocks (gzip detected by magic).

    A gzip file is inflated by a helper thread (zlib releases the GIL), so inflating the
    next blocks overlaps with parsing the current one; at most a few blocks are queued.
    ``progress`` receives the number of on-disk bytes consumed (called in this thread).
    Raises ``BadInputError`` for a truncated or corrupt gzip stream.
    """
    with open(path, "rb") as fh:
        first = fh.read(READ_BLOCK_BYTES)
        if first[:2] != GZIP_MAGIC:
            data = first
            while data:
                if progress:
                    progress(len(data))
                yield data
                data = fh.read(READ_BLOCK_BYTES)
            return
        for block, disk_bytes in _in_thread(lambda: _gunzip(path, fh, first)):
            if progress and disk_bytes:
                progress(disk_bytes)
            if block:
                yield block


def _in_thread(make: Callable[[], Iterator[_T]], depth: int = 3) -> Iterator[_T]:
    """Run the generator ``make()`` in a helper thread; yield its items here, in order."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in make():
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
            put(("error", exc))

    worker = threading.Thread(target=run, name="trace-gunzip", daemon=True)
    worker.start()
    try:
        while True:
            tag, value = q.get()
            if tag == "item":
                yield value
            elif tag == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join()


def _gunzip(path: Path, fh: BinaryIO, first: bytes) -> Iterator[tuple[bytes, int]]:
    """Inflate a (possibly multi-member) gzip stream: (uncompressed block, disk bytes read)."""
    dec = zlib.decompressobj(wbits=31)
    comp = first
    while True:
        if not comp:
            if not dec.eof:
                raise BadInputError(f"{path.name}: truncated gzip file (unexpected end of data)")
            return
        read = len(comp)
        try:
            # bound each output block so a highly compressible input stays chunked
            out = dec.decompress(comp, READ_BLOCK_BYTES * 2)
            while out:
                yield out, read
                read = 0
                if dec.eof:
                    break
                out = dec.decompress(dec.unconsumed_tail, READ_BLOCK_BYTES * 2)
        except zlib.error as exc:
            raise BadInputError(f"{path.name}: corrupt gzip data ({exc})") from None
        if read:
            yield b"", read
        if dec.eof:
            rest = dec.unused_data
            if rest.lstrip(b"\0"):  # a concatenated gzip member follows
                if rest[:2] != GZIP_MAGIC:
                    return  # trailing garbage after a complete member: ignore like gzip(1)
                dec = zlib.decompressobj(wbits=31)
                comp = rest
                continue
            rest_of_file = fh.read(READ_BLOCK_BYTES)
            if rest_of_file[:2] == GZIP_MAGIC:
                dec = zlib.decompressobj(wbits=31)
                comp = rest_of_file
                continue
            return
        comp = fh.read(READ_BLOCK_BYTES)


# --------------------------------------------------------------------------------------
# exact scanner
# --------------------------------------------------------------------------------------


def _unescaped_quotes(a: np.ndarray) -> np.ndarray:
    """Positions of ``"`` in ``a`` that are not escaped by an odd run of backslashes."""
    q = np.flatnonzero(a == 34)
    if q.size == 0:
        return q
    bs = a == 92
    if not bs.any():
        return q
    idx = np.arange(a.size, dtype=np.int64)
    last_other = np.maximum.accumulate(np.where(bs, -1, idx))
    before = q - 1
    run = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
    return q[run % 2 == 0]


def _structure(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structural characters outside strings: (positions, class, depth after each).

    ``a`` must start outside any string. Depth is relative to the start of ``a``.
    """
    q = _unescaped_quotes(a)
    cls = _CLASS[a]
    pos = np.flatnonzero(cls)
    if q.size:
        inside = np.searchsorted(q, pos, side="right") % 2 == 1
        pos = pos[~inside]
    c = cls[pos]
    step = np.where(c == 1, 1, np.where(c == 2, -1, 0)).astype(np.int64)
    return pos, c, np.cumsum(step)


def top_level_key_offset(buf: bytes, key_at: int) -> bool:
    """True when the string starting at ``key_at`` is a key of the root object."""
    a = np.frombuffer(buf, dtype=np.uint8, count=key_at)
    q = _unescaped_quotes(a)
    if q.size % 2:  # key_at lies inside a string
        return False
    _pos, _c, depth = _structure(a)
    if not depth.size or int(depth[-1]) != 1:
        return False
    # a key follows "{" or "," (a string value follows ":")
    return bytes(buf[:key_at]).rstrip(_WS)[-1:] in (b"{", b",")


@dataclass
class _Cut:
    end: int  # slice is buf[start:end]; end is just after the last complete element
    closed_at: int  # index of the array's closing "]" when found, else -1


def exact_cut(buf: bytes, start: int) -> _Cut:
    """Find the last complete-element boundary (or the array end) in ``buf[start:]``.

    ``buf[start]`` must be the start of an element (outside strings, at array level).
    """
    a = np.frombuffer(buf, dtype=np.uint8)[start:]
    pos, c, depth = _structure(a)
    closed = np.flatnonzero(depth < 0)
    if closed.size:
        j = int(pos[closed[0]])
        return _Cut(end=start + j, closed_at=start + j)
    commas = np.flatnonzero((c == 3) & (depth == 0))
    if commas.size:
        return _Cut(end=start + int(pos[commas[-1]]), closed_at=-1)
    return _Cut(end=start, closed_at=-1)


def fast_cuts(
    buf: bytes | bytearray, start: int, end: int, eof: bool, tries: int = 3
) -> Iterator[_Cut]:
    """Candidate cuts: the last few ``}`` followed by ``, {`` or ``]`` in ``buf[start:end]``."""
    i = end
    found = 0
    while found < tries:
        j = buf.rfind(b"}", start, i)
        if j < 0:
            return
        i = j
        m = _NEXT_ELEMENT.match(buf, j + 1, end)
        if m is None:
            continue
        if m.end() >= end and not eof and buf[m.end() - 1 : m.end()] != b"]":
            continue
        found += 1
        closed = m.end() - 1 if buf[m.end() - 1 : m.end()] == b"]" else -1
        yield _Cut(end=j + 1, closed_at=closed)


# --------------------------------------------------------------------------------------
# the streaming splitter
# --------------------------------------------------------------------------------------


class TraceSplitter:
    """Split a trace file into decodable slices of its events array.

    Usage::

        sp = TraceSplitter(path)
        for events in sp.iter_decoded(decoder.decode):  # decode(buffer holding b"[...]")
            ...
        header = sp.header  # bytes of the document without the events, or None

    The bytes are read into one window (a ``bytearray`` of fixed capacity, grown only for
    an element larger than it); consumed bytes are dropped by moving the rest to the
    front, so the window is not reallocated per slice (fresh pages fault slowly on VMs).
    Each slice is decoded in place through a memoryview (the separator before the first
    element is overwritten with ``[`` and the byte after the last one with ``]``), so no
    slice is copied.
    """

    def __init__(self, path: Path, progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._progress = progress
        self._plain: BinaryIO | None = None  # an uncompressed file is read into the window
        self._blocks: Iterator[bytes] | None = None  # a gzip file comes in inflated blocks
        self._eof = False
        self.header: bytes | None = None  # prefix + b"null" + suffix
        self.bare_list = False
        self.total_bytes = 0
        self.buf = bytearray(TARGET_CHUNK_BYTES + READ_BLOCK_BYTES + 2)
        self.end = 0  # the window holds self.buf[:self.end]

    def _start(self) -> None:
        """Open the file: plain bytes are read into the window, gzip through a thread."""
        fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by _close
        head = fh.read(2)
        if head == GZIP_MAGIC:
            fh.close()
            self._blocks = iter_file_bytes(self.path, self._progress)
            return
        self._plain = fh
        self._blocks = iter(())
        self._append(head)

    def _close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        if self._blocks is not None and hasattr(self._blocks, "close"):
            self._blocks.close()  # stops the inflating thread

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more bytes plus one spare byte (for the closing "]")."""
        if self.end + n + 1 > len(self.buf):
            grown = bytearray(max(2 * len(self.buf), self.end + n + 1))
            grown[: self.end] = memoryview(self.buf)[: self.end]
            self.buf = grown

    def _append(self, data: bytes) -> None:
        n = len(data)
        self._reserve(n)
        self.buf[self.end : self.end + n] = data
        self.end += n
        self.total_bytes += n
        if self._plain is not None and self._progress and n:
            self._progress(n)

    def _more(self) -> None:
        """Append the next block to the window (sets ``_eof`` at the end of the file)."""
        if self._blocks is None:
            self._start()
        if self._plain is not None:
            self._reserve(READ_BLOCK_BYTES)
            end = self.end
            with memoryview(self.buf) as mv:
                n = self._plain.readinto(mv[end : end + READ_BLOCK_BYTES])
            if not n:
                self._eof = True
                return
            self.end += n
            self.total_bytes += n
            if self._progress:
                self._progress(n)
            return
        assert self._blocks is not None
        try:
            b = next(self._blocks)
        except StopIteration:
            self._eof = True
            return
        self._append(b)

    def _drop(self, start: int) -> int:
        """Drop the bytes before ``start - 1``; return the new index of ``start``."""
        if start <= 1:
            return start
        with memoryview(self.buf) as mv:
            mv[: self.end - start + 1] = mv[start - 1 : self.end]  # memmove
        self.end -= start - 1
        return 1

    def _open(self) -> tuple[int, bytes]:
        """Read up to the start of the events array: (first element index, prefix)."""
        while not self._eof and _FIRST.match(self.buf, 0, self.end) is None:
            self._more()
        m = _FIRST.match(self.buf, 0, self.end)
        if m is None:
            raise BadInputError(f"{self.path.name}: empty file")
        first = m.group(1)
        if first == b"[":
            self.bare_list = True
            return m.end(), b""
        if first != b"{":
            raise BadInputError(f"{self.path.name}: not a JSON trace (does not start with {{ or [)")
        search_from = 0
        while True:
            buf = self.buf
            k = buf.find(_KEY, search_from, self.end)
            if k >= 0 and top_level_key_offset(bytes(buf[:k]), k):
                break
            if k >= 0:
                search_from = k + 1
                continue
            if self._eof:
                raise BadInputError(
                    f"{self.path.name}: not a Kineto/Chrome trace (no top-level traceEvents)"
                )
            if self.end > MAX_HEADER_BYTES:
                raise BadInputError(
                    f"{self.path.name}: no traceEvents in the first {MAX_HEADER_BYTES >> 20} MB"
                )
            search_from = max(0, self.end - len(_KEY))
            self._more()
        j = k + len(_KEY)
        while True:
            v = _VALUE.match(self.buf, j, self.end)
            if v or self._eof:
                break
            self._more()
        if not v or v.group(1) != b"[":
            raise BadInputError(f"{self.path.name}: traceEvents is not a list")
        return v.end(), bytes(self.buf[:k]) + _KEY + b":"

    def iter_decoded(
        self, decode: Callable[[memoryview, bytearray, int, int], object]
    ) -> Iterator[object]:
        """Decode the events array slice by slice with ``decode(view, buf, lo, hi)``.

        ``view`` shows ``b"[" + buf[lo:hi] + b"]"``; ``buf``/``lo``/``hi`` allow cheap
        byte searches (``buf.find(needle, lo, hi)``) before decoding.

        ``decode`` must raise ``ValueError`` (msgspec.DecodeError is one) for malformed
        JSON and must not keep a reference to the view; a failing fast cut is retried,
        and an error on an exact cut is re-raised.
        """
        try:
            yield from self._slices(decode)
        finally:
            self._close()

    def _slices(
        self, decode: Callable[[memoryview, bytearray, int, int], object]
    ) -> Iterator[object]:
        start, prefix = self._open()
        while True:
            # skip the separator before the next element; keep >= 1 byte before start
            while True:
                m = _SEP.match(self.buf, start, self.end)
                assert m is not None
                start = m.end()
                if start < self.end or self._eof:
                    break
                self._more()
            if start >= self.end:
                raise BadInputError(f"{self.path.name}: truncated JSON (events array not closed)")
            if self.buf[start] == 0x5D:  # "]"
                self._finish(prefix, start)
                return
            start = self._drop(start)
            while not self._eof and self.end - start < TARGET_CHUNK_BYTES:
                self._more()
            buf, end = self.buf, self.end
            cut: _Cut | None = None
            result: object = None
            for cand in fast_cuts(buf, start, end, self._eof):
                try:
                    result = _decode_in_place(buf, start, cand.end, decode)
                except ValueError:
                    continue
                cut = cand
                break
            if cut is None:
                ex = exact_cut(bytes(buf[:end]), start)
                if ex.end <= start and ex.closed_at < 0:
                    if self._eof:
                        raise BadInputError(
                            f"{self.path.name}: truncated JSON (events array not closed)"
                        )
                    self._more()
                    continue
                if ex.end > start:
                    result = _decode_in_place(buf, start, ex.end, decode)
                else:
                    self._finish(prefix, ex.closed_at)
                    return
                cut = ex
            yield result
            if cut.closed_at >= 0:
                self._finish(prefix, cut.closed_at)
                return
            start = cut.end

    def _finish(self, prefix: bytes, close_at: int) -> None:
        """Collect the bytes after the closing ``]`` of the events array."""
        self.buf = self.buf[close_at + 1 : self.end]
        self.end = len(self.buf)
        while not self._eof:
            self._more()
        suffix = self.buf[: self.end]
        if self.bare_list:
            if suffix.strip(_WS):
                raise BadInputError(f"{self.path.name}: invalid JSON (data after the events list)")
            self.header = None
            return
        self.header = prefix + b"null" + bytes(suffix)


def _decode_in_place(
    buf: bytearray,
    start: int,
    end: int,
    decode: Callable[[memoryview, bytearray, int, int], object],
) -> object:
    """Decode ``[`` + buf[start:end] + ``]`` by patching the bytes around the slice.

    ``buf`` must hold at least one byte after ``end`` (the window keeps a spare byte).
    """
    before, after = buf[start - 1], buf[end]
    buf[start - 1] = 0x5B  # "["
    buf[end] = 0x5D  # "]"
    try:
        with memoryview(buf) as mv, mv[start - 1 : end + 1] as piece:
            return decode(piece, buf, start, end)
    finally:
        buf[start - 1] = before
        buf[end] = after
