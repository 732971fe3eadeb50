"""Routing aliases end to end: three mock providers, one alias with a fallback, the
openai SDK as the client, on both frontends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpcore
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import (
    Hang,
    MockProvider,
    ResetBeforeHeaders,
    ResetMidStream,
    Status,
    free_port,
)

ROUTES = """\
models:
  fast:
    strategy: ordered
    deployments:
      - provider: groq
        model: llama-3.3-70b-versatile
      - provider: openai
        model: gpt-4o-mini
    retries: 1
    fallbacks: [cheap]
    cooldown: 30s
    timeout: 1s
  cheap:
    deployments:
      - provider: mistral
        model: mistral-small-latest
"""
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def mocks() -> Iterator[dict[str, MockProvider]]:
    with MockProvider() as groq, MockProvider() as openai_, MockProvider() as mistral:
        yield {"groq": groq, "openai": openai_, "mistral": mistral}


def _env(mocks: dict[str, MockProvider], path: Path) -> dict[str, str]:
    env = {"ROUTING_ENABLED": "true", "ROUTING_CONFIG_PATH": str(path)}
    for name, mock in mocks.items():
        env[f"{name.upper()}_API_URL"] = mock.base_url
        env[f"{name.upper()}_API_KEY"] = mock.api_key
    return env


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTES)
    return path


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, mocks: dict[str, MockProvider],
            routes: Path) -> RunningGateway:
    return gateway_factory(_env(mocks, routes))


def _client(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0,
                         timeout=20)


def _chat(gateway: RunningGateway, **more: object) -> tuple[dict[str, str], str]:
    raw = _client(gateway).chat.completions.with_raw_response.create(
        model="fast", messages=HELLO, **more)  # type: ignore[call-overload]
    completion = raw.parse()
    return dict(raw.headers), completion.choices[0].message.content or ""


def _served(mocks: dict[str, MockProvider]) -> dict[str, int]:
    return {name: len(mock.chat_requests) for name, mock in mocks.items()}


def test_an_alias_is_served_by_its_first_deployment(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    headers, content = _chat(gateway)
    assert content == "echo: hello"
    assert headers["x-selected-provider"] == "groq"
    assert headers["x-selected-model"] == "llama-3.3-70b-versatile"
    assert mocks["groq"].chat_requests[-1].json["model"] == "llama-3.3-70b-versatile"
    assert _served(mocks) == {"groq": 1, "openai": 0, "mistral": 0}


def test_a_rate_limited_deployment_is_skipped_until_it_cools(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(Status(429, {"error": {"message": "slow down"}},
                                headers=[("retry-after", "60")]))
    headers, _ = _chat(gateway)
    assert headers["x-selected-provider"] == "openai"
    # The same body went to both, each with its own model.
    first, second = mocks["groq"].chat_requests[-1].json, mocks["openai"].chat_requests[-1].json
    assert {**first, "model": ""} == {**second, "model": ""}
    headers, _ = _chat(gateway)  # groq is cooling: straight to openai
    assert headers["x-selected-provider"] == "openai"
    assert _served(mocks) == {"groq": 1, "openai": 2, "mistral": 0}


def test_reset_and_503_fall_back_to_the_next_alias(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(ResetBeforeHeaders())
    mocks["openai"].script(Status(503, {"error": {"message": "overloaded"}}))
    headers, content = _chat(gateway)
    assert headers["x-selected-provider"] == "mistral" and content == "echo: hello"
    assert _served(mocks) == {"groq": 1, "openai": 1, "mistral": 1}


def test_when_all_fail_the_last_error_comes_back_with_the_attempt_count(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(Status(502, {"error": {"message": "bad gateway"}}))
    mocks["openai"].script(Status(500, {"error": {"message": "boom"}}))
    mocks["mistral"].script(Status(529, {"error": {"message": "overloaded, try later"}}))
    with pytest.raises(openai.APIStatusError) as failed:
        _chat(gateway)
    assert failed.value.status_code == 529
    assert failed.value.response.headers["x-attempts"] == "3"
    assert "overloaded, try later" in failed.value.message


def test_a_client_error_is_not_retried(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(Status(400, {"error": {"message": "bad messages"}}))
    with pytest.raises(openai.BadRequestError):
        _chat(gateway)
    assert _served(mocks) == {"groq": 1, "openai": 0, "mistral": 0}


def test_a_stalled_deployment_times_out_and_the_stream_comes_from_the_next(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(Hang())
    chunks = list(_client(gateway).chat.completions.create(model="fast", messages=HELLO,
                                                           stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello"
    assert _served(mocks)["openai"] == 1


def test_a_stream_that_breaks_after_it_started_is_not_sent_again(
    gateway: RunningGateway, mocks: dict[str, MockProvider],
) -> None:
    mocks["groq"].script(ResetMidStream(after_chunks=2))
    with pytest.raises((openai.APIError, httpcore.RemoteProtocolError)):
        list(_client(gateway).chat.completions.create(model="fast", messages=HELLO,
                                                      stream=True))
    assert _served(mocks) == {"groq": 1, "openai": 0, "mistral": 0}


def test_models_list_the_aliases(gateway: RunningGateway) -> None:
    ids = {m.id: m for m in _client(gateway).models.list()}
    assert ids["fast"].owned_by == "igw" and "cheap" in ids
    assert any(i.startswith("groq/") for i in ids)  # the providers' models are still listed


def test_routing_metrics(gateway_factory: GatewayFactory, mocks: dict[str, MockProvider],
                         routes: Path) -> None:
    port = free_port()
    gateway = gateway_factory({**_env(mocks, routes), "TELEMETRY_ENABLE": "true",
                               "TELEMETRY_METRICS_PORT": str(port)})
    mocks["groq"].script(Status(429, {"error": {"message": "slow"}}))
    _chat(gateway)
    text = httpcore.request("GET", f"http://127.0.0.1:{port}/metrics").content.decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("igw_routing_attempts_total", alias="fast", provider="groq",
                 model="llama-3.3-70b-versatile", outcome="retry") == 1
    assert value("igw_routing_attempts_total", alias="fast", provider="openai",
                 model="gpt-4o-mini", outcome="ok") == 1
    assert value("igw_routing_cooldowns_total", alias="fast", provider="groq",
                 model="llama-3.3-70b-versatile") == 1
    assert value("igw_routing_cooling_deployments", alias="fast") == 1


def test_a_bad_routing_file_refuses_to_start(tmp_path: Path,
                                             mocks: dict[str, MockProvider]) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTES.replace("strategy: ordered", "strategy: fastest")
                    .replace("fallbacks: [cheap]", "fallbacks: [nowhere]"))
    result = subprocess.run([sys.executable, "-m", "igw_standalone"], env={
        **_env(mocks, path), "PATH": "/usr/bin:/bin", "SERVER_PORT": str(free_port())},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{path}:3 models.fast.strategy='fastest'" in result.stderr
    assert "nowhere" in result.stderr


def test_sighup_reloads_the_file_and_a_bad_reload_keeps_the_routes(
    frontend: str, gateway: RunningGateway, mocks: dict[str, MockProvider], routes: Path,
) -> None:
    if frontend != "standalone":
        pytest.skip("the ASGI server owns the process's signals")
    routes.write_text(ROUTES.replace("provider: groq", "provider: mistral")
                      .replace("llama-3.3-70b-versatile", "mistral-large-latest"))
    gateway.process.send_signal(signal.SIGHUP)
    assert gateway.wait_log("routing reloaded")
    headers, _ = _chat(gateway)
    assert headers["x-selected-provider"] == "mistral"
    routes.write_text("models: [not, a, mapping]\n")
    gateway.process.send_signal(signal.SIGHUP)
    assert gateway.wait_log("routing reload refused")
    headers, _ = _chat(gateway)
    assert headers["x-selected-model"] == "mistral-large-latest"
    assert json.loads(httpcore.request("GET", gateway.url + "/health").content)
