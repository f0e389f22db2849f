"""Plotly figures and tables built from a report dict (``Report.to_dict()``), never Streamlit.

The app (``app.py``) and the HTML report (``render/html.py``) both lay out the same
``report_sections(doc)``: one :class:`Section` per view, holding a figure, a table, or the
reason there is nothing to show (an explicit abstention, e.g. "needs two or more ranks").

Figures carry no template: Streamlit applies its own light/dark theme, and the HTML report
applies ``html_layout()`` plus CSS that follows ``prefers-color-scheme``. Colours are fixed
per category so a category has one colour in every view, and are mid-tone so that they read
on white and on near-black backgrounds alike.

    >>> sections = report_sections(report.to_dict())           # doctest: +SKIP
    >>> [s.key for s in sections]                                # doctest: +SKIP
    ['categories', 'steps', 'phases', 'communication', 'skew', 'kernels']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..model import CATEGORIES
from .roofline import roofline_figure, roofline_note, roofline_table

#: One colour per category, the same in every figure (mid-tone: legible on light and dark).
CATEGORY_COLORS: dict[str, str] = {
    "attention_prefill": "#4C78A8",
    "attention_decode": "#72B7B2",
    "kv_cache": "#54A24B",
    "gemm": "#F58518",
    "moe": "#B279A2",
    "communication": "#E45756",
    "elementwise": "#D6A72B",
    "sampling": "#9D755D",
    "memcpy": "#FF9DA6",
    "memset": "#C7A0CB",
    "other": "#8E8E93",
}
IDLE_COLOR = "rgba(142,142,147,0.35)"
#: Serving phases (``report["serving"]["phases"]``) and idle gaps between steps.
PHASE_COLORS: dict[str, str] = {
    "prefill": "#4C78A8",
    "extend": "#4C78A8",
    "decode": "#54A24B",
    "mixed": "#B279A2",
    "idle": "#8E8E93",
    "speculative": "#F58518",
    "target_verify": "#F58518",
    "draft": "#D6A72B",
    "other": "#9D755D",
}
EXPOSED_COLOR = "#E45756"
OVERLAPPED_COLOR = "#72B7B2"
#: Diverging scale for the skew heatmap: below median (teal), median (neutral), above (red).
SKEW_SCALE = [[0.0, "#2A9D8F"], [0.5, "rgba(142,142,147,0.15)"], [1.0, "#E45756"]]
MS = 1e-3  # microseconds -> milliseconds
MAX_TIMELINE_STEPS = 4000  # steps drawn per rank; longer runs are thinned evenly


@dataclass(frozen=True)
class Section:
    """One view of the report: a figure or a table, or the reason there is none (``note``)."""

    key: str
    title: str
    caption: str = ""
    figure: Any = None  # plotly.graph_objects.Figure
    table: pd.DataFrame | None = None
    note: str | None = None

    @property
    def empty(self) -> bool:
        return self.figure is None and self.table is None


def _go():
    import plotly.graph_objects as go

    return go


def _rank_label(r: Mapping[str, Any]) -> str:
    dev = r.get("device", -1)
    return f"rank {r['rank']}" + (f" · dev {dev}" if dev is not None and dev >= 0 else " · cpu")


def _rank_labels(ranks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Unique y labels: 'rank 0 · dev 3' (devices appear when a rank has several)."""
    return [_rank_label(r) for r in ranks]


def _base_layout(fig: Any, *, height: int, xtitle: str = "", ytitle: str = "", legend: bool = True) -> Any:
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0, "title_text": "",
                    "traceorder": "normal"}
        if legend else None,
        showlegend=legend,
        hoverlabel={"namelength": -1},
        bargap=0.25,
    )
    if xtitle:
        fig.update_xaxes(title_text=xtitle)
    if ytitle:
        fig.update_yaxes(title_text=ytitle)
    return fig


def _bar_height(n: int, per: int = 34, base: int = 120, lo: int = 220, hi: int = 900) -> int:
    return int(min(hi, max(lo, base + per * n)))


# --------------------------------------------------------------------------------------
# category breakdown per rank
# --------------------------------------------------------------------------------------


