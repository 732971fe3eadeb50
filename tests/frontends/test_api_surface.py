"""/v1/messages, /v1/responses and /v1/embeddings through both frontends, with the official
anthropic and openai SDKs as clients and mock providers speaking each API's wire format."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import anthropic
import httpcore
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import (
    MockProvider,
    Reply,
    ResetMidStream,
    Status,
    mock_embedding,
)

CLIENT_KEY = "client-key-must-not-travel"
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                            "unit": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: GatewayFactory, module_openai: MockProvider,
            module_anthropic: MockProvider) -> RunningGateway:
    return module_gateway_factory({
        "OPENAI_API_URL": module_openai.base_url,
        "OPENAI_API_KEY": module_openai.api_key,
        "ANTHROPIC_API_URL": module_anthropic.base_url,
        "ANTHROPIC_API_KEY": module_anthropic.api_key,
        # Configured, but serves neither embeddings nor the Responses API.
        "DEEPSEEK_API_URL": module_openai.base_url,
        "DEEPSEEK_API_KEY": module_openai.api_key,
        "DISALLOWED_MODELS": "openai/gpt-forbidden",
    })


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider, module_anthropic: MockProvider) -> Iterator[None]:
    module_openai.clear()
    module_anthropic.clear()
    yield


@pytest.fixture
def claude(gateway: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0,
                               timeout=20)


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0,
                         timeout=20)


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# -- /v1/messages relayed to Anthropic ---------------------------------------------------


def test_messages_reach_anthropic_with_its_key_and_the_prefix_stripped(
    claude: anthropic.Anthropic, module_anthropic: MockProvider,
) -> None:
    message = claude.messages.create(model="anthropic/claude-3-5-haiku-20241022", max_tokens=64,
                                     messages=[{"role": "user", "content": "hello"}])
    assert message.type == "message" and _text(message)
    sent = module_anthropic.requests_to("/v1/messages")[-1]
    assert sent.json["model"] == "claude-3-5-haiku-20241022"
    assert sent.header("x-api-key") == module_anthropic.api_key
    assert CLIENT_KEY not in str(sent.headers)
    assert message.usage.input_tokens > 0


def test_a_bare_claude_model_streams_from_anthropic(
    claude: anthropic.Anthropic, module_anthropic: MockProvider,
) -> None:
    with claude.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=64,
                                messages=[{"role": "user", "content": "stream me"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == _text(final)
    assert module_anthropic.requests_to("/v1/messages")[-1].json["stream"] is True


def test_anthropic_tool_use_and_beta_query_pass_through(
    claude: anthropic.Anthropic, module_anthropic: MockProvider,
) -> None:
    module_anthropic.script(Reply(tool_calls=[WEATHER]))
    message = claude.messages.create(
        model="anthropic/claude-3-5-sonnet-20241022", max_tokens=64, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "weather?"}], extra_query={"beta": "true"},
        extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"})
    (tool,) = [b for b in message.content if b.type == "tool_use"]
    assert tool.input == WEATHER["arguments"] and message.stop_reason == "tool_use"
    sent = module_anthropic.requests_to("/v1/messages")[-1]
    assert sent.path.endswith("?beta=true")
    assert sent.header("anthropic-beta") == "token-efficient-tools-2025-02-19"


def test_anthropic_errors_reach_the_sdk_as_anthropic_errors(
    claude: anthropic.Anthropic, module_anthropic: MockProvider,
) -> None:
    module_anthropic.script(Status(529), Status(429, headers=[("retry-after", "7")]))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        claude.messages.create(model="claude-3-5-haiku-20241022", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="claude-3-5-haiku-20241022", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "7"


def test_count_tokens_is_relayed_to_anthropic(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="claude-3-5-haiku-20241022",
                                           messages=[{"role": "user", "content": "count me"}])
    assert counted.input_tokens > 0


# -- /v1/messages translated for a chat-completions provider ------------------------------


def test_messages_for_openai_are_translated_both_ways(
    claude: anthropic.Anthropic, module_openai: MockProvider,
) -> None:
    message = claude.messages.create(model="openai/gpt-4o-mini", max_tokens=64, system="be brief",
                                     messages=[{"role": "user", "content": "hello there"}])
    assert _text(message) == "echo: hello there"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    sent = module_openai.chat_requests[-1].json
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 64
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}


def test_a_translated_stream_is_anthropic_events(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="openai/gpt-4o-mini", max_tokens=64,
                                messages=[{"role": "user", "content": "stream it"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == _text(final) == "echo: stream it"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_translated_tool_use_round_trip(
    claude: anthropic.Anthropic, module_openai: MockProvider, stream: bool,
) -> None:
    module_openai.script(Reply(tool_calls=[WEATHER]), Reply(content="It is sunny."))
    request = {"model": "openai/gpt-4o-mini", "max_tokens": 64, "tools": TOOLS,
               "messages": [{"role": "user", "content": "weather in Paris?"}]}
    if stream:
        with claude.messages.stream(**request) as events:  # type: ignore[arg-type]
            first = events.get_final_message()
    else:
        first = claude.messages.create(**request)  # type: ignore[arg-type]
    (tool,) = [b for b in first.content if b.type == "tool_use"]
    assert (tool.name, tool.input, first.stop_reason) == ("get_weather", WEATHER["arguments"],
                                                           "tool_use")
    assert module_openai.chat_requests[-1].json["tools"][0]["function"]["name"] == "get_weather"
    answer = claude.messages.create(**{**request, "messages": [  # type: ignore[arg-type]
        *request["messages"],  # type: ignore[list-item]
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id,
                                      "content": "sunny, 21C"}]},
    ]})
    assert _text(answer) == "It is sunny."
    sent = module_openai.chat_requests[-1].json["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": tool.id, "content": "sunny, 21C"}
    assert sent[-2]["tool_calls"][0]["id"] == tool.id


def test_translated_errors_come_in_anthropic_shape(
    claude: anthropic.Anthropic, module_openai: MockProvider,
) -> None:
    module_openai.script(Status(429, headers=[("retry-after", "3")]))
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="openai/gpt-4o-mini", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert limited.value.body["type"] == "error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="openai/gpt-forbidden", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="openai/gpt-4o-mini", max_tokens=8,
                               messages=[{"role": "user", "content": [
                                   {"type": "document", "source": {
                                       "type": "text", "media_type": "text/plain",
                                       "data": "x"}}]}])
    assert "document" in refused.value.message


def test_a_translated_stream_that_breaks_raises_in_the_sdk(
    claude: anthropic.Anthropic, module_openai: MockProvider,
) -> None:
    module_openai.script(ResetMidStream(after_chunks=2))
    with pytest.raises(anthropic.APIError), claude.messages.stream(
            model="openai/gpt-4o-mini", max_tokens=64,
            messages=[{"role": "user", "content": "a long answer please"}]) as stream:
        stream.get_final_message()


def test_count_tokens_for_another_provider_is_a_clear_400(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.count_tokens(model="openai/gpt-4o-mini",
                                     messages=[{"role": "user", "content": "x"}])
    assert "anthropic" in refused.value.message


def test_images_in_messages_obey_the_vision_gate(claude: anthropic.Anthropic) -> None:
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="openai/gpt-4o-mini", max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": pixel}}]}])
    assert "ENABLE_VISION=true" in refused.value.message


# -- /v1/responses -------------------------------------------------------------------------


def test_responses_create_retrieve_delete(client: openai.OpenAI,
                                          module_openai: MockProvider) -> None:
    response = client.responses.create(model="openai/gpt-4o-mini", input="hello")
    assert response.output_text and response.usage is not None
    assert module_openai.requests_to("/v1/responses")[-1].json["model"] == "gpt-4o-mini"
    assert client.responses.retrieve(response.id).id == response.id
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_responses_stream(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="openai/gpt-4o-mini", input="stream this",
                                          stream=True))
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == events[-1].response.output_text


def test_responses_for_a_provider_without_the_api_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="deepseek/deepseek-chat", input="hi")
    assert "openai" in refused.value.message and "groq" in refused.value.message


# -- /v1/embeddings ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "float"], ids=["sdk-default-base64", "float"])
def test_embeddings(client: openai.OpenAI, module_openai: MockProvider,
                    encoding: str | None) -> None:
    more = {"encoding_format": encoding} if encoding else {}
    result = client.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"],
                                      **more)  # type: ignore[arg-type]
    assert [d.embedding for d in result.data] == [mock_embedding("a"), mock_embedding("b")]
    assert result.usage.prompt_tokens > 0
    assert module_openai.requests_to("/v1/embeddings")[-1].json["model"] == \
        "text-embedding-3-small"


def test_embeddings_for_a_provider_without_them_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="deepseek/some-embedder", input="x")
    assert "mistral" in refused.value.message


def test_a_get_on_a_post_endpoint_is_a_405(gateway: RunningGateway) -> None:
    response = httpcore.request("GET", gateway.url + "/v1/embeddings")
    assert response.status == 405
    assert json.loads(response.content)["error"]["message"]
