"""Prometheus metrics: recording the core's :class:`ExchangeRecord` facts, and serving ``/metrics``.

Everything on the wire comes from prometheus-client (its WSGI app does the content
negotiation, gzip and ``name[]`` filtering); this module only chooses names, labels
and buckets, and keeps every label value inside a fixed set.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from igw_core.config import Settings
from igw_core.report import ROUTE_LABELS, ExchangeRecord

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "MODEL_LABEL_LIMIT",
    "MULTIPROC_ENV",
    "TOOL_LABEL_LIMIT",
    "Metrics",
    "MetricsListener",
    "multiprocess_dir",
    "multiprocess_registry",
    "open_listener",
]

log = logging.getLogger("igw.metrics")

#: prometheus-client's switch for multiprocess mode (read by the library itself).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Distinct ``model`` label values one process keeps before it reports ``other``.
MODEL_LABEL_LIMIT = 200
#: Distinct ``tool_name`` label values one process keeps before it reports ``other``.
TOOL_LABEL_LIMIT = 100
#: Longer model or tool names are reported as ``other``.
_MAX_LABEL_LENGTH = 128
OTHER = "other"
UNKNOWN_PROVIDER = "unknown"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The OpenTelemetry GenAI operation of each route that calls a model.
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/messages": "chat", "/v1/responses": "chat",
               "/v1/embeddings": "embeddings"}
_Metric = TypeVar("_Metric", Counter, Histogram, Gauge)

# Buckets: the OpenTelemetry GenAI semantic conventions' advisory boundaries for the
# gen_ai_* histograms, so dashboards written for OTel exporters line up.
_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000,
               300000)
_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)


def multiprocess_dir() -> str | None:
    """Return ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when it is unset or empty.

    Raises:
        NotADirectoryError: it is set but names no directory.
    """
    path = os.environ.get(MULTIPROC_ENV, "")
    if path and not os.path.isdir(path):
        raise NotADirectoryError(f"{MULTIPROC_ENV}={path!r} is not a directory")
    return path or None


def multiprocess_registry(path: str) -> CollectorRegistry:
    """Return a registry that collects the sum over every process writing to ``path``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return registry


