"""The gateway's routes: which endpoint a path is, and how each one starts.

:func:`find_endpoint` maps a request path to an :class:`Endpoint`; the
:class:`~igw_core.exchange.Exchange` checks the method, calls ``on_head``, reads the
body when the endpoint takes one, and hands it to ``on_body``. Both start the
request's :class:`~igw_core.flows.base.Flow` (through ``Exchange.begin``) or answer
at once (``Exchange.respond_json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_plus

from igw_core import headers as hdrs
from igw_core.chat import (
    ChatPlan,
    Span,
    encode_request,
    parse_request,
    plan_chat,
    route_request,
    with_model,
)
from igw_core.effects import CallProvider, Effect
from igw_core.errors import BadRequest, Forbidden, GatewayError, NotFound
from igw_core.events import Headers
from igw_core.flows.anthropic import TranslatedMessages
from igw_core.flows.base import Routed
from igw_core.flows.models import ModelsFlow
from igw_core.flows.relay import RelayFlow
from igw_core.gateway import Gateway
from igw_core.mcp.agent import AgentRun, Target
from igw_core.mcp.loop import AgentLoop
from igw_core.messages import error_body as anthropic_error
from igw_core.messages import messages_to_chat, translate_error
from igw_core.models import alias_models
from igw_core.openapi import document_bytes
from igw_core.providers import PROVIDER_SPECS, Provider, ProviderSpec
from igw_core.proxy import PREFIX as PROXY_PREFIX
from igw_core.proxy import proxy_headers, proxy_url, split_proxy_path
from igw_core.redact import scrub, scrub_bytes, truncate_body_text, truncate_chat_request
from igw_core.responses import OPENAI_ERRORS, ErrorShape
from igw_core.router import Choice
from igw_core.routing import Route, lookup_provider, route_model
from igw_core.vision import check_vision

if TYPE_CHECKING:
    from igw_core.exchange import Exchange

log: Final = logging.getLogger("igw.exchange")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route of the gateway.

    Fields:
        label: the route label in reports and metrics (one of ``ROUTE_LABELS``).
        methods: the methods it serves (GET implies HEAD), or ``None`` for any.
        counted: whether telemetry counts its requests.
        on_head: called once the head is routed and authenticated; answers, starts a
            flow, or (with ``on_body``) only checks what it can before the body is read.
        on_body: called with the whole request body, when the endpoint takes one.
        errors: the shape of its error bodies (its API's, so its SDKs show them).
    """

    label: str
    methods: tuple[str, ...] | None
    counted: bool
    on_head: Callable[[Exchange], list[Effect]] | None = None
    on_body: Callable[[Exchange, bytes], list[Effect]] | None = None
    errors: ErrorShape = OPENAI_ERRORS


# -- chat ----------------------------------------------------------------------------------


def start_chat(x: Exchange, body: bytes) -> list[Effect]:
    """Plan a chat request and send it: relayed as it is, or through the MCP agent loop.

    A routing alias is served by its deployments, each failure before the answer
    trying the next (see :class:`RelayFlow`); with MCP tools in play each of the agent's
    rounds is routed that way.

    Raises:
        GatewayError: what :func:`~igw_core.chat.plan_chat` refuses.
    """
    gateway = x.gateway
    request, model_at = parse_request(body)
    alias = _alias_of(x, request)
    use_agent = _use_agent(x)
    if alias is None:
        plan = plan_chat(gateway, body, x.query_param("provider"), request=request,
                         model_at=model_at)
    elif not use_agent:
        return _start_routed(x, alias, partial(_chat_call, x, body))
    else:  # the agent's rounds are routed one by one; planned for the first deployment
        plan = plan_chat(gateway, body, None, route=_planning_route(x, alias))
    provider = plan.route.provider
    headers = _chat_headers(x, plan)
    url = provider.url(provider.spec.chat_path)
    if use_agent:
        agent = AgentRun(x, AgentLoop(plan.request, x.tools, stream=plan.stream), provider,
                         url, headers)
        agent.model = plan.route.model
        if alias is not None:
            agent.route_by(alias, partial(_chat_target, x, plan.stream))
        return x.begin(agent, agent.start(x.started))
    relay = RelayFlow(x, provider, plan.route.model)
    return x.begin(relay, relay.start(CallProvider(0, provider.id, "POST", url, headers,
                                                   plan.body)))


