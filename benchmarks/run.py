"""Benchmark the gateway's hot path against a fast mock upstream, on 127.0.0.1 only.

Starts ``benchmarks/upstream.py``, the standalone gateway (``python -m
igw_standalone``) and the ASGI app under uvicorn, then for each scenario
(non-streaming chat, streaming chat, ``/proxy``) measures the same load sent
straight to the upstream and through each frontend, and prints a markdown
table. Results also go to ``benchmarks/results/latest.json``.

Usage::

    python benchmarks/run.py [--duration 10] [--connections 32] [--tool auto|wrk|python]
                             [--only standalone,asgi] [--scenarios chat,stream,proxy]

The load comes from ``wrk`` when it is installed (``apt-get install -y wrk``),
otherwise from the bundled ``benchmarks/loadgen.py``; either runs in its own
process. Every child process is stopped when this script ends, fails or is
interrupted, and every run is bounded in time.
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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
HOST = "127.0.0.1"
API_KEY = "sk-bench"
FRONTENDS = ("standalone", "asgi")
SCENARIOS = ("chat", "stream", "proxy")
WARMUP_S = 1.0
START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
#: Environment passed through to the children; everything else is left out so a
#: developer's own gateway settings (AUTH_ENABLE, MCP_SERVERS...) do not leak in.
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
_INSTALL_WRK = "install it with: apt-get update && apt-get install -y wrk"

_MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]


@dataclass(frozen=True)
class Request:
    """One request that a load run repeats."""

    path: str
    body: bytes
    stream: bool


@dataclass
class Result:
    """One measured row."""

    scenario: str
    target: str
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    ratio: float | None
    server_cpu_pct: float | None
    check: str


def _body(model: str, *, stream: bool) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": _MESSAGES}
    if stream:
        obj["stream"] = True
        obj["stream_options"] = {"include_usage": True}
    return json.dumps(obj, separators=(",", ":")).encode()


def scenario_requests(scenario: str) -> tuple[Request, Request]:
    """Return (request to the upstream directly, request to the gateway) for ``scenario``."""
    if scenario == "chat":
        return (Request("/v1/chat/completions", _body("gpt-4o-mini", stream=False), False),
                Request("/v1/chat/completions", _body("openai/gpt-4o-mini", stream=False), False))
    if scenario == "stream":
        return (Request("/v1/chat/completions", _body("gpt-4o-mini", stream=True), True),
                Request("/v1/chat/completions", _body("openai/gpt-4o-mini", stream=True), True))
    if scenario == "proxy":
        direct = Request("/v1/chat/completions", _body("gpt-4o-mini", stream=False), False)
        return direct, Request("/proxy/openai/v1/chat/completions", direct.body, False)
    raise ValueError(f"unknown scenario {scenario!r}")


# -- child processes ----------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child if this script dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """The processes this script started; :meth:`stop_all` ends each one by its pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str],
              log_path: Path) -> subprocess.Popen[bytes]:
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop_all()
        proc = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
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
    """Wait until ``GET /health`` answers 200.

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


def gateway_env(upstream_port: int, port: int) -> dict[str, str]:
    """The gateway's environment: the mock upstream as ``openai``, production logging."""
    env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
    env.update({
        "OPENAI_API_URL": f"http://{HOST}:{upstream_port}/v1",
        "OPENAI_API_KEY": API_KEY,
        "SERVER_HOST": HOST,
        "SERVER_PORT": str(port),
        "ENVIRONMENT": "production",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


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
        if not body.rstrip().endswith(b"data: [DONE]") or b'"usage"' not in body:
            return f"stream without usage or [DONE]: {body[-200:]!r}"
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

    def __init__(self, tool: str, connections: int, threads: int, scratch: Path) -> None:
        self.tool = tool
        self.connections = connections
        self.threads = max(1, min(threads, connections))
        self.scratch = scratch

    def measure(self, port: int, request: Request, duration: float) -> Load:
        """Warm up for a second, then measure for ``duration`` seconds.

        Raises:
            RuntimeError: the load tool failed.
        """
        url = f"http://{HOST}:{port}{request.path}"
        if self.tool == "wrk":
            script = wrk_script(request, self.scratch)
            self._wrk(url, script, WARMUP_S)
            return parse_wrk(self._wrk(url, script, duration))
        return self._python(url, request, duration)

    def _wrk(self, url: str, script: Path, duration: float) -> str:
        seconds = max(1, round(duration))
        command = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s",
                   "--latency", "--timeout", f"{REQUEST_TIMEOUT_S:.0f}s", "-s", str(script), url]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + REQUEST_TIMEOUT_S + 30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def _python(self, url: str, request: Request, duration: float) -> Load:
        body_file = self.scratch / f"body-{hashlib.sha1(request.body).hexdigest()[:12]}.json"
        body_file.write_bytes(request.body)
        command = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--body-file",
                   str(body_file), "-H", f"Authorization: Bearer {API_KEY}",
                   "-c", str(self.connections), "-d", str(duration), "--warmup", str(WARMUP_S),
                   "--timeout", str(REQUEST_TIMEOUT_S), "--json"]
        done = subprocess.run(command, capture_output=True, text=True,
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


def _csv(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if bad or not items:
        raise SystemExit(f"{flag}: expected a comma-separated subset of {','.join(allowed)}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark igw (standalone and ASGI) against a mock upstream.",
        epilog=f"wrk is used when installed; {_INSTALL_WRK}",
    )
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds measured per row (after a 1 s warm-up); default 10")
    parser.add_argument("--connections", type=int, default=32,
                        help="concurrent keep-alive connections; default 32")
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads (default 1: the machine has few cores)")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk if installed (auto), or the bundled loadgen.py")
    parser.add_argument("--only", default=",".join(FRONTENDS),
                        help="frontends to measure: standalone,asgi")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="scenarios: chat,stream,proxy")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json",
                        help="JSON results file (default benchmarks/results/latest.json)")
    args = parser.parse_args(argv)
    args.frontends = _csv(args.only, FRONTENDS, "--only")
    args.scenario_list = _csv(args.scenarios, SCENARIOS, "--scenarios")
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be > 0 and --connections >= 1")
    return args


