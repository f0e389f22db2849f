"""Kernel taxonomy: one rule engine + ordered rule tables (``rules/*.toml``, package data).

>>> from analyzer.classify import load_rules, classify_names
>>> cats, colls = classify_names(["ncclDevKernel_AllGather_RING_LL", "fused_moe_kernel"],
...                              load_rules())
>>> list(cats), list(colls)
(['communication', 'moe'], ['allgather', ''])

``classify_trace(trace)`` adds the ``category`` column to ``trace.events`` in place and
normalises its ``collective`` column. Only this package matches kernel names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analyzer.classify.engine import (
    MATCH_TYPES,
    Rule,
    RuleSet,
    builtin_rule_files,
    describe_rule,
    load_rules,
)
from analyzer.model import CATEGORIES, COLLECTIVES, Trace

__all__ = [
    "COLLECTIVE_VALUES",
    "MATCH_TYPES",
    "Rule",
    "RuleSet",
    "builtin_rule_files",
    "classify_events",
    "classify_names",
    "classify_trace",
    "default_rules",
    "describe_rule",
    "load_rules",
]

#: Values of the normalised ``collective`` column: "" (not communication) then COLLECTIVES.
COLLECTIVE_VALUES: tuple[str, ...] = ("",) + COLLECTIVES

_CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
_COLL_INDEX = {c: i for i, c in enumerate(COLLECTIVE_VALUES)}
_OTHER = _CAT_INDEX["other"]
_COMM = _CAT_INDEX["communication"]
_BY_KIND = {"memcpy": _CAT_INDEX["memcpy"], "memset": _CAT_INDEX["memset"]}

_DEFAULT: RuleSet | None = None


def default_rules() -> RuleSet:
    """The built-in rules, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rules()
    return _DEFAULT


def _row_category(name_cat: int, kind: str | None) -> int:
    if kind is None or kind == "kernel":
        return name_cat
    return _BY_KIND.get(kind, _OTHER)


def _combine_collective(
    rules: RuleSet, category: int, rule_coll: str, raw_arg: str, is_kernel: bool
) -> tuple[int, str]:
    """Category and collective of one (name, kind, raw arg) combination.

    A known collective arg wins over the name's rule (RCCL ``ncclDevKernel_Generic``,
    ``SendRecv`` kernels that carry ``all_to_allv``); a kernel with a collective arg that no
    rule knows becomes communication; non-kernel rows keep their normalised arg.
    """
    arg = rules.normalize_collective(raw_arg) if raw_arg else ""
    if is_kernel and category == _OTHER and arg:
        category = _COMM
    if category == _COMM:
        if arg and arg != "other":
            return category, arg
        return category, rule_coll or arg or "other"
    if not is_kernel:
        return category, arg
    return category, ""


