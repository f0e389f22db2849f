"""`trace-analyzer diff`: real pairs from ../shared with deltas recomputed independently here
(plain gzip+json, sort-and-merge unions), the gate's exit codes through the real CLI, and the
significance test on SYNTHETIC step samples (labelled as such)."""

from __future__ import annotations

import copy
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import merged_length

from analyzer.analyses.kernel_table import kernel_family, normalize_kernel_name
from analyzer.diff import compare, diff_paths, parse_gate, validate_diff
from analyzer.diff.gate import check_gates, valid_names
from analyzer.diff.stats import _permutation, step_test
from analyzer.model import BadInputError
from analyzer.render.diff import render_diff

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
RECSYS = "kineto/hta_recsys_2ranks"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def independent(path: Path) -> dict:
    """Busy and NCCL union (µs), and kernel names with summed durations, from plain gzip+json."""
    with gzip.open(path) as fh:
        data = json.load(fh)
    acts, comm, names = [], [], {}
    for ev in data["traceEvents"]:
        if ev.get("ph") != "X" or ev.get("cat") not in GPU_CATS:
            continue
        s, e = float(ev["ts"]), float(ev["ts"]) + float(ev["dur"])
        acts.append((s, e))
        if ev["cat"] == "kernel":
            names[ev["name"]] = names.get(ev["name"], 0.0) + float(ev["dur"])
            if ev["name"].startswith("nccl"):
                comm.append((s, e))
    return {"busy_us": merged_length(acts), "comm_us": merged_length(comm), "kernels": names}


@pytest.fixture(scope="module")
def recsys(shared_traces):
    root = shared_traces / RECSYS
    base, new = root / "sampled_rank-0.json.gz", root / "sampled_rank-1.json.gz"
    return base, new, diff_paths(base, new)


# --------------------------------------------------------------------------------------
# real pair: the two ranks of the recsys capture as "two runs"
# --------------------------------------------------------------------------------------


def test_recsys_busy_and_communication_deltas_match_an_independent_recomputation(recsys):
    base, new, diff = recsys
    ib, inew = independent(base), independent(new)
    busy = diff["totals"]["busy"]
    assert busy["base"] == pytest.approx(ib["busy_us"], rel=1e-9)
    assert busy["new"] == pytest.approx(inew["busy_us"], rel=1e-9)
    assert busy["delta"] == pytest.approx(inew["busy_us"] - ib["busy_us"], rel=5e-3)
    assert busy["rel"] == pytest.approx((inew["busy_us"] - ib["busy_us"]) / ib["busy_us"], rel=5e-3)
    comm = diff["communication"]["time_us"]
    assert comm["delta"] == pytest.approx(inew["comm_us"] - ib["comm_us"], rel=5e-3)
    validate_diff(diff)


def test_recsys_kernels_only_on_one_side_are_listed_on_that_side(recsys):
    base, new, diff = recsys
    kb, kn = independent(base)["kernels"], independent(new)["kernels"]
    keys_b = {normalize_kernel_name(n) for n in kb}
    keys_n = {normalize_kernel_name(n) for n in kn}
    removed = {r["name"] for r in diff["kernels"]["removed"]}
    added = {r["name"] for r in diff["kernels"]["added"]}
    assert removed == keys_b - keys_n
    assert added == keys_n - keys_b
    # the weighted embedding kernels run on rank 0 only (rank 1 runs the unweighted ones)
    assert "split_embedding_codegen_forward_weighted_kernel" in removed
    assert diff["kernels"]["counts"]["removed"] == len(removed) > 0
    # a removed kernel's base time is the sum of its raw names' durations (per step)
    steps = diff["basis"]["steps"]["base"]
    for r in diff["kernels"]["removed"]:
        raw = sum(d for n, d in kb.items() if normalize_kernel_name(n) == r["name"])
        assert r["base_us"] == pytest.approx(raw / steps, rel=1e-9)
        assert r["new_us"] == 0.0


