"""Renderers: a report dict in, text out. Figures are built in charts.py, never in Streamlit."""

from __future__ import annotations

from typing import Any, Callable

from .markdown import render_markdown
from .text import render_text


def render_json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _render_html(doc: dict[str, Any]) -> str:
    from .html import render_html

    return render_html(doc)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "text": render_text,
    "markdown": render_markdown,
    "json": render_json,
    "html": _render_html,
}


def render(doc: dict[str, Any], fmt: str) -> str:
    """Render a report dict in one of RENDERERS' formats (untrusted strings made safe for
    the sink: control characters escaped in text, live Markdown escaped in Markdown)."""
    from ..safety import map_strings, markdown_safe, terminal_safe

    if fmt == "text":
        doc = map_strings(doc, terminal_safe)
    elif fmt == "markdown":
        doc = map_strings(doc, markdown_safe)
    try:
        return RENDERERS[fmt](doc)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RENDERERS)}") from None


__all__ = ["render", "render_text", "render_markdown", "render_json", "RENDERERS"]
