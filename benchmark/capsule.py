"""The capsule: a governed trial's memory, a JSON state file the harness keeps outside the
workspace, at ``<run dir>/capsules/<trial>.json`` (rewritten atomically after every step).

It holds the *product contract* (the acceptance criteria of every brief so far, each with the
gates that protect it), the gate history of every episode (verdicts after each attempt and at
the episode's end), the open regressions, the decisions taken (with the rule that produced
each), the rollbacks, the workspace commits (the last all-green one is the rollback target) and
the usage spent per episode and per trial. The agent never reads the file: the controller puts
the contract and the open regressions into its prompts.

After a crash, :meth:`Capsule.rewind` makes the capsule agree with the recorded results: every
episode from the one the driver restarts is moved to :attr:`Capsule.abandoned` (kept, never
deleted), and the open regressions and the last all-green commit are those at the end of the
last recorded episode. The capsule is always saved before the driver records an episode, so it
is never behind the records.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from benchmark.budget import Spend
from benchmark.controllers.base import Decision
from benchmark.errors import MarathonError
from benchmark.evidence import utcnow
from benchmark.storage import write_bytes

#: Layout version of the capsule file.
CAPSULE_VERSION = 1

#: How an attempt came about: the episode's first, a repair re-prompt on the same workspace, or
#: a retry of the brief after the workspace was rolled back.
AttemptKind = Literal["first", "repair", "retry_after_rollback"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContractItem(_Model):
    """One episode's part of the product contract."""

    episode: str
    """Episode id, e.g. ``e1``."""
    title: str
    """Episode title, e.g. ``Ingest``."""
    criteria: str
    """The brief's acceptance criteria (its ``Acceptance criteria`` section; the whole brief
    without its title when it has none)."""
    gates: list[str]
    """Gates activated by this episode: they protect this item (named to the agent only when
    they fail)."""


class Regression(_Model):
    """A gate green at the end of an earlier episode that fails now."""

    gate: str
    """The gate."""
    protects: str
    """Episode id of the contract item the gate protects (the episode that activated it)."""
    green_at_end_of: str
    """The last earlier episode at whose end the gate was green."""
    found_in: str
    """Episode in which the regression was found."""
    found_at_attempt: int
    """Attempt after which it was found, 1-based."""


class AttemptLog(_Model):
    """One scored attempt and the decision taken after it."""

    attempt: int
    """Attempt number in the episode, 1-based."""
    kind: AttemptKind
    """``first``, ``repair`` or ``retry_after_rollback``."""
    commit: str | None
    """Workspace commit scored; ``None`` if the agent broke the repository."""
    snapshot_sha256: str
    """SHA-256 of the workspace archive scored."""
    gates: dict[str, bool]
    """Gate -> passes after the attempt."""
    score: float
    """Share of active gates passing, 0..1."""
    spend: Spend
    """Tokens and USD the attempt spent."""
    regressed: list[str]
    """Failing gates that were green at the end of an earlier episode."""
    new_failing: list[str]
    """Failing gates activated by this episode."""
    carried_failing: list[str]
    """Failing gates of earlier episodes that were never green at an episode's end."""
    decision: Decision
    """What the controller decided after this attempt."""
    rule: str
    """The rule of docs/arms.md that decided, e.g. ``R5``."""
    reason: str
    """Why, in one sentence."""
    at: datetime
    """When the decision was taken (UTC)."""


class EpisodeState(_Model):
    """What happened in one episode of the trial."""

    episode: str
    """Episode id."""
    index: int
    """Position in the marathon, 1-based."""
    status: Literal["in_progress", "accepted", "stopped", "abandoned"]
    """``in_progress``; ``accepted`` (ended all green); ``stopped`` (ended red: attempts or
    budget exhausted); ``abandoned`` (in progress or unrecorded when the driver died; the
    episode was restarted)."""
    started_at: datetime
    """When the episode began (UTC)."""
    ended_at: datetime | None = None
    """When it ended (UTC); ``None`` while in progress."""
    start_commit: str | None = None
    """Workspace commit the episode started from."""
    attempts: list[AttemptLog] = []
    """Every scored attempt with its decision (the gate history of the episode)."""
    rollbacks: int = 0
    """Rollbacks to the last all-green commit made in the episode."""
    spend: Spend = Spend()
    """Tokens and USD the episode spent."""
    final_gates: dict[str, bool] | None = None
    """Gate verdicts at the end of the episode (after its final attempt)."""
    final_commit: str | None = None
    """Workspace commit at the end of the episode."""
    open_regressions_at_end: list[Regression] = []
    """Regressions still open when the episode ended."""
    end_reason: str = ""
    """Why the episode ended (the final decision's reason)."""


