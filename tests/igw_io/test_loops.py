"""running_loop: the caller's asyncio loop, also when loops come and go."""

from __future__ import annotations

import asyncio
import threading

import trio

from igw_io.loops import running_loop


def test_outside_any_loop_there_is_none() -> None:
    assert running_loop() is None


def test_each_run_gets_its_own_loop_and_none_after_it() -> None:
    async def ask() -> tuple[object, object]:
        return running_loop(), asyncio.get_running_loop()

    for _ in range(2):
        found, actual = asyncio.run(ask())
        assert found is actual
    assert running_loop() is None


def test_a_loop_in_another_thread_is_not_the_callers() -> None:
    started, stop = threading.Event(), threading.Event()
    other: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        other.append(asyncio.get_running_loop())
        assert running_loop() is other[0]  # remembered, while it runs over there
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert started.wait(5)

        async def here() -> None:
            assert running_loop() is asyncio.get_running_loop() is not other[0]

        assert running_loop() is None
        asyncio.run(here())
    finally:
        stop.set()
        thread.join()


def test_under_trio_there_is_none() -> None:
    async def ask() -> object:
        return running_loop()

    assert trio.run(ask) is None
