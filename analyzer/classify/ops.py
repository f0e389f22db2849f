"""Operator families for the roofline: CPU op names -> (family, formula), rules as data.

    >>> fam = op_families(["aten::mm", "aiter::mha_batch_prefill", "aten::view"])
    >>> [f.family for f in fam]
    ['gemm', 'attention', '']

The table is ``op_families.toml`` beside this module (first match wins: exact, prefix,
regex, in file order). Unique names are matched once; callers join the result back.
``runtime_names()`` gives the runtime API names the roofline tells apart (graph launches,
capture begin/end, kernel launches).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class OpFamily:
    """What the roofline counts for one op name: ``family`` ("" when none), the ``formula``
    and, for ops that cannot be counted from their inputs, the ``reason``."""

    family: str
    formula: str
    reason: str = ""


_NONE = OpFamily("", "")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("analyzer.classify").joinpath("op_families.toml").read_text("utf-8")
    return tomllib.loads(text)


@functools.lru_cache(maxsize=1)
def _rules() -> tuple[tuple[str, Any, OpFamily], ...]:
    out = []
    for r in _table()["op"]:
        fam = OpFamily(r["family"], r["formula"], r.get("reason", ""))
        if r["match"] == "exact":
            out.append(("exact", frozenset(r["names"]), fam))
        elif r["match"] == "prefix":
            out.append(("prefix", tuple(r["names"]), fam))
        else:
            out.append(("regex", re.compile("|".join(f"(?:{p})" for p in r["patterns"])), fam))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def op_family(name: str) -> OpFamily:
    """The family of one op name (cached)."""
    for how, pat, fam in _rules():
        if how == "exact" and name in pat:
            return fam
        if how == "prefix" and name.startswith(pat):
            return fam
        if how == "regex" and pat.search(name):
            return fam
    return _NONE


def op_families(names: Sequence[str]) -> list[OpFamily]:
    """The family of each name (match unique names, then look them up)."""
    return [op_family(str(n)) for n in names]


def runtime_names() -> dict[str, set[str]]:
    """``graph_launch`` / ``begin_capture`` / ``end_capture`` / ``launch`` runtime API names."""
    return {k: set(v) for k, v in _table()["runtime"].items()}


def runtime_role(names: Sequence[str]) -> list[str]:
    """For each runtime API name: "graph_launch", "launch", "begin_capture", "end_capture" or ""."""
    table = runtime_names()
    out = []
    for n in names:
        out.append(next((role for role, s in table.items() if str(n) in s), ""))
    return out


__all__ = ["OpFamily", "op_families", "op_family", "runtime_names", "runtime_role"]
