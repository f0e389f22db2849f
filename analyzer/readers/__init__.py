"""Readers: profiler files -> ``Trace`` objects (see ``analyzer.model``).

    >>> from analyzer.readers import load_traces, read_kineto
    >>> ts = load_traces(["traces/"])          # doctest: +SKIP
    >>> trace = read_kineto("rank0.trace.json.gz")  # doctest: +SKIP
"""

from __future__ import annotations

from analyzer.readers.discovery import load_traces
from analyzer.readers.kineto import read_kineto

__all__ = ["load_traces", "read_kineto"]
