"""The Exchange with MCP: injection, the agent loop as effects, bypass, /v1/mcp/tools."""

from __future__ import annotations

import json
from typing import Any

import pytest

from igw_core.config import load_settings
from igw_core.effects import (
    CallProvider,
    CallTool,
    Effect,
    ReadProviderBody,
    ReadRequestBody,
    RelayBody,
    Report,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.errors import LocalProtocolError
from igw_core.events import (
    FailureReason,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    RequestData,
    RequestEnd,
    RequestHead,
    ToolResult,
)
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import EMPTY, Catalogue, build_catalogue

KEY = "sk-openai-TEST-KEY-mcp"
SERVER = "http://tools.test/mcp"
TOOLS = build_catalogue([(SERVER, [{"name": "add", "description": "Add.",
                                    "inputSchema": {"type": "object"}}])])
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream")]


def _gateway(**env: str) -> Gateway:
    return Gateway.from_settings(load_settings({"OPENAI_API_KEY": KEY, "MCP_ENABLE": "true",
                                                **env}))


def _chat(exchange: Exchange, body: dict[str, Any],
          headers: tuple[tuple[bytes, bytes], ...] = ()) -> list[Effect]:
    effects = exchange.receive(RequestHead("POST", "/v1/chat/completions", "",
                                           [(b"content-type", b"application/json"), *headers],
                                           1.0, fresh_id="rid"))
    assert effects == [ReadRequestBody()]
    exchange.receive(RequestData(json.dumps(body).encode()))
    return exchange.receive(RequestEnd())


def _completion(content: str | None, calls: list[dict[str, Any]] | None = None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return json.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}).encode()


def _provider_answers(exchange: Exchange, call: int, body: bytes, now: float,
                      headers: list[tuple[bytes, bytes]] = JSON,
                      status: int = 200) -> list[Effect]:
    effects = exchange.receive(ProviderHead(call, status, headers, now))
    assert isinstance(effects[-1], ReadProviderBody) and effects[-1].call == call
    out = effects[:-1]
    out += exchange.receive(ProviderData(call, body))
    out += exchange.receive(ProviderEnd(call, now))
    return out


ADD_CALL = {"id": "t1", "type": "function",
            "function": {"name": "mcp_add", "arguments": '{"a": 1, "b": 2}'}}
REQUEST = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "1+2?"}]}


def test_chat_runs_the_tool_loop_and_reports_tool_facts() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, REQUEST)
    assert len(first) == 1 and isinstance(first[0], CallProvider)
    sent = json.loads(first[0].body)
    assert [t["function"]["name"] for t in sent["tools"]] == ["mcp_add"]
    assert (b"authorization", f"Bearer {KEY}".encode()) in first[0].headers
    calls = _provider_answers(exchange, first[0].call, _completion(None, [ADD_CALL]), 2.0)
    assert calls == [CallTool(1, SERVER, "add", {"a": 1, "b": 2})]
    again = exchange.receive(ToolResult(1, True, "3", 2.5))
    assert len(again) == 1 and isinstance(again[0], CallProvider)
    messages = json.loads(again[0].body)["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "t1", "content": "3"}
    final = _provider_answers(exchange, again[0].call, _completion("It is 3."), 3.0)
    assert isinstance(final[0], SendHead) and final[0].status == 200
    assert isinstance(final[1], SendData)
    body = json.loads(final[1].data)
    assert body["choices"][0]["message"]["content"] == "It is 3."
    assert body["usage"]["total_tokens"] == 6
    assert isinstance(final[2], SendEnd) and isinstance(final[3], Report)
    record = final[3].record
    assert record.status == 200 and record.usage is not None and record.usage.total_tokens == 6
    assert [(f.name, f.ok, f.duration) for f in record.tool_calls] == [("add", True, 0.5)]
    assert exchange.finished


@pytest.mark.parametrize("header, tools, env", [
    ((b"x-mcp-bypass", b"true"), TOOLS, {}),
    ((b"x-mcp-bypass", b"TRUE"), TOOLS, {}),
    ((b"x-other", b"1"), EMPTY, {}),  # every server down: as if MCP were off
    ((b"x-other", b"1"), TOOLS, {"MCP_ENABLE": "false"}),
])
def test_bypass_no_tools_or_mcp_off_take_the_plain_relay(
    header: tuple[bytes, bytes], tools: Catalogue, env: dict[str, str]
) -> None:
    exchange = Exchange(_gateway(**env), tools=tools)
    effects = _chat(exchange, REQUEST, (header,))
    assert len(effects) == 1 and isinstance(effects[0], CallProvider)
    assert effects[0].call == 0 and "tools" not in json.loads(effects[0].body)
    head = exchange.receive(ProviderHead(0, 200, JSON, 2.0))
    assert isinstance(head[-1], RelayBody)


def test_tool_failure_becomes_a_result_the_model_reads() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, REQUEST)
    assert isinstance(first[0], CallProvider)
    _provider_answers(exchange, first[0].call, _completion(None, [ADD_CALL]), 2.0)
    again = exchange.receive(ToolResult(1, False, "MCP tool add did not answer", 3.0))
    assert isinstance(again[0], CallProvider)
    content = json.loads(again[0].body)["messages"][-1]["content"]
    assert content.startswith("Error:") and "did not answer" in content


