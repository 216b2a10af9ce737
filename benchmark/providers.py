"""Model providers: where the calls of a model go, with which protocol and key.

A trial's model is ``MODEL`` or ``PROVIDER/MODEL``:

- ``scripted/<policy>``: the scripted model server, a **simulation** (every protocol);
- ``NAME/MODEL`` where the experiment file declares ``[providers.NAME]``: that provider, whose
  server is asked for ``MODEL`` (the part after the first ``/``, which may hold more slashes);
- ``anthropic/MODEL`` or ``openai/MODEL``: the built-in providers, explicitly;
- a name without a known provider prefix (``claude-sonnet-4-5``, ``gpt-5-codex``): the built-in
  provider of the agent's protocol (``anthropic-messages``: ``anthropic``; ``openai-responses``
  and ``openai-chat``: ``openai``).

A provider table of an experiment file::

    [providers.local]                # models "local/<name>"
    protocol = "openai-chat"         # anthropic-messages | openai-responses | openai-chat
    base_url = "http://127.0.0.1:8000/v1"
    key_env = "LOCAL_API_KEY"        # optional: no key is sent without it

The built-in providers: ``anthropic`` (``anthropic-messages``, key ``ANTHROPIC_API_KEY``, base
URL ``ANTHROPIC_BASE_URL`` or ``https://api.anthropic.com``) and ``openai``
(``openai-responses`` and ``openai-chat``, key ``OPENAI_API_KEY``, base URL ``OPENAI_BASE_URL``
or ``https://api.openai.com``). Base URLs are given without the protocol's ``/v1/...`` path; a
trailing ``/v1`` is dropped (so the usual SDK base URLs work), and the upstream must serve the
protocol under ``/v1/`` (vLLM, Ollama, OpenRouter, Together, DeepSeek, Groq do).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from benchmark.errors import MarathonError
from benchmark.proxy.protocols import PROTOCOL_NAMES, Protocol

#: Prefix of the simulated models (the scripted model server).
SCRIPTED = "scripted"
#: Built-in provider -> (protocols, key variable, base-URL variable, default base URL, vendor).
BUILTIN: dict[str, tuple[tuple[str, ...], str, str, str, str]] = {
    "anthropic": (("anthropic-messages",), "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                  "https://api.anthropic.com", "Anthropic"),
    "openai": (("openai-responses", "openai-chat"), "OPENAI_API_KEY", "OPENAI_BASE_URL",
               "https://api.openai.com", "OpenAI"),
}
#: The built-in provider of each protocol, for model names without a provider prefix.
DEFAULT_PROVIDER = {"anthropic-messages": "anthropic", "openai-responses": "openai",
                    "openai-chat": "openai"}
#: Provider names an experiment file may not declare.
RESERVED = (SCRIPTED, *BUILTIN)


class Provider(BaseModel):
    """A ``[providers.NAME]`` table of an experiment file: an upstream serving one protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Protocol
    """The protocol the provider speaks: ``anthropic-messages``, ``openai-responses`` or
    ``openai-chat``. Only agents speaking it may use the provider's models."""
    base_url: str = Field(pattern=r"^https?://[^/\s]+[^\s]*$")
    """Base URL of the provider's API, e.g. ``http://127.0.0.1:8000/v1`` (a trailing ``/v1``
    is dropped; the protocol's ``/v1/...`` path is appended)."""
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable holding the provider's key (it must be set when
    given); ``None``: no key is sent (local servers such as vLLM or Ollama)."""


class Route(BaseModel):
    """Where one trial's model calls go."""

    model_config = ConfigDict(frozen=True)

    model: str
    """The trial's model, as the experiment names it."""
    provider: str
    """Provider name: ``scripted``, ``anthropic``, ``openai`` or a declared one."""
    protocol: Protocol
    """The agent's protocol (one the provider speaks)."""
    upstream_model: str
    """The model name the agent sends and the provider serves (``MODEL`` of ``PROVIDER/MODEL``;
    the whole name for ``scripted/...`` and unprefixed models)."""
    base_url: str | None
    """The provider's base URL without ``/v1``; ``None`` for the scripted model server (started
    by the run)."""
    key_env: str | None
    """Environment variable holding the provider's key; ``None``: no key."""

    @property
    def simulated(self) -> bool:
        """Whether the model is the scripted model (a simulation)."""
        return self.provider == SCRIPTED


def base_url(url: str) -> str:
    """A base URL without a trailing ``/`` or ``/v1``."""
    return url.rstrip("/").removesuffix("/v1").rstrip("/")


def resolve(model: str, agent: str, protocol: str | None, providers: Mapping[str, Provider],
            environ: Mapping[str, str] = os.environ) -> Route:
    """The route of ``model`` for an agent speaking ``protocol``.

    Args:
        model: the trial's model name.
        agent: the agent's name (for error messages).
        protocol: the agent's protocol; ``None`` for an agent that speaks none.
        providers: the experiment's declared providers.
        environ: the environment holding keys and base-URL overrides.

    Raises:
        MarathonError: (one line naming the model) an unknown ``scripted/`` policy, an unknown
            provider prefix, an agent that speaks no protocol or not the provider's, or a key
            variable that is not set.
    """
    from benchmark.scripted import POLICIES

    if protocol not in PROTOCOL_NAMES:
        raise MarathonError(f"--model {model}: agent {agent!r} speaks no model protocol")
    prefix, slash, rest = model.partition("/")
    if prefix == SCRIPTED and slash:
        if rest not in POLICIES:
            raise MarathonError(f"--model {model}: unknown scripted model (known: "
                                f"{', '.join(f'{SCRIPTED}/{p}' for p in POLICIES)})")
        return Route(model=model, provider=SCRIPTED, protocol=protocol, upstream_model=model,
                     base_url=None, key_env=None)
    if slash and prefix in providers:
        p = providers[prefix]
        if p.protocol != protocol:
            raise MarathonError(f"--model {model}: provider {prefix} speaks {p.protocol}, agent "
                                f"{agent} speaks {protocol}")
        if not rest:
            raise MarathonError(f"--model {model}: no model name after the provider {prefix}/")
        if p.key_env is not None and not environ.get(p.key_env):
            raise MarathonError(f"--model {model}: provider {prefix} takes its key from "
                                f"{p.key_env}: set it")
        return Route(model=model, provider=prefix, protocol=protocol, upstream_model=rest,
                     base_url=base_url(p.base_url), key_env=p.key_env)
    if slash and prefix not in BUILTIN:
        known = ", ".join([SCRIPTED, *BUILTIN, *providers])
        raise MarathonError(f"--model {model}: unknown provider {prefix!r} (declare "
                            f"[providers.{prefix}] in the experiment file; known: {known})")
    name = prefix if slash else DEFAULT_PROVIDER[protocol]
    upstream_model = rest if slash else model
    protocols, key_var, url_var, default, vendor = BUILTIN[name]
    if protocol not in protocols:
        raise MarathonError(f"--model {model}: provider {name} speaks {' and '.join(protocols)}, "
                            f"agent {agent} speaks {protocol}")
    if not environ.get(key_var):
        raise MarathonError(f"--model {model}: agent {agent} calls the {vendor} API: set "
                            f"{key_var} (or use a {SCRIPTED}/ model, a simulation)")
    return Route(model=model, provider=name, protocol=protocol, upstream_model=upstream_model,
                 base_url=base_url(environ.get(url_var) or default), key_env=key_var)
