"""Shared fixtures: real gateways (both frontends) and real mock providers on 127.0.0.1.

Every behavioural test takes ``gateway_factory`` and so runs twice: against the
standalone server (``python -m igw_standalone``) and against the ASGI app under
uvicorn (``python -m uvicorn igw_asgi:app``), each started as a real process
configured only by environment variables, as operators start them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpcore
import pytest

from igw_io.compiled import honour_pure_python, pure_python_requested, stale_extensions

# IGW_PURE_PYTHON=1 runs the suite on the sources instead of the compiled modules, in
# this process and in every gateway it starts (the variable is passed on); then
# extensions older than their sources do not matter.
honour_pure_python()
if not pure_python_requested() and (_stale := stale_extensions()):
    pytest.exit(f"compiled modules are older than their sources ({', '.join(_stale)}): run "
                "`python -m pip install -e .` again, or install with IGW_PURE_PYTHON=1 "
                "while you edit them", returncode=4)

from tests.support.mock_provider import MockProvider, free_port  # noqa: E402

#: Each behavioural test runs on these: the standalone server on each HTTP/1.1 parser
#: (``--http``), and the ASGI app under uvicorn.
FRONTENDS = ("standalone", "standalone-h11", "asgi")
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR",
                  "IGW_PURE_PYTHON")
_START_TIMEOUT = 20.0


class RunningGateway:
    """A gateway process started for a test.

    Attributes:
        frontend: ``"standalone"`` or ``"asgi"``.
        url: ``http://127.0.0.1:PORT``.
        base_url: ``url + "/v1"`` (what the openai SDK takes).
        port: the listening port.
        process: the ``Popen`` object.
    """

    def __init__(self, frontend: str, env: dict[str, str], log_path: Path,
                 args: tuple[str, ...] = ()) -> None:
        frontend, _, parser = frontend.partition("-")
        self.frontend = frontend
        #: The standalone server's HTTP/1.1 parser.
        self.parser = parser or "httptools"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.log_path = log_path
        full_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        if frontend == "standalone":
            full_env["SERVER_PORT"] = str(self.port)
            command = [sys.executable, "-m", "igw_standalone", "--http", self.parser, *args]
        else:
            command = [sys.executable, "-m", "uvicorn", "igw_asgi:app", "--host", "127.0.0.1",
                       "--port", str(self.port), "--no-access-log", "--log-level", "warning",
                       "--timeout-graceful-shutdown", "5"]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Wait until ``/health`` answers.

        Raises:
            RuntimeError: the process exited or did not come up in time.
        """
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}:\n{self.log_text()}")
            try:
                response = httpcore.request("GET", self.url + "/health",
                                            extensions={"timeout": {"connect": 0.5, "read": 2}})
                if response.status == 200:
                    return
            except httpcore.NetworkError:
                pass
            except httpcore.TimeoutException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        """Return everything the process logged so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        """Wait until ``needle`` appears in the log; return whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int | None:
        """SIGTERM the process, wait for it, and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture(params=FRONTENDS)
def engine(request: pytest.FixtureRequest) -> str:
    """The frontend and parser under test (``standalone``, ``standalone-h11``, ``asgi``)."""
    return str(request.param)


@pytest.fixture
def frontend(engine: str) -> str:
    """The frontend under test (``standalone`` or ``asgi``): each test runs once per engine."""
    return engine.partition("-")[0]


@pytest.fixture
def gateway_factory(engine: str, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways of the current frontend with a given environment.

    ``gateway_factory(env, *, args=(), wait=True)`` returns a running gateway;
    every gateway is stopped when the test ends.
    """
    started: list[RunningGateway] = []
    yield _factory(engine, tmp_path, started)
    for gateway in started:
        gateway.stop()


@pytest.fixture
def mock_openai() -> Iterator[MockProvider]:
    """A real OpenAI-format mock provider on 127.0.0.1."""
    with MockProvider(kind="openai") as mock:
        yield mock


@pytest.fixture
def mock_anthropic() -> Iterator[MockProvider]:
    """A real mock of Anthropic's OpenAI-compatible endpoint (x-api-key + anthropic-version)."""
    with MockProvider(kind="anthropic") as mock:
        yield mock


def provider_env(mock: MockProvider, provider: str = "openai") -> dict[str, str]:
    """Return the environment that points ``provider`` at ``mock``."""
    prefix = provider.upper()
    return {f"{prefix}_API_URL": mock.base_url, f"{prefix}_API_KEY": mock.api_key}


def _factory(frontend: str, directory: Path, started: list[RunningGateway]) -> GatewayFactory:
    def start(env: dict[str, str], *, args: tuple[str, ...] = (),
              wait: bool = True) -> RunningGateway:
        log_path = directory / f"gateway-{frontend}-{len(started)}.log"
        gateway = RunningGateway(frontend, env, log_path, args)
        started.append(gateway)
        if wait:
            gateway.wait_ready()
        return gateway

    return start


@pytest.fixture(scope="module", params=FRONTENDS)
def module_frontend(request: pytest.FixtureRequest) -> str:
    """Like ``frontend``, for gateways shared by a module's tests."""
    return str(request.param)


@pytest.fixture(scope="module")
def module_gateway_factory(
    module_frontend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Like ``gateway_factory``, but the gateways live for the whole module."""
    started: list[RunningGateway] = []
    yield _factory(module_frontend, tmp_path_factory.mktemp("gw"), started)
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def module_openai() -> Iterator[MockProvider]:
    """A module-wide OpenAI-format mock provider (call ``clear()`` between tests)."""
    with MockProvider(kind="openai") as mock:
        yield mock


@pytest.fixture(scope="module")
def module_anthropic() -> Iterator[MockProvider]:
    """A module-wide Anthropic mock provider."""
    with MockProvider(kind="anthropic") as mock:
        yield mock
