"""The request-head event a frontend hands the driver, stamped with the clocks and an id."""

from __future__ import annotations

import time
from collections.abc import Callable
from random import getrandbits

from igw_core.events import RequestHead


def stamped_head(clock: Callable[[], float], method: str, path: str, query: str,
                 headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """Return a request-head event stamped with ``clock()``, the wall clock and a fresh
    request id (16 lowercase hex digits)."""
    # The id needs to be unique, not secret: no os.urandom syscall per request (the random
    # module is reseeded in a forked worker). hex() of the number with a 65th bit set,
    # less "0x1": the 16 digits zero-padded, without a format() call.
    request_id = hex(getrandbits(64) | 1 << 64)[3:]
    return RequestHead(method, path, query, headers, clock(), time.time(), request_id)
