"""The relay: one provider call whose answer is copied to the client as it arrives.

Chat completions (without MCP), ``/proxy`` and the other endpoints that forward one
request use it. A 2xx answer (or any answer, through ``/proxy``) is relayed byte for
byte; a provider's error is read whole and answered in the gateway's error shape.
"""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from igw_core import headers as hdrs
from igw_core.effects import (
    Abort,
    CallProvider,
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
    Headers,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
)
from igw_core.flows.base import (
    BodyBuffer,
    ErrorHead,
    Flow,
    Routed,
    Table,
    TableState,
    by_state,
    provider_failure,
)
from igw_core.redact import scrub, truncate_body_text
from igw_core.responses import json_response
from igw_core.router import RETRYABLE_STATUSES
from igw_core.usage import ResponseTap

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider
    from igw_core.router import Choice

log: Final = logging.getLogger("igw.exchange")

_STREAM_HEAD_KEPT: Final = 4096
_STREAM_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
_DROP_FROM_UPSTREAM: Final = frozenset({b"set-cookie", b"x-request-id", b"content-encoding"})
# The gateway's own X-Request-Id replaces the provider's, so the client sees one.
_DROP_FROM_PROXIED: Final = frozenset({b"x-request-id"})


class Step(TableState):
    """Where a relay is."""

    AWAITING_HEAD = "awaiting_head"  # CallProvider emitted
    RELAYING = "relaying"  # SendHead + RelayBody emitted
    READING_ERROR = "reading_error"  # a provider error is being read whole
    DONE = "done"


