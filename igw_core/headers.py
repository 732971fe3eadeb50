"""Header rules: what never crosses the gateway, and small lookups.

Hop-by-hop and framing headers are per-connection; they are dropped in both
directions and each side frames its own messages.
"""

from __future__ import annotations

from typing import Final

from igw_core.events import Headers

#: Dropped from every relayed request and response (RFC 9110 §7.6.1 plus framing).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
        b"http2-settings",
    }
)

#: ``HOP_BY_HOP`` with each ``drop`` set :func:`relayed` was given (module constants all).
_SKIPPED: Final[dict[frozenset[bytes], frozenset[bytes]]] = {}

#: Client credentials that are never forwarded to a provider.
CLIENT_CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"api-key", b"cookie"})


def get(headers: Headers, name: bytes) -> bytes | None:
    """Return the first value of header ``name`` (lower-case), or ``None``."""
    for key, value in headers:
        if key == name:
            return value
    return None


def decimal(value: bytes) -> int | None:
    """Return the number a header value of ASCII digits spells (``Content-Length``), or
    ``None`` when it is empty or holds anything else.

    ``int(value)`` after ``value.isdigit()``, without their calls: compiled, a method
    found by name and the interpreter's number parser (about 1,100 instructions).
    """
    if not value:
        return None
    number = 0
    for index in range(len(value)):
        digit = value[index] - 0x30
        if digit < 0 or digit > 9:
            return None
        number = number * 10 + digit
    return number


def backoff_headers(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """Return the headers of a provider's error that clients need to back off with.

    ``Retry-After`` and the ``x-ratelimit-*`` family are what OpenAI SDKs read.
    """
    return tuple(
        (k, v) for k, v in headers if k == b"retry-after" or k.startswith(b"x-ratelimit-")
    )


def end_to_end(
    headers: Headers, *, drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """Return ``headers`` without hop-by-hop, framing, ``Connection``-named or ``drop`` ones."""
    return relayed(headers, drop=drop)[0]


def relayed(
    headers: Headers, *, drop: frozenset[bytes] = frozenset()
) -> tuple[list[tuple[bytes, bytes]], bytes | None, bytes | None]:
    """Return :func:`end_to_end` of ``headers`` with the first ``Content-Type`` and
    ``Content-Length`` values, in one pass (a provider answers with twenty headers or so,
    on every request)."""
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    content_type = length = None
    # One set lookup a header instead of two (a provider sends twenty or so).
    skipped = _SKIPPED.get(drop)
    if skipped is None:
        skipped = _SKIPPED[drop] = HOP_BY_HOP | drop
    # Compiled, a list's items are read in place; another sequence's through an iterator.
    items: list[tuple[bytes, bytes]] = headers if isinstance(headers, list) else list(headers)
    for key, value in items:
        if key in skipped:
            if key == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - HOP_BY_HOP
                if tokens:
                    listed = tokens if listed is None else listed | tokens
            elif key == b"content-length" and length is None:
                length = value
            continue
        if key == b"content-type" and content_type is None:
            content_type = value
        out.append((key, value))
    if listed:
        out = [(k, v) for k, v in out if k not in listed]
    return out, content_type, length
