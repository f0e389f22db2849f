"""Debug tool: how much GPU time each category takes, and what stays "other".

    python -m analyzer.classify [--rules FILE] [--top N] TRACE [TRACE ...]

TRACE is a Kineto JSON (.json / .json.gz) or an Nsight Systems SQLite export. It reads
kernels, memcpys and memsets directly (no analyzer.readers), so it works on a trace the
readers reject too. Output: the share of GPU time per category, then the top "other"
kernels by time (add rules for them with --rules).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

from analyzer.classify import classify_names, load_rules
from analyzer.model import CATEGORIES, BadInputError

_KINETO_KIND = {
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
}


def gpu_activity(path: Path) -> Counter[tuple[str, str, str]]:
    """``(kind, name, raw collective arg) -> total duration (us)`` of a trace's GPU events."""
    out: Counter[tuple[str, str, str]] = Counter()
    if path.suffix in (".sqlite", ".db"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for table, kind in (
                ("CUPTI_ACTIVITY_KIND_KERNEL", "kernel"),
                ("CUPTI_ACTIVITY_KIND_MEMCPY", "memcpy"),
                ("CUPTI_ACTIVITY_KIND_MEMSET", "memset"),
            ):
                try:
                    if kind == "kernel":
                        rows = con.execute(
                            f"SELECT s.value, SUM(k.end - k.start) FROM {table} k "
                            "JOIN StringIds s ON s.id = k.demangledName GROUP BY s.value"
                        ).fetchall()
                    else:
                        rows = [
                            (kind, r[0])
                            for r in con.execute(f"SELECT SUM(end - start) FROM {table}")
                        ]
                except sqlite3.Error:
                    continue
                for name, dur_ns in rows:
                    if dur_ns:
                        out[(kind, str(name), "")] += dur_ns / 1000.0
        finally:
            con.close()
        return out
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
    for e in events:
        kind = _KINETO_KIND.get(str(e.get("cat", "")).lower())
        if kind is None or e.get("ph") != "X":
            continue
        args = e.get("args") or {}
        out[(kind, str(e.get("name", "")), str(args.get("Collective name", "")))] += float(
            e.get("dur", 0)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analyzer.classify", description=__doc__.split("\n")[0]
    )
    ap.add_argument("traces", nargs="+", type=Path)
    ap.add_argument("--rules", action="append", default=[], help="extra rule file (TOML)")
    ap.add_argument("--top", type=int, default=10, help="how many 'other' kernels to list")
    ns = ap.parse_args(argv)
    try:
        rules = load_rules(ns.rules)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in ns.traces:
        acts = gpu_activity(path)
        keys = list(acts)
        cats, _ = classify_names(
            [k[1] for k in keys],
            rules,
            kinds=[k[0] for k in keys],
            collective_args=[k[2] for k in keys],
        )
        total = sum(acts.values()) or 1.0
        by_cat: Counter[str] = Counter()
        others: Counter[str] = Counter()
        for k, c in zip(keys, cats):
            by_cat[c] += acts[k]
            if c == "other":
                others[k[1]] += acts[k]
        print(f"== {path} ({len({k[1] for k in keys})} unique names, {total / 1000:.1f} ms GPU)")
        print(
            "   "
            + "  ".join(f"{c}={100 * by_cat[c] / total:.1f}%" for c in CATEGORIES if by_cat[c])
        )
        print(f"   other: {100 * by_cat['other'] / total:.2f}% of GPU time")
        for name, dur in others.most_common(ns.top):
            print(f"     {100 * dur / total:6.2f}%  {name[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
