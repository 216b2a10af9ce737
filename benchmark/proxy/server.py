"""The metering proxy server: configuration, trial registration, forwarding and recording (see
:mod:`benchmark.proxy`)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from benchmark.errors import MarathonError
from benchmark.proxy.background import BackgroundServer
from benchmark.proxy.meters import UsageMeter
from benchmark.proxy.prices import PRICING_FILE, PriceTable
from benchmark.proxy.protocols import METERED_PATHS, Api
from benchmark.proxy.records import ProxyRecord
from benchmark.records import UsageCall

#: Model names served by the ``simulated`` upstream.
SIMULATED_PREFIX = "scripted/"

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
_AUTH_HEADERS = {"x-api-key", "authorization"}


# -- configuration -------------------------------------------------------------------------------

class Upstream(BaseModel):
    """Where one API's requests go: the vendor's API with the researcher's key, or the scripted
    server."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://")
    """Base URL without the ``/v1/...`` path, e.g. ``https://api.anthropic.com`` or
    ``http://127.0.0.1:8123``."""
    api_key: SecretStr
    """The upstream key; sent upstream only, never logged, never given to a container."""


class ProxyConfig(BaseModel):
    """Configuration of a :class:`MeteringProxy`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """TCP address to listen on (loopback: trial containers reach the proxy through
    :attr:`unix_socket`, not TCP)."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port to listen on; 0 picks a free one (see :attr:`MeteringProxy.port`)."""
    unix_socket: Path | None = None
    """Also listen on this Unix socket (made mode 0666, so the containers' uid 1000 can connect;
    its directory must exist). The driver puts it alone in a per-run directory that is
    bind-mounted into every model agent's container (see :mod:`benchmark.sandbox`). Its path must
    be shorter than 108 bytes."""
    container_url: str | None = Field(default=None, pattern=r"^https?://")
    """Base URL of the proxy as trial containers reach it (the in-container forwarder, e.g.
    ``http://127.0.0.1:8790``), given to agents by :meth:`MeteringProxy.open_trial`; ``None``
    gives them the TCP URL (:attr:`MeteringProxy.url`), for tests on the host."""
    anthropic: Upstream | None = None
    """Upstream of ``/v1/messages`` (and other Anthropic paths); ``None`` answers 502."""
    openai: Upstream | None = None
    """Upstream of ``/v1/responses``; ``None`` answers 502."""
    simulated: Upstream | None = None
    """Upstream of every request naming a ``scripted/*`` model, whatever its API (the scripted
    server, :mod:`benchmark.scripted`); also of an API without its own upstream. Lets one run
    mix simulated and real models."""
    usage_log: Path
    """JSON Lines file the usage records are appended to (created with its directory)."""
    pricing: Path = PRICING_FILE
    """Price table (see :class:`PriceTable`)."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for the upstream connection."""
    read_timeout_s: float = Field(default=600.0, gt=0)
    """Seconds to wait for any upstream bytes before giving up on the call."""


class TrialRegistration(BaseModel):
    """What the proxy knows about one token."""

    trial_id: str
    """Id of the trial."""
    keys: dict[str, Any]
    """The trial keys, copied into every record."""
    episode: str | None = None
    """Current episode id."""
    attempt: int | None = None
    """Current attempt number, 1-based."""


def new_token() -> str:
    """A fresh per-trial token (``mt-`` and 32 random hex digits)."""
    return "mt-" + secrets.token_hex(16)


# -- background asyncio server -------------------------------------------------------------------

class ModelEndpoint(BaseModel):
    """How one trial's agent reaches models: the proxy's URL as the container sees it and the
    trial's token. Made by :meth:`MeteringProxy.open_trial`."""

    base_url: str
    """URL of the proxy as the agent reaches it, without a path: the in-container forwarder
    (``http://127.0.0.1:<port>``), or the proxy's TCP URL for agents on the host."""
    token: SecretStr
    """The per-trial token, given to the agent as its API key."""
    trial_id: str
    """The trial the token belongs to."""
    proxy: Any = Field(default=None, exclude=True, repr=False)
    """The proxy object, when it runs in this process (adapters then set the attempt and
    collect its rows); ``None`` for an external proxy."""


