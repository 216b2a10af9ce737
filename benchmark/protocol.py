"""Pre-registered protocols: a study declared before it runs, and runs checked against it.

A protocol (``protocols/NAME.toml``, :class:`Protocol`) fixes, before any trial runs, the
question and hypotheses, the design (marathons, arms, agents, models, efforts, modes,
replicates per cell, seed base, episodes), the primary metric, the test deciding each
hypothesis, the exclusion rules and the budgets. ``marathon run --protocol FILE`` runs exactly
its plan (:func:`run_config`) and records the file's SHA-256 in the manifest;
``marathon report RUN... --protocol FILE`` checks the runs against it (:func:`check_protocol`)
and writes a Protocol section (:func:`protocol_markdown`): planned vs done per cell,
deviations, the primary metric per cell, and each hypothesis with its pre-declared test and
outcome.

A *cell* is one marathon x model x effort x agent x mode x arm (agents that use no model have
model and effort ``none``); it is planned with ``replicates`` trials, replicate r with seed
``derive_seed(seed_base, r)``. A trial *counts* when it is complete and no exclusion rule
applies to it. Deviations, by kind:

- ``missing replicates``: a planned replicate of a cell without a counting trial (not run,
  incomplete, or excluded and not re-run);
- ``extra runs``: a trial of a cell the protocol does not plan, a replicate beyond
  ``replicates``, or a second counting trial of one cell and replicate;
- ``changed settings``: a run not started from this protocol file (its manifest's protocol hash
  differs or is absent), or whose seed base, time limit, episodes or seeds differ from the
  protocol's;
- ``exclusions applied``: each trial an exclusion rule removed, with the rule and the reason;
- ``budget exceeded``: a trial or the whole set of runs over a declared cost budget.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import stats

from benchmark.errors import MarathonError
from benchmark.experiment import MODES, NO_MODEL, RunConfig, derive_seed
from benchmark.providers import Provider
from benchmark.tomlfile import read_toml

#: Columns of a cell.
CELL_KEYS = ["marathon", "model", "effort", "agent", "mode", "arm"]
#: Kinds of deviation, in the order the report lists them.
DEVIATION_KINDS = ("missing replicates", "extra runs", "changed settings", "exclusions applied",
                   "budget exceeded")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Hypothesis(_Strict):
    """One hypothesis and the test that decides it, declared before the run."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Short id, e.g. ``H1``."""
    statement: str
    """The hypothesis in words."""
    metric: Literal["full_pass_rate", "mean_final_score"]
    """What is compared: full passes (final score 1) or final scores."""
    test: Literal["mcnemar_exact", "fisher_exact", "wilcoxon_signed_rank"]
    """The deciding test: exact McNemar on full passes paired by cell and seed
    (``full_pass_rate``), Fisher's exact test on full-pass counts (``full_pass_rate``,
    unpaired), or Wilcoxon signed-rank on final scores paired by cell and seed
    (``mean_final_score``)."""
    arm_a: str
    """The first arm (its figure minus ``arm_b``'s is the effect)."""
    arm_b: str
    """The second arm."""
    direction: Literal["two_sided", "a_greater", "b_greater"] = "two_sided"
    """The alternative: any difference, ``arm_a`` better, or ``arm_b`` better."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level: the hypothesis is supported when p < alpha (and the effect has the
    declared direction)."""
    models: list[str] = []
    """Models the test pools over; empty: every model of the protocol."""

    @model_validator(mode="after")
    def _test_fits_metric(self) -> "Hypothesis":
        if self.arm_a == self.arm_b:
            raise ValueError(f"arm_a and arm_b are both {self.arm_a!r}: compare two arms")
        fits = {"mcnemar_exact": "full_pass_rate", "fisher_exact": "full_pass_rate",
                "wilcoxon_signed_rank": "mean_final_score"}
        if fits[self.test] != self.metric:
            raise ValueError(f"test {self.test} decides metric {fits[self.test]}, not {self.metric}")
        return self


