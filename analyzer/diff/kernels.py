"""Kernels of two runs matched by normalised name: added, removed, faster, slower.

Each side's table is the report's ``kernels`` (report 1.2: every kernel, summed over ranks);
an older report falls back to its ranks' ``top_kernels`` (25 per rank), normalised and
summed the same way, with a warning. Times are compared per unit (per step when both runs
have steps, else per run) so that a longer capture is not "slower".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..analyses.kernel_table import kernel_family, normalize_kernel_name

#: a matched kernel is faster/slower when its time per unit moves by both of these
MIN_REL = 0.05
MIN_SHARE_OF_BUSY = 0.001  # of the base busy time per unit
LIST_LIMIT = 100  # rows of the faster / slower lists (added / removed are never cut)


def kernel_rows(doc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The side's kernel table and a warning when it is only the top kernels of each rank."""
    if doc.get("kernels"):
        return list(doc["kernels"]), None
    rows: dict[str, dict[str, Any]] = {}
    for r in doc.get("ranks", []):
        for k in r.get("top_kernels", []):
            key = normalize_kernel_name(k["name"])
            row = rows.setdefault(key, {"name": key, "category": k.get("category", "other"),
                                        "time_us": 0.0, "count": 0, "example": k["name"], "raw": {}})
            row["time_us"] += float(k["time_us"])
            row["count"] += int(k["count"])
            row["raw"][k["name"]] = row["raw"].get(k["name"], 0.0) + float(k["time_us"])
    for row in rows.values():
        raw = row.pop("raw")
        names = sorted(raw, key=lambda n: (-raw[n], n))
        row["example"] = names[0]
        if len(names) > 1:
            row["variants"] = names
        row["variants_total"] = len(names) + 1  # top kernels only: other variants may exist
    warn = ("a report without a kernel table (schema < 1.2): kernels compared over each rank's "
            "top 25 only") if doc.get("ranks") else None
    return sorted(rows.values(), key=lambda r: (-r["time_us"], r["name"])), warn


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    cols = ["name", "category", "time_us", "count", "example"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    return df.set_index("name")


def compare_kernels(base: Mapping[str, Any], new: Mapping[str, Any], *, unit_base: float,
                    unit_new: float, busy_base_us: float) -> tuple[dict[str, Any], list[str]]:
    """The ``kernels`` section of a diff. ``unit_*``: steps (or 1) each side's totals are divided by."""
    rb, wb = kernel_rows(base)
    rn, wn = kernel_rows(new)
    warnings = [f"{side}: {w}" for side, w in (("base", wb), ("new", wn)) if w]
    b, n = _frame(rb), _frame(rn)
    df = b.add_suffix("_base").join(n.add_suffix("_new"), how="outer")
    df["category"] = df["category_new"].fillna(df["category_base"])
    df["example"] = df["example_new"].fillna(df["example_base"])
    for c in ("time_us", "count"):
        for s in ("base", "new"):
            df[f"{c}_{s}"] = df[f"{c}_{s}"].fillna(0)
    in_b = df.index.isin(b.index)
    in_n = df.index.isin(n.index)
    pb = df["time_us_base"] / unit_base
    pn = df["time_us_new"] / unit_new
    df["base_us"], df["new_us"] = pb, pn
    df["delta_us"] = pn - pb
    df["rel"] = (df["delta_us"] / pb).where(pb > 0)
    floor = MIN_SHARE_OF_BUSY * (busy_base_us / unit_base)
    moved = in_b & in_n & (df["rel"].abs() >= MIN_REL) & (df["delta_us"].abs() >= floor)
    status = pd.Series("unchanged", index=df.index)
    status[~in_b] = "added"
    status[~in_n] = "removed"
    status[moved & (df["delta_us"] > 0)] = "slower"
    status[moved & (df["delta_us"] < 0)] = "faster"
    df["status"] = status
    df = df.reset_index().rename(columns={"index": "name"})
    df["family"] = [kernel_family(x) for x in df["name"]]
    removed_by_family = df[df["status"] == "removed"].groupby("family")["name"].apply(list).to_dict()

    def rows(sel: pd.Series, limit: int | None) -> list[dict[str, Any]]:
        sub = df[sel].copy()
        sub["_abs"] = sub["delta_us"].abs()
        sub = sub.sort_values(["_abs", "name"], ascending=[False, True])
        if limit is not None:
            sub = sub.head(limit)
        out = []
        for r in sub.itertuples(index=False):
            row = {
                "name": r.name, "category": r.category, "example": r.example,
                "base_us": float(r.base_us), "new_us": float(r.new_us),
                "delta_us": float(r.delta_us), "rel": None if pd.isna(r.rel) else float(r.rel),
                "base_count": int(r.count_base), "new_count": int(r.count_new),
                "base_total_us": float(r.time_us_base), "new_total_us": float(r.time_us_new),
            }
            if r.status == "added" and r.family in removed_by_family:
                row["replaces"] = removed_by_family[r.family]  # same name up to tile/shape digits
            out.append(row)
        return out

    counts = {s: int((df["status"] == s).sum()) for s in ("added", "removed", "faster", "slower", "unchanged")}
    variants = _variant_changes(rb, rn)
    counts["variants_changed"] = len(variants)
    section = {
        "matched_by": "normalised name (template and parameter lists folded, mangled names "
                      "reduced to their qualified name, Triton compile counters dropped)",
        "counts": counts,
        "added": rows(df["status"] == "added", None),
        "removed": rows(df["status"] == "removed", None),
        "slower": rows(df["status"] == "slower", LIST_LIMIT),
        "faster": rows(df["status"] == "faster", LIST_LIMIT),
        "variants": variants,
        "thresholds": {"min_rel": MIN_REL, "min_share_of_busy": MIN_SHARE_OF_BUSY},
    }
    return section, warnings


def _raw_names(row: Mapping[str, Any]) -> tuple[set[str], bool]:
    names = row.get("variants") or [row.get("example") or row["name"]]
    return set(names), bool(row.get("variants_total"))


def _variant_changes(base: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Matched keys whose raw names differ: the raw kernels that run only in one of the runs
    (another template instance, another launch signature) though the key is in both."""
    nb = {r["name"]: r for r in base}
    out = []
    for r in new:
        b = nb.get(r["name"])
        if b is None:
            continue
        (sb, tb), (sn, tn) = _raw_names(b), _raw_names(r)
        if sb != sn:
            out.append({"name": r["name"], "category": r.get("category"),
                        "added": sorted(sn - sb), "removed": sorted(sb - sn), "truncated": tb or tn})
    return sorted(out, key=lambda v: v["name"])


def top_changed(section: Mapping[str, Any], category: str, n: int = 3) -> list[dict[str, Any]]:
    """The kernels of one category that moved most (any status), for verdict evidence."""
    rows = [r for key in ("slower", "faster", "added", "removed") for r in section.get(key, [])
            if r["category"] == category]
    rows.sort(key=lambda r: (-abs(r["delta_us"]), r["name"]))
    return [{"name": r["name"], "base_us": round(r["base_us"], 3), "new_us": round(r["new_us"], 3),
             "delta_us": round(r["delta_us"], 3)} for r in rows[:n]]
