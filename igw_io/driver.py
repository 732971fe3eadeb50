"""The one loop that turns an exchange's effects into IO, for both frontends.

:func:`serve` feeds a request head to a fresh :class:`~igw_core.exchange.Exchange`
and has a :class:`~igw_io.performing.Run` perform every effect it asks for, feeding
the outcomes back, until the exchange reports. Client disconnects cancel outstanding
provider calls. This module is where cancellations are caught and cleanup awaits in
``finally`` blocks, so it is not compiled (docs/engine.md, "The compiled request path").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from igw_core.events import RequestHead
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import EMPTY
from igw_core.report import ExchangeRecord
from igw_core.responses import error_body
from igw_io.channel import ClientChannel, ClientDisconnected
from igw_io.logs import current_request_id
from igw_io.loops import running_loop
from igw_io.performing import Run
from igw_io.upstream import Upstream

if TYPE_CHECKING:
    from igw_io.mcp import MCPManager
    from igw_io.oidc import OIDCKeys

log = logging.getLogger("igw.driver")


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
    draining: Callable[[], bool] = lambda: False


async def serve(services: Services, channel: ClientChannel, head: RequestHead,
                report: Callable[[ExchangeRecord], None]) -> None:
    """Run one request through the core, then hand what it reported to ``report``.

    Never raises for anything the client or a provider does: a client that
    leaves is reported with status 499 and its provider and tool calls are
    cancelled. With ``mcp``, the exchange gets its current tool catalogue and
    its ``CallTool`` effects are performed concurrently. A bug becomes a logged
    500 (or an aborted connection once the head went out) instead of an exception.

    One coroutine frame from the request to its effects: each level of ``await``
    between the serving task and a provider wait is paid at every resumption.
    """
    mcp, oidc = services.mcp, services.oidc
    tools = await mcp.available_tools() if mcp is not None else EMPTY
    keys = oidc.current() if oidc is not None else None
    exchange = Exchange(services.gateway, tools=tools, keys=keys,
                        draining=services.draining())
    run = Run(exchange, channel, services.upstream, services.clock, mcp, oidc)
    token = None
    try:
        run.feed(head)
        # Every line logged while the request is served carries its id.
        token = current_request_id.set(exchange.request_id)
        if exchange.finished:  # answered from the head alone: no IO to watch
            for effect in run.effects:
                await run.perform_simple(effect)
        else:
            task = _asyncio_task()
            try:
                if task is None:
                    with anyio.CancelScope() as scope:
                        try:
                            await _run_watched(run, channel,
                                               _disconnecter(run, scope.cancel))
                        except ClientDisconnected:
                            run.gone = True
                else:
                    # On asyncio the serving task is cancelled directly (no cancel scope):
                    # by the channel when it learns of the disconnect itself, else by a
                    # watcher task that reads for it (ASGI), started before the first
                    # provider call.
                    cancel = _disconnecter(run, task.cancel)
                    watcher: asyncio.Task[None] | None = None
                    if not channel.on_disconnect(cancel):

                        def start_watching() -> None:
                            nonlocal watcher
                            watcher = asyncio.ensure_future(_watch(channel, cancel))

                        run.watch = start_watching
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
                        if watcher is not None:
                            watcher.cancel()
            finally:
                if run.responses:
                    await run.close()
            run.conclude()
        record = run.record
        assert record is not None
    except Exception:
        log.exception("unhandled error serving request")
        try:
            if exchange.head_sent:
                await channel.abort()
            else:
                body = error_body("internal gateway error", "server_error", "internal_error")
                await channel.send_head(500, [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())])
                await channel.send_data(body)
                await channel.send_end()
        except ClientDisconnected:
            pass
        record = ExchangeRecord(request_id=exchange.request_id or head.fresh_id,
                                method=head.method, route="other", path=head.path, status=500,
                                started=head.now, ended=services.clock(), counted=False,
                                error="internal error")
    finally:
        if token is not None:
            current_request_id.reset(token)
    report(record)


def _asyncio_task() -> asyncio.Task[Any] | None:
    """Return the current asyncio task, or ``None`` on another event loop (trio)."""
    loop = running_loop()
    return None if loop is None else asyncio.current_task(loop)


async def _watch(channel: ClientChannel, disconnected: Callable[[], None]) -> None:
    try:
        await channel.wait_disconnect()
    except Exception:  # the server's receive() failed: it cannot tell us, so do not guess
        log.debug("disconnect watch ended", exc_info=True)
        return
    disconnected()


def _disconnecter(run: Run, cancel: Callable[[], object]) -> Callable[[], None]:
    """Return what to call when the client leaves: mark the run gone, then ``cancel`` it."""

    def disconnected() -> None:
        run.gone = True
        cancel()

    return disconnected


async def _run_watched(run: Run, channel: ClientChannel, disconnected: Callable[[], None]
                       ) -> None:
    """:meth:`Run.run` with a task that reads for the disconnect, once calls begin."""
    async with anyio.create_task_group() as tg:

        def start_watching() -> None:
            tg.start_soon(_watch, channel, disconnected)

        run.watch = start_watching
        await run.run()
        tg.cancel_scope.cancel()
