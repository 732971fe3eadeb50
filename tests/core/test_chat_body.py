"""The upstream chat body: edited in place or re-encoded, it always means the right request."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.chat import _decode, _decode_members, _refuse_constant, parse_request, plan_chat
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
    if draw(st.booleans()):  # a "model" deeper down, spelled like the real one or not
        request["metadata"] = {"model": draw(st.sampled_from([request["model"], "x"]))}
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


def test_a_model_key_deeper_down_is_left_alone() -> None:
    body = (b'{"model":"openai/gpt-4o","metadata":{"model":"openai/gpt-4o"},'
            b'"messages":[]}')
    assert plan_chat(GATEWAY, body, None).body == (
        b'{"model":"gpt-4o","metadata":{"model":"openai/gpt-4o"},"messages":[]}')


def test_a_model_key_given_twice_is_reencoded_into_one() -> None:
    body = b'{"model":"openai/gpt-4o-mini","messages":[],"model":"openai/gpt-4o"}'
    sent = plan_chat(GATEWAY, body, None).body
    assert sent.count(b'"model"') == 1 and json.loads(sent)["model"] == "gpt-4o"


@pytest.mark.parametrize("turns", [1, 400], ids=["short", "over-8-KB"])
def test_a_long_conversation_before_the_model_is_spliced_not_reencoded(turns: int) -> None:
    """The SDKs send ``messages`` first: the model is found where the parse met it, in a
    body with multi-byte characters and escapes on both sides of it."""
    content = '"h\\u00e9 \\"model\\": \u00e9\u20ac \U0001f600"'
    turn = '{"role":"user","content":' + content + '}'
    messages = ("[" + ",".join([turn] * turns) + "]").encode()
    body = b'{ "messages" : ' + messages + b' ,\n "model":"openai\\/gpt-4o" , "n":1 }'
    plan = plan_chat(GATEWAY, body, None)
    assert plan.body == b'{ "messages" : ' + messages + b' ,\n "model":"gpt-4o" , "n":1 }'


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


_OBJECT_MEMBER = st.tuples(
    st.sampled_from(["model", "messages", "m", "x", 'mo"del', "mödel", "k\n", ""]), json_values,
)


@st.composite
def object_texts(draw: st.DrawFn) -> str:
    """A JSON object's text with any spacing, keys that may repeat, and sometimes a flaw."""
    space = draw(_JSON_SPACE)
    members = draw(st.lists(_OBJECT_MEMBER, max_size=4))
    ascii_only = draw(st.booleans())
    parts = [space.join([json.dumps(key, ensure_ascii=ascii_only), ":",
                         json.dumps(value, ensure_ascii=ascii_only)])
             for key, value in members]
    text = draw(_JSON_SPACE) + "{" + space + ("," + space).join(parts) + space + "}"
    flaw = draw(st.integers(0, 6))
    if flaw == 1 and parts:
        text = text.replace(",", ",,", 1) if "," in text else text[:-1] + ",}"
    elif flaw == 2:
        text = text[:draw(st.integers(0, len(text)))]
    elif flaw == 3:
        text += draw(st.sampled_from(["x", "}", ",", "  "]))
    elif flaw == 4:
        text = text.replace(":", "", 1)
    elif flaw == 5:  # a raw control character, a lone backslash or quote, anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\x01", "\n", "\\", '"'])) + text[at:]
    return text


@given(object_texts() | json_texts())
def test_member_by_member_parsing_is_the_decoder_and_finds_the_one_top_level_model(
    text: str,
) -> None:
    def outcome(decode: Any) -> tuple[str, Any]:
        try:
            return "value", decode(text)
        except ValueError as error:
            return "refused", str(error)

    expected = outcome(_decode)
    got = outcome(_decode_members)
    assert got[0] == expected[0]
    if got[0] == "refused":
        assert got[1] == expected[1]
        return
    value, start, end = got[1]
    assert value == expected[1]
    if start >= 0:
        assert isinstance(value, dict)
        assert json.loads(text[start:end]) == value["model"]
        assert text[:start].rstrip().endswith(":")
        assert text.count('"model"') >= 1


@given(st.text(max_size=30), st.text(min_size=1, max_size=12), st.text(max_size=30),
       st.booleans(), st.booleans(), st.booleans())
def test_the_model_span_holds_the_model_in_the_bytes(
    before: str, model: str, after: str, ascii_only: bool, model_first: bool, bom: bool,
) -> None:
    members = {"messages": [{"role": "user", "content": before}], "model": model,
               "user": after}
    if model_first:
        members = {"model": model, **members}
    body = json.dumps(members, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if bom:
        body = b"\xef\xbb\xbf" + body
    request, span = parse_request(body)
    assert request == json.loads(body)
    assert span is not None
    start, end = span
    assert json.loads(body[start:end]) == model
