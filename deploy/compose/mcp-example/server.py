"""An example MCP server for the compose stack: tools ``add`` and ``get_time``.

Built with the official MCP Python SDK (``pip install 'mcp==2.3.0'``; mcp 2 calls
FastMCP ``MCPServer``) and served over Streamable HTTP at
``http://MCP_EXAMPLE_HOST:MCP_EXAMPLE_PORT/mcp`` (default ``127.0.0.1:8081``; the
compose file sets the host to ``0.0.0.0``). The gateway offers its tools to models as
``mcp_add`` and ``mcp_get_time`` when ``MCP_ENABLE=true`` and
``MCP_SERVERS=http://mcp-example:8081/mcp``.

Run it alone: ``python server.py``, then list the tools through the gateway with
``MCP_EXPOSE=true`` and ``curl http://127.0.0.1:8080/v1/mcp/tools``.
"""

from __future__ import annotations

import datetime
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

HOST = os.environ.get("MCP_EXAMPLE_HOST", "127.0.0.1")
PORT = int(os.environ.get("MCP_EXAMPLE_PORT", "8081"))

server: MCPServer = MCPServer("igw-example")


@server.tool(description="Add two integers and return the sum.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="The current time in UTC, as ISO 8601.")
def get_time() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def main() -> None:
    # DNS-rebinding protection checks the Host header: allow the compose service
    # name as well as local names (a browser cannot reach this server anyway).
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["mcp-example:*", "localhost:*", "127.0.0.1:*", "[::1]:*"],
        allowed_origins=[],
    )
    server.run("streamable-http", host=HOST, port=PORT, transport_security=security)


if __name__ == "__main__":
    main()
