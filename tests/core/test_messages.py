"""igw_core.messages: Anthropic Messages requests, answers, streams and errors over the chat API.

What comes out is checked against the official ``anthropic`` SDK's own types, and a
translated stream is read back by the SDK's streaming client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.errors import BadRequest
from igw_core.messages import (
    MessageStream,
    chat_to_message,
    error_body,
    error_type,
    messages_to_chat,
    translate_error,
)
from igw_core.report import Usage

FAST = settings(max_examples=150, deadline=None)
STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
FRAME = re.compile(rb"event: ([a-z_]+)\ndata: ([^\n]*)")


def events_of(data: bytes) -> list[dict[str, Any]]:
    """Split translated bytes into events, checking the exact framing on the way."""
    assert data.endswith(b"\n\n") or not data
    events = []
    for frame in data.split(b"\n\n")[:-1]:
        match = FRAME.fullmatch(frame)
        assert match is not None, frame
        event = json.loads(match.group(2))
        assert event["type"] == match.group(1).decode()
        # Compact JSON, as Anthropic sends it.
        assert match.group(2) in (compact(event, ascii_only=False), compact(event, ascii_only=True))
        events.append(event)
    return events


def compact(obj: Any, *, ascii_only: bool) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass")


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None,
               usage: dict[str, Any] | None = None, *, choices: bool = True) -> dict[str, Any]:
    """A chunk as OpenAI sends it, nulls included."""
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
        "system_fingerprint": None, "service_tier": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices else [],
        "usage": usage,
    }


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def translate(body: bytes, *, close: bool = True) -> tuple[bytes, MessageStream]:
    stream = MessageStream("claude-sonnet-4-5", "msg_1")
    out = stream.feed(body)
    if close:
        out += stream.close()
    return out, stream


def read_with_sdk(body: bytes) -> Message:
    """What the Anthropic SDK's streaming client makes of ``body`` served as the answer."""
    transport = httpx2.MockTransport(lambda request: httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=body))
    client = anthropic.Anthropic(api_key="unused", base_url="http://gateway.test", max_retries=0,
                                 http_client=httpx2.Client(transport=transport))
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        return stream.get_final_message()


def text_tool_stream() -> bytes:
    """A real-looking OpenAI stream: text, one tool call in fragments, a usage chunk."""
    return sse(
        chat_chunk({"role": "assistant", "content": "", "refusal": None}),
        chat_chunk({"content": "Let me "}),
        chat_chunk({"content": "look."}),
        chat_chunk({"content": None, "tool_calls": [{
            "index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get", "arguments": ""}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chat_chunk({}, "tool_calls"),
        chat_chunk(None, usage={"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
                                "prompt_tokens_details": {"cached_tokens": 20}}, choices=False),
    )


# --- requests -------------------------------------------------------------------------


def translated(messages: list[Any], **fields: Any) -> dict[str, Any]:
    return messages_to_chat({"model": "claude-x", "max_tokens": 100, "messages": messages,
                             **fields}, "gpt-up")


def test_a_plain_request_keeps_model_max_tokens_and_messages() -> None:
    chat = translated([{"role": "user", "content": "hi"}])
    assert chat == {"model": "gpt-up", "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("system", "content"), [
    ("Be brief.", "Be brief."),
    ([{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
      {"type": "text", "text": "Two."}], "One.\n\nTwo."),
])
def test_system_becomes_the_first_message(system: Any, content: str) -> None:
    chat = translated([{"role": "user", "content": "hi"}], system=system)
    assert chat["messages"][0] == {"role": "system", "content": content}


def test_text_blocks_become_one_string_joined_by_a_blank_line() -> None:
    chat = translated([{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}]}])
    assert chat["messages"] == [{"role": "user", "content": "a\n\nb"}]


def test_images_become_image_url_parts() -> None:
    chat = translated([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]}])
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
    ]}]


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    chat = translated([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Zürich"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "also, thanks"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "clock"}]},
        ]},
    ])
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get", "arguments": '{"city":"Zürich"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "no\n\nclock"},
        {"role": "user", "content": "also, thanks"},
    ]


