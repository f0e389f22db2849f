"""Model and GPU presets (TOML data files) and Hugging Face ``config.json`` parsing.

A model preset is a Hugging Face ``config.json`` copied into ``[config]`` of a TOML file,
plus ``name``, ``aliases``, ``source`` and ``weight_dtype``; both go through one parser,
:func:`model_from_hf_config`. GPU presets are flat TOML tables matching :class:`GPUSpec`.

    >>> m = load_model("Llama-3.1-70B")          # case-insensitive, aliases allowed
    >>> m = load_model("path/to/config.json", overrides={"num_hidden_layers": 40})
    >>> g = load_gpu("h100")
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from analyzer.capacity.specs import GPUSpec, ModelSpec, dtype_bytes
from analyzer.errors import BadInputError

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

_PRESET_PKG = "analyzer.capacity"

#: ``--layers`` etc. -> the Hugging Face config key they override.
DIMENSION_KEYS: dict[str, str] = {
    "layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}


def _load_toml(text: str, where: str) -> dict[str, Any]:
    if _toml is None:  # pragma: no cover
        raise BadInputError("reading TOML on Python 3.10 needs the 'tomli' package")
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise BadInputError(f"{where}: not valid TOML ({exc})") from None


def _preset_files(kind: str) -> dict[str, dict[str, Any]]:
    """Every preset of ``kind`` ("models" or "gpus"): file stem -> parsed TOML."""
    root = resources.files(_PRESET_PKG).joinpath("presets", kind)
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out[entry.name[: -len(".toml")]] = _load_toml(entry.read_text("utf-8"), entry.name)
    return out


def _index(kind: str) -> dict[str, dict[str, Any]]:
    """Lower-case name and alias -> preset table."""
    index: dict[str, dict[str, Any]] = {}
    for stem, data in _preset_files(kind).items():
        for key in [data.get("name", stem), *data.get("aliases", [])]:
            index[str(key).lower()] = data
    return index


def list_presets() -> dict[str, list[dict[str, Any]]]:
    """``{"models": [...], "gpus": [...]}``, each entry ``{name, aliases, source, ...}``."""
    models = []
    for stem, data in _preset_files("models").items():
        spec = _model_from_preset(data, stem)
        models.append(
            {
                "name": spec.name,
                "aliases": list(spec.aliases),
                "attention": spec.attention,
                "attention_label": spec.attention_label,
                "moe": spec.is_moe,
                "layers": spec.num_layers,
                "total_params_b": round(spec.total_params / 1e9, 1),
                "active_params_b": round(spec.active_params / 1e9, 1),
                "source": spec.source,
            }
        )
    gpus = []
    for stem, data in _preset_files("gpus").items():
        g = _gpu_from_table(data, stem)
        gpus.append(
            {
                "name": g.name,
                "aliases": list(g.aliases),
                "memory_gb": g.memory_gb,
                "hbm_gbps": g.hbm_gbps,
                "bf16_tflops": g.bf16_tflops,
                "fp8_tflops": g.fp8_tflops,
                "source": g.source,
            }
        )
    return {"models": models, "gpus": gpus}


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def load_model_config(name_or_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw Hugging Face config of a preset name or a file, and the preset metadata.

    ``name_or_path``: a preset name/alias (case-insensitive), a ``config.json`` path, or a
    preset-style ``.toml`` path. Returns ``(config, meta)``; ``meta`` has name, source,
    aliases, weight_dtype when known.
    """
    path = Path(name_or_path)
    looks_like_path = path.suffix.lower() in (".json", ".toml") or "/" in name_or_path
    if looks_like_path and not path.exists() and name_or_path.lower() in _index("models"):
        looks_like_path = False  # a Hugging Face repo id that is a preset alias
    if looks_like_path:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise BadInputError(
                f"cannot read model config {name_or_path}: {exc.strerror}"
            ) from None
        if path.suffix.lower() == ".toml":
            data = _load_toml(text, name_or_path)
            return _split_preset(data, path.stem)
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{name_or_path}: not valid JSON ({exc.msg})") from None
        if not isinstance(cfg, dict):
            raise BadInputError(f"{name_or_path}: a config.json must hold a JSON object")
        meta = {"name": path.parent.name or path.stem, "source": str(path)}
        return cfg, meta
    data = _index("models").get(name_or_path.lower())
    if data is None:
        known = ", ".join(sorted(p["name"] for p in list_presets()["models"]))
        raise BadInputError(f"unknown model preset {name_or_path!r} (known: {known})")
    return _split_preset(data, str(data.get("name")))


