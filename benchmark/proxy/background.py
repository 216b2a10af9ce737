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

