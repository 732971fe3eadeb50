"""igw_core.mcp.catalog: naming, include/exclude, merging with the client's tools, results."""

from __future__ import annotations

from typing import Any

from igw_core.mcp.catalog import (
    EMPTY,
    build_catalogue,
    function_name,
    merge_tools,
    tool_result_text,
)

A = "http://a.test/mcp"
B = "http://b.test/mcp"
SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}}


def _tool(name: str, description: str = "d") -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": SCHEMA}


def test_tools_are_offered_as_mcp_functions_with_their_schema() -> None:
    catalogue = build_catalogue([(A, [_tool("add", "Add.")])])
    assert catalogue.function_tools() == [{"type": "function", "function": {
        "name": "mcp_add", "description": "Add.", "parameters": SCHEMA}}]
    tool = catalogue.get("mcp_add")
    assert tool is not None and (tool.server, tool.name) == (A, "add")


def test_names_are_made_valid_function_names() -> None:
    assert function_name("files/read.v2") == "mcp_files_read_v2"
    assert len(function_name("x" * 100)) == 64


def test_include_and_exclude_match_plain_or_prefixed_names() -> None:
    servers = [(A, [_tool("add"), _tool("echo"), _tool("fail")]), (B, [_tool("sleep")])]
    only = build_catalogue(servers, include=("add", "mcp_sleep"))
    assert [t.function for t in only.tools] == ["mcp_add", "mcp_sleep"]
    without = build_catalogue(servers, exclude=("mcp_fail", "echo"))
    assert [t.function for t in without.tools] == ["mcp_add", "mcp_sleep"]
    both = build_catalogue(servers, include=("add", "echo"), exclude=("echo",))
    assert [t.function for t in both.tools] == ["mcp_add"]


def test_the_earlier_server_wins_a_name_and_malformed_entries_are_skipped() -> None:
    catalogue = build_catalogue([(A, [_tool("add"), {"description": "no name"}, "junk"]),
                                 (B, [_tool("add"), {"name": "bare"}])])
    assert [(t.server, t.function) for t in catalogue.tools] == [(A, "mcp_add"), (B, "mcp_bare")]
    bare = catalogue.get("mcp_bare")
    assert bare is not None and bare.input_schema == {"type": "object", "properties": {}}


def test_client_tools_come_first_and_win_a_clash() -> None:
    catalogue = build_catalogue([(A, [_tool("add"), _tool("echo")])])
    client = [{"type": "function", "function": {"name": "mcp_echo", "parameters": {}}}]
    merged = merge_tools(client, catalogue)
    assert [t["function"]["name"] for t in merged] == ["mcp_echo", "mcp_add"]
    assert merged[0] is client[0]
    assert merge_tools(None, EMPTY) == []


def test_listing_has_name_description_server_and_schema() -> None:
    listing = build_catalogue([(A, [_tool("add", "Add.")])]).listing()
    assert listing == {"object": "list", "data": [
        {"name": "mcp_add", "description": "Add.", "server": A, "input_schema": SCHEMA}]}


def test_tool_results_become_text_and_errors_are_flagged() -> None:
    assert tool_result_text({"content": [{"type": "text", "text": "5"}]}) == (True, "5")
    ok, text = tool_result_text({"content": [{"type": "text", "text": "boom"}], "isError": True})
    assert (ok, text) == (False, "boom")
    ok, text = tool_result_text({"content": [], "structuredContent": {"result": 3}})
    assert (ok, text) == (True, '{"result":3}')
    ok, text = tool_result_text({"content": [{"type": "image", "data": "AA", "mimeType": "x"}]})
    assert ok and '"type":"image"' in text
