"""The compiled scanner for ``traceEvents`` slices (``_kscan.c``): JSON bytes -> int64 rows.

The msgspec path (``kineto_decode`` + ``kineto_columns``) builds a Python object per event
and then gathers columns from them; on big traces that costs as much as parsing. The C
scanner walks the bytes of one slice ``[{...},{...}]`` once and writes, for every complete
(``"ph": "X"``) event, its ``N_FIELDS`` int64 values into column ``event`` of an
``(N_FIELDS, capacity)`` matrix (one contiguous row per field):

* ``ts``/``dur`` as integer nanoseconds, parsed from the decimal digits (exact; a digit
  past the ns is rounded half to even, like ``np.rint``);
* strings (``name``, ``cat``, string ``pid``/``tid``, string args) as two independent
  63-bit hashes of their raw bytes (FNV-1a and a multiply-add hash: 126 bits tell distinct
  strings apart) plus their span in the slice; start -1 means missing or null (""). The
  caller turns each distinct string into text once (``kineto_fast.StringTable``);
* the int args the reader uses (``device``, ``stream``, ``correlation``, ``External id``...),
  also from numeric strings such as ROCm's ``"bytes": "60"`` (read like ``as_int``).

It validates the JSON syntax of the whole slice (strings, escapes, numbers, literals,
nesting, commas, colons), so a slice cut inside a string or an object is rejected like a
decoder would. Anything valid but outside the common shape (an exponent in ``ts``, a float
or boolean arg, a non-object element, a missing ``ts``, a negative ``dur``, an escaped key)
makes the scanner answer ``UNSUPPORTED``: the caller then decodes that slice with msgspec,
which has the full semantics and error messages. Numbers never pass through floats.

The extension is built by ``pip install`` when a C compiler is present; without it,
``available()`` is False and the reader uses msgspec for everything.
"""

from __future__ import annotations

import numpy as np

try:
    from analyzer.readers import _kscan  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time)
    _kscan = None

__all__ = [
    "ARG_INT_FIELDS",
    "ARG_STR_FIELDS",
    "FIELDS",
    "FULL",
    "N_FIELDS",
    "OK",
    "SYNTAX",
    "UNSUPPORTED",
    "available",
    "scan",
]

OK, UNSUPPORTED, SYNTAX, FULL = 0, 1, 2, 3

# Rows of the output (one per field). A string field takes 4: hash 1, hash 2, start, end.
# pid/tid: the int, or (when start >= 0) the hashes and span of a string such as "stream 7".
TS, DUR = 0, 1
NAME, CAT, PID, TID = 2, 6, 10, 14
#: int args: (JSON key, attribute of kineto_decode.ARG_SPEC), row = 18 + index
ARG_INT_FIELDS: tuple[tuple[str, str], ...] = (
    ("device", "device"),
    ("stream", "stream"),
    ("correlation", "correlation"),
    ("External id", "external_id"),
    ("external id", "external_id_old"),
    ("In msg nelems", "in_nelems"),
    ("Group size", "group_size"),
    ("Seq", "seq"),
    ("seq", "seq_lower"),
    ("bytes", "nbytes"),
)
#: string args: (JSON key, attribute), 4 rows each from 28 + 4 * index
ARG_STR_FIELDS: tuple[tuple[str, str], ...] = (
    ("Collective name", "collective"),
    ("dtype", "dtype"),
    ("Process Group Name", "pg_name"),
)
ARG_INT0 = 18
N_FIELDS = ARG_INT0 + len(ARG_INT_FIELDS) + 4 * len(ARG_STR_FIELDS)
#: first row of every field, by name
FIELDS: dict[str, int] = {
    "ts": TS, "dur": DUR, "name": NAME, "cat": CAT, "pid": PID, "tid": TID,
    **{attr: ARG_INT0 + i for i, (_k, attr) in enumerate(ARG_INT_FIELDS)},
    **{attr: ARG_INT0 + len(ARG_INT_FIELDS) + 4 * i for i, (_k, attr) in enumerate(ARG_STR_FIELDS)},
}  # fmt: skip

if _kscan is not None and (
    _kscan.N_FIELDS != N_FIELDS
    or _kscan.N_INT_ARGS != len(ARG_INT_FIELDS)
    or _kscan.N_STR_ARGS != len(ARG_STR_FIELDS)
):  # a stale build of the extension
    _kscan = None


def available() -> bool:
    """Whether the compiled scanner was built (and matches this layout)."""
    return _kscan is not None


def scan(a: memoryview | bytes | np.ndarray, out: np.ndarray) -> tuple[int, int, bool]:
    """Scan the slice ``a`` (``[...]``) into ``out`` (C-contiguous int64, ``(N_FIELDS, cap)``).

    Returns ``(status, events, collective)``: ``OK`` with the complete events in
    ``out[:, :events]``; ``FULL`` when ``out`` has too few columns; ``UNSUPPORTED`` at the
    first value the scanner does not convert (the rest of the slice is not looked at);
    ``SYNTAX`` when it is not JSON. ``collective``: the slice holds the bytes
    ``"Collective name`` (as the msgspec path's byte search would find them; meaningful
    with ``OK``).
    """
    if _kscan is None:
        raise RuntimeError("the compiled scanner (_kscan) is not built")
    status, rows, collective = _kscan.scan(a, out)
    return int(status), int(rows), bool(collective)
