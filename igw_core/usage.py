"""Token usage read from a provider response that the gateway relays untouched.

:class:`ResponseTap` watches relayed chunks and keeps only a bounded tail (and,
in development, a bounded head for the debug log), so the relay itself never
parses JSON per chunk.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any, Final

from mypy_extensions import mypyc_attr

from igw_core.report import Usage

_USAGE_KEY: Final = b'"usage"'
_TAIL: Final = 16384
_DONE: Final = b"data: [DONE]"


def usage_from_object(obj: Any) -> Usage | None:
    """Return the ``usage`` of a parsed response or chunk, if it has one.

    Chat completions and embeddings count ``prompt_tokens``/``completion_tokens``; the
    Responses and Anthropic Messages APIs count ``input_tokens``/``output_tokens``, and
    Anthropic's ``input_tokens`` leaves out the cached prompt tokens, which it counts
    in ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.
    """
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    if "input_tokens" in usage or "output_tokens" in usage:
        prompt = (count("input_tokens") + count("cache_read_input_tokens")
                  + count("cache_creation_input_tokens"))
        completion = count("output_tokens")
    else:
        prompt = count("prompt_tokens")
        completion = count("completion_tokens")
    total = count("total_tokens") or prompt + completion
    return Usage(prompt, completion, total)


#: The C scanner behind ``json.loads``, called directly: ``JSONDecoder.raw_decode`` around
#: it is a Python frame. (typeshed wants another scanner as the context; json.decoder
#: passes a decoder, as here.)
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    json.JSONDecoder())  # type: ignore[arg-type]


def usage_from_body(body: bytes, *, first: bool = False) -> Usage | None:
    """Return the last (or with ``first``, the first) usage reported in a JSON body or
    a piece of an event stream."""
    at = body.find(_USAGE_KEY) if first else body.rfind(_USAGE_KEY)
    while at != -1:
        # The usage object is a member of the enclosing response object; parse
        # just that member's value.
        end = at + len(_USAGE_KEY)
        colon = body.find(b":", end)
        # Only a key is followed by a colon: a "usage" string value is not.
        if colon != -1 and not body[end:colon].strip():
            try:
                rest = body[colon + 1 :].decode("utf-8", "replace").lstrip()
                value, _ = _SCAN(rest, 0)
            except (ValueError, StopIteration, RecursionError):  # StopIteration: no value
                value = None
            found = usage_from_object({"usage": value})
            if found is not None:
                return found
        at = body.find(_USAGE_KEY, at + 1) if first else body.rfind(_USAGE_KEY, 0, at)
    return None


@mypyc_attr(free_list_len=1, acyclic=True)
class ResponseTap:
    """Watches a relayed response body: usage from its tail, a debug copy of its head."""

    __slots__ = ("_expected", "_head", "_head_limit", "_keep_tail", "_tail", "seen")

    def __init__(self, *, keep_head: int = 0, expected: int | None = None,
                 keep_tail: bool = True) -> None:
        """``keep_tail``: keep the tail for :meth:`usage`; without it, and with an
        ``expected`` length, the tap only counts (a body without a length keeps its tail
        anyway: :attr:`complete` looks for its ``[DONE]``)."""
        self._tail = bytearray()
        self._head = bytearray()
        self._head_limit = keep_head
        self._expected = expected
        self._keep_tail = keep_tail or expected is None
        self.seen = 0

    def feed(self, data: bytes) -> None:
        """Observe one relayed chunk."""
        self.seen += len(data)
        if len(self._head) < self._head_limit:
            self._head += data[: self._head_limit - len(self._head)]
        if self._keep_tail:
            tail = self._tail
            tail += data
            if len(tail) > 2 * _TAIL:
                del tail[:-_TAIL]

    @property
    def head(self) -> bytes:
        """The first bytes of the body (only kept when ``keep_head`` > 0)."""
        return bytes(self._head)

    def usage(self) -> Usage | None:
        """Return the usage the body reported, if any.

        An Anthropic event stream counts the prompt in its first event and the output
        in its last; when the last usage has no prompt count, the head's first does.
        """
        found = usage_from_body(bytes(self._tail))
        if found is not None and found.prompt_tokens == 0 and self._head:
            early = usage_from_body(bytes(self._head), first=True)
            if early is not None and early.prompt_tokens:
                prompt = early.prompt_tokens
                found = Usage(prompt, found.completion_tokens, prompt + found.completion_tokens)
        return found

    @property
    def complete(self) -> bool:
        """Whether the whole answer went by: all declared bytes, or the final ``[DONE]``.

        A client may close the moment it has the answer, before the provider's
        connection signals the end; that client was served, not abandoned.
        """
        if self._expected is not None:
            return self.seen >= self._expected
        return self._tail.rstrip().endswith(_DONE)
