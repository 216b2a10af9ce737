"""The ``feedback-retry`` controller: after a red scoring, re-prompt with the failing gates.

The re-prompt names the failing gates and their failing checks (feedback level ``names``), or
adds the first failure message of each failing check (``messages``). It never shows gate source.
Attempts stop at the first all-green scoring or at ``arm.max_attempts``.
"""

from __future__ import annotations

from benchmark.agents.base import Agent
from benchmark.arms import FeedbackLevel
from benchmark.controllers.base import (Attempt, Controller, ScoreFn, TrialContext,
                                        default_decision)
from benchmark.marathon import EpisodeSpec
from benchmark.scorer import CheckResult, Outcome


def failing_lines(checks: list[CheckResult], level: FeedbackLevel) -> list[str]:
    """The failing gates and their failing checks, one Markdown list line each, as an arm's
    feedback level allows (``names``; ``messages`` adds each check's first failure line). Never
    gate source, inputs or the names of passing gates."""
    gates: dict[str, list[CheckResult]] = {}
    for c in checks:
        if c.outcome == Outcome.failed:  # an error is not a verdict: never shown
            gates.setdefault(c.gate, []).append(c)
    lines = []
    for gate, cs in gates.items():
        lines.append(f"- gate `{gate}`:")
        for c in cs:
            if level == "messages" and c.message:
                lines.append(f"  - `{c.check}` ({c.outcome.value}): {c.message.splitlines()[0]}")
            else:
                lines.append(f"  - `{c.check}` ({c.outcome.value})")
    return lines


def feedback_prompt(checks: list[CheckResult], level: FeedbackLevel, brief: str | None) -> str:
    """The re-prompt after a red scoring.

    Args:
        checks: the verdicts of the previous attempt.
        level: ``names`` (failing gates and checks) or ``messages`` (plus the first line of
            each failing check's message).
        brief: the episode's brief, repeated after the feedback; ``None`` when the agent keeps
            its session and has seen it.
    """
    lines = [
        "Your work was checked by hidden gates after your last attempt, and some of them fail.",
        "Fix the workspace so that they pass, without breaking anything that works now.",
        "",
        "Failing gates and checks:",
        *failing_lines(checks, level),
    ]
    if brief is not None:
        lines += ["", "The brief of this episode, again:", "", brief]
    return "\n".join(lines) + "\n"


class FeedbackRetryController(Controller):
    """Retries a red episode with feedback, up to ``arm.max_attempts`` attempts."""

    name = "feedback-retry"
    multi_attempt = True

    def run(self, trial: TrialContext, episode: EpisodeSpec, brief: str, agent: Agent,
            score: ScoreFn) -> list[Attempt]:
        """First attempt with the brief; then, while red and under the limit, a recovery attempt
        with :func:`feedback_prompt`."""
        attempts = [self.attempt(trial, episode, agent, score, 1, brief)]
        while True:
            last = attempts[-1]
            last.decision = default_decision(last.green, last.number, self.arm.max_attempts)
            if last.decision != "repair":
                return attempts
            prompt = feedback_prompt(last.checks, self.arm.feedback,
                                     None if self.arm.session_continuity else brief)
            attempts.append(self.attempt(trial, episode, agent, score, len(attempts) + 1, prompt))
