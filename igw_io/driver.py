"""The one loop that turns an exchange's effects into IO, for both frontends.

:func:`serve` feeds a request head to a fresh :class:`~igw_core.exchange.Exchange`
and has a :class:`~igw_io.performing.Run` perform every effect it asks for, feeding
the outcomes back, until the exchange reports. Client disconnects cancel outstanding
provider calls.

Compiled with the rest of the request path, so it keeps to the rule of compiled
coroutines (docs/engine.md, "The compiled request path"): what a cancellation or a
failure leaves to clean up is awaited in straight-line code after the ``try``, and the
exception, if it must go on, is raised again from there. On trio, the cancel scope and
the task that watches for a disconnect are in :mod:`igw_io.scopes`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from igw_core.events import RequestHead
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import EMPTY
from igw_core.report import ExchangeRecord
from igw_core.responses import error_body
from igw_io.channel import ClientChannel, ClientDisconnected, sent
from igw_io.logs import RequestId, enter_request
from igw_io.loops import running_loop
from igw_io.performing import Run
from igw_io.scopes import run_on_trio
from igw_io.upstream import Upstream

if TYPE_CHECKING:
    from igw_io.mcp import MCPManager
    from igw_io.oidc import OIDCKeys

log: Final = logging.getLogger("igw.driver")


class Draining:
    """Whether the process is shutting down (``/ready`` then says 503): set once, read per
    request. An object, not a callable: reading a compiled attribute costs no call."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


@dataclass(frozen=True, slots=True)
class Services:
    """What the driver performs effects with, shared by every request of a process.

    Fields:
        gateway: the core's decision context.
        upstream: the provider connection pool.
        clock: the monotonic clock the core's times come from.
        mcp: the MCP sessions (``MCP_ENABLE=true`` only).
        oidc: the identity provider's keys (``AUTH_ENABLE=true`` only).
        draining: whether the process is shutting down (``/ready`` then says 503).
    """

    gateway: Gateway
    upstream: Upstream
    clock: Callable[[], float]
    mcp: MCPManager | None = None
    oidc: OIDCKeys | None = None
    draining: Draining = field(default_factory=Draining)


async def serve(services: Services, report: Callable[[ExchangeRecord], None],
                channel: ClientChannel, head: RequestHead) -> None:
    """Run one request through the core, then hand what it reported to ``report``.

    Never raises for anything the client or a provider does: a client that
    leaves is reported with status 499 and its provider and tool calls are
    cancelled. With ``mcp``, the exchange gets its current tool catalogue and
    its ``CallTool`` effects are performed concurrently. A bug becomes a logged
    500 (or an aborted connection once the head went out) instead of an exception.

    One coroutine frame from the request to its effects: each level of ``await``
    between the serving task and a provider wait is paid at every resumption.

    Raises:
        asyncio.CancelledError: the serving task was cancelled for another reason than
            the client leaving (the server stopping); open provider responses are
            closed first.
    """
    mcp, oidc = services.mcp, services.oidc
    tools = await mcp.available_tools() if mcp is not None else EMPTY
    keys = oidc.current() if oidc is not None else None
    exchange = Exchange(services.gateway, tools=tools, keys=keys,
                        draining=services.draining.on)
    run = Run(exchange, channel, services.upstream, services.clock, mcp, oidc)
    task = _serving_task(channel)
    named: RequestId | None = None
    crashed = False
    cancelled: asyncio.CancelledError | None = None
    try:
        run.feed(head)
        # Every line logged while the request is served carries its id.
        named = enter_request(task, exchange.request_id)
        if exchange.finished:  # answered from the head alone: no IO to watch
            for effect in run.effects.rest():
                await run.perform_simple(effect)
        elif task is None:  # trio
            await run_on_trio(run, channel)
            run.conclude()
        else:
            await _drive(run, channel, task)
            run.conclude()
    except asyncio.CancelledError as error:  # not the client leaving: go on once closed
        cancelled = error
    except Exception:
        log.exception("unhandled error serving request")
        crashed = True
    finally:
        if named is not None:
            named.value = ""
    if run.responses:  # an exception left them open: close them before going on
        await run.close()
    if cancelled is not None:
        raise cancelled
    if crashed:
        await _answer_crash(channel, exchange)
        record = ExchangeRecord(request_id=exchange.request_id or head.fresh_id,
                                method=head.method, route="other", path=head.path,
                                status=500, started=head.now, ended=services.clock(),
                                counted=False, error="internal error")
    else:
        assert run.record is not None
        record = run.record
    report(record)


def _serving_task(channel: ClientChannel) -> asyncio.Task[None] | None:
    """Return the task serving ``channel``'s request, or ``None`` on trio."""
    task = channel.serving_task()  # only asyncio channels know theirs
    if task is None:
        loop = running_loop()
        if loop is not None:  # asyncio.current_task is a Python frame on 3.11: asked last
            task = asyncio.current_task(loop)
    return task


async def _drive(run: Run, channel: ClientChannel, task: asyncio.Task[None]) -> None:
    """Perform the run's effects on asyncio, in ``task``, cancelled if the client leaves
    first.

    Raises:
        asyncio.CancelledError: cancelled for another reason than the client leaving.
    """
    # On asyncio the serving task is cancelled directly (no cancel scope): by the
    # channel when it learns of the disconnect itself, else by a watcher task that
    # reads for it (ASGI), started before the first provider call.
    run.task = task  # (not its bound cancel method: one object fewer per request)
    if not channel.on_disconnect(run.left):
        run.watch = run.start_watching
    try:
        await run.run()
    except asyncio.CancelledError:
        if not run.gone:
            raise
        task.uncancel()
    except ClientDisconnected:
        run.gone = True
    finally:
        channel.on_disconnect(None)
        run.stop_watching()


async def _answer_crash(channel: ClientChannel, exchange: Exchange) -> None:
    """Answer 500 for a request whose serving failed, or abort once its head went out."""
    try:
        if exchange.head_sent:
            await channel.abort()
        else:
            body = error_body("internal gateway error", "server_error", "internal_error")
            await sent(channel.send_head(500, [(b"content-type", b"application/json"),
                                               (b"content-length", str(len(body)).encode())]))
            await sent(channel.send_data(body))
            await sent(channel.send_end())
    except ClientDisconnected:
        pass
