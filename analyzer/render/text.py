"""Plain-text report: a ranked findings table, then per-rank figures (for terminals and CI logs)."""

from __future__ import annotations

from typing import Any

from .format import alignment_line, context_line, edge_note, evidence_items, fmt_share, fmt_us, short_name
from .roofline import roofline_lines


def render_text(doc: dict[str, Any]) -> str:
    """Render a report dict (``Report.to_dict()``) as text."""
    lines: list[str] = []
    s = doc["summary"]
    lines.append(f"trace-analyzer {doc['tool']['version']} — {s['ranks']} rank(s), "
                 f"{len(doc['inputs'])} input file(s)")
    lines.append(
        f"GPU wall {fmt_us(s['wall_us'])} (sum over ranks), busy {fmt_share(s['busy_share'])}, "
        f"idle {fmt_share(s['idle_share'])}"
    )
    if edge_note(s):
        lines.append(f"  {edge_note(s)}: idle before the first step / after the last (profiler "
                     "warm-up, teardown); --include-edges counts it as idle")
    run = context_line(doc)
    if run:
        lines.append(run)
    for w in doc.get("warnings", []):
        lines.append(f"warning: {w}")
    if (clock := alignment_line(doc)) is not None:
        lines.append(clock)
    lines.append("")
    lines.append("Findings (biggest estimated cost first)")
    if not doc["findings"]:
        lines.append("  none")
    header = f"  {'#':>2}  {'severity':<8}  {'share':>6}  {'time':>9}  finding"
    if doc["findings"]:
        lines.append(header)
    for i, f in enumerate(doc["findings"], 1):
        lines.append(
            f"  {i:>2}  {f['severity']:<8}  {fmt_share(f['share']):>6}  {fmt_us(f['time_us']):>9}  "
            f"{f['title']}  [{f['id']}]"
        )
        for label, values in evidence_items(f["evidence"], limit=6):
            lines.append(f"{'':>34}- {label}: {values[0] if len(values) == 1 else ''}".rstrip())
            if len(values) > 1:
                lines.extend(f"{'':>36}· {short_name(v, 100)}" for v in values)
        lines.append(f"{'':>34}→ {f['recommendation']}")
    for a in doc.get("abstained", []):
        lines.append(f"  could not tell: {a}")
    lines.append("")
    lines.append("GPU time by category (all ranks)")
    for name, c in s["categories"].items():
        lines.append(f"  {name:<18} {fmt_us(c['time_us']):>10}  {fmt_share(c['share']):>6}  {c['count']:>8} events")
    comm = s["communication"]
    if comm["time_us"]:
        lines.append(
            f"  communication exposed {fmt_us(comm['exposed_us'])}, overlapped {fmt_us(comm['overlapped_us'])}"
        )
    lines.extend(roofline_lines(doc))
    lines.append("")
    lines.append("Per rank")
    lines.append(f"  {'rank':>4} {'dev':>3}  {'wall':>9} {'busy':>9} {'idle':>6} {'edge':>9} {'comm':>9} {'exposed':>9}  gpu")
    for r in doc["ranks"]:
        idle = r["idle_us"] / r["wall_us"] if r["wall_us"] else 0.0
        lines.append(
            f"  {r['rank']:>4} {r['device']:>3}  {fmt_us(r['wall_us']):>9} {fmt_us(r['busy_us']):>9} "
            f"{fmt_share(idle):>6} {fmt_us(r.get('edge_us') or 0.0):>9} {fmt_us(r['communication']['time_us']):>9} "
            f"{fmt_us(r['communication']['exposed_us']):>9}  {r['gpu']}"
        )
    if doc["ranks"]:
        lines.append("")
        lines.append(f"Top kernels (rank {doc['ranks'][0]['rank']})")
        for k in doc["ranks"][0]["top_kernels"][:10]:
            lines.append(
                f"  {fmt_us(k['time_us']):>9} {k['count']:>6}x  {k['category']:<17} {short_name(k['name'], 60)}"
            )
    for n in doc.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"
