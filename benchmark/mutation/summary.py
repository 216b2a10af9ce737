"""The outputs of ``marathon mutate``: the mutant table (CSV and Parquet) and ``summary.md``.

Kill rate = killed / scored, where *scored* counts the non-equivalent mutants that were scored
(killed + survived + timeout + error): timeouts and errors are in the denominator and not the
numerator, so with any of them the rate is a lower bound of what the gates detect. Its 95%
interval is the Wilson score interval (E. B. Wilson (1927), "Probable inference, the law of
succession, and statistical inference", JASA 22(158); R. G. Newcombe (1998), "Two-sided
confidence intervals for the single proportion", Statistics in Medicine 17(8), method 3),
computed by :func:`benchmark.report.stats.wilson_interval`. With a sample, the interval describes
the kill rate of all candidate mutants (the sample is drawn uniformly without replacement; the
finite-population correction, which would narrow it, is not applied).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from benchmark.mutation.run import MutantOutcome, Plan, classify
from benchmark.paths import PROJECT_ROOT
from benchmark.records import model_schema, write_atomic
from benchmark.report.markdown import fmt_share, to_markdown
from benchmark.report.stats import wilson_interval

#: Outcomes of scored, non-equivalent mutants: the kill rate's denominator.
SCORED = (MutantOutcome.killed, MutantOutcome.survived, MutantOutcome.timeout, MutantOutcome.error)


class MutantRow(BaseModel):
    """One row of ``mutants.csv`` / ``mutants.parquet``: one mutant of the final reference."""

    marathon: str
    """Marathon name."""
    id: str
    """Stable mutant id (10 hex digits; see :class:`~benchmark.mutation.source.Mutant`)."""
    file: str
    """File changed, relative to the final reference."""
    line: int
    """First changed line (1-based)."""
    function: str
    """Enclosing function or class (empty at module level or when unknown)."""
    operator: str
    """Mutation operator (the library's name)."""
    occurrence: int
    """Index of the change among the operator's changes in the file (0-based)."""
    outcome: str
    """killed, survived, timeout, error, equivalent or skipped."""
    reason: str
    """Why skipped (``operator filter``, ``pragma: no mutate``, ``not sampled``) or, for an
    equivalent mutant, the reviewed reason; empty otherwise."""
    seeds: str
    """Seeds scored, comma-separated, in order up to the first that killed it or timed out;
    empty when not scored."""
    seeds_killed: str
    """Seeds on which some check failed, comma-separated."""
    killing_gates: str
    """Gates with a failed check on some seed, comma-separated, in gate order."""
    killed_by: str
    """The failed checks per seed: ``seed 0: gate/check, gate/check; seed 1: ...``."""
    message: str
    """First failure, timeout or error message (the first seed that has one)."""
    seconds: float | None
    """Wall time of the mutant's scorings in seconds; null when not scored."""
    diff: str
    """Unified diff of the mutant (empty for a filtered mutant)."""


def rows(p: Plan) -> list[MutantRow]:
    """One :class:`MutantRow` per enumerated mutant, in file, line, operator order."""
    gate_order = {g.name: i for i, g in enumerate(p.marathon.gate)}
    selected = set(p.selected)
    out = []
    for m in p.mutants:
        outcome, reason, seeds, seeds_killed, gates, killed_by, message, seconds = (
            MutantOutcome.skipped, "", "", "", "", "", "", None)
        if m.skip_reason is not None:
            reason = m.skip_reason
        elif m.id in p.equivalent_of:
            outcome, reason = MutantOutcome.equivalent, p.equivalents[p.equivalent_of[m.id]].reason
        elif m.id in p.done and m.id in selected:
            r = p.done[m.id]
            outcome = classify(r.verdicts)
            seeds = ",".join(str(v.seed) for v in r.verdicts)
            seeds_killed = ",".join(str(v.seed) for v in r.verdicts if v.failed)
            gates = ", ".join(sorted({c.split("/")[0] for v in r.verdicts for c in v.failed},
                                     key=lambda g: gate_order.get(g, len(gate_order))))
            killed_by = "; ".join(f"seed {v.seed}: {', '.join(v.failed)}" for v in r.verdicts if v.failed)
            message = next((v.message for v in r.verdicts if v.message), "")
            seconds = r.seconds
        else:
            reason = "not scored yet" if m.id in selected else "not sampled"
        out.append(MutantRow(marathon=p.marathon.name, id=m.id, file=m.file, line=m.line,
                             function=m.function, operator=m.operator, occurrence=m.occurrence,
                             outcome=outcome.value, reason=reason, seeds=seeds,
                             seeds_killed=seeds_killed, killing_gates=gates, killed_by=killed_by,
                             message=message, seconds=seconds, diff=m.diff))
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def kill_rate(table: pd.DataFrame) -> tuple[int, int, float, float, float]:
    """``(killed, scored, rate, wilson_low, wilson_high)`` over the scored, non-equivalent
    mutants of a table (rate and bounds are nan when nothing was scored)."""
    scored = int(table["outcome"].isin([o.value for o in SCORED]).sum())
    killed = int((table["outcome"] == MutantOutcome.killed.value).sum())
    low, high = wilson_interval(killed, scored)
    return killed, scored, (killed / scored if scored else float("nan")), low, high


def _rate(killed: int, scored: int) -> str:
    if not scored:
        return "n/a"
    low, high = wilson_interval(killed, scored)
    return f"{fmt_share(killed / scored, 1)} [{fmt_share(low, 1)}, {fmt_share(high, 1)}]"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def summary_markdown(p: Plan, table: pd.DataFrame, command: str) -> str:
    """The Markdown summary: method in brief, kill rate with its Wilson interval, outcomes by
    gate and by file, seed-dependent kills, every survivor with its diff, equivalents, stale
    equivalents entries, timeouts and errors."""
    counts = Counter(table["outcome"])
    killed, scored, rate, low, high = kill_rate(table)
    n = len(table)
    filtered_ids = {m.id for m in p.mutants if m.skip_reason is not None}
    by_filter = Counter(m.skip_reason for m in p.mutants if m.skip_reason is not None)
    filtered = len(filtered_ids)
    sampled = (f"a seeded random sample of {len(p.selected)} of the {p.candidates} candidate mutants "
               f"(`--sample {p.sample} --seed {p.sample_seed}`)" if p.sample is not None
               else f"all {p.candidates} candidate mutants")
    lines = [
        f"# Mutation testing of the `{p.marathon.name}` gates",
        "",
        f"- Mutated: the final reference `{_rel(p.reference)}` (episode {p.episode}); scored against "
        f"every gate active after it ({', '.join(g.name for g in p.marathon.active_gates(p.episode))}).",
        f"- Mutant source: {p.source.name}; {n} mutants enumerated, {filtered} removed by its filters"
        f"{' (' + ', '.join(f'{k}: {v}' for k, v in sorted(by_filter.items())) + ')' if by_filter else ''}, "
        f"{counts.get('equivalent', 0)} reviewed as equivalent; {p.candidates} candidates.",
        f"- Filters: {'; '.join(p.source.filters)}.",
        f"- Scored: {sampled}, each on seed{'s' if len(p.seeds) > 1 else ''} "
        f"{', '.join(map(str, p.seeds))}{' in turn up to the first that kills it or times out' if len(p.seeds) > 1 else ''} with the real scorer (image `{p.image}`, the limits of "
        "`marathon validate`).",
        f"- Session `{p.session.name}`; written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        f"- Reproduce: `{command}`. Method and definitions: `docs/gates-quality.md`.",
        "",
        "## Kill rate",
        "",
    ]
    if scored:
        lines.append(f"**{killed} of {scored} scored mutants killed: {fmt_share(rate, 1)} "
                     f"(Wilson 95% interval {fmt_share(low, 1)} to {fmt_share(high, 1)}).**")
    else:
        lines.append("No mutant was scored.")
    lines += ["", "Scored = killed + survived + timeout + error (equivalent and skipped mutants are "
              "excluded); timeouts and errors count as not killed.", "",
              to_markdown(pd.DataFrame({
                  "outcome": [o.value for o in MutantOutcome],
                  "mutants": [counts.get(o.value, 0) for o in MutantOutcome]})),
              "## By gate", "",
              "A mutant counts for every gate with a failed check on some seed; *only this gate* "
              "counts the mutants no other gate killed. Timeouts and errors count for the gates "
              "of the checks that timed out or errored.", ""]
    done = {r.id: r for r in p.done.values()}
    by_gate = []
    for g in p.marathon.active_gates(p.episode):
        kills = table["killing_gates"].map(lambda s, g=g.name: g in s.split(", "))
        sole = table["killing_gates"] == g.name

        def affected(outcome: str, attr: str, g=g.name) -> int:
            ids = table.loc[table["outcome"] == outcome, "id"]
            return sum(any(c.split("/")[0] == g for v in done[i].verdicts for c in getattr(v, attr))
                       for i in ids)
        by_gate.append({"gate": g.name, "killed": int(kills.sum()), "only this gate": int(sole.sum()),
                        "timeout": affected("timeout", "timeouts"), "error": affected("error", "errors")})
    lines += [to_markdown(pd.DataFrame(by_gate)),
              f"Survivors (missed by every gate): {counts.get('survived', 0)}.", "",
              "## By source file", ""]
    by_file = []
    for file, t in table.groupby("file", sort=True):
        c = Counter(t["outcome"])
        k, s = c.get("killed", 0), sum(c.get(o.value, 0) for o in SCORED)
        by_file.append({"file": file, "mutants": len(t),
                        "filtered": int(t["id"].isin(filtered_ids).sum()),
                        "equivalent": c.get("equivalent", 0), "scored": s, "killed": k,
                        "survived": c.get("survived", 0), "timeout": c.get("timeout", 0),
                        "error": c.get("error", 0), "kill rate [Wilson 95%]": _rate(k, s)})
    lines += [to_markdown(pd.DataFrame(by_file))]

    partial = table[(table["outcome"] == "killed") & (table["seeds_killed"] != table["seeds"])]
    lines += ["## Seed-dependent kills", "",
              "Missed on some seed before one killed it: the gate's verdict depends on the input "
              "draw. (Seeds after the killing one are not scored, so this lists only misses on "
              "earlier seeds.)", "",
              to_markdown(pd.DataFrame({
                  "id": partial["id"], "where": partial["file"] + ":" + partial["line"].astype(str),
                  "operator": partial["operator"], "killed on seeds": partial["seeds_killed"],
                  "of seeds": partial["seeds"], "killed by": partial["killed_by"]}))]

    survivors = table[table["outcome"] == "survived"]
    lines += ["## Surviving mutants", "",
              "Each survivor is a change to the reference that every active gate accepts on every "
              "seed. Either a gate should catch it (strengthen the gate), or it changes nothing a "
              "brief asks for: then add it to the equivalents file with a one-line reason "
              f"(`{_rel(p.marathon.mutation.equivalents)}`; format in `docs/gates-quality.md`).", ""]
    if survivors.empty:
        lines += ["_(none)_", ""]
    for r in survivors.itertuples():
        where = f"{r.file}:{r.line}" + (f" in `{r.function}`" if r.function else "")
        lines += [f"### `{r.id}` {where}, {r.operator}", "", "```diff", r.diff.rstrip("\n"), "```", ""]

    eq = table[table["outcome"] == "equivalent"]
    lines += ["## Equivalent mutants (reviewed; excluded from the rate)", "",
              to_markdown(pd.DataFrame({"id": eq["id"], "where": eq["file"] + ":" + eq["line"].astype(str),
                                        "operator": eq["operator"], "reason": eq["reason"]}))]
    lines += ["## Stale equivalents entries", "",
              "Entries matching no mutant of the current reference (the code changed): remove or "
              "update them.", ""]
    if not p.stale:
        lines += ["_(none)_", ""]
    for i in p.stale:
        e = p.equivalents[i]
        lines += [f"- entry {i + 1} (`equivalent[{i}]`), `{e.file}`: {e.reason}", "", "```diff",
                  *(line for line in e.key[1]), "```", ""]
    bad = table[table["outcome"].isin(["timeout", "error"])]
    lines += ["## Timeouts and errors", "",
              to_markdown(pd.DataFrame({"id": bad["id"], "outcome": bad["outcome"],
                                        "where": bad["file"] + ":" + bad["line"].astype(str),
                                        "operator": bad["operator"], "message": bad["message"]}))]
    return "\n".join(lines)


class MutateFiles(BaseModel):
    """What :func:`write_outputs` wrote, and the headline figures."""

    csv: Path
    """``mutants.csv``: one :class:`MutantRow` per mutant."""
    parquet: Path
    """``mutants.parquet``: the same rows, typed."""
    summary: Path
    """``summary.md``."""
    killed: int
    """Mutants killed."""
    scored: int
    """Scored, non-equivalent mutants (the kill rate's denominator)."""
    low: float
    """Lower bound of the Wilson 95% interval of the kill rate (nan when nothing was scored)."""
    high: float
    """Upper bound of that interval."""


def write_outputs(p: Plan, out: Path, command: str) -> MutateFiles:
    """Write ``mutants.csv``, ``mutants.parquet`` and ``summary.md`` into ``out`` (each
    atomically: temp file and rename)."""
    out.mkdir(parents=True, exist_ok=True)
    data = [r.model_dump() for r in rows(p)]
    arrow = pa.Table.from_pylist(data, schema=model_schema(MutantRow, {"marathon.table": "mutants"}))
    table = pd.DataFrame(data, columns=list(MutantRow.model_fields))
    killed, scored, _, low, high = kill_rate(table)
    files = MutateFiles(csv=out / "mutants.csv", parquet=out / "mutants.parquet", summary=out / "summary.md",
                        killed=killed, scored=scored, low=low, high=high)
    write_atomic(arrow, files.parquet)
    _write_text(files.csv, table.to_csv(index=False))
    _write_text(files.summary, summary_markdown(p, table, command))
    return files
