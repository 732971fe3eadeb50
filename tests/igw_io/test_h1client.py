"""The Protocol client against real servers on 127.0.0.1, with both response parsers.

The mock provider covers the provider behaviours (keep-alive, streams, resets, hangs); small
asyncio servers written here cover what it cannot (close-delimited bodies, a server that
drops a kept-alive connection when the next request arrives, floods, TLS).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from igw_core.config import Settings
from igw_core.effects import CallProvider
from igw_core.events import FailureReason
from igw_io.h1client import HIGH_WATER, ClientResponse, H1Client, UpstreamFailure
from igw_io.upstream import Upstream
from tests.support.mock_provider import (
    DelayHeaders,
    Hang,
    MockProvider,
    Reply,
    ResetBeforeHeaders,
    ResetMidStream,
    SlowStream,
    free_port,
)

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def chunks_of(response: ClientResponse) -> AsyncIterator[bytes]:
    """The response's body chunks as they arrive (``next_chunk`` until the end)."""
    while (chunk := await response.next_chunk()) is not None:
        yield chunk


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


@pytest.fixture(params=["httptools", "h11"])
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    with MockProvider() as provider:
        yield provider


def client_for(parser: str, **limits: float | None) -> H1Client:
    options: dict[str, float | None] = {"connect_timeout": 5, "head_timeout": 5,
                                        "read_timeout": 5}
    options.update(limits)
    return H1Client(asyncio.get_running_loop(), parser=parser, **options)  # type: ignore[arg-type]


def auth(mock: MockProvider) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {mock.api_key}".encode()),
            (b"content-type", b"application/json")]


def chat(stream: bool = False, text: str = "hello there") -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": text}]}).encode()


async def fetch(client: H1Client, mock: MockProvider, body: bytes) -> tuple[int, bytes]:
    response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock), body)
    try:
        return response.status, await response.read(10 * 2**20)
    finally:
        await response.aclose()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request with a ``content-length`` body; ``b""`` when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None,
                ) -> AsyncIterator[tuple[str, list[int]]]:
    """Run ``handler`` per connection on 127.0.0.1; yield the base URL and a connection count."""
    accepted: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", accepted
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- keep-alive and framing ---------------------------------------------------------------


@pytest.mark.anyio
async def test_sequential_requests_share_one_connection(parser: str, mock: MockProvider) -> None:
    client = client_for(parser)
    for stream in (False, True, False, True, False):
        status, data = await fetch(client, mock, chat(stream))
        assert status == 200
        if stream:
            assert data.endswith(b"data: [DONE]\n\n")  # chunked
        else:
            assert json.loads(data)["choices"][0]["message"]["content"] == "echo: hello there"
    assert mock.connections_accepted == 1
    assert client.idle_connections == 1
    client.close()


@pytest.mark.anyio
async def test_headers_are_lower_case_whatever_the_server_wrote(parser: str) -> None:
    with MockProvider(canonical_headers=True) as mock:
        client = client_for(parser)
        response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock),
                                     chat())
        names = [name for name, _ in response.headers]
        assert b"content-type" in names and b"x-request-id" in names and b"set-cookie" in names
        assert names == [name.lower() for name in names]
        await response.aclose()
        client.close()


@pytest.mark.anyio
async def test_a_body_delimited_by_the_close_is_read_and_the_connection_not_reused(
    parser: str,
) -> None:
    async def old_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async with serve(old_server) as (url, accepted):
        client = client_for(parser)
        for _ in range(2):
            response = await client.open("GET", url + "/x", [(b"accept", b"*/*")], b"")
            assert await response.read(1000) == b"until the end"
            await response.aclose()
        assert len(accepted) == 2
        assert client.idle_connections == 0
        client.close()


