"""The few methods the effect driver needs from a frontend's client connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    import asyncio

from igw_core.events import BodyFailure


class ClientDisconnected(Exception):
    """The client went away; raised by a channel's receive and send methods."""


class RequestBodyError(Exception):
    """The request body could not be read: too slow, or its framing broke HTTP.

    The connection is still open so the response can say why; it must close after.
    """

    def __init__(self, reason: BodyFailure, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@mypyc_attr(allow_interpreted_subclasses=True)
class ClientChannel:
    """One request's client side, as a frontend exposes it to the driver.

    Every method raises :class:`ClientDisconnected` once the client is gone.

    A base class, not a Protocol: compiled, a call through a Protocol is a method lookup
    by name (about 400 instructions more per call); through a base class, the calls to
    the compiled HTTP/1.1 connection are indexed. The HTTP/2 stream and the ASGI
    channel are Python subclasses, called by name as before.
    """

    __slots__ = ()

    async def receive_body(self) -> tuple[bytes, bool]:
        """Return the next piece of the request body (possibly empty) and whether more
        follows: ``(data, False)`` is the last piece, so a body that arrived whole takes
        one call.

        Raises:
            ClientDisconnected: the client went away.
            RequestBodyError: the body timed out or its framing is malformed.
        """
        raise NotImplementedError

    # The three senders return what to await, or None when the bytes went out without
    # waiting (the common case: an await of a compiled coroutine costs more than the
    # write). A Python subclass may define them as coroutines; see :func:`sent`.

    def send_head(self, status: int, headers: list[tuple[bytes, bytes]]
                  ) -> Awaitable[None] | None:
        """Send the response head (chunked framing unless ``content-length`` is given);
        return what to await before the next send, if anything.

        Raises:
            ClientDisconnected: the client went away (here or when awaited).
        """
        raise NotImplementedError

    def send_data(self, data: bytes) -> Awaitable[None] | None:
        """Send body bytes; return what to await while the client is slow (backpressure).

        Raises:
            ClientDisconnected: the client went away (here or when awaited).
        """
        raise NotImplementedError

    def send_end(self) -> Awaitable[None] | None:
        """Complete the response; return what to await until it is, if anything.

        Raises:
            ClientDisconnected: the client went away (here or when awaited).
        """
        raise NotImplementedError

    async def abort(self) -> None:
        """Break the connection without completing the response."""
        raise NotImplementedError

    def on_disconnect(self, callback: Callable[[], None] | None) -> bool:
        """Have ``callback`` called once if the client leaves before the response ends.

        Returns false when the channel cannot tell by itself (ASGI learns it only
        by reading); the driver then runs :meth:`wait_disconnect` in a task.
        """
        raise NotImplementedError

    def serving_task(self) -> asyncio.Task[None] | None:
        """Return the task that serves this request, when the channel knows it without
        asking asyncio (``None`` otherwise: the driver then asks)."""
        raise NotImplementedError

    async def wait_disconnect(self) -> None:
        """Return when the client has disconnected (may never return)."""
        raise NotImplementedError


async def sent(waiting: Awaitable[None] | None) -> None:
    """Await what a channel's sender returned, if anything.

    Raises:
        ClientDisconnected: the client went away.
    """
    if waiting is not None:
        await waiting
