"""The agent loop spoken in the exchange's effects and events.

An :class:`~igw_core.exchange.Exchange` hands a chat request to :class:`AgentRun` when
MCP tools apply. It turns :class:`~igw_core.mcp.loop.AgentLoop` decisions into
``CallProvider`` / ``CallTool`` / ``Send*`` effects and feeds the loop what comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from igw_core import headers as hdrs
from igw_core.chat import parse_request, with_model
from igw_core.effects import (
    CallProvider,
    CallTool,
    Effect,
    ReadProviderBody,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.errors import LocalProtocolError, UpstreamUnreachable
from igw_core.events import (
    Event,
    Headers,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    ToolResult,
)
from igw_core.flows.base import (
    MAX_BUFFERED,
    BodyBuffer,
    ErrorHead,
    Flow,
    Routed,
    Table,
    TableState,
    by_state,
    provider_failure,
)
from igw_core.flows.relay import retry_after
from igw_core.mcp.loop import (
    AgentLoop,
    CallModel,
    CallTools,
    Decision,
    Finish,
    ToolInvocation,
    stream_of_completion,
)
from igw_core.report import ToolCallFact
from igw_core.responses import error_body, json_response, upstream_error_body
from igw_core.router import RETRYABLE_STATUSES
from igw_core.sse import DONE, encode_data

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider
    from igw_core.router import AttemptFact, Choice

#: Where a deployment is: its provider, chat URL, request headers and model name.
Target = tuple["Provider", str, Headers, str]

__all__ = ["AgentRun", "Phase"]

log: Final = logging.getLogger("igw.mcp")



class Phase(TableState):
    """Where an agent run is."""

    PROVIDER = "provider"  # CallProvider emitted, waiting for its head
    READING = "reading"  # ReadProviderBody emitted for a 2xx answer
    READING_ERROR = "reading_error"  # ReadProviderBody emitted for an error answer
    TOOLS = "tools"  # CallTool effects outstanding
    DONE = "done"  # the client has its answer


_STREAM_HEAD: Final = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"))


class AgentRun(Flow):
    """One chat request through the agent loop, as exchange effects.

    Args:
        exchange: the exchange this serves (its request id, secrets and "head sent").
        loop: the request's loop (not started).
        provider: where the model is.
        url: the provider's chat-completions URL.
        headers: the provider request headers (credentials included).

    Call :meth:`start` once, then feed every provider and tool event with
    :meth:`receive` until :attr:`finished`.
    """

    def __init__(
        self, exchange: Exchange, loop: AgentLoop, provider: Provider, url: str,
        headers: Headers,
    ) -> None:
        super().__init__(exchange, _TABLE, Phase.PROVIDER, Phase.DONE)
        self.loop = loop
        self.provider = provider
        self.upstream = provider
        self.url = url
        self.headers = headers
        self.streamed = loop.stream
        self.calls: list[ToolCallFact] = []
        self._call = -1  # the id of the provider call outstanding (one per attempt)
        self._round_body = b""
        self._alias = ""
        self._retarget: Callable[[Choice], Target] | None = None
        self._past_facts: list[AttemptFact] = []
        self._past_cooled: list[tuple[str, str, str]] = []
        self._error_retry_after: float | None = None
        self._next_tool = 0
        self._tools: dict[int, tuple[ToolInvocation, float]] = {}
        self._body = BodyBuffer()
        self._now = 0.0
        self._json_answer = False  # a streaming request answered with one JSON body
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()

    def start(self, now: float) -> list[Effect]:
        """Return the effects of the first provider call."""
        self._now = now
        return self._apply(self.loop.start())

    def kind(self, event: Event) -> type:
        """Check that a provider event is for the current round; split error heads off.

        Raises:
            LocalProtocolError: a provider event for a call that is not outstanding.
        """
        kind = type(event)
        if kind in _PROVIDER_EVENTS:
            if event.call != self._call:  # type: ignore[attr-defined]
                raise LocalProtocolError(f"provider call {event.call} is not outstanding")  # type: ignore[attr-defined]
            if kind is ProviderHead and not 200 <= event.status < 300:  # type: ignore[attr-defined]
                return ErrorHead
        return kind

    @property
    def secrets(self) -> tuple[str, ...]:
        """The provider keys, scrubbed from any error text shown to the client."""
        return self.exchange.gateway.secrets

    # -- provider ------------------------------------------------------------------------

    def _on_head(self, event: ProviderHead) -> list[Effect]:
        self._now = event.now
        routed = self.routed
        if routed is not None and self._retarget is not None:
            routed.attempts.succeeded(routed.choice, event.now,
                                      latency=event.now - routed.started)
        self._body = BodyBuffer()
        effects: list[Effect] = []
        if self.loop.stream and not self.exchange.head_sent:
            self.status = 200
            effects.append(SendHead(200, [*_STREAM_HEAD,
                                          (b"x-request-id", self.exchange.request_id.encode())]))
        content_type = hdrs.get(event.headers, b"content-type") or b""
        self._json_answer = self.loop.stream and not content_type.startswith(b"text/event-stream")
        effects.append(ReadProviderBody(event.call))
        return effects

    def _on_error_head(self, event: ProviderHead) -> list[Effect]:
        self._now = event.now
        self._body = BodyBuffer()
        self._error_status = event.status
        self._error_headers = hdrs.backoff_headers(event.headers)
        self._error_retry_after = retry_after(event.headers, self.exchange.head.wall)
        return [ReadProviderBody(event.call)]

    def _on_data(self, event: ProviderData) -> list[Effect]:
        if self.loop.stream and not self._json_answer:
            out = self.loop.receive_chunk(event.data)
            return [SendData(out)] if out else []
        return self._keep(event)

    def _keep(self, event: ProviderData) -> list[Effect]:
        self._body.add(event.data)
        return []

    def _on_end(self, event: ProviderEnd) -> list[Effect]:
        self._now = event.now
        over = self._body.over
        body = self._body.take()
        if self.loop.stream:
            sent = b""
            if self._json_answer:
                sent = self.loop.receive_chunk(stream_of_completion(body))
            out, decision = self.loop.end_stream()
            sent += out
            return [*([SendData(sent)] if sent else []), *self._apply(decision)]
        if over:
            raise UpstreamUnreachable(
                f"upstream {self.upstream.id} response over {MAX_BUFFERED} bytes")
        return self._apply(self.loop.receive_completion(body))

    def _on_error_end(self, event: ProviderEnd) -> list[Effect]:
        self._now = event.now
        body = self._body.take()
        status = self._error_status
        retried = self._next_attempt(event.now, status)
        if retried is not None:
            return retried
        self.state = Phase.DONE
        self.usage = self.loop.usage
        out = upstream_error_body(status, body, self.upstream.id, self.secrets)
        if self.exchange.head_sent:
            return self._fail_late(out, f"upstream status {status}")
        self.status = status
        self.error = f"upstream status {status}"
        return json_response(status, out, self.exchange.request_id, self._error_headers)

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        self._now = event.now
        if self.state is Phase.PROVIDER:  # before this round's answer: another deployment
            retried = self._next_attempt(event.now)
            if retried is not None:
                return retried
        self.state = Phase.DONE
        error = provider_failure(self.upstream.id, event, self.secrets)
        if not self.exchange.head_sent:
            raise error
        return self._fail_late(error_body(error.message, "upstream_error", error.code),
                               error.message)

    def _fail_late(self, payload: bytes, reason: str) -> list[Effect]:
        """End a stream whose head is out: an error event the SDKs raise, then [DONE]."""
        self.error = reason
        self.usage = self.loop.usage
        # Line breaks outside JSON strings are whitespace; inside they are always escaped.
        line = payload.replace(b"\r", b"").replace(b"\n", b"")
        return [SendData(encode_data(line) + DONE), SendEnd()]

    # -- tools ---------------------------------------------------------------------------

    def _on_tool_result(self, event: ToolResult) -> list[Effect]:
        entry = self._tools.pop(event.call, None)
        if entry is None:
            raise LocalProtocolError(f"tool call {event.call} is not outstanding")
        invocation, started = entry
        self._now = event.now
        self.calls.append(ToolCallFact(invocation.tool, event.ok, event.now - started))
        self.tool_calls = tuple(self.calls)
        decision = self.loop.receive_tool_result(invocation.id, event.ok, event.content)
        return [] if decision is None else self._apply(decision)

    # -- decisions: the loop's decision names the next phase -----------------------------

    def _apply(self, decision: Decision) -> list[Effect]:
        handler, phase = _DECISIONS[type(decision)]
        effects = handler(self, decision)
        self.state = phase
        return effects

    def _call_model(self, decision: CallModel) -> list[Effect]:
        self._round_body = decision.body
        self._call += 1
        router = self.exchange.gateway.routing.router
        if self._retarget is None or router is None:
            return [CallProvider(self._call, self.upstream.id, "POST", self.url,
                                 self.headers, decision.body)]
        # Each round is routed afresh, as a request of its own to the alias.
        self._past_facts, self._past_cooled = self.route_facts()
        attempts = router.attempts(self._alias)
        choice = attempts.first(self._now)
        self.routed = Routed(self._alias, attempts, choice, self._send_to, self._now)
        return [self._send_to(choice, self._call)]

    # -- routing aliases -----------------------------------------------------------------

    def route_by(self, alias: str, retarget: Callable[[Choice], Target]) -> None:
        """Route every round's provider call through the routing ``alias``; ``retarget``
        says where a deployment is (provider, URL, headers, model). Call before start."""
        self._alias = alias
        self._retarget = retarget

    def route_facts(self) -> tuple[list[AttemptFact], list[tuple[str, str, str]]]:
        """The outcomes of every round's attempts, in order."""
        facts, cooled = super().route_facts()
        return [*self._past_facts, *facts], [*self._past_cooled, *cooled]

    def _send_to(self, choice: Choice, call: int) -> CallProvider:
        """The current round's request, for ``choice``'s deployment (its model in the body)."""
        assert self._retarget is not None
        provider, url, headers, model = self._retarget(choice)
        self.provider = self.upstream = provider
        self.url, self.headers, self.model = url, headers, model
        request, model_at = parse_request(self._round_body)
        body = with_model(self._round_body, request, model, model_at)
        return CallProvider(call, provider.id, "POST", url, headers, body,
                            head_timeout=choice.timeout)

    def _next_attempt(self, now: float, status: int | None = None) -> list[Effect] | None:
        """After a failed attempt of this round: the call to the next deployment, or
        ``None`` when there is none (or the request is not routed)."""
        routed = self.routed
        if routed is None or self._retarget is None:
            return None
        if status is not None and status not in RETRYABLE_STATUSES:
            routed.attempts.refused(routed.choice)
            return None
        following = routed.attempts.failed(routed.choice, now, status=status,
                                           retry_after=self._error_retry_after)
        if following is None:
            return None
        routed.choice, routed.started = following, now
        self._call += 1
        self.state = Phase.PROVIDER
        return [self._send_to(following, self._call)]

    def _call_tools(self, decision: CallTools) -> list[Effect]:
        effects: list[Effect] = []
        for invocation in decision.calls:
            self._next_tool += 1
            self._tools[self._next_tool] = (invocation, self._now)
            effects.append(CallTool(self._next_tool, invocation.server, invocation.tool,
                                    invocation.arguments))
        return effects

    def _finish(self, decision: Finish) -> list[Effect]:
        self.usage = self.loop.usage
        if decision.limit_reached:
            log.warning("mcp round limit reached",
                        extra=_fields(self.exchange.request_id, rounds=decision.rounds))
        if self.loop.stream:
            return [SendData(decision.body), SendEnd()]
        self.status = 200
        return json_response(200, decision.body, self.exchange.request_id)