class PrimaryMetric(_Strict):
    """The primary metric reported per cell."""

    name: Literal["full_pass_rate", "mean_final_score"] = "full_pass_rate"
    """Full-pass rate (with a Wilson interval) or mean final score (percentile bootstrap)."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """Confidence level of its interval."""
    secondary: list[Literal["full_pass_rate", "mean_final_score"]] = []
    """Further metrics reported beside it."""


class ExclusionRule(_Strict):
    """A rule that removes a trial from the analysis (and asks for a re-run)."""

    id: str
    """Short id, e.g. ``provider-error``."""
    when: Literal["agent_error", "timeout", "incomplete"]
    """``agent_error`` / ``timeout``: some attempt of the trial ended so (and its error matches
    ``pattern``); ``incomplete``: the trial did not finish every episode."""
    pattern: str = ""
    """Regular expression the attempt's error must match (``re.search``); empty: any."""
    rerun: bool = True
    """Whether an excluded trial is to be run again (its replicate is missing until it is)."""

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return pattern


class Budgets(_Strict):
    """Limits declared before the run."""

    time_limit_s: float = Field(default=1800.0, gt=0)
    """Per-attempt agent time limit in seconds (the run's ``time_limit_s``)."""
    max_cost_usd_per_trial: float | None = Field(default=None, gt=0)
    """Largest cost in USD of one trial; null: none."""
    max_cost_usd_total: float | None = Field(default=None, gt=0)
    """Largest cost in USD of every trial together; null: none."""


class Protocol(_Strict):
    """The contents of a protocol file (see the module doc)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Protocol name."""
    question: str
    """The question the study answers."""
    hypotheses: list[Hypothesis] = Field(min_length=1)
    """The hypotheses, each with its deciding test."""
    marathons: list[str] = Field(min_length=1)
    """Marathon names or paths."""
    arms: list[str] = Field(min_length=1)
    """Arm names or paths."""
    agents: list[str] = Field(min_length=1)
    """Agent names."""
    models: list[str] = []
    """Models of the agents that use one."""
    efforts: list[str] = []
    """Reasoning efforts of the agents that use a model; empty: ``default``."""
    modes: list[Literal["cumulative", "isolated"]] = ["cumulative"]
    """Episode modes."""
    replicates: int = Field(ge=1)
    """Trials per cell."""
    seed_base: int = 0
    """Base of the replicates' seeds."""
    episodes: int | None = Field(default=None, ge=1)
    """Play only the first N episodes; null: all."""
    primary_metric: PrimaryMetric = PrimaryMetric()
    """The primary metric."""
    exclusions: list[ExclusionRule] = []
    """Exclusion rules, applied in order (a trial is excluded by the first that applies)."""
    budgets: Budgets = Budgets()
    """Budgets."""
    providers: dict[str, Provider] = {}
    """Model providers, as in an experiment file."""

    @field_validator("modes")
    @classmethod
    def _distinct_modes(cls, modes: list[str]) -> list[str]:
        if len(set(modes)) != len(modes) or not modes:
            raise ValueError("give each mode once, at least one")
        return modes

    @model_validator(mode="after")
    def _hypotheses_name_arms(self) -> "Protocol":
        arms = {Path(a).stem for a in self.arms}
        for h in self.hypotheses:
            for arm in (h.arm_a, h.arm_b):
                if arm not in arms:
                    raise ValueError(f"hypothesis {h.id}: arm {arm!r} is not among arms")
            for m in h.models:
                if m not in self.models:
                    raise ValueError(f"hypothesis {h.id}: model {m!r} is not among models")
        return self


