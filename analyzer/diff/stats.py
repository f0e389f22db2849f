"""Is a change in per-step time real? A rank test on the two runs' step samples.

Mann-Whitney U, two-sided, in numpy (the same choice as ``scipy.stats.mannwhitneyu``'s
``method="auto"``: the exact distribution when a sample has at most 8 steps and there are no
ties (and the other has at most 200, to bound the work), else the normal approximation with tie and continuity corrections; the tests check it against
scipy). Written out because importing ``scipy.stats`` alone costs more than a diff. A
permutation test on the difference of medians with a fixed seed is kept as a cross-check.

Few steps cannot reach significance: with 3 steps a side the smallest
two-sided p of the rank test is 0.1, so a 2% change in 3 steps is "not significant" while
the same change in 500 steady steps is.

    >>> r = step_test([10.0, 10.1, 9.9] * 100, [10.2, 10.3, 10.1] * 100)
    >>> r["significant"], r["method"]
    (True, 'mann-whitney-u')
    >>> step_test([10.0, 10.1, 9.9], [10.2, 10.3, 10.1])["significant"]
    False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
MIN_SAMPLES = 3
PERMUTATIONS = 2000
SEED = 20260101


EXACT_MAX = 8  # scipy's "auto": exact when a side has at most this many samples (without ties)
EXACT_OTHER_MAX = 200  # ... and (ours) the other side at most this many


def _avg_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties averaged, and the size of every tie group."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    start = np.flatnonzero(new)
    sizes = np.diff(np.r_[start, xs.size])
    avg = start + (sizes + 1) / 2.0  # mean of ranks start+1 .. start+size
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, sizes)
    return ranks, sizes


def _u_counts(m: int, n: int) -> np.ndarray:
    """How many of the C(m+n, m) orderings give each U in 0..m*n (Gaussian binomial coefficients)."""
    table = [[np.ones(1) for _ in range(n + 1)] for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            a, b = table[i - 1][j], table[i][j - 1]  # the largest value is from x (adds j) or from y
            out = np.zeros(i * j + 1)
            out[j:j + a.size] += a
            out[:b.size] += b
            table[i][j] = out
    return table[m][n]


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the Mann-Whitney U test (scipy's ``method="auto"`` choice)."""
    n1, n2 = a.size, b.size
    ranks, ties = _avg_ranks(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    u = max(u1, n1 * n2 - u1)
    if min(n1, n2) <= EXACT_MAX and max(n1, n2) <= EXACT_OTHER_MAX and (ties == 1).all():
        counts = _u_counts(n1, n2)
        p = 2 * counts[round(u):].sum() / counts.sum()
        return float(min(p, 1.0))
    n = n1 + n2
    mu = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - float((ties ** 3 - ties).sum()) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - mu - 0.5) / math.sqrt(var)
    return float(min(math.erfc(z / math.sqrt(2)), 1.0))  # 2 * normal survival at z


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
    out["method"] = "mann-whitney-u"
    out["p_value"] = p
    out["significant"] = bool(p < alpha)
    if not out["significant"]:
        out["reason"] = f"p = {p:.3g} >= {alpha}: within the step-to-step noise"
    return out
