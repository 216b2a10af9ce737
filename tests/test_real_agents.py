"""The real agent CLIs through the driver (``start_run``), each trial's container reaching only
the metering proxy, against the scripted model (a simulation of a model, not a model):

- Claude Code + ``scripted/forgetful`` on the ledger marathon: the feedback-retry arm recovers
  from every trap and ends at 100%, the prompt-only arm does not; every attempt's proxy and agent
  usage reconcile; usage rows of both sources are recorded.
- Codex + ``scripted/oracle`` for one episode (``episodes = 1``), recorded as such.
- Claude Code against an upstream answering 529: the attempt is an ``agent_error``, every 529 is
  metered, and the trial goes on to completion.
- mini-swe-agent (PyPI) and Qwen Code (npm), both OpenAI Chat Completions, + ``scripted/forgetful``
  for the first two episodes: feedback-retry recovers to 100%, prompt-only does not; every
  attempt reconciles.
- The example runtime ``retry-runtime`` (Claude Code + ``marathon-check``) on the
  ``external-runtime`` arm for two episodes: its self-checks catch the trap, it repairs inside
  the attempt and ends at 100%, with rows in ``self_checks.parquet``.
- A SIGKILLed run with Claude Code resumes: new proxy and token, a new CLI session, no row lost
  or duplicated, usage still reconciled.
"""

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

from benchmark.agents.spec import load_agent_spec
from benchmark.driver import start_run
from benchmark.experiment import load_config
from benchmark.manifest import read_manifest
from benchmark.docker_env import LABEL, client
from benchmark.model_access import SIMULATION, USAGE_LOG, socket_dir_prefix
from benchmark.proxy import load_usage
from conftest import ROOT, run_cli

pytestmark = pytest.mark.docker

QUIET = Console(file=open(os.devnull, "w"))


def run(tmp_path: Path, run_id: str, **over):
    flags = {"marathon": "ledger", "replicates": 1, "jobs": 2, "out": tmp_path, "run_id": run_id,
             "time_limit_s": 300, **over}
    outcome = start_run(load_config(None, flags), display=False, console=QUIET)
    assert outcome.status == "complete", outcome.failures
    return tmp_path / run_id


def tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(run_dir / f"{t}.parquet")
            for t in ("trials", "episodes", "attempts", "usage")}


def assert_usage_audited(run_dir: Path, t: dict[str, pd.DataFrame]) -> None:
    """One proxy row per model request, agent rows for every attempt, and the proxy's own log
    holding exactly the recorded proxy rows."""
    usage, attempts = t["usage"], t["attempts"]
    keys = ["trial_id", "episode", "attempt"]
    proxy = usage[usage.source == "proxy"].groupby(keys).size()
    agent = usage[usage.source == "agent"].groupby(keys).size()
    for _, a in attempts.iterrows():
        key = (a.trial_id, a.episode, a.attempt)
        assert proxy.get(key, 0) == a.proxy_calls >= 1, key
        assert agent.get(key, 0) >= 1, key
    logged = load_usage(run_dir / USAGE_LOG)
    assert len(logged) == (usage.source == "proxy").sum()
    assert {(r.trial_id, r.episode, r.attempt) for r in logged} == set(proxy.index)


