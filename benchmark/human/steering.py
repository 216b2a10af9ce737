"""Steering measures of a human-operator episode, read from what the harness recorded.

- **Active steering time**: the operator's input events in the cast (``i`` events, see
  :mod:`benchmark.human.terminal`; answers the terminal sends by itself to a program's queries,
  and focus in/out, are not the operator's: :func:`operator_input`) in time order; each gap between two consecutive input events
  counts when it is at most :data:`IDLE_GAP_S` seconds and is left out otherwise (the operator
  was idle, or waiting without typing). So typing bursts and short pauses count; a long wait
  for the agent or a coffee break does not. Gaps never span two shell sessions.
- **Prompts**: the operator's messages to the agent, read from the agent's transcript
  (:func:`benchmark.human.sessions.prompts`).
- **Shell commands**: the commands the operator ran in the shell, from its command log
  (``commands.jsonl``, written by the shell's hook, kept with the cast); those whose first
  word is the agent's CLI are *agent runs*.
- **Files edited by whom**: each file the episode changed (the episode's workspace diff) is the
  agent's when it changed while an agent run was in progress or an agent tool call (``Write``,
  ``Edit``, ``MultiEdit``, ``NotebookEdit``) named it, and the operator's when it changed while
  any other command ran; a file can be both, or neither (``unattributed``: changed outside any
  logged command).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

#: Longest gap between two input events that still counts as steering, in seconds.
IDLE_GAP_S = 60.0


def operator_pseudonym(operator: str) -> str:
    """The pseudonymous id of an operator: ``op-`` and the first 10 hex digits of the SHA-256
    of ``marathon-operator:<id>`` (the same id always maps to the same pseudonym; the id
    itself is never recorded)."""
    return "op-" + hashlib.sha256(f"marathon-operator:{operator}".encode()).hexdigest()[:10]


#: Input the terminal sends by itself, not the operator: answers to a program's queries
#: (cursor position ``ESC [ r ; c R``, device attributes ``ESC [ ? ... c``, status ``ESC [ ... n``,
#: keyboard-protocol flags ``ESC [ ? ... u``, window reports ``ESC [ ... t``, OSC and DCS
#: strings such as colour answers) and focus in/out (``ESC [ I``, ``ESC [ O``).
_TERMINAL_REPORT = re.compile(r"(?:\x1b\[[?>=]?[\d;]*[Rcnut]|\x1b\[[IO]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                              r"|\x1bP[^\x1b]*\x1b\\)+")


def operator_input(data: str) -> bool:
    """Whether an input event is the operator's (not only reports the terminal sent itself:
    see :data:`_TERMINAL_REPORT`)."""
    return bool(data) and _TERMINAL_REPORT.fullmatch(data) is None


def active_seconds(sessions: Iterable[list[float]], idle_gap_s: float = IDLE_GAP_S) -> float:
    """Active steering seconds: over each session's input-event times (seconds, any order),
    the sum of the gaps between consecutive events that are at most ``idle_gap_s``."""
    total = 0.0
    for times in sessions:
        ts = sorted(times)
        total += sum(b - a for a, b in zip(ts, ts[1:]) if b - a <= idle_gap_s)
    return total


class CommandRun(BaseModel):
    """One command the operator ran in the shell (from the hook's log)."""

    command: str
    """The command line."""
    agent: bool
    """Whether it ran the agent's CLI."""
    started: float
    """UNIX time it started."""
    ended: float | None = None
    """UNIX time it ended; ``None`` when the log has no end (e.g. ``marathon-done``)."""
    status: int | None = None
    """Exit status, when it ended."""
    changed: list[str] = []
    """Workspace files (relative paths) that changed while it ran."""


def read_commands(path: Path) -> tuple[list[CommandRun], bool]:
    """The commands of a hook log and whether it holds a ``done`` event (``marathon-done``).
    A missing file is no command; unreadable lines are skipped."""
    runs: list[CommandRun] = []
    done = False
    if not path.is_file():
        return runs, done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "start":
            runs.append(CommandRun(command=str(ev.get("command", "")), agent=bool(ev.get("agent")),
                                   started=float(ev.get("t", 0))))
        elif ev.get("event") == "end" and runs and runs[-1].ended is None:
            runs[-1].ended = float(ev.get("t", 0))
            runs[-1].status = ev.get("status")
            runs[-1].changed = [str(p) for p in ev.get("changed") or []]
        elif ev.get("event") == "done":
            done = True
    return runs, done


_DIFF_HEADER = re.compile(r"^diff --git a/(.+?) b/(.+)$")


def diff_files(diff: Path) -> list[str]:
    """Paths (relative) a ``git diff`` file touches, sorted; none when it is missing."""
    if not diff.is_file():
        return []
    files = set()
    with open(diff, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _DIFF_HEADER.match(line.rstrip("\n"))
            if m:
                files.update({m.group(1), m.group(2)})
    return sorted(files)


class Attribution(BaseModel):
    """Who edited the files an episode changed."""

    changed: list[str]
    """Files the episode's workspace diff touches."""
    agent: list[str]
    """Those the agent edited (an agent run was in progress, or a tool call named them)."""
    operator: list[str]
    """Those the operator edited directly (another command was in progress)."""
    unattributed: list[str]
    """Those changed outside any logged command."""

    @property
    def both(self) -> list[str]:
        """Files edited by the agent and by the operator."""
        return sorted(set(self.agent) & set(self.operator))


def attribute(changed: list[str], runs: list[CommandRun], tool_files: set[str]) -> Attribution:
    """Attribute each changed file to the agent and/or the operator (module docstring)."""
    by_agent = set(tool_files)
    by_operator = set()
    for run in runs:
        (by_agent if run.agent else by_operator).update(run.changed)
    agent = sorted(f for f in changed if f in by_agent)
    operator = sorted(f for f in changed if f in by_operator)
    rest = sorted(f for f in changed if f not in by_agent and f not in by_operator)
    return Attribution(changed=list(changed), agent=agent, operator=operator, unattributed=rest)
