"""HTTP/1.1 request parsers behind one interface: httptools (llhttp, C) and h11 (pure Python).

A parser turns the bytes of one connection, fed in any split, into a flat list
of events: :class:`Head`, body ``bytes``, :data:`END` per request, and at most
one :class:`Failure` after which it reads nothing more. Both parsers give the
same events for the same bytes; the server chooses one at startup
(``--http auto|httptools|h11``, resolved like the upstream client's by
:func:`igw_io.response_parsers.resolve_parser`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import h11
from mypy_extensions import mypyc_attr

from igw_io.header_lines import LOWER
from igw_io.response_parsers import h11_bytes

#: Largest request head (request line and headers) accepted; larger is 431.
MAX_HEAD: Final = 64 * 1024


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class Head:
    """A request head.

    Fields:
        method: the method, e.g. ``b"POST"``.
        target: the request target as sent (path and query).
        headers: header names lower-cased, values as sent, in order.
        keep_alive: whether the connection may carry another request after this one.
        http10: whether the client speaks HTTP/1.0 (no chunked responses).
        expect_continue: whether the client waits for ``100 Continue`` before its body.
    """

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    http10: bool
    expect_continue: bool

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 keep_alive: bool, http10: bool, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.http10 = http10
        self.expect_continue = expect_continue


class _End:
    """The current request's body is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: The event that ends each request.
END: Final = _End()


@dataclass(frozen=True, slots=True)
class Failure:
    """The bytes are not HTTP/1.1 the server accepts; nothing after them is read.

    Fields:
        status: the status to answer with (400, or 431 for a head over :data:`MAX_HEAD`).
        detail: what was wrong, for the error body and the log.
        target: the request target, when the head was read whole before it was refused
            (its framing): the error body then takes the endpoint's shape. Empty when
            the head itself is broken.
    """

    status: int
    detail: str
    target: bytes = b""


ParserEvent = Head | bytes | _End | Failure


class RequestParser:
    """Turns a connection's bytes into :data:`ParserEvent` values.

    A base class, not a Protocol: compiled, a call through a Protocol is a method lookup
    by name, through a base class an indexed call.
    """

    __slots__ = ()

    def feed(self, data: bytes, out: list[ParserEvent]) -> None:
        """Parse ``data`` and append the events it completes to ``out``."""
        raise NotImplementedError


def _head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
          http10: bool) -> Head | Failure:
    """Build the :class:`Head` both parsers agree on, or refuse ambiguous framing."""
    keep_alive = not http10  # HTTP/1.0 keep-alive is not offered (h11 has none)
    expect = False
    length = chunked = False
    for name, value in headers:
        if name == b"connection":
            # find(), not ``in``: bytes ``in`` first tries the needle as an int and
            # builds a TypeError to learn it is not, which costs more than the scan.
            if value.lower().find(b"close") != -1:
                keep_alive = False
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            chunked = True
    if length and chunked:
        # RFC 9112 §6.1: request smuggling; the connection closes after the 400.
        return Failure(400, "Transfer-Encoding can't be present with Content-Length", target)
    return Head(method, target, headers, keep_alive, http10, expect)


