"""Per-operator roofline (analyses/roofline.py) against independent counts on real traces.

The expected FLOPs are computed here from the raw JSON (gzip + json, no analyzer code): each
kernel is linked to its CPU op by hand (kernel -> runtime launch by correlation -> cpu_op by
External id), the op's "Input Dims" are read and the textbook formulas applied.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from analyzer import analyze
from analyzer.analyses.op_cost import op_cost
from analyzer.readers.kineto import read_kineto
from analyzer.readers.kineto_shapes import Signature, read_op_shapes
from analyzer.render import render
from analyzer.render.charts import report_sections, roofline_figure
from analyzer.report import validate_report

KINETO = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "kineto"
SGLANG = KINETO / "sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
HF = KINETO / "hf_qwen1.5-0.5b_h100_generate.json.gz"
VLLM = KINETO / "vllm_gptoss_mi300_prefill_decode_piecewise.json.gz"
CAPTURE = KINETO / "vllm_gptoss_mi300_piecewise_capture"
RESNET = KINETO / "kineto2021_resnet50_v100.pt.trace.json.gz"

needs_shared = pytest.mark.skipif(not KINETO.is_dir(), reason="../shared/traces is absent (fresh clone)")


# --------------------------------------------------------------------------------------
# the independent count
# --------------------------------------------------------------------------------------


def _events(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return json.load(fh)["traceEvents"]


def _hand_gemm_flops(name: str, dims: list) -> float | None:
    """2*M*N*K by hand from the op's Input Dims (aten schemas)."""
    if name == "aten::mm":
        (m, k), (_k, n) = dims[0], dims[1]
        return 2.0 * m * n * k
    if name == "aten::addmm":
        (m, k), (_k, n) = dims[1], dims[2]
        return 2.0 * m * n * k
    if name == "aten::linear":
        x, w = dims[0], dims[1]
        return 2.0 * float(np.prod(x[:-1])) * w[0] * x[-1]
    if name == "aten::bmm":
        (b, m, k), (_b, _k, n) = dims[0], dims[1]
        return 2.0 * b * m * n * k
    return None


