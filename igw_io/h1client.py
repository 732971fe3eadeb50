"""The provider client on asyncio Protocols: HTTP/1.1 connections kept alive per origin.

Each connection is an ``asyncio.Protocol`` that feeds one response parser
(:mod:`igw_io.response_parsers`) from ``data_received``. Body bytes are handed on as they
arrive; reading pauses while the consumer is behind. Timeouts are loop timers re-armed on
progress, not a cancel scope per operation. :class:`H1Client` keeps idle connections per
origin, most recent first, and retries a request once when a kept-alive connection turns out
to have been closed by the server while it sat idle.
"""

from __future__ import annotations

import asyncio
import enum
import os
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, cast
from urllib.parse import urlsplit

from mypy_extensions import mypyc_attr

from igw_core.events import FailureReason
from igw_io.header_lines import header_lines
from igw_io.loops import resolve
from igw_io.response_parsers import (
    ResponseParseError,
    ResponseSink,
    make_parser,
    resolve_parser,
)

__all__ = ["ClientResponse", "H1Client", "UpstreamFailure", "UpstreamResponse",
           "default_ssl_context"]

#: Unread body bytes above which the connection stops reading; it resumes below the low mark.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
#: Bodies up to this size go out in the same write as the head, joined to it.
_JOIN_LIMIT: Final = 16 * 1024
#: Bodies up to this size go out in the same write as the head, beside it: one writev on
#: uvloop, instead of a copy of the body.
_BESIDE_LIMIT: Final = 64 * 1024
#: Larger bodies are written in slices of this size, waiting for the socket to drain.
_WRITE_SLICE: Final = 256 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Seconds idle connections over the idle limits wait for reuse before they are closed.
SURPLUS_GRACE = 1.0
#: URLs and origins remembered (parsing them is most of a request's URL work).
_MAX_CACHED: Final = 1024


