"""HTTP/1.1 response parsers for the upstream client: httptools (llhttp, C) and h11 (pure Python).

Both turn the bytes of one connection into the same calls on a :class:`ResponseSink`
(``on_head``, ``on_body``, ``on_end``) and raise :class:`ResponseParseError` for anything
malformed, so the client cannot tell them apart; ``tests/igw_io/test_response_parsers.py``
feeds both the same bytes split at arbitrary points. h11 is the reference, httptools the
default (about ten times less CPU per response).

Rules both apply (where the libraries differ, the stricter one wins): header names are lower
case and values have no surrounding whitespace; 1xx responses are skipped and 101 is an error
(no upgrade is ever asked for); ``Transfer-Encoding`` must be exactly ``chunked`` and may not
come with ``Content-Length``; HTTP/1.0 connections are not reused; bytes after the end of a
response are an error (the connection is then not reused; the response itself stands). Known
differences, none of which a conforming server produces: h11 unfolds obsolete line folding,
accepts a bare LF as line end, control characters in values and a repeated identical
``Content-Length``, which llhttp refuses; the head size limit is counted slightly differently.
"""

from __future__ import annotations

from typing import Any, Final, cast

import h11
from mypy_extensions import mypyc_attr

from igw_io.header_lines import LOWER

try:
    import httptools
except ImportError:  # pragma: no cover - PyPy, or a platform without the wheel
    HAVE_HTTPTOOLS = False
else:
    HAVE_HTTPTOOLS = True

__all__ = [
    "HAVE_HTTPTOOLS",
    "MAX_HEAD",
    "PARSERS",
    "H11Parser",
    "HttptoolsParser",
    "ResponseParseError",
    "ResponseParser",
    "ResponseSink",
    "make_parser",
    "resolve_parser",
]

#: The most header bytes (names and values) a response head may carry.
MAX_HEAD: Final = 64 * 1024
#: The most bytes an unfinished head may hold (a bound on memory, whatever the header sizes).
_MAX_RAW_HEAD: Final = 4 * MAX_HEAD

#: The parser names :func:`make_parser` takes (after :func:`resolve_parser`).
PARSERS: Final = ("httptools", "h11")


class ResponseParseError(Exception):
    """The server sent something that is not a valid HTTP/1.1 response (or sent it too late)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseSink:
    """What a parser reports to, in this order per response: one head, body pieces, one end.

    A base class, not a Protocol, for the reason :class:`ResponseParser` gives: the
    provider connection's calls are indexed.
    """

    __slots__ = ()

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The final (non-1xx) status and the headers, names lower-cased, in wire order."""
        raise NotImplementedError

    def on_body(self, data: bytes) -> None:
        """A non-empty piece of the decoded body (chunked framing removed)."""
        raise NotImplementedError

    def on_end(self, keep_alive: bool) -> None:
        """The response is complete; ``keep_alive`` says whether the connection may be reused."""
        raise NotImplementedError


class ResponseParser:
    """One connection's response parser (see the module docstring for the rules).

    A base class, not a Protocol: compiled, a call through a Protocol is a method lookup
    by name, through a base class an indexed call.
    """

    __slots__ = ()

    def expect(self, head_request: bool) -> None:
        """Prepare for the response to the request just sent (``HEAD`` responses have no body)."""
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        """Parse ``data``, calling the sink as things complete.

        Raises:
            ResponseParseError: the bytes are not a valid response, or follow its end.
        """
        raise NotImplementedError

    def feed_eof(self) -> None:
        """The server closed the connection: end a body delimited by the close.

        Raises:
            ResponseParseError: the response had not started, or was cut before its end.
        """
        raise NotImplementedError


