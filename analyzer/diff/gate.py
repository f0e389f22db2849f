"""``--fail-on`` for ``trace-analyzer diff``: regression gates over a diff dict.

    NAME OP VALUE      OP: > >= < <=
    VALUE: +5% (relative change), +2ms / -300us / +1s / 500ns (absolute change), 3 (a count)
    finding:new        any finding that the base run does not have (finding:new:<id> for one)

Changes are per unit of the diff's basis, as in the verdict: per step (per rank when a run has
several), per run when a side has no steps; step metrics (``decode_step_p50``) are per step. A step metric is breached only when the change is also
significant (``diff.stats``): a 5% swing in three noisy steps does not fail a build.

    >>> parse_gate("decode_step_p50>+5%").value, parse_gate("busy>+10%").relative
    (0.05, True)
    >>> parse_gate("communication.exposed>+2ms").value
    2000.0
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import CATEGORIES, COLLECTIVES, BadInputError
from .compute import CAUSES, TOTALS

PHASES = ("prefill", "decode", "mixed", "idle", "verify", "draft", "unknown")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
_UNITS = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_:.-]*)\s*(>=|<=|>|<)\s*([+-]?[0-9.eE]+)\s*(%|ns|us|µs|ms|s)?\s*$")
_STEP = re.compile(r"^(?:(\w+?)_)?step_(p50|p90)$")


def valid_names() -> list[str]:
    """Every NAME a gate may use (the finding and phase ones as patterns)."""
    names = [*TOTALS, *(f"idle.{c}" for c in CAUSES), *CATEGORIES, "communication",
             "communication.exposed", *(f"communication.{c}" for c in COLLECTIVES),
             *(f"communication.{c}.exposed" for c in COLLECTIVES), "step_p50", "step_p90",
             *(f"{p}_step_{q}" for p in PHASES for q in ("p50", "p90")),
             *(f"{p}_busy" for p in PHASES),
             "kernels.added", "kernels.removed", "kernels.slower", "kernels.faster",
             "kernels.variants_changed",
             "finding:new", "finding:new:<id>", "finding:<id>"]
    return list(dict.fromkeys(names))


def names_help() -> str:
    """The valid names, compactly, for error messages."""
    return ("; ".join([
        ", ".join(TOTALS), "idle.<" + "|".join(CAUSES) + ">", "a category (" + ", ".join(CATEGORIES) + ")",
        "communication[.exposed]", "communication.<" + "|".join(COLLECTIVES) + ">[.exposed]",
        "step_p50, step_p90, <phase>_step_p50|p90, <phase>_busy (phase: " + ", ".join(PHASES) + ")",
        "kernels.<added|removed|slower|faster|variants_changed>",
        "finding:new, finding:new:<id>, finding:<id>",
        "also the verdict ids (category:<category>, idle:<cause>) and comm_exposed",
    ]))


@dataclass(frozen=True)
class Gate:
    """One parsed expression."""

    expr: str
    name: str
    op: str | None = None
    value: float = 0.0
    relative: bool = False
    absolute: bool = False  # a time (µs) rather than a count or share


#: other spellings: analyze's --fail-on names and the verdict's ids
ALIASES = {"comm_exposed": "communication.exposed", "communication_exposed": "communication.exposed"}


def canonical(name: str) -> str:
    """``category:gemm`` -> ``gemm``, ``idle:scheduler`` -> ``idle.scheduler``, aliases."""
    if name.startswith("category:"):
        return name[len("category:"):]
    if name.startswith("idle:"):
        return "idle." + name[len("idle:"):]
    return ALIASES.get(name, name)


def _known(name: str) -> bool:
    if name.startswith("finding:"):
        return len(name) > len("finding:")
    m = _STEP.match(name)
    if m:
        return m.group(1) is None or m.group(1) in PHASES
    return name in valid_names()


def parse_gate(expr: str) -> Gate:
    """Parse one ``--fail-on`` expression; :class:`BadInputError` names the valid names."""
    text = expr.strip()
    if text == "finding:new" or text.startswith("finding:new:"):
        return Gate(expr=expr, name=text)
    m = _EXPR.match(text)
    if not m:
        raise BadInputError(
            f"bad --fail-on expression {expr!r}: expected NAME>VALUE, e.g. busy>+10% , "
            "communication.exposed>+2ms or finding:new")
    name, op, raw, unit = m.groups()
    name = canonical(name)
    if not _known(name):
        raise BadInputError(f"unknown --fail-on name {name!r}; use one of: {names_help()}")
    try:
        num = float(raw)
    except ValueError:
        raise BadInputError(f"bad number in --fail-on {expr!r}") from None
    if unit == "%":
        return Gate(expr, name, op, num / 100, relative=True)
    if unit:
        return Gate(expr, name, op, num * _UNITS[unit], absolute=True)
    return Gate(expr, name, op, num)


def _figure(diff: Mapping[str, Any], name: str) -> tuple[Mapping[str, Any] | None, dict[str, Any] | None, str]:
    """The ``{base, new, delta, rel}`` a name points at, the step test (step metrics) and its
    scope: ``total`` (summed over ranks), ``rank`` (one rank, the whole run) or ``step``."""
    fig: Mapping[str, Any] | None = None
    if name in TOTALS:
        return diff["totals"][name], None, "total"
    if name.startswith("idle."):
        return diff["idle_by_cause"].get(name[5:]), None, "total"
    if name in CATEGORIES:
        c = diff["categories"].get(name)
        return (c["time_us"] if c else None), None, "total"
    if name.startswith("communication"):
        parts = name.split(".")
        comm = diff["communication"]
        if len(parts) == 1:
            fig = comm["time_us"]
        elif parts[1] == "exposed":
            fig = comm["exposed_us"]
        elif (c := comm["by_collective"].get(parts[1])) is not None:
            fig = c["exposed_us"] if len(parts) > 2 else c["time_us"]
        return fig, None, "total"
    m = _STEP.match(name)
    if m:
        ph = diff["phases"].get(m.group(1) or "all")
        return (ph[f"step_{m.group(2)}_us"] if ph else None), (ph["test"] if ph else None), "step"
    if name.endswith("_busy"):
        ph = diff["phases"].get(name[:-5])
        return (ph["gpu_busy_us"] if ph else None), None, "rank"
    if name.startswith("finding:"):
        row = diff["findings"].get("by_id", {}).get(name[8:])
        return (row["time_us"] if row else None), None, "rank"
    return None, None, "total"


def per_unit(diff: Mapping[str, Any], fig: Mapping[str, Any], scope: str) -> tuple[float, float | None]:
    """``(delta, rel)`` of a figure per unit of the diff's basis (per step per rank, ...)."""
    if scope == "step":
        return fig["delta"], fig["rel"]
    basis = diff["basis"]
    if scope == "total":
        ub, un = basis["divisor"]["base"], basis["divisor"]["new"]
    else:  # one rank over the run: per step only
        ub = un = 1.0
        if basis["unit"] == "step":
            ub, un = basis["steps"]["base"], basis["steps"]["new"]
    b, n = (fig["base"] or 0.0) / (ub or 1.0), (fig["new"] or 0.0) / (un or 1.0)
    d = n - b
    return d, (d / b if b else (0.0 if d == 0 else None))


