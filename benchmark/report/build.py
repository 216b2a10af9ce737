"""Build a whole report: compute every table and chart frame, write files and ``report.md``.

Layout of the output directory::

    report.md                  ties everything together (tables, charts, claim boundary)
    summary.md, summary.csv    per model x effort x agent x arm
    comparisons.md, .csv       paired comparisons between arms
    data/<chart>.csv           the data frame behind each chart
    charts/<chart>.png, .svg   marathon, gate_survival, regressions, recovery, token_audit
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from benchmark.report import chartdata, charts
from benchmark.report.claims import claim_boundary_markdown
from benchmark.report.load import Results, load_runs
from benchmark.report.markdown import comparisons_markdown, summary_markdown, to_markdown
from benchmark.report.options import ReportOptions
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
    """Every table and chart frame of a report from loaded results."""
    status = chartdata.gate_status(results)
    return ReportData(
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


def report_markdown(results: Results, data: ReportData, options: ReportOptions,
                    chart_files: dict[str, str]) -> str:
    """The text of ``report.md``."""
    k = int(data.summary["k"].iloc[0]) if len(data.summary) else options.k or 1
    runs = ", ".join(f"`{r.run_id}`" for r in results.runs)
    lines = [f"# marathon report: {results.marathon}", "",
             f"Runs {runs}. Complete trials only (see the claim boundary for excluded ones). "
             f"Intervals: {options.confidence:.0%}; full-pass interval Wilson; mean-score "
             f"interval percentile bootstrap with {options.resamples:,} resamples (seed "
             f"{options.seed}). pass@{k} (Chen et al. 2021) and pass^{k} (Yao et al. 2024): "
             f"unbiased estimates for k = {k} replicates; a full pass is a final score of 1. "
             "See docs/report.md for definitions and sources.", "",
             "## Summary", "", to_markdown(summary_markdown(data.summary)),
             "Machine-readable: `summary.csv`.", "",
             "## Comparisons between arms (paired by seed)", "",
             "Fisher's exact test (two-sided) on full passes; Wilcoxon signed-rank test "
             "(two-sided) on paired final scores.", "",
             to_markdown(comparisons_markdown(data.comparisons)),
             "Machine-readable: `comparisons.csv`.", "", "## Charts", ""]
    for name in charts.CHART_NAMES:
        lines += [f"### {name.replace('_', ' ')}", "", _CHART_TEXT[name], "",
                  f"![{name}]({chart_files[name]})", "",
                  f"Data: `data/{name}.csv`; vector: `charts/{name}.svg`.", ""]
    lines.append(claim_boundary_markdown(results))
    return "\n".join(lines)


def build_report(run_dirs: list[Path] | Path, out_dir: Path,
                 options: ReportOptions = ReportOptions()) -> ReportFiles:
    """Write the report of one or more runs into ``out_dir`` (created if needed).

    Args:
        run_dirs: run directories (``results/<run id>``); several combine if they ran the same
            marathon version.
        out_dir: where to write (see the module doc for the layout).
        options: k, bootstrap resamples and seed, confidence.

    Returns:
        The files written and the wall time (seconds).

    Raises:
        MarathonError: unreadable or incompatible runs (see :func:`load_runs`).
    """
    t0 = time.perf_counter()
    results = load_runs(run_dirs)
    data = compute(results, options)
    out_dir = Path(out_dir)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    tables = [out_dir / "summary.csv", out_dir / "summary.md", out_dir / "comparisons.csv",
              out_dir / "comparisons.md"]
    data.summary.to_csv(tables[0], index=False)
    tables[1].write_text(to_markdown(summary_markdown(data.summary)), encoding="utf-8")
    data.comparisons.to_csv(tables[2], index=False)
    tables[3].write_text(to_markdown(comparisons_markdown(data.comparisons)), encoding="utf-8")
    for name in charts.CHART_NAMES:
        path = out_dir / "data" / f"{name}.csv"
        getattr(data, name).to_csv(path, index=False)
        tables.append(path)
    ctx = charts.chart_context(results)
    chart_paths: list[Path] = []
    for name, fig in figures(data, ctx).items():
        chart_paths += charts.save_figure(fig, out_dir / "charts", name)
    report = out_dir / "report.md"
    report.write_text(report_markdown(results, data, options,
                                      {n: f"charts/{n}.png" for n in charts.CHART_NAMES}),
                      encoding="utf-8")
    return ReportFiles(out_dir=out_dir, report=report, tables=tables, charts=chart_paths,
                       seconds=time.perf_counter() - t0)
