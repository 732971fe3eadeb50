"""The API-surface endpoints in the core: embeddings, Responses and Anthropic Messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from igw_core.config import load_settings
from igw_core.effects import (
    CallProvider,
    Effect,
    ReadProviderBody,
    RelayBody,
    Report,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.events import (
    ClientGone,
    Event,
    FailureReason,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    RequestData,
    RequestEnd,
    RequestHead,
)
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.report import ROUTE_LABELS

OPENAI_KEY = "sk-openai-TEST-KEY-0123456789"
ANTHROPIC_KEY = "sk-ant-TEST-KEY-abcdef"
GATEWAY = Gateway.from_settings(load_settings({
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    "GROQ_API_KEY": "gsk-groq",
    "DEEPSEEK_API_KEY": "sk-deepseek",
    "DISALLOWED_MODELS": "openai/gpt-forbidden",
    "TELEMETRY_ENABLE": "true",  # the report carries token usage only when it is recorded
}))


def feed(exchange: Exchange, *events: Event) -> list[Effect]:
    out: list[Effect] = []
    for event in events:
        out.extend(exchange.receive(event))
    return out


def post(path: str, body: dict[str, Any] | bytes, *, query: str = "",
         headers: list[tuple[bytes, bytes]] | None = None,
         gateway: Gateway = GATEWAY) -> tuple[Exchange, list[Effect]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    exchange = Exchange(gateway)
    out = feed(exchange, RequestHead("POST", path, query, headers or [], 0.0, fresh_id="f1"),
               RequestData(data), RequestEnd())
    return exchange, out


def only(effects: list[Effect], kind: type) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def answered(effects: list[Effect]) -> tuple[int, bytes]:
    head = only(effects, SendHead)
    return head.status, b"".join(e.data for e in effects if isinstance(e, SendData))


def report(effects: list[Effect]) -> Any:
    return only(effects, Report).record


# -- embeddings ------------------------------------------------------------------------


def test_embeddings_are_routed_by_provider_prefix_with_the_prefix_stripped() -> None:
    _, out = post("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "hi"})
    call = only(out, CallProvider)
    assert call.url == "https://api.openai.com/v1/embeddings"
    assert json.loads(call.body) == {"model": "text-embedding-3-small", "input": "hi"}
    assert (b"authorization", b"Bearer " + OPENAI_KEY.encode()) in call.headers


def test_embeddings_usage_is_reported_from_the_relayed_answer() -> None:
    exchange, out = post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"},
                         query="provider=openai")
    answer = b'{"object":"list","data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}'
    out = exchange.receive(ProviderHead(0, 200, [(b"content-type", b"application/json"),
                                                 (b"content-length", b"%d" % len(answer))], 0.1))
    relay = only(out, RelayBody)
    assert relay.tap is not None
    relay.tap.feed(answer)
    record = report(exchange.receive(ProviderEnd(0, 0.2)))
    assert record.route == "/v1/embeddings" and record.counted
    assert (record.usage.prompt_tokens, record.usage.total_tokens) == (5, 5)
    assert record.model == "text-embedding-3-small" and record.provider == "openai"


def test_without_telemetry_the_answer_is_not_searched_for_usage() -> None:
    # Only the metrics read a report's usage; without them the body is relayed unread.
    quiet = Gateway.from_settings(load_settings({"OPENAI_API_KEY": OPENAI_KEY}))
    chat = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    exchange, out = post("/v1/chat/completions", chat, gateway=quiet)
    answer = b'{"object":"chat.completion","usage":{"prompt_tokens":5,"total_tokens":5}}'
    out = exchange.receive(ProviderHead(0, 200, [(b"content-type", b"application/json"),
                                                 (b"content-length", b"%d" % len(answer))], 0.1))
    only(out, RelayBody).tap.feed(answer)
    record = report(exchange.receive(ProviderEnd(0, 0.2)))
    assert record.status == 200 and record.usage is None


def test_a_provider_without_embeddings_gets_a_400_naming_the_ones_with_them() -> None:
    _, out = post("/v1/embeddings", {"model": "groq/llama", "input": "hi"})
    status, body = answered(out)
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "groq" in message and "openai" in message and "mistral" in message


def test_model_policy_applies_to_embeddings() -> None:
    _, out = post("/v1/embeddings", {"model": "openai/gpt-forbidden", "input": "x"})
    assert answered(out)[0] == 403


# -- responses -------------------------------------------------------------------------


def test_responses_are_relayed_to_providers_that_serve_them() -> None:
    _, out = post("/v1/responses", {"model": "openai/gpt-4o", "input": "hi", "stream": True})
    call = only(out, CallProvider)
    assert call.url == "https://api.openai.com/v1/responses"
    assert json.loads(call.body)["model"] == "gpt-4o"
    assert (b"accept", b"text/event-stream") in call.headers


def test_responses_for_a_provider_without_the_api_name_those_with_it() -> None:
    _, out = post("/v1/responses", {"model": "deepseek/deepseek-chat", "input": "hi"})
    status, body = answered(out)
    assert status == 400
    assert "groq" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize(("method", "path", "query", "url"), [
    ("GET", "/v1/responses/resp_1", "", "https://api.openai.com/v1/responses/resp_1"),
    ("DELETE", "/v1/responses/resp_1", "provider=groq",
     "https://api.groq.com/openai/v1/responses/resp_1"),
    ("GET", "/v1/responses/resp_1/input_items", "limit=2&provider=openai",
     "https://api.openai.com/v1/responses/resp_1/input_items?limit=2"),
    ("POST", "/v1/responses/resp_1/cancel", "", "https://api.openai.com/v1/responses/resp_1/cancel"),
])
def test_stored_responses_are_reached_through_the_provider_named_by_query(
    method: str, path: str, query: str, url: str,
) -> None:
    exchange = Exchange(GATEWAY)
    out = feed(exchange, RequestHead(method, path, query, [], 0.0))
    if not any(isinstance(e, CallProvider) for e in out):
        out = feed(exchange, RequestEnd())
    call = only(out, CallProvider)
    assert (call.method, call.url) == (method, url)


# -- messages: Anthropic, relayed ---------------------------------------------------------


def test_messages_for_anthropic_are_relayed_with_the_client_anthropic_headers() -> None:
    headers = [(b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"tools-2024"),
               (b"x-api-key", b"client-key-must-not-travel")]
    _, out = post("/v1/messages", {"model": "anthropic/claude-x", "max_tokens": 5,
                                   "messages": []}, query="beta=true", headers=headers)
    call = only(out, CallProvider)
    assert call.url == "https://api.anthropic.com/v1/messages?beta=true"
    assert json.loads(call.body)["model"] == "claude-x"
    sent = dict(call.headers)
    assert sent[b"x-api-key"] == ANTHROPIC_KEY.encode()
    assert sent[b"anthropic-beta"] == b"tools-2024"
    assert [n for n, _ in call.headers].count(b"anthropic-version") == 1


def test_a_bare_claude_model_is_anthropics() -> None:
    _, out = post("/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 5, "messages": []})
    assert only(out, CallProvider).provider == "anthropic"


def test_messages_refusals_come_in_anthropic_error_shape() -> None:
    _, out = post("/v1/messages", b"{not json")
    status, body = answered(out)
    assert status == 400
    parsed = json.loads(body)
    assert parsed["type"] == "error" and parsed["error"]["type"] == "invalid_request_error"


def test_an_anthropic_error_is_passed_on_unchanged() -> None:
    exchange, _ = post("/v1/messages", {"model": "claude-x", "max_tokens": 5, "messages": []})
    error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    out = feed(exchange, ProviderHead(0, 529, [(b"retry-after", b"3")], 0.1),
               ProviderData(0, error), ProviderEnd(0, 0.2))
    status, body = answered(out)
    assert (status, body) == (529, error)
    assert (b"retry-after", b"3") in only(out, SendHead).headers


def test_count_tokens_is_anthropic_only() -> None:
    _, out = post("/v1/messages/count_tokens", {"model": "claude-x", "messages": []})
    assert only(out, CallProvider).url == "https://api.anthropic.com/v1/messages/count_tokens"
    _, out = post("/v1/messages/count_tokens", {"model": "openai/gpt-4o", "messages": []})
    status, body = answered(out)
    assert status == 400 and json.loads(body)["type"] == "error"


# -- messages: translated ----------------------------------------------------------------

REQUEST = {"model": "openai/gpt-4o", "max_tokens": 50, "system": "be brief",
           "messages": [{"role": "user", "content": "hi"}]}


def test_messages_for_another_provider_go_out_as_chat_and_come_back_as_a_message() -> None:
    exchange, out = post("/v1/messages", REQUEST)
    call = only(out, CallProvider)
    assert call.url == "https://api.openai.com/v1/chat/completions"
    sent = json.loads(call.body)
    assert sent["model"] == "gpt-4o" and sent["messages"][0] == {"role": "system",
                                                                  "content": "be brief"}
    completion = {"id": "c1", "object": "chat.completion", "model": "gpt-4o",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "Hello"}}],
                  "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
    out = feed(exchange, ProviderHead(0, 200, [(b"content-type", b"application/json")], 0.1))
    assert only(out, ReadProviderBody)
    out = feed(exchange, ProviderData(0, json.dumps(completion).encode()), ProviderEnd(0, 0.2))
    status, body = answered(out)
    message = json.loads(body)
    assert status == 200
    assert message["type"] == "message" and message["content"] == [{"type": "text",
                                                                    "text": "Hello"}]
    assert message["stop_reason"] == "end_turn"
    record = report(out)
    assert record.route == "/v1/messages" and record.usage.prompt_tokens == 7


def test_a_translated_stream_becomes_anthropic_events() -> None:
    exchange, out = post("/v1/messages", {**REQUEST, "stream": True})
    sent = json.loads(only(out, CallProvider).body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    out = feed(exchange, ProviderHead(0, 200, [(b"content-type", b"text/event-stream")], 0.1))
    assert only(out, SendHead).status == 200
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"},
                      "finish_reason": None}], "usage": None},
        {"choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}],
         "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                  "total_tokens": 5}},
    ]
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    out = feed(exchange, ProviderData(0, stream + b"data: [DONE]\n\n"), ProviderEnd(0, 0.3))
    text = b"".join(e.data for e in out if isinstance(e, SendData)).decode()
    kinds = [line[len("event: "):] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert isinstance(out[-2], SendEnd)
    assert report(out).usage.completion_tokens == 2


def test_a_translated_stream_that_breaks_ends_with_an_error_event() -> None:
    exchange, _ = post("/v1/messages", {**REQUEST, "stream": True})
    feed(exchange, ProviderHead(0, 200, [(b"content-type", b"text/event-stream")], 0.1))
    out = feed(exchange, ProviderFailed(0, FailureReason.RESET, "reset", 0.2))
    text = b"".join(e.data for e in out if isinstance(e, SendData))
    assert b"event: error" in text and isinstance(out[-2], SendEnd)
    assert report(out).error


def test_a_provider_error_is_translated_to_anthropic_shape() -> None:
    exchange, _ = post("/v1/messages", REQUEST)
    out = feed(exchange, ProviderHead(0, 429, [(b"retry-after", b"2")], 0.1),
               ProviderData(0, b'{"error":{"message":"slow down","type":"rate"}}'),
               ProviderEnd(0, 0.2))
    status, body = answered(out)
    assert status == 429
    assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                           "message": "slow down"}}


def test_a_client_that_leaves_mid_translation_is_a_499() -> None:
    exchange, _ = post("/v1/messages", {**REQUEST, "stream": True})
    feed(exchange, ProviderHead(0, 200, [(b"content-type", b"text/event-stream")], 0.1))
    assert report(exchange.receive(ClientGone(0.2))).status == 499


def test_every_new_label_is_a_known_route_label() -> None:
    for path in ("/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens"):
        _, out = post(path, b"[]")
        assert report(out).route in ROUTE_LABELS


# -- readiness ---------------------------------------------------------------------------


def probe(path: str, *, gateway: Gateway = GATEWAY, draining: bool = False,
          method: str = "GET") -> tuple[int, bytes, Any]:
    exchange = Exchange(gateway, draining=draining)
    out = exchange.receive(RequestHead(method, path, "", [], 0.0))
    status, body = answered(out)
    return status, body, report(out)


def test_ready_is_200_when_the_gateway_can_serve() -> None:
    status, body, record = probe("/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    assert record.route == "/ready" and not record.counted


def test_ready_is_503_while_draining_and_health_stays_200() -> None:
    status, body, _ = probe("/ready", draining=True)
    assert status == 503 and json.loads(body)["reasons"] == ["the gateway is shutting down"]
    assert probe("/health", draining=True)[0] == 200


def test_ready_is_503_until_the_signing_keys_load_and_needs_no_token() -> None:
    gateway = Gateway.from_settings(load_settings({
        "AUTH_ENABLE": "true", "AUTH_OIDC_ISSUER": "https://issuer.example",
        "AUTH_OIDC_CLIENT_ID": "igw"}))
    status, body, _ = probe("/ready", gateway=gateway)
    assert status == 503 and "keys" in json.loads(body)["reasons"][0]
    assert probe("/health", gateway=gateway)[0] == 200


def test_ready_answers_head_without_a_body() -> None:
    exchange = Exchange(GATEWAY)
    out = exchange.receive(RequestHead("HEAD", "/ready", "", [], 0.0))
    assert only(out, SendHead).status == 200
    assert not [e for e in out if isinstance(e, SendData)]


def test_a_401_on_messages_is_in_anthropic_shape() -> None:
    gateway = Gateway.from_settings(load_settings({
        "AUTH_ENABLE": "true", "AUTH_OIDC_ISSUER": "https://issuer.example",
        "AUTH_OIDC_CLIENT_ID": "igw", "ANTHROPIC_API_KEY": ANTHROPIC_KEY}))
    exchange = Exchange(gateway, keys=None)
    out = exchange.receive(RequestHead("POST", "/v1/messages", "", [], 0.0))
    status, body = answered(out)
    assert status in (401, 503) and json.loads(body)["type"] == "error"
