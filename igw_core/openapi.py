"""The OpenAPI 3.1 description of igw's own HTTP surface.

:data:`DOCUMENT` is the document as Python data, and :func:`document_bytes` its compact
JSON, which ``GET /openapi.json`` answers. ``docs/openapi.yaml`` is generated from it by
``scripts/openapi_doc.py`` (``--check`` tells whether the file is stale).

What the document promises, and how it stays honest:

- Request schemas are permissive: they name the fields igw reads (``model``,
  ``messages``, ``stream``, ...) and allow every other field, so a request valid for the
  provider's own API is never "wrong" here.
- Response schemas describe what igw itself answers (probes, model lists, refusals,
  the Anthropic translation) exactly, and what it relays from a provider (chat
  completions, embeddings, Responses objects) by the fields every provider sends.
- Errors: the gateway's own refusals are OpenAI-shaped (:data:`ERROR_SCHEMA`), on
  ``/v1/messages*`` Anthropic-shaped; a provider's error keeps its status and comes
  back as ``default`` (or under the same status as a refusal, hence ``anyOf``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from igw_core.providers import PROVIDER_IDS
from igw_core.responses import json_bytes

__all__ = ["DOCUMENT", "ERROR_SCHEMA", "document_bytes"]

Schema = dict[str, Any]

_OPENAI = "openai"
_ANTHROPIC = "anthropic"
_JSON = "application/json"
_SSE = "text/event-stream"
_ANY_MEDIA = "*/*"


def _schema(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameter(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), *,
            description: str = "", closed: bool = False) -> Schema:
    """A JSON object schema; open (``additionalProperties: true``) unless ``closed``."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = list(required)
    schema["properties"] = properties
    schema["additionalProperties"] = not closed
    return schema


_STRING: Schema = {"type": "string"}
_INTEGER: Schema = {"type": "integer"}
_NUMBER: Schema = {"type": "number"}
_BOOLEAN: Schema = {"type": "boolean"}
_ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
_ANYTHING: Schema = {}


# -- schemas -------------------------------------------------------------------------------

#: The gateway's own refusal, OpenAI's shape (``igw_core.responses.error_body``).
ERROR_SCHEMA: Schema = _object(
    {
        "error": _object(
            {
                "message": {"type": "string", "description": "Human-readable; never holds a "
                            "secret."},
                "type": {"type": "string", "examples": ["invalid_request_error",
                                                       "authentication_error",
                                                       "permission_error", "upstream_error",
                                                       "server_error"]},
                "code": {"type": ["string", "integer", "null"],
                         "examples": ["bad_request", "missing_model", "unknown_provider",
                                      "invalid_token", "forbidden", "not_found",
                                      "request_too_large", "upstream_timeout"]},
            },
            ("message", "type", "code"), closed=True,
        ),
    },
    ("error",), closed=True,
    description="An error the gateway answers itself (OpenAI's error shape, which OpenAI "
                "SDKs show).",
)

_PROVIDER_ERROR: Schema = _object(
    {"error": _object({"message": _STRING}, ("message",))},
    ("error",),
    description="A provider's error relayed on an OpenAI-shaped endpoint: the provider's body "
                "byte for byte when it already has `error.message` (OpenAI's and Anthropic's "
                "shapes), otherwise wrapped as `{\"error\": {\"message\": \"<provider>: <their "
                "text>\", \"type\": \"upstream_error\", \"code\": \"<status>\"}}`.",
)

_ANTHROPIC_ERROR: Schema = _object(
    {
        "type": {"const": "error"},
        "error": _object(
            {"type": {"type": "string",
                      "examples": ["invalid_request_error", "authentication_error",
                                   "permission_error", "not_found_error", "rate_limit_error",
                                   "api_error", "overloaded_error", "timeout_error"]},
             "message": _STRING},
            ("type", "message"),
        ),
    },
    ("type", "error"),
    description="An error on `/v1/messages*`, Anthropic's shape (which Anthropic SDKs show): "
                "the gateway's own refusals, and every provider's error (Anthropic's relayed "
                "as it came, any other provider's translated).",
)

_MODEL: Schema = _object(
    {
        "id": {"type": "string", "description": "`provider/model`, or a routing alias.",
               "examples": ["openai/gpt-4o-mini", "fast-chat"]},
        "object": {"const": "model"},
        "created": {"type": "integer", "description": "The provider's, else 0."},
        "owned_by": {"type": "string", "description": "The provider's, else the provider id "
                     "(`igw` for an alias)."},
        "served_by": {"type": "string", "description": "The provider id (`igw` for an "
                      "alias)."},
        "display_name": {"type": "string", "description": "When the provider names one "
                         "(Anthropic)."},
    },
    ("id", "object", "created", "owned_by", "served_by"), closed=True,
    description="One model, as the gateway lists it.",
)

_MODEL_LIST: Schema = _object(
    {"object": {"const": "list"}, "data": {"type": "array", "items": _schema("Model")}},
    ("object", "data"), closed=True,
    description="The merged model lists of the providers asked, and the routing aliases, "
                "filtered by the model policy (`ALLOWED_MODELS` / `DISALLOWED_MODELS`).",
)

#: The ``model`` of a request routed by it.
_ROUTED_MODEL: Schema = {
    "type": "string",
    "description": "`provider/model` (the prefix picks the provider and is stripped), a "
                   "routing alias (`ROUTING_ENABLED=true`, docs/routing.md), or with "
                   "`?provider=` the provider's own name.",
    "examples": ["openai/gpt-4o-mini"],
}

_CHAT_MESSAGE: Schema = _object(
    {
        "role": {"type": "string", "examples": ["system", "user", "assistant", "tool"]},
        "content": {"description": "A string, an array of content parts, or null.",
                    "type": ["string", "array", "null"],
                    "items": _ANY_OBJECT},
    },
    ("role",),
)

