#!/usr/bin/env python3
"""The operator shell's command hook (runs in the trial container; standard library only).

``hook.py before HISTORY_LINE``: a command starts (bash ``PS0``): log it and keep a snapshot of
the workspace's files. ``hook.py after STATUS``: the command ended (bash ``PROMPT_COMMAND``):
log its end, exit status and the workspace files that changed while it ran (added, removed,
or a different size or modification time; ``.git`` and ``__pycache__`` left out).
``hook.py done``: ``marathon-done``: log the end of the episode. ``hook.py setup``: the
agent's CLI settings an interactive run needs (Claude Code: onboarding done, the trial's key
and ``/workspace`` trusted; merged into ``~/.claude.json``).

The log is ``$MARATHON_OPERATOR_DIR/commands.jsonl``: one JSON object per line, ``{"event":
"start"|"end"|"done", "t": UNIX seconds, ...}``; a start carries ``command`` and ``agent``
(whether its first word is one of ``$MARATHON_AGENT_COMMANDS``), an end ``status`` and
``changed`` (relative paths).
"""

import json
import os
import re
import sys
import time

WORKSPACE = "/workspace"
DIR = os.environ.get("MARATHON_OPERATOR_DIR", "/tmp/marathon/operator")
LOG = os.path.join(DIR, "commands.jsonl")
STATE = os.path.join(DIR, "state.json")
PENDING = os.path.join(DIR, "pending")


def snapshot() -> dict:
    """Relative path -> [size, mtime in ns] of every workspace file but .git and __pycache__."""
    files = {}
    for root, dirs, names in os.walk(WORKSPACE):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            files[os.path.relpath(path, WORKSPACE)] = [st.st_size, st.st_mtime_ns]
    return files


def log(event: dict) -> None:
    """Append one event, stamped with the UNIX time, to the command log."""
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({**event, "t": time.time()}) + "\n")


def first_word(command: str) -> str:
    """The command's program name (leading VAR=value, command, exec, time skipped)."""
    for word in command.split():
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word) or word in ("command", "exec", "time"):
            continue
        return os.path.basename(word)
    return ""


def before(line: str) -> None:
    """A command starts: log it, keep the snapshot its changes are compared with."""
    command = re.sub(r"^\s*\d+\*?\s+", "", line, count=1).strip()
    if not command:
        return
    agents = os.environ.get("MARATHON_AGENT_COMMANDS", "").split()
    with open(STATE, "w", encoding="utf-8") as f:
        json.dump(snapshot(), f)
    open(PENDING, "w").close()
    log({"event": "start", "command": command, "agent": first_word(command) in agents})


def after(status: str) -> None:
    """The command ended: log its status and the files that changed while it ran."""
    if not os.path.exists(PENDING):
        return  # an empty line, or the first prompt
    os.unlink(PENDING)
    try:
        with open(STATE, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    new = snapshot()
    changed = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    log({"event": "end", "status": int(status) if status.lstrip("-").isdigit() else None,
         "changed": changed})


def setup() -> None:
    """Claude Code's settings for an interactive run (onboarding done, key approved, trusted)."""
    path = os.path.expanduser("~/.claude.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    data.update({"hasCompletedOnboarding": True, "bypassPermissionsModeAccepted": True,
                 "theme": data.get("theme", "dark")})
    responses = data.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
    if key and key[-20:] not in responses.setdefault("approved", []):
        responses["approved"].append(key[-20:])
    project = data.setdefault("projects", {}).setdefault(WORKSPACE, {})
    project.update({"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True})
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    settings = os.path.expanduser("~/.claude/settings.json")
    os.makedirs(os.path.dirname(settings), exist_ok=True)
    try:
        with open(settings, encoding="utf-8") as f:
            current = json.load(f)
    except (OSError, ValueError):
        current = {}
    current["skipDangerousModePermissionPrompt"] = True
    with open(settings, "w", encoding="utf-8") as f:
        json.dump(current, f)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "before":
        before(sys.argv[2] if len(sys.argv) > 2 else "")
    elif what == "after":
        after(sys.argv[2] if len(sys.argv) > 2 else "")
    elif what == "done":
        log({"event": "done"})
    elif what == "setup":
        setup()
    else:
        sys.exit(f"usage: {sys.argv[0]} before LINE | after STATUS | done | setup")
