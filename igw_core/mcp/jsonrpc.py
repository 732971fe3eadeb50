"""JSON-RPC 2.0 framing for MCP: building requests and notifications, finding the response.

Over Streamable HTTP a response comes either as an ``application/json`` body or as one
event of a ``text/event-stream`` body; :class:`ResponseReader` finds the response that
answers one request id in either, however the body is split into chunks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from igw_core.sse import SSEParser

__all__ = [
    "JSONRPCError",
    "MCPError",
    "MalformedResponse",
    "ResponseReader",
    "encode_notification",
    "encode_request",
]


class MCPError(Exception):
    """Base class of everything that can go wrong talking to an MCP server."""


class JSONRPCError(MCPError):
    """The server answered a request with a JSON-RPC error object.

    Attributes:
        code: the JSON-RPC error code (e.g. ``-32601`` method not found).
        message: the server's message.
        data: the optional ``data`` member, or ``None``.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class MalformedResponse(MCPError):
    """The server sent something that is not a valid answer to our request."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_request(id: int, method: str, params: Mapping[str, Any] | None = None) -> bytes:
    """Return the JSON bytes of a request ``method`` with id ``id``."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = dict(params)
    return _dumps(message)


def encode_notification(method: str, params: Mapping[str, Any] | None = None) -> bytes:
    """Return the JSON bytes of a notification ``method`` (no id, no answer expected)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = dict(params)
    return _dumps(message)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


#: Largest JSON body the reader buffers (an event-stream is parsed as it arrives).
MAX_BODY = 16 * 1024 * 1024


class ResponseReader:
    """Finds the response to request ``request_id`` in an HTTP body fed in pieces.

    ``content_type`` is the response's ``Content-Type``. For ``text/event-stream`` the
    response may be found before the body ends (:meth:`feed` returns ``True``); other
    messages on the stream (notifications, server requests) are skipped. For
    ``application/json`` the body (one message or a batch) is parsed at :meth:`end`.
    """

    __slots__ = ("_body", "_done", "_id", "_media", "_message", "_sse")

    def __init__(self, request_id: int, content_type: str) -> None:
        self._id = request_id
        self._media = _media_type(content_type)
        self._sse = SSEParser() if self._media == "text/event-stream" else None
        self._body = bytearray()
        self._message: dict[str, Any] | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the response was found (or the body ended)."""
        return self._done

    def feed(self, data: bytes) -> bool:
        """Consume a piece of the body; return ``True`` once the response is found.

        Raises:
            MalformedResponse: a JSON body grew beyond :data:`MAX_BODY`.
        """
        if self._done:
            return self._message is not None
        if self._sse is not None:
            for event in self._sse.feed(data):
                if event.event not in ("message", ""):
                    continue
                try:
                    parsed = json.loads(event.data)
                except ValueError:
                    continue
                if self._matches(parsed):
                    self._message = parsed
                    self._done = True
                    return True
            return False
        self._body += data
        if len(self._body) > MAX_BODY:
            raise MalformedResponse(f"response body larger than {MAX_BODY} bytes")
        return False

    def end(self) -> None:
        """The body is complete; locate the response in a JSON body.

        Raises:
            MalformedResponse: no response with our id, bad JSON, or an unexpected
                content type.
        """
        if self._done:
            return
        self._done = True
        if self._sse is not None:
            raise MalformedResponse(f"event stream ended without a response to request {self._id}")
        if self._media != "application/json":
            raise MalformedResponse(f"unexpected response content type {self._media or 'none'!r}")
        try:
            parsed = json.loads(self._body)
        except ValueError as exc:
            raise MalformedResponse(f"response is not JSON: {exc}") from None
        candidates = parsed if isinstance(parsed, list) else [parsed]
        for candidate in candidates:
            if self._matches(candidate):
                self._message = candidate
                return
        raise MalformedResponse(f"body holds no response to request {self._id}")

    def _matches(self, message: Any) -> bool:
        if not isinstance(message, dict) or "method" in message:
            return False
        if "result" not in message and "error" not in message:
            return False
        got = message.get("id")
        if isinstance(got, bool):
            return False
        return got == self._id or got == str(self._id)

    def result(self) -> dict[str, Any]:
        """Return the response's ``result`` object.

        Raises:
            JSONRPCError: the server answered with an error.
            MalformedResponse: no response was found, or its result is not an object.
        """
        message = self._message
        if message is None:
            raise MalformedResponse(f"no response to request {self._id}")
        error = message.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise MalformedResponse(f"error member is not an object: {error!r}")
            code = error.get("code")
            text = error.get("message")
            number = code if isinstance(code, int) and not isinstance(code, bool) else 0
            raise JSONRPCError(number, str(text) if text is not None else "", error.get("data"))
        result = message.get("result")
        if not isinstance(result, dict):
            raise MalformedResponse(f"result is not an object: {result!r}")
        return result
