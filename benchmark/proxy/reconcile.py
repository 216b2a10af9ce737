"""Reconciliation: what the proxy metered against what the agent reported, for one attempt."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from benchmark.records import UsageCall

#: Token kinds compared by :func:`reconcile`.
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens",
               "reasoning_tokens")


class Reconciliation(BaseModel):
    """Proxy vs agent usage of one attempt, token kind by kind."""

    verdict: Literal["match", "mismatch", "no_agent_usage", "unmetered"]
    """``match``: every compared kind agrees; ``mismatch``: some differ; ``no_agent_usage``: the
    agent reported nothing to compare (crash, timeout); ``unmetered``: a 2xx proxy call carried
    no usage figures (``usage_missing``), so the proxy's totals are a lower bound and are not
    compared."""
    proxy: dict[str, int]
    """Totals of the proxy's rows (HTTP 2xx calls only), by token kind."""
    agent: dict[str, int]
    """Totals of the agent's rows, by token kind."""
    difference: dict[str, int]
    """``agent - proxy`` for each compared kind that differs (empty on a match)."""
    proxy_calls: int
    """Number of proxy rows counted."""
    kinds: list[str]
    """Token kinds compared."""

    def summary(self) -> str:
        """One line, e.g. ``match`` or ``mismatch: output_tokens +12``."""
        if self.verdict != "mismatch":
            return self.verdict
        return "mismatch: " + ", ".join(f"{k} {v:+d}" for k, v in self.difference.items())


def reconcile(proxy_calls: list[UsageCall], agent_calls: list[UsageCall],
              kinds: tuple[str, ...] = TOKEN_KINDS) -> Reconciliation:
    """Compare what the proxy metered with what the agent reported for one attempt.

    Proxy rows with a non-2xx status are left out (the agent is not billed for refused or
    failed calls); rows of both sides are summed over models. ``unmetered`` wins over every
    other verdict: when a call's tokens are unknown, no comparison is meaningful.
    """
    counted = [c for c in proxy_calls if c.http_status is not None and 200 <= c.http_status < 300]
    p = {k: sum(getattr(c, k) for c in counted) for k in kinds}
    a = {k: sum(getattr(c, k) for c in agent_calls) for k in kinds}
    diff = {k: a[k] - p[k] for k in kinds if a[k] != p[k]}
    verdict = ("unmetered" if any(c.usage_missing for c in counted) else
               "no_agent_usage" if not agent_calls else "mismatch" if diff else "match")
    return Reconciliation(verdict=verdict, proxy=p, agent=a, difference=diff,
                          proxy_calls=len(counted), kinds=list(kinds))
