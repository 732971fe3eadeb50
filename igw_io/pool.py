"""A keep-alive pool of httpcore connections with O(1) checkout.

httpcore's ``AsyncConnectionPool`` re-examines every pooled connection (a
``getpeername`` and a ``poll`` each) on every request and every release, so
its cost grows with the number of idle connections: with 32 of them it took
over a third of the gateway's CPU (``benchmarks/``). This pool keeps the idle
connections of each origin on a last-in-first-out stack and checks only the
one it is about to reuse, which also keeps the warmest connection busy.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator

import anyio
import httpcore

_Key = tuple[bytes, bytes, int]


def _key(origin: httpcore.Origin) -> _Key:
    return (origin.scheme, origin.host, origin.port)


class _Released:
    """A response body stream that hands its connection back when closed."""

    def __init__(
        self,
        stream: AsyncIterator[bytes],
        closer: httpcore.Response,
        pool: KeepAlivePool,
        origin: httpcore.Origin,
        connection: httpcore.AsyncHTTPConnection,
    ) -> None:
        self._stream = stream
        self._closer = closer
        self._pool = pool
        self._origin = origin
        self._connection: httpcore.AsyncHTTPConnection | None = connection

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with anyio.CancelScope(shield=True):
            await self._closer.aclose()
            await self._pool.release(self._origin, connection)


class KeepAlivePool:
    """Keep-alive HTTP/1.1 connections per origin, reused most-recent first.

    Args:
        max_idle: idle connections kept in all (``CLIENT_MAX_IDLE_CONNS``).
        max_idle_per_host: idle connections kept per origin
            (``CLIENT_MAX_IDLE_CONNS_PER_HOST``).
        keepalive_expiry: seconds an idle connection may wait for reuse
            (``CLIENT_IDLE_CONN_TIMEOUT``); ``None`` for no limit.
        ssl_context: the TLS context for ``https`` origins (default: system trust).
    """

    def __init__(
        self,
        *,
        max_idle: int,
        max_idle_per_host: int,
        keepalive_expiry: float | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_idle = max(max_idle, 0)
        self._max_idle_per_host = max(max_idle_per_host, 0)
        self._expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Key, deque[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """How many connections wait for reuse right now."""
        return self._idle_count

    async def _checkout(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        stack = self._idle.get(_key(origin))
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._ssl_context, keepalive_expiry=self._expiry
        )

    async def release(
        self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection
    ) -> None:
        """Keep ``connection`` for reuse if it is reusable and there is room, else close it."""
        stack = self._idle.setdefault(_key(origin), deque())
        if (
            not self._closed
            and connection.is_idle()
            and len(stack) < self._max_idle_per_host
            and self._idle_count < self._max_idle
        ):
            stack.append(connection)
            self._idle_count += 1
        else:
            await connection.aclose()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on a pooled or new connection; return once the head arrived.

        The response's stream must be closed (``Response.aclose``) to release
        the connection. A stale pooled connection that fails before sending is
        replaced by a fresh one once.

        Raises:
            httpcore exceptions: connect, protocol and timeout errors.
        """
        origin = request.url.origin
        for attempt in (1, 2):
            connection = await self._checkout(origin)
            reused = connection.is_idle()
            try:
                response = await connection.handle_async_request(request)
            except (httpcore.RemoteProtocolError, httpcore.WriteError):
                await connection.aclose()
                # A kept-alive connection the server closed meanwhile (it read nothing
                # or answered nothing): retry once on a fresh connection.
                if attempt == 1 and reused:
                    continue
                raise
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.aclose()
                raise
            stream = _Released(response.aiter_stream(), response, self, origin, connection)
            return httpcore.Response(
                response.status, headers=response.headers, content=stream,
                extensions=response.extensions,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        stacks, self._idle = self._idle, {}
        self._idle_count = 0
        for stack in stacks.values():
            for connection in stack:
                await connection.aclose()
