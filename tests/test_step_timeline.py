"""The steps-over-time series (serving.phases.ranks[].timeline) against the generator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import analyzer

SYN = Path(__file__).resolve().parent.parent / "sample_traces" / "synthetic"


@pytest.mark.parametrize("scenario", ["batching_gaps", "kv_bound_decode_cuda_graph"])
def test_timeline_matches_planted_steps(scenario):
    truth = json.loads((SYN / scenario / "ground_truth.json").read_text())
    (rank,) = [r for r in truth["ranks"] if r["rank"] == 0]
    planted = rank["steps"]
    t0 = rank["wall_start_us"]
    doc = analyzer.analyze([SYN / scenario]).to_dict()
    (tl,) = [r["timeline"] for r in doc["serving"]["phases"]["ranks"] if r.get("rank", 0) == 0][:1]
    assert len(tl) == len(planted)
    for got, want in zip(tl, planted):
        assert got["phase"] == {"EXTEND": "prefill", "DECODE": "decode"}[want["phase"]]
        assert got["gpu_start_us"] == pytest.approx(want["gpu_start_us"] - t0, abs=0.002)
        assert got["gpu_span_us"] == pytest.approx(want["gpu_end_us"] - want["gpu_start_us"], abs=0.002)
        assert got["bs"] == want["bs"]
    # the idle time between consecutive steps is visible on this axis
    between = sum(b["gpu_start_us"] - (a["gpu_start_us"] + a["gpu_span_us"]) for a, b in zip(tl, tl[1:]))
    assert between == pytest.approx(rank["gaps"]["between_steps_us"], rel=0.01)
