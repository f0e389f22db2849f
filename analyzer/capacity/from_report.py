"""What ``plan --from-report`` takes from an analyzer report besides the measured rates:
the model, the GPU, the parallel sizes, the KV dtype and ``mem_fraction_static``, each with
where in the report it was found.

Where each value is looked for, first hit wins (docs/capacity-planning.md, "From a report"):

* model: ``server_args.model_path``, ``server_args.served_model_name``, ``context.model``;
  a preset name or alias, the last path component of it (``/models/Qwen3-8B``), or a
  directory holding ``config.json``;
* GPU: ``context.gpu.preset``, then ``calibration.gpu_preset`` (older reports);
* TP/PP/EP/DP: ``context.parallel.<k>.value`` (with the source the analyzer gave), then
  ``serving.communication.sizes`` (older reports; 0 = unknown is skipped), then
  ``server_args.<k>_size``; DP with ``server_args.enable_dp_attention`` is DP attention;
* KV dtype: ``server_args.kv_cache_dtype`` (``fp8*`` -> fp8, else bf16);
* ``mem_fraction_static``: ``server_args.mem_fraction_static``.

    >>> setup = report_setup(json.load(open("report.json")), "report.json")   # doctest: +SKIP
    >>> setup.tp.value, setup.tp.source                                         # doctest: +SKIP
    (2, 'context.parallel.tp (server_args)')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzer.capacity.presets import list_presets, load_model
from analyzer.capacity.specs import ModelSpec
from analyzer.errors import BadInputError

SIZES = ("tp", "pp", "ep", "dp")


@dataclass(frozen=True)
class Sourced:
    """A value and where in the report it was found."""

    value: Any
    source: str


@dataclass(frozen=True)
class ReportSetup:
    """The deployment a report describes (None: the report does not say)."""

    label: str
    models: tuple[Sourced, ...] = ()  # model names/paths in the report, in search order
    gpu: Sourced | None = None
    tp: Sourced | None = None
    pp: Sourced | None = None
    ep: Sourced | None = None
    dp: Sourced | None = None
    dp_attention: Sourced | None = None
    kv_dtype: Sourced | None = None
    mem_fraction: Sourced | None = None

    def size(self, key: str) -> Sourced | None:
        return getattr(self, key)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def report_setup(doc: Mapping[str, Any], label: str = "report") -> ReportSetup:
    """Read the deployment out of a report dict (rules in the module doc)."""
    sa = doc.get("server_args") if isinstance(doc.get("server_args"), Mapping) else {}
    ctx = doc.get("context") if isinstance(doc.get("context"), Mapping) else {}
    cal = doc.get("calibration") if isinstance(doc.get("calibration"), Mapping) else {}
    serving = doc.get("serving") if isinstance(doc.get("serving"), Mapping) else {}
    models = []
    for key in ("model_path", "served_model_name"):
        v = sa.get(key)
        if isinstance(v, str) and v:
            models.append(Sourced(v, f"server_args.{key}"))
    cm = ctx.get("model")
    cm = cm.get("value") or cm.get("name") if isinstance(cm, Mapping) else cm
    if isinstance(cm, str) and cm:
        models.append(Sourced(cm, "context.model"))
    gpu = None
    g = ctx.get("gpu") if isinstance(ctx.get("gpu"), Mapping) else {}
    if isinstance(g.get("preset"), str) and g["preset"]:
        how = f", {g['source']} {g.get('name')!r}" if g.get("source") else ""
        gpu = Sourced(g["preset"], f"context.gpu.preset{how}")
    elif isinstance(cal.get("gpu_preset"), str) and cal["gpu_preset"]:
        gpu = Sourced(cal["gpu_preset"], "calibration.gpu_preset")
    par = ctx.get("parallel") if isinstance(ctx.get("parallel"), Mapping) else {}
    old = (serving.get("communication") or {}).get("sizes") if isinstance(serving.get("communication"), Mapping) else {}
    sizes: dict[str, Sourced | None] = {}
    for k in SIZES:
        p = par.get(k)
        v = _int(p.get("value")) if isinstance(p, Mapping) else None
        if v is not None:
            sizes[k] = Sourced(v, f"context.parallel.{k} ({p.get('source') or 'no source given'})")
        elif _int((old or {}).get(k)) is not None:
            sizes[k] = Sourced(old[k], f"serving.communication.sizes.{k}")
        elif _int(sa.get(f"{k}_size")) is not None:
            sizes[k] = Sourced(sa[f"{k}_size"], f"server_args.{k}_size")
        else:
            sizes[k] = None
    dpa = Sourced(bool(sa["enable_dp_attention"]), "server_args.enable_dp_attention") \
        if isinstance(sa.get("enable_dp_attention"), bool) else None
    kv = None
    if isinstance(sa.get("kv_cache_dtype"), str):
        raw = sa["kv_cache_dtype"]
        kv = Sourced("fp8" if raw.lower().startswith("fp8") else "bf16", f"server_args.kv_cache_dtype {raw!r}")
    mf = sa.get("mem_fraction_static")
    mem = Sourced(float(mf), "server_args.mem_fraction_static") \
        if isinstance(mf, (int, float)) and not isinstance(mf, bool) and 0 < mf < 1 else None
    return ReportSetup(label, tuple(models), gpu, sizes["tp"], sizes["pp"], sizes["ep"], sizes["dp"],
                       dpa, kv, mem)


def _preset_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for p in list_presets()["models"]:
        for alias in [p["name"], *(p.get("aliases") or [])]:
            index[str(alias).lower()] = p["name"]
    return index


def resolve_report_model(setup: ReportSetup, **load_kw: Any) -> tuple[ModelSpec, str]:
    """The report's model as a ModelSpec and how it was found; BadInputError naming
    ``--model`` when the report names none, or none that is a preset or a config."""
    if not setup.models:
        raise BadInputError(f"{setup.label} names no model (no server_args.model_path or "
                            "served_model_name): pass --model NAME|CONFIG.json (presets: trace-analyzer plan --list)")
    index = _preset_index()
    for m in setup.models:
        text = str(m.value)
        tries = [text.lower(), text.rstrip("/").rsplit("/", 1)[-1].lower()]
        for t in tries:
            if t in index:
                return load_model(index[t], **load_kw), f"{m.source} = {text!r} -> preset {index[t]}"
        cfg = Path(text) / "config.json"
        if cfg.is_file():
            return load_model(str(cfg), **load_kw), f"{m.source} = {text!r} -> {cfg}"
    named = ", ".join(f"{m.value!r} ({m.source})" for m in setup.models)
    raise BadInputError(f"{setup.label} names the model {named}, which is neither a preset nor a "
                        "directory with config.json here: pass --model NAME|CONFIG.json "
                        "(presets: trace-analyzer plan --list)")


__all__ = ["ReportSetup", "Sourced", "report_setup", "resolve_report_model"]