_CHAT_REQUEST: Schema = _object(
    {
        "model": _ROUTED_MODEL,
        "messages": {"type": "array", "items": _schema("ChatMessage")},
        "stream": {"type": "boolean", "description": "Answer as server-sent events."},
        "stream_options": _object({"include_usage": _BOOLEAN},
                                  description="igw sets `include_usage: true` for the "
                                  "providers that accept it."),
        "tools": {"type": "array", "items": _ANY_OBJECT,
                  "description": "The client's tools; MCP tools are added after them."},
        "tool_choice": {"type": ["string", "object"]},
        "temperature": _NUMBER,
        "max_tokens": _INTEGER,
    },
    ("model", "messages"),
    description="OpenAI's chat completion request; every other field is forwarded as sent.",
)

_CHAT_COMPLETION: Schema = _object(
    {
        "id": _STRING,
        "object": {"type": "string", "examples": ["chat.completion"]},
        "created": _INTEGER,
        "model": _STRING,
        "choices": {"type": "array", "items": _object({
            "index": _INTEGER,
            "message": _object({"role": _STRING,
                                "content": {"type": ["string", "array", "null"]},
                                "tool_calls": {"type": "array", "items": _ANY_OBJECT}}),
            "finish_reason": {"type": ["string", "null"]},
        })},
        "usage": _object({"prompt_tokens": _INTEGER, "completion_tokens": _INTEGER,
                          "total_tokens": _INTEGER}),
    },
    ("choices",),
    description="The provider's chat completion, relayed byte for byte (or, when MCP tools "
                "ran, the final round's).",
)

_CHAT_CHUNK: Schema = _object(
    {
        "id": _STRING,
        "object": {"type": "string", "examples": ["chat.completion.chunk"]},
        "created": _INTEGER,
        "model": _STRING,
        "choices": {"type": "array", "items": _object({
            "index": _INTEGER,
            "delta": _ANY_OBJECT,
            "finish_reason": {"type": ["string", "null"]},
        })},
        "usage": {"type": ["object", "null"]},
    },
    ("choices",),
    description="One streamed chunk; the last one carries `usage` and `choices: []` where the "
                "provider accepts `stream_options`.",
)


def _sse_event(description: str, payload: Schema, *, done: bool = False,
               events: tuple[str, ...] = ()) -> Schema:
    """One server-sent event as read off the stream: ``event`` and its JSON ``data``."""
    data: Schema = {"type": "string",
                    "contentMediaType": _JSON, "contentSchema": payload}
    if done:
        data = {"type": "string", "anyOf": [
            {"const": "[DONE]", "description": "The end of the stream."},
            {"contentMediaType": _JSON, "contentSchema": payload},
        ]}
    event: Schema = {"type": "string"}
    if events:
        event["examples"] = list(events)
    return _object({"event": event, "data": data, "id": _STRING,
                    "retry": {"type": "integer", "minimum": 0}}, ("data",),
                   description=description)


_CHAT_EVENT = _sse_event(
    "One event of a streamed chat completion (the schema of each event, as OpenAPI 3.2's "
    "`itemSchema`): `data` is a chunk, or a provider's error object, and `[DONE]` ends the "
    "stream.",
    {"anyOf": [_schema("ChatCompletionChunk"), _schema("ProviderError")]}, done=True,
)

_EMBEDDING_REQUEST: Schema = _object(
    {
        "model": {**_ROUTED_MODEL, "examples": ["openai/text-embedding-3-small"]},
        "input": {"description": "A string, an array of strings, or tokens.",
                  "type": ["string", "array"]},
        "encoding_format": {"type": "string", "examples": ["float", "base64"]},
    },
    ("model", "input"),
    description="OpenAI's embeddings request; forwarded unchanged but for the model prefix.",
)

_EMBEDDING_LIST: Schema = _object(
    {
        "object": {"type": "string", "examples": ["list"]},
        "data": {"type": "array", "items": _object({
            "object": {"type": "string", "examples": ["embedding"]},
            "index": _INTEGER,
            "embedding": {"type": ["array", "string"], "items": _NUMBER,
                          "description": "Floats, or base64 with `encoding_format: base64`."},
        })},
        "model": _STRING,
        "usage": _object({"prompt_tokens": _INTEGER, "total_tokens": _INTEGER}),
    },
    ("data",),
    description="The provider's answer, relayed byte for byte.",
)

_RESPONSE_REQUEST: Schema = _object(
    {
        "model": _ROUTED_MODEL,
        "input": {"type": ["string", "array"], "items": _ANY_OBJECT},
        "instructions": {"type": ["string", "null"]},
        "stream": _BOOLEAN,
        "previous_response_id": {"type": ["string", "null"]},
    },
    ("model",),
    description="OpenAI's Responses API request; forwarded unchanged but for the model "
                "prefix.",
)

_RESPONSE: Schema = _object(
    {
        "id": _STRING,
        "object": {"type": "string", "examples": ["response"]},
        "status": _STRING,
        "model": _STRING,
        "output": {"type": "array", "items": _ANY_OBJECT},
        "usage": {"type": ["object", "null"]},
    },
    ("id",),
    description="The provider's Response object, relayed byte for byte.",
)

_RESPONSE_EVENT = _sse_event(
    "One event of a streamed Response: `event` names its type (`response.created`, "
    "`response.output_text.delta`, ..., `response.completed`), `data` is its JSON.",
    _object({"type": _STRING}, ("type",)),
    events=("response.created", "response.output_text.delta", "response.completed"),
)

_RESPONSE_DELETED: Schema = _object(
    {"id": _STRING, "object": {"type": "string", "examples": ["response.deleted"]},
     "deleted": _BOOLEAN},
    ("id", "deleted"),
    description="The provider's answer to a deletion.",
)