def test_an_assistant_turn_of_only_tool_calls_has_null_content() -> None:
    chat = translated([{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}])
    assert chat["messages"][0]["content"] is None


def test_only_thinking_becomes_an_empty_assistant_turn() -> None:
    chat = translated([{"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "xx"}]}])
    assert chat["messages"] == [{"role": "assistant", "content": ""}]


def test_images_of_a_tool_result_follow_the_tool_messages() -> None:
    chat = translated([
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "read",
                                           "input": {"path": "a.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "a.png"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}]}]},
    ])
    assert chat["messages"][1:] == [
        {"role": "tool", "tool_call_id": "t", "content": "a.png"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]


def test_parameters_are_carried_over_or_dropped() -> None:
    chat = translated(
        [{"role": "user", "content": "hi"}], stop_sequences=["END"], temperature=0.2, top_p=0.9,
        top_k=5, metadata={"user_id": "u-1"}, stream=True, thinking={"type": "enabled",
                                                                     "budget_tokens": 1024},
        service_tier="auto")
    assert chat == {"model": "gpt-up", "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}], "stop": ["END"],
                    "temperature": 0.2, "top_p": 0.9, "user": "u-1", "stream": True}


def test_tools_become_functions() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = translated([{"role": "user", "content": "hi"}], tools=[
        {"name": "get", "description": "Weather.", "input_schema": schema,
         "cache_control": {"type": "ephemeral"}},
        {"type": "custom", "name": "now", "input_schema": {"type": "object"}},
    ], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "get", "description": "Weather.",
                                          "parameters": schema}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get"}, {"type": "function", "function": {"name": "get"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    chat = translated([{"role": "user", "content": "hi"}], tool_choice=choice,
                      tools=[{"name": "get", "input_schema": {"type": "object"}}])
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_tool_choice_without_tools_is_not_sent() -> None:
    # The chat API refuses a tool_choice without tools; Anthropic accepts "none" alone.
    chat = translated([{"role": "user", "content": "hi"}], tool_choice={"type": "none"})
    assert "tool_choice" not in chat and "tools" not in chat


@pytest.mark.parametrize(("fields", "words"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"messages": {"role": "user"}}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "'system'"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "'document'"),
    ({"messages": [{"role": "user", "content": ["text"]}]}, "None"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image", "source": {}}]}]},
     "'image'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "'file'"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]},
     "'server_tool_use'"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "'web_search_20250305'"),
    ({"tools": [{"name": "get"}]}, "input_schema"),
    ({"tools": [{"name": "get", "input_schema": {}}], "tool_choice": {"type": "maybe"}},
     "'maybe'"),
    ({"system": [{"type": "image"}]}, "system[0]"),
])
def test_untranslatable_requests_are_refused(fields: dict[str, Any], words: str) -> None:
    request = {"model": "claude-x", "max_tokens": 10,
               "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(BadRequest) as caught:
        messages_to_chat(request, "gpt-up")
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"
    assert words in caught.value.message


# --- non-stream answers ---------------------------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop",
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None,
                                                 "annotations": [], **message},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": None}


def test_a_completion_with_text_and_tool_calls() -> None:
    answer = chat_to_message(completion(
        {"content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        "tool_calls", {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}),
        "claude-x", "msg_9")
    assert answer == {
        "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
    Message.model_validate(answer)


@pytest.mark.parametrize(("finish", "reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("function_call", "tool_use"), ("content_filter", "refusal"), (None, "end_turn"),
    ("eos", "end_turn"),
])
def test_stop_reasons(finish: str | None, reason: str) -> None:
    answer = chat_to_message(completion({"content": "x"}, finish), "c", "m")
    assert answer["stop_reason"] == reason


def test_tool_calls_finished_with_stop_still_ask_for_the_tool() -> None:
    answer = chat_to_message(completion({"content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "stop"),
        "c", "m")
    assert answer["stop_reason"] == "tool_use"
    assert answer["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


def test_cached_tokens_are_reported_apart_from_input_tokens() -> None:
    answer = chat_to_message(completion({"content": "x"}, usage={
        "prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
        "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0}}), "c", "m")
    assert answer["usage"] == {"input_tokens": 40, "output_tokens": 5,
                               "cache_read_input_tokens": 60}
    Message.model_validate(answer)


def test_no_usage_counts_zero_and_empty_content_gives_no_block() -> None:
    answer = chat_to_message(completion({"content": ""}), "c", "m")
    assert answer["content"] == []
    assert answer["usage"] == {"input_tokens": 0, "output_tokens": 0}
    Message.model_validate(answer)


def test_a_refusal_is_answered_as_text() -> None:
    answer = chat_to_message(completion({"content": None, "refusal": "I can't."},
                                        "content_filter"), "c", "m")
    assert answer["content"] == [{"type": "text", "text": "I can't."}]
    assert answer["stop_reason"] == "refusal"


def test_a_tool_call_without_id_gets_one_from_the_message_id() -> None:
    answer = chat_to_message(completion({"content": None, "function_call": {
        "name": "f", "arguments": '{"a":1}'}}, "function_call"), "c", "msg_7")
    assert answer["content"] == [{"type": "tool_use", "id": "toolu_msg_7_0", "name": "f",
                                  "input": {"a": 1}}]


@pytest.mark.parametrize("bad", [
    {"choices": []},
    {"choices": None},
    {"choices": [{"index": 0, "message": None}]},
    completion({"content": 5}),
    completion({"content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}),
    completion({"content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}]}),
    completion({"content": None, "tool_calls": [{"id": "c", "type": "function"}]}),
])
def test_unreadable_completions_raise_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        chat_to_message(bad, "c", "m")


# --- streams --------------------------------------------------------------------------


def test_a_real_looking_stream_reads_back_through_the_sdk() -> None:
    out, stream = translate(text_tool_stream(), close=False)
    assert stream.finished  # [DONE] closed it
    assert stream.close() == b""
    assert stream.usage == Usage(30, 9, 39)
    assert [event["type"] for event in events_of(out)] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    message = read_with_sdk(out)
    assert message.id == "msg_1"
    assert message.model == "claude-sonnet-4-5"
    assert message.stop_reason == "tool_use"
    assert [block.model_dump(include={"type", "text", "id", "name", "input"})
            for block in message.content] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get", "input": {"city": "Paris"}}]
    assert (message.usage.input_tokens, message.usage.output_tokens,
            message.usage.cache_read_input_tokens) == (10, 9, 20)


def test_message_delta_carries_stop_reason_and_usage() -> None:
    out, _ = translate(sse(
        chat_chunk({"role": "assistant", "content": "hi"}),
        chat_chunk({}, "length"),
        chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                   choices=False)))
    delta = events_of(out)[-2]
    assert delta == {"type": "message_delta",
                     "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                     "usage": {"input_tokens": 3, "output_tokens": 1}}


def test_a_stream_with_no_chunk_still_makes_a_message() -> None:
    stream = MessageStream("claude-x", "msg_0")
    assert stream.feed(b": keep-alive\n\n") == b""
    out = stream.close()
    assert [event["type"] for event in events_of(out)] == [
        "message_start", "message_delta", "message_stop"]
    assert stream.finished and stream.usage is None
    assert stream.close() == b""
    assert stream.feed(b"data: {}\n\n") == b""
    assert read_with_sdk(out).content == []


def test_empty_deltas_start_nothing() -> None:
    out, _ = translate(sse(chat_chunk({"role": "assistant", "content": ""}),
                           chat_chunk({"content": None, "refusal": None, "tool_calls": None}),
                           chat_chunk(None), chat_chunk({}, "stop")))
    assert [event["type"] for event in events_of(out)] == [
        "message_start", "message_delta", "message_stop"]


def test_a_provider_error_chunk_ends_the_stream_with_an_error_event() -> None:
    stream = MessageStream("claude-x", "msg_1")
    out = stream.feed(sse(chat_chunk({"content": "part"}), done=False)
                      + b'data: {"error":{"message":"model overloaded","type":"server_error"}}\n\n'
                      + sse(chat_chunk({"content": "more"})))
    events = events_of(out)
    assert events[-1] == {"type": "error",
                          "error": {"type": "api_error", "message": "model overloaded"}}
    assert [event["type"] for event in events[:-1]] == [
        "message_start", "content_block_start", "content_block_delta"]
    assert stream.finished
    assert stream.feed(b"data: [DONE]\n\n") == b"" and stream.close() == b""
    ErrorResponse.model_validate(events[-1])
    with pytest.raises(anthropic.APIStatusError, match="model overloaded"):
        read_with_sdk(out)


@pytest.mark.parametrize("data", [b"data: not json\n\n", b"data: [1,2]\n\n"])
def test_an_unreadable_chunk_fails_the_stream(data: bytes) -> None:
    out, stream = translate(data, close=False)
    assert [event["type"] for event in events_of(out)] == ["error"]
    assert stream.finished


def test_fail_emits_one_error_event_and_nothing_after() -> None:
    stream = MessageStream("claude-x", "msg_1")
    stream.feed(sse(chat_chunk({"content": "x"}), done=False))
    assert events_of(stream.fail("upstream went away")) == [
        {"type": "error", "error": {"type": "api_error", "message": "upstream went away"}}]
    assert stream.finished
    assert stream.fail("again") == b"" and stream.close() == b""


def test_feed_after_done_returns_nothing() -> None:
    stream = MessageStream("claude-x", "msg_1")
    out = stream.feed(sse(chat_chunk({"content": "x"})) + b"data: ")
    assert events_of(out)[-1]["type"] == "message_stop"
    assert stream.feed(b'{"choices":[]}\n\n') == b""


def test_tool_calls_all_numbered_zero_are_told_apart_by_id() -> None:
    # Some providers send every call whole, each at index 0 (or with no index at all).
    out, _ = translate(sse(
        chat_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f",
                                                                          "arguments": "{}"}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g",
                                                                          "arguments": "{}"}}]}),
        chat_chunk({"tool_calls": [{"id": "c", "function": {"name": "h", "arguments": "{}"}},
                                   {"id": "d", "function": {"name": "k", "arguments": "{}"}}]}),
        chat_chunk({}, "stop")))
    starts = [event["content_block"] for event in events_of(out)
              if event["type"] == "content_block_start"]
    assert [(block["id"], block["name"]) for block in starts] == [
        ("a", "f"), ("b", "g"), ("c", "h"), ("d", "k")]
    assert events_of(out)[-2]["delta"]["stop_reason"] == "tool_use"


def test_interleaved_tool_arguments_fail_the_stream() -> None:
    out, _ = translate(sse(
        chat_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f",
                                                                          "arguments": "{"}}]}),
        chat_chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g",
                                                                          "arguments": "{"}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]})))
    events = events_of(out)
    assert events[-1]["type"] == "error"
    assert "'a'" in events[-1]["error"]["message"]


