"""Properties of igw_core.proxy: where ``/proxy/{provider}/...`` goes and which headers cross."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from igw_core.config import load_settings
from igw_core.effects import CallProvider
from igw_core.events import RequestData, RequestEnd, RequestHead
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.providers import Provider
from igw_core.proxy import proxy_headers, proxy_url, split_proxy_path

FAST = settings(max_examples=100, deadline=None)

KEY = "sk-proxy-test-K3Y"

base_paths = st.sampled_from(["", "/v1", "/api/v1", "/openai/v1", "/v1beta/openai", "/v4"])
hosts = st.sampled_from(["api.example.com", "127.0.0.1:8080", "[::1]:9000", "llm.internal"])
segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", min_size=1, max_size=10)
rests = st.lists(segments, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))
queries = st.just("") | st.lists(
    st.tuples(st.text(alphabet="abcxyz_", min_size=1, max_size=5),
              st.text(alphabet="abc123%+=/:", max_size=8)),
    min_size=1, max_size=3,
).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv))


def openai_at(base: str) -> Provider:
    settings = load_settings({"OPENAI_API_URL": base, "OPENAI_API_KEY": KEY})
    provider = settings.provider("openai")
    assert provider is not None
    return provider


@FAST
@given(st.sampled_from(["http", "https"]), hosts, base_paths, st.sampled_from(["", "/"]), rests,
       queries)
def test_base_path_is_never_doubled(
    scheme: str, host: str, base_path: str, slash: str, rest: str, query: str
) -> None:
    base = f"{scheme}://{host}{base_path}"
    assume(not base_path or not (rest == base_path or rest.startswith(base_path + "/")))
    provider = openai_at(base + slash)  # an operator may write the URL with a trailing slash
    expected = base + rest + (f"?{query}" if query else "")
    assert proxy_url(provider, rest, query) == expected
    if base_path:
        # The documented form carries the base path itself: it must not be added again.
        assert proxy_url(provider, base_path + rest, query) == expected


@FAST
@given(st.sampled_from(["http", "https"]), hosts, base_paths, rests, queries)
def test_query_is_preserved_exactly(
    scheme: str, host: str, base_path: str, rest: str, query: str
) -> None:
    url = proxy_url(openai_at(f"{scheme}://{host}{base_path}"), rest, query)
    if query:
        assert url.split("?", 1)[1] == query
    else:
        assert "?" not in url
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == (scheme, host)


@pytest.mark.parametrize(
    "path", ["/proxy/openai/v1/chat/completions", "/proxy/openai/chat/completions"]
)
@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("http://127.0.0.1:9999/v1/", "http://127.0.0.1:9999/v1/chat/completions"),
    ],
)
def test_both_documented_forms_reach_the_chat_endpoint(path: str, base: str, expected: str) -> None:
    gateway = Gateway.from_settings(
        load_settings({"OPENAI_API_URL": base, "OPENAI_API_KEY": KEY})
    )
    exchange = Exchange(gateway)
    exchange.receive(RequestHead("POST", path, "", [(b"content-length", b"2")], 0.0,
                                 fresh_id="id"))
    exchange.receive(RequestData(b"{}"))
    (call,) = exchange.receive(RequestEnd())
    assert isinstance(call, CallProvider)
    assert call.url == expected
    assert call.body == b"{}"


def test_base_without_path_keeps_the_client_path() -> None:
    provider = openai_at("http://localhost:8080")
    assert proxy_url(provider, "/v1/chat/completions", "") == (
        "http://localhost:8080/v1/chat/completions"
    )
    assert proxy_url(provider, "/chat/completions", "a=1") == (
        "http://localhost:8080/chat/completions?a=1"
    )


def test_similar_prefix_is_not_taken_for_the_base_path() -> None:
    provider = openai_at("https://api.example.com/v1")
    assert proxy_url(provider, "/v10/models", "") == "https://api.example.com/v1/v10/models"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/proxy/openai/v1/models", ("openai", "/v1/models")),
        ("/proxy/openai", ("openai", "/")),
        ("/proxy/openai/", ("openai", "/")),
        ("/proxy/Groq/a/b/c", ("Groq", "/a/b/c")),
    ],
)
def test_split_proxy_path(path: str, expected: tuple[str, str]) -> None:
    assert split_proxy_path(path) == expected


# --- headers --------------------------------------------------------------------------------

# RFC 9110 §7.6.1 hop-by-hop headers, plus the framing headers each side sets for itself.
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"content-length", b"host",
}
CREDENTIALS = {b"authorization", b"x-api-key", b"api-key", b"cookie"}
CLIENT_SECRET = b"client-secret-token"

token_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10).map(
    str.encode
)
header_values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=/.", max_size=12).map(
    str.encode
)


@st.composite
def client_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    names = st.one_of(
        token_names,
        st.sampled_from(sorted(HOP_BY_HOP)),
        st.sampled_from([b"accept", b"content-type", b"openai-organization", b"user-agent",
                         b"anthropic-version", b"anthropic-beta", b"x-request-id"]),
    )
    headers = draw(st.lists(st.tuples(names, header_values), max_size=8))
    for name in draw(st.lists(st.sampled_from(sorted(CREDENTIALS)), max_size=3)):
        headers.insert(draw(st.integers(0, len(headers))), (name, b"Bearer " + CLIENT_SECRET))
    listed = draw(st.lists(st.sampled_from([h[0] for h in headers] or [b"x-gone"])
                           | token_names, max_size=3))
    if listed:
        spaced = [draw(st.sampled_from([b"", b" "])) + draw(st.sampled_from([n, n.upper()]))
                  for n in listed]
        headers.insert(draw(st.integers(0, len(headers))), (b"connection", b",".join(spaced)))
    return headers


KEYED_GATEWAY = Gateway.from_settings(load_settings({
    "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY, "OLLAMA_API_URL": "http://ollama:11434/v1",
}))


@FAST
@given(client_headers(), st.sampled_from(["openai", "anthropic", "ollama"]))
def test_only_end_to_end_client_headers_cross_plus_provider_auth_once(
    headers: list[tuple[bytes, bytes]], provider_id: str
) -> None:
    provider = KEYED_GATEWAY.providers[provider_id]
    out = proxy_headers(headers, provider)
    listed = {
        t.strip().lower() for k, v in headers if k == b"connection" for t in v.split(b",")
    }
    # Every end-to-end client header crosses unchanged and in order; nothing hop-by-hop,
    # nothing the Connection header names, and no client credential does.
    kept = [(k, v) for k, v in headers
            if k not in HOP_BY_HOP and k not in listed and k not in CREDENTIALS]
    assert out[: len(kept)] == kept
    assert not HOP_BY_HOP & {k for k, _ in out}
    assert all(CLIENT_SECRET not in v for _, v in out)
    # Then the provider's own headers: its authentication exactly once, and a fixed
    # header such as anthropic-version only if the client did not send its own.
    added = out[len(kept) :]
    if provider_id == "openai":
        assert added == [(b"authorization", b"Bearer " + KEY.encode())]
    elif provider_id == "anthropic":
        version = [] if any(k == b"anthropic-version" for k, _ in kept) else [
            (b"anthropic-version", b"2023-06-01")]
        assert added == [*version, (b"x-api-key", KEY.encode())]
    else:
        assert added == []


def test_clients_anthropic_version_is_forwarded_not_duplicated() -> None:
    provider = KEYED_GATEWAY.providers["anthropic"]
    out = proxy_headers([(b"anthropic-version", b"2099-01-01"), (b"x-api-key", b"mine")], provider)
    assert out == [(b"anthropic-version", b"2099-01-01"), (b"x-api-key", KEY.encode())]


def test_gateway_adds_anthropic_version_when_the_client_did_not() -> None:
    provider = KEYED_GATEWAY.providers["anthropic"]
    assert (b"anthropic-version", b"2023-06-01") in proxy_headers([], provider)