_RESPONSE_ITEMS: Schema = _object(
    {"object": {"type": "string", "examples": ["list"]},
     "data": {"type": "array", "items": _ANY_OBJECT},
     "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]},
     "has_more": _BOOLEAN},
    ("data",),
    description="The provider's list of a Response's input items.",
)

_ANTHROPIC_MESSAGE_PARAM: Schema = _object(
    {
        "role": {"enum": ["user", "assistant"]},
        "content": {"type": ["string", "array"], "items": _ANY_OBJECT},
    },
    ("role", "content"),
)

_MESSAGE_REQUEST: Schema = _object(
    {
        "model": {"type": "string", "description": "`provider/model`, a bare name "
                  "(Anthropic's, e.g. `claude-sonnet-4-5`), or a routing alias (its first "
                  "choice, without retries).",
                  "examples": ["claude-sonnet-4-5", "openai/gpt-4o"]},
        "messages": {"type": "array", "items": _schema("AnthropicMessageParam")},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"type": ["string", "array"], "items": _ANY_OBJECT},
        "stream": _BOOLEAN,
        "stop_sequences": {"type": "array", "items": _STRING},
        "temperature": _NUMBER,
        "top_p": _NUMBER,
        "top_k": _INTEGER,
        "metadata": _object({"user_id": {"type": ["string", "null"]}}),
        "tools": {"type": "array", "items": _ANY_OBJECT},
        "tool_choice": _ANY_OBJECT,
    },
    ("model", "messages", "max_tokens"),
    description="Anthropic's Messages request: relayed byte for byte to Anthropic, translated "
                "to a chat completion for any other provider (see docs/api.md for what is "
                "translated, dropped or refused).",
)

_COUNT_REQUEST: Schema = _object(
    {
        "model": {"type": "string", "examples": ["claude-sonnet-4-5"]},
        "messages": {"type": "array", "items": _schema("AnthropicMessageParam")},
        "system": {"type": ["string", "array"], "items": _ANY_OBJECT},
        "tools": {"type": "array", "items": _ANY_OBJECT},
    },
    ("model", "messages"),
    description="Anthropic's token counting request (Anthropic only).",
)

_MESSAGE: Schema = _object(
    {
        "id": _STRING,
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": {"type": "string", "description": "The model as the client named it."},
        "content": {"type": "array", "items": _object(
            {"type": {"type": "string", "examples": ["text", "tool_use"]}}, ("type",))},
        "stop_reason": {"type": ["string", "null"],
                        "examples": ["end_turn", "max_tokens", "tool_use", "refusal"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": _object({"input_tokens": _INTEGER, "output_tokens": _INTEGER,
                          "cache_read_input_tokens": _INTEGER},
                         ("input_tokens", "output_tokens")),
    },
    ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"),
    description="An Anthropic Message: Anthropic's own, or the translation of another "
                "provider's chat completion.",
)

_MESSAGE_EVENT = _sse_event(
    "One event of a streamed Message: `message_start`, `content_block_start`, "
    "`content_block_delta`, `content_block_stop`, `message_delta`, `message_stop` (and "
    "Anthropic's `ping`); a failure ends the stream with an `error` event.",
    _object({"type": _STRING}, ("type",)),
    events=("message_start", "content_block_start", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop", "ping", "error"),
)

_TOKEN_COUNT: Schema = _object({"input_tokens": _INTEGER}, ("input_tokens",),
                               description="Anthropic's answer, relayed.")

_TOOL_LIST: Schema = _object(
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": _object(
            {
                "name": {"type": "string", "description": "The function name the model sees "
                         "(`mcp_<tool>`)."},
                "description": _STRING,
                "server": {"type": "string", "description": "The MCP server's URL."},
                "input_schema": _ANY_OBJECT,
            },
            ("name", "description", "server", "input_schema"), closed=True,
        )},
    },
    ("object", "data"), closed=True,
    description="The MCP tools available now, after `MCP_INCLUDE_TOOLS` / "
                "`MCP_EXCLUDE_TOOLS`.",
)

_SCHEMAS: dict[str, Schema] = {
    "Error": ERROR_SCHEMA,
    "ProviderError": _PROVIDER_ERROR,
    "AnthropicError": _ANTHROPIC_ERROR,
    "Health": _object({"message": {"const": "OK"}}, ("message",), closed=True),
    "Ready": _object({"status": {"const": "ready"}}, ("status",), closed=True),
    "NotReady": _object(
        {"status": {"const": "not ready"},
         "reasons": {"type": "array", "items": _STRING, "minItems": 1,
                     "examples": [["the gateway is shutting down"]]}},
        ("status", "reasons"), closed=True,
    ),
    "Model": _MODEL,
    "ModelList": _MODEL_LIST,
    "ChatMessage": _CHAT_MESSAGE,
    "ChatCompletionRequest": _CHAT_REQUEST,
    "ChatCompletion": _CHAT_COMPLETION,
    "ChatCompletionChunk": _CHAT_CHUNK,
    "ChatCompletionEvent": _CHAT_EVENT,
    "EmbeddingRequest": _EMBEDDING_REQUEST,
    "EmbeddingList": _EMBEDDING_LIST,
    "ResponseRequest": _RESPONSE_REQUEST,
    "Response": _RESPONSE,
    "ResponseEvent": _RESPONSE_EVENT,
    "ResponseDeleted": _RESPONSE_DELETED,
    "ResponseItemList": _RESPONSE_ITEMS,
    "AnthropicMessageParam": _ANTHROPIC_MESSAGE_PARAM,
    "MessageRequest": _MESSAGE_REQUEST,
    "Message": _MESSAGE,
    "MessageEvent": _MESSAGE_EVENT,
    "MessageTokensCountRequest": _COUNT_REQUEST,
    "MessageTokensCount": _TOKEN_COUNT,
    "ToolList": _TOOL_LIST,
    "OpenAPIDocument": _object(
        {"openapi": {"const": "3.1.0"}, "info": _ANY_OBJECT, "paths": _ANY_OBJECT},
        ("openapi", "info", "paths"),
        description="This document.",
    ),
}