def _chat_headers(x: Exchange, plan: ChatPlan) -> list[tuple[bytes, bytes]]:
    """The headers of a planned chat request (logging it in development)."""
    gateway, provider = x.gateway, plan.route.provider
    settings = gateway.settings
    if gateway.development:
        shown = truncate_chat_request(plan.request, words=settings.debug_content_truncate_words,
                                      max_messages=settings.debug_max_messages)
        log.debug(
            "outbound provider request",
            extra={"request_id": x.request_id, "provider": provider.id,
                   "body": scrub(json.dumps(shown, ensure_ascii=False), gateway.secrets)},
        )
    return [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if plan.stream else b"application/json"),
        (b"accept-encoding", b"identity"),
        (b"x-request-id", x.request_id.encode()),
        *provider.auth_headers(),
    ]


def _chat_call(x: Exchange, body: bytes, choice: Choice, call: int) -> CallProvider:
    """The chat request for one deployment of an alias (planned afresh from the body)."""
    plan = plan_chat(x.gateway, body, None, route=_route_of(x, choice))
    provider = plan.route.provider
    return CallProvider(call, provider.id, "POST", provider.url(provider.spec.chat_path),
                        _chat_headers(x, plan), plan.body, head_timeout=choice.timeout)


# -- routing aliases -----------------------------------------------------------------------


def _alias_of(x: Exchange, request: dict[str, Any]) -> str | None:
    """The routing alias ``request`` names, if routing is on and ``?provider=`` is absent."""
    router = x.gateway.routing.router
    if router is None:
        return None
    model = request.get("model")
    if not isinstance(model, str) or model not in router.table.aliases:
        return None
    return None if x.query_param("provider") else model


def _planning_route(x: Exchange, alias: str) -> Route:
    """The route to ``alias``'s first listed deployment, to check a request against.

    Raises:
        Forbidden: the model policy refuses the alias.
    """
    router = x.gateway.routing.router
    assert router is not None
    x.gateway.policy.check_alias(alias)
    first = router.table.aliases[alias].deployments[0]
    return Route(lookup_provider(x.gateway.providers, first.provider), first.model)


def _chat_target(x: Exchange, stream: bool, choice: Choice) -> Target:
    """Where an agent round goes for ``choice``: provider, chat URL, headers, model."""
    route = _route_of(x, choice)
    provider = route.provider
    headers = [(b"content-type", b"application/json"),
               (b"accept", b"text/event-stream" if stream else b"application/json"),
               (b"accept-encoding", b"identity"),
               (b"x-request-id", x.request_id.encode()), *provider.auth_headers()]
    return provider, provider.url(provider.spec.chat_path), headers, route.model


def _first_choice(x: Exchange, alias: str) -> Choice:
    router = x.gateway.routing.router
    assert router is not None
    x.gateway.policy.check_alias(alias)
    return router.attempts(alias).first(x.started)


def _route_of(x: Exchange, choice: Choice) -> Route:
    """The route to a deployment (its provider must still have a key).

    Raises:
        BadRequest: the deployment's provider is not usable.
    """
    return Route(lookup_provider(x.gateway.providers, choice.deployment.provider),
                 choice.deployment.model)


def _start_routed(x: Exchange, alias: str,
                  send: Callable[[Choice, int], CallProvider]) -> list[Effect]:
    """Serve a request for ``alias``: its first deployment, then others as attempts fail.

    Raises:
        Forbidden: the model policy refuses the alias.
        GatewayError: the first deployment cannot take the request.
    """
    router = x.gateway.routing.router
    assert router is not None
    x.gateway.policy.check_alias(alias)
    attempts = router.attempts(alias)
    choice = attempts.first(x.started)
    first = send(choice, 0)
    provider = x.gateway.providers[choice.deployment.provider]
    flow = RelayFlow(x, provider, choice.deployment.model,
                     routed=Routed(alias, attempts, choice, send, x.started))
    return x.begin(flow, flow.start(first))


