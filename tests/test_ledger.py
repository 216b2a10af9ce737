"""The ledger marathon through the driver: the oracle scores 100% after every episode (also under
the governed runtime); nop scores 0% and the feedback-retry controller makes every allowed
attempt."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from benchmark.driver import start_run
from benchmark.experiment import load_config

pytestmark = pytest.mark.docker


def test_oracle_full_and_nop_zero_on_ledger(tmp_path: Path):
    config = load_config(None, {"marathon": "ledger", "arms": ("feedback-retry",),
                                "agents": ("oracle", "nop"), "jobs": 2, "out": tmp_path,
                                "run_id": "ledger"})
    outcome = start_run(config, display=False, console=Console(file=open(os.devnull, "w")))
    assert outcome.status == "complete", outcome.failures
    eps = pd.read_parquet(tmp_path / "ledger" / "episodes.parquet").sort_values(["agent", "episode_index"])
    oracle, nop = eps[eps.agent == "oracle"], eps[eps.agent == "nop"]
    assert list(oracle.episode) == list(nop.episode) == ["e1", "e2", "e3", "e4"]
    assert list(oracle.score) == [1.0] * 4 and list(oracle.attempts) == [1] * 4
    assert list(oracle.gates_active) == [2, 4, 5, 6]
    assert list(nop.score) == [0.0] * 4 and list(nop.attempts) == [3] * 4
    checks = pd.read_parquet(tmp_path / "ledger" / "checks.parquet")
    assert (checks[checks.agent == "oracle"].outcome == "passed").all()
    assert not (checks[checks.agent == "nop"].outcome == "passed").any()


def test_oracle_full_under_the_governed_runtime_on_ledger(tmp_path: Path):
    config = load_config(None, {"marathon": "ledger", "arms": ("governed-runtime",),
                                "agents": ("oracle",), "out": tmp_path, "run_id": "gov"})
    outcome = start_run(config, display=False, console=Console(file=open(os.devnull, "w")))
    assert outcome.status == "complete", outcome.failures
    run = tmp_path / "gov"
    eps = pd.read_parquet(run / "episodes.parquet").sort_values("episode_index")
    assert list(eps.score) == [1.0] * 4 and list(eps.attempts) == [1] * 4
    assert list(eps.decision) == ["accept"] * 4 and list(eps.recovery_attempts) == [0] * 4
    events = pd.read_json(run / "evidence" / "governed-runtime.oracle.none.none.r1.jsonl", lines=True)
    accepted = events[events.kind == "accepted"]
    assert list(accepted.episode) == ["e1", "e2", "e3", "e4"] and list(accepted.snapshot) == list(eps.commit)
    assert list(events.seq) == list(range(1, len(events) + 1))