def resolve_parser(name: str) -> str:
    """Return the parser ``name`` stands for: ``auto`` is httptools when importable, else h11.

    Raises:
        ValueError: ``name`` is not ``auto``, ``httptools`` or ``h11``, or httptools is
            asked for and not installed.
    """
    if name == "auto":
        return "httptools" if HAVE_HTTPTOOLS else "h11"
    if name not in PARSERS:
        raise ValueError(f"unknown HTTP parser {name!r} (auto, httptools or h11)")
    if name == "httptools" and not HAVE_HTTPTOOLS:
        raise ValueError("the httptools parser is not installed (pip install httptools)")
    return name


def make_parser(name: str, sink: ResponseSink) -> ResponseParser:
    """Return a parser of kind ``name`` (``httptools`` or ``h11``) reporting to ``sink``."""
    if name == "httptools":
        return HttptoolsParser(sink)
    if name == "h11":
        return H11Parser(sink)
    raise ValueError(f"unknown HTTP parser {name!r}")


_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def h11_bytes(event: h11.Data) -> bytes:
    """Return an h11 ``Data`` event's payload as ``bytes``.

    h11 annotates it ``bytes`` but hands out ``bytearray`` slices too: read through
    ``Any``, so that a module compiled with mypyc does not reject them on access.
    """
    return bytes(cast(Any, event).data)


def _check_size(headers: list[tuple[bytes, bytes]]) -> None:
    if sum(len(name) + len(value) for name, value in headers) > MAX_HEAD:
        raise ResponseParseError(f"response headers over {MAX_HEAD} bytes")


def _closes(value: bytes) -> bool:
    """Whether a ``Connection`` header value lists ``close``."""
    return any(token.strip().lower() == b"close" for token in value.split(b","))


class HttptoolsParser(ResponseParser):
    """The llhttp parser (through httptools) behind the :class:`ResponseParser` interface.

    llhttp calls this object's ``on_*`` methods; ``on_body`` is the sink's own method, so body
    bytes reach the connection without a Python frame in between.
    """

    __slots__ = (
        "_chunked", "_close", "_connection", "_done", "_feeding", "_framed", "_head_bytes",
        "_head_request", "_headers", "_in_head", "_informational", "_parser", "_sink",
        "_started", "_version_11", "on_body",
    )

    def __init__(self, sink: ResponseSink) -> None:
        self._sink = sink
        self.on_body = sink.on_body
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = False
        self._done = self._started = False
        self._head_bytes = self._feeding = 0
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._informational = False
        self._framed = self._chunked = self._close = self._connection = False
        self._version_11 = False

    def expect(self, head_request: bool) -> None:
        if head_request or self._head_request:
            # llhttp expects the body a HEAD response's headers announce: a HEAD response
            # (and the one after it) gets a fresh parser, whose body callback refuses bytes.
            self.on_body = self._surplus_body if head_request else self._sink.on_body
            self._parser = httptools.HttpResponseParser(self)
        self._head_request = head_request
        self._done = self._started = False
        self._head_bytes = 0
        self._reset()

    def feed(self, data: bytes) -> None:
        self._feeding = len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            cause = exc.__context__
            if isinstance(cause, ResponseParseError):
                raise cause from None
            raise ResponseParseError(str(exc) or type(exc).__name__) from None
        if self._in_head:  # llhttp buffers no head, but a head must end somewhere
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_RAW_HEAD:
                raise ResponseParseError(f"response head over {_MAX_RAW_HEAD} bytes")

    def feed_eof(self) -> None:
        if self._done:
            return
        if not self._started:
            raise ResponseParseError("the server closed the connection without a response")
        if self._in_head or self._framed:
            raise ResponseParseError("the server closed the connection before the response ended")
        self._finish(False)  # a body delimited by the close

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            raise ResponseParseError("data after the end of the response")
        self._reset()
        self._started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # else a trailer field of a chunked body: nothing reads them
            name = name.translate(LOWER)
            # Compiled, indexing and len() of bytes are read in place; rstrip() and a set
            # lookup (which hashes the new name) are calls.
            if value and (value[-1] == 0x20 or value[-1] == 0x09):  # a space or a tab
                value = value.rstrip(b" \t")
            size = len(name)  # of content-length, transfer-encoding or connection:
            if (size == 14 or size == 17 or size == 10) and name in _FRAMING:
                value = self._framing(name, value)
            self._headers.append((name, value))

    def _framing(self, name: bytes, value: bytes) -> bytes:
        if name == b"content-length":
            if self._chunked:
                raise ResponseParseError("Content-Length with Transfer-Encoding")
            self._framed = True
        elif name == b"transfer-encoding":
            value = value.lower()  # as h11 reports it
            if self._framed or value != b"chunked":
                raise ResponseParseError(f"unsupported Transfer-Encoding {value!r}")
            self._chunked = self._framed = True
        else:  # Connection
            self._connection = True
            if _closes(value):
                self._close = True
        return value

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self._in_head = False
        if self._head_bytes + self._feeding > MAX_HEAD:  # else the headers cannot be over
            _check_size(self._headers)
        if status < 200:
            if status < 100 or status == 101:
                raise ResponseParseError(f"unexpected status {status}")
            self._informational = True
            return
        # get_http_version formats a string (about 2,000 instructions). Without a
        # Connection header llhttp keeps alive an HTTP/1.1 response (framed by its length
        # or chunks) and no HTTP/1.0 one: then keeping alive means HTTP/1.1.
        if not self._connection and parser.should_keep_alive():
            self._version_11 = True
        else:
            self._version_11 = parser.get_http_version() == "1.1"
        self._sink.on_head(status, self._headers)
        if self._head_request:
            self._finish(self._version_11 and not self._close)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._in_head = True
            return
        if not self._done:  # a HEAD response already ended at its head
            self._finish(self._version_11 and not self._close)

    def _finish(self, keep_alive: bool) -> None:
        self._done = True
        self._sink.on_end(keep_alive)

    def _surplus_body(self, data: bytes) -> None:
        raise ResponseParseError("data after the end of the response")


