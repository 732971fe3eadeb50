"""MCP through both frontends: real MCP servers (official SDK), a scripted provider, the SDK.

The mock provider asks for a tool on its first turn and answers with the tool's result
once it sees it, so each test shows what the gateway did between the two turns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import openai
import pytest

from igw_core.mcp.loop import MAX_ROUNDS
from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mcp_servers import ToolServer
from tests.support.mock_provider import (
    MockProvider,
    RecordedRequest,
    Reply,
    Respond,
    SseEvents,
)
from tests.support.sse import parse_sse

pytestmark = pytest.mark.timeout(60)

MODEL = "openai/gpt-4o-mini"
USER: list[Any] = [{"role": "user", "content": "please use a tool"}]


@pytest.fixture(scope="module", autouse=True)
def _quiet_sdk() -> Iterator[None]:
    # The SDK logs a traceback for every tool that raises; that is the test working.
    logger = logging.getLogger("mcp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def calc() -> Iterator[ToolServer]:
    with ToolServer("calc") as server:
        yield server


@pytest.fixture(scope="module")
def other() -> Iterator[ToolServer]:
    with ToolServer("other", prefix="b_", json_response=True) as server:
        yield server


def _env(mock: MockProvider, **mcp: str) -> dict[str, str]:
    return {"OPENAI_API_URL": mock.base_url, "OPENAI_API_KEY": mock.api_key,
            "MCP_ENABLE": "true", **mcp}


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: GatewayFactory, module_openai: MockProvider,
            calc: ToolServer, other: ToolServer) -> RunningGateway:
    return module_gateway_factory(_env(
        module_openai, MCP_SERVERS=f"{calc.url} , {other.url}", MCP_EXPOSE="true",
        MCP_REQUEST_TIMEOUT="1s", MCP_EXCLUDE_TOOLS="b_sleep"))


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider) -> Iterator[None]:
    module_openai.clear()
    module_openai.default_behaviour = None
    module_openai.canonical_headers = False
    yield
    module_openai.canonical_headers = False


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=20)


def agent(tool: str, arguments: dict[str, Any]) -> Respond:
    """A model that calls ``tool`` first, then answers ``tool said: <result>``."""
    def choose(request: RecordedRequest) -> Reply:
        last = request.json["messages"][-1]
        if last.get("role") == "tool":
            return Reply(content=f"tool said: {last['content']}")
        return Reply(tool_calls=[{"id": "call_1",
                                  "function": {"name": tool, "arguments": arguments}}])
    return Respond(choose)


def _tools(gateway: RunningGateway) -> httpcore.Response:
    return httpcore.request("GET", gateway.url + "/v1/mcp/tools",
                            extensions={"timeout": {"connect": 5, "read": 10}})


def _names(gateway: RunningGateway) -> list[str]:
    response = _tools(gateway)
    assert response.status == 200, response.content
    return [tool["name"] for tool in json.loads(response.content)["data"]]


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _offered(request: RecordedRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.json.get("tools") or []]


# -- one gateway, two servers -------------------------------------------------------------


def test_tool_list_has_both_servers_without_excluded_tools(
    gateway: RunningGateway, calc: ToolServer, other: ToolServer
) -> None:
    data = json.loads(_tools(gateway).content)["data"]
    assert {t["name"]: t["server"] for t in data} == {
        "mcp_add": calc.url, "mcp_echo": calc.url, "mcp_fail": calc.url, "mcp_sleep": calc.url,
        "mcp_b_add": other.url, "mcp_b_echo": other.url, "mcp_b_fail": other.url}
    add = next(t for t in data if t["name"] == "mcp_add")
    assert add["description"] == "Add two integers and return the sum."
    assert set(add["input_schema"]["properties"]) == {"a", "b"}


@pytest.mark.parametrize("canonical", [False, True], ids=["lower", "canonical"])
def test_non_streaming_loop_runs_the_tool_and_returns_the_final_answer(
    client: openai.OpenAI, module_openai: MockProvider, calc: ToolServer, canonical: bool
) -> None:
    module_openai.canonical_headers = canonical  # header names as Go's net/http writes them
    module_openai.default_behaviour = agent("mcp_add", {"a": 2, "b": 3})
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    message = completion.choices[0].message
    assert message.content == "tool said: 5" and not message.tool_calls
    first, second = module_openai.chat_requests
    assert {"mcp_add", "mcp_b_echo"} <= set(_offered(first))
    assert "mcp_b_sleep" not in _offered(first)
    assert second.json["messages"][-1] == {"role": "tool", "tool_call_id": "call_1",
                                           "content": "5"}
    assert ("add", {"a": 2, "b": 3}) in calc.calls
    assert completion.usage is not None and completion.usage.total_tokens > 0


@pytest.mark.parametrize("canonical", [False, True], ids=["lower", "canonical"])
def test_streaming_loop_streams_every_round_with_one_done_and_no_mcp_deltas(
    gateway: RunningGateway, client: openai.OpenAI, module_openai: MockProvider,
    other: ToolServer, canonical: bool,
) -> None:
    module_openai.canonical_headers = canonical
    module_openai.default_behaviour = agent("mcp_b_echo", {"text": "from the other server"})
    stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tool said: from the other server"
    assert ("b_echo", {"text": "from the other server"}) in other.calls

    body = json.dumps({"model": MODEL, "messages": USER, "stream": True}).encode()
    raw = httpcore.request("POST", gateway.url + "/v1/chat/completions", content=body,
                           headers=[(b"content-type", b"application/json")],
                           extensions={"timeout": {"connect": 5, "read": 20}})
    assert raw.status == 200
    assert dict(raw.headers)[b"content-type"].startswith(b"text/event-stream")
    payloads = parse_sse(raw.content)
    assert payloads.count("[DONE]") == 1 and payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert not choice["delta"].get("tool_calls")


def _openai_chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One chunk as OpenAI streams it with ``include_usage``: ``usage`` on every chunk."""
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": "chatcmpl-real", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18", "service_tier": "default",
            "system_fingerprint": "fp_real", "choices": choices, "usage": usage}


