"""LLM-serving trace analyzer: where GPU time goes, and how many requests a replica should serve.

Public API::

    from analyzer import analyze, load
    report = analyze(["profile_dir/"])       # Kineto .json/.json.gz, .zip, Nsight .sqlite
    print(report.top_finding)
    report.to_dict()                          # JSON contract v1 (docs/report-schema.md)
"""

__version__ = "0.1.0"

from .api import analyze, load  # noqa: E402
from .model import BadInputError, Finding, Trace, TraceSet  # noqa: E402
from .report import Report, validate_report  # noqa: E402

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
