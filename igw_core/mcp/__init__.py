"""MCP in the pure core: JSON-RPC framing, the session state machine, the tool catalogue
and the per-request agent loop. Nothing here does IO; :mod:`igw_io.mcp` does.
"""

from igw_core.mcp.catalog import EMPTY, Catalogue, MCPTool, build_catalogue, tool_result_text
from igw_core.mcp.jsonrpc import JSONRPCError, MalformedResponse, MCPError
from igw_core.mcp.loop import MAX_ROUNDS, AgentLoop
from igw_core.mcp.session import MCPSession, SessionState

__all__ = [
    "EMPTY",
    "MAX_ROUNDS",
    "AgentLoop",
    "Catalogue",
    "JSONRPCError",
    "MCPError",
    "MCPSession",
    "MCPTool",
    "MalformedResponse",
    "SessionState",
    "build_catalogue",
    "tool_result_text",
]
