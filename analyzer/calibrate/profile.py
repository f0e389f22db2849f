"""The hardware profile written by ``trace-analyzer calibrate`` (no torch needed here).

>>> fit = fit_attention([256, 512, 1024], [10.0, 30.0, 100.0])
>>> round(fit.c, 6) > 0
True

Format (``trace-analyzer/hardware-profile/v1``, JSON Schema in
``hardware-profile-v1.schema.json`` beside this module)::

    {"schema": "trace-analyzer/hardware-profile/v1",
     "device": {"type": "cuda" | "cpu", "name": str},
     "dtype": "bf16" | "fp16" | "fp32",
     "measured": {"gemm_tflops", "attention_prefill_tflops",
                  "attention_fit": {"a", "b", "c", "quadratic_share_at_max"},
                  "hbm_gbps", "kv_read_gbps", "allreduce_gbps" | null, "allreduce_latency_us" | null},
     "details": {per-benchmark tables}, "created": ISO time, "torch_version": str}

``attention_fit`` is ``t_us = a + b*S + c*S^2`` for causal prefill attention at the shape
given in ``details.attention_prefill``; ``quadratic_share_at_max`` is ``c*S^2 / t`` at the
longest context measured (how much of the time the quadratic term explains there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from analyzer.errors import BadInputError
from analyzer.lazy import numpy as np  # imported on first use (fast CLI start)

SCHEMA = "trace-analyzer/hardware-profile/v1"
SCHEMA_FILE = "hardware-profile-v1.schema.json"


@dataclass(frozen=True)
class AttentionFit:
    """``t_us = a + b*S + c*S^2`` fitted to measured times (relative least squares)."""

    a: float
    b: float
    c: float
    quadratic_share_at_max: float
    max_context: int
    r2: float

    def predict_us(self, s: float) -> float:
        return self.a + self.b * s + self.c * s * s

    def to_measured(self) -> dict[str, float]:
        return {
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "quadratic_share_at_max": self.quadratic_share_at_max,
        }


def fit_attention(contexts: Sequence[int], times_us: Sequence[float]) -> AttentionFit:
    """Fit ``a + b*S + c*S^2`` with ``a, b, c >= 0`` to (context, time) points.

    Each point is weighted by ``1/t`` so short and long contexts count alike (the error
    minimised is relative). Non-negativity (a launch overhead, a linear and a quadratic
    cost cannot be negative) is exact: every subset of the three terms is fitted and the
    best non-negative one kept.
    """
    s = np.asarray(contexts, dtype=float)
    t = np.asarray(times_us, dtype=float)
    if len(s) < 3 or len(np.unique(s)) < 3:
        raise BadInputError("the attention fit needs at least 3 different context lengths")
    if (t <= 0).any() or not np.isfinite(t).all():
        raise BadInputError("attention times must be positive")
    scale = float(s.max())
    x = s / scale  # conditioned columns: 1, x, x^2 with x in (0, 1]
    design = np.stack([np.ones_like(x), x, x * x], axis=1)
    w = 1.0 / t
    best: tuple[float, np.ndarray] | None = None
    for cols in ([0, 1, 2], [0, 2], [1, 2], [0, 1], [2], [1], [0]):
        sub, *_ = np.linalg.lstsq(design[:, cols] * w[:, None], t * w, rcond=None)
        if (sub < 0).any():
            continue
        coef = np.zeros(3)
        coef[cols] = sub
        resid = float((((design @ coef) - t) * w) ** 2 @ np.ones_like(t))
        if best is None or resid < best[0] - 1e-15:
            best = (resid, coef)
    assert best is not None  # the single positive constant always fits
    coef = best[1]
    a, b, c = float(coef[0]), float(coef[1] / scale), float(coef[2] / scale**2)
    smax = float(s.max())
    t_max = a + b * smax + c * smax * smax
    share = c * smax * smax / t_max if t_max > 0 else 0.0
    pred = a + b * s + c * s * s
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return AttentionFit(a, b, c, share, int(smax), r2)


def _schema() -> dict[str, Any]:
    text = resources.files("analyzer.calibrate").joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


def validate_hardware_profile(doc: Mapping[str, Any]) -> None:
    """Raise BadInputError (one line) when ``doc`` does not follow the v1 schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BadInputError(f"hardware profile is invalid at {where}: {e.message}")
    fit = doc["measured"]["attention_fit"]
    for key in ("a", "b", "c", "quadratic_share_at_max"):
        if not math.isfinite(fit[key]):
            raise BadInputError(f"hardware profile is invalid: attention_fit.{key} is not finite")


def load_hardware_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a hardware profile JSON file."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot read hardware profile {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BadInputError(f"hardware profile {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInputError(f"hardware profile {path} is not a JSON object")
    validate_hardware_profile(doc)
    return doc
