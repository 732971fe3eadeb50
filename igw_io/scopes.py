"""The driver's work that runs inside anyio scopes: task groups and deadlines.

Not compiled, unlike :mod:`igw_io.performing` which calls it: a scope's exit awaits
(a task group) or swallows a cancellation thrown into the coroutine it guards (a
deadline), the patterns compiled coroutines must not contain (docs/engine.md, "The
compiled request path"). None of it runs for a plain chat, stream or ``/proxy`` request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio

from igw_core.effects import CallProvider, Effect
from igw_core.events import FailureReason
from igw_io.upstream import Upstream, UpstreamFailure, UpstreamResponse


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
