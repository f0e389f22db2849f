"""A small test-local Kineto JSON builder for the gap / capture-edge scenarios.

It plants a GPU timeline directly (integer ns) and derives a consistent host side: every
activity is launched ``LAUNCH_NS`` before it starts (a CUDA-graph step: all its kernels by one
``cudaGraphLaunch`` before the first), step spans (``step[DECODE bs=..]``) enclose their own
launches, and ``scheduler.*`` spans fill the host time between two step spans. The
conventions vary by ``Case`` flags: step spans on another thread than the launches, off-step
work between steps (a sampling kernel and a D2H copy launched after the step span closed, as
SGLang's ``process_batch_result`` does), a lone warm-up activity before a long silence,
trailing teardown, no step annotations at all, CUDA-graph decode.

The planted truth (``Planted``) comes from the plan alone, never from the analyzer. Every
document is labelled synthetic (``"synthetic": true`` and a ``generator`` note).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR = "tests/gap_builder.py (synthetic Kineto trace for gap tests; not a real profile)"
BASE_NS = 1_234_567_000_000_000
LAUNCH_NS = 5_000  # launch call -> GPU start
HOST_PID = 4242
LAUNCH_TID = 4242
ANN_TID_OTHER = 4243
STREAM = 7
GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1"
ELEMENTWISE = "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>"
SAMPLING = "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>>>"


@dataclass
class Case:
    """One randomly drawn scenario (see ``draw``)."""

    seed: int
    family: str  # "batching" (long scheduler gaps between steps), "compute" (tiny gaps) or
    # "launch" (eager kernels launched late, so the GPU waits for the host inside steps)
    steps: int
    annotated: bool
    ann_other_thread: bool
    cuda_graph: bool
    off_step: int  # activities launched between two steps, outside the step spans
    warmup_ns: int  # 0: none; else the silence after a lone warm-up memset
    teardown_ns: int  # 0: none; else the silence before a lone teardown D2H copy


@dataclass
class Planted:
    """Ground truth of a case, from the plan."""

    intervals: list[tuple[int, int]] = field(default_factory=list)  # all GPU activity
    step_windows: list[tuple[int, int]] = field(default_factory=list)  # per step, GPU work
    edge_before_ns: int = 0
    edge_after_ns: int = 0

    def merged(self) -> list[tuple[int, int]]:
        out: list[list[int]] = []
        for s, e in sorted(self.intervals):
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], e)
            else:
                out.append([s, e])
        return [(s, e) for s, e in out]

    @property
    def capture_ns(self) -> int:
        return max(e for _, e in self.intervals) - min(s for s, _ in self.intervals)

    @property
    def busy_ns(self) -> int:
        return sum(e - s for s, e in self.merged())

    def holes(self) -> list[tuple[int, int]]:
        m = self.merged()
        return [(a[1], b[0]) for a, b in zip(m, m[1:])]

    def idle_in(self, lo: int, hi: int) -> int:
        """Idle (holes) lying inside ``[lo, hi]``."""
        return sum(b - a for a, b in self.holes() if a >= lo and b <= hi)

    @property
    def between_ns(self) -> int:
        w = self.step_windows
        return sum(self.idle_in(a[1], b[0]) for a, b in zip(w, w[1:]))

    @property
    def inside_ns(self) -> int:
        return sum(self.idle_in(s, e) for s, e in self.step_windows)


class KinetoBuilder:
    """Collects Kineto ``ph: X`` events (ns in, µs out) for one rank on device 0."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.corr = 1000
        self.ext = 5000

    def _x(self, cat: str, name: str, start: int, dur: int, pid: int, tid: int,
           args: dict[str, Any]) -> None:
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid,
                            "ts": (BASE_NS + start) / 1000, "dur": dur / 1000, "args": args})

    def span(self, name: str, start: int, dur: int, tid: int = LAUNCH_TID) -> None:
        self.ext += 1
        self._x("user_annotation", name, start, dur, HOST_PID, tid, {"External id": self.ext})

    def launch(self, name: str, at: int, dur: int = 2_000) -> int:
        """A runtime call on the launch thread; returns its correlation id."""
        self.corr += 1
        self.ext += 1
        self._x("cuda_runtime", name, at, dur, HOST_PID, LAUNCH_TID,
                {"External id": self.ext, "correlation": self.corr})
        return self.corr

    def activity(self, kind: str, name: str, start: int, dur: int, corr: int) -> None:
        cat = {"kernel": "kernel", "memcpy": "gpu_memcpy", "memset": "gpu_memset"}[kind]
        args: dict[str, Any] = {"device": 0, "context": 1, "stream": STREAM, "correlation": corr}
        if kind != "kernel":
            args["bytes"] = 4096
        self._x(cat, name, start, dur, 0, STREAM, args)

    def document(self, case: Case) -> dict[str, Any]:
        return {
            "schemaVersion": 1,
            "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 85018279936,
                                  "computeMajor": 9, "computeMinor": 0, "numSms": 132}],
            "synthetic": True,
            "generator": GENERATOR,
            "case": case.__dict__,
            "traceEvents": sorted(self.events, key=lambda e: e["ts"]),
        }


