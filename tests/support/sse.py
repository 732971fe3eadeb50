"""A tiny, strict Server-Sent Events parser for test assertions."""

from __future__ import annotations

import re

__all__ = ["parse_sse"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_KNOWN_FIELDS = frozenset({"data", "event", "id", "retry"})


def parse_sse(data: bytes) -> list[str]:
    """Return the ``data:`` payloads of the events in ``data`` (one string per event).

    Strict: the input must be UTF-8, every event must be terminated by a blank line (a
    truncated trailing event raises ValueError), and only the standard fields (``data``,
    ``event``, ``id``, ``retry``) and ``:`` comments are accepted. Multi-line data is joined
    with ``\\n`` as the SSE spec says; events without any data line are skipped.
    """
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        return []
    lines = _LINE_BREAK.split(text)
    if lines[-1] != "":
        raise ValueError(f"SSE stream ends mid-line: {lines[-1]!r}")
    lines.pop()  # the empty string after the final line break
    payloads: list[str] = []
    current: list[str] = []
    pending = False  # an event has started and not yet been terminated by a blank line
    for line in lines:
        if line == "":
            if current:
                payloads.append("\n".join(current))
            current = []
            pending = False
            continue
        pending = True
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"SSE line without a colon: {line!r}")
        if name not in _KNOWN_FIELDS:
            raise ValueError(f"unknown SSE field {name!r} in line {line!r}")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            current.append(value)
    if pending:
        raise ValueError("SSE stream ends without the blank line terminating its last event")
    return payloads
