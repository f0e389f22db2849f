"""``trace-analyzer plan``: real subprocesses, exit codes, JSON keys, calibration files, docs."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.capacity import cli as plan_cli
from analyzer.capacity import (
    kv_bytes_per_token,
    kv_bytes_per_token_per_layer,
    kv_bytes_per_token_per_layer_per_gpu,
    list_presets,
    load_model,
    simple_form_check,
)
from analyzer.capacity.specs import Parallelism

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "capacity-planning.md"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "plan", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real main() in this process (faster than a subprocess), with exit code."""
    from analyzer.cli import main

    code = main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------
# Subprocess: the CLI as a user runs it
# ---------------------------------------------------------------------------------------


def test_json_output_keys_and_values() -> None:
    res = run(
        "--model",
        "llama-3.1-70b",
        "--gpu",
        "h100",
        "--tp",
        "8",
        "--context",
        "40000",
        "--output-tokens",
        "1000",
        "--agents",
        "16",
        "--kv-budget-gb",
        "50",
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    for key in (
        "kv_bytes_per_token_per_layer",
        "kv_bytes_per_token",
        "kv_bytes_per_sequence_per_gpu",
        "max_concurrency_memory",
        "recommended_concurrency",
        "ttft_throughput_table",
        "throughput_optimal_concurrency",
        "knee_concurrency",
        "rule_of_thumb",
        "warnings",
        "sglang",
        "vllm",
        "rates",
    ):
        assert key in d, key
    assert set(d["recommended_concurrency"]) >= {"stable", "upper"}
    assert d["kv_bytes_per_token_per_layer"] == 2 * 8 * 128 * 2
    assert d["kv_bytes_per_token"] == 327_680
    per_seq = 1 * 256 * 2 * 80 * 40_000  # TP 8: one KV head per GPU
    assert d["kv_bytes_per_sequence_per_gpu"] == per_seq
    assert d["max_concurrency_memory"] == int(50e9 // per_seq)
    assert d["rule_of_thumb"] == {"stable": 2, "upper": 4}
    assert any("exceed 4 x R = 4" in w for w in d["warnings"])
    rows = d["ttft_throughput_table"]
    assert rows[0]["concurrency"] == 1 and {"ttft_mean_s", "output_tokens_per_s"} <= set(rows[0])


def test_design_notes_example_cli_text() -> None:
    res = run(
        *("--layers", "80", "--hidden-size", "16384", "--heads", "128", "--kv-heads", "16"),
        *("--gpu", "h100", "--pp", "8", "--context", "40000", "--kv-budget-gb", "40"),
    )
    assert res.returncode == 0, res.stderr
    assert re.search(r"KV per token per layer \(whole model\)\s+8,192 B", res.stdout)
    assert re.search(r"KV per sequence per GPU\s+3\.28 GB", res.stdout)
    assert re.search(r"max concurrent sequences \(memory\)\s+12 per replica", res.stdout)
    assert "2 x R stable / 4 x R upper" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model preset"),
        (["--model", "llama-3.1-8b", "--gpu", "tpu"], "unknown GPU preset"),
        (["--model", "missing/config.json"], "cannot read model config"),
        (["--layers", "80"], "missing --hidden-size, --heads"),
        (["--layers", "8", "--hidden-size", "4096", "--heads", "7"], "--head-dim"),
        (["--model", "llama-3.1-8b", "--pp", "64"], "exceeds"),
        (["--model", "llama-3.1-8b", "--from-report", "nope.json"], "cannot read report"),
        (["--model", "llama-3.1-8b", "--prefix-hit", "1.5"], "prefix-hit"),
        (["--model", "llama-3.1-8b", "--tp", "8", "--dp", "3", "--dp-attention"], "divide"),
    ],
)
def test_bad_input_exit_2_one_line(args: list[str], message: str, capsys) -> None:
    code, out, err = in_process(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_bad_input_exit_2_subprocess() -> None:
    res = run("--model", "llama-9")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "unknown model preset" in res.stderr
    res = run("--model", "llama-3.1-8b", "--kv-budget-gb", "10", "--mem-fraction", "0.9")
    assert res.returncode == 2  # argparse: mutually exclusive


def test_console_script_entry_point() -> None:
    exe = shutil.which("trace-analyzer")
    if exe is None:
        pytest.skip("trace-analyzer is not installed (pip install -e .)")
    res = subprocess.run(
        [exe, "plan", "--list"], check=False, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "deepseek-v3" in res.stdout and "deepseek-r1" in res.stdout and "mi300x" in res.stdout


# ---------------------------------------------------------------------------------------
# In-process: options, files, formats
# ---------------------------------------------------------------------------------------


def test_list_text_and_json(capsys) -> None:
    code, out, _ = in_process(["--list"], capsys)
    assert code == 0
    for name in ("llama-3.1-405b", "qwen2.5-72b", "a100-80gb", "h20", "b200"):
        assert name in out
    code, out, _ = in_process(["--list", "--format", "json"], capsys)
    assert {m["name"] for m in json.loads(out)["models"]} == {
        m["name"] for m in list_presets()["models"]
    }


def test_explicit_dimensions_override_preset_cli(capsys) -> None:
    code, out, _ = in_process(
        ["--model", "Llama-3.1-70B", "--layers", "40", "--head-dim", "64", "--format", "json"],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert d["model"]["num_layers"] == 40 and d["model"]["head_dim"] == 64
    assert d["kv_bytes_per_token"] == 2 * 8 * 64 * 2 * 40


def test_hf_config_path_cli(tmp_path, capsys) -> None:
    cfg = {
        "num_hidden_layers": 94,
        "hidden_size": 4096,
        "num_attention_heads": 64,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 1536,
        "intermediate_size": 12288,
        "vocab_size": 151936,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, out, _ = in_process(["--model", str(path), "--tp", "8", "--format", "json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["kv_bytes_per_token"] == 192_512
    assert d["kv_heads_per_gpu"] == 1  # 4 KV heads over TP 8: one each, replicated


def test_calibration_files_cli(tmp_path, capsys) -> None:
    report = {
        "schema_version": "1.0",
        "tool": {"name": "trace-analyzer", "version": "0.1.0"},
        "calibration": {"gpu_name": "NVIDIA H200", "gemm_tflops": 640.0, "hbm_gbps": None},
    }
    profile = {
        "schema": "trace-analyzer/hardware-profile/v1",
        "device": {"type": "cuda", "name": "NVIDIA H200"},
        "dtype": "bf16",
        "measured": {
            "gemm_tflops": 700.0,
            "attention_prefill_tflops": 420.0,
            "attention_fit": None,
            "hbm_gbps": 4000.0,
            "kv_read_gbps": 3500.0,
            "allreduce_gbps": 200.0,
            "allreduce_latency_us": 9.0,
        },
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "p.json").write_text(json.dumps(profile))
    out_file = tmp_path / "plan.md"
    code, out, _ = in_process(
        [
            *("--model", "deepseek-r1", "--gpu", "h200", "--tp", "8"),
            *("--from-report", str(tmp_path / "r.json")),
            *("--hardware-profile", str(tmp_path / "p.json")),
            *("--format", "markdown", "-o", str(out_file)),
        ],
        capsys,
    )
    assert code == 0 and out == ""
    md = out_file.read_text()
    assert md.startswith("# Capacity plan: deepseek-v3 on h200")
    assert "[measured]" in md and "trace report r.json" in md and "hardware profile p.json" in md
    code, out, _ = in_process(
        [
            *("--model", "deepseek-r1", "--gpu", "h200", "--tp", "8"),
            *("--from-report", str(tmp_path / "r.json")),
            *("--hardware-profile", str(tmp_path / "p.json"), "--format", "json"),
        ],
        capsys,
    )
    rates = json.loads(out)["rates"]
    assert rates["gemm_tflops"]["value"] == 640  # the report wins
    assert rates["attention_tflops"]["value"] == 420  # the profile fills the rest
    assert rates["kv_read_gbps"]["value"] == 3500
    assert rates["allreduce_bus_gbps"]["measured"] is True


def test_gpu_taken_from_report_when_not_given(tmp_path, capsys) -> None:
    report = {"calibration": {"gpu_name": "NVIDIA H200", "gpu_preset": "h200"}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    args = ["--model", "llama-3.1-8b", "--from-report", str(tmp_path / "r.json")]
    code, out, _ = in_process([*args, "--format", "json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["gpu"]["name"] == "h200" and not d["warnings"]
    code, out, _ = in_process([*args, "--gpu", "a100", "--format", "json"], capsys)
    assert json.loads(out)["gpu"]["name"] == "a100-80gb"


def test_gpu_figures_override_preset_cli(capsys) -> None:
    code, out, _ = in_process(
        [
            *("--model", "llama-3.1-8b", "--gpu", "h100", "--hbm-gb", "96"),
            *("--hbm-gbps", "4000", "--bf16-tflops", "148", "--kv-budget-gb", "20"),
            *("--context", "1000", "--format", "json"),
        ],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert d["gpu"]["memory_gb"] == 96 and d["gpu"]["hbm_gbps"] == 4000
    assert d["rates"]["gemm_tflops"]["value"] == pytest.approx(148 * 0.6)
    assert d["max_concurrency_memory"] == int(20e9 // (2 * 8 * 128 * 2 * 32 * 1000))


def test_dp_without_attention_means_replicas(capsys) -> None:
    code, out, _ = in_process(
        ["--model", "llama-3.1-8b", "--tp", "2", "--dp", "4", "--format", "json"], capsys
    )
    assert code == 0
    d = json.loads(out)
    assert d["parallelism"]["replicas"] == 4 and d["parallelism"]["dp_attention"] == 1
    assert d["rule_of_thumb"] == {"stable": 8, "upper": 16}


def test_register_adds_plan_with_func() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    plan_cli.register(sub)
    args = parser.parse_args(["plan", "--model", "mixtral", "--format", "json"])
    assert args.func is plan_cli.run


# ---------------------------------------------------------------------------------------
# Docs that check themselves
# ---------------------------------------------------------------------------------------


def _kv_table() -> list[str]:
    rows = []
    for entry in list_presets()["models"]:
        m = load_model(entry["name"])
        shape = (
            f"MLA latent {m.kv_lora_rank}+{m.qk_rope_head_dim}"
            if m.attention == "mla"
            else f"{m.num_kv_heads} x {m.head_dim}"
        )
        if m.indexer_bytes_per_token_per_layer:
            shape += f" + indexer {m.indexer_bytes_per_token_per_layer} B"
        if m.linear_attention_layer_ids:
            shape += f" ({m.kv_layers} full-attention layers)"
        if m.swa_layer_ids:
            shape += f" ({len(m.swa_layer_ids)} layers window {m.sliding_window})"
        tp8 = kv_bytes_per_token_per_layer_per_gpu(m, Parallelism(tp=8)) * m.kv_layers
        rows.append(
            f"| {m.name} | {m.num_layers} | {shape} | {kv_bytes_per_token_per_layer(m):,} | "
            f"{kv_bytes_per_token(m):,} | {kv_bytes_per_token(m, 'fp8'):,} | {tp8:,} | "
            f"{simple_form_check(m).ratio:.2f} |"
        )
    return rows


def test_docs_kv_table_matches_presets() -> None:
    text = DOC.read_text()
    block = text.split("<!-- kv-table:start -->")[1].split("<!-- kv-table:end -->")[0]
    body = [ln for ln in block.strip().splitlines()[2:]]
    assert body == _kv_table(), "regenerate the table in docs/capacity-planning.md"
    # and the three hand-checked values appear in it
    for name, value in (("llama-3.1-70b", "327,680"), ("qwen3-235b-a22b", "192,512")):
        assert any(ln.startswith(f"| {name} |") and value in ln for ln in body)
    assert any(ln.startswith("| deepseek-v3 |") and "70,272" in ln for ln in body)


def test_docs_mention_every_cli_option_and_preset() -> None:
    text = DOC.read_text()
    parser = argparse.ArgumentParser()
    plan_cli.add_arguments(parser)
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                assert opt in text, f"{opt} is not documented in {DOC.name}"
    presets = list_presets()
    for entry in presets["models"] + presets["gpus"]:
        assert f"| {entry['name']} |" in text, entry["name"]


def test_end_to_end_from_analyzer_report(shared_traces, tmp_path) -> None:
    """A real trace -> the analyzer's JSON report -> plan --from-report."""
    trace = shared_traces / "kineto" / "sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
    if not trace.exists():
        pytest.skip(f"{trace.name} is absent")
    rep = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "analyze", str(trace), "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert rep.returncode == 0, rep.stderr
    report_path = tmp_path / "report.json"
    report_path.write_text(rep.stdout)
    res = run("--model", "qwen3-235b-a22b", "--gpu", "mi300x", "--tp", "8",
              "--from-report", str(report_path), "--format", "json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    cal = json.loads(rep.stdout).get("calibration") or {}
    measured_keys = {k for k, v in cal.items() if isinstance(v, (int, float)) and k != "gpu_name"}
    if not measured_keys:
        assert any("no calibration figures" in n for n in d["notes"])
    else:
        assert d["calibrated_from_trace"], "report figures must show up as measured rates"


def test_plan_calibrated_by_a_report_with_measured_rates(tmp_path) -> None:
    """The synthetic KV-bound capture measures HBM bandwidth and a decode step: the plan uses them."""
    scenario = REPO / "sample_traces" / "synthetic" / "kv_bound_decode_cuda_graph"
    rep = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "analyze", str(scenario), "--format", "json"],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert rep.returncode == 0, rep.stderr
    cal = json.loads(rep.stdout)["calibration"]
    assert cal["hbm_gbps"] and cal["decode_step_us"]
    report_path = tmp_path / "report.json"
    report_path.write_text(rep.stdout)
    res = run("--model", "llama-3.1-8b", "--from-report", str(report_path), "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["gpu"]["name"].lower().startswith("h200") or "h200" in json.dumps(d["gpu"]).lower()
    assert d["calibrated_from_trace"], d["notes"]


# ------------------------------------------------------------------------------------------
# plan --from-report: model, GPU, parallel sizes from the report (issue 17, item 5)
# ------------------------------------------------------------------------------------------

TP2 = REPO / "sample_traces" / "synthetic" / "long_prefill_tp2"


@pytest.fixture(scope="module")
def tp2_report(tmp_path_factory) -> Path:
    rep = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "analyze", str(TP2), "--format", "json"],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert rep.returncode == 0, rep.stderr
    path = tmp_path_factory.mktemp("tp2") / "report.json"
    path.write_text(rep.stdout)
    return path


def test_readme_plan_from_report_takes_model_gpu_and_sizes_from_it(tp2_report) -> None:
    """The README's command: no --model, --gpu or --tp; all three come from the report."""
    sa = json.loads((TP2 / "server_args.json").read_text())  # what the capture was run with
    assert sa["model_path"] == "meta-llama/Llama-3.1-8B-Instruct" and sa["tp_size"] == 2
    res = run("--from-report", str(tp2_report), "--agents", "20", "--context", "40000", "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["model"]["name"] == "llama-3.1-8b"  # the preset whose alias is that model_path
    assert d["parallelism"]["tp"] == sa["tp_size"] and d["parallelism"]["pp"] == sa["pp_size"]
    assert d["gpu"]["name"] == "h100-sxm"  # the trace's deviceProperties: NVIDIA H100 80GB HBM3
    assert d["kv_dtype"] == "bf16" and d["memory_budget"]["mem_fraction"] == sa["mem_fraction_static"]
    src = d["input_sources"]
    assert "server_args.model_path" in src["model"] and "context.parallel.tp" in src["tp"]
    assert "context.gpu.preset" in src["gpu"]
    # KV per sequence per GPU by hand: 32 layers x 2 (K, V) x 8 KV heads / TP 2 x 128 x 2 B
    assert d["kv_bytes_per_sequence_per_gpu"] == 40000 * 32 * 2 * (8 // 2) * 128 * 2
    text = run("--from-report", str(tp2_report), "--agents", "20", "--context", "40000")
    assert text.returncode == 0 and "Inputs from" in text.stdout and "server_args.model_path" in text.stdout


def test_options_override_the_report(tp2_report) -> None:
    res = run("--from-report", str(tp2_report), "--tp", "4", "--gpu", "h200", "--model", "llama-3.1-70b",
              "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert (d["parallelism"]["tp"], d["gpu"]["name"], d["model"]["name"]) == (4, "h200", "llama-3.1-70b")
    assert d["input_sources"]["tp"] == "4 <- --tp" and d["input_sources"]["gpu"].endswith("<- --gpu")


def test_older_report_sizes_and_gpu_preset(tp2_report, tmp_path) -> None:
    """Reports before the top-level context: serving.communication.sizes, calibration.gpu_preset."""
    doc = json.loads(tp2_report.read_text())
    del doc["context"]
    doc["serving"]["communication"]["sizes"] = {"tp": 2, "pp": 1, "ep": 0, "dp": 1}
    doc["calibration"]["gpu_preset"] = "h200"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    d = json.loads(run("--from-report", str(path), "--format", "json").stdout)
    assert d["parallelism"]["tp"] == 2 and d["gpu"]["name"] == "h200"
    assert "serving.communication.sizes.tp" in d["input_sources"]["tp"]
    assert "calibration.gpu_preset" in d["input_sources"]["gpu"]
    assert "server_args.ep_size" in d["input_sources"]["ep"]  # 0 = unknown falls through


def test_report_without_a_usable_model_exits_2_naming_the_flag(tp2_report, tmp_path) -> None:
    doc = json.loads(tp2_report.read_text())
    doc["server_args"] = {k: v for k, v in doc["server_args"].items()
                          if k not in ("model_path", "served_model_name")}
    (tmp_path / "none.json").write_text(json.dumps(doc))
    res = run("--from-report", str(tmp_path / "none.json"))
    assert res.returncode == 2 and "names no model" in res.stderr and "--model" in res.stderr
    assert res.stderr.count("\n") == 1
    doc["server_args"]["model_path"] = "/models/some-private-model"
    (tmp_path / "odd.json").write_text(json.dumps(doc))
    res = run("--from-report", str(tmp_path / "odd.json"))
    assert res.returncode == 2 and "some-private-model" in res.stderr and "--model" in res.stderr
    doc["server_args"]["model_path"] = "/models/Llama-3.1-8B"  # a local copy: its basename
    (tmp_path / "local.json").write_text(json.dumps(doc))
    res = run("--from-report", str(tmp_path / "local.json"), "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout)["model"]["name"] == "llama-3.1-8b"
