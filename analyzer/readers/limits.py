"""Caps on what one input may cost: the readers' defences against hostile or broken files.

A trace is untrusted input (reports go into tickets, the app takes uploads from anyone), so
every reader checks its bytes against one :class:`Limits`, and a file over a cap is refused
with a one-line ``BadInputError`` naming the file, the cap and how to raise it. Every check
is O(1) per slice or per block, never per event in Python.

The active limits come from, in order: :func:`using` (the CLI's ``--limit NAME=VALUE`` and
the app), the environment (``ANALYZER_LIMIT_<NAME>``, e.g. ``ANALYZER_LIMIT_MAX_EVENTS``),
the defaults below (generous for real traces: the largest in ../shared/traces inflate 30x
and hold KBs outside ``traceEvents``).

    >>> with using(Limits(max_events=10_000_000)):          # doctest: +SKIP
    ...     trace = read_kineto("rank0.trace.json.gz")
    >>> active().max_ratio
    100.0
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

from analyzer.model import BadInputError

__all__ = ["ENV_PREFIX", "MAX_DUR_NS", "MAX_TS_NS", "MIN_TS_NS", "Limits", "active", "parse_limit", "time_problem", "using"]

ENV_PREFIX = "ANALYZER_LIMIT_"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """Caps on one input file (sizes in bytes of uncompressed text unless said otherwise).

    ``max_input_bytes``: uncompressed bytes of one trace file (or zip member).
    ``max_ratio``: uncompressed / compressed bytes of a gzip stream or zip member, checked
    once ``ratio_min_bytes`` have been inflated (JSON traces inflate 5-30x; bombs 1000x).
    ``max_header_bytes``: JSON outside the ``traceEvents`` array (device properties,
    distributedInfo, padding or whitespace before/after it).
    ``max_event_bytes``: one element of ``traceEvents``, so also any one string in it.
    ``max_depth``: nesting of arrays/objects outside ``traceEvents`` (inside events,
    msgspec's own guard stops at about 1000 levels and the file is refused the same way).
    ``max_events``: events (rows) of one trace file or Nsight export.
    ``max_zip_members`` / ``max_zip_bytes``: members and total uncompressed bytes of a zip.
    """

    max_input_bytes: int = 64 * GIB
    max_ratio: float = 100.0
    ratio_min_bytes: int = 64 * MIB
    max_header_bytes: int = 16 * MIB
    max_event_bytes: int = 16 * MIB
    max_depth: int = 256
    max_events: int = 500_000_000
    max_zip_members: int = 10_000
    max_zip_bytes: int = 64 * GIB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The defaults, overridden by ``ANALYZER_LIMIT_<NAME>`` variables."""
        env = os.environ if env is None else env
        out = cls()
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw.strip():
                out = replace(out, **{f.name: _value(f.name, raw, f"{ENV_PREFIX}{f.name.upper()}")})
        return out

    def with_overrides(self, items: list[str] | tuple[str, ...]) -> Limits:
        """These limits with ``NAME=VALUE`` items applied (the CLI's ``--limit``)."""
        out = self
        for item in items:
            name, value = parse_limit(item)
            out = replace(out, **{name: value})
        return out


_NAMES = tuple(f.name for f in fields(Limits))
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": GIB * KIB}


def _value(name: str, raw: str, where: str) -> int | float:
    text = raw.strip().replace("_", "")
    if name == "max_ratio":
        try:
            ratio = float(text)
        except ValueError:
            raise BadInputError(f"{where}: expected a number, not {raw!r}") from None
        if not ratio > 1:
            raise BadInputError(f"{where}: a ratio must be over 1, not {raw!r}")
        return ratio
    m = _SIZE.match(text)
    if not m:
        raise BadInputError(f"{where}: expected a count or a size such as 512MiB, not {raw!r}")
    unit = _UNIT[(m.group(2) or "")[:1].lower()]
    value = int(float(m.group(1)) * unit)
    if value < 1:
        raise BadInputError(f"{where}: must be at least 1, not {raw!r}")
    return value


def parse_limit(item: str) -> tuple[str, int | float]:
    """``"max_events=1000000"``-style ``NAME=VALUE`` -> (field name, value); sizes take units."""
    name, sep, raw = item.partition("=")
    name = name.strip().lower().replace("-", "_")
    if not sep or name not in _NAMES:
        raise BadInputError(
            f"bad --limit {item!r}: expected NAME=VALUE with NAME one of {', '.join(_NAMES)}"
        )
    return name, _value(name, raw, f"--limit {name}")


_ACTIVE: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("analyzer_limits", default=None)


def active() -> Limits:
    """The limits in force here: those set by :func:`using`, else from the environment."""
    current = _ACTIVE.get()
    return current if current is not None else Limits.from_env()


@contextmanager
def using(limits: Limits) -> Iterator[Limits]:
    """Make ``limits`` the active ones inside the ``with`` block (this thread/context)."""
    token = _ACTIVE.set(limits)
    try:
        yield limits
    finally:
        _ACTIVE.reset(token)


def refuse(file_name: str, what: str, name: str, limit: float) -> BadInputError:
    """The one-line error for a file over a cap, saying how to raise it."""
    shown = f"{limit:g}" if isinstance(limit, float) else _human(limit, name)
    return BadInputError(
        f"{file_name}: {what} (over the {name} limit of {shown}; raise it with "
        f"--limit {name}=... or {ENV_PREFIX}{name.upper()})"
    )


def _human(n: int, name: str) -> str:
    if not name.endswith("_bytes"):
        return f"{n:,}"
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % (div // 16 or 1) == 0:
            return f"{n / div:g} {unit}"
    return f"{n:,} bytes"


# ------------------------------------------------------------------------------ value bounds

#: event times every reader accepts, in ns: start in [-2**60, 2**62] (year 2116 in epoch ns),
#: duration up to 2**61; a trace's span and its summed durations up to 2**62. Then start +
#: duration, any difference of two starts and any per-trace sum fit int64: no analysis wraps.
MAX_TS_NS = 1 << 62
MIN_TS_NS = -(1 << 60)
MAX_DUR_NS = 1 << 61
MAX_SPAN_NS = 1 << 62


def time_problem(ts_ns: Any, dur_ns: Any, *, whole: bool = False) -> str | None:
    """Why these int64 time columns are out of bounds, or None (vectorised, O(1) calls).

    ``whole``: the columns are a whole trace, so its span and summed durations are checked.
    """
    import numpy as np

    if len(ts_ns) == 0:
        return None
    lo, hi, dmax = int(ts_ns.min()), int(ts_ns.max()), int(dur_ns.max())
    if hi > MAX_TS_NS or lo < MIN_TS_NS or dmax > MAX_DUR_NS:
        i = int(np.flatnonzero((ts_ns > MAX_TS_NS) | (ts_ns < MIN_TS_NS) | (dur_ns > MAX_DUR_NS))[0])
        return (f"an event has an absurd time (ts {int(ts_ns[i]) / 1000:.17g} us, dur "
                f"{int(dur_ns[i]) / 1000:.17g} us; over 73 years)")
    if whole:
        end = float(hi) + float(dmax)  # a bound; the exact end only when the bound is too big
        if end - lo > MAX_SPAN_NS:
            end = float((ts_ns + dur_ns).max())
        if end - lo > MAX_SPAN_NS:
            return "the events span over 146 years (an absurd timestamp)"
        if float(dur_ns.sum(dtype=np.float64)) > MAX_SPAN_NS:
            return "the event durations add up to over 146 years"
    return None
