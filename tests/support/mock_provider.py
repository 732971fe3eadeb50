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

Routes (only under ``/v1``): ``POST /v1/chat/completions`` (OpenAI format for both kinds),
``GET /v1/models`` (OpenAI list shape, or Anthropic list shape for ``kind="anthropic"``).
Every request is authenticated first (Bearer ``api_key`` for openai; ``x-api-key`` +
``anthropic-version: 2023-06-01`` for anthropic), then routed; unknown paths answer 404 JSON.
Scripted behaviours are consumed one per (authenticated) chat request.

``canonical_headers=True`` (also settable on a running mock) writes response header names the
way Go's net/http does (``Content-Type``, ``Retry-After``, ``X-Request-Id``, ``Set-Cookie``,
``Transfer-Encoding``...) instead of lower case: h11 keeps the case it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
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
from typing import Any, TypeAlias

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
]

ANTHROPIC_VERSION = "2023-06-01"
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
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


@dataclass
class Status:
    """Answer ``status`` with ``body`` (a dict is sent as JSON, bytes as text/plain)."""

    status: int
    body: bytes | dict[str, Any]
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


@dataclass
class SseEvents:
    """Stream these ``data:`` payloads verbatim (dicts JSON-encoded), then ``data: [DONE]``.

    A 200 ``text/event-stream; charset=utf-8`` answer with chunked framing, for tests that need
    a provider's exact wire shape rather than the one :class:`Reply` builds.
    """

    payloads: list[str | dict[str, Any]]


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

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

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
    def chat_requests(self) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.path.split("?", 1)[0] == "/v1/chat/completions"]

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each chat request consumes one (then the default applies)."""
        with self._cond:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._cond:
            return len(self._script)

    def clear(self) -> None:
        """Forget recorded requests/errors and drop any queued behaviours."""
        with self._cond:
            self._script.clear()
            del self.requests[:]
            del self.errors[:]

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
            anthropic_type = {
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
            }.get(status, "invalid_request_error" if status < 500 else "api_error")
            return {"type": "error", "error": {"type": anthropic_type, "message": message}}
        return {"error": {"message": message, "type": type_, "code": code}}

    def _authorized(self, req: RecordedRequest) -> bool:
        if self.kind == "anthropic":
            return (
                req.header("x-api-key") == self.api_key
                and req.header("anthropic-version") == ANTHROPIC_VERSION
            )
        return req.header("authorization") == f"Bearer {self.api_key}"

    async def _dispatch(self, ex: _Exchange) -> None:
        req = ex.request
        if not self._authorized(req):
            if self.kind == "anthropic":
                missing = req.header("anthropic-version") != ANTHROPIC_VERSION
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
        await self._run(ex, self._next_behaviour(), payload)

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
        model = payload.get("model")
        if not isinstance(model, str):
            model = self.models[0] if self.models else "mock-model"
        return _Answer(
            id=f"chatcmpl-mock{next(self._req_ids)}",
            model=model,
            created=int(time.time()),
            content=content,
            tool_calls=tool_calls,
            usage=usage,
            extra={**_DEFAULT_EXTRA, **(reply.extra or {})},
            stream=payload.get("stream") is True,
            include_usage=include_usage,
        )

    async def _run(self, ex: _Exchange, behaviour: Behaviour, payload: dict[str, Any]) -> None:
        b: Behaviour = behaviour
        while isinstance(b, Respond):
            chosen = b.fn(ex.request)
            b = chosen if chosen is not None else Reply()

        if isinstance(b, Reply):
            await self._send_answer(ex, self._answer(b, payload), self.chunk_delay)
        elif isinstance(b, Status):
            headers = [(str(k), str(v)) for k, v in (b.headers or [])]
            if isinstance(b.body, dict):
                body = _dumps(b.body).encode()
                ctype = "application/json"
            else:
                body = bytes(b.body)
                ctype = "text/plain; charset=utf-8"
            if not _headers_have(headers, "content-type"):
                headers.insert(0, ("content-type", ctype))
            await ex.send_full(b.status, body, headers)
        elif isinstance(b, SseEvents):
            await ex.start_response(200, [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("transfer-encoding", "chunked"),
                *_ANSWER_HEADERS,
            ])
            for payload in [*b.payloads, "[DONE]"]:
                await ex.send_event(payload if isinstance(payload, str) else _dumps(payload))
            await ex.send(h11.EndOfMessage())
        elif isinstance(b, DelayHeaders):
            await asyncio.sleep(b.seconds)
            await self._run(ex, b.then if b.then is not None else Reply(), payload)
        elif isinstance(b, Hang):
            # Never answer; notice the client leaving so the handler does not linger.
            while await ex.reader.read(65536):
                pass
            raise _Dropped
        elif isinstance(b, ResetBeforeHeaders):
            await ex.reset()
        elif isinstance(b, ResetMidStream):
            answer = self._answer(b.reply or Reply(), payload)
            if answer.stream:
                await self._start_stream(ex, answer)
                for event in answer.events()[: max(0, b.after_chunks)]:
                    await ex.send_event(event)
                    await asyncio.sleep(self.chunk_delay)
            else:
                body = _dumps(answer.completion()).encode()
                await ex.start_response(
                    200,
                    [("content-type", "application/json"), ("content-length", str(len(body)))],
                )
                await ex.send(h11.Data(data=body[: len(body) // 2]))
            await asyncio.sleep(0.05)  # let the client consume what was sent before the RST
            await ex.reset()
        elif isinstance(b, SlowStream):
            answer = self._answer(b.reply or Reply(), payload)
            if not answer.stream:
                await asyncio.sleep(b.delay)
            await self._send_answer(ex, answer, b.delay)
        else:  # pragma: no cover - defensive
            raise TypeError(f"not a mock behaviour: {b!r}")

    async def _start_stream(self, ex: _Exchange, answer: _Answer) -> None:
        await ex.start_response(
            200,
            [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("cache-control", "no-cache"),
                ("transfer-encoding", "chunked"),
                ("x-request-id", f"req_mock_{answer.id}"),
                *_ANSWER_HEADERS,
            ],
        )

    async def _send_answer(self, ex: _Exchange, answer: _Answer, delay: float) -> None:
        if not answer.stream:
            await ex.send_json(
                200, answer.completion(),
                [("x-request-id", f"req_mock_{answer.id}"), *_ANSWER_HEADERS],
            )
            return
        await self._start_stream(ex, answer)
        for i, event in enumerate(answer.events()):
            if i:
                await asyncio.sleep(delay)
            await ex.send_event(event)
        await ex.send(h11.EndOfMessage())
