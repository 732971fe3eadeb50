"""HTTP/1.1 edge cases on the wire: smuggling refusals close, HEAD, pipelining, read failures."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.frontends.test_asgi_servers import asgi_server
from tests.support.mock_provider import MockProvider

ROOT = Path(__file__).resolve().parents[2]
_SMUGGLE_BODY = b'{"model":"openai/gpt-4o","messages":[]}'
#: A POST with both Content-Length and Transfer-Encoding, and a GET right behind it.
_SMUGGLED = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
             b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
             + hex(len(_SMUGGLE_BODY))[2:].encode() + b"\r\n" + _SMUGGLE_BODY + b"\r\n0\r\n\r\n"
             b"GET /no/such/route HTTP/1.1\r\nHost: x\r\n\r\n")


def _read_all(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on one connection and return everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _responses(raw: bytes) -> list[bytes]:
    """Return the status lines found in ``raw``."""
    return re.findall(rb"HTTP/1\.1 \d{3}[^\r\n]*", raw)


def _access_lines(gateway: RunningGateway) -> list[dict[str, object]]:
    lines = []
    for line in gateway.log_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == "request":
                lines.append(record)
    return lines


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, mock_openai: MockProvider) -> RunningGateway:
    return gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                            "OPENAI_API_KEY": mock_openai.api_key, "IGW_DEMO": "true"})


# -- Content-Length with Transfer-Encoding ------------------------------------------------


def test_ambiguous_framing_is_answered_once_and_the_connection_closes(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    answer = _read_all(gateway.port, _SMUGGLED)
    assert _responses(answer) == [b"HTTP/1.1 400 Bad Request"]
    assert b"connection: close" in answer.lower()
    assert b"404" not in answer
    assert mock_openai.requests == []


def test_ambiguous_framing_on_the_messages_endpoint_is_refused_in_anthropics_shape(
    gateway: RunningGateway, mock_openai: MockProvider
) -> None:
    if gateway.frontend != "standalone":
        pytest.skip("an ASGI server parses HTTP/1.1 itself: uvicorn answers its own plain 400")
    smuggled = _SMUGGLED.replace(b"/v1/chat/completions", b"/v1/messages")
    answer = _read_all(gateway.port, smuggled)
    assert _responses(answer) == [b"HTTP/1.1 400 Bad Request"]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "Transfer-Encoding" in body["error"]["message"]
    assert mock_openai.requests == []


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
def test_ambiguous_framing_closes_under_other_asgi_servers(
    server: str, mock_openai: MockProvider, tmp_path: Path
) -> None:
    with asgi_server(server, mock_openai, tmp_path) as port:
        answer = _read_all(port, _SMUGGLED)
    # granian (hyper) resolves the framing itself as RFC 9112 §6.3 allows (chunked wins)
    # and closes afterwards; the others pass it on and honour the core's 400 with
    # Connection: close. Either way the smuggled GET is never answered.
    assert len(_responses(answer)) == 1, answer
    assert b"404" not in answer


# -- HEAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/v1/models?provider=demo"])
def test_head_answers_like_get_without_a_body(gateway: RunningGateway, path: str) -> None:
    get = httpcore.request("GET", gateway.url + path)
    with httpcore.ConnectionPool(max_connections=1) as pool:
        head = pool.request("HEAD", gateway.url + path)
        assert head.status == get.status == 200
        assert head.content == b""
        assert head.headers  # sanity
        head_headers = {k.lower(): v for k, v in head.headers}
        get_headers = {k.lower(): v for k, v in get.headers}
        assert head_headers[b"content-type"] == get_headers[b"content-type"]
        assert head_headers[b"content-length"] == str(len(get.content)).encode()
        # The connection is still usable afterwards.
        assert pool.request("GET", gateway.url + "/health").status == 200
        assert len(pool.connections) == 1


def test_head_on_raw_socket_gets_head_only_and_keeps_the_connection(
    gateway: RunningGateway,
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b'{"message":"OK"}') < 1 and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert _responses(data) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert data.count(b'{"message":"OK"}') == 1


def test_head_on_unknown_route_is_404_without_body(gateway: RunningGateway) -> None:
    response = httpcore.request("HEAD", gateway.url + "/nope")
    assert response.status == 404
    assert response.content == b""


def test_head_on_a_post_route_is_405_allowing_post(gateway: RunningGateway) -> None:
    response = httpcore.request("HEAD", gateway.url + "/v1/chat/completions")
    assert response.status == 405
    assert response.content == b""


def test_get_route_allows_head(gateway: RunningGateway) -> None:
    response = httpcore.request("POST", gateway.url + "/v1/models", content=b"{}")
    assert response.status == 405
    allow = dict((k.lower(), v) for k, v in response.headers)[b"allow"]
    assert allow == b"GET, HEAD"


# -- pipelining behind a slow request -----------------------------------------------------


class _SlowModels(http.server.BaseHTTPRequestHandler):
    """A provider whose model list takes half a second."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(0.5)
        body = json.dumps({"object": "list", "data": [
            {"id": "slow-model", "object": "model", "created": 0, "owned_by": "x"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_models() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowModels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_request_pipelined_behind_a_slow_one_is_answered_in_order(
    gateway_factory: GatewayFactory, frontend: str, slow_models: str
) -> None:
    if frontend != "standalone":
        pytest.skip("pipelining is the server's job; uvicorn handles it for the ASGI app")
    gateway = gateway_factory({"OPENAI_API_URL": slow_models, "OPENAI_API_KEY": "sk-x"})
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # the first is now waiting on the provider
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while b'{"message":"OK"}' not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert _responses(data) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert data.index(b"slow-model") < data.index(b'{"message":"OK"}')


# -- request-body read failures: what is logged is what was sent ---------------------------


def test_body_read_timeout_is_408_on_the_wire_and_in_the_record(
    gateway_factory: GatewayFactory, frontend: str
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server owns its connection timeouts")
    gateway = gateway_factory({"IGW_DEMO": "true", "SERVER_READ_TIMEOUT": "1s"})
    answer = _read_all(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 100\r\n\r\n{\"model\":")
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in answer.lower()
    assert gateway.wait_log('"status": 408')
    statuses = [line["status"] for line in _access_lines(gateway)
                if line.get("path") == "/v1/chat/completions"]
    assert statuses == [408]


def test_malformed_chunked_body_is_400_on_the_wire_and_in_the_record(
    gateway_factory: GatewayFactory, frontend: str
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server parses the body framing itself")
    gateway = gateway_factory({"IGW_DEMO": "true"})
    answer = _read_all(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    deadline = time.monotonic() + 10
    statuses: list[object] = []
    while time.monotonic() < deadline:
        statuses = [line["status"] for line in _access_lines(gateway)
                    if line.get("path") == "/v1/chat/completions"]
        if statuses:
            break
        time.sleep(0.05)
    assert statuses == [400]


def test_head_over_http2_is_get_without_the_body(gateway: RunningGateway) -> None:
    if gateway.frontend != "standalone":
        pytest.skip("HTTP/2 for the ASGI app is the ASGI server's job")
    with httpcore.ConnectionPool(http1=False, http2=True) as pool:
        get = pool.request("GET", gateway.url + "/health")
        head = pool.request("HEAD", gateway.url + "/health")
        missing = pool.request("HEAD", gateway.url + "/nope")
    assert head.extensions["http_version"] == b"HTTP/2"
    assert (head.status, head.content) == (200, b"")
    assert dict(head.headers)[b"content-length"] == str(len(get.content)).encode()
    assert (missing.status, missing.content) == (404, b"")


# -- a client that stops reading -------------------------------------------------------------


def test_a_client_that_stops_reading_is_cut_after_the_write_timeout(
    gateway_factory: GatewayFactory, frontend: str, mock_openai: MockProvider
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server owns its connection timeouts")
    from tests.support.mock_provider import Reply

    mock_openai.default_behaviour = Reply(content="x" * (24 * 1024 * 1024))
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key,
                               "SERVER_WRITE_TIMEOUT": "1s"})
    body = json.dumps({"model": "openai/gpt-4o-mini",
                       "messages": [{"role": "user", "content": "a lot"}]}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(4)  # not reading: the gateway's writes stall, then it gives up
        received = 0
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
    assert received < 24 * 1024 * 1024  # cut short, not delivered whole
    assert httpcore.request("GET", gateway.url + "/health").status == 200