def _hand_groups(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(op, dims) -> calls, flops and kernel time (us) of the GEMM ops that launched kernels."""
    ev = _events(path)
    ops = {e["args"]["External id"]: e for e in ev if e.get("cat") == "cpu_op" and "External id" in e.get("args", {})}
    launches = {e["args"]["correlation"]: e for e in ev if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"calls": 0.0, "flops": 0.0, "us": 0.0})
    seen: set[int] = set()
    for e in ev:
        if e.get("cat") != "kernel":
            continue
        launch = launches.get(e["args"].get("correlation"))
        op = ops.get(launch["args"].get("External id")) if launch else None
        if op is None:
            continue
        dims = op["args"]["Input Dims"]
        fl = _hand_gemm_flops(op["name"], dims)
        if fl is None:
            continue
        key = (op["name"], json.dumps([d for d in dims if d]))
        g = out[key]
        g["us"] += e["dur"]
        if op["args"]["External id"] not in seen:  # an op that launched two kernels counts once
            seen.add(op["args"]["External id"])
            g["calls"] += 1
            g["flops"] += fl
    return dict(out)


def _report_groups(doc: dict) -> dict[tuple[str, str], dict]:
    groups = doc["serving"]["roofline"]["summary"]["groups"]
    return {(g["op"], g["shapes"]): g for g in groups}


def _dims_label(dims_json: str) -> str:
    return " ".join("x".join(str(x) for x in d) for d in json.loads(dims_json))


@pytest.fixture(scope="module")
def sglang_doc() -> dict:
    return analyze([SGLANG]).to_dict()


# --------------------------------------------------------------------------------------
# per-op agreement with the hand count
# --------------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", [SGLANG, HF], ids=["sglang_mi300x", "hf_h100"])
def test_gemm_flops_per_op_match_an_independent_count(path: Path) -> None:
    hand = _hand_groups(path)
    assert hand, "the trace has GEMM ops with shapes"
    got = _report_groups(analyze([path]).to_dict())
    for (op, dims), h in hand.items():
        g = got.get((op, _dims_label(dims)))
        assert g is not None, f"{op} {dims} missing from the roofline"
        assert g["count"] == h["calls"]
        assert g["flops"] == pytest.approx(h["flops"], rel=0.01)
        assert g["time_us"] == pytest.approx(h["us"], rel=0.01)
        assert g["tflops"] == pytest.approx(h["flops"] / (h["us"] * 1e-6) / 1e12, rel=0.01)


@needs_shared
def test_sglang_prefill_gemm_rate_from_shapes(sglang_doc: dict) -> None:
    """The held-out check: sum of 2*M*N*K over the prefill GEMMs / their kernel time (~508
    TFLOP/s), not 2 x params x tokens (598.7, which counts the embedding and a full LM head)."""
    hand = _hand_groups(SGLANG)
    rate = sum(h["flops"] for h in hand.values()) / (sum(h["us"] for h in hand.values()) * 1e-6) / 1e12
    assert rate == pytest.approx(508, rel=0.01)
    pf = sglang_doc["serving"]["prefill"]["summary"]
    assert pf["gemm_tflops_source"] == "shapes"
    assert pf["gemm_tflops"] == pytest.approx(rate, rel=0.03)
    assert sglang_doc["calibration"]["gemm_tflops"] == pytest.approx(rate, rel=0.03)


@needs_shared
def test_sglang_attention_flops_from_q_shape_and_the_execute_annotation(sglang_doc: dict) -> None:
    # 36 layers x 2 * Hq * (D + Dv) * causal pairs; q = [15360, 32, 128]; 15 requests of
    # 1024 tokens: sum sq*sk = sum sq^2 = 15 * 1024^2 (annotation), pairs = sqsk - sqsq/2
    pairs = 15 * 1024**2 - 15 * 1024**2 / 2
    flops = 36 * 2 * 32 * (128 + 128) * pairs
    g = next(g for g in sglang_doc["serving"]["roofline"]["summary"]["groups"] if g["family"] == "attention")
    assert g["flops"] == pytest.approx(flops, rel=1e-6)
    assert sglang_doc["serving"]["prefill"]["summary"]["attention_tflops_source"] == "shapes"


@needs_shared
def test_bound_and_gpu_peaks(sglang_doc: dict) -> None:
    rf = sglang_doc["serving"]["roofline"]["summary"]
    assert rf["gpu"] == "mi300x" and rf["peaks_tflops"]["bf16"] == pytest.approx(1307.4)
    by_op = {(g["op"], g["shapes"]): g for g in rf["groups"]}
    big = by_op[("aten::mm", "15360x4096 4096x24576")]
    assert big["bound"] == "compute" and big["intensity"] > 1307.4 / 5.3
    silu = next(g for g in rf["groups"] if g["op"] == "sgl_kernel::silu_and_mul")
    assert silu["bound"] == "memory" and silu["tbps"] < 5.3
    assert rf["counted_share"] > 0.99
    # time shares add up to at most the kernel time
    total = sum(g["share"] for g in rf["groups"]) + sum(k["share"] for k in rf["by_kernel"])
    assert total == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------
# CUDA graphs: mapped back to the capture, or reported by kernel
# --------------------------------------------------------------------------------------


def _capture_gemms() -> dict[str, float]:
    """addmm/mm dims -> 2*M*N*K of every GEMM launch recorded inside a graph capture."""
    files = [p for p in CAPTURE.iterdir() if p.name.endswith(".json.gz")]
    ev = sorted(_events(files[0]), key=lambda e: e.get("ts", 0))
    ops = {e["args"]["External id"]: e for e in ev if e.get("cat") == "cpu_op"}
    out: dict[str, float] = defaultdict(float)
    inside = False
    for e in ev:
        if e.get("cat") != "cuda_runtime":
            continue
        if e["name"] == "hipStreamBeginCapture":
            inside = True
        elif e["name"] == "hipStreamEndCapture":
            inside = False
        elif inside and "LaunchKernel" in e["name"]:
            op = ops.get(e["args"].get("External id"))
            if op is not None and op["name"] in ("aten::addmm", "aten::mm"):
                out[_dims_label(json.dumps([d for d in op["args"]["Input Dims"] if d]))] += \
                    _hand_gemm_flops(op["name"], op["args"]["Input Dims"])
    return out


@needs_shared
def test_graph_replays_map_back_to_the_capture() -> None:
    # the execution replays each of the 25 captured graphs once (25 hipGraphLaunch)
    assert sum(1 for e in _events(VLLM) if e.get("name") == "hipGraphLaunch") == 25
    doc = analyze([VLLM], gpu="mi300x", graph_capture=CAPTURE).to_dict()
    validate_report(doc)
    rf = doc["serving"]["roofline"]["summary"]
    assert rf["linked_share"] == pytest.approx(1.0)
    got = {g["shapes"]: g for g in rf["groups"] if g["source"] == "graph_capture" and g["family"] == "gemm"}
    expected = _capture_gemms()
    assert expected and set(expected) == set(got)
    for shapes, flops in expected.items():
        assert got[shapes]["flops"] == pytest.approx(flops, rel=0.01)
    moe = next(g for g in rf["groups"] if g["op"] == "vllm::moe_forward")
    assert moe["flops"] is None and "expert weight" in moe["reason"]


@needs_shared
def test_graph_replays_without_capture_are_reported_by_kernel() -> None:
    doc = analyze([VLLM]).to_dict()
    rf = doc["serving"]["roofline"]["summary"]
    assert rf["graph_replayed_share"] > 0.9
    assert any("graph-replayed" in m and "missing" in m for m in rf["missing"])
    graph = [k for k in rf["by_kernel"] if k["reason"].startswith("graph-replayed")]
    assert graph and all("flops" in k["missing"] and "bound" in k["missing"] for k in graph)
    # the op that replayed a graph never takes its kernels
    assert all(g["source"] == "cpu_op" for g in rf["groups"])
    pf = doc["serving"]["prefill"]["summary"]
    assert pf["gemm_tflops"] is None and "cover only" in pf["gemm_tflops_missing"]


# --------------------------------------------------------------------------------------
# fallbacks
# --------------------------------------------------------------------------------------


@needs_shared
def test_trace_without_shapes_falls_back_with_the_reason() -> None:
    doc = analyze([RESNET]).to_dict()
    validate_report(doc)
    rf = doc["serving"]["roofline"]["summary"]
    assert rf["available"] is False and "record_shapes" in rf["reason"]
    assert rf["groups"] == []
    assert "record_shapes" in render(doc, "text")


@needs_shared
def test_roofline_off_and_model_source(tmp_path: Path) -> None:
    doc = analyze([SGLANG], roofline="off").to_dict()
    rf = doc["serving"]["roofline"]["summary"]
    assert rf["available"] is False and "off" in rf["reason"]
    pf = doc["serving"]["prefill"]["summary"]
    assert pf["gemm_tflops"] is None and pf["gemm_tflops_source"] is None


# --------------------------------------------------------------------------------------
# the shapes pass
# --------------------------------------------------------------------------------------


@needs_shared
def test_indexed_shapes_equal_a_full_rescan() -> None:
    t = read_kineto(SGLANG, scanner="compiled") if _compiled() else None
    if t is None or t.op_index is None:
        pytest.skip("the compiled scanner is not built")
    full = read_op_shapes(SGLANG)
    ev = t.events
    wanted = np.unique(ev.loc[ev["kind"].isin(["cuda_runtime"]), "external_id"].to_numpy())
    part = read_op_shapes(SGLANG, t.op_index, wanted)
    keep = full.ops[full.ops["external_id"].isin(wanted)].reset_index(drop=True)
    assert len(part.ops) == len(keep) > 100
    assert (part.ops["ts_ns"].to_numpy() == keep["ts_ns"].to_numpy()).all()
    assert [part.signatures[i] for i in part.ops["sig"]] == [full.signatures[i] for i in keep["sig"]]
    assert len(full.ops) == sum(1 for e in _events(SGLANG) if e.get("cat") == "cpu_op")


def _compiled() -> bool:
    from analyzer.readers import kineto_scan

    return kineto_scan.available()


# --------------------------------------------------------------------------------------
# formulas (synthetic shapes)
# --------------------------------------------------------------------------------------


def _sig(dims: list, types: list[str], conc: list[str] | None = None) -> Signature:
    return Signature(tuple(dims), tuple(types), tuple(conc or [""] * len(dims)))


def test_formulas() -> None:
    bf = "c10::BFloat16"
    c = op_cost("linear", "aten::linear", _sig([[4, 8, 16], [32, 16], [32]], [bf, bf, bf]))
    assert c.flops == 2 * 32 * 32 * 16 and c.dtype == "bf16"
    assert c.bytes == (4 * 8 * 16 + 32 * 16 + 32 * 32 + 32) * 2
    c = op_cost("bmm", "aten::bmm", _sig([[3, 4, 5], [3, 5, 6]], [bf, bf]))
    assert c.flops == 2 * 3 * 4 * 5 * 6
    c = op_cost("weight_nk", "aiter::gemm_a8w8", _sig([[64, 128], [256, 128]], ["c10::Float8_e4m3fnuz"] * 2))
    assert c.flops == 2 * 64 * 256 * 128 and c.dtype == "fp8"
    q = [2, 8, 128, 64]
    c = op_cost("sdpa_bhsd", "aten::_scaled_dot_product_flash_attention",
                _sig([q, q, q, [], []], [bf, bf, bf, "Scalar", "Scalar"], ["", "", "", "0.", "True"]))
    pairs = 128 * 128 - 128 * 127 / 2
    assert c.flops == 2 * 2 * 8 * pairs * 128
    assert c.kv_read_bytes == 2 * np.prod(q) * 2
    c = op_cost("moe", "fused_experts", _sig([[10, 64], [8, 256, 64], [8, 64, 128], [10, 2], [10, 2]],
                                             [bf, bf, bf, "float", "int"]))
    assert c.flops == 10 * 2 * (2 * 256 * 64 + 2 * 64 * 128)
    assert op_cost("mm", "aten::mm", _sig([], [])).flops is None


# --------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------


@needs_shared
def test_reports_show_the_roofline(sglang_doc: dict) -> None:
    validate_report(sglang_doc)
    text = render(sglang_doc, "text")
    assert "Roofline" in text and "prefill GEMM 508 TFLOP/s (from shapes)" in text
    md = render(sglang_doc, "markdown")
    assert "## Roofline" in md and "| aten::mm |" in md
    fig = roofline_figure(sglang_doc)
    assert fig is not None
    names = [t.name for t in fig.data]
    assert any(n.startswith("roof bf16") for n in names) and "gemm" in names
    sec = next(s for s in report_sections(sglang_doc) if s.key == "roofline")
    assert sec.figure is not None and sec.table is not None and len(sec.table) >= 10
    assert "Roofline" in render(sglang_doc, "html")


# --------------------------------------------------------------------------------------
# decode KV bytes from shapes, without a model (synthetic trace: the shared traces have no
# decode step whose attention op is linked)
# --------------------------------------------------------------------------------------


def _decode_trace(path: Path, layers: int = 2) -> None:
    """One vLLM decode step: 4 requests with 4096 cached tokens in all, `layers` paged
    attention calls (q [4, 32, 128], KV cache [blocks, 16, 8, 128], bf16), 50 us each."""
    bf = "c10::BFloat16"
    ev: list[dict] = [{"ph": "X", "cat": "user_annotation", "name":
                       "execute_4_context_0(sq0sk0sqsq0sqsk0)_generation_4(sq4sk4096sqsq4sqsk4096)",
                       "pid": 1, "tid": 1, "ts": 1000.0, "dur": 500.0, "args": {}}]
    for i in range(layers):
        t0 = 1010.0 + 100 * i
        ev.append({"ph": "X", "cat": "cpu_op", "name": "vllm::unified_attention_with_output", "pid": 1,
                   "tid": 1, "ts": t0, "dur": 20.0,
                   "args": {"External id": 10 + i, "Input Dims": [[4, 32, 128], [900, 16, 8, 128],
                                                                  [900, 16, 8, 128], [4, 32, 128], []],
                            "Input type": [bf, bf, bf, bf, ""], "Concrete Inputs": ["", "", "", "", ""]}})
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                   "ts": t0 + 5, "dur": 5.0, "args": {"External id": 10 + i, "correlation": 100 + i}})
        ev.append({"ph": "X", "cat": "kernel", "name": "kernel_unified_attention_2d", "pid": 0, "tid": 7,
                   "ts": t0 + 20, "dur": 50.0, "args": {"External id": 10 + i, "correlation": 100 + i,
                                                        "device": 0, "stream": 7}})
    path.write_text(json.dumps({"schemaVersion": 1, "record_shapes": 1, "traceEvents": ev}))


def test_decode_kv_bytes_from_shapes_without_a_model(tmp_path: Path) -> None:
    p = tmp_path / "decode.json"
    _decode_trace(p)
    doc = analyze([p], gpu="h100").to_dict()
    validate_report(doc)
    kv = doc["serving"]["kv_cache"]["summary"]
    per_layer = 4096 * 8 * (128 + 128) * 2  # KV tokens x Hkv x (Dk + Dv) x bf16
    assert kv["bytes_read_source"] == "shapes"
    assert kv["bytes_read"] == pytest.approx(2 * per_layer)
    # two 50 us kernels, no overlap: 100 us of decode attention
    assert kv["achieved_gbps"] == pytest.approx(2 * per_layer / 100e3, rel=1e-6)
    assert kv["fraction_of_hbm"] == pytest.approx(kv["achieved_gbps"] / 3350, rel=1e-6)
    g = doc["serving"]["roofline"]["summary"]["groups"][0]
    assert g["count"] == 2 and g["flops"] == pytest.approx(2 * 2 * 32 * 256 * 4096)


@needs_shared
def test_shapes_replace_the_model_count_which_stays_as_model(tmp_path: Path) -> None:
    cfg = tmp_path / "qwen3-8b"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "intermediate_size": 12288, "vocab_size": 151936, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16"}))
    pf = analyze([SGLANG], model=str(cfg)).to_dict()["serving"]["prefill"]["summary"]
    assert pf["gemm_tflops_model"] == pytest.approx(598.7, abs=0.1)  # 2 x params x tokens
    assert pf["gemm_tflops_source"] == "shapes" and pf["gemm_tflops"] == pytest.approx(507.7, abs=0.1)
    # attention: the model's heads x head_dim and the q shape give the same count
    assert pf["attention_tflops_model"] == pytest.approx(pf["attention_tflops"], rel=1e-6)


@needs_shared
def test_cli_roofline_options(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "analyzer.cli", "analyze", str(VLLM), "--format", "json", "-o", str(out)]
    done = subprocess.run([*cmd, "--graph-capture", str(CAPTURE), "--gpu", "mi300x"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rf = json.loads(out.read_text())["serving"]["roofline"]["summary"]
    assert rf["capture"].endswith(".json.gz") and rf["linked_share"] == pytest.approx(1.0)
    bad = subprocess.run([*cmd, "--graph-capture", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "graph capture" in bad.stderr
    off = subprocess.run([*cmd, "--roofline", "off"], capture_output=True, text=True)
    assert off.returncode == 0
    assert json.loads(out.read_text())["serving"]["roofline"]["summary"]["available"] is False


@needs_shared
def test_moe_without_weight_shapes_counted_from_the_model(tmp_path: Path) -> None:
    cfg = tmp_path / "gpt-oss"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
        "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "intermediate_size": 2880, "num_local_experts": 32, "num_experts_per_tok": 4,
        "vocab_size": 201088, "torch_dtype": "bfloat16"}))
    doc = analyze([VLLM], gpu="mi300x", graph_capture=CAPTURE, model=str(cfg)).to_dict()
    moe = next(g for g in doc["serving"]["roofline"]["summary"]["groups"] if g["op"] == "vllm::moe_forward")
    # 24 calls of 8192 tokens x top-4 experts x gated MLP (3 x hidden x intermediate) x 2
    assert moe["flops"] == pytest.approx(24 * 2 * 8192 * 4 * 3 * 2880 * 2880)
    assert moe["flops_source"] == "model" and moe["bound"] == "compute"
