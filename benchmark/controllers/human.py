"""The ``human`` controller: a person (the *operator*) steers the agent through each episode.

Per episode (rules and records in ``docs/arms.md``, *The human-operator arm*):

1. the harness shows the operator the brief on the terminal and waits for Enter;
2. it attaches the operator's terminal to a shell in the trial's container (the same container,
   image and limits as every arm; the gates stay outside), recorded as a timed cast file
   (:mod:`benchmark.human.terminal`). In that shell the agent's CLI runs interactively through
   the metering proxy (``claude`` for Claude Code), ``marathon-check`` self-checks as the arm
   allows, ``marathon-brief`` shows the brief again, and ``marathon-done`` ends the episode. A
   shell that exits without ``marathon-done`` is reopened; the run's time limit bounds the
   episode;
3. the harness then scores the workspace as after any attempt (one attempt per episode), and
   records the steering measures (:mod:`benchmark.human.steering`) as a
   :class:`~benchmark.records.SteeringRow`.

Runs need ``--jobs 1`` (one operator, one terminal) and a terminal on standard input and
output; the agent must be one with an interactive mode (:data:`INTERACTIVE`).
"""

from __future__ import annotations

import getpass
import json
import os
import select
import shlex
import sys
import tempfile
import termios
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from benchmark.agents.base import Agent, AttemptOutcome, AttemptResult
from benchmark.arms import Arm
from benchmark.controllers.base import Attempt, Controller, ScoreFn, TrialContext, default_decision
from benchmark.errors import MarathonError
from benchmark.human import sessions, steering
from benchmark.human.terminal import is_terminal, last_event_time, read_cast, relay
from benchmark.marathon import EpisodeSpec
from benchmark.proxy import reconcile
from benchmark.records import SteeringRow
from benchmark.sandbox import AGENT_HOME, AGENT_USER, WORKSPACE, Sandbox
from benchmark.scorer import Outcome, ScoringFailure, no_verdict_summary

#: Environment variable holding the operator's id (``marathon run --operator`` sets it).
OPERATOR_ENV = "MARATHON_OPERATOR"
#: Where the operator shell's material lives in the container (outside the workspace).
SHELL_DIR = "/tmp/marathon/operator"
#: The shell's material in the harness (bashrc, hook, commands).
_ASSETS = Path(__file__).resolve().parents[1] / "human" / "shell"
#: Largest command log or agent transcript copied out of the container (bytes).
_MAX_LOG = 64 * 2**20


class Interactive(BaseModel):
    """How an agent's CLI runs interactively in the operator's shell."""

    command: str
    """Name of the CLI on the container's ``PATH``; the shell wraps it with :attr:`args`."""
    args: list[str]
    """Arguments the wrapper adds (``{model}`` is the trial's model)."""
    sessions: str
    """Shell glob of the CLI's session files (JSON lines), the agent's transcript."""


#: Agents the operator can run interactively, by agent name.
INTERACTIVE: dict[str, Interactive] = {
    "claude-code": Interactive(
        command="claude", args=["--model", "{model}", "--dangerously-skip-permissions"],
        sessions=f"{AGENT_HOME}/.claude/projects/-workspace/*.jsonl"),
}


