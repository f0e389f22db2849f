"""Microbenchmarks of what the capacity planner needs (needs torch).

Every measurement: warm-up calls, then ``repeats`` timed samples, each of ``inner`` calls
(chosen so a sample lasts about ``min_sample_s``), timed with CUDA events on a GPU or a
``perf_counter`` around synchronous CPU work; the median sample is kept.

Counting rules (the numbers in the profile follow from these):

* causal prefill attention ``[B, H, S, D]``: ``2*B*H*S^2*D`` FLOPs (QK^T and PV,
  ``4*B*H*S^2*D`` without the mask, halved by causality);
* GEMM ``[M, K] x [K, N]``: ``2*M*K*N`` FLOPs;
* copy of N bytes: ``2*N`` bytes moved (read + write);
* decode attention, one query token against an L-token KV: the K and V bytes read,
  ``2*B*Hkv*L*D*elem`` (queries and outputs are negligible).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Settings:
    """Sizes and repetition counts of one calibration run."""

    device: str  # "cuda" | "cpu"
    dtype: str  # "bf16" | "fp16" | "fp32"
    contexts: tuple[int, ...]
    heads: int
    head_dim: int
    hidden: int
    gemm_tokens: tuple[int, ...]
    copy_mib: tuple[int, ...]
    kv_batch: int
    kv_heads: int
    kv_lengths: tuple[int, ...]
    allreduce_bytes: tuple[int, ...]
    warmup: int
    repeats: int
    min_sample_s: float

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def elem_bytes(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()


def default_settings(device: str, dtype: str, contexts: Sequence[int] | None = None) -> Settings:
    """GPU sizes near serving (Llama-8B-like heads), CPU sizes small enough for a test run."""
    if device == "cuda":
        return Settings(
            device,
            dtype,
            tuple(contexts or (512, 1024, 2048, 4096, 8192, 16384)),
            heads=32,
            head_dim=128,
            hidden=4096,
            gemm_tokens=(1, 16, 64, 256, 1024, 4096, 8192),
            copy_mib=(64, 256, 1024),
            kv_batch=32,
            kv_heads=8,
            kv_lengths=(1024, 4096, 16384),
            allreduce_bytes=tuple(8 << (2 * i) for i in range(13)),  # 8 B .. 128 MiB
            warmup=5,
            repeats=20,
            min_sample_s=1e-3,
        )
    return Settings(
        device,
        dtype,
        tuple(contexts or (128, 256, 512, 1024, 2048)),
        heads=8,
        head_dim=64,
        hidden=512,
        gemm_tokens=(1, 32, 256),
        copy_mib=(4, 16, 64),
        kv_batch=4,
        kv_heads=8,
        kv_lengths=(512, 2048, 8192),
        allreduce_bytes=tuple(1024 << (2 * i) for i in range(6)),  # 1 KiB .. 1 MiB
        warmup=2,
        repeats=5,
        min_sample_s=2e-3,
    )


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_s(
    fn: Callable[[], Any], s: Settings, agree: Callable[[int], int] | None = None
) -> float:
    """Median seconds per call of ``fn`` (warm-up, then ``s.repeats`` samples).

    ``agree`` maps this process's calls-per-sample to the one all processes use (a collective
    must be called the same number of times on every rank).
    """
    for _ in range(max(1, s.warmup)):
        fn()
    synchronize(s.device)
    t0 = time.perf_counter()
    fn()
    synchronize(s.device)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = int(min(1000, max(1, math.ceil(s.min_sample_s / one))))
    if agree is not None:
        inner = agree(inner)
    samples: list[float] = []
    if s.device == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        for _ in range(s.repeats):
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / inner)
    else:
        for _ in range(s.repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _randn(shape: Sequence[int], s: Settings, gen: torch.Generator) -> torch.Tensor:
    """Random inputs: from the seeded CPU generator on a CPU, drawn on the device on a GPU
    (gigabytes of KV cache would take seconds to make on the host)."""
    if s.device == "cpu":
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(s.torch_dtype)
    return torch.randn(*shape, device=s.device, dtype=s.torch_dtype)


def attention_prefill(s: Settings, gen: torch.Generator) -> list[dict[str, float]]:
    """Causal SDPA over growing contexts: one row per S with time and TFLOP/s."""
    rows = []
    for ctx in s.contexts:
        q = _randn((1, s.heads, ctx, s.head_dim), s, gen)
        k, v = torch.randn_like(q), torch.randn_like(q)
        t = measure_s(partial(F.scaled_dot_product_attention, q, k, v, is_causal=True), s)
        flops = 2.0 * s.heads * ctx * ctx * s.head_dim
        rows.append({"context": ctx, "time_us": t * 1e6, "tflops": flops / t / 1e12})
        del q, k, v
    return rows


def gemm_shapes(s: Settings) -> list[tuple[str, int, int, int]]:
    """(label, M, K, N): QKV-like, up-projection (tokens x hidden x 4*hidden) and down-projection."""
    h = s.hidden
    out = []
    for m in s.gemm_tokens:
        out += [("qkv", m, h, 3 * h), ("up", m, h, 4 * h), ("down", m, 4 * h, h)]
    return out


def gemm(s: Settings, gen: torch.Generator) -> list[dict[str, float]]:
    """``F.linear`` (x @ W^T, as models call it) at serving shapes."""
    rows = []
    for label, m, k, n in gemm_shapes(s):
        x = _randn((m, k), s, gen)
        w = _randn((n, k), s, gen)
        t = measure_s(partial(F.linear, x, w), s)
        moved = (m * k + k * n + m * n) * s.elem_bytes
        rows.append(
            {
                "op": label,
                "m": m,
                "k": k,
                "n": n,
                "time_us": t * 1e6,
                "tflops": 2.0 * m * k * n / t / 1e12,
                "gbps": moved / t / 1e9,
            }
        )
        del x, w
    return rows


def copy_bandwidth(s: Settings) -> list[dict[str, float]]:
    """``dst.copy_(src)`` of growing buffers: bytes read + written per second."""
    rows = []
    for mib in s.copy_mib:
        n = mib << 20
        src = torch.ones(n, dtype=torch.uint8, device=s.device)
        dst = torch.empty_like(src)
        t = measure_s(partial(dst.copy_, src), s)
        rows.append({"mib": mib, "time_us": t * 1e6, "gbps": 2.0 * n / t / 1e9})
        del src, dst
    return rows


def _has_gqa(s: Settings) -> bool:
    """Whether this torch's SDPA takes ``enable_gqa`` (torch >= 2.5)."""
    q = torch.zeros(1, 2, 1, 8, device=s.device, dtype=s.torch_dtype)
    kv = torch.zeros(1, 1, 4, 8, device=s.device, dtype=s.torch_dtype)
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except (TypeError, RuntimeError):
        return False
    return True


