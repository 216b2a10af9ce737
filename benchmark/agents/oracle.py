"""The ``oracle`` agent: puts the episode's reference solution into the workspace.

It needs no model. The reference is copied in from the host with ``put_archive``; it is never
mounted, and no other agent is given it. Every file of ``/workspace`` except ``.git`` is replaced,
so after an oracle attempt the workspace is exactly the reference of the episode.
"""

from __future__ import annotations

import time

from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.sandbox import Sandbox


class OracleAgent(Agent):
    """Copies the episode's reference solution into ``/workspace`` (keeping ``.git``)."""

    name = "oracle"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        """Replace the workspace's files by the reference of ``ctx.episode``.

        The transcript lists the files copied. Raises what :class:`Sandbox` raises.
        """
        start = time.monotonic()
        reference = ctx.episode.reference
        sandbox.clear_workspace()
        sandbox.put_directory(reference)
        files = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
        ctx.transcript.write_text(
            f"oracle: replaced the workspace by reference {ctx.episode.id} ({len(files)} files)\n"
            + "".join(f"  {f}\n" for f in files), encoding="utf-8")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=time.monotonic() - start,
                             transcript=ctx.transcript)
