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

    def regex_body(self) -> str:
        """This rule as a regex meant for ``re.match`` (anchored at the start)."""
        if self.match == "prefix":
            body = re.escape(self.pattern)
        elif self.match == "contains":
            body = r"(?s:.*?)" + re.escape(self.pattern)
        else:  # regex: search semantics
            body = r"(?s:.*?)(?:" + self.pattern + ")"
        return f"(?i:{body})" if self.ignore_case else body


class _PatternTable:
    """Ordered prefix/contains/regex rules compiled into one alternation (first rule wins).

    Each rule becomes ``(?P<rN>...)``, anchored with ``re.match``: alternatives are tried in
    order at position 0 and each scans the whole name, so the first rule (file order) that
    matches anywhere wins. Tables whose regexes hold their own groups (which would break the
    numbering) are matched rule by rule instead.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._combined: re.Pattern[str] | None = None
        self._each: tuple[re.Pattern[str], ...] = ()
        if not self.rules:
            return
        bodies = [r.regex_body() for r in self.rules]
        each = tuple(re.compile(b) for b in bodies)
        if any(p.groups for p in each):
            self._each = each
        else:
            self._combined = re.compile("|".join(f"(?P<r{i}>{b})" for i, b in enumerate(bodies)))

    def find(self, name: str) -> Rule | None:
        if self._combined is not None:
            m = self._combined.match(name)
            if m is None:
                return None
            key = m.lastgroup
            assert key is not None
            return self.rules[int(key[1:])]
        for rule, pat in zip(self.rules, self._each):
            if pat.match(name):
                return rule
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
    builtin_rules: list[Rule] = []
    builtin_aliases: list[tuple[str, str, str]] = []
    for source, text in builtin_rule_files():
        rules, aliases = _parse_file(source, text)
        builtin_rules += rules
        builtin_aliases += aliases
    layers = [_Layer("builtin", builtin_rules)]
    alias_layers = [builtin_aliases]
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
