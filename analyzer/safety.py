"""Untrusted strings made safe for their sink, and secrets kept out of every output.

Traces, server args and metrics come from other people's machines, so:

* :func:`redact` replaces secrets with ``"[REDACTED]"`` in any JSON-like value: the values
  of keys whose words include token/key/secret/password/auth/credential (``hf_token``,
  ``api_key``, ``admin_api_key``, ``authToken``; not ``max_total_tokens``), and strings
  shaped like known credentials anywhere (``hf_...``, ``sk-...``, ``ghp_...``, ``AKIA...``,
  ``Bearer ...``, JWTs, ``user:password@`` in URLs);
* :func:`terminal_safe` escapes control characters (ANSI/OSC sequences, newlines) so a
  kernel or file name cannot drive the terminal or split a one-line error;
* :func:`markdown_safe` escapes what would make Markdown live (links, images, raw HTML,
  autolinked URLs) while keeping the text readable.

    >>> redact({"api_key": "abc", "tp_size": 2, "note": "use hf_abcdefghijklmnopqrstuv"})
    {'api_key': '[REDACTED]', 'tp_size': 2, 'note': 'use [REDACTED]'}
    >>> terminal_safe("k\\x1b[31mred\\nx")
    'k\\\\x1b[31mred\\\\nx'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "markdown_safe", "redact", "redact_text", "terminal_safe"]

REDACTED = "[REDACTED]"

_SECRET_WORDS = frozenset(
    ["token", "key", "secret", "password", "passwd", "pwd", "auth", "authorization", "credential", "credentials", "apikey", "passphrase", "cookie", "session", "private"]
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_TOKEN_SHAPES = re.compile(
    r"(?:"
    r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{16,}"  # Hugging Face
    r"|(?<![A-Za-z0-9])sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic style
    r"|(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{20,}|(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"  # AWS access key id
    r"|(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?<![A-Za-z0-9])glpat-[A-Za-z0-9_\-]{16,}"  # GitLab
    r"|(?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{30,}"  # Google API key
    r"|(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r"|\b(?:Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{8,}"  # Authorization header values
    r")"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)
_SECRET_ARG = re.compile(
    r"(--?[A-Za-z0-9_\-]*(?:token|key|secret|password|passwd|auth|credential)[A-Za-z0-9_\-]*"
    r"(?:=|\s+))(\S+)",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (by its words: ``hf_token``, ``apiKey``...)."""
    if not isinstance(key, str):
        return False
    words = {w.lower() for w in _WORD.findall(key)}
    if words & _SECRET_WORDS:
        return True
    flat = key.lower().replace("-", "").replace("_", "")
    return flat.endswith(("apikey", "accesskey", "secretkey", "authtoken", "password"))


def redact_text(text: str) -> str:
    """``text`` with credential-shaped substrings (and ``--api-key X`` values) replaced."""
    if not text or len(text) < 8:
        return text
    out = _TOKEN_SHAPES.sub(REDACTED, text)
    out = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", out)
    return _SECRET_ARG.sub(lambda m: m.group(1) + REDACTED, out)


def redact(value: Any, *, keys: bool = True) -> Any:
    """A copy of a JSON-like ``value`` with secrets replaced (see the module docstring).

    ``keys=False`` redacts credential-shaped strings only (for documents whose own keys,
    such as ``tokens_per_s``, are not user data).
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if keys and is_secret_key(k) and v not in (None, "", False):
                out[k] = REDACTED if not isinstance(v, (Mapping, list, tuple)) else _all(v)
            else:
                out[redact_text(k) if isinstance(k, str) else k] = redact(v, keys=keys)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v, keys=keys) for v in value]
    return value


def _all(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_all(v) for v in value]
    return REDACTED


# ------------------------------------------------------------------------------ sinks

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """Control characters (C0, DEL, C1, bidi overrides) written as ``\\xNN`` escapes."""

    def esc(m: re.Match[str]) -> str:
        c = m.group()
        if keep_newlines and c == "\n":
            return c
        if c in _NAMED:
            return _NAMED[c]
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _CONTROL.sub(esc, text)


_MD_LIVE = re.compile(r"([\\\[\]<>])")
_AUTOLINK = re.compile(r"(?i)(://|\bwww\.)")


def break_autolinks(text: str) -> str:
    """``http://x`` / ``www.x`` with a zero-width space inside, so no renderer links them."""
    return _AUTOLINK.sub(lambda m: m.group()[:-1] + "\u200b" + m.group()[-1], text)


def markdown_safe(text: str) -> str:
    """Text that Markdown renders as typed: no link, image, HTML or autolinked URL."""
    return break_autolinks(_MD_LIVE.sub(r"\\\1", terminal_safe(text)))


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a JSON-like value with ``fn`` applied to every string value (not keys)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(map_strings(v, fn) for v in value)
    return value
