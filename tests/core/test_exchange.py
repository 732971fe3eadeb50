"""The Exchange state machine: driven through random legal event orders by a hypothesis
state machine that plays the frontend, plus one example test per promise of the HTTP surface."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from igw_core.config import load_settings
from igw_core.effects import (
    Abort,
    CallProvider,
    Effect,
    ReadProviderBody,
    ReadRequestBody,
    RelayBody,
    Report,
    SendData,
    SendEnd,
    SendHead,
)
from igw_core.errors import LocalProtocolError
from igw_core.events import (
    BodyFailure,
    ClientGone,
    Event,
    FailureReason,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    ProviderResponse,
    RequestBodyFailed,
    RequestData,
    RequestEnd,
    RequestHead,
)
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.report import ROUTE_LABELS, ExchangeRecord, Usage

OPENAI_KEY = "sk-openai-TEST-KEY-0123456789"
ANTHROPIC_KEY = "sk-ant-TEST-KEY-abcdef"
GROQ_KEY = "gsk-TEST-KEY-groq-xyz"
MISTRAL_KEY = "mistral-TEST-KEY-777"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GROQ_KEY, MISTRAL_KEY)
LIMIT = 2048
ENV = {
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    "GROQ_API_KEY": GROQ_KEY,
    "MISTRAL_API_KEY": MISTRAL_KEY,
    "SERVER_MAX_REQUEST_BODY_SIZE": str(LIMIT),
    "DISALLOWED_MODELS": "openai/gpt-forbidden",
    "TELEMETRY_ENABLE": "true",  # the report carries token usage only when it is recorded
}
GATEWAY = Gateway.from_settings(load_settings(ENV))
CONFIGURED = ("openai", "anthropic", "groq", "mistral")  # in the provider table's order
FRESH_ID = "fresh-request-id-0001"
CLIENT_TOKEN = b"Bearer client-token-must-not-travel"

#: Statuses the gateway itself answers with; anything else must be upstream's.
OWN_STATUSES = {200, 400, 403, 404, 405, 413, 502, 504}
AUTH_HEADER = {
    "openai": (b"authorization", b"Bearer " + OPENAI_KEY.encode()),
    "anthropic": (b"x-api-key", ANTHROPIC_KEY.encode()),
    "groq": (b"authorization", b"Bearer " + GROQ_KEY.encode()),
    "mistral": (b"authorization", b"Bearer " + MISTRAL_KEY.encode()),
}
BASE_URL = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
}
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-connection", b"proxy-authenticate", b"proxy-authorization"}


# --- helpers ------------------------------------------------------------------------------


def head(
    method: str,
    path: str,
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    now: float = 0.0,
) -> RequestHead:
    return RequestHead(method, path, query, headers or [], now, wall=0.0, fresh_id=FRESH_ID)


def feed(exchange: Exchange, *events: Event) -> list[Effect]:
    out: list[Effect] = []
    for event in events:
        out.extend(exchange.receive(event))
    return out


def chat(
    request: dict[str, Any] | bytes,
    *,
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    gateway: Gateway = GATEWAY,
) -> tuple[Exchange, list[Effect]]:
    """Send a whole chat request; return the exchange and every effect so far."""
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    exchange = Exchange(gateway)
    out = feed(exchange, head("POST", "/v1/chat/completions", query, headers),
               RequestData(body), RequestEnd())
    return exchange, out


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    def json(self) -> Any:
        return json.loads(self.body)


def response(effects: list[Effect]) -> Response:
    """The complete response the effects send, checking it is one."""
    heads = [e for e in effects if isinstance(e, SendHead)]
    assert len(heads) == 1, effects
    assert any(isinstance(e, SendEnd) for e in effects), effects
    body = b"".join(e.data for e in effects if isinstance(e, SendData))
    return Response(heads[0].status, list(heads[0].headers), body)


def error_of(effects: list[Effect], status: int) -> dict[str, Any]:
    """Assert an OpenAI-shaped error response with ``status``; return its ``error`` object."""
    res = response(effects)
    assert res.status == status, (res.status, res.body)
    assert res.header(b"content-type") == [b"application/json"]
    error = res.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def report_of(effects: list[Effect]) -> ExchangeRecord:
    assert isinstance(effects[-1], Report), effects
    return effects[-1].record


def only(effects: list[Effect], kind: type[Effect]) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def check_sequence(effects: list[Effect], finished: bool) -> None:
    """The effect-order rules every exchange keeps, whatever happened."""
    seen_head = ended = False
    reports = 0
    for i, effect in enumerate(effects):
        if isinstance(effect, Report):
            reports += 1
            assert i == len(effects) - 1, "Report must be the last effect"
            continue
        if ended:
            pytest.fail(f"{effect!r} after the response ended")
        if isinstance(effect, SendHead):
            assert not seen_head, "two SendHead effects"
            seen_head = True
        elif isinstance(effect, SendData):
            assert seen_head, "SendData before SendHead"
        elif isinstance(effect, SendEnd):
            assert seen_head, "SendEnd before SendHead"
            ended = True
        elif isinstance(effect, Abort):
            ended = True
    assert reports == (1 if finished else 0)


def assert_no_secret(effects: list[Effect]) -> None:
    for effect in effects:
        if isinstance(effect, SendHead):
            text = repr(effect.headers)
        elif isinstance(effect, SendData):
            text = effect.data.decode("utf-8", "replace")
        elif isinstance(effect, Report):
            text = repr(effect.record)
        else:
            continue
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {effect!r}"


# --- generated requests -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=5,
)
valid_ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                    max_size=128)
invalid_ids = st.sampled_from(["", "has space", "x" * 129, "tab\tid", "ünïcode"])


@dataclass
class Scenario:
    """One client request and what the HTTP surface says must become of it."""

    kind: str  # chat | proxy | models | fixed
    method: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    expect_head: int | str  # a status, "read" or "collect"
    expect_end: int | str = "call"  # after the body: a status or "call"
    provider: str = ""
    stream: bool = False
    request: dict[str, Any] = field(default_factory=dict)
    upstream_model: str = ""
    request_id: str = FRESH_ID


CHAT_ROUTES = [
    # (model, query, provider, model as sent upstream)
    ("openai/gpt-4o-mini", "", "openai", "gpt-4o-mini"),
    ("OpenAI/gpt-4o", "", "openai", "gpt-4o"),
    ("groq/meta-llama/llama-4-scout", "", "groq", "meta-llama/llama-4-scout"),
    ("anthropic/claude-3-5-haiku", "", "anthropic", "claude-3-5-haiku"),
    ("mistral/mistral-large", "", "mistral", "mistral-large"),
    ("gpt-4o", "provider=openai", "openai", "gpt-4o"),
    ("meta-llama/llama-4", "provider=GROQ", "groq", "meta-llama/llama-4"),
]
CHAT_REFUSALS = [
    # (model, query, status)
    ("nope/model-x", "", 400),  # unknown provider
    ("deepseek/deepseek-chat", "", 400),  # provider without a key
    ("gpt-4o", "", 400),  # no provider
    ("gpt-4o", "provider=nope", 400),
    ("openai/gpt-forbidden", "", 403),  # DISALLOWED_MODELS
]


@st.composite
def chat_scenarios(draw: st.DrawFn) -> Scenario:
    stream = draw(st.booleans())
    messages: list[Any] = [{"role": "user", "content": draw(st.text(max_size=40))}]
    extra = draw(st.dictionaries(st.sampled_from(["temperature", "x_custom", "metadata", "user",
                                                  "seed", "tools"]), json_values, max_size=2))
    choice = draw(st.sampled_from(["ok", "ok", "ok", "refused", "vision", "malformed"]))
    query, provider, upstream_model, expect_end = "", "", "", "call"
    if choice == "ok":
        model, query, provider, upstream_model = draw(st.sampled_from(CHAT_ROUTES))
    elif choice == "refused":
        model, query, expect_end = draw(st.sampled_from(CHAT_REFUSALS))
    else:
        model, expect_end = "openai/gpt-4o", 400
        if choice == "vision":
            messages.append({"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": draw(st.sampled_from(
                    ["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="]))}},
            ]})
    request: dict[str, Any] = {"model": model, "messages": messages, **extra}
    if stream:
        request["stream"] = True
    if draw(st.integers(0, 3)) == 0:
        request["pad"] = "x" * draw(st.integers(0, 2 * LIMIT))
    body = json.dumps(request, ensure_ascii=draw(st.booleans())).encode()
    if choice == "malformed":
        body = draw(st.sampled_from([body[:-1], b"[" + body + b"]", b"", b"not json", b"null",
                                     b'{"model": "openai/gpt-4o", "messages": "hi"}']))
    if len(body) > LIMIT:
        expect_end = 413
    return Scenario("chat", "POST", "/v1/chat/completions", query, [], body, "read", expect_end,
                    provider, stream, request, upstream_model)


PROXY_TARGETS = [
    # (path, provider or "", status at head or "read", expected upstream URL)
    ("/proxy/openai/v1/chat/completions", "openai", "https://api.openai.com/v1/chat/completions"),
    ("/proxy/openai/chat/completions", "openai", "https://api.openai.com/v1/chat/completions"),
    ("/proxy/OpenAI/models", "openai", "https://api.openai.com/v1/models"),
    ("/proxy/anthropic/v1/messages", "anthropic", "https://api.anthropic.com/v1/messages"),
    ("/proxy/nope/v1/models", "", ""),
    ("/proxy/deepseek/models", "", ""),
]


@st.composite
def proxy_scenarios(draw: st.DrawFn) -> Scenario:
    path, provider, url = draw(st.sampled_from(PROXY_TARGETS))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    body = draw(st.binary(max_size=200))
    if provider and draw(st.integers(0, 3)) == 0:
        body += b"z" * draw(st.integers(0, 2 * LIMIT))
    query = draw(st.sampled_from(["", "limit=2", "a=1&b=%20x"]))
    if not provider:
        return Scenario("proxy", method, path, query, [], body, 400)
    return Scenario("proxy", method, path, query, [], body, "read",
                    413 if len(body) > LIMIT else "call", provider, request={"url": url})


@st.composite
def model_scenarios(draw: st.DrawFn) -> Scenario:
    query = draw(st.sampled_from(["", "", "provider=openai", "provider=Groq", "provider=nope",
                                  "provider=deepseek"]))
    bad = query in ("provider=nope", "provider=deepseek")
    return Scenario("models", "GET", "/v1/models", query, [], b"", 400 if bad else "collect")


FIXED = [
    ("GET", "/health", 200),
    ("POST", "/health", 405),
    ("GET", "/v1/chat/completions", 405),
    ("PUT", "/v1/chat/completions", 405),
    ("POST", "/v1/models", 405),
    ("GET", "/v1/mcp/tools", 403),
    ("GET", "/nope", 404),
    ("POST", "/v1", 404),
    ("GET", "/proxy", 404),
    ("GET", "/v1/chat/completions/", 404),
]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    kind = draw(st.sampled_from(["chat", "chat", "chat", "proxy", "proxy", "models", "fixed"]))
    if kind == "chat":
        sc = draw(chat_scenarios())
    elif kind == "proxy":
        sc = draw(proxy_scenarios())
    elif kind == "models":
        sc = draw(model_scenarios())
    else:
        method, path, status = draw(st.sampled_from(FIXED))
        sc = Scenario("fixed", method, path, "", [], b"", status)
    headers = [(b"content-type", b"application/json"), (b"authorization", CLIENT_TOKEN)]
    if draw(st.booleans()):
        headers.append((b"x-api-key", CLIENT_TOKEN))
    if sc.expect_head in ("read",) and draw(st.booleans()):
        headers.append((b"content-length", str(len(sc.body)).encode()))
        if len(sc.body) > LIMIT:
            sc.expect_head = 413  # refused from the head, before reading
    given = draw(st.none() | valid_ids | invalid_ids)
    if given is not None:
        headers.append((b"x-request-id", given.encode()))
        if given and len(given) <= 128 and all(0x21 <= ord(c) <= 0x7E for c in given):
            sc.request_id = given
    sc.headers = draw(st.permutations(headers))
    return sc


# --- the state machine --------------------------------------------------------------------

STATUSES = st.sampled_from([200, 200, 201, 400, 401, 404, 422, 429, 500, 503])
REASONS = st.sampled_from(list(FailureReason))
DETAILS = st.sampled_from(["", "connection refused", "read timed out", "TLS handshake failed",
                           "peer reset", "ünïcode détail"])
UPSTREAM_ERRORS = st.sampled_from([
    b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}',
    b'{"error": "model overloaded"}',
    b'{"message": "bad things"}',
    b'{"detail": "Not Found"}',
    b"upstream exploded",
    b"",
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"error": {"code": 5}}',
])
MODEL_NAMES = st.lists(st.sampled_from(["gpt-4o", "gpt-forbidden", "claude-3", "llama/4"]),
                       max_size=4, unique=True)

LEGAL: dict[str | None, set[type[Event]]] = {
    None: set(),
    "body": {RequestData, RequestEnd},
    "head": {ProviderHead, ProviderFailed},
    "relay": {ProviderEnd, ProviderFailed},
    "read": {ProviderData, ProviderEnd, ProviderFailed},
    "collect": {ProviderResponse, ProviderFailed},
}
SAMPLE_EVENTS: list[Event] = [
    head("GET", "/health"),
    RequestData(b"x"),
    RequestEnd(),
    ProviderHead(0, 200, [], 0.0),
    ProviderData(0, b"x"),
    ProviderEnd(0, 0.0),
    ProviderResponse(0, 200, [], b"{}", 0.0),
    ProviderFailed(0, FailureReason.RESET, "boom", 0.0),
]


def upstream_body(stream: bool, usage: Usage | None, text: str) -> bytes:
    usage_obj = None if usage is None else {
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens}
    if not stream:
        obj: dict[str, Any] = {"id": "c1", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}}]}
        if usage_obj:
            obj["usage"] = usage_obj
        return json.dumps(obj).encode()
    chunks = [{"id": "c1", "choices": [{"index": 0, "delta": {"content": word}}]}
              for word in text.split(" ")]
    if usage_obj:
        chunks.append({"id": "c1", "choices": [], "usage": usage_obj})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (
        b"data: [DONE]\n\n")


class ExchangeMachine(RuleBasedStateMachine):
    """Plays the frontend: feeds only the events the effects so far make legal."""

    def __init__(self) -> None:
        super().__init__()
        self.ex = Exchange(GATEWAY)
        self.sc: Scenario | None = None
        self.log: list[Effect] = []
        self.clock = 0.0
        self.waiting: str | None = None  # what the frontend is doing for the core
        self.remaining = b""
        self.sent = 0
        self.client_left = False
        self.upstream_status = 0
        self.upstream_statuses: set[int] = set()
        self.leave_after = 0
        self.illegal_budget = 0
        self.steps = 0
        # relay / error-body reading
        self.relay = b""
        self.relayed = 0
        self.tap: Any = None
        self.expected_usage: Usage | None = None
        self.error_body = b""
        self.error_fed = 0
        # model lists
        self.pending: dict[int, str] = {}
        self.results: dict[int, tuple[str, Any]] = {}

    # -- plumbing --

    def now(self) -> float:
        self.clock += 0.25
        return self.clock

    def feed(self, event: Event) -> list[Effect]:
        self.steps += 1
        out = self.ex.receive(event)
        self.log.extend(out)
        check_sequence(self.log, self.ex.finished)
        assert_no_secret(out)
        for effect in out:
            if isinstance(effect, SendHead):
                self.check_head(effect)
            if isinstance(effect, Report):
                self.check_report(effect.record)
        if any(isinstance(e, SendEnd) for e in out):
            self.check_complete_body()
        if self.ex.finished:
            self.waiting = None
        return out

    def check_head(self, effect: SendHead) -> None:
        assert self.sc is not None
        assert effect.status in OWN_STATUSES | self.upstream_statuses, effect.status
        ids = [v for k, v in effect.headers if k == b"x-request-id"]
        assert ids == [self.sc.request_id.encode()], ids
        names = {k for k, _ in effect.headers}
        assert not names & HOP_BY_HOP, names

    def check_complete_body(self) -> None:
        res = response(self.log)
        if res.status >= 400 and res.body:
            error = res.json()["error"]
            assert isinstance(error["message"], str), res.body

    def check_report(self, record: ExchangeRecord) -> None:
        assert self.sc is not None
        assert record.route in ROUTE_LABELS
        assert record.request_id == self.sc.request_id
        assert record.method == self.sc.method
        if self.sc.kind == "proxy" or self.sc.path == "/health":
            assert not record.counted
        heads = [e for e in self.log if isinstance(e, SendHead)]
        if any(isinstance(e, SendEnd) for e in self.log):
            assert record.status == heads[0].status

    def expect_response(self, out: list[Effect], status: int) -> Response:
        res = response(out)
        assert res.status == status, (res.status, res.body, self.sc)
        assert isinstance(out[-1], Report)
        assert self.ex.finished
        if status >= 400:
            error_of(out, status)
        return res

    def check_call(self, call: CallProvider, provider: str) -> None:
        assert call.provider == provider
        names = [k for k, _ in call.headers]
        auth = AUTH_HEADER[provider]
        assert list(call.headers).count(auth) == 1
        assert names.count(auth[0]) == 1
        assert all(CLIENT_TOKEN not in v for _, v in call.headers)

    # -- rules --

    # Most clients stay to the end; some leave after a random number of events.
    @initialize(sc=scenarios(), leave_after=st.one_of(st.none(), st.none(), st.none(),
                                                      st.integers(0, 10)),
                illegal=st.integers(0, 2))
    def start(self, sc: Scenario, leave_after: int | None, illegal: int) -> None:
        self.sc = sc
        self.leave_after = 10**6 if leave_after is None else leave_after
        self.illegal_budget = illegal
        out = self.feed(RequestHead(sc.method, sc.path, sc.query, sc.headers, self.now(),
                                    wall=1.7e9, fresh_id=FRESH_ID))
        if sc.expect_head == "read":
            assert out == [ReadRequestBody()], out
            self.waiting = "body"
            self.remaining = sc.body
        elif sc.expect_head == "collect":
            assert all(isinstance(e, CallProvider) and e.buffer for e in out), out
            calls: list[CallProvider] = list(out)  # type: ignore[arg-type]
            assert len({c.call for c in calls}) == len(calls)
            wanted = query_provider(sc.query)
            assert [c.provider for c in calls] == ([wanted] if wanted else list(CONFIGURED))
            for c in calls:
                self.check_call(c, c.provider)
                assert c.method == "GET"
                assert c.url == BASE_URL[c.provider] + "/models"
            self.pending = {c.call: c.provider for c in calls}
            self.waiting = "collect"
        else:
            assert isinstance(sc.expect_head, int)
            res = self.expect_response(out, sc.expect_head)
            if sc.path == "/health" and sc.expect_head == 200:
                assert res.json() == {"message": "OK"}
            if sc.expect_head == 405:
                assert res.header(b"allow")

    def request_data(self, size: int) -> None:
        chunk, self.remaining = self.remaining[:size], self.remaining[size:]
        self.sent += len(chunk)
        out = self.feed(RequestData(chunk))
        if self.sent > LIMIT:
            self.expect_response(out, 413)
        else:
            assert out == []

    def request_end(self) -> None:
        sc = self.sc
        assert sc is not None
        out = self.feed(RequestEnd())
        if sc.expect_end != "call":
            assert isinstance(sc.expect_end, int)
            error = error_of(out, sc.expect_end)
            if sc.expect_end == 400 and any(
                isinstance(m.get("content"), list) for m in sc.request.get("messages", [])
            ):
                assert "ENABLE_VISION=true" in error["message"]
            assert self.ex.finished
            return
        assert len(out) == 1 and isinstance(out[0], CallProvider), out
        call = out[0]
        assert not call.buffer
        self.check_call(call, sc.provider)
        if sc.kind == "proxy":
            assert call.method == sc.method
            assert call.body == sc.body  # unchanged, byte for byte
            url = sc.request["url"]
            assert call.url == (f"{url}?{sc.query}" if sc.query else url)
        else:
            assert call.method == "POST"
            assert call.url == BASE_URL[sc.provider] + "/chat/completions"
            sent = json.loads(call.body)
            assert sent["model"] == sc.upstream_model
            assert sent["messages"] == sc.request["messages"]
            for key, value in sc.request.items():
                if key not in ("model", "stream_options"):
                    assert sent[key] == value, key
            if sc.stream and sc.provider != "mistral":
                assert sent["stream_options"]["include_usage"] is True
            if not sc.stream:
                assert "stream_options" not in sent
        self.waiting = "head"

    def provider_head(self, status: int, data: st.DataObject) -> None:
        sc = self.sc
        assert sc is not None
        self.upstream_status = status
        self.upstream_statuses.add(status)
        ok = 200 <= status < 300
        stream = sc.stream and ok
        headers = [(b"content-type", b"text/event-stream" if stream else b"application/json")]
        headers += data.draw(st.lists(st.sampled_from([
            (b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
            (b"x-ratelimit-remaining-requests", b"99"), (b"openai-processing-ms", b"12"),
            (b"transfer-encoding", b"chunked"), (b"retry-after", b"3")]), max_size=3, unique=True))
        if ok:
            self.expected_usage = data.draw(st.none() | st.builds(
                lambda p, c: Usage(p, c, p + c), st.integers(0, 999), st.integers(0, 999)))
            self.relay = upstream_body(stream, self.expected_usage, data.draw(st.text(max_size=30)))
        else:
            self.relay = data.draw(UPSTREAM_ERRORS)
        if not stream and data.draw(st.booleans()):
            headers.append((b"content-length", str(len(self.relay)).encode()))
        out = self.feed(ProviderHead(0, status, headers, self.now()))
        if sc.kind == "proxy" or ok:
            assert [type(e) for e in out] == [SendHead, RelayBody], out
            send_head, relay = out
            assert isinstance(send_head, SendHead) and isinstance(relay, RelayBody)
            assert send_head.status == status
            assert relay.call == 0
            sent_type = [v for k, v in send_head.headers if k == b"content-type"]
            assert sent_type == [headers[0][1]]
            if stream:
                assert not [v for k, v in send_head.headers if k == b"content-length"]
            self.tap = relay.tap
            self.relayed = 0
            self.waiting = "relay"
        else:
            assert out == [ReadProviderBody(0)], out
            self.error_body, self.error_fed = self.relay, 0
            self.waiting = "read"

    def provider_fails_before_head(self, reason: FailureReason, detail: str) -> None:
        out = self.feed(ProviderFailed(0, reason, detail, self.now()))
        self.expect_response(out, 504 if reason is FailureReason.TIMEOUT else 502)

    def relay_some(self, size: int) -> None:
        # The frontend copies bytes to the client itself; the core only sees them via the tap.
        chunk = self.relay[self.relayed : self.relayed + size]
        self.relayed += len(chunk)
        if self.tap is not None and chunk:
            self.tap.feed(chunk)

    def relay_end(self) -> None:
        sc = self.sc
        assert sc is not None
        rest = self.relay[self.relayed :]
        if self.tap is not None and rest:
            self.tap.feed(rest)
        first = self.clock
        out = self.feed(ProviderEnd(0, self.now(), first_data_at=first))
        assert [type(e) for e in out] == [SendEnd, Report], out
        record = report_of(out)
        assert record.status == self.upstream_status
        if sc.kind == "chat":
            assert record.usage == self.expected_usage
            assert record.provider == sc.provider
            assert record.model == sc.upstream_model

    def relay_breaks(self, reason: FailureReason, detail: str) -> None:
        out = self.feed(ProviderFailed(0, reason, detail, self.now()))
        assert [type(e) for e in out] == [Abort, Report], out
        assert report_of(out).error

    def provider_data(self, size: int) -> None:
        chunk = self.error_body[self.error_fed : self.error_fed + size]
        self.error_fed += len(chunk)
        assert self.feed(ProviderData(0, chunk)) == []

    def provider_body_end(self) -> None:
        out = self.feed(ProviderEnd(0, self.now()))
        error = error_of(out, self.upstream_status)
        upstream = self.error_body
        try:
            parsed = json.loads(upstream)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and isinstance(
            parsed["error"].get("message"), str
        ):
            assert response(out).body == upstream  # the provider's own error, unchanged
        elif upstream.strip() and parsed is None:
            assert upstream.decode() in error["message"]

    def provider_body_fails(self, reason: FailureReason, detail: str) -> None:
        out = self.feed(ProviderFailed(0, reason, detail, self.now()))
        self.expect_response(out, 504 if reason is FailureReason.TIMEOUT else 502)

    def model_result(self, data: st.DataObject) -> None:
        sc = self.sc
        assert sc is not None
        call = data.draw(st.sampled_from(sorted(set(self.pending) - set(self.results))))
        kind = data.draw(st.sampled_from(["ok", "ok", "status", "garbage", "failed"]))
        now = self.now()
        event: Event
        if kind == "ok":
            names = data.draw(MODEL_NAMES)
            body = json.dumps({"object": "list", "data": [
                {"id": n, "object": "model", "created": 7, "owned_by": "someone"} for n in names
            ]}).encode()
            event = ProviderResponse(call, 200, [(b"content-type", b"application/json")], body,
                                     now)
            self.results[call] = ("ok", names)
        elif kind == "status":
            status = data.draw(st.sampled_from([401, 404, 429, 500, 503]))
            self.upstream_statuses.add(status)
            event = ProviderResponse(call, status, [], data.draw(UPSTREAM_ERRORS), now)
            self.results[call] = ("status", status)
        elif kind == "garbage":
            event = ProviderResponse(call, 200, [], b"<html>not json", now)
            self.results[call] = ("garbage", None)
        else:
            reason = data.draw(REASONS)
            event = ProviderFailed(call, reason, data.draw(DETAILS), now)
            self.results[call] = ("failed", reason)
        out = self.feed(event)
        if len(self.results) < len(self.pending):
            assert out == []
            return
        single = query_provider(sc.query) is not None
        outcome = self.results[0]
        if single and outcome[0] == "status":
            error_of(out, outcome[1])
        elif single and outcome[0] == "failed":
            error_of(out, 504 if outcome[1] is FailureReason.TIMEOUT else 502)
        elif single and outcome[0] == "garbage":
            assert response(out).status in (200, 502)
        else:
            res = response(out)
            assert res.status == 200
            listing = res.json()
            assert listing["object"] == "list"
            expected = [
                f"{self.pending[c]}/{n}"
                for c in sorted(self.pending)
                if self.results[c][0] == "ok"
                for n in self.results[c][1]
                if f"{self.pending[c]}/{n}" != "openai/gpt-forbidden"
            ]
            assert [m["id"] for m in listing["data"]] == expected
            assert all(m["served_by"] == m["id"].split("/")[0] for m in listing["data"])

    @precondition(lambda self: self.waiting is not None)
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """The frontend performs what the effects so far asked for; the outcome is random."""
        if self.waiting == "body":
            if self.remaining:
                # Split at random, but often send the rest at once: runs are short.
                rest = len(self.remaining)
                self.request_data(data.draw(st.sampled_from([rest, rest]) | st.integers(1, rest)))
            else:
                self.request_end()
        elif self.waiting == "head":
            # hypothesis favours the first choices: the usual outcome comes first.
            if data.draw(st.sampled_from(["head", "head", "head", "fail"])) == "head":
                self.provider_head(data.draw(STATUSES), data)
            else:
                self.provider_fails_before_head(data.draw(REASONS), data.draw(DETAILS))
        elif self.waiting == "relay":
            what = data.draw(st.sampled_from(["some", "some", "end", "end", "break"]))
            if what == "some":
                self.relay_some(data.draw(st.integers(1, max(1, len(self.relay)))))
            elif what == "end":
                self.relay_end()
            else:
                self.relay_breaks(data.draw(REASONS), data.draw(DETAILS))
        elif self.waiting == "read":
            if data.draw(st.sampled_from(["go", "go", "go", "go", "fail"])) == "fail":
                self.provider_body_fails(data.draw(REASONS), data.draw(DETAILS))
            elif self.error_fed < len(self.error_body):
                self.provider_data(data.draw(st.integers(1, len(self.error_body))))
            else:
                self.provider_body_end()
        else:
            assert self.waiting == "collect"
            self.model_result(data)

    @precondition(lambda self: self.steps >= self.leave_after or self.ex.finished)
    @rule()
    def client_gone(self) -> None:
        finished = self.ex.finished
        out = self.feed(ClientGone(self.now()))
        if finished:
            assert out == []
            return
        assert [type(e) for e in out] == [Report], out
        assert report_of(out).status == 499
        self.client_left = True
        self.leave_after = 10**6

    @precondition(lambda self: self.illegal_budget > 0)
    @rule(data=st.data())
    def illegal_event(self, data: st.DataObject) -> None:
        self.illegal_budget -= 1
        legal = LEGAL[self.waiting]
        candidates = [e for e in SAMPLE_EVENTS if type(e) not in legal]
        if self.waiting == "collect":
            # A result for a call that was never made is as illegal as a wrong event.
            candidates.append(ProviderResponse(99, 200, [], b"{}", 0.0))
        event = data.draw(st.sampled_from(candidates))
        state, logged = self.ex.state, len(self.log)
        with pytest.raises(LocalProtocolError):
            self.ex.receive(event)
        assert self.ex.state is state
        assert len(self.log) == logged

    def teardown(self) -> None:
        if self.ex.finished and not self.client_left:
            # A finished response is complete or visibly broken, never silently cut short.
            kinds = [type(e) for e in self.log]
            assert (SendHead in kinds and SendEnd in kinds) or Abort in kinds, self.log


def query_provider(query: str) -> str | None:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "provider" and value:
            return value.lower()
    return None


ExchangeMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestExchangeMachine = ExchangeMachine.TestCase


# --- examples: one per promise of the HTTP surface-------------------------------------------

OK_CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_content_length_over_the_limit_is_413_before_reading() -> None:
    for path in ("/v1/chat/completions", "/proxy/openai/v1/chat/completions"):
        exchange = Exchange(GATEWAY)
        out = feed(exchange, head("POST", path, headers=[(b"content-length", b"2049")]))
        assert not any(isinstance(e, ReadRequestBody) for e in out)
        error = error_of(out, 413)
        assert "SERVER_MAX_REQUEST_BODY_SIZE" in error["message"]
        assert exchange.finished


def test_body_over_the_limit_while_reading_is_413() -> None:
    exchange = Exchange(GATEWAY)
    assert feed(exchange, head("POST", "/v1/chat/completions")) == [ReadRequestBody()]
    assert feed(exchange, RequestData(b"x" * LIMIT)) == []  # exactly the limit is fine
    error_of(feed(exchange, RequestData(b"x")), 413)
    assert exchange.finished
    with pytest.raises(LocalProtocolError):
        exchange.receive(RequestData(b"more"))


def test_malformed_json_is_400() -> None:
    _, out = chat(b'{"model": "openai/gpt-4o", "messages": [')
    assert "JSON" in error_of(out, 400)["message"]


def test_unknown_provider_is_400_everywhere() -> None:
    _, out = chat({**OK_CHAT, "model": "nope/gpt-4o"})
    assert error_of(out, 400)["code"] == "unknown_provider"
    out = feed(Exchange(GATEWAY), head("GET", "/v1/models", "provider=nope"))
    assert error_of(out, 400)["code"] == "unknown_provider"
    out = feed(Exchange(GATEWAY), head("POST", "/proxy/nope/v1/models"))
    assert error_of(out, 400)["code"] == "unknown_provider"


def test_provider_without_key_is_400() -> None:
    _, out = chat({**OK_CHAT, "model": "deepseek/deepseek-chat"})
    assert "DEEPSEEK_API_KEY" in error_of(out, 400)["message"]


def test_model_not_allowed_is_403() -> None:
    _, out = chat({**OK_CHAT, "model": "openai/gpt-forbidden"})
    assert "openai/gpt-forbidden" in error_of(out, 403)["message"]


IMAGE_CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": [
    {"type": "text", "text": "what is it?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}


def test_image_input_with_vision_off_is_400_naming_enable_vision() -> None:
    _, out = chat(IMAGE_CHAT)
    assert "ENABLE_VISION=true" in error_of(out, 400)["message"]


def test_image_input_with_vision_on_is_forwarded_not_stripped() -> None:
    gateway = Gateway.from_settings(load_settings({**ENV, "ENABLE_VISION": "true"}))
    _, out = chat(IMAGE_CHAT, gateway=gateway)
    call = only(out, CallProvider)
    assert json.loads(call.body)["messages"] == IMAGE_CHAT["messages"]


def test_text_only_model_with_images_is_400_naming_the_model() -> None:
    gateway = Gateway.from_settings(load_settings({**ENV, "ENABLE_VISION": "true"}))
    _, out = chat({**IMAGE_CHAT, "model": "openai/gpt-3.5-turbo"}, gateway=gateway)
    assert "gpt-3.5-turbo" in error_of(out, 400)["message"]


def test_utf16_body_cannot_smuggle_an_image_past_the_vision_gate() -> None:
    # json.loads accepts UTF-16, in which the bytes of "image" never appear as such.
    _, out = chat(json.dumps(IMAGE_CHAT).encode("utf-16"))
    assert "ENABLE_VISION=true" in error_of(out, 400)["message"]


def test_content_part_with_a_non_string_type_is_forwarded_not_raised() -> None:
    request = {**OK_CHAT, "messages": [{"role": "user", "content": [
        {"type": ["image_url"], "text": "image"}]}]}
    _, out = chat(request)
    assert json.loads(only(out, CallProvider).body)["messages"] == request["messages"]


def test_deeply_nested_model_list_counts_as_unreadable() -> None:
    exchange = Exchange(GATEWAY)
    feed(exchange, head("GET", "/v1/models", "provider=openai"))
    res = response(feed(exchange, ProviderResponse(0, 200, [], b"[" * 100_000, 1.0)))
    assert (res.status, res.json()["data"]) == (200, [])


def test_health() -> None:
    exchange = Exchange(GATEWAY)
    res = response(feed(exchange, head("GET", "/health")))
    assert (res.status, res.json()) == (200, {"message": "OK"})
    assert exchange.finished
    assert exchange.receive(ClientGone(1.0)) == []


def test_unknown_route_is_404() -> None:
    error_of(feed(Exchange(GATEWAY), head("GET", "/v2/whatever")), 404)


def test_get_on_chat_completions_is_405_with_allow() -> None:
    out = feed(Exchange(GATEWAY), head("GET", "/v1/chat/completions"))
    error_of(out, 405)
    assert response(out).header(b"allow") == [b"POST"]


def test_post_on_a_get_route_is_405_allowing_get_and_head() -> None:
    out = feed(Exchange(GATEWAY), head("POST", "/v1/models"))
    error_of(out, 405)
    assert response(out).header(b"allow") == [b"GET, HEAD"]


def _to_upstream(status: int, body: bytes) -> list[Effect]:
    exchange, _ = chat(OK_CHAT)
    assert feed(exchange, ProviderHead(0, status, [(b"content-type", b"application/json")],
                                       1.0)) == [ReadProviderBody(0)]
    return feed(exchange, ProviderData(0, body[:10]), ProviderData(0, body[10:]),
                ProviderEnd(0, 2.0))


def test_upstream_429_message_is_relayed() -> None:
    body = (b'{"error":{"message":"Rate limit reached for gpt-4o in organization org-x",'
            b'"type":"requests","code":"rate_limit_exceeded"}}')
    out = _to_upstream(429, body)
    error = error_of(out, 429)
    assert error["message"] == "Rate limit reached for gpt-4o in organization org-x"
    assert response(out).body == body


def test_upstream_plain_text_error_is_wrapped_openai_style() -> None:
    error = error_of(_to_upstream(503, b"service overloaded, try later"), 503)
    assert "service overloaded, try later" in error["message"]


@pytest.mark.parametrize(("reason", "status"), [
    (FailureReason.TIMEOUT, 504), (FailureReason.UNREACHABLE, 502), (FailureReason.RESET, 502)])
def test_provider_failure_before_the_head(reason: FailureReason, status: int) -> None:
    exchange, _ = chat(OK_CHAT)
    out = feed(exchange, ProviderFailed(0, reason, "connect: connection refused", 3.0))
    assert "openai" in error_of(out, status)["message"]
    assert report_of(out).status == status


def test_streaming_asks_for_a_usage_chunk() -> None:
    _, out = chat({**OK_CHAT, "stream": True})
    sent = json.loads(only(out, CallProvider).body)
    assert sent["stream_options"] == {"include_usage": True}
    _, out = chat({**OK_CHAT, "stream": True, "stream_options": {"x": 1}})
    assert json.loads(only(out, CallProvider).body)["stream_options"] == {
        "x": 1, "include_usage": True}
    _, out = chat({**OK_CHAT, "stream": True, "stream_options": {"include_usage": False}})
    assert json.loads(only(out, CallProvider).body)["stream_options"] == {"include_usage": False}
    _, out = chat(OK_CHAT)
    assert "stream_options" not in json.loads(only(out, CallProvider).body)


def test_unknown_request_fields_are_preserved_upstream() -> None:
    extra = {"x_vendor_flag": {"nested": [1, 2.5, None, "ü"]}, "logit_bias": {"50256": -100},
             "reasoning_effort": "high", "metadata": {"k": "v"}}
    _, out = chat({**OK_CHAT, **extra})
    sent = json.loads(only(out, CallProvider).body)
    assert {k: sent[k] for k in extra} == extra
    assert sent["model"] == "gpt-4o"


def test_body_forwarded_byte_for_byte_when_nothing_changes() -> None:
    body = b'{"model" : "gpt-4o",  "messages":[{"role":"user","content":"hi"}], "z":1.10}'
    _, out = chat(body, query="provider=openai")
    assert only(out, CallProvider).body == body


@pytest.mark.parametrize(("given", "expected"), [
    (b"client-id-123", "client-id-123"),
    (b"a" * 128, "a" * 128),
    (b"a" * 129, FRESH_ID),
    (b"has space", FRESH_ID),
    (b"", FRESH_ID),
    ("ünï".encode(), FRESH_ID),
    (None, FRESH_ID),
])
def test_request_id_is_echoed_when_valid_and_generated_otherwise(
    given: bytes | None, expected: str
) -> None:
    headers = [] if given is None else [(b"x-request-id", given)]
    exchange = Exchange(GATEWAY)
    out = feed(exchange, head("GET", "/health", headers=headers))
    assert response(out).header(b"x-request-id") == [expected.encode()]
    assert report_of(out).request_id == expected
    # ... and it travels upstream and back on a relayed chat response.
    exchange, out = chat(OK_CHAT, headers=headers)
    assert (b"x-request-id", expected.encode()) in only(out, CallProvider).headers
    out = feed(exchange, ProviderHead(0, 200, [(b"content-type", b"application/json"),
                                               (b"x-request-id", b"req_upstream")], 1.0))
    assert [v for k, v in only(out, SendHead).headers if k == b"x-request-id"] == [
        expected.encode()]


def test_models_from_several_providers_survive_one_failing() -> None:
    exchange = Exchange(GATEWAY)
    calls = feed(exchange, head("GET", "/v1/models"))
    assert [c.provider for c in calls if isinstance(c, CallProvider)] == list(CONFIGURED)
    listing = b'{"object":"list","data":[{"id":"m1","object":"model"}]}'
    out = feed(
        exchange,
        ProviderFailed(2, FailureReason.UNREACHABLE, "refused", 1.0),
        ProviderResponse(3, 200, [], listing, 1.0),
        ProviderResponse(1, 500, [], b"oops", 1.0),
        ProviderResponse(0, 200, [], listing, 1.0),
    )
    res = response(out)
    assert res.status == 200
    assert [m["id"] for m in res.json()["data"]] == ["openai/m1", "mistral/m1"]


# --- bugs in files this suite may not change: each pins the behaviour the contract asks for


def test_proxy_response_carries_exactly_one_request_id() -> None:
    exchange = Exchange(GATEWAY)
    feed(exchange, head("GET", "/proxy/openai/models", headers=[(b"x-request-id", b"mine")]),
         RequestEnd())
    out = feed(exchange, ProviderHead(0, 200, [(b"x-request-id", b"req_upstream")], 1.0))
    assert [v for k, v in only(out, SendHead).headers if k == b"x-request-id"] == [b"mine"]


def test_failure_detail_never_carries_the_key_into_the_report() -> None:
    exchange, _ = chat(OK_CHAT)
    feed(exchange, ProviderHead(0, 200, [(b"content-type", b"application/json")], 1.0))
    out = feed(exchange, ProviderFailed(0, FailureReason.RESET,
                                        f"reset while sending Bearer {OPENAI_KEY}", 2.0))
    assert OPENAI_KEY not in repr(report_of(out))


def test_lone_surrogate_escape_is_answered_not_raised() -> None:
    _, out = chat(b'{"model":"openai/gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}')
    assert isinstance(out[-1], (CallProvider, Report))


@pytest.mark.parametrize("number", [b"1e400", b"NaN", b"-Infinity"])
def test_upstream_body_is_always_standard_json(number: bytes) -> None:
    _, out = chat(b'{"model":"openai/gpt-4o","messages":[],"temperature":' + number + b"}")
    calls = [e for e in out if isinstance(e, CallProvider)]
    for call in calls:
        json.loads(call.body, parse_constant=lambda c: pytest.fail(f"{c} sent upstream"))
    if not calls:
        error_of(out, 400)


def test_deeply_nested_upstream_error_body_is_answered_not_raised() -> None:
    error_of(_to_upstream(500, b"[" * 100_000), 500)


def _relay_then_leave(body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    exchange = Exchange(GATEWAY)
    exchange.receive(RequestHead("POST", "/v1/chat/completions", "", [], 0.0, 0.0, "id1"))
    request = b'{"model":"openai/gpt-4o-mini","stream":true,"messages":[]}'
    exchange.receive(RequestData(request))
    exchange.receive(RequestEnd())
    effects = exchange.receive(ProviderHead(0, 200, headers, 0.1))
    relay = next(e for e in effects if isinstance(e, RelayBody))
    assert relay.tap is not None
    relay.tap.feed(body)
    (report,) = exchange.receive(ClientGone(0.2))
    assert isinstance(report, Report)
    return report.record.status


def test_a_client_that_leaves_after_the_final_event_was_served() -> None:
    sse = [(b"content-type", b"text/event-stream")]
    assert _relay_then_leave(b'data: {"choices":[]}\n\ndata: [DONE]\n\n', sse) == 200
    assert _relay_then_leave(b'data: {"choices":[]}\n\n', sse) == 499


def test_a_client_that_leaves_after_every_declared_byte_was_served() -> None:
    body = b'{"choices":[]}'
    json_head = [(b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]
    assert _relay_then_leave(body, json_head) == 200
    assert _relay_then_leave(body[:5], json_head) == 499


@given(
    path=st.one_of(
        st.sampled_from(["/health", "/v1/models", "/v1/mcp/tools", "/v1/chat/completions",
                         "/v1/models/openai/gpt-4o", "/proxy/nope/x"]),
        st.text(alphabet="/abcv1-_.%", max_size=30).map(lambda p: "/" + p),
    ),
    query=st.sampled_from(["", "provider=openai", "provider=nope"]),
)
def test_head_is_get_without_the_body(path: str, query: str) -> None:
    get = feed(Exchange(GATEWAY), head("GET", path, query))
    head_out = feed(Exchange(GATEWAY), head("HEAD", path, query))
    assert not any(isinstance(e, SendData) for e in head_out)
    without_body = [e for e in get if not isinstance(e, (SendData, Report))]
    assert [type(e) for e in head_out if not isinstance(e, Report)] == [
        type(e) for e in without_body]
    get_heads = [e for e in get if isinstance(e, SendHead)]
    head_heads = [e for e in head_out if isinstance(e, SendHead)]
    assert [h.status for h in head_heads] == [h.status for h in get_heads]
    assert [[k for k, _ in h.headers] for h in head_heads] == [
        [k for k, _ in h.headers] for h in get_heads]
    if get_heads and get_heads[0].status < 300:  # errors may name the method they refuse
        assert head_heads == get_heads


def test_head_on_the_model_list_fans_out_and_answers_headers_only() -> None:
    exchange = Exchange(GATEWAY)
    calls = feed(exchange, head("HEAD", "/v1/models", "provider=openai"))
    assert [c.method for c in calls if isinstance(c, CallProvider)] == ["GET"]
    out = feed(exchange, ProviderResponse(0, 200, [], b'{"data":[{"id":"gpt-4o"}]}', 1.0))
    sent = next(e for e in out if isinstance(e, SendHead))
    assert sent.status == 200 and (b"content-length", b"0") not in sent.headers
    assert not any(isinstance(e, SendData) for e in out)
    assert SendEnd() in out


def test_ambiguous_framing_refusal_closes_the_connection() -> None:
    out = feed(Exchange(GATEWAY), head("POST", "/v1/chat/completions", headers=[
        (b"content-length", b"4"), (b"transfer-encoding", b"chunked")]))
    error_of(out, 400)
    assert response(out).header(b"connection") == [b"close"]


@pytest.mark.parametrize(("reason", "status"), [(BodyFailure.TIMEOUT, 408),
                                                (BodyFailure.MALFORMED, 400)])
def test_body_read_failure_is_answered_and_recorded_with_the_same_status(
    reason: BodyFailure, status: int
) -> None:
    exchange = Exchange(GATEWAY)
    assert feed(exchange, head("POST", "/v1/chat/completions")) == [ReadRequestBody()]
    out = feed(exchange, RequestData(b'{"mo'), RequestBodyFailed(reason, "bad chunk", 2.0))
    error_of(out, status)
    assert response(out).header(b"connection") == [b"close"]
    record = next(e.record for e in out if isinstance(e, Report))
    assert record.status == status
    assert exchange.finished


def test_a_served_client_that_leaves_keeps_its_time_to_first_byte() -> None:
    exchange = Exchange(GATEWAY)
    exchange.receive(RequestHead("POST", "/v1/chat/completions", "", [], 0.0, 0.0, "id1"))
    exchange.receive(RequestData(b'{"model":"openai/gpt-4o-mini","stream":true,"messages":[]}'))
    exchange.receive(RequestEnd())
    effects = exchange.receive(ProviderHead(0, 200, [(b"content-type", b"text/event-stream")],
                                            0.1))
    relay = next(e for e in effects if isinstance(e, RelayBody))
    assert relay.tap is not None
    relay.tap.feed(b"data: [DONE]\n\n")
    (report,) = exchange.receive(ClientGone(0.3, first_data_at=0.15))
    assert isinstance(report, Report)
    assert (report.record.status, report.record.first_byte) == (200, 0.15)
