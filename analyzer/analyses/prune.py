"""Drop the python stack frames that no analysis reads, right after reading.

Traces recorded ``with_stack`` (SGLang's default) are mostly ``python_function`` rows (about
90 % of the events). The analyses read only the frames named by the markers in
``serving_markers.toml`` whose ``kinds`` include ``python_function``: model-runner forwards
and CUDA-graph replays (steps of older SGLang), ``nn.Module`` forwards (Hugging Face steps),
scheduler frames (gap causes) and the event-loop frames (overlap scheduler). Every other
``python_function`` row is dropped; the kept set is exactly the set of rows those markers
can match, so every figure stays the same. Names are matched once per unique name.

    >>> removed = prune_python_frames(trace)      # doctest: +SKIP
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd

from analyzer.analyses.phases import markers
from analyzer.analyses.tables import kind_mask, take_rows, used_codes
from analyzer.model import KINDS, Trace

FRAME_KIND = "python_function"


def frame_patterns() -> list[re.Pattern[str]]:
    """The marker regexes that are matched against ``python_function`` names."""
    data = markers()
    return [spec["re"] for group in ("steps", "host") for spec in data[group].values()
            if FRAME_KIND in spec["kinds"]]


def frames_to_keep(events: pd.DataFrame) -> np.ndarray | None:
    """Row mask: every non-frame row plus the frames some marker matches.

    ``None`` when nothing would be dropped (no frames, or names not Categorical).
    """
    names = events["name"]
    if not isinstance(names.dtype, pd.CategoricalDtype):
        return None
    is_frame = kind_mask(events, (FRAME_KIND,))
    if not is_frame.any():
        return None
    codes = names.cat.codes.to_numpy()
    cats = names.cat.categories
    keep_name = np.zeros(len(cats) + 1, bool)  # last slot: missing name (code -1), never kept
    patterns = frame_patterns()
    for c in used_codes(codes, is_frame, len(cats)).tolist():  # once per unique frame name
        text = str(cats[c])
        keep_name[c] = any(p.search(text) for p in patterns)
    keep = ~is_frame | keep_name[codes]
    return None if keep.all() else keep


def prune_python_frames(trace: Trace) -> int:
    """Drop the ``python_function`` rows no marker reads from ``trace.events`` (replaces the
    table with the kept rows; names no row uses any more leave the Categorical).

    Returns the number of rows dropped.
    """
    keep = frames_to_keep(trace.events)
    if keep is None:
        return 0
    out = take_rows(trace.events, keep)
    out["name"] = out["name"].cat.remove_unused_categories()
    trace.events = out
    return int(keep.size - np.count_nonzero(keep))


class FramePruner:
    """The same pruning while a Kineto file is read (``read_kineto(row_filter=...)``), so the
    dropped frames never reach the event table; it also counts what ``context.trace_clues``
    and the job check read from the unpruned rows.

    After the read: ``clues()`` (= ``trace_clues`` of the unpruned table), ``first_ts_ns``
    (its earliest timestamp), ``dropped`` (frame rows left out). Names are matched once each,
    as ``frames_to_keep`` does; the kept rows are exactly the rows it keeps.
    """

    def __init__(self) -> None:
        self.patterns = frame_patterns()
        self.frame_kind = KINDS.index(FRAME_KIND)
        self.texts: list[str] = []
        self.keep_name = np.zeros(0, bool)
        self.pairs = np.zeros((0, len(KINDS)), np.int64)
        self.first_ts_ns: int | None = None
        self.dropped = 0

    def __call__(self, kind: np.ndarray, names: np.ndarray, ts_ns: np.ndarray,
                 table: Any) -> np.ndarray | None:
        if len(table) > len(self.texts):  # names first seen in this slice (codes in order)
            new = [str(t) for t in islice(iter(table), len(self.texts), None)]
            self.texts.extend(new)
            self.keep_name = np.concatenate(
                [self.keep_name, np.array([any(p.search(t) for p in self.patterns) for t in new], bool)])
            self.pairs = np.vstack([self.pairs, np.zeros((len(new), len(KINDS)), np.int64)])
        if len(ts_ns) == 0:
            return None
        k, c = kind.astype(np.int64), names.astype(np.int64)
        ok = (k >= 0) & (c >= 0)
        idx = c[ok] * len(KINDS) + k[ok]
        self.pairs += np.bincount(idx, minlength=self.pairs.size).reshape(self.pairs.shape)
        t0 = int(ts_ns.min())
        self.first_ts_ns = t0 if self.first_ts_ns is None else min(self.first_ts_ns, t0)
        is_frame = k == self.frame_kind
        if not is_frame.any():
            return None
        keep = ~is_frame | (self.keep_name[np.maximum(c, 0)] & (c >= 0))
        self.dropped += int(keep.size - np.count_nonzero(keep))
        return keep

    cache_tag = "frames-pruned-v1"  # readers.cache keeps these tables apart from whole ones

    def restore(self, state: dict[str, Any]) -> None:
        """The state of a read served from the cache (``readers.cache``)."""
        self._restored = dict(state)

    def clues(self) -> dict[str, int]:
        from analyzer.analyses.context import clues_from_pairs

        return clues_from_pairs(self.pairs, self.texts, KINDS)

    def state(self) -> dict[str, Any]:
        """``clues``, ``first_ts_ns`` and ``dropped`` of the read (what a cache entry keeps)."""
        restored = getattr(self, "_restored", None)
        if restored is not None:
            return restored
        return {"clues": self.clues(), "first_ts_ns": self.first_ts_ns, "dropped": self.dropped}
