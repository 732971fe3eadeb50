"""The one loop that turns an exchange's effects into IO, for both frontends.

:func:`drive` feeds a request head to a fresh :class:`~igw_core.exchange.Exchange`
and performs every effect it asks for, feeding the outcomes back, until the
exchange reports. Client disconnects cancel outstanding provider calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from igw_core.effects import (
    Abort,
    CallProvider,
    CallTool,
    Effect,
    ReadProviderBody,
    ReadRequestBody,
    RefreshKeys,
    RelayBody,
    Report,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.events import (
    ClientGone,
    Event,
    FailureReason,
    KeysRefreshed,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    ProviderResponse,
    RequestBodyFailed,
    RequestData,
    RequestEnd,
    RequestHead,
    ToolResult,
)
from igw_core.exchange import Exchange
from igw_core.flows.base import MAX_BUFFERED
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import EMPTY
from igw_core.report import ExchangeRecord
from igw_core.responses import error_body
from igw_io.channel import ClientChannel, ClientDisconnected, RequestBodyError
from igw_io.logs import current_request_id
from igw_io.loops import running_loop
from igw_io.upstream import Upstream, UpstreamFailure, UpstreamResponse

if TYPE_CHECKING:
    from igw_io.mcp import MCPManager
    from igw_io.oidc import OIDCKeys

log = logging.getLogger("igw.driver")


class _Run:
    """The state of one drive: the exchange, open provider responses, pending effects."""

    def __init__(
        self, exchange: Exchange, channel: ClientChannel, upstream: Upstream,
        clock: Callable[[], float], mcp: MCPManager | None = None,
        oidc: OIDCKeys | None = None,
    ) -> None:
        self.exchange = exchange
        self.mcp = mcp
        self.oidc = oidc
        self.channel = channel
        self.upstream = upstream
        self.clock = clock
        self.effects: deque[Effect] = deque()
        self.responses: dict[int, UpstreamResponse] = {}
        self.record: ExchangeRecord | None = None
        self.gone = False
        #: When the relayed body's first bytes went to the client.
        self.first_data_at: float | None = None
        #: Starts watching for the client's disconnect (channels that cannot tell by
        #: themselves); called before the first provider or tool call.
        self.watch: Callable[[], None] | None = None

    def feed(self, event: Event) -> None:
        self.effects.extend(self.exchange.receive(event))

    async def run(self) -> None:
        """Perform effects until the exchange has reported.

        Parallel work (buffered provider calls, tool calls) that the exchange asks
        for together runs in one task group; everything else runs in this task.

        Raises:
            ClientDisconnected: the client left.
        """
        effects = self.effects
        exchange = self.exchange
        perform = _PERFORM
        while effects or not exchange.finished:
            if not effects:  # pragma: no cover - the exchange always asks for something
                raise RuntimeError("exchange stalled without effects")
            effect = effects.popleft()
            kind = type(effect)
            if kind is CallProvider or kind is CallTool:
                if self.watch is not None:
                    self.watch()
                    self.watch = None
                parallel = _in_parallel(effect)
            else:
                parallel = False
            if parallel:
                batch = [effect]
                while effects and _in_parallel(effects[0]):
                    batch.append(effects.popleft())
                async with anyio.create_task_group() as tg:
                    for call in batch:
                        tg.start_soon(self.call_parallel, call)
            else:
                waiting = perform[kind](self, effect)
                if waiting is not None:
                    await waiting

    # A performer returns what to await, or None when it is done already. The effects a
    # channel performs by itself hand back the channel's own coroutine (one coroutine per
    # effect, not two); the report needs none.

    def send_data(self, effect: SendData) -> Awaitable[None]:
        return self.channel.send_data(effect.data)

    def send_head(self, effect: SendHead) -> Awaitable[None]:
        headers = effect.headers
        return self.channel.send_head(effect.status,
                                      headers if type(headers) is list else list(headers))

    def send_end(self, effect: SendEnd) -> Awaitable[None]:
        return self.channel.send_end()

    def abort(self, effect: Abort) -> Awaitable[None]:
        return self.channel.abort()

    def report(self, effect: Report) -> None:
        self.record = effect.record

    async def refresh_keys(self, effect: RefreshKeys) -> None:
        keys = await self.oidc.refresh_for_kid(effect.kid) if self.oidc else None
        self.feed(KeysRefreshed(keys))

    async def perform_simple(self, effect: Effect) -> None:
        """Perform an effect of a response made from the head alone."""
        try:
            waiting = _PERFORM[type(effect)](self, effect)
            if waiting is not None:
                await waiting
        except ClientDisconnected:
            pass

    async def read_request(self, effect: ReadRequestBody) -> None:
        exchange = self.exchange
        while not exchange.finished:
            try:
                data, more = await self.channel.receive_body()
            except RequestBodyError as error:
                self.feed(RequestBodyFailed(error.reason, error.detail, self.clock()))
                return
            if data:
                self.feed(RequestData(data))
            if not more:
                if not exchange.finished:  # a piece over the size limit ended it
                    self.feed(RequestEnd())
                return

    async def call_streamed(self, call: CallProvider) -> None:
        try:
            if call.head_timeout is None:
                response = await self.upstream.open(call)
            else:
                response = await self._open_within(call, call.head_timeout)
        except UpstreamFailure as failure:
            self.feed(ProviderFailed(call.call, failure.reason, failure.detail, self.clock()))
            return
        self.responses[call.call] = response
        self.feed(ProviderHead(call.call, response.status, response.headers, self.clock()))

    async def _open_within(self, call: CallProvider, limit: float) -> UpstreamResponse:
        """Open ``call``, giving up after ``limit`` seconds without its response head.

        Raises:
            UpstreamFailure: unreachable, or no head in time (reason ``TIMEOUT``).
        """
        with anyio.move_on_after(limit):
            return await self.upstream.open(call)
        raise UpstreamFailure(FailureReason.TIMEOUT,
                              f"no response head within {limit:g}s (the alias's timeout)")

    async def call_parallel(self, effect: Effect) -> None:
        if isinstance(effect, CallTool):
            await self.call_tool(effect)
        else:
            assert isinstance(effect, CallProvider)
            await self.call_buffered(effect)

    async def call_buffered(self, call: CallProvider) -> None:
        event: Event
        try:
            response = await self.upstream.open(call)
            try:
                body = await response.read(MAX_BUFFERED)
            finally:
                await response.aclose()
            event = ProviderResponse(call.call, response.status, response.headers, body,
                                     self.clock())
        except UpstreamFailure as failure:
            event = ProviderFailed(call.call, failure.reason, failure.detail, self.clock())
        self.feed(event)

    async def call_tool(self, call: CallTool) -> None:
        if self.mcp is None:
            ok, text = False, "MCP is not enabled on this gateway"
        else:
            try:
                ok, text = await self.mcp.call_tool(call.server, call.tool, call.arguments)
            except Exception as exc:  # the model gets a readable result, not a failed request
                log.exception("mcp tool call failed unexpectedly")
                ok, text = False, f"internal error calling {call.tool}: {exc}"
        self.feed(ToolResult(call.call, ok, text, self.clock()))

    async def relay(self, effect: RelayBody) -> None:
        response = self.responses.pop(effect.call)
        tap = effect.tap
        send = self.channel.send_data
        next_chunk = response.next_chunk
        try:
            while (chunk := await next_chunk()) is not None:
                if tap is not None:
                    tap.feed(chunk)
                await send(chunk)
                if self.first_data_at is None:
                    self.first_data_at = self.clock()
        except UpstreamFailure as failure:
            self.feed(ProviderFailed(effect.call, failure.reason, failure.detail, self.clock()))
            return
        finally:
            await response.aclose()
        self.feed(ProviderEnd(effect.call, self.clock(), self.first_data_at))

    async def read_provider(self, effect: ReadProviderBody) -> None:
        call = effect.call
        response = self.responses.pop(call)
        next_chunk = response.next_chunk
        try:
            while (chunk := await next_chunk()) is not None:
                self.feed(ProviderData(call, chunk))
                # Bytes made from a body being read (an agent loop's stream) go out now.
                while self.effects and isinstance(head := self.effects[0], SendData):
                    self.effects.popleft()
                    await self.channel.send_data(head.data)
        except UpstreamFailure as failure:
            self.feed(ProviderFailed(call, failure.reason, failure.detail, self.clock()))
            return
        finally:
            await response.aclose()
        self.feed(ProviderEnd(call, self.clock()))

    async def close(self) -> None:
        for response in self.responses.values():
            await response.aclose()
        self.responses.clear()

    def conclude(self) -> None:
        """Take the report from what an ended (or interrupted) run left; a client that
        left before the exchange finished is reported as gone."""
        if self.gone and not self.exchange.finished:  # no Report was made yet
            self.effects.clear()
            self.feed(ClientGone(self.clock(), self.first_data_at))
        for effect in self.effects:
            if isinstance(effect, Report):
                self.record = effect.record


#: How each effect is performed; CallProvider(buffer=True) and CallTool run in parallel.
_PERFORM: dict[type[Effect], Callable[[_Run, Any], Awaitable[None] | None]] = {
    SendData: _Run.send_data,
    SendHead: _Run.send_head,
    SendEnd: _Run.send_end,
    RelayBody: _Run.relay,
    CallProvider: _Run.call_streamed,
    ReadRequestBody: _Run.read_request,
    RefreshKeys: _Run.refresh_keys,
    ReadProviderBody: _Run.read_provider,
    Report: _Run.report,
    Abort: _Run.abort,
}


def _in_parallel(effect: Effect) -> bool:
    """Whether ``effect`` runs beside the others the exchange asked for with it."""
    return isinstance(effect, CallTool) or (isinstance(effect, CallProvider) and effect.buffer)


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
    run = _Run(exchange, channel, services.upstream, services.clock, mcp, oidc)
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


def _disconnecter(run: _Run, cancel: Callable[[], object]) -> Callable[[], None]:
    """Return what to call when the client leaves: mark the run gone, then ``cancel`` it."""

    def disconnected() -> None:
        run.gone = True
        cancel()

    return disconnected


async def _run_watched(run: _Run, channel: ClientChannel, disconnected: Callable[[], None]
                       ) -> None:
    """:meth:`_Run.run` with a task that reads for the disconnect, once calls begin."""
    async with anyio.create_task_group() as tg:

        def start_watching() -> None:
            tg.start_soon(_watch, channel, disconnected)

        run.watch = start_watching
        await run.run()
        tg.cancel_scope.cancel()
