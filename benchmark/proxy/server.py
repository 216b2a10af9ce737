"""The metering proxy server: configuration, trial registration, the allow-list, forwarding and
recording (see :mod:`benchmark.proxy`)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from benchmark.errors import MarathonError
from benchmark.proxy.background import BackgroundServer
from benchmark.proxy.include_usage import UsageChunkFilter, add_include_usage, asks_for_usage
from benchmark.proxy.meters import METERS, UsageMeter
from benchmark.proxy.prices import PRICING_FILE, PriceTable
from benchmark.proxy.protocols import (BY_PATH, PROTOCOLS, Protocol, ProtocolSpec, error_response,
                                       refusal)
from benchmark.proxy.records import ProxyRecord
from benchmark.records import UsageCall

#: Model names served by the ``scripted`` upstream (the scripted model server, a simulation).
SIMULATED_PREFIX = "scripted/"
#: Upstream of a request whose trial names none: ``scripted`` for ``scripted/*`` models, else
#: the built-in provider of its protocol.
DEFAULT_UPSTREAMS = {"anthropic-messages": "anthropic", "openai-responses": "openai",
                     "openai-chat": "openai"}

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
#: Request headers never forwarded: the client's credentials (replaced by the upstream key),
#: content negotiation (the proxy asks for identity), and method overrides (the allow-list is
#: about the method the upstream acts on).
_DROPPED = {"x-api-key", "authorization", "accept-encoding", "x-http-method-override",
            "x-http-method", "x-method-override"}
#: The harness's own endpoint on a trial's socket: a self-check of the workspace
#: (``marathon-check``), answered by the trial's handler, never forwarded, not a usage row.
SELF_CHECK_PATH = "/marathon/self-check"
#: Longest request target, and requested model name, kept in a record or a message.
_MAX_TARGET = 300
_MAX_MODEL = 200


# -- configuration -------------------------------------------------------------------------------

class Upstream(BaseModel):
    """Where one provider's requests go: a vendor's API with the researcher's key, a local
    server, or the scripted model server."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://[^/]")
    """Base URL without the ``/v1/...`` path (the protocol's path is appended), e.g.
    ``https://api.anthropic.com`` or ``http://127.0.0.1:8123``."""
    api_key: SecretStr | None = None
    """The upstream key; sent upstream only, never logged, never given to a container. ``None``:
    no credentials are sent (a local server that needs none)."""


class ProxyConfig(BaseModel):
    """Configuration of a :class:`MeteringProxy`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """TCP address to listen on (loopback). Trial containers reach the proxy through their own
    Unix sockets (:meth:`MeteringProxy.open_trial`), never TCP; TCP serves tokens registered
    without a socket (agents and tests on the host)."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port to listen on; 0 picks a free one (see :attr:`MeteringProxy.port`)."""
    container_url: str | None = Field(default=None, pattern=r"^https?://")
    """Base URL of the proxy as trial containers reach it (the in-container forwarder, e.g.
    ``http://127.0.0.1:8790``), given by :meth:`MeteringProxy.open_trial` to trials with a
    socket; trials without one get the TCP URL (:attr:`MeteringProxy.url`)."""
    upstreams: dict[str, Upstream] = {}
    """Upstreams by provider name: ``anthropic``, ``openai``, ``scripted`` (the scripted model
    server) and declared providers. A request goes to its trial's provider (see
    :meth:`MeteringProxy.open_trial`), else to :data:`DEFAULT_UPSTREAMS`; a missing one answers
    502."""
    usage_log: Path
    """JSON Lines file the usage records are appended to (created with its directory)."""
    pricing: Path = PRICING_FILE
    """Price table (see :class:`~benchmark.proxy.prices.PriceTable`)."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for the upstream connection."""
    read_timeout_s: float = Field(default=600.0, gt=0)
    """Seconds to wait for any upstream bytes before giving up on the call."""


class TrialRegistration(BaseModel):
    """What the proxy knows about one token: its trial and what the trial may do."""

    trial_id: str
    """Id of the trial."""
    keys: dict[str, Any]
    """The trial keys, copied into every record."""
    episode: str | None = None
    """Current episode id."""
    attempt: int | None = None
    """Current attempt number, 1-based."""
    protocol: Protocol | None = None
    """The one protocol the trial may use (its path alone is forwarded); ``None``: any
    protocol's path (tests)."""
    upstream: str | None = None
    """Provider (key of :attr:`ProxyConfig.upstreams`) the trial's requests go to; ``None``:
    :data:`DEFAULT_UPSTREAMS`."""
    models: list[str] | None = None
    """Model names the trial's requests may name; ``None``: any."""
    socket: str | None = None
    """The trial's own Unix socket: the token is accepted there and nowhere else. ``None``:
    accepted over TCP only."""


