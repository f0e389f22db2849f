"""A tiny builder of pipeline-parallel Kineto traces with a planted schedule (test helper).

Stages ``0..p-1`` (``tp`` ranks each) run ``rounds`` rounds of ``m`` micro-batches in a
serving loop: stage k computes micro-batch j once stage k-1 has sent it (the first stage
once the last stage has sent the previous round's tokens back). Every time below is
planted on one true clock; each rank's file is written on its own clock (``offsets``).

Conventions (the knobs the tests randomise):

- ``recv``: "device" (NCCL send/recv kernels; a late-posted receive starts when the data
  comes) or "host" (no P2P kernel at all: the stage's host sits in scheduler/receive code
  until the data is there, then launches the compute);
- ``steps``: "same" (``step[DECODE bs=..]`` spans on the scheduler thread), "other" (on
  another host thread) or "none";
- ``link``: world all-reduces at the start and the end of the capture (they tie every
  clock to rank 0), their ends off by up to ``end_jitter_ns`` per rank; ``offsets``:
  per-rank clock offsets in ns;
- ``pause``: extra host time on the first stage before some rounds (all stages idle).

``Plan.truth`` holds the planted intervals on the true clock for independent checks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_NS = 1_234_567_000_000_000  # ts origin (a monotonic clock: us ~1.2e12 keeps ns exact)
WALL_NS = 1_767_225_600_000_000_000  # baseTimeNanoseconds
GEMM = "nvjet_tst_64x8_64x16_4x1_v_bz_splitK_TNT"
ATTN = "flashinfer::BatchDecodeWithPagedKVCacheKernel"
ELEM = "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>"
ALLREDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
SENDRECV = "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)"


@dataclass
class Plan:
    pp: int
    tp: int
    m: int
    rounds: int
    compute_ns: list[int]  # per stage, one micro-batch
    xfer_ns: int = 20_000
    host_ns: int = 15_000  # scheduler time between two blocks of a stage
    recv: str = "device"
    steps: str = "same"
    link: bool = True
    offsets: dict[int, int] = field(default_factory=dict)
    pause: dict[int, int] = field(default_factory=dict)  # round -> extra host ns on stage 0
    end_jitter_ns: int = 0  # all-reduce ends vary by up to this much per rank (seeded)
    #: filled by build(): rank -> list of (start, end, kind) on the true clock,
    #: kind in {"compute", "comm", "p2p"}
    truth: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)

    def rank(self, stage: int, t: int) -> int:
        return stage * self.tp + t


def _schedule(pl: Plan) -> dict[int, list[tuple[int, int, int, int]]]:
    """Per stage: (recv_start or -1, compute_start, compute_end, send_end or -1)."""
    t0 = 200_000
    free = [t0] * pl.pp
    done: dict[tuple[int, int, int], int] = {}
    out: dict[int, list[tuple[int, int, int, int]]] = {k: [] for k in range(pl.pp)}
    dev = pl.recv == "device"
    for r in range(pl.rounds):
        for j in range(pl.m):
            for k in range(pl.pp):
                if k > 0:
                    ready = done[(k - 1, r, j)] + pl.xfer_ns
                elif r > 0:
                    ready = done[(pl.pp - 1, r - 1, j)] + pl.xfer_ns
                else:
                    ready = t0
                if k == 0 and j == 0:
                    ready += pl.pause.get(r, 0)
                has_recv = k > 0 or r > 0
                lead = pl.host_ns + (pl.xfer_ns if dev and has_recv else 0)
                start = max(ready, free[k] + lead)
                end = start + pl.compute_ns[k]
                done[(k, r, j)] = end
                has_send = k < pl.pp - 1 or r < pl.rounds - 1
                send_end = end + pl.xfer_ns if dev and has_send else -1
                out[k].append((start - pl.xfer_ns if dev and has_recv else -1, start, end, send_end))
                free[k] = send_end if send_end > 0 else end
    return out


def build(pl: Plan, out_dir: Path) -> Path:
    """Write one Kineto file per rank (SGLang names) and server_args.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sched = _schedule(pl)
    world = pl.pp * pl.tp
    t_end = max(blk[-1][3] if blk[-1][3] > 0 else blk[-1][2] for blk in sched.values()) + 100_000
    for k in range(pl.pp):
        for t in range(pl.tp):
            rank = pl.rank(k, t)
            doc = _rank_doc(pl, k, t, rank, world, sched[k], t_end)
            (out_dir / f"1767225600.5-TP-{t}-PP-{k}.trace.json").write_text(json.dumps(doc))
    (out_dir / "server_args.json").write_text(json.dumps({"tp_size": pl.tp, "pp_size": pl.pp,
                                                          "disable_overlap_schedule": True}))
    return out_dir


