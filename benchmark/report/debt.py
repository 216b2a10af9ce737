"""Debt versus difficulty: isolated minus cumulative score, per episode, on the same seeds.

An ``isolated`` trial starts every episode from the reference solution of the previous one;
a ``cumulative`` trial from what the agent left. On the same seed (the same gate inputs) and
in the same marathon, model, effort, agent and arm, the difference of their scores after an
episode is what the episode costs for having been built on the agent's own earlier work:
accumulated *debt*, as opposed to the episode's difficulty (which both modes face).

Pairs: included (complete) trials of the two modes with equal marathon, model, effort, agent,
arm and seed (several runs with the same seed base pair in order of run id and replicate).
Interval: percentile bootstrap of the mean paired difference, resampling pairs (the paired
bootstrap: :func:`~benchmark.report.stats.bootstrap_mean_ci` on the differences, seeded per
group and episode). Gates: for each gate active after the episode, the share of pairs in which
it is green in the isolated trial minus the share in the cumulative one; the gates with a
positive difference account for the debt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.report.chartdata import gate_status
from benchmark.report.load import Results
from benchmark.report.markdown import fmt_num
from benchmark.report.options import ReportOptions
from benchmark.report.stats import bootstrap_mean_ci, group_rng

#: Columns of a debt group (pairs are formed within one, on the seed).
DEBT_KEYS = ["marathon", "model", "effort", "agent", "arm"]


def has_both_modes(results: Results) -> bool:
    """Whether some group has included trials in both modes (a debt table can be made)."""
    t = results.trials[results.trials["included"]]
    return bool(len(t)) and bool((t.groupby(DEBT_KEYS, observed=True)["mode"].nunique() > 1).any())


def mode_pairs(results: Results) -> pd.DataFrame:
    """Included trials paired across modes.

    Returns:
        One row per pair: DEBT_KEYS, ``seed``, ``uid_isolated``, ``uid_cumulative``.
    """
    t = results.trials[results.trials["included"]].sort_values(["run_id", "replicate"])
    t = t.assign(_nth=t.groupby(DEBT_KEYS + ["mode", "seed"], observed=True).cumcount())
    on = DEBT_KEYS + ["seed", "_nth"]
    iso = t.loc[t["mode"] == "isolated", on + ["uid"]].rename(columns={"uid": "uid_isolated"})
    cum = t.loc[t["mode"] == "cumulative", on + ["uid"]].rename(columns={"uid": "uid_cumulative"})
    return iso.merge(cum, on=on, how="inner").drop(columns="_nth").reset_index(drop=True)


def debt_gates(results: Results, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per group x episode x active gate: how often the gate is green in each mode.

    Args:
        status: :func:`~benchmark.report.chartdata.gate_status` of ``results`` (computed when
            not given).

    Returns:
        Columns: DEBT_KEYS, ``episode``, ``episode_index``, ``gate``, ``pairs``,
        ``isolated_green`` and ``cumulative_green`` (shares of the pairs, 0..1),
        ``difference`` (isolated minus cumulative).
    """
    cols = DEBT_KEYS + ["episode", "episode_index", "gate", "pairs", "isolated_green",
                        "cumulative_green", "difference"]
    pairs = mode_pairs(results)
    status = gate_status(results) if status is None else status
    if pairs.empty or status.empty:
        return pd.DataFrame(columns=cols)
    s = status[["uid", "episode", "episode_index", "gate", "green"]]
    iso = pairs.merge(s.rename(columns={"uid": "uid_isolated", "green": "iso"}), on="uid_isolated")
    both = iso.merge(s.rename(columns={"uid": "uid_cumulative", "green": "cum"}),
                     on=["uid_cumulative", "episode", "episode_index", "gate"])
    out = (both.groupby(DEBT_KEYS + ["episode", "episode_index", "gate"], observed=True, sort=True)
           .agg(pairs=("iso", "size"), isolated_green=("iso", "mean"),
                cumulative_green=("cum", "mean")).reset_index())
    out["difference"] = out["isolated_green"] - out["cumulative_green"]
    return out[cols]


def debt_table(results: Results, options: ReportOptions = ReportOptions(),
               gates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per group x episode: isolated minus cumulative score over paired trials.

    Args:
        gates: :func:`debt_gates` of ``results`` (computed when not given).

    Returns:
        Columns: DEBT_KEYS, ``episode``, ``episode_index``, ``pairs``, ``isolated`` and
        ``cumulative`` (mean scores after the episode, 0..1), ``debt`` (mean paired
        difference isolated - cumulative), ``ci_low``, ``ci_high`` (paired percentile
        bootstrap, ``options.resamples`` resamples), ``gates`` (the gates green more often in
        isolation than cumulatively, largest difference first, as ``name +0.50``; empty when
        none).
    """
    cols = DEBT_KEYS + ["episode", "episode_index", "pairs", "isolated", "cumulative", "debt",
                        "ci_low", "ci_high", "gates"]
    pairs = mode_pairs(results)
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    eps = results.only_included(results.episode_rows)[["uid", "episode", "episode_index", "score"]]
    both = (pairs.merge(eps.rename(columns={"uid": "uid_isolated", "score": "iso"}), on="uid_isolated")
            .merge(eps.rename(columns={"uid": "uid_cumulative", "score": "cum"}),
                   on=["uid_cumulative", "episode", "episode_index"]))
    both["diff"] = both["iso"] - both["cum"]
    gates = debt_gates(results) if gates is None else gates
    rows = []
    for key, g in both.groupby(DEBT_KEYS + ["episode", "episode_index"], observed=True, sort=True):
        lo, hi = bootstrap_mean_ci(g["diff"].to_numpy(), options.resamples, options.confidence,
                                   group_rng(options.seed, "debt|" + "|".join(map(str, key))))
        mask = np.ones(len(gates), dtype=bool)
        for k, v in zip(DEBT_KEYS + ["episode"], key[:-1]):
            mask &= (gates[k] == v).to_numpy()
        gs = gates[mask & (gates["difference"] > 0).to_numpy()].sort_values(
            ["difference", "gate"], ascending=[False, True])
        text = ", ".join(f"{n} {d:+.2f}" for n, d in zip(gs["gate"], gs["difference"]))
        rows.append((*key, len(g), g["iso"].mean(), g["cum"].mean(), g["diff"].mean(), lo, hi, text))
    return pd.DataFrame(rows, columns=cols).sort_values(
        DEBT_KEYS + ["episode_index"], ignore_index=True)


def debt_markdown(debt: pd.DataFrame) -> pd.DataFrame:
    """The debt table formatted for reading (with the marathon when there are several)."""
    out = pd.DataFrame({
        "model": debt["model"], "effort": debt["effort"], "agent": debt["agent"],
        "arm": debt["arm"], "episode": debt["episode"], "pairs": debt["pairs"],
        "isolated": [fmt_num(x) for x in debt["isolated"]],
        "cumulative": [fmt_num(x) for x in debt["cumulative"]],
        "debt (isolated - cumulative) [95%]": [
            f"{fmt_num(d)} [{fmt_num(lo)}, {fmt_num(hi)}]"
            for d, lo, hi in zip(debt["debt"], debt["ci_low"], debt["ci_high"])],
        "gates accounting for it (isolated - cumulative green share)": [
            g or "none" for g in debt["gates"]],
    })
    if debt["marathon"].nunique() > 1:
        out.insert(0, "marathon", debt["marathon"].to_numpy())
    return out