def test_streaming_sends_one_head_and_ends_with_an_error_event_if_a_later_round_fails() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, {**REQUEST, "stream": True})
    assert isinstance(first[0], CallProvider)
    stream = (b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant",'
              b'"content":"Adding. "},"finish_reason":null}]}\n\n'
              b'data: {"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
              b'"id":"t1","type":"function","function":{"name":"mcp_add","arguments":"{}"}}]},'
              b'"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n')
    effects = _provider_answers(exchange, first[0].call, stream, 2.0, SSE)
    assert isinstance(effects[0], SendHead) and dict(effects[0].headers)[b"content-type"] == (
        b"text/event-stream")
    assert isinstance(effects[1], SendData) and b"Adding. " in effects[1].data
    assert isinstance(effects[-1], CallTool)
    again = exchange.receive(ToolResult(effects[-1].call, True, "3", 2.5))
    assert isinstance(again[0], CallProvider)
    late = exchange.receive(ProviderFailed(again[0].call, FailureReason.UNREACHABLE,
                                           "ConnectError", 3.0))
    assert isinstance(late[0], SendData) and b'"error"' in late[0].data
    assert late[0].data.endswith(b"data: [DONE]\n\n")
    assert isinstance(late[1], SendEnd) and isinstance(late[2], Report)
    assert late[2].record.status == 200 and late[2].record.error


def test_provider_error_in_the_first_round_is_returned_like_the_relay_does() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, REQUEST)
    assert isinstance(first[0], CallProvider)
    effects = _provider_answers(exchange, first[0].call, b'{"error":{"message":"bad model"}}',
                                2.0, status=404)
    assert isinstance(effects[0], SendHead) and effects[0].status == 404
    assert isinstance(effects[1], SendData) and b"bad model" in effects[1].data


def test_unexpected_tool_result_is_a_protocol_error() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    _chat(exchange, REQUEST)
    with pytest.raises(LocalProtocolError):
        exchange.receive(ToolResult(9, True, "", 2.0))


def _tools_listing(exchange: Exchange) -> list[Effect]:
    return exchange.receive(RequestHead("GET", "/v1/mcp/tools", "", [], 1.0, fresh_id="r"))


def test_tool_listing_is_forbidden_unless_exposed() -> None:
    effects = _tools_listing(Exchange(_gateway(), tools=TOOLS))
    assert isinstance(effects[0], SendHead) and effects[0].status == 403
    assert isinstance(effects[1], SendData) and b"MCP_EXPOSE=true" in effects[1].data


