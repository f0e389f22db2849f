"""Run the microbenchmarks, record their torch.profiler traces, build the hardware profile.

>>> doc = calibrate(default_settings("cpu", "fp32", [128, 256, 512]))   # doctest: +SKIP
>>> doc["measured"]["attention_fit"]["c"] > 0                            # doctest: +SKIP
True

Headline numbers (``measured``): ``attention_prefill_tflops`` at the longest context,
``gemm_tflops`` the best GEMM shape, ``hbm_gbps`` the largest copy, ``kv_read_gbps`` the
longest KV, ``allreduce_gbps`` the bus bandwidth of the largest all-reduce and
``allreduce_latency_us`` the time of the smallest (both null outside torchrun).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .bench import (
    Settings,
    attention_prefill,
    copy_bandwidth,
    gemm,
    kv_read,
    profiled_workloads,
    synchronize,
)
from .distributed import World, allreduce_sweep, close_world, init_world
from .profile import SCHEMA, fit_attention, validate_hardware_profile

PROFILED_ITERS = 3


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _label(s: Settings, name: str, created: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "recorded_by": "trace-analyzer calibrate",
        "device_type": s.device,
        "device_name": name,
        "dtype": s.dtype,
        "torch_version": torch.__version__,
        "host": socket.gethostname(),
        "created": created,
        "cpu_threads": torch.get_num_threads(),
        **extra,
    }


def _record(
    path: Path, s: Settings, label: dict[str, Any], workloads: dict[str, Callable[[], Any]]
) -> None:
    """Run each workload a few times under torch.profiler and export one labelled trace."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device == "cuda" else [])
    for fn in workloads.values():  # warm-up outside the capture
        fn()
    synchronize(s.device)
    with profile(activities=activities, record_shapes=True) as prof:
        prof.add_metadata_json("trace_analyzer_calibration", json.dumps(label))
        prof.add_metadata("calibration_device", f"{s.device}: {label['device_name']}")
        for title, fn in workloads.items():
            with record_function(f"calibrate/{title}"):
                for _ in range(PROFILED_ITERS):
                    fn()
            synchronize(s.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))


def _record_allreduce(
    s: Settings, world: World, trace_dir: Path, label: dict[str, Any]
) -> list[str]:
    import torch.distributed as dist

    nbytes = s.allreduce_bytes[-1]
    buf = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=s.device)
    path = trace_dir / f"calibrate-allreduce-{s.device}-rank{world.rank}.trace.json.gz"
    label = {
        **label,
        "benchmark": "allreduce",
        "workload": f"all_reduce {nbytes} B",
        "rank": world.rank,
        "world_size": world.world_size,
        "backend": world.backend,
    }
    _record(path, s, label, {f"all_reduce {nbytes} B": lambda: dist.all_reduce(buf)})
    return [path.name.replace(f"rank{world.rank}.", f"rank{r}.") for r in range(world.world_size)]


