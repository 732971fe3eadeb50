"""Benchmark igw's hot path next to nginx and a minimal Python relay, on 127.0.0.1 only.

Starts ``benchmarks/upstream.py`` (a fast mock OpenAI provider), then the targets:
``nginx`` as a ``proxy_pass`` with upstream keep-alive (when installed), the floor relay
``benchmarks/floor.py`` on asyncio and on uvloop, igw standalone on each parser/loop
combination it supports, and the ASGI app under uvicorn (uvloop + httptools). For each
scenario (non-streaming chat, streaming chat, ``/proxy``, one connection, a long
conversation) it measures the
mock alone (``direct``) and every target in turn, each target pinned to the same core, and
prints markdown tables: RPS, p50/p99, errors, peak RSS, server CPU, and each igw row's ratio
to the floor and to nginx. Results also go to ``benchmarks/results/latest.json``.

A shared VM's speed drifts by tens of percent within a minute, so each scenario is measured
in ``--rounds`` rounds (every target once per round, in table order): each target's
measurements are interleaved with the floor's, the ratios are taken within a round, and the
tables show per target the median over the rounds (ratios: the median of the per-round
ratios). The per-round rows are kept in the JSON.

Usage::

    python benchmarks/run.py [--duration 3] [--rounds 3] [--connections 64]
                             [--tool auto|wrk|python]
                             [--only nginx,floor,standalone,asgi]
                             [--scenarios chat,stream,proxy,single,long]
                             [--extra rss,workers]

The load comes from ``wrk`` when installed, otherwise from the bundled
``benchmarks/loadgen.py``; either runs in its own process. Every child process is
stopped when this script ends, fails or is interrupted, and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
HOST = "127.0.0.1"
API_KEY = "sk-bench"
GROUPS = ("nginx", "floor", "standalone", "asgi")
#: The row of igw's production defaults, which ``--baseline`` is compared with.
_PRODUCTION = "igw-httptools-uvloop"
SCENARIOS = ("chat", "stream", "proxy", "single", "long")
EXTRAS = ("rss", "workers")
#: ``data:`` events the mock streams before ``data: [DONE]``.
STREAM_EVENTS = 12
WARMUP_S = 1.0
START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
#: Environment passed through to the children; everything else is left out so a
#: developer's own gateway settings (AUTH_ENABLE, MCP_SERVERS...) do not leak in.
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
_INSTALL = "apt-get update && apt-get install -y nginx-light wrk"

_MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
#: The ``long`` scenario's conversation: 24 turns of about 1 KB, some of it outside ASCII.
_CONVERSATION = [
    {"role": "user" if turn % 2 == 0 else "assistant",
     "content": f"Turn {turn}: " + "The quick brown fox jumps over the lazy dog. " * 21
     + "Grüße, ¿qué tal? 東京 🚀"}
    for turn in range(24)
]


@dataclass(frozen=True)
class Request:
    """One request that a load run repeats."""

    path: str
    body: bytes
    stream: bool


@dataclass
class Target:
    """One server under test; ``loop`` picks the floor it is compared with."""

    name: str
    kind: str  # direct | nginx | floor | igw | asgi
    loop: str | None
    port: int
    proc: subprocess.Popen[bytes]


@dataclass
class Result:
    """One measured row."""

    scenario: str
    target: str
    kind: str
    loop: str | None
    connections: int
    pinned: bool
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    peak_rss_mb: float | None
    server_cpu_pct: float | None
    check: str
    vs_floor: float | None = None
    vs_best_floor: float | None = None
    vs_nginx: float | None = None
    added_p50_ms: float | None = None
    added_vs_floor: float | None = None
    vs_one_worker: float | None = None


def _body(model: str, *, stream: bool) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": _MESSAGES}
    if stream:
        obj["stream"] = True
        obj["stream_options"] = {"include_usage": True}
    return json.dumps(obj, separators=(",", ":")).encode()


def _long_body(model: str) -> bytes:
    # As the OpenAI SDK writes it: messages first, UTF-8 rather than \u escapes.
    obj = {"messages": _CONVERSATION, "model": model}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def scenario_requests(scenario: str) -> tuple[Request, Request]:
    """Return (request to the upstream directly, request to every other target).

    nginx and the floor forward the gateway's request unchanged; the mock accepts any
    model and any path ending in ``/chat/completions``.
    """
    if scenario in ("chat", "single"):
        return (Request("/v1/chat/completions", _body("gpt-4o-mini", stream=False), False),
                Request("/v1/chat/completions", _body("openai/gpt-4o-mini", stream=False), False))
    if scenario == "stream":
        return (Request("/v1/chat/completions", _body("gpt-4o-mini", stream=True), True),
                Request("/v1/chat/completions", _body("openai/gpt-4o-mini", stream=True), True))
    if scenario == "proxy":
        direct = Request("/v1/chat/completions", _body("gpt-4o-mini", stream=False), False)
        return direct, Request("/proxy/openai/v1/chat/completions", direct.body, False)
    if scenario == "long":
        return (Request("/v1/chat/completions", _long_body("gpt-4o-mini"), False),
                Request("/v1/chat/completions", _long_body("openai/gpt-4o-mini"), False))
    raise ValueError(f"unknown scenario {scenario!r}")


# -- child processes ----------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child if this script dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset -c cpu`` (taskset execs it: the pid stays the same)."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


class Children:
    """The processes this script started; :meth:`stop_all` ends each one by its pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str],
              log_path: Path, cpu: int | None = None, cwd: Path = REPO
              ) -> subprocess.Popen[bytes]:
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop_all()
        proc = subprocess.Popen(
            pinned(command, cpu), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.procs.append((name, proc, log))
        return proc

    def stop_all(self) -> None:
        for _name, proc, _log in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + 5
        for _name, proc, log in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()
        self.procs.clear()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_health(name: str, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Wait until ``GET /health`` answers 200 (relays forward it to the mock).

    Raises:
        RuntimeError: the process exited or did not come up in time.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}; log {log_path}:\n{tail}")
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer /health on port {port} within "
                       f"{START_TIMEOUT_S:.0f}s; log {log_path}")


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}


