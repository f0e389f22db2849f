"""Findings: ranking rule, severities, thresholds as data, detector ids, metrics contrast."""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.findings import FINDING_IDS, load_thresholds, rank_findings, severity_for
from analyzer.findings.detectors import detect
from analyzer.model import Finding


def F(fid: str, t: float) -> Finding:
    return Finding(fid, fid, "low", 0.1, t, {}, "do something")


def test_rank_biggest_first_then_id():
    fs = [F("memcpy", 10.0), F("gemm_compute", 30.0), F("batching_gaps", 30.0), F("moe", 20.0)]
    assert [f.id for f in rank_findings(fs)] == ["batching_gaps", "gemm_compute", "moe", "memcpy"]
    assert rank_findings(list(reversed(fs))) == rank_findings(fs)  # deterministic


def test_severity_thresholds_from_data():
    th = load_thresholds()
    assert severity_for(th["severity"]["critical"]) == "critical"
    assert severity_for(th["severity"]["high"]) == "high"
    assert severity_for(th["severity"]["low"] / 2) == "info"
    assert 0 < th["min_share"] < th["severity"]["low"]


def _fig(rank: int, **kw) -> dict:
    base = {"rank": rank, "wall_us": 1000.0, "busy_us": 800.0, "idle_us": 200.0}
    base.update(kw)
    return base


def test_detectors_rank_idle_and_busy_causes():
    figs = [_fig(0, cat_attention_decode_us=500.0, between_scheduler_us=150.0,
                 cat_gemm_us=200.0, inside_launch_overhead_us=5.0),
            _fig(1, cat_attention_decode_us=520.0, between_scheduler_us=160.0,
                 cat_gemm_us=210.0, inside_launch_overhead_us=6.0)]
    out = detect(figs, {}, {"disable_overlap_schedule": True})
    ids = [f.id for f in out]
    assert ids[:3] == ["kv_cache_bandwidth", "gemm_compute", "batching_gaps"]
    assert "host_launch_overhead" not in ids  # below min_share
    assert set(ids) <= set(FINDING_IDS)
    kv = out[0]
    # one basis: the representative rank (walls tie -> the lower rank, 0), not a median mix
    assert kv.time_us == 500.0 and abs(kv.share - 0.50) < 1e-12 and kv.severity == "critical"
    assert kv.evidence["representative"].startswith("rank 0")
    gaps = next(f for f in out if f.id == "batching_gaps")
    assert "overlap scheduler" in gaps.recommendation
    for f in out:
        assert f.recommendation and f.title and f.evidence["wall_us"] == 1000.0


def test_straggler_named_in_title():
    figs = [_fig(r, wait_exposed_us=(0.0 if r == 3 else 300.0)) for r in range(4)]
    skew = {"instances": 10, "straggler_rank": 3, "straggler_last_share": 1.0,
            "skew_us": {"p50": 30.0}, "ranks": {r: {"wait_us": 1.0} for r in range(4)}}
    out = detect(figs, {"skew": skew}, None)
    f = out[0]
    assert f.id == "cross_rank_skew" and "rank 3" in f.title and f.evidence["straggler_rank"] == 3
    assert f.time_us == 300.0


def test_metrics_contrast_queue_empty():
    from analyzer.analyses.serving import _metrics_section

    @dataclass
    class M:
        num_queue_reqs: float = 0.0
        num_running_reqs: float = 12.0
        queue_time_s: object = None
        ttft_s: object = None
        token_usage: float = 0.3

    sec = _metrics_section(M(), [_fig(0)])
    assert sec["num_queue_reqs"] == 0.0 and "nothing is queued" in sec["verdict"]
    assert abs(sec["gpu_idle_share"] - 0.2) < 1e-12
    out = detect([_fig(0, between_scheduler_us=300.0)], {"metrics": sec}, {})
    assert "queue is empty" in out[0].recommendation
    busy = _metrics_section(M(num_queue_reqs=40.0), [_fig(0)])
    assert "wait in the queue" in busy["verdict"]
