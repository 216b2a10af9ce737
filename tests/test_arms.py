"""Arms: the presets load; a bad preset fails with one error naming its file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark.arms import arm_names, load_arm
from benchmark.controllers.feedback_retry import feedback_prompt
from benchmark.errors import MarathonError
from benchmark.paths import ARMS_DIR
from benchmark.scorer import CheckResult, Outcome


def test_presets_load_with_their_controllers():
    assert {"prompt-only", "skill-only", "feedback-retry", "governed-runtime"} <= set(arm_names())
    prompt = load_arm("prompt-only")
    assert (prompt.controller, prompt.skill, prompt.max_attempts) == ("single", None, 1)
    assert prompt.instructions.is_file()
    skill = load_arm("skill-only")
    assert skill.controller == "single" and skill.skill_name == "recovery"
    retry = load_arm("feedback-retry")
    assert (retry.controller, retry.feedback, retry.max_attempts) == ("feedback-retry", "names", 3)
    assert retry.skill == skill.skill


def test_governed_differs_from_feedback_retry_only_in_governance():
    retry, governed = load_arm("feedback-retry"), load_arm("governed-runtime")
    assert governed.controller == "governed" and governed.budget is None
    same = ("instructions", "skill", "feedback", "max_attempts")
    assert {f: getattr(governed, f) for f in same} == {f: getattr(retry, f) for f in same}
    assert governed.session_continuity and not retry.session_continuity  # part of governance


def test_budget_is_validated_and_only_for_the_governed_controller(tmp_path: Path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "instructions.md").write_text("Be careful.\n")
    path = tmp_path / "b.toml"
    path.write_text('name = "b"\ninstructions = "assets/instructions.md"\ncontroller = "governed"\n'
                    'max_attempts = 3\n[budget]\nepisode_tokens = 1000\ntrial_usd = 2.5\n')
    arm = load_arm(path)
    assert (arm.budget.episode_tokens, arm.budget.trial_usd, arm.budget.trial_tokens) == (1000, 2.5, None)
    path.write_text(path.read_text().replace('"governed"', '"feedback-retry"'))
    with pytest.raises(MarathonError, match=r"b\.toml: budget: controller 'feedback-retry' does not enforce"):
        load_arm(path)
    path.write_text(path.read_text().replace('"feedback-retry"', '"governed"').replace("1000", "0"))
    with pytest.raises(MarathonError, match=r"b\.toml: budget\.episode_tokens: Input should be greater than 0"):
        load_arm(path)
    path.write_text(path.read_text().replace("episode_tokens = 0", "episode_cows = 1"))
    with pytest.raises(MarathonError, match=r"b\.toml: budget\.episode_cows: Extra inputs"):
        load_arm(path)


def test_config_hash_changes_with_the_instructions(tmp_path):
    shutil.copytree(ARMS_DIR, tmp_path / "arms")
    before = load_arm(tmp_path / "arms" / "skill-only.toml").config_hash()
    assert before == load_arm(tmp_path / "arms" / "skill-only.toml").config_hash()
    (tmp_path / "arms" / "assets" / "recovery" / "SKILL.md").write_text(
        "---\nname: recovery\ndescription: changed\n---\nbody\n")
    assert load_arm(tmp_path / "arms" / "skill-only.toml").config_hash() != before


GOOD = 'name = "bad"\ninstructions = "assets/instructions.md"\n'


@pytest.mark.parametrize("text, field", [
    ('name = "bad"\ninstructions = "assets/instructions.md"\ncontroller = "bogus"\n', "controller: unknown controller 'bogus'"),
    (GOOD + 'controller = "feedback-retry"\nmax_attempts = 0\n', "max_attempts"),
    (GOOD + 'controller = "governed"\nmax_attempts = 0\n', "max_attempts"),
    (GOOD + 'controller = "single"\nmax_attempts = 3\n', "controller: max_attempts = 3"),
    ('name = "bad"\ninstructions = "nope.md"\ncontroller = "single"\n', "instructions: file nope.md not found"),
    (GOOD + 'controller = "single"\nskill = "assets/missing"\n', "skill: assets/missing/SKILL.md not found"),
    (GOOD + 'controller = "single"\nskill = "assets/nofront"\n', "skill: assets/nofront/SKILL.md: no YAML front matter"),
    (GOOD + 'controller = "single"\nfeedback = "everything"\n', "feedback"),
    (GOOD + 'controller = "single"\ncolour = "red"\n', "colour"),
    (GOOD + 'controller = "single"\n[broken\n', "malformed TOML"),
    ('name = "other"\ninstructions = "assets/instructions.md"\ncontroller = "single"\n', "name: 'other' differs"),
    ('instructions = "assets/instructions.md"\ncontroller = "single"\n', "name: Field required"),
])
def test_bad_preset_names_file_and_field(tmp_path: Path, text: str, field: str):
    (tmp_path / "assets" / "nofront").mkdir(parents=True)
    (tmp_path / "assets" / "instructions.md").write_text("Be careful.\n")
    (tmp_path / "assets" / "nofront" / "SKILL.md").write_text("# no front matter\n")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(MarathonError) as err:
        load_arm(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and field in message
    assert "\n" not in message


def test_unknown_arm_lists_presets():
    with pytest.raises(MarathonError, match="unknown arm 'nope'.*presets: .*prompt-only"):
        load_arm("nope")


def _checks() -> list[CheckResult]:
    return [
        CheckResult(gate="privacy", check="test_no_email", tag="genuine", outcome=Outcome.failed,
                    message="AssertionError: email leaked in state/ledger.log\nmore", duration_s=0.1),
        CheckResult(gate="privacy", check="test_masked", tag="contract", outcome=Outcome.passed,
                    duration_s=0.1),
        CheckResult(gate="replay", check="test_replay", tag="genuine", outcome=Outcome.failed,
                    message="replay differs", duration_s=0.1),
        CheckResult(gate="late", check="test_late", tag="genuine", outcome=Outcome.error,
                    message="the host starved it", duration_s=0.1),
    ]


def test_an_errored_check_is_no_verdict_never_red():
    from benchmark.controllers.base import gate_score, gate_verdicts

    checks = _checks()
    assert gate_verdicts(checks) == {"privacy": False, "replay": False}  # `late` has no verdict
    assert gate_score(checks) == 0.0
    ok = [c.model_copy(update={"outcome": Outcome.passed}) for c in checks[:3]] + checks[3:]
    assert gate_verdicts(ok) == {"privacy": True, "replay": True} and gate_score(ok) == 1.0


def test_feedback_names_failing_gates_and_checks_only():
    text = feedback_prompt(_checks(), "names", "THE BRIEF")
    assert "gate `privacy`" in text and "`test_no_email`" in text and "gate `replay`" in text
    assert "test_masked" not in text          # passing checks are not listed
    assert "email leaked" not in text         # names level: no messages
    assert "late" not in text                 # an error is not a verdict: never shown
    assert text.rstrip().endswith("THE BRIEF")


def test_feedback_messages_adds_first_line_of_each_failure():
    text = feedback_prompt(_checks(), "messages", None)
    assert "AssertionError: email leaked in state/ledger.log" in text and "more" not in text
    assert "replay differs" in text and "starved" not in text
    assert "brief of this episode" not in text  # session continuity: the brief is not repeated
