"""Time scoring one snapshot on every gate of a marathon, container start included.

Prints the median wall time of ``benchmark.scorer.score`` on the final reference (all gates
active) over N repetitions, beside two baselines: a bare ``docker run --rm IMAGE true`` and the
same pytest run directly on the host (the same number of pytest processes sharing the checks,
no container), then each check's median wall time in the container. Target (issue: ledger
marathon): under 3 s median on the 2-core machine.

Usage: python benchmarks/bench_scorer.py [--marathon ledger] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.docker_env import client
from benchmark.images import RECIPES, build_images
from benchmark.marathon import load_marathon
from benchmark.scorer import Outcome, ScorerLimits, score

TARGET_S = 3.0


def _times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, repeats: int) -> float:
    return statistics.median(_times(fn, repeats))


def _cpu_loop() -> None:
    """A fixed pure-Python loop: its time shows how fast this machine is at the moment (shared
    2-core machines vary by 30% or more from one minute to the next)."""
    total = 0
    for i in range(5_000_000):
        total += i


def _host_run(m, snapshot: Path, gates, processes: int) -> None:
    """The scorer's pytest run, directly on the host: the same launcher and N processes sharing
    the checks (``marathon_parallel``), no container. The product's ``python3`` is this
    interpreter (a version-manager shim on PATH would add its own start-up time to every product
    run)."""
    env = {**os.environ, "MARATHON_SNAPSHOT": str(snapshot), "MARATHON_SEED": "0",
           "PYTHONPATH": str(RECIPES), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as reports:
        subprocess.run(
            [sys.executable, "-m", "marathon_parallel", str(processes), reports, "--", "-q",
             "-p", "no:cacheprovider", f"--rootdir={m.gates}", *(str(m.gates / g.filename) for g in gates)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marathon", default="ledger")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    m = load_marathon(args.marathon)
    image = build_images(agent=False, log=lambda line: None).scorer
    last = m.episode_ids[-1]
    ref = m.episode(last).reference
    gates = m.active_gates(last)

    results = score(ref, m, last, seed=0, image=image)  # warm-up and sanity check
    n_pass = sum(r.outcome == Outcome.passed for r in results)
    docker_client = client()

    check_times: dict[str, list[float]] = {}

    def scored_once() -> None:
        for result in score(ref, m, last, seed=0, image=image):
            check_times.setdefault(f"{result.gate}/{result.check}", []).append(result.duration_s)

    score_times = _times(scored_once, args.repeats)
    scored = statistics.median(score_times)
    bare = _median_time(lambda: docker_client.containers.run(image, "true", remove=True,
                                                             network_disabled=True), args.repeats)
    host = _median_time(lambda: _host_run(m, ref, gates, processes=ScorerLimits().processes),
                        args.repeats)

    loop = _median_time(_cpu_loop, 3)
    print(f"marathon {m.name}: {len(gates)} gates, {len(results)} checks, {n_pass} passed on the reference")
    print(f"score() median over {args.repeats}: {scored:.2f} s (target < {TARGET_S:.0f} s; "
          f"min {min(score_times):.2f} s, max {max(score_times):.2f} s)")
    print(f"  bare docker run --rm IMAGE true: {bare:.2f} s")
    print(f"  same pytest run on the host:     {host:.2f} s ({ScorerLimits().processes} processes)")
    print(f"  baseline sum:                    {bare + host:.2f} s; scorer overhead {scored - bare - host:+.2f} s")
    print(f"  machine speed now: a fixed Python loop took {loop:.2f} s (compare runs only at similar values)")
    per_check = sorted(((statistics.median(times), name) for name, times in check_times.items()), reverse=True)
    total = sum(seconds for seconds, _ in per_check)
    print(f"per-check cost (median wall seconds inside the container, {ScorerLimits().processes} "
          f"processes share them; sum {total:.2f} s):")
    for seconds, name in per_check:
        print(f"  {seconds:6.3f} s  {100 * seconds / total:4.1f}%  {name}")
    print("PASS" if scored < TARGET_S else "OVER TARGET")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
