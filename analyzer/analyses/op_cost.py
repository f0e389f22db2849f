"""FLOPs and bytes of one operator call from its recorded shapes (``record_shapes``).

    >>> from analyzer.readers.kineto_shapes import Signature
    >>> c = op_cost("mm", "aten::mm", Signature(([8, 16], [16, 4]), ("c10::BFloat16",) * 2, ("", "")))
    >>> c.flops, c.bytes, c.dtype
    (1024.0, 448.0, 'bf16')

The formulas (docs/methodology.md, "Roofline") count the math of the op (a multiply-add is
2 FLOPs) and the bytes it must move at least once (inputs read, output written), as
TraceLens and the usual roofline practice do. Attention ops whose sequence lengths are not
in their shapes (varlen / paged) give coefficients per attended (query, key) pair and per
KV token; ``analyses/roofline.py`` multiplies them by the step's counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analyzer.readers.kineto_shapes import Signature

#: Input type -> (dtype label, bytes per element). Packed fp4 (x2) is one byte per two values.
DTYPES: dict[str, tuple[str, float]] = {
    "c10::BFloat16": ("bf16", 2), "c10::Half": ("fp16", 2), "float": ("fp32", 4), "double": ("fp64", 8),
    "c10::Float8_e4m3fn": ("fp8", 1), "c10::Float8_e4m3fnuz": ("fp8", 1), "c10::Float8_e5m2": ("fp8", 1),
    "c10::Float8_e5m2fnuz": ("fp8", 1), "c10::Float8_e8m0fnu": ("fp8", 1),
    "c10::Float4_e2m1fn_x2": ("fp4", 1), "signed char": ("int8", 1), "unsigned char": ("uint8", 1),
    "c10::qint8": ("int8", 1), "c10::quint4x2": ("int4", 1), "int": ("int32", 4), "long int": ("int64", 8),
    "short int": ("int16", 2), "bool": ("bool", 1),
}


@dataclass(frozen=True)
class OpCost:
    """FLOPs and bytes of one call, or why not (``reason``).

    ``flops_per_pair`` / ``kv_bytes_per_token``: for varlen/paged attention, FLOPs per
    attended (query, key) pair and KV bytes read per attended key token; ``flops`` and
    ``bytes`` then hold only the parts known from the shapes (Q and O bytes).
    ``kv_read_bytes``: KV bytes read when the shapes give them (dense attention).
    """

    flops: float | None
    bytes: float | None
    dtype: str = ""
    shape: str = ""
    reason: str = ""
    flops_per_pair: float = 0.0
    kv_bytes_per_token: float = 0.0
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0
    from_model: bool = False  # counted from --model / server_args, not from the shapes


def _numel(d: Any) -> float:
    if not isinstance(d, list) or not d or not all(isinstance(x, (int, float)) for x in d):
        return 0.0
    return float(math.prod(d))


def _is_dims(d: Any) -> bool:
    return isinstance(d, list) and len(d) > 0 and all(isinstance(x, (int, float)) for x in d)


def _dt(sig: Signature, i: int) -> tuple[str, float]:
    t = sig.types[i] if i < len(sig.types) else ""
    return DTYPES.get(t, ("", 0.0))


def _tensors(sig: Signature) -> list[tuple[int, list[int], str, float]]:
    """(position, dims, dtype, bytes per element) of every tensor input."""
    out = []
    for i, d in enumerate(sig.dims):
        if _is_dims(d):
            label, size = _dt(sig, i)
            if size:
                out.append((i, d, label, size))
    return out


def _shape_label(sig: Signature) -> str:
    parts = []
    for i, d in enumerate(sig.dims):
        if _is_dims(d):
            parts.append("x".join(str(int(x)) for x in d))
        elif isinstance(d, list) and d and isinstance(d[0], list):
            parts.append("[" + ",".join("x".join(str(int(x)) for x in e) for e in d if _is_dims(e)) + "]")
    return " ".join(parts)[:160]


def _out_bytes(label: str, size: float) -> float:
    # low-precision GEMMs write bf16
    return 2.0 if label in ("fp8", "fp4", "int8", "int4", "uint8") else size


def _gemm(sig: Signature, ia: int, ib: int, *, b_is_nk: bool | None, bias: int | None = None) -> OpCost:
    if max(ia, ib) >= len(sig.dims) or not (_is_dims(sig.dims[ia]) and _is_dims(sig.dims[ib])):
        return OpCost(None, None, reason="GEMM operands without dims")
    a, b = [int(x) for x in sig.dims[ia]], [int(x) for x in sig.dims[ib]]
    la, ea = _dt(sig, ia)
    lb, eb = _dt(sig, ib)
    k = a[-1]
    if len(b) >= 3 and len(a) >= 3:  # batched [.., M, K] x [.., K, N]
        batch = float(math.prod(a[:-2]))
        m, n = a[-2], b[-1]
    elif len(b) == 2:
        batch = 1.0
        m = int(math.prod(a[:-1]))
        if b_is_nk is True or (b_is_nk is None and b[1] == k and b[0] != k):
            n = b[0]
        else:
            n = b[1]
    else:
        return OpCost(None, None, reason=f"GEMM operand ranks {len(a)}/{len(b)} not understood")
    flops = 2.0 * batch * m * n * k
    nbytes = (_numel(sig.dims[ia]) * ea + _numel(sig.dims[ib]) * eb
              + batch * m * n * _out_bytes(la, ea))
    if bias is not None and bias < len(sig.dims) and _is_dims(sig.dims[bias]):
        nbytes += _numel(sig.dims[bias]) * _dt(sig, bias)[1]
    return OpCost(flops, nbytes, dtype=la or lb, shape=_shape_label(sig))


def _moe(sig: Signature) -> OpCost:
    ts = _tensors(sig)
    weights = [t for t in ts if len(t[1]) == 3]
    flt = [t for t in ts if len(t[1]) == 2 and t[2] in ("bf16", "fp16", "fp32", "fp8")]
    ids = [t for t in ts if len(t[1]) == 2 and t[2] in ("int32", "int64")]
    if not weights or not flt or not ids:
        return OpCost(None, None, reason="the op's inputs carry no expert weights and routing (topk ids)")
    hidden = flt[0]
    tokens, topk = ids[0][1][0], ids[0][1][1]
    experts = weights[0][1][0]
    per_pair = sum(2.0 * w[1][1] * w[1][2] for w in weights)
    flops = tokens * topk * per_pair
    touched = min(experts, tokens * topk) / max(experts, 1)
    nbytes = sum(_numel(w[1]) * w[3] for w in weights) * touched + 2 * _numel(hidden[1]) * hidden[3]
    return OpCost(flops, nbytes, dtype=hidden[2], shape=_shape_label(sig))


#: position of is_causal in Concrete Inputs, per op (aten native_functions.yaml)
_CAUSAL_AT = {
    "aten::scaled_dot_product_attention": 5, "aten::_scaled_dot_product_attention_math": 5,
    "aten::_scaled_dot_product_flash_attention": 4, "aten::_scaled_dot_product_flash_attention_for_cpu": 4,
    "aten::_scaled_dot_product_efficient_attention": 6, "aten::_scaled_dot_product_cudnn_attention": 6,
    "aten::_flash_attention_forward": 8, "flash_attn::_flash_attn_forward": 5,
}


def _attention_dense(name: str, sig: Signature, layout: str) -> OpCost:
    if len(sig.dims) < 3 or not all(_is_dims(sig.dims[i]) and len(sig.dims[i]) == 4 for i in range(3)):
        return OpCost(None, None, reason="q/k/v are not 4-D")
    q, k, v = ([int(x) for x in sig.dims[i]] for i in range(3))
    if layout == "bhsd":
        b, h, sq, d = q
        sk, dv = k[2], v[3]
    else:  # bshd
        b, sq, h, d = q
        sk, dv = k[1], v[3]
    label, es = _dt(sig, 0)
    at = _CAUSAL_AT.get(name)
    causal = at is not None and at < len(sig.concrete) and sig.concrete[at] == "True"
    pairs = float(sq) * sk - (sq * (sq - 1) / 2.0 if causal and sq <= sk else 0.0)
    flops = 2.0 * b * h * pairs * (d + dv)
    kv = (_numel(k) + _numel(v)) * es
    nbytes = _numel(q) * es + kv + b * sq * h * dv * es
    return OpCost(flops, nbytes, dtype=label, shape=_shape_label(sig) + (" causal" if causal else ""),
                  kv_read_bytes=kv)


def _attention_varlen(sig: Signature) -> OpCost:
    ts = _tensors(sig)
    if len(ts) < 2 or len(ts[0][1]) != 3:
        return OpCost(None, None, reason="q is not [tokens, heads, head_dim]")
    _, q, label, es = ts[0]
    t, hq, d = q
    kd = ts[1][1]
    vd = ts[2][1] if len(ts) > 2 and len(ts[2][1]) == len(kd) else kd
    hkv, dk = (kd[-2], kd[-1]) if len(kd) >= 3 else (1, kd[-1])
    dv = vd[-1]
    kes = ts[1][3]
    q_o_bytes = float(t) * hq * (d + dv) * es
    return OpCost(0.0, q_o_bytes, dtype=label, shape=_shape_label(sig),
                  reason="sequence lengths from the step annotation",
                  flops_per_pair=2.0 * hq * (dk + dv), kv_bytes_per_token=float(hkv) * (dk + dv) * kes)


def _kv_write(sig: Signature) -> OpCost:
    ts = _tensors(sig)
    if len(ts) < 2:
        return OpCost(None, None, reason="no key/value inputs")
    # new key and value: the first two float inputs (the caches after them are much larger)
    kv = [t for t in ts if t[2] in ("bf16", "fp16", "fp32", "fp8")][:2]
    moved = sum(_numel(t[1]) * t[3] for t in kv)
    idx = sum(_numel(t[1]) * t[3] for t in ts if t[2] in ("int32", "int64") and len(t[1]) == 1)
    return OpCost(0.0, 2 * moved + idx, dtype=kv[0][2] if kv else "", shape=_shape_label(sig),
                  kv_write_bytes=moved)


def _elementwise(sig: Signature, out_args: bool = False) -> OpCost:
    ts = _tensors(sig)
    flat = [t for t in ts]
    for d in sig.dims:  # TensorList inputs (aten::cat)
        if isinstance(d, list) and d and isinstance(d[0], list):
            for e in d:
                if _is_dims(e):
                    flat.append((0, e, "", 0.0))
    if not flat:
        return OpCost(None, None, reason="no tensor inputs")
    es0 = next((t[3] for t in ts), 2.0)
    read = sum(_numel(t[1]) * (t[3] or es0) for t in flat)
    biggest = max(_numel(t[1]) for t in flat)
    label = next((t[2] for t in ts if t[2] in ("bf16", "fp16", "fp32", "fp8")), ts[0][2] if ts else "")
    written = 0.0 if out_args else biggest * es0  # outputs passed as arguments are in ``read``
    return OpCost(biggest, read + written, dtype=label, shape=_shape_label(sig))


def _gather(sig: Signature) -> OpCost:
    ts = _tensors(sig)
    if len(ts) < 2:
        return OpCost(None, None, reason="gather: the output size is not in the shapes")
    table = max(ts, key=lambda t: _numel(t[1]))
    others = [t for t in ts if t is not table]
    moved = sum(_numel(t[1]) * t[3] for t in others)
    return OpCost(0.0, 2 * moved, dtype=table[2], shape=_shape_label(sig))


def moe_from_model(sig: Signature, model: Any) -> OpCost:
    """A routed-expert MoE call counted from the model (its inputs carry no weights): tokens T
    from the first tensor input, ``2 * T * top_k * 3 * hidden * moe_intermediate`` (gated
    expert MLP: gate + up, down); bytes: the weights of min(E, T*k) experts + hidden in/out."""
    ts = _tensors(sig)
    e = int(getattr(model, "num_experts", 0) or 0)
    k = int(getattr(model, "experts_per_token", 0) or 0)
    h = int(getattr(model, "hidden_size", 0) or 0)
    inter = int(getattr(model, "moe_intermediate_size", 0) or getattr(model, "intermediate_size", 0) or 0)
    if not ts or not (e and k and h and inter):
        return OpCost(None, None, reason="the op's inputs carry no expert weight shapes and the model is not MoE")
    t = ts[0][1][0]
    wbytes = float(getattr(model, "weight_bytes_per_param", 2) or 2)
    flops = 2.0 * t * k * 3 * h * inter
    nbytes = min(e, t * k) * 3 * h * inter * wbytes + 2 * t * h * ts[0][3]
    return OpCost(flops, nbytes, dtype=ts[0][2], shape=_shape_label(sig), from_model=True,
                  reason="FLOPs from the model (--model / server_args): the inputs carry no expert weights")


def op_cost(formula: str, name: str, sig: Signature) -> OpCost:
    """FLOPs and bytes of one call of op ``name`` with shapes ``sig`` by ``formula``."""
    if not sig.dims:
        return OpCost(None, None, reason="no Input Dims recorded")
    if formula == "mm":
        return _gemm(sig, 0, 1, b_is_nk=False)
    if formula == "addmm":
        return _gemm(sig, 1, 2, b_is_nk=False, bias=0)
    if formula == "bmm":
        return _gemm(sig, 0, 1, b_is_nk=False)
    if formula == "linear":
        nk = name == "aten::linear"
        return _gemm(sig, 0, 1, b_is_nk=nk, bias=2 if nk else None)
    if formula == "weight_nk":
        return _gemm(sig, 0, 1, b_is_nk=None)
    if formula == "moe":
        return _moe(sig)
    if formula == "sdpa_bhsd":
        return _attention_dense(name, sig, "bhsd")
    if formula == "flash_bshd":
        return _attention_dense(name, sig, "bshd")
    if formula == "attention_varlen":
        return _attention_varlen(sig)
    if formula == "kv_write":
        return _kv_write(sig)
    if formula == "elementwise":
        return _elementwise(sig)
    if formula == "out_args":
        return _elementwise(sig, out_args=True)
    if formula == "gather":
        return _gather(sig)
    return OpCost(None, None, reason="no formula for this op")


__all__ = ["DTYPES", "OpCost", "moe_from_model", "op_cost"]
