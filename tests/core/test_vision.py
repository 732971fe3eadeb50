"""Properties of igw_core.vision: the gate decides as the gateway promises (images refused
unless ENABLE_VISION=true; text-only models refused), however the body spells them."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.errors import BadRequest
from igw_core.vision import carries_image, check_vision, model_lacks_vision

FAST = settings(max_examples=100, deadline=None)

# --- the reference decision, from the vision promise and the OpenAI/Anthropic/Responses formats

IMAGE_PART_TYPES = {"image_url", "image", "input_image"}


def reference_is_image_part(part: Any) -> bool:
    """A content part is an image if its type says so, or it is untyped and holds an image."""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    if isinstance(kind, str):
        return kind in IMAGE_PART_TYPES
    return kind is None and ("image_url" in part or "image" in part)


def reference_carries_image(request: Any) -> bool:
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return False
    return any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(reference_is_image_part(p) for p in m["content"])
        for m in request["messages"]
    )


# (model as forwarded upstream, whether the gateway knows it lacks vision)
MODELS = [
    ("gpt-4o", False),
    ("gpt-4o-mini", False),
    ("claude-3-5-sonnet-latest", False),
    ("some-unknown-model", False),
    ("meta-llama/llama-4-scout-17b-16e-instruct", False),
    ("gpt-3.5-turbo", True),
    ("GPT-3.5-Turbo-0125", True),
    ("gpt-4", True),
    ("deepseek-chat", True),
    ("o3-mini", True),
]


def reference_decision(enabled: bool, request: Any, lacks: bool) -> str | None:
    """The error code check_vision must raise, or None to let the request through."""
    if not reference_carries_image(request):
        return None
    if not enabled:
        return "vision_disabled"
    if lacks:
        return "model_lacks_vision"
    return None


# --- generated chat requests --------------------------------------------------------------

tricky_text = st.one_of(
    st.text(max_size=15),
    st.sampled_from(["image", "IMAGE", "imagine", "image_url", "input_image", "\\u0069", "\x00"]),
)
http_urls = st.builds(
    "{}://{}/{}.{}".format,
    st.sampled_from(["http", "https"]),
    st.sampled_from(["example.com", "cdn.example.org:8443", "127.0.0.1"]),
    st.text(alphabet="abcxyz019-_", min_size=1, max_size=8),
    st.sampled_from(["png", "jpg", "webp", "txt"]),
)
data_urls = st.builds(
    "data:{};base64,{}".format,
    st.sampled_from(["image/png", "image/jpeg", "text/plain"]),
    st.text(alphabet="ABCDEFabcdef0123456789+/=", max_size=16),
)
urls = http_urls | data_urls
json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | tricky_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=6,
)

image_parts = st.one_of(
    st.builds(lambda u, d: {"type": "image_url", "image_url": {"url": u, **d}}, urls,
              st.just({}) | st.just({"detail": "high"})),
    st.builds(lambda u: {"type": "image_url", "image_url": u}, urls),
    st.builds(lambda d: {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                       "data": d}}, st.text(max_size=8)),
    st.builds(lambda u: {"type": "input_image", "image_url": u}, urls),
    st.builds(lambda u: {"image_url": {"url": u}}, urls),  # untyped
    st.builds(lambda u: {"image": u}, urls),  # untyped
)
other_parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, tricky_text),
    st.builds(lambda t, u: {"type": "text", "text": t, "image_url": {"url": u}}, tricky_text, urls),
    st.builds(lambda t: {"type": t}, json_values),  # any JSON value as the type
    st.builds(lambda u: {"type": "input_text", "text": u}, urls),  # a URL in text is text
    json_values,
)
parts = image_parts | other_parts
messages = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]),
         "content": tricky_text | st.lists(parts, max_size=4) | json_values},
    ),
    json_values,
)
requests = st.fixed_dictionaries(
    {"model": st.sampled_from([m for m, _ in MODELS]), "messages": st.lists(messages, max_size=4)},
    optional={"stream": st.booleans(), "x_extra": json_values},
)


# --- encoders: any JSON a provider's parser (and json.loads) accepts ----------------------


def escape_char(ch: str, upper: bool) -> str:
    code = ord(ch)
    hex_format = "\\u{:04X}" if upper else "\\u{:04x}"
    if code > 0xFFFF:
        code -= 0x10000
        return hex_format.format(0xD800 + (code >> 10)) + hex_format.format(0xDC00 + (code & 0x3FF))
    return hex_format.format(code)


def encode_string(text: str, rnd: random.Random, rate: float) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or rnd.random() < rate:
            out.append(escape_char(ch, rnd.random() < 0.5))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def encode(value: Any, rnd: random.Random, rate: float) -> str:
    """Serialise ``value`` as JSON, writing each string character as ``\\uXXXX`` at ``rate``."""
    space = rnd.choice(["", " ", "\n  "])
    if isinstance(value, dict):
        return "{" + space + ("," + space).join(
            encode_string(k, rnd, rate) + space + ":" + encode(v, rnd, rate)
            for k, v in value.items()
        ) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, rnd, rate) for v in value) + space + "]"
    if isinstance(value, str):
        return encode_string(value, rnd, rate)
    return json.dumps(value)


# A seeded generator: hypothesis's own randoms() draws every call from the test data,
# which is slow for a per-character choice.
seeded_randoms = st.integers(0, 2**32 - 1).map(random.Random)

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
             "utf-32-be"]


@st.composite
def encoded_requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    request = draw(requests)
    how = draw(st.sampled_from(["ascii", "unicode", "escaped"]))
    if how == "escaped":
        rnd = draw(seeded_randoms)
        text = encode(request, rnd, draw(st.sampled_from([0.0, 0.05, 0.3, 1.0])))
    else:
        text = json.dumps(request, ensure_ascii=how == "ascii")
    # json.loads(bytes) -- which the gateway parses the body with -- accepts every one of these.
    encoding = draw(st.sampled_from(ENCODINGS) if draw(st.booleans()) else st.just("utf-8"))
    return request, text.encode(encoding)


@FAST
@given(encoded_requests())
def test_carries_image_agrees_with_the_reference(case: tuple[dict[str, Any], bytes]) -> None:
    request, body = case
    assert carries_image(json.loads(body)) == reference_carries_image(request)


@FAST
@given(encoded_requests(), st.booleans(), st.sampled_from(MODELS))
def test_check_vision_agrees_with_the_reference_decision(
    case: tuple[dict[str, Any], bytes], enabled: bool, model: tuple[str, bool]
) -> None:
    request, body = case
    name, lacks = model
    expected = reference_decision(enabled, request, lacks)
    if expected is None:
        check_vision(enabled, json.loads(body), name)
        return
    with pytest.raises(BadRequest) as raised:
        check_vision(enabled, json.loads(body), name)
    assert raised.value.code == expected
    assert raised.value.status == 400
    if expected == "vision_disabled":
        assert "ENABLE_VISION=true" in raised.value.message
    else:
        assert name in raised.value.message


@FAST
@given(st.lists(image_parts, min_size=1, max_size=3), seeded_randoms,
       st.sampled_from(ENCODINGS))
def test_fully_escaped_images_are_refused_when_vision_is_off(
    images: list[Any], rnd: random.Random, encoding: str
) -> None:
    request = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": images}]}
    body = encode(request, rnd, 1.0).encode(encoding)
    assert b"image" not in body
    with pytest.raises(BadRequest) as raised:
        check_vision(False, json.loads(body), "gpt-4o")
    assert "ENABLE_VISION=true" in raised.value.message


def test_a_utf16_body_cannot_hide_an_image() -> None:
    request = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}
    body = json.dumps(request).encode("utf-16")
    assert json.loads(body) == request
    with pytest.raises(BadRequest):
        check_vision(False, json.loads(body), "gpt-4o")


@pytest.mark.parametrize("kind", [[], {}, ["image_url"], {"a": 1}])
def test_unhashable_part_type_is_not_an_image_and_does_not_raise(kind: Any) -> None:
    request = {"messages": [{"role": "user", "content": [{"type": kind, "image": "x"}]}]}
    assert not carries_image(request)
    check_vision(False, request, "gpt-4o")


def test_images_pass_when_vision_is_on_and_the_model_is_not_known_text_only() -> None:
    request = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    check_vision(True, request, "gpt-4o")
    check_vision(True, request, "brand-new-model")


@pytest.mark.parametrize(("model", "lacks"), MODELS)
def test_model_lacks_vision_table(model: str, lacks: bool) -> None:
    assert model_lacks_vision(model) is lacks


def test_text_only_models_without_images_pass() -> None:
    request = {"messages": [{"role": "user", "content": "describe an image_url"}]}
    check_vision(False, request, "gpt-3.5-turbo")
