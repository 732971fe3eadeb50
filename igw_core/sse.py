"""Server-sent events: an incremental parser and the encoder the gateway uses.

The parser follows the WHATWG event-stream rules (``\\n``, ``\\r\\n`` or ``\\r``
line ends, ``data`` lines joined with ``\\n``, comments ignored) and gives the
same events however the stream is split into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    Fields:
        data: the ``data`` lines joined with ``\\n``.
        event: the ``event`` field, ``"message"`` when absent.
        id: the last ``id`` field seen, or ``None``.
    """

    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Turns event-stream bytes, fed in arbitrary pieces, into :class:`SSEEvent` s."""

    __slots__ = ("_buffer", "_data", "_event", "_has_data", "_last_id", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        events: list[SSEEvent] = []
        if not chunk:
            return events
        buffer = self._buffer
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        # What the buffer held holds no line end (earlier feeds consumed up to the
        # last one), so only the new bytes need searching: a long line fed in tiny
        # pieces costs linear time, not quadratic.
        scanned = len(buffer)
        buffer += chunk
        if not self._started:
            # One leading byte order mark is ignored, even when split across chunks.
            if _BOM.startswith(buffer):
                return events
            self._started = True
            if buffer.startswith(_BOM):
                del buffer[:3]
            scanned = 0
        start = 0
        size = len(buffer)
        cr = buffer.find(b"\r", scanned)
        lf = buffer.find(b"\n", scanned)
        while start < size:
            # Search again only past a consumed line end, so a chunk is scanned once.
            if 0 <= cr < start:
                cr = buffer.find(b"\r", start)
            if 0 <= lf < start:
                lf = buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < size:
                end = cr
                nxt = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                # A trailing \r: the line ends here, but a \n may follow in the next chunk.
                end, nxt = cr, cr + 1
                self._skip_lf = True
            self._line(bytes(buffer[start:end]), events)
            start = nxt
        del buffer[:start]
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                data = "\n".join(self._data)
                events.append(SSEEvent(data, self._event or "message", self._last_id))
            self._data = []
            self._has_data = False
            self._event = ""
            return
        if line[:1] == b":":
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
            self._has_data = True
        elif name == b"event":
            self._event = text
        elif name == b"id" and "\x00" not in text:
            self._last_id = text


def encode_data(payload: bytes) -> bytes:
    """Frame ``payload`` (one line of JSON) as a ``data:`` event."""
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
