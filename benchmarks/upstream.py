"""A mock OpenAI upstream that is much faster than the gateway it is measured behind.

A raw :class:`asyncio.Protocol` HTTP/1.1 server with precomputed responses:

- ``POST .../chat/completions``: a fixed ``chat.completion`` JSON body with
  ``usage`` and a ``content-length``; when the request body contains
  ``"stream":true`` (a byte check, with or without the space), an SSE stream
  of 12 ``data:`` events (10 content chunks, a finish chunk, a usage chunk)
  and ``data: [DONE]`` in chunked transfer encoding, written in one go.
- ``GET .../models``: a one-model list; ``GET /health``: ``{"message":"OK"}``.
- anything else: 404 JSON.

Connections are kept alive (HTTP/1.1 default) unless the client asks to close.
uvloop is used when it is installed; it is not a dependency.

Usage::

    python benchmarks/upstream.py [--host 127.0.0.1] [--port 0]

It prints ``upstream listening on http://HOST:PORT`` on stdout when ready and
runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import cast

MODEL = "gpt-4o-mini"
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19}
WORDS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?", " 🙂"]
_MAX_HEAD = 64 * 1024


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _response(status: str, content_type: bytes, body: bytes, *, close: bool) -> bytes:
    head = (
        b"HTTP/1.1 " + status.encode() + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"x-request-id: req_bench\r\n"
        + (b"connection: close\r\n" if close else b"")
        + b"\r\n"
    )
    return head + body


def _chat_body() -> bytes:
    return _compact({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": USAGE,
    })


def _stream_events() -> list[bytes]:
    def chunk(delta: dict[str, object], finish: str | None) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}],
        }

    # 12 data events before [DONE]: 10 content chunks (the role rides on the first),
    # the finish chunk and the usage chunk.
    objs = [chunk({"role": "assistant", "content": WORDS[0]}, None)]
    objs += [chunk({"content": word}, None) for word in WORDS[1:]]
    objs.append(chunk({}, "stop"))
    usage_chunk = chunk({}, None)
    usage_chunk["choices"] = []
    usage_chunk["usage"] = USAGE
    objs.append(usage_chunk)
    events = [b"data: " + _compact(obj) + b"\n\n" for obj in objs]
    events.append(b"data: [DONE]\n\n")
    return events


def _stream_response(*, close: bool) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n"
        b"x-request-id: req_bench\r\n"
        + (b"connection: close\r\n" if close else b"")
        + b"\r\n"
    )
    body = b"".join(
        f"{len(event):x}".encode() + b"\r\n" + event + b"\r\n" for event in _stream_events()
    )
    return head + body + b"0\r\n\r\n"


def _precompute() -> dict[tuple[str, bool], bytes]:
    """Every response this server sends, keyed by (kind, connection-close)."""
    models = _compact({"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}
    ]})
    not_found = _compact({"error": {"message": "not found", "type": "invalid_request_error",
                                    "code": "not_found"}})
    bad = _compact({"error": {"message": "bad request", "type": "invalid_request_error",
                              "code": "bad_request"}})
    out: dict[tuple[str, bool], bytes] = {}
    for close in (False, True):
        out["chat", close] = _response("200 OK", b"application/json", _chat_body(), close=close)
        out["stream", close] = _stream_response(close=close)
        out["models", close] = _response("200 OK", b"application/json", models, close=close)
        out["health", close] = _response("200 OK", b"application/json", b'{"message":"OK"}',
                                         close=close)
        out["404", close] = _response("404 Not Found", b"application/json", not_found,
                                      close=close)
    out["400", True] = _response("400 Bad Request", b"application/json", bad, close=True)
    return out


RESPONSES = _precompute()


def _chunked_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Parse a complete chunked body at ``buf[start:]``: (body, end offset) or None if partial.

    Raises:
        ValueError: the chunk framing is malformed.
    """
    parts: list[bytes] = []
    at = start
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(buf[at:eol]).split(b";", 1)[0].strip() or b"x", 16)
        at = eol + 2
        if size == 0:
            # Trailers (usually none) end with an empty line.
            while True:
                eol = buf.find(b"\r\n", at)
                if eol < 0:
                    return None
                if eol == at:
                    return b"".join(parts), eol + 2
                at = eol + 2
        if len(buf) < at + size + 2:
            return None
        parts.append(bytes(buf[at:at + size]))
        at += size + 2


class MockUpstream(asyncio.Protocol):
    """One client connection: parse requests from the buffer, answer with precomputed bytes."""

    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TCPTransport is no asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        transport = self.transport
        assert transport is not None
        while self.buf:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    transport.write(RESPONSES["400", True])
                    transport.close()
                    self.buf.clear()
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            length = 0
            chunked = False
            close = False
            try:
                method, target, _version = lines[0].split(b" ", 2)
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        chunked = b"chunked" in value.lower()
                    elif name == b"connection":
                        close = b"close" in value.lower()
                start = end + 4
                parsed = _chunked_body(buf, start) if chunked else None
            except ValueError:
                transport.write(RESPONSES["400", True])
                transport.close()
                self.buf.clear()
                return
            if chunked:
                if parsed is None:
                    return
                body, stop = parsed
            else:
                stop = start + length
                if len(buf) < stop:
                    return
                body = bytes(buf[start:stop])
            del buf[:stop]
            transport.write(RESPONSES[self._route(method, target, body), close])
            if close:
                transport.close()
                self.buf.clear()
                return

    @staticmethod
    def _route(method: bytes, target: bytes, body: bytes) -> str:
        path = target.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            if b'"stream":true' in body or b'"stream": true' in body:
                return "stream"
            return "chat"
        if method == b"GET" and path.endswith(b"/models"):
            return "models"
        if method == b"GET" and path == b"/health":
            return "health"
        return "404"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockUpstream, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    flavour = type(loop).__module__.split(".")[0]
    print(f"upstream listening on http://{host}:{bound} (loop: {flavour})", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description="fast mock OpenAI upstream for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("upstream.py only listens on loopback")
    loop = _new_loop()
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(serve(args.host, args.port))
    loop.close()


if __name__ == "__main__":
    main()
