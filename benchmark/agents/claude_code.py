"""The ``claude-code`` agent: the Claude Code CLI, headless, in the trial's container.

Command (as uid 1000 in ``/workspace``)::

    claude -p PROMPT --output-format stream-json --verbose --model MODEL
           --dangerously-skip-permissions [--effort EFFORT]
           (--session-id UUID | --resume UUID)

Environment: ``ANTHROPIC_BASE_URL`` = the metering proxy as the container reaches it,
``ANTHROPIC_API_KEY`` = the trial's token (never a vendor key),
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (no telemetry, no session-title call),
``CLAUDE_CODE_MAX_RETRIES`` = :data:`MAX_RETRIES`, ``API_TIMEOUT_MS`` within the attempt's limit,
``DISABLE_TELEMETRY`` / ``DISABLE_ERROR_REPORTING`` / ``DISABLE_AUTOUPDATER``, and the model
of background tasks and subagents (``ANTHROPIC_DEFAULT_HAIKU_MODEL``, ``..._SONNET_MODEL``,
``..._OPUS_MODEL``, ``CLAUDE_CODE_SUBAGENT_MODEL``) = the trial's model: the proxy forwards
requests naming the trial's model only. ``MODEL`` is the endpoint's model name (the provider's
name of a ``PROVIDER/MODEL`` trial model).

Effort: ``low``, ``medium``, ``high``, ``xhigh`` or ``max`` are passed as ``--effort``; ``none``
or ``default`` pass no flag (the CLI's default). The choice is recorded in ``command.json``.

Sessions: every run gets a harness-chosen session id. Without session continuity each attempt
starts a new session (``--session-id`` of a fresh UUID). With the arm's ``session_continuity``,
the first attempt of the trial starts session ``uuid5(trial id)`` and every later attempt, in the
same or a later episode, continues it with ``--resume`` (HOME and the working directory stay
the same in the container, where Claude Code keeps sessions). If no session was created yet
(the first run failed before it), the next run starts it.

Outcome: from the final ``result`` event: ``ok`` when the process exited 0 and ``is_error`` is
false; ``agent_error`` otherwise (the ``api_error_status`` and result text are the error);
``timeout`` when killed at the limit. Usage (``source="agent"``): one row per model of the
run's per-model usage (every call, side calls included) with the CLI's input, output, cache
creation and cache read tokens; its ``costUSD`` is kept unless the CLI says its cost basis is
``unknown`` (a model it has no price for, e.g. ``scripted/*``), then null. After ``--resume``
the ``result`` event's ``modelUsage`` is the running total of the whole session (observed with
2.1.330), while ``model_usage_since_last_result`` covers the new run only: the adapter uses the
latter, or, when a CLI version lacks it, the difference of ``modelUsage`` from the session's
previous total.
"""

from __future__ import annotations

import uuid

from benchmark.agents.base import AttemptContext, AttemptOutcome
from benchmark.agents.proxied import DEFAULT_EFFORTS, CLIRun, ProxiedCLIAgent, last_text_line, read_events
from benchmark.errors import MarathonError
from benchmark.records import UsageCall

#: Efforts Claude Code accepts as ``--effort``.
EFFORTS = ("low", "medium", "high", "xhigh", "max")
#: Retries of a failed API call inside one run (the CLI's default is 10).
MAX_RETRIES = 2
#: Variables naming the models Claude Code uses besides ``--model`` (background tasks, the
#: model aliases a subagent may ask for): all set to the trial's model.
SIDE_MODEL_VARS = ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                   "ANTHROPIC_DEFAULT_OPUS_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")
#: Namespace of the harness-chosen session ids (``uuid5(namespace, trial id)``).
SESSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "marathon:claude-code-session")