# -- parameters and headers ----------------------------------------------------------------

_PROVIDERS_TEXT = ", ".join(f"`{p}`" for p in PROVIDER_IDS)

_PARAMETERS: dict[str, Schema] = {
    "Provider": {
        "name": "provider", "in": "query", "required": False,
        "description": "The provider to send the request to; the model is then forwarded as "
                       f"given (a prefix naming the same provider is stripped). One of "
                       f"{_PROVIDERS_TEXT} (and `demo` with `igw --demo`); case-insensitive.",
        "schema": {"type": "string", "examples": ["openai"]},
    },
    "StoredResponseProvider": {
        "name": "provider", "in": "query", "required": False,
        "description": "The provider holding the stored response (it has no model to route "
                       "by): `openai` or `groq`. Every other query parameter is passed on.",
        "schema": {"type": "string", "default": "openai", "examples": ["openai", "groq"]},
    },
    "RequestId": {
        "name": "X-Request-Id", "in": "header", "required": False,
        "description": "The request's id, echoed in the response's `X-Request-Id` and the "
                       "logs: up to 128 visible ASCII characters, else the gateway makes one.",
        "schema": {"type": "string", "maxLength": 128, "pattern": "^[!-~]+$"},
    },
    "ResponseId": {
        "name": "id", "in": "path", "required": True,
        "description": "The provider's response id.",
        "schema": {"type": "string", "examples": ["resp_123"]},
    },
}