def calibrate(
    s: Settings,
    *,
    trace_dir: Path | None = None,
    note: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any] | None:
    """Measure, record traces into ``trace_dir``, and return the profile (None on ranks > 0).

    Under torchrun every rank joins the all-reduce sweep; then rank 0 alone runs the
    single-device benchmarks and returns the profile, the other ranks return None.
    """
    if s.device == "cuda" and not torch.cuda.is_available():
        from analyzer.model import BadInputError

        raise BadInputError("--device cuda, but this torch sees no CUDA GPU (use --device cpu)")
    world: World | None = init_world(s.device)
    rank = world.rank if world else 0
    created = _now()
    name = device_name(s.device)
    gen = torch.Generator().manual_seed(0)
    if s.device == "cuda":
        torch.cuda.manual_seed(0)
    traces: list[str] = []
    ar_rows: list[dict[str, float]] | None = None
    try:  # first, with every rank: the all-reduce sweep (and its trace, one per rank)
        if world is not None:
            note(f"all-reduce over {world.world_size} processes ({world.backend}) ...")
            ar_rows = allreduce_sweep(s, world)
            if trace_dir is not None:
                traces += _record_allreduce(s, world, trace_dir, _label(s, name, created, {}))
    finally:
        close_world(world)
    if rank != 0:
        return None

    # then rank 0 alone measures its device (no other rank competes for the CPU or the host)
    note("prefill attention ...")
    attn = attention_prefill(s, gen)
    fit = fit_attention([r["context"] for r in attn], [r["time_us"] for r in attn])
    note("GEMM ...")
    gemms = gemm(s, gen)
    note("memory copy ...")
    copies = copy_bandwidth(s)
    note("decode KV read ...")
    kvs, gqa = kv_read(s, gen)
    if trace_dir is not None:
        note("recording torch.profiler traces ...")
        for title, fn in profiled_workloads(s, gen).items():
            bench = title.split()[0]
            path = trace_dir / f"calibrate-{bench}-{s.device}.trace.json.gz"
            _record(
                path,
                s,
                _label(s, name, created, {"benchmark": bench, "workload": title}),
                {title: fn},
            )
            traces.append(path.name)

    details: dict[str, Any] = {
        "attention_prefill": {
            "op": "F.scaled_dot_product_attention(is_causal=True)",
            "batch": 1,
            "heads": s.heads,
            "head_dim": s.head_dim,
            "flops_rule": "2*B*H*S^2*D (causal half of QK^T + PV)",
            "fit": {
                "model": "t_us = a + b*S + c*S^2",
                "weighting": "relative (1/t)",
                "constraint": "a, b, c >= 0",
                "r2": fit.r2,
                "max_context": fit.max_context,
            },
            "rows": attn,
        },
        "gemm": {"op": "F.linear (x @ W^T)", "flops_rule": "2*M*K*N", "rows": gemms},
        "copy": {"op": "dst.copy_(src)", "bytes_rule": "2 x buffer (read + write)", "rows": copies},
        "kv_read": {
            "op": "F.scaled_dot_product_attention, 1 query token per sequence"
            + (" (enable_gqa)" if gqa else ""),
            "heads": s.heads,
            "head_dim": s.head_dim,
            "bytes_rule": "K + V bytes: 2*B*Hkv*L*D*elem",
            "rows": kvs,
        },
        "allreduce": None
        if ar_rows is None
        else {
            "backend": world.backend if world else None,
            "world_size": world.world_size if world else 1,
            "busbw_rule": "bytes/t * 2(n-1)/n (nccl-tests)",
            "time": "slowest rank's median",
            "rows": ar_rows,
        },
        "timing": {
            "warmup": s.warmup,
            "repeats": s.repeats,
            "statistic": "median",
            "timer": "torch.cuda.Event"
            if s.device == "cuda"
            else "time.perf_counter (synchronous CPU ops)",
        },
        "host": socket.gethostname(),
        "cpu_threads": torch.get_num_threads(),
        "traces": traces,
    }
    notes = []
    if fit.c <= 0:
        notes.append(
            "the quadratic term did not show at these contexts: measure longer ones (--contexts)"
        )
    if s.device == "cpu":
        notes.append("measured on a CPU: these rates describe this CPU, not a GPU")
    if ar_rows is None:
        notes.append("all-reduce not measured: run under torchrun with more than one process")
    details["notes"] = notes
    doc = {
        "schema": SCHEMA,
        "device": {"type": s.device, "name": name},
        "dtype": s.dtype,
        "measured": {
            "gemm_tflops": max(r["tflops"] for r in gemms),
            "attention_prefill_tflops": attn[-1]["tflops"],
            "attention_fit": fit.to_measured(),
            "hbm_gbps": copies[-1]["gbps"],
            "kv_read_gbps": kvs[-1]["gbps"],
            "allreduce_gbps": ar_rows[-1]["busbw_gbps"] if ar_rows else None,
            "allreduce_latency_us": ar_rows[0]["time_us"] if ar_rows else None,
        },
        "details": details,
        "created": created,
        "torch_version": torch.__version__,
    }
    validate_hardware_profile(doc)
    return doc


def summary(doc: dict[str, Any]) -> str:
    """The profile in a few human lines."""
    m, d = doc["measured"], doc["details"]
    fit = m["attention_fit"]
    attn = d["attention_prefill"]
    best = max(d["gemm"]["rows"], key=lambda r: r["tflops"])
    lines = [
        (
            f"device: {doc['device']['type']} ({doc['device']['name']}, {d['cpu_threads']} CPU threads), "
            f"dtype {doc['dtype']}, torch {doc['torch_version']}"
        ),
        (
            f"prefill attention (causal SDPA, H={attn['heads']} D={attn['head_dim']}): "
            f"{m['attention_prefill_tflops']:.4g} TFLOP/s at S={attn['fit']['max_context']}; "
            f"t_us = {fit['a']:.4g} + {fit['b']:.4g}*S + {fit['c']:.4g}*S^2 (r2 {attn['fit']['r2']:.3f}); "
            f"quadratic share at S={attn['fit']['max_context']}: {100 * fit['quadratic_share_at_max']:.0f}%"
        ),
        f"GEMM: best {m['gemm_tflops']:.4g} TFLOP/s ({best['op']} M={best['m']} K={best['k']} N={best['n']})",
        f"memory copy: {m['hbm_gbps']:.4g} GB/s ({d['copy']['rows'][-1]['mib']} MiB)",
        (
            f"decode KV read: {m['kv_read_gbps']:.4g} GB/s (B={d['kv_read']['rows'][-1]['batch']}, "
            f"L={d['kv_read']['rows'][-1]['kv_length']})"
        ),
    ]
    if m["allreduce_gbps"] is not None:
        lines.append(
            f"all-reduce: {m['allreduce_gbps']:.4g} GB/s bus bandwidth (largest), "
            f"{m['allreduce_latency_us']:.4g} us (smallest), {d['allreduce']['world_size']} processes"
        )
    else:
        lines.append("all-reduce: not measured (run under torchrun with more than one process)")
    return "\n".join(lines)
