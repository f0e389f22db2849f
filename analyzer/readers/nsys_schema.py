"""Opening an Nsight Systems SQLite export and finding out which schema it has.

``nsys export --type sqlite`` creates tables lazily and its schema changed between releases
(2022: ``EXPORT_META_DATA``, no ``ENUM_*`` tables; 2024+: ``META_DATA_EXPORT``,
``META_DATA_CAPTURE``, ``ENUM_*`` tables, new columns). Nothing here assumes a table or a
column exists: :class:`NsysDb` asks ``sqlite_master`` and ``PRAGMA table_info`` first.

>>> db = NsysDb.open(Path("report.sqlite"))        # doctest: +SKIP
>>> db.has("CUPTI_ACTIVITY_KIND_KERNEL"), db.columns("NVTX_EVENTS")  # doctest: +SKIP
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyzer.model import BadInputError

SQLITE_MAGIC = b"SQLite format 3\x00"

#: Tables that only an Nsight Systems export has (any one of them marks the file as nsys).
NSYS_MARKER_TABLES = (
    "EXPORT_META_DATA",  # <= 2023
    "META_DATA_EXPORT",  # >= 2024
    "TARGET_INFO_SESSION_START_TIME",
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "NVTX_EVENTS",
)

# Defaults used when the export has no ENUM_* tables (nsys <= 2023); the values are those of
# the ENUM tables of later exports, which kept the numbering.
DEFAULT_EVENT_CLASS = {
    0: "cuda_runtime",
    1: "cuda_driver",
    67: "backtrace",
    68: "backtrace",
    69: "backtrace",
}
DEFAULT_NVTX_RANGE_TYPES = (59, 60, 70, 71)  # Nvtx(t)PushPopRange, Nvtx(t)StartEndRange
DEFAULT_NVTX_DOMAIN_CREATE = 75
#: CUPTI memcpy kinds, spelled as Kineto does in "Memcpy HtoD (Pageable -> Device)".
COPY_KIND = {
    0: "Unknown",
    1: "HtoD",
    2: "DtoH",
    3: "HtoA",
    4: "AtoH",
    5: "AtoA",
    6: "AtoD",
    7: "DtoA",
    8: "DtoD",
    9: "HtoH",
    10: "PtoP",
}
#: nsys's own memory-kind numbering (ENUM_CUDA_MEM_KIND; differs from CUPTI's).
DEFAULT_MEM_KIND = {
    0: "Pageable",
    1: "Pinned",
    2: "Device",
    3: "Array",
    4: "Managed",
    5: "Device Static",
    6: "Managed Static",
    7: "Unknown",
}

_STRING_CHUNK = 500
_ROW_CHUNK = 1_000_000  # rows per group_concat (SQLite strings are limited to 1e9 bytes)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@dataclass
class NsysDb:
    """A read-only connection to an nsys export plus what its schema holds."""

    path: Path
    con: sqlite3.Connection
    tables: frozenset[str]
    _columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: Path) -> NsysDb:
        """Open ``path`` read-only; ``BadInputError`` unless it is an nsys SQLite export."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if head != SQLITE_MAGIC:
            raise BadInputError(
                f"{path} is not an SQLite database (expected an `nsys export --type sqlite` file)"
            )
        try:
            con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            con.text_factory = _decode
            names = frozenset(
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            )
        except sqlite3.DatabaseError as exc:
            raise BadInputError(f"{path}: unreadable SQLite file ({exc}); truncated?") from exc
        if not names.intersection(NSYS_MARKER_TABLES):
            con.close()
            raise BadInputError(
                f"{path} is an SQLite database but not an Nsight Systems export "
                "(none of EXPORT_META_DATA, META_DATA_EXPORT, CUPTI_ACTIVITY_KIND_*, NVTX_EVENTS)"
            )
        return cls(path=path, con=con, tables=names)

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ schema
    def has(self, table: str) -> bool:
        return table in self.tables

    def columns(self, table: str) -> tuple[str, ...]:
        """Column names of ``table`` (empty when the table is absent)."""
        if table not in self.tables:
            return ()
        if table not in self._columns:
            rows = self.query_rows(f'PRAGMA table_info("{table}")')
            self._columns[table] = tuple(r[1] for r in rows)
        return self._columns[table]

    # ------------------------------------------------------------------ queries
    def query_rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self.con.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise BadInputError(
                f"{self.path}: cannot read the SQLite export ({exc}); if it was copied or "
                "exported partially, re-run `nsys export --type sqlite`"
            ) from exc

    def int_columns(
        self, table: str, exprs: dict[str, str], where: str = ""
    ) -> dict[str, np.ndarray]:
        """Integer columns of ``table`` as int64 arrays (NULL -> -1), in rowid order.

        Fetching millions of rows as Python tuples is slow, so each chunk of rowids is read
        as one ``group_concat`` string per column (one aggregate scan: the columns stay
        aligned) and parsed by numpy.
        """
        empty = {k: np.empty(0, dtype=np.int64) for k in exprs}
        lo, hi = self.query_rows(f'SELECT MIN(rowid), MAX(rowid) FROM "{table}"')[0]
        if lo is None:
            return empty
        sel = ", ".join(f"group_concat(CAST(COALESCE({e}, -1) AS INTEGER))" for e in exprs.values())
        cond = f" AND ({where})" if where else ""
        sql = f'SELECT COUNT(*), {sel} FROM "{table}" WHERE rowid > ? AND rowid <= ?{cond}'
        parts: dict[str, list[np.ndarray]] = {k: [] for k in exprs}
        for first in range(int(lo) - 1, int(hi), _ROW_CHUNK):
            row = self.query_rows(sql, (first, first + _ROW_CHUNK))[0]
            if not row[0]:
                continue
            for key, text in zip(exprs, row[1:]):
                values = np.fromstring(text, dtype=np.int64, sep=",")
                if len(values) != row[0]:
                    raise BadInputError(f"{self.path}: unreadable values in {table}.{key}")
                parts[key].append(values)
        return {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}

    def strings(self, ids: np.ndarray) -> dict[int, str]:
        """``StringIds`` values for the given ids (looked up in chunks, only those asked)."""
        if not self.has("StringIds"):
            return {}
        uniq = [int(i) for i in np.unique(np.asarray(ids, dtype=np.int64)) if i >= 0]
        out: dict[int, str] = {}
        for k in range(0, len(uniq), _STRING_CHUNK):
            chunk = uniq[k : k + _STRING_CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(
                self.query_rows(f"SELECT id, value FROM StringIds WHERE id IN ({marks})", chunk)
            )
        return out

    def enum(self, table: str) -> dict[int, tuple[str, str]]:
        """``ENUM_*`` table as ``{id: (name, label)}`` (empty when absent)."""
        cols = self.columns(table)
        if "id" not in cols or "name" not in cols:
            return {}
        label = "label" if "label" in cols else "name"
        return {
            int(i): (str(n), str(lab))
            for i, n, lab in self.query_rows(f'SELECT id, name, "{label}" FROM "{table}"')
        }

    # ------------------------------------------------------------------ metadata
    def meta(self) -> dict[str, str]:
        """Export metadata (``META_DATA_EXPORT`` or the older ``EXPORT_META_DATA``)."""
        for table in ("META_DATA_EXPORT", "EXPORT_META_DATA"):
            if {"name", "value"} <= set(self.columns(table)):
                return {
                    str(n): str(v) for n, v in self.query_rows(f'SELECT name, value FROM "{table}"')
                }
        return {}

    def capture_meta(self) -> dict[str, str]:
        """Capture settings (``META_DATA_CAPTURE``, nsys >= 2024), first value per name."""
        if not {"name", "value"} <= set(self.columns("META_DATA_CAPTURE")):
            return {}
        out: dict[str, str] = {}
        for n, v in self.query_rows("SELECT name, value FROM META_DATA_CAPTURE"):
            out.setdefault(str(n), str(v))
        return out

    def session_start_utc_ns(self) -> int | None:
        """UTC epoch ns of the capture start (``TARGET_INFO_SESSION_START_TIME``), if known."""
        if "utcEpochNs" not in self.columns("TARGET_INFO_SESSION_START_TIME"):
            return None
        rows = self.query_rows(
            "SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME "
            "WHERE utcEpochNs IS NOT NULL LIMIT 1"
        )
        return int(rows[0][0]) if rows else None

    def clock_zero_utc_ns(self) -> int | None:
        """UTC epoch ns that event timestamp 0 stands for.

        Event timestamps are ns since the session start unless the export was run with
        ``--ts-normalize=true`` (timestamps already UTC epoch ns) or ``--ts-shift`` (added).
        """
        meta = self.meta()
        shift = _int_or_zero(meta.get("EXPORT_PARAM_TIME_SHIFT", meta.get("EXPORT_TIME_SHIFT")))
        if meta.get("EXPORT_PARAM_TIME_NORMALIZE", "").lower() == "true":
            return -shift
        start = self.session_start_utc_ns()
        return None if start is None else start - shift


def _int_or_zero(text: str | None) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return 0


_VERSION_SUFFIX = re.compile(r"_v\d+$")


def strip_api_version(name: str) -> str:
    """``cudaLaunchKernel_v7000`` -> ``cudaLaunchKernel`` (one trailing ``_v<digits>``)."""
    return _VERSION_SUFFIX.sub("", name)
