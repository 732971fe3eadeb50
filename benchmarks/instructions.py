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

    python benchmarks/instructions.py [--target igw|floor] [--scenario chat|stream|proxy]
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


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description="user-space instructions per request")
    parser.add_argument("--target", choices=("igw", "floor"), default="igw")
    parser.add_argument("--scenario", choices=("chat", "stream", "proxy"), default="chat")
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
    args = parser.parse_args()
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
    if args.target == "floor" and args.scenario != "chat":
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
        control(target.pid, "-d")
        time.sleep(1)
        children.stop_all()
        total = dumped_instructions(scratch)
        if args.keep is not None:
            for path in scratch.glob("callgrind.out*"):
                if "Trigger: dump" in path.read_text(errors="replace"):
                    shutil.copy(path, args.keep)
    where = f" ({args.tree}{', pure Python' if args.pure else ''})" if args.target == "igw" else ""
    print(f"{args.target}{where}, {args.scenario}, {args.connections} connection(s): "
          f"{served} requests, {total / served:,.0f} instructions per request")


if __name__ == "__main__":
    main()
