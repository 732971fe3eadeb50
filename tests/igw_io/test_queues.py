"""The hot path's queue behaves as a first-in, first-out queue, whatever the order of calls."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from igw_io.queues import Queue


class QueueMachine(RuleBasedStateMachine):
    """Every operation of :class:`Queue` against a deque that models it."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: Queue[int] = Queue()
        self.model: deque[int] = deque()

    @rule(item=st.integers())
    def append(self, item: int) -> None:
        self.queue.items.append(item)
        self.model.append(item)

    @rule(items=st.lists(st.integers(), max_size=5))
    def produce(self, items: list[int]) -> None:
        """A producer appends to the list itself, as a parser does."""
        self.queue.items.extend(items)
        self.model.extend(items)

    @rule()
    def take(self) -> None:
        expected = self.model.popleft() if self.model else None
        assert self.queue.take() == expected

    @rule()
    def peek_then_skip(self) -> None:
        expected = self.model[0] if self.model else None
        assert self.queue.peek() == expected
        if expected is not None:
            self.queue.skip()
            self.model.popleft()

    @rule()
    def compact(self) -> None:
        self.queue.compact()
        if not self.model:  # all taken: nothing is held any longer
            assert self.queue.items == [] and self.queue.taken == 0

    @rule()
    def clear(self) -> None:
        self.queue.clear()
        self.model.clear()

    @invariant()
    def same_items_left(self) -> None:
        assert len(self.queue) == len(self.model)
        assert self.queue.rest() == list(self.model)


QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                          deadline=None)
TestQueue = QueueMachine.TestCase


def test_a_take_that_finds_nothing_empties_the_list() -> None:
    queue: Queue[str] = Queue()
    queue.items.append("a")
    queue.items.append("b")
    assert queue.take() == "a" and queue.take() == "b"
    assert queue.items == ["a", "b"]  # taken, still held until the queue is found empty
    assert queue.take() is None
    assert queue.items == [] and queue.taken == 0 and len(queue) == 0
