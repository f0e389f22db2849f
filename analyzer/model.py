"""Typed boundary objects shared by every stage of the pipeline.

readers -> EventTable (a pandas DataFrame with the columns below) wrapped in a ``Trace``
-> classify (adds ``category`` / ``collective``) -> analyses -> findings -> ``Report`` -> render.

The event table is columnar: one row per event, names stored once as a pandas Categorical.
Times are integer nanoseconds (``ts_ns``/``dur_ns``) on the trace's own clock; Kineto's
float microseconds (with ns fractions) are converted with ``round(x * 1000)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from analyzer.errors import AnalyzerError, BadInputError, NotATraceError  # noqa: F401 - re-exported here

# --------------------------------------------------------------------------------------
# Event table
# --------------------------------------------------------------------------------------

#: Event kinds (the ``kind`` column). GPU activity kinds come first.
KINDS: tuple[str, ...] = (
    "kernel",  # GPU kernel
    "memcpy",  # GPU memcpy
    "memset",  # GPU memset
    "gpu_user_annotation",  # GPU-side copy of a user annotation (range on the GPU timeline)
    "cuda_runtime",  # host CUDA/HIP runtime API call (cudaLaunchKernel, cudaGraphLaunch, ...)
    "cuda_driver",  # host driver API call (cuLaunchKernel, ...)
    "cpu_op",  # aten operator
    "user_annotation",  # record_function / NVTX range on the host
    "python_function",  # python stack frame
    "other",
)
GPU_ACTIVITY_KINDS: tuple[str, ...] = ("kernel", "memcpy", "memset")

#: Column name -> dtype of the event table. Readers must produce exactly these columns
#: (extra columns are allowed; missing values use the sentinel in ``MISSING``).
EVENT_COLUMNS: dict[str, str] = {
    "ts_ns": "int64",  # start, ns
    "dur_ns": "int64",  # duration, ns (>= 0)
    "kind": "category",  # one of KINDS
    "name": "category",  # event name (kernel name, op name, annotation text)
    "pid": "int64",  # process id (Kineto pid; for GPU events Kineto uses the device index)
    "tid": "int64",  # thread id, or stream id for GPU events ("stream 7" -> 7)
    "device": "int32",  # GPU index for GPU events, -1 for host events
    "stream": "int32",  # CUDA stream, -1 for host events
    "correlation": "int64",  # launch <-> kernel correlation id, -1 if none
    "external_id": "int64",  # Kineto "External id" (cpu_op <-> runtime), -1 if none
    "collective": "category",  # args["Collective name"] (NCCL/RCCL), "" if none
    "msg_bytes": "int64",  # communication message bytes (in msg nelems * dtype size) or memcpy bytes, -1
    "pg_name": "category",  # args["Process Group Name"], "" if none
    "pg_size": "int32",  # args["Group size"], -1 if none
    "seq": "int64",  # collective sequence number when the trace has one, -1
}
MISSING: dict[str, Any] = {
    "correlation": -1,
    "external_id": -1,
    "msg_bytes": -1,
    "pg_size": -1,
    "seq": -1,
    "device": -1,
    "stream": -1,
    "collective": "",
    "pg_name": "",
}

#: Categories assigned by ``analyzer.classify`` (the ``category`` column). Fixed vocabulary.
CATEGORIES: tuple[str, ...] = (
    "attention_prefill",
    "attention_decode",
    "kv_cache",
    "gemm",
    "moe",
    "communication",
    "elementwise",
    "sampling",
    "memcpy",
    "memset",
    "other",
)
#: Collective types for ``communication`` kernels (the ``collective`` column after classify).
COLLECTIVES: tuple[str, ...] = (
    "allreduce",
    "allgather",
    "reducescatter",
    "alltoall",
    "sendrecv",
    "broadcast",
    "reduce",
    "barrier",
    "other",
)


def empty_event_table() -> pd.DataFrame:
    """An event table with zero rows and the right dtypes."""
    data = {col: pd.Series([], dtype=dt) for col, dt in EVENT_COLUMNS.items()}
    df = pd.DataFrame(data)
    df["kind"] = pd.Categorical([], categories=KINDS)
    return df


def validate_event_table(df: pd.DataFrame) -> None:
    """Raise ``ValueError`` if ``df`` lacks a column or has a wrong dtype (used by tests)."""
    for col, dt in EVENT_COLUMNS.items():
        if col not in df.columns:
            raise ValueError(f"event table lacks column {col!r}")
        got = str(df[col].dtype)
        if got != dt:
            raise ValueError(f"event table column {col!r} has dtype {got}, expected {dt}")
    if len(df) and (df["dur_ns"].to_numpy() < 0).any():
        raise ValueError("event table has negative durations")


# --------------------------------------------------------------------------------------
# Trace: one rank's events plus its metadata
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankInfo:
    """Where a trace sits in the parallel layout.

    ``rank`` is the global rank; ``rank_source`` says how it was found:
    ``"distributedInfo"``, ``"filename"`` (SGLang's ``-TP-<tp>-PP-<pp>`` naming),
    ``"nsys"`` (device/process in an Nsight capture) or ``"order"`` (guessed from file order).
    """

    rank: int
    rank_source: str = "order"
    tp_rank: int | None = None
    pp_rank: int | None = None
    dp_rank: int | None = None
    ep_rank: int | None = None
    world_size: int | None = None
    profile_id: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """A GPU as described by the trace (Kineto ``deviceProperties`` or nsys ``TARGET_INFO_GPU``)."""

    index: int
    name: str = ""
    total_memory_bytes: int | None = None
    num_sms: int | None = None
    compute_capability: str | None = None
    memory_bandwidth_gbps: float | None = None


@dataclass(frozen=True)
class SourceFile:
    """One input file that contributed events to a trace."""

    path: str
    format: str  # "kineto" | "nsys"
    stage: str | None = None  # "EXTEND" / "DECODE" for SGLang stage-split files


@dataclass
class Trace:
    """All events of one rank (one GPU device) with metadata.

    ``events`` follows ``EVENT_COLUMNS``; after ``analyzer.classify.classify_trace`` it also
    has ``category`` (Categorical over ``CATEGORIES``) and ``collective`` normalised to
    ``COLLECTIVES`` (or "" for non-communication events).
    """

    rank: RankInfo
    events: pd.DataFrame
    sources: tuple[SourceFile, ...]
    devices: tuple[DeviceInfo, ...] = ()
    distributed_info: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: where the cpu_op events are in the file (``readers.kineto_shapes.OpIndex``) when the
    #: compiled scanner read all of it; the lazy shapes pass then decodes only those it needs
    op_index: Any = None

    @property
    def gpu(self) -> DeviceInfo | None:
        """The GPU this rank ran on (the device that owns most GPU activity), if known."""
        if not self.devices:
            return None
        ev = self.events
        gpu_rows = ev["device"].to_numpy()[ev["device"].to_numpy() >= 0]
        if len(gpu_rows):
            main = int(np.bincount(gpu_rows).argmax())
            for d in self.devices:
                if d.index == main:
                    return d
        return self.devices[0]


@dataclass
class TraceSet:
    """Every trace loaded from the inputs, grouped by profile id (one profile = one capture)."""

    traces: list[Trace]
    server_args: Mapping[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # skipped files etc., also printed on stderr
    warnings: list[str] = field(default_factory=list)  # e.g. ranks left out: top of the report

    @property
    def profiles(self) -> dict[str, list[Trace]]:
        out: dict[str, list[Trace]] = {}
        for t in self.traces:
            out.setdefault(t.rank.profile_id or "", []).append(t)
        return out


# --------------------------------------------------------------------------------------
# Findings and report
# --------------------------------------------------------------------------------------

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class Finding:
    """A ranked bottleneck: what costs time, the evidence, and what to do about it.

    ``time_us`` is the estimated time the cause costs on the critical (wall) timeline,
    ``share`` that time over the wall time. Findings are ranked by ``time_us`` (ties: id).
    """

    id: str
    title: str
    severity: str
    share: float
    time_us: float
    evidence: Mapping[str, Any]
    recommendation: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"evidence": dict(self.evidence)}
