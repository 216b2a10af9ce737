"""Trials on Ray (benchmark.cluster) with real Ray nodes as separate processes on this machine and
real containers: the same tables as a local run, a worker node killed mid-run, a resume on Ray."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import agents_for_tests  # noqa: F401  (registers the test-chat agent)
from benchmark.cluster import LocalCluster
from benchmark.driver import resume_run, start_run
from benchmark.experiment import load_config
from benchmark.manifest import read_manifest
from conftest import ROOT, TINY, unique_run_id

pytestmark = pytest.mark.docker

KEYS = {
    "episodes": ["trial_id", "episode"],
    "attempts": ["trial_id", "episode", "attempt"],
    "checks": ["trial_id", "episode", "attempt", "gate", "check"],
}


def _keys(run: Path, table: str) -> pd.DataFrame:
    df = pd.read_parquet(run / f"{table}.parquet")
    cols = KEYS[table] + (["outcome"] if table == "checks" else ["score"])
    return df[cols].sort_values(KEYS[table]).reset_index(drop=True)


def _ray_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "ray start .*--block"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from benchmark.cli import main; main()", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of two worker nodes (one docker unit each), used at its address."""
    with LocalCluster(2, python_path=[Path(__file__).parent]) as c:  # test agents importable
        yield c


def test_local_ray_run_matches_a_local_run_and_stops_its_nodes(tmp_path: Path, images):
    """``--ray local:2`` beside the same run in local threads: same keys and verdicts, same
    artifacts and workspace archives; the throwaway cluster's processes are gone after."""
    before = _ray_processes()
    common = ["run", "--marathon", str(TINY), "--arm", "prompt-only", "--arm", "feedback-retry",
              "--agent", "oracle", "--agent", "nop", "--jobs", "2", "--out", str(tmp_path), "--no-progress"]
    on_ray = _cli(*common, "--run-id", "ray", "--ray", "local:2")
    local = _cli(*common, "--run-id", "local")
    out, err = on_ray.communicate(timeout=600)
    assert on_ray.returncode == 0, err
    assert local.wait(timeout=600) == 0, local.stderr.read()
    assert "starting a local Ray cluster of 2 worker node(s)" in err
    assert re.search(r"e1: score 100% after 1 attempt\(s\) on [0-9.]+/[0-9a-f]{8}", err)  # the node
    run = tmp_path / "ray"
    eps = pd.read_parquet(run / "episodes.parquet")
    assert len(eps) == 4 * 2
    assert (eps[eps.agent == "oracle"].score == 1.0).all() and (eps[eps.agent == "nop"].score == 0.0).all()
    for table in KEYS:
        got, want = _keys(run, table), _keys(tmp_path / "local", table)
        assert not got.duplicated(KEYS[table]).any()
        pd.testing.assert_frame_equal(got, want)
    files = lambda r: sorted(p.relative_to(r).as_posix() for p in r.rglob("*")  # noqa: E731
                             if p.is_file() and p.parts[len(r.parts)] in ("artifacts", "workspaces"))
    assert files(run) == files(tmp_path / "local")  # artifacts and workspace archives came back
    assert read_manifest(run).config.cluster.ray == "local:2"
    assert _ray_processes() == before  # the throwaway cluster's nodes are gone


def test_smoke_experiment_on_ray(tmp_path: Path, images, cluster):
    """The smoke experiment (every marathon, 2 episodes each) on a cluster given by its address."""
    config = load_config(Path(ROOT / "experiment-smoke.toml"), {
        "arms": ("prompt-only",), "replicates": 1, "episodes": 2, "out": tmp_path,
        "run_id": unique_run_id("ray-ledger"), "ray": cluster.address})
    outcome = start_run(config, display=False, console=Console(file=io.StringIO()))
    assert outcome.status == "complete"
    eps = pd.read_parquet(outcome.run_dir / "episodes.parquet")
    assert len(config.marathons) >= 2  # the smoke experiment covers every marathon
    assert len(eps) == len(config.marathons) * 2 * 2 and not eps.duplicated(KEYS["episodes"]).any()
    assert (eps[eps.agent == "oracle"].score == 1.0).all() and (eps[eps.agent == "nop"].score == 0.0).all()


def test_a_model_agent_on_ray_is_metered_by_its_nodes_proxy_like_a_local_run(tmp_path: Path, images,
                                                                              cluster):
    """A Chat Completions agent against scripted/oracle (a simulation) through its node's own
    proxy: the usage rows and the proxy's usage log equal those of a local run."""
    from benchmark.model_access import USAGE_LOG
    from benchmark.proxy import load_usage

    flags = {"marathon": str(TINY), "arms": ("prompt-only",), "agents": ("test-chat",),
             "models": ("scripted/oracle",), "out": tmp_path}
    quiet = Console(file=io.StringIO())
    local = start_run(load_config(None, {**flags, "run_id": unique_run_id("chat-local")}),
                      display=False, console=quiet)
    on_ray = start_run(load_config(None, {**flags, "run_id": unique_run_id("chat-ray"), "ray": cluster.address}),
                       display=False, console=quiet)
    assert local.status == on_ray.status == "complete", on_ray.failures
    cols = ["trial_id", "episode", "attempt", "call", "source", "method", "path", "http_status",
            "api_model", "input_tokens", "output_tokens", "cost_usd", "refused"]
    usage = [pd.read_parquet(o.run_dir / "usage.parquet")[cols].sort_values(cols[:4]).reset_index(drop=True)
             for o in (local, on_ray)]
    assert len(usage[1][usage[1].source == "proxy"]) == 4
    pd.testing.assert_frame_equal(usage[1], usage[0])
    attempts = pd.read_parquet(on_ray.run_dir / "attempts.parquet")
    assert set(attempts.reconciliation) == {"match"}
    logged = [[(r.trial_id, r.episode, r.attempt, r.protocol, r.request_model) for r in load_usage(o.run_dir / USAGE_LOG)]
              for o in (local, on_ray)]
    assert logged[1] == logged[0] and len(logged[1]) == 4


