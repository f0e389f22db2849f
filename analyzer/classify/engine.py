"""The rule engine: ordered kernel-name rules (TOML data) -> category and collective.

Rule files hold an ordered list of ``[[rule]]`` tables (see docs/taxonomy.md)::

    [[rule]]
    match = "contains"            # exact | prefix | contains | regex
    pattern = "ncclKernel_AllReduce"   # a string or a list of strings
    category = "communication"    # one of analyzer.model.CATEGORIES
    collective = "allreduce"      # optional, communication only
    note = "NCCL"                 # optional family name
    ignore_case = false           # optional
    fallback = false              # optional: only tried after every non-fallback rule

Precedence: rule files form layers (the built-in files first, then each ``--rules`` file).
The last layer that matches wins; inside a layer, exact rules are tried first, then the
prefix/contains/regex rules in file order (first hit wins). Fallback rules are tried the
same way once no ordinary rule of any layer matched; then the name is ``"other"``.

Collective names from NCCL/RCCL args ("allreduce", "_allgather_base", "all_to_allv", ...)
are normalised by ordered ``[[collective_alias]]`` tables on a key made of the lowercase
letters and digits of the name.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from analyzer.model import CATEGORIES, COLLECTIVES, BadInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MATCH_TYPES: tuple[str, ...] = ("exact", "prefix", "contains", "regex")
RULE_KEYS: frozenset[str] = frozenset(
    {"match", "pattern", "category", "collective", "note", "ignore_case", "fallback"}
)
ALIAS_KEYS: frozenset[str] = frozenset({"match", "key", "collective"})
FILE_KEYS: frozenset[str] = frozenset({"rule", "collective_alias", "meta"})
BUILTIN_PREFIX = "builtin:"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Rule:
    """One classification rule (one pattern; a list in the file becomes several rules)."""

    match: str
    pattern: str
    category: str
    collective: str = ""
    note: str = ""
    ignore_case: bool = False
    fallback: bool = False
    source: str = ""  # "file#index" for describe_rule


_META = frozenset(".^$*+?{}[]\\|()")


def required_literal(pattern: str) -> str:
    """The longest ASCII literal that every match of regex ``pattern`` contains ("" if unsure).

    Used as a cheap prefilter: ``hint.lower() in name.lower()`` is necessary for a match, so
    the regex runs only on names that pass. Top-level alternation or verbose mode give "".
    """
    try:
        if re.compile(pattern).flags & re.VERBOSE:
            return ""
    except re.error:
        return ""
    runs: list[str] = []
    cur: list[str] = []
    depth, i, n, in_class = 0, 0, len(pattern), False

    def cut() -> None:
        if cur:
            runs.append("".join(cur))
            cur.clear()

    while i < n:
        c = pattern[i]
        if c == "\\":
            cut()
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            i += 1
            continue
        if c == "[":
            cut()
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] == "^" else 1
            i += 1 if pattern[i : i + 1] == "]" else 0  # "[]...]": that first ] is literal
            continue
        if c == "{" and depth == 0:  # quantifier: the previous character is optional
            if cur:
                cur.pop()
            cut()
            close = pattern.find("}", i)
            i = n if close < 0 else close + 1
            continue
        if c in "()":
            cut()
            depth += 1 if c == "(" else -1
        elif c == "|":
            if depth == 0:
                return ""
        elif depth > 0:
            pass
        elif c in "?*":  # the previous character is optional
            if cur:
                cur.pop()
            cut()
        elif c in "+.^$" or not c.isascii():
            cut()
        else:
            cur.append(c)
        i += 1
    cut()
    return max(runs, key=len, default="").lower()


class _PatternTable:
    """Ordered prefix/contains/regex rules of one layer, compiled once (first rule wins).

    Literal rules (prefix, contains, and regexes without metacharacters) are plain ``str``
    tests; every other regex is compiled once and guarded by its required literal
    (``required_literal``), so most rules cost one substring test per name.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        # (rule index, op, needle, compiled regex or None); op: "in", "in_ci", "pre", "pre_ci", "re"
        ops: list[tuple[int, str, str, re.Pattern[str] | None]] = []
        for k, r in enumerate(self.rules):
            literal = r.match != "regex" or not (_META & set(r.pattern))
            if literal:
                op = "pre" if r.match == "prefix" else "in"
                needle = r.pattern.lower() if r.ignore_case else r.pattern
                ops.append((k, op + "_ci" if r.ignore_case else op, needle, None))
            else:
                flags = re.IGNORECASE if r.ignore_case else 0
                ops.append((k, "re", required_literal(r.pattern), re.compile(r.pattern, flags)))
        self._ops = tuple(ops)

    def find(self, name: str) -> Rule | None:
        lower = name.lower()
        for k, op, needle, rx in self._ops:
            if op == "in":
                hit = needle in name
            elif op == "in_ci":
                hit = needle in lower
            elif op == "pre":
                hit = name.startswith(needle)
            elif op == "pre_ci":
                hit = lower.startswith(needle)
            else:
                hit = needle in lower and rx is not None and rx.search(name) is not None
            if hit:
                return self.rules[k]
        return None


