"""``trace-analyzer calibrate --device cpu`` at small sizes, the profile format, and `plan`."""

from __future__ import annotations

import gzip
import json
import math
import multiprocessing as mp
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzer.calibrate.profile import (
    SCHEMA,
    fit_attention,
    load_hardware_profile,
    validate_hardware_profile,
)
from analyzer.cli import main
from analyzer.model import BadInputError

REPO = Path(__file__).resolve().parent.parent
MEASURED_KEYS = {"gemm_tflops", "attention_prefill_tflops", "attention_fit", "hbm_gbps",
                 "kv_read_gbps", "allreduce_gbps", "allreduce_latency_us"}
CONTEXTS = (128, 256, 512, 1024)


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory) -> tuple[Path, dict]:
    """One small CPU calibration run shared by the tests below."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("cal") / "hw.json"
    rc = main(["calibrate", "--device", "cpu", "--threads", "1", "--repeats", "3",
               "--contexts", ",".join(map(str, CONTEXTS)), "-o", str(out)])
    assert rc == 0
    return out, json.loads(out.read_text())


def test_profile_format(cpu_profile):
    path, doc = cpu_profile
    assert set(doc) == {"schema", "device", "dtype", "measured", "details", "created", "torch_version"}
    assert doc["schema"] == SCHEMA
    assert doc["device"]["type"] == "cpu" and doc["device"]["name"]
    assert doc["dtype"] == "fp32"
    m = doc["measured"]
    assert set(m) == MEASURED_KEYS
    for key in ("gemm_tflops", "attention_prefill_tflops", "hbm_gbps", "kv_read_gbps"):
        assert isinstance(m[key], float) and m[key] > 0 and math.isfinite(m[key])
    assert m["allreduce_gbps"] is None and m["allreduce_latency_us"] is None  # not under torchrun
    assert set(m["attention_fit"]) == {"a", "b", "c", "quadratic_share_at_max"}
    load_hardware_profile(path)  # validates against the JSON schema


def test_headlines_follow_from_the_tables(cpu_profile):
    """Recompute every headline from the per-benchmark rows with the documented rules."""
    _, doc = cpu_profile
    d, m = doc["details"], doc["measured"]
    attn = d["attention_prefill"]
    h, dim = attn["heads"], attn["head_dim"]
    assert [r["context"] for r in attn["rows"]] == list(CONTEXTS)
    for r in attn["rows"]:  # causal: 2*B*H*S^2*D FLOPs
        assert r["tflops"] == pytest.approx(2 * h * r["context"] ** 2 * dim / (r["time_us"] * 1e-6) / 1e12)
    assert m["attention_prefill_tflops"] == attn["rows"][-1]["tflops"]
    for r in d["gemm"]["rows"]:
        assert r["tflops"] == pytest.approx(2 * r["m"] * r["k"] * r["n"] / (r["time_us"] * 1e-6) / 1e12)
    assert m["gemm_tflops"] == max(r["tflops"] for r in d["gemm"]["rows"])
    big = d["copy"]["rows"][-1]
    assert m["hbm_gbps"] == pytest.approx(2 * big["mib"] * 2**20 / (big["time_us"] * 1e-6) / 1e9)
    kv = d["kv_read"]["rows"][-1]
    kv_bytes = 2 * kv["batch"] * kv["kv_heads"] * kv["kv_length"] * d["kv_read"]["head_dim"] * 4  # fp32
    assert m["kv_read_gbps"] == pytest.approx(kv_bytes / (kv["time_us"] * 1e-6) / 1e9)


def test_attention_grows_quadratically(cpu_profile):
    _, doc = cpu_profile
    fit = doc["measured"]["attention_fit"]
    rows = doc["details"]["attention_prefill"]["rows"]
    smax = rows[-1]["context"]
    assert fit["c"] > 0
    assert fit["quadratic_share_at_max"] == pytest.approx(
        fit["c"] * smax**2 / (fit["a"] + fit["b"] * smax + fit["c"] * smax**2))
    assert fit["quadratic_share_at_max"] > 0.3
    # independent of the fit: doubling S from 512 to 1024 costs clearly more than double
    t = {r["context"]: r["time_us"] for r in rows}
    assert t[1024] / t[512] > 2.2


def test_traces_are_real_and_labelled(cpu_profile):
    path, doc = cpu_profile
    trace_dir = path.parent / "calibration_traces"
    names = doc["details"]["traces"]
    assert sorted(names) == sorted(p.name for p in trace_dir.glob("*.trace.json.gz"))
    assert {n.split("-")[1] for n in names} == {"attention_prefill", "gemm", "copy", "kv_read"}
    with gzip.open(trace_dir / "calibrate-attention_prefill-cpu.trace.json.gz", "rt") as fh:
        trace = json.load(fh)
    label = trace["trace_analyzer_calibration"]
    assert label["device_type"] == "cpu" and label["torch_version"] == doc["torch_version"]
    assert label["device_name"] == doc["device"]["name"]
    events = {e.get("name") for e in trace["traceEvents"]}
    assert any(str(n).startswith("calibrate/attention_prefill S=") for n in events)
    assert "aten::scaled_dot_product_attention" in events


def test_planner_consumes_the_profile(cpu_profile, capsys):
    try:
        import analyzer.capacity.cli  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the capacity planner is not there yet: {exc}")
    path, doc = cpu_profile
    rc = main(["plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--hardware-profile", str(path),
               "--format", "json"])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    rates = plan["rates"]
    assert rates["gemm_tflops"]["value"] == pytest.approx(doc["measured"]["gemm_tflops"])
    assert rates["gemm_tflops"]["measured"] is True
    assert rates["attention_tflops"]["value"] == pytest.approx(doc["measured"]["attention_prefill_tflops"])
    assert rates["kv_read_gbps"]["value"] == pytest.approx(doc["measured"]["kv_read_gbps"])


# ------------------------------------------------------------------------------------------
# the fit and the format, without torch
# ------------------------------------------------------------------------------------------


def test_fit_recovers_known_coefficients():
    s = np.array([256, 512, 1024, 2048, 4096])
    a, b, c = 40.0, 0.3, 2e-4
    fit = fit_attention(s, a + b * s + c * s * s)
    assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), rel=1e-6)
    assert fit.quadratic_share_at_max == pytest.approx(c * 4096**2 / (a + b * 4096 + c * 4096**2))
    assert fit.r2 == pytest.approx(1.0)


def test_fit_keeps_coefficients_non_negative():
    s = np.array([100, 200, 400, 800])
    t = 1e-3 * s * s - 5.0  # the unconstrained fit would need a negative intercept
    fit = fit_attention(s, t)
    assert min(fit.a, fit.b, fit.c) >= 0 and fit.c > 0
    with pytest.raises(BadInputError):
        fit_attention([1, 1, 2], [1.0, 1.0, 2.0])


def _valid() -> dict:
    return {
        "schema": SCHEMA, "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}, "dtype": "bf16",
        "measured": {"gemm_tflops": 650.0, "attention_prefill_tflops": 420.0,
                     "attention_fit": {"a": 20.0, "b": 0.01, "c": 1e-5, "quadratic_share_at_max": 0.9},
                     "hbm_gbps": 2900.0, "kv_read_gbps": 2500.0, "allreduce_gbps": None,
                     "allreduce_latency_us": None},
        "details": {}, "created": "2026-01-01T00:00:00+00:00", "torch_version": "2.13.0",
    }


@pytest.mark.parametrize("breakage", [
    lambda d: d.pop("measured"),
    lambda d: d["measured"].update(gemm_tflops=-1.0),
    lambda d: d["measured"].update(extra=1.0),
    lambda d: d["device"].update(type="tpu"),
    lambda d: d.update(schema="v0"),
    lambda d: d["measured"]["attention_fit"].pop("c"),
])
def test_validation_rejects_broken_profiles(breakage):
    validate_hardware_profile(_valid())
    doc = _valid()
    breakage(doc)
    with pytest.raises(BadInputError, match="hardware profile is invalid"):
        validate_hardware_profile(doc)


# ------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------


def test_without_torch_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert main(["calibrate", "--device", "cpu", "-o", str(tmp_path / "hw.json")]) == 2
    assert "pip install 'llm-trace-analyzer[torch]'" in capsys.readouterr().err


def test_cuda_without_gpu_is_exit_2(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["calibrate", "--device", "cuda", "-o", str(tmp_path / "hw.json")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("trace-analyzer:")]
    assert errors == ["trace-analyzer: error: --device cuda, but this torch sees no CUDA GPU (use --device cpu)"]
    assert not (tmp_path / "hw.json").exists()


# ------------------------------------------------------------------------------------------
# all-reduce over two gloo processes
# ------------------------------------------------------------------------------------------


def _allreduce_worker(rank: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from analyzer.calibrate.bench import default_settings
    from analyzer.calibrate.distributed import allreduce_sweep, close_world, init_world

    s = replace(default_settings("cpu", "fp32"), allreduce_bytes=(1024, 65536), repeats=3, warmup=1)
    world = init_world("cpu")
    try:
        rows = allreduce_sweep(s, world)
    finally:
        close_world(world)
    queue.put((rank, world.backend, rows))


def test_allreduce_sweep_two_gloo_processes():
    pytest.importorskip("torch")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # a fork server that imported torch (and ran nothing) forks both ranks: one torch import
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "analyzer.calibrate.distributed"])
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allreduce_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = {r: (b, rows) for r, b, rows in (queue.get(timeout=120) for _ in procs)}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    (backend0, rows0), (backend1, rows1) = results[0], results[1]
    assert backend0 == backend1 == "gloo"
    assert rows0 == rows1  # every rank reports the slowest rank's time
    assert [r["bytes"] for r in rows0] == [1024, 65536]
    for r in rows0:
        algbw = r["bytes"] / (r["time_us"] * 1e-6) / 1e9
        assert r["algbw_gbps"] == pytest.approx(algbw)
        assert r["busbw_gbps"] == pytest.approx(algbw * 2 * (2 - 1) / 2)  # nccl-tests bus bandwidth


def test_every_option_is_documented():
    import argparse

    from analyzer.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    opts = [next(o for o in a.option_strings if o.startswith("--"))
            for a in sub.choices["calibrate"]._actions if a.option_strings and "--help" not in a.option_strings]
    doc = (REPO / "docs" / "collecting.md").read_text()
    assert not [o for o in opts if f"`{o}" not in doc]


def test_committed_cpu_sample_is_valid_and_labelled():
    """sample_traces/calibration: a real CPU run, its profile valid and every trace labelled."""
    sample = REPO / "sample_traces" / "calibration"
    if not sample.is_dir():
        pytest.skip("sample_traces/calibration is absent")
    doc = load_hardware_profile(sample / "hardware_profile_cpu.json")
    assert doc["device"]["type"] == "cpu"
    assert doc["measured"]["allreduce_gbps"] > 0  # recorded under torchrun, 2 processes
    assert sorted(doc["details"]["traces"]) == sorted(p.name for p in (sample / "traces").iterdir())
    for name in doc["details"]["traces"]:
        with gzip.open(sample / "traces" / name, "rt") as fh:
            label = json.load(fh)["trace_analyzer_calibration"]
        assert label["device_type"] == "cpu" and label["torch_version"] == doc["torch_version"]
        assert label["created"] == doc["created"]
    readme = (sample / "README.md").read_text()
    assert doc["torch_version"] in readme and doc["created"][:10] in readme
