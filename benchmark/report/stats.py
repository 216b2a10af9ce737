"""The statistics of a report: intervals, pass@k / pass^k, and the paired arm comparisons.

Sources:

- Wilson score interval: E. B. Wilson (1927), "Probable inference, the law of succession, and
  statistical inference", JASA 22(158); computed by ``scipy.stats.binomtest(...).proportion_ci(
  method="wilson")``.
- Percentile bootstrap: B. Efron and R. Tibshirani (1993), *An Introduction to the Bootstrap*,
  ch. 13; vectorised with numpy (one ``(resamples, n)`` index matrix per group).
- pass@k, the unbiased estimator of "at least one of k trials succeeds":
  ``1 - C(n - c, k) / C(n, k)``, M. Chen et al. (2021), "Evaluating Large Language Models
  Trained on Code", arXiv:2107.03374, eq. 1.
- pass^k, the unbiased estimator of "all of k trials succeed": ``C(c, k) / C(n, k)``,
  S. Yao et al. (2024), "tau-bench: A Benchmark for Tool-Agent-User Interaction in Real-World
  Domains", arXiv:2406.12045, section 5.
- Fisher's exact test (two-sided) on a 2x2 table: ``scipy.stats.fisher_exact``.
- Wilcoxon signed-rank test on paired differences (zero differences dropped, Wilcoxon's
  method): ``scipy.stats.wilcoxon``.
- Stratified bootstrap (pooled suite figures, marathon as a stratum): resampling within strata,
  Efron and Tibshirani (1993), sec. 6.4; the estimate weighs every stratum equally.
- Exact McNemar test on paired full passes: Q. McNemar (1947), Psychometrika 12(2); the
  binomial test of the discordant pairs, ``scipy.stats.binomtest``.

Here n is the number of complete replicates of a group and c the number of them with a full
pass (final score == 1).
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        successes: number of successes (0..n).
        n: number of trials.
        confidence: confidence level, e.g. 0.95.

    Returns:
        ``(low, high)`` in 0..1; ``(nan, nan)`` when ``n == 0``. E.g. 0/5 -> (0, 0.434).

    Raises:
        ValueError: successes outside 0..n.
    """
    if n == 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                               method="wilson")
    return float(ci.low), float(ci.high)


