"""Properties of igw_core.routing: ``provider/model`` routing, ``?provider=`` and model policy."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from igw_core.config import load_settings
from igw_core.errors import BadRequest, Forbidden
from igw_core.gateway import Gateway
from igw_core.providers import PROVIDER_IDS
from igw_core.routing import ModelPolicy, Route, lookup_provider, route_model

FAST = settings(max_examples=100, deadline=None)

KEYED = ("openai", "anthropic", "groq", "ollama_cloud", "cloudflare")
GATEWAY = Gateway.from_settings(
    load_settings({f"{p.upper()}_API_KEY": f"key-of-{p}" for p in KEYED})
)
PROVIDERS = GATEWAY.providers
# Needs no key (AuthStyle.NONE), so usable without one.
KEYLESS = ("ollama",)
USABLE = KEYED + KEYLESS
WITHOUT_KEY = tuple(p for p in PROVIDER_IDS if p not in USABLE)


@st.composite
def any_case(draw: st.DrawFn, text: str) -> str:
    mask = draw(st.integers(0, 2 ** len(text) - 1))
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(text))


def spelled(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(ids).flatmap(lambda p: any_case(p))


# Model names as providers spell them: slashes (groq's "meta-llama/..."), dots, colons, unicode.
model_names = st.one_of(
    st.lists(st.text(alphabet="abcxyz0123456789.-_:@", min_size=1, max_size=8), min_size=1,
             max_size=4).map("/".join),
    st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith("/")),
    st.sampled_from(["gpt-4o", "openai/gpt-oss-120b", "meta-llama/llama-4-scout", "a//b", "x/"]),
)
unknown_names = st.text(min_size=1, max_size=12).filter(
    lambda s: "/" not in s and s.lower() not in PROVIDERS
)


@FAST
@given(st.sampled_from(USABLE).flatmap(lambda p: st.tuples(st.just(p), any_case(p))), model_names)
def test_prefixed_model_routes_to_that_provider_stripped_once(
    ids: tuple[str, str], model: str
) -> None:
    provider, spelling = ids
    route = route_model(PROVIDERS, f"{spelling}/{model}", None)
    assert route.provider.id == provider
    assert route.model == model
    assert route.full_id == f"{provider}/{model}"


@FAST
@given(st.sampled_from(USABLE).flatmap(lambda p: st.tuples(st.just(p), any_case(p), any_case(p))),
       model_names)
def test_provider_param_forwards_the_model_as_given(ids: tuple[str, str, str], model: str) -> None:
    provider, param, _ = ids
    assume(not model.lower().startswith(provider + "/"))
    route = route_model(PROVIDERS, model, param)
    assert route.provider.id == provider
    assert route.model == model


@FAST
@given(st.sampled_from(USABLE).flatmap(lambda p: st.tuples(st.just(p), any_case(p), any_case(p))),
       model_names)
def test_provider_param_strips_its_own_prefix_once(ids: tuple[str, str, str], model: str) -> None:
    provider, param, prefix = ids
    route = route_model(PROVIDERS, f"{prefix}/{model}", param)
    assert route.provider.id == provider
    assert route.model == model


@FAST
@given(st.sampled_from(USABLE), st.sampled_from(USABLE), model_names)
def test_provider_param_keeps_another_providers_prefix(
    param: str, other: str, model: str
) -> None:
    assume(param != other)
    route = route_model(PROVIDERS, f"{other}/{model}", param)
    assert route.provider.id == param
    assert route.model == f"{other}/{model}"


@FAST
@given(unknown_names, model_names)
def test_unknown_provider_is_a_bad_request(name: str, model: str) -> None:
    for model_id, param in ((f"{name}/{model}", None), (model, name)):
        with pytest.raises(BadRequest) as raised:
            route_model(PROVIDERS, model_id, param)
        assert raised.value.code == "unknown_provider"
        assert raised.value.status == 400
        assert name in raised.value.message


@FAST
@given(spelled(WITHOUT_KEY), model_names)
def test_provider_without_key_is_a_bad_request(spelling: str, model: str) -> None:
    for model_id, param in ((f"{spelling}/{model}", None), (model, spelling)):
        with pytest.raises(BadRequest) as raised:
            route_model(PROVIDERS, model_id, param)
        assert raised.value.status == 400
        assert raised.value.code == "provider_not_configured"
        assert f"{spelling.upper()}_API_KEY" in raised.value.message


@FAST
@given(st.text(max_size=20).filter(lambda s: "/" not in s))
def test_model_without_a_provider_is_a_bad_request(model: str) -> None:
    with pytest.raises(BadRequest):
        route_model(PROVIDERS, model, None)


@pytest.mark.parametrize("model", ["", "openai/", "/gpt-4o"])
def test_empty_model_or_parts_are_bad_requests(model: str) -> None:
    with pytest.raises(BadRequest):
        route_model(PROVIDERS, model, None)


def test_lookup_provider_is_case_insensitive_and_returns_the_configured_one() -> None:
    assert lookup_provider(PROVIDERS, "OpenAI") is PROVIDERS["openai"]
    assert lookup_provider(PROVIDERS, "OLLAMA") is PROVIDERS["ollama"]


# --- model policy ------------------------------------------------------------------------

policy_providers = st.sampled_from(["openai", "groq", "anthropic"])
policy_models = st.sampled_from(["gpt-4o", "GPT-4o", "mini", "llama/3", "meta-llama/llama-4"])


@st.composite
def policy_entries(draw: st.DrawFn) -> str:
    provider, model = draw(policy_providers), draw(policy_models)
    entry = draw(st.sampled_from([model, f"{provider}/{model}"]))
    entry = draw(any_case(entry))
    return draw(st.sampled_from(["", " ", "\t"])) + entry + draw(st.sampled_from(["", " "]))


entry_lists = st.lists(policy_entries() | st.sampled_from(["", "  "]), max_size=4)


def names(entries: list[str], provider: str, model: str) -> bool:
    wanted = {model.lower(), f"{provider}/{model}".lower()}
    return any(e.strip().lower() in wanted for e in entries)


@FAST
@given(entry_lists, entry_lists, policy_providers, policy_models)
def test_policy_allow_beats_deny_and_ignores_case(
    allowed: list[str], denied: list[str], provider: str, model: str
) -> None:
    policy = ModelPolicy.from_lists(allowed, denied)
    has_allow_list = any(e.strip() for e in allowed)
    if names(allowed, provider, model):
        expected = True  # named in the allow list: permitted, even if also denied
    elif has_allow_list:
        expected = False  # a non-empty allow list admits only what it names
    else:
        expected = not names(denied, provider, model)
    assert policy.permits(provider, model) is expected
    route = Route(PROVIDERS[provider], model)
    if expected:
        policy.check(route)
    else:
        with pytest.raises(Forbidden) as raised:
            policy.check(route)
        assert raised.value.status == 403
        assert raised.value.code == "model_not_allowed"
        assert route.full_id in raised.value.message


@FAST
@given(policy_providers, model_names)
def test_empty_policy_permits_everything(provider: str, model: str) -> None:
    assert ModelPolicy.from_lists([], []).permits(provider, model)
    assert ModelPolicy.from_lists(["", " "], [" "]).permits(provider, model)


def test_policy_examples() -> None:
    policy = ModelPolicy.from_lists(["OpenAI/GPT-4o", "llama-3"], ["gpt-4o", "claude"])
    assert policy.permits("openai", "gpt-4o")  # allowed by full id beats the bare deny
    assert not policy.permits("groq", "gpt-4o")  # the allow list names only openai's
    assert policy.permits("groq", "LLAMA-3")  # bare name, any provider
    assert not policy.permits("anthropic", "claude-3")  # not on the allow list
    deny_only = ModelPolicy.from_lists([], ["groq/llama-3"])
    assert not deny_only.permits("groq", "Llama-3")
    assert deny_only.permits("openai", "llama-3")
