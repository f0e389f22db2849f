"""Compare two runs: ``trace-analyzer diff BASE NEW`` and the app's Compare page.

    >>> from analyzer.diff import diff_paths
    >>> d = diff_paths("base/", "new.json")                      # doctest: +SKIP
    >>> d["headline"]                                            # doctest: +SKIP

``compare`` works on two report dicts; ``diff_paths`` reads or analyses each side first
(about the cost of two analyses). The diff is a JSON contract of its own (``kind: "diff"``,
``schema_version`` 1.x), documented in docs/report-schema.md and pinned by
``analyzer/schema/diff-v1.schema.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

#: names imported on first use (``trace-analyzer --help`` imports ``analyzer.diff.cli``,
#: which must not pull in numpy and pandas)
_LAZY = {"DIFF_SCHEMA_VERSION": "compute", "compare": "compute", "delta": "compute",
         "Gate": "gate", "check_gates": "gate", "parse_gate": "gate", "valid_names": "gate",
         "is_report": "inputs", "load_side": "inputs", "read_report": "inputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def diff_paths(base: str | Path, new: str | Path, **analyze_kwargs: Any) -> dict[str, Any]:
    """Read or analyse both sides and compare them."""
    from .compute import compare
    from .inputs import load_side

    db, sb = load_side(base, **analyze_kwargs)
    dn, sn = load_side(new, **analyze_kwargs)
    return compare(db, dn, labels=(str(base), str(new)), sources=(sb, sn))


@lru_cache(maxsize=1)
def diff_schema() -> dict[str, Any]:
    """The JSON Schema of the diff contract v1."""
    return json.loads(resources.files("analyzer").joinpath("schema/diff-v1.schema.json").read_text())


def validate_diff(doc: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` breaks the diff contract."""
    import jsonschema

    jsonschema.validate(doc, diff_schema())


__all__ = ["DIFF_SCHEMA_VERSION", "Gate", "check_gates", "compare", "delta", "diff_paths",
           "diff_schema", "is_report", "load_side", "parse_gate", "read_report", "valid_names",
           "validate_diff"]
