"""Chat-completion requests: from the client's body to the provider's request.

Every decision about a chat request (JSON validity, provider and model,
model policy, vision) is made in :func:`plan_chat`, in that order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from igw_core.errors import BadRequest
from igw_core.gateway import Gateway
from igw_core.routing import Route, route_model
from igw_core.vision import check_vision


@dataclass(frozen=True, slots=True)
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    Raises:
        BadRequest: the body is not valid UTF-8 JSON, or not an object.
    """
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON in request body: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return parsed


def plan_chat(gateway: Gateway, body: bytes, provider_param: str | None) -> ChatPlan:
    """Validate a chat request and build what goes upstream.

    The provider prefix is stripped from ``model``, and streaming requests ask
    for a usage chunk where the provider accepts ``stream_options``. Unknown
    fields are kept as they are.

    Raises:
        BadRequest: malformed JSON, missing or unroutable model, image input
            while vision is off.
        Forbidden: the model policy refuses the model.
    """
    request = parse_json_object(body)
    model = request.get("model")
    if not isinstance(model, str):
        raise BadRequest("'model' is required and must be a string", code="missing_model")
    if not isinstance(request.get("messages"), list):
        raise BadRequest("'messages' is required and must be an array", code="missing_messages")
    route = route_model(gateway.providers, model, provider_param)
    gateway.policy.check(route)
    check_vision(gateway.settings.enable_vision, body, request, route.model)
    stream = request.get("stream") is True
    changed = False
    if route.model != model:
        request["model"] = route.model
        changed = True
    if stream and route.provider.spec.stream_usage:
        options = request.get("stream_options")
        if options is None:
            request["stream_options"] = {"include_usage": True}
            changed = True
        elif isinstance(options, dict) and "include_usage" not in options:
            request["stream_options"] = {**options, "include_usage": True}
            changed = True
    if changed:
        body = _encode(request)
    return ChatPlan(route, stream, request, body)


def _encode(request: dict[str, Any]) -> bytes:
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
