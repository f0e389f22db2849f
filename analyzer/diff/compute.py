"""Two report dicts in, one diff dict out (diff contract v1, docs/report-schema.md#diff).

Pure functions over ``Report.to_dict()`` documents: nothing here reads traces. Every figure is
``{base, new, delta, rel}`` with ``delta = new - base`` and ``rel = delta / base`` (null when
the base is 0 and the new is not). Totals are summed over ranks like the report's summary;
the verdict ranks changes by the time they add or save per step (both runs have steps) or
per run.

    >>> diff = compare(base_doc, new_doc)                        # doctest: +SKIP
    >>> [v["title"] for v in diff["verdict"]]                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import __version__
from ..model import CATEGORIES
from .kernels import compare_kernels, top_changed
from .stats import step_test

DIFF_SCHEMA_VERSION = "1.0"
TOOL_NAME = "trace-analyzer"
CAUSES = ("scheduler", "synchronization", "launch_overhead", "pp_bubble", "device_wait")
TOTALS = ("wall", "busy", "idle", "edge", "capture")
#: a change enters the verdict when it moves by both (per unit, of the base wall per unit)
VERDICT_MIN_REL = 0.02
VERDICT_MIN_SHARE = 0.005
VERDICT_LIMIT = 6
BUS_FACTOR = {"allreduce": lambda n: 2 * (n - 1) / n, "allgather": lambda n: (n - 1) / n,
              "reducescatter": lambda n: (n - 1) / n}


def delta(base: float | None, new: float | None) -> dict[str, Any]:
    """``{base, new, delta, rel}``; a missing side counts as 0 only when the other is known."""
    b = None if base is None else float(base)
    n = None if new is None else float(new)
    if b is None and n is None:
        return {"base": None, "new": None, "delta": None, "rel": None}
    d = (n or 0.0) - (b or 0.0)
    if b:
        rel: float | None = d / b
    else:
        rel = 0.0 if d == 0 else None
    return {"base": b, "new": n, "delta": d, "rel": rel}


def _get(doc: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return default
        cur = cur[p]
    return cur


def _phase_summary(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return _get(doc, "serving", "phases", "summary", default={}) or {}


def steps_of(doc: Mapping[str, Any]) -> int:
    """Steps of the representative rank (0 without step annotations)."""
    return int(_phase_summary(doc).get("steps") or 0)


def _idle_by_cause(doc: Mapping[str, Any]) -> dict[str, float]:
    out = dict.fromkeys(CAUSES, 0.0)
    for r in _get(doc, "serving", "gaps", "ranks", default=[]) or []:
        for c, v in (r.get("by_cause_us") or {}).items():
            out[c] = out.get(c, 0.0) + float(v or 0.0)
    return out


def _samples(doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-step GPU span samples by phase (the timeline of the representative rank), plus ``all``."""
    tl = _phase_summary(doc).get("timeline") or []
    by: dict[str, list[float]] = {}
    for row in tl:
        v = row.get("gpu_span_us")
        if v is None:
            continue
        by.setdefault(str(row.get("phase")), []).append(float(v))
        by.setdefault("all", []).append(float(v))
    return {k: np.asarray(v, float) for k, v in by.items()}


def _pct(x: np.ndarray, q: float) -> float | None:
    return float(np.percentile(x, q)) if x.size else None