class _Layer:
    """The rules of one source (the built-ins, or one user file), ready to match."""

    def __init__(self, source: str, rules: Sequence[Rule]) -> None:
        self.source = source
        self.rules = tuple(rules)
        self.exact: dict[str, Rule] = {}
        self.exact_ci: dict[str, Rule] = {}
        self.fb_exact: dict[str, Rule] = {}
        self.fb_exact_ci: dict[str, Rule] = {}
        ordinary: list[Rule] = []
        fallback: list[Rule] = []
        for r in self.rules:
            if r.match == "exact":
                if r.fallback:
                    table = self.fb_exact_ci if r.ignore_case else self.fb_exact
                else:
                    table = self.exact_ci if r.ignore_case else self.exact
                table.setdefault(r.pattern.lower() if r.ignore_case else r.pattern, r)
            else:
                (fallback if r.fallback else ordinary).append(r)
        self.patterns = _PatternTable(ordinary)
        self.fb_patterns = _PatternTable(fallback)

    def find(self, name: str, fallback: bool) -> Rule | None:
        exact, exact_ci, pats = (
            (self.fb_exact, self.fb_exact_ci, self.fb_patterns)
            if fallback
            else (self.exact, self.exact_ci, self.patterns)
        )
        r = exact.get(name)
        if r is None and exact_ci:
            r = exact_ci.get(name.lower())
        if r is None:
            r = pats.find(name)
        return r


@dataclass
class RuleSet:
    """Every loaded rule layer plus the collective aliases; build it with ``load_rules``.

    ``classify(name)`` memoises per name, so classifying a name twice costs a dict lookup.
    """

    layers: tuple[_Layer, ...]
    aliases: tuple[tuple[str, str, str], ...]  # (match, key, collective), later files first
    _cache: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    _alias_cache: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """All rules, built-ins first, in load order."""
        return tuple(r for layer in self.layers for r in layer.rules)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(layer.source for layer in self.layers)

    def match(self, name: str) -> Rule | None:
        """The rule that decides ``name`` (later layers first), or None (-> "other")."""
        for fallback in (False, True):
            for layer in reversed(self.layers):
                r = layer.find(name, fallback)
                if r is not None:
                    return r
        return None

    def classify(self, name: str) -> tuple[str, str]:
        """``(category, collective)`` of a kernel name; collective is "" unless communication."""
        hit = self._cache.get(name)
        if hit is None:
            r = self.match(name)
            if r is None:
                hit = ("other", "")
            elif r.category == "communication":
                hit = (r.category, r.collective or "other")
            else:
                hit = (r.category, "")
            self._cache[name] = hit
        return hit

    def normalize_collective(self, raw: str) -> str:
        """Map a raw collective name (``"_allgather_base"``) to ``COLLECTIVES``; "" stays ""."""
        hit = self._alias_cache.get(raw)
        if hit is None:
            key = _NON_ALNUM.sub("", raw.lower())
            hit = "" if not key else "other"
            for match, alias, coll in self.aliases:
                if (key == alias) if match == "exact" else key.startswith(alias):
                    hit = coll
                    break
            self._alias_cache[raw] = hit
        return hit


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _bad(source: str, msg: str) -> BadInputError:
    return BadInputError(f"rule file {source}: {msg}")


def _parse_rule(source: str, i: int, raw: Any) -> list[Rule]:
    where = f"rule #{i + 1}"
    if not isinstance(raw, dict):
        raise _bad(source, f"{where} is not a table")
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise _bad(source, f"{where} has unknown key(s) {sorted(unknown)}")
    match = raw.get("match", "contains")
    if match not in MATCH_TYPES:
        raise _bad(source, f"{where} has match={match!r}; expected one of {MATCH_TYPES}")
    category = raw.get("category")
    if category not in CATEGORIES:
        raise _bad(source, f"{where} has unknown category {category!r}")
    collective = raw.get("collective", "")
    if collective and collective not in COLLECTIVES:
        raise _bad(source, f"{where} has unknown collective {collective!r}")
    if collective and category != "communication":
        raise _bad(source, f"{where} sets a collective on category {category!r}")
    patterns = raw.get("pattern")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not patterns:
        raise _bad(source, f"{where} needs pattern = a string or a non-empty list of strings")
    for key in ("ignore_case", "fallback"):
        if not isinstance(raw.get(key, False), bool):
            raise _bad(source, f"{where}: {key} must be true or false")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise _bad(source, f"{where}: note must be a string")
    out = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise _bad(source, f"{where} has an empty or non-string pattern")
        ignore_case = bool(raw.get("ignore_case", False))
        if match == "regex":
            if p.startswith("(?i)"):
                p, ignore_case = p[4:], True
            try:
                re.compile(p)
            except re.error as e:
                raise _bad(source, f"{where} has a bad regex {p!r}: {e}") from None
        out.append(
            Rule(
                match=match,
                pattern=p,
                category=category,
                collective=collective,
                note=note,
                ignore_case=ignore_case,
                fallback=bool(raw.get("fallback", False)),
                source=f"{source}#{i + 1}",
            )
        )
    return out


