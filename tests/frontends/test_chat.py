"""Chat completions and model lists through both frontends, with the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpcore
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import MockProvider, Reply, Status, free_port


@pytest.fixture(scope="module")
def gateway(
    module_gateway_factory: GatewayFactory,
    module_openai: MockProvider,
    module_anthropic: MockProvider,
) -> RunningGateway:
    env = {
        "OPENAI_API_URL": module_openai.base_url,
        "OPENAI_API_KEY": module_openai.api_key,
        "ANTHROPIC_API_URL": module_anthropic.base_url,
        "ANTHROPIC_API_KEY": module_anthropic.api_key,
        # A configured provider that is down: it must not break /v1/models.
        "MISTRAL_API_URL": f"http://127.0.0.1:{free_port()}/v1",
        "MISTRAL_API_KEY": "sk-mistral-unused",
        "DISALLOWED_MODELS": "openai/gpt-4-forbidden",
    }
    return module_gateway_factory(env)


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider, module_anthropic: MockProvider) -> Iterator[None]:
    module_openai.clear()
    module_anthropic.clear()
    module_openai.canonical_headers = False
    yield
    module_openai.canonical_headers = False


#: Provider header names in lower case, and as Go's net/http writes them (issue 8 item 1).
HEADER_CASES = pytest.mark.parametrize("canonical", [False, True], ids=["lower", "canonical"])


@pytest.fixture
def client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="client-token-not-forwarded",
                         max_retries=0, timeout=20)


def _post(gateway: RunningGateway, path: str, body: bytes,
          headers: list[tuple[bytes, bytes]] | None = None) -> httpcore.Response:
    return httpcore.request(
        "POST", gateway.url + path, content=body,
        headers=[(b"content-type", b"application/json"), *(headers or [])],
        extensions={"timeout": {"connect": 5, "read": 20}},
    )


def _error(response: httpcore.Response) -> dict[str, object]:
    body = json.loads(response.content)
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict) and isinstance(error["message"], str)
    return error


@HEADER_CASES
def test_chat_non_streaming_returns_provider_answer_with_unknown_fields(
    client: openai.OpenAI, module_openai: MockProvider, canonical: bool
) -> None:
    module_openai.canonical_headers = canonical
    completion = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model_extra is not None
    assert completion.model_extra["x_mock_extra"]["preserved"] is True
    upstream = module_openai.chat_requests[-1]
    assert upstream.json["model"] == "gpt-4o-mini"
    assert upstream.header("authorization") == f"Bearer {module_openai.api_key}"


def test_client_credentials_never_reach_the_provider(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    sent = module_openai.chat_requests[-1]
    assert "client-token-not-forwarded" not in repr(sent.headers)


def test_unknown_request_fields_are_forwarded(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}],
            "x_custom": {"keep": [1, 2]}, "temperature": 0.25}
    response = _post(gateway, "/v1/chat/completions", json.dumps(body).encode())
    assert response.status == 200
    sent = module_openai.chat_requests[-1].json
    assert sent["x_custom"] == {"keep": [1, 2]}
    assert sent["temperature"] == 0.25


@HEADER_CASES
def test_chat_streaming_relays_deltas_and_asks_for_usage(
    client: openai.OpenAI, module_openai: MockProvider, canonical: bool
) -> None:
    module_openai.canonical_headers = canonical
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "stream me a sentence please"}],
    )
    text = ""
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "echo: stream me a sentence please"
    assert chunks > 3
    assert usage is not None and usage.total_tokens > 0
    sent = module_openai.chat_requests[-1].json
    assert sent["stream_options"] == {"include_usage": True}


def _names(response: httpcore.Response) -> list[bytes]:
    return [k.lower() for k, _ in response.headers]


@HEADER_CASES
def test_streaming_response_is_an_event_stream(gateway: RunningGateway,
                                               module_openai: MockProvider,
                                               canonical: bool) -> None:
    module_openai.canonical_headers = canonical
    body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "a b c"}]}).encode()
    response = _post(gateway, "/v1/chat/completions", body,
                     headers=[(b"x-request-id", b"trace-stream-1")])
    assert response.status == 200
    headers = {k.lower(): v for k, v in response.headers}
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-ratelimit-remaining-requests"] == b"9999"
    names = _names(response)
    assert names.count(b"x-request-id") == 1 and headers[b"x-request-id"] == b"trace-stream-1"
    assert b"set-cookie" not in names and b"content-length" not in names
    assert names.count(b"transfer-encoding") <= 1
    assert response.content.rstrip().endswith(b"data: [DONE]")


@HEADER_CASES
def test_provider_headers_are_filtered_whatever_their_case(
    gateway: RunningGateway, module_openai: MockProvider, canonical: bool
) -> None:
    module_openai.canonical_headers = canonical
    body = json.dumps({"model": "openai/gpt-4o-mini",
                       "messages": [{"role": "user", "content": "a b c"}]}).encode()
    response = _post(gateway, "/v1/chat/completions", body,
                     headers=[(b"x-request-id", b"trace-plain-1")])
    assert response.status == 200
    headers = {k.lower(): v for k, v in response.headers}
    names = _names(response)
    assert names.count(b"x-request-id") == 1 and headers[b"x-request-id"] == b"trace-plain-1"
    assert b"set-cookie" not in names  # a provider's cookie is not the client's
    assert names.count(b"content-length") == 1
    assert headers[b"content-length"] == str(len(response.content)).encode()
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-ratelimit-remaining-requests"] == b"9999"
    assert json.loads(response.content)["choices"][0]["message"]["content"] == "echo: a b c"


def test_provider_prefix_is_case_insensitive(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    client.chat.completions.create(
        model="OpenAI/gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert module_openai.chat_requests[-1].json["model"] == "gpt-4o"


def test_provider_query_parameter_selects_provider(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    body = json.dumps({"model": "meta/llama-3-70b",
                       "messages": [{"role": "user", "content": "q"}]}).encode()
    response = _post(gateway, "/v1/chat/completions?provider=openai", body)
    assert response.status == 200
    assert module_openai.chat_requests[-1].json["model"] == "meta/llama-3-70b"


def test_anthropic_gets_its_own_auth_headers(
    client: openai.OpenAI, module_anthropic: MockProvider
) -> None:
    completion = client.chat.completions.create(
        model="anthropic/claude-3-5-sonnet-20241022",
        messages=[{"role": "user", "content": "bonjour"}],
    )
    assert completion.choices[0].message.content == "echo: bonjour"
    sent = module_anthropic.chat_requests[-1]
    assert sent.header("x-api-key") == module_anthropic.api_key
    assert sent.header("anthropic-version") == "2023-06-01"
    assert sent.header("authorization") is None


def test_models_lists_every_configured_provider_and_skips_a_failing_one(
    client: openai.OpenAI, gateway: RunningGateway
) -> None:
    models = client.models.list()
    ids = {m.id for m in models.data}
    assert {"openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3-5-sonnet-20241022"} <= ids
    assert not any(i.startswith("mistral/") for i in ids)
    for model in models.data:
        assert model.model_extra is not None
        assert model.model_extra["served_by"] == model.id.split("/", 1)[0]
    assert gateway.wait_log("model list failed")


def test_models_filtered_by_provider_query(gateway: RunningGateway) -> None:
    response = httpcore.request("GET", gateway.url + "/v1/models?provider=anthropic")
    assert response.status == 200
    ids = [m["id"] for m in json.loads(response.content)["data"]]
    assert ids == ["anthropic/claude-3-5-sonnet-20241022"]


def test_upstream_error_status_and_message_reach_the_client(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    module_openai.script(Status(429, {"error": {"message": "Rate limit reached for gpt-4o",
                                                "type": "requests", "code": "rate_limit"}}))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "Rate limit reached for gpt-4o" in str(caught.value)


def test_upstream_plain_text_error_is_wrapped_in_openai_shape(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(Status(500, b"upstream exploded"))
    body = json.dumps({"model": "openai/gpt-4o",
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    response = _post(gateway, "/v1/chat/completions", body)
    assert response.status == 500
    assert "upstream exploded" in str(_error(response)["message"])


def test_streaming_upstream_error_is_a_json_error(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(Status(400, {"error": {"message": "bad model id", "type": "x",
                                                "code": None}}))
    body = json.dumps({"model": "openai/nope", "stream": True,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    response = _post(gateway, "/v1/chat/completions", body)
    assert response.status == 400
    assert _error(response)["message"] == "bad model id"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"model": "openai/gpt-4o", "messages": [', 400, "malformed JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": "nosuch/model", "messages": []}', 400, "unknown provider"),
        (b'{"model": "groq/llama3", "messages": []}', 400, "GROQ_API_KEY"),
        (b'{"model": "gpt-4o", "messages": []}', 400, "provider"),
        (b'{"model": "openai/gpt-4-forbidden", "messages": []}', 403, "not allowed"),
    ],
)
def test_bad_chat_requests_get_clear_errors(
    gateway: RunningGateway, module_openai: MockProvider, body: bytes, status: int, needle: str
) -> None:
    response = _post(gateway, "/v1/chat/completions", body)
    assert response.status == status
    assert needle in str(_error(response)["message"])
    assert module_openai.chat_requests == []


def test_image_input_is_refused_while_vision_is_disabled(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]}],
        )
    assert "ENABLE_VISION=true" in str(caught.value)
    assert module_openai.chat_requests == []


def test_unknown_route_is_404_and_wrong_method_405(gateway: RunningGateway) -> None:
    response = httpcore.request("GET", gateway.url + "/v1/nothing-here")
    assert response.status == 404
    _error(response)
    response = httpcore.request("GET", gateway.url + "/v1/chat/completions")
    assert response.status == 405
    _error(response)


def test_health_is_ok(gateway: RunningGateway) -> None:
    response = httpcore.request("GET", gateway.url + "/health")
    assert response.status == 200
    assert json.loads(response.content) == {"message": "OK"}


def test_request_id_is_echoed_or_generated(gateway: RunningGateway) -> None:
    response = httpcore.request("GET", gateway.url + "/health",
                                headers=[(b"x-request-id", b"my-trace-123")])
    assert dict(response.headers)[b"x-request-id"] == b"my-trace-123"
    response = httpcore.request("GET", gateway.url + "/health")
    assert len(dict(response.headers)[b"x-request-id"]) >= 8


def test_reply_with_tool_calls_is_passed_through(
    client: openai.OpenAI, module_openai: MockProvider
) -> None:
    module_openai.script(Reply(tool_calls=[{"function": {"name": "get_weather",
                                                         "arguments": {"city": "Paris"}}}]))
    completion = client.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"


def test_retrieve_one_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve("openai/gpt-4o")
    assert model.id == "openai/gpt-4o"
    assert model.model_extra is not None and model.model_extra["served_by"] == "openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai/no-such-model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai/gpt-4-forbidden")


@HEADER_CASES
def test_rate_limit_headers_reach_the_client(gateway: RunningGateway,
                                             module_openai: MockProvider,
                                             canonical: bool) -> None:
    module_openai.canonical_headers = canonical
    module_openai.script(Status(429, {"error": {"message": "slow down", "type": "requests"}},
                                headers=[("retry-after", "7"),
                                         ("x-ratelimit-remaining-requests", "0")]))
    body = json.dumps({"model": "openai/gpt-4o",
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    response = _post(gateway, "/v1/chat/completions", body)
    assert response.status == 429
    headers = {k.lower(): v for k, v in response.headers}
    assert headers[b"retry-after"] == b"7"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"
