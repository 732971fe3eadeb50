"""Building the gateway's own responses: JSON bodies and OpenAI-shaped errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from igw_core.effects import Effect, SendData, SendEnd, SendHead
from igw_core.errors import GatewayError
from igw_core.redact import scrub_bytes

JSON_TYPE: Final = (b"content-type", b"application/json")


def json_bytes(obj: Any) -> bytes:
    """Serialise ``obj`` compactly as UTF-8 JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(message: str, type: str, code: str | int | None) -> bytes:
    """Return an OpenAI-shaped error body: ``{"error": {message, type, code}}``."""
    return json_bytes({"error": {"message": message, "type": type, "code": code}})


def json_response(
    status: int, body: bytes, request_id: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> list[Effect]:
    """Return the effects that send a complete JSON response."""
    headers = [
        JSON_TYPE,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *extra,
    ]
    return [SendHead(status, headers), SendData(body), SendEnd()]


def refusal_body(error: GatewayError) -> bytes:
    """Return the OpenAI-shaped body of the gateway's own refusal ``error``."""
    return error_body(error.message, error.type, error.code)


def error_response(error: GatewayError, request_id: str,
                   body: Callable[[GatewayError], bytes] = refusal_body) -> list[Effect]:
    """Return the effects that answer ``error``, its body shaped by ``body``."""
    extra = tuple((k.lower().encode(), v.encode()) for k, v in error.headers)
    return json_response(error.status, body(error), request_id, extra)


def upstream_error_body(
    status: int, body: bytes, provider: str, secrets: tuple[str, ...] = ()
) -> bytes:
    """Return the client-facing body for a provider's error response.

    An upstream body that already has ``error.message`` is kept byte for byte
    (OpenAI and Anthropic both use that shape); anything else is wrapped so
    OpenAI SDKs still show the provider's own text. Any of ``secrets`` (the
    provider keys) that a provider echoes back is replaced by ``***``.
    """
    return scrub_bytes(_client_error_body(status, body, provider), secrets)


def _client_error_body(status: int, body: bytes, provider: str) -> bytes:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return body
        if isinstance(error, str):
            message = error
        elif isinstance(parsed.get("message"), str):
            message = parsed["message"]
        elif isinstance(parsed.get("detail"), str):
            message = parsed["detail"]
        else:
            message = body.decode("utf-8", "replace")
    else:
        message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    if len(message) > 2000:
        message = message[:2000] + "..."
    return error_body(f"{provider}: {message}", "upstream_error", str(status))


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How an endpoint's clients expect errors: the gateway's own, and a provider's.

    Fields:
        refusal: the body of a refusal by the gateway.
        upstream: ``(status, body, provider, secrets)`` -> the body that passes a
            provider's error on (secrets scrubbed).
    """

    refusal: Callable[[GatewayError], bytes]
    upstream: Callable[[int, bytes, str, tuple[str, ...]], bytes]


#: OpenAI's error shape, which OpenAI SDKs show: ``{"error": {message, type, code}}``.
OPENAI_ERRORS = ErrorShape(refusal_body, upstream_error_body)