_PROVIDER_EVENTS: Final = frozenset({ProviderHead, ProviderData, ProviderEnd, ProviderFailed})

_A = AgentRun
_DECISIONS: Final[dict[type, tuple[Callable[[Any, Any], list[Effect]], Phase]]] = {
    CallModel: (_A._call_model, Phase.PROVIDER),
    CallTools: (_A._call_tools, Phase.TOOLS),
    Finish: (_A._finish, Phase.DONE),
}
#: ``(phase, event kind) -> (handler, next phase)``; ``None``: the loop's decision
#: names the next phase (see ``_DECISIONS``), or a routed round's failure goes on to the
#: alias's next deployment (PROVIDER) or ends the run (DONE).
_TABLE: Final[Table] = by_state({
    (Phase.PROVIDER, ProviderHead): (_A._on_head, Phase.READING),
    (Phase.PROVIDER, ErrorHead): (_A._on_error_head, Phase.READING_ERROR),
    (Phase.PROVIDER, ProviderFailed): (_A._on_failed, None),
    (Phase.READING, ProviderData): (_A._on_data, Phase.READING),
    (Phase.READING, ProviderEnd): (_A._on_end, None),
    (Phase.READING, ProviderFailed): (_A._on_failed, None),
    (Phase.READING_ERROR, ProviderData): (_A._keep, Phase.READING_ERROR),
    (Phase.READING_ERROR, ProviderEnd): (_A._on_error_end, None),
    (Phase.READING_ERROR, ProviderFailed): (_A._on_failed, None),
    (Phase.TOOLS, ToolResult): (_A._on_tool_result, None),
})


def _fields(request_id: str, **more: Any) -> dict[str, Any]:
    return {"request_id": request_id, **more}
