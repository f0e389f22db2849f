"""The collector over real HTTP on loopback, against tests/fake_sglang_server.py.

The fake server records real torch.profiler traces of a tiny model with SGLang's file
names, so these tests need torch (skipped without it); the Prometheus parser and the
nsys-command tests do not.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli import main
from analyzer.collect.files import expected_rank_files, parse_rank_file
from analyzer.collect.metrics import (
    HistogramStats,
    load_metrics,
    parse_prometheus_text,
)
from analyzer.model import BadInputError

sys.path.insert(0, str(Path(__file__).parent))
from fake_sglang_server import FakeSGLangServer, TinyModel

REPO = Path(__file__).resolve().parent.parent
FAST = ["--poll", "0.05", "--timeout", "30"]


@pytest.fixture(scope="session")
def warm_torch() -> None:
    """Import torch and run one profiler session once (the first one costs seconds)."""
    pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):
        TinyModel().step(4, "EXTEND")


@pytest.fixture
def servers(warm_torch):
    """A factory of fake SGLang servers, all stopped at the end of the test."""
    made: list[FakeSGLangServer] = []

    def make(**kw) -> FakeSGLangServer:
        s = FakeSGLangServer(**kw)
        s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trace_events(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    return doc["traceEvents"]


# ------------------------------------------------------------------------------------------
# happy paths
# ------------------------------------------------------------------------------------------


def test_collect_num_steps_saves_traces_args_and_metrics(servers, tmp_path, capsys):
    # slow_write: each gzip appears half-written for 0.4 s, longer than the size-stability
    # window (2 polls of 0.05 s): only the gzip-completeness check keeps us waiting
    srv = servers(tp_size=2, slow_write_s=0.4)
    out = tmp_path / "prof"
    rc = main(["collect", "--url", srv.url, "--num-steps", "3", "--output-dir", str(out), *FAST])
    assert rc == 0
    files = sorted(out.glob("*.trace.json.gz"))
    assert [f.name.split("-", 1)[1] for f in files] == ["TP-0.trace.json.gz", "TP-1.trace.json.gz"]
    for f in files:  # complete when collect returned, and real torch.profiler traces
        names = {e.get("name", "") for e in _trace_events(f)}
        assert any(n.startswith("step[EXTEND") for n in names)
        assert "aten::scaled_dot_product_attention" in names or "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert json.loads((out / "server_args.json").read_text()) == srv.server_info()
    body = srv.requests[-1]
    assert body == {"output_dir": str(out.resolve()), "activities": ["CPU", "GPU"],
                    "profile_by_stage": False, "num_steps": 3}

    # metrics: the window between the two scrapes holds exactly the 3 requests served
    before = load_metrics(out / "metrics_before.prom")
    after = load_metrics(out / "metrics_after.prom")
    window = load_metrics(out)
    served = srv.obs.ttft_s[-3:]
    assert len(srv.obs.ttft_s) == 3
    assert before.ttft_s.count == 0 and after.ttft_s.count == 3
    assert window.ttft_s.count == 3
    assert window.ttft_s.sum == pytest.approx(sum(served))
    assert window.num_requests_total == 3
    assert window.prompt_tokens_total == sum(srv.obs.prompt_tokens)
    assert window.num_queue_reqs == srv.queue_reqs  # TP rank 1 repeats rank 0: counted once
    assert window.per_stage_latency_s["prefill_forward"].count == 3

    text = capsys.readouterr().out
    assert "collected 2 trace files" in text and "next: trace-analyzer analyze" in text


def test_collect_with_stop_profile(servers, tmp_path):
    srv = servers(tp_size=1, dp_size=2)
    out = tmp_path / "prof"
    rc = main(["collect", "--url", srv.url, "--duration", "0.2", "--output-dir", str(out), *FAST])
    assert rc == 0
    assert "num_steps" not in srv.requests[-1]
    assert not srv.profiling  # /stop_profile was called and the capture ended
    ranks = sorted((r.dp, r.tp) for f in out.glob("*.trace.json.gz") if (r := parse_rank_file(f)))
    assert ranks == [(0, 0), (1, 0)]  # TP1 x DP2: "-TP-0-DP-<d>" files


def test_collect_stage_split_waits_for_both_stages(servers, tmp_path):
    # each file appears half-written for a while: the EXTEND files are complete well
    # before the DECODE ones, and collect must not stop at them
    srv = servers(tp_size=2, slow_write_s=0.15)
    out = tmp_path / "prof"
    rc = main(["collect", "--url", srv.url, "--num-steps", "2", "--profile-by-stage",
               "--output-dir", str(out), *FAST])
    assert rc == 0
    assert srv.requests[-1]["profile_by_stage"] is True
    ranks = sorted((r.tp, r.stage) for f in out.glob("*.trace.json.gz") if (r := parse_rank_file(f)))
    assert ranks == [(0, "DECODE"), (0, "EXTEND"), (1, "DECODE"), (1, "EXTEND")]
    for f in out.glob("*.trace.json.gz"):
        _trace_events(f)  # all whole


def test_stage_split_needs_num_steps(tmp_path, capsys):
    msg = _fails(["collect", "--url", "127.0.0.1:1", "--profile-by-stage", "-o", str(tmp_path)], capsys)
    assert "--num-steps" in msg


def test_collect_without_metrics_notes_it(servers, tmp_path, capsys):
    srv = servers(tp_size=1, enable_metrics=False)
    out = tmp_path / "prof"
    assert main(["collect", "--url", srv.url, "--num-steps", "2", "-o", str(out), *FAST]) == 0
    assert "--enable-metrics" in capsys.readouterr().err
    assert not (out / "metrics_before.prom").exists()
    assert len(list(out.glob("*.trace.json.gz"))) == 1


def _analysis_available() -> str | None:
    try:
        from analyzer.api import analyze  # noqa: F401
        from analyzer.readers import load_traces  # noqa: F401
    except ImportError as exc:
        return f"the analysis pipeline is not importable yet: {exc}"
    return None


def test_collect_analyze(servers, tmp_path, capsys):
    reason = _analysis_available()
    if reason:
        pytest.skip(reason)
    srv = servers(tp_size=2)
    out = tmp_path / "prof"
    rc = main(["collect", "--url", srv.url, "--num-steps", "3", "-o", str(out), "--analyze",
               "--format", "json", *FAST])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["server_args"]["tp_size"] == 2
    assert doc["metrics"]["num_queue_reqs"] == srv.queue_reqs
    assert doc["metrics"]["ttft_s"]["count"] == 3


# ------------------------------------------------------------------------------------------
# failures: exit 2 with one clear line
# ------------------------------------------------------------------------------------------


def _fails(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("trace-analyzer: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_refused_connection(tmp_path, capsys):
    port = _free_port()
    msg = _fails(["collect", "--url", f"127.0.0.1:{port}", "-o", str(tmp_path / "p"), *FAST], capsys)
    assert "connection refused" in msg and str(port) in msg


@pytest.mark.parametrize("status", [400, 500])
def test_profiling_already_running(servers, tmp_path, capsys, status):
    srv = servers(tp_size=1, busy_status=status)
    srv.profiling = True  # someone else's capture is running
    msg = _fails(["collect", "--url", srv.url, "--num-steps", "2", "-o", str(tmp_path / "p"), *FAST], capsys)
    assert f"{srv.url}/stop_profile" in msg
    assert ("already running" in msg) if status == 400 else ("HTTP 500" in msg)


def test_http_error_on_server_info(servers, tmp_path, capsys):
    srv = servers(tp_size=1)
    msg = _fails(["collect", "--url", srv.url + "/not-sglang", "-o", str(tmp_path / "p"), *FAST], capsys)
    assert "HTTP 404" in msg and "SGLang server" in msg


def test_files_never_appear(servers, tmp_path, capsys):
    srv = servers(tp_size=2, write_files=False)
    msg = _fails(["collect", "--url", srv.url, "--num-steps", "2", "-o", str(tmp_path / "p"),
                  "--poll", "0.05", "--timeout", "1"], capsys)
    assert "no trace file appeared" in msg and "within 1 s" in msg
    assert "needs requests" in msg  # with --num-steps the server needs traffic


def test_files_not_visible_locally(servers, tmp_path, capsys):
    remote = tmp_path / "server-disk"
    srv = servers(tp_size=1, remote_root=remote)
    out = tmp_path / "p"
    msg = _fails(["collect", "--url", srv.url, "--num-steps", "2", "-o", str(out),
                  "--poll", "0.05", "--timeout", "2"], capsys)
    assert "writes traces on its own disk" in msg and "--server-output-dir" in msg
    # the server did write them, on "its" disk
    assert list((remote / str(out.resolve()).lstrip("/")).glob("*-TP-0.trace.json.gz"))


def test_bad_activity(tmp_path, capsys):
    msg = _fails(["collect", "--url", "127.0.0.1:1", "--activities", "CPU,TPU", "-o", str(tmp_path)], capsys)
    assert "TPU" in msg and "CUDA_PROFILER" in msg


# ------------------------------------------------------------------------------------------
# through the installed command (a real subprocess)
# ------------------------------------------------------------------------------------------


def _command() -> list[str]:
    exe = shutil.which("trace-analyzer")
    return [exe] if exe else [sys.executable, "-m", "analyzer.cli"]


def test_subprocess_collect_and_refusal(servers, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    srv = servers(tp_size=2)
    out = tmp_path / "prof"
    ok = subprocess.run([*_command(), "collect", "--url", srv.url, "--num-steps", "2", "-o", str(out), *FAST],
                        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert len(list(out.glob("*-TP-*.trace.json.gz"))) == 2
    bad = subprocess.run([*_command(), "collect", "--url", f"http://127.0.0.1:{_free_port()}", "-o", str(out)],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "connection refused" in bad.stderr


# ------------------------------------------------------------------------------------------
# nsys-command
# ------------------------------------------------------------------------------------------


def test_nsys_command(capsys):
    rc = main(["nsys-command", "--", "python", "-m", "sglang.launch_server", "--model-path",
               "meta-llama/Llama-3.1-8B-Instruct", "--tp", "2", "--port", "31000"])
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    prof = next(ln for ln in lines if ln.startswith("nsys profile"))
    for flag in ("--trace-fork-before-exec=true", "--cuda-graph-trace=node", "-t cuda,nvtx,osrt",
                 "--capture-range=cudaProfilerApi", "--capture-range-end=stop", "-o sglang_%p"):
        assert flag in prof
    assert prof.endswith("python -m sglang.launch_server --model-path meta-llama/Llama-3.1-8B-Instruct "
                         "--tp 2 --port 31000")
    start = next(ln for ln in lines if "/start_profile" in ln)
    assert "http://127.0.0.1:31000/start_profile" in start
    body = json.loads(start.split("-d ", 1)[1].strip("'"))
    assert body == {"activities": ["CUDA_PROFILER"], "num_steps": 20}
    assert any(ln.startswith("nsys export --type sqlite") for ln in lines)
    assert any(ln.startswith("trace-analyzer analyze") and ln.endswith(".sqlite") for ln in lines)


def test_nsys_command_timed_and_manual_stop(capsys):
    assert main(["nsys-command", "--mode", "timed", "--delay", "90", "--duration", "20", "--",
                 "sglang", "serve"]) == 0
    out = capsys.readouterr().out
    assert "--delay=90 --duration=20" in out and "start_profile" not in out
    assert main(["nsys-command", "--num-steps", "0", "--", "python", "-m", "sglang.launch_server"]) == 0
    out = capsys.readouterr().out
    assert "curl -X POST http://127.0.0.1:30000/stop_profile" in out


def test_nsys_command_needs_a_launch_command(capsys):
    msg = _fails(["nsys-command"], capsys)
    assert "launch command" in msg


# ------------------------------------------------------------------------------------------
# Prometheus text
# ------------------------------------------------------------------------------------------

# A /metrics page as SGLang exports it (names and labels from sglang/srt/metrics/collector.py;
# two TP ranks of one scheduler, two DP ranks, a tokenizer-side histogram), cut to a few buckets.
SGLANG_METRICS = r"""# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 12.0
sglang:num_running_reqs{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 12.0
sglang:num_running_reqs{dp_rank="1",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 9.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 30.0
sglang:num_queue_reqs{dp_rank="1",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 4.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 0.83
sglang:token_usage{dp_rank="1",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 0.61
# HELP sglang:gen_throughput The generation throughput (token/s).
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 1500.5
sglang:gen_throughput{dp_rank="1",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 1200.0
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} NaN
# HELP sglang:queue_time_seconds Histogram of queueing time in seconds.
# TYPE sglang:queue_time_seconds histogram
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="0.0",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 2.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 10.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 18.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 20.0
sglang:queue_time_seconds_count{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 20.0
sglang:queue_time_seconds_sum{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 9.5
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="0.0",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 2.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 10.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 18.0
sglang:queue_time_seconds_bucket{dp_rank="0",engine_type="unified",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 20.0
sglang:queue_time_seconds_count{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 20.0
sglang:queue_time_seconds_sum{dp_rank="0",engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="1"} 9.5
# HELP sglang:per_stage_req_latency_seconds The latency of each stage of requests.
# TYPE sglang:per_stage_req_latency_seconds histogram
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="0.001",model_name="m",pp_rank="0",stage="prefill_forward",tp_rank="0"} 0.0
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="0.1",model_name="m",pp_rank="0",stage="prefill_forward",tp_rank="0"} 4.0
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="+Inf",model_name="m",pp_rank="0",stage="prefill_forward",tp_rank="0"} 4.0
sglang:per_stage_req_latency_seconds_count{engine_type="unified",model_name="m",pp_rank="0",stage="prefill_forward",tp_rank="0"} 4.0
sglang:per_stage_req_latency_seconds_sum{engine_type="unified",model_name="m",pp_rank="0",stage="prefill_forward",tp_rank="0"} 0.2
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="0.001",model_name="m",pp_rank="0",stage="prefill_waiting",tp_rank="0"} 1.0
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="0.1",model_name="m",pp_rank="0",stage="prefill_waiting",tp_rank="0"} 1.0
sglang:per_stage_req_latency_seconds_bucket{engine_type="unified",le="+Inf",model_name="m",pp_rank="0",stage="prefill_waiting",tp_rank="0"} 4.0
sglang:per_stage_req_latency_seconds_count{engine_type="unified",model_name="m",pp_rank="0",stage="prefill_waiting",tp_rank="0"} 4.0
sglang:per_stage_req_latency_seconds_sum{engine_type="unified",model_name="m",pp_rank="0",stage="prefill_waiting",tp_rank="0"} 12.0
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0 1732611234000
sglang:time_to_first_token_seconds_bucket{le="0.2",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0 1732611234000
sglang:time_to_first_token_seconds_bucket{le="0.4",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0 1732611234000
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0 1732611234000
sglang:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
sglang:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.85
# HELP sglang:num_requests_total Number of requests processed.
# TYPE sglang:num_requests_total counter
sglang:num_requests_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
# HELP sglang:weird An escaped label value.
# TYPE sglang:weird gauge
sglang:weird{path="C:\\dir",quote="say \"hi\"",nl="a\nb"} +Inf
"""


def test_parse_realistic_sglang_metrics():
    m = parse_prometheus_text(SGLANG_METRICS)
    # gauges: TP rank 1 repeats rank 0 and is not counted; DP ranks add up
    assert m.num_running_reqs == 12 + 9
    assert m.num_queue_reqs == 30 + 4
    assert m.token_usage == 0.83  # the fullest pool
    assert m.gen_throughput_tok_s == 1500.5 + 1200.0
    assert m.cache_hit_rate is None  # NaN only
    # histograms: TP rank 1's copy not counted
    q = m.queue_time_s
    assert (q.count, q.sum) == (20, 9.5)
    # median: rank 10 of 20 reaches the le=0.1 bucket exactly (cumulative 10) -> 0.1
    assert q.quantile(0.5) == pytest.approx(0.1)
    # p75: rank 15 lies in (0.1, 1.0], holding counts 10..18 -> 0.1 + 0.9 * 5/8
    assert q.quantile(0.75) == pytest.approx(0.1 + 0.9 * 5 / 8)
    # p95: rank 19 falls in the +Inf bucket -> the highest finite bound
    assert q.quantile(0.95) == 1.0
    assert q.mean == pytest.approx(9.5 / 20)
    ttft = m.ttft_s  # samples carry timestamps
    assert (ttft.count, ttft.sum) == (5, 1.85)
    assert ttft.quantile(0.5) == pytest.approx(0.2 + 0.2 * 0.5 / 2)
    assert set(m.per_stage_latency_s) == {"prefill_forward", "prefill_waiting"}
    assert m.per_stage_latency_s["prefill_waiting"].mean == 3.0
    assert m.num_requests_total == 5
    weird = m.family("sglang:weird").samples[0]
    assert dict(weird.labels) == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}
    assert math.isinf(weird.value)
    doc = m.to_dict()
    json.dumps(doc, allow_nan=False)  # JSON-ready
    assert doc["queue_time_s"]["p50"] == pytest.approx(0.1)


def test_parse_matches_prometheus_client_output():
    prom = pytest.importorskip("prometheus_client")
    reg = prom.CollectorRegistry()
    h = prom.Histogram("sglang:time_to_first_token_seconds", "ttft", ["model_name"],
                       buckets=[0.1, 0.2, 0.4, 0.8], registry=reg)
    c = prom.Counter("sglang:generation_tokens_total", "gen", ["model_name"], registry=reg)
    g = prom.Gauge("sglang:num_queue_reqs", "queue", ["model_name", "tp_rank"], registry=reg)
    values = [0.05, 0.15, 0.15, 0.3, 0.5, 0.9, 2.0]
    for v in values:
        h.labels("m").observe(v)
    c.labels("m").inc(123)
    g.labels("m", "0").set(7)
    g.labels("m", "1").set(7)
    m = parse_prometheus_text(prom.generate_latest(reg).decode())
    assert m.ttft_s.count == len(values)
    assert m.ttft_s.sum == pytest.approx(sum(values))
    assert dict(m.ttft_s.buckets) == {b: float(sum(v <= b for v in values)) for b in (0.1, 0.2, 0.4, 0.8, math.inf)}
    assert m.generation_tokens_total == 123
    assert m.num_queue_reqs == 7


def test_window_and_bad_files(tmp_path):
    before = parse_prometheus_text(SGLANG_METRICS)
    (tmp_path / "metrics_before.prom").write_text(SGLANG_METRICS)
    later = SGLANG_METRICS.replace('"} 5.0\n# HELP sglang:weird', '"} 9.0\n# HELP sglang:weird')
    later = later.replace("num_queue_reqs{dp_rank=\"0\",engine_type=\"unified\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\",pp_rank=\"0\",tp_rank=\"0\"} 30.0",
                          "num_queue_reqs{dp_rank=\"0\",engine_type=\"unified\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\",pp_rank=\"0\",tp_rank=\"0\"} 10.0")
    (tmp_path / "metrics_after.prom").write_text(later)
    w = load_metrics(tmp_path)
    assert w.num_requests_total == 9 - 5
    assert w.num_queue_reqs == ((30 + 4) + (10 + 4)) / 2
    assert w.ttft_s.count == 0  # unchanged histogram
    assert before.num_requests_total == 5
    (tmp_path / "bad.prom").write_text("this is not prometheus\n")
    with pytest.raises(BadInputError, match="line 1"):
        load_metrics(tmp_path / "bad.prom")
    with pytest.raises(BadInputError, match="cannot read"):
        load_metrics(tmp_path / "missing.prom")


def test_histogram_minus_handles_counter_reset():
    a = HistogramStats(10, 5.0, ((1.0, 8.0), (math.inf, 10.0)))
    b = HistogramStats(3, 1.0, ((1.0, 3.0), (math.inf, 3.0)))
    assert b.minus(a) is b  # the server restarted: count from zero
    d = a.minus(b)
    assert (d.count, d.sum, d.buckets) == (7, 4.0, ((1.0, 5.0), (math.inf, 7.0)))


def test_rank_files_and_expected_count():
    assert parse_rank_file(Path("1732.5-TP-3-DP-1-PP-2-EP-3-DECODE.trace.json.gz")).rank_key == (1, 2, 3)
    assert parse_rank_file(Path("pre-1732.5-TP-0.trace.json.gz")).stage == ""
    assert parse_rank_file(Path("merged-1732.5.trace.json.gz")) is None
    assert parse_rank_file(Path("server_args.json")) is None
    assert expected_rank_files({"tp_size": 4, "pp_size": 2, "dp_size": 2}) == 16
    assert expected_rank_files({"tp_size": 8, "dp_size": 8, "enable_dp_attention": True}) == 8
    assert expected_rank_files({}) == 1


class _Tty(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_wait_for_traces_progress_only_on_a_terminal(tmp_path):
    from analyzer.collect.files import wait_for_traces

    with gzip.open(tmp_path / "17.5-TP-0.trace.json.gz", "wt") as fh:
        fh.write('{"traceEvents": []}')
    tty, pipe = _Tty(), __import__("io").StringIO()
    got = wait_for_traces(tmp_path, before={}, expected_ranks=1, timeout_s=5, poll_s=0.01,
                          progress_stream=tty)
    assert [f.path.name for f in got.files] == ["17.5-TP-0.trace.json.gz"]
    assert "waiting for traces: 1/1 ranks" in tty.getvalue()
    whole = (tmp_path / "17.5-TP-0.trace.json.gz").read_bytes()
    (tmp_path / "17.5-TP-1.trace.json.gz").write_bytes(whole[: len(whole) // 2])  # cut short
    with pytest.raises(BadInputError, match="2 of 2 ranks wrote a file, 1 of 2 files are whole"):
        wait_for_traces(tmp_path, before={}, expected_ranks=2, timeout_s=0.2, poll_s=0.01,
                        progress_stream=pipe)
    assert pipe.getvalue() == ""  # not a terminal: no progress


def _long_options(command: str) -> list[str]:
    import argparse

    from analyzer.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [next(o for o in a.option_strings if o.startswith("--"))
            for a in sub.choices[command]._actions
            if a.option_strings and a.help != argparse.SUPPRESS and "--help" not in a.option_strings]


@pytest.mark.parametrize("command", ["collect", "nsys-command"])
def test_every_option_is_documented(command):
    doc = (REPO / "docs" / "collecting.md").read_text()
    missing = [o for o in _long_options(command) if f"`{o}" not in doc]
    assert not missing, f"{command} options missing from docs/collecting.md: {missing}"