def gateway_env(upstream_port: int, port: int) -> dict[str, str]:
    """The gateway's environment: the mock upstream as ``openai``, production defaults
    (JSON access log at INFO, telemetry off)."""
    env = base_env()
    env.update({
        "OPENAI_API_URL": f"http://{HOST}:{upstream_port}/v1",
        "OPENAI_API_KEY": API_KEY,
        "SERVER_HOST": HOST,
        "SERVER_PORT": str(port),
        "ENVIRONMENT": "production",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def nginx_config(directory: Path, port: int, upstream_port: int) -> Path:
    """Write an nginx config: one worker, ``proxy_pass`` to the mock with keep-alive."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(f"""\
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # Request bodies stay in memory: the worker may not write the temp path (nginx run as
    # root drops its workers to nobody), and a file write per request is not the relay.
    client_body_buffer_size 1m;
    client_body_temp_path {directory}/tmp/body;
    proxy_temp_path {directory}/tmp/proxy;
    fastcgi_temp_path {directory}/tmp/fastcgi;
    uwsgi_temp_path {directory}/tmp/uwsgi;
    scgi_temp_path {directory}/tmp/scgi;
    upstream mock {{
        server {HOST}:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} backlog=1024;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
    return path


def wait_listeners(port: int, count: int) -> None:
    """Wait until ``count`` sockets listen on ``port`` (every ``--workers`` process is up),
    so that wrk's connections, made at its start, spread over all of them."""
    deadline = time.monotonic() + START_TIMEOUT_S
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        try:
            lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:
            return  # not Linux: nothing to count
        if sum(1 for line in lines if needle in line and line.split()[3] == "0A") >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {count} processes listen on port {port}")


# -- process statistics (Linux /proc) -------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's worker, igw's ``--workers``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, ()))
    return out


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds the processes have used so far, else None."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset each process's VmHWM to its current RSS (``clear_refs`` 5); False if refused."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_mb(pids: list[int]) -> float | None:
    """The largest VmHWM (peak resident set) of one of the processes, in MB."""
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if found:
            peaks.append(int(found.group(1)) / 1024)
    return round(max(peaks), 1) if peaks else None


# -- one request, checked ------------------------------------------------------


def check(port: int, request: Request) -> str:
    """Send ``request`` once and return ``"ok"`` or what is wrong with the answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", request.path, body=request.body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if response.status != 200:
        return f"status {response.status}: {body[:200].decode(errors='replace')}"
    if request.stream:
        events = [line for line in body.split(b"\n") if line.startswith(b"data:")]
        if not events or events[-1].strip() != b"data: [DONE]" or b'"usage"' not in body:
            return f"stream without usage or [DONE]: {body[-200:]!r}"
        if len(events) - 1 != STREAM_EVENTS:
            return f"{len(events) - 1} data events before [DONE], expected {STREAM_EVENTS}"
        return "ok"
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if not isinstance(parsed, dict) or "choices" not in parsed or "usage" not in parsed:
        return f"not a chat.completion: {body[:200]!r}"
    return "ok"


# -- load tools ----------------------------------------------------------------


@dataclass
class Load:
    """What a load tool measured."""

    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(output: str) -> Load:
    """Parse ``wrk --latency`` output: RPS, p50/p99 from the latency distribution, errors.

    Raises:
        ValueError: the output has no summary (wrk failed).
    """
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if rps is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    percentiles: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        percentiles[pct] = round(float(value) * _WRK_UNITS[unit], 3)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return Load(requests=int(total.group(1)), errors=errors, rps=float(rps.group(1)),
                p50_ms=percentiles.get("50", float("nan")),
                p99_ms=percentiles.get("99", float("nan")))


def _lua_string(data: bytes) -> str:
    text = data.decode()
    level = "=" * 4
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def wrk_script(request: Request, directory: Path) -> Path:
    """Write the Lua script that makes wrk send ``request``'s method, body and headers."""
    digest = hashlib.sha1(request.path.encode() + b"\0" + request.body).hexdigest()[:12]
    path = directory / f"request-{digest}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(request.body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
    )
    return path


class Runner:
    """Runs one load measurement with the chosen tool, in a separate process."""

    def __init__(self, tool: str, threads: int, scratch: Path) -> None:
        self.tool = tool
        self.threads = threads
        self.scratch = scratch

    def measure(self, port: int, request: Request, duration: float, connections: int,
                cpu: int | None) -> Load:
        """Warm up for a second, then measure for ``duration`` seconds, on ``cpu`` if set.

        Raises:
            RuntimeError: the load tool failed.
        """
        url = f"http://{HOST}:{port}{request.path}"
        if self.tool == "wrk":
            script = wrk_script(request, self.scratch)
            self._wrk(url, script, WARMUP_S, connections, cpu)
            return parse_wrk(self._wrk(url, script, duration, connections, cpu))
        return self._python(url, request, duration, connections, cpu)

    def _wrk(self, url: str, script: Path, duration: float, connections: int,
             cpu: int | None) -> str:
        seconds = max(1, round(duration))
        threads = max(1, min(self.threads, connections))
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                   "--timeout", f"{REQUEST_TIMEOUT_S:.0f}s", "-s", str(script), url]
        done = subprocess.run(pinned(command, cpu), capture_output=True, text=True,
                              timeout=seconds + REQUEST_TIMEOUT_S + 30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def _python(self, url: str, request: Request, duration: float, connections: int,
                cpu: int | None) -> Load:
        body_file = self.scratch / f"body-{hashlib.sha1(request.body).hexdigest()[:12]}.json"
        body_file.write_bytes(request.body)
        command = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--body-file",
                   str(body_file), "-H", f"Authorization: Bearer {API_KEY}",
                   "-c", str(connections), "-d", str(duration), "--warmup", str(WARMUP_S),
                   "--timeout", str(REQUEST_TIMEOUT_S), "--json"]
        done = subprocess.run(pinned(command, cpu), capture_output=True, text=True,
                              timeout=duration + WARMUP_S + 2 * REQUEST_TIMEOUT_S + 30,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr}")
        summary = json.loads(done.stdout)
        nan = float("nan")
        return Load(requests=summary["requests"], errors=summary["errors"], rps=summary["rps"],
                    p50_ms=nan if summary["p50_ms"] is None else summary["p50_ms"],
                    p99_ms=nan if summary["p99_ms"] is None else summary["p99_ms"])


# -- the run -----------------------------------------------------------------------


def _csv(value: str, allowed: tuple[str, ...], flag: str, *, empty: bool = False) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if bad or (not items and not empty):
        raise SystemExit(f"{flag}: expected a comma-separated subset of {','.join(allowed)}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark igw against nginx and a minimal Python relay (the floor).",
        epilog=f"wrk and nginx are used when installed; {_INSTALL}",
    )
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds measured per row and round (after a 1 s warm-up); "
                             "default 3")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per scenario, each measuring every target once, in "
                             "table order; the tables show the medians; default 3")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent keep-alive connections; default 64")
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads (default 1: the load generator gets one core)")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk if installed (auto), or the bundled loadgen.py")
    parser.add_argument("--pin", choices=("auto", "on", "off"), default="auto",
                        help="taskset pinning: target on one CPU, load and mock on another "
                             "(auto: when there are >= 2 CPUs and taskset)")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="targets besides direct: nginx,floor,standalone,asgi")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="scenarios: chat,stream,proxy,single,long")
    parser.add_argument("--extra", default="",
                        help="extra rows, off by default: rss (a chat row at "
                             "--rss-connections) and/or workers (--workers 2 vs 1, unpinned)")
    parser.add_argument("--rss-connections", type=int, default=256,
                        help="connections of the rss extra's chat row; default 256")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="another igw checkout (a git worktree of an older commit, "
                             "built in place) whose production row, igw-baseline, runs in "
                             "the same rounds: before/after in one run")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json",
                        help="JSON results file (default benchmarks/results/latest.json)")
    args = parser.parse_args(argv)
    args.groups = _csv(args.only, GROUPS, "--only", empty=True)
    args.scenario_list = _csv(args.scenarios, SCENARIOS, "--scenarios", empty=True)
    args.extras = _csv(args.extra, EXTRAS, "--extra", empty=True)
    if args.duration <= 0 or args.connections < 1 or args.rss_connections < 1:
        parser.error("--duration must be > 0 and connections >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def pick_tool(choice: str) -> str:
    """Return ``"wrk"`` or ``"python"`` for ``--tool``."""
    has_wrk = shutil.which("wrk") is not None
    if choice == "wrk" and not has_wrk:
        raise SystemExit(f"--tool wrk: wrk is not installed; {_INSTALL}")
    if choice == "auto":
        if not has_wrk:
            print(f"wrk not found, using benchmarks/loadgen.py ({_INSTALL})", file=sys.stderr)
        return "wrk" if has_wrk else "python"
    return choice


def pick_cpus(mode: str) -> tuple[int, int] | None:
    """(CPU for the target, CPU for the load generator and the mock), or None: unpinned."""
    if mode == "off":
        return None
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2 and shutil.which("taskset"):
        return cpus[0], cpus[1]
    if mode == "on":
        raise SystemExit("--pin on: needs taskset and at least 2 CPUs")
    return None


def build_kind(tree: Path = REPO) -> str:
    """How igw in ``tree`` runs its request path: ``compiled`` or ``pure Python``."""
    done = subprocess.run(
        [sys.executable, "-c", "from igw_io.compiled import build_kind; print(build_kind())"],
        cwd=tree, capture_output=True, text=True, timeout=60, check=False, env=base_env())
    return done.stdout.strip() or "unknown"


def commit_of(tree: Path) -> str:
    """The short commit ``tree`` has checked out, or ``"unknown"``."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "unknown"


def igw_variants(notes: list[str]) -> list[tuple[str, list[str], str | None]]:
    """(row name, extra flags, loop) for each parser/loop combination igw standalone has."""
    done = subprocess.run([sys.executable, "-m", "igw_standalone", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False,
                          env=base_env())
    https = ["httptools", "h11"] if "--http" in done.stdout else [None]
    loops = ["uvloop", "asyncio"] if "--loop" in done.stdout else [None]
    if https == [None] or loops == [None]:
        notes.append("igw standalone has no --http/--loop flags yet: one plain `igw` row "
                     "(its own defaults) per scenario, compared with the asyncio floor")
    out = []
    for http_ in https:
        for loop in loops:
            flags = (["--http", http_] if http_ else []) + (["--loop", loop] if loop else [])
            name = "-".join(["igw", *(part for part in (http_, loop) if part)])
            out.append((name, flags, loop))
    return out


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def table(results: list[Result]) -> str:
    """Return the rows as a markdown table."""
    lines = ["| scenario | target | conns | RPS | p50 ms | p99 ms | errors | peak RSS MB "
             "| CPU % | vs floor | vs best floor | vs nginx | vs 1 worker |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.target} | {r.connections} | {r.rps:.0f} | {_fmt(r.p50_ms)} "
            f"| {_fmt(r.p99_ms)} | {r.errors} | {_fmt(r.peak_rss_mb, 1)} "
            f"| {_fmt(r.server_cpu_pct, 0)} | {_fmt(r.vs_floor, 3, 'x')} "
            f"| {_fmt(r.vs_best_floor, 3, 'x')} | {_fmt(r.vs_nginx, 3, 'x')} "
            f"| {_fmt(r.vs_one_worker, 2, 'x')} |")
    return "\n".join(lines)


def single_table(results: list[Result]) -> str:
    """The ``single`` rows as added latency over ``direct``."""
    lines = ["| target | p50 ms | added p50 µs | added vs floor |",
             "| --- | ---: | ---: | ---: |"]
    for r in results:
        if r.scenario == "single":
            added = None if r.added_p50_ms is None else r.added_p50_ms * 1000
            lines.append(f"| {r.target} | {_fmt(r.p50_ms, 3)} | {_fmt(added, 0)} "
                         f"| {_fmt(r.added_vs_floor, 2, 'x')} |")
    return "\n".join(lines)


def add_ratios(rows: list[Result]) -> None:
    """Fill in the ratios of one scenario's rows: to the floor, the best floor, nginx."""
    floors = {r.loop: r for r in rows if r.kind == "floor"}
    nginx = next((r for r in rows if r.kind == "nginx"), None)
    direct = next((r for r in rows if r.kind == "direct"), None)
    best = max(floors.values(), key=lambda r: r.rps, default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b or a != a or b != b else round(a / b, 3)

    for r in rows:
        if r.kind in ("igw", "asgi"):
            floor = floors.get(r.loop or "asyncio")
            r.vs_floor = ratio(r.rps, floor.rps if floor else None)
            r.vs_best_floor = ratio(r.rps, best.rps if best else None)
        if r.kind in ("igw", "asgi", "floor"):
            r.vs_nginx = ratio(r.rps, nginx.rps if nginx else None)
        if r.scenario == "single" and direct is not None and r.kind != "direct":
            r.added_p50_ms = round(r.p50_ms - direct.p50_ms, 3)
    for r in rows:
        floor = floors.get(r.loop or "asyncio")
        if r.kind in ("igw", "asgi") and floor is not None and floor.added_p50_ms:
            r.added_vs_floor = ratio(r.added_p50_ms, floor.added_p50_ms)


def add_worker_ratio(rows: list[Result]) -> None:
    """Fill in ``igw-workers2``'s RPS / ``igw-workers1``'s, for one round's two rows."""
    if rows[0].rps:
        rows[1].vs_one_worker = round(rows[1].rps / rows[0].rps, 3)


def _median(values: Sequence[float | None], digits: int) -> float | None:
    """The median of the values that are not None or NaN, else None.

    A middle value is returned as measured; the mean of the two middle ones (an even
    count) is rounded to ``digits``.
    """
    kept = sorted(v for v in values if v is not None and v == v)
    if not kept:
        return None
    mid = len(kept) // 2
    return kept[mid] if len(kept) % 2 else round((kept[mid - 1] + kept[mid]) / 2, digits)


def _median_nan(values: Sequence[float], digits: int) -> float:
    """:func:`_median`, with NaN (no successful request in any round) instead of None."""
    found = _median(values, digits)
    return float("nan") if found is None else found


def summarize(rounds: list[list[Result]]) -> list[Result]:
    """One row per target from its rows of every round (``rounds[i]``: round i + 1's rows).

    RPS, p50, p99 and CPU % are the medians over the rounds, errors and requests the sums,
    peak RSS the largest, the check ``"ok"`` only if every round's was (else the first
    other verdict), and each ratio the median of the target's per-round ratios. With one
    round the rows come back unchanged.
    """
    out = []
    for first in rounds[0]:
        rows = [r for rows_ in rounds for r in rows_ if r.target == first.target]
        verdicts = [r.check for r in rows if r.check != "ok"]
        out.append(replace(
            first,
            rps=_median_nan([r.rps for r in rows], 1),
            p50_ms=_median_nan([r.p50_ms for r in rows], 3),
            p99_ms=_median_nan([r.p99_ms for r in rows], 3),
            errors=sum(r.errors for r in rows),
            requests=sum(r.requests for r in rows),
            peak_rss_mb=max((r.peak_rss_mb for r in rows if r.peak_rss_mb is not None),
                            default=None),
            server_cpu_pct=_median([r.server_cpu_pct for r in rows], 1),
            check=verdicts[0] if verdicts else "ok",
            vs_floor=_median([r.vs_floor for r in rows], 3),
            vs_best_floor=_median([r.vs_best_floor for r in rows], 3),
            vs_nginx=_median([r.vs_nginx for r in rows], 3),
            added_p50_ms=_median([r.added_p50_ms for r in rows], 3),
            added_vs_floor=_median([r.added_vs_floor for r in rows], 3),
            vs_one_worker=_median([r.vs_one_worker for r in rows], 3),
        ))
    return out


def _json_row(result: Result) -> dict[str, Any]:
    """``result`` as a JSON object, with NaN (no successful request) as ``null``."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in asdict(result).items()}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    from importlib import metadata

    for name in ("h11", "httpcore", "anyio", "uvicorn", "uvloop", "httptools"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    for tool, flag in (("wrk", "-v"), ("nginx", "-v")):
        if shutil.which(tool):
            done = subprocess.run([tool, flag], capture_output=True, text=True, check=False,
                                  timeout=10)
            text = (done.stdout or done.stderr).strip()
            out[tool] = text.splitlines()[0] if text else None
    return out


@dataclass
class Bench:
    """Everything one run shares: processes, load runner, pinning, notes."""

    args: argparse.Namespace
    children: Children
    runner: Runner
    cpus: tuple[int, int] | None
    scratch: Path
    notes: list[str] = field(default_factory=list)
    #: One summary row per target and scenario (:func:`summarize`), in table order.
    results: list[Result] = field(default_factory=list)
    #: Every measured row with its round number (1-based), in measuring order.
    round_rows: list[tuple[int, Result]] = field(default_factory=list)
    upstream_port: int = 0

    @property
    def target_cpu(self) -> int | None:
        return self.cpus[0] if self.cpus else None

    @property
    def load_cpu(self) -> int | None:
        return self.cpus[1] if self.cpus else None

    def start(self, name: str, kind: str, loop: str | None, command: list[str],
              env: dict[str, str], port: int, *, cpu: int | None, cwd: Path = REPO
              ) -> Target:
        log_path = RESULTS / f"{name}.log"
        proc = self.children.start(name, command, env, log_path, cpu, cwd)
        wait_health(name, proc, port, log_path)
        return Target(name, kind, loop, port, proc)

    def start_targets(self) -> list[Target]:
        """Start the mock and every target the run measures, in table order."""
        args, cpu = self.args, self.target_cpu
        self.upstream_port = up = free_port()
        targets = [self.start("upstream", "direct", None,
                              [sys.executable, str(HERE / "upstream.py"), "--host", HOST,
                               "--port", str(up)], base_env(), up, cpu=self.load_cpu)]
        targets[0].name = "direct"
        if "nginx" in args.groups:
            if shutil.which("nginx") is None:
                self.notes.append(f"nginx row skipped: nginx is not installed ({_INSTALL})")
            else:
                port = free_port()
                directory = self.scratch / "nginx"
                conf = nginx_config(directory, port, up)
                targets.append(self.start(
                    "nginx", "nginx", None,
                    ["nginx", "-p", str(directory), "-e", str(directory / "error.log"),
                     "-c", str(conf), "-g", "daemon off;"], base_env(), port, cpu=cpu))
        if "floor" in args.groups:
            for floor_loop in ("asyncio", "uvloop"):
                if floor_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
                    self.notes.append("floor-uvloop skipped: uvloop is not installed")
                    continue
                port = free_port()
                name = "floor" if floor_loop == "asyncio" else "floor-uvloop"
                targets.append(self.start(
                    name, "floor", floor_loop,
                    [sys.executable, str(HERE / "floor.py"), "--port", str(port),
                     "--upstream", f"{HOST}:{up}", "--loop", floor_loop], base_env(), port,
                    cpu=cpu))
        if "standalone" in args.groups:
            for name, flags, loop in igw_variants(self.notes):
                port = free_port()
                targets.append(self.start(name, "igw", loop,
                                          [sys.executable, "-m", "igw_standalone", *flags],
                                          gateway_env(up, port), port, cpu=cpu))
            kind = build_kind()
            self.notes.append(f"igw rows: request path {kind}")
            if kind == "compiled":  # the same engine on the sources, for comparison
                port = free_port()
                env = gateway_env(up, port)
                env["IGW_PURE_PYTHON"] = "1"
                targets.append(self.start(
                    "igw-httptools-uvloop-pure", "igw", "uvloop",
                    [sys.executable, "-m", "igw_standalone", "--http", "httptools", "--loop",
                     "uvloop"], env, port, cpu=cpu))
        if args.baseline is not None:
            # ``python -m`` puts the working directory first on sys.path: the tree's igw.
            tree = args.baseline.resolve()
            port = free_port()
            baseline = self.start(
                "igw-baseline", "igw", "uvloop",
                [sys.executable, "-m", "igw_standalone", "--http", "httptools", "--loop",
                 "uvloop"], gateway_env(up, port), port, cpu=cpu, cwd=tree)
            # Right after the row it is compared with: a few seconds apart in every round.
            names = [t.name for t in targets]
            at = names.index(_PRODUCTION) + 1 if _PRODUCTION in names else len(targets)
            targets.insert(at, baseline)
            self.notes.append(f"igw-baseline: {tree} at commit {commit_of(tree)}, request "
                              f"path {build_kind(tree)}, --http httptools --loop uvloop")
        if "asgi" in args.groups:
            port = free_port()
            targets.append(self.start(
                "asgi-uvicorn", "asgi", "uvloop",
                [sys.executable, "-m", "uvicorn", "igw_asgi:app", "--host", HOST, "--port",
                 str(port), "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
                 "--http", "httptools"], gateway_env(up, port), port, cpu=cpu))
        return targets

    def row(self, scenario: str, target: Target, request: Request, connections: int,
            *, load_cpu: int | None, duration: float | None = None,
            round_number: int = 1) -> Result:
        """Check, then measure one target: load, CPU and peak RSS of its process tree.

        ``round_number`` only labels the progress and warning lines (with more than one
        round).
        """
        rounds = self.args.rounds
        label = f"round {round_number}/{rounds} " if rounds > 1 else ""
        verdict = check(target.port, request)
        if verdict != "ok":
            print(f"WARNING {label}{scenario}/{target.name}: check failed: {verdict}",
                  file=sys.stderr)
        pids = process_tree(target.proc.pid)
        if not reset_peak_rss(pids):
            self.note_once("peak RSS is since process start (could not reset VmHWM)")
        before = cpu_seconds(pids)
        started = time.monotonic()
        load = self.runner.measure(target.port, request, duration or self.args.duration,
                                   connections, load_cpu)
        wall = time.monotonic() - started
        after = cpu_seconds(pids)
        cpu = None if before is None or after is None else 100 * (after - before) / wall
        result = Result(scenario, target.name, target.kind, target.loop, connections,
                        load_cpu is not None, self.runner.tool, round(load.rps, 1),
                        load.p50_ms, load.p99_ms, load.errors, load.requests,
                        peak_rss_mb(pids), None if cpu is None else round(cpu, 1), verdict)
        print(f"  {label}{scenario:<9} {target.name:<22} {load.rps:>8.0f} rps  p50 "
              f"{_fmt(load.p50_ms, 3)} ms  p99 {_fmt(load.p99_ms)} ms  errors {load.errors}  "
              f"rss {_fmt(result.peak_rss_mb, 1)} MB  cpu {_fmt(result.server_cpu_pct, 0)}%",
              file=sys.stderr)
        time.sleep(0.3)
        return result

    def note_once(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def measure_rounds(self, scenario: str, jobs: list[tuple[Target, Request]],
                       connections: int, *, load_cpu: int | None,
                       ratios: Callable[[list[Result]], None] = add_ratios) -> None:
        """Measure each (target, request) once per round, in order, ``--rounds`` times.

        ``ratios`` fills in each round's ratios from that round's rows alone; the rows go to
        :attr:`round_rows` and one summary row per target (:func:`summarize`) to
        :attr:`results`.
        """
        rounds = []
        for number in range(1, self.args.rounds + 1):
            rows = [self.row(scenario, target, request, connections, load_cpu=load_cpu,
                             round_number=number) for target, request in _in_turn(jobs, number)]
            ratios(rows)
            self.round_rows += [(number, r) for r in rows]
            rounds.append(rows)
        self.results += summarize(rounds)
        self.compare_baseline(scenario, rounds)

    def compare_baseline(self, scenario: str, rounds: list[list[Result]]) -> None:
        """Note the per-round requests/s of the production row over ``igw-baseline``'s."""
        quotients = []
        for rows in rounds:
            rps = {r.target: r.rps for r in rows}
            after, before = rps.get(_PRODUCTION), rps.get("igw-baseline")
            if after and before:
                quotients.append(after / before)
        if quotients:
            above = sum(q > 1 for q in quotients)
            self.notes.append(
                f"{scenario}: {_PRODUCTION} over igw-baseline, requests/s per round: median "
                f"{statistics.median(quotients):.2f}x, higher in {above} of {len(quotients)} "
                "rounds")

    def main_rows(self, targets: list[Target]) -> None:
        """Every scenario's rows: ``direct`` and every target, ``--rounds`` times."""
        for scenario in self.args.scenario_list:
            direct_request, relayed_request = scenario_requests(scenario)
            connections = 1 if scenario == "single" else self.args.connections
            self.measure_rounds(scenario, [(t, direct_request if t.kind == "direct"
                                            else relayed_request) for t in targets],
                                connections, load_cpu=self.load_cpu)

    def rss_rows(self, targets: list[Target]) -> None:
        """A chat row at --rss-connections for the floors and every igw standalone row."""
        _, request = scenario_requests("chat")
        n = self.args.rss_connections
        self.measure_rounds(f"chat-c{n}", [(t, request) for t in targets
                                           if t.kind in ("floor", "igw")],
                            n, load_cpu=self.load_cpu)

    def workers_rows(self) -> None:
        """igw standalone --workers 1 and 2, unpinned, with the load on the same cores.

        Both run for all the rounds (the idle one waits), so each round measures them
        back to back; ``vs 1 worker`` is the median of the per-round ratios.
        """
        _, request = scenario_requests("chat")
        targets = []
        for workers in (1, 2):
            port = free_port()
            targets.append(self.start(f"igw-workers{workers}", "igw", None,
                                      [sys.executable, "-m", "igw_standalone", "--workers",
                                       str(workers)], gateway_env(self.upstream_port, port),
                                      port, cpu=None))
            wait_listeners(port, workers)
        self.measure_rounds("chat-workers", [(t, request) for t in targets],
                            self.args.connections, load_cpu=None, ratios=add_worker_ratio)
        for target in targets:
            target.proc.terminate()
            target.proc.wait(timeout=15)
        self.notes.append("workers rows are unpinned: wrk, the mock and the workers share "
                          f"all {os.cpu_count()} cores, so 2 workers cannot reach 2x here")


def _in_turn(jobs: list[tuple[Target, Request]], number: int) -> list[tuple[Target, Request]]:
    """``jobs`` in measuring order for round ``number``: in even rounds ``igw-baseline``
    goes before the production row instead of after it, so that neither gains from
    always going second (a process measured right after another one can run faster)."""
    names = [target.name for target, _ in jobs]
    if number % 2 or _PRODUCTION not in names or "igw-baseline" not in names:
        return jobs
    at, base = names.index(_PRODUCTION), names.index("igw-baseline")
    if base != at + 1:
        return jobs
    swapped = list(jobs)
    swapped[at], swapped[base] = jobs[base], jobs[at]
    return swapped


def run(args: argparse.Namespace, children: Children) -> Bench:
    """Start everything, measure every row, return the bench with its results."""
    tool = pick_tool(args.tool)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for module in ("igw_standalone", "igw_asgi", "httptools"):
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"{module} is not importable: run `pip install -e .` first")
    cpus = pick_cpus(args.pin)
    with tempfile.TemporaryDirectory(prefix="igw-bench-") as scratch:
        bench = Bench(args, children, Runner(tool, args.threads, Path(scratch)), cpus,
                      Path(scratch))
        if cpus:
            bench.notes.append(f"pinned with taskset: the target under test on CPU {cpus[0]}, "
                               f"the load generator ({tool}) and the mock upstream on CPU "
                               f"{cpus[1]}; idle targets wait on CPU {cpus[0]}")
        else:
            bench.notes.append("not pinned: the load generator, the mock and the target "
                               "share every core")
        if args.rounds > 1:
            bench.notes.append(f"each row: median of {args.rounds} interleaved rounds; ratios "
                               "are medians of the per-round ratios")
        try:
            targets = bench.start_targets()
            rounds = f" rounds={args.rounds}" if args.rounds > 1 else ""
            print(f"tool={tool} duration={args.duration:g}s{rounds} "
                  f"connections={args.connections} "
                  f"targets={','.join(t.name for t in targets)}", file=sys.stderr)
            bench.main_rows(targets)
            if "rss" in args.extras:
                bench.rss_rows(targets)
            if "workers" in args.extras:
                bench.workers_rows()
        finally:
            children.stop_all()  # before nginx's config directory goes away
    return bench


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables, write the JSON results."""
    args = parse_args(argv)
    children = Children()
    atexit.register(children.stop_all)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"interrupted by {signal.Signals(signum).name}, stopping", file=sys.stderr)
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.time()
    try:
        bench = run(args, children)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted, stopping", file=sys.stderr)
        sys.exit(130)
    finally:
        children.stop_all()
    results = bench.results
    print(table(results))
    if any(r.scenario == "single" for r in results):
        print("\nOne connection (added latency over direct's p50):\n")
        print(single_table(results))
    failed = [r for r in results if r.check != "ok"]
    for r in failed:
        if args.rounds == 1:
            bench.notes.append(f"{r.scenario}/{r.target} failed its check before the run: "
                               f"{r.check}")
            continue
        count = sum(1 for _, row in bench.round_rows if row.scenario == r.scenario
                    and row.target == r.target and row.check != "ok")
        bench.notes.append(f"{r.scenario}/{r.target} failed its check before {count} of "
                           f"{args.rounds} rounds: {r.check}")
    print()
    for note in [*bench.notes,
                 f"stream: the mock sends {STREAM_EVENTS} data events + [DONE] per response",
                 f"elapsed {time.time() - started:.0f}s"]:
        print(f"note: {note}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "elapsed_s": round(time.time() - started, 1),
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": WARMUP_S,
            "connections": args.connections,
            "threads": args.threads,
            "tool": results[0].tool if results else None,
            "pinned_cpus": {"target": bench.cpus[0], "load_and_mock": bench.cpus[1]}
            if bench.cpus else None,
            "stream_events": STREAM_EVENTS,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
            "notes": bench.notes,
            "logs": str(RESULTS),
        },
        "results": [_json_row(r) for r in results],
        "rounds": [{"round": number, **_json_row(r)} for number, r in bench.round_rows],
    }, indent=2, allow_nan=False) + "\n")
    print(f"\nJSON: {args.output}", file=sys.stderr)
    if any(r.errors for r in results) or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
