"""The analysis page as data: what the app shows for one report dict, in order.

``app.py`` only lays this out (metrics, finding cards, downloads, then ``sections`` from
``analyzer.render.charts``); everything computed or formatted for display is here, so it is
tested without a browser.

    >>> page = build_page(report.to_dict())                         # doctest: +SKIP
    >>> page.cards[0].title, [d.file_name for d in page.downloads]  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..render import charts
from ..render.format import context_line, fmt_share, fmt_us
from ..render.html import evidence_items

#: Severity -> Streamlit badge colour.
SEVERITY_COLORS: dict[str, str] = {
    "critical": "red", "high": "orange", "medium": "yellow", "low": "blue", "info": "gray",
}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~$])")


def md_escape(text: str) -> str:
    """Escape Markdown (and HTML) specials so kernel names show as typed: no live link,
    image, HTML or autolinked URL, no control character (``analyzer.safety``)."""
    from ..safety import break_autolinks, terminal_safe

    return break_autolinks(_MD_SPECIAL.sub(r"\\\1", terminal_safe(str(text))))


@dataclass(frozen=True)
class Metric:
    label: str
    value: str
    help: str = ""


@dataclass(frozen=True)
class Card:
    """One finding, formatted for display."""

    number: int
    id: str
    title: str
    severity: str
    color: str
    share_text: str
    time_text: str
    evidence: list[tuple[str, list[str]]]
    recommendation: str

    def evidence_markdown(self) -> str:
        """Evidence as a Markdown list (nested lines for kernels and steps), escaped."""
        out = []
        for label, lines in self.evidence:
            if len(lines) == 1:
                out.append(f"- **{md_escape(label)}:** {md_escape(lines[0])}")
            else:
                out.append(f"- **{md_escape(label)}:**")
                out.extend(f"    - {md_escape(x)}" for x in lines)
        return "\n".join(out)


@dataclass(frozen=True)
class Download:
    """A download button: ``data()`` renders the file only when it is asked for."""

    label: str
    file_name: str
    mime: str
    data: Callable[[], str]


@dataclass(frozen=True)
class Page:
    title: str
    subtitle: str
    metrics: list[Metric]
    cards: list[Card]
    abstained: list[str]
    warnings: list[str]
    notes: list[str]
    sections: list[charts.Section]
    downloads: list[Download]
    inputs: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def top_title(self) -> str | None:
        return self.cards[0].title if self.cards else None


def build_cards(doc: Mapping[str, Any]) -> list[Card]:
    out = []
    for i, f in enumerate(doc.get("findings", []), 1):
        sev = f["severity"] if f["severity"] in SEVERITY_COLORS else "info"
        out.append(Card(
            number=i, id=f["id"], title=f["title"], severity=sev, color=SEVERITY_COLORS[sev],
            share_text=f"{fmt_share(f['share'])} of wall", time_text=fmt_us(f["time_us"]),
            evidence=evidence_items(f.get("evidence") or {}), recommendation=f["recommendation"],
        ))
    return out


def build_metrics(doc: Mapping[str, Any]) -> list[Metric]:
    s = doc["summary"]
    comm = s["communication"]
    exposed = comm["exposed_us"] / s["wall_us"] if s["wall_us"] else 0.0
    return [
        Metric("Ranks", str(s["ranks"]), f"{len(doc.get('inputs', []))} input file(s)"),
        Metric("GPU wall", fmt_us(s["wall_us"]), "first to last GPU activity minus the capture "
               "edges, summed over ranks"),
        Metric("Busy", fmt_share(s["busy_share"]), f"{fmt_us(s['busy_us'])} with a kernel, copy or memset running"),
        Metric("Idle", fmt_share(s["idle_share"]), f"{fmt_us(s['idle_us'])} with the GPU waiting"),
        Metric("Exposed comm", fmt_share(exposed),
               f"{fmt_us(comm['exposed_us'])} of communication not hidden behind compute"),
    ] + ([Metric("Capture edge", fmt_us(s["edge_us"]), "left out: idle before the first step and "
                 "after the last (profiler warm-up, teardown)")] if s.get("edge_us") else [])


def build_downloads(doc: Mapping[str, Any], stem: str = "trace-report",
                    perfetto: Callable[[], str] | None = None) -> list[Download]:
    """The report downloads; ``perfetto`` (renders the Perfetto JSON trace when called) adds
    "Perfetto trace": it needs the events, which the report dict does not hold."""
    from ..render import render

    d = dict(doc)
    out = [
        Download("HTML report", f"{stem}.html", "text/html", lambda: render(d, "html")),
        Download("Markdown", f"{stem}.md", "text/markdown", lambda: render(d, "markdown")),
        Download("JSON", f"{stem}.json", "application/json", lambda: render(d, "json")),
    ]
    if perfetto is not None:
        out.append(Download("Perfetto trace", f"{stem}.perfetto.json", "application/json", perfetto))
    return out


def inputs_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    rows = [{"rank": i["rank"], "file": i["path"].rsplit("/", 1)[-1], "format": i["format"],
             "GPU": i.get("gpu"), "stage": i.get("stage"), "rank from": i.get("rank_source")}
            for i in doc.get("inputs", [])]
    return pd.DataFrame(rows).dropna(axis=1, how="all") if rows else pd.DataFrame()


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """A table for ``st.dataframe``: shares as percentages, floats rounded."""
    out = df.copy()
    for col in list(out.columns):
        if str(col).startswith("share"):
            out[col] = pd.to_numeric(out[col], errors="coerce") * 100
            out = out.rename(columns={col: f"{col} (%)"})
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].round(3)
    return out


def run_files_line(doc: Mapping[str, Any], files: Sequence[tuple[str, int]] = ()) -> str:
    """Which files make this run: their names and sizes (as uploaded), ranks and engine.

    >>> run_files_line({"summary": {"ranks": 2}, "context": {"engine": "sglang"}},
    ...                [("a-TP-0.trace.json.gz", 2048), ("a-TP-1.trace.json.gz", 2048)])
    'This run: a-TP-0.trace.json.gz (2.0 KiB), a-TP-1.trace.json.gz (2.0 KiB) · 2 rank(s) · engine sglang'
    """
    from .uploads import human_bytes

    parts = []
    if files:
        parts.append(", ".join(f"{n} ({human_bytes(b)})" for n, b in files))
    parts.append(f"{(doc.get('summary') or {}).get('ranks', 0)} rank(s)")
    eng = (doc.get("context") or {}).get("engine")
    if eng:
        parts.append(f"engine {eng}")
    return "This run: " + " · ".join(parts)


def skipped_notes(doc: Mapping[str, Any]) -> list[str]:
    """Notes about input files that were left out (shown as a visible warning)."""
    return [n for n in doc.get("notes") or [] if "skipped" in n.lower()]


def build_page(doc: Mapping[str, Any], *, stem: str = "trace-report",
               perfetto: Callable[[], str] | None = None) -> Page:
    """Everything the analysis page shows for one report dict (``perfetto``: see build_downloads)."""
    s = doc["summary"]
    top = doc["findings"][0]["title"] if doc.get("findings") else "no finding"
    subtitle = (f"{s['ranks']} rank(s) from {len(doc.get('inputs', []))} file(s) · "
                f"top finding: {top} · trace-analyzer {doc['tool']['version']}")
    run = context_line(doc)
    if run:
        subtitle += "  \n" + run
    return Page(
        title="LLM serving trace analysis",
        subtitle=subtitle,
        metrics=build_metrics(doc),
        cards=build_cards(doc),
        abstained=list(doc.get("abstained") or []),
        warnings=list(doc.get("warnings") or []),
        notes=list(doc.get("notes") or []),
        sections=charts.report_sections(doc),
        downloads=build_downloads(doc, stem, perfetto),
        inputs=inputs_table(doc),
    )
