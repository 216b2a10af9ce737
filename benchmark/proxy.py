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
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import date as Date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from benchmark.errors import MarathonError
from benchmark.tomlfile import field_error, read_toml
from benchmark.paths import PROJECT_ROOT
from benchmark.records import UsageCall

log = logging.getLogger(__name__)

#: The default price table, at the project root.
PRICING_FILE = PROJECT_ROOT / "pricing.toml"

#: Which API a metered path belongs to.
Api = Literal["anthropic", "openai"]
METERED_PATHS: dict[str, Api] = {"/v1/messages": "anthropic", "/v1/responses": "openai"}
#: Model names served by the ``simulated`` upstream.
SIMULATED_PREFIX = "scripted/"

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
_AUTH_HEADERS = {"x-api-key", "authorization"}


# -- pricing -------------------------------------------------------------------------------------

class Price(BaseModel):
    """One price of one model, with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_mtok: float = Field(ge=0)
    """Price in USD per million tokens."""
    date: Date
    """Date on which the price was read from its source."""
    source: str = Field(min_length=1)
    """Where the price comes from: a URL of the vendor's price list, or ``simulation``."""


class ModelPrice(BaseModel):
    """The four prices of one model (USD per million tokens of each kind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Price
    """Input tokens that are neither cache reads nor cache writes."""
    output: Price
    """Output tokens (reasoning tokens included, where the provider bills them as output)."""
    cache_write: Price
    """Input tokens written to the prompt cache (Anthropic's 5-minute cache write price)."""
    cache_read: Price
    """Input tokens read from the prompt cache."""


class PriceTable(BaseModel):
    """``pricing.toml``: model name (or ``fnmatch`` pattern such as ``scripted/*``) to prices.

    A model name is looked up exactly, then without a trailing ``-YYYYMMDD`` date, then against
    the patterns in file order. An unknown model costs ``None`` (and is warned about once).
    """

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice]
    """Prices by model name or pattern."""

    _warned: set[str] = PrivateAttr(default_factory=set)

    @classmethod
    def load(cls, path: Path = PRICING_FILE) -> "PriceTable":
        """Read and validate a price table.

        Raises:
            MarathonError: the file is missing, not TOML, or a price lacks a field.
        """
        data = read_toml(path)
        try:
            table = cls.model_validate(data)
        except ValidationError as e:
            raise field_error(path, e) from None
        return table

    def lookup(self, model: str) -> ModelPrice | None:
        """The prices of ``model``, or ``None`` when the table does not know it."""
        if model in self.models:
            return self.models[model]
        undated = re.sub(r"-\d{8}$", "", model)
        if undated in self.models:
            return self.models[undated]
        for pattern, price in self.models.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(self, model: str, call: UsageCall) -> float | None:
        """Cost in USD of one call's tokens, or ``None`` for a model the table does not know
        (logged as a warning the first time)."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("pricing.toml has no price for model %r: its cost is recorded as null", model)
            return None
        return (call.input_tokens * price.input.usd_per_mtok
                + call.output_tokens * price.output.usd_per_mtok
                + call.cache_write_tokens * price.cache_write.usd_per_mtok
                + call.cache_read_tokens * price.cache_read.usd_per_mtok) / 1e6


# -- records -------------------------------------------------------------------------------------

class ProxyRecord(BaseModel):
    """One metered model request: a line of the proxy's JSON Lines usage file."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    """Sequence number of the request in this proxy's lifetime, 0-based."""
    time: datetime
    """When the request arrived (UTC)."""
    trial_id: str
    """Id of the trial whose token made the request."""
    keys: dict[str, Any]
    """The trial keys given to :meth:`MeteringProxy.register` (e.g. a
    :class:`~benchmark.records.TrialKeys` dump)."""
    episode: str | None
    """Episode the trial was in (from :meth:`MeteringProxy.set_attempt`); null before any."""
    attempt: int | None
    """Attempt number the trial was in, 1-based; null before any."""
    api: Api
    """``anthropic`` (Messages API) or ``openai`` (Responses API)."""
    path: str
    """Request path, e.g. ``/v1/messages``."""
    request_model: str
    """Model named in the request body (``api_model`` is the model the response names)."""
    stream: bool
    """Whether the response was a server-sent event stream."""
    ttfb_s: float | None
    """Seconds from request arrival to the first response byte passed on; null if none."""
    error: str = ""
    """Why the call did not complete normally (upstream unreachable, dropped mid-stream,
    client gone); empty otherwise."""
    call: UsageCall
    """The usage figures (``source="proxy"``)."""


def load_usage(path: Path) -> list[ProxyRecord]:
    """Read a proxy usage file. A torn last line (a crash mid-write) is skipped.

    Raises:
        MarathonError: a line other than the last is not a valid record.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(ProxyRecord.model_validate_json(line))
        except ValidationError as e:
            if i == len(lines) - 1:
                continue
            raise MarathonError(f"{path}:{i + 1}: not a proxy usage record: {e.errors()[0]['msg']}") from None
    return records


