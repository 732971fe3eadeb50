"""httptools and h11 behind one interface: the same bytes, split anywhere, give the same results."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_io.response_parsers import (
    MAX_HEAD,
    PARSERS,
    ResponseParseError,
    ResponseSink,
    make_parser,
    resolve_parser,
)

PROPERTY = settings(max_examples=300, deadline=None)


class Recorder(ResponseSink):
    """A sink that writes down what a parser reported, the body joined per response."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.body = bytearray()

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.events.append(("head", status, list(headers)))

    def on_body(self, data: bytes) -> None:
        assert type(data) is bytes and data
        self.body += data

    def on_end(self, keep_alive: bool) -> None:
        self.events.append(("end", keep_alive, bytes(self.body)))
        self.body = bytearray()


@dataclass
class Exchange:
    """One response on the wire, what the client asked for and where the bytes are cut."""

    wire: bytes
    head_request: bool = False
    pieces: list[int] = field(default_factory=list)


def run(parser: str, exchanges: list[Exchange], eof: bool) -> list[tuple[object, ...]]:
    """Feed ``exchanges`` one after another on one parser, as a kept-alive connection would."""
    recorder = Recorder()
    p = make_parser(parser, recorder)
    try:
        for exchange in exchanges:
            p.expect(exchange.head_request)
            for piece in split(exchange.wire, exchange.pieces):
                p.feed(piece)
            if recorder.events and recorder.events[-1][0] == "end" and not recorder.events[-1][1]:
                break  # not reusable: nothing more is sent on this connection
        if eof:
            p.feed_eof()
    except ResponseParseError as exc:
        assert str(exc)
        recorder.events.append(("error", bytes(recorder.body)))
    return recorder.events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def both(exchanges: list[Exchange], eof: bool = False) -> list[tuple[object, ...]]:
    results = {name: run(name, exchanges, eof) for name in PARSERS}
    assert results["httptools"] == results["h11"]
    return results["h11"]


# -- generated valid responses --------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'",
                min_size=1, max_size=12)
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
    lambda s: s.encode())
FRAMING = {"content-length", "transfer-encoding", "connection"}


