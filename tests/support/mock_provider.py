"""A real HTTP/1.1 server on 127.0.0.1 that impersonates LLM providers.

Used by the gateway's behavioural and fault-injection tests. It runs asyncio streams + h11 in a
background daemon thread with its own event loop, so sync and async tests can both use it, and it
keeps raw socket control so faults (RST before headers, RST mid-stream, hangs, slow streams) are
real TCP-level events rather than simulated exceptions.

Quick reference::

    with MockProvider() as mock:                       # kind="openai" | "anthropic"
        client = openai.OpenAI(base_url=mock.base_url, api_key=mock.api_key)
        mock.script(Status(429, {"error": {...}}), Reply(content="hi"))
        ...
        mock.requests[-1].json["model"]

    with MockProvider(kind="anthropic") as mock:       # SDK base_url is the origin, no /v1
        client = anthropic.Anthropic(base_url=mock.origin, api_key=mock.api_key,
                                     default_headers=mock.anthropic_headers, max_retries=0)
        mock.script(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
                    Status(529), ResetMidStream(after_chunks=3))
        client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=64, messages=...)
        mock.requests_to("/v1/messages")[-1].json

    client.responses.create(model="gpt-4o", input="hi")  # openai kind; mock.stored_responses
    client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    mock_embedding("a")                                # the vector answered for input "a"

Routes (only under ``/v1``). Both kinds: ``POST /v1/chat/completions`` (OpenAI format) and
``GET /v1/models`` (OpenAI list shape, or Anthropic list shape for ``kind="anthropic"``).
``kind="anthropic"`` only:

* ``POST /v1/messages``: an Anthropic Message (``text`` / ``tool_use`` blocks, ``stop_reason``
  ``end_turn`` / ``tool_use`` / ``max_tokens``, usage with the cache counters), or with
  ``"stream": true`` Anthropic's named SSE events (``message_start``, per block
  ``content_block_start`` / ``content_block_delta`` (``text_delta``, or ``input_json_delta``
  fragments after an empty one) / ``content_block_stop``, one ``ping`` after the first block
  start, ``message_delta``, ``message_stop``; no ``[DONE]``). Answers carry ``request-id`` and
  the ``anthropic-ratelimit-*`` headers. ``model``, ``max_tokens`` and ``messages`` are
  required (400 ``invalid_request_error`` otherwise).
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, the same N as the Message's
  ``usage.input_tokens`` for the same request (``Reply(usage={"input_tokens": 7})`` overrides).

``kind="openai"`` only:

* ``POST /v1/responses``: an OpenAI Response (``message`` / ``function_call`` output items),
  or with ``"stream": true`` the Responses SSE events (``response.created``,
  ``response.in_progress``, per item ``response.output_item.added`` ...
  ``response.output_item.done`` with the ``content_part`` / ``output_text`` or
  ``function_call_arguments`` events between, then ``response.completed``; every payload has
  ``type`` and ``sequence_number``; no ``[DONE]``). Unless ``"store": false`` the finished
  Response is kept in ``mock.stored_responses``: ``GET /v1/responses/{id}`` answers it,
  ``DELETE`` removes it (``{"id", "object": "response", "deleted": true}``), unknown ids 404,
  and an unknown ``previous_response_id`` is refused with 400 like the real API.
* ``POST /v1/embeddings``: ``input`` a string, a list of strings, a token array or a list of
  token arrays; ``encoding_format`` ``"float"`` (the default when absent) or ``"base64"``
  (little-endian float32, what the openai SDK asks for by default); ``dimensions`` (default 8).
  Vectors are :func:`mock_embedding` of each input (float32-exact, so both encodings agree).

Every request is authenticated first (Bearer ``api_key`` for openai; ``x-api-key`` +
``anthropic-version`` for anthropic: ``2023-06-01`` or a later date such as the ``2026-10-21``
anthropic SDK 2.x sends; see :attr:`MockProvider.anthropic_headers`),
then routed; unknown paths answer 404 JSON, other methods on a known path 405. Every request
is recorded (``path`` keeps the query string, e.g. ``/v1/messages?beta=true``).

Scripted behaviours are consumed one per (authenticated, well-formed) generation request:
a POST to chat/completions, messages, messages/count_tokens, responses or embeddings (model
listings and stored-response GET/DELETE consume none). Each behaviour works on every one of
these routes in that route's own format: :class:`Reply` is rendered as a chat completion,
Anthropic Message, Response or embeddings list; a body-less :class:`Status` sends the route's
own error shape (Anthropic's on ``/v1/messages*``); :class:`ResetMidStream` counts that route's
SSE events (``ping`` included); :class:`SseEvents` writes ``event:`` lines and no ``[DONE]`` on
the Anthropic and Responses routes. Routes that never stream (count_tokens, embeddings) treat
ResetMidStream and SlowStream as for a non-stream chat request.

``canonical_headers=True`` (also settable on a running mock) writes response header names the
way Go's net/http does (``Content-Type``, ``Retry-After``, ``X-Request-Id``, ``Set-Cookie``,
``Transfer-Encoding``...) instead of lower case: h11 keeps the case it is given.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http
import itertools
import json
import math
import re
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import h11

__all__ = [
    "ANTHROPIC_VERSION",
    "Behaviour",
    "DelayHeaders",
    "Hang",
    "MockProvider",
    "RecordedRequest",
    "Reply",
    "ResetBeforeHeaders",
    "ResetMidStream",
    "Respond",
    "SlowStream",
    "SseEvents",
    "Status",
    "free_port",
    "mock_embedding",
]

ANTHROPIC_VERSION = "2023-06-01"
# Dated versions the anthropic kind accepts: 2023-06-01 and later ones, e.g. the 2026-10-21
# anthropic SDK 2.x sends (and a gateway relays as the client gave it), as the real API does.
_ANTHROPIC_VERSION_RE = re.compile(r"20(2[3-9]|[3-9]\d)-\d{2}-\d{2}")
_MAX_STREAM_PIECES = 24
_FIXED_CREATED = 1_700_000_000
_DEFAULT_EXTRA: dict[str, Any] = {
    "system_fingerprint": "fp_mock",
    "x_mock_extra": {"preserved": True, "nested": {"list": [1, 2, 3], "none": None}},
}
# What OpenAI (behind Cloudflare) adds to every answer; the gateway must drop the cookie.
_ANSWER_HEADERS = (
    ("x-ratelimit-remaining-requests", "9999"),
    ("set-cookie", "__cf_bm=mock-cookie; path=/; HttpOnly"),
)
_CHAT_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
_DEFAULT_EMBEDDING_DIMENSIONS = 8
_MAX_EMBEDDING_DIMENSIONS = 3072
_ANTHROPIC_ORGANIZATION = "a1b2c3d4-0000-4000-8000-000000000000"
_ANTHROPIC_DISPLAY_NAMES = {
    "claude-3-5-sonnet-20241022": "Claude 3.5 Sonnet (New)",
    "claude-3-5-haiku-20241022": "Claude 3.5 Haiku",
    "claude-3-opus-20240229": "Claude 3 Opus",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def canonical(name: str) -> str:
    """Return ``name`` in Go's canonical MIME header case: ``x-request-id`` -> ``X-Request-Id``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the mock received it (recorded before any behaviour runs)."""

    method: str
    path: str  # request target, including any query string
    headers: list[tuple[str, str]]  # names lower-cased, in wire order
    body: bytes
    connection: int = 0  # id of the TCP connection it arrived on (keep-alive checks)
    received_at: float = 0.0  # time.monotonic() when the full request had been read

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for k, v in self.headers:
            if k == lname:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k == lname]


