"""One request's state machine, from head to final byte.

An :class:`Exchange` is fed :mod:`~igw_core.events` with :meth:`Exchange.receive`
and answers with :mod:`~igw_core.effects` for the frontend to perform. It never
touches a socket or a clock. It owns what every request has: the head, auth, the
route (:mod:`igw_core.endpoints`), whether the response head went out, and the
report; the body of the work is one :class:`~igw_core.flows.base.Flow`. What it may
do next is the table :data:`TRANSITIONS`; anything else raises
:class:`LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final
from urllib.parse import unquote_plus

from mypy_extensions import mypyc_attr

from igw_core import headers as hdrs
from igw_core.auth import (
    AuthFailure,
    AuthReason,
    KeySet,
    log_failure,
    not_ready_error,
    unauthorized_error,
    verify_bearer,
)
from igw_core.effects import Abort, Effect, ReadRequestBody, RefreshKeys, Report, SendData, SendHead
from igw_core.endpoints import ANTHROPIC_ERRORS, Endpoint, find_endpoint
from igw_core.errors import (
    BadRequest,
    GatewayError,
    LocalProtocolError,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
)
from igw_core.events import (
    BodyFailure,
    ClientGone,
    Event,
    KeysRefreshed,
    RequestBodyFailed,
    RequestData,
    RequestEnd,
    RequestHead,
    Timed,
)
from igw_core.flows.base import Flow, TableState, by_state
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import EMPTY, Catalogue
from igw_core.report import ExchangeRecord, ToolCallFact
from igw_core.responses import (
    OPENAI_ERRORS,
    ErrorShape,
    error_response,
    json_bytes,
    json_response,
)

__all__ = ["TRANSITIONS", "Exchange", "State", "request_id_of"]


class State(TableState):
    """Where an exchange is."""

    IDLE = "idle"  # waiting for the request head
    AWAITING_KEYS = "awaiting_keys"  # RefreshKeys emitted: the token's key is unknown
    READING_BODY = "reading_body"  # ReadRequestBody emitted
    FLOWING = "flowing"  # a flow owns the work; every event goes to it
    DONE = "done"  # Report emitted; nothing more happens


_MAX_REQUEST_ID: Final = 128
#: On a refusal after which the connection cannot be trusted to frame another request.
_CLOSE: Final = (("connection", "close"),)


def request_id_of(head: RequestHead) -> str:
    """Return the request's id: the client's ``X-Request-Id`` if sane, else ``fresh_id``."""
    return _request_id(hdrs.get(head.headers, b"x-request-id"), head.fresh_id)


def _request_id(given: bytes | None, fresh: str) -> str:
    if given and len(given) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in given):
        return given.decode("ascii")
    return fresh


@mypyc_attr(free_list_len=1)
class Exchange:
    """The state machine of one HTTP request through the gateway.

    Feed events with :meth:`receive`; perform the returned effects in order.
    After the :class:`~igw_core.effects.Report` effect the exchange is
    :attr:`finished`.

    Attributes:
        gateway: the configuration and providers.
        keys: the identity provider's keys as the IO layer holds them now (auth only).
        tools: the MCP tools available to this request (a snapshot taken when it arrived).
        request_id: the id sent back in ``X-Request-Id``.
        head: the request head.
        draining: whether the process is shutting down (``/ready`` answers 503).
        head_sent: whether a response head has been emitted (an error after it can
            only abort the connection).
        flow: the flow doing the request's work, from routing until the report.
        finished: whether the exchange has reported and needs nothing more.
    """

    def __init__(
        self, gateway: Gateway, *, tools: Catalogue = EMPTY, keys: KeySet | None = None,
        draining: bool = False,
    ) -> None:
        self.gateway = gateway
        self.keys = keys
        self.draining = draining
        self.tools = tools
        self.state = State.IDLE
        self.finished = False  # an attribute, not a property: the driver asks per effect
        self.request_id = ""
        self.head = _NO_HEAD
        self.head_sent = False
        self.flow: Flow | None = None
        self._endpoint: Endpoint | None = None
        self._found = _NOT_ROUTED
        self._errors = OPENAI_ERRORS
        self._body: list[bytes] = []
        self._body_size = 0
        self._length: bytes | None = None  # the request's Content-Length
        self._now = 0.0

    @property
    def started(self) -> float:
        """Monotonic time the request head arrived."""
        return self.head.now

    @property
    def errors(self) -> ErrorShape:
        """How this request's errors are shaped (the endpoint's API decides, even for a
        refusal before routing, such as a 401)."""
        return self._errors

    def query_param(self, name: str) -> str | None:
        """Return the first value of query parameter ``name`` (decoded), or ``None``."""
        query = self.head.query
        if not query:
            return None
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return unquote_plus(value)
        return None

    def receive(self, event: Event) -> list[Effect]:
        """Feed one event and return the effects to perform, in order.

        Raises:
            LocalProtocolError: ``event`` is not legal in the current state.
        """
        kind = type(event)
        if isinstance(event, Timed):
            self._now = event.now
        state = self.state
        if kind is ClientGone:
            return [] if state is State.DONE else self._on_client_gone(event)  # type: ignore[arg-type]
        try:
            if state is State.FLOWING:
                flow = self.flow
                assert flow is not None
                effects = flow.receive(event)
                if flow.finished:
                    effects.append(self._report_flow())
            else:
                entries = _BY_STATE.get(state)
                entry = None if entries is None else entries.get(kind)
                if entry is None:
                    raise LocalProtocolError(
                        f"{type(event).__name__} is not legal in state {state.value}")
                handler, after = entry
                effects = handler(self, event)
                if after is not None:
                    self.state = after
        except GatewayError as error:
            effects = self._refuse(error)
        if self.head.method == "HEAD":  # RFC 9110 §9.3.2: the head of the GET, no body
            effects = [e for e in effects if type(e) is not SendData]
        if not self.head_sent:
            for effect in effects:
                if type(effect) is SendHead:
                    self.head_sent = True
                    break
        return effects

    # -- the request ---------------------------------------------------------------------

    def _on_head(self, head: RequestHead) -> list[Effect]:
        given = framing = length = None
        for name, value in head.headers:  # one pass for the three the head needs
            if name == b"content-length":
                if length is None:
                    length = value
            elif name == b"transfer-encoding":
                framing = value
            elif name == b"x-request-id" and given is None:
                given = value
        self.request_id = _request_id(given, head.fresh_id)
        self.head = head
        self._now = head.now
        self._length = length
        if framing is not None and length is not None:
            # RFC 9112 §6.1: ambiguous framing, the classic request-smuggling vector; the
            # server must close the connection after refusing it.
            raise BadRequest("request has both Content-Length and Transfer-Encoding",
                             code="ambiguous_framing", headers=_CLOSE)
        if head.path in _PROBES:  # never behind auth: a probe carries no token
            endpoint = self._endpoint = _PROBES[head.path]
            self._require(endpoint.methods)
            assert endpoint.on_head is not None
            return endpoint.on_head(self)
        # Found before auth so that even a 401 comes in the endpoint's API's shape; the
        # report names it only once routed (a refusal before that is "other").
        found = self._found = find_endpoint(self.gateway, head.path)
        self._errors = found.errors
        if self.gateway.settings.auth_enable:
            try:
                self._authenticate()
            except AuthFailure as failure:
                if failure.reason in (AuthReason.UNKNOWN_KID, AuthReason.NO_KEYS):
                    self.state = State.AWAITING_KEYS
                    return [RefreshKeys(failure.kid or "")]
                raise self._auth_error(failure) from None
        return self._route()

    def _authenticate(self) -> None:
        settings = self.gateway.settings
        verify_bearer(
            self._credentials(), self.keys,
            issuer=settings.auth_oidc_issuer, audience=settings.auth_oidc_client_id,
            now=self.head.wall,
        )

    def _credentials(self) -> bytes | None:
        """The ``Authorization`` header; on the Anthropic endpoints, without one, the
        token in ``x-api-key`` (where Anthropic SDKs before 2.x put their key)."""
        headers = self.head.headers
        given = hdrs.get(headers, b"authorization")
        if given is None and self._errors is ANTHROPIC_ERRORS:
            key = hdrs.get(headers, b"x-api-key")
            if key:
                return b"Bearer " + key
        return given

    def _auth_error(self, failure: AuthFailure) -> GatewayError:
        log_failure(failure, development=self.gateway.development,
                    request_id=self.request_id)
        if failure.reason is AuthReason.NO_KEYS:
            return not_ready_error()
        return unauthorized_error(failure.reason)

    def _on_keys(self, event: KeysRefreshed) -> list[Effect]:
        self.keys = event.keys
        try:
            self._authenticate()
        except AuthFailure as failure:
            raise self._auth_error(failure) from None
        return self._route()

    def _route(self) -> list[Effect]:
        endpoint = self._endpoint = self._found
        self._require(endpoint.methods)
        effects = endpoint.on_head(self) if endpoint.on_head is not None else []
        if endpoint.on_body is None:
            return effects
        length = None if self._length is None else hdrs.decimal(self._length)
        if length is not None:
            self._check_size(length)
        self.state = State.READING_BODY
        return [ReadRequestBody()]

    def _require(self, allowed: tuple[str, ...] | None) -> None:
        method = self.head.method
        if allowed is None or method in allowed:
            return
        if "GET" in allowed:
            allowed = (*allowed, "HEAD")
            if method == "HEAD":
                return
        raise MethodNotAllowed(
            f"method {method} is not allowed here (allowed: {', '.join(allowed)})",
            headers=(("allow", ", ".join(allowed)),),
        )

    def _check_size(self, size: int) -> None:
        limit = self.gateway.settings.server_max_request_body_size
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the gateway's limit of {limit} bytes "
                "(SERVER_MAX_REQUEST_BODY_SIZE)"
            )

    def _on_body_data(self, event: RequestData) -> list[Effect]:
        self._body_size += len(event.data)
        self._check_size(self._body_size)
        self._body.append(event.data)
        return []

    def _on_body_failed(self, event: RequestBodyFailed) -> list[Effect]:
        if event.reason is BodyFailure.TIMEOUT:
            raise RequestTimeout(
                "timed out reading the request body (SERVER_READ_TIMEOUT)", headers=_CLOSE)
        raise BadRequest(f"malformed HTTP request: {event.detail}", headers=_CLOSE)

    def _on_body_end(self, event: RequestEnd) -> list[Effect]:
        body = b"".join(self._body)
        self._body = []
        assert self._endpoint is not None and self._endpoint.on_body is not None
        return self._endpoint.on_body(self, body)

    # -- handing over to a flow ----------------------------------------------------------

    def begin(self, flow: Flow, effects: list[Effect]) -> list[Effect]:
        """Hand the rest of the request to ``flow``, whose first effects are ``effects``."""
        self.flow = flow
        self.state = State.FLOWING
        if flow.finished:
            return [*effects, self._report_flow()]
        return effects

    def _report_flow(self) -> Report:
        flow = self.flow
        assert flow is not None
        return self._finish(flow.status, usage=flow.usage, first_byte=flow.first_byte,
                            error=flow.error)

    # -- endings -------------------------------------------------------------------------

    def respond_json(self, status: int, obj: Any) -> list[Effect]:
        """Answer ``obj`` as JSON and finish; the exchange needs nothing more."""
        return self.respond_bytes(status, json_bytes(obj))

    def respond_bytes(self, status: int, body: bytes) -> list[Effect]:
        """Answer ``body``, already JSON, and finish."""
        return [*json_response(status, body, self.request_id), self._finish(status)]

    def _refuse(self, error: GatewayError) -> list[Effect]:
        status = self.flow.status if self.flow is not None else 0
        if self.head_sent:
            return [Abort(), self._finish(status, error=error.message)]
        return [*error_response(error, self.request_id, self.errors.refusal),
                self._finish(error.status, error=error.message)]

    def _on_client_gone(self, event: ClientGone) -> list[Effect]:
        flow = self.flow
        if flow is not None and flow.on_client_gone(event):
            return [self._report_flow()]
        return [self._finish(499, error="client disconnected")]

    def _finish(self, status: int, *, usage: Any = None, first_byte: float | None = None,
                error: str = "") -> Report:
        self.state = State.DONE
        self.finished = True
        head, flow, endpoint = self.head, self.flow, self._endpoint
        label, counted = ("other", False) if endpoint is None else (endpoint.label,
                                                                     endpoint.counted)
        routed = None
        provider_id, model, streamed = "", "", False
        tool_calls: tuple[ToolCallFact, ...] = ()
        if flow is not None:
            routed = flow.routed
            provider_id = flow.provider.id if flow.provider is not None else ""
            model, streamed, tool_calls = flow.model, flow.streamed, flow.tool_calls
        # Positional, in the field order: a dataclass __init__ matches keywords slowly.
        record = ExchangeRecord(self.request_id, head.method, label, head.path, status,
                                provider_id, model, streamed, head.now, self._now, first_byte,
                                usage, counted, error, tool_calls)
        if routed is not None and flow is not None:
            facts, cooled = flow.route_facts()
            record = replace(record, alias=routed.alias, attempts=tuple(facts),
                             cooled=tuple(cooled))
        # The flow refers back to this exchange: dropping it breaks the cycle, so a
        # request's objects are freed when it ends instead of by the garbage collector.
        self.flow = None
        return Report(record)


def _health(x: Exchange) -> list[Effect]:
    return x.respond_json(200, {"message": "OK"})


def _ready(x: Exchange) -> list[Effect]:
    reasons = []
    if x.gateway.settings.auth_enable and x.keys is None:
        reasons.append("the identity provider's signing keys are not loaded yet")
    if x.draining:
        reasons.append("the gateway is shutting down")
    if reasons:
        return x.respond_json(503, {"status": "not ready", "reasons": reasons})
    return x.respond_json(200, {"status": "ready"})


#: Liveness and readiness, answered before auth.
_PROBES: Final = {
    "/health": Endpoint("/health", ("GET",), False, on_head=_health),
    "/ready": Endpoint("/ready", ("GET",), False, on_head=_ready),
}
_NO_HEAD: Final = RequestHead("", "", "", (), 0.0)
_NOT_ROUTED: Final = Endpoint("other", None, False)
_Handler = Callable[[Exchange, Any], list[Effect]]
_E = Exchange
#: (state, event type) -> (handler, next state); ``None``: the handler moves on itself,
#: to AWAITING_KEYS, READING_BODY, FLOWING or DONE as the request turns out. In FLOWING
#: every event goes to the flow; ClientGone is accepted in every state but DONE.
TRANSITIONS: Final[dict[tuple[State, type[Event]], tuple[_Handler, State | None]]] = {
    (State.IDLE, RequestHead): (_E._on_head, None),
    (State.AWAITING_KEYS, KeysRefreshed): (_E._on_keys, None),
    (State.READING_BODY, RequestData): (_E._on_body_data, State.READING_BODY),
    (State.READING_BODY, RequestEnd): (_E._on_body_end, None),
    (State.READING_BODY, RequestBodyFailed): (_E._on_body_failed, State.DONE),
}
_BY_STATE: Final = by_state(TRANSITIONS)