class _BoundedLabel:
    """Turns an open-ended name into a label value from a set of at most ``limit`` + 1.

    A name joins the set only when the caller vouches for it (the provider accepted
    the model), so a flood of made-up names cannot use up the places of real ones.
    Everything else is ``other``.
    """

    __slots__ = ("_known", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()

    def __call__(self, name: str, *, vouched: bool) -> str:
        if not name:
            return ""
        if name in self._known:
            return name
        if vouched and len(self._known) < self._limit and _labelable(name):
            self._known.add(name)
            return name
        return OTHER


def _labelable(name: str) -> bool:
    return len(name) <= _MAX_LABEL_LENGTH and name.isprintable()


class Metrics:
    """The gateway's Prometheus metrics, recorded from finished exchanges.

    Single-process: the metrics live in :attr:`registry`. With
    ``PROMETHEUS_MULTIPROC_DIR`` set to a directory, values go to that directory's
    files (prometheus-client's multiprocess mode) and :attr:`registry` collects
    the sum over every process writing there.

    Label values are bounded: ``provider`` is a configured provider id or
    ``unknown``, ``request_path`` a route label, ``request_method`` a standard
    method or ``OTHER``, ``status_code`` ``"100"``..``"599"`` or ``other``, and
    ``model`` keeps the first :data:`MODEL_LABEL_LIMIT` names per process that a
    provider answered 2xx for, ``tool_name`` the first :data:`TOOL_LABEL_LIMIT`
    tools executed; anything past that is ``other``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model_limit: int = MODEL_LABEL_LIMIT,
        tool_limit: int = TOOL_LABEL_LIMIT,
    ) -> None:
        """Create the metrics (in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set).

        Raises:
            NotADirectoryError: ``PROMETHEUS_MULTIPROC_DIR`` names no directory.
        """
        self._providers = frozenset(p.id for p in settings.providers)
        self._models = _BoundedLabel(model_limit)
        self._tools = _BoundedLabel(tool_limit)
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}
        self.multiprocess_dir = multiprocess_dir()
        own: CollectorRegistry | None
        _match_value_class(self.multiprocess_dir is not None)
        if self.multiprocess_dir is not None:
            own = None  # values live in the directory's files, collected from there
            self.registry = multiprocess_registry(self.multiprocess_dir)
        else:
            own = self.registry = CollectorRegistry()

        http = ("provider", "request_method", "request_path")
        per_model = ("provider", "model")
        per_tool = ("provider", "model", "tool_name")
        gen_ai = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
        self.responses = Counter(
            "llm_responses", "Responses sent, by provider, route and status.",
            (*http, "status_code"), registry=own)
        self.duration_ms = Histogram(
            "llm_request_duration_milliseconds",
            "Time from request head to the end of the response, in milliseconds.",
            http, buckets=_MS_BUCKETS, registry=own)
        self.prompt_tokens = Counter(
            "llm_usage_prompt_tokens", "Prompt tokens the provider reported.", per_model,
            registry=own)
        self.completion_tokens = Counter(
            "llm_usage_completion_tokens", "Completion tokens the provider reported.",
            per_model, registry=own)
        self.total_tokens = Counter(
            "llm_usage_total_tokens", "Total tokens the provider reported.", per_model,
            registry=own)
        self.tool_calls = Counter(
            "llm_tool_calls", "MCP tool calls the gateway executed.", per_tool, registry=own)
        self.tool_successes = Counter(
            "llm_tool_calls_success", "MCP tool calls that returned a result.", per_tool,
            registry=own)
        self.tool_failures = Counter(
            "llm_tool_calls_failure", "MCP tool calls that failed or timed out.", per_tool,
            registry=own)
        self.tool_duration = Histogram(
            "llm_tool_call_duration_seconds", "Duration of MCP tool calls, in seconds.",
            per_tool, buckets=_SECONDS_BUCKETS, registry=own)
        self.gen_ai_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "GenAI request duration (OpenTelemetry gen_ai.server.request.duration).",
            (*gen_ai, "error_type"), buckets=_SECONDS_BUCKETS, registry=own)
        self.gen_ai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request by type (OpenTelemetry gen_ai.client.token.usage).",
            (*gen_ai, "gen_ai_token_type"), buckets=_TOKEN_BUCKETS, registry=own)
        self.gen_ai_ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed byte (OpenTelemetry "
            "gen_ai.server.time_to_first_token).",
            gen_ai, buckets=_TTFT_BUCKETS, registry=own)
        routed = ("alias", "provider", "model")
        self.routing_attempts = Counter(
            "igw_routing_attempts", "Routed attempts by alias, deployment and outcome "
            "(ok, retry, fallback, exhausted, failed).", (*routed, "outcome"), registry=own)
        self.routing_cooldowns = Counter(
            "igw_routing_cooldowns", "Deployments put in cool-down after a failure.", routed,
            registry=own)
        self.routing_cooling = Gauge(
            "igw_routing_cooling_deployments",
            "Deployments of an alias cooling down, as of its latest routed request.",
            ("alias",), registry=own, multiprocess_mode="livesum")

    def record_routing(self, record: ExchangeRecord, cooling: Callable[[str], int]) -> None:
        """Count a routed exchange's attempts and cool-downs; ``cooling(alias)`` says how
        many of an alias's deployments are cooling now. Aliases and models come from the
        routing file, so these labels are bounded by it."""
        child = self._child
        aliases = {record.alias}
        for fact in record.attempts:
            child(self.routing_attempts, fact.alias, fact.provider, fact.model,
                  fact.outcome).inc()
            aliases.add(fact.alias)
        for alias, provider, model in record.cooled:
            child(self.routing_cooldowns, alias, provider, model).inc()
        for alias in aliases:
            with contextlib.suppress(KeyError):  # an alias a reload removed
                child(self.routing_cooling, alias).set(cooling(alias))

    def record(self, record: ExchangeRecord) -> None:
        """Count one finished exchange; exchanges with ``counted`` false are ignored."""
        if not record.counted:
            return
        child = self._child
        provider = record.provider if record.provider in self._providers else UNKNOWN_PROVIDER
        method = record.method if record.method in _METHODS else "OTHER"
        route = record.route if record.route in ROUTE_LABELS else OTHER
        status = record.status
        status_label = str(status) if 100 <= status <= 599 else OTHER
        duration = max(0.0, record.duration)
        child(self.responses, provider, method, route, status_label).inc()
        child(self.duration_ms, provider, method, route).observe(duration * 1000.0)
        operation = _OPERATIONS.get(route)
        if operation is None:
            return

        model = self._models(record.model, vouched=200 <= status < 300)
        child(self.gen_ai_duration, operation, provider, model,
              "" if status < 400 else status_label).observe(duration)
        if record.streamed and record.first_byte is not None:
            child(self.gen_ai_ttft, operation, provider, model).observe(
                max(0.0, record.first_byte - record.started))
        usage = record.usage
        if usage is not None:
            child(self.prompt_tokens, provider, model).inc(usage.prompt_tokens)
            child(self.completion_tokens, provider, model).inc(usage.completion_tokens)
            child(self.total_tokens, provider, model).inc(usage.total_tokens)
            child(self.gen_ai_tokens, operation, provider, model, "input").observe(
                usage.prompt_tokens)
            child(self.gen_ai_tokens, operation, provider, model, "output").observe(
                usage.completion_tokens)
        for call in record.tool_calls:
            # Only tools from the configured servers' catalogues are executed, so a
            # failing one is as real as a working one and keeps its name.
            labels = (provider, model, self._tools(call.name, vouched=True))
            child(self.tool_calls, *labels).inc()
            child(self.tool_successes if call.ok else self.tool_failures, *labels).inc()
            child(self.tool_duration, *labels).observe(max(0.0, call.duration))

    def _child(self, metric: _Metric, *labels: str) -> _Metric:
        """Return ``metric.labels(*labels)``, cached: the label sets are bounded, and
        prometheus-client's own lookup costs about a microsecond per call."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return cast(_Metric, found)

    def exposition(self) -> bytes:
        """Return :attr:`registry` in the Prometheus text format."""
        return generate_latest(self.registry)


def _match_value_class(multiprocess: bool) -> None:
    """Make prometheus-client store new values where this mode collects them.

    The library picks its value class when ``prometheus_client.values`` is first
    imported; a process that imported it before ``PROMETHEUS_MULTIPROC_DIR`` was
    set (the ``--workers`` parent sets it just before forking) would otherwise
    keep process-local values that the multiprocess collector never sees.
    """
    if getattr(values.ValueClass, "_multiprocess", False) != multiprocess:
        values.ValueClass = (
            values.MultiProcessValue() if multiprocess else values.MutexValue  # type: ignore[no-untyped-call]
        )


class _QuietHandler(WSGIRequestHandler):
    """Logs nothing per scrape, and gives up on a client that stalls."""

    timeout = 5.0

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _metrics_only(app: WSGIApplication) -> WSGIApplication:
    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        return app(environ, start_response)

    return route


class MetricsListener:
    """An HTTP/1.1 listener that serves ``GET /metrics`` from a registry.

    The HTTP side is prometheus-client's WSGI app on the standard library's WSGI
    server. :meth:`start` runs it on a daemon thread (a gateway process: scrapes,
    which read files in multiprocess mode, never block the event loop);
    :meth:`handle_one` serves from the caller's thread instead (the ``--workers``
    supervisor, which must not have threads when it forks).
    """

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, *, threaded: bool = True
    ) -> None:
        """Bind ``host:port`` (port 0 picks one; see :attr:`port`).

        Raises:
            OSError: the address cannot be bound (in use, not local, ...).
        """
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        base: type[WSGIServer] = ThreadingWSGIServer if threaded else WSGIServer
        server_class = type("_MetricsServer", (base,), {"address_family": family})
        server: WSGIServer = server_class(address[:2], _QuietHandler)
        server.set_app(_metrics_only(make_wsgi_app(registry)))
        self._server = server
        self._thread: threading.Thread | None = None
        self.host = host
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Serve on a daemon thread until :meth:`close`."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="igw-metrics", daemon=True)
        self._thread.start()

    def handle_one(self, timeout: float) -> None:
        """Serve at most one scrape, waiting up to ``timeout`` seconds for it."""
        self._server.timeout = timeout
        self._server.handle_request()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def forget(self) -> None:
        """Close this process's copy of the socket (a forked child that does not serve)."""
        self._server.socket.close()


def open_listener(metrics: Metrics, host: str, port: int) -> MetricsListener | None:
    """Start serving ``metrics`` on ``host:port`` on a thread and log the URL.

    In multiprocess mode a port already in use means another process of the same
    deployment serves the sum over all of them, so this returns ``None`` instead.

    Raises:
        OSError: the port cannot be bound (single-process mode).
    """
    try:
        listener = MetricsListener(metrics.registry, host, port)
    except OSError as error:
        if metrics.multiprocess_dir is not None and error.errno == errno.EADDRINUSE:
            log.info("metrics port in use; another process serves the aggregate",
                     extra={"port": port})
            return None
        raise OSError(error.errno,
                      f"cannot serve metrics on {host}:{port} (TELEMETRY_METRICS_PORT): "
                      f"{error.strerror}") from error
    listener.start()
    log.info("metrics listening", extra={"url": listener.url})
    return listener
