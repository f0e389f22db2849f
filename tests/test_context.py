"""Run context and advice on the real traces in ../shared and on small built cases.

Expectations come from what the shared traces are (../shared/traces/README.md: who recorded
them, with which engine and workload) and from the raw files read here with plain gzip+json
or sqlite3, never from the analyzer's own output.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

import analyzer
from analyzer.findings.advice import advice_table, engine_flags, flags_in
from analyzer.report import validate_report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from test_analyze_real import merge, minus  # noqa: E402  (the sort-and-merge reference)

#: trace -> (engine, workload) as the shared README describes the recording
EXPECTED = {
    "kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz": ("sglang", "serving"),
    "kineto/vllm_gptoss_mi300_prefill_decode_piecewise.json.gz": ("vllm", "serving"),
    "kineto/hf_qwen1.5-0.5b_h100_generate.json.gz": ("hf", "generate"),
    "kineto/hta_ddp_a100_nccl_allreduce_rank0.json.gz": ("training", "training"),
    "kineto/hta_recsys_2ranks": ("training", "training"),
    "kineto/kineto2021_resnet50_v100.pt.trace.json.gz": ("training", "training"),
    "kineto/xdit_flux1_mi300_diffusion_rank0.json.gz": ("unknown", "generate"),
}


@pytest.fixture(scope="module")
def reports(shared_traces):
    return {rel: analyzer.analyze([shared_traces / rel]).to_dict() for rel in EXPECTED}


def _raw_events(path: Path) -> dict:
    return json.load(gzip.open(path))


def test_engine_and_workload_match_the_recording(reports):
    for rel, (engine, workload) in EXPECTED.items():
        doc = reports[rel]
        validate_report(doc)
        ctx = doc["context"]
        assert (ctx["engine"], ctx["workload"]) == (engine, workload), rel
        assert ctx["engine_source"] and ctx["workload_source"], rel


def test_diffusion_trace_is_not_an_llm(reports):
    doc = reports["kineto/xdit_flux1_mi300_diffusion_rank0.json.gz"]
    assert doc["context"]["domain"] == "diffusion"
    ids = [f["id"] for f in doc["findings"]]
    assert "kv_cache_bandwidth" not in ids
    assert not any("KV bytes" in a for a in doc["abstained"])


def test_parallel_sizes_come_from_distributed_info(shared_traces, reports):
    """DDP: the trace's own distributedInfo names a world of 2 in one default group -> DP=2,
    TP=1 (a training run's gradient all-reduce), never 'TP=1' for the all-reduce."""
    rel = "kineto/hta_ddp_a100_nccl_allreduce_rank0.json.gz"
    raw = _raw_events(shared_traces / rel)
    info = raw["distributedInfo"]
    groups = [g for g in info["pg_config"] if g["pg_size"] > 1]
    assert len(groups) == 1 and groups[0]["pg_size"] == info["world_size"] == 2
    par = reports[rel]["context"]["parallel"]
    assert par["dp"]["value"] == 2 and "distributedInfo" in par["dp"]["source"]
    assert par["world_size"]["value"] == 2
    dp = next(f for f in reports[rel]["findings"] if f["id"] == "dp_communication")
    assert "TP=1" not in dp["recommendation"]
    # exposed all-reduce/broadcast time: nccl kernels not covered by other kernels (rank 0)
    comm, other = [], []
    for ev in raw["traceEvents"]:
        if ev.get("ph") == "X" and ev.get("cat") == "kernel":
            s = round(float(ev["ts"]) * 1000)
            iv = (s, s + round(float(ev["dur"]) * 1000))
            (comm if ev["name"].startswith("nccl") else other).append(iv)
    exposed_us = minus(merge(comm), merge(other)) / 1000
    assert dp["time_us"] == pytest.approx(exposed_us, abs=0.01)


def test_tp_is_never_guessed_as_one_when_collectives_span_ranks(shared_traces):
    """The Nsight export of a 2-GPU torchrun job has NCCL send/recv and no group sizes:
    TP is unknown (or read), never a silent 1."""
    doc = analyzer.analyze([shared_traces / "nsys/nsys2026_torchrun_2gpu_flash_nccl.sqlite"]).to_dict()
    tp = doc["context"]["parallel"]["tp"]
    assert tp["value"] != 1, tp
    assert doc["context"]["parallel"]["world_size"]["value"] == 2


def test_point_to_point_communication_becomes_a_finding(shared_traces, reports):
    """recsys: NCCL SendRecv kernels are ~30% of wall time; they must be a finding, with the
    exposed time of the representative rank recomputed here from its raw file."""
    doc = reports["kineto/hta_recsys_2ranks"]
    f = next(f for f in doc["findings"] if f["id"] == "other_communication")
    rank = int(re.match(r"rank (\d+)", f["evidence"]["representative"]).group(1))
    raw = _raw_events(shared_traces / f"kineto/hta_recsys_2ranks/sampled_rank-{rank}.json.gz")
    comm, other = [], []
    for ev in raw["traceEvents"]:
        if ev.get("ph") == "X" and ev.get("cat") == "kernel":
            s = int(ev["ts"]) * 1000
            iv = (s, s + int(ev["dur"]) * 1000)
            (comm if ev["name"].startswith("nccl") else other).append(iv)
    assert f["time_us"] == pytest.approx(minus(merge(comm), merge(other)) / 1000, abs=0.01)
    assert doc["findings"][0]["id"] == "other_communication"


def test_memcpy_finding_states_bytes_direction_kind_and_rate(shared_traces):
    path = shared_traces / "nsys/nsys2022_saxpy_mpi.sqlite"
    doc = analyzer.analyze([path]).to_dict()
    f = next(f for f in doc["findings"] if f["id"] == "memcpy")
    con = sqlite3.connect(path)
    # copyKind 1 = HtoD, 2 = DtoH (CUPTI); srcKind/dstKind 0 = pageable host
    rows = {k: (b, d) for k, b, d in con.execute(
        "select copyKind, sum(bytes), sum(end - start) from CUPTI_ACTIVITY_KIND_MEMCPY group by 1")}
    got = {g["direction"]: g for g in f["evidence"]["copies"]}
    for kind, direction in ((1, "HtoD"), (2, "DtoH")):
        b, d = rows[kind]
        assert got[direction]["bytes"] == b
        assert got[direction]["gbps"] == pytest.approx(b / d, rel=1e-9)
        assert "Pageable" in (got[direction]["src"], got[direction]["dst"])
        assert got[direction]["link"].startswith("PCIe")  # A100: PCIe 4.0 x16
    assert "pinned" in f["recommendation"].lower()


def test_top_kernels_use_the_findings_basis(reports):
    """Evidence of one finding is of one rank: no listed kernel exceeds the finding's time."""
    for rel, doc in reports.items():
        for f in doc["findings"]:
            for k in f["evidence"].get("top_kernels") or []:
                assert k["time_us"] <= f["time_us"] + 1e-6 or f["id"] in ("kv_cache_bandwidth",), (rel, f["id"], k)


def test_growth_claims_carry_a_supporting_fit(reports):
    for doc in reports.values():
        pf = doc["serving"]["prefill"]["summary"]
        if pf.get("growth") in ("linear", "quadratic"):
            fit = pf["fit"]
            r2 = fit["quadratic" if pf["growth"] == "quadratic" else "linear"]["r2"]
            assert r2 >= 0.5 and fit["quadratic_share_at_longest"] <= 1.1


# ---- advice: flags exist in the engine, no foreign flags --------------------------------------

def test_every_advised_flag_exists_in_its_engine():
    flags = engine_flags()
    for entry in advice_table():
        named = flags_in(entry["text"])
        engines = entry.get("engines", ["*"])
        if not named:
            continue
        assert "*" not in engines and "generic" not in engines, (entry["finding"], named)
        for eng in engines:
            known = flags[eng]["flags"]
            for fl in named:
                assert fl in known and known[fl].get("exists"), (eng, fl, entry["finding"])


def test_no_foreign_flags_on_real_traces(reports, shared_traces):
    flags = engine_flags()
    extra = {"nsys/nsys2026_torchrun_2gpu_flash_nccl.sqlite", "nsys/nsys2022_saxpy_mpi.sqlite"}
    docs = dict(reports)
    docs.update({rel: analyzer.analyze([shared_traces / rel]).to_dict() for rel in extra})
    for rel, doc in docs.items():
        eng = doc["context"]["engine"]
        for f in doc["findings"]:
            named = flags_in(f["recommendation"])
            if eng not in ("sglang", "vllm"):
                assert not named, (rel, f["id"], named)
            else:
                assert all(n in flags[eng]["flags"] for n in named), (rel, f["id"], named)
        if doc["context"]["workload"] == "training":
            text = " ".join(f["recommendation"] for f in doc["findings"])
            assert "--" not in text and "chunked-prefill" not in text, rel


def test_fp8_not_advised_for_gemms_already_low_precision(reports):
    """gpt-oss (vLLM, MXFP4 MoE): the MoE expert GEMMs run MXFP4; no finding may tell the
    user to move those to FP8."""
    doc = reports["kineto/vllm_gptoss_mi300_prefill_decode_piecewise.json.gz"]
    assert doc["context"]["dtypes"]["moe"]["fp4"] > 0.5
    moe = next(f for f in doc["findings"] if f["id"] == "moe")
    assert "fp8" not in moe["recommendation"].lower()


def test_fp32_training_gemms_get_precision_advice_not_fp8(reports):
    doc = reports["kineto/kineto2021_resnet50_v100.pt.trace.json.gz"]
    g = next(f for f in doc["findings"] if f["id"] == "gemm_compute")
    assert "--quantization" not in g["recommendation"] and "autocast" in g["recommendation"]


# ---- vLLM's execute_context_N(..)_generation_M(..) step annotation ---------------------------

def _kineto(events: list[dict]) -> dict:
    return {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3"}],
            "traceEvents": events}


def test_vllm_execute_context_variant_is_a_step(tmp_path):
    """Synthetic (built here): two vLLM prefill-only steps annotated in vLLM's own format;
    no decode phase may be invented."""
    ev = []
    t = 1000
    for i, toks in enumerate((4000, 8000)):
        name = f"execute_context_2({toks})_generation_0(0)"
        ev.append({"ph": "X", "cat": "user_annotation", "name": name, "pid": 1, "tid": 1, "ts": t, "dur": 500})
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                   "ts": t + 10, "dur": 5, "args": {"correlation": 10 + i}})
        ev.append({"ph": "X", "cat": "kernel", "name": "kernel_unified_attention_2d", "pid": 0, "tid": 7,
                   "ts": t + 20, "dur": 400, "args": {"device": 0, "stream": 7, "correlation": 10 + i}})
        t += 1000
    p = tmp_path / "vllm_synthetic.json"
    p.write_text(json.dumps(_kineto(ev)))
    doc = analyzer.analyze([p]).to_dict()
    phases = doc["serving"]["phases"]["summary"]
    assert "decode" not in (phases.get("by_phase") or {}), phases
    rows = doc["serving"]["example_steps"]
    assert [r["tokens"] for r in rows] == [4000, 8000]
    assert all(r["phase"] == "prefill" for r in rows)