def protocol_hash(path: Path) -> str:
    """SHA-256 of a protocol file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_protocol(path: Path, flag: str = "--protocol") -> Protocol:
    """Read and validate a protocol file.

    Raises:
        MarathonError: the file is missing, malformed or invalid; one line naming the file and
            the field.
    """
    path = Path(path)
    if not path.is_file():
        raise MarathonError(f"{flag}: protocol file {path} not found")
    raw = read_toml(path)
    try:
        return Protocol.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        msg = first["msg"].removeprefix("Value error, ")
        raise MarathonError(f"{path}: {where + ': ' if where else ''}{msg}") from None


def run_config(protocol: Protocol, path: Path, overrides: dict) -> RunConfig:
    """The run configuration of a protocol: its design and time limit, plus the settings that
    do not change results (``jobs``, ``out``, ``run_id``).

    Args:
        path: the protocol file (marathons and arms given as paths are resolved against its
            directory).
        overrides: ``jobs``, ``out``, ``run_id`` from flags (``None``: default).

    Raises:
        MarathonError: an invalid value (naming the protocol file).
    """
    from benchmark.experiment import load_config

    base = Path(path).parent
    def resolve(v: str) -> str:
        return str((base / v).resolve()) if "/" in v or v.endswith(".toml") else v
    values = {
        "marathons": [resolve(m) for m in protocol.marathons],
        "arms": [resolve(a) for a in protocol.arms], "agents": protocol.agents,
        "models": protocol.models, "effort": protocol.efforts,
        "mode": "both" if len(protocol.modes) == 2 else protocol.modes[0],
        "replicates": protocol.replicates, "seed_base": protocol.seed_base,
        "time_limit_s": protocol.budgets.time_limit_s, "episodes": protocol.episodes,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    config = load_config(None, values)
    return config.model_copy(update={"providers": protocol.providers})


def planned_cells(protocol: Protocol, uses_model: dict[str, bool],
                  marathon_names: dict[str, str] | None = None) -> pd.DataFrame:
    """The cells of a protocol.

    Args:
        uses_model: agent -> whether it uses a model.
        marathon_names: marathon as written in the protocol -> its name (paths); default:
            the last path component.

    Returns:
        One row per cell: CELL_KEYS, ``planned`` (replicates).
    """
    rows = []
    for m in protocol.marathons:
        name = (marathon_names or {}).get(m, Path(m).name)
        for mode in protocol.modes:
            for arm in protocol.arms:
                for agent in protocol.agents:
                    combos = ([(model, e) for model in protocol.models for e in (protocol.efforts or ["default"])]
                              if uses_model.get(agent, True) else [(NO_MODEL, NO_MODEL)])
                    for model, effort in combos:
                        rows.append((name, model, effort, agent, mode, Path(arm).stem, protocol.replicates))
    return pd.DataFrame(rows, columns=CELL_KEYS + ["planned"])


class Deviation(BaseModel):
    """One departure of the runs from the protocol."""

    kind: Literal["missing replicates", "extra runs", "changed settings", "exclusions applied",
                  "budget exceeded"]
    """Kind (see the module doc)."""
    text: str
    """What departed, in one line."""


class HypothesisOutcome(BaseModel):
    """The pre-declared test of one hypothesis, run on the counting trials."""

    hypothesis: Hypothesis
    """The hypothesis as declared."""
    n: int
    """Pairs (paired tests) or trials per arm summed (Fisher)."""
    planned_n: int
    """Pairs or trials the protocol planned."""
    effect: float
    """``arm_a`` minus ``arm_b``: difference of full-pass rates or mean paired score difference."""
    statistic: float
    """The test statistic (discordant pairs for arm_a; odds ratio; signed-rank statistic)."""
    p_value: float
    """p-value under the declared alternative; nan without data."""
    outcome: Literal["supported", "not supported", "undetermined"]
    """``supported``: p < alpha and the effect in the declared direction; ``undetermined``: no
    data to test."""
    note: str = ""
    """E.g. that fewer pairs than planned were tested."""


class ProtocolCheck(BaseModel):
    """What :func:`check_protocol` found."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    protocol: Protocol
    """The protocol."""
    path: str
    """Its file."""
    sha256: str
    """Its hash."""
    cells: pd.DataFrame
    """One row per planned or run cell: CELL_KEYS, ``planned``, ``done`` (counting trials of
    planned replicates), ``excluded``, ``extra``, ``status`` (``complete``, ``missing N``,
    ``not covered``, ``not planned``), ``primary`` (the primary metric with its interval),
    and the secondary metrics."""
    deviations: list[Deviation]
    """Every deviation, by kind."""
    hypotheses: list[HypothesisOutcome]
    """Each hypothesis's outcome."""


