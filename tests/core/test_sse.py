"""Properties of igw_core.sse: the event-stream parser is split-invariant and follows WHATWG."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.sse import DONE, SSEEvent, SSEParser, encode_data

FAST = settings(max_examples=60, deadline=None)

LINE_ENDS = ("\n", "\r\n", "\r")
BOM = "\ufeff"

# Field values: any text without a line break (NUL, emoji, RTL text and so on included).
values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=12,
) | st.sampled_from(["", " ", "  lead", "[DONE]", '{"a": 1}', "é😀", "data: x", ":"])


@dataclass(frozen=True)
class Line:
    """One line of a generated stream: ``field`` is data/event/id/comment/other/bare."""

    field: str
    value: str
    space: bool  # whether a space follows the colon
    end: str  # the line end


def _line(field: str) -> st.SearchStrategy[Line]:
    return st.builds(Line, st.just(field), values, st.booleans(), st.sampled_from(LINE_ENDS))


lines = st.one_of(
    _line("data"),
    _line("data"),
    _line("event"),
    _line("id"),
    _line("comment"),
    _line("retry"),
    st.builds(Line, st.sampled_from(["bare-data", "bare-event", "bare-x"]), st.just(""),
              st.just(False), st.sampled_from(LINE_ENDS)),
)


@dataclass(frozen=True)
class Stream:
    """A generated event stream: blocks of lines, each block closed by a blank line."""

    bom: bool
    blocks: tuple[tuple[tuple[Line, ...], str], ...]  # (lines, blank line's end)
    tail: tuple[Line, ...]  # lines of an unterminated last event
    tail_cut: bool  # whether the very last line lacks its line end

    def encode(self) -> bytes:
        out: list[str] = [BOM] if self.bom else []
        previous_end = ""

        def emit(text: str, end: str) -> None:
            nonlocal previous_end
            # A blank line ended by "\n" right after a "\r" would merge into one "\r\n"
            # line end: the format itself cannot say that, so say it with "\r\n".
            if text == "" and end == "\n" and previous_end == "\r":
                end = "\r\n"
            out.append(text + end)
            previous_end = end

        for block, blank_end in self.blocks:
            for line in block:
                emit(render(line), line.end)
            emit("", blank_end)
        for i, line in enumerate(self.tail):
            last = i == len(self.tail) - 1
            emit(render(line), "" if last and self.tail_cut else line.end)
        return "".join(out).encode("utf-8")

    def expected(self) -> list[SSEEvent]:
        """The events the WHATWG rules dispatch for this stream, written from the spec."""
        events: list[SSEEvent] = []
        last_id: str | None = None
        for block, _ in self.blocks:
            data: list[str] = []
            event_type = ""
            for line in block:
                field, value = meaning(line)
                if field == "data":
                    data.append(value)
                elif field == "event":
                    event_type = value
                elif field == "id" and "\x00" not in value:
                    last_id = value
            if data:
                events.append(SSEEvent("\n".join(data), event_type or "message", last_id))
        return events


def render(line: Line) -> str:
    if line.field == "comment":
        return ":" + line.value
    if line.field.startswith("bare-"):
        return line.field.removeprefix("bare-")
    # The parser strips exactly one leading space, so a value that starts with a
    # space needs the separating space.
    space = " " if line.space or line.value.startswith(" ") else ""
    return f"{line.field}:{space}{line.value}"


def meaning(line: Line) -> tuple[str, str]:
    if line.field.startswith("bare-"):
        return line.field.removeprefix("bare-"), ""
    return line.field, line.value


streams = st.builds(
    Stream,
    st.booleans(),
    st.lists(
        st.tuples(st.lists(lines, max_size=5).map(tuple), st.sampled_from(LINE_ENDS)),
        max_size=5,
    ).map(tuple),
    st.lists(lines, max_size=2).map(tuple),
    st.booleans(),
)


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


@FAST
@given(streams)
def test_whole_stream_yields_the_generated_events(stream: Stream) -> None:
    assert parse([stream.encode()]) == stream.expected()


@FAST
@given(streams)
def test_every_two_way_split_yields_the_same_events(stream: Stream) -> None:
    raw = stream.encode()
    whole = parse([raw])
    for cut in range(len(raw) + 1):
        assert parse([raw[:cut], raw[cut:]]) == whole, cut


@FAST
@given(streams, st.data())
def test_random_multi_way_splits_yield_the_same_events(stream: Stream, data: st.DataObject) -> None:
    raw = stream.encode()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse(chunks) == stream.expected()


@FAST
@given(streams)
def test_one_byte_chunks_yield_the_same_events(stream: Stream) -> None:
    raw = stream.encode()
    assert parse([raw[i : i + 1] for i in range(len(raw))]) == stream.expected()


@FAST
@given(streams, st.data())
def test_empty_chunks_change_nothing(stream: Stream, data: st.DataObject) -> None:
    raw = stream.encode()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=6)))
    bounds = [0, *cuts, len(raw)]
    chunks: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        chunks.extend([b""] * data.draw(st.integers(0, 2)))
        chunks.append(raw[a:b])
    chunks.append(b"")
    assert parse(chunks) == stream.expected()


def test_empty_chunk_returns_no_events_and_keeps_state() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []  # the pending "\r" still waits for a possible "\n"
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SSEEvent("a")]
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: b\n\n") == [SSEEvent("b")]


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    # Were "\r" | "\n" two line ends, the "\n" would be a blank line dispatching "a" alone.
    assert parse([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SSEEvent("a\nb")]


@FAST
@given(streams)
def test_crlf_split_between_cr_and_lf_is_one_line_end(stream: Stream) -> None:
    raw = stream.encode()
    whole = parse([raw])
    for at in range(len(raw) - 1):
        if raw[at : at + 2] == b"\r\n":
            assert parse([raw[: at + 1], raw[at + 1 :]]) == whole


def test_cr_alone_ends_a_line() -> None:
    assert parse([b"data: a\rdata: b\r\r"]) == [SSEEvent("a\nb")]


def test_unterminated_last_event_is_not_dispatched() -> None:
    assert parse([b"data: a\n\ndata: b\n"]) == [SSEEvent("a")]


def test_leading_byte_order_mark_is_ignored_even_when_split() -> None:
    raw = BOM.encode() + b"data: a\n\n"
    for cut in range(len(raw) + 1):
        assert parse([raw[:cut], raw[cut:]]) == [SSEEvent("a")]
    # Only one: a second BOM makes the first field's name "\ufeffdata", which is ignored.
    assert parse([(BOM + BOM + "data: a\n\n").encode()]) == []


def test_event_type_and_id_rules() -> None:
    raw = (
        b"event: ping\nid: 1\ndata: x\n\n"  # typed, with id
        b"data: y\n\n"  # the type resets, the id stays
        b"id: 2\nevent: lost\n\n"  # no data: nothing dispatched, the type is dropped
        b"data: z\n\n"
        b"id: bad\x00\ndata: w\n\n"  # an id with NUL is ignored
        b"id\ndata\n\n"  # a bare "id" sets the id to "", a bare "data" is an empty line
    )
    assert parse([raw]) == [
        SSEEvent("x", "ping", "1"),
        SSEEvent("y", "message", "1"),
        SSEEvent("z", "message", "2"),
        SSEEvent("w", "message", "2"),
        SSEEvent("", "message", ""),
    ]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse([b"data: \xff\xfe\n\n"]) == [SSEEvent("\ufffd\ufffd")]


json_lines = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
).map(lambda s: s.encode())


@FAST
@given(st.lists(json_lines, max_size=6))
def test_encode_data_round_trips_through_the_parser(payloads: list[bytes]) -> None:
    raw = b"".join(encode_data(p) for p in payloads) + DONE
    # encode_data writes "data: " + payload: exactly the one separating space is removed.
    expected = [SSEEvent(p.decode()) for p in payloads] + [SSEEvent("[DONE]")]
    assert parse([raw]) == expected
    assert parse([raw[i : i + 1] for i in range(len(raw))]) == expected
