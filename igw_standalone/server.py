"""The standalone server: the asyncio listener, its connections, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio

from igw_core.config import Settings
from igw_io.response_parsers import resolve_parser
from igw_io.runtime import Runtime
from igw_standalone.http1 import HTTP1Connection
from igw_standalone.listener import Listener, bind, serve_accepted
from igw_standalone.parsers import PARSERS, RequestParser
from igw_standalone.tls import server_ssl_context

log = logging.getLogger("igw.server")

#: How long in-flight requests may run after SIGTERM/SIGINT before they are cut.
SHUTDOWN_GRACE = 10.0
_BACKLOG = 2048
#: Allocations between young-generation collections (CPython's default is 700).
_GC_YOUNG = 10_000


def package_version() -> str:
    """Return igw's installed version (``unknown`` in a checkout never installed)."""
    try:
        return version("igw")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def resolve_loop(choice: str) -> str:
    """Return the event loop for ``--loop`` ``choice`` (``auto``: uvloop when importable).

    Raises:
        ValueError: ``choice`` is unknown, or ``uvloop`` was asked for and is missing.
    """
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {choice!r} (auto, uvloop or asyncio)")
    if choice == "asyncio":
        return choice
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise ValueError("the uvloop event loop is not installed (pip install uvloop)"
                             ) from None
        return "asyncio"
    return "uvloop"


@dataclass(frozen=True, slots=True)
class Engine:
    """The HTTP/1.1 parser and event loop the server runs on (``--http``, ``--loop``)."""

    http: str = "auto"
    loop: str = "auto"


def run(main: Callable[[], Awaitable[Any]], loop: str = "auto") -> None:
    """Run ``main`` to completion on the chosen event loop (see :func:`resolve_loop`)."""
    options: dict[str, Any] = {}
    if resolve_loop(loop) == "uvloop":
        import uvloop

        options["loop_factory"] = uvloop.new_event_loop
    anyio.run(main, backend="asyncio", backend_options=options)


class Server:
    """Accepts connections on asyncio Protocols and serves them until shutdown.

    Args:
        settings: the configuration.
        reuse_port: bind with ``SO_REUSEPORT`` (``--workers``).
        http: the HTTP/1.1 parser, ``auto``, ``httptools`` or ``h11``.
    """

    def __init__(self, settings: Settings, *, reuse_port: bool = False,
                 http: str = "auto") -> None:
        self.settings = settings
        self.http = resolve_parser(http)
        self.parser_factory: Callable[[], RequestParser] = PARSERS[self.http]
        self.runtime = Runtime(settings, parser=self.http)
        self.reuse_port = reuse_port
        self.connections: set[HTTP1Connection] = set()
        self.port = 0
        self._stop: anyio.Event | None = None

    def is_shutting_down(self) -> bool:
        """Whether the server is draining (responses then carry ``Connection: close``)."""
        return self.runtime.draining

    async def serve(self, *, ready: Callable[[Server], None] | None = None) -> None:
        """Listen and serve until SIGTERM/SIGINT, then drain in-flight requests.

        Raises:
            OSError: the address cannot be bound.
        """
        settings = self.settings
        self._stop = anyio.Event()
        loop = asyncio.get_running_loop()
        context = server_ssl_context(settings)
        try:
            sockets = bind(settings.server_host, settings.server_port,
                           reuse_port=self.reuse_port, backlog=_BACKLOG)
        except OSError as error:  # the plain reason, as the startup error prints it
            raise OSError(error.errno, os.strerror(error.errno) if error.errno else str(error)
                          ) from None
        adopting: set[asyncio.Task[None]] = set()

        def adopt(conn: socket.socket) -> None:
            task = loop.create_task(
                serve_accepted(loop, conn, lambda: HTTP1Connection(self), context))
            adopting.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(adopting.discard)

        listener = Listener(loop, sockets, adopt)
        self.port = sockets[0].getsockname()[1]
        # What startup made (modules, settings, tables) is never garbage: keep it out of
        # every collection, and collect young objects less often. Measured with
        # benchmarks/run.py: +5% requests/s at c64 and the worst latency halved.
        gc.freeze()
        gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])
        scheme = "https" if context else "http"
        self.runtime.log_startup()
        try:
            async with self.runtime.running(), anyio.create_task_group() as tasks:
                url = f"{scheme}://{settings.server_host}:{self.port}"
                # Through the logger, so a production process writes only JSON lines.
                log.info(f"igw listening on {url}",
                         extra={"url": url, "version": package_version(), "pid": os.getpid()})
                tasks.start_soon(self._watch_signals)
                if ready is not None:
                    ready(self)
                await self._stop.wait()
                listener.close()
                for connection in list(self.connections):
                    connection.shutdown()
                await self._drain()
                tasks.cancel_scope.cancel()
        finally:
            listener.close()
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.abort()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:  # reload the routing file; keep serving
                    self.runtime.reload_routing()
                    continue
                log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                self.shutdown()
                return

    def shutdown(self) -> None:
        """Stop accepting; idle connections close, in-flight requests may finish
        (``/ready`` answers 503 meanwhile)."""
        self.runtime.draining = True
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        with anyio.move_on_after(self.settings.server_shutdown_timeout):
            while self.connections:
                for connection in list(self.connections):
                    if not connection.serving or connection.h2_connection is not None:
                        connection.shutdown()
                await anyio.sleep(0.02)
