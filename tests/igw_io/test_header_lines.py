"""Header lines formatted for the wire: every line, in order, however many there are."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from igw_io.header_lines import header_lines

_PARTS = st.binary(max_size=300)


@given(st.lists(st.tuples(_PARTS, _PARTS), max_size=80))
def test_the_lines_are_each_header_in_order(headers: list[tuple[bytes, bytes]]) -> None:
    expected = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
    assert header_lines(headers) == expected
    assert header_lines(tuple(headers)) == expected


def test_thousands_of_headers_are_all_there() -> None:
    """A client's 64 KiB of headers through /proxy: nothing lost or reordered."""
    headers = [(b"x-h%d" % i, b"v" * (i % 40)) for i in range(4000)]
    joined = header_lines(headers)
    assert joined.count(b"\r\n") == 4000
    assert joined == b"".join(b"%s: %s\r\n" % header for header in headers)