def load_usage_calls(path: Path, *, trial_id: str | None = None, episode: str | None = None,
                     attempt: int | None = None) -> list[UsageCall]:
    """The :class:`~benchmark.records.UsageCall` records of a proxy usage file, in request
    order, optionally only those of one trial / episode / attempt."""
    return [r.call for r in load_usage(path)
            if (trial_id is None or r.trial_id == trial_id)
            and (episode is None or r.episode == episode)
            and (attempt is None or r.attempt == attempt)]


# -- usage extraction ----------------------------------------------------------------------------

class SSEParser:
    """Incremental parser of a ``text/event-stream`` body: feed bytes as they come, get the
    ``data`` payload of each complete event (per the WHATWG event-stream rules: lines end with
    CRLF, LF or CR; an empty line dispatches; ``data:`` lines are joined with LF)."""

    def __init__(self):
        self._buf = ""
        self._data: list[str] = []
        self._decoder = None

    def feed(self, chunk: bytes) -> list[str]:
        """Parse a chunk; return the data of every event it completed."""
        import codecs

        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf += self._decoder.decode(chunk)
        events = []
        while True:
            m = re.search(r"\r\n|\n|\r", self._buf)
            if m is None or (m.group() == "\r" and m.end() == len(self._buf)):
                break  # no full line yet (a lone CR at the end may be half of CRLF)
            line, self._buf = self._buf[:m.start()], self._buf[m.end():]
            if line == "":
                if self._data:
                    events.append("\n".join(self._data))
                self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events


