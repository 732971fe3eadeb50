"""``/v1/messages`` for a provider without the Messages API: translated both ways.

The client's Anthropic request went out as a chat completion
(:func:`igw_core.messages.messages_to_chat`); this flow turns the provider's answer
back: a completion into a Message, an event stream into Anthropic's event stream,
an error into Anthropic's error shape.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Final

from igw_core import headers as hdrs
from igw_core.effects import Effect, ReadProviderBody, SendData, SendEnd, SendHead
from igw_core.errors import LocalProtocolError, UpstreamUnreachable
from igw_core.events import (
    ClientGone,
    Event,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
)
from igw_core.flows.base import (
    MAX_BUFFERED,
    BodyBuffer,
    ErrorHead,
    Flow,
    Table,
    TableState,
    by_state,
    provider_failure,
)
from igw_core.mcp.loop import stream_of_completion
from igw_core.messages import MessageStream, chat_to_message, translate_error
from igw_core.redact import scrub_bytes
from igw_core.responses import json_bytes, json_response
from igw_core.usage import usage_from_object

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider

log: Final = logging.getLogger("igw.exchange")

_STREAM_HEAD: Final = ((b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


class Step(TableState):
    """Where a translated Messages request is."""

    AWAITING_HEAD = "awaiting_head"  # the chat request is out
    STREAMING = "streaming"  # the provider's events are translated as they arrive
    READING = "reading"  # a whole completion is read, to translate at its end
    READING_ERROR = "reading_error"  # a provider error is read whole
    DONE = "done"


class StreamHead:
    """Table key: a 2xx event-stream head for a streaming request."""


class TranslatedMessages(Flow):
    """Answers an Anthropic Messages request from a chat-completions provider.

    Args:
        exchange: the exchange this serves.
        provider: the chat-completions provider called (call 0).
        model: the model as forwarded.
        client_model: the model as the client named it (echoed in the Message).
        stream: whether the client asked for an event stream.
    """

    def __init__(self, exchange: Exchange, provider: Provider, model: str, *,
                 client_model: str, stream: bool) -> None:
        super().__init__(exchange, _TABLE, Step.AWAITING_HEAD, Step.DONE)
        self.provider = self.upstream = provider
        self.model = model
        self.streamed = stream
        self._client_model = client_model
        self._message_id = "msg_" + (exchange.head.fresh_id or exchange.request_id)
        self._stream = MessageStream(client_model, self._message_id)
        self._body = BodyBuffer()
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()

    def kind(self, event: Event) -> type:
        """Split provider heads: errors, streams to translate live, bodies to read whole.

        Raises:
            LocalProtocolError: an event for a provider call other than 0.
        """
        kind = type(event)
        if kind is ProviderHead:
            assert isinstance(event, ProviderHead)
            if event.call != 0:
                raise LocalProtocolError(f"no provider call {event.call} is outstanding")
            if not 200 <= event.status < 300:
                return ErrorHead
            content_type = hdrs.get(event.headers, b"content-type") or b""
            if self.streamed and content_type.startswith(b"text/event-stream"):
                return StreamHead
        return kind

    def on_client_gone(self, event: ClientGone) -> bool:
        """A client that leaves after ``message_stop`` was served."""
        if self._stream.finished:
            self.usage = self._stream.usage
            self.first_byte = event.first_data_at
            return True
        return False

    # -- heads ---------------------------------------------------------------------------

    def _on_stream_head(self, event: ProviderHead) -> list[Effect]:
        self.status = 200
        request_id = (b"x-request-id", self.exchange.request_id.encode())
        return [SendHead(200, [*_STREAM_HEAD, request_id]), ReadProviderBody(0)]

    def _on_body_head(self, event: ProviderHead) -> list[Effect]:
        return [ReadProviderBody(0)]

    def _on_error_head(self, event: ProviderHead) -> list[Effect]:
        self.status = event.status
        self._error_headers = hdrs.backoff_headers(event.headers)
        return [ReadProviderBody(0)]

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        raise provider_failure(self.upstream.id, event, self.exchange.gateway.secrets)

    # -- a live stream -------------------------------------------------------------------

    def _on_stream_data(self, event: ProviderData) -> list[Effect]:
        out = self._stream.feed(event.data)
        return [SendData(out)] if out else []

    def _on_stream_end(self, event: ProviderEnd) -> list[Effect]:
        out = self._stream.close()
        self.usage = self._stream.usage
        self.first_byte = event.first_data_at
        return [SendData(out), SendEnd()] if out else [SendEnd()]

    def _on_stream_failed(self, event: ProviderFailed) -> list[Effect]:
        error = provider_failure(self.upstream.id, event, self.exchange.gateway.secrets)
        log.warning("upstream broke mid-response",
                    extra={"request_id": self.exchange.request_id,
                           "provider": self.upstream.id, "reason": event.reason.value,
                           "detail": error.message})
        self.error = error.message
        self.usage = self._stream.usage
        # Anthropic's own mid-stream failure: an error event, which the SDKs raise.
        return [SendData(self._stream.fail(error.message)), SendEnd()]

    # -- whole bodies --------------------------------------------------------------------

    def _keep(self, event: ProviderData) -> list[Effect]:
        self._body.add(event.data)
        return []

    def _on_body_end(self, event: ProviderEnd) -> list[Effect]:
        if self._body.over:
            raise UpstreamUnreachable(
                f"upstream {self.upstream.id} answer over {MAX_BUFFERED} bytes")
        body = self._body.take()
        if self.streamed:  # a JSON completion for a streaming request: stream it
            out = self._stream.feed(stream_of_completion(body)) + self._stream.close()
            self.status = 200
            self.usage = self._stream.usage
            request_id = (b"x-request-id", self.exchange.request_id.encode())
            return [SendHead(200, [*_STREAM_HEAD, request_id]), SendData(out), SendEnd()]
        try:
            completion = json.loads(body)
            if not isinstance(completion, dict):
                raise ValueError("not a JSON object")
            message = chat_to_message(completion, self._client_model, self._message_id)
        except (ValueError, RecursionError) as exc:
            raise UpstreamUnreachable(
                f"upstream {self.upstream.id} sent an unreadable completion: {exc}") from None
        self.status = 200
        self.usage = usage_from_object(completion)
        return json_response(200, json_bytes(message), self.exchange.request_id)

    def _on_error_end(self, event: ProviderEnd) -> list[Effect]:
        body = scrub_bytes(self._body.take(), self.exchange.gateway.secrets)
        self.error = f"upstream status {self.status}"
        return json_response(self.status, translate_error(self.status, body),
                             self.exchange.request_id, self._error_headers)


_T = TranslatedMessages
_TABLE: Final[Table] = by_state({
    (Step.AWAITING_HEAD, StreamHead): (_T._on_stream_head, Step.STREAMING),
    (Step.AWAITING_HEAD, ProviderHead): (_T._on_body_head, Step.READING),
    (Step.AWAITING_HEAD, ErrorHead): (_T._on_error_head, Step.READING_ERROR),
    (Step.AWAITING_HEAD, ProviderFailed): (_T._on_failed, Step.DONE),
    (Step.STREAMING, ProviderData): (_T._on_stream_data, Step.STREAMING),
    (Step.STREAMING, ProviderEnd): (_T._on_stream_end, Step.DONE),
    (Step.STREAMING, ProviderFailed): (_T._on_stream_failed, Step.DONE),
    (Step.READING, ProviderData): (_T._keep, Step.READING),
    (Step.READING, ProviderEnd): (_T._on_body_end, Step.DONE),
    (Step.READING, ProviderFailed): (_T._on_failed, Step.DONE),
    (Step.READING_ERROR, ProviderData): (_T._keep, Step.READING_ERROR),
    (Step.READING_ERROR, ProviderEnd): (_T._on_error_end, Step.DONE),
    (Step.READING_ERROR, ProviderFailed): (_T._on_failed, Step.DONE),
})
