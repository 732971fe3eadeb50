"""The request-head event a frontend hands the driver, stamped with the clocks and an id."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from random import randbytes
from typing import Final

from igw_core.events import RequestHead

#: Request ids drawn at once: one draw of random bytes serves this many requests.
_IDS_PER_DRAW: Final = 256
_wall: Final = time.time


class _Ids:
    """Fresh request ids, 16 lowercase hex digits each, sliced from one string of digits."""

    __slots__ = ("at", "digits")

    def __init__(self) -> None:
        self.digits = ""
        self.at = 0

    def reset(self) -> None:
        """Forget the drawn digits (in a forked child: its ids must not repeat its parent's)."""
        self.digits = ""
        self.at = 0

    def fresh(self) -> str:
        """Return a request id no other call of this process returned (in all likelihood)."""
        at = self.at
        if at == len(self.digits):
            # The ids need to be unique, not secret: the random module, which is reseeded
            # in a forked child, rather than an os.urandom system call. One draw and one
            # hex() for many ids; each id is then one slice.
            self.digits = randbytes(8 * _IDS_PER_DRAW).hex()
            at = 0
        self.at = at + 16
        return self.digits[at:at + 16]


_IDS: Final = _Ids()
os.register_at_fork(after_in_child=_IDS.reset)


class HeadStamper:
    """Makes the request-head events of a process, stamped with its clock."""

    __slots__ = ("clock",)

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def stamp(self, method: str, path: str, query: str,
              headers: list[tuple[bytes, bytes]]) -> RequestHead:
        """Return a request-head event stamped with the clock, the wall clock and a
        fresh request id (16 lowercase hex digits)."""
        return RequestHead(method, path, query, headers, self.clock(), _wall(), _IDS.fresh())