def test_tool_listing_shows_name_description_server_and_schema() -> None:
    effects = _tools_listing(Exchange(_gateway(MCP_EXPOSE="true"), tools=TOOLS))
    assert isinstance(effects[0], SendHead) and effects[0].status == 200
    assert isinstance(effects[1], SendData)
    assert json.loads(effects[1].data) == {"object": "list", "data": [
        {"name": "mcp_add", "description": "Add.", "server": SERVER,
         "input_schema": {"type": "object"}}]}
    record = effects[-1]
    assert isinstance(record, Report) and record.record.route == "/v1/mcp/tools"


def test_streaming_request_answered_with_json_is_streamed_to_the_client() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, {**REQUEST, "stream": True})
    assert isinstance(first[0], CallProvider)
    effects = _provider_answers(exchange, first[0].call, _completion(None, [ADD_CALL]), 2.0)
    assert isinstance(effects[0], SendHead)
    assert effects[-1] == CallTool(1, SERVER, "add", {"a": 1, "b": 2})
    again = exchange.receive(ToolResult(1, True, "3", 2.5))
    assert isinstance(again[0], CallProvider)
    final = _provider_answers(exchange, again[0].call, _completion("It is 3."), 3.0)
    data = b"".join(e.data for e in final if isinstance(e, SendData))
    payloads = [p for p in data.decode().split("\n\n") if p]
    assert payloads[-1] == "data: [DONE]"
    assert "It is 3." in data.decode() and "mcp_add" not in data.decode()


def test_provider_error_in_a_later_streamed_round_keeps_status_200_and_ends_the_stream() -> None:
    exchange = Exchange(_gateway(), tools=TOOLS)
    first = _chat(exchange, {**REQUEST, "stream": True})
    assert isinstance(first[0], CallProvider)
    effects = _provider_answers(exchange, first[0].call, _completion(None, [ADD_CALL]), 2.0)
    again = exchange.receive(ToolResult(1, True, "3", 2.5))
    assert isinstance(effects[-1], CallTool) and isinstance(again[0], CallProvider)
    late = _provider_answers(exchange, again[0].call, b'{"error":{"message":"rate limited"}}',
                             3.0, status=429)
    assert isinstance(late[0], SendData) and b"rate limited" in late[0].data
    assert late[0].data.endswith(b"data: [DONE]\n\n")
    report = late[-1]
    assert isinstance(report, Report) and report.record.status == 200
    assert report.record.error == "upstream status 429"


def test_each_agent_round_is_routed_through_the_alias() -> None:
    from types import MappingProxyType

    from igw_core.router import Alias, Deployment, Router, RoutingTable, Strategy

    gateway = _gateway(GROQ_API_KEY="gsk-groq")
    alias = Alias("smart", Strategy.ORDERED, (Deployment("groq", "llama"),
                                             Deployment("openai", "gpt-4o")), retries=1)
    gateway.routing.router = Router(RoutingTable(MappingProxyType({"smart": alias})))
    exchange = Exchange(gateway, tools=TOOLS)
    (first,) = _chat(exchange, {**REQUEST, "model": "smart"})
    assert first.provider == "groq" and json.loads(first.body)["model"] == "llama"
    # Round 1: groq is overloaded, openai answers with a tool call.
    (retry,) = _provider_answers(exchange, first.call, b'{"error":{"message":"busy"}}', 2.0,
                                 status=503)
    assert isinstance(retry, CallProvider) and retry.provider == "openai"
    assert json.loads(retry.body)["model"] == "gpt-4o"
    assert json.loads(retry.body)["tools"] == json.loads(first.body)["tools"]
    calls = _provider_answers(exchange, retry.call, _completion(None, [ADD_CALL]), 2.1)
    assert [type(c) for c in calls] == [CallTool]
    # Round 2 is routed afresh: groq is cooling, so openai again.
    (again,) = exchange.receive(ToolResult(calls[0].call, True, "3", 2.5))
    assert isinstance(again, CallProvider) and again.provider == "openai"
    assert again.call > retry.call
    final = _provider_answers(exchange, again.call, _completion("It is 3."), 3.0)
    record = final[-1].record  # type: ignore[attr-defined]
    assert record.alias == "smart" and record.provider == "openai"
    assert [f.outcome for f in record.attempts] == ["retry", "ok", "ok"]
