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

import numpy as np
import pandas as pd

from analyzer.analyses.phases import markers
from analyzer.analyses.tables import kind_mask, take_rows, used_codes
from analyzer.model import Trace

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
