"""The standalone server: listeners, connection tasks, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import ssl
import sys
from collections.abc import Callable

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSListener

from igw_core.config import Settings
from igw_io.runtime import Runtime
from igw_standalone.http1 import H11Connection
from igw_standalone.http2 import PREFACE, H2Connection
from igw_standalone.sockets import PEER_GONE

log = logging.getLogger("igw.server")

#: How long in-flight requests may run after SIGTERM/SIGINT before they are cut.
SHUTDOWN_GRACE = 10.0


class Server:
    """Accepts connections and serves each on :class:`H11Connection` until shutdown."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.reuse_port = reuse_port
        self.connections: set[H11Connection | H2Connection] = set()
        self.shutting_down = False
        self.port = 0
        self._accept_scope: anyio.CancelScope | None = None

    def _is_shutting_down(self) -> bool:
        return self.shutting_down

    def _ssl_context(self) -> ssl.SSLContext | None:
        settings = self.settings
        if not settings.server_tls_cert_path:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.server_tls_cert_path, settings.server_tls_key_path)
        context.set_alpn_protocols(["h2", "http/1.1"])
        return context

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        connection: H11Connection | H2Connection
        alpn = stream.extra(TLSAttribute.alpn_protocol, None)
        if alpn == "h2":
            connection = H2Connection(stream, self.runtime, self._is_shutting_down)
        else:
            first = await self._first_bytes(stream)
            if not first:
                await stream.aclose()
                return
            if first.startswith(PREFACE[: len(first)]) and alpn is None:
                connection = H2Connection(stream, self.runtime, self._is_shutting_down, first)
            else:
                connection = H11Connection(stream, self.runtime, self._is_shutting_down, first)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)

    async def _first_bytes(self, stream: anyio.abc.ByteStream) -> bytes:
        """Read the connection's first bytes, to tell HTTP/2 prior knowledge from HTTP/1.1."""
        try:
            with anyio.fail_after(self.settings.server_read_timeout or None):
                return await stream.receive(65536)
        except (TimeoutError, *PEER_GONE):
            return b""

    async def serve(self, *, ready: Callable[[Server], None] | None = None) -> None:
        """Listen and serve until SIGTERM/SIGINT, then drain in-flight requests."""
        settings = self.settings
        listener: anyio.abc.Listener[anyio.abc.ByteStream]
        tcp = await anyio.create_tcp_listener(
            local_host=settings.server_host, local_port=settings.server_port,
            reuse_port=self.reuse_port,
        )
        self.port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        context = self._ssl_context()
        listener = TLSListener(tcp, context, standard_compatible=False) if context else tcp
        scheme = "https" if context else "http"
        self.runtime.log_startup()
        async with self.runtime.running(), anyio.create_task_group() as connections:
            print(f"igw listening on {scheme}://{settings.server_host}:{self.port}",
                  file=sys.stderr, flush=True)
            if ready is not None:
                ready(self)
            with anyio.CancelScope() as self._accept_scope:
                connections.start_soon(self._watch_signals)
                await listener.serve(self._handle, task_group=connections)
            await listener.aclose()
            await self._drain()
            connections.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                self.shutdown()
                return

    def shutdown(self) -> None:
        """Stop accepting; idle connections close, in-flight requests may finish."""
        self.shutting_down = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()

    async def _drain(self) -> None:
        with anyio.move_on_after(SHUTDOWN_GRACE):
            while self.connections:
                for connection in list(self.connections):
                    if connection.idle_scope is not None:
                        connection.idle_scope.cancel()
                await anyio.sleep(0.02)
