"""Capsule, evidence ledger and budgets as units (no Docker): contract extraction, rewind after
a crash, torn-line recovery and continuous sequence numbers, what a budget counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.budget import Budget, Spend, attempt_spend
from benchmark.capsule import (AttemptLog, Capsule, EpisodeState, Regression,
                               acceptance_criteria)
from benchmark.errors import MarathonError
from benchmark.evidence import EvidenceLedger, read_evidence, utcnow
from benchmark.paths import EPISODES_DIR
from benchmark.records import UsageCall


def test_acceptance_criteria_section_or_whole_brief():
    e1 = acceptance_criteria((EPISODES_DIR / "ledger" / "e1" / "brief.md").read_text())
    assert e1.startswith("1. `DIR/balances.json` holds the balances") and "Python 3.11" in e1
    assert "## Command" not in e1
    text = "# Title\n\nintro\n\n### Acceptance Criteria\n\n- a\n#### detail\nb\n## Next\nno\n"
    assert acceptance_criteria(text) == "- a\n#### detail\nb"
    assert acceptance_criteria("# Episode 1: greet\n\nDo it.\n") == "Do it."


def _log(n: int, gates: dict[str, bool], commit: str) -> AttemptLog:
    return AttemptLog(attempt=n, kind="first", commit=commit, snapshot_sha256="0" * 64, gates=gates,
                      score=0.0, spend=Spend(tokens=10), regressed=[], new_failing=[],
                      carried_failing=[], decision="accept", rule="R1", reason="", at=utcnow())


def test_rewind_moves_unrecorded_episodes_to_abandoned(tmp_path: Path):
    cap = Capsule.new("t", "tiny", "governed-runtime")
    reg = Regression(gate="a", protects="e1", green_at_end_of="e1", found_in="e2", found_at_attempt=1)
    cap.episodes = [
        EpisodeState(episode="e1", index=1, status="accepted", started_at=utcnow(),
                     attempts=[_log(1, {"a": True}, "c1")], final_gates={"a": True}, final_commit="c1"),
        EpisodeState(episode="e2", index=2, status="stopped", started_at=utcnow(),
                     final_gates={"a": False, "b": True}, final_commit="c2", open_regressions_at_end=[reg]),
        EpisodeState(episode="e3", index=3, status="accepted", started_at=utcnow(),
                     final_gates={"a": True, "b": True}, final_commit="c3"),
        EpisodeState(episode="e4", index=4, status="in_progress", started_at=utcnow()),
    ]
    cap.last_green_commit, cap.last_green_episode = "c3", "e3"
    cap.trial_spend = Spend(tokens=99)
    assert cap.green_at_end_of("a") == "e3" and cap.green_at_end_of("b") == "e3"
    dropped = cap.rewind(3)  # e3 finished but its records were not written: restart at e3
    assert [e.episode for e in dropped] == ["e3", "e4"]
    assert [e.status for e in cap.abandoned] == ["abandoned", "abandoned"]
    assert [e.episode for e in cap.episodes] == ["e1", "e2"]
    assert (cap.last_green_commit, cap.last_green_episode) == ("c1", "e1")
    assert cap.open_regressions == [reg] and cap.trial_spend.tokens == 99
    assert cap.green_at_end_of("a") == "e1" and cap.green_at_end_of("b") == "e2"
    path = tmp_path / "capsules" / "t.json"
    cap.save(path)
    assert Capsule.load(path) == cap and not list(path.parent.glob(".*.tmp"))
    path.write_text("{not json")
    with pytest.raises(MarathonError, match=r"t\.json: not a valid capsule"):
        Capsule.load(path)


def test_ledger_appends_continuously_and_cuts_a_torn_line(tmp_path: Path):
    path = tmp_path / "evidence" / "t.jsonl"
    ledger = EvidenceLedger(path, "t")
    assert not ledger.existed
    ledger.append("trial_started")
    ledger.append("scored", episode="e1", attempt=1, gates={"a": False}, tokens=5)
    with open(path, "ab") as f:
        f.write(b'{"seq": 3, "at": "2026-')  # power loss in the middle of a line
    again = EvidenceLedger(path, "t")
    assert again.existed and again.dropped_bytes == len(b'{"seq": 3, "at": "2026-') and again.last_seq == 2
    assert again.start_session() == 2
    again.append("resumed")
    events = read_evidence(path)
    assert [(e.seq, e.kind, e.session) for e in events] == [
        (1, "trial_started", 1), (2, "scored", 1), (3, "resumed", 2)]
    assert events[1].gates == {"a": False} and events[1].at.tzinfo is not None


def test_budget_counts_proxy_figures_else_agent_figures():
    proxy = UsageCall(source="proxy", api_model="m", input_tokens=100, output_tokens=50,
                      cache_read_tokens=30, cache_write_tokens=20, cost_usd=0.5)
    agent = UsageCall(source="agent", api_model="m", input_tokens=1000, output_tokens=1000)
    assert attempt_spend([proxy, agent]) == Spend(tokens=200, usd=0.5, calls=1)
    assert attempt_spend([agent]) == Spend(tokens=2000, usd=0.0, calls=1, calls_without_cost=1)
    assert attempt_spend([]) == Spend()
    budget = Budget(episode_tokens=2000, trial_usd=1.0)
    assert budget.reached(Spend(tokens=1999), Spend(tokens=1999)) is None
    assert budget.reached(Spend(tokens=2000), Spend()) == "episode_tokens (2000 >= 2000)"
    assert budget.reached(Spend(), Spend(usd=1.25)) == "trial_usd (1.25 >= 1)"
    assert Budget().reached(Spend(tokens=10**9), Spend(tokens=10**9)) is None
