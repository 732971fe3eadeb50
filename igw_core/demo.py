"""The built-in ``demo`` provider: OpenAI wire format, no network, no key.

It answers with the last user message, streaming or not, so ``igw --demo``
shows a working gateway before any provider is configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from igw_core.responses import json_bytes
from igw_core.sse import DONE, encode_data

DEMO_MODELS = ("echo", "echo-stream")
_CREATED = 1_700_000_000


@dataclass(frozen=True, slots=True)
class DemoResponse:
    """A complete demo answer: status, headers and body pieces."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    chunks: tuple[bytes, ...]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _reply_text(request: dict[str, Any]) -> str:
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""


def _json(status: int, obj: Any) -> DemoResponse:
    return DemoResponse(status, ((b"content-type", b"application/json"),), (json_bytes(obj),))


def _words(text: str) -> int:
    return max(1, len(text.split()))


def demo_response(method: str, path: str, body: bytes) -> DemoResponse:
    """Answer a request to the demo provider (``path`` relative to its base URL)."""
    path = path.split("?", 1)[0]
    if path.endswith("/models") and method == "GET":
        data = [
            {"id": m, "object": "model", "created": _CREATED, "owned_by": "igw-demo"}
            for m in DEMO_MODELS
        ]
        return _json(200, {"object": "list", "data": data})
    if not path.endswith("/chat/completions") or method != "POST":
        return _json(404, {"error": {"message": f"demo: no route {method} {path}",
                                     "type": "invalid_request_error", "code": "not_found"}})
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return _json(400, {"error": {"message": "demo: body is not a JSON object",
                                     "type": "invalid_request_error", "code": "bad_request"}})
    text = _reply_text(request)
    model = str(request.get("model", "echo"))
    prompt = sum(_words(_text_of(m.get("content"))) for m in request.get("messages", [])
                 if isinstance(m, dict))
    usage = {"prompt_tokens": prompt, "completion_tokens": _words(text),
             "total_tokens": prompt + _words(text)}
    if not request.get("stream"):
        return _json(200, {
            "id": "chatcmpl-demo", "object": "chat.completion", "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": usage,
        })
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return encode_data(json_bytes({
            "id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": _CREATED,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    pieces = [chunk({"role": "assistant", "content": ""}, None)]
    words = text.split(" ")
    pieces += [chunk({"content": w if i == 0 else " " + w}, None) for i, w in enumerate(words)]
    pieces.append(chunk({}, "stop"))
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        pieces.append(encode_data(json_bytes({
            "id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": _CREATED,
            "model": model, "choices": [], "usage": usage,
        })))
    pieces.append(DONE)
    headers = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
    return DemoResponse(200, headers, tuple(pieces))
