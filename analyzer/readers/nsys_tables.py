"""Per-table readers of an nsys export: each returns a *raw* frame (``RAW_COLUMNS``).

A raw frame is a dict of equally long int64 numpy arrays, one row per event: strings (event names, NVTX
domains) are interned in a :class:`Names` table shared by the whole report and appear as
codes; ``kind`` is an index into ``KINDS``; ``pkey`` is the process key ``globalPid >> 24``
(hardware/VM id bits plus the OS pid). The frames are split into one event table per
(device, process) by ``analyzer.readers.nsys``. A reader returns an empty raw frame when its
table is absent or lacks ``start``/``end``; other missing columns get sentinels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from analyzer.model import KINDS
from analyzer.readers.nsys_schema import (
    COPY_KIND,
    DEFAULT_EVENT_CLASS,
    DEFAULT_MEM_KIND,
    DEFAULT_NVTX_DOMAIN_CREATE,
    DEFAULT_NVTX_RANGE_TYPES,
    MAX_TIME_NS,
    NsysDb,
    _text,
    as_int64,
    strip_api_version,
)

#: Raw frame columns (all int64).
RAW_COLUMNS: tuple[str, ...] = (
    "ts_ns",
    "dur_ns",
    "kind",  # index into KINDS
    "name",  # code in Names
    "pkey",  # globalPid >> 24 (pid = pkey & 0xFFFFFF)
    "tid",  # OS tid for host events, stream for GPU events
    "device",
    "stream",
    "correlation",
    "msg_bytes",
    "domain",  # code in Names of the NVTX domain name (code 0 = "")
    "graph_id",  # CUDA graph id (whole-graph rows, graph kernels), -1
)
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
GRAPH_TRACE_NAME = "CUDA graph (whole graph, kernels hidden)"
TID_MASK = 0xFFFFFF


class Names:
    """Interned strings of one report: ``code(text)`` and ``texts[code]``; code 0 is ""."""

    def __init__(self) -> None:
        self.texts: list[str] = [""]
        self._index: dict[str, int] = {"": 0}

    def code(self, text: str) -> int:
        hit = self._index.get(text)
        if hit is None:
            hit = self._index[text] = len(self.texts)
            self.texts.append(text)
        return hit

    def codes(self, texts: Iterable[str]) -> np.ndarray:
        """Codes of ``texts`` (each distinct text interned once)."""
        arr = np.fromiter(texts, dtype=object)
        if len(arr) == 0:
            return np.empty(0, dtype=np.int64)
        inverse, uniq = pd.factorize(arr)
        return np.fromiter((self.code(str(t)) for t in uniq), dtype=np.int64)[inverse]


Raw = dict[str, np.ndarray]


def empty_raw() -> Raw:
    return {c: np.empty(0, dtype=np.int64) for c in RAW_COLUMNS}


def concat_raw(parts: Iterable[Raw]) -> Raw:
    parts = [p for p in parts if len(p["ts_ns"])]
    if not parts:
        return empty_raw()
    return {c: np.concatenate([p[c] for p in parts]) for c in RAW_COLUMNS}


def take_raw(raw: Raw, index: np.ndarray) -> Raw:
    """Rows of ``raw`` selected by a boolean mask or an index array."""
    return {c: v[index] for c, v in raw.items()}


def _raw(cols: dict[str, np.ndarray], **constants: int) -> Raw:
    """Raw frame from integer arrays (``start``/``end`` -> ``ts_ns``/``dur_ns``)."""
    n = len(cols["start"])
    lim = MAX_TIME_NS + 1  # clipped only to subtract without wrapping; nsys refuses them
    start, end = np.clip(cols["start"], -lim, lim), np.clip(cols["end"], -lim, lim)
    out = {"ts_ns": cols["start"], "dur_ns": np.maximum(end - start, 0)}
    for col in RAW_COLUMNS[2:]:
        if col in cols:
            out[col] = cols[col]
        else:
            out[col] = np.full(n, constants.get(col, -1), dtype=np.int64)
    return out


def _expr(cols: tuple[str, ...], *candidates: str, default: str = "-1") -> str:
    """SQL expression: the first present column of ``candidates`` (COALESCE'd), else default."""
    present = [f'"{c}"' for c in candidates if c in cols]
    if not present:
        return default
    return present[0] if len(present) == 1 else f"COALESCE({', '.join(present)})"


def _string_codes(
    db: NsysDb,
    names: Names,
    ids: np.ndarray,
    fallback: str,
    transform: Callable[[str], str] | None = None,
) -> np.ndarray:
    """Name codes for StringIds ids (each unique id looked up once; -1/unknown -> fallback)."""
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64)
    inverse, uniq = pd.factorize(ids)
    lookup = db.strings(uniq)
    texts = [lookup.get(int(u)) or fallback for u in uniq]
    if transform is not None:
        texts = [transform(t) for t in texts]
    return names.codes(texts)[inverse]


