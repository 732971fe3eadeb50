"""The driver's work that runs inside anyio scopes: task groups, deadlines, trio's cancel
scope; and the task that reads for a disconnect where the channel cannot tell by itself.

Not compiled, unlike :mod:`igw_io.performing` and :mod:`igw_io.driver`, which call it: a
scope's exit awaits (a task group) or swallows a cancellation thrown into the coroutine
it guards (a deadline), the patterns compiled coroutines must not contain (docs/engine.md,
"The compiled request path"). None of it runs for a plain chat, stream or ``/proxy``
request on the standalone server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from igw_core.effects import CallProvider, Effect
from igw_core.events import FailureReason
from igw_io.channel import ClientChannel, ClientDisconnected
from igw_io.upstream import Upstream, UpstreamFailure, UpstreamResponse

if TYPE_CHECKING:
    from igw_io.performing import Run

log = logging.getLogger("igw.driver")


async def run_parallel(perform: Callable[[Effect], Coroutine[Any, Any, None]],
                       batch: Sequence[Effect]) -> None:
    """Perform every effect of ``batch`` concurrently, in one task group.

    Raises:
        ExceptionGroup: what the task group raises when a performer fails.
    """
    async with anyio.create_task_group() as tg:
        for effect in batch:
            tg.start_soon(perform, effect)


async def open_within(upstream: Upstream, call: CallProvider,
                      limit: float) -> UpstreamResponse:
    """Open ``call``, giving up after ``limit`` seconds without its response head.

    Raises:
        UpstreamFailure: unreachable, or no head in time (reason ``TIMEOUT``).
    """
    with anyio.move_on_after(limit):
        return await upstream.open(call)
    raise UpstreamFailure(FailureReason.TIMEOUT,
                          f"no response head within {limit:g}s (the alias's timeout)")


async def watch_disconnect(channel: ClientChannel, disconnected: Callable[[], None]) -> None:
    """Call ``disconnected`` once ``channel`` reads that the client left."""
    try:
        await channel.wait_disconnect()
    except Exception:  # the server's receive() failed: it cannot tell us, so do not guess
        log.debug("disconnect watch ended", exc_info=True)
        return
    disconnected()


async def run_on_trio(run: Run, channel: ClientChannel) -> None:
    """:meth:`Run.run` in a cancel scope, with a task that reads for the disconnect once
    calls begin: trio has no task to cancel directly. A client that left marks the run
    gone; nothing is raised for it."""
    with anyio.CancelScope() as scope:
        run.cancel = scope.cancel
        try:
            async with anyio.create_task_group() as tg:

                def start_watching() -> None:
                    tg.start_soon(watch_disconnect, channel, run.left)

                run.watch = start_watching
                await run.run()
                tg.cancel_scope.cancel()
        except ClientDisconnected:
            run.gone = True