_HEADERS: dict[str, Schema] = {
    "X-Request-Id": {
        "description": "The request's id: the client's `X-Request-Id` when it sent a sane "
                       "one, else one the gateway made.",
        "required": True,
        "schema": _STRING,
    },
    "Allow": {"description": "The methods this path serves.", "required": True,
              "schema": _STRING},
    "WWW-Authenticate": {
        "description": "`Bearer error=\"invalid_token\"`, whatever the reason.",
        "schema": _STRING,
    },
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": _STRING},
    "X-Selected-Provider": {
        "description": "The provider of the deployment that answered (a request to a routing "
                       "alias only).",
        "schema": _STRING,
    },
    "X-Selected-Model": {
        "description": "The model of the deployment that answered (a request to a routing "
                       "alias only).",
        "schema": _STRING,
    },
    "X-Attempts": {
        "description": "How many deployments were tried (a request to a routing alias whose "
                       "every attempt failed).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


# -- responses -----------------------------------------------------------------------------

#: Why the gateway itself answers each error status.
_REASONS: dict[int, str] = {
    400: "The gateway refuses the request; `error.message` says why (the operation's "
         "description lists the reasons). Malformed HTTP is refused by the HTTP parser "
         "before the request is routed: then the body is OpenAI-shaped whatever the "
         "endpoint, `X-Request-Id` is absent, and the connection closes.",
    401: "`AUTH_ENABLE=true` and the bearer token is missing or refused "
         "(`WWW-Authenticate: Bearer error=\"invalid_token\"`; the body never says why).",
    403: "The model policy (`ALLOWED_MODELS` / `DISALLOWED_MODELS`) refuses the model.",
    404: "Not found.",
    405: "The path does not serve this method; `Allow` lists those it does (a path that "
         "serves GET serves HEAD too).",
    408: "The request body stalled for `SERVER_READ_TIMEOUT`; the connection closes.",
    413: "The request body exceeds `SERVER_MAX_REQUEST_BODY_SIZE` (checked against "
         "`Content-Length` before reading, and while reading); the connection closes.",
    431: "The request head is still incomplete after 64 KiB (the standalone server); the "
         "connection closes.",
    502: "The provider could not be reached, or broke the connection before answering.",
    503: "`AUTH_ENABLE=true` and the identity provider's signing keys are not loaded yet "
         "(`Retry-After: 5`).",
    504: "The provider sent no response head within `CLIENT_RESPONSE_HEADER_TIMEOUT`.",
}
_RELAYED = (" A provider's own error with this status comes back as it came when it has "
            "`error.message`, else wrapped.")
_HEADER_LESS = frozenset({400, 431})  # the HTTP parser's refusals carry no X-Request-Id

_BODY = (400, 408, 413)
_AUTH = (401, 503)
_UPSTREAM = (502, 504)


_OPTIONAL_REQUEST_ID: Schema = {
    "description": "The request's id; absent when the HTTP parser refused the request before "
                   "the gateway read it.",
    "schema": _STRING,
}


def _headers(status: int, *, relayed: bool) -> dict[str, Schema]:
    """The headers of an error response with ``status``."""
    headers: dict[str, Schema] = {"X-Request-Id": _OPTIONAL_REQUEST_ID
                                  if status in _HEADER_LESS else _header("X-Request-Id")}
    if status == 405:
        headers["Allow"] = _header("Allow")
    if status == 401:
        headers["WWW-Authenticate"] = _header("WWW-Authenticate")
    if status in (429, 503) or (relayed and status >= 500):
        headers["Retry-After"] = _header("Retry-After")
    if relayed and status >= 500:
        headers["X-Attempts"] = _header("X-Attempts")
    return headers


def _error_schema(shape: str, status: int, *, relayed: bool) -> Schema:
    if shape == _ANTHROPIC:
        if status in _HEADER_LESS:  # refused before routing, by the HTTP parser
            return {"anyOf": [_schema("AnthropicError"), _schema("Error")]}
        return _schema("AnthropicError")
    if relayed:
        return {"anyOf": [_schema("Error"), _schema("ProviderError")]}
    return _schema("Error")


def _error(status: int, shape: str, *, relayed: bool, reason: str = "") -> Schema:
    """The response for an error ``status`` on an endpoint with errors of ``shape``."""
    description = reason or _REASONS[status]
    if relayed and status not in (405, 408, 413, 431):
        description += _RELAYED
    return {
        "description": description,
        "headers": _headers(status, relayed=relayed),
        "content": {_JSON: {"schema": _error_schema(shape, status, relayed=relayed)}},
    }


def _provider_default(shape: str) -> Schema:
    schema = _schema("AnthropicError") if shape == _ANTHROPIC else _schema("ProviderError")
    return {
        "description": "A provider's own error keeps its status (429, 5xx, ...), with "
                       "`Retry-After` and the rate-limit headers when it sent them.",
        "headers": {"X-Request-Id": _header("X-Request-Id"),
                    "Retry-After": _header("Retry-After"),
                    "X-Attempts": _header("X-Attempts")},
        "content": {_JSON: {"schema": schema}},
    }


#: The responses operations share (``components/responses``), filled as they are named.
_RESPONSES: dict[str, Schema] = {}


def _shared(name: str, response: Schema) -> Schema:
    """Register ``response`` as ``components/responses/{name}``; return a reference to it."""
    if _RESPONSES.setdefault(name, response) != response:
        raise ValueError(f"two different responses named {name}")
    return {"$ref": f"#/components/responses/{name}"}


def _resolved(response: Schema) -> Schema:
    """``response``, or the shared response it refers to."""
    ref = response.get("$ref")
    return _RESPONSES[ref.rsplit("/", 1)[1]] if isinstance(ref, str) else response


def _errors(statuses: tuple[int, ...], shape: str = _OPENAI, *, relayed: bool = False,
            reasons: dict[int, str] | None = None) -> dict[str, Schema]:
    """Error responses by status (and ``default`` for a provider's errors when relayed);
    400 (malformed HTTP) and 431 apply everywhere."""
    reasons = reasons or {}
    kind = ("Anthropic" if shape == _ANTHROPIC else "Relayed" if relayed else "") + "Error"
    out: dict[str, Schema] = {}
    for status in sorted({*statuses, 400, 431}):
        reason = reasons.get(status)
        if reason is not None:
            out[str(status)] = _error(status, shape, relayed=relayed, reason=reason)
        else:
            out[str(status)] = _shared(f"{kind}{status}", _error(status, shape,
                                                                 relayed=relayed))
    if relayed:
        out["default"] = _shared(f"{'Anthropic' if shape == _ANTHROPIC else ''}ProviderError",
                                 _provider_default(shape))
    return out


def _ok(description: str, content: dict[str, Schema], *, routed: bool = False) -> Schema:
    """A response the gateway answers (or relays) with ``content``; ``routed``: one that a
    routing alias's deployment may have served."""
    headers = {"X-Request-Id": _header("X-Request-Id")}
    if routed:
        headers |= {"X-Selected-Provider": _header("X-Selected-Provider"),
                    "X-Selected-Model": _header("X-Selected-Model")}
    return {"description": description, "headers": headers, "content": content}


def _json(name: str) -> dict[str, Schema]:
    return {_JSON: {"schema": _schema(name)}}


def _body(name: str, description: str) -> Schema:
    return {"required": True, "description": description, "content": _json(name)}


# -- operations ----------------------------------------------------------------------------

def _status_order(status: str) -> tuple[int, str]:
    return (int(status), "") if status.isdigit() else (1000, status)


def _operation(operation_id: str, tag: str, summary: str, responses: dict[str, Schema], *,
               description: str = "", parameters: tuple[Schema, ...] = (),
               body: Schema | None = None, public: bool = False) -> Schema:
    op: Schema = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    op["parameters"] = [*parameters, _parameter("RequestId")]
    if body is not None:
        op["requestBody"] = body
    op["responses"] = {key: responses[key] for key in sorted(responses, key=_status_order)}
    if public:
        op["security"] = []
    return op


def _headless(response: Schema) -> Schema:
    """``response`` without its body (shared responses as shared ``...Head`` ones)."""
    stripped = {key: value for key, value in _resolved(response).items() if key != "content"}
    ref = response.get("$ref")
    return _shared(ref.rsplit("/", 1)[1] + "Head", stripped) if isinstance(ref, str) else stripped


def _head_of(get: Schema) -> Schema:
    """The HEAD twin of a GET operation: same statuses and headers, no body."""
    responses = {status: _headless(response) for status, response in get["responses"].items()}
    head = {**get, "operationId": get["operationId"] + "Head",
            "summary": get["summary"] + " (headers only)", "responses": responses}
    head.pop("description", None)
    return head


def _get_and_head(get: Schema) -> dict[str, Schema]:
    return {"get": get, "head": _head_of(get)}


_HEALTH = _operation(
    "health", "probes", "Liveness", public=True,
    description="Answers while the process runs; never behind auth, never counted.",
    responses={"200": _ok("Alive.", _json("Health")), **_errors(())},
)

_READY = _operation(
    "ready", "probes", "Readiness", public=True,
    description="Ready for traffic: 503 while the identity provider's keys are not loaded "
                "(`AUTH_ENABLE=true`) and while the process drains at shutdown. Never behind "
                "auth.",
    responses={
        "200": _ok("Ready.", _json("Ready")),
        "503": _ok("Not ready; `reasons` says why.", _json("NotReady")),
        **_errors(()),
    },
)

_LIST_MODELS = _operation(
    "listModels", "models", "List every configured provider's models",
    description="Providers with a key (or a keyless provider whose URL was set) are asked "
                "concurrently; one that fails is logged and left out. With `?provider=` only "
                "that provider is asked, and its own error comes back. 400: `?provider=` names "
                "an unknown or unconfigured provider.",
    parameters=(_parameter("Provider"),),
    responses={"200": _ok("The models, ids `provider/model`.", _json("ModelList")),
               **_errors((*_AUTH, *_UPSTREAM), relayed=True)},
)

_GET_MODEL = _operation(
    "retrieveModel", "models", "Retrieve one model",
    description="A `provider/model` is looked up in that provider's own list; a routing alias "
                "answers its own entry. 404: the provider does not list the model, or the "
                "model policy hides it. 400: the id names no provider (and no alias), or an "
                "unknown or unconfigured provider.",
    parameters=(
        {"name": "model_id", "in": "path", "required": True,
         "description": "`provider/model`, its slash sent as it is (as the OpenAI SDKs do: "
                        "everything after the provider is the model, which may hold more "
                        "slashes) or percent-encoded (`%2F`); or a routing alias.",
         "schema": {"type": "string", "examples": ["openai/gpt-4o-mini", "fast-chat"]}},
    ),
    responses={
        "200": _ok("The model.", _json("Model")),
        **_errors((*_AUTH, 404, *_UPSTREAM), relayed=True, reasons={
            404: "The provider does not list the model, or the model policy hides it.",
        }),
    },
)

_CHAT = _operation(
    "createChatCompletion", "chat", "Create a chat completion",
    description="Routed by `model` (`provider/model`) or `?provider=`; the prefix is stripped "
                "and the client's bytes are otherwise forwarded unchanged. With `stream: true` "
                "the answer is server-sent events, with a usage chunk where the provider "
                "accepts `stream_options`. With MCP on, the MCP tools are added and run by "
                "the gateway (`X-MCP-Bypass: true` skips them). 400: malformed JSON, `model` "
                "or `messages` missing, a model that names no provider, an unknown or "
                "unconfigured provider, or image input while `ENABLE_VISION` is off (or for "
                "a text-only model).",
    parameters=(
        _parameter("Provider"),
        {"name": "X-MCP-Bypass", "in": "header", "required": False,
         "description": "`true`: no MCP tools for this request.",
         "schema": {"type": "string", "examples": ["true"]}},
    ),
    body=_body("ChatCompletionRequest", "The chat completion request."),
    responses={
        "200": _ok("The completion: JSON, or with `stream: true` server-sent events.", {
            _JSON: {"schema": _schema("ChatCompletion")},
            _SSE: {"schema": _schema("ChatCompletionEvent")},
        }, routed=True),
        **_errors((*_BODY, *_AUTH, 403, *_UPSTREAM), relayed=True),
    },
)

_EMBEDDINGS = _operation(
    "createEmbedding", "embeddings", "Create embeddings",
    description="For the providers with an OpenAI-compatible embeddings endpoint (`openai`, "
                "`mistral`, `ollama`, `llamacpp`, `google`, `cohere`, `nvidia`). 400: any other "
                "provider (the message names these), malformed JSON, `model` missing or naming "
                "no provider, or an unknown or unconfigured provider.",
    parameters=(_parameter("Provider"),),
    body=_body("EmbeddingRequest", "The embeddings request."),
    responses={"200": _ok("The embeddings.", _json("EmbeddingList"), routed=True),
               **_errors((*_BODY, *_AUTH, 403, *_UPSTREAM), relayed=True)},
)

_CREATE_RESPONSE = _operation(
    "createResponse", "responses", "Create a Response",
    description="OpenAI's Responses API, for the providers that serve it (`openai`, `groq`). "
                "400: any other provider (the message names these), malformed JSON, `model` "
                "missing or naming no provider, an unknown or unconfigured provider, or "
                "`input_image` while `ENABLE_VISION` is off.",
    parameters=(_parameter("Provider"),),
    body=_body("ResponseRequest", "The Responses API request."),
    responses={
        "200": _ok("The Response: JSON, or with `stream: true` server-sent events.", {
            _JSON: {"schema": _schema("Response")},
            _SSE: {"schema": _schema("ResponseEvent")},
        }, routed=True),
        **_errors((*_BODY, *_AUTH, 403, *_UPSTREAM), relayed=True),
    },
)

_STORED = (_parameter("ResponseId"), _parameter("StoredResponseProvider"))
_STORED_ERRORS = _errors((*_BODY, *_AUTH, *_UPSTREAM), relayed=True)
_STORED_TEXT = ("A stored response has no model to route by: it is asked of `?provider=` "
                "(default `openai`), and every other query parameter is passed on. 400: that "
                "provider is unknown, unconfigured (`openai` needs `OPENAI_API_KEY`) or "
                "without the Responses API.")

_GET_RESPONSE = _operation(
    "retrieveResponse", "responses", "Retrieve a stored Response",
    description=_STORED_TEXT,
    parameters=(*_STORED, {"name": "stream", "in": "query", "required": False,
                           "description": "`true`: replay it as server-sent events.",
                           "schema": {"type": "boolean"}}),
    responses={
        "200": _ok("The Response.", {_JSON: {"schema": _schema("Response")},
                                     _SSE: {"schema": _schema("ResponseEvent")}}),
        **_STORED_ERRORS,
    },
)

_DELETE_RESPONSE = _operation(
    "deleteResponse", "responses", "Delete a stored Response",
    description=_STORED_TEXT,
    parameters=_STORED,
    responses={"200": _ok("Deleted.", _json("ResponseDeleted")), **_STORED_ERRORS},
)

_INPUT_ITEMS = _operation(
    "listResponseInputItems", "responses", "List a stored Response's input items",
    description=_STORED_TEXT,
    parameters=(*_STORED,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "order", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["asc", "desc"]}},
                {"name": "after", "in": "query", "required": False, "schema": _STRING}),
    responses={"200": _ok("The input items.", _json("ResponseItemList")), **_STORED_ERRORS},
)

