"""Benchmark of trials on Ray: the driver benchmark's oracle experiment (benchmarks/bench_driver.py:
the ledger marathon, four arms x 5 replicates x 4 episodes = 20 trials, 80 episodes) run once in
the driver's threads (``--jobs 2``) and once on ``--ray local:2`` (two worker nodes with one
``docker`` unit each, so also two trials at a time), one after the other.

Per episode it prints, for both backends:

- the harness overhead as the driver benchmark measures it (median of the episode's wall time
  minus the agent's, measured inside the trial: containers, scoring, records);
- the run's wall time per episode (session wall time from the manifest, without starting the
  local cluster, divided by the episodes; with two trials at a time), which also holds what Ray
  adds: scheduling, shipping the episode's files and records to the driver.

The ratio Ray / single process of the second figure is the overhead target: at most 1.5x. The
time to start the throwaway cluster is printed apart (a real cluster is started once).

Usage::

    python benchmarks/bench_ray.py [--replicates 5] [--marathon ledger] [--out DIR]
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
from benchmark.experiment import load_config  # noqa: E402
from benchmark.manifest import read_manifest  # noqa: E402

#: The four arms of the driver benchmark.
ARMS = ("prompt-only", "skill-only", "feedback-retry", "governed-runtime")
#: Ray's wall time per episode may be at most this multiple of the single process's.
RATIO_TARGET = 1.5


def _one(root: Path, marathon: str, arms: list[str], replicates: int, ray: str | None,
         console: Console) -> dict:
    flags = {"marathon": marathon, "arms": tuple(arms), "agents": ("oracle",),
             "replicates": replicates, "jobs": 2, "out": root,
             "run_id": f"bench-{'ray' if ray else 'local'}-{time.strftime('%Y%m%dT%H%M%S')}"}
    if ray:
        flags["ray"] = ray
    t0 = time.monotonic()
    outcome = start_run(load_config(None, flags), display=False, console=console)
    total = time.monotonic() - t0
    if outcome.status != "complete":
        console.print(f"[red]run {outcome.status}: {outcome.failures}[/]")
        sys.exit(1)
    m = read_manifest(outcome.run_dir)
    session = (m.ended_at - m.started_at).total_seconds()
    eps = pd.read_parquet(outcome.run_dir / "episodes.parquet")
    return {"episodes": len(eps), "overhead": statistics.median(eps.overhead_s),
            "wall_per_episode": session / len(eps), "session": session, "total": total}


@click.command()
@click.option("--marathon", default="ledger", show_default=True)
@click.option("--replicates", type=int, default=5, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Keep the runs here (default: a temp dir).")
def main(marathon: str, replicates: int, out: Path | None) -> None:
    """Run the oracle experiment locally and on --ray local:2; print both per-episode figures."""
    console = Console(stderr=True, highlight=False)
    arms = [load_arm(name).name for name in ARMS]
    with tempfile.TemporaryDirectory(prefix="marathon-bench-ray-") as tmp:
        root = out or Path(tmp)
        console.print(f"{len(arms)} arms x {replicates} replicates, oracle agent, marathon {marathon}: "
                      "single process (--jobs 2), then --ray local:2")
        local = _one(root, marathon, arms, replicates, None, console)
        on_ray = _one(root, marathon, arms, replicates, "local:2", console)
    print(f"episodes: {local['episodes']} per run")
    print(f"{'':34}{'single process':>16}{'ray local:2':>14}{'ratio':>8}")
    for key, label in (("overhead", "median harness overhead / episode"),
                       ("wall_per_episode", "run wall time / episode")):
        print(f"{label:34}{local[key]:>14.2f} s{on_ray[key]:>12.2f} s{on_ray[key] / local[key]:>7.2f}x")
    ratio = on_ray["wall_per_episode"] / local["wall_per_episode"]
    print(f"run sessions: {local['session']:.1f} s single process, {on_ray['session']:.1f} s on Ray "
          f"(+ {on_ray['total'] - on_ray['session']:.1f} s to start and stop the local cluster)")
    print(f"Ray / single process, wall time per episode: {ratio:.2f}x (target <= {RATIO_TARGET}x: "
          f"{'met' if ratio <= RATIO_TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
