"""The claim boundary: what the results do and do not support.

Models and versions (from the manifests and the usage rows), replicates complete and excluded
(with why), genuine and contract checks reported apart, and a line for simulated models and
for agents that use no model.
"""

from __future__ import annotations

import pandas as pd

from benchmark.report.load import GROUP_KEYS, NO_MODEL_AGENTS, Results
from benchmark.report.markdown import fmt_share, to_markdown

#: Agent name -> keys of its version in ``agent_cli_versions`` / ``manifest.images`` (the
#: latter for runs of harness versions that pinned the two CLIs in the agent image); a declared
#: agent's version is ``agent_cli_versions[name]``.
_CLI_KEYS = {"claude-code": ("claude-code", "claude_code_version"),
             "codex": ("codex", "codex_version")}


def excluded_trials(results: Results) -> pd.DataFrame:
    """Trials left out of every headline figure.

    Returns:
        One row per excluded trial: ``run_id``, ``trial_id``, ``episodes_done``,
        ``episodes_planned``, ``why``.
    """
    t = results.trials[~results.trials["included"]]
    return (t[["run_id", "trial_id", "episodes_done", "episodes_planned", "excluded_reason"]]
            .rename(columns={"excluded_reason": "why"}).reset_index(drop=True))


def check_tags(results: Results) -> pd.DataFrame:
    """Genuine and contract checks apart, after the final attempt of the last episode.

    Returns:
        One row per group x tag: GROUP_KEYS, ``tag`` (``genuine``, ``contract`` or
        ``untagged``), ``checks`` (check verdicts over the replicates), ``passed``, ``share``.
    """
    checks = results.only_included(results.checks)
    if checks.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["tag", "checks", "passed", "share"])
    last = pd.DataFrame({"marathon": list(results.marathons),
                         "episode": [e[-1] for e in results.marathons.values()]})
    eps = results.only_included(results.episode_rows)
    eps = eps.merge(last, on=["marathon", "episode"])[["uid", "episode", "attempts"]]
    final = checks.merge(eps, on=["uid", "episode"], how="inner")
    final = final[final["attempt"] == final["attempts"]]
    final = final.assign(tag=final["tag"].fillna("untagged"),
                         passed=final["outcome"].eq("passed"))
    out = (final.groupby(GROUP_KEYS + ["tag"], observed=True, sort=True)["passed"]
           .agg(checks="size", passed="sum").reset_index())
    out["passed"] = out["passed"].astype("int64")
    out["share"] = out["passed"] / out["checks"]
    return out


def models_and_versions(results: Results) -> pd.DataFrame:
    """Every model x agent of the records with what is known of its version.

    Returns:
        One row per model x agent: ``model``, ``agent``, ``api_models`` (model names the answered
        API calls carried, from usage rows with HTTP 2xx or no status; empty without usage), ``agent_cli`` (version from the
        manifests, for CLI agents), ``kind`` (``real``, ``simulated (scripted)`` or ``no model``).
    """
    pairs = results.trials[["model", "agent"]].drop_duplicates().sort_values(["model", "agent"])
    usage = results.usage
    if not usage.empty:  # calls that were answered (refused requests name what was asked)
        status = pd.to_numeric(usage["http_status"], errors="coerce")
        usage = usage[status.isna() | status.between(200, 299)]
    api = (usage.groupby(["model", "agent"])["api_model"]
           .agg(lambda s: ", ".join(sorted(set(map(str, s))))) if not usage.empty
           else pd.Series(dtype=str))
    rows = []
    for model, agent in pairs.itertuples(index=False, name=None):
        versions = set()
        for run in results.runs:
            for key in _CLI_KEYS.get(agent, (agent,)):
                v = run.agent_cli_versions.get(key) or run.images.get(key)
                if v:
                    versions.add(str(v))
        kind = ("no model" if agent in NO_MODEL_AGENTS or model == "none" else
                "simulated (scripted)" if str(model).startswith("scripted/") else "real")
        rows.append((model, agent, api.get((model, agent), ""), ", ".join(sorted(versions)), kind))
    return pd.DataFrame(rows, columns=["model", "agent", "api_models", "agent_cli", "kind"])