@st.composite
def responses(draw: st.DrawFn) -> tuple[Exchange, dict[str, object]]:
    """A valid response and what it should parse to."""
    head_request = draw(st.booleans())
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 503])
                  | st.integers(200, 599))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    bodyless = head_request or status in (204, 304)
    framing = "none" if status in (204, 304) else draw(
        st.sampled_from(["length", "chunked", "close"]))
    body = b"" if status in (204, 304) else draw(st.binary(max_size=300))
    connection = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, Close"]))
    headers: list[tuple[bytes, bytes]] = []
    for name in draw(st.lists(TOKEN, max_size=6)):
        if name.lower() in FRAMING:
            continue
        value = draw(VALUE)
        inner = draw(st.sampled_from([b"", b" x y", b"\tz"]))
        spaces = draw(st.sampled_from([(b"", b""), (b" ", b""), (b"  ", b" \t"), (b"\t", b" ")]))
        headers.append((name.encode(), spaces[0] + value + inner + spaces[1]))
    if connection is not None:
        headers.insert(draw(st.integers(0, len(headers))), (b"Connection", connection))
    if framing == "length":
        headers.append((draw(st.sampled_from([b"Content-Length", b"content-length"])),
                        str(len(body)).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
    reason = draw(st.sampled_from([b"OK", b"", b"Some Reason", b"x"]))
    informational = b"".join(draw(st.lists(st.sampled_from([
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
    ]), max_size=2)))
    wire = informational + b"HTTP/" + version + b" %d " % status + reason + b"\r\n"
    wire += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    if not bodyless:
        if framing == "chunked":
            sizes = draw(st.lists(st.integers(1, 64), max_size=8))
            chunks, at = [], 0
            for size in sizes:
                if at < len(body):
                    chunks.append(body[at:at + size])
                    at += size
            if at < len(body):
                chunks.append(body[at:])
            ext = draw(st.sampled_from([b"", b";a=b"]))
            for chunk in chunks:
                wire += b"%x" % len(chunk) + ext + b"\r\n" + chunk + b"\r\n"
            wire += b"0\r\n"
            if draw(st.booleans()):
                wire += b"X-Trailer: t\r\n"
            wire += b"\r\n"
        else:
            wire += body
    closes = connection is not None and b"close" in connection.lower()
    expected = {
        "status": status,
        "headers": [(n.lower(), v.strip(b" \t").lower() if n.lower() == b"transfer-encoding"
                     else v.strip(b" \t")) for n, v in headers],
        "body": b"" if bodyless else body,
        "delimited_by_close": framing == "close" and not bodyless,
        "keep_alive": version == b"1.1" and not closes
        and (bodyless or framing != "close"),
    }
    cuts = draw(st.lists(st.integers(0, 10_000), max_size=6))
    return Exchange(wire, head_request, cuts), expected


@PROPERTY
@given(responses())
def test_both_parsers_agree_on_any_valid_response_split_anywhere(
    case: tuple[Exchange, dict[str, object]],
) -> None:
    exchange, expected = case
    events = both([exchange], eof=bool(expected["delimited_by_close"]))
    assert events == [
        ("head", expected["status"], expected["headers"]),
        ("end", expected["keep_alive"], expected["body"]),
    ]


@PROPERTY
@given(st.lists(responses(), min_size=2, max_size=4))
def test_both_parsers_agree_over_kept_alive_connections(
    cases: list[tuple[Exchange, dict[str, object]]],
) -> None:
    exchanges = []
    for exchange, expected in cases:
        exchanges.append(exchange)
        if not expected["keep_alive"]:
            break
    events = both(exchanges, eof=True)
    ends = [e for e in events if e[0] == "end"]
    assert len(ends) == len(exchanges)


@PROPERTY
@given(responses(), st.integers(0, 10_000))
def test_a_response_cut_short_by_the_close_is_judged_alike(
    case: tuple[Exchange, dict[str, object]], cut: int
) -> None:
    exchange, _ = case
    exchange.wire = exchange.wire[: cut % (len(exchange.wire) + 1)]
    both([exchange], eof=True)


@PROPERTY
@given(responses(), st.sampled_from([b"X", b"HTTP/1.1 200 OK\r\n\r\n", b"garbage\r\n\r\n"]))
def test_bytes_after_the_end_of_a_response_are_an_error_for_both(
    case: tuple[Exchange, dict[str, object]], surplus: bytes
) -> None:
    exchange, expected = case
    if expected["delimited_by_close"] or exchange.head_request:
        return  # the close ends these; HEAD surplus is only caught on the next response
    exchange.wire += surplus
    events = both([exchange])
    assert events[-1][0] == "error" and events[-2][0] == "end"


# -- malformed input ------------------------------------------------------------------------

MALFORMED = {
    "not http": b"hello world\r\n\r\n",
    "bad status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "status below 100": b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
    "switching protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    "header without colon": b"HTTP/1.1 200 OK\r\nBadHeader\r\nContent-Length: 0\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nX-A : v\r\nContent-Length: 0\r\n\r\n",
    "empty header name": b"HTTP/1.1 200 OK\r\n: v\r\nContent-Length: 0\r\n\r\n",
    "bad content-length": b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    "negative content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "conflicting content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabc",
    "content-length and chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "chunked and content-length": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                  b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "gzip transfer-encoding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n",
    "two transfer-encodings": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "chunk longer than said": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"2\r\nabc\r\n0\r\n\r\n",
    "huge head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n",
}

CUT_BY_THE_CLOSE = {
    "nothing at all": b"",
    "half a status line": b"HTTP/1.1 20",
    "half a head": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
    "short body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "unfinished chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    "only an informational": b"HTTP/1.1 100 Continue\r\n\r\n",
}


@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
@given(cuts=st.lists(st.integers(0, 200_000), max_size=4))
@settings(max_examples=25, deadline=None)
def test_malformed_responses_raise_in_both(wire: bytes, cuts: list[int]) -> None:
    events = both([Exchange(wire, False, cuts)], eof=True)
    assert events[-1][0] == "error"
    assert not any(e[0] == "end" for e in events)


@pytest.mark.parametrize("wire", CUT_BY_THE_CLOSE.values(), ids=CUT_BY_THE_CLOSE.keys())
@given(cuts=st.lists(st.integers(0, 200), max_size=3))
@settings(max_examples=15, deadline=None)
def test_responses_cut_by_the_close_raise_in_both(wire: bytes, cuts: list[int]) -> None:
    events = both([Exchange(wire, False, cuts)], eof=True)
    assert events[-1][0] == "error"


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_response_has_no_body_whatever_it_announces(parser: str) -> None:
    recorder = Recorder()
    p = make_parser(parser, recorder)
    for wire in (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n\r\n"):
        p.expect(True)
        p.feed(wire)
    p.expect(False)
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [e[1] for e in recorder.events if e[0] == "end"] == [True, True, True, True]
    assert recorder.events[-1] == ("end", True, b"ok")


def test_auto_picks_httptools_and_names_are_checked() -> None:
    assert resolve_parser("auto") == "httptools"
    assert resolve_parser("h11") == "h11"
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        resolve_parser("llhttp")
