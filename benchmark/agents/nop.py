"""The ``nop`` agent: changes nothing. Its score is the floor an arm's controller starts from."""

from __future__ import annotations

import time

from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.sandbox import Sandbox


class NopAgent(Agent):
    """Leaves the workspace untouched and reports success."""

    name = "nop"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        """Write a one-line transcript and return ``ok``; the workspace is not touched."""
        start = time.monotonic()
        ctx.transcript.write_text("nop: no change\n", encoding="utf-8")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=time.monotonic() - start,
                             transcript=ctx.transcript)
