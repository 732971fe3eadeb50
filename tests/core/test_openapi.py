"""The OpenAPI document (``igw_core.openapi``): valid OpenAPI 3.1, the same as the committed
``docs/openapi.yaml``, covering every route the gateway serves and only those, and with
schemas that what the core itself builds (refusals, model lists, Messages) satisfies."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from igw_core.config import load_settings
from igw_core.demo import demo_response
from igw_core.effects import SendHead
from igw_core.endpoints import EXACT, find_endpoint
from igw_core.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from igw_core.events import RequestHead
from igw_core.exchange import Exchange
from igw_core.gateway import Gateway
from igw_core.mcp.catalog import build_catalogue
from igw_core.messages import chat_to_message
from igw_core.messages import error_body as anthropic_error_body
from igw_core.models import parse_model_list
from igw_core.openapi import DOCUMENT, ERROR_SCHEMA, document_bytes
from igw_core.responses import refusal_body, upstream_error_body

ROOT = Path(__file__).resolve().parents[2]
PATHS: dict[str, dict[str, Any]] = DOCUMENT["paths"]
METHODS = ("get", "head", "post", "put", "patch", "delete")
#: The routes matched by prefix (``igw_core.endpoints.find_endpoint``), and the probes.
PREFIX_ROUTES = ("/v1/models/{model_id}", "/v1/responses/{id}",
                 "/v1/responses/{id}/input_items", "/v1/responses/{id}/cancel",
                 "/proxy/{provider}/{path}")
PROBES = ("/health", "/ready")
#: A value for each path parameter that the demo gateway routes.
SAMPLES = {"provider": "demo", "model_id": "demo/echo", "id": "resp_1", "path": "models"}
NOT_ROUTED = ("GET /openapi.json is not routed yet; the integrator wires it to "
              "igw_core.openapi.document_bytes()")


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, item[method]) for path, item in PATHS.items()
            for method in METHODS if method in item]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    kind, name = ref.removeprefix("#/components/").split("/")
    return _resolve(DOCUMENT["components"][kind][name])


def _refs(node: Any) -> set[str]:
    """Every ``$ref`` under ``node``, response references followed."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[1])
            if ref.startswith("#/components/responses/"):
                found |= _refs(_resolve(node))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _validator(name: str) -> Any:
    """A JSON Schema validator for ``components/schemas/{name}`` (references resolved)."""
    jsonschema = pytest.importorskip("jsonschema", reason="the jsonschema package is needed "
                                     "(installed with openapi-spec-validator)")
    root = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(root)


def _valid(name: str, instance: Any) -> None:
    errors = [error.message for error in _validator(name).iter_errors(instance)]
    assert errors == [], f"{name}: {instance!r}"


# -- the document ----------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip(
        "openapi_spec_validator",
        reason="validating the document needs the openapi-spec-validator package "
               "(pip install 'openapi-spec-validator>=0.7')")
    assert DOCUMENT["openapi"] == "3.1.0"
    errors = [error.message for error in
              validator.OpenAPIV31SpecValidator(DOCUMENT).iter_errors()]
    assert errors == []


def test_document_bytes_are_the_document_as_compact_json_made_once() -> None:
    body = document_bytes()
    assert body is document_bytes()
    assert body == json.dumps(DOCUMENT, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(body) == DOCUMENT


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openapi_doc", ROOT / "scripts" /
                                                  "openapi_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_openapi_yaml_is_not_stale() -> None:
    yaml = pytest.importorskip("yaml", reason="docs/openapi.yaml is checked with pyyaml "
                                              "(pip install 'pyyaml>=6')")
    committed = (ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(committed) == DOCUMENT, \
        "docs/openapi.yaml is stale: run python scripts/openapi_doc.py"
    assert _generator().main(["--check"]) == 0, \
        "docs/openapi.yaml is not as generated: run python scripts/openapi_doc.py"


def test_every_operation_id_is_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in _operations()]
    assert len(ids) == len(set(ids))


def test_every_get_has_its_head_twin() -> None:
    for path, item in PATHS.items():
        if "get" in item:
            assert "head" in item, path
            assert set(item["head"]["responses"]) == set(item["get"]["responses"]), path
            assert all("content" not in _resolve(response)
                       for response in item["head"]["responses"].values()), path


# -- the routes ----------------------------------------------------------------------------


def test_every_route_is_documented() -> None:
    for path in (*EXACT, *PREFIX_ROUTES, *PROBES, "/openapi.json"):
        assert path in PATHS, path


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: SAMPLES[match.group(1)], path)


def test_every_route_documented_is_served_with_its_methods() -> None:
    gateway = Gateway.from_settings(load_settings({}, demo=True))
    for path, method, _ in _operations():
        if path == "/openapi.json" and find_endpoint(gateway, path).label == "other":
            continue  # not routed yet: test_openapi_json_is_routed says so
        exchange = Exchange(gateway)
        effects = exchange.receive(RequestHead(method.upper(), _concrete(path), "", (), 0.0))
        heads = [effect.status for effect in effects if isinstance(effect, SendHead)]
        assert heads[:1] not in ([404], [405]), f"{method.upper()} {path}: {heads}"


