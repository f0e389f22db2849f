"""Per-table readers of an nsys export: each returns a *raw* frame (``RAW_COLUMNS``).

A raw frame is one row per event with plain numpy/object columns and ``pkey`` (the process
key ``globalPid >> 24``: hardware/VM id bits plus the OS pid), before it is split into one
event table per (device, process). Every reader returns an empty raw frame when its table
is absent or lacks the columns it needs; ``start``/``end`` are the only columns required.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analyzer.readers.nsys_schema import (
    COPY_KIND,
    DEFAULT_EVENT_CLASS,
    DEFAULT_MEM_KIND,
    DEFAULT_NVTX_DOMAIN_CREATE,
    DEFAULT_NVTX_RANGE_TYPES,
    NsysDb,
    col_or,
    strip_api_version,
)

#: Raw frame columns -> numpy dtype ("object" for strings).
RAW_COLUMNS: dict[str, str] = {
    "ts_ns": "int64",
    "dur_ns": "int64",
    "kind": "object",
    "name": "object",
    "pkey": "int64",  # globalPid >> 24 (pid = pkey & 0xFFFFFF)
    "tid": "int64",  # OS tid for host events, stream for GPU events
    "device": "int64",
    "stream": "int64",
    "correlation": "int64",
    "msg_bytes": "int64",
    "domain": "object",  # NVTX domain name ("" for the default domain and non-NVTX events)
    "graph_id": "int64",  # CUDA graph id (graph-level trace rows, graph kernels), -1
}
GRAPH_TRACE_NAME = "CUDA graph (whole graph, kernels hidden)"
TID_MASK = 0xFFFFFF


def empty_raw() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in RAW_COLUMNS.items()})


def _finish(df: pd.DataFrame, **constants: object) -> pd.DataFrame:
    """Fill constant/missing raw columns, drop rows without times, set dtypes."""
    for col, value in constants.items():
        df[col] = value
    df = df[df["start"].notna() & df["end"].notna()]
    start = df["start"].to_numpy(dtype=np.int64)
    end = df["end"].to_numpy(dtype=np.int64)
    out = {"ts_ns": start, "dur_ns": np.maximum(end - start, 0)}
    defaults = {"kind": "other", "name": "", "domain": ""}
    for col, dt in RAW_COLUMNS.items():
        if col in out:
            continue
        if col in df.columns:
            values = df[col]
            if dt == "int64":
                values = pd.to_numeric(values, errors="coerce").fillna(-1)
            out[col] = values.to_numpy(dtype=dt)
        else:
            fill = defaults.get(col, -1)
            out[col] = np.full(len(df), fill, dtype=dt)
    return pd.DataFrame(out)


def _names(db: NsysDb, ids: pd.Series, fallback: str) -> np.ndarray:
    """Map StringIds ids to strings once per unique id (object array, one per row)."""
    if len(ids) == 0:
        return np.array([], dtype=object)
    codes, uniq = pd.factorize(ids, use_na_sentinel=False)
    if ids.dtype == object and any(isinstance(u, str) for u in uniq):
        names = [u if isinstance(u, str) and u else fallback for u in uniq]  # text columns
    else:
        valid = [u for u in uniq if u is not None and not pd.isna(u)]
        lookup = db.strings(np.asarray(valid))
        names = [
            lookup.get(int(u), fallback) if u is not None and not pd.isna(u) else fallback
            for u in uniq
        ]
    return np.asarray(names, dtype=object)[codes]


def _name_id_expr(cols: tuple[str, ...], candidates: tuple[str, ...]) -> str | None:
    present = [f'"{c}"' for c in candidates if c in cols]
    if not present:
        return None
    return present[0] if len(present) == 1 else f"COALESCE({', '.join(present)})"


# ------------------------------------------------------------------------------ GPU tables


def read_kernels(db: NsysDb) -> pd.DataFrame:
    """CUPTI_ACTIVITY_KIND_KERNEL; names prefer demangledName, then shortName, mangledName."""
    table = "CUPTI_ACTIVITY_KIND_KERNEL"
    cols = db.columns(table)
    if not {"start", "end"} <= set(cols):
        return empty_raw()
    name_expr = _name_id_expr(cols, ("demangledName", "shortName", "mangledName")) or "NULL"
    sql = (
        f"SELECT start, end, {col_or(cols, 'deviceId', '0', 'device')}, "
        f"{col_or(cols, 'streamId', '-1', 'stream')}, "
        f"{col_or(cols, 'correlationId', '-1', 'correlation')}, "
        f"{col_or(cols, 'globalPid', '0', 'gpid')}, {name_expr} AS name_id, "
        f"{col_or(cols, 'graphId', '-1', 'graph_id')} FROM {table}"
    )
    df = db.query_frame(
        sql, ["start", "end", "device", "stream", "correlation", "gpid", "name_id", "graph_id"]
    )
    df["name"] = _names(db, df["name_id"], "<unnamed kernel>")
    return _gpu_finish(df, kind="kernel")


def _gpu_finish(df: pd.DataFrame, **constants: object) -> pd.DataFrame:
    df["pkey"] = pd.to_numeric(df["gpid"]).fillna(0).to_numpy(dtype=np.int64) >> 24
    df["tid"] = df["stream"]
    return _finish(df, **constants)


def _mem_labels(db: NsysDb) -> dict[int, str]:
    """Memory-kind labels from ENUM_CUDA_MEM_KIND, or nsys's numbering when it is absent."""
    return {k: lab for k, (_, lab) in db.enum("ENUM_CUDA_MEM_KIND").items()} or DEFAULT_MEM_KIND


