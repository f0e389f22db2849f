"""--metrics: the server log's view (no queue) contrasted with where GPU time goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "sample_traces" / "synthetic" / "kv_bound_decode_cuda_graph"

# What SGLang's /metrics shows while 128 requests decode and nothing waits (Prometheus text).
METRICS = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 128.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.62
# HELP sglang:gen_throughput The generation throughput (token/s).
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{model_name="meta-llama/Llama-3.1-8B-Instruct"} 5790.0
# HELP sglang:queue_time_seconds Histogram of queueing time in seconds.
# TYPE sglang:queue_time_seconds histogram
sglang:queue_time_seconds_bucket{le="0.01",model_name="meta-llama/Llama-3.1-8B-Instruct"} 40.0
sglang:queue_time_seconds_bucket{le="0.1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 40.0
sglang:queue_time_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 40.0
sglang:queue_time_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.08
sglang:queue_time_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 40.0
"""


@pytest.fixture()
def metrics_file(tmp_path) -> Path:
    p = tmp_path / "metrics.prom"
    p.write_text(METRICS)
    return p


def test_metrics_section_contrasts_queue_with_gpu(metrics_file):
    res = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "analyze", str(SCENARIO), "--format", "json",
         "--metrics", str(metrics_file)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    m = doc["serving"]["metrics"]
    assert m["num_queue_reqs"] == 0
    assert m["num_running_reqs"] == 128
    assert m["queue_time_mean_s"] == pytest.approx(0.08 / 40)
    assert doc["metrics"] is not None
    verdict = m["verdict"]
    assert isinstance(verdict, str) and verdict
    assert "could not contrast the server queue" not in " ".join(doc["abstained"])


def test_bad_metrics_file_is_bad_input(tmp_path):
    p = tmp_path / "m.prom"
    p.write_bytes(b"\x00\x01 this is not prometheus {{{")
    res = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "analyze", str(SCENARIO), "--metrics", str(p)],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