_CANCEL_RESPONSE = _operation(
    "cancelResponse", "responses", "Cancel a background Response",
    description=_STORED_TEXT,
    parameters=_STORED,
    responses={"200": _ok("The cancelled Response.", _json("Response")),
               **_errors((*_BODY, *_AUTH, *_UPSTREAM), relayed=True)},
)

_ANTHROPIC_HEADERS = (
    {"name": "anthropic-version", "in": "header", "required": False,
     "description": "Passed to Anthropic instead of the gateway's default (`2023-06-01`).",
     "schema": {"type": "string", "examples": ["2023-06-01"]}},
    {"name": "anthropic-beta", "in": "header", "required": False,
     "description": "Passed to Anthropic.", "schema": _STRING},
)

_MESSAGES = _operation(
    "createMessage", "messages", "Create a Message (Anthropic's Messages API)",
    description="A model that names no provider (`claude-sonnet-4-5`) is Anthropic's, and "
                "the request is relayed to Anthropic byte for byte (its query string, e.g. "
                "`?beta=true`, too). Any other provider gets it translated to a chat "
                "completion, and the answer (streamed or not) translated back. Errors are "
                "Anthropic-shaped. 400: malformed JSON, `max_tokens` missing or not positive, "
                "an unroutable model, image input while `ENABLE_VISION` is off, or (for a "
                "provider other than Anthropic) a block, image source, tool or tool choice "
                "the chat API cannot express.",
    parameters=(_parameter("Provider"), *_ANTHROPIC_HEADERS),
    body=_body("MessageRequest", "The Messages request."),
    responses={
        "200": _ok("The Message: JSON, or with `stream: true` Anthropic's server-sent "
                   "events.", {_JSON: {"schema": _schema("Message")},
                               _SSE: {"schema": _schema("MessageEvent")}}),
        **_errors((*_BODY, *_AUTH, 403, *_UPSTREAM), _ANTHROPIC, relayed=True),
    },
)

