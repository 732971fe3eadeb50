"""A small HTTP/1.1 load generator, used by ``run.py`` when ``wrk`` is not installed.

N concurrent keep-alive connections (raw asyncio streams) each send the same
pre-encoded request, read the whole response (``content-length`` or chunked
framing, parsed properly), and send the next one, for a fixed duration. Every
request's latency is recorded; non-2xx answers, connection failures and
timeouts count as errors (a broken connection is reopened).

Run it in its own process, never inside the server being measured::

    python benchmarks/loadgen.py --url http://127.0.0.1:8080/v1/chat/completions \\
        --body '{"model":"openai/gpt-4o-mini","messages":[...]}' -c 32 -d 10 --json

It prints a summary (or one JSON object with ``--json``): requests, errors,
elapsed seconds, RPS, p50/p99 latency in milliseconds. Only loopback targets
are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MAX_HEAD = 64 * 1024


class ResponseError(Exception):
    """The server's response could not be parsed."""


@dataclass
class Stats:
    """What all connections recorded during the measured window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


@dataclass
class Summary:
    """The result of one run (latencies in milliseconds)."""

    requests: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    statuses: dict[str, int]
    error_kinds: dict[str, int]


def percentile(sorted_values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``sorted_values`` by the nearest-rank method."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_request(
    method: str, host: str, port: int, target: str, body: bytes, headers: list[tuple[str, str]]
) -> bytes:
    """Return the request bytes sent on every iteration."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    names = {name.lower() for name, _ in headers}
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole response; return (status, server asked to close).

    Raises:
        ResponseError: malformed head or framing.
        asyncio.IncompleteReadError: the connection closed mid-response.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ResponseError("response head too large") from None
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ResponseError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            lowered = value.strip().lower()
            close = b"close" in lowered or (close and b"keep-alive" not in lowered)
    if status in (204, 304) or 100 <= status < 200:
        return status, close
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ResponseError(f"bad chunk size {size_line!r}") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return status, close
            await reader.readexactly(size + 2)
    if length is not None:
        await reader.readexactly(length)
        return status, close
    await reader.read()  # read-until-close framing
    return status, True


async def worker(
    host: str, port: int, request: bytes, deadline: float, measure_from: float,
    stats: Stats, timeout: float,
) -> None:
    """Send requests on one connection until ``deadline``; record those started after
    ``measure_from``."""
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    clock = time.perf_counter
    try:
        while clock() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=_MAX_HEAD), timeout)
                except (OSError, TimeoutError):
                    if clock() >= measure_from:
                        stats.error("connect")
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None and writer is not None
            started = clock()
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(read_response(reader), timeout)
            except (OSError, asyncio.IncompleteReadError, ResponseError, TimeoutError) as exc:
                if started >= measure_from:
                    kind = "timeout" if isinstance(exc, TimeoutError) else "read"
                    stats.error(kind)
                writer.close()
                writer = None
                continue
            ended = clock()
            if started >= measure_from:
                stats.latencies.append(ended - started)
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                if not 200 <= status < 300:
                    stats.error("status")
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def run(
    url: str, *, method: str, body: bytes, headers: list[tuple[str, str]], connections: int,
    duration: float, warmup: float, timeout: float,
) -> Summary:
    """Drive ``connections`` keep-alive connections at ``url`` for ``warmup + duration`` s."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
        raise ValueError(f"only http://127.0.0.1 / localhost targets are allowed, not {url}")
    host = parts.hostname
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    request = build_request(method, host, port, target, body, headers)
    stats = Stats()
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + duration
    tasks = [
        asyncio.create_task(worker(host, port, request, deadline, measure_from, stats, timeout))
        for _ in range(connections)
    ]
    # Each worker stops by itself at the deadline; the extra margin bounds the
    # last in-flight requests.
    _done, pending = await asyncio.wait(tasks, timeout=duration + warmup + timeout + 5)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = max(time.perf_counter() - measure_from, 1e-9)
    lat = sorted(stats.latencies)
    ok = len(lat)
    return Summary(
        requests=ok,
        errors=stats.errors,
        elapsed_s=round(elapsed, 3),
        rps=round(ok / elapsed, 1),
        p50_ms=round(percentile(lat, 0.50) * 1000, 3),
        p99_ms=round(percentile(lat, 0.99) * 1000, 3),
        mean_ms=round(sum(lat) / ok * 1000, 3) if ok else math.nan,
        max_ms=round(lat[-1] * 1000, 3) if ok else math.nan,
        statuses={str(k): v for k, v in sorted(stats.statuses.items())},
        error_kinds=dict(stats.error_kinds),
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the summary."""
    parser = argparse.ArgumentParser(description="keep-alive HTTP/1.1 load generator")
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", default="", help="request body (text)")
    parser.add_argument("--body-file", help="read the request body from this file")
    parser.add_argument("-H", "--header", action="append", default=[],
                        help="extra header 'Name: value' (repeatable)")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of load sent before measuring (not recorded)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    else:
        body = args.body.encode()
    headers = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep:
            parser.error(f"bad header {raw!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    if args.connections < 1 or args.duration <= 0:
        parser.error("--connections must be >= 1 and --duration > 0")
    loop = _new_loop()
    try:
        summary = loop.run_until_complete(run(
            args.url, method=args.method.upper(), body=body, headers=headers,
            connections=args.connections, duration=args.duration, warmup=args.warmup,
            timeout=args.timeout,
        ))
    except ValueError as exc:
        sys.exit(str(exc))
    finally:
        loop.close()
    if args.json:
        fields = {k: None if isinstance(v, float) and math.isnan(v) else v
                  for k, v in asdict(summary).items()}
        print(json.dumps(fields))
    else:
        print(f"{summary.requests} requests in {summary.elapsed_s:.2f}s, "
              f"{summary.errors} errors")
        print(f"RPS {summary.rps:.1f}  p50 {summary.p50_ms:.2f} ms  p99 {summary.p99_ms:.2f} ms"
              f"  max {summary.max_ms:.2f} ms")


if __name__ == "__main__":
    main()
