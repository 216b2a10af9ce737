"""``marathon validate``: sound gates are confirmed, unsound ones are reported."""

from __future__ import annotations

import subprocess

import pytest

from benchmark.validate import validate
from tests.answer_fixtures import ANSWER, answer, scorer_image  # noqa: F401


@pytest.mark.docker
def test_validate_reports_each_finding(answer, scorer_image):
    findings = {f.item: f for f in validate(answer, image=scorer_image, seed=0, jobs=2)}
    assert findings["reference e1 passes its active gates"].ok
    assert findings["starter fails every gate"].ok
    assert findings["mutant answer/print41 fails its gate"].ok
    # A mutant that regresses nothing, and a check without a tag, are findings, not passes.
    assert not findings["mutant answer/comment_only fails its gate"].ok
    assert not findings["gate answer declares checks"].ok
    assert "untagged: test_untagged_check" in findings["gate answer declares checks"].detail
    assert findings["scoring is deterministic (3 scorings of the final reference)"].ok


@pytest.mark.docker
def test_validate_cli_exits_1_on_a_failed_finding(scorer_image):
    proc = subprocess.run(["marathon", "validate", str(ANSWER)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "FAIL mutant answer/comment_only fails its gate" in proc.stderr


@pytest.mark.docker
def test_ledger_marathon_is_valid(scorer_image):
    """The acceptance check of the ledger marathon: references pass 100% after each episode,
    the starter fails every gate, every mutant fails its gate, scoring is deterministic."""
    proc = subprocess.run(["marathon", "validate", "ledger", "--seed", "11"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAIL" not in proc.stderr
