"""Number formatting shared by the text, Markdown and HTML renderers."""

from __future__ import annotations


def fmt_us(us: float | None) -> str:
    """Human time from microseconds: 812 us, 12.4 ms, 3.21 s."""
    if us is None:
        return "-"
    if abs(us) >= 1e6:
        return f"{us / 1e6:.2f} s"
    if abs(us) >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


def fmt_share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def short_name(name: str, width: int = 70) -> str:
    """Kernel names can be kilobytes of C++ templates: keep the head."""
    name = " ".join(name.split())
    return name if len(name) <= width else name[: width - 1] + "…"


def evidence_lines(evidence: dict, limit: int = 8) -> list[str]:
    """Flatten a finding's evidence into short 'key: value' lines."""
    out = []
    for key, value in evidence.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (list, tuple)):
            text = ", ".join(str(v) if not isinstance(v, float) else f"{v:.4g}" for v in value[:5])
            if len(value) > 5:
                text += f", … ({len(value)} in all)"
        elif isinstance(value, dict):
            text = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(value.items())[:6]
            )
        else:
            text = str(value)
        out.append(f"{key}: {short_name(text, 160)}")
        if len(out) >= limit:
            break
    return out