@pytest.mark.anyio
async def test_head_responses_have_no_body_and_keep_the_connection(parser: str) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if request.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()

    async with serve(server) as (url, accepted):
        client = client_for(parser)
        for method, body in (("HEAD", b""), ("GET", b"hello"), ("HEAD", b""), ("GET", b"hello")):
            response = await client.open(method, url + "/", [(b"accept", b"*/*")], b"")
            assert response.status == 200
            assert await response.read(100) == body
            await response.aclose()
        assert len(accepted) == 1
        client.close()


@pytest.mark.anyio
async def test_idle_limits_and_expiry(parser: str, mock: MockProvider) -> None:
    client = client_for(parser, max_idle=10, max_idle_per_host=2, surplus_grace=0.1)
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(fetch, client, mock, chat())
    assert mock.connections_accepted == 6
    # The surplus over the per-host limit waits a moment for reuse, then closes.
    assert client.idle_connections == 6
    await fetch(client, mock, chat())
    assert mock.connections_accepted == 6
    await anyio.sleep(0.3)
    assert client.idle_connections == 2
    client.close()
    assert client.idle_connections == 0

    client = client_for(parser, max_idle=3, max_idle_per_host=10, surplus_grace=0.05)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(fetch, client, mock, chat())
    await anyio.sleep(0.2)
    assert client.idle_connections == 3  # the limit in all
    client.close()

    client = client_for(parser, max_idle_per_host=0)
    await fetch(client, mock, chat())
    assert client.idle_connections == 0  # no keep-alive at all: closed at once
    client.close()

    accepted = mock.connections_accepted
    client = client_for(parser, idle_timeout=0.05)
    await fetch(client, mock, chat())
    await anyio.sleep(0.2)
    await fetch(client, mock, chat())
    assert mock.connections_accepted == accepted + 2  # the idle one had expired
    client.close()


@pytest.mark.anyio
async def test_a_response_released_before_its_end_closes_its_connection(
    parser: str, mock: MockProvider
) -> None:
    mock.script(SlowStream(delay=0.5))
    client = client_for(parser)
    response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock),
                                 chat(stream=True))
    async for _ in chunks_of(response):
        break
    await response.aclose()
    assert client.idle_connections == 0
    await fetch(client, mock, chat())
    assert mock.connections_accepted == 2
    client.close()


@pytest.mark.anyio
@pytest.mark.parametrize("size", [10 * 2**10, 40 * 2**10, 3 * 2**20],
                         ids=["joined-to-the-head", "beside-the-head", "in-slices"])
async def test_a_large_request_body_is_written_whole(parser: str, mock: MockProvider,
                                                     size: int) -> None:
    client = client_for(parser)
    text = "x" * size
    status, data = await fetch(client, mock, chat(text=text))
    assert status == 200
    assert mock.chat_requests[-1].json["messages"][0]["content"] == text
    assert json.loads(data)["choices"][0]["message"]["content"] == "echo: " + text
    client.close()


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/chat/completions", [(b"x-evil", b"a\r\nx-injected: 1")]),
    ("POST", "/chat/completions", [(b"x-ok", b"1"), (b"x-evil", b"a\nx-injected: 1")]),
    ("POST", "/chat/completions", [(b"x-evil", b"a\rx-injected: 1")]),
    ("POST", "/chat/completions", [(b"x-evil\r\nx-injected", b"1")]),
    ("POST\r\nX-Injected: 1\r\nPOST", "/chat/completions", []),
    ("POST", "/chat/completions\r\nx-injected: 1", [(b"x-ok", b"1")]),
    ("POST", "/chat/completions\n", []),
], ids=["header-crlf", "header-lf", "header-cr", "name", "method", "target-crlf", "target-lf"])
async def test_a_line_break_is_never_sent(parser: str, mock: MockProvider, method: str,
                                          path: str, headers: list[tuple[bytes, bytes]]
                                          ) -> None:
    client = client_for(parser)
    with pytest.raises(UpstreamFailure, match="line break") as caught:
        await client.open(method, mock.base_url + path, headers, chat())
    assert caught.value.reason is FailureReason.UNREACHABLE
    # The client still works: nothing of the refused request went out.
    status, _ = await fetch(client, mock, chat())
    assert status == 200
    assert len(mock.requests) == 1
    client.close()


