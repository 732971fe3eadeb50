"""docs/configuration.md is generated from the code and kept current; every setting is described.

The generator (``scripts/configuration_doc.py``) runs in-process: no subprocess, no IO
besides reading the committed file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from igw_core.config import Settings, parse_duration
from igw_core.providers import PROVIDER_SPECS
from igw_core.settings_docs import GROUPS, SETTINGS_DOCS

ROOT = Path(__file__).resolve().parent.parent

#: Docs linked before they are written, alongside a feature still in progress. A doc in
#: this set is only excused while it does not exist.
PENDING_DOCS: frozenset[str] = frozenset()


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "configuration_doc", ROOT / "scripts" / "configuration_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _variable_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.name != "providers"]


def test_every_settings_field_has_a_setting_doc() -> None:
    missing = [name for name in _variable_fields() if name not in SETTINGS_DOCS]
    assert missing == [], (
        f"Settings fields without a SettingDoc in igw_core/settings_docs.py: {missing}; "
        f"add one each, then run `{gen.REGENERATE}`")


def test_setting_docs_name_only_existing_fields() -> None:
    unknown = sorted(set(SETTINGS_DOCS) - set(_variable_fields()))
    assert unknown == [], f"SETTINGS_DOCS describes fields Settings does not have: {unknown}"


def test_setting_docs_are_complete_entries() -> None:
    for name, doc in SETTINGS_DOCS.items():
        assert doc.group in GROUPS, name
        assert doc.meaning.strip() and doc.meaning.endswith("."), name
        assert doc.doc == "README.md" or (doc.doc.startswith("docs/") and doc.doc.endswith(".md"))
    missing = sorted({doc.doc for doc in SETTINGS_DOCS.values()
                      if not (ROOT / doc.doc).is_file() and doc.doc not in PENDING_DOCS})
    assert missing == [], f"SETTINGS_DOCS links docs that do not exist: {missing}"


def test_configuration_doc_is_up_to_date() -> None:
    expected = gen.render()
    current = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    assert current == expected, (
        f"{gen.OUTPUT_NAME} is stale; run `{gen.REGENERATE}`\n"
        + "\n".join(gen.stale_diff(current, expected)))


def test_an_undocumented_field_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    partial = {k: v for k, v in SETTINGS_DOCS.items() if k != "server_shutdown_timeout"}
    monkeypatch.setattr(gen, "SETTINGS_DOCS", partial)
    with pytest.raises(gen.UndocumentedSettings, match="server_shutdown_timeout"):
        gen.render()
    assert gen.main(["--check"]) == 1


def test_check_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(gen.render().replace("`8080`", "`8081`"), encoding="utf-8")
    monkeypatch.setattr(gen, "OUTPUT", stale)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert gen.REGENERATE in err
    assert "-| `SERVER_PORT` | port | `8081` |" in err
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0


def _rows() -> dict[str, Any]:
    return {row.variable: row for row in gen.setting_rows()}


def test_known_rows() -> None:
    rows = _rows()
    port = rows["SERVER_PORT"]
    assert (port.type, port.default, port.group) == ("port", "`8080`", "server")
    for variable in ("SERVER_TLS_CERT_PATH", "SERVER_TLS_KEY_PATH"):
        tls = rows[variable]
        assert (tls.type, tls.default, tls.doc) == ("text", "(none)", "README.md")
    assert rows["MCP_CLIENT_TIMEOUT"].default == "`5s`"
    assert rows["MCP_CLIENT_TIMEOUT"].doc == "docs/mcp.md"
    assert rows["SERVER_SHUTDOWN_TIMEOUT"].default == "`10s`"
    assert (rows["ENABLE_VISION"].type, rows["ENABLE_VISION"].alias) == (
        "boolean", "VISION_ENABLED")
    assert rows["ROUTING_ENABLED"].alias == "ROUTING_ENABLE"
    assert rows["IGW_DEMO"].default == "`false`"
    assert rows["MCP_SERVERS"].type == "list of URLs (comma-separated)"
    assert rows["MCP_SERVERS"].default == "(none)"
    assert rows["ALLOWED_MODELS"].type == "list (comma-separated)"
    assert rows["AUTH_OIDC_ISSUER"].type == "URL"
    assert rows["SERVER_MAX_REQUEST_BODY_SIZE"].type == "integer (≥ 1)"
    assert rows["CLIENT_MAX_IDLE_CONNS_PER_HOST"].default == "`20`"

    text = gen.render()
    assert "| `SERVER_PORT` | port | `8080` | |" in text
    assert "| `MCP_CLIENT_TIMEOUT` | duration | `5s` | |" in text
    assert "| `SERVER_TLS_CERT_PATH` | text | (none) | |" in text
    assert "| `SERVER_TLS_KEY_PATH` | text | (none) | |" in text


def test_every_provider_has_its_row() -> None:
    text = gen.render()
    rows = {row.id: row for row in gen.provider_rows()}
    assert list(rows) == list(PROVIDER_SPECS)
    for spec in PROVIDER_SPECS.values():
        prefix = spec.id.upper()
        row = rows[spec.id]
        assert (row.url_variable, row.default_url, row.key_variable) == (
            f"{prefix}_API_URL", spec.base_url, f"{prefix}_API_KEY")
        assert f"| `{prefix}_API_URL` | `{spec.base_url}` | `{prefix}_API_KEY` |" in text
    assert rows["openai"].auth == "`Authorization: Bearer <key>`"
    assert rows["anthropic"].auth.startswith("`x-api-key: <key>`")
    assert "`anthropic-version: 2023-06-01`" in rows["anthropic"].auth
    assert rows["ollama"].auth.startswith("none")


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0s"), (30.0, "30s"), (90.0, "1m30s"), (0.5, "500ms"), (120.0, "2m"),
    (3600.0, "1h"), (3630.0, "1h30s"), (1.5, "1.5s"), (0.0015, "1.5ms"), (2e-6, "2µs"),
    (5e-9, "5ns"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert gen.format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_every_duration_default_reads_back() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for row in gen.setting_rows():
        if row.type == "duration":
            assert parse_duration(row.default.strip("`")) == defaults[row.field], row.variable
