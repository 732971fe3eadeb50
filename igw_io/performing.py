"""How the driver performs an exchange's effects: :class:`Run`, the state of one request.

Compiled with the rest of the request path (``setup.py``), so it keeps to the one rule
that makes compiled coroutines safe here (docs/engine.md, "The compiled request path"):
no ``await`` inside a ``finally`` block or an ``except`` handler, and no ``async with``.
Cleanup that awaits runs in straight-line code; a response still open when an exception
leaves (a cancellation, a client that left) stays in :attr:`Run.responses`, and
:func:`igw_io.driver.serve` closes it. The work that needs anyio scopes (task groups,
deadlines, the cancel scope on trio) is in :mod:`igw_io.scopes`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

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
    KeysRefreshed,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    ProviderResponse,
    RequestBodyFailed,
    RequestData,
    RequestEnd,
    ToolResult,
)
from igw_core.exchange import Exchange
from igw_core.flows.base import MAX_BUFFERED
from igw_core.report import ExchangeRecord
from igw_io.channel import ClientChannel, ClientDisconnected, RequestBodyError
from igw_io.queues import Queue
from igw_io.scopes import open_within, run_parallel, watch_disconnect
from igw_io.upstream import Upstream, UpstreamFailure, UpstreamResponse

if TYPE_CHECKING:
    from igw_io.mcp import MCPManager
    from igw_io.oidc import OIDCKeys

log: Final = logging.getLogger("igw.driver")


@mypyc_attr(free_list_len=1)
class Run:
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
        self.effects: Queue[Effect] = Queue()
        #: Provider responses opened and not yet closed, by call id.
        self.responses: dict[int, UpstreamResponse] = {}
        self.record: ExchangeRecord | None = None
        self.gone = False
        #: When the relayed body's first bytes went to the client.
        self.first_data_at: float | None = None
        #: Starts watching for the client's disconnect (channels that cannot tell by
        #: themselves); called before the first provider or tool call.
        self.watch: Callable[[], None] | None = None
        #: The task that serves the request (asyncio), cancelled when the client leaves.
        self.task: asyncio.Task[Any] | None = None
        #: Cancels what serves the request on trio (its cancel scope).
        self.cancel: Callable[[], object] | None = None
        #: The task that reads for the disconnect (:meth:`start_watching`).
        self.watcher: asyncio.Task[None] | None = None

    def left(self) -> None:
        """The client left: mark the run gone and cancel what serves it."""
        self.gone = True
        if self.task is not None:
            self.task.cancel()
        elif self.cancel is not None:
            self.cancel()

    def start_watching(self) -> None:
        """Start a task that calls :meth:`left` once the channel reads the disconnect."""
        self.watcher = asyncio.ensure_future(watch_disconnect(self.channel, self.left))

    def stop_watching(self) -> None:
        """Cancel the task :meth:`start_watching` started, if any."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel()

    def feed(self, event: Event) -> None:
        self.effects.items.extend(self.exchange.receive(event))

    async def run(self) -> None:
        """Perform effects until the exchange has reported.

        Parallel work (buffered provider calls, tool calls) that the exchange asks
        for together runs in one task group; everything else runs in this task.

        Raises:
            ClientDisconnected: the client left.
        """
        exchange = self.exchange
        effects = self.effects
        perform = _PERFORM
        while True:
            effect = effects.take()
            if effect is None:
                if exchange.finished:
                    return
                raise RuntimeError("exchange stalled without effects")  # pragma: no cover
            kind = type(effect)
            if kind is CallProvider or kind is CallTool:
                if self.watch is not None:
                    self.watch()
                    self.watch = None
                parallel = in_parallel(effect)
            else:
                parallel = False
            if parallel:
                batch = [effect]
                while (head := effects.peek()) is not None and in_parallel(head):
                    batch.append(head)
                    effects.skip()
                await run_parallel(self.call_parallel, batch)
            else:
                waiting = perform[kind](self, effect)
                if waiting is not None:
                    await waiting

    # A performer returns what to await, or None when it is done already. The effects a
    # channel performs by itself hand back what the channel's sender returned (None for
    # bytes that went out without waiting; no coroutine of the performer's own); the
    # report needs none.

    def send_data(self, effect: SendData) -> Awaitable[None] | None:
        return self.channel.send_data(effect.data)

    def send_head(self, effect: SendHead) -> Awaitable[None] | None:
        headers = effect.headers
        return self.channel.send_head(effect.status,
                                      headers if type(headers) is list else list(headers))

    def send_end(self, effect: SendEnd) -> Awaitable[None] | None:
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
                response = await open_within(self.upstream, call, call.head_timeout)
        except UpstreamFailure as failure:
            self.feed(ProviderFailed(call.call, failure.reason, failure.detail, self.clock()))
            return
        self.responses[call.call] = response
        self.feed(ProviderHead(call.call, response.status, response.headers, self.clock()))

    async def call_parallel(self, effect: Effect) -> None:
        if isinstance(effect, CallTool):
            await self.call_tool(effect)
        else:
            assert isinstance(effect, CallProvider)
            await self.call_buffered(effect)

    async def call_buffered(self, call: CallProvider) -> None:
        try:
            response = await self.upstream.open(call)
        except UpstreamFailure as failure:
            self.feed(ProviderFailed(call.call, failure.reason, failure.detail, self.clock()))
            return
        self.responses[call.call] = response
        failed: UpstreamFailure | None = None
        try:
            body = await response.read(MAX_BUFFERED)
        except UpstreamFailure as failure:
            failed, body = failure, b""
        if await self._release(call.call, response, failed):
            return
        self.feed(ProviderResponse(call.call, response.status, response.headers, body,
                                   self.clock()))

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
        call = effect.call
        response = self.responses[call]
        tap = effect.tap
        channel = self.channel
        failed: UpstreamFailure | None = None
        try:
            # Methods called on their objects, not bound once: compiled, both are
            # indexed calls of base classes, and a bound method is a generic call.
            while (chunk := await response.next_chunk()) is not None:
                if tap is not None:
                    tap.feed(chunk)
                if (waiting := channel.send_data(chunk)) is not None:
                    await waiting
                if self.first_data_at is None:
                    self.first_data_at = self.clock()
        except UpstreamFailure as failure:
            failed = failure
        if await self._release(call, response, failed):
            return
        self.feed(ProviderEnd(call, self.clock(), self.first_data_at))

    async def read_provider(self, effect: ReadProviderBody) -> None:
        call = effect.call
        response = self.responses[call]
        failed: UpstreamFailure | None = None
        try:
            while (chunk := await response.next_chunk()) is not None:
                self.feed(ProviderData(call, chunk))
                # Bytes made from a body being read (an agent loop's stream) go out now.
                while isinstance(head := self.effects.peek(), SendData):
                    self.effects.skip()
                    if (waiting := self.channel.send_data(head.data)) is not None:
                        await waiting
                self.effects.compact()  # a long stream does not grow the queue
        except UpstreamFailure as failure:
            failed = failure
        if await self._release(call, response, failed):
            return
        self.feed(ProviderEnd(call, self.clock()))

    async def _release(self, call: int, response: UpstreamResponse,
                       failed: UpstreamFailure | None) -> bool:
        """Close ``call``'s response once its body was read (or failed); feed the failure,
        if any, and return whether there was one."""
        del self.responses[call]
        await response.aclose()
        if failed is None:
            return False
        self.feed(ProviderFailed(call, failed.reason, failed.detail, self.clock()))
        return True

    async def close(self) -> None:
        """Close the provider responses still open (after a cancellation or a bug)."""
        responses = list(self.responses.values())
        self.responses.clear()
        for response in responses:
            await response.aclose()

    def conclude(self) -> None:
        """Take the report from what an ended (or interrupted) run left; a client that
        left before the exchange finished is reported as gone."""
        if self.gone and not self.exchange.finished:  # no Report was made yet
            self.effects.clear()
            self.feed(ClientGone(self.clock(), self.first_data_at))
        for effect in self.effects.rest():
            if isinstance(effect, Report):
                self.record = effect.record


#: How each effect is performed; CallProvider(buffer=True) and CallTool run in parallel.
_PERFORM: Final[dict[type[Effect], Callable[[Run, Any], Awaitable[None] | None]]] = {
    SendData: Run.send_data,
    SendHead: Run.send_head,
    SendEnd: Run.send_end,
    RelayBody: Run.relay,
    CallProvider: Run.call_streamed,
    ReadRequestBody: Run.read_request,
    RefreshKeys: Run.refresh_keys,
    ReadProviderBody: Run.read_provider,
    Report: Run.report,
    Abort: Run.abort,
}


def in_parallel(effect: Effect) -> bool:
    """Whether ``effect`` runs beside the others the exchange asked for with it."""
    return isinstance(effect, CallTool) or (isinstance(effect, CallProvider) and effect.buffer)