def _gpu_columns(
    db: NsysDb, table: str, extra: dict[str, str] | None = None, where: str = ""
) -> dict[str, np.ndarray] | None:
    cols = db.columns(table)
    if not {"start", "end"} <= set(cols):
        return None
    exprs = {
        "start": '"start"',
        "end": '"end"',
        "device": _expr(cols, "deviceId", default="0"),
        "stream": _expr(cols, "streamId"),
        "correlation": _expr(cols, "correlationId"),
        "gpid": _expr(cols, "globalPid", default="0"),
    }
    for key, candidates in (extra or {}).items():
        exprs[key] = _expr(cols, *candidates.split(","))
    out = db.int_columns(
        table,
        exprs,
        where='"start" IS NOT NULL AND "end" IS NOT NULL' + (f" AND {where}" if where else ""),
    )
    out["pkey"] = np.maximum(out.pop("gpid"), 0) >> 24
    out["tid"] = out["stream"]
    return out


# ------------------------------------------------------------------------------ GPU tables


def read_kernels(db: NsysDb, names: Names) -> Raw:
    """CUPTI_ACTIVITY_KIND_KERNEL; names prefer demangledName, then shortName, mangledName."""
    cols = _gpu_columns(
        db,
        "CUPTI_ACTIVITY_KIND_KERNEL",
        {
            "demangled": "demangledName",
            "short": "shortName",
            "mangled": "mangledName",
            "graph_id": "graphId",
        },
    )
    if cols is None:
        return empty_raw()
    code = np.zeros(len(cols["start"]), dtype=np.int64)  # 0 = "" (not found yet)
    for key in ("demangled", "short", "mangled"):  # per row: the first id that resolves
        ids = cols.pop(key)
        todo = (code == 0) & (ids >= 0)
        if todo.any():
            code[todo] = _string_codes(db, names, ids[todo], "")
    code[code == 0] = names.code("<unnamed kernel>")
    cols["name"] = code
    return _raw(cols, kind=KIND_CODE["kernel"])


def read_memcpy(db: NsysDb, names: Names) -> Raw:
    """CUPTI_ACTIVITY_KIND_MEMCPY as "Memcpy HtoD (Pageable -> Device)" (Kineto's spelling)."""
    cols = _gpu_columns(
        db,
        "CUPTI_ACTIVITY_KIND_MEMCPY",
        {"msg_bytes": "bytes", "copy": "copyKind", "src": "srcKind", "dst": "dstKind"},
    )
    if cols is None:
        return empty_raw()
    copy_label = {
        k: n.removeprefix("CUDA_MEMCPY_KIND_")
        for k, (n, _) in db.enum("ENUM_CUDA_MEMCPY_OPER").items()
    } | COPY_KIND
    mem_label = _mem_labels(db)
    combo = pd.MultiIndex.from_arrays([cols.pop("copy"), cols.pop("src"), cols.pop("dst")])
    inverse, uniq = combo.factorize()
    texts = []
    for ck, sk, dk in uniq:
        text = "Memcpy" + (f" {copy_label.get(ck, f'kind{ck}')}" if ck >= 0 else "")
        if sk >= 0 and dk >= 0:
            text += f" ({mem_label.get(sk, 'Unknown')} -> {mem_label.get(dk, 'Unknown')})"
        texts.append(text)
    cols["name"] = names.codes(texts)[inverse]
    return _raw(cols, kind=KIND_CODE["memcpy"])


def _mem_labels(db: NsysDb) -> dict[int, str]:
    """Memory-kind labels from ENUM_CUDA_MEM_KIND, or nsys's numbering when it is absent."""
    return {k: lab for k, (_, lab) in db.enum("ENUM_CUDA_MEM_KIND").items()} or DEFAULT_MEM_KIND


def read_memset(db: NsysDb, names: Names) -> Raw:
    """CUPTI_ACTIVITY_KIND_MEMSET as "Memset (Device)"."""
    cols = _gpu_columns(db, "CUPTI_ACTIVITY_KIND_MEMSET", {"msg_bytes": "bytes", "mem": "memKind"})
    if cols is None:
        return empty_raw()
    mem_label = _mem_labels(db)
    uniq, inverse = np.unique(cols.pop("mem"), return_inverse=True)
    texts = [
        f"Memset ({mem_label.get(k, 'Unknown')})" if k >= 0 else "Memset" for k in uniq.tolist()
    ]
    cols["name"] = names.codes(texts)[inverse.reshape(-1)]
    return _raw(cols, kind=KIND_CODE["memset"])


