"""The controller interface: how the attempts of one episode are run.

A :class:`Controller` is given the trial's context, the episode, the agent and a scoring
function; it runs one or more attempts and returns them. Scoring an attempt (commit, snapshot,
every gate active after the episode, with the trial's seed) is the harness's job: the controller
only calls ``score``. Attempts beyond the first of an episode are *recovery attempts*; so is
every rollback of the workspace (see ``docs/arms.md``).

After scoring an attempt a controller records its :data:`Decision` on the attempt: ``accept``
(all green), ``repair`` (re-prompt on the same workspace), ``rollback`` (reset the workspace to
the trial's last all-green commit, then retry), ``stop_attempts`` (red, no attempt left) or
``stop_budget`` (red, a usage budget reached).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel

from benchmark.agents.base import Agent, AttemptContext, AttemptResult
from benchmark.arms import Arm
from benchmark.marathon import EpisodeSpec, Marathon
from benchmark.records import TrialKeys
from benchmark.scorer import CheckResult, Outcome, ScoringFailure, no_verdict_summary
from benchmark.sandbox import Sandbox


#: What a controller decided after scoring an attempt (see the module docstring).
Decision = Literal["accept", "repair", "rollback", "stop_attempts", "stop_budget"]


def default_decision(green: bool, number: int, max_attempts: int) -> Decision:
    """The decision of a controller without governance: ``accept`` when green, ``repair``
    while attempts remain, else ``stop_attempts``."""
    if green:
        return "accept"
    return "repair" if number < max_attempts else "stop_attempts"


def gate_verdicts(checks: list[CheckResult]) -> dict[str, bool]:
    """Gate name -> whether it passes, in check order.

    A gate fails when one of its checks failed and passes when all of them passed. An ``error``
    is not a verdict: a gate with an errored check and no failed one has no verdict and is left
    out (the harness never records such a scoring: :func:`benchmark.scorer.score_snapshot`
    scores again, then raises :class:`~benchmark.scorer.ScoringFailure`).
    """
    failed: dict[str, bool] = {}
    undecided: set[str] = set()
    for c in checks:
        failed[c.gate] = failed.get(c.gate, False) or c.outcome == Outcome.failed
        if c.outcome == Outcome.error:
            undecided.add(c.gate)
    return {gate: not bad for gate, bad in failed.items() if bad or gate not in undecided}


def gate_score(checks: list[CheckResult]) -> float:
    """Share of the gates with a verdict that pass, 0..1 (0 when there is none); see
    :func:`gate_verdicts`."""
    verdicts = gate_verdicts(checks)
    return sum(verdicts.values()) / len(verdicts) if verdicts else 0.0


class Attempt(BaseModel):
    """One attempt of an episode: the prompt, what the agent reported, and the scoring after."""

    number: int
    """Attempt number in the episode, 1-based; > 1 is a recovery attempt."""
    prompt: str
    """The prompt the agent was given (the brief, or feedback plus brief on a retry)."""
    result: AttemptResult
    """The agent's result."""
    checks: list[CheckResult]
    """Verdicts on every check of the gates active after the episode (``passed`` or ``failed``:
    a scoring with an ``error`` never makes an attempt)."""
    decision: Decision | None = None
    """What the controller decided after scoring this attempt; ``None`` until it decided."""
    rolled_back: bool = False
    """Whether the workspace was rolled back to the trial's last all-green commit right before
    this attempt."""

    @property
    def gate_verdicts(self) -> dict[str, bool]:
        """Gate name -> whether it passes (all its checks passed), in check order."""
        return gate_verdicts(self.checks)

    @property
    def gates_passed(self) -> int:
        """Number of passing gates."""
        return sum(self.gate_verdicts.values())

    @property
    def score(self) -> float:
        """Share of the active gates that pass, 0..1 (0 when no gate is active)."""
        return gate_score(self.checks)

    @property
    def green(self) -> bool:
        """Whether every check passed."""
        return all(c.outcome == Outcome.passed for c in self.checks)


