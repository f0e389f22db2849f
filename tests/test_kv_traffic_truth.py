"""KV-cache read bandwidth on the synthetic KV-bound scenario, recomputed independently.

Bytes read by decode attention = sum over decode steps of the whole cached context
(``sk`` of the ``generation_<bs>(sq..sk..)`` annotation) x KV bytes per token.
Llama-3.1-8B by hand: 32 layers x 2 (K and V) x 8 KV heads x 128 head dim x 2 bytes (bf16)
= 131,072 B per token (TP1).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

import analyzer

SCENARIO = Path(__file__).resolve().parent.parent / "sample_traces" / "synthetic" / "kv_bound_decode_cuda_graph"
KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2
GEN = re.compile(r"_generation_(\d+)\(sq\d+sk(\d+)sqsq")


def test_achieved_kv_bandwidth_matches_hand_computation():
    (path,) = sorted(SCENARIO.glob("*.trace.json.gz"))
    events = json.load(gzip.open(path))["traceEvents"]
    context_tokens = sum(
        int(m.group(2)) for e in events
        if e.get("cat") == "user_annotation" and (m := GEN.search(e["name"])) and int(m.group(1)) > 0
    )
    decode_attention_us = sum(
        e["dur"] for e in events if e.get("cat") == "kernel" and "BatchDecodeWithPagedKVCache" in e["name"]
    )
    assert context_tokens > 0 and decode_attention_us > 0
    want_gbps = context_tokens * KV_BYTES_PER_TOKEN / (decode_attention_us * 1e-6) / 1e9

    doc = analyzer.analyze([SCENARIO]).to_dict()
    top = doc["findings"][0]
    assert top["id"] == "kv_cache_bandwidth"
    ev = top["evidence"]
    assert ev["kv_bytes_per_token"] == KV_BYTES_PER_TOKEN
    assert ev["bytes_read"] == pytest.approx(context_tokens * KV_BYTES_PER_TOKEN, rel=1e-9)
    assert ev["achieved_gbps"] == pytest.approx(want_gbps, rel=0.01)
    assert ev["hbm_gbps"] == 4800  # H200 datasheet, from the trace's deviceProperties name
    assert ev["memory_bound"] is True
    assert doc["calibration"]["hbm_gbps"] == pytest.approx(want_gbps, rel=0.01)


def test_recommendation_carries_the_planners_concurrency():
    """The finding quotes the capacity planner's figure for this model, GPU and context."""
    import statistics

    from analyzer.capacity import Parallelism, Workload, load_gpu, load_model, plan

    (path,) = sorted(SCENARIO.glob("*.trace.json.gz"))
    events = json.load(gzip.open(path))["traceEvents"]
    per_request = [
        int(m.group(2)) / int(m.group(1)) for e in events
        if e.get("cat") == "user_annotation" and (m := GEN.search(e["name"])) and int(m.group(1)) > 0
    ]
    context = int(statistics.median(per_request))
    want = plan(load_model("llama-3.1-8b"), load_gpu("h200"), Parallelism(tp=1),
                Workload(context_tokens=context)).to_dict()["recommended_concurrency"]
    rec = analyzer.analyze([SCENARIO]).findings[0].recommendation
    assert f"near {want['stable']} (upper bound {want['upper']}" in rec
    assert f"~{context} tokens" in rec
