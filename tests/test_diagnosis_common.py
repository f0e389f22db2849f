"""Shared helpers of the serving-diagnosis tests (no tests here).

``load_dir`` uses ``analyzer.readers.load_traces`` when it exists; until then it reads each
Kineto file, takes the rank from SGLang's ``-TP-<tp>[-PP-<pp>]`` naming and merges the
stage-split files (EXTEND/DECODE) of one rank.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from analyzer.classify import classify_trace
from analyzer.model import RankInfo, Trace

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = REPO / "sample_traces" / "synthetic"
SCENARIOS = ("long_prefill_tp2", "kv_bound_decode_cuda_graph", "tp8_straggler", "pp4_bubbles",
             "batching_gaps", "tensor_core_decode", "stage_split")


def load_dir(d: Path) -> tuple[list[Trace], dict | None]:
    try:
        from analyzer.readers import load_traces  # type: ignore[attr-defined]
    except ImportError:
        load_traces = None
    if load_traces is not None:
        ts = load_traces([str(d)])
        for t in ts.traces:
            classify_trace(t)
        return list(ts.traces), (dict(ts.server_args) if ts.server_args else None)
    from analyzer.readers.kineto import read_kineto

    by: dict[tuple[int, int], list[Trace]] = {}
    for f in sorted(Path(d).glob("*.trace.json.gz")):
        m = re.search(r"-TP-(\d+)(?:-PP-(\d+))?", f.name)
        assert m, f.name
        by.setdefault((int(m.group(2) or 0), int(m.group(1))), []).append(read_kineto(str(f)))
    sa_path = Path(d) / "server_args.json"
    sa = json.loads(sa_path.read_text()) if sa_path.exists() else None
    tp_size = (sa or {}).get("tp_size", 1)
    multi_pp = len({k[0] for k in by}) > 1
    out = []
    for (pp, tp), trs in sorted(by.items()):
        t = trs[0]
        if len(trs) > 1:
            t.events = pd.concat([x.events for x in trs], ignore_index=True)
            for c in ("kind", "name", "collective", "pg_name"):
                t.events[c] = t.events[c].astype("category")
        t.rank = RankInfo(rank=pp * tp_size + tp, rank_source="filename", tp_rank=tp,
                          pp_rank=pp if multi_pp else None)
        classify_trace(t)
        out.append(t)
    return out, sa


def ground_truth(scenario: str) -> dict:
    return json.loads((SYNTHETIC / scenario / "ground_truth.json").read_text())
