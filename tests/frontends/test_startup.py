"""Starting the gateway: refused configurations, startup lines, development logs, mounting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpcore
import openai
import pytest

from igw_io.compiled import build_kind
from tests.conftest import GatewayFactory, RunningGateway
from tests.support.mock_provider import MockProvider, free_port

ROOT = Path(__file__).resolve().parents[2]


def _run_igw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "igw_standalone", *args], env=full,
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_enable_vision_capitalised_is_refused_naming_the_variable() -> None:
    result = _run_igw({"ENABLE_VISION": "True", "SERVER_PORT": str(free_port())})
    assert result.returncode == 2
    assert "ENABLE_VISION" in result.stderr
    assert "True" in result.stderr


def test_every_bad_variable_is_reported_at_once() -> None:
    result = _run_igw({"AUTH_ENABLE": "yes", "MCP_CLIENT_TIMEOUT": "5", "SERVER_PORT": "http",
                       "TELEMETRY_ENABLE": "1"})
    assert result.returncode == 2
    for name in ("AUTH_ENABLE", "MCP_CLIENT_TIMEOUT", "SERVER_PORT", "TELEMETRY_ENABLE"):
        assert name in result.stderr


def test_asgi_app_refuses_bad_configuration() -> None:
    port = free_port()
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "ENABLE_VISION": "True"}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "igw_asgi:app", "--port", str(port)],
        env=full, capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert result.returncode != 0
    assert "ENABLE_VISION" in result.stdout + result.stderr


def test_startup_lines_name_each_feature_and_keyed_providers(
    gateway_factory: GatewayFactory, mock_openai: MockProvider
) -> None:
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key,
                               "ENABLE_VISION": "true"})
    log = gateway.log_text()
    for line in ("auth disabled", "mcp disabled", "vision enabled", "telemetry disabled"):
        assert line in log
    assert "providers with keys: openai" in log
    assert mock_openai.api_key not in log


def test_pure_python_switch_runs_the_sources_and_says_so(
    gateway_factory: GatewayFactory, mock_openai: MockProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = build_kind()  # how this suite's own process imported the request path
    monkeypatch.setenv("IGW_PURE_PYTHON", "1")
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key})
    assert "request path pure Python" in gateway.log_text()
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    monkeypatch.delenv("IGW_PURE_PYTHON")
    if compiled == "compiled":
        other = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                                 "OPENAI_API_KEY": mock_openai.api_key})
        assert "request path compiled" in other.log_text()


def test_demo_flag_serves_chat_without_any_provider(gateway_factory: GatewayFactory,
                                                    frontend: str) -> None:
    env = {"IGW_DEMO": "true"} if frontend == "asgi" else {}
    args = ("--demo",) if frontend == "standalone" else ()
    gateway = gateway_factory(env, args=args)
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["demo/echo", "demo/echo-stream"]
    answer = client.chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": "hello demo"}])
    assert answer.choices[0].message.content == "hello demo"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="demo/echo", stream=True, messages=[{"role": "user", "content": "hello demo"}])
        if c.choices)
    assert text == "hello demo"


def test_without_demo_there_is_no_demo_model(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory({})
    response = httpcore.request(
        "POST", gateway.url + "/v1/chat/completions",
        content=b'{"model":"demo/echo","messages":[{"role":"user","content":"x"}]}')
    assert response.status == 400


def test_development_mode_logs_truncated_request_and_upstream_response(
    gateway_factory: GatewayFactory, mock_openai: MockProvider
) -> None:
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key,
                               "ENVIRONMENT": "development",
                               "DEBUG_CONTENT_TRUNCATE_WORDS": "3",
                               "DEBUG_MAX_MESSAGES": "2"})
    client = openai.OpenAI(base_url=gateway.base_url, api_key="client-bearer-xyz",
                           max_retries=0)
    words = " ".join(f"word{i}" for i in range(40))
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=[
        {"role": "system", "content": "first message dropped from the log"},
        {"role": "user", "content": "second"},
        {"role": "user", "content": words},
    ])
    assert gateway.wait_log("upstream response")
    log = gateway.log_text()
    assert "outbound provider request" in log
    assert "word0 word1 word2" in log and "word3 " not in log.split("outbound")[1][:2000]
    assert "first message dropped" not in log
    assert "status=200" in log
    assert mock_openai.api_key not in log
    assert "client-bearer-xyz" not in log


def test_vision_enabled_forwards_images_and_refuses_text_only_models(
    gateway_factory: GatewayFactory, mock_openai: MockProvider
) -> None:
    gateway = gateway_factory({"OPENAI_API_URL": mock_openai.base_url,
                               "OPENAI_API_KEY": mock_openai.api_key,
                               "ENABLE_VISION": "true"})
    image = [{"type": "text", "text": "what is it"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    client.chat.completions.create(model="openai/gpt-4o",
                                   messages=[{"role": "user", "content": image}])
    assert mock_openai.chat_requests[-1].json["messages"][0]["content"] == image
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="openai/gpt-3.5-turbo",
                                       messages=[{"role": "user", "content": image}])
    assert "gpt-3.5-turbo" in str(caught.value)


def test_asgi_app_mounted_under_a_prefix(tmp_path: Path, mock_openai: MockProvider) -> None:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "OPENAI_API_URL": mock_openai.base_url, "OPENAI_API_KEY": mock_openai.api_key}
    log = open(tmp_path / "mounted.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.support.mounted_app:app", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        gateway = RunningGateway.__new__(RunningGateway)
        gateway.url = f"http://127.0.0.1:{port}/gateway"
        gateway.process = process
        gateway.log_path = tmp_path / "mounted.log"
        gateway._log = log
        gateway.wait_ready()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/gateway/v1", api_key="x",
                               max_retries=0)
        answer = client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "mounted"}])
        assert answer.choices[0].message.content == "echo: mounted"
        response = httpcore.request("GET", f"http://127.0.0.1:{port}/gateway/proxy/openai/v1/models")
        assert response.status == 200
        assert json.loads(response.content)["data"]
        assert httpcore.request("GET", f"http://127.0.0.1:{port}/").content == b"host app"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
