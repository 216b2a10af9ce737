"""The summary table (per model x arm x agent) and the paired comparisons between arms.

Only included (complete) trials count; excluded trials are counted in ``excluded`` and listed
in the claim boundary. Statistics come from :mod:`benchmark.report.stats`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from benchmark.report.chartdata import TOKEN_KINDS, token_audit
from benchmark.report.load import CONFIG_KEYS, GROUP_KEYS, Results
from benchmark.report.options import ReportOptions
from benchmark.report.stats import (bootstrap_mean_ci, fisher_passes, group_rng, pass_at_k,
                                    pass_hat_k, paired_wilcoxon, wilson_interval)

#: Optional per-trial count columns of trials.parquet (e.g. of the governed controller) that
#: the summary sums when a run has them.
OPTIONAL_TRIAL_COUNTS = ("rollbacks", "self_checks", "self_check_recoveries")

#: Column names under which attempts.parquet may carry the proxy-vs-agent usage verdict
#: (``match`` / ``mismatch...`` / ``no_agent_usage``, or a bool "reconciled").
RECONCILIATION_COLUMNS = ("usage_verdict", "usage_reconciliation", "reconciliation",
                          "usage_reconciled", "reconciled")


#: Largest default k of pass@k / pass^k.
MAX_DEFAULT_K = 5


def default_k(results: Results) -> int:
    """The default k of pass@k / pass^k: the smallest number of complete replicates over the
    groups that have any, capped at :data:`MAX_DEFAULT_K` (1 when there are none)."""
    t = results.trials[results.trials["included"]]
    if t.empty:
        return 1
    return int(min(MAX_DEFAULT_K, t.groupby(GROUP_KEYS, observed=True).size().min()))


def reconciliation_column(attempts: pd.DataFrame) -> str | None:
    """The attempts column holding the usage reconciliation verdict, if the run has one."""
    for c in RECONCILIATION_COLUMNS:
        if c in attempts.columns:
            return c
    for c in attempts.columns:
        if "reconcil" in c.lower():
            return c
    return None


def reconciliation_summary(results: Results) -> pd.Series:
    """Per group: whether proxy and agent usage reconciled, as text.

    Returns:
        Series indexed by GROUP_KEYS: ``"yes (m/m attempts match)"``, ``"no (x of m attempts
        mismatch)"``, or ``"n/a"`` (no verdict column, or no attempt with a verdict: e.g.
        agents that use no model). ``no_agent_usage`` verdicts count as not reconciled.
    """
    col = reconciliation_column(results.attempts)
    att = results.only_included(results.attempts)
    if col is None or att.empty or att[col].isna().all():
        return pd.Series(dtype=str)
    v = att[col]
    if v.dtype == bool or str(v.dtype) == "boolean":
        verdict = v.map({True: "match", False: "mismatch"})
    else:
        verdict = v.astype("string").str.split(":").str[0].str.strip()
    att = att.assign(_has=verdict.notna(), _match=verdict.eq("match").fillna(False))
    g = att.groupby(GROUP_KEYS, observed=True)
    has, match = g["_has"].sum(), g["_match"].sum()
    text = np.where(has == 0, "n/a",
                    np.where(match == has, "yes (" + match.astype(str) + "/" + has.astype(str)
                             + " attempts match)",
                             "no (" + (has - match).astype(str) + " of " + has.astype(str)
                             + " attempts do not match)"))
    return pd.Series(text, index=has.index)


#: Columns :func:`steering_summary` adds to the summary of groups steered by an operator.
STEERING_COLUMNS = ["operators", "steering_min", "steering_min_per_trial", "operator_wall_min",
                    "prompts", "shell_commands", "files_operator", "files_agent"]


def steering_summary(results: Results) -> pd.DataFrame:
    """Per group of human-operator trials (included ones): how the operators steered.

    Returns:
        One row per group with steering rows: GROUP_KEYS; ``operators`` (pseudonymous ids,
        comma-separated); ``steering_min`` (active steering minutes, total over the trials'
        episodes); ``steering_min_per_trial`` (mean per trial); ``operator_wall_min`` (wall
        minutes of the operators' episodes, total); ``prompts`` (to the agent), ``shell_commands``,
        ``files_operator`` (files edited directly), ``files_agent`` (totals). Empty (with these
        columns) when no run has steering rows.
    """
    s = results.steering
    if s.empty:
        return pd.DataFrame(columns=GROUP_KEYS + STEERING_COLUMNS)
    s = results.only_included(s.assign(uid=s["run_id"].astype(str) + "/" + s["trial_id"].astype(str)))
    if s.empty:
        return pd.DataFrame(columns=GROUP_KEYS + STEERING_COLUMNS)
    per_trial = s.groupby(GROUP_KEYS + ["uid"], observed=True)["steering_s"].sum().reset_index()
    g = s.groupby(GROUP_KEYS, observed=True, sort=True)
    out = g.agg(steering_s=("steering_s", "sum"), wall_s=("wall_s", "sum"),
                prompts=("prompts", "sum"), shell_commands=("shell_commands", "sum"),
                files_operator=("files_operator", "sum"), files_agent=("files_agent", "sum"),
                operators=("operator", lambda x: ", ".join(sorted(set(map(str, x))))))
    out["steering_min"] = out.pop("steering_s") / 60
    out["operator_wall_min"] = out.pop("wall_s") / 60
    out["steering_min_per_trial"] = (per_trial.groupby(GROUP_KEYS, observed=True)["steering_s"]
                                     .mean() / 60)
    return out.reset_index()[GROUP_KEYS + STEERING_COLUMNS]


def summary_table(results: Results, options: ReportOptions = ReportOptions()) -> pd.DataFrame:
    """One row per marathon x model x effort x agent x arm.

    Returns:
        Columns: GROUP_KEYS; ``trials`` (planned); ``replicates`` (complete, included);
        ``excluded``; ``full_passes`` (final score == 1); ``full_pass_rate``;
        ``full_pass_ci_low`` / ``_high`` (Wilson); ``mean_final_score``; ``score_ci_low`` /
        ``_high`` (percentile bootstrap, ``options.resamples`` resamples, seeded); ``k``;
        ``pass_at_k`` (Chen et al. 2021); ``pass_hat_k`` (Yao et al. 2024); ``attempts``;
        ``recovery_attempts`` (total); ``recovery_per_trial``; any of
        :data:`OPTIONAL_TRIAL_COUNTS` present; ``input_tokens``, ``output_tokens``,
        ``cache_write_tokens``, ``cache_read_tokens``, ``reasoning_tokens`` (totals);
        ``cost_usd`` (total USD, nan when unknown); ``usage_reconciled`` (text, ``n/a`` when
        the records carry no verdict); when any group was steered by an operator, the
        :data:`STEERING_COLUMNS` of :func:`steering_summary` (nan for the other groups).
    """
    k = options.k or default_k(results)
    t = results.trials
    planned = t.groupby(GROUP_KEYS, observed=True, sort=True).size().rename("trials")
    inc = t[t["included"]].assign(full=lambda d: d["final_score"] >= 1.0)
    g = inc.groupby(GROUP_KEYS, observed=True, sort=True)
    agg = {"replicates": ("uid", "size"), "full_passes": ("full", "sum"),
           "mean_final_score": ("final_score", "mean"), "attempts": ("attempts", "sum"),
           "recovery_attempts": ("recovery_attempts", "sum"),
           "recovery_per_trial": ("recovery_attempts", "mean")}
    agg.update({c: (c, "sum") for c in OPTIONAL_TRIAL_COUNTS if c in inc.columns})
    out = planned.to_frame().join(g.agg(**agg), how="left").reset_index()
    out["replicates"] = out["replicates"].fillna(0).astype("int64")
    out["full_passes"] = out["full_passes"].fillna(0).astype("int64")
    out["excluded"] = out["trials"] - out["replicates"]
    out["full_pass_rate"] = out["full_passes"] / out["replicates"].replace(0, np.nan)

    scores = g["final_score"].apply(np.asarray)
    ci = {}
    for key, values in scores.items():  # one bootstrap per group
        ci[key] = bootstrap_mean_ci(values, options.resamples, options.confidence,
                                    group_rng(options.seed, "final|" + "|".join(map(str, key))))
    keys = list(out[GROUP_KEYS].itertuples(index=False, name=None))
    wilson = [wilson_interval(int(c), int(n), options.confidence)
              for c, n in zip(out["full_passes"], out["replicates"])]
    out["full_pass_ci_low"] = [w[0] for w in wilson]
    out["full_pass_ci_high"] = [w[1] for w in wilson]
    out["score_ci_low"] = [ci.get(key, (np.nan, np.nan))[0] for key in keys]
    out["score_ci_high"] = [ci.get(key, (np.nan, np.nan))[1] for key in keys]
    out["k"] = k
    out["pass_at_k"] = [pass_at_k(int(n), int(c), k) for n, c in zip(out["replicates"], out["full_passes"])]
    out["pass_hat_k"] = [pass_hat_k(int(n), int(c), k) for n, c in zip(out["replicates"], out["full_passes"])]

    tokens = token_audit(results).drop(columns=["n", "cost_unknown_rows", "usage_rows"])
    out = out.merge(tokens, on=GROUP_KEYS, how="left")
    kinds = TOKEN_KINDS + ["reasoning_tokens"]
    out[kinds] = out[kinds].fillna(0).astype("int64")
    rec = reconciliation_summary(results).rename("usage_reconciled")
    out = out.merge(rec, left_on=GROUP_KEYS, right_index=True, how="left") if len(rec) else out
    if "usage_reconciled" not in out.columns:
        out["usage_reconciled"] = "n/a"
    out["usage_reconciled"] = out["usage_reconciled"].fillna("n/a")
    order = (GROUP_KEYS + ["trials", "replicates", "excluded", "full_passes", "full_pass_rate",
                           "full_pass_ci_low", "full_pass_ci_high", "mean_final_score",
                           "score_ci_low", "score_ci_high", "k", "pass_at_k", "pass_hat_k",
                           "attempts", "recovery_attempts", "recovery_per_trial"]
             + [c for c in OPTIONAL_TRIAL_COUNTS if c in out.columns]
             + kinds + ["cost_usd", "usage_reconciled"])
    steer = steering_summary(results)
    if len(steer):
        out = out.merge(steer, on=GROUP_KEYS, how="left")
        order += STEERING_COLUMNS
    return _sort_arms(out[order], results)


def _sort_arms(frame: pd.DataFrame, results: Results) -> pd.DataFrame:
    """Sort by the configuration keys, then arms in the runs' order."""
    rank = {a: i for i, a in enumerate(results.arms)}
    return (frame.assign(_arm=frame["arm"].map(rank))
            .sort_values(CONFIG_KEYS + ["_arm"], kind="stable").drop(columns="_arm")
            .reset_index(drop=True))


def paired_final_scores(results: Results, arm_a: str, arm_b: str) -> pd.DataFrame:
    """Included trials of two arms paired by seed within each configuration (marathon, model,
    effort, agent). A seed that occurs several times in an arm (several runs with the same
    seed base) pairs in order of run id and replicate.

    Returns:
        One row per pair: CONFIG_KEYS, ``seed``, ``score_a``, ``score_b`` (final scores).
    """
    t = results.trials[results.trials["included"]].sort_values(["run_id", "replicate"])
    t = t.assign(_nth=t.groupby(CONFIG_KEYS + ["arm", "seed"], observed=True).cumcount())
    cols = CONFIG_KEYS + ["seed", "_nth"]
    a = t.loc[t["arm"] == arm_a, cols + ["final_score"]].rename(columns={"final_score": "score_a"})
    b = t.loc[t["arm"] == arm_b, cols + ["final_score"]].rename(columns={"final_score": "score_b"})
    return a.merge(b, on=cols, how="inner").drop(columns="_nth")


def comparisons_table(results: Results) -> pd.DataFrame:
    """Every pair of arms within each configuration, on the same seeds.

    Returns:
        One row per configuration x arm pair (arms in the runs' order): CONFIG_KEYS, ``arm_a``,
        ``arm_b``, ``pairs`` (seeds with a complete trial in both arms), ``passes_a``,
        ``passes_b`` (full passes over the pairs), ``fisher_odds_ratio``, ``fisher_p``
        (Fisher's exact test, two-sided, on full passes), ``mean_a``, ``mean_b``,
        ``mean_difference`` (a - b, final score), ``wilcoxon_statistic``, ``wilcoxon_p``
        (Wilcoxon signed-rank, two-sided, on paired final scores), ``note``.
    """
    cols = CONFIG_KEYS + ["arm_a", "arm_b", "pairs", "passes_a", "passes_b", "fisher_odds_ratio",
                          "fisher_p", "mean_a", "mean_b", "mean_difference",
                          "wilcoxon_statistic", "wilcoxon_p", "note"]
    t = results.trials[results.trials["included"]]
    rows = []
    for config, sub in t.groupby(CONFIG_KEYS, observed=True, sort=True):
        arms = [a for a in results.arms if a in set(sub["arm"])]
        for arm_a, arm_b in itertools.combinations(arms, 2):
            p = paired_final_scores(results, arm_a, arm_b)
            p = p[(p[CONFIG_KEYS] == pd.Series(config, index=CONFIG_KEYS)).all(axis=1)]
            n = len(p)
            pa, pb = int((p["score_a"] >= 1).sum()), int((p["score_b"] >= 1).sum())
            fisher = fisher_passes(pa, n, pb, n)
            w = paired_wilcoxon(p["score_a"].to_numpy(), p["score_b"].to_numpy())
            rows.append((*config, arm_a, arm_b, n, pa, pb, fisher.odds_ratio, fisher.p_value,
                         p["score_a"].mean() if n else np.nan, p["score_b"].mean() if n else np.nan,
                         (p["score_a"] - p["score_b"]).mean() if n else np.nan,
                         w.statistic, w.p_value, w.note))
    return pd.DataFrame(rows, columns=cols)