def _phases(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    pb = _phase_summary(base).get("phases") or {}
    pn = _phase_summary(new).get("phases") or {}
    sb, sn = _samples(base), _samples(new)
    out: dict[str, Any] = {}
    for p in sorted(set(pb) | set(pn) | ({"all"} if sb or sn else set())):
        xb, xn = sb.get(p, np.zeros(0)), sn.get(p, np.zeros(0))
        b, n = pb.get(p, {}), pn.get(p, {})
        if p == "all":
            b = {"steps": steps_of(base), "gpu_busy_us": sum(v.get("gpu_busy_us", 0) for v in pb.values())}
            n = {"steps": steps_of(new), "gpu_busy_us": sum(v.get("gpu_busy_us", 0) for v in pn.values())}
        cats = sorted(set(b.get("categories_us", {})) | set(n.get("categories_us", {})))
        out[p] = {
            "steps": {"base": int(b.get("steps") or 0), "new": int(n.get("steps") or 0)},
            "gpu_busy_us": delta(b.get("gpu_busy_us", 0.0), n.get("gpu_busy_us", 0.0)),
            "categories_us": {c: delta(b.get("categories_us", {}).get(c, 0.0),
                                       n.get("categories_us", {}).get(c, 0.0)) for c in cats},
            "step_p50_us": delta(_pct(xb, 50), _pct(xn, 50)),
            "step_p90_us": delta(_pct(xb, 90), _pct(xn, 90)),
            "step_mean_us": delta(float(xb.mean()) if xb.size else None,
                                  float(xn.mean()) if xn.size else None),
            "test": step_test(xb, xn),
        }
    return out


def _bus_gbps(bytes_: Any, time_us: float, collective: str, size: int | None) -> float | None:
    if not bytes_ or not time_us:
        return None
    factor = BUS_FACTOR.get(collective, lambda n: 1.0)(size) if size and size > 1 else 1.0
    return float(bytes_) * factor / (time_us * 1e3)  # bytes/us -> GB/s is /1e3


def _communication(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    cb = _get(base, "summary", "communication", default={}) or {}
    cn = _get(new, "summary", "communication", default={}) or {}
    colls = sorted(set(cb.get("by_collective", {})) | set(cn.get("by_collective", {})))
    by_coll = {}
    for c in colls:
        xb = cb.get("by_collective", {}).get(c, {})
        xn = cn.get("by_collective", {}).get(c, {})
        by_coll[c] = {k: delta(xb.get(k, 0.0), xn.get(k, 0.0)) for k in ("time_us", "exposed_us", "count")}
    roles: dict[str, Any] = {}
    rb = _get(base, "serving", "communication", "summary", "by_role_collective", default={}) or {}
    rn = _get(new, "serving", "communication", "summary", "by_role_collective", default={}) or {}
    sizes_b = _get(base, "serving", "communication", "sizes", default={}) or {}
    sizes_n = _get(new, "serving", "communication", "sizes", default={}) or {}
    for key in sorted(set(rb) | set(rn)):
        role, _, coll = key.partition("/")
        xb, xn = rb.get(key, {}), rn.get(key, {})
        roles[key] = {
            "role": role, "collective": coll,
            **{k: delta(xb.get(k, 0.0), xn.get(k, 0.0)) for k in ("time_us", "exposed_us", "count")},
            "bus_gbps": delta(
                _bus_gbps(xb.get("bytes"), xb.get("time_us", 0.0), coll, sizes_b.get(role.lower())),
                _bus_gbps(xn.get("bytes"), xn.get("time_us", 0.0), coll, sizes_n.get(role.lower()))),
        }
    return {
        "time_us": delta(cb.get("time_us", 0.0), cn.get("time_us", 0.0)),
        "exposed_us": delta(cb.get("exposed_us", 0.0), cn.get("exposed_us", 0.0)),
        "by_collective": by_coll,
        "by_role_collective": roles,
        "by_role_basis": "representative rank of each run",
    }


def _findings(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    fb = {f["id"]: (i + 1, f) for i, f in enumerate(base.get("findings", []))}
    fn = {f["id"]: (i + 1, f) for i, f in enumerate(new.get("findings", []))}

    def row(fid: str) -> dict[str, Any]:
        b, n = fb.get(fid), fn.get(fid)
        f = (n or b)[1]  # type: ignore[index]
        return {"id": fid, "title": f["title"],
                "base_rank": b[0] if b else None, "new_rank": n[0] if n else None,
                "base_severity": b[1]["severity"] if b else None,
                "new_severity": n[1]["severity"] if n else None,
                "time_us": delta(b[1]["time_us"] if b else 0.0, n[1]["time_us"] if n else 0.0)}

    return {
        "appeared": [row(i) for i in fn if i not in fb],
        "disappeared": [row(i) for i in fb if i not in fn],
        "changed": [row(i) for i in fn if i in fb and (fb[i][0] != fn[i][0]
                                                       or fb[i][1]["severity"] != fn[i][1]["severity"])],
        "unchanged": [i for i in fn if i in fb and fb[i][0] == fn[i][0]
                      and fb[i][1]["severity"] == fn[i][1]["severity"]],
        "by_id": {i: row(i) for i in sorted(set(fb) | set(fn))},
    }


def _top_dtype(shares: Mapping[str, float] | None) -> str | None:
    if not shares:
        return None
    return max(sorted(shares), key=lambda k: shares[k])


def _context(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    cb, cn = base.get("context") or {}, new.get("context") or {}
    fields: list[tuple[str, Any, Any]] = [
        ("engine", cb.get("engine"), cn.get("engine")),
        ("workload", cb.get("workload"), cn.get("workload")),
        ("domain", cb.get("domain"), cn.get("domain")),
        ("gpu", _get(cb, "gpu", "name"), _get(cn, "gpu", "name")),
        ("ranks", _get(base, "summary", "ranks"), _get(new, "summary", "ranks")),
    ]
    for k in ("tp", "pp", "ep", "dp", "world_size"):
        fields.append((k, _get(cb, "parallel", k, "value"), _get(cn, "parallel", k, "value")))
    for g in sorted(set(cb.get("dtypes") or {}) | set(cn.get("dtypes") or {})):
        fields.append((f"dtype.{g}", _top_dtype(_get(cb, "dtypes", g)), _top_dtype(_get(cn, "dtypes", g))))
    sb, sn = base.get("server_args") or {}, new.get("server_args") or {}
    keys = sorted(set(sb) | set(sn))
    return {
        "fields": [{"field": f, "base": b, "new": n, "same": b == n} for f, b, n in fields],
        "differs": [f for f, b, n in fields if b != n],
        "server_args": {
            "changed": [{"key": k, "base": sb[k], "new": sn[k]} for k in keys
                        if k in sb and k in sn and sb[k] != sn[k]],
            "added": [{"key": k, "new": sn[k]} for k in keys if k not in sb],
            "removed": [{"key": k, "base": sb[k]} for k in keys if k not in sn],
        },
    }


def _per_unit(d: Mapping[str, Any], ub: float, un: float) -> tuple[float, float | None]:
    b = (d.get("base") or 0.0) / ub
    n = (d.get("new") or 0.0) / un
    return n - b, ((n - b) / b if b else (0.0 if n == b else None))


def _fmt_us(us: float) -> str:
    a = abs(us)
    if a >= 1e6:
        return f"{us / 1e6:+.3g} s"
    if a >= 1e3:
        return f"{us / 1e3:+.3g} ms"
    return f"{us:+.3g} µs"


def _verdict(diff: Mapping[str, Any], ub: float, un: float, unit: str, label: str) -> list[dict[str, Any]]:
    wall_unit = (diff["totals"]["wall"]["base"] or 0.0) / ub
    floor = VERDICT_MIN_SHARE * wall_unit
    cands: list[dict[str, Any]] = []

    def add(vid: str, what: str, d: Mapping[str, Any], evidence: dict[str, Any],
            per_unit: tuple[float, float | None] | None = None) -> None:
        dv, rel = per_unit if per_unit is not None else _per_unit(d, ub, un)
        if abs(dv) < floor or abs(dv) == 0 or (rel is not None and abs(rel) < VERDICT_MIN_REL):
            return
        rel_txt = f"{rel:+.1%}" if rel is not None else "new"
        if per_unit is None:  # a run total: its change per unit
            title = f"{what} {label} {rel_txt} ({_fmt_us(dv)})"
        else:  # a per-step figure: its own change, and what it weighs per unit
            title = f"{what} {rel_txt} ({_fmt_us(dv)} {label} on average)"
        cands.append({
            "id": vid, "kind": "regression" if dv > 0 else "improvement",
            "title": title,
            "delta_per_unit_us": dv, "rel": rel, "unit": unit,
            "delta_us": d.get("delta"), "evidence": evidence,
        })

    for cat, d in diff["categories"].items():
        add(f"category:{cat}", f"{cat} GPU time", d["time_us"],
            {"base_us": d["time_us"]["base"], "new_us": d["time_us"]["new"],
             "count": [int(d["count"]["base"] or 0), int(d["count"]["new"] or 0)],
             "kernels": top_changed(diff["kernels"], cat)})
    for cause, d in diff["idle_by_cause"].items():
        add(f"idle:{cause}", f"idle ({cause.replace('_', ' ')})", d,
            {"base_us": d["base"], "new_us": d["new"]})
    c = diff["communication"]["exposed_us"]
    add("communication.exposed", "exposed communication", c,
        {"base_us": c["base"], "new_us": c["new"],
         "by_collective": {k: v["exposed_us"]["delta"] for k, v in diff["communication"]["by_collective"].items()
                           if v["exposed_us"]["delta"]}})
    total_steps = max(sum(v["steps"]["new"] for k, v in diff["phases"].items() if k != "all"), 1)
    for p, d in diff["phases"].items():
        t = d["test"]
        if p == "all" or not t["significant"] or d["step_p50_us"]["delta"] is None:
            continue
        weight = d["steps"]["new"] / total_steps if unit == "step" else d["steps"]["new"]
        dv = d["step_p50_us"]["delta"] * weight
        add(f"{p}_step_p50", f"{p} step time p50", d["step_p50_us"],
            {"p50_us": [d["step_p50_us"]["base"], d["step_p50_us"]["new"]],
             "p90_us": [d["step_p90_us"]["base"], d["step_p90_us"]["new"]],
             "steps": [d["steps"]["base"], d["steps"]["new"]], "p_value": t["p_value"],
             "test": t["method"], "weight": round(weight, 4)},
            per_unit=(dv, d["step_p50_us"]["rel"]))
    cands.sort(key=lambda v: (-abs(v["delta_per_unit_us"]), v["id"]))
    return cands[:VERDICT_LIMIT]


def compare(base: Mapping[str, Any], new: Mapping[str, Any], *,
            labels: tuple[str, str] = ("base", "new"),
            sources: tuple[str, str] = ("report", "report")) -> dict[str, Any]:
    """The diff of two reports (``Report.to_dict()`` documents) as a JSON-able dict."""
    sb, sn = base["summary"], new["summary"]
    steps_b, steps_n = steps_of(base), steps_of(new)
    unit = "step" if steps_b and steps_n else "run"
    ranks_b, ranks_n = int(sb.get("ranks") or 1), int(sn.get("ranks") or 1)
    ub, un = (float(steps_b), float(steps_n)) if unit == "step" else (1.0, 1.0)
    ub, un = ub * ranks_b, un * ranks_n  # run totals are summed over ranks: per rank too
    label = f"per {unit}" + (" per rank" if max(ranks_b, ranks_n) > 1 else "")
    cats = [c for c in CATEGORIES if c in sb.get("categories", {}) or c in sn.get("categories", {})]
    diff: dict[str, Any] = {
        "schema_version": DIFF_SCHEMA_VERSION,
        "kind": "diff",
        "tool": {"name": TOOL_NAME, "version": __version__},
        "base": _side(base, labels[0], sources[0]),
        "new": _side(new, labels[1], sources[1]),
        "basis": {"unit": unit, "label": label, "divisor": {"base": ub, "new": un},
                  "steps": {"base": steps_b, "new": steps_n},
                  "ranks": {"base": sb.get("ranks"), "new": sn.get("ranks")}},
        "totals": {t: delta(sb.get(f"{t}_us", 0.0), sn.get(f"{t}_us", 0.0)) for t in TOTALS},
        "shares": {k: delta(sb.get(k, 0.0), sn.get(k, 0.0)) for k in ("busy_share", "idle_share", "edge_share")},
        "idle_by_cause": {c: delta(v, _idle_by_cause(new).get(c, 0.0)) for c, v in _idle_by_cause(base).items()},
        "categories": {c: {"time_us": delta(_get(sb, "categories", c, "time_us", default=0.0),
                                            _get(sn, "categories", c, "time_us", default=0.0)),
                           "count": delta(_get(sb, "categories", c, "count", default=0),
                                          _get(sn, "categories", c, "count", default=0))}
                       for c in cats},
        "phases": _phases(base, new),
        "communication": _communication(base, new),
        "findings": _findings(base, new),
        "context": _context(base, new),
        "warnings": [],
    }
    diff["kernels"], warns = compare_kernels(base, new, unit_base=ub, unit_new=un,
                                             busy_base_us=float(sb.get("busy_us", 0.0)))
    diff["warnings"].extend(warns)
    if sb.get("ranks") != sn.get("ranks"):
        diff["warnings"].append(f"the runs have different rank counts ({sb.get('ranks')} vs "
                                f"{sn.get('ranks')}): totals are summed over ranks")
    if unit == "run" and (steps_b or steps_n):
        diff["warnings"].append("only one run has step annotations: changes are per run, not per step")
    diff["verdict"] = _verdict(diff, ub, un, unit, label)
    f = diff["findings"]
    k = diff["kernels"]["counts"]
    diff["changed"] = bool(diff["verdict"] or f["appeared"] or f["disappeared"]
                           or k["added"] or k["removed"])
    diff["headline"] = _headline(diff)
    return diff


def _side(doc: Mapping[str, Any], label: str, source: str) -> dict[str, Any]:
    return {"label": label, "source": source, "report_schema_version": doc.get("schema_version"),
            "tool_version": _get(doc, "tool", "version"),
            "inputs": [i.get("path") for i in doc.get("inputs", [])],
            "engine": _get(doc, "context", "engine")}


def _headline(diff: Mapping[str, Any]) -> str:
    """Wall and busy change per unit (per step per rank, ...) and the biggest verdict item."""
    div = diff["basis"]["divisor"]
    label = diff["basis"]["label"]

    def pct(d: Mapping[str, Any]) -> str:
        _, rel = _per_unit(d, div["base"], div["new"])
        return "new" if rel is None else f"{rel:+.1%}"

    w, b = diff["totals"]["wall"], diff["totals"]["busy"]
    figures = f"wall {pct(w)}, busy {pct(b)} {label}"
    if not diff["changed"]:
        return f"no significant change ({figures})"
    top = diff["verdict"][0]["title"] if diff["verdict"] else "kernels or findings changed"
    return f"{figures}; biggest: {top}"

