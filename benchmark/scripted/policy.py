"""Deterministic policies of the scripted model: what to answer, given a conversation.

A policy sees the conversation in an API-neutral form (:class:`Turn` list) and returns an
:class:`Action`: run one shell command (through whatever shell tool the CLI offers), or end the
turn with a text message. Policies are stateless: everything they need is in the request (the
CLIs send the whole conversation each time).

- The *episode* is the one whose brief's first heading appears in the most recent user text
  that holds any brief heading (a re-prompt without the brief, in a continued session, still
  finds the brief earlier in the history).
- After a tool result, every policy ends the turn with a short text.
- ``scripted/oracle`` writes ``reference/<episode>`` over ``/workspace``.
- ``scripted/nop`` answers with text only and changes nothing.
- ``scripted/forgetful`` writes ``reference/<episode>`` patched with ``traps/<episode>.patch``
  (the episode's new behaviour, but an earlier gate regressed; see ``traps/traps.toml``); an
  episode without a trap (E1) gets its reference. When the latest user prompt names one of the
  gates the trap breaks (as the ``feedback-retry`` re-prompt does: ``gate `privacy```), it
  writes the reference instead: the repair.

Files are written by one command that unpacks a base64 ``tar.gz`` into ``/workspace``
(overwriting; files of the arm such as ``CLAUDE.md`` are left alone).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from benchmark.errors import MarathonError
from benchmark.marathon import Marathon

#: Policies by model name (``scripted/<policy>``).
POLICIES = ("oracle", "nop", "forgetful", "overloaded", "drop-stream")


@dataclass(frozen=True)
class Turn:
    """One piece of a conversation, API-neutral."""

    role: Literal["user", "assistant"]
    """Who said it (system/developer text counts as ``user`` context)."""
    kind: Literal["text", "tool_call", "tool_result"]
    """Plain text, a tool call by the model, or a tool's result."""
    text: str
    """The text, the call's input as JSON, or the result's text."""
    msg: int = 0
    """Index of the message (or input item) the turn belongs to."""


class Action(BaseModel):
    """What the model does in one response."""

    kind: Literal["command", "text"]
    """Run a shell command (``command``) or end the turn with ``text``."""
    text: str
    """The message to the user (for ``command``, a one-line note sent before the call)."""
    command: str = ""
    """The shell command (bash) for ``command``."""


class TrapSpec(BaseModel):
    """One entry of ``traps/traps.toml``."""

    trap: str
    """What the trap variant does wrong."""
    breaks: list[str]
    """Gates (of earlier episodes) the variant fails."""


def _tar_gz(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 1000
            info.uname = info.gname = ""
            info.mtime = 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def write_command(archive: bytes, note: str) -> str:
    """A bash command that unpacks a ``tar.gz`` (embedded as base64) into ``/workspace``."""
    b64 = base64.b64encode(archive).decode()
    return (f"cd /workspace && echo '{b64}' | base64 -d | tar -xzf - --no-same-owner -m "
            f"&& echo {note!r}")


class Library:
    """The solutions the policies write, per episode of one marathon, built once.

    Raises:
        MarathonError: a trap patch does not apply.
    """

    def __init__(self, marathon: Marathon):
        self.marathon = marathon
        """The marathon played."""
        self.headings: dict[str, str] = {}
        """Episode id -> first heading line of its brief (how a prompt is recognized)."""
        for ep in marathon.episodes:
            lines = [ln.strip() for ln in marathon.brief_text(ep.id).splitlines()]
            heading = next((ln for ln in lines if ln.startswith("#")), lines[0] if lines else "")
            self.headings[ep.id] = heading
        traps_dir = marathon.root / "traps"
        spec_file = traps_dir / "traps.toml"
        raw = tomllib.loads(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else {}
        self.traps: dict[str, TrapSpec] = {k: TrapSpec.model_validate(v) for k, v in raw.items()}
        """Episode id -> trap spec, for episodes with a trap variant."""
        self._reference: dict[str, bytes] = {}
        self._trapped: dict[str, bytes] = {}
        for ep in marathon.episodes:
            self._reference[ep.id] = _tar_gz(ep.reference)
            if ep.id in self.traps:
                self._trapped[ep.id] = self._apply_trap(ep.reference, traps_dir / f"{ep.id}.patch")

    @staticmethod
    def _apply_trap(reference: Path, patch: Path) -> bytes:
        with tempfile.TemporaryDirectory(prefix="marathon-trap-") as tmp:
            copy = Path(tmp) / "ws"
            shutil.copytree(reference, copy)
            proc = subprocess.run(["patch", "-s", "-p1", "-d", str(copy), "-i", str(patch)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise MarathonError(f"{patch}: does not apply to {reference}: "
                                    f"{(proc.stdout + proc.stderr).strip().splitlines()[:1]}")
            return _tar_gz(copy)

    def reference(self, episode: str) -> bytes:
        """``tar.gz`` of the episode's reference."""
        return self._reference[episode]

    def trapped(self, episode: str) -> bytes | None:
        """``tar.gz`` of the episode's trap variant, or ``None`` without a trap."""
        return self._trapped.get(episode)

    def episode_of(self, turns: list[Turn]) -> str | None:
        """The episode whose brief heading is in the latest user text holding any heading."""
        for turn in reversed(turns):
            if turn.role != "user" or turn.kind != "text":
                continue
            found = [(turn.text.rfind(h), e) for e, h in self.headings.items() if h and h in turn.text]
            if found:
                return max(found)[1]
        return None


def latest_prompt(turns: list[Turn]) -> str:
    """The text of the latest user message that holds text (the prompt of the current run),
    all its text parts joined."""
    last = next((t.msg for t in reversed(turns) if t.role == "user" and t.kind == "text"), None)
    return "\n".join(t.text for t in turns if t.msg == last and t.role == "user" and t.kind == "text")


def names_gate(prompt: str, gates: list[str]) -> bool:
    """Whether ``prompt`` names one of ``gates`` as a gate (``gate `name``` or ``gate name``)."""
    return any(re.search(rf"\bgates?\s+`?{re.escape(g)}`?", prompt) for g in gates)


def decide(policy: str, turns: list[Turn], library: Library) -> Action:
    """The action of ``policy`` (``oracle``, ``nop``, ``forgetful``) on a conversation.

    Raises:
        MarathonError: unknown policy.
    """
    if policy not in ("oracle", "nop", "forgetful"):
        raise MarathonError(f"unknown scripted policy {policy!r} (known: {', '.join(POLICIES)})")
    model = f"scripted/{policy}"
    if policy == "nop":
        return Action(kind="text", text=f"{model}: I leave the workspace as it is.")
    last = next((t for t in reversed(turns) if t.role == "user"), None)
    episode = library.episode_of(turns)
    if last is not None and last.kind == "tool_result":
        where = f"episode {episode}" if episode else "the task"
        return Action(kind="text", text=f"{model}: done, the files for {where} are written.")
    if episode is None:
        return Action(kind="text", text=f"{model}: I found no episode brief in the conversation; "
                                        "nothing to do.")
    archive, what = library.reference(episode), f"reference {episode}"
    if policy == "forgetful":
        trap = library.traps.get(episode)
        trapped = library.trapped(episode)
        if trap is not None and trapped is not None and not names_gate(latest_prompt(turns), trap.breaks):
            archive, what = trapped, f"{episode} (forgetting: {trap.trap})"
        elif trap is not None:
            what = f"reference {episode} (repairing gate {', '.join(trap.breaks)})"
    note = f"{model} wrote {what}"
    return Action(kind="command", text=f"{model}: writing {what}.",
                  command=write_command(archive, note))