class ClaudeCodeAgent(ProxiedCLIAgent):
    """Claude Code (``claude -p``) through the metering proxy (see the module docstring)."""

    name = "claude-code"
    protocol = "anthropic-messages"
    reconcile_kinds = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")

    def __init__(self) -> None:
        super().__init__()
        self.session_id: str | None = None
        """Id of the trial's continued session once it exists (continuity only)."""
        self.model_totals: dict[str, dict] = {}
        """The continued session's running per-model usage (``modelUsage``) as last reported."""
        self._pending: str | None = None

    def command(self, prompt: str, ctx: AttemptContext) -> tuple[list[str], dict[str, str]]:
        """``claude -p`` argv and environment for the attempt.

        Raises:
            MarathonError: the effort is not one Claude Code accepts.
        """
        assert self.endpoint is not None
        model = self.endpoint.model or ctx.model
        argv = ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose",
                "--model", model, "--dangerously-skip-permissions"]
        if ctx.effort in EFFORTS:
            argv += ["--effort", ctx.effort]
        elif ctx.effort not in DEFAULT_EFFORTS:
            raise MarathonError(f"agent claude-code: effort {ctx.effort!r} is not one of "
                                f"{', '.join(EFFORTS)} (or none/default)")
        if ctx.arm.session_continuity:
            if self.session_id is not None:
                argv += ["--resume", self.session_id]
                self._pending = self.session_id
            else:
                self._pending = str(uuid.uuid5(SESSION_NAMESPACE, ctx.trial_id))
                argv += ["--session-id", self._pending]
        else:
            self._pending = str(uuid.uuid4())
            argv += ["--session-id", self._pending]
        timeout_ms = int(max(10.0, min(ctx.time_limit_s, 600.0)) * 1000)
        env = {
            "ANTHROPIC_BASE_URL": self.endpoint.base_url,
            "ANTHROPIC_API_KEY": self.endpoint.token.get_secret_value(),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES),
            "API_TIMEOUT_MS": str(timeout_ms),
            "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
            # every call of the trial names the trial's model (the proxy refuses any other)
            **{var: model for var in SIDE_MODEL_VARS},
        }
        return argv, env

    def interpret(self, exit_code: int | None, timed_out: bool, ctx: AttemptContext) -> CLIRun:
        """Outcome and usage from the ``result`` event of the transcript."""
        events = read_events(ctx.transcript)
        result = next((e for e in reversed(events) if e.get("type") == "result"), None)
        started = any(e.get("type") == "system" and e.get("subtype") == "init" for e in events)
        resumed = ctx.arm.session_continuity and self.session_id is not None
        usage = self._usage(result, ctx.model, self.model_totals if resumed else {}) \
            if result is not None else []
        if ctx.arm.session_continuity and self._pending and (result is not None or started):
            self.session_id = (result or {}).get("session_id") or self._pending
            if result is not None and isinstance(result.get("modelUsage"), dict):
                self.model_totals = result["modelUsage"]
        if timed_out:
            return CLIRun(outcome=AttemptOutcome.timeout, usage=usage,
                          error=f"killed at the time limit of {ctx.time_limit_s:g} s")
        if result is None:
            why = last_text_line(ctx.transcript) or "no result event"
            return CLIRun(outcome=AttemptOutcome.agent_error, error=f"claude exited {exit_code}: {why}")
        if result.get("is_error") or exit_code != 0:
            status = result.get("api_error_status")
            text = str(result.get("result") or result.get("subtype") or "error").splitlines()
            line = text[0][:300] if text else "error"
            return CLIRun(outcome=AttemptOutcome.agent_error, usage=usage,
                          error=f"claude reported an error{f' (API status {status})' if status else ''}: {line}")
        return CLIRun(outcome=AttemptOutcome.ok, usage=usage)

    @staticmethod
    def _usage(result: dict, model: str, before: dict[str, dict]) -> list[UsageCall]:
        """Agent rows of one run: ``model_usage_since_last_result``, else ``modelUsage`` minus
        ``before`` (the session's previous running total; empty for a new session)."""
        rows = []
        per_model = result.get("model_usage_since_last_result")
        if not isinstance(per_model, dict) or not per_model:
            per_model = result.get("modelUsage")
        else:
            before = {}
        if isinstance(per_model, dict) and per_model:
            for name, u in sorted(per_model.items()):
                if not isinstance(u, dict):
                    continue
                prev = before.get(name) or {}

                def fig(key: str) -> int:
                    return max(0, int(u.get(key) or 0) - int(prev.get(key) or 0))

                cost = u.get("costUSD")
                if cost is not None and prev.get("costUSD") is not None:
                    cost = max(0.0, float(cost) - float(prev["costUSD"]))
                rows.append(UsageCall(
                    source="agent", api_model=name, input_tokens=fig("inputTokens"),
                    output_tokens=fig("outputTokens"),
                    cache_write_tokens=fig("cacheCreationInputTokens"),
                    cache_read_tokens=fig("cacheReadInputTokens"),
                    cost_usd=None if u.get("costBasis") == "unknown" or cost is None else float(cost)))
            return rows
        u = result.get("usage")
        if isinstance(u, dict):
            rows.append(UsageCall(
                source="agent", api_model=model,
                input_tokens=int(u.get("input_tokens") or 0),
                output_tokens=int(u.get("output_tokens") or 0),
                cache_write_tokens=int(u.get("cache_creation_input_tokens") or 0),
                cache_read_tokens=int(u.get("cache_read_input_tokens") or 0)))
        return rows


def _register() -> None:
    from benchmark.agents import register

    register(ClaudeCodeAgent)


_register()
