"""Header names as igw keeps them, and the header lines of an HTTP/1.1 head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: The table of ``bytes.translate`` to ASCII lower case, which header names are kept in:
#: compiled, ``name.translate(LOWER)`` is a direct call (and hands back ``name`` itself
#: when it is lower case already), where ``name.lower()`` is a method found by name.
LOWER: Final = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")

#: Up to this many headers, the lines are formatted onto one block: compiled, a bytes
#: %-format of bytes copies each part once, where a join goes through the buffer protocol
#: for every part. Past it they are joined: the block would be copied once per header, and
#: a client may send thousands of headers (64 KiB of them) through ``/proxy``.
_FORMATTED: Final = 32


def header_lines(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Return ``name: value\\r\\n`` for each header, in order (the parts are not checked)."""
    # Compiled, a list's length and items are read in place; another sequence's are calls.
    listed: list[tuple[bytes, bytes]] = (headers if isinstance(headers, list)
                                         else list(headers))
    if len(listed) > _FORMATTED:
        return b"".join([b"%b: %b\r\n" % (name, value) for name, value in listed])
    block = b""
    for name, value in listed:
        block = b"%b%b: %b\r\n" % (block, name, value)
    return block
