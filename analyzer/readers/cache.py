"""A Parquet cache of read Kineto event tables, so the next run of the same file skips JSON.

    >>> cache = TraceCache.default()                 # doctest: +SKIP
    >>> trace = cache.read_kineto(Path("rank0.trace.json.gz"))   # doctest: +SKIP

Key: the file's resolved path, size and mtime (ns), the analyzer's version and the event
table schema; a changed file, a new version or a new column misses and is read again.
Where: ``$TRACE_ANALYZER_CACHE_DIR``, else ``$XDG_CACHE_HOME/trace-analyzer``, else
``~/.cache/trace-analyzer``. Off: ``TRACE_ANALYZER_NO_CACHE=1`` or ``--no-cache``. Traces
smaller than ``MIN_BYTES`` are not cached (reading them is already quick).

Each entry is ``<key>.parquet`` (the event table; Categorical columns as their int codes,
written in row groups, so no copy of the whole table is made) and ``<key>.meta.pkl`` (the
trace without events, and each Categorical's categories), written atomically: a run that
dies half way leaves no entry. Needs ``pyarrow``; without it nothing is cached.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.model import EVENT_COLUMNS, Trace

MIN_BYTES = 16 * 2**20
ROW_GROUP = 1 << 20
FORMAT = 2  # bump when the entry layout changes


def default_dir() -> Path:
    env = os.environ.get("TRACE_ANALYZER_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "trace-analyzer"


def disabled_by_env() -> bool:
    return os.environ.get("TRACE_ANALYZER_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class TraceCache:
    """Where the entries live; ``min_bytes``: smaller files are read, not cached."""

    root: Path
    min_bytes: int = MIN_BYTES

    @classmethod
    def default(cls) -> TraceCache | None:
        """The cache the CLI uses, or None when switched off (env) or pyarrow is missing."""
        if disabled_by_env():
            return None
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return None
        return cls(default_dir())

    def key(self, path: Path, tag: str = "") -> str | None:
        from analyzer import __version__

        try:
            st = path.stat()
        except OSError:
            return None
        if st.st_size < self.min_bytes:
            return None
        raw = (f"{FORMAT}|{__version__}|{','.join(EVENT_COLUMNS)}|{tag}|{path.resolve()}|"
               f"{st.st_size}|{st.st_mtime_ns}")
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def read_kineto(self, path: Path, progress: Callable[[int], None] | None = None,
                    row_filter: Any = None) -> Trace:
        """``read_kineto(path, row_filter=...)`` through the cache: a hit reads Parquet, a
        miss reads the JSON and stores it (a failure to store is not an error). With a row
        filter the entry holds the kept rows and the filter's ``state()``, given back to it
        on a hit (``restore``); its own key (``row_filter.cache_tag``)."""
        key = self.key(path, getattr(row_filter, "cache_tag", "") if row_filter is not None else "")
        if key is not None:
            hit = self._load(key)
            if hit is not None:
                trace, state = hit
                if row_filter is not None:
                    if state is None:
                        return self._miss(path, progress, row_filter, key)
                    row_filter.restore(state)
                if progress is not None:
                    progress(path.stat().st_size)
                return trace
        return self._miss(path, progress, row_filter, key)

    def _miss(self, path: Path, progress: Any, row_filter: Any, key: str | None) -> Trace:
        from analyzer.readers.kineto import read_kineto

        trace = read_kineto(path, progress=progress, row_filter=row_filter)
        if key is not None:
            try:
                self._store(key, trace, row_filter.state() if row_filter is not None else None)
            except OSError:
                pass
        return trace

    def _load(self, key: str) -> tuple[Trace, dict[str, Any] | None] | None:
        meta_p, data_p = self.root / f"{key}.meta.pkl", self.root / f"{key}.parquet"
        if not (meta_p.is_file() and data_p.is_file()):
            return None
        import pyarrow.parquet as pq

        try:
            with meta_p.open("rb") as fh:
                header, cats, state = pickle.load(fh)
            table = pq.read_table(data_p)
        except Exception:  # noqa: BLE001 - a broken entry is a miss
            return None
        cols: dict[str, Any] = {}
        for name in table.column_names:
            arr = table.column(name).to_numpy()
            if name in cats:
                dtype = pd.CategoricalDtype(cats[name][0], ordered=cats[name][1])
                cols[name] = pd.Categorical.from_codes(arr, dtype=dtype)
            else:
                cols[name] = arr
        return replace(header, events=pd.DataFrame(cols, copy=False)), state

    def _store(self, key: str, trace: Trace, state: dict[str, Any] | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.root.mkdir(parents=True, exist_ok=True)
        ev = trace.events
        cats = {c: (ev[c].cat.categories, ev[c].cat.ordered) for c in ev.columns
                if isinstance(ev[c].dtype, pd.CategoricalDtype)}

        def column(name: str, lo: int, hi: int) -> np.ndarray:
            s = ev[name]
            return s.cat.codes.to_numpy()[lo:hi] if name in cats else s.to_numpy()[lo:hi]

        schema = pa.schema([(c, pa.from_numpy_dtype(column(c, 0, 0).dtype)) for c in ev.columns])
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            with pq.ParquetWriter(tmp, schema, compression="lz4") as w:
                for lo in range(0, max(len(ev), 1), ROW_GROUP):
                    hi = min(lo + ROW_GROUP, len(ev))
                    w.write_table(pa.table({c: column(c, lo, hi) for c in ev.columns}, schema=schema))
            os.replace(tmp, self.root / f"{key}.parquet")
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump((replace(trace, events=ev.iloc[:0].copy()), cats, state), fh)
            os.replace(tmp, self.root / f"{key}.meta.pkl")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


__all__ = ["MIN_BYTES", "TraceCache", "default_dir", "disabled_by_env"]