def category_frame(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Rows rank x category with ``time_us`` and ``share`` (of the rank's wall), plus idle."""
    rows = []
    for r, label in zip(doc.get("ranks", []), _rank_labels(doc.get("ranks", []))):
        for name, c in r["categories"].items():
            rows.append({"rank": label, "category": name, "time_us": c["time_us"], "share": c["share"]})
        wall = r["wall_us"]
        rows.append({"rank": label, "category": "idle", "time_us": r["idle_us"],
                     "share": r["idle_us"] / wall if wall else 0.0})
    return pd.DataFrame(rows, columns=["rank", "category", "time_us", "share"])


def category_figure(doc: Mapping[str, Any]) -> Any | None:
    """Stacked horizontal bars: GPU time per category per rank, idle last (grey)."""
    df = category_frame(doc)
    if df.empty:
        return None
    go = _go()
    labels = _rank_labels(doc["ranks"])
    fig = go.Figure()
    order = [c for c in CATEGORIES if c in set(df["category"])] + ["idle"]
    for cat in order:
        sub = df[df["category"] == cat].set_index("rank").reindex(labels)
        fig.add_trace(go.Bar(
            y=labels, x=sub["time_us"].fillna(0).to_numpy() * MS, name=cat, orientation="h",
            marker_color=CATEGORY_COLORS.get(cat, IDLE_COLOR),
            customdata=np.c_[sub["share"].fillna(0).to_numpy() * 100],
            hovertemplate=f"{cat}<br>%{{y}}<br>%{{x:,.2f}} ms (%{{customdata[0]:.1f}}% of wall)<extra></extra>",
        ))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(labels)), xtitle="time (ms)")


# --------------------------------------------------------------------------------------
# serving sections (report["serving"], written by analyzer.analyses.serving)
# --------------------------------------------------------------------------------------


def _serving(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    s = doc.get("serving")
    return s if isinstance(s, Mapping) else {}


def _per_rank(section: Any) -> list[Mapping[str, Any]]:
    """``serving[<name>]["ranks"]`` as a list of dicts that carry ``rank``."""
    if not isinstance(section, Mapping):
        return []
    ranks = section.get("ranks")
    if isinstance(ranks, Mapping):
        return [dict(v, rank=v.get("rank", k)) for k, v in ranks.items() if isinstance(v, Mapping)]
    return [r for r in ranks or [] if isinstance(r, Mapping)]


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _num(values: Any) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)


# ---- steps over time --------------------------------------------------------------------

STEP_FRAME_COLUMNS = ["rank", "step", "phase", "start_ms", "dur_ms", "busy_ms", "bs", "tokens"]