# -- stale connections and failures -------------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_the_server_dropped_while_idle_is_retried_once(parser: str) -> None:
    async def one_per_connection(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request: dropped unanswered, as after an idle timeout

    async with serve(one_per_connection) as (url, accepted):
        client = client_for(parser)
        for _ in range(3):
            response = await client.open("POST", url + "/", [(b"a", b"b")], b"{}")
            assert await response.read(10) == b"ok"
            await response.aclose()
        assert len(accepted) == 3
        client.close()


@pytest.mark.anyio
async def test_a_provider_restarted_between_requests_is_reached_again(
    parser: str, mock: MockProvider
) -> None:
    client = client_for(parser)
    await fetch(client, mock, chat())
    mock.stop()  # closes the pooled connection
    with MockProvider(port=mock.port, api_key=mock.api_key) as restarted:
        status, _ = await fetch(client, restarted, chat())
        assert status == 200 and restarted.connections_accepted == 1
    client.close()


@pytest.mark.anyio
async def test_refused_connection_is_unreachable(parser: str) -> None:
    client = client_for(parser)
    with pytest.raises(UpstreamFailure) as caught:
        await client.open("GET", f"http://127.0.0.1:{free_port()}/v1/models", [(b"a", b"b")],
                          b"")
    assert caught.value.reason is FailureReason.UNREACHABLE
    assert "Connect" in caught.value.detail or "refused" in caught.value.detail
    client.close()


@pytest.mark.anyio
async def test_reset_before_the_head_is_unreachable(parser: str, mock: MockProvider) -> None:
    mock.script(ResetBeforeHeaders())
    client = client_for(parser)
    with pytest.raises(UpstreamFailure) as caught:
        await fetch(client, mock, chat())
    assert caught.value.reason is FailureReason.UNREACHABLE
    client.close()


@pytest.mark.anyio
async def test_no_head_in_time_is_a_timeout(parser: str, mock: MockProvider) -> None:
    mock.script(DelayHeaders(5))
    client = client_for(parser, head_timeout=0.2)
    with pytest.raises(UpstreamFailure) as caught:
        await fetch(client, mock, chat())
    assert caught.value.reason is FailureReason.TIMEOUT
    assert "CLIENT_RESPONSE_HEADER_TIMEOUT" in caught.value.detail
    client.close()


@pytest.mark.anyio
async def test_a_stalled_body_is_a_timeout_but_a_flowing_one_is_not(
    parser: str, mock: MockProvider
) -> None:
    client = client_for(parser, read_timeout=0.3)
    mock.script(SlowStream(delay=0.1), SlowStream(delay=1.5))
    status, data = await fetch(client, mock, chat(stream=True, text=" ".join(["w"] * 6)))
    assert status == 200 and data.endswith(b"data: [DONE]\n\n")  # longer than 0.3 s in all
    response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock),
                                 chat(stream=True))
    received = []
    with pytest.raises(UpstreamFailure) as caught:
        async for chunk in chunks_of(response):
            received.append(chunk)
    await response.aclose()
    assert len(received) <= 1  # the first event at most: the next one is 1.5 s away, 5x the limit
    assert caught.value.reason is FailureReason.TIMEOUT
    assert "CLIENT_TIMEOUT" in caught.value.detail
    client.close()


@pytest.mark.anyio
async def test_reset_mid_body_is_a_reset_after_the_bytes_before_it(
    parser: str, mock: MockProvider
) -> None:
    mock.script(ResetMidStream(after_chunks=2), ResetMidStream(after_chunks=2))
    client = client_for(parser)
    for stream in (True, False):
        response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock),
                                     chat(stream=stream))
        received = []
        with pytest.raises(UpstreamFailure) as caught:
            async for chunk in chunks_of(response):
                received.append(chunk)
        await response.aclose()
        assert received and caught.value.reason is FailureReason.RESET
    assert client.idle_connections == 0
    client.close()