def test_a_tool_call_without_id_gets_one() -> None:
    out, _ = translate(sse(chat_chunk({"tool_calls": [
        {"index": 0, "function": {"name": "f", "arguments": "{}"}}]})))
    start = next(event for event in events_of(out) if event["type"] == "content_block_start")
    assert start["content_block"]["id"] == "toolu_msg_1_0"


def test_a_lone_surrogate_still_gives_valid_utf8() -> None:
    out, _ = translate(b'data: {"choices":[{"index":0,"delta":{"content":"a\\ud800b"}}]}\n\n')
    out.decode("utf-8")
    assert events_of(out)[2]["delta"]["text"] == "a\ud800b"


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (409, "invalid_request_error"),
    (413, "request_too_large"), (422, "invalid_request_error"), (429, "rate_limit_error"),
    (500, "api_error"), (502, "api_error"), (503, "overloaded_error"), (504, "timeout_error"),
    (529, "overloaded_error"), (200, "api_error"),
])
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind
    body = json.loads(error_body(status, "m"))
    assert body == {"type": "error", "error": {"type": kind, "message": "m"}}
    if kind != "request_too_large":  # documented by Anthropic, absent from the SDK's union
        ErrorResponse.model_validate(body)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error":{"message":"Invalid API key","type":"invalid_request_error","code":null}}',
     "Invalid API key"),
    (b'{"error":"model not found"}', "model not found"),
    (b'{"message":"slow down"}', "slow down"),
    (b'{"detail":"Not Found"}', "Not Found"),
    (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
     "Overloaded"),
    (b"<html>Bad gateway</html>", "upstream status 429"),
    (b"", "upstream status 429"),
    (b'{"error":{"message":""}}', "upstream status 429"),
    (b"\xff\xfe", "upstream status 429"),
])
def test_translate_error_keeps_the_providers_message(body: bytes, message: str) -> None:
    assert json.loads(translate_error(429, body)) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": message}}


