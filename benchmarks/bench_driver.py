"""Benchmark of the driver: harness overhead per episode and total wall time.

Runs the oracle agent on the ledger marathon: the four arms (prompt-only, skill-only,
feedback-retry, governed-runtime) x 5 replicates x 4 episodes, ``--jobs 2`` (20 trials, 80
episodes).

Harness overhead of an episode = its wall time minus the agent's time: container work (commit,
archive, restore), scoring (the sealed scorer container and the gates' own checks) and records.
It is also shown without the time the gates' checks themselves take (pytest's per-check
durations), which is the marathon's cost, not the harness's.

Targets: median overhead < 5 s per episode, total < 10 min.

Usage::

    python benchmarks/bench_driver.py [--replicates 5] [--jobs 2] [--out DIR] [--marathon ledger]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import pandas as pd
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.arms import load_arm  # noqa: E402
from benchmark.driver import start_run  # noqa: E402
from benchmark.errors import MarathonError  # noqa: E402
from benchmark.experiment import load_config  # noqa: E402

OVERHEAD_TARGET_S = 5.0
WALL_TARGET_S = 600.0


#: The four arms of the benchmark.
ARMS = ("prompt-only", "skill-only", "feedback-retry", "governed-runtime")


@click.command()
@click.option("--marathon", default="ledger", show_default=True)
@click.option("--replicates", type=int, default=5, show_default=True)
@click.option("--jobs", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Keep the run here (default: a temp dir).")
def main(marathon: str, replicates: int, jobs: int, out: Path | None) -> None:
    """Run the driver benchmark and print overhead and wall time against the targets."""
    console = Console(stderr=True, highlight=False)
    try:
        arms = [load_arm(name).name for name in ARMS]
    except MarathonError as e:
        console.print(f"[red]{e}[/]")
        sys.exit(2)
    with tempfile.TemporaryDirectory(prefix="marathon-bench-") as tmp:
        root = out or Path(tmp)
        config = load_config(None, {"marathon": marathon, "arms": tuple(arms), "agents": ("oracle",),
                                    "replicates": replicates, "jobs": jobs, "out": root,
                                    "run_id": f"bench-{time.strftime('%Y%m%dT%H%M%S')}"})
        console.print(f"{len(arms)} arms x {replicates} replicates, oracle agent, --jobs {jobs}, "
                      f"marathon {marathon}")
        t0 = time.monotonic()
        outcome = start_run(config, display=False, console=console)
        wall = time.monotonic() - t0
        run = outcome.run_dir
        eps = pd.read_parquet(run / "episodes.parquet")
        checks = pd.read_parquet(run / "checks.parquet")
    if outcome.status != "complete":
        console.print(f"[red]run {outcome.status}: {outcome.failures}[/]")
        sys.exit(1)
    check_s = checks.groupby(["trial_id", "episode"]).duration_s.sum()
    eps = eps.set_index(["trial_id", "episode"]).join(check_s.rename("check_s"))
    overhead = statistics.median(eps.overhead_s)
    own = statistics.median(eps.overhead_s - eps.check_s)
    print(f"arms: {', '.join(arms)}")
    print(f"trials: {len(eps.reset_index().trial_id.unique())}, episodes: {len(eps)}, "
          f"attempts: {int(eps.attempts.sum())}")
    print(f"median harness overhead per episode: {overhead:.2f} s "
          f"(target < {OVERHEAD_TARGET_S:.0f} s: {'met' if overhead < OVERHEAD_TARGET_S else 'MISSED'})")
    print(f"  of which gate checks (pytest durations), median: {statistics.median(eps.check_s):.2f} s; "
          f"harness without gate checks, median: {own:.2f} s")
    for ep, group in eps.reset_index().groupby("episode"):
        print(f"  {ep}: median overhead {group.overhead_s.median():.2f} s, "
              f"median scoring {group.scoring_s.median():.2f} s, "
              f"median gate checks {group.check_s.median():.2f} s")
    print(f"total wall time: {wall:.1f} s (target < {WALL_TARGET_S:.0f} s: "
          f"{'met' if wall < WALL_TARGET_S else 'MISSED'})")


if __name__ == "__main__":
    main()
