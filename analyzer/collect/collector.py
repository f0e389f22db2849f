"""Drive one capture on a running SGLang server and gather everything beside the traces.

>>> result = collect(CollectOptions(url="http://127.0.0.1:30000", output_dir=Path("prof"),
...                                 num_steps=5))                       # doctest: +SKIP
>>> [f.name for f in result.trace_files]                                # doctest: +SKIP
['1732611234.5-TP-0.trace.json.gz', '1732611234.5-TP-1.trace.json.gz']

Order: ``/get_server_info`` -> ``server_args.json``; ``/metrics`` -> ``metrics_before.prom``;
``POST /start_profile``; (without ``num_steps``: wait ``duration_s``, ``POST /stop_profile``);
wait for every rank's complete ``*.trace.json.gz``; ``/metrics`` -> ``metrics_after.prom``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from analyzer.fileio import write_atomically
from analyzer.errors import BadInputError
from analyzer.safety import REDACTED, is_secret_key, redact, redact_text

from .client import SGLangClient


def _incomplete_marker() -> str:
    """The marker file name ``analyze`` looks for (imported late: the CLI starts light)."""
    from analyzer.readers.discovery import INCOMPLETE_MARKER

    return INCOMPLETE_MARKER
from .files import expected_rank_files, snapshot, wait_for_traces
from .metrics import AFTER_FILE, BEFORE_FILE, ServerMetrics, metrics_window, parse_prometheus_text

SERVER_ARGS_FILE = "server_args.json"
#: Activities SGLang's /start_profile understands (ProfileReqInput.activities).
ACTIVITIES = ("CPU", "GPU", "MEM", "RPD", "CUDA_PROFILER", "XPU")
#: Activities that make SGLang write torch.profiler ``*.trace.json.gz`` files.
TRACE_ACTIVITIES = frozenset({"CPU", "GPU", "XPU"})


@dataclass(frozen=True)
class CollectOptions:
    """What to ask the server for. ``server_output_dir`` is the same directory as the server
    sees it (a container bind mount, an NFS path); by default ``output_dir`` itself."""

    url: str
    output_dir: Path
    server_output_dir: str | None = None
    num_steps: int | None = None
    start_step: int | None = None
    duration_s: float = 10.0
    activities: tuple[str, ...] = ("CPU", "GPU")
    profile_by_stage: bool = False
    with_stack: bool | None = None
    record_shapes: bool | None = None
    timeout_s: float = 300.0
    expect_files: int | None = None
    api_key: str | None = None
    poll_s: float = 0.5
    stable_polls: int = 2


@dataclass
class CollectResult:
    output_dir: Path
    trace_files: list[Path]
    server_args_path: Path
    server_info: dict[str, Any]
    request: dict[str, Any]
    metrics_before_path: Path | None = None
    metrics_after_path: Path | None = None
    metrics: ServerMetrics | None = None
    capture_s: float = 0.0
    waited_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def is_local_host(host: str) -> bool:
    """True when ``host`` names this machine (loopback, 0.0.0.0 or its own host name)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "0.0.0.0", "::1", "::") or host.startswith("127."):
        return True
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return host in names


