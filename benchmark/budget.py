"""Usage budgets: how many tokens and USD an episode and a trial may spend (an arm setting).

An arm may set a budget (``[budget]`` table of its TOML, enforced by the ``governed``
controller)::

    [budget]
    episode_tokens = 2_000_000
    episode_usd = 5.0
    trial_tokens = 6_000_000
    trial_usd = 15.0

Every field is optional; an absent field is no limit. What counts (:func:`attempt_spend`): per
attempt, the figures observed by the harness's proxy (``source = "proxy"``) when there are any,
else the figures the agent reported (``source = "agent"``), never both (they describe the same
calls). Tokens are input + output + cache write + cache read tokens (reasoning tokens are part
of output). USD is the sum of the known ``cost_usd``; figures without a cost add 0 USD and are
counted in :attr:`Spend.calls_without_cost`. Agents that use no model (``oracle``, ``nop``)
report no usage, so their budgets never trigger.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from benchmark.records import UsageCall


class Budget(BaseModel):
    """Token and USD limits per episode and per trial; ``None`` means no limit. A limit is
    *reached* when the spend is greater than or equal to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episode_tokens: int | None = Field(default=None, gt=0)
    """Most tokens (input + output + cache write + cache read) one episode may spend."""
    episode_usd: float | None = Field(default=None, gt=0)
    """Most USD one episode may spend."""
    trial_tokens: int | None = Field(default=None, gt=0)
    """Most tokens the whole trial may spend (every episode, and attempts of a crashed session
    included)."""
    trial_usd: float | None = Field(default=None, gt=0)
    """Most USD the whole trial may spend."""

    def reached(self, episode: "Spend", trial: "Spend") -> str | None:
        """The first limit reached, as ``"<field> (<spent> >= <limit>)"``, or ``None``.

        Args:
            episode: what the current episode spent so far.
            trial: what the trial spent so far (the current episode included).
        """
        for field, spend, value in (("episode_tokens", episode, episode.tokens),
                                    ("episode_usd", episode, episode.usd),
                                    ("trial_tokens", trial, trial.tokens),
                                    ("trial_usd", trial, trial.usd)):
            limit = getattr(self, field)
            if limit is not None and value >= limit:
                return f"{field} ({value:g} >= {limit:g})"
        return None


class Spend(BaseModel):
    """Tokens and USD spent (by an attempt, an episode or a trial)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = 0
    """Input + output + cache write + cache read tokens."""
    usd: float = 0.0
    """Known cost in USD (figures without a cost add 0)."""
    calls: int = 0
    """Usage figures counted."""
    calls_without_cost: int = 0
    """Figures counted whose cost is unknown (their USD is not in :attr:`usd`)."""

    def plus(self, other: "Spend") -> "Spend":
        """The sum of two spends (a new object)."""
        return Spend(tokens=self.tokens + other.tokens, usd=self.usd + other.usd,
                     calls=self.calls + other.calls,
                     calls_without_cost=self.calls_without_cost + other.calls_without_cost)


def attempt_spend(usage: list[UsageCall]) -> Spend:
    """What one attempt spent: its proxy figures if any, else its agent-reported figures."""
    proxy = [u for u in usage if u.source == "proxy"]
    counted = proxy or [u for u in usage if u.source == "agent"]
    return Spend(
        tokens=sum(u.input_tokens + u.output_tokens + u.cache_write_tokens + u.cache_read_tokens
                   for u in counted),
        usd=sum(u.cost_usd or 0.0 for u in counted),
        calls=len(counted),
        calls_without_cost=sum(u.cost_usd is None for u in counted),
    )
