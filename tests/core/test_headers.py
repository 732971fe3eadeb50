"""Relayed headers: what crosses the gateway, found in one pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from igw_core.headers import HOP_BY_HOP, decimal, relayed

_NAMES = st.sampled_from([
    b"content-type", b"content-length", b"connection", b"keep-alive", b"x-custom",
    b"x-request-id", b"set-cookie", b"transfer-encoding", b"date", b"x-ratelimit-limit",
])
_VALUES = st.sampled_from([
    b"application/json", b"12", b"close", b"keep-alive", b"x-custom, Date", b" X-Custom ",
    b"upgrade", b"", b"text/event-stream",
])
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)
_DROPS = st.frozensets(_NAMES, max_size=3)


@given(_HEADERS, _DROPS)
def test_relayed_keeps_exactly_the_end_to_end_headers_in_order(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> None:
    listed = {token.strip().lower() for name, value in headers if name == b"connection"
              for token in value.split(b",")}
    out, content_type, length = relayed(headers, drop=drop)
    assert out == [(k, v) for k, v in headers
                   if k not in HOP_BY_HOP and k not in drop and k not in listed]
    assert content_type == next((v for k, v in headers
                                 if k == b"content-type" and k not in drop), None)
    assert length == next((v for k, v in headers if k == b"content-length"), None)


@given(st.one_of(st.binary(max_size=24), st.integers(0, 10**30).map(lambda n: b"%d" % n),
                 st.text("0123456789 +-_.x", max_size=8).map(str.encode)))
def test_a_decimal_value_is_what_int_reads_from_ascii_digits(value: bytes) -> None:
    assert decimal(value) == (int(value) if value.isdigit() else None)
