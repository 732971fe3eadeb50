"""The listening sockets, accepting every waiting connection at each wake-up.

``loop.create_server`` on uvloop accepts one connection per loop iteration (libuv 1.45
and later), so on a busy loop a burst of new connections waits in the listen queue one
iteration each: 256 connections took 1.6 s to be accepted under load, and their first
requests waited as long. asyncio's own server accepts in batches; this listener does the
same on both loops. The loop then makes each accepted socket's transport
(``loop.connect_accepted_socket``), with TLS when configured.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("igw.server")

#: Connections accepted per wake-up at most, so a flood cannot hold the loop.
ACCEPT_BATCH = 1024
#: Pause before accepting again when the process is out of file descriptors or memory.
RETRY_DELAY = 1.0
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def bound_socket(family: int, kind: int, proto: int, address: Any, *,
                 reuse_port: bool = False) -> socket.socket:
    """Return a socket bound to ``address`` as ``loop.create_server`` binds one:
    ``SO_REUSEADDR``, IPv6-only for IPv6, and ``SO_REUSEPORT`` when asked.

    Raises:
        OSError: the address cannot be bound (the socket is closed).
    """
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def bind(host: str, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Return listening, non-blocking sockets for every address ``host`` resolves to.

    Each as :func:`bound_socket` binds it (``reuse_port`` for ``--workers``).

    Raises:
        OSError: the host does not resolve or an address cannot be bound (the sockets
            bound so far are closed).
    """
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = bound_socket(family, kind, proto, address, reuse_port=reuse_port)
            sockets.append(sock)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on ``sockets`` and hands each connection to ``adopt`` (never raises)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket],
                 adopt: Callable[[socket.socket], None]) -> None:
        self._loop = loop
        self.sockets = sockets
        self._adopt = adopt
        self._closed = False
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in _EXHAUSTED:
                    raise
                # Out of descriptors: stop listening for a moment instead of spinning.
                log.error("cannot accept connections: %s; retrying in %.0f s",
                          error.strerror, RETRY_DELAY)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(RETRY_DELAY, self._resume, sock)
                return
            conn.setblocking(False)
            self._adopt(conn)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()


async def serve_accepted(loop: asyncio.AbstractEventLoop, conn: socket.socket,
                         factory: Callable[[], asyncio.Protocol],
                         context: ssl.SSLContext | None) -> None:
    """Make ``conn``'s transport and protocol; a failed TLS handshake closes it quietly,
    as ``loop.create_server`` does."""
    try:
        await loop.connect_accepted_socket(factory, conn, ssl=context)
    except OSError as error:  # ssl.SSLError and TimeoutError are OSErrors
        log.debug("connection dropped before serving: %r", error)
        conn.close()