def test_claude_code_forgetful_recovering_arms_reach_100_the_others_do_not(tmp_path):
    """The four arms through the real Claude Code CLI against the scripted trap-falling model:
    the regressions survive prompt-only and skill-only; feedback-retry and governed-runtime
    recover, and their recovery attempts are in the records."""
    run_dir = run(tmp_path, "cc-forgetful",
                  arms=("prompt-only", "skill-only", "feedback-retry", "governed-runtime"),
                  agents=("claude-code",), models=("scripted/forgetful",))
    t = tables(run_dir)
    trials = t["trials"].set_index("arm")
    assert (trials.status == "complete").all()
    for arm in ("feedback-retry", "governed-runtime"):
        assert trials.loc[arm, "final_score"] == 1.0, arm
        assert trials.loc[arm, "recovery_attempts"] > 0, arm
    for arm in ("prompt-only", "skill-only"):
        assert trials.loc[arm, "final_score"] < 1.0, arm
        assert trials.loc[arm, "recovery_attempts"] == 0, arm
    episodes = t["episodes"]
    assert episodes.groupby("arm").recovery_attempts.sum().to_dict() == \
        trials.recovery_attempts.to_dict()

    attempts = t["attempts"]
    assert set(attempts.outcome) == {"ok"}, attempts[attempts.outcome != "ok"].error.tolist()
    assert set(attempts.reconciliation) == {"match"}, attempts.reconciliation_diff.tolist()
    assert set(attempts.reconciliation_diff) == {""}
    assert (attempts.cost_usd == 0.0).all()  # scripted/* is priced at 0 (a simulation)
    # the recovery attempts are the re-prompts naming the gate the trap broke
    retry = attempts[(attempts.arm == "feedback-retry") & attempts.recovery]
    assert len(retry) == trials.loc["feedback-retry", "recovery_attempts"]
    for art in retry.artifacts:
        assert "gate `privacy`" in (run_dir / art / "prompt.md").read_text()
        assert json.loads((run_dir / art / "usage-reconciliation.json").read_text())["verdict"] == "match"

    usage = t["usage"]
    assert set(usage.source) == {"proxy", "agent"}
    assert set(usage[usage.source == "proxy"].http_status) == {200}
    assert (usage.model == "scripted/forgetful").all()
    assert_usage_audited(run_dir, t)

    m = read_manifest(run_dir)
    assert m.simulated and m.simulated_models == ["scripted/forgetful"]
    assert m.model_upstreams == {"scripted/forgetful": SIMULATION}
    assert m.agent_cli_versions == {"claude-code": load_agent_spec("claude-code").version}
    assert m.images.agents == {"claude-code": m.images.for_agent("claude-code")}
    assert m.agent_hashes == {"claude-code": load_agent_spec("claude-code").config_hash()}
    assert m.episodes == ["e1", "e2", "e3", "e4"] and m.config.episodes is None


def test_codex_forgetful_recovers_the_trapped_episode_with_feedback_retry_only(tmp_path):
    """The Codex CLI, through the proxy, against the trap-falling simulation, for the first two
    episodes (E2 holds the first trap): feedback-retry recovers, prompt-only does not."""
    run_dir = run(tmp_path, "codex-forgetful", arms=("prompt-only", "feedback-retry"),
                  agents=("codex",), models=("scripted/forgetful",), episodes=2)
    t = tables(run_dir)
    trials = t["trials"].set_index("arm")
    assert (trials.episodes_done == 2).all()
    assert trials.loc["feedback-retry", "final_score"] == 1.0
    assert trials.loc["feedback-retry", "recovery_attempts"] > 0
    assert trials.loc["prompt-only", "final_score"] < 1.0
    attempts = t["attempts"]
    assert set(attempts.outcome) == {"ok"}, attempts[attempts.outcome != "ok"].error.tolist()
    assert set(attempts.reconciliation) == {"match"}, attempts.reconciliation_diff.tolist()
    assert_usage_audited(run_dir, t)


@pytest.mark.parametrize("agent", ["mini-swe-agent", "qwen-code"])
def test_chat_completions_agents_forgetful_recover_with_feedback_retry_only(tmp_path, agent):
    """The two declared Chat Completions agents, through the proxy, against the trap-falling
    simulation, for the first two episodes (E2 holds the first trap)."""
    run_dir = run(tmp_path, f"{agent}-forgetful", arms=("prompt-only", "feedback-retry"),
                  agents=(agent,), models=("scripted/forgetful",), episodes=2)
    t = tables(run_dir)
    trials = t["trials"].set_index("arm")
    assert (trials.episodes_done == 2).all()
    assert trials.loc["feedback-retry", "final_score"] == 1.0
    assert trials.loc["feedback-retry", "recovery_attempts"] > 0
    assert trials.loc["prompt-only", "final_score"] < 1.0
    attempts = t["attempts"]
    assert set(attempts.outcome) == {"ok"}, attempts[attempts.outcome != "ok"].error.tolist()
    assert set(attempts.reconciliation) == {"match"}, attempts.reconciliation_diff.tolist()
    assert_usage_audited(run_dir, t)
    proxy = t["usage"][t["usage"].source == "proxy"]
    assert set(proxy.path) == {"/v1/chat/completions"} and set(proxy.http_status) == {200}
    m = read_manifest(run_dir)
    assert m.agent_cli_versions == {agent: load_agent_spec(agent).version}


