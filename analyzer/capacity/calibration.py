"""Rates for the time model: datasheet x efficiency, replaced by what a trace measured.

Two optional sources of measured rates, both read into a :class:`Calibration`:

* the analyzer's JSON report (``--from-report``): top-level ``calibration`` object;
* a hardware profile written by ``trace-analyzer calibrate`` (``--hardware-profile``).

When both carry a figure, the report wins (it was measured in the serving run itself).
:func:`resolve_rates` turns GPU datasheet + efficiency + calibration into :class:`Rates`
and records, per rate, where it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer.capacity.specs import Calibration, Efficiency, GPUSpec, ModelSpec
from analyzer.errors import BadInputError

REPORT_SCHEMA_PREFIX = "trace-analyzer report"
PROFILE_SCHEMA = "trace-analyzer/hardware-profile/v1"

#: report ``calibration`` key -> Calibration field
_REPORT_KEYS = {
    "prefill_attention_tflops": "attention_prefill_tflops",
    "gemm_tflops": "gemm_tflops",
    "decode_step_us": "decode_step_us",
    "decode_batch_size": "decode_batch_size",
    "hbm_gbps": "hbm_gbps",
    "allreduce_gbps": "allreduce_gbps",
    "allreduce_us_per_mb": "allreduce_us_per_mb",
}
#: hardware profile ``measured`` key -> Calibration field
_PROFILE_KEYS = {
    "gemm_tflops": "gemm_tflops",
    "attention_prefill_tflops": "attention_prefill_tflops",
    "hbm_gbps": "hbm_gbps",
    "kv_read_gbps": "kv_read_gbps",
    "allreduce_gbps": "allreduce_gbps",
    "allreduce_latency_us": "allreduce_latency_us",
}


def _read_json(path: str | Path, what: str) -> Any:
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{what} {path} is not valid JSON ({exc.msg})") from None


def _positive(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInputError(f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def calibration_from_report(report: Mapping[str, Any], label: str = "trace report") -> Calibration:
    """A Calibration from the analyzer report (a dict, or a Report object with to_dict())."""
    if not isinstance(report, Mapping) and hasattr(report, "to_dict"):
        report = report.to_dict()
    if not isinstance(report, Mapping):
        raise BadInputError(f"{label}: a report must be a JSON object")
    schema = report.get("schema")
    if schema is not None and not str(schema).startswith(REPORT_SCHEMA_PREFIX):
        raise BadInputError(f"{label}: schema {schema!r} is not a trace-analyzer report")
    tool = report.get("tool")
    if isinstance(tool, Mapping) and tool.get("name") not in (None, "trace-analyzer"):
        raise BadInputError(f"{label}: written by {tool.get('name')!r}, not trace-analyzer")
    version = report.get("schema_version")
    early: list[str] = []
    if version is not None and not str(version).startswith("1."):
        early.append(f"{label}: report schema_version {version} (planner reads 1.x)")
    cal = report.get("calibration")
    if cal is None:
        return Calibration(notes=(*early, f"{label} carries no calibration figures"))
    if not isinstance(cal, Mapping):
        raise BadInputError(f"{label}: 'calibration' must be an object")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, fname in _REPORT_KEYS.items():
        v = _positive(cal.get(key), f"calibration.{key}", label)
        if v is not None:
            values[fname] = v
            sources[fname] = f"{label} (calibration.{key})"
    gpu_name = cal.get("gpu_name")
    if gpu_name is not None and not isinstance(gpu_name, str):
        raise BadInputError(f"{label}: calibration.gpu_name must be a string")
    gpu_preset = cal.get("gpu_preset")
    if gpu_preset is not None and not isinstance(gpu_preset, str):
        raise BadInputError(f"{label}: calibration.gpu_preset must be a string")
    notes = tuple(early)
    if not values:
        notes += (f"{label} carries no calibration figures",)
    return Calibration(
        gpu_name=gpu_name, gpu_preset=gpu_preset, **values, sources=sources, notes=notes
    )


def load_report_calibration(path: str | Path) -> Calibration:
    """Read ``--from-report REPORT.json``."""
    return calibration_from_report(_read_json(path, "report"), f"trace report {Path(path).name}")


def calibration_from_profile(
    profile: Mapping[str, Any], label: str = "hardware profile"
) -> Calibration:
    """A Calibration from a ``trace-analyzer/hardware-profile/v1`` dict."""
    if not isinstance(profile, Mapping):
        raise BadInputError(f"{label}: a hardware profile must be a JSON object")
    if profile.get("schema") != PROFILE_SCHEMA:
        raise BadInputError(f"{label}: schema {profile.get('schema')!r} is not {PROFILE_SCHEMA!r}")
    measured = profile.get("measured")
    if not isinstance(measured, Mapping):
        raise BadInputError(f"{label}: 'measured' must be an object")
    device = profile.get("device") if isinstance(profile.get("device"), Mapping) else {}
    dev_type = str(device.get("type", "")) if device else ""
    dev_name = device.get("name") if device else None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, fname in _PROFILE_KEYS.items():
        v = _positive(measured.get(key), f"measured.{key}", label)
        if v is not None:
            values[fname] = v
            sources[fname] = f"{label} (measured.{key})"
    notes = []
    if dev_type and dev_type != "cuda":
        notes.append(
            f"{label} was measured on a {dev_type} device ({dev_name}); its rates do not "
            "describe a GPU and make the time model meaningless for GPU serving"
        )
    dtype = profile.get("dtype")
    if dtype not in (None, "bf16"):
        notes.append(f"{label} measured in {dtype}, not bf16")
    fit = measured.get("attention_fit")
    if isinstance(fit, Mapping) and fit.get("quadratic_share_at_max") is not None:
        notes.append(
            f"{label}: attention time fit has quadratic share "
            f"{fit.get('quadratic_share_at_max')} at its longest measured length "
            "(recorded, not used: the planner uses attention_prefill_tflops)"
        )
    return Calibration(
        gpu_name=str(dev_name) if dev_name else None,
        **values,
        sources=sources,
        notes=tuple(notes),
    )


def load_hardware_profile(path: str | Path) -> Calibration:
    """Read ``--hardware-profile FILE``."""
    return calibration_from_profile(
        _read_json(path, "hardware profile"), f"hardware profile {Path(path).name}"
    )


def combine(report: Calibration | None, profile: Calibration | None) -> Calibration | None:
    """Report figures over profile figures; None when neither was given."""
    if report is None:
        return profile
    if profile is None:
        return report
    return report.merged_over(profile)


@dataclass(frozen=True)
class Rates:
    """Effective per-GPU rates used by the time model, with the source of each."""

    gemm_tflops: float
    attention_tflops: float
    hbm_gbps: float
    kv_read_gbps: float
    allreduce_bus_gbps: float
    allreduce_latency_us: float
    p2p_gbps: float
    p2p_latency_us: float
    allreduce_us_per_mb: float | None = None
    decode_step_us: float | None = None
    decode_batch_size: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    measured: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        names = (
            "gemm_tflops",
            "attention_tflops",
            "hbm_gbps",
            "kv_read_gbps",
            "allreduce_bus_gbps",
            "allreduce_latency_us",
            "allreduce_us_per_mb",
            "p2p_gbps",
            "p2p_latency_us",
            "decode_step_us",
            "decode_batch_size",
        )
        return {
            n: {
                "value": getattr(self, n),
                "source": self.sources.get(n, ""),
                "measured": n in self.measured,
            }
            for n in names
            if getattr(self, n) is not None
        }


def resolve_rates(
    gpu: GPUSpec,
    model: ModelSpec,
    efficiency: Efficiency,
    calibration: Calibration | None,
    pp_crosses_nodes: bool = False,
    tp_crosses_nodes: bool = False,
) -> Rates:
    """Effective rates: calibrated where measured, else datasheet x efficiency."""
    cal = calibration or Calibration()
    src: dict[str, str] = {}
    measured: list[str] = []

    use_fp8 = model.weight_dtype == "fp8" and gpu.fp8_tflops is not None
    peak_gemm = gpu.fp8_tflops if use_fp8 and gpu.fp8_tflops else gpu.bf16_tflops
    peak_name = "fp8" if use_fp8 else "bf16"

    def pick(name: str, value: float | None, default: float, how: str) -> float:
        if value is not None:
            src[name] = cal.sources.get(_CAL_FIELD.get(name, name), "calibration object")
            measured.append(name)
            return value
        src[name] = how
        return default

    gemm = pick(
        "gemm_tflops",
        cal.gemm_tflops,
        peak_gemm * efficiency.gemm,
        f"datasheet {peak_name} {peak_gemm:g} TFLOP/s x efficiency {efficiency.gemm:g}",
    )
    attn = pick(
        "attention_tflops",
        cal.attention_prefill_tflops,
        gpu.bf16_tflops * efficiency.attention,
        f"datasheet bf16 {gpu.bf16_tflops:g} TFLOP/s x efficiency {efficiency.attention:g}",
    )
    hbm = pick(
        "hbm_gbps",
        cal.hbm_gbps,
        gpu.hbm_gbps * efficiency.hbm,
        f"datasheet {gpu.hbm_gbps:g} GB/s x efficiency {efficiency.hbm:g}",
    )
    if cal.kv_read_gbps is not None:
        kv_read = pick("kv_read_gbps", cal.kv_read_gbps, hbm, "")
    else:
        kv_read = hbm
        src["kv_read_gbps"] = f"same as hbm_gbps ({src['hbm_gbps']})"
    link = gpu.nvlink_gbps / 2 if gpu.nvlink_gbps else gpu.network_gbps
    ar_link = gpu.network_gbps if tp_crosses_nodes else link
    ar_how = (
        f"datasheet network {gpu.network_gbps:g} GB/s (TP spans nodes)"
        if tp_crosses_nodes
        else f"datasheet scale-up {gpu.nvlink_gbps:g} GB/s / 2 directions"
    )
    ar = pick(
        "allreduce_bus_gbps",
        cal.allreduce_gbps,
        max(ar_link * efficiency.link, 1e-9),
        f"{ar_how} x efficiency {efficiency.link:g}",
    )
    ar_lat = pick(
        "allreduce_latency_us",
        cal.allreduce_latency_us,
        gpu.allreduce_latency_us,
        "GPU preset (assumed)",
    )
    p2p_link = gpu.network_gbps if pp_crosses_nodes else link
    p2p = max(p2p_link * efficiency.link, 1e-9)
    src["p2p_gbps"] = (
        f"datasheet {'network' if pp_crosses_nodes else 'scale-up link'} x efficiency "
        f"{efficiency.link:g}"
    )
    src["p2p_latency_us"] = "GPU preset (assumed)"
    if cal.allreduce_us_per_mb is not None:
        src["allreduce_us_per_mb"] = cal.sources.get("allreduce_us_per_mb", "calibration object")
        measured.append("allreduce_us_per_mb")
    if cal.decode_step_us is not None:
        src["decode_step_us"] = cal.sources.get("decode_step_us", "calibration object")
        src["decode_batch_size"] = cal.sources.get("decode_batch_size", "not given: assumed 1")
        measured.append("decode_step_us")
        if cal.decode_batch_size is not None:
            measured.append("decode_batch_size")
    return Rates(
        gemm_tflops=gemm,
        attention_tflops=attn,
        hbm_gbps=hbm,
        kv_read_gbps=kv_read,
        allreduce_bus_gbps=ar,
        allreduce_latency_us=ar_lat,
        p2p_gbps=p2p,
        p2p_latency_us=gpu.p2p_latency_us,
        allreduce_us_per_mb=cal.allreduce_us_per_mb,
        decode_step_us=cal.decode_step_us,
        decode_batch_size=(cal.decode_batch_size or 1.0)
        if cal.decode_step_us is not None
        else None,
        sources=src,
        measured=tuple(measured),
    )


#: Rates field -> Calibration field where the names differ
_CAL_FIELD = {
    "attention_tflops": "attention_prefill_tflops",
    "allreduce_bus_gbps": "allreduce_gbps",
}