def _rank_doc(pl: Plan, k: int, t: int, rank: int, world: int,
              blocks: list[tuple[int, int, int, int]], t_end: int) -> dict[str, Any]:
    off = pl.offsets.get(rank, 0)
    pid, tid = 1000 + rank, 1000 + rank
    step_tid = tid + 1 if pl.steps == "other" else tid
    ev: list[dict[str, Any]] = []
    truth: list[tuple[int, int, str]] = []
    corr = [rank * 100_000]

    def us(ns: int) -> float:
        return (BASE_NS + ns + off) / 1000

    def host(name: str, s: int, e: int, cat: str = "user_annotation", th: int = tid) -> None:
        ev.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": th, "ts": us(s),
                   "dur": (e - s) / 1000, "args": {}})

    def kernel(name: str, s: int, e: int, launch: int, kind: str, args: dict | None = None) -> None:
        corr[0] += 1
        c = corr[0]
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": pid, "tid": tid,
                   "ts": us(launch), "dur": 2.0, "args": {"correlation": c}})
        ev.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": us(s),
                   "dur": (e - s) / 1000,
                   "args": {"device": k * pl.tp + t, "stream": 7, "correlation": c, **(args or {})}})
        truth.append((s, e, kind))

    rng = random.Random(rank)

    def jit() -> int:
        return rng.randint(-pl.end_jitter_ns, pl.end_jitter_ns) if pl.end_jitter_ns else 0

    tp_ranks = [pl.rank(k, x) for x in range(pl.tp)]
    ar_tp = {"Collective name": "allreduce", "Process Group Name": "2", "Group size": pl.tp,
             "In msg nelems": 4096, "dtype": "BFloat16"}
    ar_world = {"Collective name": "allreduce", "Process Group Name": "0", "Group size": world,
                "In msg nelems": 16, "dtype": "Float"}
    p2p = {"Collective name": "send", "Process Group Name": "4", "Group size": 2}
    if pl.link:
        for i in range(3):
            s = 20_000 + i * 30_000
            kernel(ALLREDUCE, s, s + 10_000 + jit(), s - 6_000, "comm", ar_world)
            s = t_end - 90_000 + i * 30_000
            kernel(ALLREDUCE, s, s + 10_000 + jit(), s - 6_000, "comm", ar_world)
    prev_host = 100_000
    for recv_s, s, e, send_e in blocks:
        first = recv_s if recv_s >= 0 else s
        launch0 = first - 8_000
        if launch0 - 1_000 > prev_host:  # waiting for the data: scheduler / receive code
            host("scheduler.recv_requests", prev_host, launch0 - 1_000)
        if pl.steps != "none":
            host("step[DECODE bs=16]", launch0 - 500, launch0 + 7_000, th=step_tid)
        if recv_s >= 0:
            kernel(SENDRECV, recv_s, s, launch0, "p2p", {**p2p, "Collective name": "recv"})
        c = e - s
        parts = [(GEMM, 4), (ATTN, 2), (GEMM, 3), (ELEM, 1)]
        cur = s
        for i, (name, w) in enumerate(parts):
            d = c * w // 10 if i < len(parts) - 1 else e - cur
            if pl.tp > 1 and i == 2:  # a TP all-reduce in the middle of the block
                a = min(8_000, d // 2)
                kernel(ALLREDUCE, cur, cur + a, launch0 + 1_000 + i * 1_000, "comm", ar_tp)
                cur += a
                d -= a
            kernel(name, cur, cur + d, launch0 + 1_500 + i * 1_000, "compute")
            cur += d
        if send_e > 0:
            kernel(SENDRECV, e, send_e, launch0 + 6_000, "p2p", p2p)
        prev_host = (send_e if send_e > 0 else e) + 2_000
    pl.truth[rank] = truth
    cfg = [{"pg_name": "0", "pg_desc": "default_pg", "pg_size": world, "ranks": list(range(world))},
           {"pg_name": "2", "pg_desc": "undefined", "pg_size": pl.tp, "ranks": tp_ranks}]
    return {"schemaVersion": 1,
            "deviceProperties": [{"id": i, "name": "NVIDIA H100 80GB HBM3"} for i in range(world)],
            "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": world, "pg_config": cfg},
            "baseTimeNanoseconds": WALL_NS,
            "traceEvents": ev}
