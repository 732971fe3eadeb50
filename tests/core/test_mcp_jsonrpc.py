"""igw_core.mcp.jsonrpc: messages are framed right and a response is found however it is split."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.mcp.jsonrpc import (
    JSONRPCError,
    MalformedResponse,
    ResponseReader,
    encode_notification,
    encode_request,
)

FAST = settings(max_examples=80, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=8,
)
results = st.dictionaries(st.text(max_size=6), json_values, max_size=4)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def _read(reader: ResponseReader, pieces: list[bytes]) -> dict[str, Any]:
    for piece in pieces:
        if reader.feed(piece):
            break
    else:
        reader.end()
    return reader.result()


def test_request_and_notification_are_jsonrpc_2() -> None:
    assert json.loads(encode_request(7, "tools/list", {"cursor": "c"})) == {
        "jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "c"}}
    assert json.loads(encode_request(1, "ping")) == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert json.loads(encode_notification("notifications/initialized")) == {
        "jsonrpc": "2.0", "method": "notifications/initialized"}


@FAST
@given(result=results, noise=st.lists(json_values, max_size=3),
       cuts=st.lists(st.integers(0, 10_000), max_size=12),
       line_end=st.sampled_from(["\n", "\r\n", "\r"]))
def test_event_stream_response_is_found_across_any_split(
    result: dict[str, Any], noise: list[Any], cuts: list[int], line_end: str
) -> None:
    events = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}}
              for n in noise]
    events.append({"jsonrpc": "2.0", "id": 99, "result": {"other": True}})  # another request's
    events.append({"jsonrpc": "2.0", "id": 3, "result": result})
    text = "".join(f": keepalive{line_end}event: message{line_end}data: {json.dumps(e)}"
                   f"{line_end}{line_end}" for e in events)
    reader = ResponseReader(3, "text/event-stream; charset=utf-8")
    assert _read(reader, _splits(text.encode(), cuts)) == result


@FAST
@given(result=results, cuts=st.lists(st.integers(0, 10_000), max_size=12),
       batch=st.booleans())
def test_json_response_is_found_across_any_split(
    result: dict[str, Any], cuts: list[int], batch: bool
) -> None:
    message: Any = {"jsonrpc": "2.0", "id": 5, "result": result}
    if batch:
        message = [{"jsonrpc": "2.0", "id": 4, "result": {}}, message]
    reader = ResponseReader(5, "Application/JSON")
    assert _read(reader, _splits(json.dumps(message).encode(), cuts)) == result


@FAST
@given(code=st.integers(-40000, 40000), message=st.text(max_size=20),
       cuts=st.lists(st.integers(0, 10_000), max_size=8), sse=st.booleans())
def test_error_response_raises_jsonrpc_error(
    code: int, message: str, cuts: list[int], sse: bool
) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "error": {"code": code, "message": message}})
    data = f"data: {body}\n\n".encode() if sse else body.encode()
    reader = ResponseReader(2, "text/event-stream" if sse else "application/json")
    with pytest.raises(JSONRPCError) as caught:
        _read(reader, _splits(data, cuts))
    assert caught.value.code == code
    assert caught.value.message == message


def test_stream_that_ends_without_our_response_is_malformed() -> None:
    reader = ResponseReader(1, "text/event-stream")
    assert not reader.feed(b'data: {"jsonrpc":"2.0","id":2,"result":{}}\n\n')
    with pytest.raises(MalformedResponse):
        reader.end()


@pytest.mark.parametrize("body, content_type", [
    (b"not json", "application/json"),
    (b'{"jsonrpc":"2.0","id":1,"result":[1]}', "application/json"),
    (b'{"jsonrpc":"2.0","id":1,"result":{}}', "text/html"),
    (b'{"jsonrpc":"2.0","id":2,"result":{}}', "application/json"),
    (b'{"jsonrpc":"2.0","id":true,"result":{}}', "application/json"),
])
def test_bad_json_bodies_are_malformed(body: bytes, content_type: str) -> None:
    reader = ResponseReader(1, content_type)
    reader.feed(body)
    with pytest.raises(MalformedResponse):
        reader.end()
        reader.result()


def test_response_id_may_be_echoed_as_a_string() -> None:
    reader = ResponseReader(4, "application/json")
    reader.feed(b'{"jsonrpc":"2.0","id":"4","result":{"ok":1}}')
    reader.end()
    assert reader.result() == {"ok": 1}


def test_server_request_with_our_id_is_not_our_response() -> None:
    reader = ResponseReader(1, "text/event-stream")
    assert not reader.feed(b'data: {"jsonrpc":"2.0","id":1,"method":"ping"}\n\n')
    assert reader.feed(b'data: {"jsonrpc":"2.0","id":1,"result":{"x":1}}\n\n')
    assert reader.result() == {"x": 1}
