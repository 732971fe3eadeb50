"""Telemetry through real gateways: scrape ``/metrics`` over HTTP, read the log of a full run.

Every scrape is parsed with prometheus-client's own parser. Counters are compared
before and after an action, so the tests sharing a gateway stay independent.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpcore
import openai
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, RunningGateway, provider_env
from tests.support.mcp_servers import ToolServer
from tests.support.mock_provider import (
    MockProvider,
    RecordedRequest,
    Reply,
    Respond,
    Status,
    free_port,
)

CHAT = "/v1/chat/completions"
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
CLIENT_TOKEN = "client-bearer-token-never-logged"

Snapshot = list[tuple[str, dict[str, str], float]]


class Telemetry:
    """A gateway with telemetry on, and the URL of its metrics."""

    def __init__(self, gateway: RunningGateway, metrics_url: str) -> None:
        self.gateway = gateway
        self.metrics_url = metrics_url
        self.pool = httpcore.ConnectionPool()

    def scrape(self) -> Snapshot:
        response = httpcore.request("GET", self.metrics_url,
                                    extensions={"timeout": {"connect": 5, "read": 10}})
        assert response.status == 200
        assert response.headers
        text = response.content.decode()
        return [(s.name, s.labels, s.value)
                for family in text_string_to_metric_families(text) for s in family.samples]

    def request(self, method: str, path: str, body: bytes = b"",
                headers: list[tuple[bytes, bytes]] | None = None) -> httpcore.Response:
        """Send one request on the shared keep-alive connection (so requests stay ordered)."""
        return self.pool.request(
            method, self.gateway.url + path, content=body,
            headers=[(b"content-type", b"application/json"), *(headers or [])],
            extensions={"timeout": {"connect": 5, "read": 20}},
        )


def total(snapshot: Snapshot, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in snapshot if n == name and labels.items() <= ls.items())


def wait_for(telemetry: Telemetry, condition: Callable[[Snapshot], bool]) -> Snapshot:
    """Scrape until ``condition`` holds and two scrapes in a row agree.

    Metrics are recorded just after the response ends, one metric after another, so
    a scrape can land halfway through; the tests send nothing while this waits.
    """
    deadline = time.monotonic() + 10
    previous: Snapshot | None = None
    while True:
        snapshot = telemetry.scrape()
        settled = snapshot == previous and condition(snapshot)
        if settled or time.monotonic() > deadline:
            return snapshot
        previous = snapshot
        time.sleep(0.02)


def telemetry_env(mock: MockProvider, metrics_port: int) -> dict[str, str]:
    return {**provider_env(mock), "TELEMETRY_ENABLE": "true",
            "TELEMETRY_METRICS_PORT": str(metrics_port)}


@pytest.fixture(scope="module")
def telemetry(module_gateway_factory: GatewayFactory, module_openai: MockProvider) -> Telemetry:
    port = free_port()
    gateway = module_gateway_factory(telemetry_env(module_openai, port))
    return Telemetry(gateway, f"http://127.0.0.1:{port}/metrics")


@pytest.fixture(autouse=True)
def _clean(module_openai: MockProvider) -> Iterator[None]:
    module_openai.clear()
    yield


@pytest.fixture
def client(telemetry: Telemetry) -> openai.OpenAI:
    return openai.OpenAI(base_url=telemetry.gateway.base_url, api_key=CLIENT_TOKEN,
                         max_retries=0, timeout=20)


CHAT_200 = {"provider": "openai", "request_method": "POST", "request_path": CHAT,
            "status_code": "200"}
MODEL = {"provider": "openai", "model": "gpt-4o-mini"}


def test_a_chat_completion_is_counted_with_its_labels_and_the_providers_token_usage(
    telemetry: Telemetry, client: openai.OpenAI, module_openai: MockProvider
) -> None:
    before = telemetry.scrape()
    module_openai.script(Reply(usage=USAGE))
    client.chat.completions.create(model="openai/gpt-4o-mini",
                                   messages=[{"role": "user", "content": "count me"}])
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total", **CHAT_200)
                     > total(before, "llm_responses_total", **CHAT_200))

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("llm_responses_total", **CHAT_200) == 1
    assert delta("llm_request_duration_milliseconds_count", provider="openai",
                 request_method="POST", request_path=CHAT) == 1
    assert delta("llm_usage_prompt_tokens_total", **MODEL) == 11
    assert delta("llm_usage_completion_tokens_total", **MODEL) == 7
    assert delta("llm_usage_total_tokens_total", **MODEL) == 18
    gen_ai = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o-mini"}
    assert delta("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **gen_ai) == 11
    assert delta("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **gen_ai) == 7
    assert delta("gen_ai_server_request_duration_seconds_count", **gen_ai) == 1
    assert delta("gen_ai_server_time_to_first_token_seconds_count") == 0


def test_a_streamed_chat_counts_tokens_from_the_stream_and_time_to_first_token(
    telemetry: Telemetry, client: openai.OpenAI, module_openai: MockProvider
) -> None:
    before = telemetry.scrape()
    module_openai.script(Reply(content="one two three four five", usage=USAGE))
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "stream me"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "one two three four five"
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total", **CHAT_200)
                     > total(before, "llm_responses_total", **CHAT_200))

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("llm_responses_total", **CHAT_200) == 1
    assert delta("llm_usage_total_tokens_total", **MODEL) == 18
    assert delta("llm_usage_completion_tokens_total", **MODEL) == 7
    assert delta("gen_ai_server_time_to_first_token_seconds_count",
                 gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o-mini") == 1
    ttft = delta("gen_ai_server_time_to_first_token_seconds_sum")
    duration = delta("gen_ai_server_request_duration_seconds_sum")
    assert 0 < ttft <= duration


def test_the_seed_promql_sees_each_status_of_a_provider(
    telemetry: Telemetry, module_openai: MockProvider
) -> None:
    # sum by (status_code, request_path) (rate(llm_responses_total{provider="openai"}[5m]))
    before = telemetry.scrape()
    module_openai.script(Status(429, {"error": {"message": "slow down", "type": "rate_limit"}}),
                         Reply())
    body = json.dumps({"model": "openai/gpt-4o-mini",
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    assert telemetry.request("POST", CHAT, body).status == 429
    assert telemetry.request("POST", CHAT, body).status == 200
    assert telemetry.request("GET", "/v1/models?provider=openai").status == 200
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total",
                                                request_path="/v1/models")
                     > total(before, "llm_responses_total", request_path="/v1/models"))

    def by_status_and_path(snapshot: Snapshot) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for name, labels, value in snapshot:
            if name == "llm_responses_total" and labels["provider"] == "openai":
                key = (labels["status_code"], labels["request_path"])
                out[key] = out.get(key, 0) + value
        return out

    old, new = by_status_and_path(before), by_status_and_path(after)
    increase = {k: new[k] - old.get(k, 0) for k in new if new[k] != old.get(k, 0)}
    assert increase == {("429", CHAT): 1, ("200", CHAT): 1, ("200", "/v1/models"): 1}
    models_get = {"request_method": "GET", "request_path": "/v1/models", "status_code": "200"}
    assert total(after, "llm_responses_total", **models_get) - total(
        before, "llm_responses_total", **models_get) == 1


def test_proxy_and_health_traffic_is_never_counted(
    telemetry: Telemetry, module_openai: MockProvider
) -> None:
    before = telemetry.scrape()
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    assert telemetry.request("GET", "/health").status == 200
    assert telemetry.request("POST", "/proxy/openai/chat/completions", body).status == 200
    assert telemetry.request("GET", "/proxy/openai/v1/models").status == 200
    # A counted request on the same connection after them: once it shows, they were recorded.
    assert telemetry.request("GET", "/v1/models?provider=openai").status == 200
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total")
                     > total(before, "llm_responses_total"))
    assert total(after, "llm_responses_total") - total(before, "llm_responses_total") == 1
    assert total(after, "llm_usage_total_tokens_total") == total(
        before, "llm_usage_total_tokens_total")
    paths = {labels.get("request_path") for _, labels, _ in after}
    assert "/proxy" not in paths and "/health" not in paths


def test_arbitrary_paths_and_unknown_providers_add_no_series(telemetry: Telemetry) -> None:
    telemetry.request("GET", "/v1/models?provider=openai")
    before = wait_for(telemetry, lambda s: total(s, "llm_responses_total",
                                                 request_path="/v1/models") > 0)
    for i in range(5):
        telemetry.request("GET", f"/v1/nothing-{i}/x")
        telemetry.request("POST", CHAT, json.dumps(
            {"model": f"nope{i}/m{i}", "messages": [{"role": "user", "content": "x"}]}).encode())
    telemetry.request("GET", "/v1/models?provider=openai")
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total",
                                                request_path="/v1/models")
                     > total(before, "llm_responses_total", request_path="/v1/models"))
    def series(snapshot: Snapshot) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(n, tuple(sorted((k, v) for k, v in ls.items() if k != "le")))
                for n, ls, _ in snapshot}

    new = series(after) - series(before)
    for _, labels in new:
        assert dict(labels).get("provider", "unknown") == "unknown"
        assert dict(labels).get("gen_ai_provider_name", "unknown") == "unknown"
    # Ten distinct bad requests collapse into at most one new series per sample name.
    names = [name for name, _ in new]
    assert len(names) == len(set(names))


def test_access_lines_carry_method_path_status_duration_provider_and_the_clients_request_id(
    telemetry: Telemetry,
) -> None:
    body = b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    response = telemetry.request("POST", CHAT, body, [(b"x-request-id", b"trace-access-1")])
    assert response.status == 200
    assert (b"x-request-id", b"trace-access-1") in response.headers
    assert telemetry.gateway.wait_log('"request_id": "trace-access-1"')
    lines = _json_lines(telemetry.gateway.log_text())
    [access] = [line for line in lines
                if line.get("request_id") == "trace-access-1" and line["msg"] == "request"]
    assert access["level"] == "info"
    assert (access["method"], access["path"], access["status"], access["provider"]) == (
        "POST", CHAT, 200, "openai")
    assert isinstance(access["duration_ms"], (int, float))


def test_production_logs_are_one_json_object_per_line_without_keys(
    telemetry: Telemetry, module_openai: MockProvider
) -> None:
    telemetry.request("GET", "/v1/models")
    log = telemetry.gateway.log_text()
    lines = _json_lines(log)
    assert lines and all({"level", "ts", "msg"} <= set(line) for line in lines)
    assert module_openai.api_key not in log and CLIENT_TOKEN not in log


def _json_lines(log: str) -> list[dict[str, object]]:
    """The gateway's own log lines (uvicorn's and the listening banner are not JSON)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


