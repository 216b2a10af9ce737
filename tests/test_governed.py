"""The governed controller end to end on the tiny marathon, with real containers: recovery
attempts up to the limit, regressions found and repaired, rollback to the last all-green commit,
budgets, the capsule and the evidence ledger, and a SIGKILL in the middle of a retry loop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import agents_for_tests  # noqa: F401  (registers test-regress, test-stubborn, test-metered)
from benchmark.capsule import Capsule, capsule_path
from benchmark.driver import start_run
from benchmark.evidence import evidence_path, read_evidence
from benchmark.experiment import load_config
from benchmark.paths import ARMS_DIR
from conftest import ROOT, TINY, run_cli
from test_driver import _wait_for, leftovers

pytestmark = pytest.mark.docker

QUIET = Console(file=open(os.devnull, "w"))
GOV = "governed-runtime.{agent}.none.none.r1"


def _config(out: Path, run_id: str, **over):
    base = {"marathon": str(TINY), "arms": ("governed-runtime",), "agents": ("nop",),
            "replicates": 1, "jobs": 2, "out": out, "run_id": run_id}
    return load_config(None, {**base, **over})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One run: governed-runtime and feedback-retry x nop, test-regress, test-stubborn."""
    out = tmp_path_factory.mktemp("governed")
    outcome = start_run(_config(out, "gov", arms=("governed-runtime", "feedback-retry"),
                                agents=("nop", "test-regress", "test-stubborn")),
                        display=False, console=QUIET)
    assert outcome.status == "complete", outcome.failures
    return out / "gov"


def _episodes(run: Path, arm: str, agent: str) -> pd.DataFrame:
    eps = pd.read_parquet(run / "episodes.parquet")
    return eps[(eps.arm == arm) & (eps.agent == agent)].sort_values("episode_index")


def _decisions(run: Path, trial: str, episode: str) -> list[str]:
    att = pd.read_parquet(run / "attempts.parquet")
    att = att[(att.trial_id == trial) & (att.episode == episode)].sort_values("attempt")
    return list(att.decision)


def _events(run: Path, trial: str):
    events = read_evidence(evidence_path(run, trial))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # continuous, no duplicates
    return events


def test_nop_makes_recovery_attempts_up_to_the_limit_and_records_decisions(run: Path):
    eps = _episodes(run, "governed-runtime", "nop")
    assert list(eps.attempts) == [3, 3] and list(eps.recovery_attempts) == [2, 2]
    assert list(eps.rollbacks) == [0, 0] and list(eps.decision) == ["stop_attempts"] * 2
    assert list(eps.score) == [0.0, 0.0]
    trial = GOV.format(agent="nop")
    for ep in ("e1", "e2"):
        assert _decisions(run, trial, ep) == ["repair", "repair", "stop_attempts"]
    events = _events(run, trial)
    rules = [(e.episode, e.attempt, e.action, e.rule) for e in events if e.kind == "decision"]
    assert rules == [(ep, n, a, r) for ep in ("e1", "e2")
                     for n, a, r in ((1, "repair", "R5"), (2, "repair", "R5"), (3, "stop_attempts", "R3"))]
    assert events[0].kind == "trial_started" and events[-1].kind == "episode_stopped"
    assert not [e for e in events if e.kind in ("regression_found", "rollback", "accepted", "resumed")]
    scored = [e for e in events if e.kind == "scored"]
    assert len(scored) == 6 and all(len(e.snapshot_sha256) == 64 and e.snapshot for e in scored)

    cap = Capsule.load(capsule_path(run, trial))
    assert [e.status for e in cap.episodes] == ["stopped", "stopped"]
    assert [c.episode for c in cap.contract] == ["e1", "e2"] and cap.last_green_commit is None
    assert "hello NAME" in cap.contract[0].criteria and cap.contract[1].gates == ["count"]
    assert cap.episodes[1].final_gates == {"greet": False, "count": False}
    assert not (run / "artifacts" / trial / "e1" / "1" / "capsule.json").exists()

    art = run / "artifacts" / trial
    start = (art / "e2" / "1" / "prompt.md").read_text()
    assert start.startswith("# Episode 2: count") and "## Product contract" in start
    assert "### e1: Greet" in start and "hello NAME" in start
    repair = (art / "e2" / "2" / "prompt.md").read_text()
    assert "never green yet" in repair and "gate `greet`" in repair and "gate `count`" in repair
    assert "`test_greets_by_name`" in repair and "def test_" not in repair and "assert" not in repair
    assert "The brief of this episode" not in repair  # session continuity: not repeated