def test_recsys_every_raw_kernel_name_only_on_one_side_is_listed_on_that_side(recsys):
    """At the raw-name level too: a name only in one run is either a key only in that run, or a
    variant (another template instance) of a key in both, listed under kernels.variants."""
    base, new, diff = recsys
    kb, kn = independent(base)["kernels"], independent(new)["kernels"]
    removed = {r["name"] for r in diff["kernels"]["removed"]}
    added = {r["name"] for r in diff["kernels"]["added"]}
    var = {v["name"]: v for v in diff["kernels"]["variants"]}
    assert set(kb) - set(kn)
    for only, keys, side in ((set(kb) - set(kn), removed, "removed"), (set(kn) - set(kb), added, "added")):
        for raw in only:
            key = normalize_kernel_name(raw)
            assert key in keys or raw in var[key][side] or var[key]["truncated"], raw
    assert diff["kernels"]["counts"]["variants_changed"] == len(var) > 0


def test_recsys_verdict_ranked_by_time_per_step_with_evidence(recsys):
    _, _, diff = recsys
    assert diff["basis"]["unit"] == "step"
    v = diff["verdict"]
    assert v, "two different ranks must show changes"
    sizes = [abs(x["delta_per_unit_us"]) for x in v]
    assert sizes == sorted(sizes, reverse=True)
    assert all(x["evidence"] for x in v)
    assert diff["changed"] is True
    # two steps a side: the step-time test abstains rather than calling a change
    assert diff["phases"]["all"]["test"]["significant"] is False
    assert "fewer than 3 steps" in diff["phases"]["all"]["test"]["reason"]


def test_self_diff_reports_no_change(shared_traces):
    path = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    diff = diff_paths(path, path)
    assert diff["changed"] is False and diff["verdict"] == []
    assert all(d["delta"] == 0 for d in diff["totals"].values())
    assert diff["kernels"]["counts"]["added"] == diff["kernels"]["counts"]["removed"] == 0
    assert diff["headline"].startswith("no significant change")
    validate_diff(diff)


def test_synthetic_samples_tp2_vs_tp1_are_compared_per_step_per_rank(repo_root):
    """SYNTHETIC sample traces (sample_traces/synthetic: generated, see its README): a TP2 run
    with 35 steps against a TP1 run with 31, many decode steps on both sides."""
    from analyzer import analyze

    base_p, new_p = repo_root / "sample_traces/synthetic/demo", repo_root / "sample_traces/synthetic/batching_gaps"
    b, n = analyze([base_p]).to_dict(), analyze([new_p]).to_dict()
    diff = compare(b, n)
    basis = diff["basis"]
    assert basis["label"] == "per step per rank"
    steps_b, steps_n = basis["steps"]["base"], basis["steps"]["new"]
    assert basis["divisor"] == {"base": steps_b * 2, "new": steps_n * 1}
    gemm = next(v for v in diff["verdict"] if v["id"] == "category:gemm")
    want = (n["summary"]["categories"]["gemm"]["time_us"] / steps_n
            - b["summary"]["categories"]["gemm"]["time_us"] / (steps_b * 2))
    assert gemm["delta_per_unit_us"] == pytest.approx(want, rel=1e-9)
    decode = diff["phases"]["decode"]["test"]
    assert decode["significant"] is True and decode["n_base"] >= 30
    assert diff["phases"]["prefill"]["test"]["significant"] is False  # 3 vs 1 prefill steps
    assert compare(b, b)["changed"] is False
    validate_diff(diff)


def test_saved_report_is_detected_by_content(shared_traces, tmp_path):
    path = shared_traces / "kineto" / "hf_qwen1.5-0.5b_h100_generate.json.gz"
    rep = tmp_path / "run.json"
    r = run_cli("analyze", str(path), "--format", "json", "-o", str(rep))
    assert r.returncode == 0, r.stderr
    diff = diff_paths(rep, path)
    assert diff["base"]["source"] == "report" and diff["new"]["source"] == "trace"
    assert diff["changed"] is False


def test_old_report_without_kernel_table_falls_back_to_top_kernels(recsys):
    base, new, _ = recsys
    from analyzer import analyze

    b, n = analyze([base]).to_dict(), analyze([new]).to_dict()
    b.pop("kernels")
    diff = compare(b, n)
    assert any("top 25" in w for w in diff["warnings"])