def new_token() -> str:
    """A fresh per-trial token (``mt-`` and 32 random hex digits)."""
    return "mt-" + secrets.token_hex(16)


class ModelEndpoint(BaseModel):
    """How one trial's agent reaches models: the proxy's URL as the container sees it, the
    trial's token and model name. Made by :meth:`MeteringProxy.open_trial`."""

    base_url: str
    """URL of the proxy as the agent reaches it, without a path: the in-container forwarder
    (``http://127.0.0.1:<port>``), or the proxy's TCP URL for agents on the host."""
    token: SecretStr
    """The per-trial token, given to the agent as its API key."""
    trial_id: str
    """The trial the token belongs to."""
    model: str | None = None
    """The model name the agent must put in its requests (the provider's own name: a
    ``PROVIDER/MODEL`` trial model without ``PROVIDER/``); ``None``: the trial's model."""
    socket_dir: Path | None = None
    """Host directory holding the trial's own socket, to bind-mount into its container;
    ``None`` when the trial uses TCP."""
    proxy: Any = Field(default=None, exclude=True, repr=False)
    """The proxy object, when it runs in this process (adapters then set the attempt and
    collect its rows); ``None`` for an external proxy."""


class _Request:
    """What the proxy learnt about one request, filled in as it is handled."""

    def __init__(self, method: str, target: str):
        self.arrived = time.monotonic()
        self.wall = datetime.now(timezone.utc)
        self.method, self.target = method, target
        self.protocol: str | None = None
        self.model = ""
        self.status = 502
        self.ttfb: float | None = None
        self.error = ""
        self.stream = False
        self.refused = False
        self.token_trial: str | None = None
        self.include_usage_added = False
        self.upstream = ""


# -- the proxy -----------------------------------------------------------------------------------

