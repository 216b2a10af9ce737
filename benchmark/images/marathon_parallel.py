"""Run one pytest session's checks in N pytest processes that share a single queue.

Installed in the scorer image beside its pytest plugin, ``marathon_claim``. Usage::

    python3 -I -m marathon_parallel N REPORT_DIR -- PYTEST_ARGS...

starts N ``python3 -I -m pytest -p marathon_claim --claim-dir DIR`` processes (``-I`` only if
the launcher itself runs with it) with the same arguments, each writing ``REPORT_DIR/junit-K.xml``, waits for all of them and exits with the
highest exit status (128 + S for a process killed by signal S). Each process runs the checks
it is first to claim (see ``marathon_claim``), so every check runs once, in one process, and
appears in one report. Standard library only: the launcher starts without importing pytest.

Why not pytest-xdist: its controller process and execnet-started workers made a scoring of the
ledger gates about 0.5 s slower than two plain pytest processes (2.9 s against 3.4 s median,
same container set-up, interleaved runs on the 2-core reference machine), and the scorer's
target is 3 s for the whole scoring (``benchmarks/bench_scorer.py``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    """Start N pytest processes sharing one claim directory; return the highest exit status."""
    if len(argv) < 3 or argv[2] != "--" or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python3 -I -m marathon_parallel N REPORT_DIR -- PYTEST_ARGS...", file=sys.stderr)
        return 2
    processes, report_dir, pytest_args = int(argv[0]), Path(argv[1]), argv[3:]
    isolated = ["-I"] if sys.flags.isolated else []  # the scorer runs us with -I: so do the children
    with tempfile.TemporaryDirectory(prefix="marathon-claims-") as claims:
        running = [
            subprocess.Popen([sys.executable, *isolated, "-m", "pytest", "-p", "marathon_claim",
                              f"--claim-dir={claims}", f"--junitxml={report_dir / f'junit-{k}.xml'}",
                              *pytest_args])
            for k in range(processes)
        ]
        codes = [process.wait() for process in running]
    return max(code if code >= 0 else 128 - code for code in codes)  # killed by signal S: 128+S


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