def operator_id() -> str:
    """The operator's id: ``$MARATHON_OPERATOR``, else the login name."""
    given = os.environ.get(OPERATOR_ENV, "").strip()
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class HumanOperatorController(Controller):
    """One operator-steered attempt per episode (see the module docstring)."""

    name = "human"
    uses_terminal: ClassVar[bool] = True

    def __init__(self, arm: Arm):
        super().__init__(arm)
        self.operator = steering.operator_pseudonym(operator_id())
        """The operator's pseudonymous id (recorded; the id itself never is)."""
        self._rows: dict[str, SteeringRow] = {}

    @classmethod
    def check_plan(cls, arm: Arm, jobs: int, agents: list[str]) -> None:
        """Refuse a run the operator cannot take part in: no terminal, ``jobs`` > 1, or an
        agent without an interactive mode.

        Raises:
            MarathonError: one line naming the arm and the flag.
        """
        if not is_terminal():
            raise MarathonError(f"arm {arm.name}: an operator steers each episode at a terminal, "
                                "but standard input or output is not a terminal")
        if jobs != 1:
            raise MarathonError(f"--jobs: arm {arm.name} has one operator at one terminal: "
                                f"use --jobs 1 (got {jobs})")
        for name in agents:
            if name not in INTERACTIVE:
                raise MarathonError(f"--agent: arm {arm.name} runs the agent interactively; "
                                    f"{name!r} has no interactive mode here (supported: "
                                    f"{', '.join(sorted(INTERACTIVE))})")

    def steering_rows(self, episode: str) -> list[SteeringRow]:
        """The steering row of a finished episode (taken: asked once)."""
        row = self._rows.pop(episode, None)
        return [row] if row is not None else []

    # -- the episode ------------------------------------------------------------------------

    def run(self, trial: TrialContext, episode: EpisodeSpec, brief: str, agent: Agent,
            score: ScoreFn) -> list[Attempt]:
        """Show the brief, attach the operator to the shell until ``marathon-done`` (or the
        time limit), then score the workspace once.

        Raises:
            MarathonError: the agent has no interactive mode or no proxy endpoint, or the
                operator's terminal closed (the trial stops; a resume replays the episode).
            ScoringFailure: the scoring left a check without a verdict.
        """
        spec = INTERACTIVE.get(agent.name)
        endpoint = getattr(agent, "endpoint", None)
        if spec is None or endpoint is None:
            raise MarathonError(f"arm {self.arm.name}: agent {agent.name} cannot be run "
                                "interactively through the metering proxy")
        ctx = trial.attempt_context(episode, 1, brief)
        art = ctx.transcript.parent
        token = endpoint.token.get_secret_value()
        proxy = endpoint.proxy
        if proxy is not None:
            proxy.set_attempt(token, episode.id, 1)
        model = endpoint.model or ctx.model
        _, agent_env = agent.command(brief, ctx)  # the CLI's environment: proxy URL, token, model
        where = f"{SHELL_DIR}/{episode.id}"
        index = trial.marathon.episode_ids.index(episode.id) + 1
        env = {**agent_env, **ctx.check_env, "HOME": AGENT_HOME,
               "TERM": os.environ.get("TERM", "xterm-256color"),
               "MARATHON_EPISODE": episode.id, "MARATHON_OPERATOR_DIR": where,
               "MARATHON_OPERATOR_BIN": f"{SHELL_DIR}/bin", "MARATHON_HOOK": f"{SHELL_DIR}/hook.py",
               "MARATHON_AGENT_COMMANDS": spec.command}
        banner = self._banner(trial, episode, index, spec, model)
        self._stage(trial.sandbox, spec, model, where, brief, banner, env)
        # the forwarder to the proxy died with the last episode's processes: PID 1 restarts it
        trial.sandbox.wait_for_forwarder()

        stop = getattr(trial, "stop", None)
        cast = art / "operator.cast"
        started_at, t0 = datetime.now(timezone.utc), time.monotonic()
        self._show_brief(trial, episode, index, brief, ctx.time_limit_s, stop)
        starts, shell_s, ended_by, exit_code = self._operate(
            trial, episode, env, where, cast, ctx.time_limit_s - (time.monotonic() - t0), stop)
        wall_s = time.monotonic() - t0
        _say(f"\r\nmarathon: {episode.id} ended ({ended_by}); scoring the workspace...\r\n")

        commands = trial.sandbox.get_file(f"{where}/commands.jsonl", limit=_MAX_LOG) or b""
        (art / "commands.jsonl").write_bytes(commands)
        entries = self._transcript(trial.sandbox, spec, started_at, ctx.transcript)
        proxy_calls = proxy.calls(token, episode.id, 1) if proxy is not None else []
        own = sessions.session_usage(entries)
        verdict = reconcile(proxy_calls, own, getattr(agent, "reconcile_kinds", ()))
        (art / "usage-reconciliation.json").write_text(verdict.model_dump_json(indent=2) + "\n",
                                                      encoding="utf-8")
        timed_out = ended_by == "time_limit"
        result = AttemptResult(
            outcome=AttemptOutcome.timeout if timed_out else AttemptOutcome.ok,
            duration_s=shell_s, transcript=ctx.transcript, exit_code=None if timed_out else exit_code,
            error=f"the episode reached its time limit of {ctx.time_limit_s:.0f} s" if timed_out else "",
            usage=[*proxy_calls, *own], reconciliation=verdict)
        checks = score(1, result)
        if any(c.outcome == Outcome.error for c in checks):
            raise ScoringFailure(f"attempt 1 of {episode.id}: " + no_verdict_summary(checks), checks)
        attempt = Attempt(number=1, prompt=brief, result=result, checks=checks)
        attempt.decision = default_decision(attempt.green, 1, 1)

        self._rows[episode.id] = self._steering_row(trial, episode, art, cast, starts, entries,
                                                    ended_by=ended_by, wall_s=wall_s, shell_s=shell_s)
        return [attempt]

    # -- helpers ----------------------------------------------------------------------------

    def _operate(self, trial: TrialContext, episode: EpisodeSpec, env: dict[str, str], where: str,
                 cast: Path, time_limit_s: float, stop) -> tuple[list[float], float, str, int | None]:
        """Attach the operator to the shell, reopening it until ``marathon-done`` or the time
        limit.

        Returns:
            ``(cast time at which each shell session started, seconds attached, ended_by,
            exit status of the last session)``.

        Raises:
            MarathonError: the run is stopping, or the operator's terminal closed.
        """
        starts: list[float] = []
        shell_s, ended_by, exit_code = 0.0, "time_limit", None
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="marathon-operator-") as tmp:
            env_file = Path(tmp) / "env"  # the token stays off the host's process list
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"{k}={v}\n" for k, v in env.items())
            argv = ["docker", "exec", "-it", "-u", AGENT_USER, "-w", WORKSPACE, "--env-file",
                    str(env_file), trial.sandbox.container.id, "bash", "--rcfile",
                    f"{SHELL_DIR}/bashrc", "-i"]
            while True:
                remaining = time_limit_s - (time.monotonic() - t0)
                if remaining <= 0:
                    break
                starts.append(_cast_end(cast))
                end = relay(argv, cast, time_limit_s=remaining, stop=stop,
                            title=f"{trial.keys.trial_id} {episode.id} ({self.operator})")
                shell_s += end.duration_s
                exit_code = end.exit_code
                if end.stopped or (stop is not None and stop.is_set()):
                    raise MarathonError("the run is stopping")
                if end.terminal_closed:
                    raise MarathonError(f"arm {self.arm.name}: the operator's terminal closed "
                                        f"during {episode.id}; resume the run from a terminal")
                if trial.sandbox.get_file(f"{where}/done", limit=1024) is not None:
                    ended_by = "marathon-done"
                    break
                if end.timed_out:
                    break
                _say("\r\nmarathon: the shell ended without `marathon-done`; reopening it "
                     "(run `marathon-done` to end the episode).\r\n")
        return starts, shell_s, ended_by, exit_code

    def _steering_row(self, trial: TrialContext, episode: EpisodeSpec, art: Path, cast: Path,
                      starts: list[float], entries: list[dict], *, ended_by: str, wall_s: float,
                      shell_s: float) -> SteeringRow:
        """The episode's steering measures (:mod:`benchmark.human.steering`) from its cast, the
        shell's command log, the agent's transcript entries and the workspace diff; writes
        ``steering.json`` (who edited which file)."""
        runs, _ = steering.read_commands(art / "commands.jsonl")
        _, events = read_cast(cast) if cast.is_file() else ({}, [])
        bounds = starts[1:] + [float("inf")]
        inputs = [[t for t, code, data in events
                   if code == "i" and lo <= t < hi and steering.operator_input(data)]
                  for lo, hi in zip(starts, bounds)]
        who = steering.attribute(steering.diff_files(art / "workspace.diff"), runs,
                                 sessions.tool_call_files(entries))
        (art / "steering.json").write_text(who.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return SteeringRow(
            **trial.keys.model_dump(), episode=episode.id, operator=self.operator,
            ended_by=ended_by, sessions=len(starts), wall_s=wall_s, shell_s=shell_s,
            steering_s=steering.active_seconds(inputs), idle_gap_s=steering.IDLE_GAP_S,
            input_events=sum(map(len, inputs)), prompts=len(sessions.prompts(entries)),
            shell_commands=len(runs), agent_runs=sum(r.agent for r in runs),
            files_changed=len(who.changed), files_agent=len(who.agent),
            files_operator=len(who.operator), files_both=len(who.both),
            files_unattributed=len(who.unattributed),
            cast=cast.relative_to(trial.run_dir).as_posix())

    def _banner(self, trial: TrialContext, episode: EpisodeSpec, index: int, spec: Interactive,
                model: str) -> str:
        n = len(trial.marathon.episodes)
        checks = (f"self-check: the workspace scored now, failing gate and check names only "
                  f"({self.arm.self_checks} per episode)" if self.arm.self_checks
                  else "not available on this arm")
        return "\n".join([
            f"marathon: episode {episode.id} ({index} of {n}) of {trial.marathon.name}, "
            f"trial {trial.keys.trial_id}, operator {self.operator}",
            f"  {spec.command:<16} the agent ({trial.keys.agent}, model {model}) in {WORKSPACE}; "
            f"`{spec.command} -c` continues its last session",
            f"  {'marathon-check':<16} {checks}",
            f"  {'marathon-brief':<16} the brief again",
            f"  {'marathon-done':<16} end the episode (the harness then scores the workspace)",
            "Everything in this terminal is recorded (docs/arms.md).", ""])

    def _stage(self, sandbox: Sandbox, spec: Interactive, model: str, where: str, brief: str,
               banner: str, env: dict[str, str]) -> None:
        """Put the shell's material into the container and the CLI's settings in place."""
        args = " ".join(shlex.quote(a.replace("{model}", model)) for a in spec.args)
        name = shlex.quote(spec.command)
        wrapper = ("#!/bin/sh\n# the agent's CLI, run interactively through the metering proxy\n"
                   f'real=$(PATH=$(printf %s "$PATH" | sed "s#^$MARATHON_OPERATOR_BIN:##") '
                   f'command -v {name})\n'
                   f'exec "$real" {args} "$@"\n')
        rel = SHELL_DIR.removeprefix("/tmp/")
        ep = where.removeprefix("/tmp/")
        sandbox.put_files({
            f"{rel}/bashrc": (_ASSETS / "bashrc").read_bytes(),
            f"{rel}/hook.py": (_ASSETS / "hook.py").read_bytes(),
            f"{rel}/bin/marathon-done": (_ASSETS / "marathon-done").read_bytes(),
            f"{rel}/bin/marathon-brief": (_ASSETS / "marathon-brief").read_bytes(),
            f"{rel}/bin/{spec.command}": wrapper.encode(),
            f"{ep}/brief.md": brief.encode(),
            f"{ep}/banner": banner.encode(),
        }, dest="/tmp")
        setup = {k: v for k, v in env.items() if k.startswith(("ANTHROPIC_", "MARATHON_"))}
        res = sandbox.exec(["sh", "-c", f"chmod 0755 {SHELL_DIR}/bin/* && rm -f {where}/done && "
                                        f"python3 {SHELL_DIR}/hook.py setup"],
                           timeout_s=60, environment=setup)
        if res.exit_code != 0:
            raise MarathonError(f"arm {self.arm.name}: setting up the operator's shell failed: "
                                f"{res.output.strip()[-200:]}")

    def _show_brief(self, trial: TrialContext, episode: EpisodeSpec, index: int, brief: str,
                    time_limit_s: float, stop) -> None:
        """Print the brief and wait for Enter (typed-ahead input is dropped first).

        Raises:
            MarathonError: the terminal closed, or the run is stopping.
        """
        rule = "─" * 72
        _say(f"\n{rule}\nmarathon: episode {episode.id} ({index} of {len(trial.marathon.episodes)}) "
             f"of {trial.marathon.name}, trial {trial.keys.trial_id}, operator {self.operator}\n"
             f"{rule}\n\n{brief.rstrip()}\n\n{rule}\n"
             f"Press Enter to open the shell of episode {episode.id} in the trial's container (time limit "
             f"{time_limit_s / 60:.0f} min; `marathon-done` ends the episode).\n")
        try:
            termios.tcflush(0, termios.TCIFLUSH)
        except termios.error:
            pass
        while True:
            if stop is not None and stop.is_set():
                raise MarathonError("the run is stopping")
            ready, _, _ = select.select([0], [], [], 0.2)
            if ready:
                if not os.read(0, 4096):
                    raise MarathonError(f"arm {self.arm.name}: the operator's terminal closed "
                                        f"before {episode.id}")
                return

    def _transcript(self, sandbox: Sandbox, spec: Interactive, since: datetime,
                    dest: Path) -> list[dict]:
        """Copy the agent's session entries of the episode (stamped since it started) to
        ``dest`` (JSON lines) and return them."""
        raw = dest.with_name("sessions.raw")
        with open(raw, "wb") as f:
            sandbox.exec(["sh", "-c", f"cat {spec.sessions} 2>/dev/null; true"], timeout_s=120,
                         output_file=f)
        lines = raw.read_text(encoding="utf-8", errors="replace").splitlines()
        raw.unlink()
        entries = sessions.session_entries(lines, since)
        dest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
        return entries


def _cast_end(cast: Path) -> float:
    """Time of the cast's last event (where a new session starts); 0 without a cast."""
    return last_event_time(cast) if cast.is_file() else 0.0


def _say(text: str) -> None:
    """Print to the operator's terminal."""
    sys.stdout.write(text)
    sys.stdout.flush()
