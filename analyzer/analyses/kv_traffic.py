"""KV-cache traffic of decode steps against the GPU's HBM bandwidth.

Per decode step: bytes read = KV tokens attended (the cached context of every request in
the batch) x KV bytes per token per GPU; bytes written = new tokens x the same. Achieved
bandwidth = bytes read / decode-attention kernel time of the step (union). Decode is called
memory-bound when the median achieved bandwidth reaches ``memory_bound_fraction`` of the
HBM peak (a threshold in ``analyzer/findings/thresholds.toml``).

KV bytes per token per GPU = (layers / PP) x (KV heads / TP, at least 1) x (K + V head
dims) x dtype bytes; MLA: layers x (kv_lora_rank + rope dim) x dtype bytes (not sharded).
The model comes from ``--model`` (a capacity-planner preset or a config.json), else from
``server_args.json``'s ``model_path``. Without it (or without per-step context lengths)
the figures that need it are ``None`` and the reason is in ``missing``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from analyzer.analyses.phases import StepAttribution
from analyzer.model import AnalyzerError, DeviceInfo


def resolve_model(model: str | None, server_args: Mapping[str, Any] | None) -> tuple[Any, str | None]:
    """``(ModelSpec | None, why_not)`` from ``--model`` or server_args' model path."""
    try:
        from analyzer.capacity.presets import list_presets, load_model
    except ImportError:  # pragma: no cover - capacity package absent
        return None, "the capacity planner (model presets) is not installed"
    candidates = []
    if model:
        candidates.append(model)
    sa = server_args or {}
    for key in ("model_path", "model", "served_model_name"):
        v = sa.get(key)
        if isinstance(v, str) and v:
            candidates.append(v)
    if not candidates:
        return None, "no model given (--model) and no model_path in server_args.json"
    index: dict[str, str] = {}
    for p in list_presets()["models"]:
        for alias in [p["name"], *(p.get("aliases") or [])]:
            index[str(alias).lower()] = p["name"]
    for c in candidates:
        tries = [c]
        if c.lower() in index:
            tries.insert(0, index[c.lower()])
        cfg = Path(c) / "config.json"
        if cfg.is_file():
            tries.insert(0, str(cfg))
        for t in tries:
            try:
                return load_model(t), None
            except (AnalyzerError, OSError, ValueError, KeyError, TypeError):
                continue
    return None, f"model {candidates[0]!r} is neither a preset nor a readable config.json"


def resolve_gpu(gpu: str | None, device: DeviceInfo | None) -> tuple[Any, str | None]:
    """``(GPUSpec | None, why_not)`` from ``--gpu`` or the trace's deviceProperties name."""
    try:
        from analyzer.capacity.presets import list_presets, load_gpu
    except ImportError:  # pragma: no cover
        return None, "the capacity planner (GPU presets) is not installed"
    if gpu:
        try:
            return load_gpu(gpu), None
        except AnalyzerError as exc:
            return None, str(exc)
    name = (device.name if device else "") or ""
    if not name:
        return None, "the trace names no GPU (no deviceProperties) and no --gpu was given"
    tokens = set("".join(ch if ch.isalnum() else " " for ch in name.lower()).split())
    best = None
    for p in list_presets()["gpus"]:
        keys = {p["name"].split("-")[0], *[str(a).split("-")[0] for a in p.get("aliases") or []]}
        if keys & tokens:
            best = p["name"]
            break
    if best is None:
        return None, f"GPU {name!r} matches no preset; pass --gpu"
    return load_gpu(best), None


def kv_bytes_per_token_per_gpu(model: Any, tp: int, pp: int, kv_dtype_bytes: int = 2) -> float:
    """KV bytes one token occupies on one GPU (all its layers)."""
    layers = math.ceil(model.num_layers / max(pp, 1))
    if getattr(model, "attention", "mha") == "mla":
        per_layer = (model.kv_lora_rank + model.qk_rope_head_dim) * kv_dtype_bytes
    else:
        heads = max(1, math.ceil(model.num_kv_heads / max(tp, 1)))
        per_layer = heads * (model.head_dim + (model.v_head_dim or model.head_dim)) * kv_dtype_bytes
    return float(layers * per_layer)


def kv_dtype_bytes(server_args: Mapping[str, Any] | None) -> int:
    dt = str((server_args or {}).get("kv_cache_dtype", "auto")).lower()
    return 1 if "fp8" in dt or "int8" in dt else 2


def analyze_kv(
    attr: StepAttribution,
    *,
    model: Any,
    gpu: Any,
    tp: int,
    pp: int,
    server_args: Mapping[str, Any] | None,
    memory_bound_fraction: float,
    missing: list[str],
) -> dict[str, Any]:
    """KV traffic figures of one rank's decode steps (JSON-able)."""
    steps = attr.steps
    out: dict[str, Any] = {
        "decode_steps": 0, "decode_attention_us": 0.0, "decode_attention_share_of_decode": None,
        "kv_bytes_per_token": None, "bytes_read": None, "bytes_written": None,
        "achieved_gbps": None, "hbm_gbps": gpu.hbm_gbps if gpu is not None else None,
        "fraction_of_hbm": None, "memory_bound": None, "missing": missing,
    }
    if not attr.has_steps:
        return out
    dec = steps[steps["attention"].astype(str) == "decode"]
    if len(dec) == 0:
        return out
    att_us = dec["attention_decode_us"].to_numpy(float)
    busy_us = dec["gpu_busy_us"].to_numpy(float)
    out["decode_steps"] = len(dec)
    out["decode_attention_us"] = float(att_us.sum())
    out["kv_cache_write_us"] = float(dec["kv_cache_us"].sum())
    out["decode_attention_share_of_decode"] = float(att_us.sum() / busy_us.sum()) if busy_us.sum() else None
    if model is None:
        return out
    bpt = kv_bytes_per_token_per_gpu(model, tp, pp, kv_dtype_bytes(server_args))
    out["kv_bytes_per_token"] = bpt
    kv = dec["kv_tokens"].to_numpy(float)
    new = dec["tokens"].to_numpy(float)
    new = np.where(np.isnan(new), dec["bs"].to_numpy(float), new)
    if np.isnan(kv).all():
        missing.append("per-step context lengths (decode step spans carry only bs; the "
                       "execute_..._generation_<n>(..sk..) annotation gives them)")
        return out
    ok = ~np.isnan(kv) & (att_us > 0)
    read = kv[ok] * bpt
    out["bytes_read"] = float(read.sum())
    out["bytes_written"] = float(np.nansum(new) * bpt)
    gbps = read / (att_us[ok] * 1e3)  # bytes / ns = GB/s
    if gbps.size:
        out["achieved_gbps"] = float(np.median(gbps))
        out["achieved_gbps_p90"] = float(np.percentile(gbps, 90))
    if gpu is not None and out["achieved_gbps"] is not None:
        frac = out["achieved_gbps"] / gpu.hbm_gbps
        out["fraction_of_hbm"] = frac
        out["memory_bound"] = bool(frac >= memory_bound_fraction)
        out["roofline_us"] = float(read.sum() / (gpu.hbm_gbps * 1e3))
    return out
