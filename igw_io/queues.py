"""A first-in, first-out queue for the hot path: a list and the index of its next item."""

from __future__ import annotations

from typing import Generic, TypeVar

from mypy_extensions import mypyc_attr

T = TypeVar("T")


@mypyc_attr(free_list_len=1)
class Queue(Generic[T]):
    """Items taken in the order they were added; ``None`` is not an item.

    Compiled, a deque's methods are calls by name and ``list.pop(0)`` is a slice
    assignment and a reallocation; this queue reads the list in place and moves an
    index. Producers append to :attr:`items` (a parser is handed the list itself);
    taken items stay in it until :meth:`compact` finds all of them taken.
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        #: How many of ``items`` were taken: the index of the next one.
        self.taken = 0

    def __len__(self) -> int:
        return len(self.items) - self.taken

    def take(self) -> T | None:
        """Return the next item and remove it; ``None`` (and empty the list) if none is left."""
        items = self.items
        taken = self.taken
        if taken < len(items):
            self.taken = taken + 1
            return items[taken]
        self.compact()
        return None

    def peek(self) -> T | None:
        """Return the next item without removing it, or ``None``."""
        taken = self.taken
        return self.items[taken] if taken < len(self.items) else None

    def skip(self) -> None:
        """Remove the next item (the one :meth:`peek` returned)."""
        self.taken += 1

    def compact(self) -> None:
        """Empty the list if every item in it was taken (a long-lived queue stays small)."""
        if self.taken and self.taken == len(self.items):
            self.items.clear()
            self.taken = 0

    def clear(self) -> None:
        """Remove every item."""
        self.items.clear()
        self.taken = 0

    def rest(self) -> list[T]:
        """The items not yet taken, in order (a copy)."""
        return self.items[self.taken:]
