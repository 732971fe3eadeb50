"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

The parent only supervises: it restarts a worker that dies and passes
SIGTERM/SIGINT on, so every worker drains its in-flight requests. With
telemetry on, the workers write their metrics to a fresh directory
(prometheus-client's multiprocess mode) and the parent alone serves
``/metrics``, the sum over all workers, dead ones included.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess

import anyio
from prometheus_client.multiprocess import mark_process_dead

from igw_core.config import Settings
from igw_io.logs import configure_logging, secrets_of
from igw_io.metrics import MULTIPROC_ENV, MetricsListener, multiprocess_registry
from igw_standalone.server import SHUTDOWN_GRACE, Server

log = logging.getLogger("igw.workers")

_RESTART_PAUSE = 0.5
_TICK = 0.2


def _worker(settings: Settings, listener: MetricsListener | None) -> None:
    if listener is not None:
        listener.forget()  # the parent serves /metrics; drop the inherited socket
    configure_logging(development=settings.is_development, secrets=secrets_of(settings))
    server = Server(settings, reuse_port=True)
    server.runtime.serve_metrics = False
    try:
        anyio.run(server.serve)
    except KeyboardInterrupt:
        pass


class _SharedMetrics:
    """The parent's side of multiprocess metrics: the directory and the listener."""

    def __init__(self, settings: Settings) -> None:
        """Create the directory, point the workers at it and bind the metrics port.

        Raises:
            OSError: the metrics port cannot be bound.
        """
        self.previous = os.environ.get(MULTIPROC_ENV)
        self.path = tempfile.mkdtemp(prefix="igw-metrics-")
        os.environ[MULTIPROC_ENV] = self.path
        try:
            self.listener = MetricsListener(
                multiprocess_registry(self.path), settings.server_host,
                settings.telemetry_metrics_port, threaded=False)
        except OSError:
            self.close()
            raise
        log.info("metrics listening", extra={"url": self.listener.url, "workers_dir": self.path})

    def worker_died(self, pid: int | None) -> None:
        if pid is not None:
            mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        listener: MetricsListener | None = getattr(self, "listener", None)
        if listener is not None:
            listener.close()
        if self.previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self.previous
        shutil.rmtree(self.path, ignore_errors=True)


def _reserve_port(settings: Settings) -> tuple[Settings, socket.socket | None]:
    """With port 0, pick one port for every worker and hold it while they bind."""
    if settings.server_port != 0:
        return settings, None
    family = socket.AF_INET6 if ":" in settings.server_host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((settings.server_host, 0))
    port = holder.getsockname()[1]
    return dataclasses.replace(settings, server_port=port), holder


def run_workers(settings: Settings, count: int) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; return the exit status.

    Returns 1 without starting workers when the metrics port cannot be bound.
    """
    shared: _SharedMetrics | None = None
    if settings.telemetry_enable:
        try:
            shared = _SharedMetrics(settings)
        except OSError as error:
            log.error("cannot serve metrics (TELEMETRY_METRICS_PORT)",
                      extra={"port": settings.telemetry_metrics_port, "error": str(error)})
            return 1
    settings, holder = _reserve_port(settings)
    listener = shared.listener if shared is not None else None
    context = multiprocessing.get_context("fork")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(settings, listener), daemon=False)
        process.start()
        return process

    workers = [start() for _ in range(count)]
    log.info("workers started", extra={"workers": count, "port": settings.server_port})
    try:
        while not stopping:
            if listener is not None:
                listener.handle_one(_TICK)  # scrapes are served between checks
            else:
                time.sleep(_TICK)
            for i, process in enumerate(workers):
                if not process.is_alive() and not stopping:
                    log.warning("worker died, restarting",
                                extra={"pid": process.pid, "exitcode": process.exitcode})
                    if shared is not None:
                        shared.worker_died(process.pid)
                    time.sleep(_RESTART_PAUSE)
                    workers[i] = start()
    finally:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE + 2
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        if holder is not None:
            holder.close()
        if shared is not None:
            shared.close()
    return 0
