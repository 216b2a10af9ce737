"""The pooled summary of a suite (records of several marathons), with marathon as a stratum.

Each marathon is a stratum: pooled figures are the unweighted mean of the marathons' figures
(every marathon counts the same, whatever its number of replicates), with stratified bootstrap
intervals (:func:`~benchmark.report.stats.stratified_mean_ci`: resampling within each marathon).
Paired comparisons between arms pair trials by marathon and seed (the same gate inputs), then
test over all pairs: exact McNemar on full passes, Wilcoxon signed-rank on final scores.
Only included (complete) trials count.
"""

from __future__ import annotations

import itertools

import pandas as pd

from benchmark.report.load import Results
from benchmark.report.markdown import fmt_num, fmt_p, fmt_share
from benchmark.report.options import ReportOptions
from benchmark.report.stats import group_rng, mcnemar_exact, paired_wilcoxon, stratified_mean_ci
from benchmark.report.tables import paired_final_scores

#: Columns of a pooled group: a group of the summary without the marathon.
POOL_KEYS = ["model", "effort", "agent", "mode", "arm"]
#: A pooled configuration: arms are compared within one.
POOL_CONFIG = ["model", "effort", "agent", "mode"]


def pooled_summary(results: Results, options: ReportOptions = ReportOptions()) -> pd.DataFrame:
    """One row per model x effort x agent x mode x arm, pooled over the marathons.

    Returns:
        Columns: POOL_KEYS; ``marathons`` (count with complete replicates) and
        ``marathon_names``; ``trials`` (planned); ``replicates`` (complete); ``full_passes``;
        ``full_pass_rate`` (mean over marathons of each one's full-pass rate),
        ``full_pass_ci_low`` / ``_high``; ``mean_final_score`` (mean over marathons of each
        one's mean final score), ``score_ci_low`` / ``_high`` (stratified percentile bootstrap,
        ``options.resamples`` resamples, seeded per group).
    """
    cols = POOL_KEYS + ["marathons", "marathon_names", "trials", "replicates", "full_passes",
                        "full_pass_rate", "full_pass_ci_low", "full_pass_ci_high",
                        "mean_final_score", "score_ci_low", "score_ci_high"]
    t = results.trials
    if t.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    order = {m: i for i, m in enumerate(results.marathons)}
    for key, group in t.groupby(POOL_KEYS, observed=True, sort=True):
        inc = group[group["included"]]
        strata = [(m, g["final_score"].to_numpy(dtype=float))
                  for m, g in sorted(inc.groupby("marathon", observed=True), key=lambda x: order.get(x[0], 99))]
        names = [m for m, _ in strata]
        tag = "|".join(map(str, key))
        passes = [(v >= 1.0).astype(float) for _, v in strata]
        rate, rlo, rhi = stratified_mean_ci(passes, options.resamples, options.confidence,
                                            group_rng(options.seed, "pooled-pass|" + tag))
        mean, slo, shi = stratified_mean_ci([v for _, v in strata], options.resamples,
                                            options.confidence,
                                            group_rng(options.seed, "pooled-score|" + tag))
        rows.append((*key, len(names), ", ".join(names), len(group), len(inc),
                     int(sum(p.sum() for p in passes)), rate, rlo, rhi, mean, slo, shi))
    return pd.DataFrame(rows, columns=cols)


