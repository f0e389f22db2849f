"""Each side of a diff: a saved JSON report (detected by content) or anything ``analyze`` reads.

    >>> doc, source = load_side("report.json")                  # doctest: +SKIP
    >>> source                                                   # doctest: +SKIP
    'report'
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BadInputError

_PEEK = 4096


def _peek(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(_PEEK)
    except (OSError, EOFError):
        return b""


def is_report(obj: Any) -> bool:
    """A trace-analyzer report: a JSON object with ``schema_version`` and ``tool.name``."""
    return (isinstance(obj, Mapping) and "schema_version" in obj
            and isinstance(obj.get("tool"), Mapping) and obj["tool"].get("name") == "trace-analyzer"
            and "summary" in obj)


def read_report(path: Path) -> dict[str, Any] | None:
    """The report in ``path`` when it is one (a cheap look at its start first), else None."""
    if not path.is_file() or not path.name.lower().endswith((".json", ".json.gz")):
        return None
    head = _peek(path).lstrip()
    if not head.startswith(b"{") or b'"schema_version"' not in head or b"trace-analyzer" not in head:
        return None
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read report {path}: {exc}") from None
    if isinstance(doc, Mapping) and doc.get("kind") == "diff":
        raise BadInputError(f"{path} is a diff, not a report: give a report or traces")
    return doc if is_report(doc) else None


def load_side(path: str | Path, **analyze_kwargs: Any) -> tuple[dict[str, Any], str]:
    """``(report dict, "report" | "trace")`` for one side of a diff."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"no such file or directory: {path}")
    doc = read_report(p)
    if doc is not None:
        return doc, "report"
    from ..api import analyze

    return analyze([p], **analyze_kwargs).to_dict(), "trace"