def test_a_regression_is_found_named_and_repaired(run: Path):
    eps = _episodes(run, "governed-runtime", "test-regress")
    assert list(eps.score) == [1.0, 1.0] and list(eps.attempts) == [1, 2]
    trial = GOV.format(agent="test-regress")
    assert _decisions(run, trial, "e1") == ["accept"]
    assert _decisions(run, trial, "e2") == ["repair", "accept"]
    events = _events(run, trial)
    found = [e for e in events if e.kind == "regression_found"]
    assert [(e.episode, e.attempt, e.gate) for e in found] == [("e2", 1, "greet")]
    assert "green at the end of episode e1" in found[0].detail
    decision = next(e for e in events if e.kind == "decision" and e.episode == "e2")
    assert decision.rule == "R5" and decision.data["regressed"] == ["greet"]
    repaired = [e for e in events if e.kind == "regression_repaired"]
    assert [(e.episode, e.attempt, e.gate) for e in repaired] == [("e2", 2, "greet")]
    accepted = [e for e in events if e.kind == "accepted"]
    assert [(e.episode, e.attempt) for e in accepted] == [("e1", 1), ("e2", 2)]
    assert accepted[-1].gates == {"greet": True, "count": True} and "rule R1" in accepted[-1].detail
    prompt = (run / "artifacts" / trial / "e2" / "2" / "prompt.md").read_text()
    assert ("gate `greet` (protects contract item e1: Greet) was green at the end of episode e1"
            in prompt)
    cap = Capsule.load(capsule_path(run, trial))
    assert cap.open_regressions == [] and cap.last_green_episode == "e2"
    assert cap.last_green_commit == eps.commit.iloc[-1]


def test_a_regression_surviving_a_repair_rolls_back_to_the_last_green_commit(run: Path):
    eps = _episodes(run, "governed-runtime", "test-stubborn")
    assert list(eps.score) == [1.0, 1.0] and list(eps.attempts) == [1, 3]
    assert list(eps.rollbacks) == [0, 1] and list(eps.recovery_attempts) == [0, 3]
    trial = GOV.format(agent="test-stubborn")
    assert _decisions(run, trial, "e2") == ["repair", "rollback", "accept"]
    att = pd.read_parquet(run / "attempts.parquet")
    att = att[(att.trial_id == trial) & (att.episode == "e2")].sort_values("attempt")
    assert list(att.rolled_back) == [False, False, True]
    e1_commit = eps.commit.iloc[0]

    events = _events(run, trial)
    rollback = [e for e in events if e.kind == "rollback"]
    assert len(rollback) == 1 and rollback[0].snapshot == e1_commit and rollback[0].attempt == 2
    decision = next(e for e in events if e.kind == "decision" and e.action == "rollback")
    assert decision.rule == "R4" and "survived repair attempt 2" in decision.detail

    art = run / "artifacts" / trial / "e2"
    # without a rollback the junk of attempt 1 is still there at attempt 2; after it, it is gone
    assert "junk-1.txt" in (art / "2" / "transcript").read_text()
    third = (art / "3" / "transcript").read_text()
    assert f"head={e1_commit}" in third and "junk" not in third
    assert "junk" not in (art / "3" / "workspace.diff").read_text()  # diff from the green commit
    prompt = (art / "3" / "prompt.md").read_text()
    assert f"rolled back to commit {e1_commit[:12]}" in prompt and "Lesson:" in prompt
    assert "# Episode 2: count" in prompt and "### e1: Greet" in prompt

    # the same agent under feedback-retry: no governance, the regression stays
    retry = _episodes(run, "feedback-retry", "test-stubborn")
    assert list(retry.score) == [1.0, 0.5] and list(retry.rollbacks) == [0, 0]
    assert list(retry.decision) == ["accept", "stop_attempts"]
    assert not capsule_path(run, "feedback-retry.test-stubborn.none.none.r1").exists()
    assert not evidence_path(run, "feedback-retry.test-stubborn.none.none.r1").exists()


