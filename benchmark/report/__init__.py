"""``marathon report``: the tables, statistics, charts and claim boundary a paper needs.

Everything is computed from a run's Parquet records and ``manifest.json`` alone (see
``docs/results-schema.md``); ``docs/report.md`` documents every table, chart and formula.

One concept per module:

- :mod:`benchmark.report.options`: :class:`ReportOptions` (k, bootstrap resamples, seed);
- :mod:`benchmark.report.load`: read and combine run directories into :class:`Results`;
- :mod:`benchmark.report.stats`: Wilson and bootstrap intervals, pass@k, pass^k, Fisher, Wilcoxon;
- :mod:`benchmark.report.tables`: the summary and comparison tables;
- :mod:`benchmark.report.chartdata`: the data frame behind each chart;
- :mod:`benchmark.report.charts`: the matplotlib figures (Agg backend);
- :mod:`benchmark.report.claims`: the claim-boundary section;
- :mod:`benchmark.report.markdown`: Markdown rendering of tables;
- :mod:`benchmark.report.build`: :func:`build_report`, writing everything into one directory;
- :mod:`benchmark.report.synthetic`: clearly synthetic records for benchmarks and tests.
"""

from benchmark.report.build import ReportFiles, build_report
from benchmark.report.load import Results, load_runs
from benchmark.report.options import ReportOptions

__all__ = ["ReportFiles", "ReportOptions", "Results", "build_report", "load_runs"]
