"""A diff dict (``analyzer.diff.compare``) as text, Markdown, JSON or self-contained HTML.

The tables are built once (``diff_tables``) and formatted three ways; the HTML adds the
figures of ``diff_charts``.

    >>> from analyzer.render.diff import render_diff
    >>> print(render_diff(diff, "markdown"))                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from .format import fmt_us, short_name

DIFF_FORMATS = ("text", "json", "markdown", "html")
KERNEL_ROWS = 15  # rows of the slower / faster / variant lists in text and Markdown
CAPPED_TABLES = ("kernels-slower", "kernels-faster", "kernels-variants")  # added / removed: all rows


@dataclass(frozen=True)
class Table:
    """One side-by-side table: ``rows`` of cells already formatted."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str | None = None


def fmt_delta_us(us: float | None) -> str:
    if us is None:
        return "-"
    return ("+" if us > 0 else "−" if us < 0 else "±") + fmt_us(abs(us))


def fmt_rel(rel: float | None, d: float | None = None) -> str:
    if rel is None:
        return "-" if not d else "new"
    return f"{rel:+.1%}" if rel else "0.0%"


def _row(label: str, d: Mapping[str, Any], us: bool = True) -> list[str]:
    f = fmt_us if us else (lambda v: "-" if v is None else f"{v:,.0f}")
    dd = fmt_delta_us(d["delta"]) if us else ("-" if d["delta"] is None else f"{d['delta']:+,.0f}")
    return [label, f(d["base"]), f(d["new"]), dd, fmt_rel(d["rel"], d["delta"])]


def _changed(d: Mapping[str, Any]) -> bool:
    return bool(d.get("base") or d.get("new"))


