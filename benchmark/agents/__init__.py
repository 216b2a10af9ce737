"""The agent registry: the agents written in Python (``oracle``, ``nop``, and test agents that
call :func:`register`) and the agents declared as data in ``agents/NAME.toml`` (``claude-code``,
``codex``, ``mini-swe-agent``, ``qwen-code``, ``retry-runtime``, ...; see
:mod:`benchmark.agents.spec`).

:func:`get_agent` turns a name (or the path of an agent TOML file) from the command line or an
experiment file into a new agent instance, or a :class:`~benchmark.errors.MarathonError`.
"""

from __future__ import annotations

from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.agents.declared import DeclaredAgent
from benchmark.agents.nop import NopAgent
from benchmark.agents.oracle import OracleAgent
from benchmark.agents.spec import agent_spec_path, declared_names, load_agent_spec
from benchmark.errors import MarathonError

__all__ = ["Agent", "AttemptContext", "AttemptOutcome", "AttemptResult", "DeclaredAgent",
           "agent_hashes", "agent_names", "agent_versions", "get_agent", "register"]

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
    """Names of the registered and declared agents, sorted."""
    return sorted({*_AGENTS, *declared_names()})


def get_agent(name: str) -> Agent:
    """A new instance of the agent registered as ``name``.

    Raises:
        MarathonError: no such agent, it is planned but not implemented yet, or its TOML file
            is invalid (one line naming the file and the field).
    """
    if name in _AGENTS:
        return _AGENTS[name]()
    if name in PLANNED:
        raise MarathonError(f"agent {name!r} is not implemented yet (issue: {PLANNED[name]})")
    if agent_spec_path(name).is_file():
        return DeclaredAgent(load_agent_spec(name))
    raise MarathonError(f"unknown agent {name!r} (known: {', '.join(agent_names())})")


def agent_versions(names: list[str]) -> dict[str, str]:
    """Declared agent -> its declared version, for the declared agents among ``names``."""
    return {(a := get_agent(n)).name: a.spec.version for n in names
            if isinstance(get_agent(n), DeclaredAgent)}


def agent_hashes(names: list[str]) -> dict[str, str]:
    """Declared agent -> :meth:`AgentSpec.config_hash`, for the declared agents among ``names``."""
    return {(a := get_agent(n)).name: a.spec.config_hash() for n in names
            if isinstance(get_agent(n), DeclaredAgent)}


register(OracleAgent)
register(NopAgent)
