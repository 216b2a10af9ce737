"""Self-checks end to end on the tiny marathon, with real containers: an arm with
``self_checks = 2`` lets the agent run ``marathon-check`` inside its container, through its own
proxy socket, authenticated by the trial's token; the harness scores the workspace as it stands
and shows the failing gate and check names only; past the limit it says so and scores nothing;
every request is a row of ``self_checks.parquet``, counted in episodes and trials."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import agents_for_tests  # noqa: F401  (registers test-self-check)
from benchmark.driver import start_run
from benchmark.experiment import load_config
from benchmark.model_access import USAGE_LOG
from benchmark.paths import ARMS_DIR
from benchmark.proxy import load_usage
from conftest import TINY

pytestmark = pytest.mark.docker

QUIET = Console(file=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("self-checks")
    arm = out / "checked.toml"
    arm.write_text(f'name = "checked"\ninstructions = "{ARMS_DIR}/assets/instructions.md"\n'
                   'controller = "single"\nself_checks = 2\n')
    config = load_config(None, {"marathon": str(TINY), "arms": (str(arm),),
                                "agents": ("test-self-check",), "replicates": 1, "out": out,
                                "run_id": "sc"})
    outcome = start_run(config, display=False, console=QUIET)
    assert outcome.status == "complete", outcome.failures
    return out / "sc"


def test_self_checks_are_scored_limited_and_recorded(run):
    rows = pd.read_parquet(run / "self_checks.parquet")
    e1 = rows[rows.episode == "e1"]
    assert list(e1.status) == ["red", "green", "limit_reached"]
    assert list(e1.counted) == [True, True, False] and list(e1["index"]) == [1, 2, 3]
    assert list(e1.score.fillna(-1)) == [0.0, 1.0, -1]
    assert e1.commit.iloc[0] and e1.commit.iloc[0] != e1.commit.iloc[1] and e1.commit.isna().iloc[2]
    assert (e1.attempt == 1).all() and (e1.scoring_s.iloc[:2] > 0).all()
    assert "the limit of 2 self-checks for this episode is reached" in e1.shown.iloc[2]
    (e2,) = rows[rows.episode == "e2"].itertuples()
    assert (e2.status, e2.gates_active, e2.gates_passed) == ("red", 2, 1)
    eps = pd.read_parquet(run / "episodes.parquet").set_index("episode")
    assert eps.self_checks.to_dict() == {"e1": 2, "e2": 1}
    assert eps.self_check_recoveries.to_dict() == {"e1": 1, "e2": 1}
    (trial,) = pd.read_parquet(run / "trials.parquet").itertuples()
    assert (trial.final_score, trial.self_checks, trial.self_check_recoveries) == (1.0, 3, 2)
    # what the command printed, and its exit statuses: red 1, forged token 2, no token 2,
    # green 0, past the limit 3
    transcript = (run / "artifacts" / trial.trial_id / "e1" / "1" / "transcript").read_text()
    assert re.findall(r"exit=(\d)", transcript) == ["1", "2", "2", "0", "3"]
    assert e1.shown.iloc[0] in transcript and "HTTP 401" in transcript
    # self-checks are no model calls: the proxy recorded none of them as usage
    assert not [r for r in load_usage(run / USAGE_LOG) if r.call.path == "/marathon/self-check"
                and r.call.http_status == 200]


def test_a_self_check_shows_failing_names_only_never_passing_gates_or_gate_source(run):
    rows = pd.read_parquet(run / "self_checks.parquet")
    e2 = rows[rows.episode == "e2"].shown.iloc[0]
    assert "gate `count`" in e2 and "greet" not in e2  # greet passes: its name is not shown
    gate_source = "\n".join(p.read_text() for p in (TINY / "gates").glob("*.py"))
    checks = set(re.findall(r"def (test_\w+)", gate_source))
    for line in gate_source.splitlines():  # no line of gate source, except check names
        line = line.strip()
        if len(line) > 12 and not any(c in line for c in checks):
            assert line not in "\n".join(rows.shown), line
    named = set(re.findall(r"`(test_\w+)`", "\n".join(rows.shown)))
    assert named and named <= checks


def test_a_self_check_without_a_verdict_is_not_shown_red_and_not_counted(tmp_path):
    """A scoring that leaves a check without a verdict (``error``) or fails outright is a
    harness problem: the agent is told so, nothing red is shown, and the limit is not used."""
    import threading
    from types import SimpleNamespace

    from benchmark.arms import load_arm
    from benchmark.driver import TrialRunner
    from benchmark.marathon import load_marathon
    from benchmark.records import TrialKeys
    from benchmark.scorer import CheckResult, Outcome, Scoring, ScoringFailure

    keys = TrialKeys(run_id="r", trial_id="t", marathon="tiny", arm="checked", agent="a",
                     model="none", effort="none", replicate=1, seed=1)
    runner = TrialRunner.__new__(TrialRunner)
    runner.keys, runner.stop = keys, threading.Event()
    runner.arm = load_arm("external-runtime").model_copy(update={"self_checks": 1})
    runner.sandbox = SimpleNamespace(snapshot_commit=lambda m: "c" * 40, archive=lambda: b"")
    runner.progress = SimpleNamespace(update=lambda *a, **k: None)
    runner._check_lock, runner._self_checks = threading.Lock(), []
    runner._current = (load_marathon(str(TINY)).episode("e1"), 1)
    check = dict(gate="greet", check="test_greets_by_name", tag="genuine", duration_s=0.1)
    errored = [CheckResult(**check, outcome=Outcome.error, message="no report")]
    answers = iter([
        ScoringFailure("1 check without a verdict after 3 scorings", errored),
        RuntimeError("scorer container vanished"),
        Scoring(scorings=1, checks=[CheckResult(**check, outcome=Outcome.failed,
                                                message="AssertionError")]),
    ])

    def score(episode, archive):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer, None

    runner._score_workspace, runner.work = score, tmp_path
    first, second, third, fourth = (runner.self_check() for _ in range(4))
    for answer in (first, second):
        assert answer["status"] == "no_verdict" and "fail" not in answer["text"]
        assert "not counted" in answer["text"]
    assert third["status"] == "red" and "gate `greet`" in third["text"]
    assert "AssertionError" not in third["text"]  # feedback "names": no messages
    assert fourth["status"] == "limit_reached"
    assert [r.counted for r in runner._self_checks] == [False, False, True, False]
