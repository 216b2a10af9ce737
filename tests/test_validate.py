"""``marathon validate``: sound gates are confirmed, unsound ones are reported, on every seed."""

from __future__ import annotations

import pytest

from benchmark.errors import MarathonError
from benchmark.marathon import load_marathon
from benchmark.validate import parse_seeds, scoring_count, validate
from tests.answer_fixtures import ANSWER, DOUBLE, answer, scorer_image  # noqa: F401
from tests.conftest import run_cli


@pytest.mark.docker
def test_validate_reports_each_finding(answer, scorer_image):
    findings = {f.item: f for f in validate(answer, image=scorer_image, seeds=[0], jobs=2)}
    assert findings["reference e1 passes its active gates"].ok
    assert findings["starter fails every gate"].ok
    assert findings["mutant answer/print41 fails its gate"].ok
    # A mutant that regresses nothing, and a check without a tag, are findings, not passes.
    assert not findings["mutant answer/comment_only fails its gate"].ok
    checks = findings["gate answer has at least 3 checks, each tagged genuine or contract"]
    assert not checks.ok
    assert "untagged: test_untagged_check" in checks.detail
    assert findings["scoring is deterministic (3 scorings of the final reference)"].ok


@pytest.mark.docker
def test_validate_names_a_mutant_caught_on_some_seeds_only(scorer_image):
    """``double``'s mutant ``n > 1`` is caught only when the seeded check tries N = 1 (seed 1):
    scored on seeds 0 and 1, it is a seed-dependent finding; everything else holds on both."""
    m = load_marathon(DOUBLE)
    scored = []
    findings = {f.item: f for f in validate(m, image=scorer_image, seeds=[0, 1], jobs=2,
                                            scored=lambda: scored.append(1))}
    assert len(scored) == scoring_count(m, [0, 1]) == 10
    bad = findings["mutant double/positive-from-two fails its gate"]
    assert not bad.ok
    assert bad.detail == "seed-dependent: caught on seeds 1, missed on seeds 0"
    assert findings["mutant double/times-three fails its gate"].ok
    assert findings["mutant double/times-three fails its gate"].detail == (
        "checks of double failed: 1/4 on seed 0, 2/4 on seed 1")
    assert findings["reference e1 passes its active gates"].ok
    assert findings["starter fails every gate"].ok
    assert findings["scoring is deterministic (3 scorings of the final reference)"].ok
    # On seed 0 alone the same mutant is simply missed (no second seed to disagree with).
    only0 = {f.item: f for f in validate(m, image=scorer_image, seeds=[0], jobs=2)}
    assert only0["mutant double/positive-from-two fails its gate"].detail == (
        "checks of double failed: 0/4 on seed 0")


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("11") == [11]
    for bad in ("", "a", "1,,2", "1,1", "-1"):
        with pytest.raises(MarathonError, match="^--seeds: "):
            parse_seeds(bad)


@pytest.mark.docker
def test_validate_cli_exits_1_on_a_failed_finding(scorer_image):
    proc = run_cli("validate", str(ANSWER), "--seeds", "0,1", "--no-progress")
    assert proc.returncode == 1
    assert "FAIL mutant answer/comment_only fails its gate" in proc.stderr
    assert "findings ok (seeds 0, 1)" in proc.stderr
    assert "scorings: 10/10" in proc.stderr  # (reference, starter, 2 mutants) x 2 seeds + 2 repeats


def test_validate_cli_rejects_bad_seeds():
    proc = run_cli("validate", str(ANSWER), "--seeds", "0,x")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "marathon: error: --seeds: '0,x' is not a comma-separated list of integers"


@pytest.mark.docker
def test_ledger_marathon_is_valid(scorer_image):
    """The acceptance check of the ledger marathon: references pass 100% after each episode,
    the starter fails every gate, every mutant fails its gate, scoring is deterministic, on a
    seed other than the defaults (``make validate`` checks the default seeds 0, 1, 2)."""
    proc = run_cli("validate", "ledger", "--seeds", "11", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAIL" not in proc.stderr
