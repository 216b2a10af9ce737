"""The metering proxy: every model call of every trial passes through it and is audited.

Agents in trial containers never hold a provider key. Each trial gets a per-trial *token*, set
in its container as its API key, and a base URL pointing at this proxy. Trial containers have no
network at all: for each trial the proxy listens on a Unix socket of the trial's own
(:meth:`MeteringProxy.open_trial`), whose directory is bind-mounted into that trial's container
alone, where a forwarder (``socat``, started by the sandbox's PID 1) serves it on
``127.0.0.1:<port>`` (:attr:`ProxyConfig.container_url`). The proxy

- answers ``HEAD /`` and ``GET /`` itself (Claude Code's pre-warm): never forwarded, not
  recorded;
- accepts a token only on its own trial's socket (or, for a token registered without one,
  over TCP), refusing unknown, missing and misplaced tokens (401 / 403);
- forwards exactly one request per protocol (:mod:`benchmark.proxy.protocols`):
  ``POST /v1/messages`` (``anthropic-messages``), ``POST /v1/responses``
  (``openai-responses``), ``POST /v1/chat/completions`` (``openai-chat``), the trial's own
  protocol only, naming the trial's own model only; every other method, path or path variant
  is refused with 403 and recorded (``refused``), never forwarded;
- replaces the token with the key of the trial's provider (which never enters a container),
  forwards the request to the provider (a vendor API, a declared provider, or the scripted
  server of :mod:`benchmark.scripted`) and passes the response back chunk by chunk as it
  arrives, while a meter per protocol (:mod:`benchmark.proxy.meters`) reads the usage on the
  side; a streamed Chat Completions request that does not ask for usage gets it asked for, and
  the usage chunk is taken out of the answer (:mod:`benchmark.proxy.include_usage`);
- writes one :class:`ProxyRecord` per request of a known trial, forwarded or refused (source
  ``proxy``), to a JSON Lines file, flushed per row, and keeps it in memory for
  :meth:`MeteringProxy.calls`.

Token kinds follow :class:`~benchmark.records.UsageCall`. Cost comes from ``pricing.toml``
(:class:`PriceTable`); an unknown model gets a warning once and a null cost, never a guess, and
a 2xx answer without usage figures is recorded as ``usage_missing`` (cost null), not as zero.

Upstream 429/5xx answers are passed to the client unchanged and recorded with their status; an
upstream that drops the connection mid-stream aborts the client connection (so the client sees a
broken stream, not a clean end) and is recorded with ``error``; neither stops the proxy. The
proxy runs on its own asyncio loop in a background thread of the driver process
(:meth:`MeteringProxy.start` / :meth:`MeteringProxy.stop`, or ``with``).

Modules, one concept each: :mod:`~benchmark.proxy.protocols` (the protocols and the
allow-list), :mod:`~benchmark.proxy.server` (the proxy), :mod:`~benchmark.proxy.meters` (usage
of one response), :mod:`~benchmark.proxy.include_usage` (Chat Completions streams without
usage), :mod:`~benchmark.proxy.sse` (event streams), :mod:`~benchmark.proxy.records` (the JSON
Lines usage file), :mod:`~benchmark.proxy.prices` (``pricing.toml``),
:mod:`~benchmark.proxy.reconcile` (proxy vs agent) and :mod:`~benchmark.proxy.background` (a
server on a background loop).
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
