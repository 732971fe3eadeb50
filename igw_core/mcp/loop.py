"""The agent loop of one chat request: call the model, run its MCP tool calls, repeat.

:class:`AgentLoop` is IO-free. It answers with decisions: :class:`CallModel` (send this
body to the provider), :class:`CallTools` (run these tool calls, in parallel) and
:class:`Finish` (what is left to send the client). It is fed the provider's answers
(a JSON completion, or event-stream chunks) and the tool results. At most
:data:`MAX_ROUNDS` provider calls are made per request.

Streaming: content deltas of every round go to the client as they arrive (through
:meth:`AgentLoop.receive_chunk`); ``mcp_*`` tool-call deltas never do; the client's own
tool-call deltas do, re-indexed from 0; all chunks carry the first round's id; the
finish chunk, one usage chunk (summed over rounds) and ``data: [DONE]`` come once, at
the very end.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from igw_core.errors import LocalProtocolError
from igw_core.mcp.catalog import Catalogue, client_function_names, merge_tools
from igw_core.report import Usage
from igw_core.sse import DONE, SSEParser, encode_data
from igw_core.usage import usage_from_object

__all__ = [
    "MAX_ROUNDS",
    "AgentLoop",
    "CallModel",
    "CallTools",
    "Finish",
    "LoopState",
    "ToolInvocation",
    "stream_of_completion",
]

#: Provider calls per chat request, the first included: at most MAX_ROUNDS - 1 rounds of
#: tool execution happen before the model's answer is returned as it stands.
MAX_ROUNDS = 10


class LoopState(enum.Enum):
    """Where the loop is."""

    IDLE = "idle"  # start() not called yet
    MODEL = "model"  # a provider call is outstanding
    TOOLS = "tools"  # tool calls are outstanding
    DONE = "done"  # Finish was returned


@dataclass(frozen=True, slots=True)
class CallModel:
    """Call the provider with ``body`` (the chat request of round ``round``, from 1)."""

    round: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ToolInvocation:
    """One MCP tool call to execute.

    Fields:
        id: the tool call id (unique within the request); its result answers it.
        function: the name the model called (``mcp_<name>``).
        server: the MCP server's URL.
        tool: the tool's name on that server.
        arguments: the parsed arguments object.
    """

    id: str
    function: str
    server: str
    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallTools:
    """Execute these tool calls (in parallel) and feed each result back by id."""

    round: int
    calls: tuple[ToolInvocation, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    """The loop is over.

    Fields:
        body: non-streaming: the completion body for the client; streaming: the last
            bytes of the event stream (finish chunk, usage chunk, ``data: [DONE]``).
        rounds: how many provider calls were made.
        limit_reached: the model still wanted MCP tools when :data:`MAX_ROUNDS` ran out.
    """

    body: bytes
    rounds: int
    limit_reached: bool = False


Decision = CallModel | CallTools | Finish


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _add(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return more
    return Usage(total.prompt_tokens + more.prompt_tokens,
                 total.completion_tokens + more.completion_tokens,
                 total.total_tokens + more.total_tokens)


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


@dataclass(slots=True)
class _Slot:
    """A streamed tool call being assembled from its deltas."""

    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    kind: str = ""  # "" until the name is known, then "mcp" or "client"
    client_index: int = -1
    held: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("id"), str) and delta["id"]:
            self.id = delta["id"]
        if isinstance(delta.get("type"), str):
            self.type = delta["type"]
        function = delta.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                self.name += function["name"]
            if isinstance(function.get("arguments"), str):
                self.arguments.append(function["arguments"])

    def as_call(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type,
                "function": {"name": self.name, "arguments": "".join(self.arguments)}}


class AgentLoop:
    """One chat request's tool loop (see the module docstring).

    Args:
        request: the parsed chat request as it goes upstream (model already routed).
        catalogue: the MCP tools available to this request.
        stream: whether the client asked for an event stream.
        max_rounds: the most provider calls to make (at least 1).

    Call :meth:`start`, then feed the provider's answer (:meth:`receive_completion`, or
    :meth:`receive_chunk` ... :meth:`end_stream`) and each tool result
    (:meth:`receive_tool_result`), performing the decisions returned, until
    :class:`Finish`. Every tool call id in the conversation gets exactly one result.
    """

    def __init__(
        self,
        request: dict[str, Any],
        catalogue: Catalogue,
        *,
        stream: bool,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        self.state = LoopState.IDLE
        self.stream = stream
        self.max_rounds = max(1, max_rounds)
        self.round = 0
        #: Token usage summed over every round, when the provider reported any.
        self.usage: Usage | None = None
        self._catalogue = catalogue
        self._client_names = client_function_names(request.get("tools"))
        self._request = dict(request)
        self._request["tools"] = merge_tools(request.get("tools"), catalogue)
        messages = request.get("messages")
        self.messages: list[Any] = list(messages) if isinstance(messages, list) else []
        self._used_ids: set[str] = set()
        self._pending: dict[str, ToolInvocation] = {}
        self._order: list[str] = []
        self._results: dict[str, str] = {}
        self._reset_stream()
        self._first_id: str | None = None
        self._template: dict[str, Any] = {}

    # -- public API ----------------------------------------------------------------------

    def start(self) -> CallModel:
        """Return the first provider call.

        Raises:
            LocalProtocolError: the loop was already started.
        """
        self._expect(LoopState.IDLE)
        return self._call_model()

    def receive_completion(self, body: bytes) -> Decision:
        """Feed the provider's whole (non-streaming) completion; return what to do next.

        A body that is not a completion object is handed to the client unchanged.

        Raises:
            LocalProtocolError: no provider call is outstanding, or the loop streams.
        """
        self._expect(LoopState.MODEL)
        if self.stream:
            raise LocalProtocolError("receive_completion on a streaming loop")
        try:
            completion = json.loads(body)
        except ValueError:
            completion = None
        if not isinstance(completion, dict):
            return self._finish(body)
        self.usage = _add(self.usage, usage_from_object(completion))
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or not isinstance(message, dict):
            return self._finish(self._final_body(completion, body))
        raw_calls = message.get("tool_calls")
        calls = [c for c in raw_calls if isinstance(c, dict)] if isinstance(raw_calls, list) else []
        mine = [c for c in calls if self._is_mcp(_call_name(c))]
        if not mine:
            return self._finish(self._final_body(completion, body))
        theirs = [c for c in calls if not self._is_mcp(_call_name(c))]
        if theirs or self.round >= self.max_rounds:
            # The client must answer its own calls; MCP calls it cannot run are left out.
            if theirs:
                message["tool_calls"] = theirs
            else:
                message.pop("tool_calls", None)
                choice["finish_reason"] = "stop"
            return self._finish(_dumps(self._with_usage(completion)),
                                limit=not theirs)
        content = message.get("content")
        return self._run_tools(content if isinstance(content, str) else None, mine)

    def receive_chunk(self, data: bytes) -> bytes:
        """Feed a piece of the provider's event stream; return bytes for the client.

        Raises:
            LocalProtocolError: no provider call is outstanding, or the loop does not stream.
        """
        self._expect(LoopState.MODEL)
        if not self.stream:
            raise LocalProtocolError("receive_chunk on a non-streaming loop")
        out: list[bytes] = []
        for event in self._parser.feed(data):
            payload = event.data
            if payload.strip() == "[DONE]":
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                out.extend(self._on_chunk(chunk))
        return b"".join(out)

    def end_stream(self) -> tuple[bytes, Decision]:
        """The provider's event stream for this round ended; return bytes and the decision.

        The bytes (client tool-call deltas still held back) go to the client before
        the decision is acted on; a :class:`Finish` carries the stream's last bytes.

        Raises:
            LocalProtocolError: no provider call is outstanding, or the loop does not stream.
        """
        self._expect(LoopState.MODEL)
        if not self.stream:
            raise LocalProtocolError("end_stream on a non-streaming loop")
        self.usage = _add(self.usage, self._round_usage)
        out: list[bytes] = []
        for slot in self._slots.values():
            if not slot.kind:  # never named: not ours, so the client's
                out.extend(self._classify(slot, force=True))
        slots = sorted(self._slots.items())
        mine = [slot for _, slot in slots if slot.kind == "mcp"]
        theirs = [slot for _, slot in slots if slot.kind == "client"]
        if mine and not theirs and self.round < self.max_rounds:
            content = "".join(self._content) or None
            return b"".join(out), self._run_tools(content, [s.as_call() for s in mine])
        reason = self._finish_reason or "stop"
        if mine and not theirs:
            reason = "stop"
        elif theirs:
            reason = "tool_calls"
        out.append(self._chunk({"index": 0, "delta": {}, "finish_reason": reason}))
        if self.usage is not None:
            tail = {k: v for k, v in self._template.items() if k != "usage"}
            out.append(encode_data(_dumps({**tail, "id": self._first_id, "choices": [],
                                           "usage": _usage_dict(self.usage)})))
        out.append(DONE)
        decision = self._finish(b"".join(out), limit=bool(mine and not theirs))
        return b"", decision

    def receive_tool_result(self, call_id: str, ok: bool, content: str) -> Decision | None:
        """Feed the result of tool call ``call_id``; return the next provider call once
        every call of the round has its result, else ``None``.

        A failed call (``ok`` false) becomes a result the model can read.

        Raises:
            LocalProtocolError: no tool call with that id is outstanding.
        """
        self._expect(LoopState.TOOLS)
        if call_id not in self._pending:
            raise LocalProtocolError(f"no tool call {call_id!r} is outstanding")
        invocation = self._pending.pop(call_id)
        self._results[call_id] = content if ok else _error_text(invocation.function, content)
        if self._pending:
            return None
        return self._next_round()

    # -- rounds --------------------------------------------------------------------------

    def _expect(self, state: LoopState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"agent loop is {self.state.value}, not {state.value}")

    def _call_model(self) -> CallModel:
        self.round += 1
        self.state = LoopState.MODEL
        self._reset_stream()
        body = _dumps({**self._request, "messages": self.messages})
        return CallModel(self.round, body)

    def _run_tools(self, content: str | None, calls: Iterable[dict[str, Any]]) -> Decision:
        assistant_calls: list[dict[str, Any]] = []
        invocations: list[ToolInvocation] = []
        self._order = []
        self._results = {}
        for number, call in enumerate(calls):
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id or call_id in self._used_ids:
                call_id = f"call_igw_{self.round}_{number}"
                while call_id in self._used_ids:
                    call_id += "_"
            self._used_ids.add(call_id)
            name = _call_name(call)
            function = call.get("function")
            raw = function.get("arguments") if isinstance(function, dict) else None
            arguments_text = raw if isinstance(raw, str) else _dumps(raw or {}).decode()
            assistant_calls.append({"id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": arguments_text}})
            self._order.append(call_id)
            tool = self._catalogue.get(name)
            assert tool is not None  # only calls to catalogue tools get here
            arguments, problem = _parse_arguments(arguments_text)
            if problem:
                self._results[call_id] = _error_text(name, problem)
                continue
            invocations.append(ToolInvocation(call_id, name, tool.server, tool.name, arguments))
        self.messages.append({"role": "assistant", "content": content,
                              "tool_calls": assistant_calls})
        if not invocations:
            return self._next_round()
        self._pending = {inv.id: inv for inv in invocations}
        self.state = LoopState.TOOLS
        return CallTools(self.round, tuple(invocations))

    def _next_round(self) -> CallModel:
        for call_id in self._order:
            self.messages.append({"role": "tool", "tool_call_id": call_id,
                                  "content": self._results[call_id]})
        self._order = []
        self._results = {}
        return self._call_model()

    def _finish(self, body: bytes, *, limit: bool = False) -> Finish:
        self.state = LoopState.DONE
        return Finish(body, self.round, limit)

    def _final_body(self, completion: dict[str, Any], body: bytes) -> bytes:
        if self.round == 1:
            return body  # nothing changed: the provider's bytes as they came
        return _dumps(self._with_usage(completion))

    def _with_usage(self, completion: dict[str, Any]) -> dict[str, Any]:
        if self.usage is not None:
            completion["usage"] = _usage_dict(self.usage)
        return completion

    def _is_mcp(self, name: str) -> bool:
        return name not in self._client_names and self._catalogue.get(name) is not None

    # -- streaming -----------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._parser = SSEParser()
        self._slots: dict[int, _Slot] = {}
        self._content: list[str] = []
        self._finish_reason: str | None = None
        self._next_client_index = 0
        self._round_usage: Usage | None = None

    def _on_chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._first_id is None and isinstance(chunk.get("id"), str):
            self._first_id = chunk["id"]
        self._template = {k: v for k, v in chunk.items() if k != "choices"}
        if isinstance(chunk.get("usage"), dict):
            # Kept per round, last one wins: some providers repeat a running total.
            self._round_usage = usage_from_object(chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return []  # the usage chunk: summed and sent once at the end
        out: list[bytes] = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:  # n > 1: the loop follows choice 0 only
                out.append(self._chunk(choice))
                continue
            out.extend(self._on_choice(choice))
        return out

    def _on_choice(self, choice: dict[str, Any]) -> list[bytes]:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish_reason = finish
        out_delta = {k: v for k, v in delta.items() if k != "tool_calls"}
        if self.round > 1:
            out_delta.pop("role", None)  # the client already has the assistant's role
        if "role" not in out_delta and all(v is None or v == "" for v in out_delta.values()):
            out_delta = {}  # nothing the client can see, e.g. what remains of an MCP call
        content = delta.get("content")
        if isinstance(content, str):
            self._content.append(content)
        forwarded: list[dict[str, Any]] = []
        out: list[bytes] = []
        tool_deltas = delta.get("tool_calls")
        for tool_delta in tool_deltas if isinstance(tool_deltas, list) else ():
            if not isinstance(tool_delta, dict):
                continue
            index = tool_delta.get("index", 0)
            slot = self._slots.setdefault(index if isinstance(index, int) else 0, _Slot())
            slot.merge(tool_delta)
            if slot.kind == "client":
                forwarded.append({**tool_delta, "index": slot.client_index})
            elif not slot.kind:
                slot.held.append(tool_delta)
                out.extend(self._classify(slot))
        if forwarded:
            out_delta["tool_calls"] = forwarded
        if out_delta:
            out.insert(0, self._chunk({**choice, "delta": out_delta, "finish_reason": None}))
        return out

    def _classify(self, slot: _Slot, *, force: bool = False) -> list[bytes]:
        """Decide whose call ``slot`` is once it has a name; release a client's held deltas."""
        if not slot.name and not force:
            return []
        if self._is_mcp(slot.name):
            slot.kind = "mcp"
            slot.held = []
            return []
        slot.kind = "client"
        slot.client_index = self._next_client_index
        self._next_client_index += 1
        held = [{**d, "index": slot.client_index} for d in slot.held]
        slot.held = []
        if not held:
            return []
        return [self._chunk({"index": 0, "delta": {"tool_calls": held}, "finish_reason": None})]

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        chunk = {k: v for k, v in self._template.items() if k != "usage"}
        chunk["id"] = self._first_id if self._first_id is not None else chunk.get("id")
        chunk["choices"] = [choice]
        if "usage" in self._template:
            chunk["usage"] = None
        return encode_data(_dumps(chunk))


