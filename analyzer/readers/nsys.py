"""Nsight Systems reader: ``nsys export --type sqlite`` files (and ``.nsys-rep``) -> ``Trace``s.

One report becomes one ``Trace`` per (GPU device, process) pair that has GPU activity
(kernels, memcpy, memset, whole-graph launches); the CUDA API calls and NVTX ranges of a
process go with its device's trace (a process driving several devices has its host threads
split by the device their launches reached). Ranks are numbered by (device, pid).

>>> traces = read_nsys(Path("sglang_tp2.sqlite"))                        # doctest: +SKIP
>>> traces = read_nsys_many([Path("node0.nsys-rep"), Path("node1.nsys-rep")])  # doctest: +SKIP

Event-table conventions (see docs/nsys.md): times are int64 ns on the report's clock
(``read_nsys``) or on a clock shared by all reports (``read_nsys_many``, zero at the earliest
capture start); ``metadata["clock_zero_utc_ns"]`` is the UTC epoch ns of ``ts_ns == 0``.
GPU events use ``pid`` = device index and ``tid`` = stream, as Kineto does. Extra columns:
``domain`` (NVTX domain name, "" otherwise) and ``graph_id`` (CUDA graph id or -1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analyzer.model import (
    EVENT_COLUMNS,
    KINDS,
    BadInputError,
    DeviceInfo,
    RankInfo,
    SourceFile,
    Trace,
    validate_event_table,
)
from analyzer.readers.nsys_export import export_report, is_report
from analyzer.readers.nsys_schema import NsysDb
from analyzer.readers.nsys_tables import (
    GRAPH_TRACE_NAME,
    TID_MASK,
    empty_raw,
    read_cuda_api,
    read_graph_trace,
    read_kernels,
    read_memcpy,
    read_memset,
    read_nvtx,
)

__all__ = ["GRAPH_TRACE_NAME", "GRAPH_TRACE_WARNING", "read_nsys", "read_nsys_many"]

GPU_KINDS = ("kernel", "memcpy", "memset")
GRAPH_TRACE_WARNING = (
    "nsys traced CUDA graphs as whole graphs (--cuda-graph-trace=graph): {n} graph launches "
    "({ms:.3f} ms of GPU time) are counted as busy time under the kernel name "
    f"'{GRAPH_TRACE_NAME}', but the kernels inside them are hidden, so their categories "
    "are unknown. Capture again with `nsys profile --cuda-graph-trace=node ...` to see them."
)


# ------------------------------------------------------------------------------ public API


def read_nsys(path: Path | str) -> list[Trace]:
    """Read one Nsight Systems SQLite export (or ``.nsys-rep``) into one Trace per rank.

    Raises ``BadInputError`` for a file that is not an nsys export, is damaged, or has no
    CUDA GPU activity; for an ``.nsys-rep`` when ``nsys`` is not on PATH.
    """
    return _read_report(Path(path)).traces


def read_nsys_many(paths: Iterable[Path | str]) -> list[Trace]:
    """Read several reports of one job (e.g. one per node) onto a common clock.

    Each report's timestamps are shifted by its capture start
    (``TARGET_INFO_SESSION_START_TIME.utcEpochNs``) so that ``ts_ns == 0`` is the earliest
    capture start of all (``metadata["clock_zero_utc_ns"]``, UTC epoch ns); ranks are numbered
    consecutively in the order of ``paths``. A report without a session start time is left
    unshifted, with a warning.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    reports = [_read_report(p) for p in paths]
    starts = [r.start_utc_ns for r in reports if r.start_utc_ns is not None]
    common = min(starts) if starts else None
    profile_id = _joint_profile_id(paths)
    out: list[Trace] = []
    world = sum(len(r.traces) for r in reports)
    for rep, path in zip(reports, paths):
        aligned = common is not None and rep.zero_utc_ns is not None
        shift = rep.zero_utc_ns - common if aligned else 0  # type: ignore[operator]
        for t in rep.traces:
            events = t.events
            if shift:
                events = events.copy()
                events["ts_ns"] = events["ts_ns"].to_numpy() + np.int64(shift)
            warnings = t.warnings
            if not aligned and len(paths) > 1:
                note = (
                    f"{path.name} has no TARGET_INFO_SESSION_START_TIME: its clock "
                    "is not aligned with the other reports"
                )
                warnings += (note,)
            meta = dict(t.metadata) | {
                "clock_zero_utc_ns": common if aligned else t.metadata["clock_zero_utc_ns"],
                "clock_shift_ns": shift,
            }
            rank = RankInfo(
                rank=len(out), rank_source="nsys", world_size=world, profile_id=profile_id
            )
            out.append(
                Trace(
                    rank=rank,
                    events=events,
                    sources=t.sources,
                    devices=t.devices,
                    metadata=meta,
                    warnings=warnings,
                )
            )
    return out


