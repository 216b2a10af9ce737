"""Shared machinery of the adapters that run a real agent CLI through the metering proxy.

A :class:`ProxiedCLIAgent` needs a :class:`~benchmark.proxy.ModelEndpoint` (the proxy's URL as
the container sees it, and the trial's token) before its first attempt: the driver attaches it
with :meth:`ProxiedCLIAgent.attach` right after creating the agent for a trial. Per attempt the
adapter

1. tells the proxy which episode/attempt the token's calls belong to (``set_attempt``);
2. runs the CLI in the sandbox as uid 1000 with the attempt's time limit, its combined output
   streamed into ``ctx.transcript`` (the raw JSON event stream), and its command line and
   environment (token masked) saved as ``command.json`` beside it;
3. parses the CLI's own usage report into ``source="agent"`` rows, collects the proxy's rows of
   the attempt (``source="proxy"``), reconciles them (:func:`benchmark.proxy.reconcile`) into
   ``usage-reconciliation.json`` beside the transcript, and returns both sets of rows in
   :attr:`AttemptResult.usage` (proxy rows first).
"""

from __future__ import annotations

import json
import time
from typing import ClassVar

from pydantic import BaseModel

from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.errors import MarathonError
from benchmark.proxy import TOKEN_KINDS, ModelEndpoint, Reconciliation, reconcile
from benchmark.records import UsageCall
from benchmark.sandbox import Sandbox

#: File names of the per-attempt artifacts written beside the transcript.
COMMAND_FILE = "command.json"
RECONCILIATION_FILE = "usage-reconciliation.json"

#: Efforts that mean "the CLI's default" (no effort flag is passed).
DEFAULT_EFFORTS = ("none", "default", "")


class CLIRun(BaseModel):
    """What an adapter made of one CLI run (before usage reconciliation)."""

    outcome: AttemptOutcome
    """``ok``, ``agent_error`` or ``timeout``."""
    error: str = ""
    """One-line reason when not ``ok``."""
    usage: list[UsageCall] = []
    """Usage rows from the CLI's own report (``source="agent"``)."""


class ProxiedCLIAgent(Agent):
    """Base of the CLI adapters (see the module docstring). Subclasses implement
    :meth:`command` and :meth:`interpret`; one instance serves one trial and keeps its session
    state."""

    uses_model = True
    reads_instructions = True
    #: Token kinds the CLI reports and :func:`reconcile` compares.
    reconcile_kinds: ClassVar[tuple[str, ...]] = TOKEN_KINDS

    def __init__(self) -> None:
        self.endpoint: ModelEndpoint | None = None
        """The trial's proxy endpoint (set by :meth:`attach`)."""

    def attach(self, endpoint: ModelEndpoint) -> None:
        """Give the agent its trial's proxy endpoint (before the first attempt)."""
        self.endpoint = endpoint

    def command(self, prompt: str, ctx: AttemptContext) -> tuple[list[str], dict[str, str]]:
        """The argv and extra environment of the CLI run for this attempt.

        Raises:
            MarathonError: the attempt's settings cannot be expressed (e.g. unknown effort).
        """
        raise NotImplementedError

    def interpret(self, exit_code: int | None, timed_out: bool, ctx: AttemptContext) -> CLIRun:
        """Read the transcript of a finished run: outcome, error and the CLI's usage rows.
        Called once per run, after it ended; may update session state."""
        raise NotImplementedError

    def given_prompt(self, prompt: str, ctx: AttemptContext) -> str:
        """The text the agent is given for ``prompt`` (default: ``prompt`` itself)."""
        return prompt

    def stage(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> None:
        """Put what the run needs into the container before it starts (default: nothing)."""

    def collect(self, sandbox: Sandbox, ctx: AttemptContext) -> None:
        """Copy what the run left in the container into the attempt's artifacts, after it
        ended and before :meth:`interpret` (default: nothing)."""

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        """Run the CLI for one attempt (see the module docstring).

        Raises:
            MarathonError: no endpoint was attached, or the attempt's settings are invalid.
            docker.errors.APIError: the container is gone.
        """
        if self.endpoint is None:
            raise MarathonError(f"agent {self.name} has no model endpoint: the driver must start "
                                "the metering proxy and attach the trial's endpoint")
        token = self.endpoint.token.get_secret_value()
        proxy = self.endpoint.proxy
        if proxy is not None:
            proxy.set_attempt(token, ctx.episode.id, ctx.attempt)
        ctx.transcript.parent.mkdir(parents=True, exist_ok=True)
        self.stage(sandbox, prompt, ctx)
        argv, env = self.command(prompt, ctx)
        env = {**env, **ctx.check_env}
        prompts = {prompt, self.given_prompt(prompt, ctx)}
        shown = [("<prompt.md>" if a in prompts else a) for a in argv]
        (ctx.transcript.parent / COMMAND_FILE).write_text(json.dumps({
            "argv": shown, "env": {k: v.replace(token, "<per-trial token>") for k, v in env.items()},
            "model": ctx.model, "effort": ctx.effort, "time_limit_s": ctx.time_limit_s,
        }, indent=2) + "\n", encoding="utf-8")
        # The forwarder to the proxy dies with the previous attempt's processes and PID 1
        # restarts it within about a second: the CLI must not start inside that window.
        sandbox.wait_for_forwarder()
        start = time.monotonic()
        with open(ctx.transcript, "wb") as out:
            res = sandbox.exec(argv, timeout_s=ctx.time_limit_s, environment=env, output_file=out)
        duration = time.monotonic() - start
        self.collect(sandbox, ctx)
        cli = self.interpret(res.exit_code, res.timed_out, ctx)
        proxy_calls = proxy.calls(token, ctx.episode.id, ctx.attempt) if proxy is not None else []
        verdict = reconcile(proxy_calls, cli.usage, self.reconcile_kinds)
        self.write_reconciliation(ctx, verdict)
        return AttemptResult(outcome=cli.outcome, duration_s=duration, transcript=ctx.transcript,
                             exit_code=res.exit_code, error=cli.error,
                             usage=[*proxy_calls, *cli.usage], reconciliation=verdict)

    @staticmethod
    def write_reconciliation(ctx: AttemptContext, verdict: Reconciliation) -> None:
        """Write ``usage-reconciliation.json`` beside the transcript."""
        (ctx.transcript.parent / RECONCILIATION_FILE).write_text(
            verdict.model_dump_json(indent=2) + "\n", encoding="utf-8")