def _use_agent(x: Exchange) -> bool:
    """Whether MCP tools apply: on, some available, and no ``X-MCP-Bypass: true``."""
    if not (x.gateway.settings.mcp_enable and x.tools):
        return False
    bypass = hdrs.get(x.head.headers, b"x-mcp-bypass")
    return bypass is None or bypass.strip().lower() != b"true"


# -- one request relayed to one provider: embeddings and the Responses API ---------------


def _served(provider: Provider, attribute: Callable[[ProviderSpec], str | None],
            what: str) -> str:
    """Return the provider's path for ``what`` (read by ``attribute``), when it has one.

    Raises:
        BadRequest: it has none; the message names the providers that do.
    """
    path = attribute(provider.spec)
    if path is None:
        having = ", ".join(sorted(spec.id for spec in PROVIDER_SPECS.values()
                                  if attribute(spec) is not None))
        raise BadRequest(f"provider '{provider.id}' does not serve {what} "
                         f"(providers that do: {having})", code="unsupported_endpoint")
    return path


def _outbound(x: Exchange, provider: Provider, body: bytes, *, stream: bool,
              auth: Headers | None = None) -> list[tuple[bytes, bytes]]:
    """Return the headers of a request to ``provider`` (``auth``: its credentials, when
    not the provider's own), logging the body in development."""
    gateway = x.gateway
    if gateway.development and body:
        log.debug(
            "outbound provider request",
            extra={"request_id": x.request_id, "provider": provider.id,
                   "body": scrub(truncate_body_text(
                       body, words=gateway.settings.debug_content_truncate_words),
                       gateway.secrets)},
        )
    headers = [
        (b"accept", b"text/event-stream" if stream else b"application/json"),
        (b"accept-encoding", b"identity"),
        (b"x-request-id", x.request_id.encode()),
        *(provider.auth_headers() if auth is None else auth),
    ]
    if body:
        headers.insert(0, (b"content-type", b"application/json"))
    return headers


def relay(x: Exchange, provider: Provider, model: str, method: str, url: str, body: bytes,
          *, stream: bool = False, auth: Headers | None = None,
          metered: bool = True) -> list[Effect]:
    """Send one request to ``provider`` and relay its answer; see :class:`RelayFlow`."""
    headers = _outbound(x, provider, body, stream=stream, auth=auth)
    flow = RelayFlow(x, provider, model, metered=metered)
    return x.begin(flow, [CallProvider(0, provider.id, method, url, headers, body)])


def _forwarded_query(x: Exchange) -> str:
    """The request's query string for the provider (``?...``, or ``""``): all but
    ``provider=``, which was the gateway's."""
    query = "&".join(p for p in x.head.query.split("&") if p and not p.startswith("provider="))
    return f"?{query}" if query else ""


def _embeddings_path(spec: ProviderSpec) -> str | None:
    return spec.embeddings_path


def _responses_path(spec: ProviderSpec) -> str | None:
    return spec.responses_path


def _model_call(x: Exchange, body: bytes, attribute: Callable[[ProviderSpec], str | None],
                what: str, stream: bool, route: Route, call: int, *,
                request: dict[str, Any] | None = None, model_at: Span | None = None,
                head_timeout: float | None = None) -> CallProvider:
    """The request to ``route``: the client's body with the route's model (``request``:
    the body already parsed, changed here; ``model_at``: where its model is).

    Raises:
        BadRequest: the provider does not serve ``what``, or image input while vision is
            off.
    """
    provider = route.provider
    path = _served(provider, attribute, what)
    if request is None:
        request, model_at = parse_request(body)
    check_vision(x.gateway.settings.enable_vision, request, route.model)
    out = with_model(body, request, route.model, model_at)
    return CallProvider(call, provider.id, "POST", provider.url(path),
                        _outbound(x, provider, out, stream=stream), out,
                        head_timeout=head_timeout)


def _deployment_call(x: Exchange, body: bytes,
                     attribute: Callable[[ProviderSpec], str | None], what: str,
                     stream: bool, choice: Choice, call: int) -> CallProvider:
    """The request for one deployment of an alias (parsed afresh from the body)."""
    return _model_call(x, body, attribute, what, stream, _route_of(x, choice), call,
                       head_timeout=choice.timeout)


