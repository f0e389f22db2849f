"""Number formatting shared by the text, Markdown and HTML renderers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def fmt_us(us: float | None) -> str:
    """Human time from microseconds: 812 us, 12.4 ms, 3.21 s."""
    if us is None:
        return "-"
    if abs(us) >= 1e6:
        return f"{us / 1e6:.2f} s"
    if abs(us) >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


def fmt_share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def edge_note(figures: Mapping[str, Any]) -> str:
    """"capture edge 493.6 ms (50.0% of the capture) left out" for a summary or rank with an
    edge (idle before the first step / after the last: profiler warm-up, teardown), else ""."""
    edge = float(figures.get("edge_us") or 0.0)
    if edge <= 0:
        return ""
    capture = float(figures.get("capture_us") or 0.0)
    share = f" ({fmt_share(edge / capture)} of the capture)" if capture else ""
    return f"capture edge {fmt_us(edge)}{share} left out"


def short_name(name: str, width: int = 70) -> str:
    """Kernel names can be kilobytes of C++ templates: keep the head."""
    name = " ".join(name.split())
    return name if len(name) <= width else name[: width - 1] + "…"


_UPPER = {"tp", "pp", "ep", "dp", "kv", "hbm", "gpu", "cpu", "p50", "p90", "ttft"}
_UNIT_RE = re.compile(r"(?:^|_)(us|ms|gbps|tflops|bytes|share)(?=_|$)")
_DROP_UNITS = ("us", "ms", "gbps", "tflops")  # said by the formatted value, so left out of the label


def _label_unit(key: str) -> tuple[str, str]:
    """``"tp_exposed_us"`` -> ``("TP exposed", "us")``; the unit decides the number format."""
    k = str(key)
    m = _UNIT_RE.search(k)
    unit = m.group(1) if m else ("share" if "fraction" in k else "")
    if m and unit in _DROP_UNITS:
        k = (k[: m.start()] + k[m.end():]).strip("_")
    words = [w.upper() if w in _UPPER else w for w in k.replace("_", " ").split()]
    return " ".join(words) or str(key), unit


def _fmt_num(v: float, unit: str) -> str:
    if unit == "us":
        return fmt_us(float(v)) if abs(v) >= 10 or v == 0 else f"{float(v):.3g} us"
    if unit == "ms":
        return fmt_us(float(v) * 1e3)
    if unit == "share":
        return fmt_share(float(v))
    if unit == "gbps":
        return f"{float(v):,.0f} GB/s"
    if unit == "tflops":
        return f"{float(v):,.0f} TFLOP/s"
    if unit == "bytes":
        b = float(v)
        for name, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(b) >= div:
                return f"{b / div:,.2f} {name}"
        return f"{b:,.0f} B"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):,.4g}"


def _fmt_value(key: str, v: Any, unit: str = "") -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return _fmt_num(v, _label_unit(key)[1] or unit)
    if isinstance(v, Mapping):
        return _inline(v, unit=_label_unit(key)[1] or unit)
    if isinstance(v, (list, tuple)):
        return ", ".join(x for x in (_fmt_value(key, i, unit) for i in v[:5]) if x)
    return short_name(str(v), 120)


def _inline(d: Mapping[str, Any], limit: int = 6, unit: str = "") -> str:
    """A dict on one line: its ``name`` first, then ``label value`` pairs (``unit``: the
    parent key's unit, for children without their own, e.g. ``wait_us_by_rank``)."""
    head = short_name(str(d["name"]), 70) if "name" in d else ""
    parts = []
    for k, v in d.items():
        if k == "name" or v is None:
            continue
        if k == "count" and isinstance(v, (int, float)):
            parts.append(f"{v:,}×")
            continue
        text = _fmt_value(k, v, unit)
        if isinstance(v, Mapping):
            text = "{" + (text or "") + "}"
        if text:
            label = _label_unit(k)[0]
            parts.append(f"{label} {text}" if label != text else text)
        if len(parts) >= limit:
            break
    body = ", ".join(parts)
    return f"{head} — {body}" if head and body else head or body


def evidence_items(evidence: Mapping[str, Any], limit: int = 10) -> list[tuple[str, list[str]]]:
    """A finding's evidence as ``(label, lines)``: units formatted from the key suffix
    (``_us`` -> ms/s, ``_gbps`` -> GB/s, shares as %), lists of kernels or steps one per line."""
    out: list[tuple[str, list[str]]] = []
    for key, v in evidence.items():
        label = _label_unit(key)[0]
        if isinstance(v, (list, tuple)) and v and all(isinstance(i, Mapping) for i in v):
            lines = [_inline(i, unit=_label_unit(key)[1]) for i in v[:4]]
            if len(v) > 4:
                lines.append(f"… {len(v)} in all")
        elif isinstance(v, Mapping) and v and all(isinstance(i, Mapping) for i in v.values()):
            lines = [f"{k}: {_inline(i, 5, _label_unit(key)[1])}" for k, i in list(v.items())[:6]]
        else:
            text = _fmt_value(key, v)
            if text is None or text == "":
                continue
            lines = [text]
        out.append((label, lines))
        if len(out) >= limit:
            break
    return out


def context_line(doc: Mapping[str, Any]) -> str | None:
    """One line saying what made the trace (``report["context"]``), or None for old reports.

    >>> context_line({"context": {"engine": "vllm", "workload": "serving", "parallel": {
    ...     "tp": {"value": 8, "source": "distributedInfo"}}, "dtypes": {}, "gpu": {}}})
    'Run: engine vllm, workload serving · TP=8 (distributedInfo)'
    """
    ctx = doc.get("context") or {}
    if not ctx:
        return None
    eng, work = ctx.get("engine", "unknown"), ctx.get("workload", "unknown")
    head = (eng if eng == work else f"engine {eng}, workload {work}") if (eng, work) != ("unknown", "unknown") \
        else "engine and workload unknown"
    parts = [head + (f" ({ctx['domain']})" if ctx.get("domain") not in (None, "llm", "unknown") else "")]
    sizes = []
    for key in ("tp", "pp", "ep", "dp"):
        p = (ctx.get("parallel") or {}).get(key)
        if not p:
            continue
        if p.get("value") is None:
            sizes.append(f"{key.upper()}=? ({p.get('source')})")
        elif p.get("value") != 1 or key == "tp":
            sizes.append(f"{key.upper()}={p['value']} ({p.get('source')})")
    if sizes:
        parts.append(", ".join(sizes))
    gpu = ctx.get("gpu") or {}
    if gpu.get("name") or gpu.get("preset"):
        parts.append(str(gpu.get("name") or gpu.get("preset")))
    dts = []
    for group, shares in (ctx.get("dtypes") or {}).items():
        known = [(k, v) for k, v in shares.items() if k != "unknown"]
        if known:
            k, v = max(known, key=lambda kv: kv[1])
            dts.append(f"{group} {k} {100 * v:.0f}%")
    if dts:
        parts.append("dtypes: " + ", ".join(dts))
    return "Run: " + " · ".join(parts)


def alignment_line(doc: Mapping[str, Any]) -> str | None:
    """One line on the cross-rank clock alignment when its offsets or residuals are large
    (``serving.skew.alignment.notable``), else None."""
    al = ((doc.get("serving") or {}).get("skew") or {}).get("alignment") or {}
    if not al.get("enabled") or not al.get("notable"):
        return None
    ranks = al.get("ranks") or {}
    n = sum(1 for r in ranks.values() if r.get("source") in ("reference", "collectives"))
    text = (f"clocks: {n} of {len(ranks)} ranks aligned to rank {al.get('reference_rank')} from "
            f"synchronous collective ends; offsets up to {fmt_us(al.get('max_abs_offset_us'))}")
    res = al.get("max_residual_us")
    if res is not None:
        text += f", residual up to {fmt_us(res)}"
        if res >= 20:
            text += " (large: collectives mismatched or ends not synchronous; skew figures are rough)"
    return text
