"""Faults a user meets, each performed for real: runs sharing a run id, racing for one run
directory, killed drivers, truncated and edited files, a disk that fills or turns read-only
mid-run, bad output paths, and a workspace that would exhaust the host (a 2 GiB sparse file).

Each bad case must end in one line on stderr naming the file or flag (no traceback) and the
documented exit status (README: 0 done, 1 failed trials or storage fault (resumable), 2 bad
input, 130 interrupted); each interrupted run must resume to complete tables.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.docker_env import client
from benchmark.manifest import read_manifest
from benchmark.rundir import NONCE_LABEL
from conftest import ROOT, TINY, run_cli, unique_run_id
from test_records import assert_files_match_doc

pytestmark = pytest.mark.docker

RUN = ["--marathon", str(TINY), "--arm", "prompt-only", "--no-progress"]
BOTH = ("--agent", "oracle", "--agent", "nop")
ORACLE = ("--agent", "oracle")


def start(out: Path, run_id: str, *extra: str) -> subprocess.Popen:
    """``marathon run`` of the tiny marathon (2 episodes; agents and more flags in ``extra``)
    in the background."""
    return subprocess.Popen(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "run", *RUN,
         "--out", str(out), "--run-id", run_id, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pattern: str, base: Path, proc: subprocess.Popen, n: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(base.glob(pattern))) < n:
        assert proc.poll() is None, f"driver ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "driver made no progress"
        time.sleep(0.05)


def error_line(stderr: str) -> str:
    """The one ``marathon: error:`` line of a command's stderr (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("marathon: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def complete_tables(run: Path, trials: int = 2, episodes: int = 2) -> None:
    t = pd.read_parquet(run / "trials.parquet")
    assert len(t) == trials and set(t.status) == {"complete"}, t
    eps = pd.read_parquet(run / "episodes.parquet")
    assert len(eps) == trials * episodes and not eps.duplicated(["trial_id", "episode"]).any()
    assert_files_match_doc(run)