# --------------------------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A normal answer; streamed or not according to the request's ``stream`` flag.

    ``content=None`` with no ``tool_calls`` means the default echo content. ``tool_calls`` are
    OpenAI-format dicts (``id``/``type`` are filled in if missing, dict ``arguments`` are
    JSON-encoded). ``usage`` replaces the computed usage; ``extra`` is merged into the top level
    of the completion object (and of every stream chunk).

    The same Reply answers every generation route in that route's own format (module
    docstring). A tool call may also be written flat, ``{"name": ..., "arguments": ...}`` (or
    ``"input"``); for Anthropic its arguments must be a JSON object. On the non-chat routes
    ``usage`` is merged over the computed usage (in the route's own usage shape) and ``extra``
    into the top-level message / response object. ``stop_reason`` overrides how the answer
    ends: Anthropic's ``stop_reason`` verbatim (e.g. ``"max_tokens"``); on chat it becomes the
    ``finish_reason`` (``max_tokens`` -> ``length``, ``end_turn`` / ``stop_sequence`` ->
    ``stop``, ``tool_use`` -> ``tool_calls``, anything else verbatim); on Responses
    ``"max_tokens"`` makes the response ``incomplete`` (``max_output_tokens``).
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    stop_reason: str | None = None


@dataclass
class Status:
    """Answer ``status`` with ``body`` (a dict is sent as JSON, bytes as text/plain).

    Without a body, the route's own JSON error shape for that status is sent: Anthropic's
    ``{"type": "error", "error": {"type": "rate_limit_error", ...}, "request_id": ...}`` on
    ``/v1/messages*``, OpenAI's ``{"error": {"message", "type", "param", "code"}}`` elsewhere.
    On the Anthropic routes a ``request-id`` header is added, on Responses / embeddings an
    ``x-request-id`` (unless ``headers`` has one). ``headers`` are sent as given (e.g.
    ``[("retry-after", "1")]``).
    """

    status: int
    body: bytes | dict[str, Any] | None = None
    headers: list[tuple[str, str]] | None = None


@dataclass
class DelayHeaders:
    """Wait ``seconds`` before sending anything, then behave as ``then`` (default: Reply())."""

    seconds: float
    then: Behaviour | None = None


@dataclass
class Hang:
    """Read the request and never answer (until the client goes away or stop())."""


@dataclass
class ResetBeforeHeaders:
    """Read the request, then close the socket with RST (SO_LINGER 0)."""


@dataclass
class ResetMidStream:
    """Start the answer, send ``after_chunks`` SSE events, then RST the connection.

    For a non-stream request: send the headers and the first half of the JSON body, then RST.
    """

    after_chunks: int = 2
    reply: Reply | None = None


@dataclass
class SlowStream:
    """Streaming answer with ``delay`` seconds between events (non-stream: delay, then JSON)."""

    delay: float
    reply: Reply | None = None


@dataclass
class Respond:
    """Escape hatch: choose the behaviour per request. ``None`` means the default Reply()."""

    fn: Callable[[RecordedRequest], Behaviour | None]


SsePayload: TypeAlias = str | dict[str, Any] | tuple[str, str | dict[str, Any]]


@dataclass
class SseEvents:
    """Stream these ``data:`` payloads verbatim (dicts JSON-encoded), then ``data: [DONE]``.

    A 200 ``text/event-stream; charset=utf-8`` answer with chunked framing, for tests that need
    a provider's exact wire shape rather than the one :class:`Reply` builds.

    An ``(event, payload)`` tuple also writes an ``event:`` line. On the Anthropic and
    Responses routes a dict payload with a ``"type"`` gets ``event: <type>`` by itself, and
    no ``[DONE]`` is sent (those APIs send none); ``done`` forces it either way.
    """

    payloads: list[SsePayload]
    done: bool | None = None


Behaviour: TypeAlias = (
    Reply
    | Status
    | SseEvents
    | DelayHeaders
    | Hang
    | ResetBeforeHeaders
    | ResetMidStream
    | SlowStream
    | Respond
)


class _Dropped(Exception):
    """The connection was closed on purpose (fault injection): stop serving it."""


# --------------------------------------------------------------------------------------------
# Wire-format helpers
# --------------------------------------------------------------------------------------------


def _split_text(text: str, min_size: int = 3) -> list[str]:
    """Deterministically split ``text`` into several pieces (at most _MAX_STREAM_PIECES)."""
    if not text:
        return []
    size = max(min_size, -(-len(text) // _MAX_STREAM_PIECES))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _text_of(msg.get("content"))
    return ""


def _count_tokens(text: str) -> int:
    return len(text.split())


def _prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for msg in messages:
        if isinstance(msg, dict):
            total += 3 + _count_tokens(_text_of(msg.get("content")))
    return total + 3


def _normalize_tool_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tc in enumerate(tool_calls):
        fn = dict(tc.get("function") or {})
        if "function" not in tc:  # flat form: {"name": ..., "arguments" | "input": ...}
            fn = {"name": tc.get("name", ""), "arguments": tc.get("arguments", tc.get("input", ""))}
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = _dumps(args)
        out.append(
            {
                "id": tc.get("id") or f"call_mock_{i}",
                "type": tc.get("type") or "function",
                "function": {"name": fn.get("name", ""), "arguments": args},
            }
        )
    return out


def _headers_have(headers: Iterable[tuple[str, str]], name: str) -> bool:
    return any(k.lower() == name for k, _ in headers)


@dataclass
class _Answer:
    """A Reply resolved against a concrete chat request."""

    id: str
    model: str
    created: int
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    usage: dict[str, Any]
    extra: dict[str, Any]
    stream: bool
    include_usage: bool
    stop_reason: str | None = None

    @property
    def finish_reason(self) -> str:
        if self.stop_reason is not None:
            return _CHAT_FINISH_REASONS.get(self.stop_reason, self.stop_reason)
        return "tool_calls" if self.tool_calls else "stop"

    # The _Output protocol (see below).

    def body(self) -> Any:
        return self.completion()

    def frames(self) -> list[bytes]:
        return [_frame(None, event) for event in self.events()]

    def json_headers(self) -> list[tuple[str, str]]:
        return [("x-request-id", f"req_mock_{self.id}"), *_ANSWER_HEADERS]

    def stream_headers(self) -> list[tuple[str, str]]:
        return [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("x-request-id", f"req_mock_{self.id}"),
            *_ANSWER_HEADERS,
        ]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
            **self.extra,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
            **self.extra,
        }
        if self.include_usage:
            obj["usage"] = None
        return _dumps(obj)

    def events(self) -> list[str]:
        """The ``data:`` payloads of the SSE answer, ending with ``[DONE]``."""
        role_content = "" if self.content is not None or not self.tool_calls else None
        events = [self._chunk({"role": "assistant", "content": role_content})]
        for piece in _split_text(self.content or ""):
            events.append(self._chunk({"content": piece}))
        for index, tc in enumerate(self.tool_calls or []):
            head = {
                "index": index,
                "id": tc["id"],
                "type": tc["type"],
                "function": {"name": tc["function"]["name"], "arguments": ""},
            }
            events.append(self._chunk({"tool_calls": [head]}))
            for frag in _split_text(tc["function"]["arguments"], min_size=4):
                events.append(
                    self._chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
                )
        events.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            usage_chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
                **self.extra,
            }
            events.append(_dumps(usage_chunk))
        events.append("[DONE]")
        return events


def _frame(event: str | None, data: str) -> bytes:
    """One SSE event: an optional ``event:`` line, one ``data:`` line, a blank line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return _frame(name, _dumps(obj))


class _Output(Protocol):
    """A Reply rendered in one route's wire format."""

    stream: bool

    def body(self) -> Any: ...  # the JSON answer of a non-stream request

    def frames(self) -> list[bytes]: ...  # the SSE events of a stream request

    def json_headers(self) -> list[tuple[str, str]]: ...

    def stream_headers(self) -> list[tuple[str, str]]: ...


@dataclass
class _JsonOutput:
    """A route that never streams (count_tokens, embeddings)."""

    obj: dict[str, Any]
    headers: list[tuple[str, str]]
    stream: bool = False

    def body(self) -> Any:
        return self.obj

    def frames(self) -> list[bytes]:
        return []

    def json_headers(self) -> list[tuple[str, str]]:
        return self.headers

    def stream_headers(self) -> list[tuple[str, str]]:  # pragma: no cover - never streams
        return self.headers


def _sse_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        ("content-type", _SSE_CONTENT_TYPE),
        ("cache-control", "no-cache"),
        ("transfer-encoding", "chunked"),
        *headers,
    ]


