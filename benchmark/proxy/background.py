"""An aiohttp application served from its own event loop in a background thread (the proxy and
the scripted model server)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from aiohttp import web

from benchmark.errors import MarathonError


class BackgroundServer:
    """An aiohttp application served from its own event loop in a daemon thread.

    Subclasses implement :meth:`make_app`. :meth:`start` returns once the TCP socket listens
    (or raises :class:`MarathonError`, e.g. when the address is taken); :meth:`stop` closes it.
    Usable as a context manager. While running, :meth:`open_unix_socket` and
    :meth:`close_unix_socket` add and remove Unix sockets the same application is served on.
    """

    thread_name = "aio-server"

    def __init__(self, host: str, port: int):
        self.host = host
        """Address listened on."""
        self._requested_port = port
        self.port: int | None = None
        """Port actually bound (set by :meth:`start`)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The server's event loop (while running)."""
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._unix_sites: dict[str, web.UnixSite] = {}

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

    def _on_loop(self, coro, timeout_s: float = 30.0):
        """Run a coroutine on the server's loop from another thread and return its result."""
        if self.loop is None or self._thread is None:
            coro.close()
            raise MarathonError(f"{self.__class__.__name__} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def open_unix_socket(self, path: Path) -> str:
        """Also serve on a new Unix socket at ``path`` (mode 0666, so a container's uid 1000 can
        connect; its directory must exist). Called from any thread but the loop's.

        Returns:
            The socket's path as the server sees it on each connection (the ``sockname`` of
            requests that come in on it).

        Raises:
            MarathonError: the server is not running, the path is 108 bytes or longer, or the
                socket cannot be made.
        """
        name = str(path)
        if len(name.encode()) >= 108:
            raise MarathonError(f"Unix socket path too long (>= 108 bytes): {name}")

        async def start() -> None:
            site = web.UnixSite(self._runner, name)
            await site.start()
            os.chmod(name, 0o666)
            self._unix_sites[name] = site

        try:
            self._on_loop(start())
        except OSError as e:
            raise MarathonError(f"cannot listen on {name}: {e}") from None
        return name

    def close_unix_socket(self, name: str) -> None:
        """Stop serving on a socket opened by :meth:`open_unix_socket` and delete its file
        (idempotent; nothing happens once the server stopped)."""
        async def stop() -> None:
            site = self._unix_sites.pop(name, None)
            if site is not None:
                await site.stop()

        if self.loop is not None and self._thread is not None:
            self._on_loop(stop())
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass

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