class Capsule(_Model):
    """The state file of one governed trial (see the module docstring)."""

    version: int = CAPSULE_VERSION
    """Layout version of the file."""
    trial_id: str
    """Id of the trial."""
    marathon: str
    """Marathon name."""
    arm: str
    """Arm name."""
    updated_at: datetime
    """When the file was last written (UTC)."""
    sessions: int = 1
    """Driver sessions that worked on the trial (1 + restarts)."""
    contract: list[ContractItem] = []
    """The product contract: one item per episode started so far, in order."""
    episodes: list[EpisodeState] = []
    """Episodes of the current history, in order: finished ones, then at most one in progress."""
    abandoned: list[EpisodeState] = []
    """Episodes that were in progress (or unrecorded) when a driver died, kept for the record."""
    open_regressions: list[Regression] = []
    """Regressions open now."""
    last_green_commit: str | None = None
    """The last workspace commit on which every active gate was green at an episode's end: the
    rollback target. ``None`` before any episode ended all green."""
    last_green_episode: str | None = None
    """The episode that ended on :attr:`last_green_commit`."""
    trial_spend: Spend = Spend()
    """Tokens and USD the trial spent, abandoned attempts included."""

    @classmethod
    def new(cls, trial_id: str, marathon: str, arm: str) -> "Capsule":
        """An empty capsule for a trial that starts now."""
        return cls(trial_id=trial_id, marathon=marathon, arm=arm, updated_at=utcnow())

    @classmethod
    def load(cls, path: Path) -> "Capsule | None":
        """The capsule at ``path``, or ``None`` when there is none.

        Raises:
            MarathonError: the file is not a valid capsule.
        """
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValueError as e:
            raise MarathonError(f"{path}: not a valid capsule: {str(e).splitlines()[0]}") from None

    def save(self, path: Path) -> None:
        """Write the capsule atomically (temp file, fsync, ``os.replace``)."""
        self.updated_at = utcnow()
        write_bytes(path, self.model_dump_json(indent=2) + "\n")

    @property
    def current(self) -> EpisodeState:
        """The episode in progress.

        Raises:
            MarathonError: no episode is in progress.
        """
        if not self.episodes or self.episodes[-1].status != "in_progress":
            raise MarathonError(f"capsule of {self.trial_id}: no episode in progress")
        return self.episodes[-1]

    def finished(self) -> list[EpisodeState]:
        """Episodes that ended (accepted or stopped), in order."""
        return [e for e in self.episodes if e.status in ("accepted", "stopped")]

    def green_at_end_of(self, gate: str) -> str | None:
        """The last finished episode at whose end ``gate`` was green, or ``None``."""
        for e in reversed(self.finished()):
            if (e.final_gates or {}).get(gate):
                return e.episode
        return None

    def rewind(self, index: int) -> list[EpisodeState]:
        """Drop the state of every episode at position ``index`` (1-based) or later: the driver
        restarts at that episode from the workspace of the one before.

        Dropped episodes go to :attr:`abandoned` (status ``abandoned``); contract items of those
        episodes are removed (they are added again when the episode starts); open regressions
        and the last all-green commit become those at the end of the last kept episode. The
        trial's spend is kept (it was really spent).

        Returns:
            The episodes moved to :attr:`abandoned`.
        """
        dropped = [e for e in self.episodes if e.index >= index]
        self.episodes = [e for e in self.episodes if e.index < index]
        for e in dropped:
            e.status = "abandoned"
            e.ended_at = e.ended_at or utcnow()
        self.abandoned += dropped
        kept = {e.episode for e in self.episodes}
        self.contract = [c for c in self.contract if c.episode in kept]
        last = self.finished()[-1:] or [None]
        self.open_regressions = list(last[0].open_regressions_at_end) if last[0] else []
        self.last_green_commit = self.last_green_episode = None
        for e in self.finished():
            if e.status == "accepted" and e.final_commit:
                self.last_green_commit, self.last_green_episode = e.final_commit, e.episode
        return dropped


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


def acceptance_criteria(brief: str) -> str:
    """The ``Acceptance criteria`` section of a brief (up to the next heading of the same or a
    higher level), or the whole brief without its leading title line when it has none."""
    lines = brief.splitlines()
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and m.group(2).lower().startswith("acceptance criteria"):
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1:]:
                n = _HEADING.match(nxt)
                if n and len(n.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body).strip()
    if lines and _HEADING.match(lines[0]):
        lines = lines[1:]
    return "\n".join(lines).strip()


def capsule_path(run_dir: Path, trial_id: str) -> Path:
    """Where a trial's capsule lives: ``<run dir>/capsules/<trial>.json``."""
    return run_dir / "capsules" / f"{trial_id}.json"
