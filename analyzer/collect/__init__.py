"""Collect traces from a running SGLang server: HTTP control, metrics, waiting for files.

>>> from analyzer.collect import CollectOptions, collect          # doctest: +SKIP
>>> collect(CollectOptions(url="http://127.0.0.1:30000", output_dir=Path("prof"), num_steps=5))  # doctest: +SKIP

Standard library only (``urllib``); the Prometheus parser is our own (``metrics.py``).
"""

from .collector import CollectOptions, CollectResult, collect
from .metrics import (
    HistogramStats,
    ServerMetrics,
    load_metrics,
    metrics_window,
    parse_prometheus_text,
)
from .nsys import NsysPlan, nsys_plan

__all__ = [
    "CollectOptions",
    "CollectResult",
    "HistogramStats",
    "NsysPlan",
    "ServerMetrics",
    "collect",
    "load_metrics",
    "metrics_window",
    "nsys_plan",
    "parse_prometheus_text",
]
