"""The identity provider's signing keys: discovery, JWKS fetches, refresh and rate limiting.

One :class:`OIDCKeys` per process holds the current :class:`~igw_core.auth.KeySet`
that exchanges verify tokens with; it never verifies anything itself.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio
import httpcore

from igw_core.auth import KeySet
from igw_core.config import Settings

log = logging.getLogger("igw.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"

_HTTP_ERRORS: tuple[type[BaseException], ...] = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    httpcore.ConnectionNotAvailable,
    TimeoutError,
    OSError,
    ValueError,  # a URL httpcore cannot parse
)


class KeyFetchError(Exception):
    """Discovery or the JWKS could not be fetched or used; ``str()`` says why.

    Attributes:
        mismatch: true when discovery names a different issuer than configured.
    """

    def __init__(self, message: str, *, mismatch: bool = False) -> None:
        super().__init__(message)
        self.mismatch = mismatch


def discovery_url(issuer: str) -> str:
    """Return ``{issuer}/.well-known/openid-configuration``, one trailing slash removed first."""
    return issuer.removesuffix("/") + DISCOVERY_PATH


def _safe_url(url: str) -> str:
    """Return ``url`` without any ``user:password@`` part, for log lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable url)"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


class OIDCKeys:
    """The issuer's current keys, loaded and refreshed in the background.

    Args:
        issuer: ``AUTH_OIDC_ISSUER`` exactly as configured.
        clock: a monotonic clock, seconds.
        refetch_window: at most one fetch starts per this many seconds on
            behalf of requests (:meth:`refresh_for_kid`, :meth:`ensure`).
        refresh_interval: how often :meth:`run` refreshes loaded keys.
        initial_backoff: first retry delay of :meth:`run` after a failure.
        max_backoff: cap of the doubling retry delay.
        timeout: bound on each HTTP request (connect to last byte).
        max_bytes: largest discovery or JWKS body accepted.
        ssl_context: TLS settings for an https issuer (default: system CAs).

    Attributes:
        last_error: why the last fetch failed (``None`` after a success), for status pages.
        fetches: how many fetches were started, for tests and diagnostics.
    """

    def __init__(
        self,
        issuer: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        refetch_window: float = 10.0,
        refresh_interval: float = 600.0,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 5.0,
        max_bytes: int = 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.issuer = issuer
        self.discovery_url = discovery_url(issuer)
        self._shown_issuer = _safe_url(issuer)
        self._clock = clock
        self._refetch_window = refetch_window
        self._refresh_interval = refresh_interval
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=2, keepalive_expiry=30.0, retries=0
        )
        self._extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        self._keys: KeySet | None = None
        self._jwks_uri: str | None = None
        self._last_fetch: float | None = None
        self._inflight: anyio.Event | None = None
        self._inflight_ok = False
        self.last_error: str | None = None
        self.fetches = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> OIDCKeys:
        """Return the key source for ``AUTH_OIDC_ISSUER`` with the default timings."""
        return cls(settings.auth_oidc_issuer)

    def current(self) -> KeySet | None:
        """Return the keys last loaded, or ``None`` if none ever were."""
        return self._keys

    # -- request-driven fetches --------------------------------------------

    async def refresh_for_kid(self, kid: str) -> KeySet | None:
        """Refetch the JWKS because a token named an unknown ``kid``; return the keys then.

        At most one fetch starts per ``refetch_window`` seconds; callers that
        arrive while one is running wait for it and share its result, and
        callers inside the window get the current keys at once, so a flood
        of random kids costs at most one JWKS request per window. Never
        raises for the issuer's failures (they are logged).
        """
        keys = self._keys
        if keys is not None and kid and keys.has(kid):
            return keys  # another request's refetch already brought it
        if self._inflight is not None:
            await self._inflight.wait()
            return self._keys
        if not self._window_open():
            return self._keys
        await self._shared_fetch(full=self._jwks_uri is None, why="unknown key id", shield=True)
        return self._keys

    async def ensure(self) -> KeySet | None:
        """Return the keys, trying one fetch now if none were ever loaded.

        For ASGI mounts whose server never runs the lifespan (so :meth:`run`
        never started); rate-limited like :meth:`refresh_for_kid`.
        """
        if self._keys is not None:
            return self._keys
        if self._inflight is not None:
            await self._inflight.wait()
            return self._keys
        if self._window_open():
            await self._shared_fetch(full=True, why="first request", shield=True)
        return self._keys

    # -- background --------------------------------------------------------

    async def run(self) -> None:
        """Load the keys, retrying with capped exponential backoff, then refresh them forever.

        Discovery and the JWKS are refetched every ``refresh_interval``
        seconds so a rotated key is picked up without a restart; a failed
        refresh keeps the old keys and retries with backoff. Runs until
        cancelled; never raises for the issuer's failures.
        """
        delay = self._initial_backoff
        while True:
            if await self._shared_fetch(full=True, why="background", shield=False, retry_in=delay):
                delay = self._initial_backoff
                await anyio.sleep(self._refresh_interval)
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._pool.aclose()

    # -- fetching ----------------------------------------------------------

    def _window_open(self) -> bool:
        last = self._last_fetch
        return last is None or self._clock() - last >= self._refetch_window

    async def _shared_fetch(
        self, *, full: bool, why: str, shield: bool, retry_in: float | None = None
    ) -> bool:
        """Fetch unless a fetch is running (then share its outcome); return whether it worked."""
        if self._inflight is not None:
            await self._inflight.wait()
            return self._inflight_ok
        event = self._inflight = anyio.Event()
        if why != "background":
            # Only request-driven fetches use up the window: a rotation right after
            # the background load must still be picked up by the first new token.
            self._last_fetch = self._clock()
        ok = False
        try:
            # A request that gives up must not abort the fetch others wait on;
            # the fetch is bounded by its own timeouts.
            with anyio.CancelScope(shield=shield):
                ok = await self._fetch_and_store(full=full, why=why, retry_in=retry_in)
        finally:
            self._inflight_ok = ok
            self._inflight = None
            event.set()
        return ok

    async def _fetch_and_store(self, *, full: bool, why: str, retry_in: float | None) -> bool:
        self.fetches += 1
        try:
            keys = await self._fetch(full=full)
        except KeyFetchError as exc:
            self.last_error = str(exc)
            extra: dict[str, object] = {"issuer": self._shown_issuer, "why": why, "error": str(exc)}
            if retry_in is not None:
                extra["retry_in_s"] = retry_in
            if exc.mismatch:
                log.error("oidc discovery issuer mismatch", extra=extra)
            else:
                log.warning("oidc keys fetch failed", extra=extra)
            return False
        previous = self._keys
        self._keys = keys
        self.last_error = None
        level = logging.INFO if previous is None or previous.kids != keys.kids else logging.DEBUG
        log.log(
            level,
            "oidc keys loaded",
            extra={
                "issuer": self._shown_issuer,
                "jwks_uri": _safe_url(self._jwks_uri or ""),
                "kids": list(keys.kids),
                "why": why,
            },
        )
        if keys.skipped:
            log.debug("oidc keys skipped", extra={"skipped": list(keys.skipped)})
        return True

    async def _fetch(self, *, full: bool) -> KeySet:
        """Return the keys from the JWKS, doing discovery first when ``full``.

        Raises:
            KeyFetchError: unreachable, non-200, oversized, not JSON, issuer
                mismatch, no ``jwks_uri``, or no usable signing key.
        """
        if full or self._jwks_uri is None:
            doc = await self._get_json(self.discovery_url)
            advertised = doc.get("issuer")
            if advertised != self.issuer:
                raise KeyFetchError(
                    f"AUTH_OIDC_ISSUER is {self._shown_issuer!r} but "
                    f"{_safe_url(self.discovery_url)} says issuer {advertised!r}; "
                    "they must be equal byte for byte",
                    mismatch=True,
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://")):
                raise KeyFetchError(
                    f"{_safe_url(self.discovery_url)} has no usable jwks_uri (got {jwks_uri!r})"
                )
            self._jwks_uri = jwks_uri
        jwks_uri = self._jwks_uri
        keys = KeySet.from_jwks(await self._get_json(jwks_uri))
        if not keys:
            skipped = "; ".join(keys.skipped) or "no keys"
            raise KeyFetchError(f"{_safe_url(jwks_uri)} has no usable signing key ({skipped})")
        return keys

    async def _get_json(self, url: str) -> dict[str, object]:
        """GET ``url`` and return its JSON object body.

        Raises:
            KeyFetchError: for any failure, naming the URL (credentials removed).
        """
        shown = _safe_url(url)
        body = bytearray()
        try:
            with anyio.fail_after(self._timeout):
                async with self._pool.stream(
                    "GET",
                    url,
                    headers=[(b"accept", b"application/json"), (b"user-agent", b"igw")],
                    extensions=self._extensions,
                ) as response:
                    if response.status != 200:
                        raise KeyFetchError(f"GET {shown}: HTTP {response.status}")
                    async for chunk in response.aiter_stream():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise KeyFetchError(
                                f"GET {shown}: response larger than {self._max_bytes} bytes"
                            )
        except KeyFetchError:
            raise
        except _HTTP_ERRORS as exc:
            text = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise KeyFetchError(f"GET {shown}: {text}") from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise KeyFetchError(f"GET {shown}: body is not JSON") from None
        if not isinstance(doc, dict):
            raise KeyFetchError(f"GET {shown}: body is not a JSON object")
        return doc
