"""Markdown rendering of report tables (GitHub pipe tables) and number formatting."""

from __future__ import annotations

import math

import pandas as pd


def fmt_share(x: float, digits: int = 0) -> str:
    """A share 0..1 as a percentage, e.g. ``0.5 -> "50%"``; ``n/a`` for nan/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def fmt_num(x: float, digits: int = 2) -> str:
    """A number with ``digits`` decimals; ``n/a`` for nan/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value: 4 decimals, ``< 0.0001`` below that; ``n/a`` for nan."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_int(x) -> str:
    """An integer with thousands separators."""
    return f"{int(x):,}"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown pipe table of ``frame`` (cells as ``str``; ``|`` escaped).
    An empty frame renders as ``_(none)_``."""
    if frame.empty:
        return "_(none)_\n"
    head = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False, name=None)]
    return "\n".join([head, rule, *body]) + "\n"


def summary_markdown(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table formatted for reading (one string column per figure)."""
    k = int(summary["k"].iloc[0]) if len(summary) else 1
    out = pd.DataFrame({
        "model": summary["model"], "effort": summary["effort"], "agent": summary["agent"],
        "mode": summary["mode"], "arm": summary["arm"],
        "replicates": [f"{r} ({e} excluded)" if e else f"{r}"
                       for r, e in zip(summary["replicates"], summary["excluded"])],
        "full passes [Wilson 95%]": [
            f"{c}/{n} = {fmt_share(r)} [{fmt_share(lo)}, {fmt_share(hi)}]"
            for c, n, r, lo, hi in zip(summary["full_passes"], summary["replicates"],
                                       summary["full_pass_rate"], summary["full_pass_ci_low"],
                                       summary["full_pass_ci_high"])],
        "mean final score [bootstrap 95%]": [
            f"{fmt_num(m)} [{fmt_num(lo)}, {fmt_num(hi)}]"
            for m, lo, hi in zip(summary["mean_final_score"], summary["score_ci_low"],
                                 summary["score_ci_high"])],
        f"pass^{k}": [fmt_num(x) for x in summary["pass_hat_k"]],
        f"pass@{k}": [fmt_num(x) for x in summary["pass_at_k"]],
        "recovery attempts (total; per trial)": [
            f"{fmt_int(t)}; {fmt_num(m)}" for t, m in
            zip(summary["recovery_attempts"].fillna(0), summary["recovery_per_trial"])],
    })
    _marathon_column(out, summary)
    if "rollbacks" in summary.columns:
        out["rollbacks"] = [fmt_int(x) for x in summary["rollbacks"].fillna(0)]
    if "self_checks" in summary.columns and summary["self_checks"].fillna(0).any():
        out["self-checks (total; red = in-episode recoveries)"] = [
            f"{fmt_int(t)}; {fmt_int(r)}" for t, r in
            zip(summary["self_checks"].fillna(0), summary["self_check_recoveries"].fillna(0))]
    if "steering_min" in summary.columns:  # groups steered by a human operator
        human = summary["steering_min"].notna()
        out["operator steering min (total; per trial)"] = [
            f"{fmt_num(t, 1)}; {fmt_num(m, 1)}" if h else "-" for h, t, m in
            zip(human, summary["steering_min"], summary["steering_min_per_trial"])]
        out["interventions (prompts; shell commands)"] = [
            f"{fmt_int(p)}; {fmt_int(c)}" if h else "-" for h, p, c in
            zip(human, summary["prompts"], summary["shell_commands"])]
        out["files edited (operator; agent)"] = [
            f"{fmt_int(o)}; {fmt_int(a)}" if h else "-" for h, o, a in
            zip(human, summary["files_operator"], summary["files_agent"])]
    for col, name in [("input_tokens", "input tok"), ("output_tokens", "output tok"),
                      ("cache_write_tokens", "cache write tok"),
                      ("cache_read_tokens", "cache read tok")]:
        out[name] = [fmt_int(x) for x in summary[col]]
    out["cost (USD)"] = [fmt_num(x, 2) for x in summary["cost_usd"]]
    out["usage reconciled"] = summary["usage_reconciled"]
    return out


def _marathon_column(out: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Put the marathon first when ``frame`` holds rows of several marathons (a suite)."""
    if "marathon" in frame.columns and frame["marathon"].nunique() > 1:
        out.insert(0, "marathon", frame["marathon"].to_numpy())
    return out


def comparisons_markdown(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons table formatted for reading."""
    return _marathon_column(pd.DataFrame({
        "model": comparisons["model"], "effort": comparisons["effort"],
        "agent": comparisons["agent"], "mode": comparisons["mode"],
        "arms (a vs b)": comparisons["arm_a"] + " vs " + comparisons["arm_b"],
        "pairs": comparisons["pairs"],
        "full passes a / b": [f"{a}/{n} vs {b}/{n}" for a, b, n in
                              zip(comparisons["passes_a"], comparisons["passes_b"],
                                  comparisons["pairs"])],
        "Fisher p": [fmt_p(p) for p in comparisons["fisher_p"]],
        "mean final score a / b": [f"{fmt_num(a)} / {fmt_num(b)}" for a, b in
                                   zip(comparisons["mean_a"], comparisons["mean_b"])],
        "Wilcoxon p": [fmt_p(p) for p in comparisons["wilcoxon_p"]],
        "note": comparisons["note"],
    }), comparisons)
