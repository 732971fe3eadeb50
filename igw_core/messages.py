"""The Anthropic Messages API in front of an OpenAI-compatible provider.

A client of ``POST /v1/messages`` (an Anthropic SDK, Claude Code) is served by
any provider that speaks Chat Completions: :func:`messages_to_chat` translates
the request, :func:`chat_to_message` a JSON answer, :class:`MessageStream` an
event stream, and :func:`translate_error` a provider's error body.

What the chat API cannot carry is decided here, once:

- ``top_k``, ``thinking`` and request fields not named below are not forwarded;
  ``thinking`` and ``redacted_thinking`` blocks of earlier turns are dropped
  (providers behind the chat API cannot take them back).
- ``cache_control`` marks are ignored.
- A ``tool_result`` with ``is_error`` is sent as its content alone: the chat
  API's tool message has no error flag.
- Images inside a ``tool_result`` go into the user message that follows the
  tool messages, since a tool message carries only text.
- The provider's ``prompt_tokens`` include its cached tokens; Anthropic counts
  them apart, so cached tokens are reported as ``cache_read_input_tokens`` and
  subtracted from ``input_tokens``.
- A provider's refusal text is answered as text; ``finish_reason`` ``stop``
  cannot say whether a stop sequence ended the answer, so ``stop_sequence`` is
  always ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from igw_core.errors import BadRequest
from igw_core.report import Usage
from igw_core.sse import SSEParser
from igw_core.usage import usage_from_object

# --- errors ---------------------------------------------------------------------------

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    # Anthropic documents only 529 as overloaded; a provider's 503 says the same thing.
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Return the Anthropic error ``type`` for an HTTP status.

    Statuses Anthropic names map to their type; any other 4xx is an
    ``invalid_request_error`` and anything else an ``api_error``.
    """
    named = _ERROR_TYPES.get(status)
    if named is not None:
        return named
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str) -> bytes:
    """Return an Anthropic error body: ``{"type":"error","error":{"type":..,"message":..}}``."""
    return _dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


def translate_error(status: int, body: bytes) -> bytes:
    """Turn a provider's error body into an Anthropic error body for ``status``.

    The provider's message is kept when the body is JSON that holds one
    (``{"error": {"message": ..}}``, ``{"error": ".."}``, ``{"message": ..}`` or
    ``{"detail": ..}``); otherwise the message is ``upstream status <status>``.
    """
    return error_body(status, _provider_message(_loads(body)) or f"upstream status {status}")