def _start_model_request(x: Exchange, body: bytes,
                         attribute: Callable[[ProviderSpec], str | None],
                         what: str) -> list[Effect]:
    """Relay a request routed by its ``model`` to a provider serving ``what`` (a routing
    alias: to its deployments in turn).

    Raises:
        BadRequest: malformed JSON, no routable model, a provider without ``what``, or
            image input while vision is off.
        Forbidden: the model policy refuses the model.
    """
    request, model_at = parse_request(body)
    stream = request.get("stream") is True
    alias = _alias_of(x, request)
    if alias is not None:
        return _start_routed(x, alias, partial(_deployment_call, x, body, attribute, what,
                                               stream))
    route = route_request(x.gateway, request, x.query_param("provider"))
    call = _model_call(x, body, attribute, what, stream, route, 0, request=request,
                       model_at=model_at)
    flow = RelayFlow(x, route.provider, route.model)
    return x.begin(flow, flow.start(call))


def start_embeddings(x: Exchange, body: bytes) -> list[Effect]:
    """``POST /v1/embeddings``: routed by ``provider/model`` (or ``?provider=``) as chat is.

    Raises:
        BadRequest: malformed JSON, no routable model, or a provider without embeddings.
        Forbidden: the model policy refuses the model.
    """
    return _start_model_request(x, body, _embeddings_path, "embeddings")


def start_response(x: Exchange, body: bytes) -> list[Effect]:
    """``POST /v1/responses``: the OpenAI Responses API, relayed to a provider serving it.

    Raises:
        BadRequest: malformed JSON, no routable model, a provider without the API, or
            image input while vision is off.
        Forbidden: the model policy refuses the model.
    """
    return _start_model_request(x, body, _responses_path, "the Responses API")


def response_resource(x: Exchange, body: bytes) -> list[Effect]:
    """``/v1/responses/{id}...`` (retrieve, delete, cancel, input items): relayed to
    ``?provider=`` (default ``openai``), the rest of the query string kept.

    Raises:
        BadRequest: an unknown or unconfigured provider, or one without the API.
    """
    head = x.head
    provider = lookup_provider(x.gateway.providers, x.query_param("provider") or "openai")
    path = _served(provider, _responses_path, "the Responses API")
    url = provider.url(path + head.path[len(_RESPONSES):]) + _forwarded_query(x)
    stream = x.query_param("stream") == "true"
    return relay(x, provider, "", head.method, url, body, stream=stream, metered=False)


# -- /v1/messages: Anthropic's Messages API, for any provider -----------------------------


def _messages_path(spec: ProviderSpec) -> str | None:
    return spec.messages_path


def _anthropic_auth(x: Exchange, provider: Provider) -> list[tuple[bytes, bytes]]:
    """The provider's credentials, with the client's ``anthropic-version`` (when it sent
    one) and ``anthropic-beta`` instead of the gateway's defaults."""
    sent = [(name, value) for name, value in x.head.headers if name in _ANTHROPIC_PASSED]
    names = {name for name, _ in sent}
    return [*(h for h in provider.auth_headers() if h[0] not in names), *sent]


def start_messages(x: Exchange, body: bytes) -> list[Effect]:
    """``POST /v1/messages``: relayed to a provider with the Messages API (Anthropic),
    translated to and from chat completions for any other.

    A model that names no provider (``claude-...``) is Anthropic's, unless it is a
    routing alias.

    Raises:
        BadRequest: malformed JSON, an unroutable model, image input while vision is
            off, or a request that cannot be translated.
        Forbidden: the model policy refuses the model.
    """
    gateway = x.gateway
    request, model_at = parse_request(body)
    client_model = request.get("model")
    alias = _alias_of(x, request)
    if alias is not None:  # the alias's first choice: no retries here (docs/routing.md)
        route = _route_of(x, _first_choice(x, alias))
    else:
        route = route_request(gateway, request, x.query_param("provider"), "anthropic")
    check_vision(gateway.settings.enable_vision, request, route.model)
    provider = route.provider
    stream = request.get("stream") is True
    path = provider.spec.messages_path
    if path is not None:
        return relay(x, provider, route.model, "POST",
                     provider.url(path) + _forwarded_query(x),
                     with_model(body, request, route.model, model_at), stream=stream,
                     auth=_anthropic_auth(x, provider))
    chat = messages_to_chat(request, route.model)
    if stream and provider.spec.stream_usage:
        chat["stream_options"] = {"include_usage": True}
    chat_body = encode_request(chat)
    headers = _outbound(x, provider, chat_body, stream=stream)
    flow = TranslatedMessages(x, provider, route.model, client_model=str(client_model),
                              stream=stream)
    return x.begin(flow, [CallProvider(0, provider.id, "POST",
                                       provider.url(provider.spec.chat_path), headers,
                                       chat_body)])