# ------------------------------------------------------------------------------ one report


@dataclass(frozen=True)
class _Report:
    traces: list[Trace]
    zero_utc_ns: int | None  # UTC epoch ns of the report's ts_ns == 0
    start_utc_ns: int | None  # UTC epoch ns of the capture start


def _read_report(path: Path) -> _Report:
    sqlite_path = export_report(path) if is_report(path) else path
    db = NsysDb.open(sqlite_path)
    try:
        return _Report(_build(db, path), db.clock_zero_utc_ns(), db.session_start_utc_ns())
    finally:
        db.close()


def _build(db: NsysDb, source: Path) -> list[Trace]:
    gpu = _concat([read_kernels(db), read_memcpy(db), read_memset(db), read_graph_trace(db)])
    if gpu.empty:
        raise BadInputError(
            f"{source} has no CUDA GPU activity (no kernel, memcpy, memset or graph rows); "
            "capture with `nsys profile -t cuda,nvtx ...`"
        )
    host = _concat([read_cuda_api(db), read_nvtx(db)])
    host = host[host["pkey"].isin(gpu["pkey"].unique())]
    host_device, split_procs = _assign_host_devices(gpu, host)
    host = host.assign(_dev=host_device)
    gpu = gpu.assign(_dev=gpu["device"].to_numpy())
    allev = _concat([gpu, host])

    pairs = (
        gpu[["device", "pkey"]]
        .drop_duplicates()
        .assign(pid=lambda d: d["pkey"] & TID_MASK)
        .sort_values(["device", "pid", "pkey"])
        .to_numpy()
    )
    devices = _device_info(db)
    proc_names = _process_names(db)
    meta = db.meta()
    capture = db.capture_meta()
    base_meta = {
        "format": "nsys",
        "nsys_version": meta.get("EXPORT_PRODUCT_VERSION"),
        "export_schema_version": meta.get("EXPORT_SCHEMA_VERSION"),
        "sqlite_path": str(db.path),
        "clock_zero_utc_ns": db.clock_zero_utc_ns(),
        "cuda_graph_trace_mode": capture.get("CUDA_GRAPH_TRACE_OPTIONS:MODE"),
        "hostname": capture.get("Hostname") or _system_env(db, "Hostname"),
    }
    groups = {key: idx for key, idx in allev.groupby(["_dev", "pkey"], sort=False).indices.items()}
    traces = []
    for rank, (dev, pkey, pid) in enumerate(pairs):
        raw = allev.iloc[groups[(dev, pkey)]]
        warnings: list[str] = []
        graph = raw[raw["name"].to_numpy() == GRAPH_TRACE_NAME]
        if len(graph):
            warnings.append(
                GRAPH_TRACE_WARNING.format(n=len(graph), ms=graph["dur_ns"].sum() / 1e6)
            )
        if pkey in split_procs:
            warnings.append(
                f"process {pid} drove several GPUs {split_procs[pkey]}: its host "
                "threads were assigned to the device their launches reached"
            )
        info = devices.get(int(dev), DeviceInfo(index=int(dev)))
        md = base_meta | {
            "pid": int(pid),
            "process_name": proc_names.get(int(pkey), ""),
            "device_id": int(dev),
        }
        traces.append(
            Trace(
                rank=RankInfo(
                    rank=rank, rank_source="nsys", world_size=len(pairs), profile_id=source.stem
                ),
                events=_event_table(raw),
                sources=(SourceFile(path=str(source), format="nsys"),),
                devices=(info,),
                metadata=md,
                warnings=tuple(warnings),
            )
        )
    return traces


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_raw()


