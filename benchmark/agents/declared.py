"""A declared agent: an ``agents/NAME.toml`` (:class:`~benchmark.agents.spec.AgentSpec`) run
through the metering proxy, like every CLI adapter (:class:`ProxiedCLIAgent`).

Per attempt it fills the command line and environment from the spec's placeholders, writes the
prompt file when the command uses ``{prompt_file}``, runs the command as uid 1000 in
``/workspace`` with standard input from ``/dev/null``, copies ``{report_file}`` out of the
container into the attempt's artifacts (``report``), and lets the spec's named parser
(:mod:`benchmark.agents.reports`) read the outcome, the session and the agent's own usage.

Sessions: without the arm's ``session_continuity`` every attempt starts a new session
(``[session].new`` with a fresh ``uuid4`` as ``{session}``). With it, the first attempt of the
trial starts one (``{session}`` = ``uuid5`` of the trial id) and every later attempt, in the same
or a later episode, continues it (``[session].resume`` with the id the parser reported, else the
chosen one), once a run got far enough to have a session. HOME and ``/workspace`` stay the same
in the container, where CLIs keep their sessions; a resumed run (new container) starts anew.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath

from benchmark.agents.base import AttemptContext
from benchmark.agents.proxied import DEFAULT_EFFORTS, CLIRun, ProxiedCLIAgent
from benchmark.agents.reports import RunFacts, get_report
from benchmark.agents.spec import PLACEHOLDERS, AgentSpec
from benchmark.errors import MarathonError
from benchmark.sandbox import WORKSPACE, Sandbox

#: Namespace of the harness-chosen session ids (``uuid5(namespace, trial id)``).
SESSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "marathon:agent-session")
#: Directory in the container holding prompt and report files (outside the workspace).
FILES_DIR = "/tmp/marathon"
#: File name of the copied report in an attempt's artifacts.
REPORT_FILE = "report"
#: Largest report file copied out of a container (bytes).
MAX_REPORT = 64 * 1024 * 1024

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each known ``{name}`` replaced by ``values[name]`` (other braces kept)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class DeclaredAgent(ProxiedCLIAgent):
    """The agent an :class:`AgentSpec` declares (see the module docstring)."""

    reads_instructions = True

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__()
        self.spec = spec
        """The declaration."""
        self.name = spec.name
        self.protocol = spec.protocol
        self.report = get_report(spec.usage)
        """The parser of the agent's own report (keeps the sessions' running totals)."""
        self.reconcile_kinds = self.report.kinds
        self.session_id: str | None = None
        """Id of the trial's continued session once it exists (continuity only)."""
        self._chosen: str | None = None

    def check_effort(self, effort: str) -> None:
        """Raise a one-line ``--effort`` error when the spec does not accept ``effort``."""
        if effort not in (*self.spec.effort.values, *DEFAULT_EFFORTS):
            raise MarathonError(f"--effort: agent {self.name} accepts "
                                f"{', '.join((*self.spec.effort.values, 'none', 'default'))}; got {effort!r}")

    def _files(self, ctx: AttemptContext) -> tuple[str, str]:
        stem = f"{ctx.episode.id}-{ctx.attempt}"
        return f"{FILES_DIR}/prompt-{stem}.md", f"{FILES_DIR}/report-{stem}"

    def given_prompt(self, prompt: str, ctx: AttemptContext) -> str:
        """The prompt, after the arm's instructions when the agent takes them in its prompt."""
        if self.spec.instructions == "prompt":
            return ctx.arm.instructions.read_text(encoding="utf-8").rstrip() + "\n\n" + prompt
        return prompt

    def _uses(self, name: str) -> bool:
        return any(f"{{{name}}}" in a for a in (*self.spec.command, *self.spec.env.values()))

    def stage(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> None:
        """Write the prompt file (``{prompt_file}``) and remove a stale report file."""
        prompt_file, report_file = self._files(ctx)
        files = {}
        if self._uses("prompt_file"):
            files[PurePosixPath(prompt_file).relative_to("/tmp").as_posix()] = \
                self.given_prompt(prompt, ctx).encode()
        sandbox.put_files({**files, "marathon/.keep": b""}, dest="/tmp")
        if self._uses("report_file"):
            sandbox.exec(["rm", "-f", report_file], timeout_s=60)

    def collect(self, sandbox: Sandbox, ctx: AttemptContext) -> None:
        """Copy ``{report_file}`` (if the agent wrote it) to the artifacts as ``report``."""
        if not self._uses("report_file"):
            return
        data = sandbox.get_file(self._files(ctx)[1], limit=MAX_REPORT)
        if data is not None:
            (ctx.transcript.parent / REPORT_FILE).write_bytes(data)

    def command(self, prompt: str, ctx: AttemptContext) -> tuple[list[str], dict[str, str]]:
        """The filled command line (run through ``sh`` with stdin from ``/dev/null``) and
        environment.

        Raises:
            MarathonError: the effort is not one the agent accepts.
        """
        assert self.endpoint is not None
        spec = self.spec
        prompt_file, report_file = self._files(ctx)
        limit = max(1, int(ctx.time_limit_s))
        values = {
            "prompt": self.given_prompt(prompt, ctx), "prompt_file": prompt_file,
            "model": self.endpoint.model or ctx.model, "effort": ctx.effort,
            "time_limit_s": str(limit),
            "request_timeout_ms": str(int(max(10.0, min(ctx.time_limit_s, 600.0)) * 1000)),
            "base_url": self.endpoint.base_url, "token": self.endpoint.token.get_secret_value(),
            "report_file": report_file, "workspace": WORKSPACE,
        }
        assert set(values) == PLACEHOLDERS
        if ctx.effort in spec.effort.values:
            effort_args = [fill(a, values) for a in spec.effort.args]
        elif ctx.effort in DEFAULT_EFFORTS:
            effort_args = []
        else:
            raise MarathonError(f"agent {spec.name}: effort {ctx.effort!r} is not one of "
                                f"{', '.join((*spec.effort.values, 'none', 'default'))}")
        session_args: list[str] = []
        self._chosen = None
        if spec.session is not None:
            if ctx.arm.session_continuity and self.session_id is not None:
                session_args = [fill(a, {**values, "session": self.session_id}) for a in spec.session.resume]
            else:
                chosen = str(uuid.uuid5(SESSION_NAMESPACE, ctx.trial_id)
                             if ctx.arm.session_continuity else uuid.uuid4())
                if any("{session}" in a for a in spec.session.new):
                    self._chosen = chosen
                session_args = [fill(a, {**values, "session": chosen}) for a in spec.session.new]
        argv: list[str] = []
        for arg in spec.command:
            if arg == "{effort_args}":
                argv += effort_args
            elif arg == "{session_args}":
                argv += session_args
            else:
                argv.append(fill(arg, values))
        env = {key: fill(value, values) for key, value in spec.env.items()}
        return ["sh", "-c", 'exec "$@" </dev/null', "sh", *argv], env

    def interpret(self, exit_code: int | None, timed_out: bool, ctx: AttemptContext) -> CLIRun:
        """Outcome and usage from the spec's parser; remembers the session to continue."""
        report = ctx.transcript.parent / REPORT_FILE
        result = self.report.read(RunFacts(
            agent=self.name, transcript=ctx.transcript, report=report if report.is_file() else None,
            exit_code=exit_code, timed_out=timed_out, time_limit_s=ctx.time_limit_s, model=ctx.model))
        if self.spec.session is not None and ctx.arm.session_continuity and result.started:
            self.session_id = result.session_id or self._chosen or self.session_id
        return CLIRun(outcome=result.outcome, error=result.error, usage=result.usage)
