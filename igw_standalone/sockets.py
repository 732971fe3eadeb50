"""What a client socket raises when the peer is gone, shared by both HTTP versions."""

from __future__ import annotations

import anyio

#: Reading from or writing to a connection whose client left, reset or closed it.
PEER_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
