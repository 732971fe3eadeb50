"""The one upstream connection pool per process, and the in-process demo provider.

Every provider call of both frontends goes through :class:`Upstream`; it maps
httpcore's exceptions onto the core's :class:`~igw_core.events.FailureReason`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import anyio
import httpcore

from igw_core.config import Settings
from igw_core.demo import demo_response
from igw_core.effects import CallProvider
from igw_core.events import FailureReason
from igw_io.pool import KeepAlivePool

_TIMEOUTS = (httpcore.TimeoutException, TimeoutError)


class UpstreamFailure(Exception):
    """A provider call failed; ``reason`` says how, ``str()`` says what happened."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _failure(exc: BaseException, *, started_body: bool) -> UpstreamFailure:
    if isinstance(exc, _TIMEOUTS):
        return UpstreamFailure(FailureReason.TIMEOUT, f"{type(exc).__name__}: {exc}".rstrip(": "))
    reason = FailureReason.RESET if started_body else FailureReason.UNREACHABLE
    return UpstreamFailure(reason, f"{type(exc).__name__}: {exc}".rstrip(": "))


def lower_names(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return ``headers`` with lower-case names, as the core expects (DESIGN §1).

    httpcore keeps the case the server wrote (Go's net/http writes ``Content-Type``);
    every response from an outside server goes through this once, where it enters igw_io.
    """
    return [(name.lower(), value) for name, value in headers]


_UPSTREAM_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException,
                    httpcore.UnsupportedProtocol, httpcore.ProxyError, TimeoutError, OSError)


class UpstreamResponse:
    """An open provider response whose body has not been read yet."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        stream: AsyncIterator[bytes],
        closer: httpcore.Response | None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._stream = stream
        self._closer = closer

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield body chunks as they arrive.

        Raises:
            UpstreamFailure: the connection broke or a read timed out.
        """
        try:
            async for chunk in self._stream:
                if chunk:
                    yield chunk
        except _UPSTREAM_ERRORS as exc:
            raise _failure(exc, started_body=True) from None

    async def read(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes.

        Raises:
            UpstreamFailure: the connection broke, timed out, or the body is too large.
        """
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UpstreamFailure(FailureReason.TOO_LARGE, f"response over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Release the connection (back to the pool when the body was fully read)."""
        if self._closer is not None:
            with anyio.CancelScope(shield=True):
                await self._closer.aclose()


_DEFAULT_PORTS = {b"http": 80, b"https": 443}


def _host_header(url: httpcore.URL) -> bytes:
    host = url.host
    if b":" in host:  # an IPv6 literal
        host = b"[" + host + b"]"
    if url.port is not None and url.port != _DEFAULT_PORTS.get(url.scheme):
        return host + b":" + str(url.port).encode()
    return host


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class Upstream:
    """The process's provider client: one keep-alive pool, limits from ``CLIENT_*``.

    ``CLIENT_RESPONSE_HEADER_TIMEOUT`` (capped by ``CLIENT_TIMEOUT``) bounds the
    wait for a response head; ``CLIENT_TIMEOUT`` bounds connecting and each
    gap between body reads, so long streams are not cut while they flow.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = KeepAlivePool(
            max_idle=settings.client_max_idle_conns,
            max_idle_per_host=settings.client_max_idle_conns_per_host,
            keepalive_expiry=settings.client_idle_conn_timeout or None,
        )
        timeout = settings.client_timeout or None
        self._extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        header = settings.client_response_header_timeout or settings.client_timeout
        self._head_timeout = min(header, settings.client_timeout or header) or None

    async def open(self, call: CallProvider) -> UpstreamResponse:
        """Send ``call`` and return once the response head has arrived.

        Raises:
            UpstreamFailure: the provider is unreachable or did not answer in time.
        """
        if call.provider == "demo":
            path = call.url.removeprefix("demo://local")
            answer = demo_response(call.method, path, call.body)
            return UpstreamResponse(answer.status, list(answer.headers),
                                    _iterate(answer.chunks), None)
        url = httpcore.URL(call.url)
        request = httpcore.Request(
            call.method, url,
            headers=[(b"host", _host_header(url)), *call.headers,
                     (b"content-length", str(len(call.body)).encode())],
            content=call.body, extensions=self._extensions,
        )
        try:
            with anyio.fail_after(self._head_timeout):
                response = await self._pool.handle_async_request(request)
        except _UPSTREAM_ERRORS as exc:
            raise _failure(exc, started_body=False) from None
        stream = response.aiter_stream()
        return UpstreamResponse(response.status, lower_names(response.headers), stream, response)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
