"""One request's state machine, from head to final byte.

An :class:`Exchange` is fed :mod:`~igw_core.events` with :meth:`Exchange.receive`
and answers with :mod:`~igw_core.effects` for the frontend to perform. It never
touches a socket or a clock; what it may do next is the table
:data:`TRANSITIONS` (at the end of the module, as it names the class's handlers), and
anything else raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

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
from igw_core.chat import ChatPlan, plan_chat
from igw_core.effects import (
    Abort,
    CallProvider,
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
from igw_core.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    LocalProtocolError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from igw_core.events import (
    BodyFailure,
    ClientGone,
    Event,
    FailureReason,
    Headers,
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
from igw_core.gateway import Gateway
from igw_core.mcp.agent import AgentRun
from igw_core.mcp.catalog import EMPTY, Catalogue
from igw_core.mcp.loop import AgentLoop
from igw_core.models import filter_models, parse_model_list
from igw_core.providers import Provider
from igw_core.proxy import PREFIX as PROXY_PREFIX
from igw_core.proxy import proxy_headers, proxy_url, split_proxy_path
from igw_core.redact import scrub, truncate_body_text, truncate_chat_request
from igw_core.report import ExchangeRecord, Usage
from igw_core.responses import error_response, json_bytes, json_response, upstream_error_body
from igw_core.routing import lookup_provider, route_model
from igw_core.usage import ResponseTap, usage_from_body

log = logging.getLogger("igw.exchange")

#: Largest provider error body or model list the gateway buffers.
MAX_BUFFERED_RESPONSE = 8 * 1024 * 1024


class State(enum.Enum):
    """Where an exchange is."""

    IDLE = "idle"  # waiting for the request head
    AWAITING_KEYS = "awaiting_keys"  # RefreshKeys emitted: the token's key is unknown
    READING_BODY = "reading_body"  # ReadRequestBody emitted
    AWAITING_PROVIDER = "awaiting_provider"  # CallProvider (streamed) emitted
    RELAYING = "relaying"  # RelayBody emitted
    READING_PROVIDER = "reading_provider"  # ReadProviderBody emitted
    COLLECTING = "collecting"  # buffered CallProviders outstanding
    AGENT = "agent"  # an MCP agent run (AgentRun) owns the provider and tool calls
    DONE = "done"  # Report emitted; nothing more happens


class Flow(enum.Enum):
    """Which endpoint the request is for."""

    CHAT = "/v1/chat/completions"
    MODELS = "/v1/models"
    MCP_TOOLS = "/v1/mcp/tools"
    PROXY = "/proxy"
    OTHER = "other"


_STREAM_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
_MODEL_PREFIX = "/v1/models/"
_DROP_FROM_UPSTREAM = frozenset({b"set-cookie", b"x-request-id", b"content-encoding"})
# The gateway's own X-Request-Id replaces the provider's, so the client sees one.
_DROP_FROM_PROXIED = frozenset({b"x-request-id"})
_MAX_REQUEST_ID = 128
#: On a refusal after which the connection cannot be trusted to frame another request.
_CLOSE = (("connection", "close"),)


def request_id_of(head: RequestHead) -> str:
    """Return the request's id: the client's ``X-Request-Id`` if sane, else ``fresh_id``."""
    given = hdrs.get(head.headers, b"x-request-id")
    if given and len(given) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in given):
        return given.decode("ascii")
    return head.fresh_id


def _query_param(query: str, name: str) -> str | None:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return unquote_plus(value)
    return None


class Exchange:
    """The state machine of one HTTP request through the gateway.

    Feed events with :meth:`receive`; perform the returned effects in order.
    After the :class:`~igw_core.effects.Report` effect the exchange is
    :attr:`finished`.
    """

    def __init__(
        self, gateway: Gateway, *, tools: Catalogue = EMPTY, keys: KeySet | None = None
    ) -> None:
        self.gateway = gateway
        #: The identity provider's keys as the IO layer holds them now (auth only).
        self.keys = keys
        self._head: RequestHead | None = None
        #: The MCP tools available to this request (a snapshot taken when it arrived).
        self.tools = tools
        self._agent: AgentRun | None = None
        self.state = State.IDLE
        self.flow = Flow.OTHER
        self.request_id = ""
        self._method = ""
        self._path = ""
        self._query = ""
        self._headers: Headers = ()
        self._started = 0.0
        self._body: list[bytes] = []
        self._body_size = 0
        self._provider: Provider | None = None
        self._plan: ChatPlan | None = None
        self._status = 0
        self._streamed = False
        self._tap: ResponseTap | None = None
        self._upstream_body: list[bytes] = []
        self._upstream_size = 0
        self._pending: dict[int, Provider] = {}
        self._collected: dict[int, ProviderResponse | ProviderFailed] = {}
        self._head_sent = False
        self._error_headers: tuple[tuple[bytes, bytes], ...] = ()
        self._wanted: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the exchange has reported and needs nothing more."""
        return self.state is State.DONE

    def receive(self, event: Event) -> list[Effect]:
        """Feed one event and return the effects to perform, in order.

        Raises:
            LocalProtocolError: ``event`` is not legal in the current state.
        """
        if isinstance(event, ClientGone):
            if self.state is State.DONE:
                return []
            return self._on_client_gone(event)
        handler = TRANSITIONS[self.state].get(type(event))
        if handler is None:
            raise LocalProtocolError(
                f"{type(event).__name__} is not legal in state {self.state.value}"
            )
        try:
            effects = handler(self, event)
        except GatewayError as error:
            effects = self._refuse(error, getattr(event, "now", self._started))
        if self._method == "HEAD":  # RFC 9110 §9.3.2: the head of the GET, no body
            return [e for e in effects if not isinstance(e, SendData)]
        return effects

    # -- request -----------------------------------------------------------

    def _on_head(self, head: RequestHead) -> list[Effect]:
        self.request_id = request_id_of(head)
        self._method = head.method
        self._path = head.path
        self._query = head.query
        self._headers = head.headers
        self._started = head.now
        self._head = head
        if hdrs.get(head.headers, b"transfer-encoding") is not None and (
            hdrs.get(head.headers, b"content-length") is not None
        ):
            # RFC 9112 §6.1: ambiguous framing, the classic request-smuggling vector; the
            # server must close the connection after refusing it.
            raise BadRequest("request has both Content-Length and Transfer-Encoding",
                             code="ambiguous_framing", headers=_CLOSE)
        if head.path == "/health":
            self._require(head.method, ("GET",))
            return self._respond_json(200, {"message": "OK"}, head.now)
        if self.gateway.settings.auth_enable:
            try:
                self._authenticate(head)
            except AuthFailure as failure:
                if failure.reason in (AuthReason.UNKNOWN_KID, AuthReason.NO_KEYS):
                    self.state = State.AWAITING_KEYS
                    return [RefreshKeys(failure.kid or "")]
                raise self._auth_error(failure) from None
        return self._route(head)

    def _authenticate(self, head: RequestHead) -> None:
        settings = self.gateway.settings
        verify_bearer(
            hdrs.get(head.headers, b"authorization"), self.keys,
            issuer=settings.auth_oidc_issuer, audience=settings.auth_oidc_client_id,
            now=head.wall,
        )

    def _auth_error(self, failure: AuthFailure) -> GatewayError:
        log_failure(failure, development=self.gateway.settings.is_development,
                    request_id=self.request_id)
        if failure.reason is AuthReason.NO_KEYS:
            return not_ready_error()
        return unauthorized_error(failure.reason)

    def _on_keys(self, event: KeysRefreshed) -> list[Effect]:
        head = self._head
        assert head is not None
        self.keys = event.keys
        self.state = State.IDLE
        try:
            self._authenticate(head)
        except AuthFailure as failure:
            raise self._auth_error(failure) from None
        return self._route(head)

    def _route(self, head: RequestHead) -> list[Effect]:
        path, method = head.path, head.method
        settings = self.gateway.settings
        if path == "/v1/models":
            self.flow = Flow.MODELS
            self._require(method, ("GET",))
            return self._start_models(head.now)
        if path.startswith(_MODEL_PREFIX):
            self.flow = Flow.MODELS
            self._require(method, ("GET",))
            return self._start_model(unquote_plus(path[len(_MODEL_PREFIX) :]), head.now)
        if path == "/v1/chat/completions":
            self.flow = Flow.CHAT
            self._require(method, ("POST",))
            return self._start_reading(head)
        if path.startswith(PROXY_PREFIX) and settings.proxy_enable:
            self.flow = Flow.PROXY
            name, _ = split_proxy_path(path)
            self._provider = lookup_provider(self.gateway.providers, name)
            return self._start_reading(head)
        if path == "/v1/mcp/tools":
            self.flow = Flow.MCP_TOOLS
            self._require(method, ("GET",))
            return self._list_tools(head.now)
        raise NotFound(f"no route for {method} {path}")

    def _require(self, method: str, allowed: tuple[str, ...]) -> None:
        if "GET" in allowed:
            allowed = (*allowed, "HEAD")
        if method not in allowed:
            raise MethodNotAllowed(
                f"method {method} is not allowed here (allowed: {', '.join(allowed)})",
                headers=(("allow", ", ".join(allowed)),),
            )

    def _start_reading(self, head: RequestHead) -> list[Effect]:
        length = hdrs.get(head.headers, b"content-length")
        if length is not None and length.isdigit():
            self._check_size(int(length))
        self.state = State.READING_BODY
        return [ReadRequestBody()]

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
        if self.flow is Flow.CHAT:
            return self._start_chat(body)
        return self._start_proxy(body)

    # -- chat --------------------------------------------------------------

    def _start_chat(self, body: bytes) -> list[Effect]:
        plan = plan_chat(self.gateway, body, _query_param(self._query, "provider"))
        self._plan = plan
        provider = self._provider = plan.route.provider
        settings = self.gateway.settings
        if settings.is_development:
            shown = truncate_chat_request(
                plan.request,
                words=settings.debug_content_truncate_words,
                max_messages=settings.debug_max_messages,
            )
            log.debug(
                "outbound provider request",
                extra={"request_id": self.request_id, "provider": provider.id,
                       "body": scrub(json.dumps(shown, ensure_ascii=False),
                                     self.gateway.secrets)},
            )
        accept = b"text/event-stream" if plan.stream else b"application/json"
        headers = [
            (b"content-type", b"application/json"),
            (b"accept", accept),
            (b"accept-encoding", b"identity"),
            (b"x-request-id", self.request_id.encode()),
            *provider.auth_headers(),
        ]
        if self._use_agent():
            return self._start_agent(plan, headers)
        self.state = State.AWAITING_PROVIDER
        url = provider.url(provider.spec.chat_path)
        return [CallProvider(0, provider.id, "POST", url, headers, plan.body)]

    def _on_provider_head(self, event: ProviderHead) -> list[Effect]:
        if event.call != 0:
            raise LocalProtocolError(f"no provider call {event.call} is outstanding")
        self._status = event.status
        if self.flow is Flow.PROXY:
            out = hdrs.end_to_end(event.headers, drop=_DROP_FROM_PROXIED)
            length = hdrs.get(event.headers, b"content-length")
            if length is not None:
                out.append((b"content-length", length))
            out.append((b"x-request-id", self.request_id.encode()))
            self.state = State.RELAYING
            self._head_sent = True
            return [SendHead(event.status, out), RelayBody(0)]
        if not 200 <= event.status < 300:
            # Keep what SDKs need to back off (Retry-After, x-ratelimit-*).
            self._error_headers = hdrs.backoff_headers(event.headers)
            self.state = State.READING_PROVIDER
            return [ReadProviderBody(0)]
        out = hdrs.end_to_end(event.headers, drop=_DROP_FROM_UPSTREAM)
        content_type = hdrs.get(event.headers, b"content-type") or b""
        self._streamed = content_type.startswith(b"text/event-stream")
        if self._streamed:
            out.extend(h for h in _STREAM_HEADERS if hdrs.get(out, h[0]) is None)
        else:
            length = hdrs.get(event.headers, b"content-length")
            if length is not None:
                out.append((b"content-length", length))
        out.append((b"x-request-id", self.request_id.encode()))
        settings = self.gateway.settings
        keep = 64 * 1024 if settings.is_development else 0
        length = hdrs.get(event.headers, b"content-length")
        expected = int(length) if length is not None and length.isdigit() else None
        self._tap = ResponseTap(keep_head=keep, expected=expected)
        self.state = State.RELAYING
        self._head_sent = True
        return [SendHead(event.status, out), RelayBody(0, self._tap)]

    def _on_relay_end(self, event: ProviderEnd) -> list[Effect]:
        usage = self._tap.usage() if self._tap is not None else None
        if self._tap is not None and self.gateway.settings.is_development:
            self._log_upstream(self._status, self._tap.head)
        return [SendEnd(), *self._finish(self._status, event.now, usage=usage,
                                         first_byte=event.first_data_at)]

    def _on_relay_failed(self, event: ProviderFailed) -> list[Effect]:
        provider = self._provider.id if self._provider else ""
        detail = scrub(event.detail, self.gateway.secrets)
        log.warning(
            "upstream broke mid-response",
            extra={"request_id": self.request_id, "provider": provider,
                   "reason": event.reason.value, "detail": detail},
        )
        return [Abort(), *self._finish(self._status, event.now,
                                       error=f"upstream {event.reason.value}: {detail}")]

    def _on_provider_data(self, event: ProviderData) -> list[Effect]:
        self._upstream_size += len(event.data)
        if self._upstream_size <= MAX_BUFFERED_RESPONSE:
            self._upstream_body.append(event.data)
        return []

    def _on_provider_body_end(self, event: ProviderEnd) -> list[Effect]:
        body = b"".join(self._upstream_body)
        provider = self._provider.id if self._provider else ""
        if self.gateway.settings.is_development:
            self._log_upstream(self._status, body)
        out = upstream_error_body(self._status, body, provider, self.gateway.secrets)
        return [
            *json_response(self._status, out, self.request_id, self._error_headers),
            *self._finish(self._status, event.now, error=f"upstream status {self._status}"),
        ]

    def _on_failed(self, event: ProviderFailed) -> list[Effect]:
        provider = self._provider.id if self._provider else "provider"
        detail = scrub(event.detail, self.gateway.secrets)
        if event.reason is FailureReason.TIMEOUT:
            raise UpstreamTimeout(f"upstream {provider} timed out: {detail}")
        raise UpstreamUnreachable(f"upstream {provider} unreachable: {detail}")

    def _log_upstream(self, status: int, body: bytes) -> None:
        words = self.gateway.settings.debug_content_truncate_words
        log.debug(
            "upstream response",
            extra={"request_id": self.request_id,
                   "provider": self._provider.id if self._provider else "",
                   "status": status,
                   "body": scrub(truncate_body_text(body, words=words), self.gateway.secrets)},
        )

    # -- mcp ---------------------------------------------------------------

    def _use_agent(self) -> bool:
        """Whether MCP tools apply: on, some available, and no ``X-MCP-Bypass: true``."""
        if not (self.gateway.settings.mcp_enable and self.tools):
            return False
        bypass = hdrs.get(self._headers, b"x-mcp-bypass")
        return bypass is None or bypass.strip().lower() != b"true"

    def _start_agent(self, plan: ChatPlan, headers: Headers) -> list[Effect]:
        provider = plan.route.provider
        loop = AgentLoop(plan.request, self.tools, stream=plan.stream)
        self._agent = AgentRun(loop, provider, provider.url(provider.spec.chat_path), headers,
                               self.request_id, self.gateway.secrets)
        self._streamed = plan.stream
        self.state = State.AGENT
        return self._agent.start(self._started)

    def _on_agent(self, event: Event) -> list[Effect]:
        agent = self._agent
        assert agent is not None
        try:
            effects = agent.receive(event)
        finally:
            self._head_sent = agent.head_sent
            self._status = agent.status
        if not agent.finished:
            return effects
        now: float = getattr(event, "now", self._started)
        return [*effects, *self._finish(agent.status, now, usage=agent.usage, error=agent.error)]

    def _list_tools(self, now: float) -> list[Effect]:
        if not self.gateway.settings.mcp_expose:
            raise Forbidden("the MCP tool list is not exposed; set MCP_EXPOSE=true to list it",
                            code="mcp_not_exposed")
        return self._respond_json(200, self.tools.listing(), now)

    # -- proxy -------------------------------------------------------------

    def _start_proxy(self, body: bytes) -> list[Effect]:
        assert self._provider is not None
        _, rest = split_proxy_path(self._path)
        url = proxy_url(self._provider, rest, self._query)
        headers = proxy_headers(self._headers, self._provider)
        self.state = State.AWAITING_PROVIDER
        return [CallProvider(0, self._provider.id, self._method, url, headers, body)]

    # -- models ------------------------------------------------------------

    def _start_model(self, model_id: str, now: float) -> list[Effect]:
        """``GET /v1/models/{provider}/{model}``: one model, looked up in its provider's list."""
        route = route_model(self.gateway.providers, model_id, None)
        if not self.gateway.policy.permits(route.provider.id, route.model):
            raise NotFound(f"model '{route.full_id}' not found")
        self._wanted = route.full_id
        return self._start_models(now, only=route.provider)

    def _start_models(self, now: float, only: Provider | None = None) -> list[Effect]:
        name = _query_param(self._query, "provider")
        if only is not None:
            self._provider = only
            providers = [only]
        elif name:
            self._provider = lookup_provider(self.gateway.providers, name)
            providers = [self._provider]
        else:
            providers = [p for p in self.gateway.providers.values() if p.configured]
        if not providers:
            return self._respond_json(200, {"object": "list", "data": []}, now)
        self.state = State.COLLECTING
        effects: list[Effect] = []
        for call, provider in enumerate(providers):
            self._pending[call] = provider
            headers = [(b"accept", b"application/json"), *provider.auth_headers()]
            url = provider.url(provider.spec.models_path)
            effects.append(CallProvider(call, provider.id, "GET", url, headers, b"", buffer=True))
        return effects

    def _on_collected(self, event: ProviderResponse | ProviderFailed) -> list[Effect]:
        if event.call not in self._pending or event.call in self._collected:
            raise LocalProtocolError(f"unexpected result for call {event.call}")
        self._collected[event.call] = event
        if len(self._collected) < len(self._pending):
            return []
        single = len(self._pending) == 1 and (
            self._wanted is not None or _query_param(self._query, "provider")
        )
        models: list[dict[str, Any]] = []
        for call, provider in self._pending.items():
            result = self._collected[call]
            if isinstance(result, ProviderFailed):
                log.warning(
                    "model list failed",
                    extra={"request_id": self.request_id, "provider": provider.id,
                           "reason": result.reason.value,
                           "detail": scrub(result.detail, self.gateway.secrets)},
                )
                if single:
                    self._provider = provider
                    return self._on_failed(result)
                continue
            if not 200 <= result.status < 300:
                log.warning(
                    "model list failed",
                    extra={"request_id": self.request_id, "provider": provider.id,
                           "status": result.status},
                )
                if single:
                    out = upstream_error_body(result.status, result.body, provider.id,
                                              self.gateway.secrets)
                    return [*json_response(result.status, out, self.request_id),
                            *self._finish(result.status, event.now)]
                continue
            try:
                models.extend(parse_model_list(provider.id, result.body))
            except ValueError:
                log.warning(
                    "model list unreadable",
                    extra={"request_id": self.request_id, "provider": provider.id},
                )
        models = filter_models(models, self.gateway.policy)
        if self._wanted is not None:
            found = next((m for m in models if m["id"] == self._wanted), None)
            if found is None:
                raise NotFound(f"model '{self._wanted}' not found")
            return self._respond_json(200, found, event.now)
        return self._respond_json(200, {"object": "list", "data": models}, event.now)

    # -- endings -----------------------------------------------------------

    def _respond_json(self, status: int, obj: Any, now: float) -> list[Effect]:
        return [*json_response(status, json_bytes(obj), self.request_id),
                *self._finish(status, now)]

    def _refuse(self, error: GatewayError, now: float) -> list[Effect]:
        if self._head_sent:
            return [Abort(), *self._finish(self._status, now, error=error.message)]
        return [*error_response(error, self.request_id),
                *self._finish(error.status, now, error=error.message)]

    def _on_client_gone(self, event: ClientGone) -> list[Effect]:
        tap = self._tap
        if self.state is State.RELAYING and tap is not None and tap.complete:
            # It left after the whole answer reached it: served, not abandoned.
            return self._finish(self._status, event.now, usage=tap.usage(),
                                first_byte=event.first_data_at)
        return self._finish(499, event.now, error="client disconnected")

    def _finish(
        self,
        status: int,
        now: float,
        *,
        usage: Usage | None = None,
        first_byte: float | None = None,
        error: str = "",
    ) -> list[Effect]:
        self.state = State.DONE
        plan = self._plan
        if usage is None and self._upstream_body and 200 <= status < 300:
            usage = usage_from_body(b"".join(self._upstream_body))
        record = ExchangeRecord(
            request_id=self.request_id,
            method=self._method,
            route=self.flow.value if self.flow is not Flow.OTHER else self._other_label(),
            path=self._path,
            status=status,
            provider=self._provider.id if self._provider else "",
            model=plan.route.model if plan else "",
            streamed=self._streamed,
            started=self._started,
            ended=now,
            first_byte=first_byte,
            usage=usage,
            counted=self.flow in (Flow.CHAT, Flow.MODELS),
            error=error,
            tool_calls=tuple(self._agent.tool_calls) if self._agent is not None else (),
        )
        return [Report(record)]

    def _other_label(self) -> str:
        return "/health" if self._path == "/health" else "other"


