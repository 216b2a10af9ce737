"""Time ``marathon report`` on 10,000 synthetic trials.

Writes a clearly synthetic run (``benchmark.report.synthetic``: models ``scripted/synthetic-*``,
agent ``synthetic``, rows drawn with numpy, same Parquet schema as a real run) into a temporary
directory, then times :func:`benchmark.report.build_report` on it: loading, every table and
statistic (10,000 bootstrap resamples), every chart as PNG and SVG, report.md. Prints the stage
times and the row counts. Target (issue: marathon report): under 30 s on the 2-core machine.

Usage: python benchmarks/bench_report.py [--trials 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmark.report import ReportOptions, build_report
from benchmark.report.synthetic import write_synthetic_run

TARGET_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="Write the run and report here (kept).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        base = args.keep or Path(tmp)
        t0 = time.perf_counter()
        run_dir = write_synthetic_run(base, trials=args.trials, run_id="synthetic-bench")
        gen_s = time.perf_counter() - t0
        rows = {t: pq.ParquetFile(run_dir / f"{t}.parquet").metadata.num_rows
                for t in ("trials", "episodes", "attempts", "checks", "usage")}
        print(f"synthetic run ({gen_s:.1f} s to generate): "
              + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
        t0 = time.perf_counter()
        files = build_report([run_dir], base / "report", ReportOptions())
        wall = time.perf_counter() - t0
        print(f"report: {len(files.tables)} tables, {len(files.charts)} chart files, "
              f"{files.report}")
        verdict = "ok" if wall < TARGET_S else "SLOW"
        print(f"marathon report on {args.trials:,} trials: {wall:.1f} s "
              f"(target < {TARGET_S:.0f} s): {verdict}")
        return 0 if wall < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
