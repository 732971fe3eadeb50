"""The tool catalogue: MCP tools per server, filtered, named ``mcp_<name>`` for the model.

A :class:`Catalogue` is an immutable snapshot; each exchange gets the one current when
its request arrived, so a server dropping out mid-request changes nothing for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "EMPTY",
    "FUNCTION_PREFIX",
    "Catalogue",
    "MCPTool",
    "build_catalogue",
    "client_function_names",
    "function_name",
    "merge_tools",
    "tool_result_text",
]

#: Prefix of every function name the model sees for an MCP tool.
FUNCTION_PREFIX: Final = "mcp_"
_INVALID: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME: Final = 64  # OpenAI's limit on function names
_EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


def function_name(tool: str) -> str:
    """Return the function name offered to the model for MCP tool ``tool``.

    Characters outside ``[A-Za-z0-9_-]`` become ``_`` and the result is cut to 64
    characters, the limit OpenAI-style APIs enforce.
    """
    return (FUNCTION_PREFIX + _INVALID.sub("_", tool))[:_MAX_NAME]


@dataclass(frozen=True, slots=True)
class MCPTool:
    """One tool offered by one MCP server.

    Fields:
        server: the server's URL (as listed in ``MCP_SERVERS``).
        name: the tool's name on that server.
        function: the function name the model sees (``mcp_<name>``).
        description: the tool's description (``""`` when it has none).
        input_schema: the JSON schema of its arguments.
    """

    server: str
    name: str
    function: str
    description: str
    input_schema: Mapping[str, Any]

    def function_tool(self) -> dict[str, Any]:
        """Return the OpenAI ``{"type": "function", "function": {...}}`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.function,
                "description": self.description,
                "parameters": dict(self.input_schema),
            },
        }


class Catalogue:
    """An immutable set of MCP tools, looked up by the function name the model calls."""

    __slots__ = ("_by_function", "_functions", "tools")

    def __init__(self, tools: Iterable[MCPTool] = ()) -> None:
        self.tools: tuple[MCPTool, ...] = tuple(tools)
        self._by_function = {tool.function: tool for tool in self.tools}
        self._functions = tuple(tool.function_tool() for tool in self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def __repr__(self) -> str:
        return f"Catalogue({[tool.function for tool in self.tools]!r})"

    def get(self, function: str) -> MCPTool | None:
        """Return the tool the model calls as ``function``, or ``None``."""
        return self._by_function.get(function)

    def function_tools(self) -> list[dict[str, Any]]:
        """Return every tool as an OpenAI function-tool entry, in catalogue order."""
        return list(self._functions)

    def listing(self) -> dict[str, Any]:
        """Return the body of ``GET /v1/mcp/tools``."""
        return {
            "object": "list",
            "data": [
                {
                    "name": tool.function,
                    "description": tool.description,
                    "server": tool.server,
                    "input_schema": dict(tool.input_schema),
                }
                for tool in self.tools
            ],
        }


#: The catalogue with no tools (MCP off, or every server down).
EMPTY = Catalogue()


def _selected(name: str, function: str, names: Sequence[str]) -> bool:
    return name in names or function in names


def build_catalogue(
    servers: Iterable[tuple[str, Sequence[Any]]],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Catalogue:
    """Build the catalogue from each server's ``tools/list`` entries.

    Args:
        servers: ``(server URL, tools)`` pairs in ``MCP_SERVERS`` order; malformed tool
            entries (no string ``name``) are skipped.
        include: ``MCP_INCLUDE_TOOLS``; when not empty only these tools are kept. A tool
            matches by its own name or its ``mcp_`` function name.
        exclude: ``MCP_EXCLUDE_TOOLS``; these are dropped (after ``include``).

    Returns:
        The catalogue. When two tools map to the same function name the one from the
        earlier server wins.
    """
    tools: list[MCPTool] = []
    seen: set[str] = set()
    for server, entries in servers:
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                continue
            function = function_name(name)
            if include and not _selected(name, function, include):
                continue
            if _selected(name, function, exclude) or function in seen:
                continue
            seen.add(function)
            description = entry.get("description")
            schema = entry.get("inputSchema")
            tools.append(MCPTool(
                server=server,
                name=name,
                function=function,
                description=description if isinstance(description, str) else "",
                input_schema=schema if isinstance(schema, Mapping) else _EMPTY_SCHEMA,
            ))
    return Catalogue(tools)


def client_function_names(client_tools: Any) -> frozenset[str]:
    """Return the function names the client's own ``tools`` define."""
    names: set[str] = set()
    if isinstance(client_tools, list):
        for tool in client_tools:
            if isinstance(tool, dict):
                function = tool.get("function")
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    names.add(function["name"])
    return frozenset(names)


def merge_tools(client_tools: Any, catalogue: Catalogue) -> list[Any]:
    """Return the client's tools followed by the MCP tools whose names are still free.

    The client's tools come first and unchanged; an MCP tool whose function name a
    client tool already uses is left out (the client wins the clash).
    """
    own = list(client_tools) if isinstance(client_tools, list) else []
    taken = client_function_names(own)
    return own + [t.function_tool() for t in catalogue.tools if t.function not in taken]


def tool_result_text(result: Mapping[str, Any]) -> tuple[bool, str]:
    """Turn a ``tools/call`` result into ``(ok, text)`` for a ``tool`` message.

    Text parts are joined with newlines; other parts (images, resources) are kept as
    JSON; with no content, ``structuredContent`` is used. ``ok`` is false when the
    server set ``isError``.
    """
    parts: list[str] = []
    content = result.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                parts.append(json.dumps(part, separators=(",", ":"), ensure_ascii=False))
    if not parts and "structuredContent" in result:
        parts.append(json.dumps(result["structuredContent"], separators=(",", ":"),
                                ensure_ascii=False))
    return result.get("isError") is not True, "\n".join(parts)
