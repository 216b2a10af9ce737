"""The data frame behind each chart (and the token figures of the summary table).

Every function reads only :class:`~benchmark.report.load.Results` and returns a tidy frame whose
first columns are the group keys (:data:`~benchmark.report.load.GROUP_KEYS`: marathon, model,
effort, agent, arm). Only included (complete) trials count. All work is vectorised pandas
(group-bys and merges), no per-row Python loops.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.load import GROUP_KEYS, Results
from benchmark.report.options import ReportOptions
from benchmark.report.stats import bootstrap_mean_ci, group_rng

#: Token kinds of the token audit, in chart order (columns of usage.parquet).
TOKEN_KINDS = ["input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"]


def episode_index(results: Results) -> dict[str, int]:
    """Episode id -> 1-based position in the marathon."""
    return {e: i + 1 for i, e in enumerate(results.episodes)}


def _key(row: tuple) -> str:
    return "|".join(str(v) for v in row)


def marathon_curve(results: Results, options: ReportOptions = ReportOptions()) -> pd.DataFrame:
    """Score after each cumulative episode, per group: the marathon chart.

    Returns:
        One row per group x episode: GROUP_KEYS, ``episode``, ``episode_index`` (1-based),
        ``n`` (complete replicates), ``mean_score`` (mean of episodes.score, 0..1), ``ci_low``,
        ``ci_high`` (percentile bootstrap of the mean, ``options.resamples`` resamples, seeded
        per group and episode).
    """
    eps = results.only_included(results.episode_rows)
    cols = GROUP_KEYS + ["episode", "episode_index"]
    if eps.empty:
        return pd.DataFrame(columns=cols + ["n", "mean_score", "ci_low", "ci_high"])
    out = (eps.groupby(cols, observed=True, sort=True)["score"]
           .agg(n="size", mean_score="mean").reset_index())
    scores = eps.groupby(cols, observed=True, sort=True)["score"].apply(np.asarray)
    lows, highs = [], []
    for key, values in scores.items():  # one bootstrap per group x episode (not per row)
        lo, hi = bootstrap_mean_ci(values, options.resamples, options.confidence,
                                   group_rng(options.seed, "curve|" + _key(key)))
        lows.append(lo)
        highs.append(hi)
    out["ci_low"] = lows
    out["ci_high"] = highs
    return out.sort_values(GROUP_KEYS + ["episode_index"], ignore_index=True)


def gate_status(results: Results) -> pd.DataFrame:
    """Whether each gate is green after each finished episode's final attempt.

    Returns:
        One row per included trial x episode x active gate: ``uid``, GROUP_KEYS, ``seed``,
        ``episode``, ``episode_index``, ``gate``, ``gate_active_from``, ``green`` (bool: every
        check of the gate passed after the episode's final attempt).
    """
    checks = results.only_included(results.checks)
    cols = ["uid"] + GROUP_KEYS + ["seed", "episode", "episode_index", "gate",
                                   "gate_active_from", "green"]
    if checks.empty:
        return pd.DataFrame(columns=cols)
    # Integer keys instead of grouping on strings: (trial, episode) and (trial, episode, gate).
    uid, _ = pd.factorize(checks["uid"])
    ep, ep_names = pd.factorize(checks["episode"])
    gate, gate_names = pd.factorize(checks["gate"])
    te = uid.astype(np.int64) * len(ep_names) + ep
    attempt = checks["attempt"].to_numpy()
    final_attempt = pd.Series(attempt).groupby(te).transform("max").to_numpy()
    final = attempt == final_attempt  # the episode's final attempt (episodes.attempts)
    teg = te[final] * len(gate_names) + gate[final]
    passed = checks["outcome"].to_numpy()[final] == "passed"
    green = pd.Series(passed).groupby(teg, sort=False).all()
    first = pd.Series(np.flatnonzero(final)).groupby(teg, sort=False).first()
    rows = checks.iloc[first.loc[green.index].to_numpy()]
    out = pd.DataFrame({"uid": rows["uid"].to_numpy(), "episode": rows["episode"].to_numpy(),
                        "gate": rows["gate"].to_numpy(),
                        "gate_active_from": rows["gate_active_from"].to_numpy(),
                        "green": green.to_numpy()})
    keys = results.trials[["uid"] + GROUP_KEYS + ["seed"]]
    out = out.merge(keys, on="uid", how="left")
    index = pd.DataFrame([(m, e, i + 1) for m, eps in results.marathons.items()
                          for i, e in enumerate(eps)],
                         columns=["marathon", "episode", "episode_index"])
    out = out.merge(index, on=["marathon", "episode"], how="left")
    out["episode_index"] = out["episode_index"].astype("int64")
    return out[cols]


def gate_survival(results: Results, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """Share of complete replicates in which each gate is green after each episode.

    Args:
        status: :func:`gate_status` of ``results`` (computed when not given).

    Returns:
        One row per group x gate x episode where the gate is active: GROUP_KEYS, ``gate``,
        ``gate_active_from``, ``episode``, ``episode_index``, ``n`` (replicates), ``green``
        (replicates with the gate green), ``share`` (green / n, 0..1).
    """
    status = gate_status(results) if status is None else status
    cols = GROUP_KEYS + ["gate", "gate_active_from", "episode", "episode_index"]
    if status.empty:
        return pd.DataFrame(columns=cols + ["n", "green", "share"])
    out = (status.groupby(cols, observed=True, sort=True)["green"]
           .agg(n="size", green="sum").reset_index())
    out["green"] = out["green"].astype("int64")
    out["share"] = out["green"] / out["n"]
    return out


def regressions(results: Results, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """Which episode broke which earlier gate, counted.

    A *regression* of gate g at episode i: g was green after episode i-1 and is red after
    episode i (both after the final attempt), in the same trial.

    Args:
        status: :func:`gate_status` of ``results`` (computed when not given).

    Returns:
        One row per group x gate x episode i >= 2 in which the gate was active at i-1: GROUP_KEYS,
        ``gate``, ``gate_active_from``, ``episode`` (the breaking episode), ``episode_index``,
        ``n`` (replicates with the gate green after i-1: those at risk), ``broken`` (replicates
        in which episode i broke it).
    """
    status = gate_status(results) if status is None else status
    cols = GROUP_KEYS + ["gate", "gate_active_from", "episode", "episode_index"]
    if status.empty:
        return pd.DataFrame(columns=cols + ["n", "broken"])
    prev = status[["uid", "gate", "episode_index", "green"]].assign(
        episode_index=status["episode_index"] + 1).rename(columns={"green": "green_before"})
    both = status.merge(prev, on=["uid", "gate", "episode_index"], how="inner")
    both = both.assign(at_risk=both["green_before"],
                       broken=both["green_before"] & ~both["green"])
    out = (both.groupby(cols, observed=True, sort=True)
           .agg(n=("at_risk", "sum"), broken=("broken", "sum")).reset_index())
    out[["n", "broken"]] = out[["n", "broken"]].astype("int64")
    return out


def recovery(results: Results) -> pd.DataFrame:
    """Recovery attempts (attempts beyond the first of an episode) per group and episode.

    Returns:
        One row per group x episode: GROUP_KEYS, ``episode``, ``episode_index``, ``n``
        (replicates), ``recovery_attempts`` (sum of episodes.recovery_attempts),
        ``per_trial`` (mean per replicate, count), ``self_check_recoveries`` (sum of the
        episodes' red self-checks: in-episode recoveries of arms with self-checks; 0 in records
        without the column) and ``self_check_per_trial`` (mean per replicate).
    """
    eps = results.only_included(results.episode_rows)
    cols = GROUP_KEYS + ["episode", "episode_index"]
    extra = ["self_check_recoveries", "self_check_per_trial"]
    if eps.empty:
        return pd.DataFrame(columns=cols + ["n", "recovery_attempts", "per_trial", *extra])
    if "self_check_recoveries" not in eps.columns:
        eps = eps.assign(self_check_recoveries=0)
    eps = eps.assign(self_check_recoveries=eps["self_check_recoveries"].fillna(0))
    g = eps.groupby(cols, observed=True, sort=True)
    out = g["recovery_attempts"].agg(n="size", recovery_attempts="sum", per_trial="mean").reset_index()
    sc = g["self_check_recoveries"].agg(self_check_recoveries="sum",
                                        self_check_per_trial="mean").reset_index(drop=True)
    out = pd.concat([out, sc], axis=1)
    out["recovery_attempts"] = out["recovery_attempts"].astype("int64")
    out["self_check_recoveries"] = out["self_check_recoveries"].astype("int64")
    return out


def counted_usage(results: Results) -> pd.DataFrame:
    """The usage rows that count, without double counting.

    Per attempt: the proxy's rows when it metered any (HTTP 2xx or unknown status; refused
    calls are not billed), else the agent's own figures. Rows of excluded trials are dropped.

    Returns:
        A subset of usage.parquet's rows (same columns).
    """
    u = results.only_included(results.usage)
    if u.empty:
        return u
    is_proxy = u["source"].eq("proxy")
    has_proxy = is_proxy.groupby([u["uid"], u["episode"], u["attempt"]]).transform("any")
    status = pd.to_numeric(u["http_status"], errors="coerce")
    ok = status.isna() | status.between(200, 299)
    return u[(is_proxy & ok) | (~is_proxy & ~has_proxy)]


def token_audit(results: Results) -> pd.DataFrame:
    """Tokens by kind and cost per group (counted usage, see :func:`counted_usage`).

    Returns:
        One row per group with included trials: GROUP_KEYS, ``n`` (replicates),
        ``input_tokens``, ``output_tokens``, ``cache_write_tokens``, ``cache_read_tokens``,
        ``reasoning_tokens`` (totals, tokens), ``cost_usd`` (total USD of rows with a known
        cost; nan when none is known), ``cost_unknown_rows`` (rows without a cost),
        ``usage_rows`` (rows counted).
    """
    trials = results.trials[results.trials["included"]]
    n = trials.groupby(GROUP_KEYS, observed=True, sort=True).size().rename("n")
    kinds = TOKEN_KINDS + ["reasoning_tokens"]
    u = counted_usage(results)
    if u.empty:
        out = n.reset_index()
        for k in kinds:
            out[k] = 0
        out["cost_usd"] = np.nan
        out["cost_unknown_rows"] = 0
        out["usage_rows"] = 0
        return out
    u = u.assign(cost_unknown=u["cost_usd"].isna())
    g = u.groupby(GROUP_KEYS, observed=True, sort=True)
    sums = g[kinds].sum()
    sums["cost_usd"] = g["cost_usd"].sum(min_count=1)
    sums["cost_unknown_rows"] = g["cost_unknown"].sum()
    sums["usage_rows"] = g.size()
    out = n.to_frame().join(sums, how="left").reset_index()
    for c in kinds + ["cost_unknown_rows", "usage_rows"]:
        out[c] = out[c].fillna(0).astype("int64")
    return out
