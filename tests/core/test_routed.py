"""Requests for a routing alias through the Exchange: retries, fallbacks, what the client
sees, and what is reported."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.config import load_settings
from igw_core.effects import (
    Abort,
    CallProvider,
    Effect,
    ReadProviderBody,
    RelayBody,
    Report,
    SendData,
    SendHead,
)
from igw_core.events import (
    Event,
    FailureReason,
    ProviderData,
    ProviderEnd,
    ProviderFailed,
    ProviderHead,
    RequestData,
    RequestEnd,
    RequestHead,
)
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.router import RETRYABLE_STATUSES, Alias, Deployment, Router, RoutingTable, Strategy

ENV = {"OPENAI_API_KEY": "sk-openai", "GROQ_API_KEY": "gsk-groq", "MISTRAL_API_KEY": "m-key",
       "DISALLOWED_MODELS": "forbidden-alias"}
FAST = Alias("fast", Strategy.ORDERED, (Deployment("groq", "llama-3.3-70b"),
                                        Deployment("openai", "gpt-4o-mini")),
             retries=1, fallbacks=("cheap",), cooldown=30.0, timeout=20.0)
CHEAP = Alias("cheap", Strategy.ORDERED, (Deployment("mistral", "mistral-small"),))
FORBIDDEN = Alias("forbidden-alias", Strategy.ORDERED, (Deployment("openai", "gpt-4o"),))


def gateway() -> Gateway:
    gw = Gateway.from_settings(load_settings(ENV))
    table = RoutingTable(MappingProxyType({a.name: a for a in (FAST, CHEAP, FORBIDDEN)}))
    gw.routing.router = Router(table)
    return gw


def feed(exchange: Exchange, *events: Event) -> list[Effect]:
    out: list[Effect] = []
    for event in events:
        out.extend(exchange.receive(event))
    return out


def start(gw: Gateway, body: dict[str, Any], path: str = "/v1/chat/completions",
          query: str = "") -> tuple[Exchange, list[Effect]]:
    exchange = Exchange(gw)
    out = feed(exchange, RequestHead("POST", path, query, [], 0.0, fresh_id="f"),
               RequestData(json.dumps(body).encode()), RequestEnd())
    return exchange, out


def calls(effects: list[Effect]) -> list[CallProvider]:
    return [e for e in effects if isinstance(e, CallProvider)]


def report(effects: list[Effect]) -> Any:
    (found,) = [e for e in effects if isinstance(e, Report)]
    return found.record


CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
OK_HEAD = [(b"content-type", b"application/json")]


def test_an_alias_is_sent_to_its_first_deployment_with_that_model() -> None:
    _, out = start(gateway(), CHAT)
    (call,) = calls(out)
    assert call.provider == "groq" and json.loads(call.body)["model"] == "llama-3.3-70b"
    assert call.head_timeout == 20.0 and call.call == 0


def test_a_429_moves_to_the_next_deployment_and_the_answer_names_it() -> None:
    exchange, _ = start(gateway(), CHAT)
    out = feed(exchange, ProviderHead(0, 429, [(b"retry-after", b"60")], 0.1))
    assert out == [ReadProviderBody(0)]
    out = feed(exchange, ProviderData(0, b'{"error":{"message":"slow"}}'), ProviderEnd(0, 0.2))
    (retry,) = calls(out)
    assert (retry.call, retry.provider) == (1, "openai")
    assert json.loads(retry.body)["model"] == "gpt-4o-mini"
    out = feed(exchange, ProviderHead(1, 200, OK_HEAD, 0.3))
    head = next(e for e in out if isinstance(e, SendHead))
    assert (b"x-selected-provider", b"openai") in head.headers
    assert (b"x-selected-model", b"gpt-4o-mini") in head.headers
    assert any(isinstance(e, RelayBody) and e.call == 1 for e in out)
    record = report(feed(exchange, ProviderEnd(1, 0.4)))
    assert record.alias == "fast" and record.provider == "openai"
    assert [f.outcome for f in record.attempts] == ["retry", "ok"]
    assert record.cooled == (("fast", "groq", "llama-3.3-70b"),)


def test_when_every_attempt_fails_the_client_gets_the_last_error_and_the_count() -> None:
    exchange, _ = start(gateway(), CHAT)
    out = feed(exchange, ProviderFailed(0, FailureReason.UNREACHABLE, "refused", 0.1))
    assert calls(out)[0].provider == "openai"
    out = feed(exchange, ProviderFailed(1, FailureReason.TIMEOUT, "slow", 0.2))
    assert calls(out)[0].provider == "mistral"  # the fallback alias
    out = feed(exchange, ProviderHead(2, 503, [], 0.3), ProviderData(2, b'{"error":{"message":'
                                                                       b'"down"}}'),
               ProviderEnd(2, 0.4))
    head = next(e for e in out if isinstance(e, SendHead))
    assert head.status == 503 and (b"x-attempts", b"3") in head.headers
    assert [f.outcome for f in report(out).attempts] == ["retry", "fallback", "exhausted"]


def test_exhausted_by_connection_failures_is_a_502_with_the_count() -> None:
    gw = gateway()
    exchange, _ = start(gw, {**CHAT, "model": "cheap"})
    out = feed(exchange, ProviderFailed(0, FailureReason.UNREACHABLE, "refused", 0.1))
    head = next(e for e in out if isinstance(e, SendHead))
    assert head.status == 502 and (b"x-attempts", b"1") in head.headers


def test_a_client_error_is_not_retried() -> None:
    exchange, _ = start(gateway(), CHAT)
    out = feed(exchange, ProviderHead(0, 400, [], 0.1), ProviderData(0, b"{}"),
               ProviderEnd(0, 0.2))
    assert not calls(out)
    assert next(e for e in out if isinstance(e, SendHead)).status == 400
    assert [f.outcome for f in report(out).attempts] == ["failed"]


def test_nothing_is_retried_once_the_answer_has_started() -> None:
    exchange, _ = start(gateway(), {**CHAT, "stream": True})
    feed(exchange, ProviderHead(0, 200, [(b"content-type", b"text/event-stream")], 0.1))
    out = feed(exchange, ProviderFailed(0, FailureReason.RESET, "reset", 0.2))
    assert not calls(out) and isinstance(out[0], Abort)


def test_provider_prefix_and_query_bypass_routing() -> None:
    _, out = start(gateway(), {**CHAT, "model": "openai/gpt-4o"})
    assert calls(out)[0].provider == "openai"
    _, out = start(gateway(), CHAT, query="provider=mistral")
    assert json.loads(calls(out)[0].body)["model"] == "fast"


def test_the_model_policy_matches_the_alias() -> None:
    _, out = start(gateway(), {**CHAT, "model": "forbidden-alias"})
    assert next(e for e in out if isinstance(e, SendHead)).status == 403


def test_embeddings_and_responses_route_aliases_too() -> None:
    emb = Alias("embed", Strategy.ORDERED, (Deployment("mistral", "mistral-embed"),
                                            Deployment("openai", "text-embedding-3-small")),
                retries=1)
    gw = gateway()
    assert gw.routing.router is not None
    gw.routing.router = Router(RoutingTable(MappingProxyType({
        **gw.routing.router.table.aliases, "embed": emb})))
    _, out = start(gw, {"model": "embed", "input": "x"}, "/v1/embeddings")
    assert calls(out)[0].url == "https://api.mistral.ai/v1/embeddings"
    _, out = start(gw, {"model": "fast", "input": "x"}, "/v1/responses")
    assert calls(out)[0].url == "https://api.groq.com/openai/v1/responses"
    # An alias whose deployment lacks the API: that attempt is refused with a clear 400.
    _, out = start(gw, {"model": "cheap", "input": "x"}, "/v1/responses")
    assert next(e for e in out if isinstance(e, SendHead)).status == 400


OUTCOMES = st.lists(st.one_of(st.sampled_from(sorted(RETRYABLE_STATUSES)),
                              st.sampled_from(["refused", "timeout"])), max_size=5)


@settings(max_examples=150, deadline=None)
@given(failures=OUTCOMES, succeed=st.booleans())
def test_any_run_of_failures_ends_in_one_answer_within_the_budget(
    failures: list[Any], succeed: bool,
) -> None:
    exchange, out = start(gateway(), CHAT)
    sent = calls(out)
    now = 0.0
    for failure in failures:
        if exchange.finished:
            break
        call = sent[-1].call
        now += 0.1
        if isinstance(failure, int):
            out = feed(exchange, ProviderHead(call, failure, [], now), ProviderData(call, b"{}"),
                       ProviderEnd(call, now))
        else:
            reason = FailureReason.UNREACHABLE if failure == "refused" else FailureReason.TIMEOUT
            out = feed(exchange, ProviderFailed(call, reason, failure, now))
        sent.extend(calls(out))
    if not exchange.finished and succeed:
        call = sent[-1].call
        out = feed(exchange, ProviderHead(call, 200, OK_HEAD, now + 0.1),
                   ProviderEnd(call, now + 0.2))
    if not exchange.finished:
        return
    # At most the alias's budget (2) plus its fallback's (1); ids go up one at a time;
    # no deployment is called twice; one answer.
    assert len(sent) <= 3
    assert [c.call for c in sent] == list(range(len(sent)))
    assert len({c.provider for c in sent}) == len(sent)
    assert sum(isinstance(e, SendHead) for e in out) == 1
    record = report(out)
    assert len(record.attempts) == len(sent)
    head = next(e for e in out if isinstance(e, SendHead))
    # Success only from the last deployment tried; otherwise the count of attempts.
    assert (record.attempts[-1].outcome == "ok") == (head.status == 200)
    if head.status != 200:
        assert (b"x-attempts", str(len(sent)).encode()) in head.headers


def test_models_list_the_aliases_the_policy_permits() -> None:
    exchange = Exchange(gateway())
    out = exchange.receive(RequestHead("GET", "/v1/models/fast", "", [], 0.0))
    body = b"".join(e.data for e in out if isinstance(e, SendData))
    assert json.loads(body) == {"id": "fast", "object": "model", "created": 0,
                                "owned_by": "igw", "served_by": "igw"}
    exchange = Exchange(gateway())
    out = exchange.receive(RequestHead("GET", "/v1/models/forbidden-alias", "", [], 0.0))
    assert next(e for e in out if isinstance(e, SendHead)).status == 404
