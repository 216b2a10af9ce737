"""The scorer's launcher ``marathon_parallel`` and plugin ``marathon_claim``: N pytest
processes share one session's checks; no-verdict properties; no product process outlives its
check.

Runs them on the host from ``benchmark/images`` (the scorer image installs the same files);
the checks log which process ran them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time  # noqa: F401
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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


def _start(tmp_path: Path, processes: int, *extra: str, product_uid: int | None = None) -> subprocess.Popen:
    """The scorer's launcher, ``marathon_parallel``, on the host: N pytest processes sharing the checks."""
    env = {**os.environ, "PYTHONPATH": str(RECIPES), "RUN_LOG": str(tmp_path / "run.log")}
    uid = ["--product-uid", str(product_uid)] if product_uid is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "marathon_parallel", *uid, str(processes), str(tmp_path), "--", "-q",
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


VERDICTS = textwrap.dedent("""
    import pytest
    from marathon_product import NoVerdict

    def test_starved():
        raise NoVerdict("the host starved it")

    def test_echoes_a_timeout():  # what a product could print into a failure message
        pytest.fail("Timeout >1.0s")

    def test_fails():
        assert 1 == 2

    def test_passes():
        pass
""")


def _properties(report: Path) -> dict[str, dict[str, str]]:
    return {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
            for case in ET.parse(report).getroot().iter("testcase")}


def test_no_verdict_is_a_property_set_by_the_runner_never_read_from_messages(tmp_path):
    """NoVerdict becomes the JUnit property marathon_no_verdict; a failure whose message merely
    looks like a time-out does not (the per-check time limit is tested in the scorer image, by
    tests/test_scorer.py, which has pytest-timeout)."""
    (tmp_path / "test_logged.py").write_text(VERDICTS)
    assert _start(tmp_path, 1).wait(timeout=120) == 1
    props = _properties(tmp_path / "junit-0.xml")
    assert props["test_starved"] == {"marathon_no_verdict": "the host starved it"}
    assert props["test_echoes_a_timeout"] == props["test_fails"] == props["test_passes"] == {}


LINGER = textwrap.dedent("""
    import os, subprocess, time
    from pathlib import Path

    LOG = Path(os.environ["RUN_LOG"]).parent

    def test_1_leaves_a_daemon():
        uid = int(os.environ["MARATHON_PRODUCT_UID"])
        daemon = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[],
                                  start_new_session=True)
        (LOG / "daemon.pid").write_text(str(daemon.pid))

    def test_2_finds_it_gone():
        pid = int((LOG / "daemon.pid").read_text())
        time.sleep(0.05)
        state = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] if os.path.exists(f"/proc/{pid}") else "gone"
        assert state in ("gone", "Z"), state
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another uid: needs root")
def test_no_product_process_outlives_its_check(tmp_path):
    (tmp_path / "test_logged.py").write_text(LINGER)
    process = _start(tmp_path, 1, product_uid=2100)
    assert process.wait(timeout=120) == 0
