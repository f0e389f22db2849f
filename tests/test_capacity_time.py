"""Capacity planner, time model and calibration: hand-computed FLOPs, step times, knee.

Rates are pinned through a Calibration so the expected numbers do not depend on default
efficiencies; every expectation is recomputed here from the model dimensions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analyzer.capacity import (
    Calibration,
    MemoryBudget,
    Parallelism,
    Workload,
    calibration_from_profile,
    calibration_from_report,
    combine,
    load_gpu,
    load_hardware_profile,
    load_model,
    load_report_calibration,
    plan,
    render_markdown,
    render_text,
)
from analyzer.capacity.timing import allreduce_s, attention_pairs
from analyzer.model import BadInputError

RATES = {
    "gemm_tflops": 500.0,
    "attention_prefill_tflops": 250.0,
    "hbm_gbps": 2000.0,
    "kv_read_gbps": 1000.0,
    "allreduce_gbps": 100.0,
    "allreduce_latency_us": 5.0,
}
PINNED = Calibration(**RATES, sources={k: "test" for k in RATES})

# Llama-3.1-8B dimensions (config.json)
V, H, L, HEADS, KV, HD, INTER = 128_256, 4096, 32, 32, 8, 128, 14_336
PARAMS_8B = 2 * V * H + L * (2 * H * H + 2 * H * KV * HD + 3 * H * INTER + 2 * H) + H


def test_attention_pairs_convention() -> None:
    assert attention_pairs(0, 1000) == 1000**2 / 2
    assert attention_pairs(400, 1000) == (1000**2 - 400**2) / 2
    # window 128: first 128 positions triangular, then 128 keys per query
    assert attention_pairs(0, 1000, 128) == 128**2 / 2 + 128 * (1000 - 128)
    assert attention_pairs(500, 1000, 128) == 128 * 500


def test_prefill_flops_and_time_tp1() -> None:
    S = 8_000
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        Parallelism(),
        Workload(context_tokens=S, output_tokens=100),
        calibration=PINNED,
    )
    gemm = 2 * S * (PARAMS_8B - 2 * V * H) + 2 * V * H
    attn = 2 * L * S**2 * HEADS * HD  # the 2 x L x S^2 x heads x head_dim
    assert p.prefill.gemm_flops == pytest.approx(gemm)
    assert p.prefill.attention_flops == pytest.approx(attn)
    assert p.prefill.gemm_s == pytest.approx(gemm / 500e12)
    assert p.prefill.attention_s == pytest.approx(attn / 250e12)
    assert p.prefill.tp_comm_s == 0 and p.prefill.pp_comm_s == 0


def test_prefix_hit_reduces_new_tokens_not_attended_keys() -> None:
    S, hit = 10_000, 0.75
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=S, prefix_hit=hit),
        calibration=PINNED,
    )
    n = 2_500
    assert p.prefill.gemm_flops == pytest.approx(2 * n * (PARAMS_8B - 2 * V * H) + 2 * V * H)
    assert p.prefill.attention_flops == pytest.approx(
        2 * HEADS * 2 * HD * L * (S**2 - 7_500**2) / 2
    )


def test_ring_allreduce_time() -> None:
    rates = plan(load_model("llama-3.1-8b"), load_gpu("h100"), calibration=PINNED).rates
    M = 64e6
    assert allreduce_s(M, 8, rates) == pytest.approx(5e-6 + 2 * 7 / 8 * M / 100e9)
    assert allreduce_s(M, 1, rates) == 0.0
    per_mb = Calibration(allreduce_us_per_mb=20.0, allreduce_latency_us=5.0)
    r2 = plan(load_model("llama-3.1-8b"), load_gpu("h100"), calibration=per_mb).rates
    assert allreduce_s(M, 8, r2) == pytest.approx(5e-6 + 64 * 20e-6)


def test_prefill_tp_comm_two_allreduces_per_layer() -> None:
    S = 4_000
    p = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8),
        Workload(context_tokens=S),
        calibration=PINNED,
    )
    msg = S * 8192 * 2
    assert p.prefill.tp_comm_s == pytest.approx(80 * 2 * (5e-6 + 2 * 7 / 8 * msg / 100e9))
    gemm = p.prefill.gemm_flops
    assert p.prefill.gemm_s == pytest.approx(gemm / (8 * 500e12))


def test_decode_step_memory_bound_by_hand() -> None:
    S, O = 8_192, 512
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        Parallelism(),
        Workload(context_tokens=S, output_tokens=O, agents=16),
        calibration=PINNED,
    )
    ctx = S + O // 2
    weights = 2 * (PARAMS_8B - V * H)  # every weight but the embedding table, bf16
    kv_seq = 2 * KV * HD * 2 * L * ctx
    for c in (1, 2, 4, 8, 16):
        row = p.row(c)
        assert row.decode_bound == "memory"
        assert row.itl_s == pytest.approx(weights / 2000e9 + c * kv_seq / 1000e9)


def test_decode_step_compute_bound_at_large_batch() -> None:
    S, O = 16, 16
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=S, output_tokens=O, agents=2000),
        calibration=PINNED,
    )
    c, ctx = 2000, S + O // 2
    flops = c * 2 * (PARAMS_8B - V * H) / 500e12 + c * 2 * HEADS * 2 * HD * L * ctx / 250e12
    row = p.row(c)
    assert row.decode_bound == "compute"
    assert row.itl_s == pytest.approx(flops)


def test_moe_decode_reads_only_touched_experts() -> None:
    m = load_model("mixtral-8x7b")
    p = plan(
        m, load_gpu("h100"), Parallelism(tp=2), Workload(context_tokens=16), calibration=PINNED
    )
    expert_bytes = 2 * 32 * 8 * 3 * 4096 * 14_336 / 2  # all routed experts, per GPU
    assert p.decode.expert_weight_bytes == pytest.approx(expert_bytes)
    # batch 1 touches 2 of 8 experts: 1 - (1 - 2/8)^1 = 1/4 of the expert bytes
    dense = p.decode.dense_weight_bytes
    kv = p.decode.kv_bytes_per_sequence
    itl1 = p.row(1).itl_s
    comm = 32 * 2 * (5e-6 + 2 * 1 / 2 * 4096 * 2 / 100e9)
    assert itl1 == pytest.approx((dense + expert_bytes / 4) / 2000e9 + kv / 1000e9 + comm)


def test_serving_curve_by_hand() -> None:
    S, O = 20_000, 400
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=S, output_tokens=O, agents=8),
        calibration=PINNED,
    )
    T = p.prefill.total_s
    for c in (1, 3, 8):
        row = p.row(c)
        cycle = c * T + O * row.itl_s
        assert row.e2e_s == pytest.approx(cycle)
        assert row.requests_per_s == pytest.approx(c / cycle)
        assert row.output_tokens_per_s == pytest.approx(c * O / cycle)
        u = c * T / cycle
        assert row.ttft_mean_s == pytest.approx(T * (1 + min(u / (2 * (1 - u)), (c - 1) / 2)))
        assert row.ttft_burst_s == pytest.approx(c * T)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b", "deepseek-v3", "qwen3-235b-a22b",
                                   "mixtral-8x7b", "gpt-oss-120b", "qwen3-32b", "qwen3-next-80b-a3b",
                                   "deepseek-v3.2"])
@pytest.mark.parametrize("context", [2_000, 40_000])
def test_ttft_mean_never_above_the_burst(model: str, context: int) -> None:
    """Issue 17: at concurrency 1 the mean TTFT was 2.96 s against a 2.33 s burst (an M/D/1
    wait for a call that has nobody ahead of it). A closed loop of C calls has at most C - 1
    prefills ahead of a call: mean TTFT <= T x (C + 1) / 2 <= burst = C x T, and = T at C = 1."""
    p = plan(load_model(model), load_gpu("h200"), Parallelism(tp=8),
             Workload(context_tokens=context, output_tokens=512, agents=20))
    T = p.prefill.total_s
    assert p.row(1).ttft_mean_s == pytest.approx(T)
    assert p.row(1).ttft_burst_s == pytest.approx(T)
    for row in p.curve_points():
        c = row.concurrency
        assert row.ttft_mean_s <= T * (c + 1) / 2 * (1 + 1e-12)
        assert row.ttft_mean_s <= row.ttft_burst_s * (1 + 1e-12)


def test_knee_matches_closed_form_and_optimum_definition() -> None:
    S, O = 30_000, 1_000
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=S, output_tokens=O),
        budget=MemoryBudget(kv_budget_gb=60),
        calibration=PINNED,
    )
    # memory-bound, tp=1: ITL(C) = a + k C exactly
    a = 2 * (PARAMS_8B - V * H) / 2000e9
    k = 2 * KV * HD * 2 * L * (S + O // 2) / 1000e9
    T = p.prefill.total_s
    c_star = O * a / (T + O * k)

    def power(c: int) -> float:
        return c / (c * (T + O * k) + O * a) ** 2

    cands = [max(1, math.floor(c_star)), math.ceil(c_star)]
    assert p.knee_concurrency == max(cands, key=power)
    # throughput-optimal: first C reaching 95% of the best within the memory bound
    c_mem = p.max_concurrency_memory
    assert c_mem == int(60e9 // (2 * KV * HD * 2 * L * S))
    X = [p.row(c).requests_per_s for c in range(1, c_mem + 1)]
    opt = p.throughput_optimal_concurrency
    assert X[opt - 1] >= 0.95 * max(X) and (opt == 1 or X[opt - 2] < 0.95 * max(X))
    assert p.recommended_stable == p.knee_concurrency
    assert p.recommended_upper == max(opt, p.knee_concurrency)


def test_rule_of_thumb_and_warning_above_4r() -> None:
    base = {"context_tokens": 32_000, "output_tokens": 500}
    ok = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8, replicas=2),
        Workload(agents=8, **base),
    )
    assert ok.rule_of_thumb == {"stable": 4, "upper": 8}
    assert ok.to_dict()["rule_of_thumb"] == {"stable": 4, "upper": 8}
    assert not any("4 x R" in w for w in ok.warnings)
    over = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8, replicas=2),
        Workload(agents=9, **base),
    )
    assert any("exceed 4 x R = 8" in w for w in over.warnings)
    assert "4 x R" in render_text(over) and "4 x R" in render_markdown(over)


def test_agents_above_memory_bound_queue() -> None:
    p = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8),
        Workload(context_tokens=100_000, agents=40),
        MemoryBudget(kv_budget_gb=20),
    )
    c_mem = int(20e9 // (1 * 256 * 2 * 80 * 100_000))
    assert p.max_concurrency_memory == c_mem
    assert p.estimate.running_per_replica == c_mem
    assert p.estimate.queued_per_replica == 40 - c_mem
    assert any("KV memory bound" in w for w in p.warnings)


def test_weights_do_not_fit_is_a_warning() -> None:
    p = plan(load_model("llama-3.1-405b"), load_gpu("h100"), Parallelism(tp=2))
    assert p.max_concurrency_memory == 0
    assert any("weights need" in w for w in p.warnings)
    assert p.recommended_stable == 0 and p.recommended_upper == 0


# ---------------------------------------------------------------------------------------
# Calibration: report fixture and hardware-profile fixture
# ---------------------------------------------------------------------------------------

REPORT = {
    "schema": "trace-analyzer report v1",
    "summary": {"wall_us": 1000.0},
    "calibration": {
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "prefill_attention_tflops": 310.0,
        "gemm_tflops": 620.0,
        "decode_step_us": None,
        "decode_batch_size": None,
        "hbm_gbps": 2500.0,
        "allreduce_gbps": 180.0,
        "allreduce_us_per_mb": None,
    },
}

PROFILE = {
    "schema": "trace-analyzer/hardware-profile/v1",
    "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"},
    "dtype": "bf16",
    "measured": {
        "gemm_tflops": 700.0,
        "attention_prefill_tflops": 400.0,
        "attention_fit": {"a": 1.0, "b": 0.1, "c": 1e-6, "quadratic_share_at_max": 0.8},
        "hbm_gbps": 2900.0,
        "kv_read_gbps": 2100.0,
        "allreduce_gbps": None,
        "allreduce_latency_us": 12.0,
    },
}


def _write(tmp_path, name: str, data: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_report_calibration_replaces_datasheet_rates(tmp_path) -> None:
    cal = load_report_calibration(_write(tmp_path, "report.json", REPORT))
    assert cal.gemm_tflops == 620 and cal.attention_prefill_tflops == 310
    assert cal.decode_step_us is None
    S = 16_000
    p = plan(
        load_model("llama-3.1-70b"),
        load_gpu("h100"),
        Parallelism(tp=8),
        Workload(context_tokens=S),
        calibration=cal,
    )
    assert p.rates.gemm_tflops == 620 and p.rates.attention_tflops == 310
    assert p.rates.hbm_gbps == 2500 and p.rates.allreduce_bus_gbps == 180
    assert p.prefill.gemm_s == pytest.approx(p.prefill.gemm_flops / (8 * 620e12))
    assert p.prefill.attention_s == pytest.approx(2 * 80 * S**2 * 64 * 128 / (8 * 310e12))
    d = p.to_dict()
    assert set(d["calibrated_from_trace"]) == {
        "gemm_tflops",
        "attention_tflops",
        "hbm_gbps",
        "allreduce_bus_gbps",
    }
    assert "report.json" in d["rates"]["gemm_tflops"]["source"]
    assert d["rates"]["gemm_tflops"]["measured"] is True
    assert d["rates"]["allreduce_latency_us"]["measured"] is False
    assert "[measured]" in render_text(p)
    assert not any("measured on" in w for w in p.warnings)


def test_report_decode_step_scales_decode(tmp_path) -> None:
    model, gpu, par = load_model("llama-3.1-8b"), load_gpu("h100"), Parallelism()
    wl = Workload(context_tokens=4_000, output_tokens=200, agents=8)
    base = plan(model, gpu, par, wl, calibration=PINNED)
    predicted = base.row(8).itl_s
    report = {"calibration": {"decode_step_us": 2 * predicted * 1e6, "decode_batch_size": 8}}
    cal = combine(calibration_from_report(report), PINNED)
    p = plan(model, gpu, par, wl, calibration=cal)
    assert p.decode_scale == pytest.approx(2.0)
    assert p.row(8).itl_s == pytest.approx(2 * predicted)
    assert p.row(1).itl_s == pytest.approx(2 * base.row(1).itl_s)
    assert any("decode step calibrated" in n for n in p.notes)
    assert any("differs from the model" in w for w in p.warnings) is False


def test_hardware_profile_calibration(tmp_path) -> None:
    cal = load_hardware_profile(_write(tmp_path, "profile.json", PROFILE))
    assert cal.gemm_tflops == 700 and cal.kv_read_gbps == 2100
    assert cal.allreduce_gbps is None and cal.allreduce_latency_us == 12
    assert any("quadratic share" in n for n in cal.notes)
    p = plan(load_model("qwen3-235b-a22b"), load_gpu("h100"), Parallelism(tp=8), calibration=cal)
    assert p.rates.gemm_tflops == 700 and p.rates.kv_read_gbps == 2100
    assert p.rates.allreduce_latency_us == 12
    # not measured -> datasheet: 900 GB/s NVLink / 2 directions x 0.7
    assert p.rates.allreduce_bus_gbps == pytest.approx(450 * 0.7)
    assert "hardware profile profile.json" in p.rates.sources["gemm_tflops"]


def test_report_wins_over_profile() -> None:
    both = combine(calibration_from_report(REPORT), calibration_from_profile(PROFILE))
    assert both is not None
    assert both.gemm_tflops == 620  # report
    assert both.kv_read_gbps == 2100  # only the profile has it
    assert both.allreduce_latency_us == 12
    assert both.sources["gemm_tflops"].startswith("trace report")
    assert both.sources["kv_read_gbps"].startswith("hardware profile")


def test_cpu_profile_and_gpu_mismatch_are_flagged() -> None:
    cpu = dict(PROFILE, device={"type": "cpu", "name": "x86_64"})
    cal = calibration_from_profile(cpu)
    assert any("cpu device" in n for n in cal.notes)
    a100 = calibration_from_report(
        {"calibration": {"gpu_name": "NVIDIA A100-SXM4-80GB", "gemm_tflops": 250.0}}
    )
    p = plan(load_model("llama-3.1-8b"), load_gpu("h100"), calibration=a100)
    assert any("measured on 'NVIDIA A100-SXM4-80GB'" in w for w in p.warnings)


def test_bad_calibration_inputs(tmp_path) -> None:
    with pytest.raises(BadInputError, match="positive"):
        calibration_from_report({"calibration": {"gemm_tflops": -3}})
    with pytest.raises(BadInputError, match="number"):
        calibration_from_report({"calibration": {"hbm_gbps": "fast"}})
    with pytest.raises(BadInputError, match="not a trace-analyzer report"):
        calibration_from_report({"schema": "something else", "calibration": {}})
    with pytest.raises(BadInputError, match="hardware-profile"):
        calibration_from_profile({"schema": "v0", "measured": {}})
    with pytest.raises(BadInputError, match="cannot read"):
        load_report_calibration(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("[1,")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_hardware_profile(tmp_path / "x.json")
    empty = calibration_from_report({"schema": "trace-analyzer report v1"})
    assert empty.is_empty() and "no calibration" in empty.notes[0]


def test_curve_is_vectorised_and_monotone() -> None:
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=2_000, output_tokens=300),
        calibration=PINNED,
    )
    X = p.curve.requests_per_s
    assert isinstance(X, np.ndarray) and len(X) >= p.max_concurrency_memory
    assert np.all(np.diff(p.curve.itl_s) >= 0)
    assert np.all(np.diff(p.curve.ttft_burst_s) > 0)


def test_ep_uses_all_to_all_on_moe_layers() -> None:
    S = 2_000
    m = load_model("qwen3-235b-a22b")  # 94 layers, all MoE, 8 experts per token
    p = plan(
        m,
        load_gpu("h200"),
        Parallelism(tp=8, ep=8),
        workload=Workload(context_tokens=S),
        calibration=PINNED,
    )
    msg = S * 4096 * 2
    ar = 5e-6 + 2 * 7 / 8 * msg / 100e9
    a2a = 5e-6 + 7 / 8 * msg * 8 / 100e9
    assert p.prefill.tp_comm_s == pytest.approx(94 * (ar + 2 * a2a))
    no_ep = plan(
        m, load_gpu("h200"), Parallelism(tp=8), Workload(context_tokens=S), calibration=PINNED
    )
    assert no_ep.prefill.tp_comm_s == pytest.approx(94 * 2 * ar)


def test_calibration_from_report_object() -> None:
    class FakeReport:
        def to_dict(self) -> dict:
            return {"calibration": {"gemm_tflops": 555.0}}

    assert calibration_from_report(FakeReport()).gemm_tflops == 555.0


def test_explicit_gpu_figures_override_preset() -> None:
    from analyzer.capacity.presets import gpu_with

    gpu = gpu_with(load_gpu("h100"), memory_gb=100.0, hbm_gbps=4000.0)
    assert gpu.memory_gb == 100 and gpu.bf16_tflops == 989
    p = plan(load_model("llama-3.1-8b"), gpu, budget=MemoryBudget(mem_fraction=0.9))
    assert p.kv_budget_bytes_per_gpu == pytest.approx(0.9 * 100e9 - 2 * PARAMS_8B)
    assert p.rates.hbm_gbps == pytest.approx(4000 * 0.8)


def test_curve_points_for_charts() -> None:
    p = plan(
        load_model("llama-3.1-8b"),
        load_gpu("h100"),
        workload=Workload(context_tokens=1_000, output_tokens=100),
        calibration=PINNED,
    )
    pts = p.curve_points(50)
    cs = [r.concurrency for r in pts]
    assert cs == sorted(set(cs)) and cs[0] == 1
    assert {p.knee_concurrency, p.max_concurrency_memory} <= set(cs)
    assert len(pts) <= 53
