"""Per-request cost of igw standalone at one connection: CPU time and Python calls.

Two runs against the mock upstream, each after a warm-up, one request at a time from a
keep-alive client in this process:

1. **CPU per request**: igw runs as in production (no profiler); its user + system CPU
   time is read from ``/proc/PID/stat`` before and after ``--requests`` requests.
2. **Calls per request**: igw runs under cProfile, switched on (SIGUSR1) and off
   (SIGUSR2, which also dumps the stats) around the same number of requests; prints the
   Python calls per request and the top functions by own time (``tottime``).

With at least 2 CPUs, igw is pinned to the first and this script and the mock to the
second. 127.0.0.1 only; every child is stopped on exit.

Usage::

    python benchmarks/profile.py [--requests 2000] [--scenario chat|stream|proxy]
                                 [--top 25] [--igw-args "--http httptools --loop uvloop"]
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import importlib.util
import os
import pstats
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is named like the stdlib's ``profile`` (which cProfile imports): take this
# directory off the import path and load run.py's helpers by file name instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("igw_bench_run", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules["igw_bench_run"] = run
_spec.loader.exec_module(run)

#: Runs igw under cProfile, enabled by SIGUSR1, disabled and dumped by SIGUSR2; the
#: handler writes ``path + ".ok"`` when done so the driver knows it ran.
_WRAPPER = """
import cProfile, signal, sys
from pathlib import Path
path = sys.argv[1]
prof = cProfile.Profile()
def on(*_):
    prof.enable(); Path(path + ".on").write_text("on")
def off(*_):
    prof.disable(); prof.dump_stats(path); Path(path + ".ok").write_text("ok")
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
from igw_standalone.__main__ import main
main(sys.argv[2:])
"""


class Client:
    """One keep-alive connection sending the same request, one at a time."""

    def __init__(self, port: int, request: run.Request) -> None:
        self.conn = http.client.HTTPConnection(run.HOST, port, timeout=run.REQUEST_TIMEOUT_S)
        self.request = request
        self.headers = {"Content-Type": "application/json",
                        "Authorization": f"Bearer {run.API_KEY}"}

    def send(self, n: int) -> float:
        """Send ``n`` requests; return the wall seconds they took.

        Raises:
            RuntimeError: an answer was not a 200.
        """
        started = time.perf_counter()
        for _ in range(n):
            self.conn.request("POST", self.request.path, body=self.request.body,
                              headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}: {body[:200]!r}")
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def wait_for(path: Path, client: Client) -> None:
    """Wait for the wrapper's marker file; poke the server with a request if it idles.

    Raises:
        RuntimeError: the marker never appeared.
    """
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the profiled server did not write {path}")
        time.sleep(0.05)
        if not path.exists() and time.monotonic() > deadline - 9:
            client.send(1)  # a loop idle in C may run Python signal handlers only on I/O


def start_igw(children: run.Children, name: str, command: list[str], upstream: int,
              cpu: int | None) -> int:
    port = run.free_port()
    log = run.RESULTS / f"profile-{name}.log"
    proc = children.start(name, command, run.gateway_env(upstream, port), log, cpu)
    run.wait_health(name, proc, port, log)
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description="igw CPU and Python calls per request, c1")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=200, help="requests sent first")
    parser.add_argument("--scenario", choices=("chat", "stream", "proxy"), default="chat")
    parser.add_argument("--top", type=int, default=25, help="functions listed by tottime")
    parser.add_argument("--save", help="also write the cProfile stats to this file "
                        "(for pstats or snakeviz)")
    parser.add_argument("--igw-args", default="", help="extra igw flags, e.g. '--http h11'")
    args = parser.parse_args()
    children = run.Children()
    atexit.register(children.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cpus = run.pick_cpus("auto")
    target_cpu = cpus[0] if cpus else None
    if cpus:
        os.sched_setaffinity(0, {cpus[1]})  # this client and the mock (started below)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    _, request = run.scenario_requests(args.scenario)
    igw_args = shlex.split(args.igw_args)
    try:
        up = run.free_port()
        upstream = children.start("upstream", [sys.executable, str(HERE / "upstream.py"),
                                               "--port", str(up)], run.base_env(),
                                  run.RESULTS / "profile-upstream.log")
        run.wait_health("upstream", upstream, up, run.RESULTS / "profile-upstream.log")

        # 1. CPU per request, no profiler.
        port = start_igw(children, "igw", [sys.executable, "-m", "igw_standalone", *igw_args],
                         up, target_cpu)
        cpu_pid = children.procs[-1][1].pid
        client = Client(port, request)
        client.send(args.warmup)
        before = run.cpu_seconds([cpu_pid])
        wall = client.send(args.requests)
        after = run.cpu_seconds([cpu_pid])
        client.close()
        cpu_ms = None if before is None or after is None else (after - before) * 1e3
        # 2. Python calls per request, under cProfile.
        with tempfile.TemporaryDirectory(prefix="igw-profile-") as scratch:
            stats_path = Path(scratch) / "igw.prof"
            port = start_igw(children, "igw-cprofile",
                             [sys.executable, "-c", _WRAPPER, str(stats_path), *igw_args],
                             up, target_cpu)
            pid = children.procs[-1][1].pid
            client = Client(port, request)
            client.send(args.warmup)
            os.kill(pid, signal.SIGUSR1)
            wait_for(Path(f"{stats_path}.on"), client)
            client.send(args.requests)
            os.kill(pid, signal.SIGUSR2)
            wait_for(Path(f"{stats_path}.ok"), client)
            client.close()
            stats = pstats.Stats(str(stats_path))
            if args.save:
                stats.dump_stats(args.save)
    finally:
        children.stop_all()

    n = args.requests
    print(f"igw standalone {' '.join(igw_args) or '(defaults)'}, scenario {args.scenario}, "
          f"{n} requests at one connection after {args.warmup} warm-up"
          + (f", igw on CPU {cpus[0]}, client and mock on CPU {cpus[1]}" if cpus else ""))
    print(f"wall per request (client side): {wall / n * 1e3:.3f} ms")
    if cpu_ms is not None:
        print(f"igw CPU per request (/proc/PID/stat, no profiler): {cpu_ms / n:.3f} ms "
              f"({cpu_ms:.0f} ms over {n} requests; clock tick "
              f"{1e3 / os.sysconf('SC_CLK_TCK'):.0f} ms)")
    table = stats.stats  # type: ignore[attr-defined]
    total_tt = sum(row[2] for row in table.values())
    total_calls = sum(row[1] for row in table.values())
    print(f"Python calls per request (cProfile): {total_calls / n:,.0f} "
          f"({total_calls:,} calls, {total_tt:.2f} s profiled)\n")
    print(f"top {args.top} functions by own time (tottime), per request:\n")
    print("| function | calls/req | tottime µs/req | % | cumtime µs/req |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = sorted(table.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, func), (_cc, calls, tt, ct, _callers) in rows[:args.top]:
        where = f"{_short(filename)}:{line}({func})" if line else func
        print(f"| `{where}` | {calls / n:.1f} | {tt / n * 1e6:.1f} | "
              f"{100 * tt / total_tt if total_tt else 0:.1f} | {ct / n * 1e6:.1f} |")


def _short(filename: str) -> str:
    """A path relative to the repository or to site-packages."""
    for marker in (str(run.REPO) + os.sep, "site-packages" + os.sep, "lib" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    main()
