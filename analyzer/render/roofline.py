"""The roofline part of the text and Markdown reports (``report["serving"]["roofline"]``).

    >>> rows = roofline_rows(report.to_dict(), 10)     # doctest: +SKIP
    >>> lines = roofline_lines(report.to_dict())       # doctest: +SKIP

The HTML report and the app show the same table and the chart (``charts.roofline_*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import fmt_share, fmt_us, short_name

#: columns of the op-group table (text, Markdown, the app's table)
COLUMNS = ("op", "shapes", "dtype", "count", "time", "share", "TFLOP/s", "TB/s", "FLOP/B", "bound")


def roofline_section(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The representative rank's roofline (``{}`` when the report has none)."""
    rf = ((doc.get("serving") or {}).get("roofline") or {}).get("summary") or {}
    return rf


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def roofline_rows(doc: Mapping[str, Any], n: int = 12) -> list[dict[str, str]]:
    """The top ``n`` op groups (by time) as display strings, then kernels without an op."""
    rf = roofline_section(doc)
    rows = []
    for g in (rf.get("groups") or [])[:n]:
        rows.append({
            "op": short_name(g["op"], 48), "shapes": short_name(g.get("shapes") or "", 44),
            "dtype": g.get("dtype") or "-", "count": str(g["count"]), "time": fmt_us(g["time_us"]),
            "share": fmt_share(g["share"]), "TFLOP/s": _num(g.get("tflops"), ".1f"),
            "TB/s": _num(g.get("tbps"), ".2f"), "FLOP/B": _num(g.get("intensity"), ".0f"),
            "bound": g.get("bound") or (g.get("reason") or "-")[:40],
        })
    for k in (rf.get("by_kernel") or [])[: max(0, n - len(rows)) or 3]:
        rows.append({"op": "(kernel) " + short_name(k["kernel"], 38), "shapes": "-", "dtype": "-",
                     "count": str(k["count"]), "time": fmt_us(k["time_us"]), "share": fmt_share(k["share"]),
                     "TFLOP/s": "-", "TB/s": "-", "FLOP/B": "-", "bound": k["reason"][:40]})
    return rows


def serving_rates_line(doc: Mapping[str, Any]) -> str | None:
    """Prefill GEMM / attention TFLOP/s and decode KV bandwidth, each with its source."""
    sv = doc.get("serving") or {}
    pf = (sv.get("prefill") or {}).get("summary") or {}
    kv = (sv.get("kv_cache") or {}).get("summary") or {}
    parts = []
    for key, label in (("gemm_tflops", "prefill GEMM"), ("attention_tflops", "prefill attention")):
        if pf.get(key) is not None:
            parts.append(f"{label} {pf[key]:.0f} TFLOP/s (from {pf.get(key + '_source') or '?'})")
    if kv.get("achieved_gbps") is not None:
        frac = kv.get("fraction_of_hbm")
        parts.append(f"decode KV read {kv['achieved_gbps']:.0f} GB/s"
                     + (f" = {100 * frac:.0f}% of HBM" if frac is not None else "")
                     + f" (from {kv.get('bytes_read_source') or '?'})")
    return "; ".join(parts) if parts else None


def roofline_lines(doc: Mapping[str, Any], n: int = 12) -> list[str]:
    """Plain-text lines: the rates with their sources, coverage, then the op-group table."""
    rf = roofline_section(doc)
    if not rf:
        return []
    out = ["", f"Roofline (rank {rf.get('rank')}, per op + shapes)"]
    rates = serving_rates_line(doc)
    if rates:
        out.append(f"  {rates}")
    if not rf.get("available"):
        out.append(f"  not available: {rf.get('reason')}")
        return out
    out.append(f"  kernel time with an op: {fmt_share(rf.get('linked_share'))}, with FLOPs/bytes: "
               f"{fmt_share(rf.get('counted_share'))}; GPU {rf.get('gpu') or '-'}")
    widths = (30, 26, 5, 5, 9, 6, 8, 6, 7, 0)
    out.append("  " + " ".join(c.ljust(w) if w else c for c, w in zip(COLUMNS, widths)))
    for r in roofline_rows(doc, n):
        out.append("  " + " ".join((r[c][:w].ljust(w) if w else r[c]) for c, w in zip(COLUMNS, widths)))
    for m in rf.get("missing") or []:
        out.append(f"  missing: {m}")
    return out


def roofline_markdown(doc: Mapping[str, Any], n: int = 12) -> list[str]:
    """Markdown lines of the same content."""
    rf = roofline_section(doc)
    if not rf:
        return []
    out = ["", "## Roofline (per op + shapes)", ""]
    rates = serving_rates_line(doc)
    if rates:
        out += [rates, ""]
    if not rf.get("available"):
        out.append(f"Not available: {rf.get('reason')}")
        return out
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in roofline_rows(doc, n):
        out.append("| " + " | ".join(r[c].replace("|", "\\|") for c in COLUMNS) + " |")
    for m in rf.get("missing") or []:
        out.append(f"\n- missing: {m}")
    return out


__all__ = ["COLUMNS", "roofline_lines", "roofline_markdown", "roofline_rows", "roofline_section",
           "serving_rates_line"]
