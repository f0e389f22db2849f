"""Advice as data: the recommendation of a finding, chosen for the run's engine and facts.

``advice.toml`` holds ordered entries ``{finding, engines, workloads, when, unless, text}``.
An entry applies when its finding matches, the run's engine is in ``engines`` (``"*"`` = any;
``"generic"`` = engines with no entry of their own for that finding), the workload is in
``workloads`` (``"*"`` = any), every fact in ``when`` is true and none in ``unless``. The texts
of the applying entries are joined in table order; ``{name}`` placeholders are filled from the
finding's values. Every ``--flag`` in an engine's entry exists in that engine
(``engine_flags.toml``, checked by tests/test_advice.py).

    >>> recommend("gemm_compute", "vllm", "serving", {"gemm_low_precision": True}, {})  # doctest: +SKIP
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FLAG_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


@lru_cache(maxsize=1)
def advice_table() -> list[dict[str, Any]]:
    """The entries of ``advice.toml`` in order."""
    text = resources.files("analyzer.findings").joinpath("advice.toml").read_text()
    return list(tomllib.loads(text)["advice"])


@lru_cache(maxsize=1)
def engine_flags() -> dict[str, Any]:
    """``engine_flags.toml``: the flags each engine has (with the version range)."""
    text = resources.files("analyzer.findings").joinpath("engine_flags.toml").read_text()
    return tomllib.loads(text)


def _engines_with_own_entry(finding: str) -> set[str]:
    return {e for a in advice_table() if a["finding"] == finding for e in a.get("engines", ["*"])
            if e not in ("*", "generic")}


def applies(entry: Mapping[str, Any], finding: str, engine: str, workload: str,
            facts: Mapping[str, bool]) -> bool:
    """Whether one advice entry applies (rules in the module doc)."""
    if entry["finding"] != finding:
        return False
    engines = entry.get("engines", ["*"])
    if "*" not in engines and engine not in engines:
        if not ("generic" in engines and engine not in _engines_with_own_entry(finding)):
            return False
    workloads = entry.get("workloads", ["*"])
    if "*" not in workloads and workload not in workloads:
        return False
    if not all(facts.get(w, False) for w in entry.get("when", [])):
        return False
    return not any(facts.get(u, False) for u in entry.get("unless", []))


class _Values(dict):
    def __missing__(self, key: str) -> str:
        return "n/a"


def recommend(finding: str, engine: str, workload: str, facts: Mapping[str, bool],
              values: Mapping[str, Any]) -> str:
    """The recommendation text of a finding for this run (may be empty)."""
    vals = _Values({k: _fmt(v) for k, v in values.items()})
    parts = [" ".join(string.Formatter().vformat(a["text"], (), vals).split())
             for a in advice_table() if applies(a, finding, engine, workload, facts)]
    return " ".join(p for p in parts if p)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"
    return "n/a" if v is None else str(v)


def flags_in(text: str) -> list[str]:
    """The engine ``--flags`` a text names (commands quoted in backticks, such as
    `rocm-smi --showtopo`, are other tools' options and not counted)."""
    return FLAG_RE.findall(re.sub(r"`[^`]*`", "", text))


__all__ = ["advice_table", "applies", "engine_flags", "flags_in", "recommend"]
