"""The agent's transcript in a human-operator episode: Claude Code's session files (JSON
lines under ``~/.claude/projects/<cwd slug>/``), read for what the operator asked and what the
agent did and used.

- **Prompts**: user messages with text, not tool results, not the CLI's meta messages
  (``isMeta``), not a subagent's (``isSidechain``), not slash commands (``/exit``...) or ``!``
  shell escapes; each entry once (its ``uuid``).
- **Files the agent's tool calls wrote**: ``Write``, ``Edit``, ``MultiEdit``, ``NotebookEdit``.
- **The agent's own usage**: per assistant message (entries sharing a message ``id`` repeat its
  usage: the last one counts), input, output, cache write and cache read tokens, one
  ``source="agent"`` figure per model, reconciled with the proxy's rows like any CLI's report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import PurePosixPath

from benchmark.records import UsageCall

#: Tool calls of Claude Code that write a file named by ``file_path`` / ``notebook_path``.
EDIT_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")

_WORKSPACE = PurePosixPath("/workspace")


def _when(entry: dict) -> datetime | None:
    text = entry.get("timestamp")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def session_entries(lines: Iterable[str], since: datetime) -> list[dict]:
    """Entries of Claude Code session files (JSON lines) stamped at or after ``since``."""
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        when = _when(entry) if isinstance(entry, dict) else None
        if when is not None and when >= since:
            out.append(entry)
    return out


def _prompt_text(entry: dict) -> str | None:
    """The text of an operator's prompt entry, or ``None`` when the entry is none."""
    if entry.get("type") != "user" or entry.get("isMeta") or entry.get("isSidechain"):
        return None
    message = entry.get("message") or {}
    if message.get("role") != "user":
        return None
    content = message.get("content")
    if isinstance(content, list):
        if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            return None
        content = "\n".join(b.get("text", "") for b in content
                            if isinstance(b, dict) and b.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        return None
    text = content.strip()
    if text.startswith(("<command-", "<local-command", "<bash-", "Caveat:")):
        return None  # slash commands, `!` shell escapes and the CLI's notes are no prompts
    return text


def prompts(entries: list[dict]) -> list[str]:
    """The operator's prompts to the agent among session entries, in order (one per user
    message, deduplicated by the entry's ``uuid``)."""
    seen, out = set(), []
    for e in entries:
        text = _prompt_text(e)
        if text is not None and e.get("uuid") not in seen:
            seen.add(e.get("uuid"))
            out.append(text)
    return out


def tool_call_files(entries: list[dict]) -> set[str]:
    """Workspace-relative paths the agent's file-writing tool calls named."""
    files = set()
    for e in entries:
        if e.get("type") != "assistant":
            continue
        for block in (e.get("message") or {}).get("content") or []:
            if not isinstance(block, dict) or block.get("type") != "tool_use":
                continue
            if block.get("name") not in EDIT_TOOLS:
                continue
            args = block.get("input") or {}
            raw = args.get("file_path") or args.get("notebook_path")
            if not isinstance(raw, str):
                continue
            path = PurePosixPath(raw)
            if not path.is_absolute():
                path = _WORKSPACE / path
            try:
                files.add(path.relative_to(_WORKSPACE).as_posix())
            except ValueError:
                continue
    return files


def session_usage(entries: list[dict]) -> list[UsageCall]:
    """The agent's own usage figures of the entries: one ``source="agent"`` row per model,
    summed over distinct assistant messages (the last entry of each message id)."""
    last: dict[str, dict] = {}
    for e in entries:
        message = e.get("message") or {}
        if e.get("type") == "assistant" and isinstance(message.get("usage"), dict) and message.get("id"):
            last[message["id"]] = message
    totals: dict[str, dict[str, int]] = {}
    for message in last.values():
        u = message["usage"]
        t = totals.setdefault(str(message.get("model") or ""), dict.fromkeys(
            ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"), 0))
        t["input_tokens"] += int(u.get("input_tokens") or 0)
        t["output_tokens"] += int(u.get("output_tokens") or 0)
        t["cache_write_tokens"] += int(u.get("cache_creation_input_tokens") or 0)
        t["cache_read_tokens"] += int(u.get("cache_read_input_tokens") or 0)
    return [UsageCall(source="agent", api_model=model, **t) for model, t in sorted(totals.items())]
