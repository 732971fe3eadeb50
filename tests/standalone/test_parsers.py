"""Both HTTP/1.1 request parsers turn the same bytes, split anywhere, into the same events."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_standalone.parsers import (
    END,
    MAX_HEAD,
    PARSERS,
    Failure,
    H11Parser,
    Head,
    HttptoolsParser,
    ParserEvent,
)

pytest.importorskip("httptools")

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 ;=/,.-_",
                 min_size=1, max_size=30).map(str.strip).filter(bool)
_PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-_.%", max_size=30)
_RESERVED = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade"}


@dataclass
class Request:
    """What a generated request should parse into."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    wire: bytes
    keep_alive: bool
    http10: bool


@st.composite
def requests(draw: st.DrawFn, *, last: bool = False) -> Request:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE"]))
    target = b"/" + draw(_PATH).encode()
    if draw(st.booleans()):
        target += b"?" + draw(_PATH).encode()
    headers = [(b"host", b"example")]
    for name, value in draw(st.lists(st.tuples(_TOKEN, _VALUE), max_size=5)):
        if name not in _RESERVED:
            headers.append((name.encode(), value.encode()))
    body = draw(st.binary(max_size=200)) if method in (b"POST", b"PUT") else b""
    framing = draw(st.sampled_from(["length", "chunked"])) if body else "none"
    # Only the last request may end the connection: HTTP/1.0 (no keep-alive offered,
    # even when asked for) or Connection: close.
    http10 = last and draw(st.booleans())
    connections = [None, b"keep-alive"]
    if last:
        connections += [b"close", b"Keep-Alive, Close"]
    connection = draw(st.sampled_from(connections))
    if connection is not None:
        headers.append((b"connection", connection))
    close = http10 or (connection is not None and b"close" in connection.lower())
    if draw(st.booleans()):
        headers.append((b"expect", b"100-continue"))
    wire_body = b""
    if framing == "length":
        headers.append((b"content-length", str(len(body)).encode()))
        wire_body = body
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        for piece in pieces:
            if piece:
                wire_body += b"%x\r\n%s\r\n" % (len(piece), piece)
        wire_body += b"0\r\n\r\n"
    wire = b"%s %s HTTP/%s\r\n" % (method, target, b"1.0" if http10 else b"1.1")
    wire += b"".join(b"%s: %s\r\n" % (n.title(), v) for n, v in headers) + b"\r\n" + wire_body
    return Request(method, target, headers, body, wire, not close, http10)


def _parse(parser_name: str, pieces: list[bytes]) -> list[ParserEvent]:
    parser = PARSERS[parser_name]()
    out: list[ParserEvent] = []
    for piece in pieces:
        parser.feed(piece, out)
    return _merge(out)


def _merge(events: list[ParserEvent]) -> list[ParserEvent]:
    """Join consecutive body pieces: parsers may cut a body differently."""
    merged: list[ParserEvent] = []
    for event in events:
        if isinstance(event, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + event
        elif not (isinstance(event, bytes) and not event):
            merged.append(event)
    return merged


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(first=st.lists(requests(), max_size=2), final=requests(last=True),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_both_parsers_give_the_same_events_for_any_split(
    first: list[Request], final: Request, cuts: list[int]
) -> None:
    batch = [*first, final]
    wire = b"".join(r.wire for r in batch)
    pieces = _split(wire, cuts)
    events = _parse("httptools", pieces)
    assert events == _parse("h11", pieces)
    # And both say what was sent.
    expected: list[ParserEvent] = []
    for request in batch:
        expected.append(Head(request.method, request.target, request.headers,
                             request.keep_alive, request.http10,
                             (b"expect", b"100-continue") in request.headers))
        if request.body:
            expected.append(request.body)
        expected.append(END)
    assert events == expected


@pytest.mark.parametrize("wire", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
])
@pytest.mark.parametrize("split", [0, 1, 7, 20])
def test_both_parsers_refuse_the_same_malformed_requests(wire: bytes, split: int) -> None:
    pieces = [wire[:split], wire[split:]] if split else [wire]
    events = {name: _parse(name, pieces) for name in PARSERS}
    for name, found in events.items():
        assert found and isinstance(found[-1], Failure), (name, found)
        assert found[-1].status == 400
    assert events["httptools"][:-1] == events["h11"][:-1]


def test_a_head_over_the_limit_is_431_on_both() -> None:
    wire = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 10_000) + b"\r\n\r\n"
    for name in PARSERS:
        events = _parse(name, [wire[i:i + 4096] for i in range(0, len(wire), 4096)])
        assert isinstance(events[-1], Failure) and events[-1].status == 431, name


def test_nothing_after_a_closing_request_is_read() -> None:
    wire = (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    for name in PARSERS:
        events = _parse(name, [wire])
        assert [e.target for e in events if isinstance(e, Head)] == [b"/a"], name
        assert events[-1] is END


def test_http10_connections_close_after_one_request() -> None:
    for parser in (HttptoolsParser(), H11Parser()):
        out: list[ParserEvent] = []
        parser.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", out)
        head = out[0]
        assert isinstance(head, Head) and head.http10 and not head.keep_alive


def test_the_server_resolves_its_parser_like_the_upstream_client() -> None:
    from igw_core.config import load_settings
    from igw_standalone.server import Server

    assert Server(load_settings({}), http="auto").http == "httptools"
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        Server(load_settings({}), http="picohttp")
