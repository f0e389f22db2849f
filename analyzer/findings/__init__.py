"""Findings: detectors turn serving figures into ranked ``Finding`` objects.

Ranking rule (docs/methodology.md, "Ranking"): biggest ``time_us`` first, where ``time_us``
is the time the cause costs on the critical (wall) timeline of the representative rank;
ties are broken by id, so the order is deterministic.

    >>> from analyzer.findings import rank_findings, load_thresholds
    >>> rank_findings([])
    []
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

from analyzer.model import Finding

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FINDING_IDS", "load_thresholds", "rank_findings", "severity_for"]

#: Stable ids of the serving findings.
FINDING_IDS: tuple[str, ...] = (
    "prefill_attention",
    "kv_cache_bandwidth",
    "tp_communication",
    "pp_communication",
    "ep_communication",
    "dp_communication",
    "other_communication",
    "pipeline_bubbles",
    "cross_rank_skew",
    "batching_gaps",
    "host_launch_overhead",
    "synchronization",
    "gemm_compute",
    "moe",
    "memcpy",
)


@lru_cache(maxsize=1)
def load_thresholds() -> dict[str, Any]:
    """The thresholds table (``thresholds.toml`` shipped with the package)."""
    text = resources.files("analyzer.findings").joinpath("thresholds.toml").read_text()
    return tomllib.loads(text)


def severity_for(share: float, thresholds: dict[str, Any] | None = None) -> str:
    """Severity of a finding from its share of the wall time."""
    sev = (thresholds or load_thresholds())["severity"]
    for name in ("critical", "high", "medium", "low"):
        if share >= sev[name]:
            return name
    return "info"


def rank_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Biggest time first; ties (to the nanosecond) broken by id."""
    return sorted(findings, key=lambda f: (-round(float(f.time_us), 3), f.id))
