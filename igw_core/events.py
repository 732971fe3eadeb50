"""Events: what a frontend tells an :class:`~igw_core.exchange.Exchange` happened.

Events carry data, never behaviour. Don't subclass these, and don't change one once
made: they are slotted dataclasses but not frozen, because several are made per
request and a frozen dataclass takes about five times as long to construct. Header names are
lower-case ``bytes`` (as both h11 and ASGI deliver them); values are ``bytes``.
Times (``now``) are readings of the frontend's monotonic clock in seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from igw_core.auth import KeySet

Headers = Sequence[tuple[bytes, bytes]]


@mypyc_attr(acyclic=True)
class Event:
    """Base class of every event fed to an exchange."""

    __slots__ = ()


@mypyc_attr(acyclic=True)
class Timed(Event):
    """Base class of the events that carry a monotonic clock reading, ``now`` (each
    declares it among its fields).

    Compiled, ``isinstance`` and the attribute read through this class are direct, where
    a set of such types and ``getattr`` were a lookup and a call.
    """

    __slots__ = ("now",)

    now: float


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RequestHead(Timed):
    """A client request's head arrived.

    Fields:
        method: upper-case method, e.g. ``"POST"``.
        path: the raw (still percent-encoded) path, without any mount prefix.
        query: the raw query string without ``?`` (``""`` when absent).
        headers: the request headers.
        now: monotonic clock reading.
        wall: wall-clock (epoch seconds) reading, for token expiry checks.
        fresh_id: a new random request id, used when the client sent none.
    """

    method: str
    path: str
    query: str
    headers: Headers
    now: float
    wall: float = 0.0
    fresh_id: str = ""

    def __init__(self, method: str, path: str, query: str, headers: Headers, now: float,
                 wall: float = 0.0, fresh_id: str = "") -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.now = now
        self.wall = wall
        self.fresh_id = fresh_id


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RequestData(Event):
    """A piece of the client's request body."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RequestEnd(Event):
    """The client's request body is complete."""


class BodyFailure(enum.Enum):
    """Why reading a client's request body failed."""

    TIMEOUT = "timeout"  # no body bytes for SERVER_READ_TIMEOUT
    MALFORMED = "malformed"  # the body's framing broke HTTP (a bad chunk, say)


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class RequestBodyFailed(Timed):
    """The client's request body could not be read to its end.

    The connection cannot carry another request after it; the exchange answers
    and asks the frontend to close.

    Fields:
        reason: why, which decides 408 versus 400.
        detail: the frontend's description of the failure.
        now: monotonic clock reading.
    """

    reason: BodyFailure
    detail: str
    now: float

    def __init__(self, reason: BodyFailure, detail: str, now: float) -> None:
        self.reason = reason
        self.detail = detail
        self.now = now


class FailureReason(enum.Enum):
    """Why a call to a provider failed before it completed."""

    UNREACHABLE = "unreachable"  # connect refused, DNS, TLS, reset before the head
    TIMEOUT = "timeout"  # connect, head or read timed out
    RESET = "reset"  # the connection broke while the body was flowing
    TOO_LARGE = "too_large"  # a buffered body exceeded the gateway's limit


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ProviderHead(Timed):
    """The response head of provider call ``call`` arrived.

    Fields:
        call: the ``call`` id of the :class:`~igw_core.effects.CallProvider`.
        status: the HTTP status.
        headers: the response headers.
        now: monotonic clock reading.
    """

    call: int
    status: int
    headers: Headers
    now: float

    def __init__(self, call: int, status: int, headers: Headers, now: float) -> None:
        self.call = call
        self.status = status
        self.headers = headers
        self.now = now


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ProviderData(Event):
    """A piece of provider call ``call``'s response body (after ``ReadProviderBody``)."""

    call: int
    data: bytes

    def __init__(self, call: int, data: bytes) -> None:
        self.call = call
        self.data = data


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ProviderEnd(Timed):
    """Provider call ``call``'s body is complete (read or relayed).

    Fields:
        call: the call id.
        now: monotonic clock reading.
        first_data_at: when the first relayed body byte reached the client, if known.
    """

    call: int
    now: float
    first_data_at: float | None = None

    def __init__(self, call: int, now: float, first_data_at: float | None = None) -> None:
        self.call = call
        self.now = now
        self.first_data_at = first_data_at


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ProviderResponse(Timed):
    """A whole buffered response to a ``CallProvider(buffer=True)``."""

    call: int
    status: int
    headers: Headers
    body: bytes
    now: float

    def __init__(self, call: int, status: int, headers: Headers, body: bytes, now: float) -> None:
        self.call = call
        self.status = status
        self.headers = headers
        self.body = body
        self.now = now


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ProviderFailed(Timed):
    """Provider call ``call`` failed.

    Fields:
        call: the call id.
        reason: the failure class, which decides 502 versus 504.
        detail: the underlying error's text (never contains credentials).
        now: monotonic clock reading.
    """

    call: int
    reason: FailureReason
    detail: str
    now: float

    def __init__(self, call: int, reason: FailureReason, detail: str, now: float) -> None:
        self.call = call
        self.reason = reason
        self.detail = detail
        self.now = now


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ToolResult(Timed):
    """The outcome of MCP tool call ``call`` (a ``CallTool`` effect).

    Fields:
        call: the ``call`` id of the ``CallTool``.
        ok: false when the tool or its server failed, or the call timed out.
        content: the tool's text output, or the error text for the model to read.
        now: monotonic clock reading.
    """

    call: int
    ok: bool
    content: str
    now: float

    def __init__(self, call: int, ok: bool, content: str, now: float) -> None:
        self.call = call
        self.ok = ok
        self.content = content
        self.now = now


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class KeysRefreshed(Event):
    """The answer to ``RefreshKeys``: the issuer's key set now (``None``: not loaded)."""

    keys: KeySet | None

    def __init__(self, keys: KeySet | None) -> None:
        self.keys = keys


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ClientGone(Timed):
    """The client disconnected before the response was complete.

    Fields:
        now: monotonic clock reading.
        first_data_at: when the first relayed body byte reached the client, if any did.
    """

    now: float
    first_data_at: float | None = None

    def __init__(self, now: float, first_data_at: float | None = None) -> None:
        self.now = now
        self.first_data_at = first_data_at