# -- MCP tool calls ----------------------------------------------------------------------


def _calls_tool_once(tool: str) -> Respond:
    """A model that calls ``tool`` on its first turn and answers once it sees the result."""
    def choose(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1].get("role") == "tool":
            return Reply(content="done", usage=USAGE)
        return Reply(tool_calls=[{"id": "call_1", "function": {"name": tool, "arguments": {}
                                                                if tool == "mcp_fail" else
                                                                {"a": 2, "b": 3}}}])
    return Respond(choose)


def test_mcp_tool_calls_are_counted_by_tool_and_outcome(
    module_gateway_factory: GatewayFactory, module_openai: MockProvider
) -> None:
    with ToolServer("calc") as calc:
        port = free_port()
        gateway = module_gateway_factory({**telemetry_env(module_openai, port),
                                          "MCP_ENABLE": "true", "MCP_SERVERS": calc.url,
                                          "MCP_EXPOSE": "true"})
        telemetry = Telemetry(gateway, f"http://127.0.0.1:{port}/metrics")
        deadline = time.monotonic() + 10
        while b"mcp_add" not in telemetry.request("GET", "/v1/mcp/tools").content:
            assert time.monotonic() < deadline, "the MCP server's tools never showed up"
            time.sleep(0.05)
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        for tool in ("mcp_add", "mcp_add", "mcp_fail"):
            module_openai.default_behaviour = _calls_tool_once(tool)
            client.chat.completions.create(model="openai/gpt-4o-mini",
                                           messages=[{"role": "user", "content": "use it"}])
        module_openai.default_behaviour = None
        snapshot = wait_for(telemetry, lambda s: total(s, "llm_tool_calls_total") >= 3)
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert total(snapshot, "llm_tool_calls_total", tool_name="add", **labels) == 2
    assert total(snapshot, "llm_tool_calls_success_total", tool_name="add", **labels) == 2
    assert total(snapshot, "llm_tool_calls_failure_total", tool_name="add") == 0
    assert total(snapshot, "llm_tool_calls_total", tool_name="fail", **labels) == 1
    assert total(snapshot, "llm_tool_calls_failure_total", tool_name="fail", **labels) == 1
    assert total(snapshot, "llm_tool_call_duration_seconds_count") == 3
    assert total(snapshot, "llm_responses_total", **CHAT_200) == 3


