"""Docs that test themselves: every analyze option and every --fail-on name is documented."""

from __future__ import annotations

from analyzer.cli import build_parser
from analyzer.model import CATEGORIES


def test_every_analyze_option_is_in_the_user_guide(repo_root):
    guide = (repo_root / "docs" / "user-guide.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    analyze = sub.choices["analyze"]
    for action in analyze._actions:
        for opt in action.option_strings:
            if opt in ("-h", "--help"):
                continue
            assert f"`{opt}" in guide or f"{opt}`" in guide or f", `{opt}`" in guide, opt
    for name in ("idle", "busy", "comm_exposed", "finding:<id>", *CATEGORIES):
        assert f"`{name}`" in guide, name


def test_every_subcommand_is_in_the_user_guide(repo_root):
    guide = (repo_root / "docs" / "user-guide.md").read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"trace-analyzer {name}" in guide, name


def test_every_input_limit_is_in_the_user_guide(repo_root):
    from dataclasses import fields

    from analyzer.readers.limits import Limits

    guide = (repo_root / "docs" / "user-guide.md").read_text()
    for f in fields(Limits):
        assert f"`{f.name}`" in guide, f.name
