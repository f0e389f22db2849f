"""Write a simulated scenario as SGLang-named Kineto files plus ``ground_truth.json``.

File names follow SGLang's profiler (python/sglang/srt/utils/profile_utils.py,
``_ProfilerTorch.stop``): ``<profile_id>-TP-<tp>[-DP-<dp>][-PP-<pp>][-EP-<ep>]<suffix>
.trace.json.gz``, the suffix being the stage (``-EXTEND``/``-DECODE``) with
``profile_by_stage``. Timestamps are float µs with ns fractions, as Kineto writes them.
Output is deterministic: gzip without a timestamp, keys in a fixed order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from . import engine
from .engine import HostEvent, Placed, RankTimeline
from .spec import Scenario
from .truth import measure

GENERATOR = "analyzer.synthetic (synthetic SGLang trace generator; not a real profile)"
HOST_PID_BASE = 4_000_000
BASE_TIME_NS = 1_767_225_600_000_000_000


def trace_filename(s: Scenario, tp_rank: int, pp_rank: int | None, stage: str | None) -> str:
    parts = [s.profile_id, f"TP-{tp_rank}"]
    if s.pp_size > 1 and pp_rank is not None:
        parts.append(f"PP-{pp_rank}")
    return "-".join(parts) + (f"-{stage}" if stage else "") + ".trace.json.gz"


def _us(ns: int) -> float:
    return ns / 1000


def _pg_config(s: Scenario) -> list[dict[str, Any]]:
    world = list(range(len(s.ranks)))
    cfg = [{"pg_name": "0", "pg_desc": "default_pg", "backend_config": "cuda:nccl",
            "pg_size": len(world), "ranks": world},
           {"pg_name": "1", "pg_desc": "undefined", "backend_config": "cpu:gloo,cuda:gloo",
            "pg_size": len(world), "ranks": world}]
    return cfg


def _distributed_info(s: Scenario, rank: int) -> dict[str, Any]:
    cfg = _pg_config(s)
    # TP group of this rank (nccl + its gloo twin), then the PP group if any
    tp0 = (rank // s.tp_size) * s.tp_size
    tp = list(range(tp0, tp0 + s.tp_size))
    cfg.append({"pg_name": "2", "pg_desc": "undefined", "backend_config": "cuda:nccl",
                "pg_size": len(tp), "ranks": tp})
    cfg.append({"pg_name": "3", "pg_desc": "undefined", "backend_config": "cpu:gloo,cuda:gloo",
                "pg_size": len(tp), "ranks": tp})
    if s.pp_size > 1:
        pp = [rank % s.tp_size + i * s.tp_size for i in range(s.pp_size)]
        cfg.append({"pg_name": "4", "pg_desc": "undefined", "backend_config": "cuda:nccl",
                    "pg_size": len(pp), "ranks": pp})
    return {"backend": "nccl", "rank": rank, "world_size": len(s.ranks), "pg_count": len(cfg),
            "pg_config": cfg, "nccl_version": "2.27.3"}


def _host_event(e: HostEvent, pid: int, idx: int) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if e.cat == "python_function":
        args = {"Python parent id": 0, **e.args, "Ev Idx": idx}
    else:
        if e.external_id >= 0:
            args["External id"] = e.external_id
        if e.cat in ("user_annotation", "cpu_op"):
            args["Record function id"] = 0
        args.update(e.args)
        if e.correlation >= 0:
            args["correlation"] = e.correlation
        if e.cat != "cuda_runtime":
            args["Ev Idx"] = idx
    return {"ph": "X", "cat": e.cat, "name": e.name, "pid": pid, "tid": pid,
            "ts": _us(e.start), "dur": _us(e.dur), "args": args}


def _gpu_event(p: Placed, device: int) -> dict[str, Any]:
    k = p.spec
    args: dict[str, Any] = {"External id": p.external_id, "device": device, "context": 1,
                            "stream": k.stream, "correlation": p.correlation}
    if k.kind == "kernel":
        args.update({"registers per thread": 128, "shared memory": 0, "grid": list(k.grid),
                     "block": list(k.block)})
        if k.comm is not None and k.comm.with_args:
            args.update(engine.comm_args(k.comm))
        cat = "kernel"
    else:
        dur_s = max(1, p.end - p.start) / 1e9
        args.update({"bytes": k.nbytes, "memory bandwidth (GB/s)": round(k.nbytes / dur_s / 1e9,
                                                                           6)})
        cat = "gpu_memcpy" if k.kind == "memcpy" else "gpu_memset"
    return {"ph": "X", "cat": cat, "name": k.name, "pid": device, "tid": k.stream,
            "ts": _us(p.start), "dur": _us(p.end - p.start), "args": args}


def _meta(pid: int, labels: str, name: str, tids: list[tuple[int, str]], ts: float) -> list[dict]:
    out: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "ts": ts, "pid": pid, "tid": 0,
         "args": {"name": name}},
        {"name": "process_labels", "ph": "M", "ts": ts, "pid": pid, "tid": 0,
         "args": {"labels": labels}},
    ]
    for tid, tname in tids:
        out.append({"name": "thread_name", "ph": "M", "ts": ts, "pid": pid, "tid": tid,
                    "args": {"name": tname}})
    return out


def build_trace(s: Scenario, tl: RankTimeline, steps: list[int], stage: str | None,
                n_devices: int) -> dict[str, Any]:
    """The Kineto document of one rank (restricted to ``steps`` for stage-split files)."""
    rs = tl.spec
    pid = HOST_PID_BASE + rs.rank * 17
    dev = rs.device
    keep = set(steps)
    recs = [tl.steps[i] for i in steps]
    lo = min(r.host_start for r in recs)
    hi = max(r.host_end for r in recs)
    gpu = [p for p in tl.gpu if p.step in keep]
    host = [h for h in tl.host if lo <= h.start < hi]
    events: list[dict[str, Any]] = []
    t0 = _us(lo)
    streams = sorted({p.spec.stream for p in gpu})
    events += _meta(pid, "CPU", "python3", [(pid, f"thread {pid} (python3)")], t0)
    events += _meta(dev, f"GPU {dev}", "python3", [(st, f"stream {st} ") for st in streams], t0)
    for i, h in enumerate(host):
        events.append(_host_event(h, pid, i))
    ann = {h.external_id: h for h in host if h.name.startswith("step[")}
    for r in recs:
        h = ann.get(r.annotation_ext)
        if h is not None:
            events.append({"ph": "X", "cat": "gpu_user_annotation", "name": h.name, "pid": dev,
                           "tid": streams[0], "ts": _us(r.gpu_start),
                           "dur": _us(r.gpu_end - r.gpu_start),
                           "args": {"External id": h.external_id}})
    flows_s: set[int] = set()
    for p in gpu:
        events.append(_gpu_event(p, dev))
        if p.correlation not in flows_s:
            flows_s.add(p.correlation)
            events.append({"ph": "s", "id": p.correlation, "pid": pid, "tid": pid,
                           "ts": _us(tl.launches[p.correlation]), "cat": "ac2g",
                           "name": "ac2g"})
        events.append({"ph": "f", "id": p.correlation, "pid": dev, "tid": p.spec.stream,
                       "ts": _us(p.start), "cat": "ac2g", "name": "ac2g", "bp": "e"})
    trace_id = hashlib.sha1(f"{s.name}/{s.seed}/{rs.rank}/{stage}".encode()).hexdigest()
    return {
        "schemaVersion": 1,
        "deviceProperties": [s.gpu.device_properties(i) for i in range(n_devices)],
        "distributedInfo": _distributed_info(s, rs.rank),
        "cuda_runtime_version": 12080,
        "cuda_driver_version": 12080,
        "cupti_version": 26,
        "with_stack": 1,
        "record_shapes": 0,
        "trace_id": trace_id[:32].upper(),
        "displayTimeUnit": "ms",
        "baseTimeNanoseconds": BASE_TIME_NS,
        "synthetic": True,
        "generator": GENERATOR,
        "scenario": s.name,
        "seed": s.seed,
        "traceEvents": events,
        "traceName": f"/tmp/sglang_profile/{trace_filename(s, rs.tp_rank, rs.pp_rank, stage)}",
    }


def _dump_gz(obj: Any, path: Path) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    path.write_bytes(buf.getvalue())


def write_scenario(s: Scenario, out_dir: Path | str) -> dict[str, Any]:
    """Simulate ``s``, write its trace files, server_args.json and ground_truth.json.

    Returns the ground truth (also written to ``out_dir/ground_truth.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timelines = engine.simulate(s)
    n_devices = max(8, max(rs.device for rs in s.ranks) + 1) if len(s.ranks) > 1 else 1
    files: list[dict[str, Any]] = []
    ranks: list[dict[str, Any]] = []
    for tl in timelines:
        rs = tl.spec
        all_steps = list(range(len(tl.steps)))
        groups: list[tuple[str | None, list[int]]] = [(None, all_steps)]
        if s.stage_split and rs.stage_of_step:
            groups = [(st, [i for i in all_steps if rs.stage_of_step[i] == st])
                      for st in ("EXTEND", "DECODE")]
            groups = [g for g in groups if g[1]]
        per_file: dict[str, Any] = {}
        for stage, steps in groups:
            name = trace_filename(s, rs.tp_rank, rs.pp_rank, stage)
            doc = build_trace(s, tl, steps, stage, n_devices)
            _dump_gz(doc, out / name)  # size depends on zlib: not part of the truth
            files.append({"path": name, "rank": rs.rank, "tp_rank": rs.tp_rank,
                          "pp_rank": rs.pp_rank, "stage": stage})
            if stage:
                per_file[stage] = measure(tl, [p for p in tl.gpu if p.step in set(steps)],
                                          steps)
        figures = measure(tl, tl.gpu, all_steps)
        entry = {"rank": rs.rank, "tp_rank": rs.tp_rank, "pp_rank": rs.pp_rank,
                 "device": rs.device, "gpu": s.gpu.name, **figures}
        if per_file:
            entry["stages"] = per_file
        ranks.append(entry)
    if s.server_args is not None:
        (out / "server_args.json").write_text(json.dumps(s.server_args, indent=2) + "\n")
    truth = {
        "synthetic": True,
        "generator": GENERATOR,
        "scenario": s.name,
        "description": s.description,
        "seed": s.seed,
        "params": s.params,
        "profile_id": s.profile_id,
        "gpu": s.gpu.name,
        "hbm_bytes_per_s": s.gpu.hbm_bytes_per_s,
        "model": s.model.path,
        "kv_bytes_per_token": s.model.kv_bytes_per_token(),
        "tp_size": s.tp_size,
        "pp_size": s.pp_size,
        "stage_split": s.stage_split,
        "expected_top_finding": s.expected_top_finding,
        "straggler_rank": s.straggler_rank,
        "notes": s.notes,
        "accounting": ("wall = first..last GPU activity; busy = union of kernel/memcpy/memset; "
                       "categories = union per category; attention kernels take their step's "
                       "phase (DECODE -> attention_decode, else attention_prefill); "
                       "communication exposed = comm union minus union of other activity; "
                       "wait = time in a collective beyond its transfer; stage-split ranks: "
                       "top-level figures span both files, 'stages' has each file alone"),
        "files": files,
        "ranks": ranks,
    }
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth
