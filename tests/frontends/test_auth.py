"""OIDC/JWT auth end to end: a real issuer over HTTP, real keys, both frontends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpcore
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import MockProvider
from tests.support.oidc_issuer import OIDCIssuer


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCIssuer]:
    with OIDCIssuer(keys=("RSA", "EC")) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: GatewayFactory, module_openai: MockProvider,
            idp: OIDCIssuer) -> RunningGateway:
    return module_gateway_factory({
        "OPENAI_API_URL": module_openai.base_url,
        "OPENAI_API_KEY": module_openai.api_key,
        "AUTH_ENABLE": "true",
        "AUTH_OIDC_ISSUER": idp.issuer,
        "AUTH_OIDC_CLIENT_ID": idp.client_id,
        "AUTH_OIDC_CLIENT_SECRET": "client-secret-never-logged",
        "ENVIRONMENT": "development",
    })


def _get(gateway: RunningGateway, path: str, token: str | bytes | None = None,
         scheme: bytes = b"Bearer ") -> httpcore.Response:
    headers = []
    if token is not None:
        raw = token.encode() if isinstance(token, str) else token
        headers.append((b"authorization", scheme + raw))
    return httpcore.request("GET", gateway.url + path, headers=headers)


def _assert_401(response: httpcore.Response) -> None:
    assert response.status == 401
    challenge = {k.lower(): v for k, v in response.headers}[b"www-authenticate"]
    assert challenge.startswith(b"Bearer")
    assert b'error="invalid_token"' in challenge
    error = json.loads(response.content)["error"]
    assert error["message"] == "invalid or missing bearer token"


def test_health_needs_no_token(gateway: RunningGateway) -> None:
    assert _get(gateway, "/health").status == 200


def test_valid_token_through_the_openai_sdk(gateway: RunningGateway, idp: OIDCIssuer,
                                            module_openai: MockProvider) -> None:
    token = idp.mint()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=token, max_retries=0)
    answer = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "authorized"}])
    assert answer.choices[0].message.content == "echo: authorized"
    assert token not in repr(module_openai.chat_requests[-1].headers)
    assert token not in gateway.log_text()


@pytest.mark.parametrize("path", ["/v1/models", "/proxy/openai/v1/models", "/v1/nope",
                                  "/v1/responses/resp_1", "/v1/mcp/tools"])
def test_every_route_but_health_needs_a_token(gateway: RunningGateway, path: str) -> None:
    _assert_401(_get(gateway, path))


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens",
                                  "/v1/responses", "/v1/embeddings"])
def test_every_model_endpoint_needs_a_token(gateway: RunningGateway, path: str) -> None:
    response = httpcore.request("POST", gateway.url + path, content=b'{"model":"claude-x"}',
                                headers=[(b"content-type", b"application/json")])
    _assert_401(response)


def test_ready_needs_no_token(gateway: RunningGateway) -> None:
    assert _get(gateway, "/ready").status == 200


def test_wrong_scheme_and_malformed(gateway: RunningGateway, idp: OIDCIssuer) -> None:
    _assert_401(_get(gateway, "/v1/models", idp.mint(), scheme=b"Basic "))
    _assert_401(_get(gateway, "/v1/models", "not.a.jwt"))
    _assert_401(_get(gateway, "/v1/models", b"\xff\xfe garbage"))
    assert gateway.wait_log("malformed")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 600}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not_yet_valid"),
        ({"aud": "someone-else"}, "wrong_audience"),
    ],
)
def test_claims_are_checked(gateway: RunningGateway, idp: OIDCIssuer,
                            claims: dict[str, object], reason: str) -> None:
    _assert_401(_get(gateway, "/v1/models", idp.mint(claims)))
    assert gateway.wait_log(reason)


@pytest.mark.parametrize("suffix", ["/", "x"])
def test_issuer_must_match_byte_for_byte(gateway: RunningGateway, idp: OIDCIssuer,
                                         suffix: str) -> None:
    _assert_401(_get(gateway, "/v1/models", idp.mint({"iss": idp.issuer + suffix})))
    assert gateway.wait_log("issuer mismatch")


def test_http_versus_https_issuer(gateway: RunningGateway, idp: OIDCIssuer) -> None:
    other = idp.issuer.replace("http://", "https://", 1)
    _assert_401(_get(gateway, "/v1/models", idp.mint({"iss": other})))
    assert gateway.wait_log("http vs https")


def test_bad_signature_alg_none_and_hs256_key_confusion(gateway: RunningGateway,
                                                        idp: OIDCIssuer) -> None:
    header, body, signature = idp.mint().split(".")
    forged = f"{header}.{body}.{signature[:-4]}AAAA"
    _assert_401(_get(gateway, "/v1/models", forged))
    _assert_401(_get(gateway, "/v1/models", idp.mint(alg="none")))
    _assert_401(_get(gateway, "/v1/models", idp.mint(alg="HS256")))


def test_rotated_key_is_picked_up_without_restart(gateway: RunningGateway,
                                                  idp: OIDCIssuer) -> None:
    before = idp.jwks_requests
    new_key = idp.rotate("RSA")
    response = _get(gateway, "/v1/models", idp.mint(key=new_key))
    assert response.status == 200
    assert idp.jwks_requests == before + 1


def test_flood_of_unknown_kids_is_rate_limited(gateway: RunningGateway,
                                               idp: OIDCIssuer) -> None:
    time.sleep(11)  # let the previous test's refetch window pass
    before = idp.jwks_requests
    for i in range(15):
        _assert_401(_get(gateway, "/v1/models", idp.mint(kid=f"random-{i}")))
    assert idp.jwks_requests - before <= 1
    assert gateway.wait_log("unknown key id")


def test_secrets_never_reach_the_log(gateway: RunningGateway,
                                     module_openai: MockProvider) -> None:
    log = gateway.log_text()
    assert "client-secret-never-logged" not in log
    assert module_openai.api_key not in log


def test_issuer_unreachable_at_startup_answers_503_then_recovers(
    gateway_factory: GatewayFactory, mock_openai: MockProvider
) -> None:
    issuer = OIDCIssuer()
    issuer.start()
    issuer.down("refuse")
    try:
        gateway = gateway_factory({
            "OPENAI_API_URL": mock_openai.base_url, "OPENAI_API_KEY": mock_openai.api_key,
            "AUTH_ENABLE": "true", "AUTH_OIDC_ISSUER": issuer.issuer,
            "AUTH_OIDC_CLIENT_ID": issuer.client_id,
        })
        response = _get(gateway, "/v1/models", issuer.mint())
        assert response.status == 503
        assert "auth not ready" in json.loads(response.content)["error"]["message"]
        _assert_401(_get(gateway, "/v1/models"))
        # Readiness says why, without a token; liveness stays up.
        ready = _get(gateway, "/ready")
        assert ready.status == 503 and "keys" in json.loads(ready.content)["reasons"][0]
        assert _get(gateway, "/health").status == 200
        issuer.up()
        deadline = time.monotonic() + 20
        status = 503
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = _get(gateway, "/v1/models", issuer.mint()).status
        assert status == 200
        assert _get(gateway, "/ready").status == 200
    finally:
        issuer.stop()


def test_anthropic_sdks_may_carry_the_token_in_x_api_key(
    gateway: RunningGateway, idp: OIDCIssuer, module_openai: MockProvider
) -> None:
    body = json.dumps({"model": "openai/gpt-4o-mini", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "via x-api-key"}]}).encode()

    def post(path: str, key: str) -> httpcore.Response:
        return httpcore.request("POST", gateway.url + path, content=body, headers=[
            (b"content-type", b"application/json"), (b"x-api-key", key.encode()),
            (b"anthropic-version", b"2023-06-01")])

    token = idp.mint()
    answer = post("/v1/messages", token)
    assert answer.status == 200 and json.loads(answer.content)["type"] == "message"
    assert token not in repr(module_openai.chat_requests[-1].headers)
    refused = post("/v1/messages", "not-a-jwt")
    assert refused.status == 401 and json.loads(refused.content)["type"] == "error"
    # Only the Anthropic endpoints read it: OpenAI clients send Authorization.
    assert post("/v1/chat/completions", token).status == 401