# -- development logs: the request id on every line, no secret in a full run ---------------


@pytest.fixture(scope="module")
def dev_gateway(module_gateway_factory: GatewayFactory,
                module_openai: MockProvider) -> RunningGateway:
    return module_gateway_factory({**telemetry_env(module_openai, free_port()),
                                   "ENVIRONMENT": "development"})


def test_every_log_line_of_a_request_carries_its_request_id(
    dev_gateway: RunningGateway, module_openai: MockProvider
) -> None:
    module_openai.script(Status(400, {"error": {"message": "bad model for this account"}}))
    body = b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    response = httpcore.request("POST", dev_gateway.url + CHAT, content=body,
                                headers=[(b"x-request-id", b"trace-dev-7")])
    assert response.status == 400
    assert dev_gateway.wait_log("request_id=trace-dev-7 method=POST")
    mine = [line for line in dev_gateway.log_text().splitlines() if "trace-dev-7" in line]
    for message in ("outbound provider request", "upstream response", "INFO    request "):
        assert any(message in line for line in mine), (message, mine)
    assert all("request_id=trace-dev-7" in line for line in mine)


def test_a_full_development_run_never_logs_a_provider_key_or_client_token(
    dev_gateway: RunningGateway, module_openai: MockProvider
) -> None:
    key = module_openai.api_key
    client = openai.OpenAI(base_url=dev_gateway.base_url, api_key=CLIENT_TOKEN, max_retries=0)
    module_openai.script(
        Reply(), Reply(),
        Status(401, {"error": {"message": f"Incorrect API key provided: {key}"}}),
    )
    client.chat.completions.create(model="openai/gpt-4o-mini",
                                   messages=[{"role": "user", "content": f"my key is {key}"}])
    for _ in client.chat.completions.create(model="openai/gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hi"}]):
        pass
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="openai/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "again"}])
    client.models.list()
    auth = [(b"authorization", f"Bearer {CLIENT_TOKEN}".encode())]
    httpcore.request("GET", dev_gateway.url + "/proxy/openai/v1/models", headers=auth)
    httpcore.request("GET", dev_gateway.url + "/v1/unknown", headers=auth)
    assert dev_gateway.wait_log("Incorrect API key provided")  # the echoing error was logged
    assert dev_gateway.wait_log("path=/v1/unknown")
    log = dev_gateway.log_text()
    assert key not in log
    assert CLIENT_TOKEN not in log


