"""The driver end to end on the tiny marathon, with real containers: scores, retries, timeouts,
records, crash-safe resume after SIGKILL, clean stop on SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import agents_for_tests  # noqa: F401  (registers the test-sleep agent)
from benchmark.docker_env import LABEL, client
from benchmark.driver import start_run
from benchmark.experiment import load_config
from benchmark.manifest import read_manifest
from conftest import ROOT, TINY, run_cli, unique_run_id

pytestmark = pytest.mark.docker

QUIET = Console(file=open(os.devnull, "w"))


def config(out: Path, run_id: str, **over):
    base = {"marathon": str(TINY), "arms": ("prompt-only", "feedback-retry"), "agents": ("oracle", "nop"),
            "replicates": 1, "jobs": 2, "out": out, "run_id": run_id}
    return load_config(None, {**base, **over})


def leftovers(run_id: str) -> list:
    return client().containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})


def test_oracle_scores_full_nop_scores_zero_with_retries(tmp_path: Path):
    outcome = start_run(config(tmp_path, "run-a"), display=False, console=QUIET)
    run = tmp_path / "run-a"
    assert outcome.status == "complete" and outcome.trials_complete == outcome.trials_total == 4

    eps = pd.read_parquet(run / "episodes.parquet")
    assert len(eps) == 4 * 2
    assert (eps[eps.agent == "oracle"].score == 1.0).all()
    assert (eps[eps.agent == "nop"].score == 0.0).all()
    retry_nop = eps[(eps.agent == "nop") & (eps.arm == "feedback-retry")]
    assert (retry_nop.attempts == 3).all() and (retry_nop.recovery_attempts == 2).all()
    assert (eps[eps.arm == "prompt-only"].attempts == 1).all()
    assert (eps[(eps.agent == "oracle")].attempts == 1).all()  # green at once: no retry
    assert list(eps.sort_values(["trial_id", "episode_index"]).gates_active[:2]) == [1, 2]

    attempts = pd.read_parquet(run / "attempts.parquet")
    assert len(attempts) == eps.attempts.sum()
    assert set(attempts.outcome) == {"ok"}
    checks = pd.read_parquet(run / "checks.parquet")
    assert len(checks) == sum(3 * (1 if e == "e1" else 2) for e in attempts.episode)
    assert not checks.duplicated(["trial_id", "episode", "attempt", "gate", "check"]).any()
    assert len(pd.read_parquet(run / "usage.parquet")) == 0
    trials = pd.read_parquet(run / "trials.parquet")
    assert set(trials.status) == {"complete"}
    assert len(set(trials.seed)) == 1  # one replicate: every arm and agent shares the seed

    # artifacts of a recovery attempt: the re-prompt names failing gates, never their source
    art = run / "artifacts" / "feedback-retry.nop.none.none.r1" / "e2" / "2"
    prompt = (art / "prompt.md").read_text()
    assert "gate `greet`" in prompt and "gate `count`" in prompt and "def test_" not in prompt
    assert json.loads((art / "score.json").read_text())["gates"] == {"greet": False, "count": False}
    oracle_diff = (run / "artifacts" / "prompt-only.oracle.none.none.r1" / "e2" / "1" / "workspace.diff").read_text()
    assert '+if len(sys.argv) >= 2 and sys.argv[1] == "count":' in oracle_diff
    assert (run / "workspaces" / "prompt-only.oracle.none.none.r1" / "e2.tar").is_file()

    m = read_manifest(run)
    assert m.status == "complete" and m.marathon == "tiny" and len(m.marathon_hash) == 64
    assert set(m.arm_hashes) == {"prompt-only", "feedback-retry"} and m.images.agent in m.images.ids
    assert m.agent_cli_versions == {} and m.images.agents == {} and not m.simulated  # no declared agent
    assert m.sessions[0].host.docker_server_version and m.sessions[0].ended_at is not None
    assert leftovers("run-a") == []

    status = run_cli("status", str(run))
    assert status.returncode == 0 and "4/4 trials complete" in status.stdout


def test_a_chat_completions_agent_plays_through_its_own_socket_and_usage_reconciles(tmp_path: Path):
    """A real (minimal) Chat Completions agent in the container, through the driver, the
    trial's own proxy socket and the proxy, against scripted/oracle (a simulation)."""
    from benchmark.model_access import USAGE_LOG, socket_dir_prefix
    from benchmark.proxy import load_usage

    outcome = start_run(config(tmp_path, "run-chat", arms=("prompt-only",), agents=("test-chat",),
                               models=("scripted/oracle",)), display=False, console=QUIET)
    run = tmp_path / "run-chat"
    assert outcome.status == "complete", outcome.failures
    eps = pd.read_parquet(run / "episodes.parquet")
    assert list(eps.score) == [1.0, 1.0]
    attempts = pd.read_parquet(run / "attempts.parquet")
    assert set(attempts.outcome) == {"ok"} and set(attempts.reconciliation) == {"match"}
    usage = pd.read_parquet(run / "usage.parquet")
    proxy = usage[usage.source == "proxy"]
    assert len(proxy) == 4  # per episode: the tool call, then the final text
    assert set(proxy.path) == {"/v1/chat/completions"} and set(proxy.method) == {"POST"}
    assert set(proxy.http_status) == {200} and not proxy.refused.any() and not proxy.usage_missing.any()
    assert (proxy.input_tokens > 0).all() and (proxy.cost_usd == 0.0).all()
    logged = load_usage(run / USAGE_LOG)
    assert [r.protocol for r in logged] == ["openai-chat"] * 4
    assert not any(r.include_usage_added for r in logged)  # the agent asked for usage itself
    nonce = read_manifest(run).nonce
    assert not list(Path("/tmp").glob(f"{socket_dir_prefix(nonce)}*"))  # sockets removed
    assert leftovers("run-chat") == []