def evaluate(diff: Mapping[str, Any], gate: Gate) -> dict[str, Any]:
    """``{expr, breached, measured, note}`` for one gate on one diff."""
    out: dict[str, Any] = {"expr": gate.expr, "breached": False, "measured": None, "note": None}
    if gate.name.startswith("finding:new"):
        want = gate.name[len("finding:new:"):] if gate.name.startswith("finding:new:") else None
        new_ids = [r["id"] for r in diff["findings"]["appeared"] if want in (None, r["id"])]
        out.update(breached=bool(new_ids), measured=new_ids)
        return out
    if gate.name.startswith("kernels."):
        n = diff["kernels"]["counts"][gate.name.split(".", 1)[1]]
        out.update(measured=n, breached=_OPS[gate.op](n, gate.value))  # type: ignore[index]
        return out
    fig, test, scope = _figure(diff, gate.name)
    if fig is None or fig.get("delta") is None:
        out["note"] = "not in either run"
        return out
    d, rel = per_unit(diff, fig, scope)
    if gate.absolute:
        value = d
        out["measured"] = round(value, 3)
    else:  # % or a plain number: the change as a fraction
        value = rel if rel is not None else (float("inf") if d > 0 else float("-inf"))
        out["measured"] = None if rel is None else round(rel, 6)
    hit = _OPS[gate.op](value, gate.value)  # type: ignore[index]
    if hit and test is not None and not test["significant"]:
        out["note"] = f"not significant ({test['reason']})"
        hit = False
    out["breached"] = bool(hit)
    return out


def check_gates(diff: Mapping[str, Any], exprs: Sequence[str]) -> list[dict[str, Any]]:
    """Evaluate every expression (parse errors raise :class:`BadInputError`)."""
    return [evaluate(diff, parse_gate(e)) for e in exprs]
