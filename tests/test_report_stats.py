"""The report's statistics against known values (no Docker)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.report.stats import (bootstrap_mean_ci, fisher_passes, group_rng, pass_at_k,
                                    pass_hat_k, paired_wilcoxon, wilson_interval)


def test_wilson_known_values():
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and high == pytest.approx(0.4345, abs=5e-4)
    low, high = wilson_interval(5, 5)
    assert low == pytest.approx(0.5655, abs=5e-4) and high == pytest.approx(1.0)
    # 7/10: textbook Wilson 95% interval [0.3968, 0.8922]
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=5e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_fisher_known_values():
    r = fisher_passes(0, 5, 5, 5)
    assert r.p_value == pytest.approx(0.0079, abs=1e-4)  # 2 / C(10, 5) = 2/252
    assert r.p_value == pytest.approx(2 / 252)
    assert fisher_passes(2, 2, 2, 2).p_value == pytest.approx(1.0)
    assert math.isnan(fisher_passes(0, 0, 0, 0).p_value)


def test_pass_at_k_known_cases():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)        # pass@1 = c / n
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)   # 1 - C(2,2)/C(4,2)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0                         # n - c < k: always one success
    assert pass_at_k(200, 10, 10) == pytest.approx(1 - math.comb(190, 10) / math.comb(200, 10))
    assert math.isnan(pass_at_k(2, 1, 3))


def test_pass_hat_k_known_cases():
    assert pass_hat_k(10, 3, 1) == pytest.approx(0.3)       # pass^1 = c / n
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)      # C(2,2)/C(4,2)
    assert pass_hat_k(5, 5, 5) == 1.0
    assert pass_hat_k(5, 4, 5) == 0.0
    assert pass_hat_k(1250, 800, 5) == pytest.approx(math.comb(800, 5) / math.comb(1250, 5))
    assert math.isnan(pass_hat_k(2, 2, 3))


def test_wilcoxon_ties_and_known_case():
    r = paired_wilcoxon(np.ones(4), np.ones(4))
    assert (r.p_value, r.note) == (1.0, "all pairs tied")
    assert paired_wilcoxon(np.array([]), np.array([])).note == "no pairs"
    a = np.array([0.9, 0.8, 1.0, 0.7, 0.95, 0.85, 0.6])
    b = np.array([0.5, 0.6, 0.7, 0.65, 0.5, 0.4, 0.6])
    r = paired_wilcoxon(a, b)
    assert r.p_value == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert r.note == "1 of 7 pairs tied (dropped)"
    with pytest.raises(ValueError):
        paired_wilcoxon(np.ones(2), np.ones(3))


def test_bootstrap_is_seeded_and_sane():
    values = np.array([0.0, 0.5, 1.0, 1.0, 0.5, 0.25, 0.75, 1.0])
    a = bootstrap_mean_ci(values, 2000, rng=group_rng(0, "g"))
    b = bootstrap_mean_ci(values, 2000, rng=group_rng(0, "g"))
    assert a == b
    assert a[0] < values.mean() < a[1]
    assert bootstrap_mean_ci(np.ones(5)) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_mean_ci(np.array([])))


def test_bootstrap_paths_agree():
    """The multinomial path (few distinct values) and the index path (many) estimate the same
    interval: compare on the same data, once with the values made distinct by a tiny jitter."""
    rng = np.random.default_rng(1)
    values = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=300)
    jitter = values + rng.normal(0, 1e-9, values.size)
    few = bootstrap_mean_ci(values, 20_000, rng=np.random.default_rng(2))
    many = bootstrap_mean_ci(jitter, 20_000, rng=np.random.default_rng(3))
    se = values.std(ddof=0) / math.sqrt(values.size)
    assert few == pytest.approx((values.mean() - 1.96 * se, values.mean() + 1.96 * se), abs=0.01)
    assert few == pytest.approx(many, abs=0.01)