def read_memcpy(db: NsysDb) -> pd.DataFrame:
    """CUPTI_ACTIVITY_KIND_MEMCPY as "Memcpy HtoD (Pageable -> Device)" (Kineto's spelling)."""
    table = "CUPTI_ACTIVITY_KIND_MEMCPY"
    cols = db.columns(table)
    if not {"start", "end"} <= set(cols):
        return empty_raw()
    sql = (
        f"SELECT start, end, {col_or(cols, 'deviceId', '0', 'device')}, "
        f"{col_or(cols, 'streamId', '-1', 'stream')}, "
        f"{col_or(cols, 'correlationId', '-1', 'correlation')}, "
        f"{col_or(cols, 'globalPid', '0', 'gpid')}, {col_or(cols, 'bytes', '-1', 'msg_bytes')}, "
        f"{col_or(cols, 'copyKind', 'NULL', 'copy_kind')}, "
        f"{col_or(cols, 'srcKind', 'NULL', 'src_kind')}, "
        f"{col_or(cols, 'dstKind', 'NULL', 'dst_kind')}, "
        f"{col_or(cols, 'graphNodeId', 'NULL', 'graph_node')} FROM {table}"
    )
    df = db.query_frame(
        sql,
        [
            "start",
            "end",
            "device",
            "stream",
            "correlation",
            "gpid",
            "msg_bytes",
            "copy_kind",
            "src_kind",
            "dst_kind",
            "graph_node",
        ],
    )
    copy_label = {
        **{
            k: n.removeprefix("CUDA_MEMCPY_KIND_")
            for k, (n, _) in db.enum("ENUM_CUDA_MEMCPY_OPER").items()
        },
        **COPY_KIND,
    }
    mem_label = _mem_labels(db)
    keys = df[["copy_kind", "src_kind", "dst_kind"]].astype(object)
    keys = keys.where(keys.notna(), None)
    combos = list(zip(keys["copy_kind"], keys["src_kind"], keys["dst_kind"]))
    codes, uniq = pd.factorize(pd.Series(combos, dtype=object), use_na_sentinel=False)
    names = []
    for ck, sk, dk in uniq:
        base = "Memcpy " + (copy_label.get(int(ck), f"kind{ck}") if ck is not None else "")
        if sk is not None and dk is not None:
            base += f" ({mem_label.get(int(sk), 'Unknown')} -> {mem_label.get(int(dk), 'Unknown')})"
        names.append(base.strip())
    df["name"] = np.asarray(names, dtype=object)[codes] if len(df) else df["copy_kind"]
    return _gpu_finish(df, kind="memcpy")


def read_memset(db: NsysDb) -> pd.DataFrame:
    """CUPTI_ACTIVITY_KIND_MEMSET as "Memset (Device)"."""
    table = "CUPTI_ACTIVITY_KIND_MEMSET"
    cols = db.columns(table)
    if not {"start", "end"} <= set(cols):
        return empty_raw()
    sql = (
        f"SELECT start, end, {col_or(cols, 'deviceId', '0', 'device')}, "
        f"{col_or(cols, 'streamId', '-1', 'stream')}, "
        f"{col_or(cols, 'correlationId', '-1', 'correlation')}, "
        f"{col_or(cols, 'globalPid', '0', 'gpid')}, {col_or(cols, 'bytes', '-1', 'msg_bytes')}, "
        f"{col_or(cols, 'memKind', 'NULL', 'mem_kind')} FROM {table}"
    )
    df = db.query_frame(
        sql, ["start", "end", "device", "stream", "correlation", "gpid", "msg_bytes", "mem_kind"]
    )
    mem_label = _mem_labels(db)
    kinds = df["mem_kind"].astype(object)
    codes, uniq = pd.factorize(kinds.where(kinds.notna(), None), use_na_sentinel=False)
    names = [
        f"Memset ({mem_label.get(int(k), 'Unknown')})" if k is not None else "Memset" for k in uniq
    ]
    df["name"] = np.asarray(names, dtype=object)[codes] if len(df) else kinds
    return _gpu_finish(df, kind="memset")


