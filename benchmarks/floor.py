"""The floor: the least a Python HTTP/1.1 relay does per request, to measure igw against.

asyncio Protocols and httptools on both sides, no gateway logic: each request's method,
target, headers and body (read whole) go to one fixed upstream over a keep-alive pool of
Protocol connections; the status, headers and body come back as they arrive, with the
upstream's content-length kept or the body re-chunked. Hop-by-hop headers are dropped.
Requests pipelined on one connection are answered in order. Not handled: HEAD, upgrades,
100-continue, timeouts. Loopback only.

Usage::

    python benchmarks/floor.py --port 8081 --upstream 127.0.0.1:8000 [--loop asyncio|uvloop]

It prints ``floor listening on http://HOST:PORT`` when ready and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys

import httptools

HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                 b"transfer-encoding", b"upgrade", b"content-length", b"host"))
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Upstream(asyncio.Protocol):
    """One pooled connection to the upstream; relays one response at a time to its client."""

    def __init__(self, pool: Pool) -> None:
        self.pool, self.client, self.transport = pool, None, None
        self.parser = httptools.HttpResponseParser(self)
        self.reason, self.headers, self.chunked, self.closed = b"", [], False, False
        self.out: list[bytes] = []  # what one data_received relays, written at once

    def connection_made(self, transport):
        self.transport = transport

    def start(self, client: Client, request: bytes) -> None:
        self.client, client.upstream = client, self
        self.transport.write(request)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
        if self.out and self.client is not None:
            self.client.write(b"".join(self.out))
        self.out.clear()

    def on_status(self, reason):
        self.reason += reason

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        out = self.out
        out.append(b"HTTP/1.1 %d %s\r\n" % (self.parser.get_status_code(), self.reason))
        length = None
        for name, value in self.headers:
            low = name.lower()
            if low == b"content-length":
                length = value
            elif low not in HOP:
                out.append(b"%s: %s\r\n" % (name, value))
        self.chunked = length is None
        out.append(b"transfer-encoding: chunked\r\n" if length is None
                   else b"content-length: %s\r\n" % length)
        if not self.client.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")

    def on_body(self, body):
        self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self):
        client, self.client, client.upstream = self.client, None, None
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
        client.write(b"".join(self.out))
        self.out.clear()
        self.reason, self.headers = b"", []
        if self.parser.should_keep_alive() and not self.closed:
            self.pool.idle.append(self)
        else:
            self.transport.close()
        client.response_done()

    def connection_lost(self, exc):
        self.closed = True
        if self.client is not None:  # the response was cut: the client cannot get it whole
            self.client.transport.abort()


class Pool:
    """Idle keep-alive connections to the one upstream; a new one when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.idle = host, port, []
        self.authority = f"{host}:{port}".encode()

    def send(self, client: Client, request: bytes) -> None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.start(client, request)
                return
        asyncio.get_running_loop().create_task(self._connect(client, request))

    async def _connect(self, client: Client, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        except OSError:
            client.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n"
                         b"connection: close\r\n\r\n")
            client.transport.close()
            return
        conn.start(client, request)


class Client(asyncio.Protocol):
    """One downstream connection: parse requests, send each upstream in turn, relay back."""

    def __init__(self, pool: Pool) -> None:
        self.pool, self.transport, self.upstream = pool, None, None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.busy, self.keep_alive, self.closed = False, True, False
        self.url, self.headers, self.body = b"", [], []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                       b"connection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self):
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        body = b"".join(self.body)
        out = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\nhost: ",
               self.pool.authority, b"\r\n"]
        for name, value in self.headers:
            if name.lower() not in HOP:
                out.append(b"%s: %s\r\n" % (name, value))
        out.append(b"content-length: %d\r\n\r\n" % len(body))
        out.append(body)
        self.pending.append((b"".join(out), self.parser.should_keep_alive()))
        if not self.busy:
            self.next()

    def next(self):
        self.busy = bool(self.pending) and not self.closed
        if self.busy:
            request, self.keep_alive = self.pending.popleft()
            self.pool.send(self, request)

    def write(self, data):
        if not self.closed:
            self.transport.write(data)

    def response_done(self):
        if self.keep_alive:
            self.next()
        else:
            self.transport.close()

    def pause_writing(self):
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self):
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc):
        self.closed = True
        if self.upstream is not None:  # mid-response: that upstream connection is not reusable
            self.upstream.client = None
            self.upstream.transport.close()


async def serve(port: int, upstream: str) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM/SIGINT."""
    host, _, up_port = upstream.rpartition(":")
    pool = Pool(host, int(up_port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), "127.0.0.1", port, backlog=1024,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"floor listening on http://127.0.0.1:{bound} -> {upstream} "
          f"(loop: {type(loop).__module__.split('.')[0]})", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description="minimal asyncio + httptools HTTP relay")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--upstream", required=True, help="host:port of the upstream")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.upstream.rpartition(":")[0] not in LOOPBACK:
        sys.exit("floor.py only relays to a loopback upstream")
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(args.port, args.upstream))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    main()
