"""Typed msgspec decoding of ``traceEvents`` slices for the Kineto reader.

A slice (``b"[{...},{...}]"``) decodes into a list of complete-event structs that declare
only the fields the reader uses; unknown keys are skipped by msgspec. Events of other
phases decode to empty structs and are dropped.

Names and categories repeat: a real trace has a few thousand distinct names among
millions of events. Once a slice adds no new name, later slices are decoded with
``name``/``cat`` typed as a ``Literal`` of the names seen so far, so msgspec hands back
the already interned ``str`` objects (hash cached, equal by identity) instead of new
strings; interning them is then a cheap dict hit. A slice holding a name outside the
vocabulary fails validation and is decoded again with plain ``str`` fields, so the
result never depends on which path ran (``Vocabulary`` keeps the failures rare).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Union

import msgspec

__all__ = [
    "ARG_DEFAULT",
    "ARG_SPEC",
    "COLLECTIVE_KEY",
    "DROP",
    "BadValue",
    "Codes",
    "SliceDecoder",
    "Vocabulary",
    "as_int",
    "as_str",
]

#: Arg values as found in the wild: ROCm writes ``"bytes": "60"``, some exporters floats.
_LooseInt = Union[int, float, str, None]  # noqa: UP007 - a runtime type for msgspec
_LooseStr = Union[str, int, float, None]  # noqa: UP007

#: (JSON key in ``args``, attribute, type, default) of every arg the reader uses.
ARG_SPEC: tuple[tuple[str, str, Any, Any], ...] = (
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
ARG_DEFAULT = {attr: default for _k, attr, _t, default in ARG_SPEC}
#: args always decoded; the others only once a slice's bytes contain the needle
_COMMON_KEYS = frozenset(("device", "stream", "correlation", "External id", "external id", "bytes"))
_COLLECTIVE_NEEDLE = b'"Collective name'
_COLLECTIVE_KEYS = frozenset(
    ("Collective name", "In msg nelems", "dtype", "Group size", "Process Group Name", "Seq", "seq")
)
COLLECTIVE_KEY = "Collective name"
_ALL_KEYS = frozenset(k for k, *_r in ARG_SPEC)
#: Chrome trace phases other than "X": decoded as empty structs (their bodies are skipped).
_OTHER_PHASES = "BEiIbneCstfPONDMRcv()"
#: most names a ``Literal`` vocabulary may hold (building one costs ~3 us per name)
MAX_VOCABULARY = 20_000


#: ``cat`` of events of other phases: their rows are dropped by the columns
DROP = object()


class _Other(msgspec.Struct, gc=False, tag_field="ph"):
    """An event of another phase (metadata, instant, flow...): nothing is decoded.

    The class attributes let the column readers treat it like a complete event, so a
    slice needs no filtering pass; ``cat is DROP`` marks the rows to drop.
    """

    cat = DROP
    name = ""
    pid = 0
    tid = 0
    ts = 0.0
    dur = 0.0


_OTHERS = tuple(
    msgspec.defstruct(f"_P{i}", [], bases=(_Other,), tag=p) for i, p in enumerate(_OTHER_PHASES)
)


def _args_type(keys: frozenset[str]) -> type:
    return msgspec.defstruct(
        "_Args",
        [
            (attr, typ, msgspec.field(default=default, name=key))
            for key, attr, typ, default in ARG_SPEC
            if key in keys
        ],
        frozen=True,
        gc=False,
    )


@dataclass(frozen=True)
class _Typed:
    """A decoder for ``list[complete event | other phase]`` and its complete-event type."""

    decoder: msgspec.json.Decoder
    event_type: type
    args_type: type


def _typed(keys: frozenset[str], name_type: Any = str, cat_type: Any = str) -> _Typed:
    args_type = _args_type(keys)
    fields: list[tuple[str, Any, Any]] = [
        ("cat", cat_type, ""),
        ("name", name_type, ""),
        ("pid", Union[int, float, str], -1),  # noqa: UP007
        ("tid", Union[int, float, str], -1),  # noqa: UP007
        ("ts", float, math.nan),
        ("dur", float, 0.0),
        ("args", args_type, args_type()),
    ]
    event_type = msgspec.defstruct("_Complete", fields, tag_field="ph", tag="X", gc=False)
    union = Union[(event_type, *_OTHERS)]
    return _Typed(msgspec.json.Decoder(list[union]), event_type, args_type)  # type: ignore[valid-type]


_PLAIN: dict[frozenset[str], _Typed] = {}


def _plain(keys: frozenset[str]) -> _Typed:
    hit = _PLAIN.get(keys)
    if hit is None:
        hit = _PLAIN[keys] = _typed(keys)
    return hit


# --------------------------------------------------------------------------------------
# loose fallback: unexpected types (float pids, odd args) coerced in Python
# --------------------------------------------------------------------------------------


class _LooseEvent(msgspec.Struct, gc=False):
    ph: Any = ""
    cat: Any = ""
    name: Any = ""
    pid: Any = -1
    tid: Any = -1
    ts: Any = math.nan
    dur: Any = 0.0
    args: Any = None


_LOOSE = msgspec.json.Decoder(list[_LooseEvent])


def as_int(v: Any) -> int:
    """An int from an int, float, or string such as ``"stream 7"``/``"0x1f"`` (-1 if none)."""
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


def as_str(v: Any) -> str:
    return "" if v is None else str(v)


def _as_num(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise ValueError(f"non-numeric {what} {v!r}")


class BadValue(Exception):
    """A well-formed event with an unusable value (not a JSON syntax problem)."""


def _coerce(e: _LooseEvent, typed: _Typed) -> Any:
    """Turn a loosely typed event into the typed complete event (None for non-"X" events)."""
    if e.ph != "X":
        return None
    ts = _as_num(e.ts, "ts")
    dur = _as_num(e.dur, "dur")
    a = e.args if isinstance(e.args, dict) else {}
    kw: dict[str, Any] = {}
    for key, attr, typ, _default in ARG_SPEC:
        if key in a:
            kw[attr] = as_str(a[key]) if typ is _LooseStr else as_int(a[key])
    pid = e.pid if isinstance(e.pid, (int, str)) else as_int(e.pid)
    tid = e.tid if isinstance(e.tid, (int, str)) else as_int(e.tid)
    return typed.event_type(
        cat=str(e.cat), name=str(e.name), pid=pid, tid=tid, ts=ts, dur=dur,
        args=typed.args_type(**kw),
    )  # fmt: skip


def _decode_loose(piece: memoryview) -> list[Any]:
    loose = _LOOSE.decode(piece)  # malformed JSON raises DecodeError here
    typed = _plain(_ALL_KEYS)
    try:
        coerced = [_coerce(e, typed) for e in loose]
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    return [e for e in coerced if e is not None]


_BYTE_AT = re.compile(r"\(byte (\d+)\)")


def _decode(typed: _Typed, piece: memoryview) -> list[Any]:
    """Events of one slice (other phases included, with ``cat is DROP``).

    Raises ``msgspec.DecodeError`` on malformed JSON, ``msgspec.ValidationError`` on
    a value of an unexpected type.
    """
    try:
        return typed.decoder.decode(piece)  # type: ignore[no-any-return]
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        # the parser got this far from a known-good start, so a NaN/Infinity token here is
        # a real (non-JSON) value written by Python's json module, not a bad cut
        m = _BYTE_AT.search(str(exc))
        if m:
            at = int(m.group(1))
            token = bytes(piece[at : at + 9]).lstrip(b"-")
            if token.startswith((b"NaN", b"Infinity")):
                raise BadValue(
                    "non-finite number (NaN/Infinity) in an event: invalid duration or timestamp"
                ) from None
        raise


# --------------------------------------------------------------------------------------
# the vocabulary of names and categories
# --------------------------------------------------------------------------------------


class Codes(dict):  # type: ignore[type-arg]
    """str -> dense int code in order of first appearance (``codes[s]`` adds a new one)."""

    def __missing__(self, key: str) -> int:
        code = self[key] = len(self)
        return code


#: ``typing.Literal`` without its module-wide cache (128 entries, which would keep the
#: vocabularies of past files alive); the cached form where that is not available
_LITERAL_UNCACHED = getattr(getattr(Literal, "_getitem", None), "__wrapped__", None)


def _literal(values: tuple[str, ...]) -> Any:
    if _LITERAL_UNCACHED is not None:
        return _LITERAL_UNCACHED(Literal, *values)
    return Literal[values]  # pragma: no cover - other Python implementations


class Vocabulary:
    """Names and categories seen in one file, and when to decode them as ``Literal``.

    The columns intern every name into ``names`` (and every ``cat`` into ``cats``). A
    ``Literal`` decoder is built once a slice ends with the vocabulary unchanged, and is
    dropped for the rest of the file when slices keep failing it (a trace whose names
    keep changing, such as one annotation per request, stays on plain strings).
    """

    def __init__(self, names: Codes, cats: dict[str, Any]) -> None:
        self.names = names
        self.cats = cats
        self._sizes = (-1, -1)
        self._typed: tuple[frozenset[str], tuple[int, int], _Typed] | None = None
        self.hits = 0
        self.misses = 0

    def typed(self, keys: frozenset[str]) -> _Typed | None:
        """The ``Literal`` decoder for this slice, or None to decode plain strings."""
        sizes = (len(self.names), len(self.cats))
        grew, self._sizes = sizes != self._sizes, sizes
        if self.misses > 2 and self.misses * 4 > self.hits:
            return None  # the names keep changing: plain strings are cheaper
        if self._typed is not None and self._typed[:2] == (keys, sizes):
            return self._typed[2]
        if grew or not sizes[0] or sizes[0] > MAX_VOCABULARY:
            return None
        names = _literal(tuple(self.names))
        cats = _literal(tuple(self.cats)) if self.cats else str
        typed = _typed(keys, names, cats)
        self._typed = (keys, sizes, typed)
        return typed


# --------------------------------------------------------------------------------------
# slices
# --------------------------------------------------------------------------------------


Decoded = tuple[list[Any], frozenset[str]]


class SliceDecoder:
    """Decode ``[...]`` slices of one file into (events, args keys decoded).

    Events of other phases than "X" are included with ``cat is DROP``.

    The collective args are decoded from the first slice whose bytes mention
    ``"Collective name`` on (one byte search per slice until then). Raises
    ``msgspec.DecodeError`` for malformed JSON (the splitter then retries another cut)
    and ``BadValue`` for a well-formed but unusable value.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.keys = _COMMON_KEYS
        self.vocabulary = vocabulary

    def __call__(self, piece: memoryview, buf: bytearray, lo: int, hi: int) -> Decoded:
        keys = self.keys
        if keys is _COMMON_KEYS and buf.find(_COLLECTIVE_NEEDLE, lo, hi) >= 0:
            keys = self.keys = _COMMON_KEYS | _COLLECTIVE_KEYS
        voc = self.vocabulary
        typed = voc.typed(keys)
        if typed is not None:
            try:
                events = _decode(typed, piece)
            except msgspec.ValidationError:
                voc.misses += 1  # a new name (or an odd value): decode plain strings
            else:
                voc.hits += 1
                return events, keys
        try:
            return _decode(_plain(keys), piece), keys
        except msgspec.ValidationError:
            return _decode_loose(piece), _ALL_KEYS
