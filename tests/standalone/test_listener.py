"""The listener accepts every waiting connection at one wake-up, on both loops."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator

import pytest

from igw_standalone.listener import ACCEPT_BATCH, Listener, bind

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        made: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        made = asyncio.new_event_loop()
    yield made
    made.close()


def _connect(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        clients.append(client)
    return clients


def test_a_burst_of_connections_is_accepted_at_one_wake_up(
    loop: asyncio.AbstractEventLoop,
) -> None:
    sockets = bind("127.0.0.1", 0, reuse_port=False, backlog=512)
    adopted: list[socket.socket] = []
    listener = Listener(loop, sockets, adopted.append)
    port = sockets[0].getsockname()[1]
    clients = _connect(port, 200)  # the kernel completes them; nobody accepted yet
    try:
        # One wake-up of the loop for the listening socket (libuv's own server would
        # take one connection per iteration).
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(adopted) == 200
        assert all(not conn.getblocking() for conn in adopted)
        # And accepts later ones too.
        clients += _connect(port, 3)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(adopted) == 203
    finally:
        listener.close()
        listener.close()  # idempotent
        for sock in clients + adopted:
            sock.close()
    assert all(sock.fileno() == -1 for sock in sockets)


def test_one_wake_up_accepts_at_most_a_batch(loop: asyncio.AbstractEventLoop) -> None:
    sockets = bind("127.0.0.1", 0, reuse_port=False, backlog=2048)
    adopted: list[socket.socket] = []
    listener = Listener(loop, sockets, adopted.append)
    clients = _connect(sockets[0].getsockname()[1], ACCEPT_BATCH + 5)
    try:
        listener._accept(sockets[0])
        assert len(adopted) == ACCEPT_BATCH
        listener._accept(sockets[0])
        assert len(adopted) == ACCEPT_BATCH + 5
    finally:
        listener.close()
        for sock in clients + adopted:
            sock.close()


def test_bind_refuses_a_port_in_use_and_leaves_nothing_open() -> None:
    taken = bind("127.0.0.1", 0, reuse_port=False, backlog=16)
    port = taken[0].getsockname()[1]
    try:
        with pytest.raises(OSError) as caught:
            bind("127.0.0.1", port, reuse_port=False, backlog=16)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        for sock in taken:
            sock.close()


def test_reuse_port_lets_two_listeners_share_a_port() -> None:
    first = bind("127.0.0.1", 0, reuse_port=True, backlog=16)
    port = first[0].getsockname()[1]
    second = bind("127.0.0.1", port, reuse_port=True, backlog=16)
    for sock in first + second:
        assert sock.getsockname()[1] == port
        sock.close()


def test_an_ipv6_listener_takes_only_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sockets = bind("::1", 0, reuse_port=False, backlog=16)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert sockets[0].family == socket.AF_INET6
        assert sockets[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()
