"""igw_core.mcp.session: the Streamable HTTP lifecycle, pagination and session expiry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.errors import LocalProtocolError
from igw_core.mcp.jsonrpc import JSONRPCError
from igw_core.mcp.session import (
    LATEST_VERSION,
    HTTPStatusError,
    MCPSession,
    OperationDone,
    OperationFailed,
    Output,
    RequestFailed,
    ResponseData,
    ResponseEnd,
    ResponseHead,
    SendRequest,
    SessionExpired,
    SessionState,
    TransportError,
    UnsupportedVersion,
)

URL = "http://tools.test/mcp"
JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream")


def _only_request(outputs: list[Output]) -> SendRequest:
    assert len(outputs) == 1 and isinstance(outputs[0], SendRequest), outputs
    return outputs[0]


def _body(request: SendRequest) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(request.body)
    return parsed


def _headers(request: SendRequest) -> dict[bytes, bytes]:
    return dict(request.headers)


def _answer(session: MCPSession, request: SendRequest, result: dict[str, Any], *,
            status: int = 200, extra: tuple[tuple[bytes, bytes], ...] = (),
            sse: bool = False) -> list[Output]:
    """Feed a whole successful answer to ``request``."""
    message = json.dumps({"jsonrpc": "2.0", "id": _body(request)["id"], "result": result})
    body = f"event: message\ndata: {message}\n\n".encode() if sse else message.encode()
    out = session.receive(ResponseHead(request.send, status, [SSE if sse else JSON, *extra]))
    if session.expects(request.send):
        out += session.receive(ResponseData(request.send, body))
    if session.expects(request.send):
        out += session.receive(ResponseEnd(request.send))
    return out


def _init_result(version: str = LATEST_VERSION) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {"tools": {}},
            "serverInfo": {"name": "t", "version": "1"}}


def _ready(session_id: bytes | None = b"sess-1", version: str = LATEST_VERSION) -> MCPSession:
    session = MCPSession(URL)
    op, outputs = session.initialize()
    init = _only_request(outputs)
    extra = ((b"mcp-session-id", session_id),) if session_id else ()
    notify = _only_request(_answer(session, init, _init_result(version), extra=extra))
    done = session.receive(ResponseHead(notify.send, 202, []))
    assert done == [OperationDone(op, _init_result(version))]
    return session


def test_handshake_sends_initialize_then_initialized_with_the_session_headers() -> None:
    session = MCPSession(URL)
    _, outputs = session.initialize()
    init = _only_request(outputs)
    assert session.state is SessionState.INITIALIZING
    body = _body(init)
    assert body["method"] == "initialize"
    assert body["params"]["protocolVersion"] == LATEST_VERSION
    assert _headers(init)[b"accept"] == b"application/json, text/event-stream"
    assert b"mcp-session-id" not in _headers(init)
    notify = _only_request(_answer(session, init, _init_result(),
                                   extra=((b"Mcp-Session-Id", b"abc"),), sse=True))
    assert session.state is SessionState.NOTIFYING
    assert _body(notify) == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert _headers(notify)[b"mcp-session-id"] == b"abc"
    assert _headers(notify)[b"mcp-protocol-version"] == LATEST_VERSION.encode()
    session.receive(ResponseHead(notify.send, 202, []))
    assert session.state is SessionState.READY
    assert session.session_id == "abc"


def test_the_servers_older_version_is_accepted_and_sent_back() -> None:
    session = _ready(version="2025-03-26")
    _, outputs = session.ping()
    assert _headers(_only_request(outputs))[b"mcp-protocol-version"] == b"2025-03-26"


def test_unknown_protocol_version_fails_the_handshake() -> None:
    session = MCPSession(URL)
    _op, outputs = session.initialize()
    out = _answer(session, _only_request(outputs), _init_result("1999-01-01"))
    assert len(out) == 1 and isinstance(out[0], OperationFailed)
    assert isinstance(out[0].error, UnsupportedVersion)
    assert session.state is SessionState.FAILED


def test_stateless_server_without_session_id_works() -> None:
    session = _ready(session_id=None)
    _, outputs = session.ping()
    assert b"mcp-session-id" not in _headers(_only_request(outputs))


def test_tools_list_follows_next_cursor_across_pages() -> None:
    session = _ready()
    op, outputs = session.list_tools()
    first = _only_request(outputs)
    assert "params" not in _body(first)
    second = _only_request(_answer(session, first, {"tools": [{"name": "a"}], "nextCursor": "p2"}))
    assert _body(second)["params"] == {"cursor": "p2"}
    assert _headers(second)[b"mcp-session-id"] == b"sess-1"
    done = _answer(session, second, {"tools": [{"name": "b"}]}, sse=True)
    assert done == [OperationDone(op, {"tools": [{"name": "a"}, {"name": "b"}]})]


def test_404_with_our_session_expires_it_and_initialize_starts_afresh() -> None:
    session = _ready()
    _op, outputs = session.call_tool("add", {"a": 1})
    request = _only_request(outputs)
    out = session.receive(ResponseHead(request.send, 404, [JSON]))
    assert len(out) == 1 and isinstance(out[0], OperationFailed)
    assert isinstance(out[0].error, SessionExpired)
    assert session.state is SessionState.EXPIRED and session.session_id is None
    assert not session.expects(request.send)
    _, outputs = session.initialize()
    assert b"mcp-session-id" not in _headers(_only_request(outputs))


def test_http_error_status_fails_the_operation_with_the_body_text() -> None:
    session = _ready()
    _op, outputs = session.call_tool("add", {})
    request = _only_request(outputs)
    session.receive(ResponseHead(request.send, 503, [JSON]))
    session.receive(ResponseData(request.send, b"overloaded"))
    out = session.receive(ResponseEnd(request.send))
    assert len(out) == 1 and isinstance(out[0], OperationFailed)
    assert isinstance(out[0].error, HTTPStatusError)
    assert "503" in str(out[0].error) and "overloaded" in str(out[0].error)
    assert session.state is SessionState.READY


def test_transport_failure_during_handshake_fails_the_session() -> None:
    session = MCPSession(URL)
    op, outputs = session.initialize()
    out = session.receive(RequestFailed(_only_request(outputs).send, "ConnectError: refused"))
    assert len(out) == 1 and isinstance(out[0], OperationFailed)
    assert out[0].op == op and isinstance(out[0].error, TransportError)
    assert session.state is SessionState.FAILED
    session.initialize()  # a failed session may start again
    assert session.state is SessionState.INITIALIZING


def test_jsonrpc_error_result_fails_the_operation() -> None:
    session = _ready()
    _op, outputs = session.call_tool("nope", {})
    request = _only_request(outputs)
    session.receive(ResponseHead(request.send, 200, [JSON]))
    body = json.dumps({"jsonrpc": "2.0", "id": _body(request)["id"],
                       "error": {"code": -32602, "message": "Unknown tool"}}).encode()
    session.receive(ResponseData(request.send, body))
    out = session.receive(ResponseEnd(request.send))
    assert isinstance(out[0], OperationFailed) and isinstance(out[0].error, JSONRPCError)


def test_concurrent_operations_complete_in_any_order() -> None:
    session = _ready()
    op1, out1 = session.call_tool("a", {})
    op2, out2 = session.call_tool("b", {})
    r1, r2 = _only_request(out1), _only_request(out2)
    assert _body(r1)["id"] != _body(r2)["id"]
    assert _answer(session, r2, {"n": 2}, sse=True) == [OperationDone(op2, {"n": 2})]
    assert _answer(session, r1, {"n": 1}) == [OperationDone(op1, {"n": 1})]


def test_operations_before_ready_and_unknown_responses_are_refused() -> None:
    session = MCPSession(URL)
    with pytest.raises(LocalProtocolError):
        session.call_tool("a", {})
    with pytest.raises(LocalProtocolError):
        session.receive(ResponseEnd(42))
    session.initialize()
    with pytest.raises(LocalProtocolError):
        session.initialize()


def test_close_deletes_the_session() -> None:
    session = _ready()
    out = session.close()
    request = _only_request(out)
    assert request.method == "DELETE" and not request.expects_response
    assert _headers(request)[b"mcp-session-id"] == b"sess-1"
    assert session.state is SessionState.CLOSED


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=10), sse=st.booleans())
def test_call_result_is_the_same_however_the_body_is_split(cuts: list[int], sse: bool) -> None:
    session = _ready()
    op, outputs = session.call_tool("add", {"a": 1, "b": 2})
    request = _only_request(outputs)
    result = {"content": [{"type": "text", "text": "3"}], "isError": False}
    message = json.dumps({"jsonrpc": "2.0", "id": _body(request)["id"], "result": result})
    body = (f"event: message\r\ndata: {message}\r\n\r\n" if sse else message).encode()
    out = session.receive(ResponseHead(request.send, 200, [SSE if sse else JSON]))
    start = 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        if session.expects(request.send):
            out += session.receive(ResponseData(request.send, body[start:cut]))
        start = cut
    if session.expects(request.send):
        out += session.receive(ResponseEnd(request.send))
    assert out == [OperationDone(op, result)]