def _excluded_by(rules: list[ExclusionRule], trials: pd.DataFrame, attempts: pd.DataFrame) -> pd.Series:
    """uid -> id of the first rule excluding the trial, with the reason ('' when none)."""
    out = pd.Series("", index=trials["uid"].to_numpy(), dtype=object)
    for rule in rules:
        if rule.when == "incomplete":
            hit = trials.loc[trials["status"] != "complete", "uid"]
            reasons = {u: f"{rule.id}: incomplete" for u in hit}
        else:
            a = attempts[attempts["outcome"] == rule.when]
            if rule.pattern:
                a = a[a["error"].fillna("").astype(str).str.contains(rule.pattern, regex=True)]
            first = a.groupby("uid").first()
            reasons = {u: f"{rule.id}: {rule.when} in {r.episode} attempt {r.attempt}: {str(r.error)[:80]}"
                       for u, r in first.iterrows()}
        for u, why in reasons.items():
            if u in out.index and not out[u]:
                out[u] = why
    return out


def _wilson(c: int, n: int, confidence: float) -> tuple[float, float]:
    from benchmark.report.stats import wilson_interval

    return wilson_interval(c, n, confidence)


def _metric_text(name: str, scores: np.ndarray, confidence: float, seed_key: str) -> str:
    from benchmark.report.markdown import fmt_num, fmt_share
    from benchmark.report.stats import bootstrap_mean_ci, group_rng

    n = len(scores)
    if n == 0:
        return "n/a (no trials)"
    if name == "full_pass_rate":
        c = int((scores >= 1).sum())
        lo, hi = _wilson(c, n, confidence)
        return f"{c}/{n} = {fmt_share(c / n)} [Wilson {confidence:.0%}: {fmt_share(lo)}, {fmt_share(hi)}]"
    lo, hi = bootstrap_mean_ci(scores, 10_000, confidence, group_rng(0, "protocol|" + seed_key))
    return f"{fmt_num(float(scores.mean()))} [bootstrap {confidence:.0%}: {fmt_num(lo)}, {fmt_num(hi)}]"


def _test(h: Hypothesis, counting: pd.DataFrame, planned: pd.DataFrame) -> HypothesisOutcome:
    t = counting if not h.models else counting[counting["model"].isin(h.models)]
    pl = planned if not h.models else planned[planned["model"].isin(h.models)]
    other = [k for k in CELL_KEYS if k != "arm"]
    a = t[t["arm"] == h.arm_a].drop_duplicates(other + ["replicate"])
    b = t[t["arm"] == h.arm_b].drop_duplicates(other + ["replicate"])
    alt = {"two_sided": "two-sided", "a_greater": "greater", "b_greater": "less"}[h.direction]
    planned_pairs = int(pl[pl["arm"] == h.arm_a]["planned"].sum())
    if h.test == "fisher_exact":
        na, nb = len(a), len(b)
        pa, pb = int((a["final_score"] >= 1).sum()), int((b["final_score"] >= 1).sum())
        n, planned_n = na + nb, 2 * planned_pairs
        if na == 0 or nb == 0:
            return HypothesisOutcome(hypothesis=h, n=n, planned_n=planned_n, effect=math.nan,
                                     statistic=math.nan, p_value=math.nan, outcome="undetermined",
                                     note="no trials of one arm")
        res = stats.fisher_exact([[pa, na - pa], [pb, nb - pb]], alternative=alt)
        effect, statistic, p = pa / na - pb / nb, float(res.statistic), float(res.pvalue)
    else:
        pairs = a.merge(b, on=other + ["replicate"], suffixes=("_a", "_b"))
        n, planned_n = len(pairs), planned_pairs
        if n == 0:
            return HypothesisOutcome(hypothesis=h, n=0, planned_n=planned_n, effect=math.nan,
                                     statistic=math.nan, p_value=math.nan, outcome="undetermined",
                                     note="no pairs of the two arms")
        sa, sb = pairs["final_score_a"].to_numpy(float), pairs["final_score_b"].to_numpy(float)
        if h.test == "mcnemar_exact":
            a_only, b_only = int(((sa >= 1) & (sb < 1)).sum()), int(((sa < 1) & (sb >= 1)).sum())
            effect, statistic = (a_only - b_only) / n, float(a_only)
            p = (1.0 if a_only + b_only == 0 else
                 float(stats.binomtest(a_only, a_only + b_only, 0.5, alternative=alt).pvalue))
        else:
            d = sa - sb
            effect = float(d.mean())
            if np.all(d == 0):
                statistic, p = 0.0, 1.0
            else:
                res = stats.wilcoxon(sa, sb, zero_method="wilcox", alternative=alt)
                statistic, p = float(res.statistic), float(res.pvalue)
    direction_ok = (h.direction == "two_sided" or (h.direction == "a_greater" and effect > 0)
                    or (h.direction == "b_greater" and effect < 0))
    outcome = "supported" if p < h.alpha and direction_ok else "not supported"
    note = f"{n} of {planned_n} planned {'trials' if h.test == 'fisher_exact' else 'pairs'} tested" \
        if n < planned_n else ""
    return HypothesisOutcome(hypothesis=h, n=n, planned_n=planned_n, effect=effect,
                             statistic=statistic, p_value=p, outcome=outcome, note=note)