def test_engine_flags_table_is_sourced():
    text = (Path(__file__).resolve().parent.parent / "analyzer/findings/engine_flags.toml").read_text()
    data = tomllib.loads(text)
    for eng in ("sglang", "vllm"):
        assert data[eng]["source"]
        for fl, row in data[eng]["flags"].items():
            assert fl.startswith("--") and "exists" in row and row.get("versions"), (eng, fl)


def test_vllm_tp8_rank_reads_tp_from_distributed_info(tmp_path):
    """Synthetic (built here): one rank of a vLLM TP8 job, as vLLM's torch profiler writes it:
    distributedInfo world_size 8 with an 8-rank NCCL group, vLLM custom ops, custom all-reduce
    kernels without message sizes. TP must read 8 (not 1), the advice must say TP=8 and name
    only vLLM flags, and the all-reduce bytes are unknown, not 0."""
    ev, t = [], 1000
    for i in range(20):
        ev.append({"ph": "X", "cat": "cpu_op", "name": "_C::rms_norm", "pid": 1, "tid": 1, "ts": t, "dur": 5})
        ev.append({"ph": "X", "cat": "cpu_op", "name": "vllm::unified_attention_with_output", "pid": 1,
                   "tid": 1, "ts": t + 6, "dur": 5})
        ev.append({"ph": "X", "cat": "kernel", "name": "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 8>"
                   "(vllm::RankData*, vllm::RankSignals, vllm::Signal*, __nv_bfloat16*, int, int)",
                   "pid": 0, "tid": 7, "ts": t, "dur": 300, "args": {"device": 0, "stream": 7}})
        ev.append({"ph": "X", "cat": "kernel", "name": "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT",
                   "pid": 0, "tid": 7, "ts": t + 300, "dur": 100, "args": {"device": 0, "stream": 7}})
        t += 1000
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3",
                                                     "computeMajor": 9, "computeMinor": 0}],
           "distributedInfo": {"backend": "nccl", "rank": 3, "world_size": 8, "pg_count": 2,
                               "pg_config": [{"pg_name": "0", "pg_desc": "default_pg", "backend_config": "cuda:nccl",
                                              "pg_size": 8, "ranks": list(range(8))}]},
           "traceEvents": ev}
    p = tmp_path / "vllm_tp8_rank3_synthetic.json"
    p.write_text(json.dumps(doc))
    rep = analyzer.analyze([p]).to_dict()
    ctx = rep["context"]
    assert ctx["engine"] == "vllm" and ctx["workload"] == "serving"
    assert ctx["parallel"]["tp"]["value"] == 8 and "distributedInfo" in ctx["parallel"]["tp"]["source"]
    tp = next(f for f in rep["findings"] if f["id"] == "tp_communication")
    assert "TP=8" in tp["recommendation"] and "TP=1" not in tp["recommendation"]
    flags = engine_flags()["vllm"]["flags"]
    assert all(fl in flags for fl in flags_in(tp["recommendation"]))
    by = tp["evidence"]["by_collective"]
    assert by["TP/allreduce"]["bytes"] is None
    # exposed TP time: 300 us of all-reduce per step, never overlapped, 20 steps
    assert tp["time_us"] == pytest.approx(20 * 300.0)