def diff_tables(diff: Mapping[str, Any]) -> list[Table]:
    """Every side-by-side table of a diff, in reading order."""
    cols = ["", "base", "new", "delta", "rel"]
    out: list[Table] = []
    out.append(Table("totals", "Totals (summed over ranks)", cols,
                     [_row(k, v) for k, v in diff["totals"].items()]))
    out.append(Table("idle", "Idle by cause (summed over ranks)", cols,
                     [_row(k.replace("_", " "), v) for k, v in diff["idle_by_cause"].items() if _changed(v)]))
    out.append(Table("categories", "GPU time by category (summed over ranks)", cols + ["events"],
                     [_row(k, v["time_us"]) + [f"{v['count']['base']:,.0f} → {v['count']['new']:,.0f}"]
                      for k, v in diff["categories"].items()]))
    prow = []
    for p, v in diff["phases"].items():
        t = v["test"]
        sig = ("yes" if t["significant"] else "no") + (f" (p={t['p_value']:.2g})" if t["p_value"] is not None else " (too few steps)")
        prow.append([p, f"{v['steps']['base']} → {v['steps']['new']}",
                     f"{fmt_us(v['step_p50_us']['base'])} → {fmt_us(v['step_p50_us']['new'])}",
                     fmt_rel(v["step_p50_us"]["rel"], v["step_p50_us"]["delta"]),
                     f"{fmt_us(v['step_p90_us']['base'])} → {fmt_us(v['step_p90_us']['new'])}",
                     fmt_rel(v["step_p90_us"]["rel"], v["step_p90_us"]["delta"]),
                     fmt_delta_us(v["gpu_busy_us"]["delta"]), sig])
    out.append(Table("phases", "Per-step GPU time by phase (representative rank)",
                     ["phase", "steps", "p50", "Δp50", "p90", "Δp90", "Δbusy", "significant"], prow,
                     None if prow else "no step annotations on either side"))
    pc = []
    for p, v in diff["phases"].items():
        if p == "all":
            continue
        pc.append(_row(f"{p}: busy", v["gpu_busy_us"]))
        pc += [_row(f"{p}: {c}", d) for c, d in v["categories_us"].items()]
    out.append(Table("phase-categories", "GPU time by phase and category (representative rank)", cols, pc,
                     None if pc else "no step annotations on either side"))
    comm = diff["communication"]
    crow = [_row("all: time", comm["time_us"]), _row("all: exposed", comm["exposed_us"])]
    for c, v in comm["by_collective"].items():
        crow.append(_row(f"{c}: time", v["time_us"]))
        crow.append(_row(f"{c}: exposed", v["exposed_us"]))
    for key, v in comm["by_role_collective"].items():
        bw = v["bus_gbps"]
        if bw["base"] is not None or bw["new"] is not None:
            fb = "-" if bw["base"] is None else f"{bw['base']:.1f} GB/s"
            fn = "-" if bw["new"] is None else f"{bw['new']:.1f} GB/s"
            crow.append([f"{key}: bus bandwidth", fb, fn, "-", fmt_rel(bw["rel"], bw["delta"])])
        crow.append(_row(f"{key}: exposed", v["exposed_us"]))
    out.append(Table("communication", "Communication", cols,
                     crow if (comm["time_us"]["base"] or comm["time_us"]["new"]) else [],
                     None if (comm["time_us"]["base"] or comm["time_us"]["new"]) else "no communication on either side"))
    k = diff["kernels"]
    unit = diff["basis"]["label"]
    kcols = ["kernel", "category", f"base {unit}", f"new {unit}", "delta", "rel", "launches"]
    c = k["counts"]
    out.append(Table("kernels", "Kernels (matched by normalised name)", ["added", "removed", "slower",
                     "faster", "unchanged", "variants changed"],
                     [[str(c["added"]), str(c["removed"]), str(c["slower"]), str(c["faster"]),
                       str(c["unchanged"]), str(c.get("variants_changed", 0))]]))
    for status in ("slower", "faster", "added", "removed"):
        if not k[status]:
            continue
        width = 80 if status in ("slower", "faster") else 240  # one-side kernels: whole names
        rows = [[short_name(r["name"], width), r["category"], fmt_us(r["base_us"]), fmt_us(r["new_us"]),
                 fmt_delta_us(r["delta_us"]), fmt_rel(r["rel"], r["delta_us"]),
                 f"{r['base_count']:,} → {r['new_count']:,}"] for r in k[status]]
        note = None
        if status == "added":
            pairs = [f"{short_name(r['name'], 60)} replaces {', '.join(short_name(x, 60) for x in r['replaces'])}"
                     for r in k[status] if r.get("replaces")]
            note = "; ".join(pairs) or None
        out.append(Table(f"kernels-{status}", f"Kernels {status} ({k['counts'][status]})", kcols, rows, note))
    vrow: list[list[str]] = []
    for v in k.get("variants", []):
        capped = " (of the top 32)" if v["truncated"] else ""
        vrow += [[short_name(v["name"], 60), f"only new{capped}", short_name(x, 100)] for x in v["added"]]
        vrow += [[short_name(v["name"], 60), f"only base{capped}", short_name(x, 100)] for x in v["removed"]]
    if vrow:
        out.append(Table("kernels-variants",
                         f"Kernel variants only in one run ({c.get('variants_changed', 0)} names)",
                         ["kernel", "run", "raw name"], vrow,
                         "raw names (template instances, signatures) that fold into a kernel present in both runs"))
    f = diff["findings"]
    frow = [[r["id"], "appeared", "-", f"#{r['new_rank']} {r['new_severity']}", fmt_delta_us(r["time_us"]["delta"])] for r in f["appeared"]]
    frow += [[r["id"], "disappeared", f"#{r['base_rank']} {r['base_severity']}", "-", fmt_delta_us(r["time_us"]["delta"])] for r in f["disappeared"]]
    frow += [[r["id"], "changed", f"#{r['base_rank']} {r['base_severity']}", f"#{r['new_rank']} {r['new_severity']}",
              fmt_delta_us(r["time_us"]["delta"])] for r in f["changed"]]
    out.append(Table("findings", "Findings", ["finding", "change", "base", "new", "Δtime"], frow,
                     f"unchanged: {', '.join(f['unchanged'])}" if f["unchanged"] else None))
    ctx = diff["context"]
    xrow = [[x["field"], str(x["base"]), str(x["new"])] for x in ctx["fields"] if not x["same"]]
    sa = ctx["server_args"]
    xrow += [[f"server_args.{x['key']}", json.dumps(x["base"]), json.dumps(x["new"])] for x in sa["changed"]]
    xrow += [[f"server_args.{x['key']}", "(absent)", json.dumps(x["new"])] for x in sa["added"]]
    xrow += [[f"server_args.{x['key']}", json.dumps(x["base"]), "(absent)"] for x in sa["removed"]]
    out.append(Table("context", "Run context that differs", ["field", "base", "new"], xrow,
                     None if xrow else "engine, parallel sizes, dtypes, GPU and server args are the same"))
    return out