def test_a_node_killed_mid_run_loses_and_duplicates_no_row_and_the_run_resumes(tmp_path: Path, images,
                                                                               cluster):
    name = unique_run_id("ray-fault")
    run = tmp_path / name
    text = io.StringIO()
    # The module's cluster: this test kills one of its nodes, so it runs last.
    ray_config = load_config(None, {"marathon": str(TINY), "arms": ("feedback-retry",),
                                    "agents": ("oracle", "nop"), "out": tmp_path, "run_id": name,
                                    "ray": cluster.address})
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(
        start_run(ray_config, display=False, console=Console(file=text, width=200))))
    runner.start()
    deadline = time.monotonic() + 300
    while not list(run.glob("parts/episodes/*.parquet")):  # both nodes are mid-trial now
        assert runner.is_alive() and time.monotonic() < deadline, text.getvalue()
        time.sleep(0.05)
    cluster.kill_worker(0)
    runner.join(timeout=400)
    assert outcome and outcome[0].status == "complete", text.getvalue()
    assert "node lost" in text.getvalue()  # a trial did lose its node and restarted
    eps = pd.read_parquet(run / "episodes.parquet")
    assert len(eps) == 4 and not eps.duplicated(KEYS["episodes"]).any()
    assert (eps[eps.agent == "oracle"].score == 1.0).all() and (eps[eps.agent == "nop"].score == 0.0).all()
    retry_nop = eps[(eps.agent == "nop") & (eps.arm == "feedback-retry")]
    assert (retry_nop.attempts == 3).all()
    for table in KEYS:
        assert not _keys(run, table).duplicated(KEYS[table]).any()
    attempts = pd.read_parquet(run / "attempts.parquet")
    assert len(attempts) == eps.attempts.sum()
    full = {t: _keys(run, t) for t in KEYS}

    # Resume on Ray: the last episode of one trial is unfinished (its parts never written);
    # it is played again on the surviving node from the archived workspace of e1.
    trial = "feedback-retry.oracle.none.none.r1"
    for part in run.glob(f"parts/*/{trial}.e2.parquet"):
        part.unlink()
    again = resume_run(run, ray=cluster.address, display=False, console=Console(file=text, width=200))
    assert again.status == "complete", text.getvalue()
    for table in KEYS:
        pd.testing.assert_frame_equal(_keys(run, table), full[table])
    assert [s.resume for s in read_manifest(run).sessions] == [False, True]


def test_without_ray_nothing_imports_ray_and_a_bad_address_is_one_line(tmp_path: Path):
    code = ("import sys; from benchmark.cli import main; from benchmark.driver import make_backend; "
            "from benchmark.experiment import load_config; "
            "b = make_backend(load_config(None, {'marathon': 'ledger', 'arms': ('prompt-only',), "
            "'agents': ('oracle',)})); print(type(b).__name__, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["ThreadBackend", "False"], out.stderr
    bad = subprocess.run([sys.executable, "-c", "from benchmark.cli import main; main()", "run",
                          "--marathon", str(TINY), "--arm", "prompt-only", "--agent", "oracle",
                          "--out", str(tmp_path), "--ray", "local:0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "marathon: error: --ray: 'local:0': local:N takes 1 to 99 worker nodes"]
    assert list(tmp_path.iterdir()) == []


def test_a_node_without_the_marathon_unpacks_the_drivers_copy(tmp_path: Path):
    """No shared filesystem: a node that lacks the marathon's directory uses the bundle."""
    import shutil

    from benchmark.cluster import _marathon_bundle, node_marathon
    from benchmark.marathon import load_marathon

    here = tmp_path / "tiny"
    shutil.copytree(TINY, here)
    marathon = load_marathon(here)
    content_hash, bundle = marathon.content_hash(), _marathon_bundle(marathon)
    assert node_marathon(marathon, content_hash, bundle) is marathon  # same path, same hash
    shutil.rmtree(here)  # as on another machine
    moved = node_marathon(marathon, content_hash, bundle)
    try:
        assert moved.root != marathon.root and moved.content_hash() == content_hash
        assert moved.starter.is_dir() and moved.starter.is_relative_to(moved.root)
        assert all(e.brief.is_file() and e.reference.is_dir() for e in moved.episodes)
        assert moved.episode_ids == marathon.episode_ids
    finally:
        shutil.rmtree(moved.root.parent, ignore_errors=True)