_COUNT_TOKENS = _operation(
    "countMessageTokens", "messages", "Count a Message's tokens (Anthropic only)",
    description="Relayed to Anthropic. Errors are Anthropic-shaped. 400: any other provider "
                "(no chat API counts tokens without generating), malformed JSON, or an "
                "unroutable model.",
    parameters=(_parameter("Provider"), *_ANTHROPIC_HEADERS),
    body=_body("MessageTokensCountRequest", "The token counting request."),
    responses={"200": _ok("The count.", _json("MessageTokensCount")),
               **_errors((*_BODY, *_AUTH, 403, *_UPSTREAM), _ANTHROPIC, relayed=True)},
)

_TOOLS = _operation(
    "listMcpTools", "mcp", "List the MCP tools",
    description="Only with `MCP_EXPOSE=true`; see docs/mcp.md.",
    responses={"200": _ok("The tools.", _json("ToolList")),
               **_errors((*_AUTH, 403), reasons={
                   403: "The list is not exposed (`MCP_EXPOSE` is not `true`).",
               })},
)

_OPENAPI = _operation(
    "openapi", "meta", "This document",
    description="The OpenAPI 3.1 description of igw's HTTP surface (docs/openapi.yaml is the "
                "same document).",
    responses={"200": _ok("The document.", _json("OpenAPIDocument")),
               **_errors(_AUTH)},
)

_PROXY_PARAMETERS = (
    {"name": "provider", "in": "path", "required": True,
     "description": f"The provider id: {_PROVIDERS_TEXT}.",
     "schema": {"type": "string", "examples": ["openai"]}},
    {"name": "path", "in": "path", "required": True,
     "description": "The rest of the provider's path; may contain `/`. A path that starts "
                    "with the base URL's own path is not prefixed twice "
                    "(`/proxy/openai/v1/models` and `/proxy/openai/models` are the same).",
     "schema": {"type": "string", "examples": ["v1/models"]}},
)
_PROXY_ANY: dict[str, Schema] = {_ANY_MEDIA: {"schema": _ANYTHING}}


def _proxy(method: str) -> Schema:
    """A ``/proxy`` operation: every answer is the provider's, or a gateway refusal."""
    responses: dict[str, Schema] = {
        str(status): _shared(f"Proxy{status}", {
            "description": f"{_REASONS[status]} The provider's own {status} passes unchanged "
                           "too, so the body may be anything.",
            "content": _PROXY_ANY,
        })
        for status in (400, 401, 408, 413, 431, 502, 503, 504)
    }
    responses["404"] = _shared("Proxy404", {
        "description": "`PROXY_ENABLE=false` (the gateway's 404), or the provider's own 404.",
        "content": _PROXY_ANY})
    responses["default"] = _shared("ProxyDefault", {
        "description": "The provider's answer: status, headers and body as it sent them.",
        "headers": {"X-Request-Id": _header("X-Request-Id")},
        "content": _PROXY_ANY})
    body = None
    if method in ("post", "put", "patch"):
        body = {"required": False, "description": "Forwarded unchanged.",
                "content": {_JSON: {"schema": _ANYTHING},
                            "application/octet-stream": {"schema": {"type": "string",
                                                                    "format": "binary"}}}}
    return _operation(
        f"proxy{method.capitalize()}", "proxy", f"{method.upper()} a provider's own API",
        description="Forwards method, path, query and body unchanged to the provider's base "
                    "URL with the provider's key (the caller's `Authorization`, `x-api-key`, "
                    "`api-key` and `Cookie` are dropped). Any method is forwarded; no model "
                    "policy, vision, MCP or telemetry; auth still applies. The gateway's own "
                    "400: an unknown or unconfigured provider.",
        parameters=_PROXY_PARAMETERS, body=body,
        responses=responses,
    )


