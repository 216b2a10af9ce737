"""Run one pytest session's checks in N pytest processes that share a single queue.

Installed in the scorer image beside its pytest plugin, ``marathon_claim``. Usage::

    python3 -I -m marathon_parallel [--product-uid BASE] N REPORT_DIR -- PYTEST_ARGS...

starts N ``python3 -I -m pytest -p marathon_claim --claim-dir DIR`` processes (``-I`` only if
the launcher itself runs with it) with the same arguments, each writing
``REPORT_DIR/junit-K.xml``, waits for all of them and exits with the highest exit status
(128 + S for a process killed by signal S). Each process runs the checks it is first to claim
(see ``marathon_claim``), so every check runs once, in one process, and appears in one report.
Every ``{worker}`` in PYTEST_ARGS becomes K in process K's arguments (e.g. its own
``--runner-dir``); process K keeps its checks' temporary directories under its own
``--basetemp`` (``TMPDIR/marathon-checks-K``), never under a directory another process changes. With ``--product-uid BASE``, process K runs the product as uid ``BASE + K``
(``MARATHON_PRODUCT_UID``, see ``marathon_product``): concurrent checks' products cannot signal
each other, and killing every process of one uid after a check spares the other process's
check. As the container's PID 1 it also reaps every orphaned process (a product's daemon),
so none lingers as a zombie holding a slot of the process limit. Standard library only: the
launcher starts without importing pytest.

Why not pytest-xdist: its controller process and execnet-started workers made a scoring of the
ledger gates about 0.5 s slower than two plain pytest processes (2.9 s against 3.4 s median,
same container set-up, interleaved runs on the 2-core reference machine), and the scorer's
target is 3 s for the whole scoring (``benchmarks/bench_scorer.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


USAGE = "usage: python3 -I -m marathon_parallel [--product-uid BASE] N REPORT_DIR -- PYTEST_ARGS..."


def _wait_all(pids: set[int]) -> list[int]:
    """Reap children (any child: orphans too, when we are PID 1) until every pid in ``pids``
    has exited; return their exit statuses (128 + S for one killed by signal S)."""
    codes = []
    while pids:
        pid, status = os.wait()
        if pid in pids:
            pids.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            codes.append(code if code >= 0 else 128 - code)
    return codes


def main(argv: list[str]) -> int:
    """Start N pytest processes sharing one claim directory; return the highest exit status."""
    base_uid = None
    if argv[:1] == ["--product-uid"] and len(argv) > 1 and argv[1].isdigit():
        base_uid, argv = int(argv[1]), argv[2:]
    if len(argv) < 3 or argv[2] != "--" or not argv[0].isdigit() or int(argv[0]) < 1:
        print(USAGE, file=sys.stderr)
        return 2
    processes, report_dir, pytest_args = int(argv[0]), Path(argv[1]), argv[3:]
    isolated = ["-I"] if sys.flags.isolated else []  # the scorer runs us with -I: so do the children
    isolated += ["-B"] if sys.flags.dont_write_bytecode else []
    with tempfile.TemporaryDirectory(prefix="marathon-claims-") as claims:
        pids = set()
        for k in range(processes):
            env = dict(os.environ)
            if base_uid is not None:
                env["MARATHON_PRODUCT_UID"] = str(base_uid + k)
            # Each process gets its own base temporary directory: under pytest's shared default
            # (/tmp/pytest-of-USER) a process starting up makes that directory 0700 again while
            # another process's product is running below it, and the product (another uid)
            # loses access to its own working directory for a moment (imports fail at random).
            basetemp = Path(tempfile.gettempdir()) / f"marathon-checks-{k}"
            pids.add(subprocess.Popen(
                [sys.executable, *isolated, "-m", "pytest", "-p", "marathon_claim",
                 f"--claim-dir={claims}", f"--junitxml={report_dir / f'junit-{k}.xml'}",
                 f"--basetemp={basetemp}",
                 *(arg.replace("{worker}", str(k)) for arg in pytest_args)],
                env=env).pid)
        codes = _wait_all(pids)
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
