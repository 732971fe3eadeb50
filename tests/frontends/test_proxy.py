"""``/proxy/{provider}/{path}``: bytes forwarded unchanged both ways, keys swapped."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpcore
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import MockProvider, Status


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: GatewayFactory, module_openai: MockProvider,
            module_anthropic: MockProvider) -> RunningGateway:
    return module_gateway_factory({
        "OPENAI_API_URL": module_openai.base_url,
        "OPENAI_API_KEY": module_openai.api_key,
        "ANTHROPIC_API_URL": module_anthropic.base_url,
        "ANTHROPIC_API_KEY": module_anthropic.api_key,
    })


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider) -> Iterator[None]:
    module_openai.clear()
    module_openai.canonical_headers = False
    yield
    module_openai.canonical_headers = False


#: Provider header names in lower case, and as Go's net/http writes them (issue 8 item 1).
HEADER_CASES = pytest.mark.parametrize("canonical", [False, True], ids=["lower", "canonical"])


SEED_BODY = b'{ "model": "gpt-4o-mini", "messages": [{"role":"user","content":"hello"}] }'


@HEADER_CASES
@pytest.mark.parametrize("path", ["/proxy/openai/v1/chat/completions",
                                  "/proxy/openai/chat/completions"])
def test_seed_proxy_paths_reach_the_chat_endpoint_unchanged(
    gateway: RunningGateway, module_openai: MockProvider, path: str, canonical: bool
) -> None:
    module_openai.canonical_headers = canonical
    response = httpcore.request(
        "POST", gateway.url + path, content=SEED_BODY,
        headers=[(b"content-type", b"application/json"),
                 (b"authorization", b"Bearer caller-secret")],
    )
    assert response.status == 200
    assert json.loads(response.content)["choices"][0]["message"]["content"] == "echo: hello"
    sent = module_openai.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == SEED_BODY
    assert sent.header("authorization") == f"Bearer {module_openai.api_key}"
    assert sent.header_values("authorization") == [f"Bearer {module_openai.api_key}"]
    names = [k.lower() for k, _ in response.headers]
    headers = {k.lower(): v for k, v in response.headers}
    assert names.count(b"x-request-id") == 1 and not headers[b"x-request-id"].startswith(b"req_")
    assert names.count(b"content-length") == 1
    assert headers[b"content-length"] == str(len(response.content)).encode()
    assert headers[b"set-cookie"].startswith(b"__cf_bm=")  # /proxy relays all but framing


def test_proxy_forwards_method_query_and_upstream_status(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    response = httpcore.request("GET", gateway.url + "/proxy/openai/v1/models?limit=2&x=y")
    assert response.status == 200
    assert module_openai.requests[-1].path == "/v1/models?limit=2&x=y"
    assert module_openai.requests[-1].method == "GET"
    response = httpcore.request("DELETE", gateway.url + "/proxy/openai/v1/files/abc")
    assert response.status in (404, 405)
    assert module_openai.requests[-1].method == "DELETE"


def test_proxy_relays_error_bodies_byte_for_byte(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(Status(418, b"short and stout"))
    response = httpcore.request("POST", gateway.url + "/proxy/openai/chat/completions",
                                content=SEED_BODY)
    assert response.status == 418
    assert response.content == b"short and stout"


@HEADER_CASES
def test_proxy_streams_sse_unchanged(gateway: RunningGateway, module_openai: MockProvider,
                                     canonical: bool) -> None:
    module_openai.canonical_headers = canonical
    body = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b"}]}'
    with httpcore.stream("POST", gateway.url + "/proxy/openai/v1/chat/completions",
                         content=body) as response:
        assert response.status == 200
        data = b"".join(response.iter_stream())
        names = [k.lower() for k, _ in response.headers]
    assert data.endswith(b"data: [DONE]\n\n")
    assert names.count(b"x-request-id") == 1 and b"content-length" not in names
    assert names.count(b"transfer-encoding") <= 1
    sent = module_openai.requests[-1].json
    assert "stream_options" not in sent  # the proxy transforms nothing


def test_proxy_adds_anthropic_headers(gateway: RunningGateway,
                                      module_anthropic: MockProvider) -> None:
    response = httpcore.request("GET", gateway.url + "/proxy/anthropic/v1/models",
                                headers=[(b"x-api-key", b"caller-key")])
    assert response.status == 200
    sent = module_anthropic.requests[-1]
    assert sent.header_values("x-api-key") == [module_anthropic.api_key]
    assert sent.header("anthropic-version") == "2023-06-01"


@pytest.mark.parametrize(("path", "status"), [("/proxy/nosuch/v1/models", 400),
                                              ("/proxy/groq/models", 400)])
def test_proxy_to_unknown_or_unkeyed_provider_is_refused(
    gateway: RunningGateway, path: str, status: int
) -> None:
    response = httpcore.request("GET", gateway.url + path)
    assert response.status == status
    assert "message" in json.loads(response.content)["error"]


def test_proxy_can_be_disabled(gateway_factory: GatewayFactory,
                               mock_openai: MockProvider) -> None:
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key, "PROXY_ENABLE": "false"})
    response = httpcore.request("GET", gateway.url + "/proxy/openai/v1/models")
    assert response.status == 404
    assert mock_openai.requests == []