def draw(rng: np.random.Generator, seed: int, family: str | None = None) -> Case:
    """A case with every convention drawn at random."""
    fam = family or str(rng.choice(["batching", "compute", "launch"]))
    steps = int(rng.integers(1, 9))
    graph = bool(rng.random() < 0.5)
    return Case(
        seed=seed, family=fam, steps=steps,
        annotated=bool(rng.random() < 0.8),
        ann_other_thread=bool(rng.random() < 0.5),
        cuda_graph=graph and fam != "launch",  # a graph replay has no per-kernel launch gaps
        off_step=int(rng.integers(0, 3)),
        warmup_ns=int(rng.integers(2_000_000, 500_000_000)) if rng.random() < 0.7 else 0,
        teardown_ns=int(rng.integers(2_000_000, 60_000_000)) if rng.random() < 0.5 else 0,
    )


def build(case: Case) -> tuple[dict[str, Any], Planted]:
    """The Kineto document of ``case`` and its planted truth."""
    rng = np.random.default_rng(case.seed)
    kb = KinetoBuilder()
    truth = Planted()
    t = 0
    if case.warmup_ns:  # a lone tiny memset, then the profiler's silence
        d = int(rng.integers(1_000, 3_000))
        c = kb.launch("cudaMemsetAsync", t - LAUNCH_NS)
        kb.activity("memset", "Memset (Device)", t, d, c)
        truth.intervals.append((t, t + d))
        t += d + case.warmup_ns
        truth.edge_before_ns = case.warmup_ns
    ann_tid = ANN_TID_OTHER if case.ann_other_thread else LAUNCH_TID
    prev_span_end: int | None = None
    for k in range(case.steps):
        n = int(rng.integers(12, 25))
        cats = rng.permutation(np.r_[np.ones(4, int), rng.integers(0, 2, n - 4)])  # >= 4 GEMMs
        if case.family == "compute":
            durs = np.where(cats == 1, rng.integers(400_000, 2_000_000, n), rng.integers(10_000, 40_000, n))
        elif case.family == "launch":
            durs = np.where(cats == 1, rng.integers(100_000, 130_000, n), rng.integers(10_000, 20_000, n))
        else:
            durs = np.where(cats == 1, rng.integers(100_000, 150_000, n), rng.integers(10_000, 40_000, n))
        if case.family == "launch":  # each launch comes late: the GPU waits for the host
            inside = rng.integers(150_000, 250_000, n)
        else:
            inside = rng.integers(0, 3_000, n)  # dispatch gaps inside the step
        inside[0] = 0
        starts, cur = [], t
        for i in range(n):
            cur += int(inside[i])
            starts.append(cur)
            cur += int(durs[i])
        first, last_end = starts[0], cur
        if case.cuda_graph:
            g = first - LAUNCH_NS
            span_s, span_e = g - 2_000, g + 20_000
            corr = kb.launch("cudaGraphLaunch", g, 14_000)
            corrs = [corr] * n
        else:
            span_s, span_e = first - LAUNCH_NS - 2_000, starts[-1] - LAUNCH_NS + 3_000
            corrs = [kb.launch("cudaLaunchKernel", s - LAUNCH_NS) for s in starts]
        for i in range(n):
            name = GEMM if cats[i] == 1 else ELEMENTWISE
            kb.activity("kernel", name, starts[i], int(durs[i]), corrs[i])
            truth.intervals.append((starts[i], starts[i] + int(durs[i])))
        if case.annotated:
            kb.span("step[DECODE bs=8]", span_s, span_e - span_s, ann_tid)
        if prev_span_end is not None:  # the scheduler between the two step spans
            kb.span("scheduler.process_batch_result", prev_span_end, (span_s - prev_span_end) // 2)
            mid = prev_span_end + (span_s - prev_span_end) // 2
            kb.span("scheduler.get_next_batch_to_run", mid, span_s - mid)
        truth.step_windows.append((first, last_end))
        prev_span_end = span_e
        t = last_end
        if k == case.steps - 1:
            break
        # off-step work between this step and the next, then the gap before the next step
        for j in range(case.off_step):
            t += int(rng.integers(5_000, 300_000) if case.family == "batching" else rng.integers(6_000, 20_000))
            d = int(rng.integers(3_000, 12_000))
            kind, name = (("kernel", SAMPLING) if j == 0 else ("memcpy", "Memcpy DtoH (Device -> Pinned)"))
            c = kb.launch("cudaLaunchKernel" if kind == "kernel" else "cudaMemcpyAsync", t - LAUNCH_NS)
            kb.activity(kind, name, t, d, c)
            truth.intervals.append((t, t + d))
            t += d
        t += int(rng.integers(2_000_000, 6_000_000) if case.family == "batching" else rng.integers(10_000, 50_000))
    if case.teardown_ns:  # silence, then a lone tiny D2H copy as the profiler stops
        t += case.teardown_ns
        d = int(rng.integers(1_000, 3_000))
        c = kb.launch("cudaMemcpyAsync", t - LAUNCH_NS)
        kb.activity("memcpy", "Memcpy DtoH (Device -> Pageable)", t, d, c)
        truth.intervals.append((t, t + d))
        truth.edge_after_ns = case.teardown_ns
    return kb.document(case), truth


def write(doc: dict[str, Any], path: Path) -> Path:
    path.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
    return path
