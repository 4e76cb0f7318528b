"""Bootstrap intervals, paired Wilcoxon tests and Holm's correction against hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats

from core.statistics import bootstrap_ci, holm, paired_wilcoxon


def test_bootstrap_interval_of_constant_scores_is_the_value() -> None:
    assert bootstrap_ci([0.8, 0.8, 0.8]) == (pytest.approx(0.8), pytest.approx(0.8))
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_subjects() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.8, 0.05, 5), rng.normal(0.8, 0.05, 200)
    low, high = bootstrap_ci(few)
    assert low < few.mean() < high
    many_low, many_high = bootstrap_ci(many)
    assert many_high - many_low < high - low
    # The percentile interval of the mean of n values is close to mean +- 1.96 sd / sqrt(n) for large n.
    half = 1.96 * many.std() / math.sqrt(many.size)
    assert (many_high - many_low) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded: reproducible tables


def test_wilcoxon_exact_p_values_by_hand() -> None:
    # 5 pairs, all differences positive: the signed-rank statistic takes its extreme value, which
    # 1 of the 2^5 sign patterns reaches on each side: p = 2/32.
    assert paired_wilcoxon([0.9, 0.8, 0.85, 0.7, 0.95], [0.5, 0.6, 0.55, 0.65, 0.45]) == pytest.approx(2 / 32)
    assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]) == 1.0  # no difference at all
    a, b = [0.91, 0.82, 0.77, 0.88, 0.79, 0.85], [0.90, 0.84, 0.70, 0.80, 0.80, 0.81]
    assert paired_wilcoxon(a, b) == pytest.approx(stats.wilcoxon(np.subtract(a, b)).pvalue)
    with pytest.raises(ValueError, match="same subjects"):
        paired_wilcoxon([0.1, 0.2], [0.1])


def test_holm_adjustment_by_hand() -> None:
    # Sorted 0.01, 0.02, 0.03 (m = 3): 3 x 0.01 = 0.03, 2 x 0.02 = 0.04, max(0.04, 1 x 0.03) = 0.04.
    assert holm([0.02, 0.01, 0.03]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, math.nan, 0.6]) == pytest.approx([1.0, math.nan, 1.0], nan_ok=True)