def _flat_tool_calls(tool_calls: list[dict[str, Any]] | None) -> list[tuple[str | None, str, str]]:
    """``(given id or None, name, arguments JSON text)`` of Reply.tool_calls in either form."""
    out: list[tuple[str | None, str, str]] = []
    for tc, norm in zip(tool_calls or [], _normalize_tool_calls(tool_calls or []), strict=True):
        out.append((tc.get("id") or None, norm["function"]["name"], norm["function"]["arguments"]))
    return out


def _output_tokens(text: str | None, tools: Iterable[tuple[Any, str, str]]) -> int:
    return max(1, _count_tokens(text or "") + sum(1 + _count_tokens(a) for _, _, a in tools))


# ---- Anthropic Messages ----------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ANTHROPIC_ERROR_MESSAGES = {
    429: "Number of requests has exceeded your per-minute rate limit (mock)",
    529: "Overloaded",
}


def _anthropic_error_type(status: int) -> str:
    default = "invalid_request_error" if status < 500 else "api_error"
    return _ANTHROPIC_ERROR_TYPES.get(status, default)


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


def _anthropic_headers(request_id: str) -> list[tuple[str, str]]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    headers = [("request-id", request_id), ("anthropic-organization-id", _ANTHROPIC_ORGANIZATION)]
    for kind, limit in (
        ("requests", 4000),
        ("input-tokens", 400_000),
        ("output-tokens", 80_000),
        ("tokens", 480_000),
    ):
        remaining = limit - 1 if kind == "requests" else limit
        headers += [
            (f"anthropic-ratelimit-{kind}-limit", str(limit)),
            (f"anthropic-ratelimit-{kind}-remaining", str(remaining)),
            (f"anthropic-ratelimit-{kind}-reset", reset),
        ]
    return headers


