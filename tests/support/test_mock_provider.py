"""Quick self-checks of the mock provider (and the SSE helper) used by the gateway tests."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpcore
import openai
import pydantic
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
    mock_embedding,
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


def test_anthropic_accepts_newer_versions_only() -> None:
    with MockProvider(kind="anthropic") as mock, httpcore.ConnectionPool() as pool:
        for version, status in (("2026-10-21", 200), ("2024-01-01", 200), ("latest", 401),
                                ("2022-01-01", 401), ("2023-06-01x", 401)):
            headers: Headers = {"x-api-key": mock.api_key, "anthropic-version": version}
            r = pool.request("GET", f"{mock.base_url}/models", headers=headers)
            assert r.status == status, version
            assert mock.requests[-1].header("anthropic-version") == version


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


# --- Anthropic Messages API -------------------------------------------------------------------

CLAUDE = "claude-3-5-sonnet-20241022"
CLAUDE_MSG: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello there world"}]
WEATHER_ARGS = {"city": "Paris", "unit": "celsius", "days": 3}
WEATHER_CALL: dict[str, Any] = {"name": "get_weather", "arguments": WEATHER_ARGS}


@pytest.fixture
def claude_mock() -> Iterator[MockProvider]:
    with MockProvider(kind="anthropic") as m:
        yield m
    assert not m.errors, m.errors


@pytest.fixture
def claude(claude_mock: MockProvider) -> Iterator[anthropic.Anthropic]:
    # The SDK appends /v1/messages itself: its base_url is the origin. anthropic 2.x sends its
    # key as "Authorization: Bearer"; the mock wants x-api-key.
    c = anthropic.Anthropic(
        base_url=claude_mock.origin,
        api_key=claude_mock.api_key,
        default_headers=claude_mock.anthropic_headers,
        max_retries=0,
        timeout=5,
    )
    yield c
    c.close()


def _named_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """``(event name, decoded data)`` of each SSE event (after a strict parse_sse check)."""
    payloads = parse_sse(raw)
    events: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n")[:-1]:
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines.get("event"), json.loads(lines["data"])))
    assert [json.dumps(d, separators=(",", ":")) for _, d in events] == payloads
    return events


def _post_raw(
    mock: MockProvider, path: str, body: dict[str, Any], timeout: float = 2
) -> tuple[int, dict[str, str], bytes]:
    if mock.kind == "anthropic":
        headers: Headers = {"content-type": "application/json"}
        headers.update(mock.anthropic_headers)
    else:
        headers = _auth(mock)
    r = httpcore.request(
        "POST",
        mock.origin + path,
        headers=headers,
        content=json.dumps(body).encode(),
        extensions={"timeout": {"connect": 2, "read": timeout, "write": 2, "pool": 2}},
    )
    return r.status, {k.decode().lower(): v.decode() for k, v in r.headers}, r.content


def test_anthropic_message_non_stream(
    claude_mock: MockProvider, claude: anthropic.Anthropic
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG, system="be brief"
    )
    msg = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-remaining"].isdigit()
    assert raw.headers["content-type"] == "application/json"
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == CLAUDE
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "echo: hello there world"  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    body = json.loads(raw.http_response.content)
    anthropic.types.Message.model_validate(body)  # every required field, strictly typed
    assert body["usage"] == {
        "input_tokens": msg.usage.input_tokens,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    count = claude.messages.count_tokens(model=CLAUDE, messages=CLAUDE_MSG, system="be brief")
    assert count.input_tokens == msg.usage.input_tokens > 0
    assert [r.path for r in claude_mock.requests] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert claude_mock.requests[0].header("x-api-key") == claude_mock.api_key
    assert claude_mock.requests_to("/v1/messages")[0].json["system"] == "be brief"


def test_anthropic_tool_use_non_stream_and_max_tokens(
    claude_mock: MockProvider, claude: anthropic.Anthropic
) -> None:
    claude_mock.script(
        Reply(content="Checking.", tool_calls=[{"id": "toolu_01abc", **WEATHER_CALL}]),
        Reply(tool_calls=[{"function": {"name": "f", "arguments": "{}"}}]),
        Reply(content="cut", stop_reason="max_tokens", usage={"output_tokens": 64}),
    )
    msg = claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG)
    assert msg.stop_reason == "tool_use"
    text, tool = msg.content
    assert text.type == "text" and text.text == "Checking."
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_01abc", "get_weather", WEATHER_ARGS)

    msg = claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG)
    (tool,) = msg.content  # OpenAI-form call; no text block
    assert tool.type == "tool_use" and tool.id == "toolu_mock_0" and tool.input == {}

    msg = claude.messages.create(model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 64


def test_anthropic_stream_via_sdk(claude_mock: MockProvider, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there world"
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4

    claude_mock.script(Reply(content="Let me look.", tool_calls=[WEATHER_CALL]))
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=CLAUDE_MSG) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == WEATHER_ARGS and tool.id == "toolu_mock_0"


def test_anthropic_stream_wire_format(claude_mock: MockProvider) -> None:
    claude_mock.script(Reply(content="Let me look that up.", tool_calls=[WEATHER_CALL]))
    body = {"model": CLAUDE, "max_tokens": 64, "messages": CLAUDE_MSG, "stream": True}
    status, headers, raw = _post_raw(claude_mock, "/v1/messages", body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["request-id"].startswith("req_")
    assert b"[DONE]" not in raw
    events = _named_events(raw)
    assert all(name == data["type"] for name, data in events)
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    for name, data in events:
        if name != "ping":
            adapter.validate_python(data)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == CLAUDE
    assert start["usage"]["input_tokens"] > 0

    deltas = [d for n, d in events if n == "content_block_delta"]
    text = [d["delta"]["text"] for d in deltas if d["index"] == 0]
    assert all(d["delta"]["type"] == "text_delta" for d in deltas if d["index"] == 0)
    assert len(text) >= 3 and "".join(text) == "Let me look that up."
    block = next(d for n, d in events if n == "content_block_start" and d["index"] == 1)
    assert block["content_block"] == {
        "type": "tool_use", "id": "toolu_mock_0", "name": "get_weather", "input": {}
    }
    fragments = [d["delta"]["partial_json"] for d in deltas if d["index"] == 1]
    assert all(d["delta"]["type"] == "input_json_delta" for d in deltas if d["index"] == 1)
    assert len([f for f in fragments if f]) >= 3
    assert json.loads("".join(fragments)) == WEATHER_ARGS
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": events[-2][1]["usage"]["output_tokens"]},
    }


def test_anthropic_auth_and_status_errors(
    claude_mock: MockProvider, claude: anthropic.Anthropic
) -> None:
    # Out of the box anthropic 2.x sends "Authorization: Bearer": refused like a wrong key.
    bare = anthropic.Anthropic(base_url=claude_mock.origin, api_key=claude_mock.api_key,
                               max_retries=0)
    wrong = anthropic.Anthropic(base_url=claude_mock.origin, api_key="sk-ant-wrong", max_retries=0,
                                default_headers={**claude_mock.anthropic_headers,
                                                 "x-api-key": "sk-ant-wrong"})
    for c in (bare, wrong):
        with pytest.raises(anthropic.AuthenticationError) as auth:
            c.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG)
        assert auth.value.status_code == 401
        assert auth.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }
        c.close()
    assert claude_mock.pending == 0

    claude_mock.script(
        Status(429, headers=[("retry-after", "3")]),
        Status(529),
        Status(500, {"type": "error", "error": {"type": "api_error", "message": "given"}}),
        Status(400),
    )
    with pytest.raises(anthropic.RateLimitError) as rl:
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG)
    assert rl.value.response.headers["retry-after"] == "3"
    request_id = rl.value.response.headers["request-id"]
    assert rl.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": rl.value.body["error"]["message"]},  # type: ignore[index]
        "request_id": request_id,
    }
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as ise:
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG)
    assert ise.value.body == {"type": "error", "error": {"type": "api_error", "message": "given"}}
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.count_tokens(model=CLAUDE, messages=CLAUDE_MSG)
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert claude_mock.pending == 0


def test_anthropic_routes_validation_query_and_kinds(claude_mock: MockProvider) -> None:
    body = {"model": CLAUDE, "max_tokens": 8, "messages": CLAUDE_MSG}
    status, _, raw = _post_raw(claude_mock, "/v1/messages?beta=true", body)
    assert status == 200 and json.loads(raw)["type"] == "message"
    assert claude_mock.requests[-1].path == "/v1/messages?beta=true"
    assert len(claude_mock.requests_to("/v1/messages")) == 1

    claude_mock.script(Status(500))  # not consumed by a malformed request
    status, _, raw = _post_raw(claude_mock, "/v1/messages", {"model": CLAUDE, "messages": []})
    assert status == 400
    assert json.loads(raw)["error"] == {"type": "invalid_request_error",
                                        "message": "max_tokens: Field required"}
    assert claude_mock.pending == 1
    claude_mock.clear()
    for path in ("/v1/responses", "/v1/embeddings"):  # OpenAI-only routes
        status, _, raw = _post_raw(claude_mock, path, body)
        assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    r = httpcore.request("GET", claude_mock.origin + "/v1/messages",
                         headers=list(claude_mock.anthropic_headers.items()))
    assert r.status == 405

    with MockProvider() as openai_mock:  # and the Anthropic routes only on kind="anthropic"
        status, _, _ = _post_raw(openai_mock, "/v1/messages", body)
        assert status == 404


def test_anthropic_sse_events_and_canonical_headers(claude_mock: MockProvider) -> None:
    claude_mock.canonical_headers = True
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    claude_mock.script(SseEvents([{"type": "message_start", "message": {}}, ("ping", "{}"),
                                  "raw", error]))
    body = {"model": CLAUDE, "max_tokens": 8, "messages": CLAUDE_MSG, "stream": True}
    sock = socket.create_connection(("127.0.0.1", claude_mock.port), timeout=5)
    payload = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in claude_mock.anthropic_headers.items())
    sock.sendall(f"POST /v1/messages HTTP/1.1\r\nhost: x\r\n{head}content-length: {len(payload)}"
                 "\r\n\r\n".encode() + payload)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    sock.close()
    for line in (b"Content-Type: text/event-stream; charset=utf-8", b"Request-Id: req_",
                 b"Anthropic-Ratelimit-Requests-Remaining: "):
        assert b"\r\n" + line in data
    assert b"event: message_start\ndata: {" in data and b"event: ping\ndata: {}\n\n" in data
    assert b"\r\ndata: raw\n\n" in data and b"event: error\ndata: {" in data
    assert b"[DONE]" not in data


def test_anthropic_faults(claude_mock: MockProvider, claude: anthropic.Anthropic) -> None:
    body = {"model": CLAUDE, "max_tokens": 8, "messages": CLAUDE_MSG, "stream": True}
    claude_mock.script(ResetMidStream(after_chunks=4))
    with pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)), httpcore.stream(
        "POST", claude_mock.origin + "/v1/messages", content=json.dumps(body).encode(),
        headers=[*claude_mock.anthropic_headers.items(), ("content-type", "application/json")],
    ) as r:
        seen = b""
        for part in r.iter_stream():
            seen += part
    assert seen.count(b"event: ") == 4 and b"message_stop" not in seen

    claude_mock.script(ResetMidStream(after_chunks=5))
    with pytest.raises(Exception) as info, claude.messages.stream(
        model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG
    ) as stream:
        stream.get_final_message()
    assert "ReadError" in type(info.value).__name__  # the SDK's httpx2 error, not wrapped

    claude_mock.script(ResetBeforeHeaders(), ResetMidStream())
    for _ in range(2):
        with pytest.raises(anthropic.APIConnectionError):
            claude.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG)

    claude_mock.script(Hang())
    with pytest.raises(anthropic.APITimeoutError):
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=CLAUDE_MSG, timeout=0.2)

    claude_mock.script(DelayHeaders(0.2, then=Status(529)),
                       SlowStream(0.02, reply=Reply(content="abcdefghijkl")))
    t0 = time.monotonic()
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.count_tokens(model=CLAUDE, messages=CLAUDE_MSG)
    assert time.monotonic() - t0 >= 0.2
    t0 = time.monotonic()
    status, _, raw = _post_raw(claude_mock, "/v1/messages", body)
    events = _named_events(raw)
    assert status == 200
    assert time.monotonic() - t0 >= 0.02 * (len(events) - 1)
    assert "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta") == (
        "abcdefghijkl"
    )


# --- OpenAI Responses API ---------------------------------------------------------------------


def test_responses_non_stream(mock: MockProvider, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input="hello there world", instructions="be brief", metadata={"k": "v"}
    )
    resp = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    openai.types.responses.Response.model_validate(json.loads(raw.http_response.content))
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert (resp.status, resp.model, resp.instructions) == ("completed", "gpt-4o", "be brief")
    assert resp.metadata == {"k": "v"} and resp.error is None and resp.tools == []
    assert resp.output_text == "echo: hello there world"
    (item,) = resp.output
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed"
    assert item.role == "assistant"
    assert item.content[0].type == "output_text" and item.content[0].annotations == []
    assert resp.usage is not None and resp.usage.output_tokens == 4
    assert resp.usage.total_tokens == resp.usage.input_tokens + 4
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0

    mock.script(Reply(content="Sure.", tool_calls=[{"id": "call_1", **WEATHER_CALL}]))
    resp = client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]}],
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"},
                "strict": False}],
    )
    message, call = resp.output
    assert message.type == "message" and resp.output_text == "Sure."
    assert call.type == "function_call" and call.id is not None and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.status) == ("call_1", "get_weather", "completed")
    assert json.loads(call.arguments) == WEATHER_ARGS
    assert resp.tools[0].type == "function" and resp.tools[0].strict is False
    assert mock.requests_to("/v1/responses")[-1].json["tools"][0]["name"] == "get_weather"


def test_responses_stream(mock: MockProvider, client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o", input="hello there world", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3 and "".join(deltas) == "echo: hello there world"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert created.response.output == [] and created.response.usage is None
    assert completed.type == "response.completed"
    assert completed.response.status == "completed" and completed.response.usage is not None
    assert completed.response.output_text == "echo: hello there world"
    assert client.responses.retrieve(completed.response.id).output_text == (
        "echo: hello there world"
    )

    status, headers, raw = _post_raw(mock, "/v1/responses",
                                     {"model": "gpt-4o", "input": "hi", "stream": True})
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in raw
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
        openai.types.responses.ResponseStreamEvent
    )
    named = _named_events(raw)
    for name, data in named:
        assert name == data["type"] and list(data)[:2] == ["type", "sequence_number"]
        adapter.validate_python(data)

    mock.script(Reply(tool_calls=[WEATHER_CALL]))
    with client.responses.stream(model="gpt-4o", input="weather?") as stream:
        arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.call_id == "call_mock_0"
    assert len(arg_deltas) >= 3 and json.loads("".join(arg_deltas)) == WEATHER_ARGS

    mock.script(Reply(content="partial", stop_reason="max_tokens"))
    last = list(client.responses.create(model="gpt-4o", input="x", stream=True))[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


def test_responses_store_retrieve_delete(mock: MockProvider, client: openai.OpenAI) -> None:
    resp = client.responses.create(model="gpt-4o", input="remember me")
    got = client.responses.retrieve(resp.id)
    assert got.model_dump() == resp.model_dump()
    follow = client.responses.create(model="gpt-4o", input="again", previous_response_id=resp.id)
    assert follow.previous_response_id == resp.id
    client.responses.delete(resp.id)  # the SDK discards the answer...
    assert mock.requests[-1].method == "DELETE"
    r = httpcore.request("DELETE", f"{mock.base_url}/responses/{follow.id}", headers=_auth(mock))
    assert r.status == 200  # ...which is this
    assert json.loads(r.content) == {"id": follow.id, "object": "response", "deleted": True}
    for gone in (resp.id, follow.id, "resp_unknown"):
        with pytest.raises(openai.NotFoundError) as nf:
            client.responses.retrieve(gone)
        assert nf.value.body == {"message": f"Response with id '{gone}' not found.",
                                 "type": "invalid_request_error", "param": "response_id",
                                 "code": None}
    unstored = client.responses.create(model="gpt-4o", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_nope")
    assert bad.value.code == "previous_response_not_found"
    assert mock.pending == 0 and mock.stored_responses == {}
    assert [r.method for r in mock.requests].count("GET") == 5


def test_responses_faults(mock: MockProvider, client: openai.OpenAI) -> None:
    mock.script(Status(429, headers=[("retry-after", "2")]), Status(503), ResetMidStream(3), Hang())
    with pytest.raises(openai.RateLimitError) as rl:
        client.responses.create(model="gpt-4o", input="x")
    assert rl.value.response.headers["retry-after"] == "2"
    assert rl.value.response.headers["x-request-id"].startswith("req_")
    assert rl.value.code == "rate_limit_exceeded" and rl.value.type == "requests"
    with pytest.raises(openai.InternalServerError) as ise:
        client.responses.create(model="gpt-4o", input="x")
    assert ise.value.status_code == 503 and ise.value.type == "server_error"
    stream = client.responses.create(model="gpt-4o", input="hello there", stream=True)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event.type)
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]
    with pytest.raises(openai.APITimeoutError):
        client.responses.create(model="gpt-4o", input="x", timeout=0.2)


# --- OpenAI embeddings ------------------------------------------------------------------------


def test_embeddings_base64_default_and_float(mock: MockProvider, client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert mock.requests[-1].json["encoding_format"] == "base64"  # what the SDK asks for
    floats = client.embeddings.create(model="text-embedding-3-small", input="hello world",
                                      encoding_format="float")
    assert "encoding_format" in mock.requests[-1].json
    assert default.data[0].embedding == floats.data[0].embedding == mock_embedding("hello world")
    vector = floats.data[0].embedding
    assert len(vector) == 8 and abs(sum(v * v for v in vector) - 1) < 1e-5
    assert (floats.object, floats.model) == ("list", "text-embedding-3-small")
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 2
    assert mock_embedding("hello world!") != vector

    status, headers, raw = _post_raw(mock, "/v1/embeddings", {
        "model": "text-embedding-3-large", "input": "hello world", "encoding_format": "base64",
        "dimensions": 4,
    })
    assert status == 200 and headers["openai-model"] == "text-embedding-3-large"
    (item,) = json.loads(raw)["data"]
    decoded = list(struct.unpack("<4f", base64.b64decode(item["embedding"])))
    assert item["object"] == "embedding" and decoded == mock_embedding("hello world", 4)
    status, _, raw = _post_raw(mock, "/v1/embeddings", {"model": "m", "input": "a"})
    assert status == 200 and isinstance(json.loads(raw)["data"][0]["embedding"], list)


def test_embeddings_list_and_token_inputs(mock: MockProvider, client: openai.OpenAI) -> None:
    texts = ["one", "two words", "three little words"]
    resp = client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=16)
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert [d.embedding for d in resp.data] == [mock_embedding(t, 16) for t in texts]
    assert resp.usage.prompt_tokens == 6
    tokens = client.embeddings.create(model="m", input=[[1, 2, 3], [4]], encoding_format="float")
    assert tokens.data[1].embedding == mock_embedding("[4]")
    assert tokens.usage.total_tokens == 4
    bad_inputs: list[Any] = ["", [], ["ok", 3], [[]]]
    for bad in bad_inputs:
        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model="m", input=bad)
        assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="x", dimensions=0)

    mock.script(Status(500, b"boom"), Respond(lambda req: Reply(usage={"prompt_tokens": 99})),
                Hang())
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="m", input="x")
    assert client.embeddings.create(model="m", input="x").usage.prompt_tokens == 99
    with pytest.raises(openai.APITimeoutError):
        client.embeddings.create(model="m", input="x", timeout=0.2)
    assert mock.pending == 0