@mypyc_attr(free_list_len=1)
class RelayFlow(Flow):
    """Relays the answer to the current :class:`CallProvider` to the client.

    For a routing alias (``routed``), a transient failure before the response head (a
    refused or reset connection, the alias's timeout, or a status in
    :data:`~igw_core.router.RETRYABLE_STATUSES`) sends the request to the next
    deployment instead; once a 2xx head arrives nothing is retried.

    Args:
        exchange: the exchange this serves.
        provider: the provider called.
        model: the model as forwarded, for the report (``""`` when there is none).
        proxied: ``/proxy``: headers end to end and every status relayed as it is.
        metered: read the answer's token usage (not for a stored answer fetched again,
            whose tokens were counted when it was made). Only with telemetry on: the
            metrics are the only reader of the report's usage, and finding it means
            parsing JSON from the body's tail.
        routed: the alias walk, when the model was a routing alias.
    """

    def __init__(self, exchange: Exchange, provider: Provider, model: str = "", *,
                 proxied: bool = False, metered: bool = True,
                 routed: Routed | None = None) -> None:
        super().__init__(exchange, _TABLE, Step.AWAITING_HEAD, Step.DONE)
        self.provider = provider
        self.upstream = provider
        self.model = model
        self.proxied = proxied
        self.metered = metered and exchange.gateway.settings.telemetry_enable
        self.routed = routed
        self.call = 0
        self._retry_after: float | None = None
        self._tap: ResponseTap | None = None
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()
        self._error_body = BodyBuffer()

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

    def start(self, call: CallProvider) -> list[Effect]:
        """Return the effects that send the first attempt."""
        self.call = call.call
        return [call]

    def _check_call(self, event: ProviderHead | ProviderFailed) -> None:
        if event.call != self.call:
            raise LocalProtocolError(f"no provider call {event.call} is outstanding")

    def _selected(self, event: ProviderHead) -> list[tuple[bytes, bytes]]:
        """Report the routed attempt's success; return the headers naming the deployment."""
        routed = self.routed
        assert routed is not None
        routed.attempts.succeeded(routed.choice, event.now, latency=event.now - routed.started)
        deployment = routed.choice.deployment
        return [(b"x-selected-provider", deployment.provider.encode()),
                (b"x-selected-model", deployment.model.encode())]

    def _on_head(self, event: ProviderHead) -> list[Effect]:
        self._check_call(event)
        self.status = event.status
        request_id = self.exchange.request_id.encode()
        if self.proxied:
            out, _, length = hdrs.relayed(event.headers, drop=_DROP_FROM_PROXIED)
            if length is not None:
                out.append((b"content-length", length))
            out.append((b"x-request-id", request_id))
            return [SendHead(event.status, out), RelayBody(self.call)]
        out, content_type, length = hdrs.relayed(event.headers, drop=_DROP_FROM_UPSTREAM)
        self.streamed = content_type is not None and content_type.startswith(
            b"text/event-stream")
        if self.streamed:
            out.extend(h for h in _STREAM_HEADERS if hdrs.get(out, h[0]) is None)
        elif length is not None:
            out.append((b"content-length", length))
        out.append((b"x-request-id", request_id))
        if self.routed is not None:
            out.extend(self._selected(event))
        # A stream's first event may carry its prompt count (Anthropic's message_start).
        keep = 64 * 1024 if self.exchange.gateway.development else (
            _STREAM_HEAD_KEPT if self.streamed else 0)
        expected = None if length is None else hdrs.decimal(length)
        self._tap = ResponseTap(keep_head=keep, expected=expected, keep_tail=self.metered)
        return [SendHead(event.status, out), RelayBody(self.call, self._tap)]

    def _on_error_head(self, event: ProviderHead) -> list[Effect]:
        self._check_call(event)
        self.status = event.status
        # Keep what SDKs need to back off (Retry-After, x-ratelimit-*).
        self._error_headers = hdrs.backoff_headers(event.headers)
        self._error_body = BodyBuffer()
        if self.routed is not None:
            self._retry_after = retry_after(event.headers, self.exchange.head.wall)
        return [ReadProviderBody(self.call)]

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        """No (whole) answer: try the alias's next deployment, else 502/504.

        Raises:
            UpstreamTimeout, UpstreamUnreachable: nothing is left to try.
        """
        self._check_call(event)
        error = provider_failure(self.upstream.id, event, self.exchange.gateway.secrets)
        routed = self.routed
        if routed is not None:
            following = routed.attempts.failed(routed.choice, event.now)
            if following is not None:
                return self._attempt(following, event.now)
            error.headers = (*error.headers, ("x-attempts", str(routed.choice.number)))
        raise error

    def _attempt(self, choice: Choice, now: float) -> list[Effect]:
        """Send the request to ``choice``, the alias's next deployment, as a new call."""
        routed = self.routed
        assert routed is not None
        routed.choice = choice
        routed.started = now
        self.call += 1
        self.provider = self.upstream = self.exchange.gateway.providers[
            choice.deployment.provider]
        self.model = choice.deployment.model
        self.state = Step.AWAITING_HEAD
        return [routed.send(choice, self.call)]

    # -- relaying ----------------------------------------------------------------------

    def _on_relay_end(self, event: ProviderEnd) -> list[Effect]:
        tap = self._tap
        if tap is not None:
            if self.metered:
                self.usage = tap.usage()
            if self.exchange.gateway.development:
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
        self._error_body.add(event.data)
        return []

    def _on_error_end(self, event: ProviderEnd) -> list[Effect]:
        body = self._error_body.take()
        if self.exchange.gateway.development:
            self.log_upstream(self.status, body)
        routed = self.routed
        if routed is not None:
            if self.status in RETRYABLE_STATUSES:
                following = routed.attempts.failed(routed.choice, event.now, status=self.status,
                                                   retry_after=self._retry_after)
                if following is not None:
                    return self._attempt(following, event.now)
                self._error_headers = (*self._error_headers,
                                       (b"x-attempts", str(routed.choice.number).encode()))
            else:  # the request is wrong everywhere: no other deployment would take it
                routed.attempts.refused(routed.choice)
        self.error = f"upstream status {self.status}"
        self.state = Step.DONE
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


def retry_after(headers: Headers, wall: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks to wait (delta-seconds or an
    HTTP date, measured from ``wall``, the request's epoch time), or ``None``."""
    value = hdrs.get(headers, b"retry-after")
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - wall)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


_R = RelayFlow
_TABLE: Final[Table] = by_state({
    (Step.AWAITING_HEAD, ProviderHead): (_R._on_head, Step.RELAYING),
    (Step.AWAITING_HEAD, ErrorHead): (_R._on_error_head, Step.READING_ERROR),
    # None: a routed request may go on to the alias's next deployment (AWAITING_HEAD).
    (Step.AWAITING_HEAD, ProviderFailed): (_R._on_failed, None),
    (Step.RELAYING, ProviderEnd): (_R._on_relay_end, Step.DONE),
    (Step.RELAYING, ProviderFailed): (_R._on_relay_failed, Step.DONE),
    (Step.READING_ERROR, ProviderData): (_R._on_error_data, Step.READING_ERROR),
    (Step.READING_ERROR, ProviderEnd): (_R._on_error_end, None),
    (Step.READING_ERROR, ProviderFailed): (_R._on_failed, None),
})
