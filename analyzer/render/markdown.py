"""Markdown report that pastes cleanly into a GitHub or Jira ticket."""

from __future__ import annotations

from typing import Any

from .format import alignment_line, context_line, edge_note, evidence_items, fmt_share, fmt_us, short_name
from .roofline import roofline_markdown


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


#: a ticket stays readable: at most this many rows in the per-rank table (all tables < 100 rows)
MAX_RANK_ROWS = 64


def _summary(doc: dict[str, Any]) -> str:
    """One link-free sentence: the top finding, its cost and the first clause of its advice."""
    if not doc["findings"]:
        return "No finding: nothing stood out; the tables below show where the time went."
    f = doc["findings"][0]
    rec = f["recommendation"].split(". ")[0].rstrip(".")
    more = len(doc["findings"]) - 1
    return (f"{f['title']}: {fmt_us(f['time_us'])}, {fmt_share(f['share'])} of the wall time. {rec}."
            + (f" {more} more finding(s) below." if more else ""))


def render_markdown(doc: dict[str, Any]) -> str:
    """Render a report dict (``Report.to_dict()``) as GitHub-flavoured Markdown."""
    s = doc["summary"]
    out: list[str] = ["# LLM serving trace analysis", ""]
    out.append(
        f"{s['ranks']} rank(s) from {len(doc['inputs'])} file(s); GPU wall {fmt_us(s['wall_us'])} "
        f"(summed over ranks), busy {fmt_share(s['busy_share'])}, idle {fmt_share(s['idle_share'])}"
        + (f"; {edge_note(s)} (idle before the first step / after the last: profiler warm-up, "
           "teardown)" if edge_note(s) else "")
        + f". Made by trace-analyzer {doc['tool']['version']}."
    )
    out.append("")
    run = context_line(doc)
    if run:
        out.append(_cell(run))
        out.append("")
    for w in doc.get("warnings", []):
        out.append(f"> **Warning:** {_cell(w)}")
        out.append("")
    if (clock := alignment_line(doc)) is not None:
        out.append(f"> **Clocks:** {_cell(clock[len('clocks: '):])}")
        out.append("")
    out.append("**Summary.** " + _cell(_summary(doc)))
    out.append("")
    out.append("## Findings")
    out.append("")
    if not doc["findings"]:
        out.append("No finding.")
    for i, f in enumerate(doc["findings"], 1):
        out.append(
            f"### {i}. {_cell(f['title'])} (`{f['id']}`, {f['severity']}, "
            f"{fmt_share(f['share'])} of wall, {fmt_us(f['time_us'])})"
        )
        out.append("")
        for label, values in evidence_items(f["evidence"], limit=10):
            if len(values) == 1:
                out.append(f"- **{_cell(label)}:** {_cell(values[0])}")
            else:
                out.append(f"- **{_cell(label)}:**")
                out.extend(f"  - {_cell(v)}" for v in values)
        out.append("")
        out.append(f"**Recommendation:** {_cell(f['recommendation'])}")
        out.append("")
    for a in doc.get("abstained", []):
        out.append(f"- Could not tell: {_cell(a)}")
    out.append("## GPU time by category (all ranks)")
    out.append("")
    out.append("| category | time | share of wall | events |")
    out.append("|---|---:|---:|---:|")
    for name, c in s["categories"].items():
        out.append(f"| {name} | {fmt_us(c['time_us'])} | {fmt_share(c['share'])} | {c['count']} |")
    out.extend(roofline_markdown(doc))
    out.append("")
    out.append("## Per rank")
    out.append("")
    out.append("| rank | device | GPU | wall | busy | idle | capture edge | communication | exposed comm |")
    out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    shown = doc["ranks"][:MAX_RANK_ROWS]
    for r in shown:
        idle = r["idle_us"] / r["wall_us"] if r["wall_us"] else 0.0
        out.append(
            f"| {r['rank']} | {r['device']} | {_cell(r['gpu'])} | {fmt_us(r['wall_us'])} | "
            f"{fmt_us(r['busy_us'])} | {fmt_share(idle)} | {fmt_us(r.get('edge_us') or 0.0)} | "
            f"{fmt_us(r['communication']['time_us'])} | "
            f"{fmt_us(r['communication']['exposed_us'])} |"
        )
    if len(doc["ranks"]) > len(shown):
        out.append(f"| … | | {len(doc['ranks']) - len(shown)} more rows in the JSON report | | | | | | |")
    if doc["ranks"]:
        out.append("")
        out.append(f"## Top kernels (rank {doc['ranks'][0]['rank']})")
        out.append("")
        out.append("| time | count | category | kernel |")
        out.append("|---:|---:|---|---|")
        for k in doc["ranks"][0]["top_kernels"][:15]:
            out.append(
                f"| {fmt_us(k['time_us'])} | {k['count']} | {k['category']} | `{_cell(short_name(k['name'], 90))}` |"
            )
    if doc.get("notes"):
        out.append("")
        out.append("## Notes")
        out.append("")
        for n in doc["notes"]:
            out.append(f"- {_cell(n)}")
    return "\n".join(out) + "\n"
