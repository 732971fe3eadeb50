"""Which asyncio loop runs the caller (without a system call each time it is asked), and
waking a task that awaits a future."""

from __future__ import annotations

import asyncio
import threading
from typing import Final


class _Last:
    """The loop found last and the thread it ran in (an object: compiled, its attributes
    are read directly, where module globals are dictionary lookups)."""

    __slots__ = ("loop", "thread")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = 0


_last: Final = _Last()
_get_ident: Final = threading.get_ident


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the asyncio loop running the caller, or ``None`` (trio, or no loop at all).

    ``asyncio.get_running_loop()`` makes a ``getpid`` system call every time (it guards
    against a loop inherited across ``fork``), and the hot path asks several times per
    request. The loop found last is answered again while it runs in the caller's thread:
    a thread runs one loop at a time, so it is the caller's. A forked child's inherited
    loop is not running, so the child asks asyncio afresh.
    """
    last = _last
    loop = last.loop
    if loop is not None and loop.is_running() and last.thread == _get_ident():
        return loop
    loop = asyncio._get_running_loop()
    if loop is not None:
        last.loop, last.thread = loop, _get_ident()
    return loop


def resolve(waiter: asyncio.Future[None]) -> None:
    """Wake the task awaiting ``waiter``, unless it was cancelled meanwhile.

    Asking ``done()`` first is a method call every time; the refusal of a cancelled
    future is an exception only then.
    """
    try:
        waiter.set_result(None)
    except asyncio.InvalidStateError:  # cancelled
        pass
