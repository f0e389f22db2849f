"""Build the Nsight Systems command lines for profiling an SGLang server (pure functions).

>>> plan = nsys_plan(["python", "-m", "sglang.launch_server", "--model-path", "m", "--port", "30001"])
>>> plan.profile_command.startswith("nsys profile --trace-fork-before-exec=true")
True
>>> "http://127.0.0.1:30001/start_profile" in plan.start_command
True

Flags (Nsight Systems CLI, ``nsys profile --help``; SGLang's benchmark_and_profiling guide):

* ``--trace-fork-before-exec=true``: follow the scheduler/TP worker processes SGLang forks.
* ``--cuda-graph-trace=node``: show each kernel of a replayed CUDA graph (default ``graph``
  shows one range per replay, which hides what the decode step spends its time on).
* ``-t cuda,nvtx,osrt``: CUDA API + kernels, NVTX ranges, OS runtime calls.
* ``--capture-range=cudaProfilerApi --capture-range-end=stop``: collect only between
  ``cudaProfilerStart`` and ``cudaProfilerStop``, which SGLang calls for
  ``/start_profile {"activities": ["CUDA_PROFILER"]}`` (and after ``num_steps`` or
  ``/stop_profile``); the server keeps running after the range ends.
* ``--delay`` / ``--duration`` (timed mode, no API): start after model load and CUDA graph
  capture, stop before the report grows unwieldy; nsys ends the server at the end.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from analyzer.errors import BadInputError

DEFAULT_PORT = 30000
TRACE_APIS = "cuda,nvtx,osrt"


@dataclass(frozen=True)
class NsysPlan:
    mode: str  # "api" | "timed"
    profile_command: str
    start_command: str | None
    stop_command: str | None
    export_command: str
    analyze_command: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def render(self) -> str:
        """The plan as copy-paste text (shell comments and commands)."""
        lines = ["# 1. launch the server under Nsight Systems", self.profile_command, ""]
        step = 2
        if self.start_command:
            lines += [
                f"# {step}. once the server is up and serving traffic, open the capture range",
                self.start_command,
                "",
            ]
            step += 1
        if self.stop_command:
            lines += [
                f"# {step}. close it (not needed when num_steps was given)",
                self.stop_command,
                "",
            ]
            step += 1
        lines += [
            f"# {step}. once nsys has written the report (it prints the .nsys-rep path), export it",
            self.export_command,
            self.analyze_command,
        ]
        if self.notes:
            lines += ["", *[f"# note: {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def _option(cmd: Sequence[str], *names: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command, if present."""
    for i, tok in enumerate(cmd):
        for name in names:
            if tok == name and i + 1 < len(cmd):
                return cmd[i + 1]
            if tok.startswith(name + "="):
                return tok.split("=", 1)[1]
    return None


def server_url(cmd: Sequence[str]) -> str:
    """Where the launched server will listen, read from its ``--host`` / ``--port``."""
    host = _option(cmd, "--host") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = _option(cmd, "--port") or str(DEFAULT_PORT)
    if not port.isdigit():
        raise BadInputError(f"the launch command's --port {port!r} is not a number")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def nsys_plan(
    launch: Sequence[str],
    *,
    output: str = "sglang_%p",
    mode: str = "api",
    num_steps: int | None = 20,
    delay_s: float = 60.0,
    duration_s: float = 30.0,
    url: str | None = None,
) -> NsysPlan:
    """The commands to profile ``launch`` (an SGLang launch command) with Nsight Systems."""
    if not launch:
        raise BadInputError(
            "give the SGLang launch command after --, e.g. "
            "trace-analyzer nsys-command -- python -m sglang.launch_server --model-path M"
        )
    if mode not in ("api", "timed"):
        raise BadInputError(f"unknown mode {mode!r}: api or timed")
    if num_steps is not None and num_steps < 1:
        raise BadInputError("--num-steps must be at least 1 (or leave it out to stop by hand)")
    base = url or server_url(launch)
    flags = [
        "nsys",
        "profile",
        "--trace-fork-before-exec=true",
        "--cuda-graph-trace=node",
        "-t",
        TRACE_APIS,
    ]
    notes: list[str] = []
    start_cmd: str | None = None
    stop_cmd: str | None = None
    if mode == "api":
        flags += ["--capture-range=cudaProfilerApi", "--capture-range-end=stop"]
        body: dict[str, object] = {"activities": ["CUDA_PROFILER"]}
        if num_steps is not None:
            body["num_steps"] = num_steps
        start_cmd = (
            f"curl -X POST {base}/start_profile -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body))}"
        )
        if num_steps is None:
            stop_cmd = f"curl -X POST {base}/stop_profile"
        notes.append(
            "no --delay/--duration needed: the capture range opens at /start_profile, so model "
            "loading and CUDA graph capture stay out of the report"
        )
    else:
        flags += [f"--delay={delay_s:g}", f"--duration={duration_s:g}"]
        notes.append(
            f"timed mode: collection starts {delay_s:g} s after launch (set it past model loading "
            f"and CUDA graph capture, which the server log reports) and lasts {duration_s:g} s; "
            "send traffic in that window; nsys stops the server at the end"
        )
    flags += ["-o", output, "--force-overwrite=true"]
    report = output.replace("%p", "<pid>")
    export_cmd = f"nsys export --type sqlite --output {report}.sqlite {report}.nsys-rep"
    if "--enable-layerwise-nvtx-marker" not in launch:
        notes.append(
            "add --enable-layerwise-nvtx-marker to the launch command for per-layer NVTX "
            "ranges (markers inside CUDA graphs need --disable-cuda-graph)"
        )
    notes.append(
        "keep captures short (10-30 decode steps or 20-60 s): reports grow by hundreds of "
        "MB per GPU per minute"
    )
    return NsysPlan(
        mode=mode,
        profile_command=shlex.join([*flags, *launch]),
        start_command=start_cmd,
        stop_command=stop_cmd,
        export_command=export_cmd,
        analyze_command=f"trace-analyzer analyze {report}.sqlite",
        notes=tuple(notes),
    )
