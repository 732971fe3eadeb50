"""Real MCP servers for the gateway's tests, built with the official ``mcp`` SDK.

Each :class:`ToolServer` is an ``MCPServer`` (the SDK's FastMCP successor) served over
Streamable HTTP by uvicorn in a background thread on 127.0.0.1. It can be stopped and
started again on the same port, so tests can take a server down and bring it back.

Quick reference::

    with ToolServer("calc") as server:          # tools: add, echo, fail, sleep
        server.url                              # http://127.0.0.1:PORT/mcp
        server.stop(); server.start()           # same port, new sessions
        server.calls                            # [(tool, arguments), ...] it executed
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

__all__ = ["ToolServer", "free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ToolServer:
    """An MCP server with the tools ``add``, ``echo``, ``fail`` and ``sleep``.

    Args:
        name: the server's name (reported in ``initialize``).
        port: the port to listen on; 0 picks a free one (kept across restarts).
        json_response: answer requests with ``application/json`` instead of SSE.
        prefix: prepended to every tool name, so two servers can offer distinct tools.
    """

    def __init__(
        self, name: str = "tools", *, port: int = 0, json_response: bool = False, prefix: str = ""
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.json_response = json_response
        self.prefix = prefix
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The Streamable HTTP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def running(self) -> bool:
        """Whether the server is currently serving."""
        return self._server is not None

    def _app(self) -> Any:
        mcp: MCPServer[Any] = MCPServer(self.name)
        prefix = self.prefix
        calls = self.calls

        @mcp.tool(name=f"{prefix}add", description="Add two integers and return the sum.")
        def add(a: int, b: int) -> int:
            calls.append((f"{prefix}add", {"a": a, "b": b}))
            return a + b

        @mcp.tool(name=f"{prefix}echo", description="Return the text unchanged.")
        def echo(text: str) -> str:
            calls.append((f"{prefix}echo", {"text": text}))
            return text

        @mcp.tool(name=f"{prefix}fail", description="Always raises an error.")
        def fail() -> str:
            calls.append((f"{prefix}fail", {}))
            raise RuntimeError("the fail tool always fails")

        @mcp.tool(name=f"{prefix}sleep", description="Sleep for some seconds, then answer.")
        async def sleep(seconds: float) -> str:
            calls.append((f"{prefix}sleep", {"seconds": seconds}))
            await anyio.sleep(seconds)
            return f"slept {seconds}"

        return mcp.streamable_http_app(json_response=self.json_response)

    def start(self) -> ToolServer:
        """Serve on :attr:`port` and return once it accepts connections."""
        if self._server is not None:
            raise RuntimeError("ToolServer already running")
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on", timeout_graceful_shutdown=1, timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"mcp-{self.name}", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server = self._thread = None
                raise RuntimeError(f"MCP server {self.name} did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (the port becomes free)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():  # a connection that would not close: stop waiting for it
            server.force_exit = True
            thread.join(5)

    def __enter__(self) -> ToolServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
