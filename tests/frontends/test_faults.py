"""Faults on either side: upstream resets, timeouts, unreachable providers, clients that leave."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpcore
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import (
    DelayHeaders,
    MockProvider,
    ResetBeforeHeaders,
    ResetMidStream,
    SlowStream,
    free_port,
)

CHAT = json.dumps({"model": "openai/gpt-4o-mini",
                   "messages": [{"role": "user", "content": "one two three four five"}]})


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: GatewayFactory,
            module_openai: MockProvider) -> RunningGateway:
    return module_gateway_factory({
        "OPENAI_API_URL": module_openai.base_url,
        "OPENAI_API_KEY": module_openai.api_key,
        "CLIENT_TIMEOUT": "2s",
        "CLIENT_RESPONSE_HEADER_TIMEOUT": "1s",
        # A provider nothing listens for.
        "GROQ_API_URL": f"http://127.0.0.1:{free_port()}/openai/v1",
        "GROQ_API_KEY": "gsk-test",
    })


@pytest.fixture(scope="module")
def roomy_gateway(module_gateway_factory: GatewayFactory,
                  module_openai: MockProvider) -> RunningGateway:
    """The same provider at the default timeouts, for load tests.

    Under 200 concurrent streams on two shared cores the in-process mock can take more than
    the 1 s head timeout above to answer, which is what the default timeouts exist for.
    """
    return module_gateway_factory({"OPENAI_API_URL": module_openai.base_url,
                                   "OPENAI_API_KEY": module_openai.api_key})


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider) -> Iterator[None]:
    module_openai.clear()
    yield


def _chat(gateway: RunningGateway, body: str = CHAT) -> httpcore.Response:
    return httpcore.request("POST", gateway.url + "/v1/chat/completions", content=body.encode(),
                            extensions={"timeout": {"connect": 5, "read": 20}})


def test_unreachable_provider_is_502(gateway: RunningGateway) -> None:
    body = CHAT.replace("openai/gpt-4o-mini", "groq/llama-3.1-8b-instant")
    response = _chat(gateway, body)
    assert response.status == 502
    assert "groq" in json.loads(response.content)["error"]["message"]


def test_slow_provider_head_is_504(gateway: RunningGateway, module_openai: MockProvider) -> None:
    module_openai.script(DelayHeaders(5))
    response = _chat(gateway)
    assert response.status == 504
    assert "timed out" in json.loads(response.content)["error"]["message"]


def test_reset_before_headers_is_502(gateway: RunningGateway,
                                     module_openai: MockProvider) -> None:
    module_openai.script(ResetBeforeHeaders())
    assert _chat(gateway).status == 502


def test_upstream_reset_mid_stream_breaks_the_client_stream(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(ResetMidStream(after_chunks=2))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="openai/gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "a long answer that will break"}],
        ):
            received.append(chunk)
    assert len(received) >= 1
    # The gateway is still healthy afterwards.
    assert _chat(gateway).status == 200


def test_client_disconnect_mid_stream_cancels_the_upstream(
    gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(SlowStream(delay=0.3))
    before = module_openai.active_connections
    body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": " ".join(["w"] * 60)}]})
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    sock.sendall(request.encode())
    assert b"200" in sock.recv(4096)
    sock.close()
    # The gateway drops its upstream connection instead of reading the whole slow stream.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and module_openai.active_connections > before:
        time.sleep(0.05)
    assert module_openai.active_connections <= before
    assert gateway.wait_log("499")


def test_two_hundred_concurrent_streams(roomy_gateway: RunningGateway) -> None:
    gateway = roomy_gateway
    body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "count these words"}]}).encode()
    results: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            with httpcore.ConnectionPool() as pool:
                response = pool.request("POST", gateway.url + "/v1/chat/completions",
                                        content=body,
                                        extensions={"timeout": {"connect": 20, "read": 30}})
            with lock:
                results.append(response.content)
        except BaseException as exc:  # collected and asserted below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 200
    for data in results:
        assert data.endswith(b"data: [DONE]\n\n")
        assert b"echo: count these words" not in data  # streamed as deltas, not one blob
