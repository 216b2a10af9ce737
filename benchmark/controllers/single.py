"""The ``single`` controller: one attempt per episode, with the brief as the prompt."""

from __future__ import annotations

from benchmark.agents.base import Agent
from benchmark.controllers.base import (Attempt, Controller, ScoreFn, TrialContext,
                                        default_decision)
from benchmark.marathon import EpisodeSpec


class SingleController(Controller):
    """One attempt per episode; the score after it is the episode's score."""

    name = "single"

    def run(self, trial: TrialContext, episode: EpisodeSpec, brief: str, agent: Agent,
            score: ScoreFn) -> list[Attempt]:
        """Run exactly one attempt with the brief (decision ``accept`` or ``stop_attempts``)."""
        attempt = self.attempt(trial, episode, agent, score, 1, brief)
        attempt.decision = default_decision(attempt.green, 1, 1)
        return [attempt]
