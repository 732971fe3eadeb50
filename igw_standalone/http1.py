"""HTTP/1.1 connections as asyncio Protocols: one parser per connection, one request at a time.

Bytes from ``data_received`` go through the connection's parser
(:mod:`igw_standalone.parsers`) into a queue of events; the request at the head
of the queue is served by the shared driver, with this connection as its
``ClientChannel``. Keep-alive and pipelining come from the queue; the client's
disconnect from ``connection_lost``; timeouts are loop timers armed only while
something waits; backpressure is ``pause_reading`` while queued input is large
and ``pause_writing`` while the client reads slowly. The connection writes its
responses itself. HTTP/2 (prior knowledge or TLS ALPN ``h2``) is handed to
:class:`~igw_standalone.http2.H2Connection` over a :class:`TransportStream`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, cast

from igw_core.endpoints import refusal_for
from igw_core.errors import BadRequest
from igw_core.events import BodyFailure
from igw_io.channel import ClientChannel, ClientDisconnected, RequestBodyError
from igw_io.driver import Draining
from igw_io.header_lines import header_lines
from igw_io.heads import HeadStamper
from igw_io.loops import resolve
from igw_io.queues import Queue
from igw_standalone.parsers import END, Failure, Head, ParserEvent, RequestParser
from igw_standalone.streams import TransportStream

if TYPE_CHECKING:
    from igw_standalone.http2 import H2Connection
    from igw_standalone.server import Server

log: Final = logging.getLogger("igw.http")

_REASONS: Final = {status.value: status.phrase.encode() for status in http.HTTPStatus}
#: Queued input (pipelined requests, unread body) above which reading pauses.
_HIGH_WATER: Final = 1024 * 1024
_LOW_WATER: Final = 256 * 1024
#: Lingering close after an early response: how long and how much to drain.
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 16 * 1024 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_HEX_DIGITS: Final = tuple(bytes([digit]) for digit in b"0123456789abcdef")
_NO_BODY_STATUSES: Final = frozenset({204, 304})
#: The HTTP/2 connection preface (RFC 9113 §3.4): a client with prior knowledge starts so.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _hex(size: int) -> bytes:
    """Return ``b"%x" % size`` (``size`` >= 0), a chunk's size line.

    Compiled, a bytes %-format with ``%x`` is the interpreter's (about 1,900
    instructions); with ``%b`` only it is a copy of the parts. A streamed answer writes
    a chunk per event, often per token.
    """
    digits = _HEX_DIGITS[size & 15]
    size >>= 4
    while size:
        digits = _HEX_DIGITS[size & 15] + digits
        size >>= 4
    return digits


class HTTP1Connection(ClientChannel, asyncio.Protocol):
    """One client connection; also the :class:`ClientChannel` of the request it is serving."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.runtime = runtime = server.runtime
        # Read once per connection: the runtime is a Python object, an attribute read of
        # which costs a dictionary lookup by name.
        self.stamper: HeadStamper = runtime.stamper
        #: Set when the server shuts down (a compiled flag: no attribute read by name).
        self.draining: Draining = runtime.services.draining
        self.handle = runtime.handle
        settings = server.settings
        self.read_timeout = settings.server_read_timeout or None
        self.write_timeout = settings.server_write_timeout or None
        self.idle_timeout = settings.server_idle_timeout or None
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: RequestParser = server.parser_factory()
        self.events: Queue[ParserEvent] = Queue()
        # Bytes received since the queue was last empty (heads included), less the body
        # bytes taken from it since: what reading pauses on.
        self.queued = 0
        self.h2: TransportStream | None = None
        self.first = True
        self.lost = False
        self.eof = False
        self.closing = False  # no further request on this connection
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None
        # What the timer calls and when (see _arm); the loop timer's own time, kept here
        # because asking the handle (when()) is a method call.
        self.expiry: Callable[[], None] | None = None
        self.expiry_at = 0.0
        self.timer_at = 0.0
        # The task that serves the connection's requests one after another (or its HTTP/2
        # connection), and whether a request is being served.
        self.task: asyncio.Task[None] | None = None
        self.serving = False
        #: What the task waits on between requests (resolved by the next head or the close).
        self.next_head: asyncio.Future[None] | None = None
        self.head: Head | None = None
        self.body_done = False
        self.continue_sent = False
        self.complete = False  # the response's last byte went out
        self.chunked = False
        self.held = b""  # a sized response's head, sent with its first body bytes
        self.preface = b""  # the first bytes, while they may still be an HTTP/2 preface
        self.on_gone: Callable[[], None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: The body read timer fired: receive_body raises once woken.
        self.read_expired = False
        self.writable: asyncio.Future[None] | None = None
        self.lingering = -1  # bytes drained during a lingering close; -1 when not lingering
        self.h2_connection: H2Connection | None = None

    # -- transport callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start_h2(b"")
            return
        self._arm(self.read_timeout, self._expire_idle)

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.feed(data)
            return
        if self.lingering >= 0:
            self.lingering += len(data)
            if self.lingering > _LINGER_BYTES:
                self._close()
            return
        if self.first:
            if self._maybe_h2(data):
                return
            self.first = False
        if self.closing and not self.serving:
            return
        events = self.events
        before = len(events)
        self.parser.feed(data, events.items)
        self.queued += len(data)
        if self.queued > _HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if not self.serving:
            if events:
                self._cancel_timer()
                self._next_request()
            else:  # part of a head: the client has SERVER_READ_TIMEOUT to finish it
                self._arm(self.read_timeout, self._expire_idle)
        elif len(events) > before:
            self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.h2 is not None:
            self.h2.feed_eof()
            return True
        if self.lingering >= 0 or (not self.serving and len(self.events) == 0):
            self._close()
            return True
        # Half-closed while a request is served: as the other servers do, the client
        # is treated as gone.
        self._gone()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self._stop_timer()
        if self.h2 is not None:
            self.h2.lost()
        self._gone()
        writable, self.writable = self.writable, None
        if writable is not None:
            resolve(writable)
        waiting, self.next_head = self.next_head, None
        if waiting is not None:
            resolve(waiting)  # the serving task ends

    def pause_writing(self) -> None:
        if self.h2 is not None:
            self.h2.pause_writing()
        elif self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.h2 is not None:
            self.h2.resume_writing()
            return
        writable, self.writable = self.writable, None
        if writable is not None:
            resolve(writable)

    # -- HTTP/2 hand-off -------------------------------------------------------

    def _maybe_h2(self, data: bytes) -> bool:
        """Hand a prior-knowledge HTTP/2 connection over; return whether it was one."""
        start = self.preface + data
        if not PREFACE.startswith(start[: len(PREFACE)]):
            if self.preface:
                self.preface = b""
                self.first = False
                self.data_received(start)
                return True
            return False
        if len(start) < len(PREFACE):
            self.preface = start  # wait for the rest of the preface
            return True
        self.preface = b""
        self._start_h2(start)
        return True

    def _start_h2(self, initial: bytes) -> None:
        from igw_standalone.http2 import H2Connection  # h2 is loaded by the first HTTP/2 client

        self._stop_timer()
        assert self.transport is not None
        self.h2 = TransportStream(self.transport)
        connection = H2Connection(self.h2, self.runtime, self.server.is_shutting_down, initial)
        self.h2_connection = connection
        self.task = self.loop.create_task(connection.serve())

    # -- serving requests ----------------------------------------------------

    def _next_request(self) -> None:
        """Start serving the event at the head of the queue (a head, or a parse failure)."""
        event = self.events.take()
        if isinstance(event, Failure):
            self._refuse(event)
            return
        assert isinstance(event, Head)
        self.head = event
        self.body_done = self.continue_sent = self.complete = False
        self.chunked = False
        self.serving = True
        # One task serves the connection's requests in turn, waiting between them: a
        # future to resolve costs less than a task to make per request.
        waiting, self.next_head = self.next_head, None
        if waiting is not None:
            waiting.set_result(None)
        elif self.task is None:
            self.task = self.loop.create_task(self._serve())
        # else the task is finishing the previous request and goes on with this one

    async def _serve(self) -> None:
        """Serve the connection's requests one after another, until it closes."""
        # What follows a request runs in this task, not in a done-callback: one loop
        # callback fewer per request.
        try:
            while True:
                head = self.head
                assert head is not None
                try:
                    path, _, query = head.target.decode("latin-1").partition("?")
                    event = self.stamper.stamp(head.method.decode("latin-1"), path, query,
                                               head.headers)
                    await self.handle(self, event)
                except Exception:
                    log.exception("request task failed")
                finally:
                    self._served()
                if self.serving:  # _served started the next pipelined request
                    continue
                if self.lost or self.closing:
                    return
                waiting = self.next_head = self.loop.create_future()
                await waiting
                if not self.serving:  # the connection closed meanwhile
                    return
        finally:
            self.task = None

    def _served(self) -> None:
        self.serving = False
        self.on_gone = None
        head = self.head
        self.head = None
        if self.lost:
            return
        if not self.body_done:
            self._skip_body()  # what is already here of a body nobody read
        if not self.complete or head is None or not head.keep_alive or self.closing:
            self._finish(linger=not self.body_done)
            return
        if not self.body_done:  # the rest of that body is still on its way
            self._finish(linger=True)
            return
        if self.draining.on:
            self._finish(linger=False)
            return
        if self.reading_paused and self.queued < _LOW_WATER:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if len(self.events):
            self._next_request()
            return
        self.events.compact()
        self.queued = 0
        if self.eof:
            self._close()
        else:
            self._arm(self.idle_timeout, self._expire_idle)

    def _skip_body(self) -> None:
        """Drop the unread rest of a body already received (``body_done`` once it ended)."""
        events = self.events
        while (event := events.take()) is not None:
            if event is END:
                self.body_done = True
                return
            if isinstance(event, bytes):
                self.queued -= len(event)
            else:
                return

    def _refuse(self, failure: Failure) -> None:
        """Answer bytes that are not acceptable HTTP and close."""
        log.info("bad request from client",
                 extra={"status": failure.status, "detail": failure.detail})
        # In the endpoint's shape when the target is known: an Anthropic SDK reads its own.
        path = failure.target.partition(b"?")[0].decode("latin-1")
        body = refusal_for(self.runtime.gateway, path,
                           BadRequest(f"malformed HTTP request: {failure.detail}",
                                      status=failure.status))
        reason = _REASONS.get(failure.status, b"")
        self._write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                    % (failure.status, reason, len(body), body))
        self._finish(linger=True)

    def shutdown(self) -> None:
        """Stop after the current request; close now if idle."""
        self.closing = True
        if self.h2_connection is not None:
            scope = self.h2_connection.idle_scope
            if scope is not None:
                scope.cancel()
            return
        if not self.serving:
            self._close()

    # -- closing ---------------------------------------------------------------

    def _finish(self, *, linger: bool) -> None:
        """Close after the response; with ``linger``, drain unread input first.

        Closing with unread input makes the kernel send RST, which can destroy an
        early response (a 413) before the client has read it.
        """
        self.closing = True
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        if linger and not self.eof and transport.can_write_eof():
            transport.write_eof()
            self.lingering = 0
            if self.reading_paused:
                self.reading_paused = False
                transport.resume_reading()
            self._arm(_LINGER_SECONDS, self._close)
            return
        self._close()

    def _close(self) -> None:
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _gone(self) -> None:
        """The client is gone: cancel what the request waits on."""
        self._wake()
        callback, self.on_gone = self.on_gone, None
        if callback is not None and not self.complete:
            callback()

    # -- timers ----------------------------------------------------------------

    # One loop timer per connection, moved lazily: arming for a later time than the
    # pending timer only records the deadline, and the timer, when it fires early,
    # sleeps on until it. A request then costs no timer of its own (the idle timer is
    # re-armed after every response).

    def _arm(self, seconds: float | None, callback: Callable[[], None]) -> None:
        """Call ``callback`` after ``seconds`` (``None`` or 0: never), unless re-armed first."""
        if not seconds:
            self.expiry = None
            return
        when = self.loop.time() + seconds
        self.expiry = callback
        self.expiry_at = when
        timer = self.timer
        if timer is None or self.timer_at > when:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_at = when

    def _cancel_timer(self) -> None:
        """Disarm; the pending loop timer, if any, will find nothing to do."""
        self.expiry = None

    def _stop_timer(self) -> None:
        """Disarm and drop the loop timer (the connection is closing)."""
        self.expiry = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        callback = self.expiry
        if callback is None:
            return
        when = self.expiry_at
        if self.loop.time() < when:
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_at = when
            return
        self.expiry = None
        callback()

    def _expire_idle(self) -> None:
        if not self.serving:
            self._close()

    def _expire_read(self) -> None:
        # A flag and a plain wake-up, not an exception set on the future: the exception is
        # raised by receive_body itself (see docs/engine.md, "The compiled request path").
        self.read_expired = True
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            resolve(waiter)

    # -- ClientChannel -----------------------------------------------------------

    def on_disconnect(self, callback: Callable[[], None] | None) -> bool:
        """Have ``callback`` called if the client leaves before the response is complete."""
        self.on_gone = callback
        return True

    def serving_task(self) -> asyncio.Task[None] | None:
        """The connection's task, which serves its requests one after another."""
        return self.task

    async def receive_body(self) -> tuple[bytes, bool]:
        events = self.events
        while True:
            if self.body_done:
                return b"", False
            event = events.peek()
            if event is not None:
                if isinstance(event, bytes):
                    # Everything of the body that is already here, in one piece, and
                    # whether its end is here too (a small body: one call in all).
                    events.skip()
                    pieces = [event]
                    while isinstance(more := events.peek(), bytes):
                        events.skip()
                        pieces.append(more)
                    data = event if len(pieces) == 1 else b"".join(pieces)
                    self.queued -= len(data)
                    if self.reading_paused and self.queued < _LOW_WATER:
                        self.reading_paused = False
                        self.transport.resume_reading()  # type: ignore[union-attr]
                    if more is END:
                        events.skip()
                        self.body_done = True
                        return data, False
                    events.compact()  # a long upload does not grow the queue
                    return data, True
                if event is END:
                    events.skip()
                    self.body_done = True
                    return b"", False
                if isinstance(event, Failure):
                    events.skip()
                    self.closing = True
                    raise RequestBodyError(BodyFailure.MALFORMED, event.detail)
            if self.lost or self.eof:
                raise ClientDisconnected
            head = self.head
            if head is not None and head.expect_continue and not self.continue_sent:
                self.continue_sent = True
                self._write(_CONTINUE)
            self.waiter = self.loop.create_future()
            self._arm(self.read_timeout, self._expire_read)
            try:
                await self.waiter
            finally:
                self._cancel_timer()
            if self.read_expired:
                self.closing = True
                raise RequestBodyError(BodyFailure.TIMEOUT, "timed out reading the request body")

    def send_head(self, status: int, headers: list[tuple[bytes, bytes]]
                  ) -> Awaitable[None] | None:
        head = self.head
        assert head is not None
        close = self.closing or not head.keep_alive or self.draining.on
        sized = connection = False
        for name, value in headers:
            if name == b"content-length":
                sized = True
            elif name == b"connection":  # this connection's own: said below if it closes
                connection = True
                close = close or value.lower() == b"close"
        block = header_lines(headers if not connection else
                             [header for header in headers if header[0] != b"connection"])
        if not sized and head.method != b"HEAD" and status not in _NO_BODY_STATUSES:
            if head.http10:
                close = True  # the body ends when the connection does
            else:
                self.chunked = True
                block += b"transfer-encoding: chunked\r\n"
        if close:
            self.closing = True
            block += b"connection: close\r\n"
        data = b"HTTP/1.1 %d %b\r\n%b\r\n" % (status, _REASONS.get(status, b""), block)
        if sized and head.method != b"HEAD":
            self.held = data  # goes out in one write with the body
            return None
        return self._drain() if self._put(data) else None

    def send_data(self, data: bytes) -> Awaitable[None] | None:
        if not data:
            return None
        if self.chunked:
            data = b"%b\r\n%b\r\n" % (_hex(len(data)), data)
        if self.held:
            data, self.held = self.held + data, b""
        return self._drain() if self._put(data) else None

    def send_end(self) -> Awaitable[None] | None:
        data, self.held = self.held, b""
        if self.chunked:
            data += _LAST_CHUNK
        if data:
            if self._put(data):
                return self._drain_to_end()
        elif self.lost:
            raise ClientDisconnected
        self.complete = True
        return None

    async def _drain_to_end(self) -> None:
        """:meth:`_drain`, then mark the response complete (its last bytes went out)."""
        await self._drain()
        self.complete = True

    async def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    async def wait_disconnect(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()

        def gone() -> None:
            resolve(waiter)

        self.on_gone = gone
        await waiter

    # -- writing -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def _put(self, data: bytes) -> bool:
        """Write ``data``; return whether the client reads slowly (then await :meth:`_drain`).

        Writing is not a coroutine: the common case never waits, and a coroutine frame
        per write costs more than the write's own Python.

        Raises:
            ClientDisconnected: the client is gone.
        """
        if self.lost:
            raise ClientDisconnected
        self.transport.write(data)  # type: ignore[union-attr]
        return self.writable is not None

    async def _drain(self) -> None:
        """Wait while the client reads slowly, at most ``SERVER_WRITE_TIMEOUT``.

        Raises:
            ClientDisconnected: the client is gone or did not read in time.
        """
        timer = (self.loop.call_later(self.write_timeout, self._expire_write)
                 if self.write_timeout else None)
        try:
            while self.writable is not None and not self.lost:
                await self.writable
        finally:
            if timer is not None:
                timer.cancel()
        if self.lost:
            raise ClientDisconnected

    def _expire_write(self) -> None:
        log.info("client too slow reading the response (SERVER_WRITE_TIMEOUT)")
        if self.transport is not None:
            self.transport.abort()