def _gate_lines(diff: Mapping[str, Any]) -> list[str]:
    out = []
    for g in diff.get("gate", []):
        state = "BREACHED" if g["breached"] else "ok"
        note = f" ({g['note']})" if g.get("note") else ""
        out.append(f"{state}: {g['expr']} (measured {g['measured']}){note}")
    return out


def verdict_evidence(v: Mapping[str, Any]) -> str:
    """One line of evidence for a verdict item."""
    ev = v["evidence"]
    parts = []
    for key, val in ev.items():
        if key == "kernels":
            parts.extend(f"{short_name(k['name'], 60)} {fmt_delta_us(k['delta_us'])}" for k in val)
        elif isinstance(val, list):
            parts.append(f"{key} {' → '.join(fmt_us(x) if key.endswith('_us') else str(x) for x in val)}")
        elif isinstance(val, dict):
            parts.extend(f"{k} {fmt_delta_us(x)}" for k, x in val.items())
        elif key.endswith("_us"):
            parts.append(f"{key[:-3]} {fmt_us(val)}")
        elif val is not None:
            parts.append(f"{key} {val:.3g}" if isinstance(val, float) else f"{key} {val}")
    return "; ".join(parts)


def _intro(diff: Mapping[str, Any]) -> list[str]:
    b, n = diff["base"], diff["new"]
    basis = diff["basis"]
    return [
        f"base: {b['label']} ({b['source']}, {basis['ranks']['base']} rank(s), {basis['steps']['base']} step(s))",
        f"new:  {n['label']} ({n['source']}, {basis['ranks']['new']} rank(s), {basis['steps']['new']} step(s))",
        f"changes ranked {basis['label']}",
    ]


def render_diff_text(diff: Mapping[str, Any]) -> str:
    lines = [f"trace-analyzer diff {diff['tool']['version']} — {diff['headline']}", *_intro(diff)]
    lines.extend(f"warning: {w}" for w in diff.get("warnings", []))
    lines.extend(_gate_lines(diff))
    lines += ["", f"Verdict (biggest change {diff['basis']['label']} first)"]
    if not diff["verdict"]:
        lines.append("  no significant change")
    for i, v in enumerate(diff["verdict"], 1):
        lines.append(f"  {i}. {v['kind']:<11} {v['title']}  [{v['id']}]")
        lines.append(f"     evidence: {verdict_evidence(v)}")
    for t in diff_tables(diff):
        lines += ["", t.title]
        if t.rows:
            rows = t.rows[:KERNEL_ROWS] if t.key in CAPPED_TABLES else t.rows
            widths = [max(len(str(r[i])) for r in [t.columns, *rows]) for i in range(len(t.columns))]
            for r in [t.columns, *rows]:
                lines.append("  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                              for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            if len(t.rows) > len(rows):
                lines.append(f"  … {len(t.rows) - len(rows)} more (see --format json)")
        elif not t.note:
            lines.append("  none")
        if t.note:
            lines.append(f"  {t.note}")
    return "\n".join(lines) + "\n"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_diff_markdown(diff: Mapping[str, Any]) -> str:
    out = [f"# Trace diff: {_md(diff['headline'])}", ""]
    out += [f"- {_md(x)}" for x in _intro(diff)] + [""]
    out += [f"> **Warning:** {_md(w)}" for w in diff.get("warnings", [])]
    out += [f"- **Gate** {_md(g)}" for g in _gate_lines(diff)]
    out += ["", "## Verdict", ""]
    if not diff["verdict"]:
        out.append("No significant change.")
    for i, v in enumerate(diff["verdict"], 1):
        out.append(f"{i}. **{_md(v['title'])}** (`{v['id']}`, {v['kind']}): {_md(verdict_evidence(v))}")
    for t in diff_tables(diff):
        out += ["", f"## {t.title}", ""]
        if t.rows:
            rows = t.rows[:KERNEL_ROWS] if t.key in CAPPED_TABLES else t.rows
            out.append("| " + " | ".join(_md(c) or " " for c in t.columns) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(t.columns) - 1)) + "|")
            out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
            if len(t.rows) > len(rows):
                out.append(f"\n{len(t.rows) - len(rows)} more in the JSON diff.")
        elif not t.note:
            out.append("None.")
        if t.note:
            out += ["", _md(t.note)]
    return "\n".join(out) + "\n"