def _loads(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _provider_message(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for candidate in (error, obj.get("message"), obj.get("detail")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


# --- requests -------------------------------------------------------------------------


def messages_to_chat(request: dict[str, Any], model: str) -> dict[str, Any]:
    """Translate a parsed Messages request into a Chat Completions request for ``model``.

    ``system`` becomes the first message; each message becomes one chat message,
    except that a user message's ``tool_result`` blocks become ``tool`` messages
    placed before the rest of it (the chat API wants them right after the
    assistant's tool calls). Text-only content becomes a string (blocks joined
    with a blank line); content with images stays a list of parts. ``max_tokens``,
    ``stop_sequences``, ``temperature``, ``top_p``, ``metadata.user_id``,
    ``stream``, ``tools``, ``tool_choice`` and ``disable_parallel_tool_use`` are
    carried over; see the module docstring for what is dropped.

    Raises:
        BadRequest: ``max_tokens`` missing or not a positive integer, ``messages``
            not an array, a role other than user/assistant, or a content block,
            image source, tool or tool choice the chat API cannot express.
    """
    max_tokens = request.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _invalid("'max_tokens' is required and must be a positive integer")
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise _invalid("'messages' is required and must be an array")
    chat_messages = _system(request.get("system"))
    for index, message in enumerate(messages):
        chat_messages += _message(message, f"messages[{index}]")
    chat: dict[str, Any] = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    for name, translate in _PARAMETERS.items():
        value = request.get(name)
        if value is not None:
            translate(value, chat)
    _tools(request, chat)
    return chat


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_request")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _system(system: object) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        text = "\n\n".join(_text(block, f"system[{i}]") for i, block in enumerate(system))
    else:
        raise _invalid("'system' must be a string or an array of text blocks")
    return [{"role": "system", "content": text}] if text else []


def _text(block: object, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _invalid(f"{where}: only text blocks are accepted here")
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}: 'text' must be a string")
    return text


@dataclass(slots=True)
class _Turn:
    """What one message's blocks become: content parts, tool calls, tool messages."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_messages: list[dict[str, Any]] = field(default_factory=list)


_BlockRule = Callable[[dict[str, Any], _Turn, str], None]


def _message(message: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise _invalid(f"{where}: a message must be an object")
    role = message.get("role")
    rules = _ROLES.get(role) if isinstance(role, str) else None
    if rules is None:
        raise _invalid(f"{where}: role must be 'user' or 'assistant', not {role!r}")
    blocks, finish = rules
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{where}: 'content' must be a string or an array of content blocks")
    turn = _Turn()
    for index, block in enumerate(content):
        block_where = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        rule = blocks.get(kind) if isinstance(kind, str) else None
        if rule is None:
            raise _invalid(f"{block_where}: content block type {kind!r} is not supported "
                           "by this provider")
        rule(block, turn, block_where)
    return finish(turn)


def _text_block(block: dict[str, Any], turn: _Turn, where: str) -> None:
    turn.parts.append({"type": "text", "text": _text(block, where)})


def _image_block(block: dict[str, Any], turn: _Turn, where: str) -> None:
    turn.parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return f"data:{media_type};base64,{data}"
        raise _invalid(f"{where}: a base64 image needs string 'media_type' and 'data'")
    if kind == "url":
        url = source.get("url")
        if isinstance(url, str):
            return url
        raise _invalid(f"{where}: a url image needs a string 'url'")
    raise _invalid(f"{where}: image source type {kind!r} is not supported by this provider")


def _drop_block(block: dict[str, Any], turn: _Turn, where: str) -> None:
    """Thinking of earlier turns: providers behind the chat API cannot take it back."""


def _tool_use_block(block: dict[str, Any], turn: _Turn, where: str) -> None:
    tool_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(tool_id, str) or not isinstance(name, str):
        raise _invalid(f"{where}: a tool_use block needs string 'id' and 'name'")
    if not isinstance(arguments, dict):
        raise _invalid(f"{where}: a tool_use block's 'input' must be an object")
    turn.tool_calls.append({
        "id": tool_id,
        "type": "function",
        "function": {"name": name, "arguments": _compact(arguments)},
    })


def _tool_result_block(block: dict[str, Any], turn: _Turn, where: str) -> None:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise _invalid(f"{where}: a tool_result block needs a string 'tool_use_id'")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for index, item in enumerate(content):
            item_where = f"{where}.content[{index}]"
            if isinstance(item, dict) and item.get("type") == "image":
                _image_block(item, turn, item_where)
            else:
                texts.append(_text(item, item_where))
        text = "\n\n".join(texts)
    else:
        raise _invalid(f"{where}: a tool_result's 'content' must be a string or an array")
    turn.tool_messages.append({"role": "tool", "tool_call_id": tool_use_id, "content": text})


def _user_messages(turn: _Turn) -> list[dict[str, Any]]:
    messages = list(turn.tool_messages)
    if turn.parts or not messages:
        messages.append({"role": "user", "content": _content(turn.parts)})
    return messages


def _assistant_messages(turn: _Turn) -> list[dict[str, Any]]:
    texts = [part["text"] for part in turn.parts]
    content = "\n\n".join(texts) if texts or not turn.tool_calls else None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if turn.tool_calls:
        message["tool_calls"] = turn.tool_calls
    return [message]


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


_USER_BLOCKS: dict[str, _BlockRule] = {
    "text": _text_block,
    "image": _image_block,
    "tool_result": _tool_result_block,
    "thinking": _drop_block,
    "redacted_thinking": _drop_block,
}
_ASSISTANT_BLOCKS: dict[str, _BlockRule] = {
    "text": _text_block,
    "tool_use": _tool_use_block,
    "thinking": _drop_block,
    "redacted_thinking": _drop_block,
}
_ROLES: Final[dict[str, tuple[dict[str, _BlockRule], Callable[[_Turn], list[dict[str, Any]]]]]] = {
    "user": (_USER_BLOCKS, _user_messages),
    "assistant": (_ASSISTANT_BLOCKS, _assistant_messages),
}


def _stop_sequences(value: Any, chat: dict[str, Any]) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid("'stop_sequences' must be an array of strings")
    if value:
        chat["stop"] = value


def _metadata(value: Any, chat: dict[str, Any]) -> None:
    user = value.get("user_id") if isinstance(value, dict) else None
    if isinstance(user, str):
        chat["user"] = user


def _stream(value: Any, chat: dict[str, Any]) -> None:
    if value is True:
        chat["stream"] = True


def _same_name(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def copy(value: Any, chat: dict[str, Any]) -> None:
        chat[name] = value

    return copy


_PARAMETERS: Final[dict[str, Callable[[Any, dict[str, Any]], None]]] = {
    "stop_sequences": _stop_sequences,
    "temperature": _same_name("temperature"),
    "top_p": _same_name("top_p"),
    "metadata": _metadata,
    "stream": _stream,
}


def _tools(request: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = request.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array")
    if not tools:
        return
    chat["tools"] = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)]
    # The chat API refuses tool_choice and parallel_tool_calls without tools.
    choice = request.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    translate = _TOOL_CHOICES.get(kind) if isinstance(kind, str) else None
    if translate is None or not isinstance(choice, dict):
        raise _invalid(f"tool_choice type {kind!r} is not supported")
    chat["tool_choice"] = translate(choice)
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _tool(tool: object, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _invalid(f"{where}: a tool must be an object")
    kind = tool.get("type", "custom")
    if kind not in ("custom", None):
        raise _invalid(f"{where}: tool type {kind!r} (a server tool) is not supported "
                       "by this provider")
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not isinstance(schema, dict):
        raise _invalid(f"{where}: a tool needs a string 'name' and an object 'input_schema'")
    function: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if isinstance(description, str):
        function["description"] = description
    function["parameters"] = schema
    return {"type": "function", "function": function}


def _named_tool(choice: dict[str, Any]) -> Any:
    name = choice.get("name")
    if not isinstance(name, str):
        raise _invalid("tool_choice of type 'tool' needs a string 'name'")
    return {"type": "function", "function": {"name": name}}


_TOOL_CHOICES: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    "auto": lambda choice: "auto",
    "any": lambda choice: "required",
    "none": lambda choice: "none",
    "tool": _named_tool,
}


# --- answers --------------------------------------------------------------------------

_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _stop_reason(finish_reason: object, used_tools: bool) -> str:
    reason = "end_turn"
    if isinstance(finish_reason, str):
        reason = _STOP_REASONS.get(finish_reason, reason)
    # Some providers finish a tool call with "stop"; the client must still run the tool.
    return "tool_use" if used_tools and reason == "end_turn" else reason


def _cached_tokens(usage: object) -> int:
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if _is_int(cached) and cached > 0 else 0


def _usage_fields(usage: Usage | None, cached: int) -> dict[str, int]:
    prompt = usage.prompt_tokens if usage else 0
    cached = min(cached, prompt)
    fields = {"input_tokens": prompt - cached,
              "output_tokens": usage.completion_tokens if usage else 0}
    if cached:
        fields["cache_read_input_tokens"] = cached
    return fields


def chat_to_message(completion: dict[str, Any], model: str, message_id: str) -> dict[str, Any]:
    """Translate a ``chat.completion`` object into an Anthropic Message.

    The first choice's text (or refusal) becomes a text block, each tool call a
    ``tool_use`` block (a missing id becomes ``toolu_<message_id>_<n>``). ``model``
    is the model as the client named it.

    Raises:
        ValueError: the completion has no readable first choice, or a tool
            call's arguments are not a JSON object.
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(message, dict):
        raise ValueError("the completion has no choice with a message")
    text = _answer_text(message)
    content = [{"type": "text", "text": text}] if text else []
    tools = [_tool_use(call, f"toolu_{message_id}_{index}")
             for index, call in enumerate(_tool_calls(message))]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content + tools,
        "stop_reason": _stop_reason(choice.get("finish_reason"), bool(tools)),
        "stop_sequence": None,
        "usage": _usage_fields(usage_from_object(completion),
                               _cached_tokens(completion.get("usage"))),
    }


def _answer_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        # Some providers answer with an array of parts; only text parts are text.
        content = "".join(part["text"] for part in content
                          if isinstance(part, dict) and part.get("type") == "text"
                          and isinstance(part.get("text"), str))
    elif content is not None and not isinstance(content, str):
        raise ValueError("the completion's message content is neither text nor parts")
    refusal = message.get("refusal")
    return content or (refusal if isinstance(refusal, str) else "")


def _tool_calls(message: dict[str, Any]) -> list[Any]:
    calls = message.get("tool_calls")
    found = list(calls) if isinstance(calls, list) else []
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        found.append({"function": legacy})
    return found


def _tool_use(call: object, fallback_id: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict) or not isinstance(name, str):
        raise ValueError("a tool call of the completion has no function name")
    tool_id = call.get("id")
    return {
        "type": "tool_use",
        "id": tool_id if isinstance(tool_id, str) and tool_id else fallback_id,
        "name": name,
        "input": _arguments(function.get("arguments"), name),
    }


def _arguments(arguments: object, name: str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    parsed = _loads(arguments) if isinstance(arguments, str) else None
    if not isinstance(parsed, dict):
        raise ValueError(f"the arguments of tool call {name!r} are not a JSON object")
    return parsed


# --- streams --------------------------------------------------------------------------


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _dumps(obj: Any) -> bytes:
    text = _compact(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a provider's "\ud800" escape) has no UTF-8 form.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode("ascii") + b"\ndata: " + _dumps(payload) + b"\n\n"


@dataclass(slots=True, init=False)
class _ToolCall:
    """A streamed tool call: its id as first announced and its content block's index."""

    id: str
    block: int

    def __init__(self, id: str, block: int) -> None:
        self.id = id
        self.block = block


class MessageStream:
    """Turns a provider's chat-completion event stream into the Messages event stream.

    Bytes go in split anywhere; the same Anthropic events come out however they
    are split. The first provider chunk starts the message; text deltas and tool
    call deltas become content blocks, numbered from 0, a block closing when
    another starts. The finish reason and usage are remembered and sent in the
    ``message_delta`` that :meth:`close` emits (a provider's ``[DONE]`` closes the
    stream too). A provider error chunk, an unreadable chunk, or tool call
    arguments interleaved with other output (no block can reopen) end the stream
    with an ``error`` event.
    """

    __slots__ = ("_block", "_cached", "_finish", "_finished", "_message_id", "_model",
                 "_open", "_parser", "_started", "_text_open", "_tools", "_usage",
                 "_used_tools")

    def __init__(self, model: str, message_id: str) -> None:
        self._model = model
        self._message_id = message_id
        self._parser = SSEParser()
        self._started = False
        self._finished = False
        self._block = 0  # the index the next content block gets
        self._open: int | None = None
        self._text_open = False
        self._tools: dict[int, _ToolCall] = {}  # by the provider's tool call index
        self._used_tools = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._cached = 0

    @property
    def usage(self) -> Usage | None:
        """The token counts the provider reported (its own prompt/completion/total)."""
        return self._usage

    @property
    def finished(self) -> bool:
        """Whether ``message_stop`` or an ``error`` event has been emitted."""
        return self._finished

    def feed(self, data: bytes) -> bytes:
        """Consume provider bytes; return the Anthropic event bytes they completed."""
        if self._finished:
            return b""
        out: list[bytes] = []
        for event in self._parser.feed(data):
            self._chunk(event.data, out)
            if self._finished:
                break
        return b"".join(out)

    def close(self) -> bytes:
        """End the message: close the open block, then ``message_delta`` and ``message_stop``.

        Emits a whole message even when no chunk came; returns ``b""`` once finished.
        """
        out: list[bytes] = []
        if not self._finished:
            self._close(out)
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        """Return an ``error`` event (``api_error``) carrying ``message``; nothing follows it."""
        out: list[bytes] = []
        if not self._finished:
            self._fail(message, out)
        return b"".join(out)

    def _fail(self, message: str, out: list[bytes]) -> None:
        out.append(_event("error", {"type": "error",
                                    "error": {"type": "api_error", "message": message}}))
        self._finished = True

    def _close(self, out: list[bytes]) -> None:
        self._start(out)
        self._close_block(out)
        out.append(_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(self._finish, self._used_tools),
                      "stop_sequence": None},
            "usage": _usage_fields(self._usage, self._cached),
        }))
        out.append(_event("message_stop", {"type": "message_stop"}))
        self._finished = True

    def _chunk(self, data: str, out: list[bytes]) -> None:
        data = data.strip()
        if not data:
            return
        if data == "[DONE]":
            self._close(out)
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            chunk = None
        if not isinstance(chunk, dict):
            self._fail("the provider sent an event that is not a JSON object", out)
            return
        if chunk.get("error") is not None:
            self._fail(_provider_message(chunk) or "the provider reported an error", out)
            return
        self._start(out)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            # Only the first choice is answered (a Messages request asks for one).
            if isinstance(choice, dict) and choice.get("index", 0) in (0, None):
                self._choice(choice, out)
                if self._finished:
                    return
        usage = usage_from_object(chunk)
        if usage is not None:
            self._usage = usage
            self._cached = _cached_tokens(chunk["usage"])

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        out.append(_event("message_start", {"type": "message_start", "message": {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }}))

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._text(text, out)
            calls = delta.get("tool_calls")
            for position, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    self._tool_delta(call, position, out)
                    if self._finished:
                        return
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish

    def _text(self, text: str, out: list[bytes]) -> None:
        if not self._text_open:
            self._open_block({"type": "text", "text": ""}, out)
            self._text_open = True
        out.append(_event("content_block_delta", {
            "type": "content_block_delta", "index": self._open,
            "delta": {"type": "text_delta", "text": text},
        }))

    def _tool_delta(self, call: dict[str, Any], position: int, out: list[bytes]) -> None:
        index = call.get("index")
        key = index if _is_int(index) else position
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        fragment = arguments if isinstance(arguments, str) else ""
        call_id = call.get("id")
        known = self._tools.get(key)
        # A new id at a known index is a new call (some providers number every call 0).
        if known is None or (isinstance(call_id, str) and call_id and call_id != known.id):
            if not isinstance(call_id, str) or not call_id:
                call_id = f"toolu_{self._message_id}_{self._block}"
            name = function.get("name")
            self._open_block({"type": "tool_use", "id": call_id,
                              "name": name if isinstance(name, str) else "", "input": {}}, out)
            known = self._tools[key] = _ToolCall(call_id, self._block - 1)
            self._used_tools = True
        if not fragment:
            return
        if known.block != self._open:
            self._fail(f"the provider interleaved the arguments of tool call {known.id!r} "
                       "with other output", out)
            return
        out.append(_event("content_block_delta", {
            "type": "content_block_delta", "index": known.block,
            "delta": {"type": "input_json_delta", "partial_json": fragment},
        }))

    def _open_block(self, block: dict[str, Any], out: list[bytes]) -> None:
        self._close_block(out)
        self._open = self._block
        self._block += 1
        out.append(_event("content_block_start", {
            "type": "content_block_start", "index": self._open, "content_block": block,
        }))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        out.append(_event("content_block_stop", {"type": "content_block_stop",
                                                 "index": self._open}))
        self._open = None
        self._text_open = False