class UpstreamFailure(Exception):
    """A provider call failed; ``reason`` says how, ``str()`` says what happened."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def default_ssl_context() -> ssl.SSLContext:
    """Return a verifying TLS client context with the system's trust store, offering HTTP/1.1.

    OpenSSL reads ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` when they are set. Only when
    neither is set and the system store is empty (a bare container) are certifi's roots
    loaded, if certifi is installed.
    """
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    if (not context.cert_store_stats()["x509_ca"] and "SSL_CERT_FILE" not in os.environ
            and "SSL_CERT_DIR" not in os.environ):
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with httpcore
            return context
        context.load_verify_locations(certifi.where())
    return context


def _show(seconds: float) -> str:
    return f"{seconds:g}s"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class _Phase(enum.Enum):
    """Where a connection is. Transitions (anything else does not happen):

    ``IDLE -> WAITING`` a request is written; ``IDLE -> CLOSED`` expired or dropped.
    ``WAITING -> BODY`` the head arrived; ``WAITING -> DONE`` a head without a body.
    ``BODY -> DONE`` the body ended. ``WAITING | BODY -> FAILED`` closed, reset, malformed
    or timed out (the connection is closed). ``DONE -> IDLE`` released for reuse;
    ``DONE -> CLOSED`` released when it cannot be reused. FAILED and CLOSED are final.
    """

    IDLE = "idle"
    WAITING = "waiting"
    BODY = "body"
    DONE = "done"
    FAILED = "failed"
    CLOSED = "closed"


_IDLE: Final = _Phase.IDLE
_WAITING: Final = _Phase.WAITING
_BODY: Final = _Phase.BODY
_DONE: Final = _Phase.DONE
_FAILED: Final = _Phase.FAILED
_CLOSED: Final = _Phase.CLOSED


class _Origin:
    """Where to connect for one ``scheme://host:port``, and the request-line tail for it."""

    __slots__ = ("host", "key", "name", "port", "server_hostname", "ssl", "tail")

    def __init__(self, base: str, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        parts = urlsplit(base)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise UpstreamFailure(FailureReason.UNREACHABLE, f"unsupported URL {base!r}")
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS[scheme]
        shown = host if host.isascii() else host.encode("idna").decode("ascii")
        if ":" in shown:  # an IPv6 literal
            shown = f"[{shown}]"
        if port != _DEFAULT_PORTS[scheme]:
            shown += f":{port}"
        self.key = base
        self.name = f"{scheme}://{shown}"
        self.host = host
        self.port = port
        self.ssl = ssl_context() if scheme == "https" else None
        self.server_hostname = host if self.ssl is not None else None
        self.tail = b" HTTP/1.1\r\nhost: " + shown.encode("ascii") + b"\r\n"


class _Connection(ResponseSink, asyncio.Protocol):
    """One HTTP/1.1 connection to a provider, and the state of its current exchange.

    The task that sent the request waits on ``_waiter``; the protocol callbacks (data,
    loss, timer, drain) wake it. Only that one task ever waits on a connection.
    """

    def __init__(self, client: H1Client, key: str) -> None:
        self._client = client
        self._loop = client.loop
        self.key = key
        self._parser = make_parser(client.parser, self)
        self._read_timeout = client.read_timeout
        self.transport: asyncio.Transport | None = None
        self.phase = _IDLE
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        # Pieces parsed and not yet taken; the reader takes all of them at once.
        self._body: list[bytes] = []
        self._buffered = 0
        self._reading_paused = False
        self._writing_paused = False
        self._keep_alive = False
        self._sent = False
        self._received = False
        self._lost = False
        self._failure: UpstreamFailure | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._last_read = 0.0

    # -- the exchange, driven by the requesting task ---------------------------------------

    async def request(self, origin: _Origin, head: bytes, body: bytes, head_request: bool,
                      deadline: float | None, reused: bool = True) -> ClientResponse:
        """Send one request; return once its head arrived.

        A ``reused`` connection the server closed before answering anything (it had timed
        it out while idle) never delivered the request: it is sent again on a fresh
        connection to ``origin``.

        Raises:
            UpstreamFailure: the connection broke, the answer was malformed or late.
        """
        self.phase = _WAITING
        self._received = self._keep_alive = self._sent = False
        self._parser.expect(head_request)
        self._deadline = deadline
        if deadline is not None:
            self._arm(deadline)
        transport = self.transport
        try:
            if transport is None or self._lost or transport.is_closing():
                self._broken("the connection was closed before the request was sent")
            elif len(body) <= _JOIN_LIMIT:
                transport.write(head + body if body else head)
                self._sent = True
            elif len(body) <= _BESIDE_LIMIT:
                transport.writelines((head, body))
                self._sent = True
            else:
                await self._write_large(transport, head, body)
            while self.phase is _WAITING:
                self._waiter = waiter = self._loop.create_future()
                await waiter
        except BaseException:  # cancelled: the answer will never be read
            self.abort()
            raise
        if self.phase is _FAILED:
            failure = self._failure  # set by _fail with the phase
            assert failure is not None
            if reused and not self._received and failure.reason is FailureReason.UNREACHABLE:
                return await self._client.fresh(origin, head, body, head_request, deadline)
            raise failure
        return ClientResponse(self)

    async def _write_large(self, transport: asyncio.Transport, head: bytes, body: bytes) -> None:
        transport.write(head)
        view = memoryview(body)
        for start in range(0, len(view), _WRITE_SLICE):
            if self.phase is not _WAITING:
                return  # answered (or failed) before the whole body went out: never reused
            transport.write(view[start:start + _WRITE_SLICE])
            while self._writing_paused and self.phase is _WAITING:
                self._waiter = waiter = self._loop.create_future()
                await waiter
        self._sent = True

    def release(self) -> None:
        """Hand the connection back: to the pool if the response was read to its end."""
        if (self.phase is _DONE and self._keep_alive and self._sent and not self._lost):
            self._body.clear()
            self._buffered = 0
            if self._reading_paused:
                self._resume_reading()
            self._client.put(self)
        elif self.phase is _DONE or self.phase is _BODY or self.phase is _WAITING:
            self.abort()

    def abort(self) -> None:
        """Close the connection at once; a waiting task sees the exchange as failed."""
        if self.phase is _WAITING or self.phase is _BODY:
            self._interrupt("the exchange was abandoned")
            return
        if self.phase is not _FAILED:
            self.phase = _CLOSED
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def close(self) -> None:
        """Close an idle connection politely (it is not in the pool any more)."""
        self.phase = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            resolve(waiter)

    # -- failures and timers ----------------------------------------------------------------

    def _broken(self, detail: str) -> None:
        """The connection closed, reset or spoke nonsense during the exchange."""
        phase = self.phase
        if phase is _DONE:  # bytes after a complete response: it stands, the connection goes
            self._keep_alive = False
            if self.transport is not None:
                self.transport.abort()
            return
        if phase is _WAITING or phase is _BODY:
            self._interrupt(detail)

    def _interrupt(self, detail: str) -> None:
        """Fail the exchange under way: unreachable before the head, reset after it."""
        self._fail(FailureReason.RESET if self.phase is _BODY else FailureReason.UNREACHABLE,
                   detail)

    def _fail(self, reason: FailureReason, detail: str) -> None:
        """End the exchange with ``reason``, drop the connection and wake the waiting task."""
        self._failure = UpstreamFailure(reason, detail)
        self.phase = _FAILED
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is None:
            self._timer = self._loop.call_at(when, self._on_timer)
        elif timer.when() > when:
            timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        # One timer per connection, re-armed when it fires early: progress costs no timer.
        self._timer = None
        phase = self.phase
        if phase is _WAITING:
            deadline = self._deadline
            if deadline is None:
                return
            detail = (f"no response head within {_show(self._client.head_timeout or 0)} "
                      "(CLIENT_RESPONSE_HEADER_TIMEOUT)")
        elif phase is _BODY and self._read_timeout is not None and not self._reading_paused:
            deadline = self._last_read + self._read_timeout
            detail = f"no response data for {_show(self._read_timeout)} (CLIENT_TIMEOUT)"
        else:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._fail(FailureReason.TIMEOUT, detail)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        self._last_read = self._loop.time()
        if self._read_timeout is not None and self.phase is _BODY:
            self._arm(self._last_read + self._read_timeout)

    def consumed(self, size: int) -> None:
        """The consumer took ``size`` body bytes; read again once it has caught up."""
        self._buffered -= size
        if self._reading_paused and self._buffered <= LOW_WATER:
            self._resume_reading()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is _WAITING or phase is _BODY:
            self._received = True
            self._last_read = self._loop.time()
            try:
                self._parser.feed(data)
            except ResponseParseError as exc:
                self._broken(f"malformed response: {exc}")
        elif phase is _DONE:
            self._broken("data after the end of the response")
        elif phase is _IDLE:  # an answer to nothing: this connection cannot be trusted
            self._client.forget(self)
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost ends what the close delimits

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        phase = self.phase
        if phase is _IDLE:
            self._client.forget(self)
            self.phase = _CLOSED
        elif phase is _WAITING or phase is _BODY:
            cause = f" ({_describe(exc)})" if exc is not None else ""
            if not self._received:
                self._broken(f"the server closed the connection without a response{cause}")
            else:
                try:
                    self._parser.feed_eof()
                except ResponseParseError as error:
                    self._broken(f"{error}{cause}")
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # -- ResponseSink (called by the parser) ------------------------------------------------

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self.phase = _BODY
        if self._read_timeout is not None:
            self._arm(self._last_read + self._read_timeout)
        self._wake()

    def on_body(self, data: bytes) -> None:
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        self._wake()

    def on_end(self, keep_alive: bool) -> None:
        self._keep_alive = keep_alive
        self.phase = _DONE
        self._wake()


def _take_all(pieces: list[bytes]) -> bytes:
    """Return the pieces joined (one write to the client instead of one per piece), and
    empty the list."""
    joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    pieces.clear()
    return joined


async def read_limited(next_chunk: Callable[[], Awaitable[bytes | None]], limit: int) -> bytes:
    """Return the chunks ``next_chunk`` gives until ``None``, joined, refusing more than
    ``limit`` bytes.

    Raises:
        UpstreamFailure: ``TOO_LARGE`` past the limit, or whatever ``next_chunk`` raises.
    """
    parts: list[bytes] = []
    size = 0
    while (chunk := await next_chunk()) is not None:
        size += len(chunk)
        if size > limit:
            raise UpstreamFailure(FailureReason.TOO_LARGE, f"response over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


@mypyc_attr(allow_interpreted_subclasses=True)
class UpstreamResponse:
    """An open provider response whose body has not been read yet.

    A base class, not a Protocol: compiled, its attributes and methods are direct reads
    and indexed calls for the compiled responses (this module's, the demo's), where a
    Protocol's are lookups by name; the httpcore response (trio) is a Python subclass.

    Attributes:
        status: the HTTP status.
        headers: the headers, names lower-cased, in the order the provider sent them.
    """

    __slots__ = ("headers", "status")

    status: int
    headers: list[tuple[bytes, bytes]]

    async def next_chunk(self) -> bytes | None:
        """Return the next piece of the body as it arrives, or ``None`` at its end.

        (A coroutine rather than an async generator: one response is read per request,
        and an async generator costs the loop's bookkeeping of it on top.)

        Raises:
            UpstreamFailure: the connection broke or a read timed out.
        """
        raise NotImplementedError

    async def read(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes.

        Raises:
            UpstreamFailure: the connection broke, timed out, or the body is too large.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the connection (back to the pool when the body was fully read)."""
        raise NotImplementedError


@mypyc_attr(free_list_len=1)
class ClientResponse(UpstreamResponse):
    """A provider response whose head has arrived; the body follows through :meth:`next_chunk`.

    Attributes:
        status: the HTTP status.
        headers: the headers, names lower-cased, in the order the server sent them.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn: _Connection | None = conn

    async def next_chunk(self) -> bytes | None:
        """Return the next piece of the body as it arrives, or ``None`` at its end.

        Raises:
            UpstreamFailure: the connection broke, the body was malformed or a read timed out.
        """
        conn = self._conn
        if conn is None:
            return None
        body = conn._body
        while True:
            if body:
                # Pieces parsed from one read (a chunked body's chunks) go on as one.
                chunk = _take_all(body)
                conn.consumed(len(chunk))
                return chunk
            phase = conn.phase
            if phase is _BODY:
                conn._waiter = waiter = conn._loop.create_future()
                try:
                    await waiter
                except BaseException:  # cancelled mid-body: the rest will never be read
                    if self._conn is conn and conn.phase is _BODY:
                        conn.abort()
                    raise
            elif phase is _DONE:
                return None
            else:
                assert conn._failure is not None
                raise conn._failure

    async def read(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes.

        Raises:
            UpstreamFailure: the connection broke, timed out, or the body is too large.
        """
        return await read_limited(self.next_chunk, limit)

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the body was read to its end.

        Never waits, so it is safe in ``finally`` blocks of cancelled tasks.
        """
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release()


class H1Client:
    """Keep-alive HTTP/1.1 connections per origin on one event loop, reused most recent first.

    Args:
        loop: the running loop every connection of this client lives on.
        parser: ``auto``, ``httptools`` or ``h11`` (see :mod:`igw_io.response_parsers`).
        max_idle: idle connections kept in all (``CLIENT_MAX_IDLE_CONNS``).
        max_idle_per_host: idle connections kept per origin
            (``CLIENT_MAX_IDLE_CONNS_PER_HOST``).
        idle_timeout: seconds an idle connection may wait for reuse
            (``CLIENT_IDLE_CONN_TIMEOUT``); ``None`` for no limit.
        connect_timeout: seconds to connect (and finish TLS); ``None`` for no limit.
        head_timeout: seconds from the call to the response head, connecting included.
        read_timeout: seconds the body may stall while the consumer waits for it.
        ssl_context: the TLS context for ``https`` origins (default:
            :func:`default_ssl_context`).
        surplus_grace: seconds idle connections over ``max_idle`` or
            ``max_idle_per_host`` are kept for reuse before the surplus is closed.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        parser: str = "auto",
        max_idle: int = 20,
        max_idle_per_host: int = 20,
        idle_timeout: float | None = 90.0,
        connect_timeout: float | None = None,
        head_timeout: float | None = None,
        read_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        surplus_grace: float = SURPLUS_GRACE,
    ) -> None:
        self.loop = loop
        self.parser = resolve_parser(parser)
        self.head_timeout = head_timeout
        self.read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._max_idle = max(max_idle, 0)
        self._max_idle_per_host = max(max_idle_per_host, 0)
        self._idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._routes: dict[str, tuple[_Origin, bytes]] = {}
        self._idle: dict[str, list[_Connection]] = {}
        self._idle_count = 0
        self._closed = False
        #: Seconds idle connections over the limits may wait for reuse before closing.
        self.surplus_grace = surplus_grace
        self._trim_timer: asyncio.TimerHandle | None = None

    @property
    def idle_connections(self) -> int:
        """How many connections wait for reuse right now."""
        return self._idle_count

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    def open(self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]],
             body: bytes) -> Coroutine[Any, Any, ClientResponse]:
        """Return the coroutine that sends a request and returns once the response head arrived.

        ``host`` and ``content-length`` are added; ``headers`` must hold no framing headers.
        Not a coroutine itself: it hands back the pooled connection's own (or the one that
        connects first), so a provider wait is one frame deeper than its caller.

        Raises:
            UpstreamFailure: at once for a request that cannot be written (a line break in
                the method, the target or a header, a target that is not ASCII, an
                unsupported URL); when awaited:
                unreachable (refused, reset or malformed before the head) or timed out.
        """
        origin, target = self._route(url)  # a target with a line break is refused there
        # A line break in the method or a header would end a line early: a request
        # smuggled into the one sent. (An int needle: bytes ``in`` with a bytes one first
        # builds a TypeError; an int is one memchr.)
        verb = method.encode("ascii")
        if 10 in verb or 13 in verb:
            raise UpstreamFailure(FailureReason.UNREACHABLE,
                                  "the request method holds a line break; not sent")
        for name, value in headers:
            if 10 in name or 13 in name or 10 in value or 13 in value:
                raise UpstreamFailure(FailureReason.UNREACHABLE,
                                      "a request header holds a line break; not sent")
        head = b"%b %b%b%bcontent-length: %d\r\n\r\n" % (verb, target, origin.tail,
                                                           header_lines(headers), len(body))
        deadline = self.loop.time() + self.head_timeout if self.head_timeout is not None else None
        conn = self._checkout(origin.key)
        if conn is not None:
            return conn.request(origin, head, body, method == "HEAD", deadline)
        return self.fresh(origin, head, body, method == "HEAD", deadline)

    async def fresh(self, origin: _Origin, head: bytes, body: bytes, head_request: bool,
                    deadline: float | None) -> ClientResponse:
        """Connect to ``origin`` and send the request on the new connection.

        Raises:
            UpstreamFailure: unreachable or timed out.
        """
        conn = await self._connect(origin, deadline)
        return await conn.request(origin, head, body, head_request, deadline, reused=False)

    def _route(self, url: str) -> tuple[_Origin, bytes]:
        """Return ``url``'s origin (parsed once per origin) and request target."""
        route = self._routes.get(url)
        if route is not None:
            return route
        start = url.find("://") + 3
        end = len(url)
        for mark in "/?#":
            at = url.find(mark, start)
            if 0 <= at < end:
                end = at
        base, target = url[:end], url[end:].partition("#")[0]
        if not target.startswith("/"):
            target = "/" + target
        origin = self._origins.get(base)
        if origin is None:
            origin = _Origin(base, self._tls)
            if len(self._origins) < _MAX_CACHED:
                self._origins[base] = origin
        try:
            route = origin, target.encode("ascii")
        except UnicodeEncodeError:
            raise UpstreamFailure(FailureReason.UNREACHABLE,
                                  "the request target is not ASCII; not sent") from None
        if "\n" in target or "\r" in target:
            raise UpstreamFailure(FailureReason.UNREACHABLE,
                                  "the request target holds a line break; not sent")
        if len(self._routes) >= _MAX_CACHED:  # /proxy paths vary; chat URLs repeat
            self._routes.clear()
        self._routes[url] = route
        return route

    def _checkout(self, key: str) -> _Connection | None:
        stack = self._idle.get(key)
        if not stack:
            return None
        now = self.loop.time()
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if conn.phase is not _IDLE or conn.transport is None or conn.transport.is_closing():
                continue
            if self._idle_timeout is not None and now - conn.idle_since > self._idle_timeout:
                # Last in, first out: everything under an expired connection is older still.
                conn.close()
                for older in stack:
                    older.close()
                self._idle_count -= len(stack)
                stack.clear()
                return None
            return conn
        return None

    def put(self, conn: _Connection) -> None:
        """Keep ``conn`` (its response read to the end) for reuse.

        Above the idle limits it is kept too, for a moment: the surplus is closed (least
        recently used first) at most :attr:`surplus_grace` seconds later. A load that
        keeps more requests in flight than the limits would otherwise close a connection
        after one response and open another for the next, per request.
        """
        if self._closed or not self._max_idle or not self._max_idle_per_host:
            conn.close()
            return
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = []
        conn.phase = _IDLE
        conn.idle_since = self.loop.time()
        stack.append(conn)
        self._idle_count += 1
        if self._trim_timer is None and (self._idle_count > self._max_idle
                                         or len(stack) > self._max_idle_per_host):
            self._trim_timer = self.loop.call_later(self.surplus_grace, self._trim)

    def _trim(self) -> None:
        """Close the idle connections over the limits, least recently used first."""
        self._trim_timer = None
        for stack in self._idle.values():
            surplus = len(stack) - self._max_idle_per_host
            if surplus > 0:
                self._close_oldest(stack, surplus)
        while self._idle_count > self._max_idle:
            oldest = min((stack for stack in self._idle.values() if stack),
                         key=lambda stack: stack[0].idle_since)
            self._close_oldest(oldest, 1)

    def _close_oldest(self, stack: list[_Connection], count: int) -> None:
        for conn in stack[:count]:
            conn.close()
        del stack[:count]
        self._idle_count -= count

    def forget(self, conn: _Connection) -> None:
        """Drop an idle connection the server closed."""
        stack = self._idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)
            self._idle_count -= 1

    async def _connect(self, origin: _Origin, deadline: float | None) -> _Connection:
        loop = self.loop
        timeout = self._connect_timeout
        if deadline is not None:
            left = max(deadline - loop.time(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        conn = _Connection(self, origin.key)
        task = loop.create_task(loop.create_connection(
            lambda: conn, origin.host, origin.port, ssl=origin.ssl,
            server_hostname=origin.server_hostname))
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(timeout, expire) if timeout is not None else None
        try:
            await task
        except asyncio.CancelledError:
            _discard(task)
            current = asyncio.current_task()
            if expired and (current is None or not current.cancelling()):
                raise UpstreamFailure(
                    FailureReason.TIMEOUT,
                    f"connecting to {origin.name} took over {_show(timeout or 0)}") from None
            raise
        except OSError as exc:  # refused, unreachable, DNS, TLS verification
            raise UpstreamFailure(FailureReason.UNREACHABLE, _describe(exc)) from None
        finally:
            if timer is not None:
                timer.cancel()
        return conn

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
        stacks, self._idle = self._idle, {}
        self._idle_count = 0
        for stack in stacks.values():
            for conn in stack:
                conn.close()


def _discard(task: asyncio.Task[tuple[asyncio.Transport, asyncio.BaseProtocol]]) -> None:
    """Close the transport of a connect task that may still succeed after being abandoned."""

    def close(done: asyncio.Task[tuple[asyncio.Transport, asyncio.BaseProtocol]]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result()[0].close()

    if task.done():
        close(task)
    else:
        task.add_done_callback(close)
