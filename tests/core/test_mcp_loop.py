"""igw_core.mcp.loop: the agent loop's rounds, round limit, client tools and streaming rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from igw_core.errors import LocalProtocolError
from igw_core.mcp.catalog import build_catalogue
from igw_core.mcp.loop import (
    MAX_ROUNDS,
    AgentLoop,
    CallModel,
    CallTools,
    Finish,
    LoopState,
)
from tests.support.sse import parse_sse

SERVER = "http://tools.test/mcp"
CATALOGUE = build_catalogue([(SERVER, [{"name": "add", "inputSchema": {"type": "object"}},
                                       {"name": "echo"}, {"name": "fail"}])])
CLIENT_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
USER = [{"role": "user", "content": "hi"}]


def _request(stream: bool = False, tools: list[Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "m", "messages": list(USER), "stream": stream}
    if tools is not None:
        request["tools"] = tools
    return request


def _call(name: str, args: Any = None, id: str | None = "c1") -> dict[str, Any]:
    arguments = args if isinstance(args, str) else json.dumps(args or {})
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if id is not None:
        call["id"] = id
    return call


def _completion(content: str | None = None, calls: list[dict[str, Any]] | None = None,
                usage: int = 1) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return json.dumps({
        "id": "cmpl", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": usage, "completion_tokens": usage, "total_tokens": 2 * usage},
    }).encode()


def _stream(content: str | None, calls: list[dict[str, Any]] | None, *, id: str = "s",
            usage: int = 1) -> bytes:
    """An OpenAI-style event stream: role, content pieces, tool-call deltas, finish, usage."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return "data: " + json.dumps({"id": id, "object": "chat.completion.chunk", "model": "m",
                                      "choices": [{"index": 0, "delta": delta,
                                                   "finish_reason": finish}],
                                      "usage": None}) + "\n\n"
    out = [chunk({"role": "assistant", "content": ""})]
    for piece in (content[i:i + 3] for i in range(0, len(content or ""), 3)):
        out.append(chunk({"content": piece}))
    for index, call in enumerate(calls or []):
        head: dict[str, Any] = {"index": index, "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""}}
        if "id" in call:
            head["id"] = call["id"]
        out.append(chunk({"tool_calls": [head]}))
        arguments = call["function"]["arguments"]
        for i in range(0, len(arguments), 4):
            out.append(chunk({"tool_calls": [{"index": index,
                                              "function": {"arguments": arguments[i:i + 4]}}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    out.append("data: " + json.dumps({"id": id, "object": "chat.completion.chunk", "model": "m",
                                      "choices": [], "usage": {"prompt_tokens": usage,
                                                               "completion_tokens": usage,
                                                               "total_tokens": 2 * usage}})
               + "\n\n")
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def _feed_stream(loop: AgentLoop, data: bytes, step: int = 7) -> tuple[bytes, Any]:
    sent = b"".join(loop.receive_chunk(data[i:i + step]) for i in range(0, len(data), step))
    tail, decision = loop.end_stream()
    return sent + tail, decision


# -- non-streaming ------------------------------------------------------------------------


def test_answer_without_tool_calls_is_returned_byte_for_byte() -> None:
    loop = AgentLoop(_request(), CATALOGUE, stream=False)
    first = loop.start()
    sent = json.loads(first.body)
    assert [t["function"]["name"] for t in sent["tools"]] == ["mcp_add", "mcp_echo", "mcp_fail"]
    body = _completion("hello")
    assert loop.receive_completion(body) == Finish(body, 1)


def test_tool_round_appends_assistant_message_and_results_then_sums_usage() -> None:
    loop = AgentLoop(_request(tools=[CLIENT_TOOL]), CATALOGUE, stream=False)
    loop.start()
    decision = loop.receive_completion(_completion("thinking", [_call("mcp_add", {"a": 1}, "x"),
                                                                _call("mcp_echo", {}, "y")]))
    assert isinstance(decision, CallTools)
    assert [(c.id, c.tool, c.arguments) for c in decision.calls] == [
        ("x", "add", {"a": 1}), ("y", "echo", {})]
    assert loop.receive_tool_result("y", False, "server down") is None
    follow = loop.receive_tool_result("x", True, "2")
    assert isinstance(follow, CallModel) and follow.round == 2
    messages = json.loads(follow.body)["messages"]
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == "thinking"
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["x", "y"]
    assert messages[2] == {"role": "tool", "tool_call_id": "x", "content": "2"}
    assert messages[3]["tool_call_id"] == "y" and messages[3]["content"].startswith("Error:")
    assert "server down" in messages[3]["content"]
    final = loop.receive_completion(_completion("done", usage=5))
    assert isinstance(final, Finish) and final.rounds == 2
    assert json.loads(final.body)["usage"] == {"prompt_tokens": 6, "completion_tokens": 6,
                                               "total_tokens": 12}


def test_client_tool_calls_go_back_to_the_client_without_mcp_calls() -> None:
    loop = AgentLoop(_request(tools=[CLIENT_TOOL]), CATALOGUE, stream=False)
    loop.start()
    decision = loop.receive_completion(_completion(None, [_call("mcp_add", {}, "a"),
                                                          _call("lookup", {}, "b")]))
    assert isinstance(decision, Finish)
    message = json.loads(decision.body)["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["b"]


def test_a_client_tool_named_like_an_mcp_tool_wins() -> None:
    clash = {"type": "function", "function": {"name": "mcp_add", "parameters": {}}}
    loop = AgentLoop(_request(tools=[clash]), CATALOGUE, stream=False)
    names = [t["function"]["name"] for t in json.loads(loop.start().body)["tools"]]
    assert names.count("mcp_add") == 1 and names[0] == "mcp_add"
    decision = loop.receive_completion(_completion(None, [_call("mcp_add", {})]))
    assert isinstance(decision, Finish)


def test_bad_arguments_become_an_error_result_without_a_call() -> None:
    loop = AgentLoop(_request(), CATALOGUE, stream=False)
    loop.start()
    decision = loop.receive_completion(_completion(None, [_call("mcp_add", "{not json", "k"),
                                                          _call("mcp_echo", "[1]", "l")]))
    assert isinstance(decision, CallModel)
    tool_messages = [m for m in json.loads(decision.body)["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["k", "l"]
    assert all(m["content"].startswith("Error:") for m in tool_messages)


def test_missing_and_repeated_ids_are_replaced_by_unique_ones() -> None:
    loop = AgentLoop(_request(), CATALOGUE, stream=False)
    loop.start()
    decision = loop.receive_completion(_completion(None, [_call("mcp_add", {}, None),
                                                          _call("mcp_add", {}, "dup"),
                                                          _call("mcp_add", {}, "dup")]))
    assert isinstance(decision, CallTools)
    ids = [c.id for c in decision.calls]
    assert len(set(ids)) == 3 and "dup" in ids


def test_round_limit_ends_the_loop_without_unexecuted_mcp_calls() -> None:
    loop = AgentLoop(_request(), CATALOGUE, stream=False)
    decision: Any = loop.start()
    calls = 0
    while not isinstance(decision, Finish):
        calls += 1
        answer = _completion("again", [_call("mcp_add", {}, f"i{calls}")])
        decision = loop.receive_completion(answer)
        if isinstance(decision, CallTools):
            decision = loop.receive_tool_result(decision.calls[0].id, True, "ok")
    assert calls == MAX_ROUNDS == decision.rounds and decision.limit_reached
    choice = json.loads(decision.body)["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "again"


def test_events_out_of_order_raise() -> None:
    loop = AgentLoop(_request(), CATALOGUE, stream=False)
    with pytest.raises(LocalProtocolError):
        loop.receive_completion(b"{}")
    loop.start()
    with pytest.raises(LocalProtocolError):
        loop.receive_tool_result("x", True, "")
    with pytest.raises(LocalProtocolError):
        loop.receive_chunk(b"")


# -- streaming ----------------------------------------------------------------------------


def _payloads(data: bytes) -> list[str]:
    return parse_sse(data)


def test_stream_shows_every_rounds_content_once_with_one_done_and_no_mcp_deltas() -> None:
    loop = AgentLoop(_request(stream=True), CATALOGUE, stream=True)
    loop.start()
    first, decision = _feed_stream(loop, _stream("Let me add. ", [_call("mcp_add", {"a": 2})],
                                                 id="one"))
    assert isinstance(decision, CallTools)
    follow = loop.receive_tool_result(decision.calls[0].id, True, "4")
    assert isinstance(follow, CallModel)
    messages = json.loads(follow.body)["messages"]
    assert messages[1]["content"] == "Let me add. "
    assert messages[1]["tool_calls"][0]["function"] == {"name": "mcp_add",
                                                        "arguments": '{"a": 2}'}
    second, final = _feed_stream(loop, _stream("It is 4.", None, id="two", usage=3))
    assert isinstance(final, Finish)
    payloads = _payloads(first + second + final.body)
    assert payloads.count("[DONE]") == 1 and payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["id"] for c in chunks} == {"one"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me add. It is 4."
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert len(roles) == 1
    usage = [c["usage"] for c in chunks if not c["choices"]]
    assert usage == [{"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}]


def test_stream_content_is_released_as_it_arrives() -> None:
    loop = AgentLoop(_request(stream=True), CATALOGUE, stream=True)
    loop.start()
    data = _stream("abcdef", None)
    cut = data.index(b"\n\n", data.index(b"abc")) + 2  # just past the "abc" event
    early = loop.receive_chunk(data[:cut])
    assert b'"abc"' in early


def test_stream_client_tool_calls_are_forwarded_reindexed_and_end_the_loop() -> None:
    loop = AgentLoop(_request(stream=True, tools=[CLIENT_TOOL]), CATALOGUE, stream=True)
    loop.start()
    out, decision = _feed_stream(loop, _stream(None, [_call("mcp_add", {"a": 1}, "m"),
                                                      _call("lookup", {"q": "x"}, "c")]))
    assert isinstance(decision, Finish)
    chunks = [json.loads(p) for p in _payloads(out + decision.body)[:-1]]
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls")
              or []]
    assert {d["index"] for d in deltas} == {0}
    assert deltas[0]["id"] == "c" and deltas[0]["function"]["name"] == "lookup"
    assert "".join(d["function"].get("arguments") or "" for d in deltas) == '{"q": "x"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


# -- the loop as a state machine ----------------------------------------------------------

NAMES = st.sampled_from(["mcp_add", "mcp_echo", "mcp_fail", "lookup", "mcp_unknown"])
IDS = st.sampled_from([None, "a", "b", "c", "a"])
ARGS = st.sampled_from(['{"a": 1}', "{}", "", "{bad", "[]"])
CALLS = st.lists(st.tuples(NAMES, IDS, ARGS), max_size=4)


class LoopMachine(RuleBasedStateMachine):
    """Random models and tool outcomes: every tool call id gets one result; the loop ends."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: AgentLoop | None = None
        self.pending: list[str] = []
        self.sent = b""
        self.model_calls = 0

    @initialize(stream=st.booleans(), rounds=st.integers(1, 5), client=st.booleans())
    def start(self, stream: bool, rounds: int, client: bool) -> None:
        tools = [CLIENT_TOOL] if client else None
        self.loop = AgentLoop(_request(stream, tools), CATALOGUE, stream=stream,
                              max_rounds=rounds)
        self.client = client
        self.handle(self.loop.start())

    def handle(self, decision: Any) -> None:
        if isinstance(decision, CallModel):
            self.model_calls += 1
            assert decision.round == self.model_calls
        elif isinstance(decision, CallTools):
            self.pending = [c.id for c in decision.calls]
            assert len(set(self.pending)) == len(self.pending)
        elif isinstance(decision, Finish):
            self.sent += decision.body

    @precondition(lambda self: self.loop is not None and self.loop.state is LoopState.MODEL)
    @rule(calls=CALLS, content=st.one_of(st.none(), st.text(max_size=5)), step=st.integers(1, 40))
    def model_answers(self, calls: list[tuple[str, str | None, str]], content: str | None,
                      step: int) -> None:
        assert self.loop is not None
        specs = [_call(name, arguments, id) for name, id, arguments in calls]
        answered = self.loop.round
        if self.loop.stream:
            out, decision = _feed_stream(self.loop, _stream(content, specs), step)
            self.sent += out
        else:
            decision = self.loop.receive_completion(_completion(content, specs))
        self.handle(decision)
        if answered >= self.loop.max_rounds:  # the last allowed answer ends the loop
            assert self.loop.state is LoopState.DONE

    @precondition(lambda self: self.loop is not None and self.loop.state is LoopState.TOOLS)
    @rule(data=st.data(), ok=st.booleans())
    def tool_answers(self, data: st.DataObject, ok: bool) -> None:
        assert self.loop is not None
        call_id = data.draw(st.sampled_from(self.pending))
        self.pending.remove(call_id)
        decision = self.loop.receive_tool_result(call_id, ok, "result")
        assert (decision is None) == bool(self.pending)
        if decision is not None:
            self.handle(decision)

    @precondition(lambda self: self.loop is not None and self.loop.state is LoopState.DONE)
    @rule()
    def finished(self) -> None:
        assert self.loop is not None
        if self.loop.stream:
            payloads = parse_sse(self.sent)
            assert payloads.count("[DONE]") == 1 and payloads[-1] == "[DONE]"
            for payload in payloads[:-1]:
                for choice in json.loads(payload)["choices"]:
                    for delta in choice["delta"].get("tool_calls") or []:
                        name = (delta.get("function") or {}).get("name")
                        assert name is None or CATALOGUE.get(name) is None
        else:
            message = json.loads(self.sent)["choices"][0]["message"]
            for call in message.get("tool_calls") or []:
                assert CATALOGUE.get(call["function"]["name"]) is None

    @invariant()
    def every_call_id_has_exactly_one_result(self) -> None:
        if self.loop is None:
            return
        assert self.loop.round <= self.loop.max_rounds
        assert self.model_calls == self.loop.round
        asked: list[str] = []
        answered: list[str] = []
        for message in self.loop.messages:
            if message.get("role") == "assistant":
                asked += [c["id"] for c in message.get("tool_calls") or []]
            elif message.get("role") == "tool":
                assert message["tool_call_id"] in asked  # a result follows its call
                answered.append(message["tool_call_id"])
        assert len(set(asked)) == len(asked)
        assert len(set(answered)) == len(answered)
        outstanding = set(asked) - set(answered)
        if self.loop.state is LoopState.TOOLS:
            assert set(self.pending) <= outstanding
        else:
            assert outstanding == set()


LoopMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25,
                                         deadline=None)
TestLoopMachine = LoopMachine.TestCase
