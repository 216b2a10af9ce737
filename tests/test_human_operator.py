"""The human-operator arm: the steering rules on their own, the refusals before any container
starts, and a whole trial driven through tmux as the operator (send-keys, reading the screen
with capture-pane) against the scripted model ``scripted/forgetful`` (a simulation): the
operator prompts the real Claude Code CLI, self-checks, prompts a repair, edits a file, ends
each episode with ``marathon-done``; the records hold the prompts, commands, files and
steering time the script produced, and the report shows them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.arms import load_arm
from benchmark.controllers.human import HumanOperatorController
from benchmark.errors import MarathonError
from benchmark.human import sessions, steering
from benchmark.human.terminal import read_cast
from conftest import ROOT, unique_run_id


# -- the rules ---------------------------------------------------------------------------------

def test_active_steering_leaves_out_idle_gaps_and_never_spans_sessions():
    # gaps 2, 3, 100 (idle), 1; a second session 500 s later adds its own 4
    assert steering.active_seconds([[0, 2, 5, 105, 106], [606, 610]], idle_gap_s=60) == 10
    assert steering.active_seconds([[3.0]]) == 0 and steering.active_seconds([]) == 0
    assert steering.active_seconds([[0, 60]], idle_gap_s=60) == 60  # at the threshold: counts
    assert steering.active_seconds([[0, 60.5]], idle_gap_s=60) == 0


def test_terminal_reports_are_not_operator_input():
    for report in ["\x1b[12;40R", "\x1b[?62;22c", "\x1b[0n", "\x1b[?1u", "\x1b[I", "\x1b[O",
                   "\x1b]11;rgb:0000/0000/0000\x07", "\x1b]10;rgb:ffff/ffff/ffff\x1b\\",
                   "\x1bP>|tmux 3.3a\x1b\\", "\x1b[I\x1b[3;1R"]:
        assert not steering.operator_input(report), repr(report)
    for typed in ["l", "ls\r", "\x1b[A", "\x1b", "\x03", "\x1b[<0;10;5M", "a\x1b[12;40R"]:
        assert steering.operator_input(typed), repr(typed)


def test_prompts_are_the_operators_messages_only():
    t = "2026-12-02T10:00:0{}.000Z"
    entries = [
        {"type": "user", "uuid": "a", "timestamp": t.format(1), "message": {"role": "user", "content": "do E1"}},
        {"type": "user", "uuid": "b", "timestamp": t.format(2), "isMeta": True,
         "message": {"role": "user", "content": "Caveat: meta"}},
        {"type": "user", "uuid": "c", "timestamp": t.format(3), "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "x", "content": "ok"}]}},
        {"type": "user", "uuid": "d", "timestamp": t.format(4), "message": {
            "role": "user", "content": "<command-name>/exit</command-name>"}},
        {"type": "assistant", "uuid": "e", "timestamp": t.format(5), "message": {"role": "assistant", "content": [
            {"type": "tool_use", "name": "Write", "input": {"file_path": "/workspace/a/b.py"}},
            {"type": "tool_use", "name": "Edit", "input": {"file_path": "c.py"}},
            {"type": "tool_use", "name": "Write", "input": {"file_path": "/etc/passwd"}},
            {"type": "tool_use", "name": "Bash", "input": {"command": "touch d.py"}}]}},
        {"type": "user", "uuid": "f", "timestamp": t.format(6), "message": {"role": "user", "content": [
            {"type": "text", "text": "now repair gate privacy"}]}},
    ]
    lines = [json.dumps(e) for e in entries] + ["not json"]
    since = pd.Timestamp("2026-12-02T10:00:02Z").to_pydatetime()
    assert sessions.prompts(sessions.session_entries(lines, pd.Timestamp(0, tz="UTC").to_pydatetime())) == [
        "do E1", "now repair gate privacy"]
    assert sessions.prompts(sessions.session_entries(lines, since)) == ["now repair gate privacy"]
    assert sessions.tool_call_files(entries) == {"a/b.py", "c.py"}


def test_the_agents_own_usage_counts_each_message_once():
    def msg(mid, inp, out, model="m"):
        return {"type": "assistant", "message": {"id": mid, "model": model, "usage": {
            "input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 1}}}
    rows = sessions.session_usage([msg("a", 10, 1), msg("a", 10, 5), msg("b", 20, 2),
                                   msg("c", 1, 1, model="n"), {"type": "user", "message": {}}])
    assert [(r.api_model, r.input_tokens, r.output_tokens, r.cache_read_tokens, r.source)
            for r in rows] == [("m", 30, 7, 2, "agent"), ("n", 1, 1, 1, "agent")]


def test_files_are_attributed_by_the_command_that_changed_them():
    runs = [steering.CommandRun(command="claude", agent=True, started=1, ended=2, changed=["a", "b"]),
            steering.CommandRun(command="vi b", agent=False, started=3, ended=4, changed=["b", "c"])]
    who = steering.attribute(["a", "b", "c", "d", "e"], runs, {"e"})
    assert (who.agent, who.operator, who.both, who.unattributed) == (["a", "b", "e"], ["b", "c"], ["b"], ["d"])


def test_the_operator_is_recorded_as_a_stable_pseudonym():
    p = steering.operator_pseudonym("alice")
    assert re.fullmatch(r"op-[0-9a-f]{10}", p) and p == steering.operator_pseudonym("alice")
    assert "alice" not in p and p != steering.operator_pseudonym("bob")


# -- refusals ----------------------------------------------------------------------------------

def test_without_a_terminal_the_run_is_refused_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-c", "from benchmark.cli import main; main()", "run", "--marathon", "ledger",
         "--arm", "human-operator", "--agent", "claude-code", "--model", "scripted/forgetful",
         "--out", "/nonexistent/never-written"],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "human-operator" in lines[0] and "terminal" in lines[0], lines
    assert not Path("/nonexistent/never-written").exists()


def test_more_than_one_job_or_an_agent_without_an_interactive_mode_is_refused(monkeypatch):
    import benchmark.controllers.human as human

    monkeypatch.setattr(human, "is_terminal", lambda: True)
    arm = load_arm("human-operator")
    with pytest.raises(MarathonError, match=r"^--jobs: arm human-operator .*--jobs 1 \(got 2\)"):
        HumanOperatorController.check_plan(arm, 2, ["claude-code"])
    with pytest.raises(MarathonError, match=r"^--agent: arm human-operator .*'codex'"):
        HumanOperatorController.check_plan(arm, 1, ["codex"])
    HumanOperatorController.check_plan(arm, 1, ["claude-code"])


# -- a whole trial through tmux ----------------------------------------------------------------

class Operator:
    """A scripted operator at a tmux terminal: types, and reads the screen."""

    def __init__(self, socket: str):
        self.tmux = ["tmux", "-L", socket]
        self.sent: list[float] = []
        """When each keystroke chunk was sent to the shell (monotonic seconds)."""

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-J", "-t", "op"],
                              capture_output=True, text=True, check=True).stdout

    def wait(self, pattern: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"never on screen: {pattern!r}; screen:\n{self.screen()}")

    def keys(self, *keys: str, literal: bool = False, record: bool = True) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "op", *(["-l"] if literal else []), *keys],
                       check=True)
        if record:
            self.sent.append(time.monotonic())

    def type(self, line: str) -> None:
        """Type a line and Enter (two input events)."""
        self.keys(line, literal=True)
        time.sleep(0.3)
        self.keys("Enter")

    def prompt_agent(self, text: str, done: str) -> None:
        """Type a prompt into the agent's CLI, wait for ``done``, leave the CLI. (Enter comes
        a second after the text shows: the CLI reads a fast burst as a paste, where an Enter
        is a new line.)"""
        self.wait(r"bypass permissions on")
        self.keys(text, literal=True)
        self.wait(re.escape(text[-30:]))
        time.sleep(1.0)
        self.keys("Enter")
        self.wait(done)
        self.keys("/exit", literal=True)
        self.wait(r"/exit")
        time.sleep(1.0)
        self.keys("Enter")


@pytest.mark.docker
def test_an_operator_steers_a_whole_trial_through_tmux(tmp_path, images):
    from benchmark.sandbox import remove_run_resources

    assert shutil.which("tmux"), "tmux not found: `make setup` installs it"
    run_id = unique_run_id("human")
    socket = f"marathon-test-{run_id}"
    op = Operator(socket)
    cmd = (f"cd {ROOT} && {sys.executable} -c 'from benchmark.cli import main; main()' run "
           f"--marathon ledger --arm human-operator --agent claude-code --model scripted/forgetful "
           f"--replicates 1 --episodes 2 --out {tmp_path} --run-id {run_id} --operator test-operator "
           f"--time-limit 600; echo RUN-EXIT=$?")
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", "op", "-x", "220", "-y", "50",
                    "bash --norc --noprofile"], check=True, env={**os.environ, "TERM": "xterm-256color"})
    spans: dict[str, tuple[int, int]] = {}
    try:
        op.keys(cmd, literal=True, record=False)
        op.keys("Enter", record=False)
        shell = r"\[marathon {}\] /workspace \$ *$"
        # E1: a prompt with the brief's heading, end
        op.wait(r"Press Enter to open the shell of episode e1")
        op.keys("Enter", record=False)  # read by the harness, not the shell: not recorded
        first = len(op.sent)
        op.wait(shell.format("e1"))
        op.type("claude")
        op.prompt_agent("Please implement this brief: # Episode 1: ingest events into a ledger",
                        r"done, the files for episode e1 are written")
        op.wait(shell.format("e1"))
        op.type("marathon-done")
        spans["e1"] = (first, len(op.sent))
        # E2: the trap; the self-check names the gate; a repair prompt in the same session;
        # a file edited by the operator; end (green: the repair worked)
        op.wait(r"Press Enter to open the shell of episode e2")
        op.keys("Enter", record=False)
        first = len(op.sent)
        op.wait(shell.format("e2"))
        op.type("claude")
        op.prompt_agent("Please implement this brief: # Episode 2: checkpoints, crash recovery and replay",
                        r"done, the files for episode e2 are written")
        op.wait(shell.format("e2"))
        op.type("marathon-check")
        op.wait(r"marathon-check 1/5: some hidden gates fail[\s\S]*gate `privacy`")
        op.type("claude -c")
        op.prompt_agent("marathon-check says gate privacy fails: repair it",
                        r"repairing gate privacy[\s\S]*done, the files for episode e2 are written")
        op.wait(shell.format("e2"))
        op.type("echo 'operator was here' > NOTES.md")
        op.wait(shell.format("e2"))
        op.type("marathon-done")
        spans["e2"] = (first, len(op.sent))
        op.wait(r"RUN-EXIT=\d+", timeout=300)
        assert "RUN-EXIT=0" in op.screen(), op.screen()
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
        remove_run_resources(run_id)

    run = tmp_path / run_id
    steer = pd.read_parquet(run / "steering.parquet").set_index("episode")
    eps = pd.read_parquet(run / "episodes.parquet").set_index("episode")
    # the interventions the script made
    assert steer.prompts.to_dict() == {"e1": 1, "e2": 2}
    assert steer.shell_commands.to_dict() == {"e1": 2, "e2": 5}  # claude, check, echo, done
    assert steer.agent_runs.to_dict() == {"e1": 1, "e2": 2}
    assert (steer.ended_by == "marathon-done").all() and (steer.sessions == 1).all()
    assert steer.operator.nunique() == 1
    assert steer.operator.iloc[0] == steering.operator_pseudonym("test-operator")
    assert eps.self_checks.to_dict() == {"e1": 0, "e2": 1}
    assert eps.self_check_recoveries.to_dict() == {"e1": 0, "e2": 1}
    assert eps.score.to_dict() == {"e1": 1.0, "e2": 1.0}  # the repair prompt repaired
    checks = pd.read_parquet(run / "self_checks.parquet")
    assert list(checks.status) == ["red"] and "gate `privacy`" in checks.shown.iloc[0]
    # who edited what: the agent wrote the product, the operator NOTES.md
    e2 = steer.loc["e2"]
    assert (e2.files_operator, e2.files_both, e2.files_unattributed) == (1, 0, 0)
    assert e2.files_agent >= 1 and e2.files_changed == e2.files_agent + 1
    who = json.loads(next((run / "artifacts").glob("*/e2/1/steering.json")).read_text())
    assert who["operator"] == ["NOTES.md"] and "NOTES.md" not in who["agent"]
    # the minutes: steering time is the script's own keystroke timing under the same rule (a
    # gap within seconds of the idle threshold may fall either side: a loaded host delays
    # keystrokes on their way through tmux)
    for episode, (a, b) in spans.items():
        row = steer.loc[episode]
        sent, gap = [op.sent[a:b]], steering.IDLE_GAP_S
        low, high = steering.active_seconds(sent, gap - 5), steering.active_seconds(sent, gap + 5)
        assert low - 2 - 0.05 * low <= row.steering_s <= high + 2 + 0.05 * high, (
            episode, row.steering_s, low, high)
        assert 0 < row.steering_s <= row.shell_s <= row.wall_s
        assert row.input_events >= b - a
    # the recording is a replayable cast holding what the operator saw and typed
    cast = run / steer.loc["e2"].cast
    header, events = read_cast(cast)
    assert header["version"] == 2 and header["width"] == 220
    assert [t for t, _, _ in events] == sorted(t for t, _, _ in events)
    typed = "".join(d for _, c, d in events if c == "i")
    shown = "".join(d for _, c, d in events if c == "o")
    assert "repair it" in typed and "marathon-done" in typed
    assert "marathon-check 1/5: some hidden gates fail" in shown
    # usage: every model call of the interactive CLI went through the proxy, and the CLI's own
    # figures (its session files) reconcile with the proxy's
    attempts = pd.read_parquet(run / "attempts.parquet")
    assert (attempts.proxy_calls >= 1).all() and (attempts.reconciliation == "match").all()
    usage = pd.read_parquet(run / "usage.parquet")
    assert set(usage.source) == {"proxy", "agent"}
    # the report shows the steering figures and names the operator by pseudonym
    from benchmark.report import build_report

    out = tmp_path / "report"
    build_report([run], out)
    text = (out / "report.md").read_text()
    assert "steering" in text.lower() and steering.operator_pseudonym("test-operator") in text
    assert "not blinded replicates" in text
