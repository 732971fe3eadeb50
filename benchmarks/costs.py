"""What the per-request bookkeeping costs: the access line and the Prometheus updates.

Times, in this process, one finished chat exchange's record (the same
``ExchangeRecord`` the gateway makes) going through:

- the access line as igw writes it (formatted directly, batched per loop iteration),
- the same line through the logging module (what the fast path replaces),
- ``Metrics.record`` with ``TELEMETRY_ENABLE=true`` (cached label children),
- the core's part of one chat exchange (head, body, provider head, end), for scale.

Usage::

    python benchmarks/costs.py [--number 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time
from collections.abc import Callable

from igw_core.config import load_settings
from igw_core.events import ProviderEnd, ProviderHead, RequestData, RequestEnd, RequestHead
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.report import ExchangeRecord, Usage
from igw_io.logs import AccessLog, access_fields, configure_logging
from igw_io.metrics import Metrics

_BODY = (b'{"model":"openai/gpt-4o-mini","messages":[{"role":"user",'
         b'"content":"Say hello in one short sentence."}]}')
_ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":'
           b'{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],'
           b'"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}')


def _per_call(function: Callable[[], None], number: int) -> float:
    """Return microseconds per call of ``function`` (best of 5 runs)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, time.perf_counter() - started)
    return best / number * 1e6


def main() -> None:
    """Print the cost per request of each piece, in microseconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    args = parser.parse_args()
    settings = load_settings({"OPENAI_API_KEY": "sk-bench", "TELEMETRY_ENABLE": "true",
                              "TELEMETRY_METRICS_PORT": "0"})
    record = ExchangeRecord(
        request_id="0123456789abcdef", method="POST", route="/v1/chat/completions",
        path="/v1/chat/completions", status=200, provider="openai", model="gpt-4o-mini",
        started=1.0, ended=1.0123, usage=Usage(12, 9, 21), counted=True)
    configure_logging(development=False, secrets=("sk-bench",))
    handler = logging.getLogger("igw").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(io.StringIO())
    access = AccessLog()
    logger = logging.getLogger("igw.access")

    async def access_lines() -> float:
        # Inside a loop, as in the gateway: lines of one iteration are joined.
        return _per_call(lambda: access.write(record), args.number)

    metrics = Metrics(settings)
    gateway = Gateway.from_settings(settings)
    answer_headers = [(b"content-type", b"application/json"),
                      (b"content-length", str(len(_ANSWER)).encode())]

    def exchange() -> None:
        ex = Exchange(gateway)
        ex.receive(RequestHead("POST", "/v1/chat/completions", "", [], 1.0, 2.0, "id"))
        ex.receive(RequestData(_BODY))
        ex.receive(RequestEnd())
        relay = ex.receive(ProviderHead(0, 200, answer_headers, 1.1))[-1]
        tap = getattr(relay, "tap", None)
        if tap is not None:
            tap.feed(_ANSWER)
        ex.receive(ProviderEnd(0, 1.2, 1.15))

    rows = [
        ("access line, as igw writes it", asyncio.run(access_lines())),
        ("access line through the logging module",
         _per_call(lambda: logger.info("request", extra=access_fields(record)), args.number)),
        ("Prometheus updates of a chat request (TELEMETRY_ENABLE=true)",
         _per_call(lambda: metrics.record(record), args.number)),
        ("the core's whole chat exchange, for scale", _per_call(exchange, args.number // 4)),
    ]
    print("| piece | µs per request |\n| --- | ---: |")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    main()
