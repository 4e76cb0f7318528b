"""Honest comparisons of segmentation scores over subjects: bootstrap confidence intervals,
paired Wilcoxon signed-rank tests and Holm's correction for testing many pairs.

Why these: a mean DSC over 10 test subjects hides how much it would move with 10 others; the
percentile bootstrap over subjects gives that spread without assuming normality. Two networks
scored on the *same* subjects are compared subject by subject (paired), and DSC differences
are rarely normal, hence Wilcoxon's signed-rank test rather than a t-test. Comparing k networks
makes k(k-1)/2 tests; Holm's step-down correction keeps the chance of any false claim at the
level.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (subjects resampled with
    replacement; NaN left out); seeded, so a table is reproducible. (NaN, NaN) without values."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_wilcoxon(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test on paired scores (the same subjects, in
    the same order); exact for small samples. 1.0 when every difference is zero, NaN with fewer
    than one pair."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same subjects: {a.shape} vs {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    difference = a[keep] - b[keep]
    if difference.size == 0:
        return math.nan
    if not np.any(difference):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy's note on small samples / ties
        return float(stats.wilcoxon(difference, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN and is not counted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted
