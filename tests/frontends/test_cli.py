"""The ``igw`` command line: flags, refused TLS files, --workers supervision, README commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpcore
import pytest

from tests.conftest import RunningGateway
from tests.support.certs import self_signed

ROOT = Path(__file__).resolve().parents[2]


def _env(env: dict[str, str]) -> dict[str, str]:
    base = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
            if k in os.environ}
    return {**base, **env}


def _run_igw(env: dict[str, str], *args: str,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "igw_standalone", *args], env=_env(env),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by an ordinary listening socket (no SO_REUSEPORT), as another server would."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# -- 4. --workers N when the port is taken or workers keep dying ------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_exits_1_with_one_line_with_or_without_workers(
        taken_port: int, workers: str) -> None:
    result = _run_igw({}, "--demo", "--port", str(taken_port), "--workers", workers)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    message = str(json.loads(line)["msg"])
    assert message.startswith("igw: cannot serve: ")
    assert "address already in use" in message.lower()


def _igw_with_dying_workers(patch: str) -> list[str]:
    """The ``igw`` command whose workers exit with status 3 at once; ``patch`` runs first."""
    script = (
        "import sys\n"
        "import igw_standalone.workers as workers\n"
        "def die(*args: object) -> None:\n"
        "    sys.exit(3)\n"
        "workers._worker = die\n"
        f"{patch}\n"
        "from igw_standalone.__main__ import main\n"
        "main(['--demo', '--port', '0', '--workers', '2'])\n"
    )
    return [sys.executable, "-c", script]


def test_workers_that_keep_dying_at_start_make_the_supervisor_give_up_naming_the_cause() -> None:
    result = subprocess.run(_igw_with_dying_workers(""), env=_env({}), capture_output=True,
                            text=True, timeout=90, cwd=ROOT)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    restarts = [line for line in lines if line["msg"] == "worker died, restarting"]
    assert 2 <= len(restarts) <= 20
    pauses = [float(str(line["restart_in"])) for line in restarts]
    assert max(pauses) > min(pauses)  # the pause grows
    [gave_up] = [line for line in lines if "giving up" in str(line["msg"])]
    assert gave_up["level"] == "error" and gave_up["cause"] == "exit code 3"


def test_sigterm_during_a_restart_pause_exits_promptly(tmp_path: Path) -> None:
    log_path = tmp_path / "igw.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _igw_with_dying_workers("workers._BACKOFF_FIRST = workers._BACKOFF_MAX = 600"),
            env=_env({}), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while '"restart_in": 600' not in log_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, \
                    log_path.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- 5. startup errors that are configuration errors -----------------------------------




def _refused(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The refused-configuration lines, having checked the exit status and the heading."""
    assert result.returncode == 2, result.stderr
    heading, *problems = result.stderr.splitlines()
    assert heading == "igw: refusing to start, invalid configuration:"
    return problems


def test_missing_tls_files_are_refused_with_the_other_bad_variables() -> None:
    problems = _refused(_run_igw({"SERVER_TLS_CERT_PATH": "/nope/cert.pem",
                                  "SERVER_TLS_KEY_PATH": "/nope/key.pem",
                                  "AUTH_ENABLE": "yes"}, "--demo"))
    assert any(p.startswith("  AUTH_ENABLE='yes'") for p in problems)
    for variable, path in (("SERVER_TLS_CERT_PATH", "/nope/cert.pem"),
                           ("SERVER_TLS_KEY_PATH", "/nope/key.pem")):
        [problem] = [p for p in problems if p.startswith(f"  {variable}='{path}'")]
        assert "No such file or directory" in problem


def test_a_tls_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    [problem] = _refused(_run_igw({"SERVER_TLS_CERT_PATH": str(cert),
                                   "SERVER_TLS_KEY_PATH": str(other_key)}, "--demo"))
    assert problem.startswith(f"  SERVER_TLS_KEY_PATH='{other_key}'")
    assert "does not match" in problem and str(cert) in problem


