"""The running gateway keeps the contract of its OpenAPI document (``igw_core.openapi``).

schemathesis generates requests from the document for every operation and sends them to a
real standalone gateway started with the keyless ``demo`` provider; every answer must be
documented (status, content type, required headers) and match its schema, and none may be
a server error. A table of chosen requests then reaches the answers random ones rarely do
(the demo provider's 200s, JSON and streamed, the model policy's 403, the 413, auth's 401
and 503) on both frontends, and ``GET /openapi.json`` must serve the document itself.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="the OpenAPI contract test needs the schemathesis package "
                           "(pip install 'schemathesis>=4.32')")
jsonschema_rs = pytest.importorskip("jsonschema_rs", reason="installed with schemathesis")

import requests  # noqa: E402 - installed with schemathesis
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from igw_core.openapi import DOCUMENT, ERROR_SCHEMA, document_bytes  # noqa: E402
from tests.conftest import RunningGateway  # noqa: E402
from tests.support.mock_provider import free_port  # noqa: E402

#: What every answer is checked for: no 5xx, a documented status and content type, the
#: required headers, and a body that matches the schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
#: Generated requests per operation: enough to reach every branch the schema opens, few
#: enough that the file runs in well under a minute on two cores (``IGW_CONTRACT_EXAMPLES``
#: asks for more, for a deeper run by hand).
MAX_EXAMPLES = int(os.environ.get("IGW_CONTRACT_EXAMPLES", "25"))
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items()
              for method in item]
#: Generated model names are replaced by one of these (``None``: kept) so that some requests
#: reach the demo provider's answers, not only the gateway's refusals.
DEMO_MODELS = (None, "demo/echo", "demo/echo-stream")
NOT_ROUTED = ("GET /openapi.json is not routed yet (it answers 404); the integrator wires "
              "it to igw_core.openapi.document_bytes()")
ISSUER_PORT = free_port()  # nothing listens there: the issuer's keys never load
ISSUER = f"http://127.0.0.1:{ISSUER_PORT}/realms/igw"

#: The gateways the table runs against, by name: their environment.
CONFIGS: dict[str, dict[str, str]] = {
    "demo": {"IGW_DEMO": "true"},
    "strict": {"IGW_DEMO": "true", "MCP_EXPOSE": "true", "PROXY_ENABLE": "false",
               "SERVER_MAX_REQUEST_BODY_SIZE": "2048", "DISALLOWED_MODELS": "demo/echo-stream"},
    "auth": {"IGW_DEMO": "true", "AUTH_ENABLE": "true", "AUTH_OIDC_ISSUER": ISSUER,
             "AUTH_OIDC_CLIENT_ID": "igw"},
    "routed": {"IGW_DEMO": "true", "ROUTING_ENABLED": "true",
               "ROUTING_CONFIG_PATH": "{directory}/routing.yaml"},
}
#: The routing file of the ``routed`` gateways: one alias over the demo provider.
ROUTING_FILE = "models:\n  fast-chat:\n    deployments:\n      - {provider: demo, model: echo}\n"


class Gateways:
    """Gateways started on first use and stopped when the module's tests end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: dict[tuple[str, str], RunningGateway] = {}
        (directory / "routing.yaml").write_text(ROUTING_FILE)

    def get(self, frontend: str, config: str) -> RunningGateway:
        """Return the running gateway of ``frontend`` configured as ``CONFIGS[config]``."""
        key = (frontend, config)
        if key not in self.started:
            env = {name: value.format(directory=self.directory)
                   for name, value in CONFIGS[config].items()}
            gateway = RunningGateway(frontend, env, self.directory / f"{frontend}-{config}.log")
            self.started[key] = gateway
            gateway.wait_ready()
        return self.started[key]


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """The module's gateways (started lazily, stopped at the end)."""
    pool = Gateways(tmp_path_factory.mktemp("openapi"))
    yield pool
    for gateway in pool.started.values():
        gateway.stop()


def _served(gateway: RunningGateway) -> requests.Response:
    return requests.get(gateway.url + "/openapi.json", timeout=10)


