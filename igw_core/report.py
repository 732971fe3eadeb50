"""The facts an exchange reports when it ends, for metrics and access logs.

The core only states what happened; recording into Prometheus and writing log
lines happen in the IO layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from igw_core.router import AttemptFact

#: Route labels are drawn from this fixed set so metrics never grow per path.
ROUTE_LABELS = frozenset({
    "/health", "/v1/models", "/v1/chat/completions", "/v1/mcp/tools", "/proxy", "other",
    "/ready", "/openapi.json", "/v1/embeddings", "/v1/responses", "/v1/messages",
    "/v1/messages/count_tokens",
})


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the provider."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallFact:
    """One MCP tool call the gateway executed during an exchange.

    Fields:
        name: the tool's name as its MCP server lists it (without the ``mcp_`` prefix).
        ok: whether the call returned a result (``False`` for an error or a timeout).
        duration: seconds the call took, from the clock the core was given.
    """

    name: str
    ok: bool
    duration: float


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ExchangeRecord:
    """What one request did (read-only by convention; not frozen, as events are not).

    Fields:
        request_id: the id sent back in ``X-Request-Id``.
        method: the request method.
        route: a label from :data:`ROUTE_LABELS`.
        path: the raw request path (for the access log only, never a metric label).
        status: the status the client received (499 if it left first).
        provider: the provider id, or ``""``.
        model: the model as forwarded (without the provider prefix), or ``""``.
        streamed: whether the response was an event stream.
        started: monotonic time the head arrived.
        ended: monotonic time the exchange finished.
        first_byte: monotonic time of the first body byte sent to the client.
        usage: token counts, when the provider reported them.
        counted: whether telemetry counts this exchange (not ``/proxy``/``/health``).
        tool_calls: the MCP tool calls executed for this exchange, in order.
        error: a short reason for a refusal or failure, ``""`` on success.
        alias: the routing alias the client named, ``""`` when it named no alias.
        attempts: each routed attempt's outcome, in order.
        cooled: the deployments (alias, provider, model) that began a cool-down.
    """

    request_id: str
    method: str
    route: str
    path: str
    status: int
    provider: str = ""
    model: str = ""
    streamed: bool = False
    started: float = 0.0
    ended: float = 0.0
    first_byte: float | None = None
    usage: Usage | None = None
    counted: bool = True
    error: str = ""
    tool_calls: tuple[ToolCallFact, ...] = ()
    alias: str = ""
    attempts: tuple[AttemptFact, ...] = ()
    cooled: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, request_id: str, method: str, route: str, path: str, status: int,
                 provider: str = "", model: str = "", streamed: bool = False,
                 started: float = 0.0, ended: float = 0.0,
                 first_byte: float | None = None, usage: Usage | None = None,
                 counted: bool = True, error: str = "",
                 tool_calls: tuple[ToolCallFact, ...] = (), alias: str = "",
                 attempts: tuple[AttemptFact, ...] = (),
                 cooled: tuple[tuple[str, str, str], ...] = ()) -> None:
        self.request_id = request_id
        self.method = method
        self.route = route
        self.path = path
        self.status = status
        self.provider = provider
        self.model = model
        self.streamed = streamed
        self.started = started
        self.ended = ended
        self.first_byte = first_byte
        self.usage = usage
        self.counted = counted
        self.error = error
        self.tool_calls = tool_calls
        self.alias = alias
        self.attempts = attempts
        self.cooled = cooled

    @property
    def duration(self) -> float:
        """Seconds from head to end."""
        return self.ended - self.started
