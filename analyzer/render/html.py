"""Self-contained HTML report: one file, plotly.js embedded once, opens offline.

The page lays out the same views as the app (``charts.report_sections``): findings as cards
first, then the figures and tables. Light and dark follow ``prefers-color-scheme``; a print
stylesheet keeps cards and figures whole and drops the interactive chrome.

    >>> from analyzer.render import render
    >>> html = render(report.to_dict(), "html")                 # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any

import pandas as pd

from . import charts
from .format import alignment_line, context_line, evidence_items, fmt_share, fmt_us, short_name

#: Plotly config for every embedded figure (no logo, no "edit in chart studio", responsive).
PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "svg"},
}
SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
KERNEL_ROWS = 60  # rows of the top-kernels table in the HTML report


#: The partial plotly.js bundle shipped with the package (npm ``plotly.js-cartesian-dist-min``,
#: MIT, ``vendor/plotly.js-LICENSE``): scatter, bar, heatmap and the other cartesian traces,
#: the same plotly.js version as the full bundle of the plotly package it was taken beside.
PLOTLY_PARTIAL = "vendor/plotly-cartesian-4.1.1.min.js.gz"
PLOTLY_PARTIAL_VERSION = "4.1.1"
#: Trace types the partial bundle draws (a report figure of another type is a bug: tested).
CARTESIAN_TRACES = frozenset({"scatter", "bar", "heatmap", "histogram", "histogram2d", "box",
                              "contour", "image", "histogram2dcontour", "violin"})


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The full plotly.js bundle of the installed plotly package (no CDN; 4.8 MB)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@lru_cache(maxsize=1)
def plotly_loader() -> str:
    """A ``<script>`` body that defines ``window.__plotly``: a promise of ``window.Plotly``.

    The partial bundle travels gzip-compressed and base64-encoded (0.66 MB instead of the
    full 4.8 MB bundle) and is inflated in the browser with ``DecompressionStream`` (Chrome 80,
    Firefox 113, Safari 16.4); no network. Without it the page says the charts need a newer
    browser and the tables still work.
    """
    import base64

    data = resources.files("analyzer.render").joinpath(PLOTLY_PARTIAL).read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    return (
        "window.__plotly=(function(){if(!window.DecompressionStream){"
        "document.addEventListener('DOMContentLoaded',function(){document.querySelectorAll('.plot')"
        ".forEach(function(d){d.textContent='Charts need a browser with DecompressionStream "
        "(Chrome 80+, Firefox 113+, Safari 16.4+).';});});return Promise.reject(new Error('no DecompressionStream'));}"
        f'var b=atob("{b64}");var u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);'
        "return new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text()"
        ".then(function(t){var e=document.createElement('script');e.textContent=t;document.head.appendChild(e);"
        "return window.Plotly;});})();window.__plotly.catch(function(){});"
    )


def html_layout(fig: Any) -> Any:
    """A copy of ``fig`` with the report's neutral template (transparent, system font).

    Text and grid colours are re-set by CSS so that the same figure reads in light and dark.
    """
    import plotly.graph_objects as go

    fig = go.Figure(fig)
    fig.update_layout(
        template=go.layout.Template(layout={
            "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12,
                      "color": "#1f2328"},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
            "xaxis": {"gridcolor": "rgba(128,128,128,0.25)", "zeroline": False, "automargin": True},
            "yaxis": {"gridcolor": "rgba(128,128,128,0.25)", "zeroline": False, "automargin": True},
            "hoverlabel": {"font": {"family": "system-ui, sans-serif"}},
        }),
    )
    return fig


def figure_div(fig: Any, div_id: str) -> str:
    """``<div>`` + ``<script>`` that draws ``fig`` with the page's plotly.js.

    The figure JSON is escaped for a ``<script>`` block (``<``, ``>``, ``&`` as ``\\u00XX``),
    so a kernel named ``</script>`` cannot end it.
    """
    fig_json = html_layout(fig).to_json()
    payload = _script_safe(fig_json)
    config = _script_safe(json.dumps(PLOTLY_CONFIG))
    height = int(fig.layout.height or 360)
    return (
        f'<div class="plot" id="{div_id}" style="height:{height}px"></div>\n'
        f"<script>window.__plotly.then(function(Plotly){{var f={payload};"
        f"Plotly.newPlot({json.dumps(div_id)},f.data,f.layout,{config});}});</script>"
    )


def _script_safe(text: str) -> str:
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------


def _kpis(doc: Mapping[str, Any]) -> str:
    s = doc["summary"]
    comm = s["communication"]
    exposed = comm["exposed_us"] / s["wall_us"] if s["wall_us"] else 0.0
    items = [
        ("ranks", str(s["ranks"]), f"{len(doc['inputs'])} input file(s)"),
        ("GPU wall", fmt_us(s["wall_us"]), "summed over ranks, capture edges left out"),
        ("busy", fmt_share(s["busy_share"]), fmt_us(s["busy_us"])),
        ("idle", fmt_share(s["idle_share"]), fmt_us(s["idle_us"])),
        ("exposed comm", fmt_share(exposed), fmt_us(comm["exposed_us"])),
    ]
    if s.get("edge_us"):
        items.append(("capture edge", fmt_us(s["edge_us"]),
                      "left out: idle before the first step / after the last"))
    cells = "".join(
        f'<div class="kpi"><div class="kpi-label">{escape(k)}</div>'
        f'<div class="kpi-value">{escape(v)}</div><div class="kpi-sub">{escape(sub)}</div></div>'
        for k, v, sub in items
    )
    return f'<section class="kpis">{cells}</section>'


def _evidence_html(evidence: Mapping[str, Any]) -> str:
    items = []
    for label, lines in evidence_items(evidence):
        if len(lines) == 1:
            items.append(f"<li><span class=\"ev-k\">{escape(label)}</span> {escape(lines[0])}</li>")
        else:
            sub = "".join(f"<li>{escape(x)}</li>" for x in lines)
            items.append(f"<li><span class=\"ev-k\">{escape(label)}</span><ul>{sub}</ul></li>")
    return "".join(items)


def finding_card(i: int, f: Mapping[str, Any]) -> str:
    """One finding as a card: rank, severity, title, share and time, evidence, recommendation."""
    sev = f["severity"] if f["severity"] in SEVERITY_ORDER else "info"
    ev = _evidence_html(f["evidence"])
    return (
        f'<article class="card sev-{sev}" data-finding-id="{escape(f["id"])}">'
        f'<header><span class="rank-no">#{i}</span>'
        f'<span class="badge sev-{sev}">{escape(sev)}</span>'
        f'<h3 class="finding-title">{escape(f["title"])}</h3>'
        f'<span class="share" title="estimated time this cause costs on the wall timeline">'
        f"{escape(fmt_share(f['share']))} of wall · {escape(fmt_us(f['time_us']))}</span></header>"
        f'<ul class="evidence">{ev}</ul>'
        f'<p class="reco"><strong>Recommendation.</strong> {escape(f["recommendation"])}</p>'
        f'<p class="fid"><code>{escape(f["id"])}</code></p>'
        "</article>"
    )


def _findings(doc: Mapping[str, Any]) -> str:
    cards = "".join(finding_card(i, f) for i, f in enumerate(doc["findings"], 1))
    if not cards:
        cards = '<p class="muted">No finding: nothing stood out (see the figures below).</p>'
    abst = "".join(f"<li>Could not tell: {escape(a)}</li>" for a in doc.get("abstained", []) or [])
    abst_html = f'<ul class="abstained">{abst}</ul>' if abst else ""
    return f'<section id="findings"><h2>Findings</h2><div class="cards">{cards}</div>{abst_html}</section>'


def _fmt_cell(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    if col.startswith("share"):
        return fmt_share(float(v))
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def table_html(df: pd.DataFrame, *, table_id: str, limit: int | None = None) -> str:
    """A plain HTML table (numbers right-aligned); long kernel names are shortened with a title."""
    rows = df if limit is None else df.head(limit)
    head = "".join(f'<th class="{_align(rows, c)}">{escape(str(c))}</th>' for c in rows.columns)
    body = []
    for rec in rows.to_dict("records"):
        cells = []
        for c in rows.columns:
            v = rec[c]
            if c == "kernel":
                cells.append(f'<td class="kernel" title="{escape(str(v))}"><code>{escape(short_name(str(v), 90))}</code></td>')
            else:
                cells.append(f'<td class="{_align(rows, c)}">{escape(_fmt_cell(str(c), v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if limit is not None and len(df) > limit:
        more = f'<p class="muted">Top {limit} of {len(df)} rows (the JSON report has all).</p>'
    wrap = "table-wrap tall" if len(rows) > 15 else "table-wrap"
    return (f'<div class="{wrap}"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{more}')


def _align(df: pd.DataFrame, col: Any) -> str:
    return "num" if pd.api.types.is_numeric_dtype(df[col]) else "txt"


def _section(s: charts.Section, idx: int) -> str:
    parts = [f'<section class="view" id="view-{s.key}"><h2>{escape(s.title)}</h2>']
    if s.caption:
        parts.append(f'<p class="caption">{escape(s.caption)}</p>')
    if s.figure is not None:
        parts.append(f"<figure>{figure_div(s.figure, f'plot-{s.key}')}</figure>")
    if s.table is not None:
        if s.key == "kernels":
            parts.append('<input class="search" type="search" placeholder="Filter kernels (name or category)" '
                         'oninput="filterTable(this, \'table-kernels\')" aria-label="filter kernels">')
            parts.append(table_html(s.table, table_id="table-kernels", limit=KERNEL_ROWS))
        else:
            parts.append(table_html(s.table, table_id=f"table-{s.key}"))
    if s.note:
        parts.append(f'<p class="note">{escape(s.note)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _inputs(doc: Mapping[str, Any]) -> str:
    rows = [{"rank": i["rank"], "file": i["path"], "format": i["format"], "gpu": i.get("gpu"),
             "stage": i.get("stage"), "rank from": i.get("rank_source")} for i in doc["inputs"]]
    items = "".join(f"<li>{escape(w)}</li>" for w in doc.get("warnings", []) or [])
    notes = "".join(f"<li>{escape(n)}</li>" for n in doc.get("notes", []) or [])
    out = ['<section class="view" id="view-inputs"><h2>Inputs</h2>']
    if rows:
        out.append(table_html(pd.DataFrame(rows), table_id="table-inputs"))
    if items:
        out.append(f'<h3>Warnings</h3><ul class="warnings">{items}</ul>')
    if (clock := alignment_line(doc)) is not None:
        out.append(f'<h3>Clocks</h3><p class="clocks">{escape(clock)}</p>')
    if notes:
        out.append(f"<h3>Notes</h3><ul>{notes}</ul>")
    out.append("</section>")
    return "".join(out)


# --------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------

CSS = """
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1f2328;--muted:#59636e;--card:#f6f8fa;
--border:#d1d9e0;--grid:rgba(128,128,128,.25);--accent:#0969da;
--critical:#b42318;--high:#d1470f;--medium:#b7791f;--low:#2f6f9f;--info:#6e7781}
@media (prefers-color-scheme:dark){:root{--bg:#0e1117;--fg:#e6edf3;--muted:#9da7b3;--card:#161b22;
--border:#30363d;--grid:rgba(160,160,160,.22);--accent:#58a6ff;
--critical:#f97066;--high:#fb8c3c;--medium:#e3b341;--low:#79b8ff;--info:#8b949e}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:1.7rem;margin:0 0 4px}h2{font-size:1.25rem;margin:34px 0 6px}
h3{font-size:1.05rem;margin:0}
.muted,.caption,.meta{color:var(--muted)}.caption{margin:0 0 10px;font-size:.92rem}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:20px 0 8px}
.kpi{border:1px solid var(--border);border-radius:10px;padding:10px 14px;background:var(--card)}
.kpi-label{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.kpi-value{font-size:1.45rem;font-weight:600}.kpi-sub{color:var(--muted);font-size:.82rem}
.cards{display:grid;gap:12px}
.card{border:1px solid var(--border);border-left:5px solid var(--info);border-radius:10px;
padding:12px 16px;background:var(--card)}
.card header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 12px}
.card .finding-title{flex:1 1 320px}.rank-no{color:var(--muted);font-weight:600}
.share{font-weight:600;white-space:nowrap}
.badge{font-size:.72rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em;
padding:1px 8px;border-radius:999px;border:1px solid currentColor}
.evidence{margin:8px 0 6px;padding-left:20px;color:var(--fg);font-size:.9rem}
.evidence li{overflow-wrap:anywhere}.evidence ul{padding-left:18px;margin:2px 0}
.ev-k{color:var(--muted)}.ev-k::after{content:":"}.reco{margin:6px 0 0}.fid{margin:4px 0 0;color:var(--muted)}
.sev-critical{border-left-color:var(--critical)}.badge.sev-critical{color:var(--critical)}
.sev-high{border-left-color:var(--high)}.badge.sev-high{color:var(--high)}
.sev-medium{border-left-color:var(--medium)}.badge.sev-medium{color:var(--medium)}
.sev-low{border-left-color:var(--low)}.badge.sev-low{color:var(--low)}
.sev-info{border-left-color:var(--info)}.badge.sev-info{color:var(--info)}
.abstained{color:var(--muted);font-size:.9rem}
figure{margin:0}.plot{width:100%}
.note{color:var(--muted);font-style:italic}
.table-wrap{overflow-x:auto;border:1px solid var(--border);border-radius:8px;margin-top:10px}
table{border-collapse:collapse;width:100%;font-size:.87rem}
th,td{padding:5px 10px;border-bottom:1px solid var(--border);vertical-align:top}
th{background:var(--card);text-align:left;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.kernel{max-width:640px;overflow-wrap:anywhere}
.table-wrap.tall{max-height:560px;overflow-y:auto}
tbody tr:last-child td{border-bottom:0}
.search{margin-top:6px;width:min(420px,100%);padding:6px 10px;border-radius:8px;
border:1px solid var(--border);background:var(--bg);color:var(--fg);font:inherit}
.warnings li{color:var(--high)}
footer{margin-top:40px;color:var(--muted);font-size:.85rem;border-top:1px solid var(--border);padding-top:10px}
/* plotly: text and grid follow the page colours (light and dark) */
.js-plotly-plot .xtick text,.js-plotly-plot .ytick text,.js-plotly-plot .g-xtitle text,
.js-plotly-plot .g-ytitle text,.js-plotly-plot text.legendtext,.js-plotly-plot .colorbar text,
.js-plotly-plot .cbaxis text,.js-plotly-plot .gtitle,.js-plotly-plot .heatmaplayer text{fill:var(--fg)!important}
.js-plotly-plot .gridlayer path{stroke:var(--grid)!important}
.js-plotly-plot .modebar-btn path{fill:var(--muted)!important}
@media print{
:root{color-scheme:light;--bg:#fff;--fg:#000;--muted:#444;--card:#fff;--border:#bbb;--grid:rgba(0,0,0,.15)}
body{font-size:10.5pt}main{max-width:none;padding:0}
.card,.kpi,figure,table,tr{break-inside:avoid}h2{break-after:avoid}
.search,.modebar-container{display:none!important}
.table-wrap,.table-wrap.tall{overflow:visible;max-height:none;border:0}th{position:static}
a{color:inherit;text-decoration:none}
}
"""

JS = """
function filterTable(input, id){
  var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
  document.querySelectorAll('#' + id + ' tbody tr').forEach(function(tr){
    var t = tr.textContent.toLowerCase() + ' ' + (tr.querySelector('td.kernel') || {title:''}).title.toLowerCase();
    tr.style.display = words.every(function(w){ return t.indexOf(w) >= 0; }) ? '' : 'none';
  });
}
function resizePlots(){
  if (!window.Plotly) return;
  document.querySelectorAll('.js-plotly-plot').forEach(function(d){ Plotly.Plots.resize(d); });
}
window.addEventListener('beforeprint', resizePlots);
window.addEventListener('afterprint', resizePlots);
"""


def render_html(doc: Mapping[str, Any]) -> str:
    """Render a report dict (``Report.to_dict()``) as one self-contained HTML page."""
    sections = charts.report_sections(doc)
    has_plots = any(s.figure is not None for s in sections)
    s = doc["summary"]
    top = doc["findings"][0]["title"] if doc["findings"] else "no finding"
    body = [
        "<header><h1>LLM serving trace analysis</h1>",
        (f'<p class="meta">{s["ranks"]} rank(s) from {len(doc["inputs"])} file(s) · top finding: '
        f"<strong>{escape(top)}</strong> · trace-analyzer {escape(str(doc['tool']['version']))}, "
        f"report schema {escape(str(doc['schema_version']))}</p>"
         + (f'<p class="meta run-context">{escape(context_line(doc) or "")}</p>' if context_line(doc) else "")
         + "</header>"),
        _kpis(doc),
        _findings(doc),
    ]
    body.extend(_section(sec, i) for i, sec in enumerate(sections))
    body.append(_inputs(doc))
    body.append(
        "<footer>Times are GPU time on each rank's own clock; shares are of the GPU wall time "
        "(first to last GPU activity), summed over ranks. Generated offline by trace-analyzer; "
        "this file needs no network.</footer>"
    )
    plotly_tag = f"<script>{plotly_loader()}</script>" if has_plots else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>Trace analysis: {escape(top)}</title>"
        f"<style>{CSS}</style>{plotly_tag}<script>{JS}</script></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