# -- --workers 2: multiprocess metrics, summed by the parent -------------------------------


@pytest.fixture
def workers_gateway(tmp_path: Path, mock_openai: MockProvider) -> Iterator[Telemetry]:
    port = free_port()
    gateway = RunningGateway("standalone", telemetry_env(mock_openai, port),
                             tmp_path / "workers.log", ("--workers", "2"))
    try:
        gateway.wait_ready()
        deadline = time.monotonic() + 20
        while gateway.log_text().count("igw listening on") < 2:  # both workers bound
            assert time.monotonic() < deadline, gateway.log_text()
            time.sleep(0.05)
        yield Telemetry(gateway, f"http://127.0.0.1:{port}/metrics")
    finally:
        gateway.stop()


def _per_worker_responses(directory: str) -> dict[int, float]:
    out = {}
    for path in Path(directory).glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        out[int(path.stem.split("_")[1])] = sum(
            s.value for f in families for s in f.samples if s.name == "llm_responses_total")
    return out


def test_workers_share_the_port_and_the_parent_serves_the_sum_even_after_a_worker_dies(
    workers_gateway: Telemetry, mock_openai: MockProvider
) -> None:
    gateway = workers_gateway
    [listening] = [line for line in _json_lines(gateway.gateway.log_text())
                   if line["msg"] == "metrics listening"]
    directory = str(listening["workers_dir"])
    body = b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "a b"}]}'

    def burst(n: int) -> None:
        for _ in range(n):  # a new connection each time, so SO_REUSEPORT spreads them
            response = httpcore.request("POST", gateway.gateway.url + CHAT, content=body)
            assert response.status == 200

    def responses(snapshot: Snapshot) -> float:
        return total(snapshot, "llm_responses_total", **CHAT_200)

    mock_openai.default_behaviour = Reply(usage=USAGE)
    burst(24)
    snapshot = wait_for(gateway, lambda s: responses(s) >= 24)
    assert responses(snapshot) == 24
    assert total(snapshot, "llm_usage_total_tokens_total", **MODEL) == 24 * 18
    per_worker = _per_worker_responses(directory)
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(per_worker.values()) == 24

    victim = max(per_worker)
    os.kill(victim, signal.SIGKILL)
    assert gateway.gateway.wait_log("worker died, restarting")
    gateway.gateway.wait_ready()
    assert responses(gateway.scrape()) == 24  # a dead worker's counts stay in the sum
    burst(6)
    assert responses(wait_for(gateway, lambda s: responses(s) >= 30)) == 30


