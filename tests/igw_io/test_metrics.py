"""Metrics recorded from ExchangeRecords, read back through prometheus-client's own parser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from igw_core.config import load_settings
from igw_core.report import ROUTE_LABELS, ExchangeRecord, ToolCallFact, Usage
from igw_io.metrics import (
    MULTIPROC_ENV,
    Metrics,
    MetricsListener,
    multiprocess_registry,
    open_listener,
)

CHAT = "/v1/chat/completions"
SETTINGS = load_settings({"TELEMETRY_ENABLE": "true"}, demo=True)
PROVIDER_IDS = frozenset(p.id for p in SETTINGS.providers)


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    saved = values.ValueClass
    yield
    values.ValueClass = saved


def chat(**fields: object) -> ExchangeRecord:
    base: dict[str, object] = {
        "request_id": "r1", "method": "POST", "route": CHAT, "path": CHAT, "status": 200,
        "provider": "openai", "model": "gpt-4o", "started": 10.0, "ended": 10.5,
    }
    base.update(fields)
    return ExchangeRecord(**base)  # type: ignore[arg-type]


def samples(metrics: Metrics) -> list[Sample]:
    text = metrics.exposition().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples(metrics)
               if s.name == name and labels.items() <= s.labels.items())


def test_a_chat_response_is_counted_with_the_seed_labels() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat())
    metrics.record(chat(status=429))
    [ok] = [s for s in samples(metrics)
            if s.name == "llm_responses_total" and s.labels["status_code"] == "200"]
    assert ok.labels == {"provider": "openai", "request_method": "POST",
                         "request_path": CHAT, "status_code": "200"}
    assert ok.value == 1
    assert value(metrics, "llm_responses_total", status_code="429") == 1


def test_durations_go_to_the_millisecond_and_the_gen_ai_seconds_histograms() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(started=1.0, ended=1.25))
    assert value(metrics, "llm_request_duration_milliseconds_sum") == pytest.approx(250.0)
    assert value(metrics, "llm_request_duration_milliseconds_count", provider="openai",
                 request_method="POST", request_path=CHAT) == 1
    assert value(metrics, "gen_ai_server_request_duration_seconds_sum",
                 gen_ai_operation_name="chat", gen_ai_provider_name="openai",
                 gen_ai_request_model="gpt-4o") == pytest.approx(0.25)


def test_failed_requests_carry_an_error_type_on_the_gen_ai_duration() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(status=502))
    assert value(metrics, "gen_ai_server_request_duration_seconds_count", error_type="502") == 1


def test_token_usage_feeds_the_llm_counters_and_the_gen_ai_histogram() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(usage=Usage(11, 7, 18)))
    metrics.record(chat(usage=Usage(1, 2, 3)))
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert value(metrics, "llm_usage_prompt_tokens_total", **labels) == 12
    assert value(metrics, "llm_usage_completion_tokens_total", **labels) == 9
    assert value(metrics, "llm_usage_total_tokens_total", **labels) == 21
    assert value(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 12
    assert value(metrics, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 9
    assert value(metrics, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 2


def test_time_to_first_token_is_observed_for_streams_only() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(streamed=True, started=5.0, first_byte=5.2, ended=6.0))
    metrics.record(chat(streamed=False, started=5.0, first_byte=5.1, ended=6.0))
    assert value(metrics, "gen_ai_server_time_to_first_token_seconds_count") == 1
    assert value(metrics, "gen_ai_server_time_to_first_token_seconds_sum") == pytest.approx(0.2)


def test_tool_calls_are_counted_by_outcome() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(tool_calls=(ToolCallFact("search", True, 0.1),
                                    ToolCallFact("search", False, 0.2),
                                    ToolCallFact("fetch", True, 0.3))))
    labels = {"provider": "openai", "model": "gpt-4o", "tool_name": "search"}
    assert value(metrics, "llm_tool_calls_total", **labels) == 2
    assert value(metrics, "llm_tool_calls_success_total", **labels) == 1
    assert value(metrics, "llm_tool_calls_failure_total", **labels) == 1
    assert value(metrics, "llm_tool_calls_total") == 3
    assert value(metrics, "llm_tool_call_duration_seconds_sum") == pytest.approx(0.6)


def test_records_not_counted_leave_no_series() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(route="/proxy", path="/proxy/openai/chat/completions", counted=False,
                        usage=Usage(5, 5, 10)))
    metrics.record(chat(method="GET", route="/health", path="/health", provider="",
                        model="", counted=False))
    assert [s for s in samples(metrics) if not s.name.endswith("_created")] == []


def test_the_exposed_names_are_exactly_the_documented_ones() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(streamed=True, first_byte=10.1, usage=Usage(1, 1, 2),
                        tool_calls=(ToolCallFact("t", True, 0.1), ToolCallFact("t", False, 0.1))))
    names = {s.name for s in samples(metrics)}
    assert {
        "llm_responses_total", "llm_request_duration_milliseconds_bucket",
        "llm_usage_prompt_tokens_total", "llm_usage_completion_tokens_total",
        "llm_usage_total_tokens_total", "llm_tool_calls_total",
        "llm_tool_calls_success_total", "llm_tool_calls_failure_total",
        "gen_ai_server_request_duration_seconds_bucket", "gen_ai_client_token_usage_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
    } <= names


def test_unknown_providers_routes_methods_and_statuses_collapse_to_fixed_values() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat(provider="not-a-provider", route="/v2/whatever", method="BREW",
                        status=999))
    [sample] = [s for s in samples(metrics) if s.name == "llm_responses_total"]
    assert sample.labels == {"provider": "unknown", "request_method": "OTHER",
                             "request_path": "other", "status_code": "other"}


def test_model_names_are_capped_and_only_accepted_models_take_a_place() -> None:
    metrics = Metrics(SETTINGS, model_limit=2)
    metrics.record(chat(model="made-up", status=404, usage=None))
    metrics.record(chat(model="a", usage=Usage(1, 1, 2)))
    metrics.record(chat(model="b", usage=Usage(1, 1, 2)))
    metrics.record(chat(model="c", usage=Usage(1, 1, 2)))
    metrics.record(chat(model="a", usage=Usage(1, 1, 2)))
    models = {s.labels["model"] for s in samples(metrics)
              if s.name == "llm_usage_total_tokens_total"}
    assert models == {"a", "b", "other"}
    assert value(metrics, "llm_usage_total_tokens_total", model="a") == 4
    assert value(metrics, "gen_ai_server_request_duration_seconds_count",
                 gen_ai_request_model="other", error_type="404") == 1


_text = st.text(max_size=40)
_records = st.builds(
    ExchangeRecord,
    request_id=st.just("r"),
    method=st.one_of(st.sampled_from(["GET", "POST"]), _text),
    route=st.one_of(st.sampled_from(sorted(ROUTE_LABELS)), _text),
    path=_text,
    status=st.integers(-10, 1200),
    provider=st.one_of(st.sampled_from(sorted(PROVIDER_IDS)), _text),
    model=_text,
    streamed=st.booleans(),
    started=st.floats(0, 1e6),
    ended=st.floats(0, 1e6),
    first_byte=st.none() | st.floats(0, 1e6),
    usage=st.none() | st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6),
                                st.integers(0, 10**6)),
    counted=st.booleans(),
    tool_calls=st.lists(st.builds(ToolCallFact, _text, st.booleans(), st.floats(0, 100)),
                        max_size=3).map(tuple),
)

_MODEL_LIMIT = 3
_TOOL_LIMIT = 2
#: What each label may ever hold, whatever the records say.
_DOMAINS: dict[str, int] = {
    "provider": len(PROVIDER_IDS) + 1,
    "gen_ai_provider_name": len(PROVIDER_IDS) + 1,
    "request_method": 8,
    "request_path": len(ROUTE_LABELS | {"other"}),
    "status_code": 501,
    "error_type": 501,
    "model": _MODEL_LIMIT + 2,  # the admitted names, "other" and "" (no model)
    "gen_ai_request_model": _MODEL_LIMIT + 2,
    "tool_name": _TOOL_LIMIT + 2,
    "gen_ai_operation_name": 2,  # chat (chat, messages, responses) and embeddings
    "gen_ai_token_type": 2,
}


@settings(max_examples=60, deadline=None)
@given(st.lists(_records, max_size=60))
def test_arbitrary_records_never_grow_the_series_beyond_the_label_domains(
    records: list[ExchangeRecord],
) -> None:
    metrics = Metrics(SETTINGS, model_limit=_MODEL_LIMIT, tool_limit=_TOOL_LIMIT)
    for record in records:
        metrics.record(record)
    series: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for sample in samples(metrics):
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        series.setdefault(sample.name, set()).add(tuple(sorted(labels.items())))
        assert labels.get("provider", "unknown") in PROVIDER_IDS | {"unknown"}
        assert labels.get("request_path", "other") in ROUTE_LABELS | {"other"}
    for name, label_sets in series.items():
        bound = 1
        for label in {k for labels in label_sets for k, _ in labels}:
            seen = {v for labels in label_sets for k, v in labels if k == label}
            assert len(seen) <= _DOMAINS[label], (name, label, seen)
            bound *= _DOMAINS[label]
        assert len(label_sets) <= bound


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=80),
       st.lists(st.text(max_size=60), max_size=20))
def test_arbitrary_model_names_and_paths_keep_the_series_count_fixed(
    models: list[str], paths: list[str]
) -> None:
    metrics = Metrics(SETTINGS, model_limit=_MODEL_LIMIT)
    for i, model in enumerate(models):
        metrics.record(chat(model=model, path=paths[i % len(paths)] if paths else CHAT,
                            usage=Usage(1, 1, 2)))
    families = text_string_to_metric_families(metrics.exposition().decode())
    token_series = [s for f in families for s in f.samples
                    if s.name == "llm_usage_total_tokens_total"]
    assert len(token_series) <= _MODEL_LIMIT + 1
    assert sum(s.value for s in token_series) == 2 * len(models)
    responses = [s for s in samples(metrics) if s.name == "llm_responses_total"]
    assert len(responses) == 1


def test_multiprocess_mode_collects_from_the_shared_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = Metrics(SETTINGS)
    assert metrics.multiprocess_dir == str(tmp_path)
    metrics.record(chat(usage=Usage(2, 3, 5)))
    metrics.record(chat(usage=Usage(2, 3, 5)))
    assert value(metrics, "llm_responses_total") == 2
    registry = multiprocess_registry(str(tmp_path))
    merged = [s for f in registry.collect() for s in f.samples
              if s.name == "llm_usage_total_tokens_total"]
    assert [s.value for s in merged] == [10]


def test_a_multiprocess_dir_that_is_not_a_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, f"{tmp_path}/missing")
    with pytest.raises(NotADirectoryError, match=MULTIPROC_ENV):
        Metrics(SETTINGS)


def _get(url: str) -> httpcore.Response:
    return httpcore.request("GET", url, extensions={"timeout": {"connect": 2, "read": 5}})


def test_the_listener_serves_metrics_at_slash_metrics_only() -> None:
    metrics = Metrics(SETTINGS)
    metrics.record(chat())
    listener = open_listener(metrics, "127.0.0.1", 0)
    assert listener is not None
    try:
        response = _get(listener.url)
        assert response.status == 200
        assert response.headers and b"llm_responses_total{" in response.content
        assert _get(listener.url.replace("/metrics", "/other")).status == 404
    finally:
        listener.close()
    with pytest.raises(httpcore.ConnectError):
        _get(listener.url)


def test_a_busy_metrics_port_is_an_error_naming_the_variable() -> None:
    metrics = Metrics(SETTINGS)
    first = MetricsListener(metrics.registry, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="TELEMETRY_METRICS_PORT"):
            open_listener(metrics, "127.0.0.1", first.port)
    finally:
        first.close()


def test_the_supervisor_listener_serves_one_scrape_per_call() -> None:
    metrics = Metrics(SETTINGS)
    listener = MetricsListener(metrics.registry, "127.0.0.1", 0, threaded=False)
    got: list[int] = []
    scraper = threading.Thread(target=lambda: got.append(_get(listener.url).status))
    scraper.start()
    try:
        listener.handle_one(5.0)
        scraper.join(5)
        assert got == [200]
    finally:
        listener.close()
