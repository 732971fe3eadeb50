"""Shortening what the development log shows, and keeping secrets out of it."""

from __future__ import annotations

import json
from typing import Any


def _cut_words(text: str, words: int) -> str:
    parts = text.split()
    if len(parts) <= words:
        return text
    return " ".join(parts[:words]) + f" ...[{len(parts) - words} more words]"


def _cut_content(content: Any, words: int) -> Any:
    if isinstance(content, str):
        return _cut_words(content, words)
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                part = dict(part)
                if isinstance(part.get("text"), str):
                    part["text"] = _cut_words(part["text"], words)
                image = part.get("image_url")
                if isinstance(image, dict) and isinstance(image.get("url"), str):
                    url = image["url"]
                    if len(url) > 64:
                        part["image_url"] = {**image, "url": url[:64] + "...[truncated]"}
            out.append(part)
        return out
    return content


def truncate_chat_request(request: Any, *, words: int, max_messages: int) -> Any:
    """Return a copy of a chat request for logging: every content cut to ``words``
    words and at most ``max_messages`` messages (the last ones, which matter most)."""
    if not isinstance(request, dict):
        return request
    out = dict(request)
    messages = request.get("messages")
    if isinstance(messages, list):
        kept = messages[-max_messages:] if max_messages > 0 else []
        cut = []
        for message in kept:
            if isinstance(message, dict):
                message = {**message, "content": _cut_content(message.get("content"), words)}
            cut.append(message)
        out["messages"] = cut
        if len(messages) > len(kept):
            out["_igw_omitted_messages"] = len(messages) - len(kept)
    return out


def truncate_body_text(body: bytes, *, words: int) -> str:
    """Return a response body for logging, string values cut to ``words`` words.

    JSON bodies keep their shape; anything else is cut as plain text.
    """

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _cut_words(value, words)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    try:
        return json.dumps(walk(json.loads(body)), ensure_ascii=False)
    except (ValueError, RecursionError):
        # Not JSON, or nested too deeply to walk: shown as plain text.
        return _cut_words(body.decode("utf-8", "replace"), max(words, 1) * 20)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Return ``text`` with every non-empty secret in ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def scrub_bytes(data: bytes, secrets: tuple[str, ...]) -> bytes:
    """Return ``data`` with every non-empty secret replaced by ``***``.

    A provider that echoes the key in an error message must not hand it to clients.
    """
    for secret in secrets:
        if secret:
            raw = secret.encode()
            if raw in data:
                data = data.replace(raw, b"***")
    return data
