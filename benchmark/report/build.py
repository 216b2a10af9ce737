"""Build a whole report: compute every table and chart frame, write files and ``report.md``.

Layout of the output directory::

    report.md                  ties everything together (tables, charts, claim boundary)
    summary.md, summary.csv    per marathon x model x effort x agent x mode x arm
    comparisons.md, .csv       paired comparisons between arms
    data/<chart>.csv           the data frame behind each chart
    charts/<chart>.png, .svg   marathon, gate_survival, regressions, recovery, token_audit
    debt.md, debt.csv          when both modes ran: isolated - cumulative score per episode
    data/debt.csv, data/debt_gates.csv, charts/debt.png|svg

Records of several marathons (a suite) add ``pooled_summary.md|csv`` and
``pooled_comparisons.md|csv`` (marathon as a stratum, :mod:`benchmark.report.pooled`), and put
each marathon's chart data and charts under ``data/<marathon>/`` and ``charts/<marathon>/``;
``summary.csv``, ``comparisons.csv`` and ``debt.csv`` hold every marathon's rows.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from benchmark.report import chartdata, charts
from benchmark.report.claims import claim_boundary_markdown
from benchmark.report.debt import debt_gates, debt_markdown, debt_table, has_both_modes
from benchmark.report.load import Results, load_runs
from benchmark.report.markdown import comparisons_markdown, summary_markdown, to_markdown
from benchmark.report.options import ReportOptions
from benchmark.report.pooled import (pooled_comparisons, pooled_comparisons_markdown,
                                     pooled_summary, pooled_summary_markdown,
                                     stratum_weights_note)
from benchmark.report.tables import comparisons_table, summary_table


class ReportData(BaseModel):
    """Every table and chart frame of a report (what :func:`compute` returns)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    summary: pd.DataFrame
    """:func:`benchmark.report.tables.summary_table`."""
    comparisons: pd.DataFrame
    """:func:`benchmark.report.tables.comparisons_table`."""
    marathon: pd.DataFrame
    """:func:`benchmark.report.chartdata.marathon_curve`."""
    gate_survival: pd.DataFrame
    """:func:`benchmark.report.chartdata.gate_survival`."""
    regressions: pd.DataFrame
    """:func:`benchmark.report.chartdata.regressions`."""
    recovery: pd.DataFrame
    """:func:`benchmark.report.chartdata.recovery`."""
    token_audit: pd.DataFrame
    """:func:`benchmark.report.chartdata.token_audit`."""
    debt: pd.DataFrame | None = None
    """:func:`benchmark.report.debt.debt_table`; ``None`` unless some group ran both modes."""
    debt_gates: pd.DataFrame | None = None
    """:func:`benchmark.report.debt.debt_gates`; ``None`` with :attr:`debt`."""


