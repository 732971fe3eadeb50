"""HTTP/1.1 connections on h11: every h11 call of the standalone server lives here.

Keeping them in one module lets a compiled h11 drop-in be measured against
this one without touching the rest.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Callable

import anyio
import anyio.abc
import h11

from igw_core.events import BodyFailure
from igw_core.responses import error_body
from igw_io.channel import ClientDisconnected, RequestBodyError
from igw_io.runtime import Runtime
from igw_standalone.sockets import PEER_GONE

log = logging.getLogger("igw.http")

_READ_SIZE = 65536
_MAX_HEAD = 64 * 1024
# How much pipelined input may pile up while a response is still being sent.
_MAX_PIPELINED = 1024 * 1024
# Lingering close after an early response: how long and how much to drain.
_LINGER_SECONDS = 1.0
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_LINGER_BYTES = 16 * 1024 * 1024



class _ReadTimeout(Exception):
    """The client was too slow sending its request."""


class H11Connection:
    """Serves requests on one client connection until it closes.

    Keep-alive and pipelining come from h11's cycle; backpressure from
    awaiting each socket write.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        runtime: Runtime,
        is_shutting_down: Callable[[], bool],
        initial: bytes = b"",
    ) -> None:
        self.stream = stream
        self.runtime = runtime
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        if initial:
            self.conn.receive_data(initial)
        settings = runtime.settings
        self.read_timeout = settings.server_read_timeout or None
        self.write_timeout = settings.server_write_timeout or None
        self.idle_timeout = settings.server_idle_timeout or None
        self.is_shutting_down = is_shutting_down
        self.idle_scope: anyio.CancelScope | None = None
        self.closed = False
        self._held = b""

    # -- socket ------------------------------------------------------------

    async def _fill(self, timeout: float | None) -> None:
        """Read once from the socket into h11 (``b""`` at end of stream)."""
        try:
            with anyio.fail_after(timeout):
                data = await self.stream.receive(_READ_SIZE)
        except TimeoutError:
            raise _ReadTimeout from None
        except PEER_GONE:
            data = b""
        self.conn.receive_data(data)

    async def _send(self, event: h11._events.Event, *, hold: bool = False) -> None:
        """Send ``event``; with ``hold`` keep its bytes to go out with the next send."""
        data = self.conn.send(event) or b""
        if self._held:
            data, self._held = self._held + data, b""
        if hold:
            self._held = data
            return
        if data:
            try:
                with anyio.fail_after(self.write_timeout):
                    await self.stream.send(data)
            except (TimeoutError, *PEER_GONE):
                self.closed = True
                raise ClientDisconnected from None

    async def _next_event(self, timeout: float | None) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._fill(timeout)

    # -- connection loop ---------------------------------------------------

    async def serve(self) -> None:
        """Serve requests until the client, a protocol error or shutdown ends the connection."""
        try:
            while not self.closed:
                request = await self._wait_request()
                if request is None:
                    break
                await self._serve_request(request)
                if not self._next_cycle():
                    break
        finally:
            if not self.closed and self.conn.their_state is h11.SEND_BODY:
                await self._linger()
            await self._close()

    async def _linger(self) -> None:
        """Half-close and drain unread request bytes briefly before closing.

        Closing with unread input makes the kernel send RST, which can destroy
        an early response (a 413) before the client has read it.
        """
        with anyio.move_on_after(_LINGER_SECONDS):
            try:
                if isinstance(self.stream, anyio.abc.SocketStream):
                    await self.stream.send_eof()
                drained = 0
                while drained < _LINGER_BYTES:
                    drained += len(await self.stream.receive(_READ_SIZE))
            except PEER_GONE:
                pass

    async def _wait_request(self) -> h11.Request | None:
        try:
            with anyio.CancelScope() as scope:
                self.idle_scope = scope
                if self.is_shutting_down():
                    return None
                event = await self._next_event(self.idle_timeout)
            self.idle_scope = None
            if scope.cancelled_caught:
                return None
        except _ReadTimeout:
            return None
        except h11.RemoteProtocolError as exc:
            await self._protocol_error(exc)
            return None
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed, or a client that sent garbage and left

    async def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        log.info("bad request from client", extra={"status": status, "detail": str(exc)})
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = error_body(f"malformed HTTP request: {exc}", "invalid_request_error",
                          "bad_request")
        try:
            await self._send(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except (ClientDisconnected, h11.LocalProtocolError):
            pass

    async def _serve_request(self, request: h11.Request) -> None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        head = self.runtime.head(request.method.decode("ascii"), path, query,
                                 list(request.headers))
        await self.runtime.handle(_Channel(self), head)

    def _next_cycle(self) -> bool:
        conn = self.conn
        # A request whose body the core never asked for (GET, or an early error):
        # finish it from what is already buffered, without waiting on the socket.
        while conn.their_state is h11.SEND_BODY:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return False
        if self.closed or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        if self.is_shutting_down():
            return False
        conn.start_next_cycle()
        return True

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except PEER_GONE:
                pass


class _Channel:
    """One request's view of the connection, as the driver's ``ClientChannel``."""

    def __init__(self, connection: H11Connection) -> None:
        self.c = connection

    async def receive_body(self) -> bytes | None:
        c = self.c
        if c.conn.client_is_waiting_for_100_continue:
            await c._send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await c._next_event(c.read_timeout)
        except h11.RemoteProtocolError as exc:
            raise RequestBodyError(BodyFailure.MALFORMED, str(exc)) from None
        except _ReadTimeout:
            raise RequestBodyError(BodyFailure.TIMEOUT, "timed out reading the body") from None
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise ClientDisconnected

    async def send_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.c.is_shutting_down():
            headers = [*headers, (b"connection", b"close")]
        # A head whose body length is known goes out in one write with the body; an
        # event stream's head goes out at once, before the first token.
        hold = any(k == b"content-length" for k, _ in headers)
        reason = _REASONS.get(status, b"")
        await self.c._send(h11.Response(status_code=status, headers=headers, reason=reason),
                           hold=hold)

    async def send_data(self, data: bytes) -> None:
        await self.c._send(h11.Data(data=data))

    async def send_end(self) -> None:
        await self.c._send(h11.EndOfMessage())

    async def abort(self) -> None:
        self.c.closed = True
        await self.c._close()

    async def wait_disconnect(self) -> None:
        c = self.c
        while True:
            if len(c.conn.trailing_data[0]) > _MAX_PIPELINED:
                await anyio.sleep_forever()
            try:
                data = await c.stream.receive(_READ_SIZE)
            except PEER_GONE:
                return
            if not data:
                return
            # A request pipelined behind this one: kept for the next cycle.
            c.conn.receive_data(data)
