"""Prefill attention: how attention time grows with the tokens of each prefill step.

For every step whose attention is prefill-like (EXTEND, MIXED, TARGET_VERIFY) the analysis
takes ``T`` = tokens of the step and ``W`` = the attention work: ``sum(sq * sk)`` from the
``execute_..`` annotation when present, else ``T^2 / bs`` (requests of equal length), else
``T^2``. Two least-squares fits of the step's prefill-attention time (union, us):

    linear:     t = a + b*T
    quadratic:  t = a + b*T + c*W

``growth`` is "quadratic" when the quadratic fit explains clearly more (residual sum of
squares at most ``1 - quadratic_gain`` of the linear one) and its ``c*W`` term is positive
and carries at least ``quadratic_share`` of the attention time of the longest step; else
"linear"; "unknown" with fewer than 3 steps of at least 2 distinct token counts, when the
chosen fit explains less than ``MIN_R2`` of the variance, or when the quadratic term alone
exceeds the prediction (negative constant/linear terms: not a physical fit). The reason is
``growth_reason``.

With a model (``--model`` / server_args) and the GPU's peak, the achieved attention TFLOP/s
is ``4 * layers/PP * heads/TP * head_dim * sum(sq*(sk - sq/2))`` (causal) over the time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analyzer.analyses.phases import StepAttribution

#: a growth claim needs a fit that explains at least this share of the variance
MIN_R2 = 0.5


def _fit(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(((X @ coef - y) ** 2).sum())
    return coef, rss


def analyze_prefill(
    attr: StepAttribution,
    *,
    model: Any = None,
    tp: int = 1,
    pp: int = 1,
    quadratic_gain: float = 0.5,
    quadratic_share: float = 0.3,
) -> dict[str, Any]:
    """Per-step attention vs tokens, the linear/quadratic fits and achieved rates (JSON-able)."""
    out: dict[str, Any] = {"steps": 0, "growth": "unknown", "growth_reason": "no prefill steps", "attention_us": 0.0, "tokens": 0,
                           "fit": None, "attention_tflops": None, "gemm_tflops": None,
                           "per_step": []}
    if not attr.has_steps:
        return out
    st = attr.steps
    pre = st[st["attention"].astype(str) == "prefill"]
    pre = pre[pre["kernels"] > 0]
    if len(pre) == 0:
        return out
    T = pre["tokens"].to_numpy(float)
    bs = pre["bs"].to_numpy(float)
    sqsk = pre["ctx_sqsk"].to_numpy(float)
    t = pre["attention_prefill_us"].to_numpy(float)
    W = np.where(~np.isnan(sqsk), sqsk, np.where(bs > 0, T * T / np.where(bs > 0, bs, 1), T * T))
    out["steps"] = len(pre)
    out["attention_us"] = float(t.sum())
    out["tokens"] = float(np.nansum(T))
    out["attention_share_of_prefill"] = float(t.sum() / pre["gpu_busy_us"].sum()) if pre["gpu_busy_us"].sum() else None
    out["work_source"] = "sum(sq*sk) from execute_ annotation" if (~np.isnan(sqsk)).any() else "T^2/bs"
    out["per_step"] = [
        {"step": int(s), "tokens": None if np.isnan(a) else float(a), "attention_us": float(b),
         "work": None if np.isnan(w) else float(w), "gpu_busy_us": float(g)}
        for s, a, b, w, g in zip(pre["step"], T, t, W, pre["gpu_busy_us"])
    ][:200]
    ok = ~np.isnan(T) & ~np.isnan(W)
    out["growth_reason"] = "fewer than three prefill steps of at least two distinct prompt lengths"
    if ok.sum() >= 3 and len(np.unique(T[ok])) >= 2:
        Tn, Wn, y = T[ok], W[ok], t[ok]
        ones = np.ones_like(Tn)
        lin, rss_lin = _fit(np.c_[ones, Tn], y)
        quad, rss_quad = _fit(np.c_[ones, Tn, Wn], y)
        i = int(np.argmax(Tn))
        pred_i = quad[0] + quad[1] * Tn[i] + quad[2] * Wn[i]
        share = float(quad[2] * Wn[i] / pred_i) if pred_i > 0 else 0.0
        tss = float(((y - y.mean()) ** 2).sum())
        is_quad = quad[2] > 0 and share >= quadratic_share and rss_quad <= (1 - quadratic_gain) * rss_lin + 1e-9
        r2_lin = 1 - rss_lin / tss if tss else 1.0
        r2_quad = 1 - rss_quad / tss if tss else 1.0
        if is_quad and share > 1.1:
            # the c*W term alone exceeds the prediction by >10%: large negative a/b terms, not physical
            out["growth"], out["growth_reason"] = "unknown", (
                f"quadratic fit not physical (its c*W term is {100 * share:.0f}% of the prediction)")
        elif is_quad and r2_quad < MIN_R2:
            out["growth"], out["growth_reason"] = "unknown", f"quadratic fit R2 {r2_quad:.2f} < {MIN_R2}"
        elif not is_quad and r2_lin < MIN_R2:
            out["growth"], out["growth_reason"] = "unknown", f"linear fit R2 {r2_lin:.2f} < {MIN_R2}"
        else:
            out["growth"] = "quadratic" if is_quad else "linear"
            out["growth_reason"] = (f"quadratic fit, c*W carries {100 * share:.0f}% of the longest step"
                                    if is_quad else "the quadratic term does not explain clearly more")
        out["fit"] = {
            "linear": {"a_us": float(lin[0]), "b_us_per_token": float(lin[1]),
                       "r2": 1 - rss_lin / tss if tss else 1.0},
            "quadratic": {"a_us": float(quad[0]), "b_us_per_token": float(quad[1]),
                          "c_us_per_work": float(quad[2]), "r2": 1 - rss_quad / tss if tss else 1.0},
            "quadratic_share_at_longest": share,
            "longest_step_tokens": float(Tn[i]),
        }
    if model is not None and (~np.isnan(T)).any():
        layers = math.ceil(model.num_layers / max(pp, 1))
        heads = max(1, math.ceil(model.num_heads / max(tp, 1)))
        sqsq_est = np.where(bs > 0, T * T / np.where(bs > 0, bs, 1), T * T)
        causal = np.where(~np.isnan(sqsk), sqsk - sqsq_est / 2, W / 2)
        flops = 4.0 * layers * heads * model.head_dim * np.nansum(causal)
        if t.sum() > 0:
            out["attention_tflops"] = float(flops / (t.sum() * 1e-6) / 1e12)
        gemm_us = float(pre["gemm_us"].sum())
        params = float(getattr(model, "active_params", 0) or 0) / max(tp * pp, 1)
        if gemm_us > 0 and params > 0:
            out["gemm_tflops"] = float(2.0 * params * np.nansum(T) / (gemm_us * 1e-6) / 1e12)
    return out