class MeteringProxy(BackgroundServer):
    """The metering proxy (see :mod:`benchmark.proxy`). Thread-safe: the driver's threads call
    :meth:`open_trial`, :meth:`set_attempt`, :meth:`calls` and :meth:`unregister` while the
    loop serves."""

    thread_name = "metering-proxy"

    def __init__(self, config: ProxyConfig):
        super().__init__(config.host, config.port)
        self.config = config
        """The configuration."""
        self.prices = PriceTable.load(config.pricing)
        """The price table."""
        self.rejected = 0
        """Number of requests refused for a token that is unknown, missing, or presented on a
        connection it is not valid on."""
        self._lock = threading.Lock()
        self._tokens: dict[str, TrialRegistration] = {}
        self._sockets: dict[str, str] = {}  # socket path -> token of the trial it belongs to
        self._self_checks: dict[str, Callable[[], dict[str, Any]]] = {}  # trial id -> handler
        self._records: list[ProxyRecord] = []
        self._inflight: dict[str, int] = {}
        self._seq = 0
        self._session: aiohttp.ClientSession | None = None
        self._log_file = None

    # registry (called from any thread)

    def register(self, token: str, trial_keys: BaseModel | Mapping[str, Any], *,
                 protocol: Protocol | None = None, upstream: str | None = None,
                 models: list[str] | None = None, socket: str | None = None) -> None:
        """Accept ``token`` from now on, as the trial ``trial_keys`` (a
        :class:`~benchmark.records.TrialKeys` or a mapping holding ``trial_id``), allowed what
        the other arguments say (see :class:`TrialRegistration`).

        Raises:
            MarathonError: the keys hold no ``trial_id``, the token is registered to another
                trial, or the protocol is unknown.
        """
        keys = trial_keys.model_dump(mode="json") if isinstance(trial_keys, BaseModel) else dict(trial_keys)
        trial_id = keys.get("trial_id")
        if not isinstance(trial_id, str) or not trial_id:
            raise MarathonError("proxy registration needs trial keys with a trial_id")
        if protocol is not None and protocol not in PROTOCOLS:
            raise MarathonError(f"proxy registration: unknown protocol {protocol!r} "
                                f"(known: {', '.join(PROTOCOLS)})")
        with self._lock:
            old = self._tokens.get(token)
            if old is not None and old.trial_id != trial_id:
                raise MarathonError(f"proxy token already registered to trial {old.trial_id}")
            self._tokens[token] = TrialRegistration(
                trial_id=trial_id, keys=keys, protocol=protocol, upstream=upstream,
                models=list(models) if models is not None else None, socket=socket)
            if socket is not None:
                self._sockets[socket] = token

    def open_trial(self, trial_keys: BaseModel | Mapping[str, Any], token: str | None = None, *,
                   protocol: Protocol | None = None, upstream: str | None = None,
                   models: list[str] | None = None, socket: Path | None = None) -> ModelEndpoint:
        """Register a new token (or ``token``) for a trial and return the trial's endpoint.

        Args:
            trial_keys: the trial's keys (holding ``trial_id``).
            token: the token to use; a fresh one by default.
            protocol: the one protocol the trial may use (``None``: any).
            upstream: the provider its requests go to (``None``: by protocol and model).
            models: the model names its requests may name (``None``: any); the first is the
                endpoint's :attr:`~ModelEndpoint.model`.
            socket: where to open the trial's own Unix socket (its directory must exist and
                hold nothing else: it is bind-mounted into the trial's container). The token is
                then accepted on that socket only. ``None``: over TCP only.

        Raises:
            MarathonError: the proxy is not running, the keys hold no ``trial_id``, or the
                socket cannot be opened.
        """
        if self.port is None:
            raise MarathonError("the metering proxy is not running: start it before opening trials")
        token = token or new_token()
        name = self.open_unix_socket(socket) if socket is not None else None
        try:
            self.register(token, trial_keys, protocol=protocol, upstream=upstream, models=models,
                          socket=name)
        except BaseException:
            if name is not None:
                self.close_unix_socket(name)
            raise
        keys = trial_keys.model_dump() if isinstance(trial_keys, BaseModel) else dict(trial_keys)
        url = (self.config.container_url or self.url) if socket is not None else self.url
        return ModelEndpoint(base_url=url, token=token, trial_id=keys["trial_id"],
                             model=models[0] if models else None,
                             socket_dir=socket.parent if socket is not None else None, proxy=self)

    def unregister(self, token: str) -> None:
        """Refuse ``token`` from now on and close its trial's socket, if any (its records
        stay)."""
        with self._lock:
            reg = self._tokens.pop(token, None)
            if reg is not None and reg.socket is not None:
                self._sockets.pop(reg.socket, None)
            if reg is not None:
                self._self_checks.pop(reg.trial_id, None)
        if reg is not None and reg.socket is not None:
            self.close_unix_socket(reg.socket)

    def set_self_check(self, token: str, handler: Callable[[], dict[str, Any]] | None) -> None:
        """Serve ``POST /marathon/self-check`` for the token's trial with ``handler`` (``None``:
        stop serving it). The handler runs in a worker thread, blocking, and returns the JSON
        answer (``status``, ``text``); the request is authenticated and bound to the trial's
        socket like a model call, never forwarded, and not recorded as usage (the driver records
        self-checks). Without a handler the path is refused like any other.

        Raises:
            MarathonError: the token is not registered.
        """
        with self._lock:
            reg = self._tokens.get(token)
            if reg is None:
                raise MarathonError("set_self_check: proxy token is not registered")
            if handler is None:
                self._self_checks.pop(reg.trial_id, None)
            else:
                self._self_checks[reg.trial_id] = handler

    def set_attempt(self, token: str, episode: str, attempt: int) -> None:
        """Attribute the token's next requests to ``episode`` / ``attempt``.

        Raises:
            MarathonError: the token is not registered.
        """
        with self._lock:
            reg = self._tokens.get(token)
            if reg is None:
                raise MarathonError("set_attempt: proxy token is not registered")
            reg.episode, reg.attempt = episode, attempt

    def records(self) -> list[ProxyRecord]:
        """Every record written so far, in request order."""
        with self._lock:
            return list(self._records)

    def calls(self, token: str, episode: str | None = None, attempt: int | None = None,
              *, settle_s: float = 5.0) -> list[UsageCall]:
        """The usage calls of the token's trial (optionally of one episode / attempt), refused
        requests included.

        Waits up to ``settle_s`` seconds for the trial's requests still in flight to be
        recorded first (the client may see a stream's last event before the proxy records it).

        Raises:
            MarathonError: the token is not registered.
        """
        deadline = time.monotonic() + settle_s
        while True:
            with self._lock:
                reg = self._tokens.get(token)
                if reg is None:
                    raise MarathonError("calls: proxy token is not registered")
                busy = self._inflight.get(reg.trial_id, 0)
                if not busy or time.monotonic() >= deadline:
                    return [r.call for r in self._records
                            if r.trial_id == reg.trial_id
                            and (episode is None or r.episode == episode)
                            and (attempt is None or r.attempt == attempt)]
            time.sleep(0.02)

    # server

    async def make_app(self) -> web.Application:
        self.config.usage_log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.config.usage_log, "a", encoding="utf-8")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s,
                                        sock_read=self.config.read_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True,
                                              connector=aiohttp.TCPConnector(limit=0))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._log_file is not None:
            self._log_file.close()

    @staticmethod
    def _token_of(request: web.Request) -> str | None:
        token = request.headers.get("x-api-key")
        if token:
            return token.strip()
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None

    @staticmethod
    def _socket_of(request: web.Request) -> str | None:
        """The Unix socket the request came in on (its path), or ``None`` for TCP."""
        name = request.transport.get_extra_info("sockname") if request.transport else None
        return name if isinstance(name, str) and name else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Every request: the local answer to ``HEAD /`` / ``GET /``; else the token, its
        socket, the allow-list and the model are checked, and the request is refused (and
        recorded) or forwarded (and metered)."""
        req = _Request(request.method, request.raw_path)
        if req.method in ("HEAD", "GET") and req.target == "/":
            # Claude Code's pre-warm: answered here, never forwarded, not a model call.
            return web.Response(text="marathon metering proxy\n")
        sock = self._socket_of(request)
        token = self._token_of(request)
        with self._lock:
            reg = self._tokens.get(token) if token else None
            home_token = self._sockets.get(sock) if sock else None
            home = self._tokens.get(home_token) if home_token else None
            reg = reg.model_copy() if reg is not None else None
            home = home.model_copy() if home is not None else None
        # The accountable trial: the one whose socket (container) the request came from.
        owner = home or reg
        spec = PROTOCOLS.get(owner.protocol) if owner is not None and owner.protocol else None
        style = spec.errors if spec else ("anthropic" if request.headers.get("x-api-key") else "openai")
        req.protocol = spec.name if spec else None
        if reg is None:
            with self._lock:
                self.rejected += 1
            why = "unknown or missing marathon proxy token"
            if home is not None:
                self._refuse(home, req, 401, why)
            return error_response(style, 401, "authentication_error", why)
        if reg.socket != sock:
            with self._lock:
                self.rejected += 1
            req.token_trial = reg.trial_id
            where = "over TCP" if sock is None else (
                f"on the socket of trial {home.trial_id}" if home is not None else "on an unknown socket")
            why = f"the token of trial {reg.trial_id} is not valid {where}"
            self._refuse(owner, req, 403, why)
            return error_response(style, 403, "permission_error", why)
        with self._lock:
            checker = self._self_checks.get(reg.trial_id)
        if checker is not None and req.method == "POST" and req.target == SELF_CHECK_PATH:
            # The harness's own endpoint: answered here, never forwarded.
            answer = await asyncio.get_running_loop().run_in_executor(None, checker)
            return web.json_response(answer)
        why = refusal(spec, req.method, req.target)
        if why is not None:
            req.model = _model_of(await request.read())[:_MAX_MODEL]
            self._refuse(reg, req, 403, why)
            return error_response(style, 403, "permission_error", why)
        spec = spec or BY_PATH[req.target.split("?", 1)[0]]
        req.protocol = spec.name
        body = await request.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str) or not doc["model"]:
            why = "the request body is not a JSON object naming a model"
            self._refuse(reg, req, 400, why)
            return error_response(style, 400, "invalid_request_error", why)
        req.model = doc["model"][:_MAX_MODEL]
        if reg.models is not None and doc["model"] not in reg.models:
            why = f"model {req.model!r} is not this trial's (allowed: {', '.join(reg.models)})"
            self._refuse(reg, req, 403, why)
            return error_response(style, 403, "permission_error", why)
        if spec.name == "openai-chat":
            if not isinstance(doc.get("stream", False), bool) or \
                    not isinstance(doc.get("stream_options", {}), (dict, type(None))):
                why = "stream must be true or false and stream_options an object"
                self._refuse(reg, req, 400, why)
                return error_response(style, 400, "invalid_request_error", why)
            if not asks_for_usage(doc):
                body, req.include_usage_added = add_include_usage(doc), True
        req.stream = doc.get("stream") is True
        req.upstream = reg.upstream or (
            "scripted" if req.model.startswith(SIMULATED_PREFIX) else DEFAULT_UPSTREAMS[spec.name])
        upstream = self.config.upstreams.get(req.upstream)
        if upstream is None:
            req.error = f"the proxy has no upstream {req.upstream!r}"
            self._record(reg, req, UsageMeter(), refused=False)
            return error_response(style, 502, "api_error", req.error)
        return await self._forward(request, reg, req, spec, upstream, body)

    async def _forward(self, request: web.Request, reg: TrialRegistration, req: _Request,
                       spec: ProtocolSpec, upstream: Upstream, body: bytes) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() not in _DROPPED}
        if upstream.api_key is not None:
            key = upstream.api_key.get_secret_value()
            if spec.auth == "x-api-key":
                headers["x-api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        headers["Accept-Encoding"] = "identity"
        # The target is exactly an allowed path and query (checked above), so it is sent as is.
        url = upstream.base_url.rstrip("/") + req.target
        meter = METERS[spec.name]()
        with self._lock:
            self._inflight[reg.trial_id] = self._inflight.get(reg.trial_id, 0) + 1
        try:
            return await self._relay(request, url, headers, body, meter, req, spec)
        finally:
            self._record(reg, req, meter, refused=False, inflight=True)

    async def _relay(self, request: web.Request, url: str, headers: dict, body: bytes,
                     meter: UsageMeter, req: _Request, spec: ProtocolSpec) -> web.StreamResponse:
        assert self._session is not None
        try:
            upstream = await self._session.request("POST", url, headers=headers, data=body,
                                                   allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            req.error = f"upstream unreachable: {e.__class__.__name__}: {e}".splitlines()[0]
            return error_response(spec.errors, 502, "api_error",
                                  "the proxy could not reach the upstream API")
        async with upstream:
            req.status = upstream.status
            is_sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
            req.stream = is_sse
            strip = UsageChunkFilter(meter) if is_sse and req.include_usage_added else None
            take = meter.feed_stream if is_sse else meter.feed_body
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding":
                    resp.headers.add(k, v)
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    if strip is not None:
                        out = strip.feed(chunk)
                    else:
                        take(chunk)
                        out = chunk
                    if not out:
                        continue
                    if req.ttfb is None:
                        req.ttfb = time.monotonic() - req.arrived
                    try:
                        await resp.write(out)
                    except (ConnectionError, RuntimeError) as e:
                        req.error = f"client disconnected: {e.__class__.__name__}"
                        return resp
                if strip is not None and (rest := strip.flush()):
                    await resp.write(rest)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                req.error = f"upstream dropped mid-response: {e.__class__.__name__}"
                if request.transport is not None:
                    request.transport.abort()  # the client must see a broken stream
                return resp
            except (ConnectionError, RuntimeError) as e:
                req.error = f"client disconnected: {e.__class__.__name__}"
                return resp
            if not is_sse:
                meter.finish_body()
            try:
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                req.error = req.error or "client disconnected before the end"
            return resp

    def _refuse(self, reg: TrialRegistration, req: _Request, status: int, why: str) -> None:
        """Record a request refused with ``status`` (not forwarded)."""
        req.status, req.error = status, why
        self._record(reg, req, UsageMeter(), refused=True)

    def _record(self, reg: TrialRegistration, req: _Request, meter: UsageMeter, *,
                refused: bool, inflight: bool = False) -> None:
        model = (meter.model or req.model or "unknown")[:_MAX_MODEL]
        ok = 200 <= req.status < 300
        call = UsageCall(source="proxy", api_model=model, input_tokens=meter.input_tokens,
                         output_tokens=meter.output_tokens,
                         cache_write_tokens=meter.cache_write_tokens,
                         cache_read_tokens=meter.cache_read_tokens,
                         reasoning_tokens=meter.reasoning_tokens,
                         latency_s=time.monotonic() - req.arrived, http_status=req.status,
                         method=req.method, path=req.target[:_MAX_TARGET], refused=refused,
                         error=req.error, usage_missing=ok and not meter.seen_usage)
        if refused:
            call.cost_usd = 0.0  # nothing was forwarded, nothing is billed
        elif not call.usage_missing:
            priced = f"{req.upstream}/{model}"
            call.cost_usd = self.prices.cost(priced if self.prices.lookup(priced) else model, call)
        with self._lock:
            record = ProxyRecord(seq=self._seq, time=req.wall, trial_id=reg.trial_id, keys=reg.keys,
                                 episode=reg.episode, attempt=reg.attempt, protocol=req.protocol,
                                 token_trial_id=req.token_trial, request_model=req.model,
                                 stream=req.stream, ttfb_s=req.ttfb,
                                 include_usage_added=req.include_usage_added, call=call)
            self._seq += 1
            self._records.append(record)
            if inflight:
                self._inflight[reg.trial_id] -= 1
            if self._log_file is not None:
                self._log_file.write(record.model_dump_json() + "\n")
                self._log_file.flush()


def _model_of(body: bytes) -> str:
    """The ``model`` a JSON request body names, or ``""``."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else ""
