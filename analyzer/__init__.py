"""LLM-serving trace analyzer: where GPU time goes, and how many requests a replica should serve.

Public API::

    from analyzer import analyze, load
    report = analyze(["profile_dir/"])       # Kineto .json/.json.gz, .zip, Nsight .sqlite
    print(report.top_finding)
    report.to_dict()                          # JSON contract v1 (docs/report-schema.md)

The names are imported on first use (PEP 562), so ``import analyzer`` and the CLI's
``--version`` / ``--help`` do not load numpy, pandas or plotly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "analyze": "analyzer.api",
    "load": "analyzer.api",
    "BadInputError": "analyzer.errors",
    "Finding": "analyzer.model",
    "Trace": "analyzer.model",
    "TraceSet": "analyzer.model",
    "Report": "analyzer.report",
    "validate_report": "analyzer.report",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import analyze, load
    from .errors import BadInputError
    from .model import Finding, Trace, TraceSet
    from .report import Report, validate_report


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analyzer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "analyze",
    "load",
    "Report",
    "Finding",
    "Trace",
    "TraceSet",
    "BadInputError",
    "validate_report",
]
