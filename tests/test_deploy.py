"""The deploy/ examples agree with the metrics the gateway exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from igw_core.config import load_settings
from igw_core.report import ExchangeRecord, ToolCallFact, Usage
from igw_io.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SEED_QUERY = ('sum by (status_code, request_path) '
              '(rate(llm_responses_total{provider="$provider"}[5m]))')
_METRIC = re.compile(r"\b((?:llm|gen_ai)_[a-z_]+)\{")


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "igw-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def _exposed_names() -> set[str]:
    metrics = Metrics(load_settings({"TELEMETRY_ENABLE": "true"}))
    metrics.record(ExchangeRecord(
        "r", "POST", "/v1/chat/completions", "/v1/chat/completions", 200, provider="openai",
        model="m", streamed=True, started=0.0, first_byte=0.1, ended=1.0,
        usage=Usage(1, 1, 2),
        tool_calls=(ToolCallFact("t", True, 0.1), ToolCallFact("t", False, 0.1))))
    text = metrics.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_dashboard_has_the_seed_query_as_a_panel() -> None:
    assert SEED_QUERY in _dashboard_exprs()


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = _exposed_names()
    used = {name for expr in _dashboard_exprs() for name in _METRIC.findall(expr)}
    assert used and used <= exposed, used - exposed


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_config_and_every_dashboard_query(tmp_path: Path) -> None:
    subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")], check=True,
                   capture_output=True)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"igw:dashboard_{i}", "expr": expr.replace("$provider", "openai")}
        for i, expr in enumerate(_dashboard_exprs())]}]}
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