def check_protocol(protocol: Protocol, results, path: Path | str = "", sha256: str = "",
                   uses_model: dict[str, bool] | None = None,
                   marathon_names: dict[str, str] | None = None) -> ProtocolCheck:
    """Check loaded runs against a protocol.

    Args:
        protocol: the protocol.
        results: :class:`benchmark.report.load.Results` of the runs.
        path, sha256: the protocol file and its hash (compared with each run's manifest).
        uses_model: agent -> whether it uses a model (default: from the agents' definitions).
        marathon_names: marathon as the protocol writes it -> its name (default: loaded from
            ``episodes/`` or the path, relative to the protocol file).

    Returns:
        Cells, deviations and hypothesis outcomes (:class:`ProtocolCheck`).
    """
    if marathon_names is None:
        from benchmark.marathon import load_marathon

        base = Path(path).parent if path else Path.cwd()
        marathon_names = {}
        for m in protocol.marathons:
            where = base / m if "/" in m else Path(m)
            try:
                marathon_names[m] = load_marathon(str(where) if "/" in m else m).name
            except MarathonError:
                marathon_names[m] = Path(m).name
    if uses_model is None:
        from benchmark.agents import get_agent

        uses_model = {}
        for a in protocol.agents:
            try:
                uses_model[a] = get_agent(a).uses_model
            except MarathonError:
                uses_model[a] = a not in ("oracle", "nop")
    planned = planned_cells(protocol, uses_model, marathon_names)
    deviations: list[Deviation] = []
    trials = results.trials.copy()
    reasons = _excluded_by(protocol.exclusions, trials, results.attempts)
    trials["rule"] = trials["uid"].map(reasons).fillna("")
    counting = trials[trials["included"] & (trials["rule"] == "")]

    for run in results.runs:  # settings
        ref = run.protocol or {}
        if not ref:
            deviations.append(Deviation(kind="changed settings", text=f"run {run.run_id} was not "
                                        "started from a protocol (no protocol in its manifest)"))
        elif sha256 and ref.get("sha256") != sha256:
            deviations.append(Deviation(kind="changed settings", text=(
                f"run {run.run_id} was started from protocol file {ref.get('path')} with hash "
                f"{str(ref.get('sha256'))[:12]}, not this file ({sha256[:12]}): the protocol changed")))
        cfg = run.config
        for key, want in (("seed_base", protocol.seed_base), ("time_limit_s", protocol.budgets.time_limit_s),
                          ("episodes", protocol.episodes)):
            got = cfg.get(key, None if key == "episodes" else {"seed_base": 0, "time_limit_s": 1800.0}[key])
            if got != want and not (isinstance(got, (int, float)) and isinstance(want, (int, float))
                                    and float(got) == float(want)):
                deviations.append(Deviation(kind="changed settings",
                                            text=f"run {run.run_id}: {key} {got} (protocol: {want})"))
    bad_seed = trials[trials["seed"] != [derive_seed(protocol.seed_base, int(r)) for r in trials["replicate"]]]
    if len(bad_seed):
        deviations.append(Deviation(kind="changed settings", text=(
            f"{len(bad_seed)} trial(s) with seeds not derived from seed base {protocol.seed_base}, "
            f"e.g. {bad_seed['uid'].iloc[0]}")))

    # exclusions
    for r in trials[trials["rule"] != ""].itertuples():
        deviations.append(Deviation(kind="exclusions applied", text=f"{r.uid} excluded by {r.rule}"))

    # cells
    key_df = planned[CELL_KEYS].assign(_planned=True)
    t = trials.merge(key_df, on=CELL_KEYS, how="left")
    unplanned = t[t["_planned"].isna()]
    for cell, g in unplanned.groupby(CELL_KEYS, observed=True, sort=True):
        deviations.append(Deviation(kind="extra runs", text=(
            f"cell {'/'.join(map(str, cell))} is not in the protocol: {len(g)} trial(s)")))
    beyond = counting[counting["replicate"] > protocol.replicates]
    for r in beyond.itertuples():
        deviations.append(Deviation(kind="extra runs", text=(
            f"{r.uid}: replicate {r.replicate} beyond the protocol's {protocol.replicates}")))
    within = counting[counting["replicate"] <= protocol.replicates]
    dup = within[within.duplicated(CELL_KEYS + ["replicate"], keep="first")]
    for r in dup.itertuples():
        deviations.append(Deviation(kind="extra runs", text=(
            f"{r.uid}: a second counting trial of cell {'/'.join(str(getattr(r, k)) for k in CELL_KEYS)} "
            f"replicate {r.replicate}")))
    within = within.drop_duplicates(CELL_KEYS + ["replicate"])

    rows = []
    cells = planned.merge(
        trials.groupby(CELL_KEYS, observed=True).size().rename("trials").reset_index(),
        on=CELL_KEYS, how="outer")
    cells["planned"] = cells["planned"].fillna(0).astype(int)
    for c in cells.itertuples(index=False):
        key = tuple(getattr(c, k) for k in CELL_KEYS)
        mask = np.ones(len(within), dtype=bool)
        for k, v in zip(CELL_KEYS, key):
            mask &= (within[k] == v).to_numpy()
        done = within[mask]
        emask = np.ones(len(trials), dtype=bool)
        for k, v in zip(CELL_KEYS, key):
            emask &= (trials[k] == v).to_numpy()
        excluded = int((trials[emask]["rule"] != "").sum())
        label = "/".join(map(str, key))
        if c.planned == 0:
            status = "not planned"
        else:
            missing = sorted(set(range(1, c.planned + 1)) - set(done["replicate"].astype(int)))
            status = ("complete" if not missing else "not covered" if len(missing) == c.planned
                      else f"missing {len(missing)}")
            if missing:
                deviations.append(Deviation(kind="missing replicates", text=(
                    f"cell {label}: {'not covered' if len(missing) == c.planned else 'missing'} "
                    f"replicate(s) {', '.join(f'r{m}' for m in missing)} ({len(done)} of {c.planned} done)")))
        scores = done["final_score"].to_numpy(float)
        pm = protocol.primary_metric
        row = dict(zip(CELL_KEYS, key), planned=c.planned, done=len(done), excluded=excluded,
                   status=status, primary=_metric_text(pm.name, scores, pm.confidence, label))
        for s in pm.secondary:
            row[s] = _metric_text(s, scores, pm.confidence, label + "|" + s)
        rows.append(row)
    cell_frame = pd.DataFrame(rows)

    # budgets
    usage = results.usage
    if len(usage) and (protocol.budgets.max_cost_usd_per_trial or protocol.budgets.max_cost_usd_total):
        proxy = usage[usage["source"] == "proxy"] if (usage["source"] == "proxy").any() else usage
        cost = proxy.groupby("uid")["cost_usd"].sum(min_count=1)
        cap = protocol.budgets.max_cost_usd_per_trial
        if cap:
            for uid, c in cost[cost > cap].items():
                deviations.append(Deviation(kind="budget exceeded",
                                            text=f"{uid}: cost {c:.2f} USD over {cap:.2f} USD per trial"))
        total = float(cost.sum())
        cap = protocol.budgets.max_cost_usd_total
        if cap and total > cap:
            deviations.append(Deviation(kind="budget exceeded",
                                        text=f"total cost {total:.2f} USD over {cap:.2f} USD"))

    in_plan = within.merge(key_df, on=CELL_KEYS, how="inner")
    outcomes = [_test(h, in_plan, planned) for h in protocol.hypotheses]
    order = {k: i for i, k in enumerate(DEVIATION_KINDS)}
    deviations.sort(key=lambda d: order[d.kind])
    return ProtocolCheck(protocol=protocol, path=str(path), sha256=sha256, cells=cell_frame,
                         deviations=deviations, hypotheses=outcomes)