def _assign_host_devices(
    gpu: pd.DataFrame, host: pd.DataFrame
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Device each host event goes with: the process's device, or for a process that drove
    several devices, the device most of its thread's correlated launches reached (else the
    process's busiest device)."""
    per_proc = gpu.groupby(["pkey", "device"]).size().rename("n").reset_index()
    per_proc = per_proc.sort_values(["pkey", "n", "device"], ascending=[True, False, True])
    main = per_proc.drop_duplicates("pkey").set_index("pkey")["device"]
    out = host["pkey"].map(main).to_numpy(dtype=np.int64, copy=True)
    counts = per_proc.groupby("pkey")["device"].apply(lambda s: sorted(int(d) for d in s))
    split = {int(k): v for k, v in counts.items() if len(v) > 1}
    if not split or host.empty:
        return out, split
    multi = host["pkey"].isin(list(split)).to_numpy()
    launches = host.loc[
        multi & (host["correlation"] >= 0).to_numpy(), ["pkey", "tid", "correlation"]
    ]
    hits = launches.merge(
        gpu.loc[gpu["correlation"] >= 0, ["pkey", "correlation", "device"]],
        on=["pkey", "correlation"],
    )
    if hits.empty:
        return out, split
    best = (
        hits.groupby(["pkey", "tid", "device"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["pkey", "tid", "n", "device"], ascending=[True, True, False, True])
        .drop_duplicates(["pkey", "tid"])
    )
    keyed = (
        host[["pkey", "tid"]]
        .reset_index(drop=True)
        .merge(best[["pkey", "tid", "device"]], on=["pkey", "tid"], how="left")
    )
    found = keyed["device"].notna().to_numpy() & multi
    out[found] = keyed["device"].to_numpy()[found].astype(np.int64)
    return out, split


def _event_table(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw frame of one (device, process) -> event table (EVENT_COLUMNS + extras), by time."""
    raw = raw.sort_values("ts_ns", kind="stable")
    n = len(raw)
    kind = raw["kind"].to_numpy(dtype=object)
    is_gpu = np.isin(kind, GPU_KINDS)
    device = raw["device"].to_numpy(dtype=np.int64)
    df = pd.DataFrame(
        {
            "ts_ns": raw["ts_ns"].to_numpy(dtype=np.int64),
            "dur_ns": raw["dur_ns"].to_numpy(dtype=np.int64),
            "kind": pd.Categorical(kind, categories=KINDS),
            "name": pd.Categorical(raw["name"].to_numpy(dtype=object)),
            "pid": np.where(is_gpu, device, raw["pkey"].to_numpy() & TID_MASK).astype(np.int64),
            "tid": raw["tid"].to_numpy(dtype=np.int64),
            "device": np.where(is_gpu, device, -1).astype(np.int32),
            "stream": np.where(is_gpu, raw["stream"].to_numpy(), -1).astype(np.int32),
            "correlation": raw["correlation"].to_numpy(dtype=np.int64),
            "external_id": np.full(n, -1, dtype=np.int64),
            "collective": pd.Categorical(np.full(n, "", dtype=object)),
            "msg_bytes": raw["msg_bytes"].to_numpy(dtype=np.int64),
            "pg_name": pd.Categorical(np.full(n, "", dtype=object)),
            "pg_size": np.full(n, -1, dtype=np.int32),
            "seq": np.full(n, -1, dtype=np.int64),
            "domain": pd.Categorical(raw["domain"].to_numpy(dtype=object)),
            "graph_id": raw["graph_id"].to_numpy(dtype=np.int64),
        }
    )
    assert list(df.columns[: len(EVENT_COLUMNS)]) == list(EVENT_COLUMNS)
    validate_event_table(df)
    return df


# ------------------------------------------------------------------------------ metadata


def _device_info(db: NsysDb) -> dict[int, DeviceInfo]:
    """TARGET_INFO_GPU rows keyed by device id (``id``; ``cuDevice`` when ``id`` is absent)."""
    cols = set(db.columns("TARGET_INFO_GPU"))
    key = "id" if "id" in cols else ("cuDevice" if "cuDevice" in cols else None)
    if key is None:
        return {}
    want = ["name", "totalMemory", "smCount", "computeMajor", "computeMinor", "memoryBandwidth"]
    sel = ", ".join(f'"{c}"' if c in cols else "NULL" for c in want)
    out: dict[int, DeviceInfo] = {}
    for row in db.query_rows(f'SELECT "{key}", {sel} FROM TARGET_INFO_GPU'):
        idx, name, mem, sms, major, minor, bw = row
        if idx is None or int(idx) in out:
            continue
        out[int(idx)] = DeviceInfo(
            index=int(idx),
            name=str(name or ""),
            total_memory_bytes=int(mem) if mem else None,
            num_sms=int(sms) if sms else None,
            compute_capability=f"{major}.{minor}"
            if major is not None and minor is not None
            else None,
            memory_bandwidth_gbps=float(bw) / 1e9 if bw else None,
        )
    return out


def _process_names(db: NsysDb) -> dict[int, str]:
    if not {"globalPid", "name"} <= set(db.columns("PROCESSES")):
        return {}
    return {
        int(g) >> 24: str(n or "")
        for g, n in db.query_rows(
            "SELECT globalPid, name FROM PROCESSES WHERE globalPid IS NOT NULL"
        )
    }


def _system_env(db: NsysDb, name: str) -> str | None:
    if not {"name", "value"} <= set(db.columns("TARGET_INFO_SYSTEM_ENV")):
        return None
    rows = db.query_rows("SELECT value FROM TARGET_INFO_SYSTEM_ENV WHERE name = ? LIMIT 1", (name,))
    return str(rows[0][0]) if rows else None


def _joint_profile_id(paths: Sequence[Path]) -> str:
    stems = [p.stem for p in paths]
    if len(stems) == 1:
        return stems[0]
    prefix = os.path.commonprefix(stems).rstrip("-_.")
    return prefix or "+".join(stems[:3]) + (f"+{len(stems) - 3} more" if len(stems) > 3 else "")