def render_diff_html(diff: Mapping[str, Any]) -> str:
    from . import diff_charts
    from .html import CSS, JS, figure_div, plotly_js

    figs = diff_charts.diff_figures(diff)
    body = [f"<header><h1>Trace diff</h1><p class=\"meta\">{escape(diff['headline'])} · trace-analyzer "
            f"{escape(str(diff['tool']['version']))}, diff schema {escape(diff['schema_version'])}</p>"
            + "".join(f'<p class="meta">{escape(x)}</p>' for x in _intro(diff)) + "</header>"]
    body += [f'<p class="note">{escape(w)}</p>' for w in diff.get("warnings", [])]
    body += [f'<p class="note">{escape(g)}</p>' for g in _gate_lines(diff)]
    cards = []
    for i, v in enumerate(diff["verdict"], 1):
        cards.append(f'<article class="card sev-{"high" if v["kind"] == "regression" else "info"}" data-verdict-id="{escape(v["id"])}">'
                     f"<h3>{i}. {escape(v['title'])}</h3><p><code>{escape(v['id'])}</code> · {v['kind']}</p>"
                     f"<p>{escape(verdict_evidence(v))}</p></article>")
    body.append('<section class="view" id="view-verdict"><h2>Verdict</h2>'
                + ("".join(cards) or "<p>No significant change.</p>") + "</section>")
    for key, title, fig in figs:
        body.append(f'<section class="view" id="view-{key}"><h2>{escape(title)}</h2>'
                    f"<figure>{figure_div(fig, f'plot-{key}')}</figure></section>")
    for t in diff_tables(diff):
        parts = [f'<section class="view" id="view-{t.key}"><h2>{escape(t.title)}</h2>']
        if t.rows:
            head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
            rows = "".join("<tr>" + "".join(
                f'<td class="{"txt" if i == 0 else "num"}">{escape(str(c))}</td>' for i, c in enumerate(r))
                + "</tr>" for r in t.rows)
            parts.append(f'<div class="table-wrap"><table id="table-{t.key}"><thead><tr>{head}</tr></thead>'
                         f"<tbody>{rows}</tbody></table></div>")
        if t.note:
            parts.append(f'<p class="note">{escape(t.note)}</p>')
        parts.append("</section>")
        body.append("".join(parts))
    plotly_tag = f"<script>{plotly_js()}</script>" if figs else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>Trace diff: {escape(diff['headline'])}</title>"
            f"<style>{CSS}</style>{plotly_tag}<script>{JS}</script></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def render_diff(diff: Mapping[str, Any], fmt: str) -> str:
    """Render a diff dict in one of ``DIFF_FORMATS``."""
    if fmt == "json":
        return json.dumps(diff, indent=2, allow_nan=False) + "\n"
    if fmt == "text":
        return render_diff_text(diff)
    if fmt == "markdown":
        return render_diff_markdown(diff)
    if fmt == "html":
        return render_diff_html(diff)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(DIFF_FORMATS)}")