def protocol_markdown(check: ProtocolCheck) -> list[str]:
    """The Protocol section of report.md (lines, starting with a level-2 heading)."""
    from benchmark.report.markdown import fmt_num, fmt_p, to_markdown

    p = check.protocol
    lines = [f"## Protocol `{p.name}`", "",
             f"Checked against `{check.path}` (SHA-256 `{check.sha256[:16]}`). Question: "
             f"{' '.join(p.question.split())}",
             "", f"Design: marathons {', '.join(p.marathons)}; arms {', '.join(p.arms)}; agents "
             f"{', '.join(p.agents)}; models {', '.join(p.models) or 'none'}; efforts "
             f"{', '.join(p.efforts) or 'default'}; modes {', '.join(p.modes)}; {p.replicates} "
             f"replicate(s) per cell, seed base {p.seed_base}. Primary metric: "
             f"{p.primary_metric.name.replace('_', ' ')} ({p.primary_metric.confidence:.0%} interval). "
             f"Exclusion rules: {'; '.join(f'{r.id} ({r.when}' + (f' matching `{r.pattern}`' if r.pattern else '') + (', re-run' if r.rerun else '') + ')' for r in p.exclusions) or 'none'}.",
             "", "### Planned vs done per cell", "", to_markdown(check.cells), "### Deviations", ""]
    if check.deviations:
        for kind in DEVIATION_KINDS:
            items = [d.text for d in check.deviations if d.kind == kind]
            if items:
                lines += [f"**{kind}** ({len(items)}):", ""] + [f"- {t}" for t in items] + [""]
    else:
        lines += ["None: the runs followed the protocol.", ""]
    lines += ["### Hypotheses", ""]
    rows = []
    for o in check.hypotheses:
        h = o.hypothesis
        rows.append({"id": h.id, "hypothesis": h.statement, "test (pre-declared)":
                     f"{h.test} on {h.metric}, {h.arm_a} vs {h.arm_b}, {h.direction}, alpha {h.alpha}",
                     "n": f"{o.n} of {o.planned_n}", "effect (a - b)": fmt_num(o.effect),
                     "p": fmt_p(o.p_value), "outcome": o.outcome, "note": o.note})
    lines += [to_markdown(pd.DataFrame(rows)), ""]
    return lines


__all__ = ["Protocol", "Hypothesis", "ExclusionRule", "Budgets", "PrimaryMetric", "load_protocol",
           "protocol_hash", "run_config", "planned_cells", "check_protocol", "protocol_markdown",
           "ProtocolCheck", "Deviation", "HypothesisOutcome", "MODES"]
