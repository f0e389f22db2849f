"""Every GPU kernel of a run by normalised name: the table that ``trace-analyzer diff`` matches.

The name is folded so that one kernel keeps one key across builds and launches: template
arguments (``<...>``) and parameter lists (``(...)``) go, a leading ``void`` goes, an Itanium
mangled name (``_ZN5aiter24add_rmsnorm_quant_kernelI...``) keeps only its qualified name,
and Triton's per-compile counter (``triton_poi_fused_add_0`` -> ``triton_poi_fused_add``)
goes. Tile and shape digits stay (``..._tilesize128x128x64_...``): a different tile is a
different kernel choice; ``kernel_family`` folds those too, to pair such choices.

    >>> normalize_kernel_name("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int, float)")
    'at::native::vectorized_elementwise_kernel'
    >>> normalize_kernel_name("_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi64ELi8EEEvPT0_")
    'aiter::add_rmsnorm_quant_kernel'
    >>> normalize_kernel_name("triton_red_fused__to_copy_add_mean_12")
    'triton_red_fused__to_copy_add_mean'
    >>> normalize_kernel_name("void cutlass::Kernel2<cutlass_80_simt_sgemm_128x32_8x5_nn_align1>(cutlass_80_simt_sgemm_128x32_8x5_nn_align1::Params)")
    'cutlass::Kernel2<cutlass_80_simt_sgemm_128x32_8x5_nn_align1>'
    >>> kernel_family("nvjet_tst_128x64_64x7_1x1_v_bz_coopA_NTN")
    'nvjet_tst_#x#_#x#_#x#_v_bz_coopA_NTN'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..model import GPU_ACTIVITY_KINDS, Trace
from .tables import kind_mask

NS_PER_US = 1000.0
MAX_VARIANTS = 32  # raw names kept per key (``variants``)
_INNER_ANGLE = re.compile(r"<[^<>]*>")
_INNER_PAREN = re.compile(r"\([^()]*\)")
_TRITON_COUNTER = re.compile(r"^(triton_\w+?)_\d+$")
_DIGITS = re.compile(r"\d+")
_ANON = "(anonymous namespace)"
#: launch wrappers whose first template argument is the kernel (cutlass, CK): kept as ``<arg>``
WRAPPERS = frozenset({"Kernel", "Kernel2", "device_kernel", "kentry", "kernel"})
_WRAPPED = re.compile(r"^(?:void\s+)?([\w:]+)\s*<\s*(?:\(?[\w:]*\)?\s*\d*\s*,\s*)?([A-Za-z_][\w:]*)")


def _fold(text: str, inner: re.Pattern[str]) -> str:
    for _ in range(64):  # innermost first; bounded against pathological names
        new = inner.sub("", text)
        if new == text:
            break
        text = new
    return text


def _demangle_qualified(name: str) -> str | None:
    """``_ZN<len><id>...E`` / ``_Z<len><id>`` -> ``a::b`` (template args and params dropped)."""
    i = 2
    if name.startswith("_ZN"):
        i = 3
        while i < len(name) and name[i] in "rVKL":  # cv-qualifiers of a nested name
            i += 1
    parts: list[str] = []
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j:j + n])
        i = j + n
        if not name.startswith("_ZN"):
            break
    if not parts:
        return None
    q = "::".join(parts)
    if parts[-1] in WRAPPERS and name[i:i + 1] == "I":  # first class-type template argument
        for m in re.finditer(r"\d+", name[i:]):
            j, n = i + m.end(), int(m.group())
            arg = name[j:j + n]
            if n >= 4 and len(arg) == n and arg.isidentifier():
                return f"{q}<{arg}>"
    return q


@lru_cache(maxsize=65536)
def normalize_kernel_name(name: str) -> str:
    """The matching key of a kernel name (see the module docstring)."""
    s = name.strip()
    if s.startswith("_Z"):
        q = _demangle_qualified(s)
        if q:
            return q
    s = s.replace(_ANON, "{anonymous}")
    w = _WRAPPED.match(s)
    wrapped = w.group(2) if w and w.group(1).rsplit("::", 1)[-1] in WRAPPERS else None
    s = _fold(s, _INNER_ANGLE)
    s = _fold(s, _INNER_PAREN)
    if wrapped:
        s = f"{s.split('<')[0]}<{wrapped}>"
    s = s.removeprefix("void ").strip()
    m = _TRITON_COUNTER.match(s)
    if m:
        s = m.group(1)
    return s.replace("{anonymous}", _ANON) or name.strip()


def kernel_family(key: str) -> str:
    """A normalised name with every digit run folded to ``#``: pairs tile/shape variants."""
    return _DIGITS.sub("#", key)


