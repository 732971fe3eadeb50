"""Quick self-checks of the mock provider (and the SSE helper) used by the gateway tests."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.mock_provider import (
    DelayHeaders,
    Hang,
    MockProvider,
    RecordedRequest,
    Reply,
    ResetBeforeHeaders,
    ResetMidStream,
    Respond,
    SlowStream,
    SseEvents,
    Status,
    free_port,
)
from tests.support.sse import parse_sse

pytestmark = pytest.mark.timeout(30)

USER_MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there world"}]
Headers = dict[bytes | str, bytes | str]


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    with MockProvider() as m:
        yield m
    assert not m.errors, m.errors


@pytest.fixture
def client(mock: MockProvider) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=mock.base_url, api_key=mock.api_key, max_retries=0, timeout=5)
    yield c
    c.close()


def _auth(mock: MockProvider) -> Headers:
    return {"authorization": f"Bearer {mock.api_key}", "content-type": "application/json"}


def _chat(
    pool: httpcore.ConnectionPool, mock: MockProvider, **body: Any
) -> tuple[int, dict[str, str], bytes]:
    payload = {"model": "gpt-4o-mini", "messages": USER_MSG, **body}
    r = pool.request(
        "POST",
        f"{mock.base_url}/chat/completions",
        headers=_auth(mock),
        content=json.dumps(payload).encode(),
        extensions={"timeout": {"connect": 2, "read": 2, "write": 2, "pool": 2}},
    )
    headers = {k.decode().lower(): v.decode() for k, v in r.headers}
    return r.status, headers, r.content


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    payloads = parse_sse(raw)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


# --- happy paths ------------------------------------------------------------------------------


def test_non_stream_completion(mock: MockProvider, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "echo: hello there world"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.system_fingerprint == "fp_mock"
    assert resp.model_extra is not None and "x_mock_extra" in resp.model_extra

    (req,) = mock.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.header("Authorization") == f"Bearer {mock.api_key}"
    assert req.json["messages"] == USER_MSG
    assert all(k == k.lower() for k, _ in req.headers)


def test_stream_with_usage_via_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER_MSG,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there world"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


def test_stream_wire_format(mock: MockProvider) -> None:
    with httpcore.ConnectionPool() as pool:
        status, headers, raw = _chat(pool, mock, stream=True)
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["transfer-encoding"] == "chunked"
        chunks = _chunks(raw)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert all("usage" not in c for c in chunks)  # include_usage not requested
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"][0]["delta"] == {}

        # Keep-alive: a second request (JSON, content-length) reuses the same connection.
        status, headers, raw = _chat(pool, mock)
        assert status == 200 and headers["content-length"] == str(len(raw))
    assert mock.requests[0].connection == mock.requests[1].connection


def test_tool_calls_streaming_shape(mock: MockProvider, client: openai.OpenAI) -> None:
    args = {"city": "Paris", "unit": "celsius", "days": 3}
    function = {"name": "get_weather", "arguments": json.dumps(args)}
    call: dict[str, Any] = {"id": "call_abc", "type": "function", "function": function}
    mock.script(Reply(tool_calls=[call]), Reply(tool_calls=[call]))

    with httpcore.ConnectionPool() as pool:
        _, _, raw = _chat(pool, mock, stream=True)
    chunks = _chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    tool_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first, rest = tool_deltas[0], tool_deltas[1:]
    assert first == {
        "index": 0,
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(rest) >= 2
    assert all(
        set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in rest
    )
    assert json.loads("".join(d["function"]["arguments"] for d in rest)) == args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    resp = client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    assert resp.choices[0].finish_reason == "tool_calls"
    tc = resp.choices[0].message.tool_calls
    assert tc is not None and tc[0].id == "call_abc"
    assert json.loads(tc[0].function.arguments) == args  # type: ignore[union-attr]


def test_models_and_unknown_path(mock: MockProvider, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    with httpcore.ConnectionPool() as pool:
        r = pool.request("GET", f"{mock.origin}/models", headers=_auth(mock))
        assert r.status == 404 and "error" in json.loads(r.content)
        r = pool.request("GET", f"{mock.base_url}/nope?x=1", headers=_auth(mock))
        assert r.status == 404
    assert mock.requests[-1].path == "/v1/nope?x=1"


def test_wrong_key_is_rejected(mock: MockProvider) -> None:
    bad = openai.OpenAI(base_url=mock.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401
    assert info.value.body == {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
    bad.close()


# --- scripted behaviours ----------------------------------------------------------------------


def test_status_behaviours(mock: MockProvider, client: openai.OpenAI) -> None:
    rate = {"error": {"message": "Rate limit", "type": "requests", "code": "rate_limit_exceeded"}}
    mock.script(
        Status(429, rate, headers=[("retry-after", "1")]),
        Status(500, b"upstream exploded"),
        Reply(content="fine again"),
    )
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    assert rl.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError) as ise:
        client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    assert ise.value.response.text == "upstream exploded"
    resp = client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    assert resp.choices[0].message.content == "fine again"
    assert mock.pending == 0
    assert len(mock.chat_requests) == 3


def _raw_head(mock: MockProvider, body: dict[str, Any]) -> bytes:
    """POST a chat request on a plain socket and return the response head as written."""
    payload = json.dumps({"model": "gpt-4o-mini", "messages": USER_MSG, **body}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
               b"authorization: Bearer " + mock.api_key.encode() + b"\r\n"
               b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def test_canonical_headers_switch_writes_go_style_names(mock: MockProvider) -> None:
    assert b"\r\ncontent-type: application/json" in _raw_head(mock, {})
    mock.canonical_headers = True
    head = _raw_head(mock, {})
    for line in (b"Content-Type: application/json", b"Content-Length: ", b"X-Request-Id: ",
                 b"Set-Cookie: ", b"X-Ratelimit-Remaining-Requests: "):
        assert b"\r\n" + line in head, head
    head = _raw_head(mock, {"stream": True})
    assert b"\r\nContent-Type: text/event-stream; charset=utf-8" in head
    assert b"\r\nTransfer-Encoding: chunked" in head
    mock.script(Status(429, {"error": {"message": "slow"}}, headers=[("retry-after", "7")]))
    head = _raw_head(mock, {})
    assert head.startswith(b"HTTP/1.1 429 ") and b"\r\nRetry-After: 7" in head
    with MockProvider(canonical_headers=True) as other:
        assert b"\r\nContent-Type: " in _raw_head(other, {})


def test_sse_events_are_sent_verbatim(mock: MockProvider) -> None:
    mock.script(SseEvents([{"choices": [], "usage": None}, '{"raw": 1}']))
    with httpcore.ConnectionPool() as pool:
        status, headers, raw = _chat(pool, mock, stream=True)
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    assert parse_sse(raw) == ['{"choices":[],"usage":null}', '{"raw": 1}', "[DONE]"]


def test_reset_mid_stream(mock: MockProvider, client: openai.OpenAI) -> None:
    mock.script(ResetMidStream(after_chunks=2))
    with httpcore.ConnectionPool() as pool:
        seen = b""
        with (
            pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)),
            pool.stream(
                "POST",
                f"{mock.base_url}/chat/completions",
                headers=_auth(mock),
                content=json.dumps({"model": "m", "messages": USER_MSG, "stream": True}).encode(),
            ) as r,
        ):
            assert r.status == 200
            for part in r.iter_stream():
                seen += part
    assert seen.count(b"data: ") == 2 and b"[DONE]" not in seen

    # And through the SDK the client sees an error rather than a clean end of stream.
    mock.script(ResetMidStream(after_chunks=3))
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=USER_MSG,
        stream=True,
    )
    with pytest.raises(Exception) as info:  # httpx/openai error types vary
        list(stream)
    assert not isinstance(info.value, AssertionError)


def test_reset_before_headers_and_non_stream_reset(mock: MockProvider) -> None:
    mock.script(ResetBeforeHeaders(), ResetMidStream())
    with httpcore.ConnectionPool() as pool:
        with pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)):
            _chat(pool, mock)
        with pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)):
            _chat(pool, mock)
        status, _, _ = _chat(pool, mock)  # back to normal on a fresh connection
        assert status == 200
    assert mock.connections_accepted == 3


def test_delay_hang_and_slow_stream(mock: MockProvider) -> None:
    mock.script(DelayHeaders(0.3, then=Status(503, {"error": {"message": "x"}})), Hang())
    with httpcore.ConnectionPool() as pool:
        t0 = time.monotonic()
        status, _, _ = _chat(pool, mock)
        assert status == 503 and time.monotonic() - t0 >= 0.3

        with pytest.raises(httpcore.ReadTimeout):
            pool.request(
                "POST",
                f"{mock.base_url}/chat/completions",
                headers=_auth(mock),
                content=json.dumps({"model": "m", "messages": USER_MSG}).encode(),
                extensions={"timeout": {"read": 0.2}},
            )

        mock.script(SlowStream(0.05, reply=Reply(content="abcdefghijkl")))
        t0 = time.monotonic()
        status, _, raw = _chat(pool, mock, stream=True)
        chunks = _chunks(raw)
        assert time.monotonic() - t0 >= 0.05 * (len(chunks) - 1)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
            "abcdefghijkl"
        )


def test_respond_callable_agent_loop(mock: MockProvider, client: openai.OpenAI) -> None:
    def agent(req: RecordedRequest) -> Reply:
        messages = req.json["messages"]
        if any(m.get("role") == "tool" for m in messages):
            return Reply(content=f"tool said {messages[-1]['content']}")
        return Reply(tool_calls=[{"function": {"name": "lookup", "arguments": {"q": "x"}}}])

    mock.default_behaviour = Respond(agent)
    first = client.chat.completions.create(model="gpt-4o", messages=USER_MSG)
    tool_calls = first.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.name == "lookup"  # type: ignore[union-attr]
    follow_up: list[ChatCompletionMessageParam] = [
        *USER_MSG,
        first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": tool_calls[0].id, "content": "42"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=follow_up)
    assert second.choices[0].message.content == "tool said 42"


def test_many_concurrent_connections(mock: MockProvider) -> None:
    n = 220
    body = json.dumps({"model": "m", "messages": USER_MSG}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        f"authorization: Bearer {mock.api_key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
        await asyncio.sleep(0.05)  # keep all connections open at the same time
        writer.write(request * 2)  # two pipelined requests on one keep-alive connection
        await writer.drain()
        data = b""
        while data.count(b"echo: hello there world") < 2:
            chunk = await reader.read(65536)
            assert chunk
            data += chunk
        writer.close()
        await writer.wait_closed()
        return data

    async def main() -> list[bytes]:
        return await asyncio.gather(*(one() for _ in range(n)))

    results = asyncio.run(main())
    assert all(r.startswith(b"HTTP/1.1 200 ") for r in results)
    assert mock.wait_for_requests(2 * n)
    assert mock.connections_accepted == n


# --- anthropic kind ---------------------------------------------------------------------------


def test_anthropic_header_enforcement() -> None:
    with MockProvider(kind="anthropic") as mock, httpcore.ConnectionPool() as pool:
        assert mock.models == ["claude-3-5-sonnet-20241022"]
        good: Headers = {"x-api-key": mock.api_key, "anthropic-version": "2023-06-01"}
        cases: list[Headers] = [
            {},
            {"x-api-key": mock.api_key},
            {"anthropic-version": "2023-06-01"},
            {"x-api-key": "wrong", "anthropic-version": "2023-06-01"},
            {"authorization": f"Bearer {mock.api_key}"},
        ]
        for headers in cases:
            r = pool.request("GET", f"{mock.base_url}/models", headers=headers)
            assert r.status == 401
            err = json.loads(r.content)
            assert err["type"] == "error"
            assert err["error"]["type"] == "authentication_error"
            assert isinstance(err["error"]["message"], str)

        r = pool.request("GET", f"{mock.base_url}/models", headers=good)
        assert r.status == 200
        listing = json.loads(r.content)
        assert listing["has_more"] is False
        assert listing["first_id"] == listing["last_id"] == "claude-3-5-sonnet-20241022"
        (model,) = listing["data"]
        assert model["type"] == "model" and model["created_at"] == "2024-10-22T00:00:00Z"
        assert model["display_name"]

        chat = {"model": "claude-3-5-sonnet-20241022", "messages": USER_MSG}
        body = json.dumps(chat).encode()
        r = pool.request("POST", f"{mock.base_url}/chat/completions", headers=good, content=body)
        assert r.status == 200
        assert json.loads(r.content)["choices"][0]["message"]["content"].startswith("echo: ")
        assert not mock.errors


# --- lifecycle and helpers --------------------------------------------------------------------


def test_stop_is_quick_with_hanging_clients_and_port_reusable() -> None:
    port = free_port()
    mock = MockProvider(port=port).start()
    assert mock.port == port and mock.base_url == f"http://127.0.0.1:{port}/v1"
    mock.script(Hang())
    with httpcore.ConnectionPool() as pool:
        with pytest.raises(httpcore.ReadTimeout):
            _chat_raw_timeout(pool, mock, 0.2)
        t0 = time.monotonic()
        mock.stop()
        assert time.monotonic() - t0 < 2
        mock.stop()  # idempotent
    with MockProvider(port=port, api_key="sk-fixed") as again:
        assert again.port == port and again.api_key == "sk-fixed"


def _chat_raw_timeout(pool: httpcore.ConnectionPool, mock: MockProvider, timeout: float) -> None:
    pool.request(
        "POST",
        f"{mock.base_url}/chat/completions",
        headers=_auth(mock),
        content=json.dumps({"model": "m", "messages": USER_MSG}).encode(),
        extensions={"timeout": {"read": timeout}},
    )


def test_clear_and_parse_sse_strictness(mock: MockProvider, client: openai.OpenAI) -> None:
    mock.script(Status(500, b"x"))
    client.models.list()
    mock.clear()
    assert mock.requests == [] and mock.pending == 0

    assert parse_sse(b": comment\ndata: a\n\nevent: x\ndata: b\ndata: c\n\ndata:d\r\n\r\n") == [
        "a",
        "b\nc",
        "d",
    ]
    assert parse_sse(b"") == []
    with pytest.raises(ValueError):
        parse_sse(b"data: a\n")  # event not terminated
    with pytest.raises(ValueError):
        parse_sse(b"data: a")  # truncated line
    with pytest.raises(ValueError):
        parse_sse(b"bogus: a\n\n")