def _openai_tool_stream(request: RecordedRequest) -> SseEvents:
    """OpenAI's exact streaming shape: the tool call rides on the first (role) delta."""
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    last = request.json["messages"][-1]
    if last.get("role") == "tool":
        text = f"tool said: {last['content']}"
        return SseEvents([
            _openai_chunk({"role": "assistant", "content": "", "refusal": None}),
            *(_openai_chunk({"content": text[i:i + 4]}) for i in range(0, len(text), 4)),
            _openai_chunk({}, "stop"),
            _openai_chunk(None, usage=usage),
        ])
    call = {"index": 0, "id": "call_real", "type": "function",
            "function": {"name": "mcp_add", "arguments": ""}}
    return SseEvents([
        _openai_chunk({"role": "assistant", "content": None, "tool_calls": [call],
                       "refusal": None}),
        *(_openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
          for part in ('{"a"', ': 20, "b"', ": 22}")),
        _openai_chunk({}, "tool_calls"),
        _openai_chunk(None, usage=usage),
    ])


@pytest.mark.parametrize("canonical", [False, True], ids=["lower", "canonical"])
def test_streaming_loop_with_openai_wire_shape_and_go_header_case_runs_the_tool(
    client: openai.OpenAI, module_openai: MockProvider, calc: ToolServer, canonical: bool
) -> None:
    # Issue 8 item 1: `Content-Type: text/event-stream; charset=utf-8`, chunked, the tool
    # call on the first delta, `"usage": null` everywhere and a `choices: []` usage chunk.
    module_openai.canonical_headers = canonical
    module_openai.default_behaviour = Respond(_openai_tool_stream)
    before = len(calc.calls)
    stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "tool said: 42"
    assert ("add", {"a": 20, "b": 22}) in calc.calls[before:]
    first, second = module_openai.chat_requests
    assert first.json["stream_options"] == {"include_usage": True}
    assert second.json["messages"][-1] == {"role": "tool", "tool_call_id": "call_real",
                                           "content": "42"}
    assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in chunks)


