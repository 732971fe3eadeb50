"""MCPManager against real MCP servers (official SDK): connect, call, expiry, health, logs."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import anyio
import pytest

from igw_core.config import load_settings
from igw_io.mcp import MCPManager
from tests.support.mcp_servers import ToolServer, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_sdk() -> Iterator[None]:
    # The SDK logs a traceback for every tool that raises; that is the test working.
    logger = logging.getLogger("mcp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture
def mcp_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger = logging.getLogger("igw")
    propagate = logger.propagate
    logger.propagate = True
    with caplog.at_level(logging.DEBUG, logger="igw.mcp"):
        yield caplog
    logger.propagate = propagate


@pytest.fixture
def calc() -> Iterator[ToolServer]:
    with ToolServer("calc") as server:
        yield server


def _manager(*servers: str, **env: str) -> MCPManager:
    return MCPManager(load_settings({"MCP_ENABLE": "true", "MCP_SERVERS": ",".join(servers),
                                     **env}))


def _lines(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


@pytest.mark.anyio
async def test_first_use_without_run_connects_and_calls_tools(calc: ToolServer) -> None:
    manager = _manager(calc.url, MCP_REQUEST_TIMEOUT="700ms")
    try:
        catalogue = await manager.available_tools()
        assert [t.function for t in catalogue.tools] == ["mcp_add", "mcp_echo", "mcp_fail",
                                                         "mcp_sleep"]
        assert await manager.call_tool(calc.url, "add", {"a": 2, "b": 3}) == (True, "5")
        ok, text = await manager.call_tool(calc.url, "fail", {})
        assert not ok and "fail" in text
        started = time.monotonic()
        ok, text = await manager.call_tool(calc.url, "sleep", {"seconds": 5})
        assert not ok and "MCP_REQUEST_TIMEOUT" in text
        assert time.monotonic() - started < 2
        assert await manager.call_tool(calc.url, "echo", {"text": "still fine"}) == (
            True, "still fine")
    finally:
        await manager.aclose()


@pytest.mark.anyio
async def test_a_restarted_server_gets_a_new_session_transparently(calc: ToolServer) -> None:
    manager = _manager(calc.url)
    try:
        await manager.available_tools()
        old = manager.servers[0].session.session_id
        calc.stop()
        calc.start()  # same port, but it has forgotten our session: 404, then initialize
        assert await manager.call_tool(calc.url, "add", {"a": 1, "b": 1}) == (True, "2")
        assert manager.servers[0].session.session_id not in (None, old)
    finally:
        await manager.aclose()


@pytest.mark.anyio
async def test_one_silent_server_does_not_hold_up_the_others(calc: ToolServer) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        manager = _manager(f"http://127.0.0.1:{port}/mcp", calc.url,
                           MCP_REQUEST_TIMEOUT="1500ms", MCP_POLLING_ENABLE="false",
                           MCP_ENABLE_RECONNECT="false")
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.run)
            with anyio.fail_after(1):
                while not manager.catalogue:
                    await anyio.sleep(0.02)
            assert {t.server for t in manager.catalogue.tools} == {calc.url}
            started = anyio.current_time()
            catalogue = await manager.available_tools()  # waits for the silent one's attempt
            assert anyio.current_time() - started < 2
            assert {t.server for t in catalogue.tools} == {calc.url}
            tg.cancel_scope.cancel()
        await manager.aclose()


@pytest.mark.anyio
async def test_reconnect_attempts_are_logged_with_backoff_then_wait(
    mcp_logs: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    manager = _manager(url, MCP_POLLING_ENABLE="false", MCP_MAX_RETRIES="2",
                       MCP_INITIAL_BACKOFF="100ms", MCP_RETRY_INTERVAL="150ms",
                       MCP_RECONNECT_INTERVAL="10s", MCP_DISABLE_HEALTHCHECK_LOGS="false")
    async with anyio.create_task_group() as tg:
        tg.start_soon(manager.run)
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()
    await manager.aclose()
    attempts = [(getattr(r, "server", None), getattr(r, "attempt", None))
                for r in _lines(mcp_logs, "mcp client reconnecting")]
    assert attempts == [(url, 1), (url, 2)]
    failed = _lines(mcp_logs, "mcp polling failed")
    assert len(failed) == 1 and "Connect" in getattr(failed[0], "error", "")


@pytest.mark.anyio
async def test_a_dead_server_is_reported_once_and_comes_back(
    calc: ToolServer, mcp_logs: pytest.LogCaptureFixture
) -> None:
    manager = _manager(calc.url, MCP_POLLING_INTERVAL="150ms", MCP_POLLING_TIMEOUT="500ms",
                       MCP_ENABLE_RECONNECT="false")
    async with anyio.create_task_group() as tg:
        tg.start_soon(manager.run)
        assert await manager.available_tools()
        calc.stop()
        with anyio.fail_after(3):
            while manager.catalogue:
                await anyio.sleep(0.05)
        await anyio.sleep(0.6)  # several more failed polls: still one line
        failed = _lines(mcp_logs, "mcp polling failed")
        assert len(failed) == 1 and not hasattr(failed[0], "error")
        calc.start()
        with anyio.fail_after(3):
            while not manager.catalogue:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    await manager.aclose()


@pytest.mark.anyio
async def test_without_run_a_due_poll_drops_and_restores_servers(calc: ToolServer) -> None:
    manager = _manager(calc.url, MCP_POLLING_INTERVAL="100ms", MCP_POLLING_TIMEOUT="500ms")
    try:
        assert await manager.available_tools()
        calc.stop()
        await anyio.sleep(0.15)
        assert not await manager.available_tools()
        calc.start()
        await anyio.sleep(0.15)
        assert await manager.available_tools()
    finally:
        await manager.aclose()


@pytest.mark.anyio
async def test_asgi_app_without_lifespan_connects_on_its_first_request(calc: ToolServer) -> None:
    from igw_asgi import create_app

    app = create_app(load_settings({"MCP_ENABLE": "true", "MCP_SERVERS": calc.url,
                                    "MCP_EXPOSE": "true"}))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/mcp/tools",
             "raw_path": b"/v1/mcp/tools", "query_string": b"", "headers": [], "root_path": ""}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    assert [t["name"] for t in json.loads(body)["data"]] == ["mcp_add", "mcp_echo", "mcp_fail",
                                                           "mcp_sleep"]
    assert app.runtime is not None and app.runtime.mcp is not None
    await app.runtime.mcp.aclose()
