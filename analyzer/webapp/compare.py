"""The Compare page as data: two runs (traces or a saved report each) -> verdict, tables, charts.

``app.py`` only lays this out; nothing here imports Streamlit.

    >>> doc, source = side_report([Upload("base.json", data)], limits)     # doctest: +SKIP
    >>> page = build_compare_page(compare(base, new), base, new)          # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..diff import compare
from ..diff.inputs import is_report
from ..model import BadInputError
from ..render import charts
from ..render.diff import diff_tables, fmt_delta_us, fmt_rel, render_diff, verdict_evidence
from ..render.diff_charts import diff_figures
from ..render.format import fmt_us
from .page import Download
from .session import OnProgress, Options, run_analysis
from .uploads import Limits, Upload, check_sizes, prepared_inputs

KIND_COLORS = {"regression": "red", "improvement": "green"}


@dataclass(frozen=True)
class DeltaMetric:
    """A headline figure: the new run's value, and its change from the base (more time = worse)."""

    label: str
    value: str
    delta: str
    help: str = ""


@dataclass(frozen=True)
class VerdictCard:
    number: int
    id: str
    title: str
    kind: str
    color: str
    evidence: str


@dataclass(frozen=True)
class ComparePage:
    title: str
    headline: str
    subtitle: str
    changed: bool
    metrics: list[DeltaMetric]
    cards: list[VerdictCard]
    warnings: list[str]
    sections: list[charts.Section]
    downloads: list[Download]


def _as_report(upload: Upload) -> dict[str, Any] | None:
    """The upload's report when it is a saved trace-analyzer JSON report, else None."""
    if not upload.name.lower().endswith(".json") or b'"schema_version"' not in upload.data[:4096]:
        return None
    try:
        doc = json.loads(upload.data)
    except ValueError:
        return None
    if isinstance(doc, Mapping) and doc.get("kind") == "diff":
        raise BadInputError(f"{upload.name} is a diff, not a report: upload a report or traces")
    return doc if is_report(doc) else None


def side_report(uploads: Sequence[Upload], limits: Limits, options: Options | None = None,
                on_progress: OnProgress | None = None) -> tuple[dict[str, Any], str]:
    """``(report dict, "report" | "trace")`` for one side: a saved report as is, traces analysed."""
    if not uploads:
        raise BadInputError("nothing uploaded for this side")
    check_sizes(uploads, limits)
    if len(uploads) == 1 and (doc := _as_report(uploads[0])) is not None:
        return doc, "report"
    with prepared_inputs(list(uploads), limits) as paths:
        return run_analysis(paths, options or Options(), on_progress), "trace"


def compare_sides(base: tuple[dict[str, Any], str], new: tuple[dict[str, Any], str],
                  labels: tuple[str, str] = ("base", "new")) -> dict[str, Any]:
    """The diff of two sides as ``side_report`` returns them."""
    return compare(base[0], new[0], labels=labels, sources=(base[1], new[1]))


def _metric(label: str, d: Mapping[str, Any], help_: str) -> DeltaMetric:
    return DeltaMetric(label, fmt_us(d["new"]), f"{fmt_delta_us(d['delta'])} ({fmt_rel(d['rel'], d['delta'])})",
                       f"{help_}; base {fmt_us(d['base'])}")


def _table_frame(rows: list[list[str]], columns: list[str]) -> pd.DataFrame:
    cols = [c or "figure" for c in columns]
    return pd.DataFrame(rows, columns=cols)


def build_compare_page(diff: Mapping[str, Any], base: Mapping[str, Any] | None = None,
                       new: Mapping[str, Any] | None = None, *, stem: str = "trace-diff") -> ComparePage:
    """Everything the Compare page shows for one diff (the reports add the step box plots)."""
    t = diff["totals"]
    metrics = [
        _metric("Wall", t["wall"], "GPU wall time, summed over ranks"),
        _metric("Busy", t["busy"], "GPU busy time (kernels, copies), summed over ranks"),
        _metric("Idle", t["idle"], "GPU idle inside the analysed wall"),
        _metric("Exposed communication", diff["communication"]["exposed_us"],
                "communication not hidden behind compute"),
    ]
    cards = [VerdictCard(i, v["id"], v["title"], v["kind"], KIND_COLORS.get(v["kind"], "gray"),
                         verdict_evidence(v)) for i, v in enumerate(diff["verdict"], 1)]
    sections = [charts.Section(key=f"diff-{k}", title=title, figure=fig)
                for k, title, fig in diff_figures(diff, base, new)]
    for tb in diff_tables(diff):
        sections.append(charts.Section(key=f"diff-{tb.key}", title=tb.title,
                                       table=_table_frame(tb.rows, tb.columns) if tb.rows else None,
                                       note=tb.note))
    b, n = diff["base"], diff["new"]
    basis = diff["basis"]
    subtitle = (f"base: {b['label']} ({b['source']}, {basis['steps']['base']} steps) · new: {n['label']} "
                f"({n['source']}, {basis['steps']['new']} steps) · changes {basis['label']}")
    d = dict(diff)
    downloads = [
        Download("HTML diff", f"{stem}.html", "text/html", lambda: render_diff(d, "html")),
        Download("Markdown", f"{stem}.md", "text/markdown", lambda: render_diff(d, "markdown")),
        Download("JSON", f"{stem}.json", "application/json", lambda: render_diff(d, "json")),
    ]
    return ComparePage(title="Compare two runs", headline=diff["headline"], subtitle=subtitle,
                       changed=bool(diff["changed"]), metrics=metrics, cards=cards,
                       warnings=list(diff.get("warnings") or []), sections=sections, downloads=downloads)
