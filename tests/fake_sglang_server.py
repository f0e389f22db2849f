"""A small stand-in for an SGLang server, for testing the collector over real HTTP.

It listens on 127.0.0.1 (a free port), answers ``/get_server_info``, ``/metrics``,
``/start_profile`` and ``/stop_profile`` like SGLang's ``http_server.py``, and when asked to
profile it records REAL torch.profiler traces of a tiny model (a few torch ops: two matmuls,
an SDPA, a softmax) into the requested directory, named as SGLang names them:
``<profile_id>-TP-<tp>[-DP-<dp>][-PP-<pp>][-<stage>].trace.json.gz``.

Every profiled step "serves" one request, whose made-up latencies are added to the metrics
(and listed in ``observations``), so a test can check the saved ``/metrics`` scrapes against
what the server really observed.

Knobs for failure tests: ``remote_root`` (write on "another disk": the files never appear
where the client looks), ``write_files=False`` (accept the capture, write nothing),
``busy_status`` (the status answered when a capture is already running) and ``slow_write_s``
(write each gzip in two halves with a pause: a file that exists but is not complete yet).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_PATH = "Qwen/Qwen3-0.6B"
LABELS = 'engine_type="unified",model_name="{model}",pp_rank="0",tp_rank="{tp}"'
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0)
QUEUE_BUCKETS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
STAGE_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
#: The longest any background capture may run (keeps a broken test from hanging).
MAX_CAPTURE_S = 30.0


@dataclass
class Observations:
    """What the fake server "served": one entry per request, in order."""

    ttft_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)
    prefill_forward_s: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)


class TinyModel:
    """A few torch ops standing in for a transformer layer."""

    def __init__(self) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.torch = torch
        self.w_in = torch.randn(64, 192, generator=g)
        self.w_out = torch.randn(64, 64, generator=g)

    def step(self, tokens: int, stage: str) -> None:
        torch = self.torch
        from torch.nn.functional import scaled_dot_product_attention

        with torch.profiler.record_function(f"step[{stage} bs=1 toks={tokens}]"):
            x = torch.randn(tokens, 64)
            qkv = x @ self.w_in
            q, k, v = (t.reshape(1, 4, tokens, 16) for t in qkv.split(64, dim=1))
            a = scaled_dot_product_attention(q, k, v, is_causal=True)
            y = a.reshape(tokens, 64) @ self.w_out
            torch.softmax(y, dim=-1)


class FakeSGLangServer:
    """Start with :meth:`start` (returns the URL), stop with :meth:`stop`."""

    def __init__(
        self,
        *,
        tp_size: int = 2,
        dp_size: int = 1,
        pp_size: int = 1,
        remote_root: Path | None = None,
        write_files: bool = True,
        busy_status: int = 400,
        slow_write_s: float = 0.0,
        enable_metrics: bool = True,
        step_s: float = 0.01,
        stage_gap_s: float = 0.5,
    ) -> None:
        self.tp_size, self.dp_size, self.pp_size = tp_size, dp_size, pp_size
        self.remote_root = remote_root
        self.write_files = write_files
        self.busy_status = busy_status
        self.slow_write_s = slow_write_s
        self.enable_metrics = enable_metrics
        self.step_s = step_s
        self.stage_gap_s = stage_gap_s
        self.lock = threading.Lock()
        self.profiling = False
        self.requests: list[dict[str, Any]] = []  # /start_profile bodies received
        self.written: list[Path] = []
        self.obs = Observations()
        self.running_reqs = 3
        self.queue_reqs = 5
        self._stop_capture = threading.Event()
        self._worker: threading.Thread | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._scratch = Path(tempfile.mkdtemp(prefix="fake-sglang-"))
        self._model: TinyModel | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stop_capture.set()
        if self._worker is not None:
            self._worker.join(timeout=MAX_CAPTURE_S)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)

    # -- SGLang behaviour ---------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        return {
            "model_path": MODEL_PATH,
            "tokenizer_path": MODEL_PATH,
            "host": "127.0.0.1",
            "port": 30000,
            "dtype": "auto",
            "kv_cache_dtype": "auto",
            "quantization": None,
            "tp_size": self.tp_size,
            "pp_size": self.pp_size,
            "dp_size": self.dp_size,
            "ep_size": 1,
            "nnodes": 1,
            "node_rank": 0,
            "enable_dp_attention": False,
            "chunked_prefill_size": 8192,
            "max_prefill_tokens": 16384,
            "page_size": 1,
            "attention_backend": "flashinfer",
            "sampling_backend": "flashinfer",
            "mem_fraction_static": 0.88,
            "max_running_requests": None,
            "schedule_policy": "fcfs",
            "disable_cuda_graph": False,
            "cuda_graph_max_bs": 160,
            "cuda_graph_bs": None,
            "disable_radix_cache": False,
            "enable_torch_compile": False,
            "enable_metrics": self.enable_metrics,
            "max_total_num_tokens": 412_345,
            "max_req_input_len": 40_954,
            "internal_states": [
                {"last_gen_throughput": 1234.5, "memory_usage": {"weight": 1.1, "kvcache": 44.2}}
            ],
            "version": "0.5.5",
        }

    def metrics_text(self) -> str:
        with self.lock:
            obs = Observations(
                list(self.obs.ttft_s),
                list(self.obs.queue_s),
                list(self.obs.prefill_forward_s),
                list(self.obs.prompt_tokens),
                list(self.obs.output_tokens),
            )
            running, queued = self.running_reqs, self.queue_reqs
        lines: list[str] = []
        for name, kind, helptext in (
            ("sglang:num_running_reqs", "gauge", "The number of running requests."),
            ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue."),
            ("sglang:token_usage", "gauge", "The token usage."),
            ("sglang:gen_throughput", "gauge", "The generation throughput (token/s)."),
            (
                "sglang:max_total_num_tokens",
                "gauge",
                "Maximum total number of tokens in the KV cache pool.",
            ),
        ):
            value = {
                "sglang:num_running_reqs": running,
                "sglang:num_queue_reqs": queued,
                "sglang:token_usage": 0.42,
                "sglang:gen_throughput": 1234.5,
                "sglang:max_total_num_tokens": 412345,
            }[name]
            lines += [f"# HELP {name} {helptext}", f"# TYPE {name} {kind}"]
            for tp in range(self.tp_size):  # every TP rank exports the same numbers
                lines.append(f"{name}{{{LABELS.format(model=MODEL_PATH, tp=tp)}}} {float(value)}")
        lines += _histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            QUEUE_BUCKETS,
            obs.queue_s,
            LABELS.format(model=MODEL_PATH, tp=0),
        )
        lines += _histogram(
            "sglang:per_stage_req_latency_seconds",
            "The latency of each stage of requests.",
            STAGE_BUCKETS,
            obs.prefill_forward_s,
            LABELS.format(model=MODEL_PATH, tp=0) + ',stage="prefill_forward"',
        )
        tok = f'model_name="{MODEL_PATH}"'
        for name, values in (
            ("sglang:prompt_tokens_total", obs.prompt_tokens),
            ("sglang:generation_tokens_total", obs.output_tokens),
            ("sglang:num_requests_total", [1] * len(obs.ttft_s)),
        ):
            lines += [
                f"# HELP {name} counter",
                f"# TYPE {name} counter",
                f"{name}{{{tok}}} {float(sum(values))}",
            ]
        lines += _histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
            obs.ttft_s,
            tok,
        )
        return "\n".join(lines) + "\n"

    def start_profile(self, body: dict[str, Any]) -> tuple[int, str]:
        with self.lock:
            if self.profiling:  # SGLang raises RuntimeError: FastAPI answers a bare 500
                if self.busy_status == 500:
                    return 500, "Internal Server Error"
                return (
                    self.busy_status,
                    "Profiling is already in progress. Call /stop_profile first.",
                )
            self.profiling = True
            self.requests.append(body)
        self._stop_capture.clear()
        self._worker = threading.Thread(target=self._capture, args=(body,), daemon=True)
        self._worker.start()
        return 200, "Start profiling.\n"

    def stop_profile(self) -> tuple[int, str]:
        with self.lock:
            if not self.profiling:
                return 400, "Profiling is not in progress. Call /start_profile first."
        self._stop_capture.set()
        if self._worker is not None:
            self._worker.join(timeout=MAX_CAPTURE_S)  # like SGLang: answer once traces are written
        return 200, "Stop profiling. This will take some time.\n"

    # -- the capture --------------------------------------------------------------------

    def _serve_one(self, i: int) -> None:
        with self.lock:
            self.obs.ttft_s.append(0.05 + 0.1 * (i % 7))
            self.obs.queue_s.append(0.03 * (i % 5))
            self.obs.prefill_forward_s.append(0.002 * (1 + i % 3))
            self.obs.prompt_tokens.append(100 + i)
            self.obs.output_tokens.append(20)

    def _capture(self, body: dict[str, Any]) -> None:
        from torch.profiler import ProfilerActivity, profile

        try:
            if self._model is None:
                self._model = TinyModel()
            num_steps = body.get("num_steps")
            by_stage = bool(body.get("profile_by_stage"))
            stages = ["EXTEND", "DECODE"] if by_stage else [""]
            profile_id = repr(time.time())
            out_dir = Path(body.get("output_dir") or "/tmp")
            if self.remote_root is not None:
                out_dir = self.remote_root / str(out_dir).lstrip("/")
            deadline = time.monotonic() + MAX_CAPTURE_S
            served = 0
            ranks = [(dp, pp, tp) for dp in range(self.dp_size) for pp in range(self.pp_size)
                     for tp in range(self.tp_size)]
            for i, stage in enumerate(stages):  # like SGLang: every rank's EXTEND file, then DECODE
                if i:
                    time.sleep(self.stage_gap_s)  # decode starts a while after prefill
                for dp, pp, tp in ranks:
                    first = (dp, pp, tp) == (0, 0, 0)
                    with profile(activities=[ProfilerActivity.CPU],
                                 record_shapes=bool(body.get("record_shapes")),
                                 with_stack=bool(body.get("with_stack", False))) as prof:
                        step = 0
                        while time.monotonic() < deadline:
                            if num_steps is not None and step >= num_steps:
                                break
                            stopped = not first or self._stop_capture.is_set()
                            if num_steps is None and stopped and step >= 2:
                                break  # other ranks: a short burst at stop time
                            self._model.step(1 if stage == "DECODE" else 16, stage or "EXTEND")
                            if first:
                                self._serve_one(served)
                                served += 1
                            step += 1
                            time.sleep(self.step_s)
                    if self.write_files:
                        parts = [profile_id, f"TP-{tp}"]
                        parts += [f"DP-{dp}"] if self.dp_size > 1 else []
                        parts += [f"PP-{pp}"] if self.pp_size > 1 else []
                        parts += [stage] if stage else []
                        self._export(prof, out_dir / f"{'-'.join(parts)}.trace.json.gz")
        finally:
            with self.lock:
                self.profiling = False

    def _export(self, prof: Any, final: Path) -> None:
        scratch = self._scratch / final.name
        prof.export_chrome_trace(str(scratch))
        final.parent.mkdir(parents=True, exist_ok=True)
        data = scratch.read_bytes()
        with open(final, "wb") as fh:
            if self.slow_write_s > 0:  # a gzip that exists but is not whole yet
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(self.slow_write_s)
                fh.write(data[len(data) // 2 :])
            else:
                fh.write(data)
        scratch.unlink()
        self.written.append(final)


def _histogram(
    name: str, helptext: str, bounds: tuple[float, ...], values: list[float], labels: str
) -> list[str]:
    lines = [f"# HELP {name} {helptext}", f"# TYPE {name} histogram"]
    for b in (*bounds, float("inf")):
        le = "+Inf" if b == float("inf") else repr(float(b))
        lines.append(f'{name}_bucket{{le="{le}",{labels}}} {float(sum(v <= b for v in values))}')
    lines.append(f"{name}_count{{{labels}}} {float(len(values))}")
    lines.append(f"{name}_sum{{{labels}}} {float(sum(values))}")
    return lines


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSGLangServer
    timeout = 10  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: str | bytes, ctype: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def do_GET(self) -> None:
        if self.path == "/get_server_info":
            self._send(200, json.dumps(self.fake.server_info()), "application/json")
        elif self.path == "/metrics" and self.fake.enable_metrics:
            self._send(200, self.fake.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        elif self.path in ("/start_profile", "/stop_profile"):
            self.do_POST()
        else:
            self._send(404, json.dumps({"detail": "Not Found"}), "application/json")

    def do_POST(self) -> None:
        if self.path == "/start_profile":
            body = self._body()
            if body is None:
                self._send(400, json.dumps({"message": "bad JSON body"}), "application/json")
                return
            status, text = self.fake.start_profile(body)
            self._send(status, text)
        elif self.path == "/stop_profile":
            self._body()
            status, text = self.fake.stop_profile()
            self._send(status, text)
        else:
            self._send(404, json.dumps({"detail": "Not Found"}), "application/json")