def kernel_table(traces: Iterable[Trace]) -> list[dict[str, Any]]:
    """Summed GPU time and launches per normalised kernel name over all ranks and devices.

    Rows ``{name, category, time_us, count, ranks, example}``, biggest ``time_us`` first (ties
    by name). ``time_us`` sums durations (not a union); ``category`` is the category holding
    most of the key's time; ``example`` is the raw name with most time behind the key; when
    several raw names fold into one key, ``variants`` lists them (most time first, at most
    ``MAX_VARIANTS``; ``variants_total`` when there are more). Call after classify.
    """
    # per (raw name, category): summed ns, launches, ranks; the unique names are few
    acc: dict[tuple[str, str], list[Any]] = {}
    for t in traces:
        ev = t.events
        if not len(ev) or "category" not in ev.columns:
            continue
        m = kind_mask(ev, GPU_ACTIVITY_KINDS)
        if not m.any():
            continue
        names = ev["name"].cat.codes.to_numpy()[m].astype(np.int64)
        if isinstance(ev["category"].dtype, pd.CategoricalDtype):
            ccodes = ev["category"].cat.codes.to_numpy()[m].astype(np.int64)
            clabels = [str(c) for c in ev["category"].cat.categories]
        else:
            ccodes, uniq = pd.factorize(ev["category"].astype(str).to_numpy(object)[m])
            clabels = [str(u) for u in uniq]
        dur = ev["dur_ns"].to_numpy(np.int64)[m]
        ok = (names >= 0) & (ccodes >= 0)
        base = len(clabels) + 1
        uk, inv = np.unique(names[ok] * base + ccodes[ok], return_inverse=True)
        tot = np.bincount(inv, weights=dur[ok])
        cnt = np.bincount(inv)
        cats = ev["name"].cat.categories
        for k, ns, n in zip(uk.tolist(), tot.tolist(), cnt.tolist()):
            slot = acc.setdefault((str(cats[k // base]), clabels[k % base]), [0.0, 0, set()])
            slot[0] += ns
            slot[1] += n
            slot[2].add(t.rank.rank)
    keys: dict[str, dict[str, Any]] = {}
    for (raw, cat), (ns, n, ranks) in acc.items():
        g = keys.setdefault(normalize_kernel_name(raw), {"ns": 0.0, "n": 0, "ranks": set(),
                                                         "cat": {}, "raw": {}})
        g["ns"] += ns
        g["n"] += n
        g["ranks"] |= ranks
        g["cat"][cat] = g["cat"].get(cat, 0.0) + ns
        g["raw"][raw] = g["raw"].get(raw, 0.0) + ns
    out = []
    for name, g in sorted(keys.items(), key=lambda kv: (-kv[1]["ns"], kv[0])):
        raws = sorted(g["raw"], key=lambda r: (-g["raw"][r], r))  # most time first
        row = {"name": name, "category": min(g["cat"], key=lambda c: (-g["cat"][c], c)),
               "time_us": g["ns"] / NS_PER_US, "count": int(g["n"]), "ranks": len(g["ranks"]),
               "example": raws[0]}
        if len(raws) > 1:  # the raw names behind the key (capped)
            row["variants"] = raws[:MAX_VARIANTS]
            if len(raws) > MAX_VARIANTS:
                row["variants_total"] = len(raws)
        out.append(row)
    return out
