"""Typed msgspec decoding of ``traceEvents`` slices for the Kineto reader.

A slice (``b"[{...},{...}]"``) decodes into a list of complete-event structs that declare
only the fields the reader uses; unknown keys are skipped by msgspec.

Names and categories repeat: a real trace has a few thousand distinct names among
millions of events. Once the names settle, ``name`` and ``cat`` are decoded as members
of an enum over the strings seen so far (``Vocabulary``), so msgspec hands back existing
objects (hashed by identity) instead of new strings, and interning them is a cheap dict
hit; names outside the enum still decode (``_missing_``). The columns turn members back
into strings (``text``) once per distinct row key, so the result never depends on which
path ran.

Events of other phases than "X" decode to empty structs whose class attributes mark
them (``cat is DROP``) for the columns to drop.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

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
    "text",
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
#: most names a vocabulary enum may hold (building one costs ~15 us per name)
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


class _Known(enum.Enum):
    """Base of the per-file vocabularies: one member per name (value) seen so far.

    msgspec hands back the member of a known name (no new string). A name outside the
    vocabulary goes through ``_missing_``, which returns one cached pseudo-member per
    name and counts the calls, so the vocabulary can be rebuilt when they add up.
    Members hash by identity (``dict`` lookups stay in C).
    """

    __hash__ = object.__hash__

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        unknown: dict[str, Any] = cls._unknown  # type: ignore[attr-defined]
        member = unknown.get(value)
        if member is None:
            member = object.__new__(cls)
            member._value_ = member._name_ = value
            unknown[value] = member
        cls._calls[0] += 1  # type: ignore[attr-defined]
        return member


def _known(values: Iterable[str], calls: list[int]) -> type[enum.Enum]:
    """An enum over ``values`` whose ``_missing_`` calls are counted in ``calls[0]``."""
    members = _Known("_Known", [(f"v{i}", v) for i, v in enumerate(values)])  # type: ignore[call-overload]
    members._unknown = {}
    members._calls = calls
    return members  # type: ignore[no-any-return]


def text(v: Any) -> Any:
    """The string behind a vocabulary member (anything else unchanged)."""
    return v.value if isinstance(v, enum.Enum) else v


class Vocabulary:
    """Names and categories seen in one file, and when to decode them as enum members.

    The columns intern every name into ``names`` (and every ``cat`` into ``cats``).
    Once a slice adds under 10% new names, ``name`` and ``cat`` are decoded as members of
    enums over the strings seen so far; they are rebuilt when names outside them (found by
    ``_missing_``, about 1 us each) have cost about as much as a rebuild (~15 us per
    name), unless most of those names were seen only once (say one annotation per
    request): then, as when new names keep failing the slice (msgspec before 0.18.3 has
    no ``_missing_``; the slice is then decoded again with plain strings), the rest of
    the file is decoded with plain strings.
    """

    def __init__(self, names: Codes, cats: dict[str, Any]) -> None:
        self.names = names
        self.cats = cats
        self._calls = [0]
        self._enums: tuple[type, type] | None = None
        self._built_with = 0  # names in the enum
        self._seen = 0  # names at the previous slice
        self._typed: tuple[frozenset[str], _Typed] | None = None
        self.hits = 0
        self.misses = 0
        self.builds = 0
        self.off = False  # plain strings for the rest of the file

    def typed(self, keys: frozenset[str]) -> _Typed | None:
        """The decoder with vocabulary enums for this slice, or None for plain strings."""
        n = len(self.names)
        if self.off or not n or n > MAX_VOCABULARY:
            return None
        if self.misses > 2 and self.misses * 4 > self.hits:
            self.off = True  # new names keep failing (no _missing_): plain strings
            return None
        grew, self._seen = n - self._seen, n
        if self._enums is None and 10 * grew > n:
            return None  # still learning: the last slice added over 10% of the names
        calls = self._calls[0]
        if self._enums is None or calls > 8 * self._built_with + 1000:
            if self._enums is not None:
                new = sum(len(e._unknown) for e in self._enums)  # type: ignore[attr-defined]
                if 2 * new > calls:  # mostly names seen once (one per request...): no use
                    self.off = True
                    return None
            self._calls[0] = 0
            self._built_with = n
            self._enums = (_known(self.names, self._calls), _known(self.cats, self._calls))
            self._typed = None
            self.builds += 1
        if self._typed is None or self._typed[0] != keys:
            self._typed = (keys, _typed(keys, *self._enums))
        return self._typed[1]


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

    def keys_for(self, buf: bytearray, lo: int, hi: int) -> frozenset[str]:
        """The args keys to decode in ``buf[lo:hi]`` (the collective ones stick once seen)."""
        if self.keys is _COMMON_KEYS and buf.find(_COLLECTIVE_NEEDLE, lo, hi) >= 0:
            self.collective_seen()
        return self.keys

    def collective_seen(self) -> frozenset[str]:
        """Decode the collective args from now on (their needle was found); the keys."""
        self.keys = _COMMON_KEYS | _COLLECTIVE_KEYS
        return self.keys

    def __call__(self, piece: memoryview, buf: bytearray, lo: int, hi: int) -> Decoded:
        keys = self.keys_for(buf, lo, hi)
        voc = self.vocabulary
        typed = voc.typed(keys)
        if typed is not None:
            try:
                events = _decode(typed, piece)
            except msgspec.ValidationError:
                voc.misses += 1  # an odd value (or a new name, old msgspec): plain strings
            else:
                voc.hits += 1
                return events, keys
        try:
            return _decode(_plain(keys), piece), keys
        except msgspec.ValidationError:
            return _decode_loose(piece), _ALL_KEYS
