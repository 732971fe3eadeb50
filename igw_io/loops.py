"""Which asyncio loop runs the caller, without a system call each time it is asked."""

from __future__ import annotations

import asyncio
import threading

_last: asyncio.AbstractEventLoop | None = None
_last_thread = 0


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the asyncio loop running the caller, or ``None`` (trio, or no loop at all).

    ``asyncio.get_running_loop()`` makes a ``getpid`` system call every time (it guards
    against a loop inherited across ``fork``), and the hot path asks several times per
    request. The loop found last is answered again while it runs in the caller's thread:
    a thread runs one loop at a time, so it is the caller's. A forked child's inherited
    loop is not running, so the child asks asyncio afresh.
    """
    global _last, _last_thread
    loop = _last
    if loop is not None and loop.is_running() and _last_thread == threading.get_ident():
        return loop
    loop = asyncio._get_running_loop()
    if loop is not None:
        _last, _last_thread = loop, threading.get_ident()
    return loop
