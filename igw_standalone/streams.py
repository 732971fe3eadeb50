"""An anyio byte stream over an asyncio transport, for the HTTP/2 connection.

The listener speaks asyncio Protocols; HTTP/2 (h2c prior knowledge, TLS ALPN
``h2``) is served by :class:`~igw_standalone.http2.H2Connection`, which reads
and writes an anyio ``ByteStream``. The protocol that accepted the connection
feeds this stream and forwards the transport's flow-control callbacks to it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import anyio
import anyio.abc

from igw_io.loops import resolve

#: What reading or writing raises once the client left, reset or closed the connection.
PEER_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class TransportStream(anyio.abc.ByteStream):
    """The bytes of one transport as an anyio stream (single reader, single writer)."""

    def __init__(self, transport: asyncio.Transport, initial: bytes = b"") -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque([initial] if initial else [])
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._eof = False
        self._lost = False

    # -- fed by the protocol ------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes arrived."""
        self._chunks.append(data)
        self._wake_reader()

    def feed_eof(self) -> None:
        """The peer half-closed or the connection ended."""
        self._eof = True
        self._wake_reader()

    def lost(self) -> None:
        """The connection is gone: wake every waiter."""
        self._lost = True
        self.feed_eof()
        self.resume_writing()

    def pause_writing(self) -> None:
        """The transport's write buffer is over its high-water mark."""
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        """The transport's write buffer drained."""
        waiter, self._writable = self._writable, None
        if waiter is not None:
            resolve(waiter)

    def _wake_reader(self) -> None:
        waiter, self._readable = self._readable, None
        if waiter is not None:
            resolve(waiter)

    # -- anyio ByteStream ---------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return the next bytes.

        Raises:
            anyio.EndOfStream: the peer closed its side.
        """
        while not self._chunks:
            if self._eof:
                raise anyio.EndOfStream
            self._readable = self._loop.create_future()
            await self._readable
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def send(self, item: bytes) -> None:
        """Write ``item``, waiting while the transport's buffer is full.

        Raises:
            anyio.BrokenResourceError: the connection is gone.
        """
        if self._lost or self._transport.is_closing():
            raise anyio.BrokenResourceError
        self._transport.write(item)
        while self._writable is not None and not self._lost:
            await self._writable
        if self._lost:
            raise anyio.BrokenResourceError

    async def send_eof(self) -> None:
        """Half-close the write side when the transport can."""
        if self._transport.can_write_eof():
            self._transport.write_eof()

    async def aclose(self) -> None:
        """Close the transport (buffered writes are flushed first)."""
        self._transport.close()

    @property
    def extra_attributes(self) -> Any:
        return {}