def read_graph_trace(db: NsysDb, names: Names) -> Raw:
    """CUPTI_ACTIVITY_KIND_GRAPH_TRACE (``--cuda-graph-trace=graph``): one row per graph launch.

    The kernels inside the graph are not in the export; each launch becomes one ``kernel``
    event named ``GRAPH_TRACE_NAME`` with ``graph_id`` set, so it counts as GPU busy time.
    Rows with start = end = 0 (no timestamps collected) are skipped.
    """
    cols = _gpu_columns(
        db,
        "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
        {"graph_id": "graphId"},
        where='NOT ("start" = 0 AND "end" = 0)',
    )
    if cols is None:
        return empty_raw()
    return _raw(cols, kind=KIND_CODE["kernel"], name=names.code(GRAPH_TRACE_NAME))


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


def read_cuda_api(db: NsysDb, names: Names) -> Raw:
    """CUDA runtime and driver API calls (``CUPTI_ACTIVITY_KIND_RUNTIME`` / ``_DRIVER``).

    ``eventClass`` tells runtime from driver calls. nsys 2022 also stores a second,
    "CUDA backtrace" copy of slow calls (eventClass 67, same thread and correlation id):
    those copies are dropped when the real call is present. Names lose one trailing
    ``_v<digits>`` (``cudaLaunchKernel_v7000`` -> ``cudaLaunchKernel``).
    """
    class_kind = _event_class_kinds(db)
    frames = []
    for table, default_kind in (
        ("CUPTI_ACTIVITY_KIND_RUNTIME", "cuda_runtime"),
        ("CUPTI_ACTIVITY_KIND_DRIVER", "cuda_driver"),
    ):
        tcols = db.columns(table)
        if not {"start", "end"} <= set(tcols):
            continue
        exprs = {
            "start": '"start"',
            "end": '"end"',
            "gtid": _expr(tcols, "globalTid", default="0"),
            "correlation": _expr(tcols, "correlationId"),
            "name_id": _expr(tcols, "nameId"),
            "event_class": _expr(tcols, "eventClass"),
        }
        cols = db.int_columns(table, exprs, where='"start" IS NOT NULL AND "end" IS NOT NULL')
        if "nameId" not in tcols and "name" in tcols:  # name stored as text
            texts = [
                r[0] or ""
                for r in db.query_rows(
                    f'SELECT "name" FROM "{table}" WHERE "start" IS NOT NULL AND "end" IS NOT NULL '
                    "ORDER BY rowid"
                )
            ]
            cols["name"] = names.codes(strip_api_version(t) for t in texts)
        else:
            cols["name"] = _string_codes(
                db, names, cols["name_id"], "<unnamed CUDA API>", strip_api_version
            )
        ec = cols.pop("event_class")
        kinds = np.full(len(ec), KIND_CODE[default_kind], dtype=np.int64)
        back = np.zeros(len(ec), dtype=bool)
        for cls, kind in class_kind.items():
            hit = ec == cls
            if kind == "backtrace":
                back |= hit
            else:
                kinds[hit] = KIND_CODE[kind]
        cols["kind"] = kinds
        cols["back"] = back
        frames.append(cols)
    if not frames:
        return empty_raw()
    keys = ("start", "end", "gtid", "correlation", "name", "kind", "back")
    df = {k: np.concatenate([f[k] for f in frames]) for k in keys}
    back = df["back"]
    if back.any():  # drop backtrace copies whose real call (same thread, correlation) exists
        real = pd.MultiIndex.from_arrays([df["gtid"][~back], df["correlation"][~back]])
        copies = pd.MultiIndex.from_arrays([df["gtid"][back], df["correlation"][back]])
        keep = np.ones(len(back), dtype=bool)
        keep[np.flatnonzero(back)[copies.isin(real)]] = False
        df = {k: v[keep] for k, v in df.items()}
    gtid = df.pop("gtid")
    df.pop("back")
    df["pkey"] = np.maximum(gtid, 0) >> 24
    df["tid"] = gtid & TID_MASK
    return _raw(df)


