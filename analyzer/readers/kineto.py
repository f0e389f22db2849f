"""Read a PyTorch profiler (Kineto) trace, ``.json`` or ``.json.gz``, into a ``Trace``.

    >>> trace = read_kineto("rank0.trace.json.gz")          # doctest: +SKIP
    >>> trace.events.groupby("kind", observed=True)["dur_ns"].sum()  # doctest: +SKIP

Only complete events (``"ph": "X"``) become rows; metadata (``M``), instants (``i``) and
flow arrows (``s``/``f``) are skipped (the launch <-> kernel link is already in
``args.correlation``). Both the current schema (``kernel``, ``cuda_runtime``, ``External
id``) and the 2021 one (``Kernel``, ``Runtime``, ``external id``, ``"tid": "stream 7"``)
are read. Timestamps in float microseconds become int64 nanoseconds, rounded to the
nearest ns (``round(x * 1000)``, exact for integer epoch microseconds). Rows are sorted by ``ts_ns`` (stable).

The file is decoded in slices of a few MB (``jsonstream``) with typed msgspec Structs that
declare only the fields used (``kineto_decode``), and each slice becomes numpy columns
(``kineto_columns``), so memory stays near the size of the resulting columns rather than
of the JSON.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from analyzer.model import BadInputError, DeviceInfo, RankInfo, SourceFile, Trace
from analyzer.readers.jsonstream import GZIP_MAGIC, TraceSplitter, max_depth
from analyzer.readers.kineto_columns import CAT_TO_KIND, DTYPE_BYTES, Columns
from analyzer.readers.kineto_decode import BadValue, SliceDecoder, Vocabulary, as_int
from analyzer.readers.limits import Limits, active, refuse

__all__ = ["CAT_TO_KIND", "DTYPE_BYTES", "read_kineto"]

#: files at least this big (on disk) are read by the compiled scanner under "auto" (below,
#: the difference is a few ms; msgspec then also covers the odd shapes the scanner hands on)
AUTO_MIN_BYTES = 1 << 20


# --------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------


def _devices(props: Any) -> tuple[DeviceInfo, ...]:
    out: list[DeviceInfo] = []
    if not isinstance(props, list):
        return ()
    for i, p in enumerate(props):
        if not isinstance(p, dict):
            continue
        major, minor = p.get("computeMajor"), p.get("computeMinor")
        mem = p.get("totalGlobalMem")
        sms = p.get("numSms")
        out.append(
            DeviceInfo(
                index=as_int(p.get("id", i)),
                name=str(p.get("name") or ""),
                total_memory_bytes=int(mem) if isinstance(mem, (int, float)) else None,
                num_sms=int(sms) if isinstance(sms, (int, float)) else None,
                compute_capability=(
                    f"{major}.{minor}" if major is not None and minor is not None else None
                ),
            )
        )
    return tuple(out)


def _header(path: Path, raw: bytes | None, limits: Limits) -> dict[str, Any]:
    if raw is None:
        return {}
    if max_depth(raw) > limits.max_depth:
        raise refuse(path.name, "JSON outside traceEvents is nested too deeply", "max_depth",
                     limits.max_depth)
    try:
        doc = msgspec.json.decode(raw)
    except RecursionError:
        raise refuse(path.name, "JSON nested too deeply", "max_depth", limits.max_depth) from None
    except msgspec.DecodeError as exc:
        raise BadInputError(f"{path.name}: invalid JSON outside traceEvents ({exc})") from None
    return doc if isinstance(doc, dict) else {}


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def read_kineto(
    path: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    scanner: str = "auto",
    row_filter: Any = None,
) -> Trace:
    """Read one Kineto trace file into a ``Trace`` (one file = one rank).

    ``progress`` (optional) receives the number of on-disk bytes consumed after each block.
    ``scanner``: "compiled" reads slices with the compiled scanner (``kineto_scan``, a C
    extension built at install time), "msgspec" with msgspec alone, "auto" (default) the
    compiled one when it is built, for files of 1 MB or more (``ANALYZER_SCANNER`` in the
    environment overrides "auto"). Both give the same table.
    Raises ``BadInputError`` with a one-line message for anything that is not a readable
    trace: empty, truncated gzip, invalid JSON, no ``traceEvents``, bad durations.
    ``row_filter``: called on each slice's rows before they are stored, returns the rows to
    keep (``kineto_columns.Columns.row_filter``); None keeps every row.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    limits = active()
    splitter = TraceSplitter(path, progress, limits)
    cols = Columns(rows_hint=_rows_hint(path))
    cols.row_filter = row_filter
    decode: Any = SliceDecoder(Vocabulary(cols.names, cols.kinds))
    fast = _fast_decoder(scanner, path)
    if fast is not None:
        decode = fast(decode, cols)
        decode.splitter = splitter  # file offsets of the cpu_ops (kineto_shapes.OpIndex)
    try:
        for events, keys in splitter.iter_decoded(decode):  # type: ignore[misc]
            if isinstance(events, list):
                cols.add(events, keys, path.name)
            else:
                cols.add_scanned(events, keys)
            if cols.n > limits.max_events:
                raise refuse(path.name, f"over {limits.max_events:,} events", "max_events",
                             limits.max_events)
    except RecursionError:
        raise BadInputError(
            f"{path.name}: an event is nested too deeply (JSON arrays/objects over ~1000 levels)"
        ) from None
    except msgspec.ValidationError as exc:
        raise BadInputError(f"{path.name}: traceEvents is not a list of events ({exc})") from None
    except msgspec.DecodeError as exc:
        raise BadInputError(f"{path.name}: invalid JSON ({_describe(exc)})") from None
    except BadValue as exc:
        raise BadInputError(f"{path.name}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path.name}: invalid UTF-8 in the JSON text ({exc.reason}: "
            f"{exc.object[exc.start : exc.end]!r})"
        ) from None
    except OSError as exc:
        raise BadInputError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    head = _header(path, splitter.header, limits)
    try:
        events = cols.frame()
    except BadValue as exc:
        raise BadInputError(f"{path.name}: {exc}") from None
    dist = head.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else None
    rank = as_int(dist.get("rank")) if dist and "rank" in dist else -1
    world = as_int(dist.get("world_size")) if dist and "world_size" in dist else None
    rank_info = RankInfo(
        rank=max(rank, 0),
        rank_source="distributedInfo" if rank >= 0 else "order",
        world_size=world if world and world > 0 else None,
    )
    metadata = {
        k: v
        for k, v in head.items()
        if k != "traceEvents" and (v is None or isinstance(v, (str, int, float, bool)))
    }
    warnings: tuple[str, ...] = ()
    if len(events) == 0:
        warnings = (f"{path.name}: no complete ('X') events",)
    op_index = None
    if fast is not None and decode.op_complete:
        from analyzer.readers.kineto_shapes import OpIndex

        op_index = OpIndex.of(decode.op_offsets, decode.op_ext)
    return Trace(
        op_index=op_index,
        rank=rank_info,
        events=events,
        sources=(SourceFile(path=str(path), format="kineto"),),
        devices=_devices(head.get("deviceProperties")),
        distributed_info=dist,
        metadata=metadata,
        warnings=warnings,
    )


def _rows_hint(path: Path) -> int:
    """A generous guess of a file's complete events (~100 bytes of JSON each, ~8x gzip):
    column capacity that is reserved but never touched costs no memory."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
    return (size * 8 if gz else size) // 100


def _fast_decoder(scanner: str, path: Path) -> Any:
    """The compiled-scanner decoder class when it is wanted and built, else None."""
    if scanner not in ("auto", "compiled", "msgspec"):
        raise ValueError(f"scanner must be auto, compiled or msgspec, not {scanner!r}")
    if scanner == "auto":
        scanner = os.environ.get("ANALYZER_SCANNER", "auto")
    if scanner == "msgspec" or (scanner == "auto" and path.stat().st_size < AUTO_MIN_BYTES):
        return None
    from analyzer.readers import kineto_scan

    if not kineto_scan.available():  # built without a C compiler: msgspec reads everything
        if scanner == "compiled":
            raise RuntimeError("the compiled Kineto scanner is not built (reinstall with a C compiler)")
        return None
    from analyzer.readers.kineto_fast import FastSliceDecoder

    return FastSliceDecoder


def _describe(exc: Exception) -> str:
    msg = str(exc)
    return msg[:200]