def test_deepep_trace_without_engine_clues(tmp_path):
    """Synthetic (built here), shaped like DeepSeek's published profile: DeepEP kernels in the
    dpsk::ep namespace beside DeepGEMM grouped GEMMs, no engine frames. The all-to-all is EP
    communication (not `other`, not 0 us), exposed dispatch/combine is a finding, and the
    advice names no engine flag (the engine is unknown)."""
    names = ["void dpsk::ep::internode::dispatch<true, 8, 1024>(int4*, float*)",
             "void dpsk::ep::internode::combine<__nv_bfloat16, 8>(int4*, float*)",
             "void deep_gemm::fp8_gemm_kernel<128u, 4096u, (deep_gemm::GemmType)1>(float*)"]
    ev, t = [], 1000
    for _ in range(10):
        for name, dur in zip(names, (200, 150, 300)):
            ev.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": t, "dur": dur,
                       "args": {"device": 0, "stream": 7}})
            t += dur
        t += 10
    p = tmp_path / "deepep_synthetic.json"
    p.write_text(json.dumps(_kineto(ev)))
    doc = analyzer.analyze([p]).to_dict()
    cats = doc["ranks"][0]["categories"]
    assert cats["communication"]["time_us"] == pytest.approx(10 * 350.0)
    assert cats["moe"]["time_us"] == pytest.approx(10 * 300.0)
    assert doc["context"]["engine"] == "unknown"
    ep = next(f for f in doc["findings"] if f["id"] == "ep_communication")
    assert ep["time_us"] == pytest.approx(10 * 350.0)
    assert not flags_in(ep["recommendation"])