def nvtx_type_ids(db: NsysDb) -> tuple[tuple[int, ...], int]:
    """(range event types, domain-create event type) from ENUM_NSYS_EVENT_TYPE or defaults."""
    enum = db.enum("ENUM_NSYS_EVENT_TYPE")
    if not enum:
        return DEFAULT_NVTX_RANGE_TYPES, DEFAULT_NVTX_DOMAIN_CREATE
    wanted = {"NvtxPushPopRange", "NvtxStartEndRange", "NvtxtPushPopRange", "NvtxtStartEndRange"}
    ranges = tuple(sorted(k for k, (n, _) in enum.items() if n in wanted))
    create = [k for k, (n, _) in enum.items() if n == "NvtxDomainCreate"]
    return ranges or DEFAULT_NVTX_RANGE_TYPES, create[0] if create else DEFAULT_NVTX_DOMAIN_CREATE


def read_nvtx(db: NsysDb, names: Names) -> Raw:
    """NVTX push/pop and start/end ranges as ``user_annotation`` with their domain name.

    Text is ``COALESCE(StringIds.value, text)`` (``textId`` resolved through StringIds, else
    the inline ``text``); domain names come from the ``NvtxDomainCreate`` rows (per process).
    A domain whose creation fell outside the capture is named ``"domain <id>"``; the default
    domain is ``""``. Unfinished ranges (no ``end``) and marks are skipped.
    """
    table = "NVTX_EVENTS"
    tcols = db.columns(table)
    if not {"start", "end", "eventType", "globalTid"} <= set(tcols):
        return empty_raw()
    ranges, create = nvtx_type_ids(db)
    where = (
        f'"eventType" IN ({",".join(str(int(t)) for t in ranges)}) '
        'AND "start" IS NOT NULL AND "end" IS NOT NULL AND "globalTid" IS NOT NULL'
    )
    exprs = {
        "rowid": "rowid",
        "start": '"start"',
        "end": '"end"',
        "gtid": '"globalTid"',
        "text_id": _expr(tcols, "textId"),
        "domain_id": _expr(tcols, "domainId", default="0"),
    }
    cols = db.int_columns(table, exprs, where=where)
    if len(cols["start"]) == 0:
        return empty_raw()
    if np.any(np.diff(cols["rowid"]) < 0):  # keep rowid order for the text lookup below
        order = np.argsort(cols["rowid"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    # text: StringIds value when textId resolves, else the inline text column
    text_codes = _string_codes(db, names, cols.pop("text_id"), "")
    if "text" in tcols:
        rows = db.query_rows(
            f'SELECT rowid, "text" FROM "{table}" WHERE {where} AND "text" IS NOT NULL'
        )
        if rows:
            rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            pos = np.searchsorted(cols["rowid"], rowids)
            inline = names.codes(_text(r[1]) for r in rows)
            take = text_codes[pos] == 0
            text_codes[pos[take]] = inline[take]
    gtid = cols.pop("gtid")
    cols["pkey"] = np.maximum(gtid, 0) >> 24
    cols["tid"] = gtid & TID_MASK
    cols["name"] = text_codes
    cols["domain"] = _domain_codes(db, names, cols["pkey"], cols.pop("domain_id"), create)
    return _raw(cols, kind=KIND_CODE["user_annotation"])


def _domain_codes(
    db: NsysDb, names: Names, pkey: np.ndarray, domain_id: np.ndarray, create: int
) -> np.ndarray:
    tcols = db.columns("NVTX_EVENTS")
    text = ["s.value"] if "textId" in tcols and db.has("StringIds") else []
    text += ["n.text"] if "text" in tcols else []
    join = "LEFT JOIN StringIds s ON s.id = n.textId" if "s.value" in text else ""
    made = (
        db.query_rows(
            f"SELECT n.globalTid, n.domainId, "
            f"{text[0] if len(text) == 1 else 'COALESCE(' + ', '.join(text) + ')'} "
            f"FROM NVTX_EVENTS n {join} WHERE n.eventType = {int(create)}"
        )
        if text and "domainId" in tcols
        else []
    )
    by_proc: dict[tuple[int, int], str] = {}
    by_id: dict[int, str] = {}
    for g, d, t in made:
        d, g = as_int64(d), as_int64(g)
        if d is None or not t:
            continue
        t = t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
        if g is not None and g >= 0:
            by_proc[(g >> 24, d)] = t
        by_id.setdefault(d, t)
    if domain_id.min() >= 0 and domain_id.max() < (1 << 22):  # one int64 key per pair
        inverse, keys = pd.factorize((pkey << 22) | domain_id)
        uniq = [(int(k) >> 22, int(k) & ((1 << 22) - 1)) for k in keys]
    else:
        inverse, mi = pd.MultiIndex.from_arrays([pkey, domain_id]).factorize()
        uniq = [(int(a), int(b)) for a, b in mi]
    texts = [
        "" if did == 0 else by_proc.get((pk, did), by_id.get(did, f"domain {did}"))
        for pk, did in uniq
    ]
    return names.codes(texts)[inverse]
