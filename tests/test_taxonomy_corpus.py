"""The labelled kernel corpus (tests/data/kernel_corpus.toml) against the built-in rules.

Every corpus name must get its labelled category and collective, and every built-in rule
must decide at least one corpus name, so that a rule change is always checked by a name it
was written for. See docs/taxonomy.md ("The corpus") for how to add entries.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from analyzer.classify import classify_names, describe_rule, load_rules
from analyzer.classify.engine import Rule, RuleSet, _Layer
from analyzer.model import CATEGORIES, COLLECTIVES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CORPUS = Path(__file__).resolve().parent / "data" / "kernel_corpus.toml"
KEYS = {"name", "category", "collective", "library", "source"}

#: Built-in rules that no corpus name exercises, with the reason. Keep this empty where you
#: can: a rule without a name is a rule nobody checks.
UNEXERCISED: dict[str, str] = {
    "builtin:90_fallback.toml#2": "generic all-gather word for kernels no family knows; every "
    "real all-gather kernel in the corpus has a family rule",
    "builtin:90_fallback.toml#3": "generic reduce-scatter word; every real reduce-scatter "
    "kernel in the corpus has a family rule",
    "builtin:90_fallback.toml#4": "generic all-to-all / nvshmem / nccl / rccl words; the NCCL, "
    "RCCL, NVSHMEM and EP families have their own rules",
    "builtin:90_fallback.toml#5": "generic decode-attention words; every real decode kernel in "
    "the corpus has a family rule",
}


def load_corpus() -> list[dict[str, str]]:
    doc = tomllib.loads(CORPUS.read_text(encoding="utf-8"))
    return list(doc["kernel"])


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, str]]:
    return load_corpus()


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def test_corpus_entries_are_well_formed(corpus: list[dict[str, str]]) -> None:
    assert len(corpus) >= 300
    names = Counter(e["name"] for e in corpus)
    assert [n for n, c in names.items() if c > 1] == []
    for e in corpus:
        assert set(e) <= KEYS and {"name", "category", "library", "source"} <= set(e), e
        assert e["category"] in CATEGORIES and e["category"] not in ("memcpy", "memset"), e
        coll = e.get("collective", "")
        if e["category"] == "communication":
            assert coll in COLLECTIVES, e
        else:
            assert coll == "", e
        assert e["library"].strip() and e["source"].strip(), e


def test_every_corpus_name_is_classified_as_labelled(
    corpus: list[dict[str, str]], rules: RuleSet
) -> None:
    names = [e["name"] for e in corpus]
    cats, colls = classify_names(names, rules)
    bad = []
    for e, cat, coll in zip(corpus, cats, colls):
        want = (e["category"], e.get("collective", ""))
        if (cat, coll) != want:
            bad.append(
                f"[{e['library']}] want {want[0]}/{want[1] or '-'}: {describe_rule(e['name'], rules)}"
            )
    assert not bad, f"{len(bad)} of {len(corpus)} corpus names misclassified:\n" + "\n".join(bad)


def _tables(rules: RuleSet) -> dict[str, list[Rule]]:
    """Built-in kernel rules grouped by [[rule]] table ("file#index"); a pattern list in a
    table is one rule of the file whose patterns are synonyms."""
    out: dict[str, list[Rule]] = {}
    for r in rules.layers[0].rules:
        if "80_cpu_ops.toml#" not in r.source:  # host operators, see tests/test_classify.py
            out.setdefault(r.source, []).append(r)
    return out


def _decided(corpus: list[dict[str, str]], rules: RuleSet) -> set[str]:
    return {r.source for e in corpus if (r := rules.match(e["name"])) is not None}


def test_every_builtin_rule_is_exercised_by_the_corpus(
    corpus: list[dict[str, str]], rules: RuleSet
) -> None:
    """Each built-in [[rule]] table decides at least one corpus name, or is listed in
    UNEXERCISED with the reason (e.g. a generic fallback that no real name reaches).

    The CPU-operator rules (80_cpu_ops.toml) classify host operators of traces without GPU
    activity, not kernel names; tests/test_classify.py covers them.
    """
    decided = _decided(corpus, rules)
    tables = _tables(rules)
    assert set(UNEXERCISED) <= set(tables), "UNEXERCISED names a rule that does not exist"
    missing = [
        f"{src} ({tables[src][0].note or tables[src][0].category}): "
        + ", ".join(repr(r.pattern) for r in tables[src])
        for src in tables
        if src not in decided and src not in UNEXERCISED
    ]
    assert not missing, (
        f"{len(missing)} built-in rules decide no corpus name (add the names they are for to "
        f"{CORPUS.name}, or list them in UNEXERCISED with a reason):\n" + "\n".join(missing)
    )


def test_unexercised_exceptions_are_still_unexercised(
    corpus: list[dict[str, str]], rules: RuleSet
) -> None:
    stale = set(UNEXERCISED) & _decided(corpus, rules)
    assert not stale, f"remove these exercised rules from UNEXERCISED: {sorted(stale)}"


# --------------------------------------------------------------------------------------
# Pattern level: a pattern added to an existing rule needs a corpus name too
# --------------------------------------------------------------------------------------

UNNAMED = Path(__file__).resolve().parent / "data" / "rule_patterns_without_names.txt"


def _pattern_key(r: Rule) -> str:
    """``file match pattern`` (no rule index, so reordering rules does not change it)."""
    return f"{r.source.split(':', 1)[-1].split('#')[0]} {r.match} {r.pattern}"


def _patterns_without_names(corpus: list[dict[str, str]], rules: RuleSet) -> set[str]:
    """Built-in kernel-rule patterns that match no corpus name at all (each tried alone, as
    an ordinary rule, so a pattern shadowed by an earlier one still counts as named)."""
    names = [e["name"] for e in corpus]
    out = set()
    for r in rules.layers[0].rules:
        if "80_cpu_ops.toml#" in r.source:
            continue
        single = _Layer("one", [replace(r, fallback=False)])
        if not any(single.find(n, False) is not None for n in names):
            out.add(_pattern_key(r))
    return out


def _listed() -> set[str]:
    lines = UNNAMED.read_text(encoding="utf-8").splitlines()
    return {ln for ln in lines if ln.strip() and not ln.startswith("#")}


def test_new_rule_patterns_come_with_corpus_names(
    corpus: list[dict[str, str]], rules: RuleSet
) -> None:
    """Every pattern matches some corpus name, except the older ones listed in
    rule_patterns_without_names.txt (kept from before the corpus; the list may only shrink)."""
    new = _patterns_without_names(corpus, rules) - _listed()
    assert not new, (
        "rule patterns that match no corpus name (add the real names they are for to "
        f"{CORPUS.name}):\n" + "\n".join(sorted(new))
    )


def test_patterns_without_names_list_only_shrinks(
    corpus: list[dict[str, str]], rules: RuleSet
) -> None:
    named_now = _listed() - _patterns_without_names(corpus, rules)
    assert not named_now, (
        f"these patterns now match corpus names or no longer exist: remove them from "
        f"{UNNAMED.name}:\n" + "\n".join(sorted(named_now))
    )
