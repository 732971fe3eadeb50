"""One MCP server session over Streamable HTTP, as an IO-free state machine.

:class:`MCPSession` emits :class:`SendRequest` outputs ("send this HTTP request") and is
fed the responses as :class:`ResponseHead` / :class:`ResponseData` / :class:`ResponseEnd`
or :class:`RequestFailed` events; it answers with more requests and with the outcome of
each operation (:class:`OperationDone` / :class:`OperationFailed`). The lifecycle is
``initialize`` -> ``notifications/initialized`` -> ready, as :data:`STARTS` says.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from igw_core.errors import LocalProtocolError
from igw_core.mcp.jsonrpc import (
    MalformedResponse,
    MCPError,
    ResponseReader,
    encode_notification,
    encode_request,
)

__all__ = [
    "HANDSHAKE_VERSIONS",
    "LATEST_VERSION",
    "HTTPStatusError",
    "MCPSession",
    "OperationDone",
    "OperationFailed",
    "Output",
    "RequestFailed",
    "ResponseData",
    "ResponseEnd",
    "ResponseHead",
    "SendRequest",
    "SessionExpired",
    "SessionState",
    "TransportError",
    "UnsupportedVersion",
]

#: Protocol revisions this client negotiates through ``initialize``, oldest first.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: The revision offered in ``initialize``.
LATEST_VERSION = HANDSHAKE_VERSIONS[-1]
#: Stop following ``nextCursor`` after this many ``tools/list`` pages (a looping server).
MAX_PAGES = 100
#: How much of an HTTP error body is kept for the error message.
_ERROR_BODY = 512

Headers = Sequence[tuple[bytes, bytes]]


class HTTPStatusError(MCPError):
    """The server answered with an HTTP status other than success.

    Attributes:
        status: the HTTP status.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.status = status


class SessionExpired(HTTPStatusError):
    """HTTP 404 to a request carrying our ``Mcp-Session-Id``: initialize a new session."""


class TransportError(MCPError):
    """The HTTP request failed below HTTP: connect, TLS, reset, or a timeout."""


class UnsupportedVersion(MCPError):
    """The server chose a protocol revision this client does not speak."""


class SessionState(enum.Enum):
    """Where a session is in its lifecycle."""

    IDLE = "idle"  # never initialized
    INITIALIZING = "initializing"  # initialize sent, waiting for its result
    NOTIFYING = "notifying"  # notifications/initialized sent, waiting for 202
    READY = "ready"  # requests may be sent
    EXPIRED = "expired"  # the server forgot our session (404): initialize again
    FAILED = "failed"  # the handshake failed: initialize again
    CLOSED = "closed"  # close() was called; nothing more happens


#: The states :meth:`MCPSession.initialize` may start from.
STARTS = frozenset({SessionState.IDLE, SessionState.EXPIRED, SessionState.FAILED})


# -- events: what the IO layer tells the session ----------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The response head of request ``send`` arrived."""

    send: int
    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class ResponseData:
    """A piece of request ``send``'s response body."""

    send: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ResponseEnd:
    """Request ``send``'s response body is complete."""

    send: int


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Request ``send`` failed before its answer was complete (or was abandoned).

    Fields:
        send: the request.
        detail: the underlying error's text (TCP, TLS, timeout).
    """

    send: int
    detail: str


Event = ResponseHead | ResponseData | ResponseEnd | RequestFailed


# -- outputs: what the session asks for and reports --------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send this HTTP request and feed its response back under ``send``.

    Fields:
        send: an id unique within the session.
        method: ``POST`` (or ``DELETE`` on close).
        url: the server's endpoint.
        headers: lower-case request headers; framing headers excluded.
        body: the JSON-RPC message.
        expects_response: false for ``DELETE`` (fire and forget).
    """

    send: int
    method: str
    url: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    expects_response: bool = True


@dataclass(frozen=True, slots=True)
class OperationDone:
    """Operation ``op`` succeeded with ``result`` (the JSON-RPC result object)."""

    op: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OperationFailed:
    """Operation ``op`` failed with ``error``."""

    op: int
    error: MCPError


