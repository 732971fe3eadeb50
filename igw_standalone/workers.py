"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

The parent only supervises: it restarts a worker that dies and passes
SIGTERM/SIGINT on, so every worker drains its in-flight requests.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess

import anyio

from igw_core.config import Settings
from igw_standalone.server import SHUTDOWN_GRACE, Server

log = logging.getLogger("igw.workers")

_RESTART_PAUSE = 0.5


def _worker(settings: Settings) -> None:
    from igw_io.logs import configure_logging

    configure_logging(development=settings.is_development,
                      secrets=tuple(p.api_key for p in settings.providers if p.api_key))
    try:
        anyio.run(Server(settings, reuse_port=True).serve)
    except KeyboardInterrupt:
        pass


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
    """Run ``count`` workers until SIGTERM/SIGINT; return the exit status."""
    settings, holder = _reserve_port(settings)
    context = multiprocessing.get_context("fork")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(settings,), daemon=False)
        process.start()
        return process

    workers = [start() for _ in range(count)]
    log.info("workers started", extra={"workers": count, "port": settings.server_port})
    try:
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(workers):
                if not process.is_alive() and not stopping:
                    log.warning("worker died, restarting",
                                extra={"pid": process.pid, "exitcode": process.exitcode})
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
    return 0