def test_openapi_json_is_routed() -> None:
    gateway = Gateway.from_settings(load_settings({}))
    exchange = Exchange(gateway)
    effects = exchange.receive(RequestHead("GET", "/openapi.json", "", (), 0.0))
    heads = [effect.status for effect in effects if isinstance(effect, SendHead)]
    if heads == [404]:
        pytest.skip(NOT_ROUTED)
    assert heads == [200]


# -- security and errors -------------------------------------------------------------------


def test_auth_is_optional_and_the_probes_never_need_it() -> None:
    assert {} in DOCUMENT["security"]
    assert {"bearerAuth": []} in DOCUMENT["security"]
    scheme = DOCUMENT["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer",
                                                                          "JWT")
    assert "AUTH_ENABLE=true" in scheme["description"]
    for path, _, operation in _operations():
        if path in PROBES:
            assert operation["security"] == []
            assert "401" not in operation["responses"]
        else:
            assert "security" not in operation, path
            assert {"401", "503"} <= set(operation["responses"]), path


def test_every_error_status_the_gateway_answers_is_documented() -> None:
    documented = {int(status) for _, _, operation in _operations()
                  for status in operation["responses"] if status.isdigit()}
    documented |= {405}  # components/responses/MethodNotAllowed: any path, any method
    for status in (400, 401, 403, 404, 405, 408, 413, 502, 503, 504):
        assert status in documented, status
    assert "MethodNotAllowed" in DOCUMENT["components"]["responses"]


def test_each_endpoint_documents_its_own_error_shape() -> None:
    for path, method, operation in _operations():
        if method == "head":
            continue  # no bodies
        errors = {status: response for status, response in operation["responses"].items()
                  if (status.isdigit() and int(status) >= 400) or status == "default"}
        shapes = _refs(errors)
        if path.startswith("/proxy/"):
            assert not shapes & {"Error", "AnthropicError", "ProviderError"}, path
        elif path.startswith("/v1/messages"):
            assert "AnthropicError" in shapes, path
            assert "ProviderError" not in shapes, path
            default = _resolve(operation["responses"]["default"])
            assert _refs(default["content"]) == {"AnthropicError"}
        else:
            assert "Error" in shapes and "AnthropicError" not in shapes, f"{method} {path}"


def test_query_provider_is_documented_where_it_routes() -> None:
    for path in ("/v1/models", "/v1/chat/completions", "/v1/embeddings", "/v1/responses",
                 "/v1/messages", "/v1/messages/count_tokens", "/v1/responses/{id}"):
        for method in METHODS:
            operation = PATHS[path].get(method)
            if operation is not None:
                names = {_resolve(p)["name"] for p in operation["parameters"]}
                assert "provider" in names, f"{method} {path}"


# -- what the core builds satisfies the schemas ---------------------------------------------


@pytest.mark.parametrize("error", [
    BadRequest("bad"), Unauthorized("no"), Forbidden("no", code="mcp_not_exposed"),
    NotFound("none"), MethodNotAllowed("no"), RequestTimeout("slow"), PayloadTooLarge("big"),
    UpstreamUnreachable("down"), ServiceUnavailable("wait"), UpstreamTimeout("slow"),
    GatewayError("odd", code=None),
])
def test_every_refusal_matches_the_error_schemas(error: GatewayError) -> None:
    assert _validator("Error").schema["components"]["schemas"]["Error"] is ERROR_SCHEMA
    _valid("Error", json.loads(refusal_body(error)))
    _valid("AnthropicError", json.loads(anthropic_error_body(error.status, error.message)))


@pytest.mark.parametrize("body", [
    b'{"error":{"message":"rate limited","type":"rate_limit","code":null}}',
    b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}',
    b'{"error":"plain"}', b'{"message":"m"}', b'{"detail":"d"}', b"<html>oops</html>", b"",
    b"[1,2]",
])
def test_a_provider_error_matches_provider_error(body: bytes) -> None:
    _valid("ProviderError", json.loads(upstream_error_body(429, body, "openai")))


def test_model_lists_match_the_model_schemas() -> None:
    models = parse_model_list("anthropic", json.dumps({"data": [
        {"id": "claude", "display_name": "Claude", "created_at": "2025-01-01"},
        {"name": "models/gemini", "created": 5, "owned_by": "google"}, "plain"]}).encode())
    for model in models:
        _valid("Model", model)
    _valid("ModelList", {"object": "list", "data": models})


def test_the_demo_provider_and_the_messages_translation_match() -> None:
    request = json.dumps({"model": "echo", "messages": [{"role": "user",
                                                         "content": "hi"}]}).encode()
    completion = json.loads(demo_response("POST", "/chat/completions", request).chunks[0])
    _valid("ChatCompletion", completion)
    _valid("Message", chat_to_message(completion, "demo/echo", "msg_1"))
    streamed = demo_response("POST", "/chat/completions", json.dumps({
        "model": "echo", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi there"}]}).encode())
    for chunk in streamed.chunks:
        data = chunk.decode().removeprefix("data: ").strip()
        _valid("ChatCompletionEvent", {"event": "message", "data": data})
        if data != "[DONE]":
            _valid("ChatCompletionChunk", json.loads(data))


def test_the_tool_listing_matches() -> None:
    catalogue = build_catalogue([("http://mcp:8081/mcp", [
        {"name": "add", "description": "Add.", "inputSchema": {"type": "object"}},
        {"name": "bare"}])])
    _valid("ToolList", catalogue.listing())
    _valid("ToolList", build_catalogue([]).listing())