def count_tokens(x: Exchange, body: bytes) -> list[Effect]:
    """``POST /v1/messages/count_tokens``: relayed to a provider with the Messages API.

    Raises:
        BadRequest: malformed JSON, an unroutable model, or a provider that cannot
            count (no provider's chat API counts tokens without generating).
        Forbidden: the model policy refuses the model.
    """
    request, model_at = parse_request(body)
    route = route_request(x.gateway, request, x.query_param("provider"), "anthropic")
    provider = route.provider
    path = _served(provider, _messages_path, "token counting (the Messages API)")
    return relay(x, provider, route.model, "POST",
                 provider.url(path + "/count_tokens") + _forwarded_query(x),
                 with_model(body, request, route.model, model_at),
                 auth=_anthropic_auth(x, provider))


def _anthropic_upstream(status: int, body: bytes, provider: str,
                        secrets: tuple[str, ...]) -> bytes:
    """A provider's error in Anthropic's shape: Anthropic's own kept byte for byte."""
    body = scrub_bytes(body, secrets)
    return body if _is_anthropic_error(body) else translate_error(status, body)


def _is_anthropic_error(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return False
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return (parsed.get("type") == "error" and isinstance(error, dict)  # type: ignore[union-attr]
            and isinstance(error.get("type"), str) and isinstance(error.get("message"), str))


#: Anthropic's error shape, which Anthropic SDKs show.
ANTHROPIC_ERRORS = ErrorShape(lambda error: anthropic_error(error.status, error.message),
                              _anthropic_upstream)
_ANTHROPIC_PASSED: Final = frozenset({b"anthropic-version", b"anthropic-beta"})


# -- /proxy --------------------------------------------------------------------------------


def check_proxy(x: Exchange) -> list[Effect]:
    """Refuse an unknown or unusable provider before reading the body.

    Raises:
        BadRequest: no such provider, or it has no key.
    """
    lookup_provider(x.gateway.providers, split_proxy_path(x.head.path)[0])
    return []


def start_proxy(x: Exchange, body: bytes) -> list[Effect]:
    """Forward the request unchanged (method, path, query, body) with the provider's key."""
    head = x.head
    name, rest = split_proxy_path(head.path)
    provider = lookup_provider(x.gateway.providers, name)
    url = proxy_url(provider, rest, head.query)
    relay = RelayFlow(x, provider, proxied=True)
    return x.begin(relay, [CallProvider(0, provider.id, head.method, url,
                                        proxy_headers(head.headers, provider), body)])


# -- models and tools ----------------------------------------------------------------------


def list_models(x: Exchange) -> list[Effect]:
    """``GET /v1/models``: every configured provider's models, or ``?provider=``'s."""
    name = x.query_param("provider")
    aliases: list[dict[str, Any]] = []
    if name:
        providers = [lookup_provider(x.gateway.providers, name)]
    else:
        providers = [p for p in x.gateway.providers.values() if p.configured]
        router = x.gateway.routing.router
        if router is not None:
            aliases = alias_models(router.table.aliases, x.gateway.policy)
    if not providers:
        return x.respond_json(200, {"object": "list", "data": aliases})
    flow = ModelsFlow(x, providers, single=bool(name), extra=aliases)
    return x.begin(flow, flow.start())


def get_model(x: Exchange) -> list[Effect]:
    """``GET /v1/models/{provider}/{model}``: one model, looked up in its provider's list.

    Raises:
        NotFound: the model policy hides it.
    """
    model_id = unquote_plus(x.head.path[len(_MODEL_PREFIX):])
    router = x.gateway.routing.router
    if router is not None and model_id in router.table.aliases:
        found = alias_models((model_id,), x.gateway.policy)
        if not found:
            raise NotFound(f"model '{model_id}' not found")
        return x.respond_json(200, found[0])
    route = route_model(x.gateway.providers, model_id, None)
    if not x.gateway.policy.permits(route.provider.id, route.model):
        raise NotFound(f"model '{route.full_id}' not found")
    flow = ModelsFlow(x, [route.provider], single=True, wanted=route.full_id)
    return x.begin(flow, flow.start())


def list_tools(x: Exchange) -> list[Effect]:
    """``GET /v1/mcp/tools``: the MCP tools, when ``MCP_EXPOSE=true``.

    Raises:
        Forbidden: the list is not exposed.
    """
    if not x.gateway.settings.mcp_expose:
        raise Forbidden("the MCP tool list is not exposed; set MCP_EXPOSE=true to list it",
                        code="mcp_not_exposed")
    return x.respond_json(200, x.tools.listing())


def openapi_document(x: Exchange) -> list[Effect]:
    """``GET /openapi.json``: the OpenAPI document of this surface."""
    return x.respond_bytes(200, document_bytes())


def no_route(x: Exchange) -> list[Effect]:
    """Refuse a path the gateway does not serve.

    Raises:
        NotFound: always.
    """
    raise NotFound(f"no route for {x.head.method} {x.head.path}")


# -- the table -----------------------------------------------------------------------------

_MODEL_PREFIX: Final = "/v1/models/"
_GET = ("GET",)
_POST = ("POST",)
_RESPONSES: Final = "/v1/responses"
#: Routes matched by the whole path.
EXACT: Final[dict[str, Endpoint]] = {
    "/v1/chat/completions": Endpoint("/v1/chat/completions", _POST, True, on_body=start_chat),
    "/v1/embeddings": Endpoint("/v1/embeddings", _POST, True, on_body=start_embeddings),
    _RESPONSES: Endpoint(_RESPONSES, _POST, True, on_body=start_response),
    "/v1/messages": Endpoint("/v1/messages", _POST, True, on_body=start_messages,
                             errors=ANTHROPIC_ERRORS),
    "/v1/messages/count_tokens": Endpoint("/v1/messages/count_tokens", _POST, True,
                                          on_body=count_tokens, errors=ANTHROPIC_ERRORS),
    "/v1/models": Endpoint("/v1/models", _GET, True, on_head=list_models),
    "/v1/mcp/tools": Endpoint("/v1/mcp/tools", _GET, False, on_head=list_tools),
    "/openapi.json": Endpoint("/openapi.json", _GET, False, on_head=openapi_document),
}
_MODEL: Final = Endpoint("/v1/models", _GET, True, on_head=get_model)
_RESPONSE: Final = Endpoint(_RESPONSES, ("GET", "POST", "DELETE"), True, on_body=response_resource)
_PROXY: Final = Endpoint("/proxy", None, False, on_head=check_proxy, on_body=start_proxy)
_NOT_FOUND: Final = Endpoint("other", None, False, on_head=no_route)


def refusal_for(gateway: Gateway, path: str, error: GatewayError) -> bytes:
    """Return the body of ``error`` in the shape the clients of ``path`` read (Anthropic's
    on ``/v1/messages``; OpenAI's on the other endpoints, and for no path)."""
    return find_endpoint(gateway, path).errors.refusal(error)


def find_endpoint(gateway: Gateway, path: str) -> Endpoint:
    """Return the endpoint serving ``path`` (a refusing one when none does)."""
    found = EXACT.get(path)
    if found is not None:
        return found
    if path.startswith(_MODEL_PREFIX):
        return _MODEL
    if path.startswith(_RESPONSES) and path[len(_RESPONSES):len(_RESPONSES) + 1] == "/":
        return _RESPONSE
    if path.startswith(PROXY_PREFIX) and gateway.settings.proxy_enable:
        return _PROXY
    return _NOT_FOUND
