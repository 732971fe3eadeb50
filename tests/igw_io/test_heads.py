"""HeadStamper: request-head events stamped with the clocks and a fresh request id."""

from __future__ import annotations

import os
import re
import time

from igw_io.heads import HeadStamper

_ID = re.compile(r"[0-9a-f]{16}")


def _stamp(stamper: HeadStamper) -> str:
    return stamper.stamp("GET", "/health", "", []).fresh_id


def test_the_event_carries_the_request_and_both_clocks() -> None:
    before = time.time()
    head = HeadStamper(lambda: 12.5).stamp("POST", "/v1/chat/completions", "a=1",
                                            [(b"host", b"x")])
    assert (head.method, head.path, head.query, head.headers, head.now) == (
        "POST", "/v1/chat/completions", "a=1", [(b"host", b"x")], 12.5)
    assert before <= head.wall <= time.time()


def test_ids_are_16_hex_digits_and_never_repeat_across_draws() -> None:
    stamper = HeadStamper(time.monotonic)
    ids = [_stamp(stamper) for _ in range(2000)]  # several draws of random bytes
    assert all(_ID.fullmatch(rid) for rid in ids), ids[:5]
    assert len(set(ids)) == len(ids)


def test_stampers_share_one_sequence_of_ids() -> None:
    first, second = HeadStamper(time.monotonic), HeadStamper(time.monotonic)
    ids = [_stamp(first if i % 2 else second) for i in range(600)]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    stamper = HeadStamper(time.monotonic)
    _stamp(stamper)  # digits are drawn: a child that kept them would hand out the same
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without cleanup
        try:
            os.write(write, " ".join(_stamp(stamper) for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [_stamp(stamper) for _ in range(5)]
    assert len(child) == 5
    assert not set(child) & set(parent)
