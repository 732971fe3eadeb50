"""HTTP/2 connections on h2 (TLS with ALPN ``h2``, or cleartext with prior knowledge).

Each stream is one request, served by the same shared driver as HTTP/1.1;
this module only maps h2 events to a ``ClientChannel`` and honours flow control.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from igw_io.channel import ClientChannel, ClientDisconnected
from igw_io.runtime import Runtime
from igw_standalone.streams import PEER_GONE

log = logging.getLogger("igw.http2")

_READ_SIZE = 65536

# Connection-specific headers are forbidden in HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _Reset:
    """Queued to a stream's body when the client reset it."""


class H2Connection:
    """Serves the streams of one HTTP/2 connection until it closes."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        runtime: Runtime,
        is_shutting_down: Callable[[], bool],
        initial: bytes = b"",
    ) -> None:
        self.stream = stream
        self.runtime = runtime
        self.is_shutting_down = is_shutting_down
        self.initial = initial
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.channels: dict[int, _H2Channel] = {}
        self.write_lock = anyio.Lock()
        self.window_open = anyio.Event()
        self.idle_scope: anyio.CancelScope | None = None
        self.closed = False

    async def flush(self) -> None:
        """Write whatever h2 has queued.

        Raises:
            ClientDisconnected: the socket is gone.
        """
        async with self.write_lock:
            data = self.conn.data_to_send()
            if data and not self.closed:
                try:
                    await self.stream.send(data)
                except PEER_GONE:
                    self.closed = True
                    raise ClientDisconnected from None

    async def serve(self) -> None:
        """Read frames, start a task per request stream, until the connection ends."""
        self.conn.initiate_connection()
        try:
            async with anyio.create_task_group() as tg:
                data = self.initial
                while not self.closed:
                    if data:
                        try:
                            events = self.conn.receive_data(data)
                        except h2.exceptions.ProtocolError as exc:
                            log.info("bad HTTP/2 from client", extra={"detail": str(exc)})
                            await self._flush_quietly()
                            break
                        for event in events:
                            self._dispatch(event, tg)
                    await self._flush_quietly()
                    if self.is_shutting_down() and not self.channels:
                        break
                    data = await self._read()
                    if not data:
                        break
                for channel in self.channels.values():
                    channel.gone()
                tg.cancel_scope.cancel()
        finally:
            self.closed = True
            with anyio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except PEER_GONE:
                    pass

    async def _read(self) -> bytes:
        timeout = None if self.channels else (self.runtime.settings.server_idle_timeout or None)
        with anyio.CancelScope() as scope:
            self.idle_scope = None if self.channels else scope
            try:
                with anyio.fail_after(timeout):
                    return await self.stream.receive(_READ_SIZE)
            except (TimeoutError, *PEER_GONE):
                return b""
            finally:
                self.idle_scope = None
        return b""

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except ClientDisconnected:
            pass

    def _dispatch(self, event: h2.events.Event, tg: anyio.abc.TaskGroup) -> None:
        stream_id = getattr(event, "stream_id", None)
        channel = self.channels.get(stream_id) if stream_id is not None else None
        if isinstance(event, h2.events.RequestReceived):
            channel = _H2Channel(self, event.stream_id)
            self.channels[event.stream_id] = channel
            if event.stream_ended is not None:
                channel.body_end()
            tg.start_soon(self._serve_stream, channel, list(event.headers or []))
        elif isinstance(event, h2.events.DataReceived):
            if channel is None:  # a stream already answered: keep the connection window open
                try:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
                return
            channel.body_data(event.data or b"", event.flow_controlled_length or 0)
            if event.stream_ended is not None:
                channel.body_end()
        elif isinstance(event, h2.events.StreamEnded) and channel is not None:
            channel.body_end()
        elif isinstance(event, h2.events.StreamReset) and channel is not None:
            channel.gone()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_open.set()
            self.window_open = anyio.Event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    async def _serve_stream(self, channel: _H2Channel, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo = {k: v for k, v in headers if k.startswith(b":")}
        regular = [(k, v) for k, v in headers if not k.startswith(b":")]
        if b":authority" in pseudo:
            regular.append((b"host", pseudo[b":authority"]))
        target = pseudo.get(b":path", b"/").decode("latin-1")
        path, _, query = target.partition("?")
        method = pseudo.get(b":method", b"GET").decode("ascii", "replace")
        try:
            await self.runtime.handle(channel, self.runtime.head(method, path, query, regular))
        finally:
            self.channels.pop(channel.stream_id, None)
            await channel.finish()


class _H2Channel(ClientChannel):
    """One HTTP/2 stream as the driver's ``ClientChannel``."""

    def __init__(self, connection: H2Connection, stream_id: int) -> None:
        self.c = connection
        self.stream_id = stream_id
        # Body pieces with the flow-control credit to return once each is consumed;
        # None ends the body, _Reset means the client reset the stream.
        send: MemoryObjectSendStream[tuple[bytes, int] | _Reset | None]
        receive: MemoryObjectReceiveStream[tuple[bytes, int] | _Reset | None]
        send, receive = anyio.create_memory_object_stream[
            tuple[bytes, int] | None | _Reset](math.inf)
        self._body_in = send
        self._body_out = receive
        self._reset = anyio.Event()
        self._ended = False

    # -- fed by the connection ------------------------------------------------

    def body_data(self, data: bytes, flow_controlled: int) -> None:
        """Queue a DATA frame's payload (credit is returned when it is consumed)."""
        self._body_in.send_nowait((data, flow_controlled))

    def body_end(self) -> None:
        """Mark the request body complete."""
        if not self._ended:
            self._ended = True
            self._body_in.send_nowait(None)

    def gone(self) -> None:
        """The client reset the stream or the connection ended."""
        self._reset.set()
        self._body_in.send_nowait(_Reset())

    # -- ClientChannel ----------------------------------------------------------

    async def receive_body(self) -> tuple[bytes, bool]:
        while True:
            item = await self._body_out.receive()
            if isinstance(item, _Reset):
                raise ClientDisconnected
            if item is None:
                return b"", False
            data, credit = item
            if credit:
                try:
                    self.c.conn.acknowledge_received_data(credit, self.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
                await self.c.flush()
            if data:
                return data, True

    async def finish(self) -> None:
        """Release an unread request body: return its credit, so a client still sending
        after an early response (a 413) can finish and read it; later DATA on this
        stream is credited and dropped by the connection."""
        credit = 0
        while True:
            try:
                item = self._body_out.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if isinstance(item, tuple):
                credit += item[1]
        conn = self.c.conn
        try:
            if credit:
                conn.acknowledge_received_data(credit, self.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._reset.set()
        try:
            await self.c.flush()
        except ClientDisconnected:
            pass

    def _check(self) -> None:
        if self._reset.is_set() or self.c.closed:
            raise ClientDisconnected

    async def send_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._check()
        fields = [(b":status", str(status).encode())]
        fields += [(k, v) for k, v in headers if k not in _CONNECTION_SPECIFIC]
        try:
            self.c.conn.send_headers(self.stream_id, fields)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise ClientDisconnected from None
        await self.c.flush()

    async def send_data(self, data: bytes) -> None:
        conn = self.c.conn
        view = memoryview(data)
        while view:
            self._check()
            try:
                window = conn.local_flow_control_window(self.stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise ClientDisconnected from None
            size = min(window, conn.max_outbound_frame_size, len(view))
            if size <= 0:
                waiter = self.c.window_open
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._cancel_on_reset, scope)
                        await waiter.wait()
                        tg.cancel_scope.cancel()
                continue
            try:
                conn.send_data(self.stream_id, bytes(view[:size]))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise ClientDisconnected from None
            view = view[size:]
            await self.c.flush()

    async def _cancel_on_reset(self, scope: anyio.CancelScope) -> None:
        await self._reset.wait()
        scope.cancel()

    async def send_end(self) -> None:
        self._check()
        try:
            self.c.conn.end_stream(self.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise ClientDisconnected from None
        await self.c.flush()

    async def abort(self) -> None:
        try:
            self.c.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        await self.c.flush()
        raise ClientDisconnected

    def serving_task(self) -> asyncio.Task[None] | None:
        """Unknown here: the driver asks asyncio."""
        return None

    def on_disconnect(self, callback: Callable[[], None] | None) -> bool:
        return False  # the driver watches with wait_disconnect

    async def wait_disconnect(self) -> None:
        await self._reset.wait()
