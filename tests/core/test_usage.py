"""Properties of igw_core.usage: the token usage a relayed OpenAI body reports, however split."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from igw_core.report import Usage
from igw_core.usage import ResponseTap, usage_from_body

FAST = settings(max_examples=100, deadline=None)

# Model output that looks like what the tap searches for: it is inside a JSON string, so escaped.
contents = st.one_of(
    st.just("usage"),
    st.text(max_size=20),
    st.sampled_from([
        "usage", '"usage"', '"usage": {"prompt_tokens": 99}', "usage:", '{"usage":{}}',
        "data: [DONE]", "\\", "\n\ndata: ",
    ]),
)
counts = st.integers(0, 10**7)


@st.composite
def usages(draw: st.DrawFn) -> tuple[dict[str, Any], Usage]:
    """A provider's ``usage`` object and the Usage it means."""
    prompt, completion = draw(counts), draw(counts)
    obj: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    total = prompt + completion
    if draw(st.booleans()):
        obj["total_tokens"] = total
    if draw(st.booleans()):
        obj["prompt_tokens_details"] = {"cached_tokens": draw(counts)}
    if draw(st.booleans()):
        obj["completion_tokens_details"] = {"reasoning_tokens": draw(counts)}
    return shuffled(obj, draw(seeds)), Usage(prompt, completion, total)


seeds = st.integers(0, 2**32 - 1)


def shuffled(obj: dict[str, Any], seed: int) -> dict[str, Any]:
    items = list(obj.items())
    random.Random(seed).shuffle(items)
    return dict(items)


def dumps(obj: Any, style: int) -> bytes:
    separators = [(",", ":"), (", ", ": "), (",", " : ")][style % 3]
    return json.dumps(obj, separators=separators, ensure_ascii=style % 2 == 0).encode()


@st.composite
def json_responses(draw: st.DrawFn, with_usage: bool = True) -> tuple[bytes, Usage | None]:
    """A non-streamed chat completion (keys in any order) and its usage."""
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": draw(st.sampled_from(["gpt-4o", "usage"])),
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
            for i, c in enumerate(draw(st.lists(contents, min_size=1, max_size=3)))
        ],
    }
    expected = None
    if with_usage:
        obj["usage"], expected = draw(usages())
    elif draw(st.booleans()):
        obj["usage"] = None
    return dumps(shuffled(obj, draw(seeds)), draw(st.integers(0, 5))), expected


@st.composite
def event_streams(draw: st.DrawFn, with_usage: bool = True) -> tuple[bytes, Usage | None]:
    """A streamed chat completion: content chunks, then (optionally) the usage chunk."""
    null_usage = draw(st.booleans())  # some providers send "usage": null in every chunk
    style = draw(st.integers(0, 5))
    end = draw(st.sampled_from([b"\n\n", b"\r\n\r\n"]))
    chunks: list[bytes] = []
    for text in draw(st.lists(contents, max_size=6)):
        choice = shuffled({"index": 0, "delta": {"content": text}, "finish_reason": None},
                          draw(seeds))
        chunk: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [choice],
        }
        if null_usage:
            chunk["usage"] = None
        chunks.append(b"data: " + dumps(shuffled(chunk, draw(seeds)), style) + end)
    expected = None
    if with_usage:
        usage, expected = draw(usages())
        final = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                 "usage": usage}
        chunks.append(b"data: " + dumps(shuffled(final, draw(seeds)), style) + end)
    chunks.append(b"data: [DONE]" + end)
    return b"".join(chunks), expected


bodies = json_responses() | event_streams()
bodies_without_usage = json_responses(with_usage=False) | event_streams(with_usage=False)


@st.composite
def splits(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(0, len(raw)), max_size=10)))
    return [raw[a:b] for a, b in itertools.pairwise([0, *cuts, len(raw)])]


def tap_usage(chunks: list[bytes]) -> Usage | None:
    tap = ResponseTap()
    for chunk in chunks:
        tap.feed(chunk)
    assert tap.seen == sum(len(c) for c in chunks)
    return tap.usage()


@FAST
@given(bodies, st.data())
def test_tap_reports_the_usage_however_the_body_is_split(
    case: tuple[bytes, Usage | None], data: st.DataObject
) -> None:
    raw, expected = case
    assert usage_from_body(raw) == expected
    assert tap_usage([raw]) == expected
    assert tap_usage(data.draw(splits(raw))) == expected


@FAST
@given(bodies_without_usage, st.data())
def test_bodies_without_usage_report_none(
    case: tuple[bytes, Usage | None], data: st.DataObject
) -> None:
    raw, _ = case
    assert usage_from_body(raw) is None
    assert tap_usage(data.draw(splits(raw))) is None


# About 75 kB of content chunks: far more than the tap keeps.
FILLER = b"".join(
    b'data: {"choices":[{"delta":{"content":"' + b"x" * 200 + b'"}}],"usage":null}\n\n'
    for _ in range(300)
)


@settings(max_examples=40, deadline=None)
@given(event_streams(), st.integers(1, 5000))
def test_usage_survives_a_long_stream(case: tuple[bytes, Usage | None], chunk_size: int) -> None:
    raw, expected = case
    raw = FILLER + raw
    assert tap_usage([raw[i : i + chunk_size] for i in range(0, len(raw), chunk_size)]) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode), st.data())
@example(b'"usage":' + b"[" * 5000, None)
@example(b'"usage": {"prompt_tokens": 1e999, "completion_tokens": -1}', None)
@example(b'"usage": {"prompt_tokens": "7", "total_tokens": null}', None)
@example(b'"usage":"', None)
@example(b'"usage"', None)
@example(b'{"usage":{"prompt_tokens":1}}\xff\xfe', None)
def test_tap_never_raises_on_arbitrary_bytes(raw: bytes, data: st.DataObject | None) -> None:
    found = usage_from_body(raw)
    chunks = data.draw(splits(raw)) if data is not None else [raw]
    assert tap_usage(chunks) == found
    if found is not None:
        assert min(found.prompt_tokens, found.completion_tokens, found.total_tokens) >= 0


def test_usage_string_value_is_not_taken_for_the_usage_key() -> None:
    # A model that answers with the single word "usage": the next object must not be read
    # as its usage.
    raw = (
        b'data: {"choices":[{"delta":{"content":"usage"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"!"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert usage_from_body(raw) is None


def test_last_usage_wins_over_earlier_null_usage() -> None:
    raw = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,'
        b'"total_tokens":7}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert usage_from_body(raw) == Usage(3, 4, 7)


def test_missing_total_is_the_sum() -> None:
    assert usage_from_body(b'{"usage":{"prompt_tokens":3,"completion_tokens":4}}') == Usage(3, 4, 7)


def test_tap_keeps_a_bounded_head_when_asked() -> None:
    tap = ResponseTap(keep_head=5)
    for piece in (b"abc", b"defg", b"hij"):
        tap.feed(piece)
    assert tap.head == b"abcde"
    assert ResponseTap().head == b""
