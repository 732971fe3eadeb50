"""The upstream chat body: edited in place or re-encoded, it always means the right request."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.chat import _decode, _refuse_constant, plan_chat
from igw_core.config import load_settings
from igw_core.gateway import Gateway

GATEWAY = Gateway.from_settings(load_settings({"OPENAI_API_KEY": "sk-test",
                                               "MISTRAL_API_KEY": "sk-m"}))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
model_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@st.composite
def chat_requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    provider = draw(st.sampled_from(["openai", "OpenAI", "mistral"]))
    request: dict[str, Any] = {
        "model": f"{provider}/{draw(model_names)}",
        "messages": [{"role": "user", "content": draw(st.text(max_size=30))}],
    }
    extra_keys = st.sampled_from(["temperature", "metadata", "x_extra", "user", "tools"])
    request.update(draw(st.dictionaries(extra_keys, json_values, max_size=3)))
    if draw(st.booleans()):
        request["stream"] = draw(st.sampled_from([True, False, None]))
    choice = draw(st.integers(0, 3))
    if choice == 1:
        request["stream_options"] = None
    elif choice == 2:
        request["stream_options"] = {"other": 1}
    elif choice == 3:
        request["stream_options"] = {"include_usage": False}
    items = list(request.items())
    random.Random(draw(st.integers())).shuffle(items)
    body = json.dumps(dict(items), ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 1])),
                      separators=draw(st.sampled_from([None, (",", ":"), (", ", " : ")])))
    return request, body.encode()


def expected(request: dict[str, Any]) -> dict[str, Any]:
    out = dict(request)
    provider, _, name = request["model"].partition("/")
    out["model"] = name
    if request.get("stream") is True and provider.lower() == "openai":
        options = request.get("stream_options")
        if options is None:
            out["stream_options"] = {"include_usage": True}
        elif "include_usage" not in options:
            out["stream_options"] = {**options, "include_usage": True}
    return out


@settings(max_examples=300, deadline=None)
@given(chat_requests())
def test_upstream_body_is_the_routed_request(case: tuple[dict[str, Any], bytes]) -> None:
    request, body = case
    plan = plan_chat(GATEWAY, body, None)
    sent = json.loads(plan.body)
    assert sent == expected(request)
    assert plan.request == sent


def test_plain_request_is_edited_in_place_not_reencoded() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}],  "model" :  "openai/gpt-4o"}'
    plan = plan_chat(GATEWAY, body, None)
    assert plan.body == (b'{"messages": [{"role": "user", "content": "hi"}],  '
                         b'"model" :  "gpt-4o"}')


def test_a_second_model_key_falls_back_to_reencoding() -> None:
    body = (b'{"model":"openai/gpt-4o","metadata":{"model":"openai/gpt-4o"},'
            b'"messages":[]}')
    sent = json.loads(plan_chat(GATEWAY, body, None).body)
    assert sent["model"] == "gpt-4o"
    assert sent["metadata"] == {"model": "openai/gpt-4o"}


_JSON_SPACE = st.text(" \t\n\r", max_size=3)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """A JSON value with whitespace around it, or any text at all, or a JSON text cut short
    or followed by more."""
    value = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans()))
    text = draw(_JSON_SPACE) + value + draw(_JSON_SPACE)
    choice = draw(st.integers(0, 3))
    if choice == 1:
        return text[:draw(st.integers(0, len(text)))]
    if choice == 2:
        return text + draw(st.text(max_size=5))
    if choice == 3:
        return draw(st.text(max_size=20))
    return text


@given(json_texts() | st.text(max_size=3).map(lambda t: "\ufeff" + t))
def test_the_request_decoder_is_jsondecoder_decode(text: str) -> None:
    """The request body's decoder answers as ``JSONDecoder.decode`` does (``json.loads``
    less its check for a byte-order mark, which the body's decoding already removed): the
    same value, or a refusal with the same message (which the client sees in its 400)."""
    def outcome(decode: Any) -> tuple[str, Any]:
        try:
            return "value", decode(text)
        except ValueError as error:
            return "refused", str(error)

    expected = outcome(json.JSONDecoder(parse_constant=_refuse_constant).decode)
    assert outcome(_decode) == expected
