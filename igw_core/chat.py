"""Chat-completion requests: from the client's body to the provider's request.

Every decision about a chat request (JSON validity, provider and model,
model policy, vision) is made in :func:`plan_chat`, in that order.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from mypy_extensions import mypyc_attr

from igw_core.errors import BadRequest
from igw_core.gateway import Gateway
from igw_core.routing import Route, route_model
from igw_core.vision import check_vision


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class ChatPlan:
    """A validated chat request, ready to send.

    Fields:
        route: provider and upstream model name.
        stream: whether the client asked for an event stream.
        request: the parsed request as it will be sent upstream.
        body: the upstream request body (the client's bytes when nothing changed).
    """

    route: Route
    stream: bool
    request: dict[str, Any]
    body: bytes

    def __init__(self, route: Route, stream: bool, request: dict[str, Any], body: bytes) -> None:
        self.route = route
        self.stream = stream
        self.request = request
        self.body = body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: The C scanner behind ``json.loads``, called directly: JSONDecoder.decode around it is two
#: Python frames and two regex matches per request.
#: (typeshed wants another scanner as the context; json.decoder passes a decoder, as here.)
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    json.JSONDecoder(parse_constant=_refuse_constant))  # type: ignore[arg-type]
#: The string scanner json.decoder parses object keys with (C where there is C; typeshed
#: does not list it).
_SCAN_STRING: Final[Callable[[str, int], tuple[str, int]]] = (
    json.decoder.scanstring)  # type: ignore[attr-defined]
#: The characters that delimit an object's members, as code points (compiled,
#: ``ord(text[at])`` reads the character in place; ``text[at]`` makes a string of it).
_OPEN: Final = ord("{")
_CLOSE: Final = ord("}")
_QUOTE: Final = ord('"')
_COLON: Final = ord(":")
_COMMA: Final = ord(",")


#: Where a request's top-level ``model`` value lies in its body: byte offsets of the JSON
#: string token, quotes included.
Span = tuple[int, int]


def parse_request(body: bytes) -> tuple[dict[str, Any], Span | None]:
    """Parse a request body that must be a JSON object, and find its ``model`` value.

    The span is ``None`` when the object has no ``model`` member, names it more than
    once, or is not UTF-8 (with or without a byte-order mark). With it, renaming the
    model is a splice of the client's bytes, whatever the size of the conversation
    around it (see :func:`with_model`).

    Raises:
        BadRequest: the body is not valid UTF-8 JSON, or not an object.
    """
    try:
        # What json.loads does, with one decoder made once instead of per call; a body
        # that opens with "{" and no NUL after it is UTF-8 (json.detect_encoding's rule).
        encoding = ("utf-8" if body[:1] == b"{" and body[1:2] != b"\x00"
                    else json.detect_encoding(body))
        text = body.decode(encoding, "surrogatepass")
        mark = 3 if encoding == "utf-8-sig" else 0  # the BOM decoding dropped
        if encoding == "utf-8" or mark:
            parsed, start, end = _decode_members(text)
        else:
            parsed, start, end = _decode(text), -1, -1
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON in request body: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return parsed, (None if start < 0 else _byte_span(body, mark, text, start, end))


def _byte_span(body: bytes, mark: int, text: str, start: int, end: int) -> Span:
    """Return the byte offsets in ``body`` of ``text[start:end]`` (``text`` is ``body``
    decoded from UTF-8 after its first ``mark`` bytes), encoding the shorter of the two
    sides around it."""
    if len(body) - mark == len(text):  # ASCII: a byte per character
        return mark + start, mark + end
    size = len(text[start:end].encode("utf-8", "surrogatepass"))
    if start <= len(text) - end:
        first = mark + len(text[:start].encode("utf-8", "surrogatepass"))
        return first, first + size
    last = len(body) - len(text[end:].encode("utf-8", "surrogatepass"))
    return last - size, last


class _Irregular(Exception):
    """Not a plain JSON object: parsed whole instead, for its value or its exact error."""


def _decode_members(text: str) -> tuple[Any, int, int]:
    """``_decode(text)``, and for an object the span in ``text`` of its top-level
    ``model`` value (``-1, -1`` when there is not exactly one).

    An object is parsed member by member with the C scanner (the same work as parsing
    it whole); anything else, or anything unexpected, is handed to :func:`_decode`.

    Raises:
        json.JSONDecodeError: ``text`` is not one JSON value (whitespace around it aside).
    """
    size = len(text)
    at = _skip_text_space(text, 0)
    if at == size or ord(text[at]) != _OPEN:
        return _decode(text), -1, -1
    members: dict[str, Any] = {}
    start = end = -1
    models = 0
    # Characters are compared by index: compiled, str.startswith with a position is a
    # method call that costs more than the rest of a member's handling. Typed results:
    # a scanner's tuple is unpacked in place, not through an iterator.
    try:
        at = _skip_text_space(text, at + 1)
        if at < size and ord(text[at]) != _CLOSE:
            while True:
                if at == size or ord(text[at]) != _QUOTE:
                    raise _Irregular
                key, at = _scan_key(text, at + 1)
                at = _skip_text_space(text, at)
                if at == size or ord(text[at]) != _COLON:
                    raise _Irregular
                at = _skip_text_space(text, at + 1)
                value, after = _SCAN(text, at)
                if key == "model":
                    start, end = at, after
                    models += 1
                members[key] = value
                at = _skip_text_space(text, after)
                if at == size or ord(text[at]) != _COMMA:
                    break
                at = _skip_text_space(text, at + 1)
        if at == size or ord(text[at]) != _CLOSE or _skip_text_space(text, at + 1) != size:
            raise _Irregular
    except (_Irregular, ValueError, StopIteration, RecursionError):
        return _decode(text), -1, -1
    if models != 1:
        return members, -1, -1
    return members, start, end


def _scan_key(text: str, at: int) -> tuple[str, int]:
    """Return the string whose opening quote is before ``at``, and the index after it.

    A key without escapes (most are) is a slice; others go to the C scanner.

    Raises:
        json.JSONDecodeError: the string is unterminated or holds a control character.
    """
    size = len(text)
    end = at
    while end < size:
        char = ord(text[end])
        if char == _QUOTE:
            return text[at:end], end + 1
        if char == 0x5C or char < 0x20:  # an escape, or a control character to refuse
            break
        end += 1
    return _SCAN_STRING(text, at)


def _decode(text: str) -> Any:
    """``json.loads(text)``: the same values, and the same errors with the same messages.

    Raises:
        json.JSONDecodeError: ``text`` is not one JSON value (whitespace around it aside).
    """
    start = _skip_text_space(text, 0)
    try:
        value, end = _SCAN(text, start)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    end = _skip_text_space(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip_text_space(text: str, at: int) -> int:
    """Return the index of the first character at or after ``at`` that is not JSON
    whitespace."""
    end = len(text)
    while at < end and ord(text[at]) in (0x20, 0x09, 0x0A, 0x0D):
        at += 1
    return at


def route_request(
    gateway: Gateway, request: dict[str, Any], provider_param: str | None,
    default_provider: str | None = None,
) -> Route:
    """Route a parsed request by its ``model`` and apply the model policy.

    ``default_provider`` serves a model that names no provider when ``?provider=`` is
    absent too.

    Raises:
        BadRequest: ``model`` missing, not a string, or unroutable.
        Forbidden: the model policy refuses the model.
    """
    model = request.get("model")
    if not isinstance(model, str):
        raise BadRequest("'model' is required and must be a string", code="missing_model")
    if default_provider and not provider_param and "/" not in model:
        provider_param = default_provider
    route = route_model(gateway.providers, model, provider_param)
    gateway.policy.check(route)
    return route


def with_model(body: bytes, request: dict[str, Any], model: str,
               model_at: Span | None) -> bytes:
    """Return ``body`` (whose parse is ``request``) with its ``model`` set to ``model``.

    The client's bytes are edited in place where :func:`parse_request` found the
    model's value (``model_at``); without it ``request`` is re-encoded (and its
    ``model`` set).

    Raises:
        BadRequest: re-encoding meets a number JSON cannot carry.
    """
    old = request.get("model")
    if old == model:
        return body
    request["model"] = model
    edited = (_edit_in_place(body, old, model, add_usage=False, model_at=model_at)
              if isinstance(old, str) else None)
    return edited if edited is not None else encode_request(request)


def plan_chat(gateway: Gateway, body: bytes, provider_param: str | None, *,
              request: dict[str, Any] | None = None, model_at: Span | None = None,
              route: Route | None = None) -> ChatPlan:
    """Validate a chat request and build what goes upstream.

    The provider prefix is stripped from ``model``, and streaming requests ask
    for a usage chunk where the provider accepts ``stream_options``. Unknown
    fields are kept as they are. ``request`` is ``body`` already parsed (it is
    changed), ``model_at`` what :func:`parse_request` said of it; ``route`` is a
    deployment already chosen (a routing alias's, whose policy was checked on the
    alias).

    Raises:
        BadRequest: malformed JSON, missing or unroutable model, image input
            while vision is off.
        Forbidden: the model policy refuses the model.
    """
    if request is None:
        request, model_at = parse_request(body)
    model = request.get("model")
    if not isinstance(model, str):
        raise BadRequest("'model' is required and must be a string", code="missing_model")
    if not isinstance(request.get("messages"), list):
        raise BadRequest("'messages' is required and must be an array", code="missing_messages")
    if route is None:
        route = route_request(gateway, request, provider_param)
    check_vision(gateway.settings.enable_vision, request, route.model)
    stream = request.get("stream") is True
    add_usage = reencode = False
    if stream and route.provider.spec.stream_usage:
        options = request.get("stream_options")
        if "stream_options" not in request:
            add_usage = True
        elif options is None or (isinstance(options, dict) and "include_usage" not in options):
            reencode = True  # a second stream_options key would be ambiguous
        if add_usage or reencode:
            request["stream_options"] = {**(options or {}), "include_usage": True}
    renamed = route.model != model
    request["model"] = route.model
    if reencode:
        body = encode_request(request)
    elif renamed or add_usage:
        edited = _edit_in_place(body, model, route.model, add_usage=add_usage,
                                model_at=model_at)
        body = edited if edited is not None else encode_request(request)
    return ChatPlan(route, stream, request, body)


def _skip_space(body: bytes, at: int) -> int:
    """Return the index of the first byte at or after ``at`` that is not JSON whitespace.

    JSON's whitespace (RFC 8259 §2) may sit around a member's colon.
    """
    # A loop, not a regex: there is rarely any space to skip, and a match costs a
    # thousand instructions of setup.
    end = len(body)
    while at < end and body[at] in (0x20, 0x09, 0x0A, 0x0D):
        at += 1
    return at


_USAGE_MEMBER: Final = b'"stream_options":{"include_usage":true},'
#: Bodies over this size are spliced from views of the client's bytes, not copies of them
#: (compiled, two views cost about 2,500 instructions more than two small slices).
_VIEWED: Final = 8 * 1024


def _edit_in_place(body: bytes, model: str, new_model: str, *, add_usage: bool,
                   model_at: Span | None) -> bytes | None:
    """Return the client's bytes with ``model`` renamed and a usage request added.

    Re-encoding a large conversation costs more than the rest of the request's
    handling, so the two edits are made in the bytes: the model where
    :func:`parse_request` found its value (``model_at``). Returns ``None`` when it
    found none and the model changes (re-encode instead).
    """
    if new_model != model:
        if model_at is None:
            return None
        start, end = model_at
        spelled = encode_basestring_ascii(new_model).encode()
        if len(body) > _VIEWED:  # the pieces around the model as views: one copy, the join's
            view = memoryview(body)
            body = b"".join((view[:start], spelled, view[end:]))
        else:
            body = b"".join((body[:start], spelled, body[end:]))
    if add_usage:
        start = _skip_space(body, 0)
        if body[start:start + 1] != b"{":
            return None
        body = b"".join((body[:start + 1], _USAGE_MEMBER, body[start + 1:]))
    return body


def encode_request(request: dict[str, Any]) -> bytes:
    """Serialise a rewritten request as standard JSON.

    Raises:
        BadRequest: a number overflows to infinity (``1e400``), which JSON cannot carry.
    """
    try:
        text = json.dumps(request, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise BadRequest("request body has a number out of range", code="invalid_json") from None
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate escape: keep it escaped
        return json.dumps(request, separators=(",", ":"), allow_nan=False).encode()
