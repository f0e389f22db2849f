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
    KINDS,
    BadInputError,
    DeviceInfo,
    RankInfo,
    SourceFile,
    Trace,
    validate_event_table,
)
from analyzer.readers.limits import active, refuse, time_problem
from analyzer.readers.nsys_export import export_report, is_report
from analyzer.readers.nsys_schema import NsysDb, as_int64
from analyzer.readers.nsys_tables import (
    GRAPH_TRACE_NAME,
    KIND_CODE,
    TID_MASK,
    Names,
    Raw,
    concat_raw,
    read_cuda_api,
    read_graph_trace,
    read_kernels,
    read_memcpy,
    read_memset,
    read_nvtx,
    take_raw,
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


def _check_rows(source: Path, part: str, raw: Raw, gpu: bool) -> None:
    """Refuse values no real export holds (vectorised): times past 2**62 ns, GPU ids outside
    0..65535, streams outside int32, sizes over 1 PiB. They would wrap in int64/int32."""
    ts, dur = raw["ts_ns"], raw["dur_ns"]
    if ts.size == 0:
        return
    problem = time_problem(ts, dur, whole=True)
    if problem:
        raise BadInputError(f"{source}: {part} rows: {problem}")
    if gpu:
        dev, stream = raw["device"], raw["stream"]
        if int(dev.min()) < -1 or int(dev.max()) > MAX_DEVICE:  # -1: NULL (unknown)
            raise BadInputError(f"{source}: {part} rows with an absurd deviceId "
                                f"({int(dev.min())}..{int(dev.max())})")
        if int(stream.max()) > 2**31 - 1 or int(stream.min()) < -(2**31):
            raise BadInputError(f"{source}: {part} rows with an absurd streamId")
    if int(raw["msg_bytes"].max()) > 1 << 50:
        raise BadInputError(f"{source}: {part} rows with an absurd size in bytes")


def _build(db: NsysDb, source: Path) -> list[Trace]:
    names = Names()
    gpu = concat_raw(
        read(db, names) for read in (read_kernels, read_memcpy, read_memset, read_graph_trace)
    )
    _check_rows(source, "GPU activity", gpu, gpu=True)
    if len(gpu["ts_ns"]) == 0:
        raise BadInputError(
            f"{source} has no CUDA GPU activity (no kernel, memcpy, memset or graph rows); "
            "capture with `nsys profile -t cuda,nvtx ...`"
        )
    host = concat_raw([read_cuda_api(db, names), read_nvtx(db, names)])
    _check_rows(source, "CUDA API / NVTX", host, gpu=False)
    limits = active()
    if len(gpu["ts_ns"]) + len(host["ts_ns"]) > limits.max_events:
        raise refuse(str(source), f"over {limits.max_events:,} events", "max_events",
                     limits.max_events)
    host = take_raw(host, np.isin(host["pkey"], np.unique(gpu["pkey"])))
    host_device, split_procs = _assign_host_devices(gpu, host)

    # one pass: every row gets the index of its (device, process) pair, then one sort by
    # (pair, time) makes each trace a contiguous, time-ordered slice
    pair_keys = np.unique((gpu["device"] << 40) | gpu["pkey"])
    pairs = sorted((int(k >> 40), int(k) & TID_MASK, int(k) & ((1 << 40) - 1)) for k in pair_keys)
    ordered_keys = np.array([(d << 40) | k for d, _, k in pairs], dtype=np.int64)
    allev = concat_raw([gpu, host | {"device": host_device}])  # host rows: device of the trace
    row_keys = (allev["device"] << 40) | allev["pkey"]
    rank_of = np.argsort(ordered_keys)  # ranks go by (device, pid), not by key
    pos = np.searchsorted(ordered_keys[rank_of], row_keys)
    pos = np.minimum(pos, len(ordered_keys) - 1)
    group = np.where(ordered_keys[rank_of][pos] == row_keys, rank_of[pos], len(pairs))
    order = np.lexsort((allev["ts_ns"], group))
    bounds = np.searchsorted(group[order], np.arange(len(pairs) + 1))
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
    graph_code = names.code(GRAPH_TRACE_NAME)
    traces = []
    for rank, (dev, pid, pkey) in enumerate(pairs):
        raw = take_raw(allev, order[bounds[rank] : bounds[rank + 1]])
        warnings: list[str] = []
        graph = raw["name"] == graph_code
        if graph.any():
            ms = raw["dur_ns"][graph].sum() / 1e6
            warnings.append(GRAPH_TRACE_WARNING.format(n=int(graph.sum()), ms=ms))
        if pkey in split_procs:
            warnings.append(
                f"process {pid} drove several GPUs {split_procs[pkey]}: its host "
                "threads were assigned to the device their launches reached"
            )
        md = base_meta | {
            "pid": pid,
            "process_name": proc_names.get(pkey, ""),
            "device_id": dev,
        }
        traces.append(
            Trace(
                rank=RankInfo(
                    rank=rank, rank_source="nsys", world_size=len(pairs), profile_id=source.stem
                ),
                events=_event_table(raw, names),
                sources=(SourceFile(path=str(source), format="nsys"),),
                devices=(devices.get(dev, DeviceInfo(index=dev)),),
                metadata=md,
                warnings=tuple(warnings),
            )
        )
    return traces


def _assign_host_devices(gpu: Raw, host: Raw) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Device each host event goes with: the process's device, or for a process that drove
    several devices, the device most of its thread's correlated launches reached (else the
    process's busiest device)."""
    per_proc = (
        pd.DataFrame({"pkey": gpu["pkey"], "device": gpu["device"]})
        .value_counts()
        .rename("n")
        .reset_index()
        .sort_values(["pkey", "n", "device"], ascending=[True, False, True])
    )
    main = per_proc.drop_duplicates("pkey").set_index("pkey")["device"]
    out = pd.Series(host["pkey"]).map(main).to_numpy(dtype=np.int64, copy=True)
    devs = per_proc.groupby("pkey")["device"].agg(lambda s: sorted(int(d) for d in s))
    split = {int(k): v for k, v in devs.items() if len(v) > 1}
    if not split or len(out) == 0:
        return out, split
    multi = np.isin(host["pkey"], list(split))
    sel = multi & (host["correlation"] >= 0)
    launches = pd.DataFrame(
        {
            "pkey": host["pkey"][sel],
            "tid": host["tid"][sel],
            "correlation": host["correlation"][sel],
        }
    )
    gsel = np.isin(gpu["pkey"], list(split)) & (gpu["correlation"] >= 0)
    targets = pd.DataFrame(
        {
            "pkey": gpu["pkey"][gsel],
            "correlation": gpu["correlation"][gsel],
            "device": gpu["device"][gsel],
        }
    )
    hits = launches.merge(targets, on=["pkey", "correlation"])
    if hits.empty:
        return out, split
    best = (
        hits[["pkey", "tid", "device"]]
        .value_counts()
        .rename("n")
        .reset_index()
        .sort_values(["pkey", "tid", "n", "device"], ascending=[True, True, False, True])
        .drop_duplicates(["pkey", "tid"])
    )
    keyed = pd.DataFrame({"pkey": host["pkey"][multi], "tid": host["tid"][multi]}).merge(
        best[["pkey", "tid", "device"]], on=["pkey", "tid"], how="left"
    )
    dev = keyed["device"].to_numpy(dtype=float)
    found = ~np.isnan(dev)
    idx = np.flatnonzero(multi)[found]
    out[idx] = dev[found].astype(np.int64)
    return out, split


def _event_table(raw: Raw, names: Names) -> pd.DataFrame:
    """Time-ordered raw rows of one (device, process) -> event table (EVENT_COLUMNS + extras)."""
    n = len(raw["ts_ns"])
    kind = raw["kind"]
    is_gpu = np.isin(kind, [KIND_CODE[k] for k in GPU_KINDS])
    device = raw["device"]
    one = np.zeros(n, dtype=np.int8)
    df = pd.DataFrame(
        {
            "ts_ns": raw["ts_ns"],
            "dur_ns": raw["dur_ns"],
            "kind": pd.Categorical.from_codes(kind, categories=list(KINDS)),
            "name": _categorical(raw["name"], names),
            "pid": np.where(is_gpu, device, raw["pkey"] & TID_MASK),
            "tid": raw["tid"],
            "device": np.where(is_gpu, device, -1).astype(np.int32),
            "stream": np.where(is_gpu, raw["stream"], -1).astype(np.int32),
            "correlation": raw["correlation"],
            "external_id": np.full(n, -1, dtype=np.int64),
            "collective": pd.Categorical.from_codes(one, categories=[""]),
            "msg_bytes": raw["msg_bytes"],
            "pg_name": pd.Categorical.from_codes(one, categories=[""]),
            "pg_size": np.full(n, -1, dtype=np.int32),
            "seq": np.full(n, -1, dtype=np.int64),
            "domain": _categorical(raw["domain"], names),
            "graph_id": raw["graph_id"],
        }
    )
    validate_event_table(df)
    return df


def _categorical(codes: np.ndarray, names: Names) -> pd.Categorical:
    """Name codes -> Categorical over the names this trace uses."""
    inverse, uniq = pd.factorize(codes)
    return pd.Categorical.from_codes(inverse, categories=[names.texts[int(u)] for u in uniq])


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
        idx, name, mem, sms, major, minor, bw = (as_int64(v) for v in row[:1]), *row[1:]
        idx = next(idx)
        if idx is None or not 0 <= idx <= MAX_DEVICE or idx in out:
            continue  # a non-numeric or absurd GPU id describes no device of the trace
        mem, sms, bw = (_positive(v) for v in (mem, sms, bw))
        major, minor = as_int64(major), as_int64(minor)
        out[idx] = DeviceInfo(
            index=idx,
            name=_text(name),
            total_memory_bytes=mem,
            num_sms=sms,
            compute_capability=f"{major}.{minor}"
            if major is not None and minor is not None
            else None,
            memory_bandwidth_gbps=bw / 1e9 if bw else None,
        )
    return out


#: largest CUDA device index read (CUPTI numbers devices from 0; 65535 is far past any node)
MAX_DEVICE = 0xFFFF


def _positive(value: object) -> int | None:
    i = as_int64(value)
    return i if i is not None and i > 0 else None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _process_names(db: NsysDb) -> dict[int, str]:
    if not {"globalPid", "name"} <= set(db.columns("PROCESSES")):
        return {}
    out: dict[int, str] = {}
    for g, n in db.query_rows("SELECT globalPid, name FROM PROCESSES WHERE globalPid IS NOT NULL"):
        gpid = as_int64(g)
        if gpid is not None and gpid >= 0:
            out[gpid >> 24] = _text(n)
    return out


def _system_env(db: NsysDb, name: str) -> str | None:
    if not {"name", "value"} <= set(db.columns("TARGET_INFO_SYSTEM_ENV")):
        return None
    rows = db.query_rows("SELECT value FROM TARGET_INFO_SYSTEM_ENV WHERE name = ? LIMIT 1", (name,))
    return _text(rows[0][0]) if rows else None


def _joint_profile_id(paths: Sequence[Path]) -> str:
    stems = [p.stem for p in paths]
    if len(stems) == 1:
        return stems[0]
    prefix = os.path.commonprefix(stems).rstrip("-_.")
    return prefix or "+".join(stems[:3]) + (f"+{len(stems) - 3} more" if len(stems) > 3 else "")
