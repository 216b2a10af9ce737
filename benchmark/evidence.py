"""The evidence ledger: one JSON line per event of a governed trial, appended and flushed.

``<run dir>/evidence/<trial>.jsonl`` is the trial's history as the governed controller lived it:
every attempt started and scored (snapshot, gate verdicts, usage), every regression found or
repaired, every decision with the rule that produced it, every rollback, every acceptance,
every budget reached, and every driver restart (``resumed``). Read alone, it explains why each
episode was accepted or stopped.

Crash safety: an event is one ``write`` of a whole line, flushed and ``fsync``-ed before the
controller acts on it, and the file is only ever appended to. Sequence numbers (``seq``) are
continuous over the trial's whole life: a resumed trial continues after the last event on disk,
so events are neither lost nor duplicated. A torn last line (power loss mid-write) is cut off
when the ledger is reopened, and the ``resumed`` event says how many bytes were dropped.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Kinds of events (see docs/arms.md for when each is written).
EventKind = Literal[
    "trial_started",       # first event of a trial: arm settings
    "resumed",             # a new driver session picked the trial up after a crash or stop
    "episode_started",     # the controller began an episode: contract size, open regressions
    "attempt_started",     # the agent is about to run: attempt number, kind, prompt digest
    "scored",              # the attempt's snapshot was scored: gates, score, usage, spend
    "regression_found",    # a gate green at the end of an earlier episode fails now
    "regression_repaired", # an open regression's gate is green again
    "decision",            # the rule applied after a scoring: action, rule, reason
    "rollback",            # the workspace was reset to the last all-green commit
    "budget_hit",          # a token or USD budget was reached: the loop stops
    "accepted",            # the episode ended all green
    "episode_stopped",     # the episode ended red (attempts or budget exhausted)
]


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


class EvidenceEvent(BaseModel):
    """One line of the evidence ledger."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1)
    """Sequence number in the trial, 1-based, continuous across driver sessions."""
    at: datetime
    """When the event was written (UTC)."""
    session: int = Field(ge=1)
    """Driver session of the trial that wrote it: 1, then +1 after each ``resumed``."""
    trial_id: str
    """Id of the trial."""
    kind: EventKind
    """What happened."""
    episode: str | None = None
    """Episode id; ``None`` for trial-level events."""
    attempt: int | None = None
    """Attempt number in the episode, 1-based; ``None`` when not about one attempt."""
    snapshot: str | None = None
    """Git commit of the workspace snapshot concerned (scored, rolled back to, accepted)."""
    snapshot_sha256: str | None = None
    """SHA-256 of the workspace archive that was scored (``scored`` events)."""
    gates: dict[str, bool] | None = None
    """Gate -> passes, after the attempt (``scored``, ``accepted``, ``episode_stopped``)."""
    score: float | None = None
    """Share of active gates passing, 0..1."""
    tokens: int | None = None
    """Tokens the attempt spent (``scored``); see :mod:`benchmark.budget` for what counts."""
    usd: float | None = None
    """USD the attempt spent (``scored``)."""
    episode_tokens: int | None = None
    """Tokens the episode has spent so far."""
    episode_usd: float | None = None
    """USD the episode has spent so far."""
    trial_tokens: int | None = None
    """Tokens the trial has spent so far."""
    trial_usd: float | None = None
    """USD the trial has spent so far."""
    gate: str | None = None
    """The gate concerned (``regression_found``, ``regression_repaired``)."""
    action: str | None = None
    """The decision taken (``decision``): ``accept``, ``repair``, ``rollback``,
    ``stop_attempts``, ``stop_budget``."""
    rule: str | None = None
    """The rule of docs/arms.md that produced the decision, e.g. ``R4``."""
    detail: str = ""
    """Human-readable explanation (one or a few sentences)."""
    data: dict = {}
    """Further structured facts (e.g. prompt digest, attempt kind, arm settings)."""


class EvidenceLedger:
    """Appends events to one trial's ledger file; one writer (the trial's thread) at a time."""

    def __init__(self, path: Path, trial_id: str):
        """Open (or create) the ledger at ``path``; cut off a torn last line if there is one.

        Raises:
            OSError: the file cannot be created or read.
        """
        self.path = path
        """The JSONL file."""
        self.trial_id = trial_id
        """Id of the trial."""
        self.dropped_bytes = 0
        """Bytes of a torn last line cut off on opening (0 normally)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        events = []
        if path.exists():
            raw = path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]
            if len(keep) != len(raw):
                self.dropped_bytes = len(raw) - len(keep)
                with open(path, "r+b") as f:
                    f.truncate(len(keep))
                    os.fsync(f.fileno())
            events = [EvidenceEvent.model_validate_json(line) for line in keep.splitlines() if line]
        self.last_seq = events[-1].seq if events else 0
        """Sequence number of the last event on disk (0 for an empty ledger)."""
        self.session = (events[-1].session if events else 1)
        """Driver session number used for new events."""
        self.existed = bool(events)
        """Whether the ledger held events when opened (the trial ran before: a resume)."""

    def start_session(self) -> int:
        """Begin a new driver session (after a restart); returns its number."""
        self.session += 1
        return self.session

    def append(self, kind: EventKind, **fields) -> EvidenceEvent:
        """Write one event (one line, flushed and fsync-ed) and return it.

        Raises:
            OSError: the write failed (the trial fails; nothing is half-written in memory).
        """
        event = EvidenceEvent(seq=self.last_seq + 1, at=utcnow(), session=self.session,
                              trial_id=self.trial_id, kind=kind, **fields)
        line = event.model_dump_json(exclude_defaults=False) + "\n"
        with open(self.path, "ab") as f:
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.last_seq = event.seq
        return event


def read_evidence(path: Path) -> list[EvidenceEvent]:
    """Every complete event of a ledger file, in order (a torn last line is skipped)."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    raw = raw[: raw.rfind(b"\n") + 1]
    return [EvidenceEvent.model_validate_json(line) for line in raw.splitlines() if line]


def evidence_path(run_dir: Path, trial_id: str) -> Path:
    """Where a trial's evidence ledger lives: ``<run dir>/evidence/<trial>.jsonl``."""
    return run_dir / "evidence" / f"{trial_id}.jsonl"