def group_rng(seed: int, key: str) -> np.random.Generator:
    """The bootstrap generator of one group: seeded by the report seed and a CRC-32 of the
    group's key, so a group's interval does not change when other groups are added."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])


def bootstrap_mean_ci(values: np.ndarray, resamples: int = 10_000, confidence: float = 0.95,
                      rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean.

    Args:
        values: shape ``(n,)``, the observations (e.g. final scores, 0..1).
        resamples: number of bootstrap resamples B.
        confidence: confidence level.
        rng: the random generator (default: ``numpy.random.default_rng(0)``).

    Returns:
        ``(low, high)``: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of
        the B resampled means; ``(nan, nan)`` when ``n == 0``. Vectorised: with at most 64
        distinct values, one ``(B, D)`` multinomial count matrix (the exact distribution of a
        resample's value counts); else one ``(B, n)`` index matrix (int32), in chunks of at
        most ~4M entries to bound memory.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n == 0:
        return math.nan, math.nan
    if n == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    means = resampled_means(values, resamples, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def resampled_means(values: np.ndarray, resamples: int = 10_000,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """The means of ``resamples`` bootstrap resamples (with replacement, size n) of ``values``.

    Args:
        values: shape ``(n,)``, n >= 1.

    Returns:
        Shape ``(resamples,)``. Vectorised as in :func:`bootstrap_mean_ci`.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    rng = rng if rng is not None else np.random.default_rng(0)
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size <= 64:
        # Few distinct values (scores are shares of a handful of gates): a resample's mean
        # depends only on how often it draws each value, which is Multinomial(n, counts / n);
        # drawing those counts is the same distribution as drawing n indices, at O(B x D).
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ distinct / n
    else:
        chunk = max(1, min(resamples, 4_000_000 // n))
        means = np.empty(resamples)
        for start in range(0, resamples, chunk):
            stop = min(resamples, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)
            means[start:stop] = values[idx].mean(axis=1)
    return means


def stratified_mean_ci(strata: list[np.ndarray], resamples: int = 10_000,
                       confidence: float = 0.95,
                       rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """Stratified estimate of a mean and its stratified percentile bootstrap interval.

    The estimate is the unweighted mean of the strata's means (every stratum, e.g. every
    marathon, counts the same whatever its number of replicates); each bootstrap resample
    draws every stratum's observations with replacement *within* the stratum (Efron and
    Tibshirani 1993, sec. 6.4 and 13; the strata stay fixed), and the interval is the
    percentile interval of the resampled estimates.

    Args:
        strata: one array of observations per stratum (e.g. final scores, or 0/1 full passes);
            empty strata are left out.

    Returns:
        ``(estimate, low, high)``; all nan when no stratum has observations.
    """
    strata = [np.asarray(v, dtype=float) for v in strata if len(v)]
    if not strata:
        return math.nan, math.nan, math.nan
    estimate = float(np.mean([v.mean() for v in strata]))
    rng = rng if rng is not None else np.random.default_rng(0)
    means = np.mean([resampled_means(v, resamples, rng) if v.size > 1 and np.any(v != v[0])
                     else np.full(resamples, v[0]) for v in strata], axis=0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact McNemar test (two-sided) on paired binary outcomes: the binomial test of the
    discordant pairs ``a_only`` (a passes, b fails) against ``b_only`` with p = 1/2
    (``scipy.stats.binomtest``). 1.0 without discordant pairs."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(a_only), int(n), 0.5, alternative="two-sided").pvalue)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k: the probability that at least one of k trials drawn
    without replacement from n (c of them successes) succeeds (Chen et al. 2021, eq. 1).

    Returns:
        ``1 - C(n - c, k) / C(n, k)``; ``nan`` when ``k > n`` or ``k < 1``.
    """
    if k < 1 or k > n:
        return math.nan
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass^k: the probability that all of k trials drawn without
    replacement from n (c of them successes) succeed (Yao et al. 2024, tau-bench).

    Returns:
        ``C(c, k) / C(n, k)``; ``nan`` when ``k > n`` or ``k < 1``.
    """
    if k < 1 or k > n:
        return math.nan
    return math.comb(c, k) / math.comb(n, k)


class FisherResult(BaseModel):
    """Fisher's exact test on full passes of two arms."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    odds_ratio: float
    """Sample odds ratio ``(a_pass * b_fail) / (a_fail * b_pass)`` (may be 0, inf or nan)."""
    p_value: float
    """Two-sided p-value; nan without observations."""


def fisher_passes(passes_a: int, n_a: int, passes_b: int, n_b: int) -> FisherResult:
    """Fisher's exact test (two-sided) on the 2x2 table ``[[passes_a, n_a - passes_a],
    [passes_b, n_b - passes_b]]`` (``scipy.stats.fisher_exact``).

    E.g. 0/5 vs 5/5 -> p = 0.0079. Without observations (``n_a == n_b == 0``) p is nan.
    """
    if n_a + n_b == 0:
        return FisherResult(odds_ratio=math.nan, p_value=math.nan)
    table = [[passes_a, n_a - passes_a], [passes_b, n_b - passes_b]]
    res = stats.fisher_exact(table, alternative="two-sided")
    return FisherResult(odds_ratio=float(res.statistic), p_value=float(res.pvalue))


class WilcoxonResult(BaseModel):
    """Wilcoxon signed-rank test on paired final scores."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    statistic: float
    """The test statistic (smaller of the signed-rank sums); nan without pairs."""
    p_value: float
    """Two-sided p-value; 1.0 when every pair is tied; nan without pairs."""
    note: str
    """``""``, ``"no pairs"``, ``"all pairs tied"`` or ``"k of n pairs tied (dropped)"``."""


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> WilcoxonResult:
    """Wilcoxon signed-rank test (two-sided) of ``a - b`` over pairs (``scipy.stats.wilcoxon``,
    ``zero_method="wilcox"``: tied pairs are dropped).

    Args:
        a, b: shape ``(n,)``, paired observations (e.g. final scores of two arms on the same
            seeds).

    Returns:
        The statistic, p-value and a note. When every pair is tied (all differences 0, where
        scipy has no statistic) the result is statistic 0, p 1.0, note "all pairs tied".

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    n = a.size
    if n == 0:
        return WilcoxonResult(statistic=math.nan, p_value=math.nan, note="no pairs")
    d = a - b
    ties = int(np.sum(d == 0))
    if ties == n:
        return WilcoxonResult(statistic=0.0, p_value=1.0, note="all pairs tied")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    note = f"{ties} of {n} pairs tied (dropped)" if ties else ""
    return WilcoxonResult(statistic=float(res.statistic), p_value=float(res.pvalue), note=note)
