"""The process's MCP servers: sessions over HTTP, health polling and reconnects.

One :class:`MCPManager` per process drives one :class:`~igw_core.mcp.session.MCPSession`
per ``MCP_SERVERS`` entry, performing its HTTP requests with httpcore. Servers that fail
drop out of :meth:`MCPManager.available_tools` and come back when they answer again.
Background work runs in :meth:`MCPManager.run` (started by ``Runtime.running()``);
without it (an ASGI app mounted without lifespan) the first request connects and later
requests poll when a poll is due.

Timeouts: ``MCP_DIAL_TIMEOUT`` bounds connecting, ``MCP_RESPONSE_HEADER_TIMEOUT`` the wait
for a response head, ``MCP_CLIENT_TIMEOUT`` one whole HTTP request, and
``MCP_REQUEST_TIMEOUT`` a connection attempt (``initialize`` + ``tools/list``) and each
tool call, re-initialization included. A zero duration means no limit.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import httpcore

from igw_core.config import Settings
from igw_core.mcp.catalog import EMPTY, Catalogue, build_catalogue, tool_result_text
from igw_core.mcp.jsonrpc import MalformedResponse, MCPError
from igw_core.mcp.session import (
    MCPSession,
    OperationDone,
    Output,
    RequestFailed,
    ResponseData,
    ResponseEnd,
    ResponseHead,
    SendRequest,
    SessionExpired,
    SessionState,
    TransportError,
)
from igw_io.upstream import lower_names

__all__ = ["MCPManager"]

log = logging.getLogger("igw.mcp")

_HTTP_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException,
                httpcore.UnsupportedProtocol, httpcore.ProxyError, OSError)
#: Floor for every interval, so a zero duration cannot spin a loop.
_MIN_INTERVAL = 0.05
#: How long shutdown waits for the session DELETEs.
_CLOSE_GRACE = 1.0

Start = Callable[[MCPSession], tuple[int, list[Output]]]


def _limit(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def _deadline(seconds: float | None) -> float:
    return anyio.current_time() + seconds if seconds is not None else math.inf


def _show(seconds: float) -> str:
    return f"{seconds:g}s"


def _describe(exc: BaseException) -> str:
    """Return ``exc``'s type and text, with the causes it wraps (e.g. the errno behind
    httpcore's "All connection attempts failed")."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = str(current)
        if text and all(text not in part for part in parts):
            parts.append(f"{type(current).__name__}: {text}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts) or type(exc).__name__


def _host(url: httpcore.URL) -> bytes:
    """Return the ``Host`` header for ``url`` (httpcore sends only what it is given)."""
    host = b"[" + url.host + b"]" if b":" in url.host else url.host
    default = {b"http": 80, b"https": 443}.get(url.scheme)
    return host if url.port in (None, default) else host + b":" + str(url.port).encode()


class _Server:
    """One configured server: its session, whether it is up, and its tools."""

    __slots__ = ("checked", "error", "lock", "session", "tools", "up", "url", "wake")

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = MCPSession(url)
        self.up = False
        self.tools: tuple[Any, ...] = ()
        self.error = ""
        self.checked = False  # the first connection attempt has finished
        self.lock = anyio.Lock()  # one handshake at a time
        self.wake = anyio.Event()  # set to make the supervisor check now


class MCPManager:
    """Every MCP server of the process, and the tool catalogue they add up to.

    Args:
        settings: the ``MCP_*`` settings (``MCP_SERVERS`` in order, duplicates ignored).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers = [_Server(url) for url in dict.fromkeys(settings.mcp_servers)]
        self._by_url = {server.url: server for server in self.servers}
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=None, max_keepalive_connections=max(4 * len(self.servers), 4),
            keepalive_expiry=30.0, retries=0,
        )
        client = _limit(settings.mcp_client_timeout)
        self._extensions = {"timeout": {"connect": _limit(settings.mcp_dial_timeout),
                                        "read": client, "write": client, "pool": client}}
        self._catalogue = EMPTY
        self._started = False  # initial connection attempts have begun
        self._lazy = False  # no run(): requests drive the polling
        self._initial_done = anyio.Event()
        self._pending_initial = len(self.servers)
        self._lazy_lock = anyio.Lock()
        self._lazy_polling = False
        self._next_lazy_poll = 0.0

    # -- public API ----------------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """The tools of the servers that are up, right now (never waits)."""
        return self._catalogue

    async def available_tools(self) -> Catalogue:
        """Return the catalogue snapshot for a new request.

        Waits for the first connection attempts when they are still running (each bounded
        by ``MCP_REQUEST_TIMEOUT``); without :meth:`run`, the first call makes them, and a
        later call polls the servers when ``MCP_POLLING_INTERVAL`` has passed.
        """
        if not self._started:
            await self._start_lazily()
        if not self._initial_done.is_set():
            await self._initial_done.wait()
        elif self._lazy and self.settings.mcp_polling_enable:
            await self._poll_lazily()
        return self._catalogue

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any]
    ) -> tuple[bool, str]:
        """Call ``tool`` on ``server`` and return ``(ok, text)``; never raises for the
        server's failures, which come back as ``ok`` false with a readable reason.

        The call (a re-initialization included) is bounded by ``MCP_REQUEST_TIMEOUT``.
        """
        target = self._by_url.get(server)
        if target is None:
            return False, f"unknown MCP server {server}"
        timeout = self.settings.mcp_request_timeout
        try:
            result = await self._request(target, lambda s: s.call_tool(tool, arguments),
                                         timeout)
        except TimeoutError:
            return False, (f"MCP tool {tool} did not answer within {_show(timeout)} "
                           "(MCP_REQUEST_TIMEOUT)")
        except TransportError as error:
            target.wake.set()  # check the server's health now rather than at the next poll
            return False, f"MCP server {server} failed: {error}"
        except MCPError as error:
            return False, f"MCP tool {tool} failed: {error}"
        return tool_result_text(result)

    async def run(self) -> None:
        """Connect every server in parallel, then poll and reconnect until cancelled."""
        self._started = True
        self._lazy = False  # from now on the supervisors poll, not the requests
        if not self.servers:
            self._initial_done.set()
            return
        async with anyio.create_task_group() as tg:
            for server in self.servers:
                tg.start_soon(self._supervise, server)

    async def aclose(self) -> None:
        """End every session (a best-effort ``DELETE``) and close the connection pool."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLOSE_GRACE):
                for server in self.servers:
                    for output in server.session.close():
                        if isinstance(output, SendRequest):
                            await self._http(server, output)
            await self._pool.aclose()

    # -- health ---------------------------------------------------------------------------

    async def _supervise(self, server: _Server) -> None:
        error = await self._attempt(server, self.settings.mcp_request_timeout)
        self._initial_result(server, error)
        while True:
            if server.up:
                await self._watch(server)
            else:
                await self._recover(server)

    def _initial_result(self, server: _Server, error: str) -> None:
        if error:
            # A configured server is presumed up: failing the first check is going down.
            self._mark_down(server, error)
        else:
            self._mark_up(server)
        if not server.checked:
            server.checked = True
            self._pending_initial -= 1
            if self._pending_initial <= 0:
                self._initial_done.set()

    async def _watch(self, server: _Server) -> None:
        """Poll an up server until a check fails."""
        settings = self.settings
        interval = (max(settings.mcp_polling_interval, _MIN_INTERVAL)
                    if settings.mcp_polling_enable else math.inf)
        while server.up:
            with anyio.move_on_after(interval):
                await server.wake.wait()
            server.wake = anyio.Event()
            error = await self._attempt(server, settings.mcp_polling_timeout)
            if error:
                self._mark_down(server, error)
            else:
                self._rebuild()

    async def _recover(self, server: _Server) -> None:
        """Bring a down server back: reconnect attempts with backoff, and polls."""
        settings = self.settings
        retries = settings.mcp_max_retries if settings.mcp_enable_reconnect else 0
        poll_every = (max(settings.mcp_polling_interval, _MIN_INTERVAL)
                      if settings.mcp_polling_enable else math.inf)
        now = anyio.current_time
        attempt = 0
        next_retry = now() + self._backoff(1) if retries else math.inf
        next_poll = now() + poll_every
        while not server.up:
            wake = min(next_retry, next_poll)
            if wake == math.inf:
                await anyio.sleep_forever()
            await anyio.sleep_until(wake)
            if next_retry <= next_poll:
                attempt += 1
                extra: dict[str, Any] = {"server": server.url, "attempt": attempt}
                if not settings.mcp_disable_healthcheck_logs and server.error:
                    extra["error"] = server.error
                log.warning("mcp client reconnecting", extra=extra)
                error = await self._attempt(server, settings.mcp_request_timeout)
                if attempt >= retries:
                    attempt = 0
                    next_retry = now() + max(settings.mcp_reconnect_interval, _MIN_INTERVAL)
                else:
                    next_retry = now() + self._backoff(attempt + 1)
            else:
                error = await self._attempt(server, settings.mcp_polling_timeout)
                if error and not settings.mcp_disable_healthcheck_logs:
                    log.warning("mcp polling failed", extra={"server": server.url, "error": error})
            next_poll = now() + poll_every
            if error:
                server.error = error
            else:
                self._mark_up(server)

    def _backoff(self, attempt: int) -> float:
        """Delay before reconnect attempt ``attempt`` (from 1): doubling, capped."""
        settings = self.settings
        delay: float = settings.mcp_initial_backoff * 2.0 ** min(attempt - 1, 30)
        return max(min(delay, settings.mcp_retry_interval), _MIN_INTERVAL)

    def _mark_up(self, server: _Server) -> None:
        server.error = ""
        if not server.up:
            server.up = True
            log.info("mcp server available",
                     extra={"server": server.url, "tools": len(server.tools)})
        self._rebuild()

    def _mark_down(self, server: _Server, error: str) -> None:
        server.error = error
        if server.up or not server.checked:
            extra: dict[str, Any] = {"server": server.url}
            if not self.settings.mcp_disable_healthcheck_logs:
                extra["error"] = error
            log.warning("mcp polling failed", extra=extra)
        server.up = False
        self._rebuild()

    def _rebuild(self) -> None:
        settings = self.settings
        self._catalogue = build_catalogue(
            ((s.url, s.tools) for s in self.servers if s.up),
            settings.mcp_include_tools, settings.mcp_exclude_tools,
        )

    async def _attempt(self, server: _Server, timeout: float) -> str:
        """Fetch the server's tools (connecting first if needed); return ``""`` or the error."""
        try:
            result = await self._request(server, lambda s: s.list_tools(), timeout)
        except TimeoutError:
            return f"no answer within {_show(timeout)}"
        except MCPError as error:
            return str(error)
        except Exception as error:  # a bug must not end the supervisor (or the process)
            log.exception("mcp check failed unexpectedly", extra={"server": server.url})
            return f"{type(error).__name__}: {error}"
        tools = result.get("tools")
        server.tools = tuple(tools) if isinstance(tools, list) else ()
        return ""

    # -- lazy mode (no run()) -------------------------------------------------------------

    async def _start_lazily(self) -> None:
        async with self._lazy_lock:
            if self._started:
                return
            self._started = self._lazy = True
            timeout = self.settings.mcp_request_timeout

            async def first(server: _Server) -> None:
                self._initial_result(server, await self._attempt(server, timeout))

            async with anyio.create_task_group() as tg:
                for server in self.servers:
                    tg.start_soon(first, server)
            self._initial_done.set()
            self._next_lazy_poll = anyio.current_time() + self.settings.mcp_polling_interval

    async def _poll_lazily(self) -> None:
        if self._lazy_polling or anyio.current_time() < self._next_lazy_poll:
            return
        self._lazy_polling = True
        settings = self.settings
        try:
            async def check(server: _Server) -> None:
                error = await self._attempt(server, settings.mcp_polling_timeout)
                if not error:
                    self._mark_up(server)
                elif server.up:
                    self._mark_down(server, error)
                elif not settings.mcp_disable_healthcheck_logs:
                    log.warning("mcp polling failed", extra={"server": server.url, "error": error})

            async with anyio.create_task_group() as tg:
                for server in self.servers:
                    tg.start_soon(check, server)
        finally:
            self._lazy_polling = False
            self._next_lazy_poll = anyio.current_time() + settings.mcp_polling_interval

    # -- performing a session's requests --------------------------------------------------

    async def _request(self, server: _Server, start: Start, timeout: float) -> dict[str, Any]:
        """Run one operation, initializing first and once more if the session expired.

        Raises:
            TimeoutError: ``timeout`` passed.
            MCPError: the server failed or answered with an error.
        """
        with anyio.fail_after(_limit(timeout)):
            for attempt in (1, 2):
                await self._ensure_ready(server)
                op, outputs = start(server.session)
                try:
                    return await self._perform(server, op, outputs)
                except SessionExpired:
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ensure_ready(self, server: _Server) -> None:
        async with server.lock:
            session = server.session
            if session.state is SessionState.READY:
                return
            if session.state is SessionState.CLOSED:
                raise TransportError("the gateway is shutting down")
            op, outputs = session.initialize()
            await self._perform(server, op, outputs)
            log.debug("mcp session initialized",
                      extra={"server": server.url, "protocol_version": session.protocol_version})

    async def _perform(self, server: _Server, op: int, outputs: list[Output]) -> dict[str, Any]:
        """Perform ``outputs`` and what they lead to until operation ``op`` has an outcome."""
        pending: deque[Output] = deque(outputs)
        while pending:
            output = pending.popleft()
            if isinstance(output, SendRequest):
                pending.extend(await self._http(server, output))
            elif output.op == op:
                if isinstance(output, OperationDone):
                    return output.result
                raise output.error
        raise MalformedResponse(f"operation {op} ended without an outcome")

    async def _http(self, server: _Server, request: SendRequest) -> list[Output]:
        """Send one request and feed its response to the session; return its outputs."""
        session = server.session
        send = request.send
        outputs: list[Output] = []
        failure = ""
        settings = self.settings
        header_limit = _limit(settings.mcp_response_header_timeout)
        whole_limit = _limit(settings.mcp_client_timeout)
        url = httpcore.URL(request.url)
        headers = [(b"host", _host(url)), *request.headers,
                   (b"content-length", str(len(request.body)).encode())]
        message = httpcore.Request(request.method, url, headers=headers, content=request.body,
                                   extensions=self._extensions)
        try:
            with anyio.CancelScope(deadline=_deadline(whole_limit)) as whole:
                with anyio.CancelScope(deadline=_deadline(header_limit)) as head:
                    response = await self._pool.handle_async_request(message)
                if head.cancelled_caught:
                    failure = (f"no response headers within {_show(header_limit or 0)} "
                               "(MCP_RESPONSE_HEADER_TIMEOUT)")
                else:
                    try:
                        if request.expects_response and session.expects(send):
                            outputs += session.receive(
                                ResponseHead(send, response.status, lower_names(response.headers)))
                            async for chunk in response.aiter_stream():
                                if not session.expects(send):
                                    break
                                outputs += session.receive(ResponseData(send, chunk))
                            if session.expects(send):
                                outputs += session.receive(ResponseEnd(send))
                    finally:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
            if whole.cancelled_caught:
                failure = (f"no complete answer within {_show(whole_limit or 0)} "
                           "(MCP_CLIENT_TIMEOUT)")
        except _HTTP_ERRORS as exc:
            failure = _describe(exc)
        except BaseException:
            # Cancelled from outside (MCP_REQUEST_TIMEOUT, shutdown): forget the request.
            if session.expects(send):
                session.receive(RequestFailed(send, "cancelled"))
            raise
        if failure and request.expects_response and session.expects(send):
            outputs += session.receive(RequestFailed(send, failure))
        return outputs