def validate_activities(raw: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"cpu,gpu"`` -> ("CPU", "GPU"); unknown names raise BadInputError."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    acts = tuple(dict.fromkeys(a.strip().upper() for a in items if a.strip()))
    bad = [a for a in acts if a not in ACTIVITIES]
    if bad or not acts:
        raise BadInputError(
            f"bad --activities {','.join(bad) or '(empty)'}: choose from {', '.join(ACTIVITIES)}"
        )
    return acts


def profile_request(opts: CollectOptions, server_dir: str) -> dict[str, Any]:
    """The ``/start_profile`` JSON body (SGLang's ProfileReqInput); unset fields left out."""
    body: dict[str, Any] = {
        "output_dir": server_dir,
        "activities": list(opts.activities),
        "profile_by_stage": opts.profile_by_stage,
    }
    for key, value in (
        ("num_steps", opts.num_steps),
        ("start_step", opts.start_step),
        ("with_stack", opts.with_stack),
        ("record_shapes", opts.record_shapes),
    ):
        if value is not None:
            body[key] = value
    return body


def _write(path: Path, text: str) -> None:
    """Write a capture file whole or not at all (temp file + rename)."""
    write_atomically(path, text)


_PROM_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def redact_prometheus(text: str) -> str:
    """Prometheus text with secret-named label values and credential-shaped strings redacted."""
    def label(m: re.Match[str]) -> str:
        return f'{m.group(1)}="{REDACTED}"' if is_secret_key(m.group(1)) else m.group()

    return redact_text(_PROM_LABEL.sub(label, text))


def _scrape(client: SGLangClient, path: Path) -> ServerMetrics | None:
    text = client.metrics_text()
    if text is None:
        return None
    text = redact_prometheus(text)
    _write(path, text)
    return parse_prometheus_text(text)


def collect(
    opts: CollectOptions,
    *,
    note: Callable[[str], None] = lambda _msg: None,
    progress_stream: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CollectResult:
    """Run one capture; ``note`` receives remarks for the user (the CLI prints them on stderr)."""
    if opts.num_steps is not None and opts.num_steps < 1:
        raise BadInputError("--num-steps must be at least 1")
    if opts.timeout_s <= 0:
        raise BadInputError("--timeout must be positive")
    if opts.profile_by_stage and opts.num_steps is None:
        raise BadInputError(
            "--profile-by-stage needs --num-steps: SGLang captures N prefill and N decode steps "
            "and writes one file per stage (it has no manual stop for stage captures)"
        )
    client = SGLangClient(opts.url, api_key=opts.api_key, timeout_s=min(30.0, opts.timeout_s))
    info = redact(client.server_info())  # api keys, HF tokens never reach the disk

    out = opts.output_dir.expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create output directory {out}: {exc}") from None
    server_dir = opts.server_output_dir or str(out)
    notes: list[str] = []

    def remark(msg: str) -> None:
        notes.append(msg)
        note(msg)

    remote = not is_local_host(client.host)
    if remote and opts.server_output_dir is None:
        remark(
            f"the server at {client.host} writes traces on its own disk, into {server_dir}: this "
            "works only if that path is shared with this machine (NFS, a bind mount); otherwise "
            "pass --server-output-dir or copy the files afterwards"
        )
    try:
        nnodes = int(info.get("nnodes") or 1)
    except (TypeError, ValueError):
        nnodes = 1
    if nnodes > 1 and opts.expect_files is None:
        remark(
            f"the server spans {nnodes} nodes: each node writes its ranks' traces on its own disk; "
            "use a shared --output-dir, or --expect-files with the number this host will see"
        )

    marker = out / _incomplete_marker()  # removed once every file is complete
    _write(marker, f"capture started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                   "and not finished (interrupted, or the server stopped answering)\n")
    args_path = out / SERVER_ARGS_FILE
    _write(args_path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")

    before_path = out / BEFORE_FILE
    before = _scrape(client, before_path)
    if before is None:
        remark(
            "the server exports no /metrics (launch SGLang with --enable-metrics to record "
            "queue lengths, KV usage and latency histograms beside the traces)"
        )

    body = profile_request(opts, server_dir)
    previous = snapshot(out)
    t_start = time.monotonic()
    client.start_profile(body, timeout_s=opts.timeout_s if opts.num_steps is not None else None)
    writes_traces = bool(TRACE_ACTIVITIES & set(opts.activities))
    if opts.num_steps is None:
        try:
            sleep(opts.duration_s)
        finally:  # also on Ctrl-C: leave the server with its capture stopped
            client.stop_profile(timeout_s=max(opts.timeout_s, 30.0))
    capture_s = time.monotonic() - t_start

    files: list[Path] = []
    waited_s = 0.0
    if writes_traces:
        hint = (
            f"; the SGLang server writes traces on its own disk, into the directory it was sent "
            f"({server_dir}): if it runs on another host or in a container, use an --output-dir "
            "both machines see (map the server's path with --server-output-dir) or copy the files "
            "from the server"
        )
        if opts.num_steps is not None:
            hint += (
                f"; with --num-steps the server writes only after {opts.num_steps} forward "
                "steps, so it needs requests to serve during the capture"
            )
        expected = opts.expect_files or expected_rank_files(info)
        waited = wait_for_traces(
            out,
            before=previous,
            expected_ranks=expected,
            timeout_s=opts.timeout_s,
            expected_stages=2 if opts.profile_by_stage else 1,
            poll_s=opts.poll_s,
            stable_polls=opts.stable_polls,
            not_found_hint=hint,
            progress_stream=progress_stream,
            sleep=sleep,
        )
        files = [f.path for f in waited.files]
        waited_s = waited.waited_s
    else:
        remark(
            "no torch.profiler activity (CPU/GPU) requested: SGLang writes no trace files; "
            "a CUDA_PROFILER capture ends up in the Nsight Systems report"
        )

    after_path = out / AFTER_FILE
    after = _scrape(client, after_path) if before is not None else None
    window = (
        metrics_window(before, after, window_s=capture_s + waited_s) if before and after else None
    )
    try:
        marker.unlink()
    except OSError:
        pass
    return CollectResult(
        output_dir=out,
        trace_files=files,
        server_args_path=args_path,
        server_info=info,
        request=body,
        metrics_before_path=before_path if before else None,
        metrics_after_path=after_path if after else None,
        metrics=window,
        capture_s=capture_s,
        waited_s=waited_s,
        notes=notes,
    )