def classify_names(
    names: Sequence[str],
    rules: RuleSet | None = None,
    kinds: Sequence[str] | None = None,
    collective_args: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(category, collective)`` arrays (object dtype, one entry per name).

    Each unique name goes through the rules once. ``kinds`` (event kinds, optional): memcpy
    and memset rows get those categories, rows of other non-kernel kinds get "other".
    ``collective_args`` (raw ``Collective name`` args, optional) refine the collective.
    """
    rules = rules or default_rules()
    n = len(names)
    if kinds is not None and len(kinds) != n:
        raise ValueError("kinds must have one entry per name")
    if collective_args is not None and len(collective_args) != n:
        raise ValueError("collective_args must have one entry per name")
    cats = np.empty(n, dtype=object)
    colls = np.empty(n, dtype=object)
    memo: dict[tuple[str, str | None, str], tuple[str, str]] = {}
    for i, name in enumerate(names):
        kind = None if kinds is None else str(kinds[i])
        raw = "" if collective_args is None else str(collective_args[i] or "")
        key = (name, kind, raw)
        hit = memo.get(key)
        if hit is None:
            name_cat, rule_coll = rules.classify(str(name))
            cat = _row_category(_CAT_INDEX[name_cat], kind)
            is_kernel = kind is None or kind == "kernel"
            cat, coll = _combine_collective(rules, cat, rule_coll, raw, is_kernel)
            hit = memo[key] = (CATEGORIES[cat], coll)
        cats[i], colls[i] = hit
    return cats, colls


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 = missing) and the unique values of a column."""
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    return col.cat.codes.to_numpy(np.int64), [str(c) for c in col.cat.categories]


def classify_events(events: pd.DataFrame, rules: RuleSet | None = None) -> pd.DataFrame:
    """``events`` with ``category`` and a normalised ``collective`` (a new DataFrame).

    Vectorised: unique names (the Categorical's categories) are classified once and the
    result is joined back through the codes; the collective is resolved once per unique
    (name, kind, raw collective) combination. Rules for rows:

    - ``kernel`` rows: the name's rule; a kernel with a collective arg but no rule becomes
      ``communication``;
    - ``memcpy`` / ``memset`` rows: ``memcpy`` / ``memset`` whatever their name;
    - every other kind (host ops, runtime calls, annotations): ``other``; their collective
      arg (e.g. on ``record_param_comms``) is still normalised.
    """
    rules = rules or default_rules()
    n = len(events)
    name_codes, names = _codes(events["name"])
    kind_codes, kinds = _codes(events["kind"])
    if "collective" in events.columns:
        arg_codes, args = _codes(events["collective"])  # missing (-1) reads as ""
    else:
        arg_codes, args = np.zeros(n, np.int64), [""]

    # one rule lookup per unique name of a kernel row (other kinds never use the name's
    # category); index len(names) stands for a missing name
    per_name: list[tuple[str, str]] = [("other", "")] * (len(names) + 1)
    if "kernel" in kinds:
        on_kernels = np.unique(name_codes[kind_codes == kinds.index("kernel")])
        for code in on_kernels[on_kernels >= 0].tolist():
            per_name[code] = rules.classify(names[code])
    name_cat = np.array([_CAT_INDEX[c] for c, _ in per_name], dtype=np.int64)
    name_codes = np.where(name_codes < 0, len(names), name_codes)
    kind_codes = np.where(kind_codes < 0, len(kinds), kind_codes)
    arg_codes = np.where(arg_codes < 0, len(args), arg_codes)
    kinds_ext = kinds + [""]
    args_ext = args + [""]

    # unique (name, kind, arg) triples -> (category, collective)
    n_k, n_a = len(kinds_ext), len(args_ext)
    combo = (name_codes * n_k + kind_codes) * n_a + arg_codes
    uniq, inverse = np.unique(combo, return_inverse=True)
    u_cat = np.empty(len(uniq), dtype=np.int8)
    u_coll = np.empty(len(uniq), dtype=np.int8)
    for j, c in enumerate(uniq.tolist()):
        nm, rest = divmod(c, n_k * n_a)
        kd, ag = divmod(rest, n_a)
        kind = kinds_ext[kd]
        cat = _row_category(int(name_cat[nm]), kind)
        cat, coll = _combine_collective(rules, cat, per_name[nm][1], args_ext[ag], kind == "kernel")
        u_cat[j], u_coll[j] = cat, _COLL_INDEX[coll]
    out = events.copy()
    inverse = inverse.reshape(-1)
    out["category"] = pd.Categorical.from_codes(u_cat[inverse], categories=list(CATEGORIES))
    out["collective"] = pd.Categorical.from_codes(
        u_coll[inverse], categories=list(COLLECTIVE_VALUES)
    )
    return out


def classify_trace(trace: Trace, rules: RuleSet | None = None) -> None:
    """Classify ``trace.events`` in place (replaces the DataFrame with ``classify_events``'s).

    Adds ``category`` (Categorical over ``CATEGORIES``) and rewrites ``collective`` as a
    Categorical over ``COLLECTIVE_VALUES`` ("" for non-communication GPU rows).
    """
    trace.events = classify_events(trace.events, rules)
