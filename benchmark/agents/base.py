"""The agent interface: prepare a trial's workspace for an arm, run one attempt in the sandbox.

An :class:`Agent` is the harness's adapter to one coding agent. It runs inside the trial's
container (:class:`~benchmark.sandbox.Sandbox`); agents that drive a CLI exec it there as uid
1000 with :meth:`Sandbox.exec <benchmark.sandbox.Sandbox.exec>` and the attempt's time limit.
Agents are registered by name in :mod:`benchmark.agents`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from benchmark.arms import Arm
from benchmark.marathon import EpisodeSpec
from benchmark.proxy import Reconciliation
from benchmark.records import UsageCall
from benchmark.sandbox import Sandbox


class AttemptOutcome(str, Enum):
    """How an agent's attempt ended."""

    ok = "ok"
    """The agent finished on its own and reported no error."""
    agent_error = "agent_error"
    """The agent exited non-zero or reported an error (API failure, crash)."""
    timeout = "timeout"
    """The agent ran past the attempt's time limit and was killed."""


class AttemptContext(BaseModel):
    """What an agent is told about the attempt it runs, besides the prompt."""

    model_config = ConfigDict(frozen=True)

    trial_id: str
    """Id of the trial."""
    episode: EpisodeSpec
    """The episode. Its ``reference`` path is for the ``oracle`` agent only."""
    attempt: int
    """Attempt number in the episode, 1-based; > 1 is a recovery attempt."""
    arm: Arm
    """The trial's arm (instructions, skill, session continuity)."""
    model: str
    """Model name; ``none`` for agents that use no model."""
    effort: str
    """Reasoning effort; ``none`` for agents that use no model."""
    time_limit_s: float
    """Time limit of the attempt in seconds; the agent must be killed past it."""
    transcript: Path
    """Host path where the agent writes its transcript (e.g. a CLI's JSON event stream)."""
    check_env: dict[str, str] = {}
    """Environment the agent's processes need for ``marathon-check`` (the trial's token as
    ``MARATHON_TOKEN``) when the arm allows self-checks; empty otherwise. Agents pass it to the
    processes they start."""


class AttemptResult(BaseModel):
    """What an agent reports about one attempt."""

    outcome: AttemptOutcome
    """``ok``, ``agent_error`` or ``timeout``."""
    duration_s: float
    """Wall time of the attempt in seconds."""
    transcript: Path | None = None
    """Host path of the transcript, if one was written."""
    exit_code: int | None = None
    """Exit status of the agent process; ``None`` when killed or not a process."""
    error: str = ""
    """One-line reason for ``agent_error`` or ``timeout``; empty when ``ok``."""
    usage: list[UsageCall] = []
    """Usage figures of the attempt: the proxy's rows (``source="proxy"``, one per model call)
    then the agent's own (``source="agent"``); empty for agents that use no model."""
    reconciliation: Reconciliation | None = None
    """Proxy vs agent usage of the attempt (agents that call a model through the proxy);
    ``None`` for agents that use no model."""


class Agent(ABC):
    """An adapter to one coding agent. Subclasses set :attr:`name` and implement :meth:`run`."""

    name: ClassVar[str]
    """Registry name, e.g. ``oracle``."""
    uses_model: ClassVar[bool] = False
    """Whether the agent calls a model (then a model name is required for its trials)."""
    protocol: ClassVar[str | None] = None
    """The model protocol the agent speaks (``anthropic-messages``, ``openai-responses`` or
    ``openai-chat``, see :mod:`benchmark.proxy.protocols`); ``None`` for agents that use no
    model."""
    reads_instructions: ClassVar[bool] = False
    """Whether the agent reads ``CLAUDE.md`` / ``AGENTS.md`` and skills: if so,
    :meth:`prepare` writes the arm's material into the workspace."""

    def check_effort(self, effort: str) -> None:
        """Check that the agent accepts reasoning effort ``effort`` (before any container starts).

        Raises:
            MarathonError: it does not (the message names ``--effort``).
        """

    def prepare(self, sandbox: Sandbox, arm: Arm) -> None:
        """Make the workspace ready for the arm, once per trial before the first episode.

        The default writes, for agents that read instructions, the arm's instructions as
        ``CLAUDE.md`` and ``AGENTS.md`` and its skill under ``.claude/skills/<name>/`` and
        ``.agents/skills/<name>/``. Agents that read no such files leave the workspace as is.
        """
        if not self.reads_instructions:
            return
        text = arm.instructions.read_bytes()
        files = {"CLAUDE.md": text, "AGENTS.md": text}
        if arm.skill is not None:
            for path in sorted(p for p in arm.skill.rglob("*") if p.is_file()):
                rel = path.relative_to(arm.skill).as_posix()
                for root in (".claude/skills", ".agents/skills"):
                    files[f"{root}/{arm.skill_name}/{rel}"] = path.read_bytes()
        sandbox.put_files(files)

    @abstractmethod
    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        """Run one attempt: give the agent ``prompt`` in the trial's container and let it work
        on ``/workspace`` for at most ``ctx.time_limit_s`` seconds.

        Returns:
            The attempt's result. An agent failure is an ``agent_error`` result, not an
            exception.

        Raises:
            MarathonError, docker.errors.APIError: the harness itself failed (e.g. the container
                was removed because the run was interrupted).
        """
