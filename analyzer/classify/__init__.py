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


def _present(codes: np.ndarray, size: int) -> np.ndarray:
    """The codes in ``[0, size)`` that occur in ``codes`` (-1 = missing is left out)."""
    return np.flatnonzero(np.bincount(codes[codes >= 0], minlength=size)) if codes.size else codes[:0]


def _rated_kind(kind_codes: np.ndarray, kinds: list[str]) -> str:
    """The kind whose names the rules classify: ``kernel``, or ``cpu_op`` in a trace that has
    no GPU activity at all (recorded on CPU), where top-level operators stand in for kernels."""
    present = {kinds[c] for c in _present(kind_codes, len(kinds)).tolist()}
    if present & {"kernel", "memcpy", "memset"}:
        return "kernel"
    return "cpu_op" if "cpu_op" in present else "kernel"


def _resolve(
    rules: RuleSet,
    name_codes: np.ndarray,
    names: list[str],
    kind_codes: np.ndarray,
    kinds: list[str],
    arg_codes: np.ndarray,
    args: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row indices into CATEGORIES and COLLECTIVE_VALUES (int8) from coded columns
    (-1 = missing).

    The rules run once per unique name that appears on a kernel row (other kinds never use
    the name's category). Rows are then filled from small lookup tables indexed by the codes
    (the last slot of each table is the missing value, so code -1 lands there):

    - rows of other kinds: category from the kind, collective from the normalised arg;
    - kernel rows without a collective arg: category and collective from the name;
    - kernel rows with a collective arg (communication, few): once per unique (name, arg).
    """
    per_name: list[tuple[str, str]] = [("other", "")] * (len(names) + 1)  # last: missing
    rated = _rated_kind(kind_codes, kinds)
    kinds_ext, args_ext = kinds + [""], args + [""]
    is_rated_kind = np.array([k == rated for k in kinds_ext], dtype=bool)
    rated_rows = is_rated_kind[kind_codes]
    for code in _present(name_codes[rated_rows], len(names)).tolist():
        per_name[code] = rules.classify(names[code])
    # kind -> category of rows that are not classified by name ("kernel" never lands here)
    kind_cat = np.array([_row_category(_OTHER, k) for k in kinds_ext], dtype=np.int8)
    arg_norm = [rules.normalize_collective(a) if a else "" for a in args_ext]
    arg_coll = np.array([_COLL_INDEX[a] for a in arg_norm], dtype=np.int8)
    has_arg = np.array([bool(a) for a in args_ext], dtype=bool)
    name_cat = np.empty(len(per_name), dtype=np.int8)
    name_coll = np.empty(len(per_name), dtype=np.int8)
    for nm, (cat_name, rule_coll) in enumerate(per_name):
        cat, coll = _combine_collective(rules, _CAT_INDEX[cat_name], rule_coll, "", True)
        name_cat[nm], name_coll[nm] = cat, _COLL_INDEX[coll]
    cat_idx = np.where(rated_rows, name_cat[name_codes], kind_cat[kind_codes])
    coll_idx = np.where(rated_rows, name_coll[name_codes], arg_coll[arg_codes])
    special = np.flatnonzero(rated_rows & has_arg[arg_codes])
    if special.size:
        nm_codes = name_codes[special].astype(np.int64)
        nm_codes[nm_codes < 0] = len(names)
        n_a = len(args_ext)
        uniq, inverse = np.unique(nm_codes * n_a + arg_codes[special], return_inverse=True)
        u_cat = np.empty(len(uniq), dtype=np.int8)
        u_coll = np.empty(len(uniq), dtype=np.int8)
        for j, c in enumerate(uniq.tolist()):
            nm, ag = divmod(c, n_a)
            cat_name, rule_coll = per_name[nm]
            cat, coll = _combine_collective(rules, _CAT_INDEX[cat_name], rule_coll, args_ext[ag], True)
            u_cat[j], u_coll[j] = cat, _COLL_INDEX[coll]
        inverse = inverse.reshape(-1)
        cat_idx[special] = u_cat[inverse]
        coll_idx[special] = u_coll[inverse]
    return cat_idx, coll_idx


def _factorize(values: Sequence[str] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    return codes.astype(np.int64), [str(u) for u in uniques]


def classify_names(
    names: Sequence[str],
    rules: RuleSet | None = None,
    kinds: Sequence[str] | None = None,
    collective_args: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(category, collective)`` arrays (object dtype, one entry per name).

    Vectorised: each unique name goes through the rules once. ``kinds`` (event kinds,
    optional, default all "kernel"): memcpy and memset rows get those categories, rows of
    other non-kernel kinds "other". ``collective_args`` (raw ``Collective name`` args,
    optional) refine the collective as in ``classify_events``.
    """
    rules = rules or default_rules()
    n = len(names)
    if kinds is not None and len(kinds) != n:
        raise ValueError("kinds must have one entry per name")
    if collective_args is not None and len(collective_args) != n:
        raise ValueError("collective_args must have one entry per name")
    name_codes, uniq_names = _factorize(names)
    if kinds is None:
        kind_codes, uniq_kinds = np.zeros(n, np.int64), ["kernel"]
    else:
        kind_codes, uniq_kinds = _factorize(kinds)
    if collective_args is None:
        arg_codes, uniq_args = np.zeros(n, np.int64), [""]
    else:
        arg_codes, uniq_args = _factorize(collective_args)
    cat_idx, coll_idx = _resolve(
        rules, name_codes, uniq_names, kind_codes, uniq_kinds, arg_codes, uniq_args
    )
    return (
        np.asarray(CATEGORIES, dtype=object)[cat_idx],
        np.asarray(COLLECTIVE_VALUES, dtype=object)[coll_idx],
    )


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 = missing) and the unique values of a column."""
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    return col.cat.codes.to_numpy(), [str(c) for c in col.cat.categories]


def _classified(events: pd.DataFrame, rules: RuleSet | None) -> tuple[pd.Categorical, pd.Categorical]:
    """The ``category`` and normalised ``collective`` columns of ``events``."""
    rules = rules or default_rules()
    name_codes, names = _codes(events["name"])
    kind_codes, kinds = _codes(events["kind"])
    if "collective" in events.columns:
        arg_codes, args = _codes(events["collective"])  # missing (-1) reads as ""
    else:
        arg_codes, args = np.zeros(len(events), np.int64), [""]
    cat_idx, coll_idx = _resolve(rules, name_codes, names, kind_codes, kinds, arg_codes, args)
    return (
        pd.Categorical.from_codes(cat_idx, categories=list(CATEGORIES)),
        pd.Categorical.from_codes(coll_idx, categories=list(COLLECTIVE_VALUES)),
    )


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
    category, collective = _classified(events, rules)
    out = events.copy()
    out["category"] = category
    out["collective"] = collective
    return out


def classify_trace(trace: Trace, rules: RuleSet | None = None) -> None:
    """Classify ``trace.events`` in place (same columns as ``classify_events``'s, no copy of
    the table): adds ``category`` (Categorical over ``CATEGORIES``) and rewrites
    ``collective`` as a Categorical over ``COLLECTIVE_VALUES`` ("" for non-communication
    GPU rows).
    """
    category, collective = _classified(trace.events, rules)
    trace.events["category"] = category
    trace.events["collective"] = collective