def containers_of(nonce: str) -> list:
    return client().containers.list(all=True, filters={"label": f"{NONCE_LABEL}={nonce}"})


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A complete run of the tiny marathon, one episode (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished")
    run_id = unique_run_id("done")
    proc = run_cli("run", *RUN, *BOTH, "--episodes", "1", "--out", str(out), "--run-id", run_id)
    assert proc.returncode == 0, proc.stderr
    return out / run_id


def copy_of(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


# -- runs never touch each other -------------------------------------------------------------

def test_two_runs_with_one_run_id_in_two_directories_both_complete(tmp_path: Path):
    run_id = unique_run_id("same")
    a, b = (start(tmp_path / d, run_id, *BOTH, "--episodes", "1", "--jobs", "2") for d in "ab")
    out_a, out_b = a.communicate(timeout=300), b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (out_a[1], out_b[1])
    runs = [tmp_path / "a" / run_id, tmp_path / "b" / run_id]
    for run in runs:
        complete_tables(run, episodes=1)
    nonces = {read_manifest(run).nonce for run in runs}
    assert len(nonces) == 2 and None not in nonces
    assert all(containers_of(n) == [] for n in nonces)


def test_two_runs_racing_for_one_run_directory(tmp_path: Path):
    run_id = unique_run_id("race")
    a, b = (start(tmp_path, run_id, *ORACLE, "--episodes", "1") for _ in "ab")
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert sorted([a.returncode, b.returncode]) == [0, 2], (err_a, err_b)
    loser = err_a if a.returncode == 2 else err_b
    assert "--run-id: run directory" in error_line(loser) and "already exists" in loser
    complete_tables(tmp_path / run_id, trials=1, episodes=1)


# -- one line, named file or flag, for bad files and paths --------------------------------------

def test_resume_with_a_truncated_part_is_one_line(finished: Path, tmp_path: Path):
    run = copy_of(finished, tmp_path)
    part = next((run / "parts" / "episodes").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    proc = run_cli("run", "--resume", str(run))
    assert proc.returncode == 2
    assert f"{part}: unreadable part of a finished episode" in error_line(proc.stderr)


def test_status_and_report_of_a_truncated_table_are_one_line(finished: Path, tmp_path: Path):
    run = copy_of(finished, tmp_path)
    table = run / "trials.parquet"
    table.write_bytes(table.read_bytes()[:50])
    for args in (["status", str(run)], ["report", str(run), "--out", str(tmp_path / "rep")]):
        proc = run_cli(*args)
        assert proc.returncode == 2
        assert f"{table}: unreadable Parquet table" in error_line(proc.stderr)
    # the parts are intact: a resume rebuilds the table
    assert run_cli("run", "--resume", str(run)).returncode == 0
    assert run_cli("status", str(run)).returncode == 0


def test_report_out_naming_a_file_is_one_line(finished: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli("report", str(finished), "--out", str(blocker))
    assert proc.returncode == 2 and f"--out: {blocker} is not a directory" in error_line(proc.stderr)
    assert blocker.read_text() == "x"


def test_out_under_proc_is_one_line():
    proc = run_cli("run", *RUN, *ORACLE, "--out", "/proc/marathon-nowhere")
    assert proc.returncode == 2
    assert "--out: cannot create /proc/marathon-nowhere/" in error_line(proc.stderr)


def test_resume_refuses_an_edited_plan(finished: Path, tmp_path: Path):
    run = copy_of(finished, tmp_path)
    manifest = run / "manifest.json"
    original = manifest.read_text()
    for change, expected in [({"episodes": 2}, "episodes (e1 -> e1, e2)"),
                             ({"time_limit_s": 5.0}, "config (the manifest's recorded config was changed)")]:
        data = json.loads(original)
        data["config"].update(change)
        manifest.write_text(json.dumps(data))
        proc = run_cli("run", "--resume", str(run))
        assert proc.returncode == 2
        line = error_line(proc.stderr)
        assert "the run's plan differs from the one it started with" in line and expected in line, line
    assert len(pd.read_parquet(run / "episodes.parquet")) == 2  # nothing was played
    status = run_cli("status", str(run))
    assert "1/1" in status.stdout and "2/1" not in status.stdout


# -- a killed run: dead, not running; its litter goes on resume -----------------------------------

def test_a_killed_run_is_dead_and_its_resume_removes_its_litter(tmp_path: Path):
    run = tmp_path / unique_run_id("killed")
    proc = start(tmp_path, run.name, *ORACLE)
    wait_for("parts/episodes/*.parquet", run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    nonce = read_manifest(run).nonce
    assert list(Path("/tmp").glob(f"marathon-{nonce}-*")), "the killed session's host temp dir"
    (run / "parts" / "episodes" / ".x.parquet.1.2.tmp").write_bytes(b"torn")  # an interrupted write

    status = run_cli("status", str(run))
    assert status.returncode == 0 and f"{run.name}: dead" in status.stdout
    assert f"resume with: marathon run --resume {run}" in status.stdout
    report = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert "run dead; resume with: marathon run --resume" in (tmp_path / "report" / "report.md").read_text()

    # a live driver holds the lock: the run is running, and a second driver is refused
    holder = subprocess.Popen(["flock", "--close", str(run / ".lock"), "sleep", "30"])
    try:
        time.sleep(0.5)
        assert f"{run.name}: running" in run_cli("status", str(run)).stdout
        busy = run_cli("run", "--resume", str(run))
        assert busy.returncode == 2 and "another driver is working on this run" in error_line(busy.stderr)
    finally:
        holder.kill()
        holder.wait()

    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    complete_tables(run, trials=1)
    assert not list(run.rglob("*.tmp")) and not (run / ".space-reserve").exists()
    assert not list(Path("/tmp").glob(f"marathon-{nonce}-*"))
    assert containers_of(nonce) == []
    assert f"{run.name}: complete" in run_cli("status", str(run)).stdout


# -- the run directory fills up or turns read-only mid-run ----------------------------------------

@pytest.fixture
def small_fs(tmp_path: Path):
    """A 16 MB tmpfs mounted at ``tmp_path/fs`` (skipped where mounting is not allowed)."""
    fs = tmp_path / "fs"
    fs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fs)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield fs
    subprocess.run(["umount", "-l", str(fs)], check=False)


def fill(fs: Path) -> Path:
    """Fill the file system with one file; return it."""
    filler = fs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_the_run_and_resume_completes(small_fs: Path):
    run = small_fs / unique_run_id("full")
    proc = start(small_fs, run.name, *ORACLE)
    wait_for("parts/episodes/*.parquet", run, proc)
    filler = fill(small_fs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    line = error_line(err)
    assert "storage fault:" in line and "No space left on device" in line and str(run) in line
    m = read_manifest(run)
    assert m.status == "failed" and "No space left on device" in m.reason
    assert "No space left on device" in (run / "errors.log").read_text()
    status = run_cli("status", str(run))
    assert f"{run.name}: failed (storage fault:" in status.stdout and "resume with:" in status.stdout

    filler.unlink()
    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    complete_tables(run, trials=1)
    assert not list(run.rglob("*.tmp"))


def test_a_read_only_run_directory_stops_the_run_and_resume_completes(small_fs: Path):
    run = small_fs / unique_run_id("ro")
    proc = start(small_fs, run.name, *ORACLE)
    wait_for("parts/episodes/*.parquet", run, proc)
    for _ in range(100):  # refused ("busy") while a file is open for writing: retry
        if subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("could not remount the run's file system read-only")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    line = error_line(err)
    assert "Read-only file system" in line and "the manifest could not be updated" in line
    assert f"{run.name}: dead" in run_cli("status", str(run)).stdout  # the manifest still says running

    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    complete_tables(run, trials=1)


# -- a hostile workspace cannot exhaust the host ------------------------------------------------

_MEASURED_RUN = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, "tests")
import agents_for_tests  # registers test-sparse
import pyarrow.parquet, pandas  # imported before the baseline: not the run's growth
from rich.console import Console
from benchmark.driver import start_run
from benchmark.experiment import load_config
from benchmark.images import build_images

def hwm_kib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))

build_images(agent=True)
before = hwm_kib()
config = load_config(None, {"marathon": "tests/fixtures/tiny", "arms": ["prompt-only"],
                            "agents": ["test-sparse"], "episodes": 1, "out": Path(sys.argv[1]),
                            "run_id": sys.argv[2]})
outcome = start_run(config, display=False, console=Console(file=open(os.devnull, "w")))
print(json.dumps({"status": outcome.status, "grew_mib": (hwm_kib() - before) / 1024}))
"""


def test_a_2_gib_sparse_workspace_fails_its_attempt_and_driver_memory_stays_bounded(tmp_path: Path):
    run_id = unique_run_id("sparse")
    proc = subprocess.run([sys.executable, "-c", _MEASURED_RUN, str(tmp_path), run_id], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["status"] == "complete"
    assert result["grew_mib"] < 100, result  # reading the archive into memory took 4 GiB
    run = tmp_path / run_id
    checks = pd.read_parquet(run / "checks.parquet")
    assert len(checks) > 0 and set(checks.outcome) == {"failed"}
    assert checks.message.str.contains("workspace not scored: workspace over the archive limit of "
                                       "256.0 MiB").all()
    assert checks.message.str.contains("big.bin 2.0 GiB").all()
    assert (pd.read_parquet(run / "episodes.parquet").score == 0.0).all()
    # the workspace is kept for a resume as its history alone, within the limits
    kept = run / "workspaces" / "prompt-only.test-sparse.none.none.r1"
    assert [p.name for p in kept.iterdir()] == ["e1.git.tar"]
    assert kept.joinpath("e1.git.tar").stat().st_size < 16 * 2**20