_PATHS: dict[str, Schema] = {
    "/health": _get_and_head(_HEALTH),
    "/ready": _get_and_head(_READY),
    "/v1/models": _get_and_head(_LIST_MODELS),
    "/v1/models/{model_id}": _get_and_head(_GET_MODEL),
    "/v1/chat/completions": {"post": _CHAT},
    "/v1/embeddings": {"post": _EMBEDDINGS},
    "/v1/responses": {"post": _CREATE_RESPONSE},
    "/v1/responses/{id}": {**_get_and_head(_GET_RESPONSE), "delete": _DELETE_RESPONSE},
    "/v1/responses/{id}/input_items": _get_and_head(_INPUT_ITEMS),
    "/v1/responses/{id}/cancel": {"post": _CANCEL_RESPONSE},
    "/v1/messages": {"post": _MESSAGES},
    "/v1/messages/count_tokens": {"post": _COUNT_TOKENS},
    "/v1/mcp/tools": _get_and_head(_TOOLS),
    "/proxy/{provider}/{path}": {**_get_and_head(_proxy("get")),
                                 **{method: _proxy(method)
                                    for method in ("post", "put", "patch", "delete")}},
    "/openapi.json": _get_and_head(_OPENAPI),
}

_DESCRIPTION = """\
igw is one OpenAI-compatible endpoint in front of many LLM providers. This is its own HTTP \
surface; docs/api.md has an example call for every endpoint.

**Models** are named `provider/model` (`openai/gpt-4o-mini`): the prefix picks the provider \
and is stripped from what the provider gets. `?provider=ID` names the provider instead. On \
`/v1/messages` a bare model (`claude-sonnet-4-5`) is Anthropic's. With `ROUTING_ENABLED=true` \
a model may be a routing alias over several deployments (docs/routing.md): the answer names \
the deployment that served it (`X-Selected-Provider`, `X-Selected-Model`), and when every \
attempt failed, `X-Attempts` says how many were made.

**Authentication** is off by default: no credentials are needed. With `AUTH_ENABLE=true` \
every route but `/health` and `/ready` needs `Authorization: Bearer <JWT>`, an access token \
of the OIDC issuer `AUTH_OIDC_ISSUER` for the client `AUTH_OIDC_CLIENT_ID` (docs/auth.md); a \
refused token is a 401, and a 503 answers while the issuer's keys are not loaded yet.

**Errors** the gateway answers itself are OpenAI-shaped, `{"error": {"message", "type", \
"code"}}` (`Error`), except on `/v1/messages*`, which answer Anthropic's shape, \
`{"type": "error", "error": {"type", "message"}}` (`AnthropicError`), so each SDK shows the \
message. A provider's own error keeps its status (429, 5xx, ...) and its `Retry-After` and \
rate-limit headers; its body comes back as it came when it has `error.message`, else \
wrapped (`ProviderError`). `/proxy` passes everything through unchanged.

**Every path**: a method it does not serve is a 405 whose `Allow` header lists those it \
does; every path that answers GET answers HEAD with the same status and headers and no body; \
an unknown path is a 404 (`Error`). Every response carries `X-Request-Id`, except a \
refusal of malformed HTTP by the HTTP parser.

`GET /metrics` (Prometheus, `TELEMETRY_ENABLE=true`) is served on `TELEMETRY_METRICS_PORT`, \
not on this port, and is not described here."""

#: The OpenAPI 3.1 document of igw's HTTP surface.
DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "igw: the Inference Gateway",
        "version": "0.1.0",
        "summary": "An OpenAI-compatible LLM inference gateway.",
        "description": _DESCRIPTION,
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "servers": [{"url": "/", "description": "The gateway serving this document (by default "
                                            "on port 8080, `SERVER_PORT`)."}],
    "security": [{"bearerAuth": []}, {}],
    "tags": [
        {"name": "probes", "description": "Liveness and readiness; never behind auth."},
        {"name": "models", "description": "The configured providers' models."},
        {"name": "chat", "description": "OpenAI's Chat Completions API, for every provider."},
        {"name": "embeddings", "description": "OpenAI's embeddings API."},
        {"name": "responses", "description": "OpenAI's Responses API (`openai`, `groq`)."},
        {"name": "messages", "description": "Anthropic's Messages API, for every provider."},
        {"name": "mcp", "description": "The MCP tools the gateway runs (docs/mcp.md)."},
        {"name": "proxy", "description": "Raw passthrough to a provider's own API."},
        {"name": "meta", "description": "This document."},
    ],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "parameters": _PARAMETERS,
        "headers": _HEADERS,
        "responses": {
            **_RESPONSES,
            "MethodNotAllowed": _error(405, _OPENAI, relayed=False),
            "NotFound": _error(404, _OPENAI, relayed=False,
                               reason="No route for this path (an unknown path, or `/proxy` "
                                      "with `PROXY_ENABLE=false`)."),
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "Only with `AUTH_ENABLE=true`: an OIDC access token from "
                               "`AUTH_OIDC_ISSUER` whose audience (or `azp`) is "
                               "`AUTH_OIDC_CLIENT_ID`. Off by default, when no credentials "
                               "are needed. Never needed by `/health` and `/ready`.",
            },
        },
    },
}


@cache
def document_bytes() -> bytes:
    """Return :data:`DOCUMENT` as compact UTF-8 JSON (computed once; what
    ``GET /openapi.json`` answers)."""
    return json_bytes(DOCUMENT)
