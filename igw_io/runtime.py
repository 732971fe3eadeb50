"""Process-wide IO state both frontends share: settings, pool, access log.

A frontend creates one :class:`Runtime` at startup, hands every request to
:attr:`Runtime.handle`, and closes it at shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from igw_core.config import ConfigError, Settings, startup_lines
from igw_core.events import RequestHead
from igw_core.gateway import Gateway
from igw_core.report import ExchangeRecord
from igw_core.router import Router
from igw_io.channel import ClientChannel
from igw_io.compiled import build_kind
from igw_io.driver import Draining, Services, serve
from igw_io.heads import HeadStamper
from igw_io.logs import AccessLog
from igw_io.routing_file import load_from_settings
from igw_io.upstream import Upstream

if TYPE_CHECKING:
    from igw_io.mcp import MCPManager
    from igw_io.metrics import Metrics
    from igw_io.oidc import OIDCKeys

log = logging.getLogger("igw")


class Runtime:
    """Everything a request needs beyond its own connection."""

    def __init__(self, settings: Settings, *, parser: str = "auto") -> None:
        self.settings = settings
        self.gateway = Gateway.from_settings(settings)
        #: Provider calls; ``parser`` picks the HTTP/1.1 response parser (``--http``).
        self.upstream = Upstream(settings, parser)
        self.clock = time.monotonic
        #: Stamps request-head events with the clocks and a fresh request id (compiled: the
        #: HTTP/1.1 engine calls its ``stamp`` directly).
        self.stamper = HeadStamper(self.clock)
        #: ``head(method, path, query, headers)``: the request-head event of a request, stamped
        #: with the clocks and a fresh request id.
        self.head: Callable[[str, str, str, list[tuple[bytes, bytes]]], RequestHead] = (
            self.stamper.stamp)
        self.background: TaskGroup | None = None
        #: Prometheus metrics, recorded only with ``TELEMETRY_ENABLE=true``.
        # MCP, metrics and OIDC (and httpcore, prometheus-client, pyjwt behind them) are
        # imported only when their feature is on: a process without them stays smaller.
        self.metrics: Metrics | None = None
        if settings.telemetry_enable:
            from igw_io.metrics import Metrics

            self.metrics = Metrics(settings)
        #: Whether :meth:`running` serves ``/metrics``; the ``--workers`` supervisor,
        #: which serves the sum over its workers itself, turns it off in each worker.
        self.serve_metrics = settings.telemetry_enable
        #: The MCP servers' sessions and tool catalogue, with ``MCP_ENABLE=true``.
        self.mcp: MCPManager | None = None
        if settings.mcp_enable:
            from igw_io.mcp import MCPManager

            self.mcp = MCPManager(settings)
        self.oidc: OIDCKeys | None = None
        if settings.auth_enable:
            from igw_io.oidc import OIDCKeys

            self.oidc = OIDCKeys.from_settings(settings)
        self._access = AccessLog()
        #: The routing aliases (ROUTING_ENABLED): a refused file raises ConfigError here.
        table = load_from_settings(settings)
        if table is not None:
            self.gateway.routing.router = Router(table)
        self._draining = Draining()
        self.services = Services(self.gateway, self.upstream, self.clock, self.mcp, self.oidc,
                                 self._draining)
        #: ``handle(channel, head)``: the coroutine that serves one request on ``channel``,
        #: then logs its access line and records its metrics. It is
        #: :func:`~igw_io.driver.serve` itself, not a coroutine around it: one frame fewer
        #: between the serving task and every wait. Every log line emitted while serving
        #: it carries its request id.
        self.handle: Callable[[ClientChannel, RequestHead], Coroutine[Any, Any, None]] = (
            partial(serve, self.services,
                    self.record if self.metrics is not None else self._access.write))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TaskGroup]:
        """Run the background tasks (polling, key refresh) for the body's duration.

        With telemetry on (and :attr:`serve_metrics`), ``/metrics`` is served on
        ``SERVER_HOST:TELEMETRY_METRICS_PORT`` meanwhile. Yields the task group
        the tasks run in; on exit they are cancelled, the metrics listener is
        closed and the upstream pool is closed.

        Raises:
            OSError: the metrics port cannot be bound.
        """
        listener = None
        try:
            if self.metrics is not None and self.serve_metrics:
                from igw_io.metrics import open_listener

                listener = open_listener(self.metrics, self.settings.server_host,
                                         self.settings.telemetry_metrics_port)
            async with anyio.create_task_group() as tg:
                self.background = tg
                if self.mcp is not None:
                    tg.start_soon(self.mcp.run)
                if self.oidc is not None:
                    tg.start_soon(self.oidc.run)
                yield tg
                tg.cancel_scope.cancel()
        finally:
            if listener is not None:
                listener.close()
            self.background = None
            await self.aclose()

    def log_startup(self) -> None:
        """Log the per-feature startup lines (no secrets)."""
        for line in startup_lines(self.settings):
            log.info(line)
        log.info(f"request path {build_kind()}")  # compiled, or IGW_PURE_PYTHON / no compiler
        if self.settings.server_host not in ("127.0.0.1", "localhost", "::1") and not (
            self.settings.auth_enable
        ):
            log.warning(
                "listening on a non-loopback address with AUTH_ENABLE=false: "
                "anyone who can reach it can spend your provider keys"
            )

    def _cooling(self, alias: str) -> int:
        router = self.gateway.routing.router
        if router is None:
            raise KeyError(alias)
        return router.cooling(alias, self.clock())

    def reload_routing(self) -> None:
        """Read ``ROUTING_CONFIG_PATH`` again (SIGHUP); a refused file is logged and the
        routes in use stay. Deployments that remain keep their cool-downs and averages."""
        if not self.settings.routing_enabled:
            return
        try:
            table = load_from_settings(self.settings)
        except ConfigError as error:
            log.error("routing reload refused, keeping the current routes",
                      extra={"problems": [str(p) for p in error.problems]})
            return
        assert table is not None
        router = self.gateway.routing.router
        self.gateway.routing.router = router.reloaded(table) if router else Router(table)
        log.info("routing reloaded", extra={"aliases": list(table.aliases)})

    @property
    def draining(self) -> bool:
        """Whether the server is draining at shutdown: ``/ready`` then answers 503."""
        return self._draining.on

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining.on = value

    def record(self, record: ExchangeRecord) -> None:
        """Log the access line of a finished exchange and count it in the metrics."""
        if self.metrics is not None:
            self.metrics.record(record)
            if record.alias:
                self.metrics.record_routing(record, self._cooling)
        self._access.write(record)

    async def aclose(self) -> None:
        """Write the pending access lines; close the upstream pool, MCP sessions and OIDC."""
        self._access.flush()
        await self.upstream.aclose()
        if self.mcp is not None:
            await self.mcp.aclose()
        if self.oidc is not None:
            await self.oidc.aclose()