def _names_connection(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``headers`` (lowercase names) hold a Connection header."""
    return any(name == b"connection" for name, _ in headers)


class _Stop(Exception):
    """Raised from a callback to stop llhttp at a head the server refuses."""


def _llhttp(parser: HttptoolsParser) -> Any:
    """Return llhttp's request parser calling back ``parser``.

    It lets Content-Length with Transfer-Encoding through to :func:`_head`, which refuses
    it as h11's parser does, with the same text and knowing the target: the refusal then
    takes the endpoint's shape.
    """
    import httptools

    llhttp = httptools.HttpRequestParser(parser)
    llhttp.set_dangerous_leniencies(lenient_chunked_length=True)
    return llhttp


class HttptoolsParser(RequestParser):
    """Request parser on httptools (llhttp)."""

    __slots__ = ("_done", "_head_size", "_headers", "_keep_alive", "_out", "_parser", "_url")

    def __init__(self) -> None:
        self._parser = _llhttp(self)
        self._out: list[ParserEvent] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = -1  # -1: not inside a head
        self._done = False
        self._keep_alive = True

    def feed(self, data: bytes, out: list[ParserEvent]) -> None:
        """Parse ``data``, appending events to ``out``."""
        if self._done:
            return
        self._out = out
        try:
            self._parser.feed_data(data)
        except Exception as error:
            if self._refused(error, data, out):
                return
        if self._head_size >= 0:  # a head still incomplete: as h11, refuse it once too big
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._fail(431, "request head too large")

    def _refused(self, error: Exception, data: bytes, out: list[ParserEvent]
                 ) -> bool:
        """Handle what llhttp raised for ``data``; return whether parsing stops.

        Raises:
            Exception: ``error`` again when llhttp did not raise it.
        """
        import httptools

        if isinstance(error, httptools.HttpParserUpgrade):
            # An Upgrade request (h2c, websocket) is served as plain HTTP/1.1, as
            # h11 does; parsing resumes after it on a fresh parser.
            if not self._done:
                offset = error.args[0] if error.args else len(data)
                self._parser = _llhttp(self)
                self.feed(data[offset:], out)
            return False
        if isinstance(error, httptools.HttpParserError):
            if not self._done:
                self._fail(400, str(error) or "malformed request")
            return True
        raise error

    def _fail(self, status: int, detail: str) -> None:
        self._done = True
        self._out.append(Failure(status, detail))

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.translate(LOWER), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._head_size = -1
        headers = self._headers
        # get_http_version formats a string (about 2,000 instructions). llhttp keeps alive
        # an HTTP/1.1 request unless a Connection header says close, and an HTTP/1.0 one
        # only when a Connection header says keep-alive: without a Connection header,
        # keeping alive means HTTP/1.1. Other cases ask for the version.
        http10 = False
        if not parser.should_keep_alive() or _names_connection(headers):
            http10 = parser.get_http_version() == "1.0"
        head = _head(parser.get_method(), self._url, headers, http10)
        if isinstance(head, Failure):
            self._done = True
            self._out.append(head)
            raise _Stop  # llhttp would go on with the refused request's body and what follows
        self._keep_alive = head.keep_alive
        self._out.append(head)

    def on_body(self, body: bytes) -> None:
        if not self._done:
            self._out.append(body)

    def on_message_complete(self) -> None:
        if self._done:
            return
        self._out.append(END)
        if not self._keep_alive:
            self._done = True  # nothing after a closing request is read


class H11Parser(RequestParser):
    """Request parser on h11, the pure-Python reference.

    h11 parses one request per cycle; after each request this adapter completes a
    throwaway response on its private connection to move h11 to the next cycle.
    The server writes its real responses itself.
    """

    __slots__ = ("_conn", "_done", "_keep_alive")

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._done = False
        self._keep_alive = True

    def feed(self, data: bytes, out: list[ParserEvent]) -> None:
        """Parse ``data``, appending events to ``out``."""
        if self._done or not data:
            return
        conn = self._conn
        conn.receive_data(data)
        while not self._done:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                self._done = True
                out.append(Failure(error.error_status_hint, str(error) or "malformed request"))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                out.append(h11_bytes(event))
            elif isinstance(event, h11.Request):
                head = _head(event.method, event.target,
                             [(name, value) for name, value in event.headers],
                             event.http_version == b"1.0")
                if isinstance(head, Failure):
                    self._done = True
                self._keep_alive = not isinstance(head, Failure) and head.keep_alive
                out.append(head)
            elif isinstance(event, h11.EndOfMessage):
                out.append(END)
                if not self._keep_alive:
                    self._done = True
                    return
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            else:  # ConnectionClosed
                return


#: The parsers by ``--http`` name.
PARSERS: dict[str, Callable[[], RequestParser]] = {"httptools": HttptoolsParser, "h11": H11Parser}