# --------------------------------------------------------------------------------------
# CLI and gate: exit codes through a real subprocess
# --------------------------------------------------------------------------------------


def test_cli_self_diff_exits_0_with_a_gate(shared_traces, tmp_path):
    path = str(shared_traces / RECSYS / "sampled_rank-0.json.gz")
    out = tmp_path / "d.json"
    r = run_cli("diff", path, path, "--format", "json", "-o", str(out),
                "--fail-on", "busy>+0%", "--fail-on", "finding:new", "--fail-on", "step_p50>+1%")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    validate_diff(doc)
    assert doc["changed"] is False and not any(g["breached"] for g in doc["gate"])


def test_cli_gate_exits_3_when_breached_and_0_when_not(shared_traces):
    root = shared_traces / RECSYS
    base, new = str(root / "sampled_rank-0.json.gz"), str(root / "sampled_rank-1.json.gz")
    ib, inew = independent(Path(base)), independent(Path(new))
    rel = (inew["busy_us"] - ib["busy_us"]) / ib["busy_us"]
    assert 0.05 < rel < 0.10  # the independent figure the two gates straddle
    r = run_cli("diff", base, new, "--fail-on", "busy>+5%")
    assert r.returncode == 3, r.stderr
    assert "busy>+5%" in r.stderr and "Verdict" in r.stdout  # the diff is written first
    r = run_cli("diff", base, new, "--fail-on", "busy>+10%", "--fail-on", "communication.exposed>+2ms")
    assert r.returncode == 0, r.stderr
    r = run_cli("diff", base, new, "--fail-on", "kernels.removed>0")
    assert r.returncode == 3


