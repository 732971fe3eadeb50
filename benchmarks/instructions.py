"""Instructions per request: a CPU cost that does not move with the machine's mood.

On a shared VM the same build measured a minute apart differs by 30-45% in requests/s
and even in CPU time per request. The number of user-space instructions a request takes
does not: this script runs the target under valgrind's callgrind with instrumentation
off, warms it up, switches instrumentation on (``callgrind_control -i on``) for a fixed
number of requests, dumps, and divides. Kernel work (the socket system calls) is not
counted; compare it from ``run.py``'s CPU column.

Targets: ``igw`` (standalone, production defaults, from ``--tree``: a checkout, so one
run can measure an older commit in a ``git worktree``) or ``floor`` (``floor.py`` on
uvloop). ``--connections 1`` sends requests one at a time from this process;
``--connections 64`` runs wrk against the target (needs wrk) for ``--seconds`` and
divides by the requests wrk completed.

Usage::

    python benchmarks/instructions.py [--target igw|floor] [--scenario chat|stream|proxy|long]
                                      [--connections 1|N] [--requests 300] [--tree PATH]
                                      [--pure]

Needs ``valgrind`` (``apt-get install -y valgrind``); takes 10-30 s per run.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run  # benchmarks/run.py: this script's directory is first on sys.path

HERE = Path(__file__).resolve().parent

def send(port: int, request: run.Request, count: int) -> None:
    """Send ``count`` requests one at a time on one keep-alive connection.

    Raises:
        RuntimeError: an answer was not a 200.
    """
    conn = http.client.HTTPConnection(run.HOST, port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {run.API_KEY}"}
    try:
        for _ in range(count):
            conn.request("POST", request.path, body=request.body, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}: {body[:200]!r}")
    finally:
        conn.close()


def wrk(port: int, request: run.Request, seconds: float, connections: int,
        scratch: Path) -> int:
    """Run wrk against the target; return the requests it completed.

    Raises:
        RuntimeError: wrk failed or saw errors.
    """
    script = run.wrk_script(request, scratch)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s", "-s",
         str(script), f"http://{run.HOST}:{port}{request.path}"],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()}")
    load = run.parse_wrk(done.stdout)
    if load.errors:
        raise RuntimeError(f"wrk saw {load.errors} errors")
    return int(load.requests)


def dumped_instructions(directory: Path) -> int:
    """Return the instruction count of the dump that ``callgrind_control -d`` wrote.

    Raises:
        RuntimeError: no dump was found.
    """
    for path in directory.glob("callgrind.out*"):
        text = path.read_text(errors="replace")
        if "Trigger: dump" in text:
            found = re.search(r"^summary: (\d+)$", text, re.MULTILINE)
            if found:
                return int(found.group(1))
    raise RuntimeError(f"no callgrind dump in {directory}")


#: The functions a --segments run dumps before: uvloop's socket write and the poll.
_WRITE = "__pyx_f_6uvloop_4loop_8UVStream__try_write"
_POLL = "epoll_pwait"

#: The four parts of a request at one connection, in the order they happen.
SEGMENTS = (
    ("request", "the request read, decided and written upstream (poll to upstream write)"),
    ("upstream wait", "after the upstream write, until the loop polls"),
    ("response", "the response read, relayed and written (poll to client write)"),
    ("after", "after the client write, until the loop polls (the next request may wait)"),
)


def segments(directory: Path) -> dict[str, list[int]]:
    """Split the instructions of a ``--segments`` run at each socket write and poll.

    The dumps come in the order the run wrote them; each holds the instructions since
    the one before. The first write after instrumentation starts is a request's
    upstream write (the client sends one request at a time), then writes alternate.
    Work the loop schedules with ``call_soon`` lands after the next poll.
    """
    dumps = []
    for path in directory.glob("callgrind.out.*"):
        text = path.read_text(errors="replace")
        found = re.search(r"^desc: Trigger: --dump-before=(\S+)", text, re.MULTILINE)
        counted = re.search(r"^(?:summary|totals): (\d+)$", text, re.MULTILINE)
        if found and counted:
            dumps.append((int(path.name.rsplit(".", 1)[1]), found.group(1),
                          int(counted.group(1))))
    dumps.sort()
    parts: dict[str, list[int]] = {name: [] for name, _ in SEGMENTS}
    writes = 0  # socket writes so far: odd after an upstream write, even after a client's
    polled = True
    current = 0
    for _, trigger, total in dumps:
        if writes == 0:  # before the first upstream write: not a whole segment
            if trigger == _WRITE:
                writes, polled = 1, False
            continue
        current += total
        if trigger == _WRITE:
            parts["response" if writes % 2 == 1 else "request"].append(current)
            writes += 1
            polled, current = False, 0
        elif not polled:
            parts["upstream wait" if writes % 2 == 1 else "after"].append(current)
            polled, current = True, 0
    return parts


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description="user-space instructions per request")
    parser.add_argument("--target", choices=("igw", "floor"), default="igw")
    parser.add_argument("--scenario", choices=("chat", "stream", "proxy", "long"),
                        default="chat")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300,
                        help="measured requests at one connection; default 300")
    parser.add_argument("--seconds", type=float, default=10,
                        help="measured seconds of wrk load with --connections > 1")
    parser.add_argument("--tree", type=Path, default=run.REPO,
                        help="the igw checkout to run (default: this one)")
    parser.add_argument("--pure", action="store_true",
                        help="run igw's sources even where it is compiled (IGW_PURE_PYTHON=1)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the callgrind dump here, for callgrind_annotate")
    parser.add_argument("--segments", action="store_true",
                        help="also split each request at its socket writes and polls "
                             "(one connection, uvloop): where the critical path goes")
    args = parser.parse_args()
    if args.segments and args.connections != 1:
        parser.error("--segments needs --connections 1")
    for tool in ("valgrind", "callgrind_control") + (("wrk",) if args.connections > 1 else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y valgrind wrk)")
    children = run.Children()
    atexit.register(children.stop_all)
    cpus = run.pick_cpus("auto")
    if cpus:
        os.sched_setaffinity(0, {cpus[1]})  # this process, the mock and wrk
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    _, request = run.scenario_requests(args.scenario)
    if args.target == "floor" and args.scenario not in ("chat", "long"):
        _, request = run.scenario_requests("chat")
    with tempfile.TemporaryDirectory(prefix="igw-instructions-") as scratch_dir:
        scratch = Path(scratch_dir)
        up = run.free_port()
        upstream = children.start("upstream", [sys.executable, str(HERE / "upstream.py"),
                                               "--port", str(up)], run.base_env(),
                                  run.RESULTS / "instructions-upstream.log")
        run.wait_health("upstream", upstream, up, run.RESULTS / "instructions-upstream.log")
        port = run.free_port()
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={scratch}/callgrind.out"]
        if args.segments:
            valgrind += [f"--dump-before={_WRITE}", f"--dump-before={_POLL}"]
        log = run.RESULTS / f"instructions-{args.target}.log"
        if args.target == "igw":
            env = run.gateway_env(up, port)
            env["PYTHONPATH"] = str(args.tree.resolve())
            if args.pure:
                env["IGW_PURE_PYTHON"] = "1"
            # -P: no cwd first on sys.path, so PYTHONPATH (the tree) decides what runs.
            command = [*valgrind, sys.executable, "-P", "-m", "igw_standalone"]
        else:
            env = run.base_env()
            command = [*valgrind, sys.executable, str(HERE / "floor.py"), "--port", str(port),
                       "--upstream", f"{run.HOST}:{up}", "--loop", "uvloop"]
        target = children.start(args.target, command, env, log, cpus[0] if cpus else None)
        deadline = time.monotonic() + 120  # valgrind starts Python slowly
        while True:
            try:
                send(port, request, 1)
                break
            except OSError:
                if time.monotonic() > deadline or target.poll() is not None:
                    raise SystemExit(f"{args.target} did not start; see {log}") from None
                time.sleep(0.5)
        send(port, request, 200)  # warm-up
        control(target.pid, "-i", "on")
        if args.connections == 1:
            send(port, request, args.requests)
            served = args.requests
        else:  # every request wrk completed was served inside the instrumented window
            served = wrk(port, request, args.seconds, args.connections, scratch)
        if args.segments:
            control(target.pid, "-i", "off")
        control(target.pid, "-d")
        time.sleep(1)
        children.stop_all()
        parts = segments(scratch) if args.segments else {}
        total = (sum(sum(values) for values in parts.values()) if args.segments
                 else dumped_instructions(scratch))
        if args.keep is not None:
            for path in scratch.glob("callgrind.out*"):
                if "Trigger: dump" in path.read_text(errors="replace"):
                    shutil.copy(path, args.keep)
    where = f" ({args.tree}{', pure Python' if args.pure else ''})" if args.target == "igw" else ""
    print(f"{args.target}{where}, {args.scenario}, {args.connections} connection(s): "
          f"{served} requests, {total / served:,.0f} instructions per request")
    for name, meaning in SEGMENTS:
        values = parts.get(name)
        if values:
            print(f"  {name:>13}: {statistics.median(values):9,.0f}  {meaning}")


if __name__ == "__main__":
    main()