def read_graph_trace(db: NsysDb) -> pd.DataFrame:
    """CUPTI_ACTIVITY_KIND_GRAPH_TRACE (``--cuda-graph-trace=graph``): one row per graph launch.

    The kernels inside the graph are not in the export; each launch becomes one ``kernel``
    event named ``GRAPH_TRACE_NAME`` with ``graph_id`` set, so it counts as GPU busy time.
    """
    table = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"
    cols = db.columns(table)
    if not {"start", "end"} <= set(cols):
        return empty_raw()
    sql = (
        f"SELECT start, end, {col_or(cols, 'deviceId', '0', 'device')}, "
        f"{col_or(cols, 'streamId', '-1', 'stream')}, "
        f"{col_or(cols, 'correlationId', '-1', 'correlation')}, "
        f"{col_or(cols, 'globalPid', '0', 'gpid')}, {col_or(cols, 'graphId', '-1', 'graph_id')} "
        f"FROM {table} WHERE NOT (start = 0 AND end = 0)"  # 0/0: no timestamps collected
    )
    df = db.query_frame(
        sql, ["start", "end", "device", "stream", "correlation", "gpid", "graph_id"]
    )
    return _gpu_finish(df, kind="kernel", name=GRAPH_TRACE_NAME)


# ------------------------------------------------------------------------------ host tables


def _event_class_kinds(db: NsysDb) -> dict[int, str]:
    enum = db.enum("ENUM_NSYS_EVENT_CLASS")
    if not enum:
        return dict(DEFAULT_EVENT_CLASS)
    out: dict[int, str] = {}
    for k, (name, _) in enum.items():
        if name.endswith("_CUDA_RUNTIME"):
            out[k] = "cuda_runtime"
        elif name.endswith("_CUDA_DRIVER"):
            out[k] = "cuda_driver"
        elif "CUDABACKTRACE" in name:
            out[k] = "backtrace"
    return out


def read_cuda_api(db: NsysDb) -> pd.DataFrame:
    """CUDA runtime and driver API calls (``CUPTI_ACTIVITY_KIND_RUNTIME`` / ``_DRIVER``).

    ``eventClass`` tells runtime from driver calls. nsys 2022 also stores a second,
    "CUDA backtrace" copy of slow calls (eventClass 67, same correlation id): those copies
    are dropped when the real call is present. Names lose their ``_v<digits>`` suffix.
    """
    parts = []
    class_kind = _event_class_kinds(db)
    for table, default_kind in (
        ("CUPTI_ACTIVITY_KIND_RUNTIME", "cuda_runtime"),
        ("CUPTI_ACTIVITY_KIND_DRIVER", "cuda_driver"),
    ):
        cols = db.columns(table)
        if not {"start", "end"} <= set(cols):
            continue
        name_expr = _name_id_expr(cols, ("nameId", "name")) or "NULL"
        sql = (
            f"SELECT start, end, {col_or(cols, 'globalTid', '0', 'gtid')}, "
            f"{col_or(cols, 'correlationId', '-1', 'correlation')}, {name_expr} AS name_id, "
            f"{col_or(cols, 'eventClass', 'NULL', 'event_class')} FROM {table}"
        )
        df = db.query_frame(sql, ["start", "end", "gtid", "correlation", "name_id", "event_class"])
        ec = pd.to_numeric(df["event_class"], errors="coerce")
        df["kind"] = ec.map(class_kind).fillna(default_kind).to_numpy(dtype=object)
        parts.append(df)
    if not parts:
        return empty_raw()
    df = pd.concat(parts, ignore_index=True)
    df["gtid"] = pd.to_numeric(df["gtid"]).fillna(0).astype("int64")
    df["correlation"] = pd.to_numeric(df["correlation"]).fillna(-1).astype("int64")
    back = (df["kind"] == "backtrace").to_numpy()
    if back.any():
        real = df.loc[~back, ["gtid", "correlation"]]
        twin = pd.MultiIndex.from_frame(df.loc[back, ["gtid", "correlation"]]).isin(
            pd.MultiIndex.from_frame(real)
        )
        drop_idx = df.index[back][twin]
        df = df.drop(index=drop_idx)
        df.loc[df["kind"] == "backtrace", "kind"] = "cuda_runtime"
    raw = _names(db, df["name_id"], "<unnamed CUDA API>")
    codes, uniq = pd.factorize(pd.Series(raw, dtype=object))
    df["name"] = (
        np.asarray([strip_api_version(u) for u in uniq], dtype=object)[codes] if len(df) else raw
    )
    gtids = df["gtid"].to_numpy(dtype=np.int64)
    df["pkey"] = gtids >> 24
    df["tid"] = gtids & TID_MASK
    return _finish(df)


