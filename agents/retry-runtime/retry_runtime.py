#!/usr/bin/env python3
"""retry-runtime: an example third-party runtime wrapped as a marathon agent.

It runs Claude Code on the brief, then asks the harness for a self-check (`marathon-check`);
while a gate is red and tries remain, it resumes the same Claude Code session with the failing
gate and check names and checks again. It stops at the first green self-check, when the arm's
self-check limit is reached, or after --tries repairs. Everything Claude Code prints (its
stream-json events) goes to stdout, so the harness reads its usage as for claude-code; each
self-check adds one JSON line {"type": "marathon-check", "exit": N, "text": "..."}.

A real product is wrapped the same way: its own loop calls `marathon-check` where it would run
its own gates, and the harness records and limits every call (self_checks.parquet).

Exit status: that of the last Claude Code run (0 when it ended without error).
"""

import argparse
import json
import subprocess
import sys
import uuid

REPAIR = ("A self-check of the workspace by the harness's hidden gates found failures:\n\n"
          "{report}\n\nFix the workspace so that these gates pass, without breaking anything "
          "that works now.")


def claude(prompt: str, model: str, session: str, resume: bool, effort: str | None) -> int:
    argv = ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose",
            "--model", model, "--dangerously-skip-permissions"]
    if effort:
        argv += ["--effort", effort]
    argv += ["--resume", session] if resume else ["--session-id", session]
    sys.stdout.flush()
    return subprocess.run(argv, stdin=subprocess.DEVNULL).returncode


def check() -> tuple[int, str]:
    proc = subprocess.run(["marathon-check"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True)
    text = (proc.stdout + proc.stderr).strip()
    print(json.dumps({"type": "marathon-check", "exit": proc.returncode, "text": text}),
          flush=True)
    return proc.returncode, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--effort")
    parser.add_argument("--tries", type=int, default=3, help="repairs after a red self-check")
    args = parser.parse_args()
    with open(args.prompt_file, encoding="utf-8") as f:
        brief = f.read()
    session = str(uuid.uuid4())
    status = claude(brief, args.model, session, False, args.effort)
    repairs = 0
    while status == 0:
        code, text = check()
        if code == 4:  # no verdict this time: not counted, ask again (bounded by the tries)
            repairs += 1
            if repairs > args.tries:
                break
            continue
        if code != 1 or repairs >= args.tries:  # green, limit reached, unavailable, or done
            break
        repairs += 1
        status = claude(REPAIR.format(report=text), args.model, session, True, args.effort)
    return status


if __name__ == "__main__":
    sys.exit(main())