def kv_read(s: Settings, gen: torch.Generator) -> tuple[list[dict[str, float]], bool]:
    """Decode-like SDPA: ``kv_batch`` single-token queries against an L-token KV cache.

    Uses grouped-query attention (``enable_gqa``) when this torch has it, else as many KV
    heads as query heads. Returns the rows and whether GQA was used.
    """
    gqa = s.heads % s.kv_heads == 0 and s.kv_heads != s.heads and _has_gqa(s)
    kv_heads = s.kv_heads if gqa else s.heads
    rows = []
    for length in s.kv_lengths:
        q = _randn((s.kv_batch, s.heads, 1, s.head_dim), s, gen)
        k = _randn((s.kv_batch, kv_heads, length, s.head_dim), s, gen)
        v = torch.randn_like(k)
        extra = {"enable_gqa": True} if gqa else {}
        t = measure_s(partial(F.scaled_dot_product_attention, q, k, v, **extra), s)
        kv_bytes = 2 * s.kv_batch * kv_heads * length * s.head_dim * s.elem_bytes
        rows.append(
            {
                "kv_length": length,
                "batch": s.kv_batch,
                "kv_heads": kv_heads,
                "time_us": t * 1e6,
                "gbps": kv_bytes / t / 1e9,
            }
        )
        del q, k, v
    return rows, gqa


def profiled_workloads(s: Settings, gen: torch.Generator) -> dict[str, Callable[[], None]]:
    """One representative call per benchmark, run a few times under torch.profiler."""
    ctx = s.contexts[len(s.contexts) // 2]
    q = _randn((1, s.heads, ctx, s.head_dim), s, gen)
    k, v = torch.randn_like(q), torch.randn_like(q)
    m = s.gemm_tokens[-1]
    x = _randn((m, s.hidden), s, gen)
    w = _randn((4 * s.hidden, s.hidden), s, gen)
    src = torch.ones(s.copy_mib[0] << 20, dtype=torch.uint8, device=s.device)
    dst = torch.empty_like(src)
    length = s.kv_lengths[0]
    dq = _randn((s.kv_batch, s.heads, 1, s.head_dim), s, gen)
    dk = _randn((s.kv_batch, s.heads, length, s.head_dim), s, gen)
    dv = torch.randn_like(dk)
    return {
        f"attention_prefill S={ctx}": lambda: F.scaled_dot_product_attention(
            q, k, v, is_causal=True
        ),
        f"gemm up M={m} K={s.hidden} N={4 * s.hidden}": lambda: F.linear(x, w),
        f"copy {s.copy_mib[0]} MiB": lambda: dst.copy_(src),
        f"kv_read B={s.kv_batch} L={length}": lambda: F.scaled_dot_product_attention(dq, dk, dv),
    }
