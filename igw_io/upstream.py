"""The process's provider client, and the in-process demo provider.

Every provider call of both frontends goes through :class:`Upstream`. On an asyncio loop
(the standalone server, the ASGI app under uvicorn, hypercorn or granian) it uses the
Protocol client of :mod:`igw_io.h1client`; on trio, httpcore through the keep-alive pool of
:mod:`igw_io.pool`. Both report failures as :class:`UpstreamFailure`, whose
:class:`~igw_core.events.FailureReason` the core turns into 502 or 504.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING

from sniffio import current_async_library

from igw_core.config import Settings
from igw_core.demo import demo_response
from igw_core.effects import CallProvider
from igw_io.h1client import H1Client, UpstreamFailure, UpstreamResponse, read_limited
from igw_io.header_lines import LOWER
from igw_io.loops import running_loop
from igw_io.response_parsers import resolve_parser

if TYPE_CHECKING:
    from igw_io.pool import HttpcoreClient

__all__ = ["Upstream", "UpstreamFailure", "UpstreamResponse", "lower_names"]


def lower_names(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return ``headers`` with lower-case names: the core only ever sees lower case.

    httpcore keeps the case the server wrote (Go's net/http writes ``Content-Type``);
    every response from an outside server goes through this once, where it enters igw_io.
    """
    return [(name.translate(LOWER), value) for name, value in headers]


class _DemoResponse(UpstreamResponse):
    """The demo provider's answer, made in-process."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]],
                 chunks: Iterable[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._chunks = iter([chunk for chunk in chunks if chunk])

    async def next_chunk(self) -> bytes | None:
        """Return the answer's next chunk, or ``None`` after the last."""
        return next(self._chunks, None)

    async def read(self, limit: int) -> bytes:
        """Return the whole answer.

        Raises:
            UpstreamFailure: it is over ``limit`` bytes.
        """
        return await read_limited(self.next_chunk, limit)

    async def aclose(self) -> None:
        """Nothing to release."""


async def _demo(call: CallProvider) -> _DemoResponse:
    """The demo provider's answer to ``call``."""
    answer = demo_response(call.method, call.url.removeprefix("demo://local"), call.body)
    return _DemoResponse(answer.status, list(answer.headers), answer.chunks)


class Upstream:
    """The process's provider client: keep-alive connections, limits from ``CLIENT_*``.

    ``CLIENT_RESPONSE_HEADER_TIMEOUT`` (capped by ``CLIENT_TIMEOUT``) bounds the
    wait for a response head, connecting included; ``CLIENT_TIMEOUT`` bounds connecting
    and each gap between body reads, so long streams are not cut while they flow.

    Args:
        settings: the ``CLIENT_*`` limits.
        parser: the HTTP/1.1 response parser of the asyncio client: ``auto`` (httptools
            when importable), ``httptools`` or ``h11``.
        ssl_context: TLS context for ``https`` providers (default: the system's trust
            store, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).

    Raises:
        ValueError: an unknown or unavailable ``parser``.
    """

    def __init__(self, settings: Settings, parser: str = "auto", *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self.parser = resolve_parser(parser)
        self._ssl_context = ssl_context
        self._client: H1Client | None = None
        self._httpcore: HttpcoreClient | None = None  # made on first use under trio
        timeout = settings.client_timeout or None
        self._timeout = timeout
        header = settings.client_response_header_timeout or settings.client_timeout
        self._head_timeout = min(header, settings.client_timeout or header) or None

    def _asyncio_client(self) -> H1Client:
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.loop is not loop:
            settings = self._settings
            client = self._client = H1Client(
                loop, parser=self.parser,
                max_idle=settings.client_max_idle_conns,
                max_idle_per_host=settings.client_max_idle_conns_per_host,
                idle_timeout=settings.client_idle_conn_timeout or None,
                connect_timeout=self._timeout, head_timeout=self._head_timeout,
                read_timeout=self._timeout, ssl_context=self._ssl_context,
            )
        return client

    def open(self, call: CallProvider) -> Awaitable[UpstreamResponse]:
        """Return what to await to send ``call`` and have its response once the head arrived.

        (The client's own coroutine, not one wrapping it: a frame fewer per provider call.)

        Raises:
            UpstreamFailure: when awaited: the provider is unreachable or did not answer
                in time.
        """
        if call.provider == "demo":
            return _demo(call)
        client = self._client
        # The loop this client was made for is running: asyncio, no need to ask sniffio again.
        if client is None or client.loop is not running_loop():
            if current_async_library() != "asyncio":
                return self._httpcore_client().open(call)
            client = self._asyncio_client()
        return client.open(call.method, call.url, call.headers, call.body)

    def _httpcore_client(self) -> HttpcoreClient:
        # Imported here: on asyncio (the usual case) httpcore is never loaded for providers.
        from igw_io.pool import HttpcoreClient

        if self._httpcore is None:
            self._httpcore = HttpcoreClient(self._settings, self._head_timeout,
                                            self._ssl_context)
        return self._httpcore

    async def aclose(self) -> None:
        """Close every pooled connection."""
        client, self._client = self._client, None
        if client is not None and not client.loop.is_closed():
            client.close()
        if self._httpcore is not None:
            await self._httpcore.aclose()
