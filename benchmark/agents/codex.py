"""The ``codex`` agent: the Codex CLI (``codex exec``), headless, in the trial's container.

Command (as uid 1000 in ``/workspace``, stdin from ``/dev/null`` or it waits for input)::

    codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -m MODEL
          -c model_provider=marathon
          -c 'model_providers.marathon={name="marathon",base_url="<proxy>/v1",
                                       env_key="OPENAI_API_KEY",wire_api="responses"}'
          -c analytics.enabled=false -c check_for_update_on_startup=false
          [-c model_reasoning_effort="EFFORT"]
          [resume THREAD_ID] PROMPT

``OPENAI_BASE_URL`` is ignored by the CLI, hence the custom provider. ``OPENAI_API_KEY`` is the
trial's token. Effort: ``minimal``, ``low``, ``medium``, ``high`` or ``xhigh`` become
``model_reasoning_effort``; ``none`` / ``default`` leave the CLI's default (recorded in
``command.json``).

Sessions: with the arm's ``session_continuity``, the thread id of the first run
(``thread.started``) is continued with ``resume THREAD_ID`` by every later attempt of the trial;
without it every attempt starts a new thread.

Outcome: ``ok`` when the process exited 0 and a ``turn.completed`` event came; ``agent_error``
on ``turn.failed`` / ``error`` events or a non-zero exit; ``timeout`` when killed at the limit.
Usage (``source="agent"``): the last ``turn.completed.usage`` of the run. After a resume those
figures are the running total of the whole thread, so the adapter records the difference from
the thread's previous total. Kinds: ``input_tokens`` minus ``cached_input_tokens`` (input),
``cached_input_tokens`` (cache read), ``cache_write_input_tokens`` (cache write),
``output_tokens`` (output, reasoning included) and ``reasoning_output_tokens`` (reasoning). The
CLI reports no cost (null).
"""

from __future__ import annotations

import json

from benchmark.agents.base import AttemptContext, AttemptOutcome
from benchmark.agents.proxied import DEFAULT_EFFORTS, CLIRun, ProxiedCLIAgent, last_text_line, read_events
from benchmark.errors import MarathonError
from benchmark.records import UsageCall

#: Reasoning efforts Codex accepts as ``model_reasoning_effort``.
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
#: Name of the custom model provider pointing at the proxy.
PROVIDER = "marathon"

_USAGE_KEYS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
               "reasoning_output_tokens")


class CodexAgent(ProxiedCLIAgent):
    """Codex CLI (``codex exec``) through the metering proxy (see the module docstring)."""

    name = "codex"
    protocol = "openai-responses"

    def __init__(self) -> None:
        super().__init__()
        self.thread_id: str | None = None
        """Id of the trial's continued thread once it exists (continuity only)."""
        self.totals: dict[str, int] = {}
        """Running usage total of :attr:`thread_id` as last reported (for differences)."""

    def command(self, prompt: str, ctx: AttemptContext) -> tuple[list[str], dict[str, str]]:
        """``codex exec`` argv (run through ``sh`` with stdin from ``/dev/null``) and
        environment for the attempt.

        Raises:
            MarathonError: the effort is not one Codex accepts.
        """
        assert self.endpoint is not None
        provider = (f'{{name="{PROVIDER}",base_url="{self.endpoint.base_url}/v1",'
                    f'env_key="OPENAI_API_KEY",wire_api="responses"}}')
        argv = ["codex", "exec", "--json", "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox", "-m", self.endpoint.model or ctx.model,
                "-c", f"model_provider={PROVIDER}", "-c", f"model_providers.{PROVIDER}={provider}",
                "-c", "analytics.enabled=false", "-c", "check_for_update_on_startup=false"]
        if ctx.effort in EFFORTS:
            argv += ["-c", f'model_reasoning_effort="{ctx.effort}"']
        elif ctx.effort not in DEFAULT_EFFORTS:
            raise MarathonError(f"agent codex: effort {ctx.effort!r} is not one of "
                                f"{', '.join(EFFORTS)} (or none/default)")
        if ctx.arm.session_continuity and self.thread_id is not None:
            argv += ["resume", self.thread_id]
        argv.append(prompt)
        env = {"OPENAI_API_KEY": self.endpoint.token.get_secret_value()}
        return ["sh", "-c", 'exec "$@" </dev/null', "sh", *argv], env

    def interpret(self, exit_code: int | None, timed_out: bool, ctx: AttemptContext) -> CLIRun:
        """Outcome and usage from the ``thread.started`` / ``turn.*`` / ``error`` events."""
        events = read_events(ctx.transcript)
        thread = next((e.get("thread_id") for e in events if e.get("type") == "thread.started"), None)
        turn = next((e for e in reversed(events) if e.get("type") == "turn.completed"), None)
        failure = next((e for e in reversed(events) if e.get("type") in ("turn.failed", "error")), None)
        usage: list[UsageCall] = []
        if turn is not None and isinstance(turn.get("usage"), dict):
            now = {k: int(turn["usage"].get(k) or 0) for k in _USAGE_KEYS}
            resumed = ctx.arm.session_continuity and thread is not None and thread == self.thread_id
            before = self.totals if resumed else {}
            delta = {k: max(0, now[k] - before.get(k, 0)) for k in _USAGE_KEYS}
            usage.append(UsageCall(
                source="agent", api_model=ctx.model,
                input_tokens=max(0, delta["input_tokens"] - delta["cached_input_tokens"]),
                output_tokens=delta["output_tokens"],
                cache_write_tokens=delta["cache_write_input_tokens"],
                cache_read_tokens=delta["cached_input_tokens"],
                reasoning_tokens=delta["reasoning_output_tokens"]))
            if ctx.arm.session_continuity and thread is not None:
                self.totals = now
        if ctx.arm.session_continuity and thread is not None:
            if thread != self.thread_id and turn is None:
                self.totals = {}
            self.thread_id = thread
        if timed_out:
            return CLIRun(outcome=AttemptOutcome.timeout, usage=usage,
                          error=f"killed at the time limit of {ctx.time_limit_s:g} s")
        if failure is not None or exit_code != 0 or turn is None:
            if failure is not None:
                detail = failure.get("message") or (failure.get("error") or {}).get("message") \
                    or json.dumps(failure)[:200]
            else:
                detail = last_text_line(ctx.transcript) or "no turn.completed event"
            line = str(detail).splitlines()[0][:300] if str(detail) else "error"
            return CLIRun(outcome=AttemptOutcome.agent_error, usage=usage,
                          error=f"codex exited {exit_code}: {line}")
        return CLIRun(outcome=AttemptOutcome.ok, usage=usage)


def _register() -> None:
    from benchmark.agents import register

    register(CodexAgent)


_register()
