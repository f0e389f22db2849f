"""Builders of small hostile inputs shared by test_hardening.py and test_fuzz_inputs.py.

A trace here is a dict (Kineto) or an SQLite file (Nsight, from test_nsys's ``NsysDb``);
large files are written by streaming through zlib, never held in memory.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GIB = 1 << 30


def event(**kw: Any) -> dict[str, Any]:
    """One complete kernel event; ``args`` keys given are merged into the default args."""
    e: dict[str, Any] = {
        "ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": 7,
        "ts": 100.0, "dur": 5.0, "args": {"device": 0, "stream": 7, "correlation": 1},
    }
    args = kw.pop("args", None)
    e.update(kw)
    if args:
        e["args"] = {**e["args"], **args}
    return e


def kineto_doc(*extra: dict[str, Any], **header: Any) -> dict[str, Any]:
    """A small valid trace: a launch, kernels, a memcpy, an NCCL kernel, plus ``extra``."""
    events = [
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
         "ts": 9.0, "dur": 1.0, "args": {"correlation": 1, "External id": 3}},
        event(ts=10.0, name="gemm_kernel"),
        event(ts=20.0, name="flash_attn_fwd", args={"correlation": 2}),
        event(ts=30.0, cat="gpu_memcpy", name="Memcpy HtoD", args={"bytes": 4096}),
        event(ts=40.0, name="ncclDevKernel_AllReduce", args={
            "Collective name": "allreduce", "In msg nelems": 1024, "dtype": "BFloat16",
            "Group size": 2, "Process Group Name": "0", "Seq": 1}),
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
        *extra,
    ]
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "deviceProperties": [{"id": 0, "name": "NVIDIA H100", "totalGlobalMem": 85e9}],
        "distributedInfo": {"rank": 0, "world_size": 1},
        "traceEvents": events,
    }
    doc.update(header)
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def write_gz_stream(path: Path, parts: Iterable[bytes], level: int = 6) -> Path:
    """Write the concatenation of ``parts`` as one gzip member, streaming."""
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    with open(path, "wb") as fh:
        fh.writelines(z.compress(p) for p in parts)
        fh.write(z.flush())
    return path


def repeat(byte: bytes, n: int, block: int = 1 << 20) -> Iterable[bytes]:
    chunk = byte * block
    for _ in range(n // block):
        yield chunk
    if n % block:
        yield byte * (n % block)


EV = dumps(event())

#: name -> parts of a hostile ~1 MB .json.gz (the issue's memory cases)
BOMBS: dict[str, Any] = {
    "padding_before_events": lambda: [b'{"pad":"', repeat(b"a", GIB), b'","traceEvents":[', EV, b"]}"],
    "padding_after_events": lambda: [b'{"traceEvents":[', EV, b'],"pad":"', repeat(b"a", GIB), b'"}'],
    "whitespace_in_events": lambda: [b'{"traceEvents":[', EV, b",", repeat(b" ", GIB), EV, b"]}"],
    "name_256mib": lambda: [b'{"traceEvents":[', EV, b',{"ph":"X","cat":"kernel","name":"',
                            repeat(b"n", 256 << 20), b'","pid":0,"tid":0,"ts":1,"dur":1}]}'],
}


def write_bomb(path: Path, name: str) -> Path:
    def flat() -> Iterable[bytes]:
        for p in BOMBS[name]():
            if isinstance(p, bytes):
                yield p
            else:
                yield from p

    return write_gz_stream(path, flat(), level=9)


def deep(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)
