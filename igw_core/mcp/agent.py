"""The agent loop spoken in the exchange's effects and events.

An :class:`~igw_core.exchange.Exchange` hands a chat request to :class:`AgentRun` when
MCP tools apply. It turns :class:`~igw_core.mcp.loop.AgentLoop` decisions into
``CallProvider`` / ``CallTool`` / ``Send*`` effects and feeds the loop what comes back.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from igw_core import headers as hdrs
from igw_core.effects import (
    CallProvider,
    CallTool,
    Effect,
    ReadProviderBody,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.errors import LocalProtocolError, UpstreamTimeout, UpstreamUnreachable
from igw_core.events import (
    Event,
    FailureReason,
    Headers,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    ToolResult,
)
from igw_core.mcp.loop import (
    AgentLoop,
    CallModel,
    CallTools,
    Decision,
    Finish,
    ToolInvocation,
    stream_of_completion,
)
from igw_core.providers import Provider
from igw_core.redact import scrub
from igw_core.report import ToolCallFact, Usage
from igw_core.responses import error_body, json_response, upstream_error_body
from igw_core.sse import DONE, encode_data

__all__ = ["AgentRun", "Phase"]

log = logging.getLogger("igw.mcp")

#: Largest provider body (a completion or an error) the loop buffers per round.
MAX_BODY = 8 * 1024 * 1024


class Phase(enum.Enum):
    """Where an agent run is."""

    IDLE = "idle"  # start() not called yet
    PROVIDER = "provider"  # CallProvider emitted, waiting for its head
    READING = "reading"  # ReadProviderBody emitted for a 2xx answer
    READING_ERROR = "reading_error"  # ReadProviderBody emitted for an error answer
    TOOLS = "tools"  # CallTool effects outstanding
    DONE = "done"  # the client has its answer


#: The events each phase accepts; anything else raises LocalProtocolError.
ACCEPTS: dict[Phase, frozenset[type[Event]]] = {
    Phase.IDLE: frozenset(),
    Phase.PROVIDER: frozenset({ProviderHead, ProviderFailed}),
    Phase.READING: frozenset({ProviderData, ProviderEnd, ProviderFailed}),
    Phase.READING_ERROR: frozenset({ProviderData, ProviderEnd, ProviderFailed}),
    Phase.TOOLS: frozenset({ToolResult}),
    Phase.DONE: frozenset(),
}

_STREAM_HEAD = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"))


class AgentRun:
    """One chat request through the agent loop, as exchange effects.

    Args:
        loop: the request's loop (not started).
        provider: where the model is.
        url: the provider's chat-completions URL.
        headers: the provider request headers (credentials included).
        request_id: sent back as ``X-Request-Id``.
        secrets: scrubbed from any error text shown to the client.

    After :meth:`start`, feed every provider and tool event with :meth:`receive` and
    perform the effects returned until :attr:`finished`; then :attr:`status`,
    :attr:`usage`, :attr:`error` and :attr:`tool_calls` describe what happened.
    """

    def __init__(
        self,
        loop: AgentLoop,
        provider: Provider,
        url: str,
        headers: Headers,
        request_id: str,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.loop = loop
        self.phase = Phase.IDLE
        self.provider = provider
        self.url = url
        self.headers = headers
        self.request_id = request_id
        self.secrets = secrets
        #: The status the client got (or will get).
        self.status = 0
        #: Whether the client's response head went out.
        self.head_sent = False
        #: A short reason when the request did not end well, else ``""``.
        self.error = ""
        #: Every MCP tool call executed, in the order the results came.
        self.tool_calls: list[ToolCallFact] = []
        self._round = 0
        self._next_tool = 0
        self._tools: dict[int, tuple[ToolInvocation, float]] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._now = 0.0
        self._json_answer = False  # a streaming request answered with one JSON body
        self._error_status = 0
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def finished(self) -> bool:
        """Whether the client has its whole answer."""
        return self.phase is Phase.DONE

    @property
    def streamed(self) -> bool:
        """Whether the client gets an event stream."""
        return self.loop.stream

    @property
    def usage(self) -> Usage | None:
        """Token usage summed over every provider call."""
        return self.loop.usage

    def start(self, now: float) -> list[Effect]:
        """Return the effects of the first provider call.

        Raises:
            LocalProtocolError: already started.
        """
        if self.phase is not Phase.IDLE:
            raise LocalProtocolError(f"agent run already {self.phase.value}")
        self._now = now
        return self._apply(self.loop.start())

    def receive(self, event: Event) -> list[Effect]:
        """Feed one provider or tool event; return the effects to perform.

        Raises:
            LocalProtocolError: the event is not legal in the current phase, or names a
                call that is not outstanding.
            UpstreamTimeout, UpstreamUnreachable: the provider failed before the
                client's response head went out (the exchange answers 504/502).
        """
        if type(event) not in ACCEPTS[self.phase]:
            raise LocalProtocolError(
                f"{type(event).__name__} is not legal in agent phase {self.phase.value}")
        if isinstance(event, ToolResult):
            return self._on_tool_result(event)
        if isinstance(event, ProviderHead | ProviderData | ProviderEnd | ProviderFailed) and (
            event.call != self._round
        ):
            raise LocalProtocolError(f"provider call {event.call} is not outstanding")
        if isinstance(event, ProviderHead):
            return self._on_head(event)
        if isinstance(event, ProviderData):
            return self._on_data(event)
        if isinstance(event, ProviderEnd):
            return self._on_end(event)
        assert isinstance(event, ProviderFailed)
        return self._on_failed(event)

    # -- provider ------------------------------------------------------------------------

    def _on_head(self, event: ProviderHead) -> list[Effect]:
        self._now = event.now
        self._body = []
        self._size = 0
        effects: list[Effect] = []
        if not 200 <= event.status < 300:
            self._error_status = event.status
            self._error_headers = hdrs.backoff_headers(event.headers)
            self.phase = Phase.READING_ERROR
            return [ReadProviderBody(event.call)]
        if self.loop.stream and not self.head_sent:
            self.head_sent = True
            self.status = 200
            effects.append(SendHead(200, [*_STREAM_HEAD,
                                          (b"x-request-id", self.request_id.encode())]))
        content_type = hdrs.get(event.headers, b"content-type") or b""
        self._json_answer = self.loop.stream and not content_type.startswith(b"text/event-stream")
        self.phase = Phase.READING
        effects.append(ReadProviderBody(event.call))
        return effects

    def _on_data(self, event: ProviderData) -> list[Effect]:
        if self.phase is Phase.READING and self.loop.stream and not self._json_answer:
            out = self.loop.receive_chunk(event.data)
            return [SendData(out)] if out else []
        self._size += len(event.data)
        if self._size <= MAX_BODY:
            self._body.append(event.data)
        return []

    def _on_end(self, event: ProviderEnd) -> list[Effect]:
        self._now = event.now
        body = b"".join(self._body)
        self._body = []
        if self.phase is Phase.READING_ERROR:
            return self._upstream_error(self._error_status, body)
        if self.loop.stream:
            sent = b""
            if self._json_answer:
                sent = self.loop.receive_chunk(stream_of_completion(body))
            out, decision = self.loop.end_stream()
            sent += out
            return [*([SendData(sent)] if sent else []), *self._apply(decision)]
        if self._size > MAX_BODY:
            self.phase = Phase.DONE
            raise UpstreamUnreachable(
                f"upstream {self.provider.id} response over {MAX_BODY} bytes")
        return self._apply(self.loop.receive_completion(body))

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        self._now = event.now
        detail = scrub(event.detail, self.secrets)
        timeout = event.reason is FailureReason.TIMEOUT
        message = (f"upstream {self.provider.id} timed out: {detail}" if timeout
                   else f"upstream {self.provider.id} unreachable: {detail}")
        if not self.head_sent:
            self.phase = Phase.DONE
            raise UpstreamTimeout(message) if timeout else UpstreamUnreachable(message)
        code = "upstream_timeout" if timeout else "upstream_unreachable"
        return self._fail_late(error_body(message, "upstream_error", code), message)

    def _upstream_error(self, status: int, body: bytes) -> list[Effect]:
        out = upstream_error_body(status, body, self.provider.id, self.secrets)
        if self.head_sent:
            return self._fail_late(out, f"upstream status {status}")
        self.phase = Phase.DONE
        self.status = status
        self.error = f"upstream status {status}"
        return json_response(status, out, self.request_id, self._error_headers)

    def _fail_late(self, payload: bytes, reason: str) -> list[Effect]:
        """End a stream whose head is out: an error event the SDKs raise, then [DONE]."""
        self.phase = Phase.DONE
        self.error = reason
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
        self.tool_calls.append(ToolCallFact(invocation.tool, event.ok, event.now - started))
        decision = self.loop.receive_tool_result(invocation.id, event.ok, event.content)
        return [] if decision is None else self._apply(decision)

    # -- decisions -----------------------------------------------------------------------

    def _apply(self, decision: Decision) -> list[Effect]:
        if isinstance(decision, CallModel):
            self._round = decision.round
            self.phase = Phase.PROVIDER
            return [CallProvider(decision.round, self.provider.id, "POST", self.url,
                                 self.headers, decision.body)]
        if isinstance(decision, CallTools):
            self.phase = Phase.TOOLS
            effects: list[Effect] = []
            for invocation in decision.calls:
                self._next_tool += 1
                self._tools[self._next_tool] = (invocation, self._now)
                effects.append(CallTool(self._next_tool, invocation.server, invocation.tool,
                                        invocation.arguments))
            return effects
        return self._finish(decision)

    def _finish(self, decision: Finish) -> list[Effect]:
        self.phase = Phase.DONE
        if decision.limit_reached:
            log.warning("mcp round limit reached",
                        extra=_fields(self.request_id, rounds=decision.rounds))
        if self.loop.stream:
            return [SendData(decision.body), SendEnd()]
        self.status = 200
        return json_response(200, decision.body, self.request_id)


def _fields(request_id: str, **more: Any) -> dict[str, Any]:
    return {"request_id": request_id, **more}
