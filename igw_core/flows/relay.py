"""The relay: one provider call whose answer is copied to the client as it arrives.

Chat completions (without MCP), ``/proxy`` and the other endpoints that forward one
request use it. A 2xx answer (or any answer, through ``/proxy``) is relayed byte for
byte; a provider's error is read whole and answered in the gateway's error shape.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from igw_core import headers as hdrs
from igw_core.effects import (
    Abort,
    Effect,
    ReadProviderBody,
    RelayBody,
    SendEnd,
    SendHead,
)
from igw_core.errors import LocalProtocolError
from igw_core.events import (
    ClientGone,
    Event,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
)
from igw_core.flows.base import Flow, provider_failure
from igw_core.redact import scrub, truncate_body_text
from igw_core.responses import json_response
from igw_core.usage import ResponseTap

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider

log = logging.getLogger("igw.exchange")

#: Largest provider error body the gateway buffers.
MAX_BUFFERED_RESPONSE = 8 * 1024 * 1024

_STREAM_HEAD_KEPT = 4096
_STREAM_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
_DROP_FROM_UPSTREAM = frozenset({b"set-cookie", b"x-request-id", b"content-encoding"})
# The gateway's own X-Request-Id replaces the provider's, so the client sees one.
_DROP_FROM_PROXIED = frozenset({b"x-request-id"})


class Step(enum.Enum):
    """Where a relay is."""

    AWAITING_HEAD = "awaiting_head"  # CallProvider emitted
    RELAYING = "relaying"  # SendHead + RelayBody emitted
    READING_ERROR = "reading_error"  # a provider error is being read whole
    DONE = "done"


class ErrorHead:
    """Table key: a :class:`ProviderHead` with a non-2xx status, on a relay that wraps errors."""


class RelayFlow(Flow):
    """Relays the answer to one :class:`CallProvider` (call 0) to the client.

    Args:
        exchange: the exchange this serves.
        provider: the provider called.
        model: the model as forwarded, for the report (``""`` when there is none).
        proxied: ``/proxy``: headers end to end and every status relayed as it is.
        metered: read the answer's token usage (not for a stored answer fetched again,
            whose tokens were counted when it was made).
    """

    DONE = Step.DONE

    def __init__(self, exchange: Exchange, provider: Provider, model: str = "", *,
                 proxied: bool = False, metered: bool = True) -> None:
        super().__init__(exchange, Step.AWAITING_HEAD)
        self.provider = provider
        self.upstream = provider
        self.model = model
        self.proxied = proxied
        self.metered = metered
        self._tap: ResponseTap | None = None
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()
        self._error_body: list[bytes] = []
        self._error_size = 0

    def kind(self, event: Event) -> type:
        """Split provider heads into relayed ones and errors to read (not for ``/proxy``)."""
        if type(event) is ProviderHead and not self.proxied and not 200 <= event.status < 300:
            return ErrorHead
        return type(event)

    def on_client_gone(self, event: ClientGone) -> bool:
        """It left after the whole answer reached it: served, not abandoned."""
        tap = self._tap
        if self.state is Step.RELAYING and tap is not None and tap.complete:
            if self.metered:
                self.usage = tap.usage()
            self.first_byte = event.first_data_at
            return True
        return False

    # -- the head --------------------------------------------------------------------

    def _on_head(self, event: ProviderHead) -> list[Effect]:
        if event.call != 0:
            raise LocalProtocolError(f"no provider call {event.call} is outstanding")
        self.status = event.status
        request_id = self.exchange.request_id.encode()
        if self.proxied:
            out = hdrs.end_to_end(event.headers, drop=_DROP_FROM_PROXIED)
            length = hdrs.get(event.headers, b"content-length")
            if length is not None:
                out.append((b"content-length", length))
            out.append((b"x-request-id", request_id))
            return [SendHead(event.status, out), RelayBody(0)]
        out = hdrs.end_to_end(event.headers, drop=_DROP_FROM_UPSTREAM)
        content_type = hdrs.get(event.headers, b"content-type") or b""
        length = hdrs.get(event.headers, b"content-length")
        self.streamed = content_type.startswith(b"text/event-stream")
        if self.streamed:
            out.extend(h for h in _STREAM_HEADERS if hdrs.get(out, h[0]) is None)
        elif length is not None:
            out.append((b"content-length", length))
        out.append((b"x-request-id", request_id))
        # A stream's first event may carry its prompt count (Anthropic's message_start).
        keep = 64 * 1024 if self.exchange.gateway.settings.is_development else (
            _STREAM_HEAD_KEPT if self.streamed else 0)
        expected = int(length) if length is not None and length.isdigit() else None
        self._tap = ResponseTap(keep_head=keep, expected=expected)
        return [SendHead(event.status, out), RelayBody(0, self._tap)]

    def _on_error_head(self, event: ProviderHead) -> list[Effect]:
        if event.call != 0:
            raise LocalProtocolError(f"no provider call {event.call} is outstanding")
        self.status = event.status
        # Keep what SDKs need to back off (Retry-After, x-ratelimit-*).
        self._error_headers = hdrs.backoff_headers(event.headers)
        return [ReadProviderBody(0)]

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        raise provider_failure(self.upstream.id, event, self.exchange.gateway.secrets)

    # -- relaying ----------------------------------------------------------------------

    def _on_relay_end(self, event: ProviderEnd) -> list[Effect]:
        tap = self._tap
        if tap is not None:
            if self.metered:
                self.usage = tap.usage()
            if self.exchange.gateway.settings.is_development:
                self.log_upstream(self.status, tap.head)
        self.first_byte = event.first_data_at
        return [SendEnd()]

    def _on_relay_failed(self, event: ProviderFailed) -> list[Effect]:
        detail = scrub(event.detail, self.exchange.gateway.secrets)
        log.warning(
            "upstream broke mid-response",
            extra={"request_id": self.exchange.request_id,
                   "provider": self.upstream.id,
                   "reason": event.reason.value, "detail": detail},
        )
        self.error = f"upstream {event.reason.value}: {detail}"
        return [Abort()]

    # -- a provider's error ------------------------------------------------------------

    def _on_error_data(self, event: ProviderData) -> list[Effect]:
        self._error_size += len(event.data)
        if self._error_size <= MAX_BUFFERED_RESPONSE:
            self._error_body.append(event.data)
        return []

    def _on_error_end(self, event: ProviderEnd) -> list[Effect]:
        body = b"".join(self._error_body)
        if self.exchange.gateway.settings.is_development:
            self.log_upstream(self.status, body)
        self.error = f"upstream status {self.status}"
        return self.error_effects(body)

    def error_effects(self, body: bytes) -> list[Effect]:
        """Return the response that tells the client about the provider's error ``body``."""
        out = self.exchange.errors.upstream(self.status, body, self.upstream.id,
                                            self.exchange.gateway.secrets)
        return json_response(self.status, out, self.exchange.request_id, self._error_headers)

    def log_upstream(self, status: int, body: bytes) -> None:
        """Log the provider's answer, truncated and scrubbed (development only)."""
        gateway = self.exchange.gateway
        log.debug(
            "upstream response",
            extra={"request_id": self.exchange.request_id,
                   "provider": self.upstream.id,
                   "status": status,
                   "body": scrub(truncate_body_text(
                       body, words=gateway.settings.debug_content_truncate_words),
                       gateway.secrets)},
        )


_R = RelayFlow
RelayFlow.TABLE = {
    (Step.AWAITING_HEAD, ProviderHead): (_R._on_head, Step.RELAYING),
    (Step.AWAITING_HEAD, ErrorHead): (_R._on_error_head, Step.READING_ERROR),
    (Step.AWAITING_HEAD, ProviderFailed): (_R._on_failed, Step.DONE),
    (Step.RELAYING, ProviderEnd): (_R._on_relay_end, Step.DONE),
    (Step.RELAYING, ProviderFailed): (_R._on_relay_failed, Step.DONE),
    (Step.READING_ERROR, ProviderData): (_R._on_error_data, Step.READING_ERROR),
    (Step.READING_ERROR, ProviderEnd): (_R._on_error_end, Step.DONE),
    (Step.READING_ERROR, ProviderFailed): (_R._on_failed, Step.DONE),
}
