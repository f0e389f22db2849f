"""Is a change in per-step time real? A rank test on the two runs' step samples.

Mann-Whitney U (two-sided, scipy's exact/asymptotic choice) when scipy is installed, else a
permutation test on the difference of medians with a fixed seed (same verdict on clear
cases, reproducible). Few steps cannot reach significance: with 3 steps a side the smallest
two-sided p of the rank test is 0.1, so a 2% change in 3 steps is "not significant" while
the same change in 500 steady steps is.

    >>> r = step_test([10.0, 10.1, 9.9] * 100, [10.2, 10.3, 10.1] * 100)
    >>> r["significant"], r["method"]
    (True, 'mann-whitney-u')
    >>> step_test([10.0, 10.1, 9.9], [10.2, 10.3, 10.1])["significant"]
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
MIN_SAMPLES = 3
PERMUTATIONS = 2000
SEED = 20260101


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:  # pragma: no cover - scipy is a dependency; the fallback is for bare installs
        return None
    if np.array_equal(np.sort(a), np.sort(b)):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _permutation(a: np.ndarray, b: np.ndarray, n: int = PERMUTATIONS, seed: int = SEED) -> float:
    """Two-sided permutation p of |median(b) - median(a)| (fixed seed: reproducible)."""
    observed = abs(np.median(b) - np.median(a))
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    idx = np.argsort(rng.random((n, pooled.size)), axis=1)
    perm = pooled[idx]
    d = np.abs(np.median(perm[:, a.size:], axis=1) - np.median(perm[:, :a.size], axis=1))
    return float((1 + np.count_nonzero(d >= observed - 1e-12)) / (n + 1))


def step_test(base: Sequence[float], new: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """``{method, p_value, significant, alpha, n_base, n_new, reason}`` for two step samples."""
    a = np.asarray(base, float)
    b = np.asarray(new, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out: dict[str, Any] = {"method": None, "p_value": None, "significant": False, "alpha": alpha,
                           "n_base": int(a.size), "n_new": int(b.size), "reason": None}
    if a.size < MIN_SAMPLES or b.size < MIN_SAMPLES:
        out["reason"] = f"fewer than {MIN_SAMPLES} steps on a side: cannot tell noise from change"
        return out
    p = _mann_whitney(a, b)
    if p is None:
        out["method"], p = "permutation-median", _permutation(a, b)
    else:
        out["method"] = "mann-whitney-u"
    out["p_value"] = p
    out["significant"] = bool(p < alpha)
    if not out["significant"]:
        out["reason"] = f"p = {p:.3g} >= {alpha}: within the step-to-step noise"
    return out
