"""Memory copies of one rank by direction and memory kind: bytes, time, achieved GB/s.

Direction (HtoD, DtoH, DtoD, PtoP) and the memory kinds (Pageable, Pinned, Device, Host) come
from the name the profiler gives a memcpy row (``context_markers.toml``, ``[copy]``); bytes from
its ``bytes`` arg (``msg_bytes`` column). Time is the union of the rows' intervals per group,
GB/s = bytes / summed duration (each copy's own rate, not diluted by gaps).

    >>> copies_by_kind(attr.act)["groups"][0]["direction"]        # doctest: +SKIP
    'HtoD'
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from analyzer import intervals as iv
from analyzer.analyses.context import context_markers
from analyzer.analyses.tables import kind_mask

NS_PER_US = 1000.0


def _copy_re() -> re.Pattern[str]:
    return re.compile(context_markers()["copy"]["regex"])


def copies_by_kind(act: pd.DataFrame) -> dict[str, Any]:
    """Groups of memcpy rows by (direction, src, dst), biggest time first (JSON-able)."""
    sel = np.flatnonzero(kind_mask(act, ("memcpy",)))
    if sel.size == 0:
        return {"groups": [], "time_us": 0.0, "bytes": 0}
    names = act["name"].astype(str).to_numpy()[sel]
    uniq, inv = np.unique(names, return_inverse=True)
    rx = _copy_re()
    parsed = []
    for n in uniq.tolist():
        m = rx.search(n)
        parsed.append((m.group("direction"), m.group("src") or "", m.group("dst") or "") if m else ("other", "", ""))
    s = act["ts_ns"].to_numpy(np.int64)[sel]
    e = act["end_ns"].to_numpy(np.int64)[sel]
    b = act["msg_bytes"].to_numpy(np.int64)[sel] if "msg_bytes" in act else np.full(sel.size, -1)
    key = np.array(["|".join(parsed[i]) for i in range(len(parsed))], dtype=object)[inv]
    groups = []
    for k in sorted(set(key.tolist())):
        m = key == k
        d, src, dst = k.split("|")
        dur = int((e[m] - s[m]).sum())
        known = b[m] >= 0
        nbytes = int(b[m][known].sum())
        dur_known = int((e[m][known] - s[m][known]).sum())
        groups.append({
            "direction": d, "src": src or None, "dst": dst or None, "count": int(m.sum()),
            "time_us": float(iv.union_length(s[m], e[m])) / NS_PER_US,
            "bytes": nbytes if known.any() else None,
            "gbps": (nbytes / dur_known) if known.any() and dur_known > 0 else None,  # bytes/ns = GB/s
            "duration_us": dur / NS_PER_US,
        })
    groups.sort(key=lambda g: -g["time_us"])
    total_b = [g["bytes"] for g in groups if g["bytes"] is not None]
    return {"groups": groups, "time_us": float(iv.union_length(s, e)) / NS_PER_US,
            "bytes": int(sum(total_b)) if total_b else None}


def memory_kind_shares(copies: dict[str, Any]) -> dict[str, float]:
    """Share of copy time with a pageable / pinned host side, and device-to-device."""
    tot = sum(g["time_us"] for g in copies.get("groups", [])) or 0.0
    out = {"pageable": 0.0, "pinned": 0.0, "device": 0.0}
    if tot <= 0:
        return out
    for g in copies["groups"]:
        kinds = {g["src"], g["dst"]}
        if "Pageable" in kinds:
            out["pageable"] += g["time_us"] / tot
        elif "Pinned" in kinds:
            out["pinned"] += g["time_us"] / tot
        elif g["direction"] in ("DtoD", "PtoP"):
            out["device"] += g["time_us"] / tot
    return out


__all__ = ["copies_by_kind", "memory_kind_shares"]