class H11Parser(ResponseParser):
    """h11's client state machine behind the :class:`ResponseParser` interface.

    h11 parses a response only after it has seen a request: :meth:`expect` shows it a
    stand-in with the same method (the bytes that go out are the client's own).
    """

    __slots__ = ("_conn", "_done", "_eof", "_head_request", "_sink")

    def __init__(self, sink: ResponseSink) -> None:
        self._sink = sink
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_RAW_HEAD)
        self._done = self._eof = False
        self._head_request = False

    def expect(self, head_request: bool) -> None:
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        elif conn.our_state is not h11.IDLE:
            conn = self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_RAW_HEAD)
        conn.send(h11.Request(method=b"HEAD" if head_request else b"GET", target=b"/",
                              headers=[(b"host", b"upstream")]))
        conn.send(h11.EndOfMessage())
        self._head_request = head_request
        self._done = False

    def feed(self, data: bytes) -> None:
        if data:
            self._conn.receive_data(data)
            self._next_events()

    def feed_eof(self) -> None:
        if self._done:
            return
        self._eof = True
        self._conn.receive_data(b"")
        self._next_events()
        if not self._done:
            raise ResponseParseError("the server closed the connection without a response")

    def _next_events(self) -> None:
        conn = self._conn
        sink = self._sink
        try:
            while not self._done:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Data):
                    if data := h11_bytes(event):
                        sink.on_body(data)
                elif isinstance(event, h11.Response):
                    self._head(event)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    sink.on_end(not self._eof and conn.our_state is h11.DONE
                                and conn.their_state is h11.DONE)
                elif isinstance(event, h11.InformationalResponse):  # 1xx: checked, skipped
                    _check_size(list(event.headers))
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as exc:
            raise ResponseParseError(str(exc) or type(exc).__name__) from None
        if conn.trailing_data[0]:
            raise ResponseParseError("data after the end of the response")

    def _head(self, event: h11.Response) -> None:
        headers = list(event.headers)
        _check_size(headers)
        names = [name for name, _ in headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            raise ResponseParseError("Content-Length with Transfer-Encoding")
        self._sink.on_head(event.status_code, headers)