# --- properties: streams --------------------------------------------------------------

# Text a provider can send (no lone surrogates: those are tested apart).
words = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8)
fragments = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)


@dataclass(frozen=True)
class Text:
    piece: str


@dataclass(frozen=True)
class Tool:
    id: str
    name: str
    fragments: tuple[str, ...]  # the first goes with the id and name


@dataclass(frozen=True)
class Script:
    """What a provider streams: output pieces, a finish reason, maybe usage, and the framing."""

    items: tuple[Text | Tool | None, ...]  # None: an empty delta or a keep-alive
    finish: str | None
    usage: tuple[int, int, int] | None  # prompt, completion, cached
    done: bool
    crlf: bool
    ascii_json: bool

    def encode(self) -> bytes:
        end = "\r\n" if self.crlf else "\n"
        lines: list[str] = []

        def send(chunk: dict[str, Any]) -> None:
            lines.append("data: " + json.dumps(chunk, ensure_ascii=self.ascii_json) + end * 2)

        send(chat_chunk({"role": "assistant", "content": "", "refusal": None}))
        tool_index = 0
        for position, item in enumerate(self.items):
            if isinstance(item, Text):
                send(chat_chunk({"content": item.piece}))
            elif isinstance(item, Tool):
                first, *rest = item.fragments or ("",)
                send(chat_chunk({"content": None, "tool_calls": [{
                    "index": tool_index, "id": item.id, "type": "function",
                    "function": {"name": item.name, "arguments": first}}]}))
                for fragment in rest:
                    send(chat_chunk({"tool_calls": [{"index": tool_index,
                                                     "function": {"arguments": fragment}}]}))
                tool_index += 1
            elif position % 2:
                lines.append(": keep-alive" + end * 2)
            else:
                send(chat_chunk({"content": None}))
        send(chat_chunk({}, self.finish))
        if self.usage is not None:
            prompt, completion_tokens, cached = self.usage
            send(chat_chunk(None, choices=False, usage={
                "prompt_tokens": prompt, "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached}}))
        if self.done:
            lines.append("data: [DONE]" + end * 2)
        return "".join(lines).encode()

    def blocks(self) -> list[tuple[str, ...]]:
        """The content blocks the client must see: runs of text, then each tool call."""
        blocks: list[tuple[str, ...]] = []
        for item in self.items:
            if isinstance(item, Text):
                if blocks and blocks[-1][0] == "text":
                    blocks[-1] = ("text", blocks[-1][1] + item.piece)
                else:
                    blocks.append(("text", item.piece))
            elif isinstance(item, Tool):
                blocks.append(("tool_use", item.id, item.name, "".join(item.fragments)))
        return blocks


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    ids = iter(range(1000))
    tools = st.builds(lambda name, parts: Tool(f"call_{next(ids)}", name, tuple(parts)),
                      st.sampled_from(["get", "read_file", "Bash"]),
                      st.lists(fragments, max_size=4))
    items = draw(st.lists(st.one_of(st.builds(Text, words), tools, st.none()), max_size=8))
    usage = draw(st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                                       st.integers(0, 10**6)))
    return Script(tuple(items), draw(st.sampled_from(["stop", "length", "tool_calls",
                                                      "content_filter", None])),
                  usage, draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))


def whole(script: Script) -> bytes:
    return translate(script.encode())[0]


@FAST
@given(scripts(), st.lists(st.integers(0, 10**6), max_size=10))
def test_the_translation_does_not_depend_on_how_the_stream_is_split(
        script: Script, cuts: list[int]) -> None:
    body = script.encode()
    expected = whole(script)
    points = sorted({cut % (len(body) + 1) for cut in cuts})
    stream = MessageStream("claude-sonnet-4-5", "msg_1")
    pieces = [body[start:end] for start, end in zip([0, *points], [*points, len(body)],
                                                    strict=True)]
    assert b"".join(stream.feed(piece) for piece in pieces) + stream.close() == expected
    stream = MessageStream("claude-sonnet-4-5", "msg_1")
    assert b"".join(stream.feed(body[at:at + 1]) for at in range(len(body))) \
        + stream.close() == expected


@FAST
@given(scripts())
def test_the_event_sequence_is_well_formed(script: Script) -> None:
    events = events_of(whole(script))
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_start") == kinds.count("message_stop") == 1
    assert kinds.count("message_delta") == 1
    open_index: int | None = None
    next_index = 0
    for event in events[1:-2]:
        if event["type"] == "content_block_start":
            assert open_index is None and event["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
        else:
            assert event["type"] == "content_block_stop" and event["index"] == open_index
            open_index = None
    assert open_index is None


@FAST
@given(scripts())
def test_text_and_tool_arguments_arrive_exactly(script: Script) -> None:
    events = events_of(whole(script))
    blocks: list[tuple[str, ...]] = []
    for event in events:
        if event["type"] == "content_block_start":
            block = event["content_block"]
            blocks.append(("text", "") if block["type"] == "text"
                          else ("tool_use", block["id"], block["name"], ""))
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            piece = delta["text"] if delta["type"] == "text_delta" else delta["partial_json"]
            assert piece  # no empty deltas
            blocks[-1] = (*blocks[-1][:-1], blocks[-1][-1] + piece)
    assert blocks == script.blocks()
    delta = events[-2]
    tools = any(isinstance(item, Tool) for item in script.items)
    reason = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
              "content_filter": "refusal", None: "end_turn"}[script.finish]
    assert delta["delta"]["stop_reason"] == ("tool_use" if tools and reason == "end_turn"
                                             else reason)
    if script.usage is None:
        assert delta["usage"] == {"input_tokens": 0, "output_tokens": 0}
    else:
        prompt, output, cached = script.usage
        cached = min(cached, prompt)
        assert delta["usage"]["output_tokens"] == output
        assert delta["usage"]["input_tokens"] + delta["usage"].get(
            "cache_read_input_tokens", 0) == prompt
        assert delta["usage"].get("cache_read_input_tokens", 0) == cached


@FAST
@given(scripts())
def test_every_event_validates_with_the_sdk(script: Script) -> None:
    out, stream = translate(script.encode())
    for event in events_of(out):
        assert STREAM_EVENT.validate_python(event).type == event["type"]
    if script.usage is not None:
        prompt, completion_tokens, _ = script.usage
        assert stream.usage == Usage(prompt, completion_tokens, prompt + completion_tokens)


# --- properties: answers and requests -------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)
objects = st.dictionaries(st.text(max_size=5), json_values, max_size=3)


@FAST
@given(st.none() | st.text(max_size=10), st.lists(objects, max_size=3),
       st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]),
       st.none() | st.tuples(st.integers(0, 1000), st.integers(0, 1000)))