#: (state, event type) -> the handler. Reading this table is reading the protocol;
#: ClientGone is accepted in every state but DONE.
_Handler = Callable[[Exchange, Any], list[Effect]]
_E = Exchange
TRANSITIONS: dict[State, dict[type[Event], _Handler]] = {
    State.IDLE: {RequestHead: _E._on_head},
    State.AWAITING_KEYS: {KeysRefreshed: _E._on_keys},
    State.READING_BODY: {RequestData: _E._on_body_data, RequestEnd: _E._on_body_end,
                         RequestBodyFailed: _E._on_body_failed},
    State.AWAITING_PROVIDER: {ProviderHead: _E._on_provider_head, ProviderFailed: _E._on_failed},
    State.RELAYING: {ProviderEnd: _E._on_relay_end, ProviderFailed: _E._on_relay_failed},
    State.READING_PROVIDER: {
        ProviderData: _E._on_provider_data,
        ProviderEnd: _E._on_provider_body_end,
        ProviderFailed: _E._on_failed,
    },
    State.COLLECTING: {ProviderResponse: _E._on_collected, ProviderFailed: _E._on_collected},
    State.AGENT: {ProviderHead: _E._on_agent, ProviderData: _E._on_agent,
                  ProviderEnd: _E._on_agent, ProviderFailed: _E._on_agent,
                  ToolResult: _E._on_agent},
    State.DONE: {},
}