def operator_lines(results: Results) -> list[str]:
    """Claim-boundary lines for trials steered by a human operator (none without any): each
    operator by pseudonymous id with the arms and trials they steered, and why such trials are
    not blinded replicates."""
    s = results.steering
    if s.empty:
        return []
    s = s.assign(uid=s["run_id"].astype(str) + "/" + s["trial_id"].astype(str))
    lines = []
    for operator, rows in s.groupby("operator", sort=True):
        arms = ", ".join(sorted(set(map(str, rows["arm"]))))
        trials = rows["uid"].nunique()
        minutes = rows["steering_s"].sum() / 60
        lines.append(f"- **Human operator** `{operator}` (a pseudonymous id: a hash of the id the "
                     f"operator gave) steered {trials} trial{'s' * (trials != 1)} of arm {arms}: "
                     f"{minutes:.1f} active steering minutes, {int(rows['prompts'].sum())} "
                     f"prompts, {int(rows['shell_commands'].sum())} shell commands.")
    lines.append("- **Human trials are not blinded replicates**: the operator knows the arm, "
                 "reads every brief and self-check, and learns across episodes and trials, so "
                 "replicates of one operator are not independent draws, and figures depend on "
                 "the person; compare them with automated arms as a case, not as a sample.")
    return lines


def claim_boundary_markdown(results: Results) -> str:
    """The claim-boundary section of report.md (Markdown, starting with a level-2 heading)."""
    lines = ["## Claim boundary", ""]
    for name, episodes in results.marathons.items():
        ref = next(r.marathons[name] for r in results.runs if name in r.marathons)
        lines.append(f"- Marathon `{name}`, content hash `{ref.hash[:16]}`, "
                     f"episodes {', '.join(episodes)}.")
    modes = results.modes()
    if "isolated" in modes:
        lines.append("- **Isolated mode**: trials with mode `isolated` start every episode from the "
                     "reference solution of the previous one; they measure each episode without "
                     "accumulated debt, not a marathon an agent played through.")
    for run in results.runs:
        commit = (run.git_commit or "unknown")[:12] + (" (dirty)" if run.git_dirty else "")
        lines.append(f"- Run `{run.run_id}`: harness {run.harness_version}, commit {commit}, "
                     f"status {run.status}, {run.started_at or '?'} to {run.ended_at or '?'}.")
    t = results.trials
    n_inc = int(t["included"].sum())
    lines.append(f"- Replicates: {n_inc} of {len(t)} planned trials complete and reported; "
                 f"{len(t) - n_inc} excluded (did not finish every episode).")
    sims = results.simulated_models()
    if sims:
        lines.append(f"- **Simulated models**: {', '.join(sims)} are scripted simulations, not "
                     "language models; their figures test the harness, not a model.")
    nomodel = results.no_model_agents()
    if nomodel:
        lines.append(f"- **No model**: agents {', '.join(nomodel)} call no model (oracle copies "
                     "the reference solution, nop changes nothing); they calibrate the gates "
                     "and say nothing about any model.")
    lines += operator_lines(results)
    lines += ["", "### Models and versions", "", to_markdown(models_and_versions(results))]
    lines += ["### Excluded trials", ""]
    ex = excluded_trials(results)
    lines.append(to_markdown(ex) if len(ex) else "None: every planned trial finished every "
                 "episode.\n")
    lines += ["### Genuine and contract checks (final attempt of the last episode)", "",
              "Genuine checks exercise the behaviour the brief asks for; contract checks hold "
              "the product to the interface the gates drive (names, formats). They are reported "
              "apart so a score cannot be read as behaviour when only the contract held.", ""]
    tags = check_tags(results)
    if len(tags):
        wide = tags.assign(cell=[f"{p}/{c} ({fmt_share(s)})" for p, c, s in
                                 zip(tags["passed"], tags["checks"], tags["share"])])
        wide = (wide.pivot_table(index=GROUP_KEYS[0 if len(results.marathons) > 1 else 1:],
                                 columns="tag", values="cell",
                                 aggfunc="first", observed=True)
                .reset_index().fillna("n/a"))
        wide.columns.name = None
        lines.append(to_markdown(wide))
    else:
        lines.append("_(no checks recorded for complete trials)_\n")
    return "\n".join(lines) + "\n"
