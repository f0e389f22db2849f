"""All-reduce bandwidth sweep under ``torchrun`` (NCCL on GPUs, gloo on CPU).

Run as ``torchrun --nproc_per_node=N -m analyzer.cli calibrate ...``: every process takes
part, rank 0 writes the profile. Bus bandwidth follows nccl-tests' convention,
``busbw = bytes / t * 2 * (n - 1) / n``, so that it compares with the link's bandwidth
whatever the number of ranks; the time per size is the slowest rank's median.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist

from .bench import Settings, measure_s


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    backend: str


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None outside it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1 or "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_world(device: str) -> World | None:
    """Join the process group torchrun set up (None when not under torchrun)."""
    env = torchrun_world()
    if env is None:
        return None
    rank, world, local = env
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return World(rank, world, local, backend)


def allreduce_sweep(s: Settings, world: World) -> list[dict[str, float]]:
    """Sum-all-reduce of growing fp32/bf16 buffers; one row per size (same on every rank)."""
    dtype = s.torch_dtype if world.backend == "nccl" else torch.float32
    elem = torch.empty((), dtype=dtype).element_size()
    rows = []
    for nbytes in s.allreduce_bytes:
        n = max(1, nbytes // elem)
        buf = torch.ones(n, dtype=dtype, device=s.device)
        dist.barrier()
        t = measure_s(partial(dist.all_reduce, buf), s, agree=partial(_max_int, device=s.device))
        worst = torch.tensor([t], dtype=torch.float64, device=s.device)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        t = float(worst.item())
        size = n * elem
        alg = size / t / 1e9
        rows.append(
            {
                "bytes": size,
                "time_us": t * 1e6,
                "algbw_gbps": alg,
                "busbw_gbps": alg * 2 * (world.world_size - 1) / world.world_size,
            }
        )
        del buf
    return rows


def _max_int(value: int, device: str) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def close_world(world: World | None) -> None:
    if world is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
