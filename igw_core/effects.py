"""Effects: what an :class:`~igw_core.exchange.Exchange` asks its frontend to do.

Effects are imperatives; the frontend's IO layer performs them in order and
feeds the outcome back as events. Don't subclass these, and don't change one once
made (they are not frozen for the reason :mod:`igw_core.events` gives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from igw_core.events import Headers
from igw_core.report import ExchangeRecord
from igw_core.usage import ResponseTap


@mypyc_attr(acyclic=True)
class Effect:
    """Base class of every effect an exchange emits."""

    __slots__ = ()


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ReadRequestBody(Effect):
    """Read the client's request body and feed ``RequestData``... ``RequestEnd``."""


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class CallProvider(Effect):
    """Send an HTTP request to a provider.

    Fields:
        call: an id unique within the exchange, echoed by the resulting events.
        provider: the provider id (``"demo"`` is answered in-process).
        method: the HTTP method.
        url: the absolute URL.
        headers: request headers, credentials included; framing headers excluded.
        body: the request body.
        buffer: if true, read the whole response and feed one ``ProviderResponse``;
            otherwise feed ``ProviderHead`` and wait for ``RelayBody`` or
            ``ReadProviderBody``.
        head_timeout: seconds this call may take until its response head, when shorter
            than the client's own limits (a routing alias's per-attempt ``timeout``);
            past it feed ``ProviderFailed`` with reason ``TIMEOUT``.
    """

    call: int
    provider: str
    method: str
    url: str
    headers: Headers
    body: bytes
    buffer: bool = False
    head_timeout: float | None = None

    def __init__(self, call: int, provider: str, method: str, url: str, headers: Headers,
                 body: bytes, buffer: bool = False, head_timeout: float | None = None) -> None:
        self.call = call
        self.provider = provider
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.buffer = buffer
        self.head_timeout = head_timeout


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class CallTool(Effect):
    """Call an MCP tool and feed a ``ToolResult`` with the same ``call`` id.

    Effects of one round come together and may run in parallel. A failure (server
    down, JSON-RPC error, ``MCP_REQUEST_TIMEOUT``) is fed as ``ToolResult(ok=False)``.

    Fields:
        call: an id unique within the exchange, echoed by the ``ToolResult``.
        server: the MCP server's URL.
        tool: the tool's name on that server.
        arguments: the tool's arguments object.
    """

    call: int
    server: str
    tool: str
    arguments: dict[str, Any]

    def __init__(self, call: int, server: str, tool: str, arguments: dict[str, Any]) -> None:
        self.call = call
        self.server = server
        self.tool = tool
        self.arguments = arguments


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RelayBody(Effect):
    """Copy call ``call``'s response body to the client as it arrives, unchanged.

    ``tap``, when set, is shown every chunk (a class, not a Protocol: compiled, its
    ``feed`` is a direct call per chunk). When the body ends feed ``ProviderEnd``; if
    it breaks feed ``ProviderFailed``.
    """

    call: int
    tap: ResponseTap | None = None

    def __init__(self, call: int, tap: ResponseTap | None = None) -> None:
        self.call = call
        self.tap = tap


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ReadProviderBody(Effect):
    """Feed call ``call``'s response body as ``ProviderData`` events, then ``ProviderEnd``."""

    call: int

    def __init__(self, call: int) -> None:
        self.call = call


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RefreshKeys(Effect):
    """Refetch the issuer's keys (rate-limited by the IO layer), then feed ``KeysRefreshed``.

    ``kid`` is the unknown key id that prompted it (``""`` if none).
    """

    kid: str

    def __init__(self, kid: str) -> None:
        self.kid = kid


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class SendHead(Effect):
    """Send the client a response head.

    ``headers`` never contains framing headers except ``content-length`` when
    the body length is known; the frontend chooses chunked framing otherwise.
    """

    status: int
    headers: Headers

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class SendData(Effect):
    """Send the client these body bytes."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class SendEnd(Effect):
    """The response is complete."""


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class Abort(Effect):
    """Break the client connection: the response cannot be completed honestly."""


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class Report(Effect):
    """A finished exchange's facts, for metrics and the access log."""

    record: ExchangeRecord

    def __init__(self, record: ExchangeRecord) -> None:
        self.record = record
