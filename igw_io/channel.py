"""The few methods the effect driver needs from a frontend's client connection."""

from __future__ import annotations

from typing import Protocol


class ClientDisconnected(Exception):
    """The client went away; raised by a channel's receive and send methods."""


class ClientChannel(Protocol):
    """One request's client side, as a frontend exposes it to the driver.

    Every method raises :class:`ClientDisconnected` once the client is gone.
    """

    async def receive_body(self) -> bytes | None:
        """Return the next piece of the request body, or ``None`` at its end."""

    async def send_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response head (chunked framing unless ``content-length`` is given)."""

    async def send_data(self, data: bytes) -> None:
        """Send body bytes, waiting while the client is slow (backpressure)."""

    async def send_end(self) -> None:
        """Complete the response."""

    async def abort(self) -> None:
        """Break the connection without completing the response."""

    async def wait_disconnect(self) -> None:
        """Return when the client has disconnected (may never return)."""