# -- the proxy -----------------------------------------------------------------------------------

class MeteringProxy(BackgroundServer):
    """The metering proxy (see the module docstring). Thread-safe: the driver's threads call
    :meth:`register`, :meth:`set_attempt` and :meth:`calls` while the loop serves."""

    thread_name = "metering-proxy"

    def __init__(self, config: ProxyConfig):
        super().__init__(config.host, config.port, config.unix_socket)
        self.config = config
        """The configuration."""
        self.prices = PriceTable.load(config.pricing)
        """The price table."""
        self.rejected = 0
        """Number of requests refused for an unknown or missing token."""
        self._lock = threading.Lock()
        self._tokens: dict[str, TrialRegistration] = {}
        self._records: list[ProxyRecord] = []
        self._inflight: dict[str, int] = {}
        self._seq = 0
        self._session: aiohttp.ClientSession | None = None
        self._log_file = None

    # registry (called from any thread)

    def register(self, token: str, trial_keys: BaseModel | Mapping[str, Any]) -> None:
        """Accept ``token`` from now on, as the trial ``trial_keys`` (a
        :class:`~benchmark.records.TrialKeys` or a mapping holding ``trial_id``).

        Raises:
            MarathonError: the keys hold no ``trial_id``, or the token is registered to
                another trial.
        """
        keys = trial_keys.model_dump(mode="json") if isinstance(trial_keys, BaseModel) else dict(trial_keys)
        trial_id = keys.get("trial_id")
        if not isinstance(trial_id, str) or not trial_id:
            raise MarathonError("proxy registration needs trial keys with a trial_id")
        with self._lock:
            old = self._tokens.get(token)
            if old is not None and old.trial_id != trial_id:
                raise MarathonError(f"proxy token already registered to trial {old.trial_id}")
            self._tokens[token] = TrialRegistration(trial_id=trial_id, keys=keys)

    def open_trial(self, trial_keys: BaseModel | Mapping[str, Any],
                   token: str | None = None) -> ModelEndpoint:
        """Register a new token (or ``token``) for a trial and return the trial's endpoint
        (the proxy's URL, the token, this proxy).

        Raises:
            MarathonError: the proxy is not running, or the keys hold no ``trial_id``.
        """
        if self.port is None:
            raise MarathonError("the metering proxy is not running: start it before opening trials")
        token = token or new_token()
        self.register(token, trial_keys)
        keys = trial_keys.model_dump() if isinstance(trial_keys, BaseModel) else dict(trial_keys)
        return ModelEndpoint(base_url=self.config.container_url or self.url, token=token,
                             trial_id=keys["trial_id"], proxy=self)

    def unregister(self, token: str) -> None:
        """Refuse ``token`` from now on (its records stay)."""
        with self._lock:
            self._tokens.pop(token, None)

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
        """The usage calls of the token's trial (optionally of one episode / attempt).

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
        app.router.add_route("HEAD", "/", self._root)
        app.router.add_route("GET", "/", self._root)
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        return app

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._log_file is not None:
            self._log_file.close()

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="marathon metering proxy\n")

    def _token_of(self, request: web.Request) -> str | None:
        token = request.headers.get("x-api-key")
        if token:
            return token.strip()
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None

    @staticmethod
    def _api_of(path: str) -> Api:
        if path.startswith("/v1/responses") or path.startswith("/v1/chat") or path.startswith("/v1/models"):
            return "openai"
        return "anthropic"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        arrived, wall = time.monotonic(), datetime.now(timezone.utc)
        path = request.path
        api = self._api_of(path)
        token = self._token_of(request)
        with self._lock:
            reg = self._tokens.get(token) if token else None
            reg = reg.model_copy() if reg is not None else None
        if reg is None:
            self.rejected += 1
            return _error(api, 401, "authentication_error", "unknown or missing marathon proxy token")
        body = await request.read()
        metered = request.method == "POST" and path in METERED_PATHS
        request_model, stream_requested = "", False
        if metered:
            try:
                doc = json.loads(body)
                request_model = str(doc.get("model") or "")
                stream_requested = bool(doc.get("stream"))
            except (ValueError, AttributeError):
                pass
        upstream = self.config.anthropic if api == "anthropic" else self.config.openai
        if self.config.simulated is not None and (
                request_model.startswith(SIMULATED_PREFIX) or upstream is None):
            upstream = self.config.simulated
        if upstream is None:
            return _error(api, 502, "api_error", f"the proxy has no {api} upstream")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() not in _AUTH_HEADERS
                   and k.lower() != "accept-encoding"}
        key = upstream.api_key.get_secret_value()
        if api == "anthropic":
            headers["x-api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        headers["Accept-Encoding"] = "identity"
        url = upstream.base_url.rstrip("/") + request.rel_url.path_qs

        meter = UsageMeter(api)
        state = {"status": 502, "ttfb": None, "error": "", "stream": stream_requested}
        if metered:
            with self._lock:
                self._inflight[reg.trial_id] = self._inflight.get(reg.trial_id, 0) + 1
        try:
            return await self._relay(request, url, headers, body, meter, state, api)
        finally:
            if metered:
                self._record(reg, api, path, request_model, meter, state, arrived, wall)

    async def _relay(self, request: web.Request, url: str, headers: dict, body: bytes,
                     meter: UsageMeter, state: dict, api: Api) -> web.StreamResponse:
        assert self._session is not None
        arrived = time.monotonic()
        try:
            upstream = await self._session.request(request.method, url, headers=headers,
                                                   data=body, allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            state["error"] = f"upstream unreachable: {e.__class__.__name__}: {e}".splitlines()[0]
            return _error(api, 502, "api_error", "the proxy could not reach the upstream API")
        async with upstream:
            state["status"] = upstream.status
            ctype = upstream.headers.get("content-type", "")
            is_sse = ctype.startswith("text/event-stream")
            state["stream"] = is_sse
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding":
                    resp.headers.add(k, v)
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    if state["ttfb"] is None:
                        state["ttfb"] = time.monotonic() - arrived
                    try:
                        await resp.write(chunk)
                    except (ConnectionError, RuntimeError) as e:
                        state["error"] = f"client disconnected: {e.__class__.__name__}"
                        (meter.feed_stream if is_sse else meter.feed_body)(chunk)
                        return resp
                    (meter.feed_stream if is_sse else meter.feed_body)(chunk)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                state["error"] = f"upstream dropped mid-response: {e.__class__.__name__}"
                if request.transport is not None:
                    request.transport.abort()  # the client must see a broken stream
                return resp
            if not is_sse:
                meter.finish_body()
            try:
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                state["error"] = state["error"] or "client disconnected before the end"
            return resp

    def _record(self, reg: TrialRegistration, api: Api, path: str, request_model: str,
                meter: UsageMeter, state: dict, arrived: float, wall: datetime) -> None:
        model = meter.model or request_model or "unknown"
        call = UsageCall(source="proxy", api_model=model, input_tokens=meter.input_tokens,
                         output_tokens=meter.output_tokens,
                         cache_write_tokens=meter.cache_write_tokens,
                         cache_read_tokens=meter.cache_read_tokens,
                         reasoning_tokens=meter.reasoning_tokens,
                         latency_s=time.monotonic() - arrived, http_status=state["status"])
        call.cost_usd = self.prices.cost(model, call)
        with self._lock:
            record = ProxyRecord(seq=self._seq, time=wall, trial_id=reg.trial_id, keys=reg.keys,
                                 episode=reg.episode, attempt=reg.attempt, api=api, path=path,
                                 request_model=request_model, stream=state["stream"],
                                 ttfb_s=state["ttfb"], error=state["error"], call=call)
            self._seq += 1
            self._records.append(record)
            self._inflight[reg.trial_id] -= 1
            if self._log_file is not None:
                self._log_file.write(record.model_dump_json() + "\n")
                self._log_file.flush()


def _error(api: Api, status: int, kind: str, message: str) -> web.Response:
    """An error response shaped like the API's own errors."""
    if api == "anthropic":
        doc = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        doc = {"error": {"message": message, "type": kind,
                         "code": "invalid_api_key" if status == 401 else None}}
    return web.json_response(doc, status=status)

