"""Agents registered only by the tests. Importing this module registers them."""

from __future__ import annotations

from benchmark.agents import register
from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.sandbox import Sandbox


@register
class SleepAgent(Agent):
    """Runs ``sleep 30`` in the container: past any short time limit, it must be killed.

    Before sleeping it writes ``slept.txt``, so the workspace shows the attempt happened.
    """

    name = "test-sleep"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        with open(ctx.transcript, "wb") as out:
            res = sandbox.exec(["sh", "-c", "echo started; echo x > slept.txt; sleep 30 & sleep 30"],
                               timeout_s=ctx.time_limit_s, output_file=out)
        if res.timed_out:
            return AttemptResult(outcome=AttemptOutcome.timeout, duration_s=res.duration_s,
                                 transcript=ctx.transcript,
                                 error=f"killed after the {ctx.time_limit_s:g} s time limit")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=res.duration_s,
                             transcript=ctx.transcript, exit_code=res.exit_code)


@register
class CrashAgent(Agent):
    """Raises instead of returning a result: a harness-level failure of its trial."""

    name = "test-crash"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        raise RuntimeError("agent crashed on purpose")