@pytest.mark.anyio
async def test_malformed_and_surplus_bytes(parser: str) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"/garbage" in request:
            writer.write(b"SMTP ready\r\n\r\n")
        else:  # a complete response with bytes after it: used, then not reused
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA")
        await writer.drain()
        await reader.read()

    async with serve(server) as (url, _):
        client = client_for(parser)
        with pytest.raises(UpstreamFailure) as caught:
            await client.open("GET", url + "/garbage", [(b"a", b"b")], b"")
        assert caught.value.reason is FailureReason.UNREACHABLE
        assert "malformed" in caught.value.detail
        response = await client.open("GET", url + "/surplus", [(b"a", b"b")], b"")
        assert await response.read(10) == b"ok"
        await response.aclose()
        assert client.idle_connections == 0
        client.close()


# -- flow control and cancellation --------------------------------------------------------


@pytest.mark.anyio
async def test_a_slow_consumer_pauses_reading_and_bounds_the_buffer(parser: str) -> None:
    total = 16 * 2**20
    piece = b"z" * 65536

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(total // len(piece)):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(flood) as (url, _):
        client = client_for(parser)
        response = await client.open("GET", url + "/", [(b"a", b"b")], b"")
        conn = response._conn
        assert conn is not None and conn.transport is not None
        chunks = chunks_of(response)
        size = len(await anext(chunks))
        for _ in range(100):  # let the server fill every buffer on the way
            await asyncio.sleep(0.01)
        assert not conn.transport.is_reading()
        assert conn._buffered <= HIGH_WATER + 2**20  # one high mark plus a read's worth
        async for chunk in chunks:
            size += len(chunk)
        assert size == total
        await response.aclose()
        assert client.idle_connections == 1
        client.close()


@pytest.mark.anyio
async def test_cancelling_a_wait_for_the_head_closes_the_connection(
    parser: str, mock: MockProvider
) -> None:
    mock.script(Hang())
    client = client_for(parser)
    with anyio.move_on_after(0.3) as scope:
        await fetch(client, mock, chat())
    assert scope.cancelled_caught
    for _ in range(200):
        if mock.active_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert mock.active_connections == 0
    assert client.idle_connections == 0
    status, _ = await fetch(client, mock, chat())
    assert status == 200
    client.close()


@pytest.mark.anyio
async def test_cancelling_mid_body_closes_the_connection(parser: str, mock: MockProvider) -> None:
    mock.script(SlowStream(delay=0.5))
    client = client_for(parser)
    response = await client.open("POST", mock.base_url + "/chat/completions", auth(mock),
                                 chat(stream=True, text="a b c d e f g h"))
    with anyio.move_on_after(0.3) as scope:
        async for _ in chunks_of(response):
            pass
    assert scope.cancelled_caught
    await response.aclose()
    for _ in range(200):
        if mock.active_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert mock.active_connections == 0
    assert client.idle_connections == 0
    client.close()


# -- TLS ---------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a private CA and a certificate it signed for 127.0.0.1; return their paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "igw test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "ca.pem", directory / "cert.pem",
                                    directory / "key.pem")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(reader):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nover tls")
        await writer.drain()