def _anthropic_text(content: Any) -> str:
    """All the text of an Anthropic ``system`` / message ``content`` (for token counts)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_anthropic_text(block.get("content")))
            elif block.get("type") == "tool_use":
                parts.append(_dumps(block.get("input", {})))
    return " ".join(parts)


def _tools_tokens(tools: Any) -> int:
    if not isinstance(tools, list):
        return 0
    return sum(3 + len(_dumps(tool)) // 4 for tool in tools)


def _anthropic_input_tokens(payload: dict[str, Any]) -> int:
    """Input tokens of a Messages request: messages, system and tools (count_tokens agrees)."""
    total = 3 + _tools_tokens(payload.get("tools"))
    if payload.get("system"):
        total += 3 + _count_tokens(_anthropic_text(payload["system"]))
    messages = payload.get("messages")
    for msg in messages if isinstance(messages, list) else []:
        if isinstance(msg, dict):
            total += 3 + _count_tokens(_anthropic_text(msg.get("content")))
    return total


@dataclass
class _MessagesOutput:
    """A Reply as an Anthropic Message / Messages SSE stream."""

    id: str
    request_id: str
    model: str
    text: str | None
    tools: list[tuple[str, str, str]]  # (toolu id, name, arguments JSON text)
    usage: dict[str, Any]
    stop_reason: str
    extra: dict[str, Any]
    stream: bool

    def _blocks(self) -> list[tuple[dict[str, Any], str]]:
        """Content blocks, each with the text its stream deltas carry."""
        blocks: list[tuple[dict[str, Any], str]] = []
        if self.text is not None and (self.text or not self.tools):
            blocks.append(({"type": "text", "text": self.text}, self.text))
        for tid, name, args in self.tools:
            tool_input = json.loads(args) if args.strip() else {}
            if not isinstance(tool_input, dict):
                raise ValueError(f"Anthropic tool_use input must be a JSON object: {args!r}")
            block = {"type": "tool_use", "id": tid, "name": name, "input": tool_input}
            blocks.append((block, args))
        return blocks

    def _message(
        self, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
            **self.extra,
        }

    def body(self) -> Any:
        return self._message([b for b, _ in self._blocks()], self.stop_reason, self.usage)

    def frames(self) -> list[bytes]:
        start_usage = {**self.usage, "output_tokens": 1}
        frames = [
            _event(
                "message_start",
                {"type": "message_start", "message": self._message([], None, start_usage)},
            )
        ]
        ping = _event("ping", {"type": "ping"})
        for index, (block, text) in enumerate(self._blocks()):
            start: dict[str, Any]
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": piece} for piece in _split_text(text)]
            else:
                start = {**block, "input": {}}
                pieces = ["", *_split_text(text, min_size=4)]
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            frames.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            if index == 0:
                frames.append(ping)
            for delta in deltas:
                frames.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            frames.append(
                _event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        if len(frames) == 1:
            frames.append(ping)
        frames.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": self.usage.get("output_tokens", 0)},
                },
            )
        )
        frames.append(_event("message_stop", {"type": "message_stop"}))
        return frames

    def json_headers(self) -> list[tuple[str, str]]:
        return _anthropic_headers(self.request_id)

    def stream_headers(self) -> list[tuple[str, str]]:
        return _sse_headers(_anthropic_headers(self.request_id))


# ---- OpenAI Responses ------------------------------------------------------------------------


def _openai_error(
    message: str, type_: str = "invalid_request_error", param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _openai_status_error(status: int) -> dict[str, Any]:
    """The body OpenAI sends with ``status`` (what an empty Status answers on its routes)."""
    if status == 429:
        return _openai_error(
            "Rate limit reached for requests (mock)", "requests", None, "rate_limit_exceeded"
        )
    if status == 401:
        return _openai_error("Incorrect API key provided", code="invalid_api_key")
    if status >= 500:
        return _openai_error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    return _openai_error(f"{_status_phrase(status)} (mock)")


def _openai_headers(request_id: str) -> list[tuple[str, str]]:
    return [
        ("x-request-id", request_id),
        ("openai-version", "2020-10-01"),
        ("openai-processing-ms", "1"),
        *_ANSWER_HEADERS,
    ]


def _responses_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
                parts.append(str(part.get("text", "")))
    return " ".join(parts)


def _responses_input_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    raw = payload.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    return [item for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []


def _responses_input_tokens(payload: dict[str, Any]) -> int:
    total = 3 + _tools_tokens(payload.get("tools"))
    if isinstance(payload.get("instructions"), str):
        total += 3 + _count_tokens(payload["instructions"])
    for item in _responses_input_items(payload):
        if "content" in item:
            text = _responses_text(item["content"])
        else:
            text = str(item.get("output") or item.get("arguments") or "")
        total += 3 + _count_tokens(text)
    return total


def _responses_echo(payload: dict[str, Any]) -> str:
    for item in reversed(_responses_input_items(payload)):
        if item.get("role") == "user":
            return _responses_text(item.get("content"))
    return ""


def _responses_tools(tools: Any) -> list[Any]:
    """Request tools as the Responses API echoes them (function tools get its defaults)."""
    out: list[Any] = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            tool = {"description": None, "strict": True, **tool}
        out.append(tool)
    return out


@dataclass
class _ResponsesOutput:
    """A Reply as an OpenAI Response object / Responses SSE stream."""

    id: str
    request_id: str
    created_at: int
    model: str
    message_id: str
    text: str | None
    tools: list[tuple[str, str, str, str]]  # (fc item id, call id, name, arguments)
    usage: dict[str, Any]
    incomplete: bool
    extra: dict[str, Any]
    payload: dict[str, Any]
    stream: bool

    @property
    def _status(self) -> str:
        return "incomplete" if self.incomplete else "completed"

    def _message_item(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self._text_part(text)]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    @staticmethod
    def _text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    @staticmethod
    def _call_item(tool: tuple[str, str, str, str], status: str, args: str) -> dict[str, Any]:
        item_id, call_id, name, _ = tool
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": args,
            "call_id": call_id,
            "name": name,
        }

    @property
    def _has_message(self) -> bool:
        return self.text is not None and (bool(self.text) or not self.tools)

    def _output(self) -> list[dict[str, Any]]:
        items = [self._message_item(self._status, self.text)] if self._has_message else []
        items += [self._call_item(tool, "completed", tool[3]) for tool in self.tools]
        return items

    def response(self, done: bool) -> dict[str, Any]:
        """The Response object: as first created (``done=False``) or as finished."""
        p = self.payload
        text_config: dict[str, Any] = p["text"] if isinstance(p.get("text"), dict) else {}
        reasoning: dict[str, Any] = (
            p["reasoning"] if isinstance(p.get("reasoning"), dict) else {}
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self._status if done else "in_progress",
            "background": bool(p.get("background", False)),
            "completed_at": self.created_at if done and not self.incomplete else None,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if done and self.incomplete else None
            ),
            "instructions": p.get("instructions"),
            "max_output_tokens": p.get("max_output_tokens"),
            "max_tool_calls": p.get("max_tool_calls"),
            "model": self.model,
            "output": self._output() if done else [],
            "parallel_tool_calls": p.get("parallel_tool_calls", True),
            "previous_response_id": p.get("previous_response_id"),
            "prompt_cache_key": p.get("prompt_cache_key"),
            "reasoning": {"effort": None, "summary": None, **reasoning},
            "safety_identifier": p.get("safety_identifier"),
            "service_tier": "default",
            "store": p.get("store", True),
            "temperature": p.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **text_config},
            "tool_choice": p.get("tool_choice", "auto"),
            "tools": _responses_tools(p.get("tools")),
            "top_logprobs": p.get("top_logprobs", 0),
            "top_p": p.get("top_p", 1.0),
            "truncation": p.get("truncation", "disabled"),
            "usage": self.usage if done else None,
            "user": p.get("user"),
            "metadata": p.get("metadata") or {},
            **self.extra,
        }

    def body(self) -> Any:
        return self.response(done=True)

    def frames(self) -> list[bytes]:
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(done=False)},
            {"type": "response.in_progress", "response": self.response(done=False)},
        ]
        output_index = 0
        if self._has_message:
            text = self.text or ""
            where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": self._message_item("in_progress", None),
                }
            )
            events.append(
                {"type": "response.content_part.added", **where, "part": self._text_part("")}
            )
            for piece in _split_text(text):
                events.append(
                    {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
                )
            events.append(
                {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
            )
            events.append(
                {"type": "response.content_part.done", **where, "part": self._text_part(text)}
            )
            events.append(
                {
                    "type": "response.output_item.done",
                    "output_index": 0,
                    "item": self._message_item(self._status, text),
                }
            )
            output_index = 1
        for offset, tool in enumerate(self.tools):
            index = output_index + offset
            where = {"item_id": tool[0], "output_index": index}
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": self._call_item(tool, "in_progress", ""),
                }
            )
            for piece in _split_text(tool[3], min_size=4):
                events.append(
                    {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                )
            events.append(
                {"type": "response.function_call_arguments.done", **where, "arguments": tool[3]}
            )
            events.append(
                {
                    "type": "response.output_item.done",
                    "output_index": index,
                    "item": self._call_item(tool, "completed", tool[3]),
                }
            )
        final = "response.incomplete" if self.incomplete else "response.completed"
        events.append({"type": final, "response": self.response(done=True)})
        frames = []
        for seq, event in enumerate(events):
            obj = {"type": event.pop("type"), "sequence_number": seq, **event}
            frames.append(_event(obj["type"], obj))
        return frames

    def json_headers(self) -> list[tuple[str, str]]:
        return _openai_headers(self.request_id)

    def stream_headers(self) -> list[tuple[str, str]]:
        return _sse_headers(_openai_headers(self.request_id))


# ---- OpenAI embeddings -----------------------------------------------------------------------


def mock_embedding(text: str, dimensions: int = _DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """The unit-length vector the mock answers for ``text`` (deterministic, float32-exact).

    A token-array input is embedded as ``mock_embedding(json.dumps(tokens))`` (compact JSON).
    """
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _embedding_inputs(raw: Any) -> list[tuple[str, int]] | None:
    """``(text to embed, token count)`` per input, or None when ``input`` is invalid."""

    def tokens(x: Any) -> bool:
        return (
            isinstance(x, list) and bool(x)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        )

    if isinstance(raw, str):
        return [(raw, _count_tokens(raw))] if raw else None
    if not isinstance(raw, list) or not raw:
        return None
    if tokens(raw):
        return [(_dumps(raw), len(raw))]
    if all(isinstance(x, str) and x for x in raw):
        return [(x, _count_tokens(x)) for x in raw]
    if all(tokens(x) for x in raw):
        return [(_dumps(x), len(x)) for x in raw]
    return None


# --------------------------------------------------------------------------------------------
# Routes: how behaviours are rendered on each generation endpoint
# --------------------------------------------------------------------------------------------


@dataclass
class _Route:
    """A generation endpoint: renders Replies, default error bodies and raw SSE its own way."""

    output: Callable[[Reply], _Output]
    error_body: Callable[[int], Any]  # what a body-less Status sends
    status_headers: list[tuple[str, str]]  # added to Status answers unless already given
    sse_headers: list[tuple[str, str]]  # of SseEvents answers
    sse_done: bool  # SseEvents end with data: [DONE]
    named_events: bool  # SseEvents dicts with a "type" get "event: <type>"


# --------------------------------------------------------------------------------------------
# One HTTP exchange on one connection
# --------------------------------------------------------------------------------------------


class _Exchange:
    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: RecordedRequest,
        canonical_headers: bool = False,
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.request = request
        self.canonical_headers = canonical_headers

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        try:
            reason = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        if self.canonical_headers:
            headers = [(canonical(k), v) for k, v in headers]
        await self.send(h11.Response(status_code=status, headers=headers, reason=reason))

    async def send_full(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        hs = list(headers)
        if not _headers_have(hs, "content-length"):
            hs.append(("content-length", str(len(body))))
        await self.start_response(status, hs)
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def send_json(
        self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        body = _dumps(obj).encode()
        await self.send_full(status, body, [("content-type", "application/json"), *headers])

    async def send_event(self, payload: str) -> None:
        await self.send(h11.Data(data=f"data: {payload}\n\n".encode()))

    async def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0 + close)."""
        with contextlib.suppress(Exception):
            await self.writer.drain()
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        raise _Dropped


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class MockProvider:
    """A scripted fake LLM provider speaking HTTP/1.1 on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        *,
        kind: str = "openai",
        port: int = 0,
        api_key: str | None = None,
        models: list[str] | None = None,
        canonical_headers: bool = False,
    ) -> None:
        if kind not in ("openai", "anthropic"):
            raise ValueError(f"unknown mock provider kind: {kind!r}")
        self.kind = kind
        self.api_key: str = api_key or f"sk-mock-{secrets.token_hex(12)}"
        if models is not None:
            self.models: list[str] = list(models)
        elif kind == "anthropic":
            self.models = ["claude-3-5-sonnet-20241022"]
        else:
            self.models = ["gpt-4o-mini", "gpt-4o"]
        self.requests: list[RecordedRequest] = []
        # Responses created by POST /v1/responses (unless "store": false), by id, as finished.
        self.stored_responses: dict[str, dict[str, Any]] = {}
        # Unexpected exceptions raised inside connection handlers (a healthy run leaves it empty).
        self.errors: list[BaseException] = []
        # Behaviour used when the script queue is empty; None means Reply() (echo).
        self.default_behaviour: Behaviour | None = None
        # Pause between SSE events of a normal stream, so chunk-by-chunk relay is observable.
        self.chunk_delay: float = 0.002
        # Write response header names in canonical case (Go net/http) instead of lower case.
        self.canonical_headers = canonical_headers
        self.connections_accepted = 0
        self.active_connections = 0

        self._requested_port = port
        self.port: int = port
        self._cond = threading.Condition()
        self._script: deque[Behaviour] = deque()
        self._conn_ids = itertools.count(1)
        self._req_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._startup_error: BaseException | None = None

    # ---- public API ------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def anthropic_headers(self) -> dict[str, str]:
        """The auth headers a ``kind="anthropic"`` mock wants (``x-api-key`` + version).

        anthropic SDK 2.x sends its key as ``Authorization: Bearer``, which this mock refuses
        (like a wrong key): give the SDK ``default_headers=mock.anthropic_headers``.
        """
        return {"x-api-key": self.api_key, "anthropic-version": ANTHROPIC_VERSION}

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.path.split("?", 1)[0] == "/v1/chat/completions"]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path (without the query string) is ``path``."""
        with self._cond:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each generation request consumes one (then the default applies).

        Generation requests: ``POST`` to chat/completions, messages, messages/count_tokens,
        responses and embeddings (not models, nor GET/DELETE of a stored response).
        """
        with self._cond:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._cond:
            return len(self._script)

    def clear(self) -> None:
        """Forget recorded requests/errors/stored responses and drop any queued behaviours."""
        with self._cond:
            self._script.clear()
            del self.requests[:]
            del self.errors[:]
            self.stored_responses.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def start(self) -> MockProvider:
        if self._thread is not None:
            raise RuntimeError("MockProvider already started")
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"mock-{self.kind}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("MockProvider did not start in time")
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("MockProvider.stop() called from its own event-loop thread")
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(10)
        self._thread = None
        self._loop = None
        self._stop_event = None

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- thread / loop ---------------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:
            if not ready.is_set():
                self._startup_error = exc
            else:
                self.errors.append(exc)
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in leftovers:
                    t.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(
            self._handle_connection, host="127.0.0.1", port=self._requested_port, backlog=2048
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    # ---- connection handling ---------------------------------------------------------------

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn_id = next(self._conn_ids)
        self.connections_accepted += 1
        self.active_connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                ex = await self._read_request(conn, reader, writer, conn_id)
                if ex is None:
                    break
                await self._dispatch(ex)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except asyncio.CancelledError:
            raise
        except (_Dropped, ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self.active_connections -= 1
            if task is not None:
                self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
    ) -> _Exchange | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                request = event
                if conn.they_are_waiting_for_100_continue:
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                    )
                    await writer.drain()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        recorded = RecordedRequest(
            method=request.method.decode("ascii", "replace"),
            path=request.target.decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
            body=bytes(body),
            connection=conn_id,
            received_at=time.monotonic(),
        )
        with self._cond:
            self.requests.append(recorded)
            self._cond.notify_all()
        return _Exchange(conn, reader, writer, recorded, self.canonical_headers)

    # ---- routing ---------------------------------------------------------------------------

    def _error_body(self, status: int, message: str, type_: str, code: str | None) -> Any:
        if self.kind == "anthropic":
            anthropic_type = _anthropic_error_type(status)
            return {"type": "error", "error": {"type": anthropic_type, "message": message}}
        return {"error": {"message": message, "type": type_, "code": code}}

    @staticmethod
    def _known_anthropic_version(version: str | None) -> bool:
        return version is not None and (
            version == ANTHROPIC_VERSION
            or (_ANTHROPIC_VERSION_RE.fullmatch(version) is not None and version >= "2023-06-01")
        )

    def _authorized(self, req: RecordedRequest) -> bool:
        if self.kind == "anthropic":
            return req.header("x-api-key") == self.api_key and self._known_anthropic_version(
                req.header("anthropic-version")
            )
        return req.header("authorization") == f"Bearer {self.api_key}"

    async def _dispatch(self, ex: _Exchange) -> None:
        req = ex.request
        if not self._authorized(req):
            if self.kind == "anthropic":
                missing = not self._known_anthropic_version(req.header("anthropic-version"))
                message = (
                    f"anthropic-version: header must be {ANTHROPIC_VERSION}"
                    if missing and req.header("x-api-key") == self.api_key
                    else "invalid x-api-key"
                )
            else:
                message = "Incorrect API key provided"
            body = self._error_body(401, message, "invalid_request_error", "invalid_api_key")
            await ex.send_json(401, body)
            return
        path = req.path.split("?", 1)[0]
        anthropic = self.kind == "anthropic"
        stored = None if anthropic else re.fullmatch(r"/v1/responses/([^/]+)", path)
        if path == "/v1/chat/completions":
            if req.method != "POST":
                await self._send_error(ex, 405, f"Method {req.method} not allowed")
                return
            await self._chat(ex)
        elif path == "/v1/models":
            if req.method != "GET":
                await self._send_error(ex, 405, f"Method {req.method} not allowed")
                return
            await ex.send_json(200, self._models_body())
        elif (anthropic and path in ("/v1/messages", "/v1/messages/count_tokens")) or (
            not anthropic and path in ("/v1/responses", "/v1/embeddings")
        ):
            if req.method != "POST":
                await self._send_error(ex, 405, f"Method {req.method} not allowed")
                return
            await self._generate(ex, path)
        elif stored is not None:
            await self._stored_response(ex, stored[1])
        else:
            await self._send_error(ex, 404, f"Unknown request URL: {req.method} {path}")

    async def _send_error(self, ex: _Exchange, status: int, message: str) -> None:
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(status)
        await ex.send_json(status, self._error_body(status, message, "invalid_request_error", code))

    def _models_body(self) -> dict[str, Any]:
        models = list(self.models)
        if self.kind == "anthropic":
            data = []
            for mid in models:
                m = re.search(r"(\d{4})(\d{2})(\d{2})$", mid)
                created = f"{m[1]}-{m[2]}-{m[3]}T00:00:00Z" if m else "2024-10-22T00:00:00Z"
                data.append(
                    {
                        "type": "model",
                        "id": mid,
                        "display_name": _ANTHROPIC_DISPLAY_NAMES.get(mid, mid),
                        "created_at": created,
                    }
                )
            return {
                "data": data,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        return {
            "object": "list",
            "data": [
                {"id": mid, "object": "model", "created": _FIXED_CREATED, "owned_by": "mock"}
                for mid in models
            ],
        }

    # ---- chat ------------------------------------------------------------------------------

    def _next_behaviour(self) -> Behaviour:
        with self._cond:
            b = self._script.popleft() if self._script else self.default_behaviour
        return b if b is not None else Reply()

    async def _chat(self, ex: _Exchange) -> None:
        try:
            payload = ex.request.json
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            message = "We could not parse the JSON body of your request."
            body = self._error_body(400, message, "invalid_request_error", None)
            await ex.send_json(400, body)
            return
        await self._run(ex, self._next_behaviour(), self._chat_route(payload))

    def _chat_route(self, payload: dict[str, Any]) -> _Route:
        return _Route(
            output=lambda reply: self._answer(reply, payload),
            error_body=_openai_status_error,
            status_headers=[],
            sse_headers=[
                ("content-type", _SSE_CONTENT_TYPE),
                ("transfer-encoding", "chunked"),
                *_ANSWER_HEADERS,
            ],
            sse_done=True,
            named_events=False,
        )

    def _model_of(self, payload: dict[str, Any], default: str) -> str:
        model = payload.get("model")
        if isinstance(model, str):
            return model
        return self.models[0] if self.models else default

    def _answer(self, reply: Reply, payload: dict[str, Any]) -> _Answer:
        messages = payload.get("messages")
        tool_calls = _normalize_tool_calls(reply.tool_calls) if reply.tool_calls else None
        content = reply.content
        if content is None and not tool_calls:
            content = "echo: " + _last_user_text(messages)
        if reply.usage is not None:
            usage = dict(reply.usage)
        else:
            prompt = _prompt_tokens(messages)
            completion = _count_tokens(content or "") + sum(
                1 + _count_tokens(tc["function"]["arguments"]) for tc in tool_calls or []
            )
            completion = max(1, completion)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        stream_options = payload.get("stream_options")
        include_usage = isinstance(stream_options, dict) and (
            stream_options.get("include_usage") is True
        )
        return _Answer(
            id=f"chatcmpl-mock{next(self._req_ids)}",
            model=self._model_of(payload, "mock-model"),
            created=int(time.time()),
            content=content,
            tool_calls=tool_calls,
            usage=usage,
            extra={**_DEFAULT_EXTRA, **(reply.extra or {})},
            stream=payload.get("stream") is True,
            include_usage=include_usage,
            stop_reason=reply.stop_reason,
        )

    # ---- Anthropic Messages, OpenAI Responses and embeddings -------------------------------

    async def _generate(self, ex: _Exchange, path: str) -> None:
        """A POST to one of the non-chat generation routes: validate, then run a behaviour."""
        try:
            payload = ex.request.json
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            message = "We could not parse the JSON body of your request."
            if self.kind == "anthropic":
                body = self._error_body(400, message, "invalid_request_error", None)
            else:
                body = _openai_error(message)
            await ex.send_json(400, body)
            return
        problem = self._validate(path, payload)
        if problem is not None:
            await ex.send_json(400, problem)
            return
        n = next(self._req_ids)
        if path == "/v1/messages":
            route = self._messages_route(payload, n)
        elif path == "/v1/messages/count_tokens":
            route = self._count_tokens_route(payload, n)
        elif path == "/v1/responses":
            route = self._responses_route(payload, n)
        else:
            route = self._embeddings_route(payload, n)
        await self._run(ex, self._next_behaviour(), route)

    def _validate(self, path: str, payload: dict[str, Any]) -> Any:
        """The 400 body the real API sends for a malformed request, or None."""
        if path.startswith("/v1/messages"):
            required = ["model", "messages"]
            if path == "/v1/messages":
                required.insert(1, "max_tokens")
            for field in required:
                if field not in payload:
                    return self._error_body(400, f"{field}: Field required", "", None)
            max_tokens = payload.get("max_tokens", 1)
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                return self._error_body(400, "max_tokens: Input should be a valid integer", "",
                                        None)
            if not isinstance(payload["messages"], list):
                return self._error_body(400, "messages: Input should be a valid list", "", None)
            return None
        if not isinstance(payload.get("model"), str):
            return _openai_error("Missing required parameter: 'model'.", param="model",
                                 code="missing_required_parameter")
        if path == "/v1/responses":
            previous = payload.get("previous_response_id")
            if previous is not None and previous not in self.stored_responses:
                return _openai_error(
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            return None
        if _embedding_inputs(payload.get("input")) is None:
            return _openai_error(
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                param="input",
            )
        if payload.get("encoding_format", "float") not in ("float", "base64"):
            return _openai_error(
                f"Invalid value: '{payload['encoding_format']}'. Supported values are: "
                "'float' and 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        dims = payload.get("dimensions", _DEFAULT_EMBEDDING_DIMENSIONS)
        if (
            not isinstance(dims, int) or isinstance(dims, bool)
            or not 1 <= dims <= _MAX_EMBEDDING_DIMENSIONS
        ):
            return _openai_error(
                f"Invalid value for 'dimensions' = {dims}. Must be between 1 and "
                f"{_MAX_EMBEDDING_DIMENSIONS}.",
                param="dimensions",
            )
        return None

    def _anthropic_route(self, output: Callable[[Reply], _Output], request_id: str) -> _Route:
        def error_body(status: int) -> Any:
            message = _ANTHROPIC_ERROR_MESSAGES.get(status, _status_phrase(status))
            return {
                "type": "error",
                "error": {"type": _anthropic_error_type(status), "message": message},
                "request_id": request_id,
            }

        headers = _anthropic_headers(request_id)
        return _Route(
            output=output,
            error_body=error_body,
            status_headers=[("request-id", request_id)],
            sse_headers=_sse_headers(headers),
            sse_done=False,
            named_events=True,
        )

    def _openai_route(
        self, output: Callable[[Reply], _Output], request_id: str, named_events: bool
    ) -> _Route:
        return _Route(
            output=output,
            error_body=_openai_status_error,
            status_headers=[("x-request-id", request_id)],
            sse_headers=_sse_headers(_openai_headers(request_id)),
            sse_done=not named_events,
            named_events=named_events,
        )

    def _messages_route(self, payload: dict[str, Any], n: int) -> _Route:
        request_id = f"req_mock{n:012d}"

        def output(reply: Reply) -> _Output:
            tools = [
                (given or f"toolu_mock_{i}", name, args)
                for i, (given, name, args) in enumerate(_flat_tool_calls(reply.tool_calls))
            ]
            text = reply.content
            if text is None and not tools:
                text = "echo: " + _last_user_text(payload.get("messages"))
            usage: dict[str, Any] = {
                "input_tokens": _anthropic_input_tokens(payload),
                "output_tokens": _output_tokens(text, tools),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                **(reply.usage or {}),
            }
            return _MessagesOutput(
                id=f"msg_mock{n:012d}",
                request_id=request_id,
                model=self._model_of(payload, "claude-3-5-sonnet-20241022"),
                text=text,
                tools=tools,
                usage=usage,
                stop_reason=reply.stop_reason or ("tool_use" if tools else "end_turn"),
                extra=dict(reply.extra or {}),
                stream=payload.get("stream") is True,
            )

        return self._anthropic_route(output, request_id)

    def _count_tokens_route(self, payload: dict[str, Any], n: int) -> _Route:
        request_id = f"req_mock{n:012d}"

        def output(reply: Reply) -> _Output:
            count = {"input_tokens": _anthropic_input_tokens(payload), **(reply.usage or {})}
            body = {"input_tokens": count["input_tokens"], **(reply.extra or {})}
            return _JsonOutput(body, _anthropic_headers(request_id))

        return self._anthropic_route(output, request_id)

    def _responses_route(self, payload: dict[str, Any], n: int) -> _Route:
        request_id = f"req_mock{n:012d}"

        def output(reply: Reply) -> _Output:
            tools = [
                (f"fc_mock{n:012d}_{i}", given or f"call_mock_{i}", name, args)
                for i, (given, name, args) in enumerate(_flat_tool_calls(reply.tool_calls))
            ]
            text = reply.content
            if text is None and not tools:
                text = "echo: " + _responses_echo(payload)
            input_tokens = _responses_input_tokens(payload)
            output_tokens = _output_tokens(text, [(None, t[2], t[3]) for t in tools])
            usage: dict[str, Any] = {
                "input_tokens": input_tokens,
                # cache_write_tokens: required by the openai SDK's ResponseUsage model too.
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
                **(reply.usage or {}),
            }
            out = _ResponsesOutput(
                id=f"resp_mock{n:012d}",
                request_id=request_id,
                created_at=int(time.time()),
                model=self._model_of(payload, "gpt-4o-mini"),
                message_id=f"msg_mock{n:012d}",
                text=text,
                tools=tools,
                usage=usage,
                incomplete=reply.stop_reason == "max_tokens",
                extra=dict(reply.extra or {}),
                payload=payload,
                stream=payload.get("stream") is True,
            )
            if payload.get("store", True) is not False:
                with self._cond:
                    self.stored_responses[out.id] = out.response(done=True)
            return out

        return self._openai_route(output, request_id, named_events=True)

    def _embeddings_route(self, payload: dict[str, Any], n: int) -> _Route:
        request_id = f"req_mock{n:012d}"

        def output(reply: Reply) -> _Output:
            inputs = _embedding_inputs(payload.get("input")) or []
            dims = payload.get("dimensions", _DEFAULT_EMBEDDING_DIMENSIONS)
            b64 = payload.get("encoding_format") == "base64"
            data = []
            for index, (text, _) in enumerate(inputs):
                vector = mock_embedding(text, dims)
                embedding: Any = vector
                if b64:
                    packed = struct.pack(f"<{len(vector)}f", *vector)
                    embedding = base64.b64encode(packed).decode("ascii")
                data.append({"object": "embedding", "index": index, "embedding": embedding})
            tokens = sum(count for _, count in inputs)
            model = self._model_of(payload, "text-embedding-3-small")
            body = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, **(reply.usage or {})},
                **(reply.extra or {}),
            }
            return _JsonOutput(body, [*_openai_headers(request_id), ("openai-model", model)])

        return self._openai_route(output, request_id, named_events=False)

    async def _stored_response(self, ex: _Exchange, response_id: str) -> None:
        """``GET`` / ``DELETE /v1/responses/{id}`` (no behaviour is consumed)."""
        if ex.request.method not in ("GET", "DELETE"):
            await self._send_error(ex, 405, f"Method {ex.request.method} not allowed")
            return
        with self._cond:
            if ex.request.method == "GET":
                found = self.stored_responses.get(response_id)
            else:
                found = self.stored_responses.pop(response_id, None)
        headers = _openai_headers(f"req_mock{next(self._req_ids):012d}")
        if found is None:
            message = f"Response with id '{response_id}' not found."
            await ex.send_json(404, _openai_error(message, param="response_id"), headers)
        elif ex.request.method == "GET":
            await ex.send_json(200, found, headers)
        else:
            await ex.send_json(
                200, {"id": response_id, "object": "response", "deleted": True}, headers
            )

    # ---- behaviours ------------------------------------------------------------------------

    async def _run(self, ex: _Exchange, behaviour: Behaviour, route: _Route) -> None:
        b: Behaviour = behaviour
        while isinstance(b, Respond):
            chosen = b.fn(ex.request)
            b = chosen if chosen is not None else Reply()

        if isinstance(b, Reply):
            await self._send_output(ex, route.output(b), self.chunk_delay)
        elif isinstance(b, Status):
            headers = [(str(k), str(v)) for k, v in (b.headers or [])]
            if b.body is None:
                body = _dumps(route.error_body(b.status)).encode()
                ctype = "application/json"
            elif isinstance(b.body, dict):
                body = _dumps(b.body).encode()
                ctype = "application/json"
            else:
                body = bytes(b.body)
                ctype = "text/plain; charset=utf-8"
            if not _headers_have(headers, "content-type"):
                headers.insert(0, ("content-type", ctype))
            for name, value in route.status_headers:
                if not _headers_have(headers, name):
                    headers.append((name, value))
            await ex.send_full(b.status, body, headers)
        elif isinstance(b, SseEvents):
            await ex.start_response(200, route.sse_headers)
            for item in b.payloads:
                event, data = item if isinstance(item, tuple) else (None, item)
                if event is None and isinstance(data, dict) and route.named_events:
                    event = data.get("type") if isinstance(data.get("type"), str) else None
                await ex.send(
                    h11.Data(data=_frame(event, data if isinstance(data, str) else _dumps(data)))
                )
            if b.done if b.done is not None else route.sse_done:
                await ex.send_event("[DONE]")
            await ex.send(h11.EndOfMessage())
        elif isinstance(b, DelayHeaders):
            await asyncio.sleep(b.seconds)
            await self._run(ex, b.then if b.then is not None else Reply(), route)
        elif isinstance(b, Hang):
            # Never answer; notice the client leaving so the handler does not linger.
            while await ex.reader.read(65536):
                pass
            raise _Dropped
        elif isinstance(b, ResetBeforeHeaders):
            await ex.reset()
        elif isinstance(b, ResetMidStream):
            out = route.output(b.reply or Reply())
            if out.stream:
                await ex.start_response(200, out.stream_headers())
                for frame in out.frames()[: max(0, b.after_chunks)]:
                    await ex.send(h11.Data(data=frame))
                    await asyncio.sleep(self.chunk_delay)
            else:
                body = _dumps(out.body()).encode()
                await ex.start_response(
                    200,
                    [("content-type", "application/json"), ("content-length", str(len(body)))],
                )
                await ex.send(h11.Data(data=body[: len(body) // 2]))
            await asyncio.sleep(0.05)  # let the client consume what was sent before the RST
            await ex.reset()
        elif isinstance(b, SlowStream):
            out = route.output(b.reply or Reply())
            if not out.stream:
                await asyncio.sleep(b.delay)
            await self._send_output(ex, out, b.delay)
        else:  # pragma: no cover - defensive
            raise TypeError(f"not a mock behaviour: {b!r}")

    async def _send_output(self, ex: _Exchange, out: _Output, delay: float) -> None:
        if not out.stream:
            await ex.send_json(200, out.body(), out.json_headers())
            return
        await ex.start_response(200, out.stream_headers())
        for i, frame in enumerate(out.frames()):
            if i:
                await asyncio.sleep(delay)
            await ex.send(h11.Data(data=frame))
        await ex.send(h11.EndOfMessage())
