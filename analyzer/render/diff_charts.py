"""Figures of a diff (plotly), shared by the HTML diff and the app's Compare page.

Built here, never in Streamlit: each function takes the diff dict (and, for the step
distributions, the two report dicts) and returns a figure or None.

    >>> figs = diff_figures(diff)                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .charts import CATEGORY_COLORS, IDLE_COLOR, MS, _bar_height, _base_layout, _go

BASE_COLOR = "#8E8E93"
NEW_COLOR = "#4C78A8"
SLOWER_COLOR = "#E45756"
FASTER_COLOR = "#54A24B"
KERNEL_BARS = 15


def side_by_side_figure(diff: Mapping[str, Any]) -> Any | None:
    """Grouped horizontal bars, base vs new: busy, idle by cause and GPU time by category (ms)."""
    rows = [(k, v["time_us"]) for k, v in diff["categories"].items()]
    rows += [(f"idle: {c.replace('_', ' ')}", v) for c, v in diff["idle_by_cause"].items()
             if v["base"] or v["new"]]
    if not rows:
        return None
    go = _go()
    labels = [r[0] for r in rows]
    fig = go.Figure()
    for side, color in (("base", BASE_COLOR), ("new", NEW_COLOR)):
        fig.add_trace(go.Bar(
            y=labels, x=[(r[1][side] or 0.0) * MS for r in rows], name=side, orientation="h",
            marker_color=color,
            hovertemplate=f"{side}<br>%{{y}}<br>%{{x:,.2f}} ms<extra></extra>",
        ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(labels), per=40), xtitle="time (ms, summed over ranks)")


def delta_figure(diff: Mapping[str, Any]) -> Any | None:
    """Signed bars of the change per category and idle cause (ms per unit of the basis)."""
    ub = float(diff["basis"]["divisor"]["base"] or 1)
    un = float(diff["basis"]["divisor"]["new"] or 1)
    rows = [(k, v["time_us"], CATEGORY_COLORS.get(k, IDLE_COLOR)) for k, v in diff["categories"].items()]
    rows += [(f"idle: {c.replace('_', ' ')}", v, IDLE_COLOR) for c, v in diff["idle_by_cause"].items()]
    vals = [((r[1]["new"] or 0.0) / un - (r[1]["base"] or 0.0) / ub, r[0], r[2]) for r in rows]
    vals = [v for v in vals if v[0]]
    if not vals:
        return None
    vals.sort(key=lambda v: -abs(v[0]))
    go = _go()
    fig = go.Figure(go.Bar(
        y=[v[1] for v in vals], x=[v[0] * MS for v in vals], orientation="h",
        marker_color=[SLOWER_COLOR if v[0] > 0 else FASTER_COLOR for v in vals],
        hovertemplate="%{y}<br>%{x:+,.3f} ms<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(vals)), legend=False,
                        xtitle=f"change (ms {diff['basis']['label']}; + slower)")


def kernel_delta_figure(diff: Mapping[str, Any], n: int = KERNEL_BARS) -> Any | None:
    """The kernels that moved most (added, removed, slower, faster), signed, per unit."""
    k = diff["kernels"]
    rows = [(r, s) for s in ("slower", "faster", "added", "removed") for r in k[s]]
    rows.sort(key=lambda rs: (-abs(rs[0]["delta_us"]), rs[0]["name"]))
    rows = [rs for rs in rows if rs[0]["delta_us"]][:n]
    if not rows:
        return None
    go = _go()
    names: list[str] = []
    for r, s in rows:  # bars are keyed by label: keep both ends of a long name, never merge two
        nm = r["name"] if len(r["name"]) <= 60 else f"{r['name'][:44]}…{r['name'][-15:]}"
        label = f"{nm} ({s})"
        while label in names:
            label += " "
        names.append(label)
    fig = go.Figure(go.Bar(
        y=names, x=[r["delta_us"] * MS for r, _ in rows], orientation="h",
        marker_color=[SLOWER_COLOR if r["delta_us"] > 0 else FASTER_COLOR for r, _ in rows],
        customdata=[[r["name"]] for r, _ in rows],
        hovertemplate="%{customdata[0]}<br>%{x:+,.3f} ms<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(rows)), legend=False,
                        xtitle=f"change (ms {diff['basis']['label']})")


def step_figure(diff: Mapping[str, Any], base: Mapping[str, Any] | None = None,
                new: Mapping[str, Any] | None = None) -> Any | None:
    """Per-step GPU time by phase: box plots of both runs' steps when the reports are given,
    else p50/p90 bars from the diff alone."""
    phases = [p for p in diff["phases"] if p != "all"]
    if not phases:
        return None
    go = _go()
    fig = go.Figure()
    if base is not None and new is not None:
        for side, doc, color in (("base", base, BASE_COLOR), ("new", new, NEW_COLOR)):
            tl = ((doc.get("serving") or {}).get("phases") or {}).get("summary", {}).get("timeline") or []
            xs = [str(r["phase"]) for r in tl if r.get("gpu_span_us") is not None]
            ys = [r["gpu_span_us"] * MS for r in tl if r.get("gpu_span_us") is not None]
            fig.add_trace(go.Box(x=xs, y=ys, name=side, marker_color=color, boxpoints=False))
        fig.update_layout(boxmode="group")
    else:
        for side, color in (("base", BASE_COLOR), ("new", NEW_COLOR)):
            fig.add_trace(go.Bar(x=[f"{p} p50" for p in phases] + [f"{p} p90" for p in phases],
                                 y=[(diff["phases"][p]["step_p50_us"][side] or 0) * MS for p in phases]
                                 + [(diff["phases"][p]["step_p90_us"][side] or 0) * MS for p in phases],
                                 name=side, marker_color=color))
        fig.update_layout(barmode="group")
    return _base_layout(fig, height=360, ytitle="GPU time per step (ms)")


def diff_figures(diff: Mapping[str, Any], base: Mapping[str, Any] | None = None,
                 new: Mapping[str, Any] | None = None) -> list[tuple[str, str, Any]]:
    """``(key, title, figure)`` of every figure that has data, in reading order."""
    out = []
    for key, title, fig in (
        ("delta", "What changed (per category and idle cause)", delta_figure(diff)),
        ("side-by-side", "Base vs new", side_by_side_figure(diff)),
        ("steps", "Per-step GPU time by phase", step_figure(diff, base, new)),
        ("kernel-delta", "Kernels that moved most", kernel_delta_figure(diff)),
    ):
        if fig is not None:
            out.append((key, title, fig))
    return out