def test_embeddings_responses_and_messages_are_counted_under_their_paths(
    telemetry: Telemetry, client: openai.OpenAI, module_openai: MockProvider
) -> None:
    before = telemetry.scrape()
    module_openai.script(Reply(usage=USAGE), Reply(usage={  # the Responses API's names
        "input_tokens": 11, "output_tokens": 7, "total_tokens": 18}))
    client.embeddings.create(model="openai/text-embedding-3-small", input="count me")
    created = client.responses.create(model="openai/gpt-4o-mini", input="count me")
    client.responses.retrieve(created.id)  # fetched again: counted, its tokens not again
    claude = anthropic.Anthropic(base_url=telemetry.gateway.url, api_key=CLIENT_TOKEN,
                                 max_retries=0, timeout=20)
    module_openai.script(Reply(usage=USAGE))
    claude.messages.create(model="openai/gpt-4o-mini", max_tokens=16,
                           messages=[{"role": "user", "content": "count me"}])
    ok = {"provider": "openai", "request_method": "POST", "status_code": "200"}
    after = wait_for(telemetry, lambda s: total(s, "llm_responses_total", **ok,
                                                request_path="/v1/messages") >= 1 + total(
        before, "llm_responses_total", **ok, request_path="/v1/messages"))

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    for path in ("/v1/embeddings", "/v1/responses", "/v1/messages"):
        assert delta("llm_responses_total", **ok, request_path=path) == 1, path
    assert delta("llm_responses_total", provider="openai", request_method="GET",
                 request_path="/v1/responses", status_code="200") == 1
    # Embeddings report prompt tokens only; the Responses API and the translated
    # message report both, each once.
    assert delta("llm_usage_prompt_tokens_total", provider="openai",
                 model="text-embedding-3-small") == 11
    assert delta("llm_usage_prompt_tokens_total", provider="openai", model="gpt-4o-mini") == 22
    assert delta("llm_usage_completion_tokens_total", provider="openai",
                 model="gpt-4o-mini") == 14
    assert delta("gen_ai_client_token_usage_sum", gen_ai_operation_name="embeddings",
                 gen_ai_token_type="input") == 11