@asynccontextmanager
async def tls_server(directory: Path) -> AsyncIterator[tuple[str, Path, list[int]]]:
    ca, cert, key = _certificates(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with serve(_hello, context) as (url, accepted):
        yield url, ca, accepted


@pytest.mark.anyio
async def test_tls_with_a_trusted_ca_and_keep_alive(parser: str, tmp_path: Path) -> None:
    async with tls_server(tmp_path) as (url, ca, accepted):
        trusting = ssl.create_default_context(cafile=str(ca))
        client = H1Client(asyncio.get_running_loop(), parser=parser, head_timeout=5,
                          ssl_context=trusting)
        for _ in range(3):
            response = await client.open("GET", url + "/", [(b"a", b"b")], b"")
            assert await response.read(100) == b"over tls"
            await response.aclose()
        assert len(accepted) == 1
        client.close()

        strict = H1Client(asyncio.get_running_loop(), parser=parser, head_timeout=5,
                          ssl_context=ssl.create_default_context())
        with pytest.raises(UpstreamFailure) as caught:
            await strict.open("GET", url + "/", [(b"a", b"b")], b"")
        assert caught.value.reason is FailureReason.UNREACHABLE
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail
        strict.close()


async def _digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while request := await read_request(reader):
        body = request.partition(b"\r\n\r\n")[2]
        answer = hashlib.sha256(body).hexdigest().encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()


@pytest.mark.anyio
async def test_bodies_of_every_size_arrive_whole_over_tls(parser: str, tmp_path: Path) -> None:
    """Joined to the head, beside it, or in slices: what a TLS transport is handed is sent
    whole and in order, on one kept-alive connection."""
    ca, cert, key = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with serve(_digest, context) as (url, accepted):
        client = H1Client(asyncio.get_running_loop(), parser=parser, head_timeout=10,
                          ssl_context=ssl.create_default_context(cafile=str(ca)))
        for size in (0, 10 * 2**10, 40 * 2**10, 300 * 2**10):
            body = bytes(range(256)) * (size // 256)
            response = await client.open("POST", url + "/", [(b"a", b"b")], body)
            assert await response.read(100) == hashlib.sha256(body).hexdigest().encode()
            await response.aclose()
        assert len(accepted) == 1
        client.close()


_CLIENT_SCRIPT = """
import asyncio, sys
from igw_io.h1client import H1Client, UpstreamFailure

async def main() -> None:
    client = H1Client(asyncio.get_running_loop(), head_timeout=10)
    try:
        response = await client.open("GET", sys.argv[1], [(b"a", b"b")], b"")
        print("ok", (await response.read(100)).decode())
    except UpstreamFailure as failure:
        print("failed", failure.detail)

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_the_default_context_trusts_ssl_cert_file(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as (url, ca, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")}
        trusted = await anyio.run_process([sys.executable, "-c", _CLIENT_SCRIPT, url + "/"],
                                          env={**env, "SSL_CERT_FILE": str(ca)},
                                          stderr=subprocess.STDOUT)
        untrusted = await anyio.run_process([sys.executable, "-c", _CLIENT_SCRIPT, url + "/"],
                                            env=env, stderr=subprocess.STDOUT)
    assert trusted.stdout.decode().strip() == "ok over tls"
    assert untrusted.stdout.decode().startswith("failed")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout.decode()


# -- Upstream picks the client by async library --------------------------------------------


def _call(mock: MockProvider) -> CallProvider:
    return CallProvider(0, "openai", "POST", mock.base_url + "/chat/completions",
                        tuple(auth(mock)), chat())


async def _through_upstream(upstream: Upstream, mock: MockProvider) -> tuple[int, bytes]:
    response = await upstream.open(_call(mock))
    try:
        return response.status, await response.read(2**20)
    finally:
        await response.aclose()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_upstream_uses_the_protocol_client_on_asyncio_and_httpcore_on_trio(
    backend: str, mock: MockProvider
) -> None:
    upstream = Upstream(Settings(), parser="h11")

    async def main() -> tuple[int, bytes]:
        try:
            result = await _through_upstream(upstream, mock)
            assert (upstream._client is not None) == (backend == "asyncio")
            return result
        finally:
            await upstream.aclose()

    status, body = anyio.run(main, backend=backend)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]


def test_upstream_refuses_an_unknown_parser() -> None:
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        Upstream(Settings(), parser="fast")


@pytest.mark.anyio
async def test_upstream_reply_shape_is_the_same_on_both_clients(mock: MockProvider) -> None:
    mock.default_behaviour = Reply(content="same")
    upstream = Upstream(Settings())
    status, body = await _through_upstream(upstream, mock)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "same"
    await upstream.aclose()
