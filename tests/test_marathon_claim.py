"""The scorer's launcher ``marathon_parallel`` and plugin ``marathon_claim``: N pytest
processes share one session's checks.

Runs them on the host from ``benchmark/images`` (the scorer image installs the same files);
the checks log which process ran them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmark.images import RECIPES

CHECKS = textwrap.dedent("""
    import os, time
    import pytest

    @pytest.mark.parametrize("n", range(12))
    def test_logged(n):
        time.sleep(0.05 + 0.05 * (n % 3))
        with open(os.environ["RUN_LOG"], "a") as log:
            log.write(f"{n} {os.getpid()} {time.time()}\\n")
""")


def _start(tmp_path: Path, processes: int, *extra: str) -> subprocess.Popen:
    """The scorer's launcher, ``marathon_parallel``, on the host: N pytest processes sharing the checks."""
    env = {**os.environ, "PYTHONPATH": str(RECIPES), "RUN_LOG": str(tmp_path / "run.log")}
    return subprocess.Popen(
        [sys.executable, "-m", "marathon_parallel", str(processes), str(tmp_path), "--", "-q",
         "-p", "no:cacheprovider", f"--rootdir={tmp_path}", *extra, str(tmp_path / "test_logged.py")],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _log(tmp_path: Path) -> list[tuple[int, int, float]]:
    lines = (tmp_path / "run.log").read_text().split("\n")
    return [(int(n), int(pid), float(t)) for n, pid, t in (line.split() for line in lines if line)]


def test_each_check_runs_once_in_one_of_the_processes(tmp_path):
    (tmp_path / "test_logged.py").write_text(CHECKS)
    assert _start(tmp_path, 3).wait(timeout=120) == 0

    runs = _log(tmp_path)
    assert sorted(n for n, _, _ in runs) == list(range(12))  # every check once, none twice
    reported = [case.get("name") for k in range(3)
                for case in ET.parse(tmp_path / f"junit-{k}.xml").getroot().iter("testcase")]
    assert sorted(reported) == sorted(f"test_logged[{n}]" for n in range(12))


def test_no_check_runs_before_the_wait_for_file_exists(tmp_path):
    (tmp_path / "test_logged.py").write_text(CHECKS)
    ready = tmp_path / "ready"
    launcher = _start(tmp_path, 2, f"--wait-for={ready}")
    time.sleep(1.5)  # pytest starts and collects meanwhile
    assert not (tmp_path / "run.log").exists()
    created = time.time()
    ready.touch()
    assert launcher.wait(timeout=120) == 0
    runs = _log(tmp_path)
    assert sorted(n for n, _, _ in runs) == list(range(12))
    assert min(t for _, _, t in runs) >= created
    assert len({pid for _, pid, _ in runs}) == 2  # both were waiting: the work was shared