def test_the_example_runtime_self_checks_and_recovers_inside_its_attempt(tmp_path):
    run_dir = run(tmp_path, "runtime", arms=("external-runtime",), agents=("retry-runtime",),
                  models=("scripted/forgetful",), episodes=2)
    t = tables(run_dir)
    (trial,) = t["trials"].itertuples()
    assert (trial.final_score, trial.recovery_attempts) == (1.0, 0)  # one attempt per episode
    checks = pd.read_parquet(run_dir / "self_checks.parquet")
    e2 = checks[checks.episode == "e2"]
    assert list(e2.status) == ["red", "green"]  # the trap caught, repaired, checked again
    assert "gate `privacy`" in e2.shown.iloc[0]
    assert trial.self_checks == len(checks) and trial.self_check_recoveries == 1
    attempts = t["attempts"]
    assert set(attempts.reconciliation) == {"match"}, attempts.reconciliation_diff.tolist()
    assert_usage_audited(run_dir, t)


def test_codex_oracle_plays_one_episode_recorded_as_such(tmp_path):
    run_dir = run(tmp_path, "codex-one", arms=("prompt-only",), agents=("codex",),
                  models=("scripted/oracle",), episodes=1)
    t = tables(run_dir)
    (trial,) = t["trials"].itertuples()
    assert (trial.status, trial.episodes_planned, trial.episodes_done, trial.final_score) == \
        ("complete", 1, 1, 1.0)
    (attempt,) = t["attempts"].itertuples()
    assert (attempt.episode, attempt.outcome, attempt.reconciliation) == ("e1", "ok", "match")
    assert_usage_audited(run_dir, t)
    m = read_manifest(run_dir)
    assert m.episodes == ["e1"] and m.config.episodes == 1 and m.simulated
    command = json.loads((run_dir / attempt.artifacts / "command.json").read_text())
    assert command["env"] == {"OPENAI_API_KEY": "<per-trial token>"}


def test_an_overloaded_upstream_is_recorded_and_the_trial_goes_on(tmp_path):
    run_dir = run(tmp_path, "cc-529", arms=("prompt-only",), agents=("claude-code",),
                  models=("scripted/overloaded",), episodes=2, time_limit_s=120)
    t = tables(run_dir)
    (trial,) = t["trials"].itertuples()
    assert trial.status == "complete" and trial.episodes_done == 2 and trial.final_score < 1.0
    attempts = t["attempts"]
    assert set(attempts.outcome) == {"agent_error"}
    assert all("529" in e for e in attempts.error)
    assert set(attempts.reconciliation) <= {"match", "no_agent_usage"}
    proxy = t["usage"][t["usage"].source == "proxy"]
    assert len(proxy) >= 2 * len(attempts)  # the CLI's retries are metered too
    assert set(proxy.http_status) == {529} and (proxy.input_tokens == 0).all()


def test_a_sigkilled_run_with_a_model_agent_resumes(tmp_path):
    run_id = "cc-resume"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "run", "--marathon", "ledger",
         "--arm", "feedback-retry", "--agent", "claude-code", "--model", "scripted/forgetful",
         "--episodes", "2", "--jobs", "1", "--out", str(tmp_path), "--run-id", run_id,
         "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / run_id
    deadline = time.monotonic() + 240
    while not list(run_dir.glob("artifacts/*/e2/1/prompt.md")):  # e1 recorded, e2 under way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the driver made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    nonce = read_manifest(run_dir).nonce
    assert list(Path("/tmp").glob(f"{socket_dir_prefix(nonce)}*"))  # the dead session's socket

    resumed = run_cli("run", "--resume", str(run_dir), "--no-progress", timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    assert not client().containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})
    assert not list(Path("/tmp").glob(f"marathon-{nonce}-*"))  # socket, archives, scorer reports
    t = tables(run_dir)
    (trial,) = t["trials"].itertuples()
    assert (trial.status, trial.episodes_done, trial.final_score) == ("complete", 2, 1.0)
    attempts = t["attempts"]
    assert not attempts.duplicated(["trial_id", "episode", "attempt"]).any()
    assert list(attempts.episode) == ["e1", "e2", "e2"]  # e2: the trap, then the repair
    assert set(attempts.reconciliation) == {"match"}
    usage = t["usage"]
    assert not usage.duplicated(["trial_id", "episode", "attempt", "call"]).any()
    assert set(usage.source) == {"proxy", "agent"}
    # the proxy's log holds both sessions' requests, the dead session's e2 request included
    logged = load_usage(run_dir / USAGE_LOG)
    assert len(logged) >= (usage.source == "proxy").sum()
    m = read_manifest(run_dir)
    assert [s.resume for s in m.sessions] == [False, True] and m.status == "complete"
