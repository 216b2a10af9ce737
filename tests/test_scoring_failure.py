"""An ``error`` is not a verdict: a scoring with one is repeated, and a snapshot that keeps one
is a scoring failure that stops its trial, never a red gate and never feedback to the agent.

The scorer error is injected for real: a copy of the ``tiny`` marathon whose gate fixture
raises (a broken gate), scored in real containers, and run through the real driver.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from benchmark.driver import start_run
from benchmark.experiment import load_config
from benchmark.marathon import load_marathon
from benchmark.scorer import Outcome, ScoringFailure, score, score_snapshot
from conftest import TINY
from tests.answer_fixtures import scorer_image  # noqa: F401

pytestmark = pytest.mark.docker

BROKEN_FIXTURE = '''

@pytest.fixture
def tiny():
    raise RuntimeError("the gate itself is broken")
'''


def broken_tiny(tmp_path: Path) -> Path:
    """A copy of the tiny marathon whose ``tiny`` fixture raises: every check errors."""
    root = tmp_path / "tiny"
    shutil.copytree(TINY, root)
    conftest = root / "gates" / "conftest.py"
    conftest.write_text(conftest.read_text() + BROKEN_FIXTURE)
    return root


def test_a_transient_error_is_rescored_and_recorded(tmp_path, scorer_image):
    """The first scoring errors (the gate is broken); it is repaired before the second one,
    which gives every check a verdict: that scoring is used, and the first one's reason kept."""
    root = broken_tiny(tmp_path)
    marathon = load_marathon(root)
    calls = []

    def repaired_after_first(*args, **kwargs):
        results = score(*args, **kwargs)
        calls.append([r.outcome for r in results])
        shutil.copy(TINY / "gates" / "conftest.py", root / "gates" / "conftest.py")
        return results

    scoring = score_snapshot(marathon.episode("e1").reference, marathon, "e1", 3,
                             image=scorer_image, score_once=repaired_after_first)
    assert calls[0] == [Outcome.error] * 3 and len(calls) == 2
    assert scoring.scorings == 2 and {c.outcome for c in scoring.checks} == {Outcome.passed}
    assert len(scoring.rescore_reasons) == 1
    assert "3 checks without a verdict" in scoring.rescore_reasons[0]
    assert "the gate itself is broken" in scoring.rescore_reasons[0]


def test_a_persistent_error_is_a_scoring_failure_after_two_rescores(tmp_path, scorer_image):
    marathon = load_marathon(broken_tiny(tmp_path))
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return score(*args, **kwargs)

    with pytest.raises(ScoringFailure, match="scoring failure after 3 scorings") as failure:
        score_snapshot(marathon.starter, marathon, "e1", 3, image=scorer_image, score_once=counted)
    assert len(calls) == 3
    assert {c.outcome for c in failure.value.checks} == {Outcome.error}


def test_a_scoring_failure_stops_the_trial_without_red_gate_or_feedback(tmp_path):
    """nop on a marathon whose gate is broken, under feedback-retry: without the rule, every
    check would count as red and the agent would be re-prompted with the failures. With it, the
    trial stops at the first attempt's scoring: nothing recorded, no re-prompt, the failure in
    errors.log, the run failed (and resumable)."""
    config = load_config(None, {"marathon": str(broken_tiny(tmp_path)), "arms": ("feedback-retry",),
                                "agents": ("nop",), "out": tmp_path / "out", "run_id": "sf"})
    outcome = start_run(config, display=False, console=Console(file=open(os.devnull, "w")))
    run = tmp_path / "out" / "sf"
    assert outcome.status == "failed" and outcome.trials_complete == 0
    assert "scoring failure after 3 scorings" in outcome.failures[0]
    assert "ScoringFailure" in (run / "errors.log").read_text()
    attempts = run / "artifacts" / "feedback-retry.nop.none.none.r1" / "e1"
    assert sorted(p.name for p in attempts.iterdir()) == ["1"]  # no recovery attempt
    assert not (attempts / "1" / "score.json").exists()
    assert len(pd.read_parquet(run / "episodes.parquet")) == 0
    assert len(pd.read_parquet(run / "checks.parquet")) == 0