def step_frame(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Timed steps: ``rank, step, phase, start_ms, dur_ms, busy_ms, bs, tokens``.

    Reads ``serving.phases.ranks[*].timeline`` (step rows with ``gpu_start_us`` or
    ``start_us``, relative to the rank's first GPU activity, and ``gpu_span_us``). Without a
    timeline, ``start_ms`` is NaN and the report's ``example_steps`` of the representative
    rank are returned (drawn against the step number).
    """
    sv = _serving(doc)
    frames = []
    for pr in _per_rank(sv.get("phases")):
        rows = _first(pr, "timeline", "step_timeline")
        if isinstance(rows, list) and rows:
            frames.append(_steps_df(pd.DataFrame(rows), pr.get("rank", 0)))
    if frames:
        out = pd.concat(frames, ignore_index=True)
        out = out[np.isfinite(out["start_ms"])]
        return out.sort_values(["rank", "start_ms"], kind="stable").reset_index(drop=True)
    ex = sv.get("example_steps")
    if isinstance(ex, list) and ex:
        return _steps_df(pd.DataFrame(ex), sv.get("representative_rank", 0))
    return pd.DataFrame(columns=STEP_FRAME_COLUMNS)


def _steps_df(df: pd.DataFrame, rank: Any) -> pd.DataFrame:
    start = next((c for c in ("gpu_start_us", "start_us") if c in df.columns), None)
    dur = next((c for c in ("gpu_span_us", "dur_us") if c in df.columns), None)
    n = len(df)
    nan = np.full(n, np.nan)
    dur_us = _num(df[dur]) if dur else nan
    return pd.DataFrame({
        "rank": f"rank {rank}",
        "step": _num(df["step"]) if "step" in df.columns else np.arange(n, dtype=float),
        "phase": (df["phase"] if "phase" in df.columns else pd.Series(["step"] * n)).astype(str).str.lower(),
        "start_ms": _num(df[start]) * MS if start else nan,
        "dur_ms": dur_us * MS,
        "busy_ms": (_num(df["gpu_busy_us"]) if "gpu_busy_us" in df.columns else dur_us) * MS,
        "bs": _num(df["bs"]) if "bs" in df.columns else nan,
        "tokens": _num(df["tokens"]) if "tokens" in df.columns else nan,
    })


def _thin(df: pd.DataFrame, n: int) -> pd.DataFrame:
    if len(df) <= n:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, n).round().astype(int))
    return df.iloc[idx]


def steps_figure(doc: Mapping[str, Any]) -> Any | None:
    """Step GPU time over time, coloured by phase, with the idle gaps between steps below.

    With a step timeline: top, x = step start (ms from the rank's first GPU activity) and
    y = GPU span of the step; bottom, one grey bar per gap between consecutive steps (its
    height is the gap length). Without one: the report's example steps against the step
    number. The y axis turns logarithmic when prefill steps dwarf decode steps.
    """
    df = step_frame(doc)
    if df.empty:
        return None
    go = _go()
    from plotly.subplots import make_subplots

    timed = bool(np.isfinite(df["start_ms"]).any())
    fig = make_subplots(rows=2 if timed else 1, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.72, 0.28] if timed else None)
    ranks = list(dict.fromkeys(df["rank"]))
    shown: set[str] = set()
    symbols = ["circle", "diamond", "square", "triangle-up", "x", "star", "cross", "pentagon"]
    for i, rank in enumerate(ranks[:8]):
        sub = _thin(df[df["rank"] == rank], MAX_TIMELINE_STEPS)
        x = sub["start_ms"].to_numpy() if timed else sub["step"].to_numpy()
        for phase in sorted(set(sub["phase"])):
            sel = (sub["phase"] == phase).to_numpy()
            sp = sub[sel]
            custom = np.c_[sp["bs"].to_numpy(float), sp["tokens"].to_numpy(float),
                           sp["busy_ms"].to_numpy(float), sp["step"].to_numpy(float)]
            fig.add_trace(go.Scatter(
                x=x[sel], y=sp["dur_ms"], mode="markers", name=phase, legendgroup=phase,
                showlegend=phase not in shown, customdata=custom,
                marker={"size": 7 if len(sub) < 600 else 4, "symbol": symbols[i % len(symbols)],
                            "color": PHASE_COLORS.get(phase, PHASE_COLORS["other"]), "line": {"width": 0}},
                hovertemplate=(f"{phase} step %{{customdata[3]}}<br>GPU span %{{y:,.3f}} ms"
                               "<br>busy %{customdata[2]:,.3f} ms<br>bs %{customdata[0]} · "
                               f"tokens %{{customdata[1]}}<extra>{rank}</extra>"),
            ), row=1, col=1)
            shown.add(phase)
        if timed:
            end = x + sub["dur_ms"].to_numpy()
            gap = np.clip(x[1:] - end[:-1], 0, None)
            keep = gap > 0
            if keep.any():
                fig.add_trace(go.Bar(
                    x=end[:-1][keep] + gap[keep] / 2, y=gap[keep], width=gap[keep],
                    name="idle gap", legendgroup="idle gap", showlegend="idle gap" not in shown,
                    marker_color=PHASE_COLORS["idle"], marker_line_width=0, opacity=0.8,
                    hovertemplate=f"idle gap %{{y:,.3f}} ms<extra>{rank}</extra>",
                ), row=2, col=1)
                shown.add("idle gap")
    dur = df["dur_ms"].to_numpy(float)
    dur = dur[np.isfinite(dur) & (dur > 0)]
    if dur.size and dur.max() / max(dur.min(), 1e-9) > 30:
        fig.update_yaxes(type="log", row=1, col=1, **_log_ticks(float(dur.min()), float(dur.max())))
    else:
        fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="step GPU time (ms)", row=1, col=1)
    if timed:
        fig.update_yaxes(title_text="gap (ms)", rangemode="tozero", row=2, col=1)
        fig.update_xaxes(title_text="time since the first step (ms)", row=2, col=1)
    else:
        fig.update_xaxes(title_text="step number", tickformat="d", row=1, col=1)
    fig.update_layout(bargap=0)
    return _base_layout(fig, height=420 if timed else 320)


def _log_ticks(lo: float, hi: float) -> dict[str, Any]:
    """Ticks at 1, 2, 5 x 10^k between ``lo`` and ``hi``, labelled in full (no '2' for 200)."""
    vals = [m * 10.0 ** k for k in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
            for m in (1, 2, 5)]
    vals = [v for v in vals if lo / 2 <= v <= hi * 2]
    return {"tickvals": vals, "ticktext": [f"{v:g}" for v in vals]}


# ---- idle time by cause -------------------------------------------------------------------

GAP_CAUSE_COLORS: dict[str, str] = {
    "scheduler": "#F58518",
    "synchronization": "#B279A2",
    "launch_overhead": "#4C78A8",
    "pp_bubble": "#E45756",
    "device_wait": "#72B7B2",
    "unexplained": IDLE_COLOR,
}


def gaps_figure(doc: Mapping[str, Any]) -> Any | None:
    """Per rank: GPU idle time split by cause (scheduler, sync, launch overhead, PP bubble...)."""
    rows = [g for g in _per_rank(_serving(doc).get("gaps")) if isinstance(g.get("by_cause_us"), Mapping)]
    if not rows or not any(g.get("idle_us") for g in rows):
        return None
    go = _go()
    labels = [f"rank {g['rank']}" for g in rows]
    causes = list(dict.fromkeys(c for g in rows for c in g["by_cause_us"]))
    fig = go.Figure()
    explained = np.zeros(len(rows))
    for c in causes:
        v = np.array([float(g["by_cause_us"].get(c) or 0.0) for g in rows])
        explained += v
        if not v.any():
            continue
        fig.add_trace(go.Bar(y=labels, x=v * MS, name=c.replace("_", " "), orientation="h",
                             marker_color=GAP_CAUSE_COLORS.get(c, PHASE_COLORS["other"]),
                             hovertemplate=f"{c}: %{{x:,.3f}} ms<extra>%{{y}}</extra>"))
    rest = np.clip(np.array([float(g.get("idle_us") or 0.0) for g in rows]) - explained, 0, None)
    if (rest > 0.005 * max(1.0, float(explained.max()))).any():
        fig.add_trace(go.Bar(y=labels, x=rest * MS, name="unexplained", orientation="h",
                             marker_color=GAP_CAUSE_COLORS["unexplained"],
                             hovertemplate="unexplained: %{x:,.3f} ms<extra>%{y}</extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(labels)), xtitle="GPU idle time (ms)")


def gaps_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Per rank: idle between / inside / outside steps, the capture edge left out, gap
    p50/p90/max, scheduler exposure."""
    out = []
    for g in _per_rank(_serving(doc).get("gaps")):
        gp = g.get("gap_us") or {}
        sch = g.get("scheduler") or {}
        out.append({
            "rank": g.get("rank"), "gaps": g.get("gaps"),
            "idle (ms)": _ms(g.get("idle_us")), "between steps (ms)": _ms(g.get("between_steps_us")),
            "inside steps (ms)": _ms(g.get("inside_steps_us")),
            "outside steps (ms)": _ms(g.get("outside_steps_us")),
            "capture edge (ms)": _ms(g.get("edge_us")),
            "gap p50 (us)": gp.get("p50"), "gap p90 (us)": gp.get("p90"), "gap max (us)": gp.get("max"),
            "overlap scheduler": sch.get("overlap_scheduler"),
        })
    return pd.DataFrame(out).dropna(axis=1, how="all") if out else pd.DataFrame()


# ---- per-phase statistics -----------------------------------------------------------------


def _phase_summary(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    ph = _serving(doc).get("phases")
    if not isinstance(ph, Mapping):
        return {}
    summ = ph.get("summary")
    if isinstance(summ, Mapping) and summ.get("phases"):
        return summ
    ranks = _per_rank(ph)
    return ranks[0] if ranks else {}


def _phase_map(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    phases = _phase_summary(doc).get("phases") or {}
    return {k: v for k, v in phases.items() if isinstance(v, Mapping)}


def phase_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """One row per phase: steps, tokens, requests, GPU busy, share of wall, time per step."""
    rows = []
    for name, p in _phase_map(doc).items():
        step = p.get("step_gpu_us") or {}
        bs = p.get("batch_size") or {}
        rows.append({
            "phase": name,
            "steps": p.get("steps"),
            "tokens": p.get("tokens"),
            "requests": p.get("requests"),
            "batch p50": bs.get("p50"),
            "GPU busy (ms)": _ms(p.get("gpu_busy_us")),
            "share of wall": p.get("share_of_wall"),
            "step p50 (ms)": _ms(step.get("p50")),
            "step p90 (ms)": _ms(step.get("p90")),
            "step max (ms)": _ms(step.get("max")),
        })
    return pd.DataFrame(rows).dropna(axis=1, how="all") if rows else pd.DataFrame()


def _ms(us: Any) -> float | None:
    return None if us is None else float(us) * MS


def phase_figure(doc: Mapping[str, Any]) -> Any | None:
    """Stacked bars: GPU time by category within each phase (representative rank)."""
    pm = {k: v for k, v in _phase_map(doc).items() if v.get("categories_us")}
    if not pm:
        return None
    go = _go()
    names = list(pm)
    fig = go.Figure()
    cats = [c for c in CATEGORIES if any(c in p["categories_us"] for p in pm.values())]
    for cat in cats:
        fig.add_trace(go.Bar(
            y=names, x=[(pm[n]["categories_us"].get(cat) or 0.0) * MS for n in names], name=cat,
            orientation="h", marker_color=CATEGORY_COLORS.get(cat, IDLE_COLOR),
            hovertemplate=f"{cat}<br>%{{y}}: %{{x:,.2f}} ms<extra></extra>",
        ))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(names), per=40, lo=200), xtitle="GPU time (ms)")


# --------------------------------------------------------------------------------------
# communication
# --------------------------------------------------------------------------------------


def communication_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Bars of the communication figure: one per rank and role (TP/PP/EP...) when the
    diagnosis split communication by role, else one per rank."""
    rows = []
    roles = _per_rank(_serving(doc).get("communication"))
    for r in roles:
        for role, v in (r.get("by_role") or {}).items():
            if isinstance(v, Mapping) and v.get("time_us"):
                rows.append({"label": f"rank {r['rank']} · {role}", "time_us": v["time_us"],
                             "exposed_us": v.get("exposed_us") or 0.0,
                             "overlapped_us": v.get("overlapped_us") or 0.0})
    if rows:
        return rows
    for r, label in zip(doc.get("ranks", []), _rank_labels(doc.get("ranks", []))):
        c = r["communication"]
        if c["time_us"] > 0:
            rows.append({"label": label, "time_us": c["time_us"], "exposed_us": c["exposed_us"],
                         "overlapped_us": c["overlapped_us"]})
    return rows


def communication_figure(doc: Mapping[str, Any]) -> Any | None:
    """Communication time split into exposed (on the critical path) and overlapped."""
    rows = communication_rows(doc)
    if not rows:
        return None
    go = _go()
    labels = [r["label"] for r in rows]
    exposed = np.array([r["exposed_us"] for r in rows]) * MS
    overlapped = np.array([r["overlapped_us"] for r in rows]) * MS
    total = exposed + overlapped
    share = np.divide(exposed, total, out=np.zeros_like(exposed), where=total > 0) * 100
    fig = go.Figure()
    fig.add_trace(go.Bar(y=labels, x=exposed, name="exposed", orientation="h",
                         marker_color=EXPOSED_COLOR, customdata=np.c_[share],
                         hovertemplate="exposed %{x:,.2f} ms (%{customdata[0]:.0f}% of its communication)"
                                       "<extra>%{y}</extra>"))
    fig.add_trace(go.Bar(y=labels, x=overlapped, name="overlapped", orientation="h",
                         marker_color=OVERLAPPED_COLOR,
                         hovertemplate="overlapped %{x:,.2f} ms<extra>%{y}</extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    return _base_layout(fig, height=_bar_height(len(labels)), xtitle="communication time (ms)")


def communication_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Communication by role and collective (representative rank), else by collective (all ranks)."""
    summ = (_serving(doc).get("communication") or {}).get("summary") or {}
    rows = []
    for key, v in (summ.get("by_role_collective") or {}).items():
        if not isinstance(v, Mapping):
            continue
        role, _, coll = str(key).partition("/")
        rows.append({"role": role, "collective": coll or role, "time (ms)": _ms(v.get("time_us")),
                     "exposed (ms)": _ms(v.get("exposed_us")), "overlapped (ms)": _ms(v.get("overlapped_us")),
                     "count": v.get("count"), "MB": (v.get("bytes") or 0) / 1e6 if v.get("bytes") else None})
    if rows:
        return pd.DataFrame(rows).dropna(axis=1, how="all")
    by = (doc.get("summary") or {}).get("communication", {}).get("by_collective", {})
    for coll, v in by.items():
        rows.append({"collective": coll, "time (ms)": v["time_us"] * MS,
                     "exposed (ms)": v["exposed_us"] * MS, "overlapped (ms)": v["overlapped_us"] * MS,
                     "count": int(v.get("count", 0))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# cross-rank skew
# --------------------------------------------------------------------------------------


def skew_frame(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Rank x figure matrix of time (ms): categories, exposed communication, collective wait
    (from the diagnosis, when it aligned collectives across ranks), idle and wall."""
    ranks = doc.get("ranks", [])
    if len(ranks) < 2:
        return pd.DataFrame()
    data: dict[str, list[float]] = {}
    cats = [c for c in CATEGORIES if any(c in r["categories"] for r in ranks)]
    for c in cats:
        data[c] = [r["categories"].get(c, {}).get("time_us", 0.0) * MS for r in ranks]
    data["exposed comm"] = [r["communication"]["exposed_us"] * MS for r in ranks]
    skew = _serving(doc).get("skew")
    waits = {str(r["rank"]): r.get("wait_us") for r in _per_rank(skew)}
    if any(v is not None for v in waits.values()):
        data["collective wait"] = [float(waits.get(str(r["rank"])) or 0.0) * MS for r in ranks]
    data["idle"] = [r["idle_us"] * MS for r in ranks]
    data["wall"] = [r["wall_us"] * MS for r in ranks]
    df = pd.DataFrame(data, index=_rank_labels(ranks))
    return df.loc[:, (df != 0).any(axis=0)]


SKEW_ALWAYS = ("exposed comm", "collective wait", "idle", "wall")


def skew_figure(doc: Mapping[str, Any]) -> Any | None:
    """Heatmap: each figure's deviation from the median rank (%), value in ms on hover."""
    df = skew_frame(doc)
    if df.empty:
        return None
    go = _go()
    med = df.median(axis=0)
    dev = ((df - med) / med.where(med > 0, np.nan) * 100).fillna(0.0).round(0) + 0.0
    keep = [c for c in df.columns if c in SKEW_ALWAYS or (dev[c].abs() >= 1).any()]
    df, dev = df[keep], dev[keep]
    lim = float(max(5.0, np.abs(dev.to_numpy()).max()))
    # label only the cells that stand out: their colour is strong enough for readable text
    text = dev.map(lambda v: f"{v:+.0f}%" if abs(v) >= 3 else "")
    fig = go.Figure(go.Heatmap(
        z=dev.to_numpy(), x=list(df.columns), y=list(df.index), zmin=-lim, zmax=lim,
        colorscale=SKEW_SCALE, text=text.to_numpy(), texttemplate="%{text}",
        customdata=df.to_numpy(), xgap=2, ygap=2,
        colorbar={"title": {"text": "vs median"}, "ticksuffix": "%", "thickness": 12},
        hovertemplate="%{y} · %{x}<br>%{customdata:,.2f} ms (%{z:+.0f}% vs median)<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(side="top", showgrid=False)
    return _base_layout(fig, height=_bar_height(len(df), per=30, lo=200), legend=False)


def skew_note(doc: Mapping[str, Any]) -> str | None:
    """The straggler named by the diagnosis, and where it is slower."""
    skew = _serving(doc).get("skew")
    if not isinstance(skew, Mapping) or skew.get("straggler_rank") is None:
        return None
    text = f"Straggler: rank {skew['straggler_rank']}"
    share = skew.get("straggler_last_share")
    if share is not None:
        text += f", last to arrive in {float(share) * 100:.0f}% of {skew.get('instances', 0):,} aligned collectives"
    slower = [s for s in skew.get("straggler_slower_categories") or [] if isinstance(s, Mapping)]
    if slower:
        text += "; slower than the other ranks in " + ", ".join(
            f"{s['category']} (+{float(s['extra_us']) * MS:,.2f} ms)" for s in slower)
    return text + "."


# --------------------------------------------------------------------------------------
# top kernels
# --------------------------------------------------------------------------------------

KERNEL_COLUMNS = ["rank", "category", "time (ms)", "count", "mean (us)", "max (us)", "share of busy", "kernel"]


def kernels_table(doc: Mapping[str, Any]) -> pd.DataFrame:
    """Top kernels of every rank (biggest total time first)."""
    rows = []
    for r in doc.get("ranks", []):
        for k in r.get("top_kernels", []):
            rows.append({
                "rank": r["rank"], "kernel": k["name"], "category": k["category"],
                "time (ms)": k["time_us"] * MS, "count": k["count"],
                "mean (us)": k.get("mean_us"), "max (us)": k.get("max_us"),
                "share of busy": k.get("share_of_busy"),
            })
    df = pd.DataFrame(rows, columns=KERNEL_COLUMNS)
    return df.sort_values(["time (ms)", "rank"], ascending=[False, True], kind="stable").reset_index(drop=True)


def filter_kernels(df: pd.DataFrame, query: str) -> pd.DataFrame:
    """Rows whose kernel name or category contains every word of ``query`` (case-insensitive)."""
    words = [w for w in query.lower().split() if w]
    if not words or df.empty:
        return df
    hay = (df["kernel"].astype(str) + " " + df["category"].astype(str)).str.lower()
    keep = np.ones(len(df), bool)
    for w in words:
        keep &= hay.str.contains(w, regex=False).to_numpy()
    return df[keep]


# --------------------------------------------------------------------------------------
# all sections
# --------------------------------------------------------------------------------------


def report_sections(doc: Mapping[str, Any]) -> list[Section]:
    """Every view of the report, in page order; empty ones carry the reason in ``note``.

    A view whose builder fails (a report shape this version does not know) says so in its
    note instead of taking the whole page or HTML report down.
    """
    n_ranks = len(doc.get("ranks", []))
    summ = _guard(lambda: _phase_summary(doc)) or {}
    steps = _guard(lambda: step_frame(doc))
    timed = steps is not None and bool(len(steps)) and bool(np.isfinite(steps["start_ms"]).any())
    rep = f"rank {summ['rank']}" if summ.get("rank") is not None else "one rank"
    src = f" Steps found from {summ['source']} markers." if summ.get("source") else ""
    no_steps = "No serving steps found (no step annotations in the trace)."
    no_fig = (lambda d: None)
    no_table = (lambda d: pd.DataFrame())
    specs: list[tuple[str, str, str, Any, Any, str | None]] = [
        ("categories", "GPU time by category, per rank",
         ("Union of kernel intervals per category; the grey tail is idle time inside the "
         "rank's GPU wall (first activity to last)."),
         category_figure, no_table, "No GPU activity in the inputs."),
        ("steps", "Steps over time",
         ("Each point is one serving step (GPU span of its kernels), coloured by phase; "
          "below, the idle gaps between consecutive steps." if timed else
          f"GPU span of the report's example steps of {rep}, coloured by phase (the report "
          "has no step timeline).") + src,
         steps_figure, no_table, no_steps),
        ("gaps", "GPU idle time by cause",
         ("Idle time inside each rank's GPU wall, attributed to the host work that held the "
         "GPU back: scheduler, synchronisation, kernel launch overhead, pipeline bubbles."),
         gaps_figure, gaps_table, "No gap analysis in this report."),
        ("phases", "Per-phase statistics",
         (f"Prefill vs decode on {rep} (the rank with the median wall time): GPU time by "
         "category and time per step."),
         phase_figure, phase_table, no_steps),
        ("communication", "Communication: exposed vs overlapped",
         ("Exposed = communication not hidden behind compute kernels: it is on the critical "
         "path. Overlapped runs while compute kernels keep the GPU busy."),
         communication_figure, communication_table, "No communication kernels in the inputs."),
        ("skew", "Cross-rank skew",
         "Each figure per rank against the median rank; red = more time than the median.",
         skew_figure, no_table, None),
        ("roofline", "Roofline: per op and shapes",
         ("From the recorded shapes (record_shapes): each point is one op with one set of input "
          "shapes, sized by its kernel time; lines are the GPU's roofs (HBM bandwidth, then the "
          "peak of the op's dtype). Ops without FLOPs (KV writes, copies) are in the table only."),
         roofline_figure, roofline_table, None),
        ("kernels", "Top kernels",
         "Per rank, biggest total time first (the report keeps each rank's top kernels).",
         no_fig, kernels_table, "No kernels in the inputs."),
    ]
    out = []
    for key, title, caption, fig_fn, table_fn, empty_note in specs:
        errors: list[str] = []
        fig = _guard(lambda f=fig_fn: f(doc), errors)
        table = _none_if_empty(_guard(lambda f=table_fn: f(doc), errors))
        if key == "skew":
            note = (_guard(lambda: skew_note(doc), errors) if n_ranks >= 2 else "Needs two or more ranks.")
        elif key == "roofline":
            note = _guard(lambda: roofline_note(doc), errors)
        else:
            note = None if (fig is not None or table is not None) else empty_note
        if errors:
            note = f"Could not draw this view ({errors[0]}); please report it."
        out.append(Section(key, title, caption, fig, table, note))
    return out


def _guard(fn: Any, errors: list[str] | None = None) -> Any:
    """``fn()``, or None with the error noted (one view must not take the page down)."""
    try:
        return fn()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as exc:
        if errors is not None:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return None


def _none_if_empty(df: pd.DataFrame) -> pd.DataFrame | None:
    return None if df is None or df.empty else df


# --------------------------------------------------------------------------------------
# capacity planning (rows of CapacityPlan.curve_points() as dicts)
# --------------------------------------------------------------------------------------

THROUGHPUT_COLOR = "#4C78A8"
TTFT_COLOR = "#F58518"


def capacity_figure(points: Sequence[Mapping[str, Any]], marks: Mapping[str, float | None],
                    rule_of_thumb: tuple[int, int] | None = None) -> Any | None:
    """Output tokens/s and mean TTFT against concurrency per replica (log x).

    ``points``: rows with ``concurrency``, ``output_tokens_per_s``, ``ttft_mean_s`` and
    ``fits_memory``. ``marks``: label -> concurrency drawn as vertical lines (knee,
    throughput optimum, KV memory bound, requested). ``rule_of_thumb``: the (2R, 4R) band.
    """
    if not points:
        return None
    go = _go()
    from plotly.subplots import make_subplots

    df = pd.DataFrame(list(points))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fits = df["fits_memory"].astype(bool).to_numpy()
    for ok, dash, suffix in ((True, "solid", ""), (False, "dot", " (beyond KV memory)")):
        sel = fits if ok else ~fits
        if not sel.any():
            continue
        sub = df[sel]
        fig.add_trace(go.Scatter(
            x=sub["concurrency"], y=sub["output_tokens_per_s"], mode="lines", name="output tokens/s" + suffix,
            line={"color": THROUGHPUT_COLOR, "width": 2.5, "dash": dash}, legendgroup="tput",
            hovertemplate="%{x} concurrent: %{y:,.0f} tokens/s<extra></extra>"), secondary_y=False)
        fig.add_trace(go.Scatter(
            x=sub["concurrency"], y=sub["ttft_mean_s"], mode="lines", name="mean TTFT (s)" + suffix,
            line={"color": TTFT_COLOR, "width": 2.5, "dash": dash}, legendgroup="ttft",
            hovertemplate="%{x} concurrent: TTFT %{y:,.2f} s<extra></extra>"), secondary_y=True)
    # marks as traces, not shapes: traces sit on a log axis in data units, and get a legend
    top = float(np.nanmax(df["output_tokens_per_s"].to_numpy(float))) * 1.05 or 1.0
    if rule_of_thumb:
        lo, hi = rule_of_thumb
        fig.add_trace(go.Scatter(
            x=[lo, lo, hi, hi, lo], y=[0, top, top, 0, 0], fill="toself", mode="lines",
            fillcolor="rgba(84,162,75,0.15)", line={"width": 0}, name=f"rule of thumb {lo}–{hi}",
            hoverinfo="skip"), secondary_y=False)
    styles = {"knee": "dash", "throughput optimum": "dashdot", "KV memory bound": "solid", "requested": "dot"}
    colors = {"knee": "#54A24B", "throughput optimum": THROUGHPUT_COLOR, "KV memory bound": "#E45756",
              "requested": "#8E8E93"}
    for label, c in marks.items():
        if c is None or c < 1:
            continue
        fig.add_trace(go.Scatter(
            x=[c, c], y=[0, top], mode="lines", name=f"{label}: {int(c)}",
            line={"dash": styles.get(label, "dot"), "color": colors.get(label, "#8E8E93"), "width": 1.5},
            hovertemplate=f"{label}: {int(c)}<extra></extra>"), secondary_y=False)
    c = df["concurrency"].to_numpy(float)
    fig.update_xaxes(type="log", title_text="concurrent requests per replica",
                     **_log_ticks(float(c.min()), float(c.max())))
    fig.update_yaxes(title_text="output tokens/s per replica", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="mean TTFT (s)", rangemode="tozero", secondary_y=True, showgrid=False)
    return _base_layout(fig, height=420)