Output = SendRequest | OperationDone | OperationFailed


class _Kind(enum.Enum):
    INITIALIZE = "initialize"
    NOTIFY = "notifications/initialized"
    LIST_TOOLS = "tools/list"
    CALL_TOOL = "tools/call"
    PING = "ping"


@dataclass(slots=True)
class _Operation:
    kind: _Kind
    params: dict[str, Any] | None = None
    tools: list[Any] = field(default_factory=list)
    pages: int = 0
    init_result: dict[str, Any] | None = None


@dataclass(slots=True)
class _Send:
    op: int
    kind: _Kind
    rpc_id: int | None
    session_id: str | None
    status: int = 0
    reader: ResponseReader | None = None
    error_body: bytearray | None = None
    new_session_id: str | None = None


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class MCPSession:
    """The client side of one MCP server session (see the module docstring).

    Start with :meth:`initialize`; once :attr:`state` is ``READY`` call :meth:`list_tools`,
    :meth:`call_tool` or :meth:`ping`. Each returns an operation id and outputs to perform;
    perform every :class:`SendRequest` and feed its response with :meth:`receive` until the
    operation's :class:`OperationDone` or :class:`OperationFailed` comes out. Several
    operations may be in flight at once.
    """

    def __init__(
        self, url: str, *, client_name: str = "igw", client_version: str = "0.1.0"
    ) -> None:
        self.url = url
        self.state = SessionState.IDLE
        #: The ``Mcp-Session-Id`` the server assigned, if any.
        self.session_id: str | None = None
        #: The negotiated protocol revision, once initialized.
        self.protocol_version: str | None = None
        #: The server's ``serverInfo`` and ``capabilities`` from ``initialize``.
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self._client_info = {"name": client_name, "version": client_version}
        self._next_op = 0
        self._next_send = 0
        self._next_rpc = 0
        self._ops: dict[int, _Operation] = {}
        self._sends: dict[int, _Send] = {}

    # -- starting operations ------------------------------------------------------------

    def initialize(self) -> tuple[int, list[Output]]:
        """Start a new session: ``initialize`` then ``notifications/initialized``.

        Any previous session id is forgotten. The operation's result is the server's
        ``initialize`` result.

        Raises:
            LocalProtocolError: the session is not in one of :data:`STARTS`.
        """
        if self.state not in STARTS:
            raise LocalProtocolError(f"cannot initialize in state {self.state.value}")
        self.state = SessionState.INITIALIZING
        self.session_id = None
        self.protocol_version = None
        params = {
            "protocolVersion": LATEST_VERSION,
            "capabilities": {},
            "clientInfo": dict(self._client_info),
        }
        op = self._new_op(_Operation(_Kind.INITIALIZE, params))
        return op, [self._request(op, _Kind.INITIALIZE, params)]

    def list_tools(self) -> tuple[int, list[Output]]:
        """Ask for every tool, following ``nextCursor`` across pages.

        The result is ``{"tools": [...]}`` with the tools of all pages in order.

        Raises:
            LocalProtocolError: the session is not ``READY``.
        """
        self._require_ready()
        op = self._new_op(_Operation(_Kind.LIST_TOOLS))
        return op, [self._request(op, _Kind.LIST_TOOLS, None)]

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> tuple[int, list[Output]]:
        """Call tool ``name``; the result is the ``tools/call`` result object.

        Raises:
            LocalProtocolError: the session is not ``READY``.
        """
        self._require_ready()
        params = {"name": name, "arguments": dict(arguments)}
        op = self._new_op(_Operation(_Kind.CALL_TOOL, params))
        return op, [self._request(op, _Kind.CALL_TOOL, params)]

    def ping(self) -> tuple[int, list[Output]]:
        """Send ``ping``; the result is the (empty) result object.

        Raises:
            LocalProtocolError: the session is not ``READY``.
        """
        self._require_ready()
        op = self._new_op(_Operation(_Kind.PING))
        return op, [self._request(op, _Kind.PING, None)]

    def close(self) -> list[Output]:
        """End the session: a ``DELETE`` with the session id when there is one.

        Operations still in flight are forgotten; feeding their responses later raises.
        """
        outputs: list[Output] = []
        if self.session_id is not None and self.state is not SessionState.CLOSED:
            self._next_send += 1
            outputs.append(SendRequest(self._next_send, "DELETE", self.url,
                                       self._headers(self.session_id), b"",
                                       expects_response=False))
        self.state = SessionState.CLOSED
        self.session_id = None
        self._ops.clear()
        self._sends.clear()
        return outputs

    def expects(self, send: int) -> bool:
        """Whether request ``send`` still wants its response fed."""
        return send in self._sends

    # -- feeding responses --------------------------------------------------------------

    def receive(self, event: Event) -> list[Output]:
        """Feed the outcome of a request and return what to do next.

        Raises:
            LocalProtocolError: ``event`` names a request the session is not waiting for,
                or a head arrives twice.
        """
        entry = self._sends.get(event.send)
        if entry is None:
            raise LocalProtocolError(f"no request {event.send} is awaiting a response")
        if isinstance(event, ResponseHead):
            return self._on_head(event, entry)
        if isinstance(event, RequestFailed):
            return self._settle(event.send, TransportError(event.detail))
        if entry.status == 0:
            raise LocalProtocolError(f"body of request {event.send} before its head")
        if isinstance(event, ResponseData):
            return self._on_data(event, entry)
        return self._on_end(event, entry)

    def _on_head(self, event: ResponseHead, entry: _Send) -> list[Output]:
        if entry.status:
            raise LocalProtocolError(f"second response head for request {event.send}")
        entry.status = event.status
        if entry.kind is _Kind.INITIALIZE:
            entry.new_session_id = _header(event.headers, b"mcp-session-id")
        if event.status == 404 and entry.session_id is not None:
            if entry.session_id == self.session_id and self.state is SessionState.READY:
                self.state = SessionState.EXPIRED
                self.session_id = None
            return self._settle(event.send, SessionExpired(404, "session expired"))
        if not 200 <= event.status < 300:
            entry.error_body = bytearray()
            return []
        if entry.rpc_id is None:  # a notification: 202 Accepted, nothing to read
            return self._on_notified(event.send, entry)
        content_type = _header(event.headers, b"content-type") or ""
        entry.reader = ResponseReader(entry.rpc_id, content_type)
        return []

    def _on_data(self, event: ResponseData, entry: _Send) -> list[Output]:
        if entry.error_body is not None:
            if len(entry.error_body) < _ERROR_BODY:
                entry.error_body += event.data[: _ERROR_BODY - len(entry.error_body)]
            return []
        assert entry.reader is not None
        try:
            found = entry.reader.feed(event.data)
        except MCPError as error:
            return self._settle(event.send, error)
        return self._on_response(event.send, entry) if found else []

    def _on_end(self, event: ResponseEnd, entry: _Send) -> list[Output]:
        if entry.error_body is not None:
            text = bytes(entry.error_body).decode("utf-8", "replace").strip()
            return self._settle(event.send, HTTPStatusError(entry.status, text))
        assert entry.reader is not None
        try:
            entry.reader.end()
        except MCPError as error:
            return self._settle(event.send, error)
        return self._on_response(event.send, entry)

    def _on_response(self, send: int, entry: _Send) -> list[Output]:
        assert entry.reader is not None
        try:
            result = entry.reader.result()
        except MCPError as error:
            return self._settle(send, error)
        op = self._ops.get(entry.op)
        if op is None:  # pragma: no cover - sends and ops are dropped together
            raise LocalProtocolError(f"operation {entry.op} vanished")
        del self._sends[send]
        if entry.kind is _Kind.INITIALIZE:
            return self._on_initialized(entry, op, result)
        if entry.kind is _Kind.LIST_TOOLS:
            return self._on_tools_page(entry.op, op, result)
        return self._done(entry.op, result)

    # -- per-operation logic -------------------------------------------------------------

    def _on_initialized(self, entry: _Send, op: _Operation, result: dict[str, Any]) -> list[Output]:
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_VERSIONS:
            return self._fail(entry.op, UnsupportedVersion(
                f"server chose protocol version {version!r}; "
                f"this client speaks {', '.join(HANDSHAKE_VERSIONS)}"))
        self.protocol_version = str(version)
        self.session_id = entry.new_session_id
        info = result.get("serverInfo")
        self.server_info = info if isinstance(info, dict) else {}
        capabilities = result.get("capabilities")
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}
        op.init_result = result
        self.state = SessionState.NOTIFYING
        return [self._notification(entry.op, _Kind.NOTIFY)]

    def _on_notified(self, send: int, entry: _Send) -> list[Output]:
        del self._sends[send]
        op = self._ops[entry.op]
        self.state = SessionState.READY
        return self._done(entry.op, op.init_result or {})

    def _on_tools_page(self, op_id: int, op: _Operation, result: dict[str, Any]) -> list[Output]:
        tools = result.get("tools")
        if not isinstance(tools, list):
            return self._fail(op_id, MalformedResponse("tools/list result has no 'tools' array"))
        op.tools.extend(tools)
        op.pages += 1
        cursor = result.get("nextCursor")
        if isinstance(cursor, str) and cursor and op.pages < MAX_PAGES:
            if self.state is not SessionState.READY:
                return self._fail(op_id, SessionExpired(404, "session ended between pages"))
            return [self._request(op_id, _Kind.LIST_TOOLS, {"cursor": cursor})]
        return self._done(op_id, {"tools": op.tools})

    def _settle(self, send: int, error: MCPError) -> list[Output]:
        return self._fail(self._sends.pop(send).op, error)

    def _done(self, op: int, result: dict[str, Any]) -> list[Output]:
        self._ops.pop(op, None)
        return [OperationDone(op, result)]

    def _fail(self, op: int, error: MCPError) -> list[Output]:
        kind = self._ops.pop(op).kind
        if kind is _Kind.INITIALIZE and self.state is not SessionState.CLOSED:
            self.state = SessionState.FAILED
            self.session_id = None
        for send, entry in list(self._sends.items()):
            if entry.op == op:
                del self._sends[send]
        return [OperationFailed(op, error)]

    # -- building requests ---------------------------------------------------------------

    def _require_ready(self) -> None:
        if self.state is not SessionState.READY:
            raise LocalProtocolError(f"session is {self.state.value}, not ready")

    def _new_op(self, operation: _Operation) -> int:
        self._next_op += 1
        self._ops[self._next_op] = operation
        return self._next_op

    def _headers(self, session_id: str | None) -> tuple[tuple[bytes, bytes], ...]:
        headers = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if session_id is not None:
            headers.append((b"mcp-session-id", session_id.encode("latin-1")))
        if self.protocol_version is not None:
            headers.append((b"mcp-protocol-version", self.protocol_version.encode()))
        return tuple(headers)

    def _request(self, op: int, kind: _Kind, params: Mapping[str, Any] | None) -> SendRequest:
        self._next_send += 1
        self._next_rpc += 1
        session_id = None if kind is _Kind.INITIALIZE else self.session_id
        self._sends[self._next_send] = _Send(op, kind, self._next_rpc, session_id)
        body = encode_request(self._next_rpc, kind.value, params)
        return SendRequest(self._next_send, "POST", self.url, self._headers(session_id), body)

    def _notification(self, op: int, kind: _Kind) -> SendRequest:
        self._next_send += 1
        self._sends[self._next_send] = _Send(op, kind, None, self.session_id)
        body = encode_notification(kind.value)
        return SendRequest(self._next_send, "POST", self.url, self._headers(self.session_id), body)
