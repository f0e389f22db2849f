"""The roofline views (``report["serving"]["roofline"]``): text and Markdown lines, the
table and the chart that ``charts.report_sections`` shows in the HTML report and the app.

    >>> rows = roofline_rows(report.to_dict(), 10)     # doctest: +SKIP
    >>> fig = roofline_figure(report.to_dict())        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .format import fmt_share, fmt_us, short_name

_MS = 1e-3  # microseconds -> milliseconds

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


FAMILY_COLORS: dict[str, str] = {
    "gemm": "#4C78A8", "moe_gemm": "#9D755D", "attention": "#E45756", "kv_write": "#F58518",
    "norm": "#72B7B2", "elementwise": "#54A24B", "other": "#8E8E93",
}
ROOF_DASH = {"fp4": "dot", "fp8": "dash", "bf16": "solid", "fp16": "solid", "tf32": "dashdot", "fp32": "longdash"}


def _roofline(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return roofline_section(doc)


def roofline_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Op groups (op + shapes) with count, time, share, achieved rates, intensity and bound;
    then the kernels that have no op (by kernel name, with the reason)."""
    rf = _roofline(doc)
    rows = [{"op": g["op"], "family": g["family"], "shapes": g.get("shapes") or "", "dtype": g.get("dtype"),
             "count": g["count"], "time (ms)": g["time_us"] * _MS, "share": g["share"],
             "TFLOP/s": g.get("tflops"), "TB/s": g.get("tbps"), "FLOP/byte": g.get("intensity"),
             "roof fraction": g.get("roof_fraction"), "bound": g.get("bound"), "note": g.get("reason") or ""}
            for g in rf.get("groups") or []]
    rows += [{"op": "(kernel) " + k["kernel"], "family": "", "shapes": "", "dtype": None, "count": k["count"],
              "time (ms)": k["time_us"] * _MS, "share": k["share"], "TFLOP/s": None, "TB/s": None,
              "FLOP/byte": None, "roof fraction": None, "bound": None, "note": k["reason"]}
             for k in rf.get("by_kernel") or []]
    return pd.DataFrame(rows)


def roofline_figure(doc: Mapping[str, Any]) -> Any | None:
    """Arithmetic intensity (FLOP/byte) vs achieved TFLOP/s, log-log: one point per op group
    sized by its time, the GPU's roofs (HBM slope, then the peak of each dtype present)."""
    rf = _roofline(doc)
    pts = [g for g in rf.get("groups") or [] if g.get("intensity") and g.get("tflops")]
    if not pts:
        return None
    from .charts import _base_layout, _go

    go = _go()
    fig = go.Figure()
    xs = np.array([g["intensity"] for g in pts], float)
    lo, hi = max(xs.min() / 4, 1e-2), max(xs.max() * 4, 10.0)
    hbm = rf.get("hbm_tbps")
    peaks = rf.get("peaks_tflops") or {}
    dtypes = sorted({g.get("peak_dtype") for g in pts if g.get("peak_dtype")} or {"bf16"})
    if hbm:
        for dt in dtypes:
            peak = peaks.get(dt)
            if not peak:
                continue
            ridge = peak / hbm
            x = np.array([lo, min(max(ridge, lo), hi), hi])
            fig.add_trace(go.Scatter(x=x, y=np.minimum(peak, x * hbm), mode="lines",
                                     line={"color": "#444", "width": 1.5, "dash": ROOF_DASH.get(dt, "solid")},
                                     name=f"roof {dt}: {peak:g} TFLOP/s, {hbm:g} TB/s", hoverinfo="name"))
    share = np.array([g["share"] for g in pts], float)
    size = 8 + 40 * np.sqrt(share / max(share.max(), 1e-12))
    fams = [g["family"] for g in pts]
    for fam in dict.fromkeys(fams):
        idx = [i for i, f in enumerate(fams) if f == fam]
        fig.add_trace(go.Scatter(
            x=xs[idx], y=[pts[i]["tflops"] for i in idx], mode="markers", name=fam,
            marker={"size": size[idx], "color": FAMILY_COLORS.get(fam, "#8E8E93"), "opacity": 0.75,
                    "line": {"width": 1, "color": "white"}},
            text=[f"{pts[i]['op']}<br>{pts[i].get('shapes') or ''}<br>{pts[i]['count']} calls, "
                  f"{pts[i]['time_us'] * _MS:.2f} ms ({100 * pts[i]['share']:.1f}%)<br>"
                  f"bound: {pts[i].get('bound') or '-'}" for i in idx],
            hovertemplate="%{text}<br>%{x:.1f} FLOP/B, %{y:.1f} TFLOP/s<extra></extra>"))
    _base_layout(fig, height=460, xtitle="arithmetic intensity (FLOP / byte)", ytitle="achieved TFLOP/s")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def roofline_note(doc: Mapping[str, Any]) -> str | None:
    rf = _roofline(doc)
    if not rf:
        return "No roofline in this report."
    if not rf.get("available"):
        return f"No roofline: {rf.get('reason')}."
    return None


__all__ = ["COLUMNS", "roofline_figure", "roofline_lines", "roofline_markdown", "roofline_note",
           "roofline_rows", "roofline_section", "roofline_table", "serving_rates_line"]