def test_a_completion_becomes_a_valid_message(text: str | None, inputs: list[dict[str, Any]],
                                             finish: str | None,
                                             usage: tuple[int, int] | None) -> None:
    calls = [{"id": f"call_{n}", "type": "function",
              "function": {"name": f"f{n}", "arguments": json.dumps(value)}}
             for n, value in enumerate(inputs)]
    answer = chat_to_message(completion(
        {"content": text, "tool_calls": calls or None}, finish,
        None if usage is None else {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                    "total_tokens": sum(usage)}), "claude-x", "msg_1")
    message = Message.model_validate(answer)
    texts = [block.text for block in message.content if block.type == "text"]
    assert texts == ([text] if text else [])
    assert [(block.id, block.input) for block in message.content
            if block.type == "tool_use"] == [(f"call_{n}", value) for n, value in enumerate(inputs)]


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Alternating turns; every assistant tool_use is answered in the next user turn."""
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    serial = 0
    for turn in range(draw(st.integers(1, 6))):
        blocks: list[dict[str, Any]] = []
        if turn % 2 == 0:
            for tool_id in pending:
                content = draw(words | st.lists(words.map(lambda t: {"type": "text", "text": t}),
                                                max_size=2))
                blocks.append({"type": "tool_result", "tool_use_id": tool_id, "content": content,
                               "is_error": draw(st.booleans())})
            pending = []
            for kind in draw(st.lists(st.sampled_from(["text", "image"]), max_size=3)):
                blocks.append({"type": "text", "text": draw(words)} if kind == "text" else
                              {"type": "image", "source": {"type": "base64",
                                                           "media_type": "image/png",
                                                           "data": draw(words)}})
        else:
            for kind in draw(st.lists(st.sampled_from(["text", "tool", "thinking"]), max_size=3)):
                if kind == "text":
                    blocks.append({"type": "text", "text": draw(words)})
                elif kind == "thinking":
                    blocks.append({"type": "thinking", "thinking": "...", "signature": "s"})
                else:
                    serial += 1
                    pending.append(f"toolu_{serial}")
                    blocks.append({"type": "tool_use", "id": f"toolu_{serial}", "name": "f",
                                   "input": draw(objects)})
        role = "user" if turn % 2 == 0 else "assistant"
        plain = draw(words) if not blocks and draw(st.booleans()) else None
        messages.append({"role": role, "content": plain if plain is not None else blocks})
    return messages


def texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if part["type"] == "text"]


@FAST
@given(conversations())
def test_a_request_keeps_every_text_image_and_tool_pairing(messages: list[dict[str, Any]]) -> None:
    chat = messages_to_chat({"max_tokens": 1, "messages": messages}, "gpt-up")["messages"]
    out = iter(chat)
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            assert next(out) == {"role": message["role"], "content": content}
            continue
        for block in content:
            if block["type"] == "tool_result":
                tool = next(out)
                assert tool["role"] == "tool" and tool["tool_call_id"] == block["tool_use_id"]
                assert texts_of(tool["content"]) == ["\n\n".join(texts_of(
                    [{"type": "text", "text": block["content"]}]
                    if isinstance(block["content"], str) else block["content"]))]
        rest = [block for block in content if block["type"] not in ("tool_result", "thinking")]
        if message["role"] == "user" and not rest and len(rest) != len(content):
            continue  # only tool results: no user message of its own
        translated_message = next(out)
        assert translated_message["role"] == message["role"]
        texts = [block["text"] for block in rest if block["type"] == "text"]
        images = [f"data:image/png;base64,{block['source']['data']}" for block in rest
                  if block["type"] == "image"]
        got = translated_message["content"]
        if images:
            assert texts_of(got) == texts
            assert [part["image_url"]["url"] for part in got
                    if part["type"] == "image_url"] == images
        else:
            assert texts_of(got) == (["\n\n".join(texts)] if texts or got is not None else [])
        calls = translated_message.get("tool_calls", [])
        assert [(call["id"], json.loads(call["function"]["arguments"])) for call in calls] == [
            (block["id"], block["input"]) for block in rest if block["type"] == "tool_use"]
    assert next(out, None) is None
    # Each tool message follows (past other tool messages) the assistant turn that called it.
    for at, message in enumerate(chat):
        if message["role"] == "tool":
            caller = next(m for m in reversed(chat[:at]) if m["role"] != "tool")
            assert message["tool_call_id"] in [call["id"] for call in caller["tool_calls"]]