class UsageMeter:
    """Extracts the usage of one response of one API, from its event stream or JSON body."""

    def __init__(self, api: Api):
        self.api = api
        """The API of the response."""
        self.model: str | None = None
        """Model named by the response, when it names one."""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_write_tokens = 0
        self.cache_read_tokens = 0
        self.reasoning_tokens = 0
        self.seen_usage = False
        """Whether any usage figure was found."""
        self._sse = SSEParser()
        self._body = bytearray()

    def feed_stream(self, chunk: bytes) -> None:
        """Feed a chunk of an event-stream body."""
        for data in self._sse.feed(chunk):
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def feed_body(self, chunk: bytes) -> None:
        """Feed a chunk of a non-streamed (JSON) body; parsed by :meth:`finish_body`."""
        if len(self._body) < 16 * 1024 * 1024:
            self._body += chunk

    def finish_body(self) -> None:
        """Parse the JSON body fed so far (an Anthropic message or an OpenAI response)."""
        try:
            doc = json.loads(self._body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self.api == "anthropic":
            self._anthropic_usage(doc.get("usage"), doc.get("model"))
        else:
            self._openai_usage(doc.get("usage"), doc.get("model"))

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        if self.api == "anthropic":
            if kind == "message_start" and isinstance(event.get("message"), dict):
                msg = event["message"]
                self._anthropic_usage(msg.get("usage"), msg.get("model"))
            elif kind == "message_delta":
                self._anthropic_usage(event.get("usage"), None)
        elif kind in ("response.completed", "response.incomplete", "response.failed") \
                and isinstance(event.get("response"), dict):
            resp = event["response"]
            self._openai_usage(resp.get("usage"), resp.get("model"))

    def _anthropic_usage(self, usage: Any, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model
        if not isinstance(usage, dict):
            return
        self.seen_usage = True
        # message_delta's usage is cumulative: a figure it carries replaces message_start's.
        for src, attr in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                          ("cache_creation_input_tokens", "cache_write_tokens"),
                          ("cache_read_input_tokens", "cache_read_tokens")):
            value = usage.get(src)
            if isinstance(value, int) and value >= 0:
                setattr(self, attr, value)

    def _openai_usage(self, usage: Any, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model
        if not isinstance(usage, dict):
            return
        self.seen_usage = True
        total_in = _int(usage.get("input_tokens"))
        cached = _int((usage.get("input_tokens_details") or {}).get("cached_tokens"))
        self.cache_read_tokens = cached
        self.input_tokens = max(0, total_in - cached)
        self.output_tokens = _int(usage.get("output_tokens"))
        self.reasoning_tokens = _int((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


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

class BackgroundServer:
    """An aiohttp application served from its own event loop in a daemon thread.

    Subclasses implement :meth:`make_app`. :meth:`start` returns once the socket listens (or
    raises :class:`MarathonError`, e.g. when the address is taken); :meth:`stop` closes it.
    Usable as a context manager.
    """

    thread_name = "aio-server"

    def __init__(self, host: str, port: int, unix_socket: Path | None = None):
        self.host = host
        """Address listened on."""
        self.unix_socket = unix_socket
        """Unix socket also listened on (mode 0666), or ``None``."""
        self._requested_port = port
        self.port: int | None = None
        """Port actually bound (set by :meth:`start`)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The server's event loop (while running)."""
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    async def make_app(self) -> web.Application:
        """Build the application (called on the server's loop)."""
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Release resources made by :meth:`make_app` (called on the server's loop)."""

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        """Start serving in a background thread; return once listening.

        Raises:
            MarathonError: the server could not listen (address taken or not local) or did not
                come up within 30 s.
        """
        if self._thread is not None:
            raise MarathonError(f"{self.__class__.__name__} already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=serve, daemon=True, name=self.thread_name)
        self._thread.start()
        if not ready.wait(30):
            raise MarathonError(f"{self.__class__.__name__} did not start within 30 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise MarathonError(f"{self.__class__.__name__} cannot listen on "
                                f"{self.host}:{self._requested_port}: {failure[0]}")
        return self

    async def _start_site(self) -> None:
        app = await self.make_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.unix_socket is not None:
            if len(str(self.unix_socket).encode()) >= 108:
                raise OSError(f"Unix socket path too long (>= 108 bytes): {self.unix_socket}")
            await web.UnixSite(self._runner, str(self.unix_socket)).start()
            os.chmod(self.unix_socket, 0o666)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.on_stop()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent). Open connections are closed."""
        if self._thread is None or self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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


# -- trial endpoints and reconciliation ----------------------------------------------------------


#: Token kinds compared by :func:`reconcile`.
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens",
               "reasoning_tokens")


class Reconciliation(BaseModel):
    """Proxy vs agent usage of one attempt, token kind by kind."""

    verdict: Literal["match", "mismatch", "no_agent_usage"]
    """``match``: every compared kind agrees; ``mismatch``: some differ; ``no_agent_usage``: the
    agent reported nothing to compare (crash, timeout)."""
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

    Proxy rows with a non-2xx status are left out (the agent is not billed for refused calls);
    rows of both sides are summed over models.
    """
    counted = [c for c in proxy_calls if c.http_status is not None and 200 <= c.http_status < 300]
    p = {k: sum(getattr(c, k) for c in counted) for k in kinds}
    a = {k: sum(getattr(c, k) for c in agent_calls) for k in kinds}
    diff = {k: a[k] - p[k] for k in kinds if a[k] != p[k]}
    verdict = "no_agent_usage" if not agent_calls else "mismatch" if diff else "match"
    return Reconciliation(verdict=verdict, proxy=p, agent=a, difference=diff,
                          proxy_calls=len(counted), kinds=list(kinds))
