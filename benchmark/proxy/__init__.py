"""The metering proxy: every model call of every trial passes through it and is audited.

Agents in trial containers never hold a vendor key. Each trial gets a per-trial *token*, set in
its container as ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``, and a base URL pointing at this
proxy. Trial containers have no network at all: the proxy also listens on a Unix socket
(:attr:`ProxyConfig.unix_socket`) whose directory is bind-mounted into each model agent's
container, where a forwarder (``socat``, started by the sandbox's PID 1) serves it on
``127.0.0.1:<port>`` (:attr:`ProxyConfig.container_url`). The proxy

- answers ``HEAD /`` (Claude Code's pre-warm) and ``GET /`` with 200;
- accepts ``POST /v1/messages`` (Anthropic Messages API) and ``POST /v1/responses`` (OpenAI
  Responses API), and passes any other ``/v1/...`` request through without metering it;
- maps the token (``x-api-key`` or ``Authorization: Bearer``) to the trial registered with
  :meth:`MeteringProxy.register`, rejecting unknown tokens with 401, and replaces it with the
  upstream key of the API (which never enters a container);
- forwards the request to the configured upstream (the vendor API or the scripted server of
  :mod:`benchmark.scripted`) and passes the response back chunk by chunk as it arrives, while
  parsing the server-sent events on the side for usage:
  Anthropic ``message_start.message.usage`` (``input_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``) and ``message_delta.usage.output_tokens``; OpenAI
  ``response.completed.response.usage`` (``input_tokens`` with
  ``input_tokens_details.cached_tokens``, ``output_tokens`` with
  ``output_tokens_details.reasoning_tokens``);
- writes one :class:`ProxyRecord` per model request (source ``proxy``) to a JSON Lines file,
  flushed per row, and keeps it in memory for :meth:`MeteringProxy.calls`.

Token kinds follow :class:`~benchmark.records.UsageCall`: ``input_tokens`` excludes cache reads
and writes (OpenAI's ``input_tokens`` includes its ``cached_tokens``, which are subtracted and
recorded as ``cache_read_tokens``); ``output_tokens`` includes reasoning where the provider counts
it so (OpenAI), with ``reasoning_tokens`` recorded apart. Cost comes from ``pricing.toml``
(:class:`PriceTable`); an unknown model gets a warning once and a null cost, never a guess.

Upstream 429/5xx answers are passed to the client unchanged and recorded with their status; an
upstream that drops the connection mid-stream aborts the client connection (so the client sees a
broken stream, not a clean end) and is recorded with ``error``; neither stops the proxy. The
proxy runs on its own asyncio loop in a background thread of the driver process
(:meth:`MeteringProxy.start` / :meth:`MeteringProxy.stop`, or ``with``).

Modules, one concept each: :mod:`~benchmark.proxy.prices` (``pricing.toml``),
:mod:`~benchmark.proxy.sse` (event-stream parsing), :mod:`~benchmark.proxy.meters` (usage of one
response), :mod:`~benchmark.proxy.protocols` (the metered APIs), :mod:`~benchmark.proxy.records`
(the JSON Lines usage file), :mod:`~benchmark.proxy.background` (a server on a background loop),
:mod:`~benchmark.proxy.server` (the proxy) and :mod:`~benchmark.proxy.reconcile` (proxy vs agent).
"""

from benchmark.proxy.background import BackgroundServer
from benchmark.proxy.meters import (METERS, AnthropicMessagesMeter, OpenAIChatMeter,
                                    OpenAIResponsesMeter, UsageMeter)
from benchmark.proxy.prices import PRICING_FILE, ModelPrice, Price, PriceTable
from benchmark.proxy.protocols import PROTOCOL_NAMES, PROTOCOLS, Protocol, normalise_path, refusal
from benchmark.proxy.reconcile import TOKEN_KINDS, Reconciliation, reconcile
from benchmark.proxy.records import ProxyRecord, load_usage, load_usage_calls
from benchmark.proxy.server import (SIMULATED_PREFIX, MeteringProxy, ModelEndpoint, ProxyConfig,
                                    TrialRegistration, Upstream, new_token)
from benchmark.proxy.sse import SSEParser

__all__ = ["AnthropicMessagesMeter", "BackgroundServer", "METERS", "MeteringProxy",
           "ModelEndpoint", "ModelPrice", "OpenAIChatMeter", "OpenAIResponsesMeter",
           "PRICING_FILE", "PROTOCOLS", "PROTOCOL_NAMES", "Price", "PriceTable", "Protocol",
           "ProxyConfig", "ProxyRecord", "Reconciliation", "SIMULATED_PREFIX", "SSEParser",
           "TOKEN_KINDS", "TrialRegistration", "Upstream", "UsageMeter", "load_usage",
           "load_usage_calls", "new_token", "normalise_path", "reconcile", "refusal"]