def stream_of_completion(body: bytes) -> bytes:
    """Return the event stream equivalent to a whole completion (``b""`` if it is none).

    For a provider that answers a streaming request with one JSON completion: the loop
    then treats it like any stream.
    """
    try:
        completion = json.loads(body)
    except ValueError:
        return b""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        return b""
    base = {k: v for k, v in completion.items() if k not in ("choices", "usage")}
    base["object"] = "chat.completion.chunk"
    events: list[bytes] = []
    for choice in completion["choices"]:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        delta = dict(message) if isinstance(message, dict) else {}
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [{**call, "index": n} for n, call in enumerate(calls)
                                   if isinstance(call, dict)]
        events.append(encode_data(_dumps({**base, "choices": [{
            "index": choice.get("index", 0), "delta": delta,
            "finish_reason": choice.get("finish_reason")}]})))
    if isinstance(completion.get("usage"), dict):
        events.append(encode_data(_dumps({**base, "choices": [],
                                          "usage": completion["usage"]})))
    return b"".join(events)


def _call_name(call: dict[str, Any]) -> str:
    function = call.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        name: str = function["name"]
        return name
    return ""


def _parse_arguments(text: str) -> tuple[dict[str, Any], str]:
    """Return ``(arguments, "")``, or ``({}, problem)`` when they are not a JSON object."""
    if not text.strip():
        return {}, ""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return {}, f"arguments are not valid JSON ({exc})"
    if not isinstance(parsed, dict):
        return {}, "arguments must be a JSON object"
    return parsed, ""


def _error_text(function: str, detail: str) -> str:
    return f"Error: tool {function} failed: {detail or 'no detail given'}"
