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
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from igw_core import headers as hdrs
from igw_core.chat import plan_chat
from igw_core.effects import CallProvider, Effect
from igw_core.errors import Forbidden, NotFound
from igw_core.flows.models import ModelsFlow
from igw_core.flows.relay import RelayFlow
from igw_core.gateway import Gateway
from igw_core.mcp.agent import AgentRun
from igw_core.mcp.loop import AgentLoop
from igw_core.proxy import PREFIX as PROXY_PREFIX
from igw_core.proxy import proxy_headers, proxy_url, split_proxy_path
from igw_core.redact import scrub, truncate_chat_request
from igw_core.responses import OPENAI_ERRORS, ErrorShape
from igw_core.routing import lookup_provider, route_model

if TYPE_CHECKING:
    from igw_core.exchange import Exchange

log = logging.getLogger("igw.exchange")


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

    Raises:
        GatewayError: what :func:`~igw_core.chat.plan_chat` refuses.
    """
    gateway = x.gateway
    plan = plan_chat(gateway, body, x.query_param("provider"))
    provider = plan.route.provider
    settings = gateway.settings
    if settings.is_development:
        shown = truncate_chat_request(plan.request, words=settings.debug_content_truncate_words,
                                      max_messages=settings.debug_max_messages)
        log.debug(
            "outbound provider request",
            extra={"request_id": x.request_id, "provider": provider.id,
                   "body": scrub(json.dumps(shown, ensure_ascii=False), gateway.secrets)},
        )
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if plan.stream else b"application/json"),
        (b"accept-encoding", b"identity"),
        (b"x-request-id", x.request_id.encode()),
        *provider.auth_headers(),
    ]
    url = provider.url(provider.spec.chat_path)
    if _use_agent(x):
        agent = AgentRun(x, AgentLoop(plan.request, x.tools, stream=plan.stream), provider,
                         url, headers)
        agent.model = plan.route.model
        return x.begin(agent, agent.start(x.started))
    relay = RelayFlow(x, provider, plan.route.model)
    return x.begin(relay, [CallProvider(0, provider.id, "POST", url, headers, plan.body)])


def _use_agent(x: Exchange) -> bool:
    """Whether MCP tools apply: on, some available, and no ``X-MCP-Bypass: true``."""
    if not (x.gateway.settings.mcp_enable and x.tools):
        return False
    bypass = hdrs.get(x.head.headers, b"x-mcp-bypass")
    return bypass is None or bypass.strip().lower() != b"true"


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
    if name:
        providers = [lookup_provider(x.gateway.providers, name)]
    else:
        providers = [p for p in x.gateway.providers.values() if p.configured]
    if not providers:
        return x.respond_json(200, {"object": "list", "data": []})
    flow = ModelsFlow(x, providers, single=bool(name))
    return x.begin(flow, flow.start())


def get_model(x: Exchange) -> list[Effect]:
    """``GET /v1/models/{provider}/{model}``: one model, looked up in its provider's list.

    Raises:
        NotFound: the model policy hides it.
    """
    model_id = unquote_plus(x.head.path[len(_MODEL_PREFIX):])
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


def no_route(x: Exchange) -> list[Effect]:
    """Refuse a path the gateway does not serve.

    Raises:
        NotFound: always.
    """
    raise NotFound(f"no route for {x.head.method} {x.head.path}")


# -- the table -----------------------------------------------------------------------------

_MODEL_PREFIX = "/v1/models/"
_GET = ("GET",)
_POST = ("POST",)
#: Routes matched by the whole path.
EXACT: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint("/v1/chat/completions", _POST, True, on_body=start_chat),
    "/v1/models": Endpoint("/v1/models", _GET, True, on_head=list_models),
    "/v1/mcp/tools": Endpoint("/v1/mcp/tools", _GET, False, on_head=list_tools),
}
_MODEL = Endpoint("/v1/models", _GET, True, on_head=get_model)
_PROXY = Endpoint("/proxy", None, False, on_head=check_proxy, on_body=start_proxy)
_NOT_FOUND = Endpoint("other", None, False, on_head=no_route)


def find_endpoint(gateway: Gateway, path: str) -> Endpoint:
    """Return the endpoint serving ``path`` (a refusing one when none does)."""
    found = EXACT.get(path)
    if found is not None:
        return found
    if path.startswith(_MODEL_PREFIX):
        return _MODEL
    if path.startswith(PROXY_PREFIX) and gateway.settings.proxy_enable:
        return _PROXY
    return _NOT_FOUND
