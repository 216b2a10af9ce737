"""The agent registry: names (``oracle``, ``nop``, ``claude-code``, ``codex``) to
:class:`~benchmark.agents.base.Agent` classes.

New adapters call :func:`register`; :func:`get_agent` turns a name from the command line or an
experiment file into an agent, or a :class:`~benchmark.errors.MarathonError`.
"""

from __future__ import annotations

from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.agents.nop import NopAgent
from benchmark.agents.oracle import OracleAgent
from benchmark.errors import MarathonError

__all__ = ["Agent", "AttemptContext", "AttemptOutcome", "AttemptResult", "agent_names",
           "get_agent", "register"]

_AGENTS: dict[str, type[Agent]] = {}

#: Names reserved for adapters that are planned but not implemented yet, with the issue.
PLANNED: dict[str, str] = {}


def register(cls: type[Agent]) -> type[Agent]:
    """Register an agent class under ``cls.name`` (usable as a class decorator).

    Raises:
        ValueError: the name is already taken by another class.
    """
    other = _AGENTS.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"agent name {cls.name!r} already registered by {other.__qualname__}")
    _AGENTS[cls.name] = cls
    return cls


def agent_names() -> list[str]:
    """Names of the registered agents, sorted."""
    return sorted(_AGENTS)


def get_agent(name: str) -> Agent:
    """A new instance of the agent registered as ``name``.

    Raises:
        MarathonError: no such agent, or it is planned but not implemented yet.
    """
    if name in _AGENTS:
        return _AGENTS[name]()
    if name in PLANNED:
        raise MarathonError(f"agent {name!r} is not implemented yet (issue: {PLANNED[name]})")
    raise MarathonError(f"unknown agent {name!r} (known: {', '.join(agent_names())})")


register(OracleAgent)
register(NopAgent)

# The CLI adapters register themselves on import (they import this module's ``register``).
from benchmark.agents import claude_code as _claude_code, codex as _codex  # noqa: E402,F401