class ReportFiles(BaseModel):
    """What :func:`build_report` wrote."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    out_dir: Path
    """The output directory."""
    report: Path
    """``report.md``."""
    tables: list[Path]
    """Markdown and CSV tables (summary, comparisons, chart data)."""
    charts: list[Path]
    """PNG and SVG files of every chart."""
    seconds: float
    """Wall time of the build, seconds."""


def compute(results: Results, options: ReportOptions = ReportOptions()) -> ReportData:
    """Every table and chart frame of a report from loaded results (of one marathon: the
    chart frames index episodes by its order; see :func:`build_report` for suites)."""
    status = chartdata.gate_status(results)
    gates = debt_gates(results, status) if has_both_modes(results) else None
    return ReportData(
        debt=debt_table(results, options, gates) if gates is not None else None,
        debt_gates=gates,
        summary=summary_table(results, options),
        comparisons=comparisons_table(results),
        marathon=chartdata.marathon_curve(results, options),
        gate_survival=chartdata.gate_survival(results, status),
        regressions=chartdata.regressions(results, status),
        recovery=chartdata.recovery(results),
        token_audit=chartdata.token_audit(results),
    )


def figures(data: ReportData, ctx: charts.ChartContext) -> dict:
    """Chart name -> matplotlib Figure, in :data:`charts.CHART_NAMES` order."""
    return {
        "marathon": charts.plot_marathon(data.marathon, ctx),
        "gate_survival": charts.plot_gate_survival(data.gate_survival, ctx),
        "regressions": charts.plot_regressions(data.regressions, ctx, data.summary),
        "recovery": charts.plot_recovery(data.recovery, ctx),
        "token_audit": charts.plot_token_audit(data.token_audit, ctx),
    }


_CHART_TEXT = {
    "marathon": "Score after each cumulative episode (share of active gates green), mean over "
                "complete replicates, one line per arm; band: percentile bootstrap 95% interval.",
    "gate_survival": "Share of replicates in which each gate is green after each episode (final "
                     "attempt); blank: gate not yet active.",
    "regressions": "Cells `broken/at risk`: replicates in which the episode turned a gate that "
                   "was green after the previous episode red, over those where it was green.",
    "recovery": "Recovery attempts (attempts beyond the first of an episode, plus rollbacks) per "
                "replicate, stacked by episode; hatched on top: red self-checks (in-episode "
                "recoveries of arms with self-checks).",
    "token_audit": "Tokens per replicate by kind (proxy-metered when available, else "
                   "agent-reported) and cost per replicate in USD.",
}


_DEBT_TEXT = ("Isolated trials start every episode from the reference solution of the previous "
              "one; cumulative trials from what the agent left. Per episode, the mean paired "
              "difference isolated - cumulative (same marathon, model, effort, agent, arm and "
              "seed) with a paired percentile bootstrap interval (resampling pairs): above 0, "
              "the episode went worse for building on the agent's own earlier work (debt), not "
              "for its difficulty. Gates: those green more often in isolation (share of pairs).")


def _intro(results: Results, k: int, options: ReportOptions) -> str:
    runs = ", ".join(f"`{r.run_id}`" for r in results.runs)
    return (f"Runs {runs}. Complete trials only (see the claim boundary for excluded ones). "
            f"Intervals: {options.confidence:.0%}; full-pass interval Wilson; mean-score "
            f"interval percentile bootstrap with {options.resamples:,} resamples (seed "
            f"{options.seed}). pass@{k} (Chen et al. 2021) and pass^{k} (Yao et al. 2024): "
            f"unbiased estimates for k = {k} replicates; a full pass is a final score of 1. "
            "See docs/report.md for definitions and sources.")


def marathon_markdown(data: ReportData, chart_files: dict[str, str], level: int = 2,
                      where: str = "") -> list[str]:
    """The summary, comparisons, charts and (when both modes ran) debt sections of one
    marathon, with headings at ``level``; ``where``: the directory of its chart data and charts
    (``<marathon>/`` in a suite report)."""
    h = "#" * level
    lines = [f"{h} Summary", "", to_markdown(summary_markdown(data.summary)),
             "Machine-readable: `summary.csv`.", "",
             f"{h} Comparisons between arms (paired by seed)", "",
             "Fisher's exact test (two-sided) on full passes; Wilcoxon signed-rank test "
             "(two-sided) on paired final scores.", "",
             to_markdown(comparisons_markdown(data.comparisons)),
             "Machine-readable: `comparisons.csv`.", ""]
    if data.debt is not None:
        lines += [f"{h} Debt: isolated minus cumulative score", "", _DEBT_TEXT, "",
                  to_markdown(debt_markdown(data.debt)),
                  f"![debt]({chart_files['debt']})", "",
                  f"Machine-readable: `debt.csv`; gates: `data/{where}debt_gates.csv`; vector: "
                  f"`charts/{where}debt.svg`.", ""]
    lines += [f"{h} Charts", ""]
    for name in charts.CHART_NAMES:
        lines += [f"{h}# {name.replace('_', ' ')}", "", _CHART_TEXT[name], "",
                  f"![{name}]({chart_files[name]})", "",
                  f"Data: `data/{where}{name}.csv`; vector: `charts/{where}{name}.svg`.", ""]
    return lines


def report_markdown(results: Results, data: ReportData, options: ReportOptions,
                    chart_files: dict[str, str], extra: list[str] = ()) -> str:
    """The text of ``report.md`` of one marathon's records; ``extra``: sections (Markdown
    lines) put before the claim boundary (e.g. the protocol section)."""
    k = int(data.summary["k"].iloc[0]) if len(data.summary) else options.k or 1
    lines = [f"# marathon report: {results.marathon}", "", _intro(results, k, options), "",
             *marathon_markdown(data, chart_files), *extra]
    lines.append(claim_boundary_markdown(results))
    return "\n".join(lines)


def suite_markdown(results: Results, parts: dict[str, ReportData], pooled: pd.DataFrame,
                   pooled_cmp: pd.DataFrame, options: ReportOptions,
                   chart_files: dict[str, dict[str, str]], extra: list[str] = ()) -> str:
    """The text of ``report.md`` of several marathons' records: the pooled summary (marathon
    as a stratum), then one section per marathon, then ``extra`` and the claim boundary."""
    ks = [int(d.summary["k"].iloc[0]) for d in parts.values() if len(d.summary)]
    lines = [f"# marathon report: suite of {', '.join(results.marathons)}", "",
             _intro(results, min(ks) if ks else options.k or 1, options), "",
             "## Pooled over marathons (marathon as a stratum)", "",
             stratum_weights_note(results), "", to_markdown(pooled_summary_markdown(pooled)),
             "Machine-readable: `pooled_summary.csv`.", "",
             "### Pooled comparisons between arms (paired by marathon and seed)", "",
             "Exact McNemar test (two-sided) on paired full passes; Wilcoxon signed-rank test "
             "(two-sided) on paired final scores over every pair; the score difference is the "
             "mean over marathons of each one's mean paired difference, with a stratified "
             "bootstrap interval.", "", to_markdown(pooled_comparisons_markdown(pooled_cmp)),
             "Machine-readable: `pooled_comparisons.csv`.", ""]
    for name, data in parts.items():
        lines += [f"## Marathon `{name}`", "",
                  *marathon_markdown(data, chart_files[name], level=3, where=f"{name}/")]
    lines += list(extra)
    lines.append(claim_boundary_markdown(results))
    return "\n".join(lines)


def _write_marathon(data: ReportData, results: Results, out_dir: Path, where: str,
                    tables: list[Path], chart_paths: list[Path]) -> dict[str, str]:
    """Write one marathon's chart data and charts under ``data/<where>`` and
    ``charts/<where>``; return chart name -> PNG path relative to ``out_dir``."""
    (out_dir / "data" / where).mkdir(parents=True, exist_ok=True)
    frames = {name: getattr(data, name) for name in charts.CHART_NAMES}
    if data.debt_gates is not None:
        frames["debt_gates"] = data.debt_gates
        frames["debt"] = data.debt
    for name, frame in frames.items():
        path = out_dir / "data" / where / f"{name}.csv"
        frame.to_csv(path, index=False)
        tables.append(path)
    ctx = charts.chart_context(results)
    figs = figures(data, ctx)
    if data.debt is not None:
        figs["debt"] = charts.plot_debt(data.debt, ctx)
    for name, fig in figs.items():
        chart_paths += charts.save_figure(fig, out_dir / "charts" / where, name)
    return {n: f"charts/{where}{n}.png" for n in figs}


def build_report(run_dirs: list[Path] | Path, out_dir: Path,
                 options: ReportOptions = ReportOptions(),
                 protocol: Path | None = None) -> ReportFiles:
    """Write the report of one or more runs into ``out_dir`` (created if needed).

    Args:
        run_dirs: run directories (``results/<run id>``); several combine when every marathon
            they share is the same version; runs of several marathons make a suite report.
        out_dir: where to write (see the module doc for the layout).
        options: k, bootstrap resamples and seed, confidence.
        protocol: a protocol file (``protocols/NAME.toml``) to check the runs against: adds
            the Protocol section (before the claim boundary) and ``protocol.md``; ``None``: none.

    Returns:
        The files written and the wall time (seconds).

    Raises:
        MarathonError: unreadable or incompatible runs (see :func:`load_runs`), or an invalid
            protocol file.
    """
    t0 = time.perf_counter()
    proto = None
    if protocol is not None:
        from benchmark.protocol import load_protocol

        proto = load_protocol(Path(protocol))
    results = load_runs(run_dirs)
    out_dir = Path(out_dir)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    parts = {name: compute(results.for_marathon(name), options) for name in results.marathons}
    suite = len(parts) > 1
    merged = {key: pd.concat([getattr(d, key) for d in parts.values()], ignore_index=True)
              for key in ("summary", "comparisons")}
    tables = [out_dir / "summary.csv", out_dir / "summary.md", out_dir / "comparisons.csv",
              out_dir / "comparisons.md"]
    merged["summary"].to_csv(tables[0], index=False)
    tables[1].write_text(to_markdown(summary_markdown(merged["summary"])), encoding="utf-8")
    merged["comparisons"].to_csv(tables[2], index=False)
    tables[3].write_text(to_markdown(comparisons_markdown(merged["comparisons"])), encoding="utf-8")
    debts = [d.debt for d in parts.values() if d.debt is not None]
    if debts:
        debt = pd.concat(debts, ignore_index=True)
        tables += [out_dir / "debt.csv", out_dir / "debt.md"]
        debt.to_csv(tables[-2], index=False)
        tables[-1].write_text(to_markdown(debt_markdown(debt)), encoding="utf-8")
    chart_paths: list[Path] = []
    chart_files = {name: _write_marathon(data, results.for_marathon(name) if suite else results,
                                         out_dir, f"{name}/" if suite else "", tables, chart_paths)
                   for name, data in parts.items()}
    extra: list[str] = []
    if proto is not None:
        from benchmark.protocol import check_protocol, protocol_hash, protocol_markdown

        check = check_protocol(proto, results, protocol, protocol_hash(Path(protocol)))
        extra = protocol_markdown(check)
        tables.append(out_dir / "protocol.md")
        tables[-1].write_text("\n".join(extra), encoding="utf-8")
    report = out_dir / "report.md"
    if suite:
        pooled, pooled_cmp = pooled_summary(results, options), pooled_comparisons(results, options)
        for name, frame, md in (("pooled_summary", pooled, pooled_summary_markdown),
                                ("pooled_comparisons", pooled_cmp, pooled_comparisons_markdown)):
            frame.to_csv(out_dir / f"{name}.csv", index=False)
            (out_dir / f"{name}.md").write_text(to_markdown(md(frame)), encoding="utf-8")
            tables += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
        text = suite_markdown(results, parts, pooled, pooled_cmp, options, chart_files, extra)
    else:
        name = next(iter(parts))
        text = report_markdown(results, parts[name], options, chart_files[name], extra)
    report.write_text(text, encoding="utf-8")
    return ReportFiles(out_dir=out_dir, report=report, tables=tables, charts=chart_paths,
                       seconds=time.perf_counter() - t0)