def test_a_tool_that_raises_becomes_a_result_the_model_reads(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    module_openai.default_behaviour = agent("mcp_fail", {})
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    content = completion.choices[0].message.content or ""
    assert content.startswith("tool said: Error:") and "fail" in content


def test_a_tool_that_hangs_is_cut_at_the_request_timeout(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    module_openai.default_behaviour = agent("mcp_sleep", {"seconds": 10})
    started = time.monotonic()
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    assert time.monotonic() - started < 5
    content = completion.choices[0].message.content or ""
    assert content.startswith("tool said: Error:") and "MCP_REQUEST_TIMEOUT" in content


def test_bypass_header_skips_injection_and_execution(
    client: openai.OpenAI, module_openai: MockProvider, calc: ToolServer
) -> None:
    module_openai.default_behaviour = agent("mcp_add", {"a": 40, "b": 2})
    before = len(calc.calls)
    completion = client.chat.completions.create(model=MODEL, messages=USER,
                                                extra_headers={"X-MCP-Bypass": "true"})
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "mcp_add"  # returned, not run
    assert len(module_openai.chat_requests) == 1
    assert "tools" not in module_openai.chat_requests[0].json
    assert len(calc.calls) == before


def test_client_tools_are_merged_and_their_calls_go_back_to_the_client(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    module_openai.default_behaviour = agent("lookup", {"q": "x"})
    lookup = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}
    completion = client.chat.completions.create(model=MODEL, messages=USER,
                                                tools=[lookup])  # type: ignore[list-item]
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["lookup"]
    assert completion.choices[0].finish_reason == "tool_calls"
    offered = _offered(module_openai.chat_requests[0])
    assert offered[0] == "lookup" and "mcp_add" in offered
    assert len(module_openai.chat_requests) == 1


def test_round_limit_bounds_the_provider_calls(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    def always(request: RecordedRequest) -> Reply:
        return Reply(content="again", tool_calls=[{
            "id": f"call_{len(request.json['messages'])}",
            "function": {"name": "mcp_echo", "arguments": {"text": "loop"}}}])
    module_openai.default_behaviour = Respond(always)
    completion = client.chat.completions.create(model=MODEL, messages=USER)
    assert len(module_openai.chat_requests) == MAX_ROUNDS
    message = completion.choices[0].message
    assert message.content == "again" and not message.tool_calls


# -- gateways of their own ----------------------------------------------------------------


def test_include_list_limits_tools_and_listing_needs_expose(
    gateway_factory: GatewayFactory, module_openai: MockProvider, calc: ToolServer
) -> None:
    gateway = gateway_factory(_env(module_openai, MCP_SERVERS=calc.url,
                                   MCP_INCLUDE_TOOLS="add, mcp_echo"))
    listing = _tools(gateway)
    assert listing.status == 403
    assert "MCP_EXPOSE=true" in json.loads(listing.content)["error"]["message"]
    module_openai.default_behaviour = Reply(content="plain")
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
    assert _offered(module_openai.chat_requests[0]) == ["mcp_add", "mcp_echo"]


def test_server_down_at_startup_is_served_as_mcp_off_and_joins_after_a_poll(
    gateway_factory: GatewayFactory, module_openai: MockProvider
) -> None:
    late = ToolServer("late")
    gateway = gateway_factory(_env(
        module_openai, MCP_SERVERS=late.url, MCP_EXPOSE="true", MCP_POLLING_INTERVAL="1s",
        MCP_ENABLE_RECONNECT="false", MCP_DISABLE_HEALTHCHECK_LOGS="false"))
    try:
        assert _names(gateway) == []
        module_openai.default_behaviour = Reply(content="no tools today")
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=USER)
        assert answer.choices[0].message.content == "no tools today"
        assert "tools" not in module_openai.chat_requests[0].json
        assert gateway.wait_log("mcp polling failed")
        assert "ConnectionRefusedError" in gateway.log_text()  # the underlying TCP error
        late.start()
        assert _wait_for(lambda: "mcp_add" in _names(gateway), 5), gateway.log_text()
    finally:
        late.stop()


def test_server_that_dies_drops_out_is_logged_and_comes_back(
    gateway_factory: GatewayFactory, module_openai: MockProvider
) -> None:
    with ToolServer("mortal") as mortal:
        gateway = gateway_factory(_env(
            module_openai, MCP_SERVERS=mortal.url, MCP_EXPOSE="true",
            MCP_POLLING_INTERVAL="1s", MCP_INITIAL_BACKOFF="100ms", MCP_RETRY_INTERVAL="200ms",
            MCP_RECONNECT_INTERVAL="30s"))
        assert len(_names(gateway)) == 4
        mortal.stop()
        assert _wait_for(lambda: _names(gateway) == [], 5), gateway.log_text()
        assert gateway.wait_log("mcp client reconnecting")
        log = gateway.log_text()
        assert log.count('"mcp polling failed"') == 1  # MCP_DISABLE_HEALTHCHECK_LOGS=true
        mortal.start()
        assert _wait_for(lambda: len(_names(gateway)) == 4, 5), gateway.log_text()
        module_openai.default_behaviour = agent("mcp_echo", {"text": "back"})
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=USER)
        assert answer.choices[0].message.content == "tool said: back"
