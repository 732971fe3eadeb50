"""HTTP framing at the gateway's edge: bad framing, body limits, keep-alive, shutdown."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import httpcore
import pytest

from tests.conftest import GatewayFactory, RunningGateway, provider_env
from tests.support.mock_provider import Hang, MockProvider, SlowStream


def _raw(gateway: RunningGateway, data: bytes, *, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, mock_openai: MockProvider) -> RunningGateway:
    return gateway_factory({
        "OPENAI_API_URL": mock_openai.base_url,
        "OPENAI_API_KEY": mock_openai.api_key,
        "SERVER_MAX_REQUEST_BODY_SIZE": "2048",
    })


def test_content_length_with_transfer_encoding_is_400_and_closes(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    body = b'{"model":"openai/gpt-4o","messages":[]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + body)
    answer = _raw(gateway, request)
    assert answer.startswith(b"HTTP/1.1 400")
    assert mock_openai.requests == []


def test_garbage_request_line_is_400(gateway: RunningGateway) -> None:
    answer = _raw(gateway, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_declared_body_over_the_limit_is_413_before_reading(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    answer = _raw(gateway, request)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"SERVER_MAX_REQUEST_BODY_SIZE" in answer
    assert mock_openai.requests == []


def test_chunked_body_over_the_limit_is_413_while_reading(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    chunk = b"x" * 1000
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + (b"3e8\r\n" + chunk + b"\r\n") * 5 + b"0\r\n\r\n")
    answer = _raw(gateway, request)
    assert b" 413 " in answer.split(b"\r\n", 1)[0]
    assert mock_openai.requests == []


def test_keep_alive_and_pipelining(gateway: RunningGateway) -> None:
    if gateway.frontend != "standalone":
        pytest.skip("pipelining is the server's job; uvicorn handles it for the ASGI app")
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request * 3)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b'{"message":"OK"}') < 3 and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 3


def test_keep_alive_reuses_one_connection(gateway: RunningGateway) -> None:
    with httpcore.ConnectionPool(max_connections=1) as pool:
        for _ in range(5):
            assert pool.request("GET", gateway.url + "/health").status == 200
        assert len(pool.connections) == 1


def test_sigterm_lets_in_flight_stream_finish(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    mock_openai.script(SlowStream(delay=0.1))
    body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "one two three four"}]}).encode()
    result: dict[str, bytes] = {}

    def stream() -> None:
        with httpcore.stream("POST", gateway.url + "/v1/chat/completions", content=body,
                             extensions={"timeout": {"read": 20}}) as response:
            result["data"] = b"".join(response.iter_stream())

    thread = threading.Thread(target=stream)
    thread.start()
    assert mock_openai.wait_for_requests(1)
    time.sleep(0.2)
    gateway.process.send_signal(signal.SIGTERM)
    thread.join(20)
    assert result["data"].endswith(b"data: [DONE]\n\n")
    # uvicorn re-raises the signal after its graceful shutdown, so it ends "by SIGTERM".
    clean = (0,) if gateway.frontend == "standalone" else (0, -signal.SIGTERM)
    assert gateway.process.wait(15) in clean


def test_shutdown_timeout_bounds_the_drain(
    frontend: str, gateway_factory: GatewayFactory, mock_openai: MockProvider
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server's own graceful timeout bounds its drain")
    gateway = gateway_factory({**provider_env(mock_openai), "SERVER_SHUTDOWN_TIMEOUT": "1s"})
    mock_openai.script(Hang())
    body = json.dumps({"model": "openai/gpt-4o-mini",
                       "messages": [{"role": "user", "content": "hang"}]}).encode()

    def hang() -> None:
        with contextlib.suppress(httpcore.NetworkError, httpcore.RemoteProtocolError):
            httpcore.request("POST", gateway.url + "/v1/chat/completions", content=body,
                             extensions={"timeout": {"read": 20}})

    thread = threading.Thread(target=hang, daemon=True)
    thread.start()
    assert mock_openai.wait_for_requests(1)
    assert httpcore.request("GET", gateway.url + "/ready").status == 200
    gateway.process.send_signal(signal.SIGTERM)
    # The 1 s drain, then the hung request is cut: it exits long before the 10 s default.
    assert gateway.process.wait(8) == 0


def test_huge_body_gets_413_not_a_reset(gateway: RunningGateway) -> None:
    body = b"x" * (4 * 1024 * 1024)
    response = httpcore.request("POST", gateway.url + "/v1/chat/completions", content=body,
                                extensions={"timeout": {"read": 10, "write": 10}})
    assert response.status == 413
    assert b"SERVER_MAX_REQUEST_BODY_SIZE" in response.content


def test_http2_prior_knowledge_with_large_bodies(gateway: RunningGateway,
                                                 mock_openai: MockProvider) -> None:
    if gateway.frontend != "standalone":
        pytest.skip("HTTP/2 for the ASGI app is the ASGI server's job")
    with httpcore.ConnectionPool(http1=False, http2=True) as pool:
        response = pool.request("GET", gateway.url + "/health")
        assert response.extensions["http_version"] == b"HTTP/2"
        assert json.loads(response.content) == {"message": "OK"}
        body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": "two streams"}]}).encode()
        response = pool.request("POST", gateway.url + "/v1/chat/completions", content=body)
        assert response.status == 200
        assert response.content.endswith(b"data: [DONE]\n\n")
        big = b"y" * 100_000  # over the 2048-byte limit: refused while flow control runs
        response = pool.request("POST", gateway.url + "/v1/chat/completions", content=big)
        assert response.status == 413


def test_slow_client_gets_408_and_idle_connection_is_closed(
    gateway_factory: GatewayFactory, frontend: str
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server owns its connection timeouts")
    gateway = gateway_factory({"IGW_DEMO": "true", "SERVER_READ_TIMEOUT": "1s",
                               "SERVER_IDLE_TIMEOUT": "1s"})
    # A body that never arrives: 408 once the read timeout passes.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")
        started = time.monotonic()
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 8
    # A keep-alive connection with nothing to do is closed after the idle timeout.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in sock.recv(65536)
        assert sock.recv(65536) == b""


def test_random_garbage_never_takes_the_server_down(gateway: RunningGateway) -> None:
    import random

    rng = random.Random(1234)
    prefixes = [b"", b"GET / HTTP/1.1\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]
    for _ in range(40):
        blob = rng.choice(prefixes) + rng.randbytes(rng.randrange(1, 400))
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(blob)
            if rng.random() < 0.5:
                sock.shutdown(socket.SHUT_WR)  # half-closed
            sock.settimeout(0.3)  # an incomplete request may wait for more: don't
            try:
                sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                pass
    assert httpcore.request("GET", gateway.url + "/health").status == 200
    assert "Traceback" not in gateway.log_text()