class TrialContext(Protocol):
    """What a controller needs from the trial it runs in (implemented by the driver)."""

    sandbox: Sandbox
    """The trial's container."""
    arm: Arm
    """The trial's arm."""
    keys: TrialKeys
    """The trial's keys (id, arm, agent, model, seed...)."""
    run_dir: Path
    """The run directory (capsules and evidence ledgers live under it)."""
    marathon: Marathon
    """The marathon being played."""

    def attempt_context(self, episode: EpisodeSpec, attempt: int, prompt: str) -> AttemptContext:
        """Set up the attempt's artifacts (writes ``prompt.md``) and return its context."""
        ...

    def snapshot_of(self, attempt: int) -> tuple[str | None, str]:
        """``(commit, sha256 of the workspace archive)`` scored after an attempt of the current
        episode (commit ``None`` if the agent broke the repository)."""
        ...

    def rollback(self, commit: str) -> None:
        """Reset the workspace to ``commit`` (``git reset --hard``, ``git clean -fdx``).

        Raises:
            MarathonError: the reset failed (e.g. the agent broke the repository).
        """
        ...


#: ``score(attempt number, agent result) -> check verdicts``: commits and snapshots the
#: workspace and scores it against every gate active after the episode, to a verdict on every
#: check (raising :class:`~benchmark.scorer.ScoringFailure` when it cannot).
ScoreFn = Callable[[int, AttemptResult], list[CheckResult]]


class Controller(ABC):
    """Runs the attempts of an episode. Subclasses set :attr:`name` and implement :meth:`run`."""

    name: ClassVar[str]
    """Registry name, e.g. ``single``."""
    multi_attempt: ClassVar[bool] = False
    """Whether the controller may make more than one attempt per episode (uses
    ``arm.max_attempts``)."""
    enforces_budget: ClassVar[bool] = False
    """Whether the controller enforces the arm's usage budget (``arm.budget``)."""
    uses_terminal: ClassVar[bool] = False
    """Whether the controller attaches an operator's terminal (then the run has no live
    progress display)."""

    @classmethod
    def check_plan(cls, arm: Arm, jobs: int, agents: list[str]) -> None:
        """Refuse, before any container starts, a run this controller cannot serve (default:
        accept every run).

        Raises:
            MarathonError: one line naming the arm and the flag at fault.
        """

    def steering_rows(self, episode: str) -> list:
        """Rows of ``steering.parquet`` for a finished episode (the ``human`` controller's;
        none for the others)."""
        return []

    def __init__(self, arm: Arm):
        self.arm = arm
        """The arm the controller serves (feedback level, max attempts)."""

    @abstractmethod
    def run(self, trial: TrialContext, episode: EpisodeSpec, brief: str, agent: Agent,
            score: ScoreFn) -> list[Attempt]:
        """Run the episode's attempts and return them, in order (at least one).

        Args:
            trial: the trial's context (sandbox, arm, attempt set-up).
            episode: the episode.
            brief: the episode's brief, as the agent is told it.
            agent: the agent.
            score: scores the workspace after an attempt.

        Raises:
            Whatever the agent or ``score`` raise for harness failures.
        """

    def attempt(self, trial: TrialContext, episode: EpisodeSpec, agent: Agent, score: ScoreFn,
                number: int, prompt: str) -> Attempt:
        """Run one attempt with ``prompt`` and score it.

        Raises:
            ScoringFailure: ``score`` returned a check without a verdict (``error``): no
                controller decides anything, or shows the agent anything, from such a scoring.
        """
        ctx = trial.attempt_context(episode, number, prompt)
        result = agent.run(trial.sandbox, prompt, ctx)
        checks = score(number, result)
        if any(c.outcome == Outcome.error for c in checks):
            raise ScoringFailure(f"attempt {number} of {episode.id}: " + no_verdict_summary(checks), checks)
        return Attempt(number=number, prompt=prompt, result=result, checks=checks)

