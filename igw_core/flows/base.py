"""What every flow shares: a transition table, the facts it reports, the exchange it serves."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from mypy_extensions import mypyc_attr

from igw_core.effects import CallProvider, Effect
from igw_core.errors import LocalProtocolError, UpstreamTimeout, UpstreamUnreachable
from igw_core.events import ClientGone, Event, FailureReason, ProviderFailed
from igw_core.redact import scrub
from igw_core.report import ToolCallFact, Usage
from igw_core.router import AttemptFact, Attempts, Choice

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider

#: Largest provider body (a completion, an error, a model list) the core buffers.
MAX_BUFFERED: Final = 8 * 1024 * 1024



class TableState(enum.Enum):
    """Base of the states that key transition tables: hashed by identity.

    ``enum.Enum`` hashes a member by its name in Python code, and every event looks up
    a ``(state, kind)`` key; members are singletons, so identity is the same equality.
    """

    __hash__ = object.__hash__


Handler = Callable[[Any, Any], list[Effect]]
Entry = tuple[Handler, TableState | None]
#: ``state -> event kind -> (handler, next state)``, made by :func:`by_state`; a next state
#: of ``None`` means the handler moves on by itself (where the way on is decided by the
#: event's content).
Table = dict[TableState, dict[type, Entry]]

_S = TypeVar("_S", bound=TableState)
_E = TypeVar("_E")


def by_state(entries: dict[tuple[_S, type], _E]) -> dict[_S, dict[type, _E]]:
    """Return the ``(state, event kind) -> entry`` table ``entries`` keyed by state, then kind.

    Two lookups by identity cost about half of one by a ``(state, kind)`` tuple, which is
    built, hashed and compared item by item for every event.
    """
    table: dict[_S, dict[type, _E]] = {}
    for (state, kind), entry in entries.items():
        table.setdefault(state, {})[kind] = entry
    return table


class ErrorHead:
    """Table key: a provider head with a non-2xx status, whose body is read whole."""


@mypyc_attr(free_list_len=1, acyclic=True)
class BodyBuffer:
    """A provider body read whole: kept up to :data:`MAX_BUFFERED` bytes, counted beyond."""

    __slots__ = ("_parts", "size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        """Keep ``data`` (only count it once the limit is passed)."""
        self.size += len(data)
        if self.size <= MAX_BUFFERED:
            self._parts.append(data)

    @property
    def over(self) -> bool:
        """Whether the body passed the limit (what was kept is cut short)."""
        return self.size > MAX_BUFFERED

    def take(self) -> bytes:
        """Return what was kept and start over empty."""
        body = b"".join(self._parts)
        self._parts, self.size = [], 0
        return body


@dataclass(slots=True, init=False)
class Routed:
    """A request for a routing alias: its walk over the deployments, and how to send to one.

    Fields:
        alias: the alias the client named.
        attempts: the router's walk for this request.
        choice: the deployment being tried.
        send: builds the provider call for a choice, with the given call id.
        started: when the current attempt was sent (monotonic).
    """

    alias: str
    attempts: Attempts
    choice: Choice
    send: Callable[[Choice, int], CallProvider]
    started: float

    def __init__(self, alias: str, attempts: Attempts, choice: Choice,
                 send: Callable[[Choice, int], CallProvider], started: float) -> None:
        self.alias = alias
        self.attempts = attempts
        self.choice = choice
        self.send = send
        self.started = started


class Flow:
    """One endpoint's work after routing: a state machine driven by a transition table.

    Subclasses pass their :data:`Table`, their starting state and their end state, and
    may override :meth:`kind` to split one event type into the cases their table names.
    A flow that reaches its end state has sent (or aborted) its whole response; the
    exchange then reports what the flow recorded in these attributes:

    Attributes:
        provider: the provider called, when there is one.
        model: the model as forwarded (without the provider prefix), or ``""``.
        streamed: whether the client gets an event stream.
        status: the status the client got.
        usage: token counts, when the provider reported them.
        first_byte: monotonic time the first body bytes went to the client.
        error: a short reason when it did not end well, else ``""``.
        tool_calls: MCP tool calls executed.
        routed: the routing alias walk behind its provider calls, if any.
    """

    def __init__(self, exchange: Exchange, table: Table, state: TableState,
                 done: TableState) -> None:
        # The table and end state are arguments, not class attributes: compiled, a class
        # attribute read through the instance is a dictionary walk of the class and its
        # bases, where a subclass passes a module constant directly.
        self.exchange = exchange
        self.table = table
        self.state = state
        self.done = done
        self.provider: Provider | None = None
        self.model = ""
        self.streamed = False
        self.status = 0
        self.usage: Usage | None = None
        self.first_byte: float | None = None
        self.error = ""
        self.tool_calls: tuple[ToolCallFact, ...] = ()
        self.routed: Routed | None = None

    @property
    def finished(self) -> bool:
        """Whether the response is complete (or aborted) and only the report is left."""
        return self.state is self.done

    def kind(self, event: Event) -> type:
        """Return the table key for ``event``: its type, unless a subclass splits it."""
        return type(event)

    def receive(self, event: Event) -> list[Effect]:
        """Feed one event; return the effects to perform.

        Raises:
            LocalProtocolError: the table has no entry for this event in this state
                (the state is left unchanged).
            GatewayError: the request cannot be completed; the exchange answers it.
        """
        entries = self.table.get(self.state)
        entry = None if entries is None else entries.get(self.kind(event))
        if entry is None:
            raise LocalProtocolError(
                f"{type(event).__name__} is not legal in {type(self).__name__} "
                f"state {self.state.name.lower()}")
        handler, after = entry
        effects = handler(self, event)
        if after is not None:
            self.state = after
        return effects

    def route_facts(self) -> tuple[list[AttemptFact], list[tuple[str, str, str]]]:
        """The routed attempts' outcomes and the deployments that began a cool-down."""
        routed = self.routed
        if routed is None:
            return [], []
        return routed.attempts.facts, routed.attempts.cooled

    def on_client_gone(self, event: ClientGone) -> bool:
        """Return whether the client had its whole answer when it left (not a 499)."""
        return False


def provider_failure(
    provider: str, failed: ProviderFailed, secrets: tuple[str, ...]
) -> UpstreamTimeout | UpstreamUnreachable:
    """Return the error (504 or 502) that tells the client a provider call failed.

    The failure's detail is scrubbed of ``secrets`` (the provider keys).
    """
    detail = scrub(failed.detail, secrets)
    if failed.reason is FailureReason.TIMEOUT:
        return UpstreamTimeout(f"upstream {provider} timed out: {detail}")
    return UpstreamUnreachable(f"upstream {provider} unreachable: {detail}")
