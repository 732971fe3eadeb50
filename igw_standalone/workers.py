"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

The parent binds the address once before forking, so a taken port is one clear
error, not N dying workers. Then it only supervises: it restarts a worker that
dies (with a growing pause when it keeps dying right after start, giving up
after a few such deaths) and passes SIGTERM/SIGINT on, so every worker drains
its in-flight requests. With
telemetry on, the workers write their metrics to a fresh directory
(prometheus-client's multiprocess mode) and the parent alone serves
``/metrics``, the sum over all workers, dead ones included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from igw_core.config import Settings
from igw_io.logs import configure_logging, secrets_of
from igw_io.metrics import MULTIPROC_ENV, MetricsListener, multiprocess_registry
from igw_standalone.listener import bound_socket
from igw_standalone.server import Engine, Server, run

log = logging.getLogger("igw.workers")

_TICK = 0.2
#: A worker that dies sooner than this after its start counts as dying right after start.
_QUICK_DEATH = 10.0
#: The pause before restarting a worker after its first quick death; it doubles each time.
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 8.0
#: Quick deaths in a row of one worker after which the supervisor gives up.
_GIVE_UP_AFTER = 5


def _worker(settings: Settings, engine: Engine, listener: MetricsListener | None) -> None:
    if listener is not None:
        listener.forget()  # the parent serves /metrics; drop the inherited socket
    configure_logging(development=settings.is_development, secrets=secrets_of(settings))
    server = Server(settings, reuse_port=True, http=engine.http)
    server.runtime.serve_metrics = False
    try:
        run(server.serve, engine.loop)
    except KeyboardInterrupt:
        pass
    except OSError as error:  # one log line, not multiprocessing's traceback on stderr
        log.error("igw: cannot serve: %s", error)
        sys.exit(1)
    except Exception:
        log.exception("worker failed")
        sys.exit(1)


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


def check_bind(settings: Settings) -> None:
    """Bind the listening address as a single process would, then let it go.

    The workers bind with SO_REUSEPORT, which would let them join another
    process's port (or fail one by one, forever); this probe does not.

    Raises:
        OSError: the address cannot be bound, e.g. the port is taken.
    """
    if settings.server_port == 0:
        return
    found = socket.getaddrinfo(settings.server_host, settings.server_port,
                               flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG)
    for family, kind, proto, _, address in sorted(
            {info for info in found if info[1] == socket.SOCK_STREAM}):
        bound_socket(family, kind, proto, address).close()


def _cause(exitcode: int | None) -> str:
    """Return how a worker ended, in words: ``exit code 3`` or ``killed by SIGKILL``."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclasses.dataclass
class _Slot:
    """One worker position: the process in it (``None`` while waiting to restart)."""

    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


def run_workers(settings: Settings, count: int, engine: Engine | None = None) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; return the exit status.

    Returns 0 after a signal, 1 without starting workers when the metrics port cannot
    be bound, and 1 when a worker died right after start ``_GIVE_UP_AFTER`` times in a
    row (each death logged with its cause).

    Raises:
        OSError: the listening address cannot be bound; no worker was started.
    """
    chosen = engine or Engine()
    check_bind(settings)
    shared: _SharedMetrics | None = None
    if settings.telemetry_enable:
        try:
            shared = _SharedMetrics(settings)
        except OSError as error:
            log.error("cannot serve metrics (TELEMETRY_METRICS_PORT)",
                      extra={"port": settings.telemetry_metrics_port, "error": str(error)})
            return 1
    try:
        settings, holder = _reserve_port(settings)
    except OSError:
        if shared is not None:
            shared.close()
        raise
    listener = shared.listener if shared is not None else None
    context = multiprocessing.get_context("fork")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    slots: list[_Slot] = []

    def reload(signum: int, frame: FrameType | None) -> None:
        """SIGHUP: each worker reloads the routing file itself."""
        for slot in slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGHUP)

    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)

    def start(slot: _Slot) -> None:
        slot.process = context.Process(target=_worker, args=(settings, chosen, listener),
                                       daemon=False)
        slot.process.start()
        slot.started = time.monotonic()

    def reap(slot: _Slot, process: BaseProcess) -> bool:
        """Schedule the restart of a dead worker; return ``False`` to give up."""
        if shared is not None:
            shared.worker_died(process.pid)
        now = time.monotonic()
        slot.process = None
        slot.quick_deaths = slot.quick_deaths + 1 if now - slot.started < _QUICK_DEATH else 0
        cause = _cause(process.exitcode)
        if slot.quick_deaths >= _GIVE_UP_AFTER:
            log.error("workers keep dying right after start, giving up",
                      extra={"pid": process.pid, "exitcode": process.exitcode, "cause": cause,
                             "deaths": slot.quick_deaths})
            return False
        pause = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** max(0, slot.quick_deaths - 1))
        slot.restart_at = now + pause
        log.warning("worker died, restarting",
                    extra={"pid": process.pid, "exitcode": process.exitcode, "cause": cause,
                           "restart_in": pause})
        return True

    slots.extend(_Slot() for _ in range(count))
    status = 0
    try:
        for slot in slots:
            start(slot)
        log.info("workers started", extra={"workers": count, "port": settings.server_port})
        while not stopping and status == 0:
            if listener is not None:
                listener.handle_one(_TICK)  # scrapes are served between checks
            else:
                time.sleep(_TICK)
            for slot in slots:
                if stopping:
                    break
                if slot.process is None:
                    if time.monotonic() >= slot.restart_at:
                        start(slot)
                elif not slot.process.is_alive() and not reap(slot, slot.process):
                    status = 1
                    break
    finally:
        workers = [slot.process for slot in slots if slot.process is not None]
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.server_shutdown_timeout + 2
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        if holder is not None:
            holder.close()
        if shared is not None:
            shared.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