def _steer(case: Any, model: str | None, use_demo: bool) -> Any:
    """Point some generated requests at the demo provider."""
    if model is not None and isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = model
    parameters = case.path_parameters
    if use_demo and parameters:
        if "provider" in parameters:
            parameters["provider"] = "demo"
        if "model_id" in parameters:
            parameters["model_id"] = "demo/echo"
    return case


# -- generated requests --------------------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests_keep_the_contract(gateways: Gateways, label: str) -> None:
    gateway = gateways.get("standalone", "demo")
    if label.endswith(" /openapi.json") and _served(gateway).status_code == 404:
        pytest.skip(NOT_ROUTED)
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None
    strategy = st.builds(_steer, operation.as_strategy(), st.sampled_from(DEMO_MODELS),
                         st.booleans())

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(base_url=gateway.url, timeout=15)
        case.validate_response(response, checks=CHECKS)

    check()


# -- chosen requests -----------------------------------------------------------------------


def _token(issuer: str) -> str:
    """A well-formed RS256 token from ``issuer`` (its signature is never checked: the
    issuer's keys never load, so the gateway answers 503 before it could be)."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = part({"alg": "RS256", "kid": "k1", "typ": "JWT"})
    claims = part({"iss": issuer, "aud": "igw", "exp": 4_000_000_000})
    return f"{header}.{claims}.c2lnbmF0dXJl"


_CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hello demo"}]}
_MESSAGE = {"model": "demo/echo", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello demo"}]}
_BIG = "x" * 4096
_BEARER = {"Authorization": f"Bearer {_token(ISSUER)}"}


@dataclass(frozen=True)
class Call:
    """One chosen request, the answer it must get, and what must hold of that answer."""

    config: str
    operation: str
    status: int
    path_parameters: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw: bytes | None = None  # sent as it is instead of ``body``
    url_path: str = ""  # sent instead of the operation's path with ``path_parameters``
    media_type: str = ""  # the answer's content type starts with it
    expect: Callable[[requests.Response], bool] | None = None


def _events(response: requests.Response) -> list[str]:
    return [line.partition(":")[2].strip() for line in response.text.splitlines()
            if line.startswith("event:")]


CALLS: dict[str, Call] = {
    "health": Call("demo", "GET /health", 200, expect=lambda r: r.json() == {"message": "OK"}),
    "health-head": Call("demo", "HEAD /health", 200, expect=lambda r: r.content == b""),
    "ready": Call("demo", "GET /ready", 200),
    "models": Call("demo", "GET /v1/models", 200, expect=lambda r: [
        m["id"] for m in r.json()["data"]] == ["demo/echo", "demo/echo-stream"]),
    "models-of-provider": Call("demo", "GET /v1/models", 200, query={"provider": "demo"}),
    "models-unknown-provider": Call("demo", "GET /v1/models", 400, query={"provider": "nope"}),
    "model": Call("demo", "GET /v1/models/{model_id}", 200,
                  {"model_id": "demo/echo"},
                  expect=lambda r: r.json()["id"] == "demo/echo"),
    "model-head": Call("demo", "HEAD /v1/models/{model_id}", 200,
                       {"model_id": "demo/echo"}),
    "model-encoded-slash": Call("demo", "GET /v1/models/{model_id}", 200,
                                {"model_id": "demo/echo"}, url_path="/v1/models/demo%2Fecho",
                                expect=lambda r: r.json()["id"] == "demo/echo"),
    "model-missing": Call("demo", "GET /v1/models/{model_id}", 404,
                          {"model_id": "demo/nope"}),
    "model-unknown-provider": Call("demo", "GET /v1/models/{model_id}", 400,
                                   {"model_id": "nope/x"}),
    "chat": Call("demo", "POST /v1/chat/completions", 200, body=_CHAT,
                 media_type="application/json",
                 expect=lambda r: r.json()["choices"][0]["message"]["content"] == "hello demo"),
    "chat-stream": Call("demo", "POST /v1/chat/completions", 200,
                        body={**_CHAT, "stream": True}, media_type="text/event-stream",
                        expect=lambda r: r.text.rstrip().endswith("data: [DONE]")),
    "chat-provider-query": Call("demo", "POST /v1/chat/completions", 200,
                                query={"provider": "demo"}, body={**_CHAT, "model": "echo"}),
    "chat-bare-model": Call("demo", "POST /v1/chat/completions", 400,
                            body={**_CHAT, "model": "echo"}),
    "chat-malformed": Call("demo", "POST /v1/chat/completions", 400, raw=b"{not json"),
    "embeddings": Call("demo", "POST /v1/embeddings", 400,
                       body={"model": "demo/echo", "input": "x"}),
    "responses": Call("demo", "POST /v1/responses", 400,
                      body={"model": "demo/echo", "input": "x"}),
    "response": Call("demo", "GET /v1/responses/{id}", 400, {"id": "resp_1"}),
    "response-delete": Call("demo", "DELETE /v1/responses/{id}", 400, {"id": "resp_1"},
                            query={"provider": "demo"}),
    "response-items": Call("demo", "GET /v1/responses/{id}/input_items", 400, {"id": "resp_1"}),
    "response-cancel": Call("demo", "POST /v1/responses/{id}/cancel", 400, {"id": "resp_1"}),
    "messages": Call("demo", "POST /v1/messages", 200, body=_MESSAGE,
                     media_type="application/json",
                     expect=lambda r: r.json()["content"] == [{"type": "text",
                                                               "text": "hello demo"}]),
    "messages-stream": Call("demo", "POST /v1/messages", 200, body={**_MESSAGE, "stream": True},
                            media_type="text/event-stream",
                            expect=lambda r: _events(r)[-1] == "message_stop"),
    "messages-no-max-tokens": Call("demo", "POST /v1/messages", 400,
                                   body={k: v for k, v in _MESSAGE.items()
                                         if k != "max_tokens"},
                                   expect=lambda r: r.json()["type"] == "error"),
    "messages-malformed": Call("demo", "POST /v1/messages", 400, raw=b"[1,",
                               expect=lambda r: r.json()["type"] == "error"),
    "count-tokens": Call("demo", "POST /v1/messages/count_tokens", 400,
                         body={"model": "demo/echo", "messages": _MESSAGE["messages"]},
                         expect=lambda r: r.json()["type"] == "error"),
    "tools-not-exposed": Call("demo", "GET /v1/mcp/tools", 403),
    "proxy-models": Call("demo", "GET /proxy/{provider}/{path}", 200,
                         {"provider": "demo", "path": "models"}),
    "proxy-chat": Call("demo", "POST /proxy/{provider}/{path}", 200,
                       {"provider": "demo", "path": "chat/completions"}, body=_CHAT),
    "proxy-unknown-provider": Call("demo", "GET /proxy/{provider}/{path}", 400,
                                   {"provider": "nope", "path": "models"}),
    "tools": Call("strict", "GET /v1/mcp/tools", 200,
                  expect=lambda r: r.json() == {"object": "list", "data": []}),
    "proxy-disabled": Call("strict", "GET /proxy/{provider}/{path}", 404,
                           {"provider": "demo", "path": "models"}),
    "chat-policy": Call("strict", "POST /v1/chat/completions", 403,
                        body={**_CHAT, "model": "demo/echo-stream"}),
    "messages-policy": Call("strict", "POST /v1/messages", 403,
                            body={**_MESSAGE, "model": "demo/echo-stream"}),
    "model-policy": Call("strict", "GET /v1/models/{model_id}", 404,
                         {"model_id": "demo/echo-stream"}),
    "chat-too-large": Call("strict", "POST /v1/chat/completions", 413,
                           body={**_CHAT, "padding": _BIG}),
    "messages-too-large": Call("strict", "POST /v1/messages", 413,
                               body={**_MESSAGE, "padding": _BIG},
                               expect=lambda r: r.json()["type"] == "error"),
    "routed-chat": Call("routed", "POST /v1/chat/completions", 200,
                        body={**_CHAT, "model": "fast-chat"},
                        expect=lambda r: (r.headers["x-selected-provider"],
                                          r.headers["x-selected-model"]) == ("demo", "echo")),
    "routed-chat-stream": Call("routed", "POST /v1/chat/completions", 200,
                               body={**_CHAT, "model": "fast-chat", "stream": True},
                               media_type="text/event-stream"),
    "routed-models": Call("routed", "GET /v1/models", 200,
                          expect=lambda r: "fast-chat" in [m["id"] for m in r.json()["data"]]),
    "routed-model": Call("routed", "GET /v1/models/{model_id}", 200, {"model_id": "fast-chat"},
                         expect=lambda r: r.json()["owned_by"] == "igw"),
    "routed-messages": Call("routed", "POST /v1/messages", 200,
                            body={**_MESSAGE, "model": "fast-chat"}),
    "routed-embeddings": Call("routed", "POST /v1/embeddings", 400,
                              body={"model": "fast-chat", "input": "x"}),
    "auth-health": Call("auth", "GET /health", 200),
    "auth-ready": Call("auth", "GET /ready", 503,
                       expect=lambda r: r.json()["status"] == "not ready"),
    "auth-no-token": Call("auth", "GET /v1/models", 401,
                          expect=lambda r: "invalid_token" in r.headers["www-authenticate"]),
    "auth-no-token-messages": Call("auth", "POST /v1/messages", 401, body=_MESSAGE,
                                   expect=lambda r: r.json()["type"] == "error"),
    "auth-no-token-proxy": Call("auth", "GET /proxy/{provider}/{path}", 401,
                                {"provider": "demo", "path": "models"}),
    "auth-keys-not-loaded": Call("auth", "GET /v1/models", 503, headers=_BEARER,
                                 expect=lambda r: r.headers.get("retry-after") == "5"),
    "auth-keys-not-loaded-messages": Call("auth", "POST /v1/messages", 503, headers=_BEARER,
                                          body=_MESSAGE,
                                          expect=lambda r: r.json()["type"] == "error"),
}


@pytest.mark.parametrize("frontend", ["standalone", "asgi"])
@pytest.mark.parametrize("name", list(CALLS))
def test_chosen_requests_keep_the_contract(gateways: Gateways, frontend: str,
                                           name: str) -> None:
    call = CALLS[name]
    gateway = gateways.get(frontend, call.config)
    operation = SCHEMA.find_operation_by_label(call.operation)
    assert operation is not None
    case = operation.Case(path_parameters=call.path_parameters, query=call.query,
                          headers=call.headers,
                          **({"body": call.body, "media_type": "application/json"}
                             if call.body is not None else {}))
    body = call.raw if call.raw is not None else (
        None if call.body is None else json.dumps(call.body).encode())
    headers = {**call.headers, **({"content-type": "application/json"} if body else {})}
    response = requests.request(case.method, gateway.url + (call.url_path or case.formatted_path),
                                params=call.query, headers=headers, data=body, timeout=15)
    assert response.status_code == call.status, response.text
    # A 5xx chosen here is a documented one (auth's 503), asserted above.
    case.validate_response(response, checks=CHECKS if call.status < 500 else CHECKS[1:])
    assert response.headers.get("content-type", "").startswith(call.media_type)
    if call.expect is not None:
        assert call.expect(response), response.text


# -- what no operation covers --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/chat/completions", "POST"),
    ("HEAD", "/v1/messages", "POST"),
    ("POST", "/v1/models", "GET, HEAD"),
    ("PUT", "/v1/responses/resp_1", "GET, POST, DELETE, HEAD"),
])
def test_a_method_not_served_is_a_405_with_allow(gateways: Gateways, method: str, path: str,
                                                 allow: str) -> None:
    gateway = gateways.get("standalone", "demo")
    response = requests.request(method, gateway.url + path, timeout=10)
    documented = DOCUMENT["components"]["responses"]["MethodNotAllowed"]
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    for header in documented["headers"]:
        assert header.lower() in response.headers
    if method != "HEAD":
        jsonschema_rs.validate(ERROR_SCHEMA, response.json())


def test_an_unknown_path_is_a_404_error(gateways: Gateways) -> None:
    response = requests.get(gateways.get("standalone", "demo").url + "/v2/nothing", timeout=10)
    assert response.status_code == 404
    assert "x-request-id" in response.headers
    jsonschema_rs.validate(ERROR_SCHEMA, response.json())


def test_get_openapi_json_serves_the_document(gateways: Gateways) -> None:
    gateway = gateways.get("standalone", "demo")
    response = _served(gateway)
    if response.status_code == 404:
        pytest.skip(NOT_ROUTED)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == document_bytes()
    head = requests.head(gateway.url + "/openapi.json", timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(document_bytes()))