def nvtx_type_ids(db: NsysDb) -> tuple[tuple[int, ...], int]:
    """(range event types, domain-create event type) from ENUM_NSYS_EVENT_TYPE or defaults."""
    enum = db.enum("ENUM_NSYS_EVENT_TYPE")
    if not enum:
        return DEFAULT_NVTX_RANGE_TYPES, DEFAULT_NVTX_DOMAIN_CREATE
    wanted = {"NvtxPushPopRange", "NvtxStartEndRange", "NvtxtPushPopRange", "NvtxtStartEndRange"}
    ranges = tuple(sorted(k for k, (n, _) in enum.items() if n in wanted))
    create = [k for k, (n, _) in enum.items() if n == "NvtxDomainCreate"]
    return ranges or DEFAULT_NVTX_RANGE_TYPES, create[0] if create else DEFAULT_NVTX_DOMAIN_CREATE


def read_nvtx(db: NsysDb) -> pd.DataFrame:
    """NVTX push/pop and start/end ranges as ``user_annotation`` with their domain name.

    Text is ``COALESCE(StringIds.value, text)``; domain names come from the
    ``NvtxDomainCreate`` rows (per process). A range in a domain whose creation fell outside
    the capture gets ``domain`` = ``"domain <id>"``; the default domain is ``""``.
    """
    table = "NVTX_EVENTS"
    cols = db.columns(table)
    if not {"start", "end", "eventType"} <= set(cols):
        return empty_raw()
    ranges, create = nvtx_type_ids(db)
    join = (
        "LEFT JOIN StringIds s ON s.id = n.textId"
        if ("textId" in cols and db.has("StringIds"))
        else ""
    )
    text_parts = (["s.value"] if join else []) + (["n.text"] if "text" in cols else [])
    text = f"COALESCE({', '.join(text_parts)}, '')" if text_parts else "''"
    dom = 'n."domainId"' if "domainId" in cols else "0"
    gtid = 'n."globalTid"' if "globalTid" in cols else "NULL"
    in_list = ",".join(str(int(t)) for t in ranges)
    sql = (
        f"SELECT n.start, n.end, {gtid} AS gtid, {dom} AS domain_id, {text} AS text "
        f"FROM {table} n {join} WHERE n.eventType IN ({in_list}) "
        f"AND n.end IS NOT NULL AND {gtid} IS NOT NULL"
    )
    df = db.query_frame(sql, ["start", "end", "gtid", "domain_id", "text"])
    if df.empty:
        return empty_raw()
    gtids = pd.to_numeric(df["gtid"]).to_numpy(dtype=np.int64)
    df["pkey"] = gtids >> 24
    df["tid"] = gtids & TID_MASK
    df["domain_id"] = pd.to_numeric(df["domain_id"]).fillna(0).astype("int64")
    df["domain"] = _domain_names(db, df, create, join, text, gtid, dom)
    df["name"] = df["text"].astype(object)
    return _finish(df, kind="user_annotation")


def _domain_names(
    db: NsysDb, df: pd.DataFrame, create: int, join: str, text: str, gtid: str, dom: str
) -> np.ndarray:
    sql = (
        f"SELECT {gtid} AS gtid, {dom} AS domain_id, {text} AS text FROM NVTX_EVENTS n "
        f"{join} WHERE n.eventType = {int(create)}"
    )
    made = db.query_frame(sql, ["gtid", "domain_id", "text"])
    by_proc: dict[tuple[int, int], str] = {}
    by_id: dict[int, str] = {}
    for g, d, t in made.itertuples(index=False):
        if d is None or not t:
            continue
        if g is not None:
            by_proc[(int(g) >> 24, int(d))] = str(t)
        by_id.setdefault(int(d), str(t))
    pairs = pd.MultiIndex.from_arrays([df["pkey"], df["domain_id"]])
    codes, uniq = pd.factorize(pairs)
    names = []
    for pkey, did in uniq:
        if did == 0:
            names.append("")
        else:
            names.append(by_proc.get((pkey, did), by_id.get(did, f"domain {did}")))
    return np.asarray(names, dtype=object)[codes]