def _parse_file(source: str, text: str) -> tuple[list[Rule], list[tuple[str, str, str]]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _bad(source, f"TOML error: {e}") from None
    unknown = set(doc) - FILE_KEYS
    if unknown:
        raise _bad(source, f"unknown top-level key(s) {sorted(unknown)}; expected [[rule]]")
    raw_rules = doc.get("rule", [])
    raw_aliases = doc.get("collective_alias", [])
    if not isinstance(raw_rules, list) or not isinstance(raw_aliases, list):
        raise _bad(source, "rule and collective_alias must be arrays of tables ([[rule]])")
    rules = [r for i, raw in enumerate(raw_rules) for r in _parse_rule(source, i, raw)]
    aliases = []
    for i, a in enumerate(raw_aliases):
        if not isinstance(a, dict) or set(a) - ALIAS_KEYS:
            raise _bad(source, f"collective_alias #{i + 1} must have only {sorted(ALIAS_KEYS)}")
        match, key, coll = a.get("match", "prefix"), a.get("key"), a.get("collective")
        if match not in ("exact", "prefix") or not isinstance(key, str) or not key:
            raise _bad(source, f"collective_alias #{i + 1} needs match exact|prefix and a key")
        if coll not in COLLECTIVES:
            raise _bad(source, f"collective_alias #{i + 1} has unknown collective {coll!r}")
        aliases.append((match, _NON_ALNUM.sub("", key.lower()), coll))
    return rules, aliases


def builtin_rule_files() -> list[tuple[str, str]]:
    """``(source, text)`` of the built-in rule files, in load (file name) order."""
    root = resources.files("analyzer.classify").joinpath("rules")
    files = sorted((p for p in root.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)
    return [(BUILTIN_PREFIX + p.name, p.read_text(encoding="utf-8")) for p in files]


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[_Layer, tuple[tuple[str, str, str], ...]]:
    """The built-in layer, parsed and compiled once per process (layers are immutable)."""
    rules: list[Rule] = []
    aliases: list[tuple[str, str, str]] = []
    for source, text in builtin_rule_files():
        r, a = _parse_file(source, text)
        rules += r
        aliases += a
    return _Layer("builtin", rules), tuple(aliases)


def load_rules(extra: Sequence[str | Path] = ()) -> RuleSet:
    """Built-in rules, then each user rule file in ``extra`` (later files take precedence).

    >>> rs = load_rules()
    >>> rs.classify("ncclKernel_AllReduce_RING_LL_Sum_float")
    ('communication', 'allreduce')

    A bad file (TOML error, unknown category or collective, bad regex, unknown key) raises
    ``BadInputError`` with one line naming the file and the rule.
    """
    if isinstance(extra, (str, Path)):
        extra = [extra]
    builtin_layer, builtin_aliases = _builtin()
    layers = [builtin_layer]
    alias_layers = [list(builtin_aliases)]
    for path in extra:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"cannot read rule file {p}: {e}") from None
        rules, aliases = _parse_file(str(p), text)
        layers.append(_Layer(str(p), rules))
        alias_layers.append(aliases)
    flat_aliases = tuple(a for layer in reversed(alias_layers) for a in layer)
    return RuleSet(layers=tuple(layers), aliases=flat_aliases)


def describe_rule(name: str, rules: RuleSet) -> str:
    """One line saying how ``name`` is classified and by which rule (for docs and debugging)."""
    r = rules.match(name)
    if r is None:
        return f"{name!r} -> other (no rule matched)"
    cat, coll = rules.classify(name)
    what = f"{cat}/{coll}" if coll else cat
    note = f", {r.note}" if r.note else ""
    fb = " fallback" if r.fallback else ""
    return f"{name!r} -> {what} by {r.source} ({r.match}{fb} {r.pattern!r}{note})"