def pooled_comparisons(results: Results, options: ReportOptions = ReportOptions()) -> pd.DataFrame:
    """Every pair of arms within each pooled configuration, paired by marathon and seed.

    Returns:
        One row per configuration x arm pair: POOL_CONFIG, ``arm_a``, ``arm_b``, ``pairs``,
        ``marathons`` (with at least one pair), ``passes_a``, ``passes_b`` (full passes over
        the pairs), ``a_only``, ``b_only`` (discordant pairs), ``mcnemar_p`` (exact,
        two-sided), ``mean_difference`` (a - b final score, mean over marathons of each one's
        mean paired difference), ``difference_ci_low`` / ``_high`` (stratified bootstrap of
        the pairs), ``wilcoxon_p`` (signed-rank over every pair, two-sided), ``note``.
    """
    cols = POOL_CONFIG + ["arm_a", "arm_b", "pairs", "marathons", "passes_a", "passes_b", "a_only",
                          "b_only", "mcnemar_p", "mean_difference", "difference_ci_low",
                          "difference_ci_high", "wilcoxon_p", "note"]
    t = results.trials[results.trials["included"]]
    rows = []
    for config, sub in t.groupby(POOL_CONFIG, observed=True, sort=True):
        arms = [a for a in results.arms if a in set(sub["arm"])]
        for arm_a, arm_b in itertools.combinations(arms, 2):
            p = paired_final_scores(results, arm_a, arm_b)
            p = p[(p[POOL_CONFIG] == pd.Series(config, index=POOL_CONFIG)).all(axis=1)]
            pass_a, pass_b = p["score_a"] >= 1, p["score_b"] >= 1
            a_only, b_only = int((pass_a & ~pass_b).sum()), int((~pass_a & pass_b).sum())
            diffs = [(g["score_a"] - g["score_b"]).to_numpy() for _, g in p.groupby("marathon")]
            est, lo, hi = stratified_mean_ci(
                diffs, options.resamples, options.confidence,
                group_rng(options.seed, "pooled-diff|" + "|".join(map(str, (*config, arm_a, arm_b)))))
            w = paired_wilcoxon(p["score_a"].to_numpy(), p["score_b"].to_numpy())
            rows.append((*config, arm_a, arm_b, len(p), len(diffs), int(pass_a.sum()),
                         int(pass_b.sum()), a_only, b_only, mcnemar_exact(a_only, b_only),
                         est, lo, hi, w.p_value, w.note))
    return pd.DataFrame(rows, columns=cols)


def pooled_summary_markdown(summary: pd.DataFrame) -> pd.DataFrame:
    """The pooled summary formatted for reading."""
    return pd.DataFrame({
        "model": summary["model"], "effort": summary["effort"], "agent": summary["agent"],
        "mode": summary["mode"], "arm": summary["arm"],
        "marathons": summary["marathon_names"],
        "replicates": [f"{r} of {t}" for r, t in zip(summary["replicates"], summary["trials"])],
        "full-pass rate, stratified [95%]": [
            f"{fmt_share(r)} [{fmt_share(lo)}, {fmt_share(hi)}]" for r, lo, hi in
            zip(summary["full_pass_rate"], summary["full_pass_ci_low"], summary["full_pass_ci_high"])],
        "mean final score, stratified [95%]": [
            f"{fmt_num(m)} [{fmt_num(lo)}, {fmt_num(hi)}]" for m, lo, hi in
            zip(summary["mean_final_score"], summary["score_ci_low"], summary["score_ci_high"])],
    })


def pooled_comparisons_markdown(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The pooled comparisons formatted for reading."""
    return pd.DataFrame({
        "model": comparisons["model"], "effort": comparisons["effort"],
        "agent": comparisons["agent"], "mode": comparisons["mode"],
        "arms (a vs b)": comparisons["arm_a"] + " vs " + comparisons["arm_b"],
        "pairs (marathons)": [f"{n} ({m})" for n, m in zip(comparisons["pairs"], comparisons["marathons"])],
        "full passes a / b": [f"{a} / {b}" for a, b in zip(comparisons["passes_a"], comparisons["passes_b"])],
        "McNemar p": [fmt_p(p) for p in comparisons["mcnemar_p"]],
        "score difference a - b, stratified [95%]": [
            f"{fmt_num(d)} [{fmt_num(lo)}, {fmt_num(hi)}]" for d, lo, hi in
            zip(comparisons["mean_difference"], comparisons["difference_ci_low"],
                comparisons["difference_ci_high"])],
        "Wilcoxon p": [fmt_p(p) for p in comparisons["wilcoxon_p"]],
        "note": comparisons["note"],
    })


def stratum_weights_note(results: Results) -> str:
    """One sentence on how the marathons are weighed (for report.md)."""
    n = results.trials[results.trials["included"]].groupby("marathon", observed=True).size()
    parts = ", ".join(f"{m} {int(n.get(m, 0))}" for m in results.marathons)
    return (f"Complete trials per marathon: {parts}. Each marathon is a stratum and counts the "
            "same in pooled figures (mean of the marathons' figures); intervals are stratified "
            "percentile bootstraps (resampling within each marathon).")
