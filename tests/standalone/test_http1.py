"""The HTTP/1.1 connection protocol, driven in-process: any split of pipelined requests, on
either parser, gets the same responses, in order, well framed."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.config import load_settings
from igw_standalone.http1 import HTTP1Connection, _hex
from igw_standalone.server import Server

pytest.importorskip("httptools")

_CHAT = b'{"model":"demo/echo","messages":[{"role":"user","content":"hi there"}]}'
_STREAM = b'{"model":"demo/echo","stream":true,"messages":[{"role":"user","content":"a b"}]}'
#: (request bytes, expected status, whether the connection ends after it)
REQUESTS: dict[str, tuple[bytes, int]] = {
    "health": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "head": (b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "models": (b"GET /v1/models?provider=demo HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "missing": (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "chat": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
             % (len(_CHAT), _CHAT), 200),
    "stream": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
               % (len(_STREAM), _STREAM), 200),
    "bad-json": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{x}",
                 400),
}


@dataclass
class FakeTransport:
    """Records what the protocol writes; never pushes back."""

    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    eof_written: bool = False
    reading: bool = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _responses(raw: bytes, methods: list[bytes]) -> list[tuple[int, bytes]]:
    """Parse ``raw`` as the responses to requests of ``methods``, in order."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(raw)
    out: list[tuple[int, bytes]] = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        status, body = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                return out
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((status, body))
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    return out


def _connect(parser: str = "auto") -> tuple[HTTP1Connection, FakeTransport]:
    """A connection of a demo gateway's server on a fake transport (in a running loop)."""
    connection = HTTP1Connection(Server(load_settings({"IGW_DEMO": "true"}), http=parser))
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def _serve(parser: str, pieces: list[bytes], count: int) -> tuple[bytes, FakeTransport]:
    connection, transport = _connect(parser)
    for piece in pieces:
        connection.data_received(piece)
        await asyncio.sleep(0)
    for _ in range(2000):
        raw = b"".join(transport.written)
        if raw.count(b"HTTP/1.1 ") >= count and not connection.serving:
            break
        await asyncio.sleep(0.001)
    connection.connection_lost(None)
    return b"".join(transport.written), transport


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=5),
       cuts=st.lists(st.integers(0, 100_000), max_size=6),
       parser=st.sampled_from(["httptools", "h11"]))
def test_pipelined_requests_split_anywhere_are_answered_in_order(
    names: list[str], cuts: list[int], parser: str
) -> None:
    wire = b"".join(REQUESTS[name][0] for name in names)
    raw, transport = asyncio.run(_serve(parser, _split(wire, cuts), len(names)))
    methods = [REQUESTS[name][0].split(b" ", 1)[0] for name in names]
    answers = _responses(raw, methods)
    assert [status for status, _ in answers] == [REQUESTS[name][1] for name in names], raw
    for name, (_, body) in zip(names, answers, strict=True):
        if name == "head":
            assert body == b""
        if name == "chat":
            assert b"hi there" in body
        if name == "stream":
            assert body.rstrip().endswith(b"data: [DONE]")
    assert not transport.closed or transport.eof_written or raw.endswith(b"\r\n")


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_request_after_connection_close_is_not_read(parser: str) -> None:
    wire = (b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            + REQUESTS["missing"][0])
    raw, transport = asyncio.run(_serve(parser, [wire], 1))
    assert raw.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in raw
    assert transport.closed


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_malformed_bytes_after_a_good_request_get_one_400_and_a_close(parser: str) -> None:
    wire = REQUESTS["health"][0] + b"NOT HTTP AT ALL\r\n\r\n"
    raw, transport = asyncio.run(_serve(parser, [wire], 2))
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", raw)
    assert statuses == [b"200", b"400"]
    assert transport.eof_written or transport.closed


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_queued_input_over_the_high_water_mark_pauses_reading(parser: str) -> None:
    async def run() -> bool:
        connection, transport = _connect(parser)
        # A body the core has not asked for yet: it piles up, reading pauses.
        connection.data_received(b"POST /proxy/demo/x HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 3000000\r\n\r\n")
        for _ in range(40):
            connection.data_received(b"x" * 65536)
        paused = not transport.reading
        connection.connection_lost(None)
        await asyncio.sleep(0.01)
        return paused

    assert asyncio.run(run())


async def _first_bytes(pieces: list[bytes]) -> tuple[bytes, HTTP1Connection]:
    connection, transport = _connect()
    for piece in pieces:
        connection.data_received(piece)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    written = b"".join(transport.written)
    connection.connection_lost(None)
    await asyncio.sleep(0.01)
    return written, connection


def test_an_http2_preface_split_over_reads_is_still_http2() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    empty_settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    written, connection = asyncio.run(_first_bytes([preface[:5], preface[5:] + empty_settings]))
    assert connection.h2_connection is not None
    assert written[3:4] == b"\x04"  # the server's SETTINGS frame comes first


def test_a_post_split_after_its_p_is_still_http1() -> None:
    post = REQUESTS["chat"][0]
    written, connection = asyncio.run(_first_bytes([post[:1], post[1:2], post[2:]]))
    assert connection.h2_connection is None
    assert written.startswith(b"HTTP/1.1 200 OK")


@given(size=st.one_of(st.integers(0, 4096), st.integers(0, 2**40)))
def test_a_chunk_size_line_is_the_size_in_hex(size: int) -> None:
    assert _hex(size) == b"%x" % size