def test_agent_over_its_time_limit_is_killed_and_the_trial_goes_on(tmp_path: Path):
    outcome = start_run(config(tmp_path, "run-t", arms=("prompt-only",), agents=("test-sleep",),
                               time_limit_s=2.0), display=False, console=QUIET)
    assert outcome.status == "complete"
    attempts = pd.read_parquet(tmp_path / "run-t" / "attempts.parquet")
    assert list(attempts.episode) == ["e1", "e2"]
    assert set(attempts.outcome) == {"timeout"}
    assert (attempts.duration_s >= 2.0).all() and (attempts.duration_s < 20).all()
    assert "2 s time limit" in attempts.error[0]
    art = tmp_path / "run-t" / "artifacts" / "prompt-only.test-sleep.none.none.r1" / "e1" / "1"
    assert (art / "transcript").read_text().startswith("started")
    assert "slept.txt" in (art / "workspace.diff").read_text()  # work done before the kill is kept


def test_a_failing_trial_does_not_stop_the_others(tmp_path: Path):
    outcome = start_run(config(tmp_path, "run-f", arms=("prompt-only",), agents=("oracle", "test-crash")),
                        display=False, console=QUIET)
    assert outcome.status == "failed" and outcome.trials_complete == 1
    assert outcome.failures == ["prompt-only.test-crash.none.none.r1: agent crashed on purpose"]
    assert "RuntimeError: agent crashed on purpose" in (tmp_path / "run-f" / "errors.log").read_text()
    trials = pd.read_parquet(tmp_path / "run-f" / "trials.parquet").set_index("agent")
    assert trials.loc["oracle", "status"] == "complete" and trials.loc["test-crash", "status"] == "incomplete"
    assert read_manifest(tmp_path / "run-f").status == "failed"
    assert leftovers("run-f") == []


KEYS = {
    "episodes": ["trial_id", "episode"],
    "attempts": ["trial_id", "episode", "attempt"],
    "checks": ["trial_id", "episode", "attempt", "gate", "check"],
}


def _keys(run: Path, table: str) -> pd.DataFrame:
    df = pd.read_parquet(run / f"{table}.parquet")
    cols = KEYS[table] + (["outcome"] if table == "checks" else ["score"])
    return df[cols].sort_values(KEYS[table]).reset_index(drop=True)


def _start(out: Path, run_id: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "run", "--marathon", str(TINY),
         "--arm", "prompt-only", "--arm", "feedback-retry", "--agent", "oracle", "--agent", "nop",
         "--jobs", "2", "--out", str(out), "--run-id", run_id, "--no-progress", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path_glob: str, base: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(base.glob(path_glob))) < n:
        assert proc.poll() is None, f"driver ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "driver made no progress"
        time.sleep(0.05)


def test_sigkilled_run_resumes_without_missing_or_duplicated_rows(tmp_path: Path):
    name = unique_run_id("killed")
    full = _start(tmp_path, "full")
    killed = _start(tmp_path, name)
    _wait_for("parts/episodes/*.parquet", tmp_path / name, 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert full.wait(timeout=300) == 0, full.stderr.read()

    run = tmp_path / name
    done_before = len(list(run.glob("parts/episodes/*.parquet")))
    assert 2 <= done_before < 8
    assert leftovers(name), "a SIGKILLed driver leaves its containers behind"
    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert leftovers(name) == []  # trial and scoring containers of both sessions

    for table in KEYS:
        got, want = _keys(run, table), _keys(tmp_path / "full", table)
        assert not got.duplicated(KEYS[table]).any()
        pd.testing.assert_frame_equal(got, want)
    m = read_manifest(run)
    assert [s.resume for s in m.sessions] == [False, True] and m.status == "complete"
    assert m.sessions[0].status == "running" and m.sessions[1].leftovers_removed >= 1


def test_sigint_stops_cleanly_and_the_run_resumes(tmp_path: Path):
    name = unique_run_id("stopped")
    proc = _start(tmp_path, name, "--arm", "skill-only")
    run = tmp_path / name
    _wait_for("artifacts/*/e1/1/score.json", run, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: marathon run --resume" in err
    assert leftovers(name) == []
    assert not client().networks.list(filters={"label": f"{LABEL}={name}"})
    m = read_manifest(run)
    assert m.status == "interrupted" and m.sessions[0].ended_at is not None
    before = _keys(run, "attempts")

    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    after = _keys(run, "attempts")
    assert not after.duplicated(KEYS["attempts"]).any()
    assert len(pd.read_parquet(run / "episodes.parquet")) == 6 * 2
    merged = before.merge(after, on=KEYS["attempts"], suffixes=("_before", "_after"))
    assert len(merged) == len(before)  # nothing recorded before the stop was lost