def pick_tool(choice: str) -> str:
    """Return ``"wrk"`` or ``"python"`` for ``--tool``."""
    has_wrk = shutil.which("wrk") is not None
    if choice == "wrk" and not has_wrk:
        raise SystemExit(f"--tool wrk: wrk is not installed; {_INSTALL_WRK}")
    if choice == "auto":
        if not has_wrk:
            print(f"wrk not found, using benchmarks/loadgen.py ({_INSTALL_WRK})",
                  file=sys.stderr)
        return "wrk" if has_wrk else "python"
    return choice


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check


def table(results: list[Result]) -> str:
    """Return the results as a markdown table."""
    lines = ["| scenario | target | RPS | p50 ms | p99 ms | errors | ratio vs direct "
             "| server CPU % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3f}x"
        cpu = "n/a" if r.server_cpu_pct is None else f"{r.server_cpu_pct:.0f}"
        lines.append(f"| {r.scenario} | {r.target} | {r.rps:.0f} | {_fmt(r.p50_ms)} | "
                     f"{_fmt(r.p99_ms)} | {r.errors} | {ratio} | {cpu} |")
    return "\n".join(lines)


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
    if shutil.which("wrk"):
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False,
                              timeout=10)
        out["wrk"] = (done.stdout or done.stderr).splitlines()[0] if (
            done.stdout or done.stderr) else None
    return out


def run(args: argparse.Namespace, children: Children) -> list[Result]:
    """Start everything, measure every (scenario, target), return the rows."""
    tool = pick_tool(args.tool)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for frontend in args.frontends:
        module = "igw_standalone" if frontend == "standalone" else "igw_asgi"
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"{module} is not importable: run `pip install -e .` first")

    upstream_port = free_port()
    upstream_log = RESULTS / "upstream.log"
    upstream = children.start(
        "upstream", [sys.executable, str(HERE / "upstream.py"), "--host", HOST,
                     "--port", str(upstream_port)],
        {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}, upstream_log)
    wait_health("upstream", upstream, upstream_port, upstream_log)

    targets: dict[str, tuple[int, subprocess.Popen[bytes]]] = {"direct": (upstream_port,
                                                                          upstream)}
    for frontend in args.frontends:
        port = free_port()
        env = gateway_env(upstream_port, port)
        if frontend == "standalone":
            command = [sys.executable, "-m", "igw_standalone"]
        else:
            command = [sys.executable, "-m", "uvicorn", "igw_asgi:app", "--host", HOST,
                       "--port", str(port), "--no-access-log", "--log-level", "warning"]
        log_path = RESULTS / f"{frontend}.log"
        proc = children.start(frontend, command, env, log_path)
        wait_health(frontend, proc, port, log_path)
        targets[frontend] = (port, proc)

    print(f"tool={tool} duration={args.duration:g}s connections={args.connections} "
          f"scenarios={','.join(args.scenario_list)} frontends={','.join(args.frontends)}",
          file=sys.stderr)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="igw-bench-") as scratch:
        runner = Runner(tool, args.connections, args.threads, Path(scratch))
        for scenario in args.scenario_list:
            direct_request, gateway_request = scenario_requests(scenario)
            direct_rps: float | None = None
            for target, (port, proc) in targets.items():
                request = direct_request if target == "direct" else gateway_request
                verdict = check(port, request)
                if verdict != "ok":
                    print(f"WARNING {scenario}/{target}: check failed: {verdict}",
                          file=sys.stderr)
                before = cpu_seconds(proc.pid)
                started = time.monotonic()
                load = runner.measure(port, request, args.duration)
                wall = time.monotonic() - started
                after = cpu_seconds(proc.pid)
                cpu = None if before is None or after is None else 100 * (after - before) / wall
                if target == "direct":
                    direct_rps = load.rps
                ratio = load.rps / direct_rps if direct_rps else None
                row = Result(scenario, target, tool, round(load.rps, 1), load.p50_ms,
                             load.p99_ms, load.errors, load.requests,
                             None if ratio is None else round(ratio, 3),
                             None if cpu is None else round(cpu, 1), verdict)
                results.append(row)
                print(f"  {scenario:<7} {target:<10} {load.rps:>9.0f} rps  p50 "
                      f"{_fmt(load.p50_ms)} ms  p99 {_fmt(load.p99_ms)} ms  "
                      f"errors {load.errors}", file=sys.stderr)
                time.sleep(0.3)
    return results


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write the JSON results."""
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
        results = run(args, children)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted, stopping", file=sys.stderr)
        sys.exit(130)
    finally:
        children.stop_all()
    print(table(results))
    failed = [r for r in results if r.check != "ok"]
    for r in failed:
        print(f"\nnote: {r.scenario}/{r.target} failed its check before the run: {r.check}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": args.duration,
            "warmup_s": WARMUP_S,
            "connections": args.connections,
            "threads": args.threads,
            "tool": results[0].tool if results else None,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": _versions(),
            "logs": str(RESULTS),
        },
        "results": [_json_row(r) for r in results],
    }, indent=2, allow_nan=False) + "\n")
    print(f"\nJSON: {args.output}", file=sys.stderr)
    if any(r.errors for r in results) or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