def test_cli_gate_typo_and_bad_input_exit_2(shared_traces, tmp_path):
    path = str(shared_traces / RECSYS / "sampled_rank-0.json.gz")
    r = run_cli("diff", path, path, "--fail-on", "decod_step_p50>+5%")
    assert r.returncode == 2
    assert "decode" in r.stderr and "communication" in r.stderr  # the valid names are listed
    r = run_cli("diff", path, path, "--fail-on", "busy is big")
    assert r.returncode == 2
    r = run_cli("diff", path, str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "no such file" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    r = run_cli("diff", path, str(bad))
    assert r.returncode == 2


def test_gate_on_a_finding_time_and_kernel_counts(recsys):
    _, _, diff = recsys
    by_id = diff["findings"]["by_id"]
    fid = next(i for i in by_id if by_id[i]["time_us"]["delta"] > 0)
    rel = by_id[fid]["time_us"]["rel"]
    assert check_gates(diff, [f"finding:{fid}>+{rel * 100 * 0.9:.3f}%"])[0]["breached"] is True
    assert check_gates(diff, [f"finding:{fid}>+{rel * 100 * 1.1:.3f}%"])[0]["breached"] is False
    n = diff["kernels"]["counts"]["slower"]
    assert check_gates(diff, [f"kernels.slower>={n}", f"kernels.slower>{n}"])[0]["breached"] is True
    assert check_gates(diff, [f"kernels.slower>{n}"])[0]["breached"] is False
    assert check_gates(diff, ["decode_step_p50>+1%"])[0]["note"] == "not in either run"


def test_nsight_export_diffs_with_itself_and_against_kineto(shared_traces, tmp_path):
    nsys = shared_traces / "nsys" / "nsys2026_torchrun_2gpu_flash_nccl.sqlite"
    r = run_cli("diff", str(nsys), str(nsys), "--fail-on", "busy>+0%", "--fail-on", "kernels.added>0")
    assert r.returncode == 0, r.stderr
    assert "no significant change" in r.stdout
    kin = shared_traces / "kineto" / "hf_qwen1.5-0.5b_h100_generate.json.gz"
    out = tmp_path / "d.json"
    r = run_cli("diff", str(nsys), str(kin), "-f", "json", "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    validate_diff(doc)
    assert doc["basis"]["unit"] == "run" and any("rank counts" in w for w in doc["warnings"])
    assert "engine" in doc["context"]["differs"]


def test_gates_compare_per_step_so_a_longer_capture_is_not_a_regression(recsys):
    """A SYNTHETIC edit of a real report: the same run captured for twice as many steps
    (every run total and the step count doubled) is no regression per step."""
    base, _, _ = recsys
    from analyzer import analyze

    doc = analyze([base]).to_dict()
    longer = copy.deepcopy(doc)
    s = longer["summary"]
    for k in ("wall_us", "busy_us", "idle_us", "capture_us"):
        s[k] *= 2
    for c in s["categories"].values():
        c["time_us"] *= 2
    s["communication"]["exposed_us"] *= 2
    longer["serving"]["phases"]["summary"]["steps"] *= 2
    diff = compare(doc, longer)
    assert diff["totals"]["busy"]["rel"] == pytest.approx(1.0)  # the totals doubled ...
    gates = check_gates(diff, ["busy>+1%", "communication.exposed>+1us", "gemm>+1%"])
    assert not any(g["breached"] for g in gates), gates  # ... the time per step did not
    assert not any(v["id"].startswith("category:") for v in diff["verdict"])


def test_every_format_renders(recsys):
    _, _, diff = recsys
    for fmt in ("text", "markdown", "json", "html"):
        out = render_diff(diff, fmt)
        assert out
    html = render_diff(diff, "html")
    assert "<script src=" not in html and "Verdict" in html  # self-contained
    assert "split_embedding_codegen_forward_weighted_kernel" in render_diff(diff, "markdown")


def test_gate_parsing():
    g = parse_gate("decode_step_p50>+5%")
    assert (g.name, g.op, g.value, g.relative) == ("decode_step_p50", ">", 0.05, True)
    assert parse_gate("communication.exposed>+2ms").value == 2000.0
    assert parse_gate("idle.launch_overhead>=500us").value == 500.0
    assert parse_gate("finding:new").name == "finding:new"
    for bad in ("bsy>+1%", "communication.alltoal>1%", "decode_step_p95>1%", "busy>>1"):
        with pytest.raises(BadInputError):
            parse_gate(bad)
    assert "decode_step_p50" in valid_names()
    assert parse_gate("category:gemm>+5%").name == "gemm"
    assert parse_gate("idle:scheduler>+1ms").name == "idle.scheduler"
    assert parse_gate("comm_exposed>+1ms").name == "communication.exposed"


# --------------------------------------------------------------------------------------
# significance: SYNTHETIC step samples (seeded), not from any trace
# --------------------------------------------------------------------------------------


def synthetic_steps(n: int, mean_us: float, noise: float, seed: int) -> np.ndarray:
    """SYNTHETIC per-step GPU times: mean_us with multiplicative Gaussian noise."""
    return mean_us * (1 + noise * np.random.default_rng(seed).standard_normal(n))


def test_synthetic_2pct_in_500_noisy_steps_is_significant_in_3_steps_not():
    many_b, many_n = synthetic_steps(500, 10_000, 0.02, 1), synthetic_steps(500, 10_200, 0.02, 2)
    few_b, few_n = np.array([10_000.0, 10_050, 9_950]), np.array([10_200.0, 10_250, 10_150])
    assert step_test(many_b, many_n)["significant"] is True
    few = step_test(few_b, few_n)
    assert few["significant"] is False and few["p_value"] >= 0.05
    same = step_test(many_b, many_b)
    assert same["significant"] is False and same["p_value"] == 1.0
    # no change, only noise: not significant
    assert step_test(synthetic_steps(500, 10_000, 0.02, 3), synthetic_steps(500, 10_000, 0.02, 4))["significant"] is False


def test_synthetic_mann_whitney_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    from analyzer.diff.stats import _mann_whitney

    rng = np.random.default_rng(7)
    for n1, n2 in [(3, 3), (3, 5), (8, 8), (9, 4), (2, 8), (8, 150), (50, 60), (500, 400)]:
        for k in range(6):
            a = rng.normal(0, 1, n1)
            b = rng.normal(rng.uniform(-1, 1), 1, n2)
            if k % 2:  # ties: the asymptotic branch with the tie correction
                a, b = np.round(a, 1), np.round(b, 1)
            want = scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
            assert _mann_whitney(a, b) == pytest.approx(want, rel=1e-9, abs=1e-12), (n1, n2, k)


def test_synthetic_permutation_cross_check_agrees_and_is_reproducible():
    b, n = synthetic_steps(300, 10_000, 0.02, 5), synthetic_steps(300, 10_200, 0.02, 6)
    assert _permutation(b, n) < 0.05
    assert _permutation(b, n) == _permutation(b, n)  # fixed seed
    assert _permutation(b[:3], n[:3]) >= 0.05


def _with_decode_steps(doc: dict, samples: np.ndarray) -> dict:
    """A copy of a real report whose step timeline is replaced by SYNTHETIC decode steps."""
    d = copy.deepcopy(doc)
    ph = d["serving"]["phases"]["summary"]
    ph["steps"] = int(samples.size)
    ph["phases"] = {"decode": {"steps": int(samples.size), "gpu_busy_us": float(samples.sum()),
                               "categories_us": {}}}
    ph["timeline"] = [{"step": i, "phase": "decode", "gpu_span_us": float(x)} for i, x in enumerate(samples)]
    return d


def test_synthetic_gate_on_step_p50_needs_significance(recsys):
    base, _, _ = recsys
    from analyzer import analyze

    doc = analyze([base]).to_dict()
    many = compare(_with_decode_steps(doc, synthetic_steps(500, 10_000, 0.02, 1)),
                   _with_decode_steps(doc, synthetic_steps(500, 10_600, 0.02, 2)))
    few = compare(_with_decode_steps(doc, np.array([10_000.0, 10_050, 9_950])),
                  _with_decode_steps(doc, np.array([10_600.0, 10_650, 10_550])))
    assert check_gates(many, ["decode_step_p50>+5%"])[0]["breached"] is True
    g = check_gates(few, ["decode_step_p50>+5%"])[0]
    assert g["breached"] is False and "not significant" in g["note"]
    assert any(v["id"] == "decode_step_p50" for v in many["verdict"])
    assert not any(v["id"] == "decode_step_p50" for v in few["verdict"])
    validate_diff(many)


# --------------------------------------------------------------------------------------
# kernel name normalisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,key", [
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1>>(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)",
     "at::native::vectorized_elementwise_kernel"),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)",
     "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t"),
    ("_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi64ELi8ELb0ELb0ELb1ELi1EEEvPT0_PT_PfS4_",
     "aiter::add_rmsnorm_quant_kernel"),
    ("_ZN7ck_tile6kentryILi2ENS_38FmhaBatchPrefillWithPagedKVCacheKernelINS_40Block",
     "ck_tile::kentry<FmhaBatchPrefillWithPagedKVCacheKernel>"),
    ("void cutlass::Kernel2<cutlass_80_simt_sgemm_128x32_8x5_nn_align1>(cutlass_80_simt_sgemm_128x32_8x5_nn_align1::Params)",
     "cutlass::Kernel2<cutlass_80_simt_sgemm_128x32_8x5_nn_align1>"),
    ("triton_poi_fused_add_mul_3", "triton_poi_fused_add_mul"),
    ("void (anonymous namespace)::store_kvcache<c10::BFloat16>(int)", "(anonymous namespace)::store_kvcache"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
     "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas"),
])
def test_normalize_kernel_name(raw, key):
    assert normalize_kernel_name(raw) == key


def test_tile_variants_keep_their_names_but_share_a_family():
    a = "nvjet_tst_128x64_64x7_1x1_v_bz_coopA_NTN"
    b = "nvjet_tst_256x128_64x4_2x1_v_bz_coopA_NTN"
    assert normalize_kernel_name(a) != normalize_kernel_name(b)
    assert kernel_family(a) == kernel_family(b)


def test_user_guide_documents_diff_options_and_gate_names(repo_root):
    from analyzer.cli import build_parser

    guide = (repo_root / "docs" / "user-guide.md").read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for action in sub.choices["diff"]._actions:
        for opt in action.option_strings:
            if opt not in ("-h", "--help"):
                assert f"`{opt}" in guide, opt
    for name in ("finding:new", "communication.exposed", "decode_step_p50", "kernels.added", "idle.<cause>"):
        assert name in guide, name
