"""The Report: everything one analysis produced, and its JSON form (report contract v1).

The JSON contract is documented in docs/report-schema.md and pinned by
``analyzer/schema/report-v1.schema.json``; every report the tests produce is validated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from . import __version__
from .analyses.timeline import RankTimeline
from .model import Finding, Trace

SCHEMA_VERSION = "1.2"
TOOL_NAME = "trace-analyzer"


@dataclass(frozen=True)
class InputInfo:
    """One input file and where it sits in the parallel layout."""

    path: str
    format: str
    rank: int
    tp_rank: int | None
    pp_rank: int | None
    dp_rank: int | None
    ep_rank: int | None
    stage: str | None
    gpu: str | None
    rank_source: str = "order"
    profile_id: str | None = None

    @classmethod
    def from_trace(cls, trace: Trace) -> list["InputInfo"]:
        gpu = trace.gpu.name if trace.gpu else None
        r = trace.rank
        return [
            cls(
                path=src.path,
                format=src.format,
                rank=r.rank,
                tp_rank=r.tp_rank,
                pp_rank=r.pp_rank,
                dp_rank=r.dp_rank,
                ep_rank=r.ep_rank,
                stage=src.stage,
                gpu=gpu,
                rank_source=r.rank_source,
                profile_id=r.profile_id,
            )
            for src in trace.sources
        ]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Report:
    """The result of :func:`analyzer.analyze`. ``to_dict()`` gives the JSON contract v1."""

    inputs: list[InputInfo]
    ranks: list[RankTimeline]
    summary: dict[str, Any]
    findings: list[Finding]
    serving: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    abstained: list[str] = field(default_factory=list)
    server_args: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    kernels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def top_finding(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract, with secrets redacted (``analyzer.safety.redact``)."""
        return _redacted(self._raw_dict())

    def _raw_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": TOOL_NAME, "version": __version__},
            "context": dict(self.context),
            "inputs": [i.to_dict() for i in self.inputs],
            "ranks": [r.to_dict() for r in self.ranks],
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "serving": self.serving,
            "calibration": self.calibration,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "abstained": list(self.abstained),
            "server_args": dict(self.server_args) if self.server_args else None,
            "metrics": dict(self.metrics) if self.metrics else None,
            "kernels": list(self.kernels),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default, allow_nan=False)


def _redacted(doc: dict[str, Any]) -> dict[str, Any]:
    """Secrets out of a report: by key in the user-supplied parts (server args, metrics, run
    context), by shape (``hf_...``, ``Bearer ...``) in every string."""
    from .safety import redact

    for key in ("server_args", "metrics", "context"):
        if doc.get(key):
            doc[key] = redact(doc[key])
    return redact(doc, keys=False)  # type: ignore[no-any-return]


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The JSON Schema of report contract v1."""
    text = resources.files("analyzer").joinpath("schema/report-v1.schema.json").read_text()
    return json.loads(text)


def validate_report(doc: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` breaks the report contract."""
    import jsonschema

    jsonschema.validate(doc, report_schema())