def test_a_tls_certificate_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    _, key = self_signed(tmp_path, "one")
    [problem] = _refused(_run_igw({"SERVER_TLS_CERT_PATH": str(key),
                                   "SERVER_TLS_KEY_PATH": str(key)}, "--demo"))
    assert problem.startswith(f"  SERVER_TLS_CERT_PATH='{key}'")


def test_only_one_tls_path_is_refused_naming_the_missing_one(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    [problem] = _refused(_run_igw({"SERVER_TLS_CERT_PATH": str(cert)}, "--demo"))
    assert problem.startswith("  SERVER_TLS_KEY_PATH=''")


def test_a_refused_port_flag_is_named_as_the_flag() -> None:
    [problem] = _refused(_run_igw({"SERVER_PORT": "8080"}, "--demo", "--port", "99999"))
    assert problem.startswith("  --port='99999': ")


def test_version_prints_the_package_version() -> None:
    result = _run_igw({}, "--version")
    assert result.returncode == 0
    assert result.stdout == f"igw {version('igw')}\n"


def test_help_lists_flags_with_defaults_the_main_variables_and_the_reference() -> None:
    result = _run_igw({}, "--help")
    assert result.returncode == 0
    text = result.stdout
    for flag in ("--host", "--port", "--workers", "--http", "--loop", "--demo", "--version"):
        assert flag in text
    assert "{auto,httptools,h11}" in text and "{auto,uvloop,asyncio}" in text
    assert "(default: 1)" in text and "(default: auto)" in text
    for variable in ("SERVER_HOST", "SERVER_PORT", "{ID}_API_KEY", "AUTH_ENABLE", "MCP_ENABLE",
                     "TELEMETRY_ENABLE", "ENVIRONMENT"):
        assert variable in text
    assert "docs/configuration.md" in text


def test_engine_flags_are_kept_on_the_namespace() -> None:
    from igw_standalone.__main__ import parse_args

    args = parse_args(["--http", "h11", "--loop", "asyncio"])
    assert (args.http, args.loop) == ("h11", "asyncio")
    defaults = parse_args([])
    assert (defaults.http, defaults.loop) == ("auto", "auto")
    with pytest.raises(SystemExit) as refused:
        parse_args(["--http", "fast"])
    assert refused.value.code == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_line_a_production_process_writes_is_one_json_object(
        tmp_path: Path, workers: str) -> None:
    gateway = RunningGateway("standalone", {}, tmp_path / "igw.log",
                             ("--demo", "--workers", workers))
    try:
        gateway.wait_ready()
        assert httpcore.request("GET", gateway.url + "/v1/models").status == 200
        deadline = time.monotonic() + 20
        while gateway.log_text().count("igw listening on") < int(workers):
            assert time.monotonic() < deadline, gateway.log_text()
            time.sleep(0.05)
    finally:
        assert gateway.stop() == 0
    lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines()]
    listening = [line for line in lines if str(line["msg"]).startswith("igw listening on")]
    assert len(listening) == int(workers)
    for line in listening:
        assert line["msg"] == f"igw listening on {gateway.url}" and line["url"] == gateway.url
        assert line["version"] == version("igw") and isinstance(line["pid"], int)


def test_development_listening_line_reads_naturally(tmp_path: Path) -> None:
    gateway = RunningGateway("standalone", {"ENVIRONMENT": "development"},
                             tmp_path / "igw.log", ("--demo",))
    try:
        assert gateway.wait_log(f"igw listening on {gateway.url}", timeout=20)
    finally:
        gateway.stop()


# -- 8. the README's commands ------------------------------------------------------------


def test_readme_sdk_snippet_prints_exactly_the_streamed_text(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert "http://127.0.0.1:8080/v1" in snippet
    gateway = RunningGateway("standalone", {}, tmp_path / "igw.log", ("--demo",))
    try:
        gateway.wait_ready()
        result = subprocess.run(
            [sys.executable, "-c", snippet.replace("http://127.0.0.1:8080/v1", gateway.base_url)],
            env=_env({}), capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello"


def test_readme_asgi_command_has_an_extra_that_installs_uvicorn() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("uvicorn") for r in project["optional-dependencies"]["asgi"])
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[asgi]'" in readme
    assert "uvicorn igw_asgi:app" in readme