def test_budgets_stop_the_loop_and_are_recorded(tmp_path: Path):
    arms = tmp_path / "arms"
    shutil.copytree(ARMS_DIR / "assets", arms / "assets")
    (arms / "governed-budget.toml").write_text(
        'name = "governed-budget"\ninstructions = "assets/instructions.md"\ncontroller = "governed"\n'
        'max_attempts = 3\nsession_continuity = true\n'
        '[budget]\nepisode_tokens = 2500\ntrial_tokens = 4500\n')
    outcome = start_run(_config(tmp_path, "budget", arms=(str(arms / "governed-budget.toml"),),
                                agents=("test-metered", "nop")), display=False, console=QUIET)
    assert outcome.status == "complete", outcome.failures
    run = tmp_path / "budget"
    metered, nop = "governed-budget.test-metered.none.none.r1", "governed-budget.nop.none.none.r1"
    # 1000 tokens per attempt: e1 stops at 3000 >= 2500 (episode), e2 at 5000 >= 4500 (trial)
    assert _decisions(run, metered, "e1") == ["repair", "repair", "stop_budget"]
    assert _decisions(run, metered, "e2") == ["repair", "stop_budget"]
    eps = pd.read_parquet(run / "episodes.parquet").set_index(["trial_id", "episode"])
    assert eps.loc[(metered, "e2"), "decision"] == "stop_budget"
    hits = [e for e in _events(run, metered) if e.kind == "budget_hit"]
    assert [(e.episode, e.attempt) for e in hits] == [("e1", 3), ("e2", 2)]
    assert "episode_tokens (3000 >= 2500)" in hits[0].detail
    assert "trial_tokens (5000 >= 4500)" in hits[1].detail and hits[1].trial_usd == pytest.approx(0.05)
    cap = Capsule.load(capsule_path(run, metered))
    assert cap.trial_spend.tokens == 5000 and cap.episodes[0].spend.tokens == 3000
    assert len(pd.read_parquet(run / "usage.parquet")) == 5
    # nop reports no usage: the budget never triggers
    assert _decisions(run, nop, "e1") == _decisions(run, nop, "e2") == ["repair", "repair", "stop_attempts"]
    assert read_manifest_settings(run)["governed-budget"]["budget"]["trial_tokens"] == 4500


def read_manifest_settings(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["arm_settings"]


def test_sigkill_in_the_retry_loop_resumes_with_one_continuous_history(tmp_path: Path):
    trial = GOV.format(agent="nop")
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "run", "--marathon", str(TINY),
         "--arm", "governed-runtime", "--agent", "nop", "--out", str(tmp_path), "--run-id", "killed",
         "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(f"artifacts/{trial}/e2/2/prompt.md", run, 1, proc)  # e2's first repair started
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ledger = evidence_path(run, trial)
    before = ledger.read_bytes()
    n_before = len(read_evidence(ledger))
    cap = Capsule.load(capsule_path(run, trial))
    assert [(e.episode, e.status) for e in cap.episodes] == [("e1", "stopped"), ("e2", "in_progress")]
    assert leftovers("killed")

    resumed = run_cli("run", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert leftovers("killed") == []

    assert ledger.read_bytes().startswith(before)  # nothing written before the crash is lost
    events = _events(run, trial)
    marker = [i for i, e in enumerate(events) if e.kind == "resumed"]
    assert marker == [n_before]  # one marker, right after the last event of the dead session
    assert {e.session for e in events[:n_before]} == {1} and {e.session for e in events[n_before:]} == {2}
    assert events[n_before].data["abandoned"] == ["e2"] and events[n_before].episode == "e2"
    after = events[n_before + 1:]
    assert after[0].kind == "episode_started" and after[0].episode == "e2"
    assert {e.episode for e in after} == {"e2"}
    assert [e.attempt for e in after if e.kind == "attempt_started"] == [1, 2, 3]
    assert after[-1].kind == "episode_stopped"
    started_before = [(e.episode, e.attempt) for e in events[:n_before] if e.kind == "attempt_started"]
    assert started_before[:3] == [("e1", 1), ("e1", 2), ("e1", 3)] and ("e2", 2) in started_before

    cap = Capsule.load(capsule_path(run, trial))
    assert cap.sessions == 2 and [e.status for e in cap.episodes] == ["stopped", "stopped"]
    assert [e.episode for e in cap.abandoned] == ["e2"] and cap.abandoned[0].attempts
    assert [c.episode for c in cap.contract] == ["e1", "e2"]

    keys = {"episodes": ["trial_id", "episode"], "attempts": ["trial_id", "episode", "attempt"],
            "checks": ["trial_id", "episode", "attempt", "gate", "check"]}
    for table, cols in keys.items():
        df = pd.read_parquet(run / f"{table}.parquet")
        assert not df.duplicated(cols).any(), table
    att = pd.read_parquet(run / "attempts.parquet")
    assert sorted(zip(att.episode, att.attempt)) == [(e, n) for e in ("e1", "e2") for n in (1, 2, 3)]
    assert list(att.sort_values(["episode", "attempt"]).decision) == ["repair", "repair", "stop_attempts"] * 2
