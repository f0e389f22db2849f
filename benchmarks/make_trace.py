"""Write a large synthetic Kineto trace by tiling the events of a real one (benchmark input).

SYNTHETIC: the events of a real trace (default: the SGLang Qwen3-8B MI300X serving trace from
../shared/traces, which HolisticTraceAnalysis can also analyse; HTA's temporal breakdown
asserts on the H100 generate() trace) are repeated ``copies`` times, each copy shifted in time by the span of
the original plus a 1 ms gap, so the result looks like one long capture. Ground truth is
known by construction: every count and duration is ``copies`` x the original's.

    python benchmarks/make_trace.py --size-mb 300 --out benchmarks/out/big/trace.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared/traces/kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz"


def _load(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        doc = json.load(fh)
    return doc if isinstance(doc, dict) else {"traceEvents": doc}


def _header(doc: dict, rank: int, world_size: int | None) -> bytes:
    dist = doc.get("distributedInfo") or {"backend": "nccl", "world_size": 1}
    doc["distributedInfo"] = dict(dist, rank=rank)
    if world_size is not None:
        doc["distributedInfo"]["world_size"] = world_size
    return orjson.dumps(doc)[:-1] + b',"traceEvents":['


def make_ranks(out_dir: Path, ranks: int, size_mb: float, source: Path = DEFAULT_SOURCE) -> dict:
    """``ranks`` rank files ``rank<i>.trace.json`` of one job in ``out_dir`` (distributedInfo
    rank i of world ``ranks``): rank 0 is made by ``make_trace``, the others copy its events
    under their own header (the same events on every rank)."""
    first = out_dir / "rank0.trace.json"
    truth = make_trace(first, size_mb, source, rank=0, world_size=ranks)
    doc = _load(source)
    doc.pop("traceEvents")
    skip = len(_header(dict(doc), 0, ranks))
    for r in range(1, ranks):
        with open(first, "rb") as src, open(out_dir / f"rank{r}.trace.json", "wb") as dst:
            dst.write(_header(dict(doc), r, ranks))
            src.seek(skip)
            while block := src.read(1 << 24):
                dst.write(block)
    return dict(truth, ranks=ranks)


def make_trace(out: Path, size_mb: float, source: Path = DEFAULT_SOURCE, rank: int = 0,
               world_size: int | None = None) -> dict:
    """Write ``out`` (uncompressed JSON, >= size_mb MB) and return its ground truth."""
    doc = _load(source)
    events = doc.pop("traceEvents")
    timed = [e for e in events if isinstance(e.get("ts"), (int, float))]
    t0 = min(e["ts"] for e in timed)
    t1 = max(e["ts"] + e.get("dur", 0) for e in timed)
    span_us = (t1 - t0) + 1000.0
    one = b",\n".join(orjson.dumps(e) for e in events)
    copies = max(1, int(size_mb * 1e6 / len(one)) + 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = _header(doc, rank, world_size)
    n_complete = sum(1 for e in events if e.get("ph") == "X")
    with open(out, "wb") as fh:
        fh.write(head)
        for c in range(copies):
            shift = c * span_us
            shifted = []
            for e in events:
                if "ts" in e and isinstance(e["ts"], (int, float)):
                    e = dict(e)
                    e["ts"] = round(e["ts"] + shift, 3)
                shifted.append(e)
            if c:
                fh.write(b",\n")
            fh.write(b",\n".join(orjson.dumps(e) for e in shifted))
        fh.write(b"]}\n")
    return {"copies": copies, "complete_events": n_complete * copies, "bytes": out.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/big/trace.json")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    a = ap.parse_args()
    print(json.dumps(make_trace(a.out, a.size_mb, a.source)))


if __name__ == "__main__":
    main()
