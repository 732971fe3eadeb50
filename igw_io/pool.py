"""Provider calls on httpcore (the trio path): a keep-alive pool with O(1) checkout.

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

from igw_core.config import Settings
from igw_core.effects import CallProvider
from igw_core.events import FailureReason
from igw_io.h1client import UpstreamFailure, UpstreamResponse, read_limited
from igw_io.upstream import lower_names

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


_TIMEOUTS = (httpcore.TimeoutException, TimeoutError)
_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException,
                    httpcore.UnsupportedProtocol, httpcore.ProxyError, TimeoutError, OSError)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


def _failure(exc: BaseException, *, started_body: bool) -> UpstreamFailure:
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, _TIMEOUTS):
        return UpstreamFailure(FailureReason.TIMEOUT, detail)
    return UpstreamFailure(FailureReason.RESET if started_body else FailureReason.UNREACHABLE,
                           detail)


def _host_header(url: httpcore.URL) -> bytes:
    host = url.host
    if b":" in host:  # an IPv6 literal
        host = b"[" + host + b"]"
    if url.port is not None and url.port != _DEFAULT_PORTS.get(url.scheme):
        return host + b":" + str(url.port).encode()
    return host


class HttpcoreResponse(UpstreamResponse):
    """A provider response on an httpcore connection (the trio path)."""

    def __init__(self, response: httpcore.Response) -> None:
        self.status = response.status
        self.headers = lower_names(response.headers)
        self._response = response
        self._stream: AsyncIterator[bytes] | None = None

    async def next_chunk(self) -> bytes | None:
        """Return the next piece of the body as it arrives, or ``None`` at its end.

        Raises:
            UpstreamFailure: the connection broke or a read timed out.
        """
        if self._stream is None:
            self._stream = self._response.aiter_stream().__aiter__()
        try:
            while True:
                chunk = await anext(self._stream, None)
                if chunk is None or chunk:
                    return chunk
        except _UPSTREAM_ERRORS as exc:
            raise _failure(exc, started_body=True) from None

    async def read(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes.

        Raises:
            UpstreamFailure: the connection broke, timed out, or the body is too large.
        """
        return await read_limited(self.next_chunk, limit)

    async def aclose(self) -> None:
        """Release the connection (back to the pool when the body was fully read)."""
        with anyio.CancelScope(shield=True):
            await self._response.aclose()


class HttpcoreClient:
    """Provider calls through httpcore on :class:`KeepAlivePool`, for event loops other than
    asyncio (trio), with the same limits and timeouts as the asyncio client.

    Args:
        settings: the ``CLIENT_*`` limits.
        head_timeout: seconds to wait for a response head, connecting included.
        ssl_context: TLS context for ``https`` providers (default: system trust).
    """

    def __init__(self, settings: Settings, head_timeout: float | None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = KeepAlivePool(
            max_idle=settings.client_max_idle_conns,
            max_idle_per_host=settings.client_max_idle_conns_per_host,
            keepalive_expiry=settings.client_idle_conn_timeout or None,
            ssl_context=ssl_context,
        )
        timeout = settings.client_timeout or None
        self._extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        self._head_timeout = head_timeout

    async def open(self, call: CallProvider) -> HttpcoreResponse:
        """Send ``call``; return once the response head has arrived.

        Raises:
            UpstreamFailure: the provider is unreachable or did not answer in time.
        """
        url = httpcore.URL(call.url)
        request = httpcore.Request(
            call.method, url,
            headers=[(b"host", _host_header(url)), *call.headers,
                     (b"content-length", str(len(call.body)).encode())],
            content=call.body, extensions=self._extensions,
        )
        try:
            with anyio.fail_after(self._head_timeout):
                response = await self._pool.handle_async_request(request)
        except _UPSTREAM_ERRORS as exc:
            raise _failure(exc, started_body=False) from None
        return HttpcoreResponse(response)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