def _split_preset(data: Mapping[str, Any], stem: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = data.get("config")
    if not isinstance(cfg, dict):
        raise BadInputError(f"model preset {stem!r} lacks a [config] table")
    meta = {k: v for k, v in data.items() if k != "config"}
    meta.setdefault("name", stem)
    return dict(cfg), meta


def _model_from_preset(data: Mapping[str, Any], stem: str) -> ModelSpec:
    cfg, meta = _split_preset(data, stem)
    return model_from_hf_config(cfg, meta)


def load_model(
    name_or_path: str,
    overrides: Mapping[str, Any] | None = None,
    weight_dtype: str | None = None,
) -> ModelSpec:
    """A :class:`ModelSpec` from a preset name, a ``config.json`` or a preset ``.toml``.

    ``overrides`` replaces Hugging Face config keys (``num_hidden_layers``,
    ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ...)
    before parsing: explicit dimensions win over the preset's.
    """
    cfg, meta = load_model_config(name_or_path)
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = dict(cfg["text_config"])
    changed = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg.update(changed)
    if weight_dtype:
        meta = dict(meta, weight_dtype=weight_dtype)
    if changed:
        meta = dict(meta, notes=[*meta.get("notes", []), f"overridden: {sorted(changed)}"])
    return model_from_hf_config(cfg, meta)


def model_from_dims(
    layers: int,
    hidden_size: int,
    heads: int,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    intermediate_size: int | None = None,
    vocab_size: int | None = None,
    name: str = "explicit",
    weight_dtype: str = "bf16",
) -> ModelSpec:
    """A dense model from explicit dimensions (no preset, no config file).

    Without ``intermediate_size`` the gated MLP is taken as 8/3 x hidden (so a layer has
    ~12 x hidden^2 weights with full multi-head attention) and the parameter count is
    marked "estimated"; without ``vocab_size`` embeddings are not counted.
    """
    cfg: dict[str, Any] = {
        "num_hidden_layers": layers,
        "hidden_size": hidden_size,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads if kv_heads is not None else heads,
        "vocab_size": vocab_size or 0,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    notes = []
    if intermediate_size is None:
        cfg["intermediate_size"] = round(8 * hidden_size / 3)
        notes.append("intermediate_size not given: assumed 8/3 x hidden (params estimated)")
    else:
        cfg["intermediate_size"] = intermediate_size
    if not vocab_size:
        notes.append("vocab_size not given: embeddings not counted")
    meta = {
        "name": name,
        "source": "explicit dimensions",
        "weight_dtype": weight_dtype,
        "notes": notes,
        "params_source": "estimated" if intermediate_size is None else "config formula",
    }
    return model_from_hf_config(cfg, meta)


def _int(cfg: Mapping[str, Any], *keys: str, default: int | None = None) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise BadInputError(f"config field {k!r} must be an integer, got {v!r}")
        return int(v)
    return default


def _swa_layers(cfg: Mapping[str, Any], num_layers: int) -> tuple[int | None, tuple[int, ...]]:
    """(window, sliding-window layer ids) following the Hugging Face conventions."""
    window = _int(cfg, "sliding_window")
    if not window or cfg.get("use_sliding_window") is False:
        return None, ()
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        if len(layer_types) != num_layers:
            raise BadInputError(
                f"layer_types has {len(layer_types)} entries for {num_layers} layers"
            )
        ids = tuple(i for i, t in enumerate(layer_types) if "sliding" in str(t))
        return (window, ids) if ids else (None, ())
    pattern = _int(cfg, "sliding_window_pattern")
    if pattern and pattern > 1:  # Gemma-style: every pattern-th layer is global
        return window, tuple(i for i in range(num_layers) if (i + 1) % pattern)
    if cfg.get("use_sliding_window") is True and "max_window_layers" in cfg:
        first = _int(cfg, "max_window_layers", default=0) or 0  # Qwen2: layers >= this slide
        ids = tuple(range(min(first, num_layers), num_layers))
        return (window, ids) if ids else (None, ())
    return window, tuple(range(num_layers))  # Mistral-style: every layer slides


def _linear_layers(cfg: Mapping[str, Any], num_layers: int) -> tuple[tuple[int, ...], int]:
    """(linear-attention layer ids, recurrent state bytes per layer per sequence at TP 1).

    Layers: ``layer_types`` entries "linear_attention", else Qwen3-Next's
    ``full_attention_interval`` (layer i is full attention when (i + 1) % interval == 0).
    State, as SGLang sizes its mamba pool (``configs/mamba_utils.py``, Mamba2StateShape for
    ``Qwen3NextConfig.mamba2_cache_params``): a conv state of ``conv_dim x (kernel - 1)``
    in bf16 with ``conv_dim = v_heads x v_dim + 2 x k_heads x k_dim``, and a temporal state
    of ``v_heads x v_dim x k_dim`` in ``mamba_ssm_dtype`` (float32 by default).
    """
    layer_types = cfg.get("layer_types")
    ids: tuple[int, ...] = ()
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        ids = tuple(i for i, t in enumerate(layer_types) if "linear" in str(t))
    elif _int(cfg, "full_attention_interval") and _int(cfg, "linear_num_value_heads"):
        every = _int(cfg, "full_attention_interval") or 1
        ids = tuple(i for i in range(num_layers) if (i + 1) % every)
    if not ids:
        return (), 0
    v_heads = _int(cfg, "linear_num_value_heads", default=0) or 0
    k_heads = _int(cfg, "linear_num_key_heads", default=v_heads) or v_heads
    k_dim = _int(cfg, "linear_key_head_dim", default=0) or 0
    v_dim = _int(cfg, "linear_value_head_dim", default=k_dim) or k_dim
    kernel = _int(cfg, "linear_conv_kernel_dim", default=4) or 4
    ssm_bytes = 2 if str(cfg.get("mamba_ssm_dtype", "float32")) in ("bfloat16", "float16") else 4
    conv_dim = v_heads * v_dim + 2 * k_heads * k_dim
    return ids, conv_dim * (kernel - 1) * 2 + v_heads * v_dim * k_dim * ssm_bytes


def _indexer_bytes(cfg: Mapping[str, Any]) -> int:
    """DeepSeek-V3.2 indexer key cache per token per layer: ``index_head_dim`` FP8 bytes +
    one FP32 scale per 128 values (SGLang ``NSATokenToKVPool``: quant_block_size 128,
    ``index_head_dim + index_head_dim // 128 x 4``)."""
    d = _int(cfg, "index_head_dim", default=0) or 0
    return d + d // 128 * 4 if d else 0


def param_counts(cfg: Mapping[str, Any]) -> dict[str, float]:
    """Weights of a decoder from its config (see docs/capacity-planning.md, "Parameters").

    Returns total, active (per token), attention (all layers), embedding (input table),
    lm_head, and expert (routed experts, all layers) counts.
    """
    L = _int(cfg, "num_hidden_layers", "n_layer", "num_layers") or 0
    H = _int(cfg, "hidden_size", "n_embd", "d_model") or 0
    heads = _int(cfg, "num_attention_heads", "n_head") or 1
    kv = _int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", default=heads) or heads
    V = _int(cfg, "vocab_size", default=0) or 0
    hd = _int(cfg, "head_dim", default=H // heads) or H // heads
    kv_lora = _int(cfg, "kv_lora_rank", default=0) or 0
    if kv_lora:
        rope = _int(cfg, "qk_rope_head_dim", default=64) or 0
        nope = _int(cfg, "qk_nope_head_dim", default=128) or 0
        v_hd = _int(cfg, "v_head_dim", default=nope) or nope
        q_lora = _int(cfg, "q_lora_rank", default=0) or 0
        q = H * q_lora + q_lora * heads * (nope + rope) if q_lora else H * heads * (nope + rope)
        attn = q + H * (kv_lora + rope) + kv_lora * heads * (nope + v_hd) + heads * v_hd * H
    else:
        attn = H * heads * hd + 2 * H * kv * hd + heads * hd * H
    inter = _int(cfg, "intermediate_size", "ffn_dim", default=4 * H) or 0
    dense_mlp = 3 * H * inter
    E = _int(cfg, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0
    k = _int(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk", default=0) or 0
    moe_layers = _moe_layer_ids(cfg, L) if E and k else ()
    moe_inter = _int(cfg, "moe_intermediate_size", default=inter) or inter
    expert = 3 * H * moe_inter
    shared_inter = _int(cfg, "shared_expert_intermediate_size", default=0) or 0
    n_shared = _int(cfg, "n_shared_experts", "num_shared_experts", default=0) or 0
    shared = 3 * H * shared_inter if shared_inter else n_shared * expert
    router = H * E
    n_moe = len(moe_layers)
    embed = V * H
    tied = bool(cfg.get("tie_word_embeddings", False))
    lm_head = 0 if tied else V * H
    norms = 2 * H * L + H
    common = embed + lm_head + norms + L * attn + (L - n_moe) * dense_mlp
    total = common + n_moe * (E * expert + shared + router)
    active = common + n_moe * (k * expert + shared + router)
    return {
        "total": float(total),
        "active": float(active),
        "attention": float(L * attn),
        "embedding": float(embed),
        "lm_head": float(V * H),
        "experts": float(n_moe * E * expert),
        "num_moe_layers": float(n_moe),
    }


def _moe_layer_ids(cfg: Mapping[str, Any], L: int) -> tuple[int, ...]:
    first_dense = _int(cfg, "first_k_dense_replace", default=0) or 0  # DeepSeek
    freq = _int(cfg, "moe_layer_freq", default=1) or 1
    step = _int(cfg, "decoder_sparse_step", default=1) or 1  # Qwen-MoE
    mlp_only = set(cfg.get("mlp_only_layers") or [])
    return tuple(
        i
        for i in range(L)
        if i >= first_dense and i % freq == 0 and (i + 1) % step == 0 and i not in mlp_only
    )


def model_from_hf_config(
    cfg: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> ModelSpec:
    """Parse a Hugging Face ``config.json`` dict (plus preset metadata) into a ModelSpec."""
    meta = dict(meta or {})
    name = str(meta.get("name", "model"))
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]
    L = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    H = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    if not L or not H or not heads:
        raise BadInputError(
            f"model {name!r}: config needs num_hidden_layers, hidden_size and "
            "num_attention_heads (positive integers)"
        )
    kv = _int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    kv = kv or heads
    head_dim = _int(cfg, "head_dim") or (H // heads)
    if head_dim <= 0:
        raise BadInputError(f"model {name!r}: head_dim must be positive")
    kv_lora = _int(cfg, "kv_lora_rank", default=0) or 0
    attention = "mla" if kv_lora else "mha"
    rope = _int(cfg, "qk_rope_head_dim", default=0) or 0
    nope = _int(cfg, "qk_nope_head_dim", default=0) or 0
    v_head_dim = _int(cfg, "v_head_dim", default=head_dim) or head_dim
    if attention == "mla":
        head_dim = nope + rope if nope + rope else head_dim
    linear_ids, state_bytes = _linear_layers(cfg, L)
    window, swa_ids = _swa_layers(cfg, L)
    swa_ids = tuple(i for i in swa_ids if i not in set(linear_ids))
    if not swa_ids:
        window = None
    counts = param_counts(cfg)
    total, active = counts["total"], counts["active"]
    params_source = str(meta.get("params_source", "config formula"))
    if meta.get("total_params_b"):
        total, params_source = float(meta["total_params_b"]) * 1e9, "preset"
    if meta.get("active_params_b"):
        active, params_source = float(meta["active_params_b"]) * 1e9, "preset"
    E = _int(cfg, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0
    k = _int(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk", default=0) or 0
    inter = _int(cfg, "intermediate_size", "ffn_dim", default=0) or 0
    weight_dtype = str(meta.get("weight_dtype", "bf16"))
    dtype_bytes(weight_dtype)  # validates
    return ModelSpec(
        name=name,
        num_layers=L,
        hidden_size=H,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        v_head_dim=v_head_dim,
        vocab_size=_int(cfg, "vocab_size", default=0) or 0,
        total_params=total,
        active_params=active,
        attention=attention,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope,
        qk_nope_head_dim=nope,
        sliding_window=window,
        swa_layer_ids=swa_ids,
        linear_attention_layer_ids=linear_ids,
        linear_state_bytes_per_layer=state_bytes,
        indexer_bytes_per_token_per_layer=_indexer_bytes(cfg),
        sparse_topk=_int(cfg, "index_topk", default=None),
        intermediate_size=inter,
        num_experts=E if k else 0,
        experts_per_token=k if E else 0,
        moe_intermediate_size=_int(cfg, "moe_intermediate_size", default=inter) or inter,
        num_moe_layers=int(counts["num_moe_layers"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_params=counts["attention"],
        expert_params=counts["experts"],
        embedding_params=counts["embedding"],
        lm_head_params=counts["lm_head"],
        max_position_embeddings=_int(cfg, "max_position_embeddings", default=None),
        weight_dtype=weight_dtype,
        expert_weight_dtype=str(meta["expert_weight_dtype"]) if meta.get("expert_weight_dtype") else None,
        params_source=params_source,
        source=str(meta.get("source", "")),
        aliases=tuple(str(a) for a in meta.get("aliases", ())),
        notes=tuple(str(n) for n in meta.get("notes", ())),
    )


# --------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------


def _gpu_from_table(data: Mapping[str, Any], stem: str) -> GPUSpec:
    known = {f for f in GPUSpec.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise BadInputError(f"GPU preset {stem!r}: unknown keys {sorted(unknown)}")
    values = dict(data)
    values.setdefault("name", stem)
    values["aliases"] = tuple(values.get("aliases", ()))
    values["notes"] = tuple(values.get("notes", ()))
    try:
        return GPUSpec(**values)
    except TypeError as exc:
        raise BadInputError(f"GPU preset {stem!r}: {exc}") from None


def load_gpu(name_or_path: str) -> GPUSpec:
    """A :class:`GPUSpec` from a preset name/alias (case-insensitive) or a ``.toml`` file."""
    if name_or_path.lower().endswith(".toml"):
        try:
            text = Path(name_or_path).read_text("utf-8")
        except OSError as exc:
            raise BadInputError(f"cannot read GPU file {name_or_path}: {exc.strerror}") from None
        return _gpu_from_table(_load_toml(text, name_or_path), Path(name_or_path).stem)
    data = _index("gpus").get(name_or_path.lower())
    if data is None:
        known = ", ".join(sorted(g["name"] for g in list_presets()["gpus"]))
        raise BadInputError(f"unknown GPU preset {name_or_path!r} (known: {known})")
    return _gpu_from_table(data, str(data.get("name")))


def gpu_with(gpu: GPUSpec, **changes: Any) -> GPUSpec:
    """``gpu`` with some datasheet figures replaced (``None`` values are ignored)."""
    real = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(gpu, **real) if real else gpu


__all__ = [
    "DIMENSION_KEYS",
    "gpu_with",
    "list_presets",
    "load_gpu",
    "load_model",
    "load_model_config",
    "model_from_dims",
    "model_from_hf_config",
    "param_counts",
]
