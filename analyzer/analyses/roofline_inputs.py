"""What the roofline reads besides the event table: each trace's recorded shapes (a lazy
second pass, ``readers/kineto_shapes.py``) and an optional CUDA-graph capture trace.

    >>> shapes, capture = roofline_inputs(traces, "auto", None)   # doctest: +SKIP

``shapes[i]`` is the list of ``OpShapes`` of ``traces[i]``'s Kineto files, or a string that
says why there are none (the report's ``roofline.reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyzer.model import BadInputError, Trace


def _recorded(trace: Trace) -> bool:
    v = trace.metadata.get("record_shapes")
    return v is True or str(v).strip().lower() in ("1", "true")


def _launch_ext_ids(trace: Trace) -> np.ndarray:
    """External ids of the kernel launches: only the ops with one can own a kernel."""
    ev = trace.events
    sel = ev["kind"].isin(("cuda_runtime", "cuda_driver")).to_numpy() & (ev["correlation"].to_numpy() >= 0)
    return np.unique(ev["external_id"].to_numpy()[sel])


def roofline_inputs(traces: Sequence[Trace], mode: str, graph_capture: Any) -> tuple[list[Any], Any]:
    """``(per-trace shapes or reason, GraphCapture | None)`` for ``mode`` auto / on / off."""
    from analyzer.classify.ops import runtime_names
    from analyzer.readers.kineto_shapes import read_graph_capture, read_op_shapes

    if mode not in ("auto", "on", "off"):
        raise BadInputError(f"roofline must be auto, on or off, not {mode!r}")
    out: list[Any] = []
    for t in traces:
        kineto = [s for s in t.sources if s.format == "kineto"]
        if mode == "off":
            out.append("the roofline was turned off (--roofline off)")
        elif not kineto:
            out.append("not a Kineto trace: Nsight exports carry no operator shapes")
        elif mode == "auto" and not _recorded(t):
            out.append("the trace was recorded without record_shapes: no operator input dims "
                       "(profile with record_shapes=True)")
        elif not all(Path(s.path).is_file() for s in kineto):
            out.append("the shapes pass re-reads trace files on disk; archive members are not re-read")
        else:
            got = [read_op_shapes(s.path, t.op_index if len(kineto) == 1 else None, _launch_ext_ids(t))
                   for s in kineto]
            out.append(got if any(g.has_shapes for g in got) else
                       "the trace's CPU ops carry no Input Dims (recorded without record_shapes)")
    capture = None
    if graph_capture is not None and mode != "off":
        p = Path(graph_capture)
        if not p.exists():
            raise BadInputError(f"no such graph capture trace: {p}")
        try:
            capture = read_graph_capture(p, runtime_names())
        except (FileNotFoundError, ValueError) as exc:
            raise BadInputError(f"graph capture {p}: {exc}") from None
    return out, capture


__all__ = ["roofline_inputs"]
