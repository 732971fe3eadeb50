"""Reading the routing file: real files, safe YAML only, problems naming file and line."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from igw_core.config import ConfigError, ConfigProblem, Settings, load_settings
from igw_core.router import Deployment, Strategy
from igw_io.routing_file import load_from_settings, load_routing_file

SETTINGS = load_settings({"GROQ_API_KEY": "k", "OPENAI_API_KEY": "k"})
PROVIDERS = {p.id: p for p in SETTINGS.providers}

# The reference gateway's examples/routing.yaml, comments and all.
REFERENCE_EXAMPLE = """\
# Gateway-native model routing.
#
#   ROUTING_ENABLED=true
#   ROUTING_CONFIG_PATH=/etc/inference-gateway/routing.yaml
models:
  fast-chat:
    strategy: round_robin # omit to default to round_robin
    deployments:
      - provider: groq
        model: llama-3.3-70b-versatile
      - provider: openai
        model: gpt-4o-mini
  cheap-chat:
    deployments:
      - provider: openai
        model: gpt-4o-mini
"""


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "routing.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    return str(path)


def problems(path: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_routing_file(path, PROVIDERS)
    return list(caught.value.problems)


def test_the_reference_example_loads(tmp_path: Path) -> None:
    table = load_routing_file(write(tmp_path, REFERENCE_EXAMPLE), PROVIDERS)
    assert list(table.aliases) == ["fast-chat", "cheap-chat"]
    fast = table.aliases["fast-chat"]
    assert fast.strategy is Strategy.ROUND_ROBIN
    assert fast.deployments == (Deployment("groq", "llama-3.3-70b-versatile"),
                                Deployment("openai", "gpt-4o-mini"))


def test_each_problem_names_the_file_and_the_line_it_is_on(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        models:
          fast-chat:
            strategy: fastest
            deployments:
              - provider: groq
                model: llama
              - provider: nope
                model: gpt-4o-mini
              - provider: openai
            retries: -1
            fallbacks:
              - cheap-chat
              - missing
          cheap-chat:
            deployments: []
        """)
    assert [problem.variable for problem in problems(path)] == [
        f"{path}:3 models.fast-chat.strategy",
        f"{path}:7 models.fast-chat.deployments[1].provider",
        f"{path}:9 models.fast-chat.deployments[2].model",  # missing: the item's line
        f"{path}:10 models.fast-chat.retries",
        f"{path}:13 models.fast-chat.fallbacks[1]",
        f"{path}:15 models.cheap-chat.deployments",
    ]


def test_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    [problem] = problems(path)
    assert (problem.variable, problem.value) == ("ROUTING_CONFIG_PATH", path)
    assert "No such file" in problem.accepted


def test_a_directory_is_refused(tmp_path: Path) -> None:
    [problem] = problems(str(tmp_path))
    assert problem.variable == "ROUTING_CONFIG_PATH" and problem.value == str(tmp_path)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE_EXAMPLE)
    os.chmod(path, 0)
    try:
        try:
            with open(path, "rb"):
                pytest.skip("running as root: a mode-000 file is still readable")
        except PermissionError:
            pass
        [problem] = problems(path)
        assert problem.variable == "ROUTING_CONFIG_PATH"
        assert "Permission denied" in problem.accepted
    finally:
        os.chmod(path, 0o600)


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        models:
          fast-chat:
            deployments:
              - provider: groq
                model: [llama
          cheap-chat: {}
        """)
    [problem] = problems(path)
    assert problem.variable.startswith(f"{path}:")
    assert int(problem.variable.rsplit(":", 1)[1]) in (5, 6)
    assert "YAML" in problem.accepted


def test_tabs_are_refused_at_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  fast-chat:\n\tdeployments: []\n")
    [problem] = problems(path)
    assert problem.variable == f"{path}:3"


@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object:collections.OrderedDict {{}}",
    "!!python/name:os.system",
])
def test_python_tags_are_refused_by_safe_loading(tmp_path: Path, tagged: str) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, f"models:\n  fast-chat: {tagged.format(marker=marker)}\n")
    [problem] = problems(path)
    assert problem.variable == f"{path}:2"
    assert "python" in problem.value
    assert not marker.exists()


def test_more_than_one_document_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE_EXAMPLE + "---\nmodels: {}\n")
    [problem] = problems(path)
    assert problem.variable.startswith(f"{path}:")


def test_bytes_that_are_not_text_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"models:\n  \xff\xfe\x00: 1\n")
    [problem] = problems(path)
    assert problem.variable.startswith(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "models:\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    [problem] = problems(path)
    assert problem.variable.startswith(f"{path}:") and problem.variable.endswith(" models")


def test_a_key_written_twice_is_refused_with_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        models:
          fast-chat:
            deployments: [{provider: groq, model: a}]
          fast-chat:
            deployments: [{provider: groq, model: b}]
            strategy: weighted
            strategy: ordered
            retries: many
        """)
    assert [problem.variable for problem in problems(path)] == [
        f"{path}:4 models.fast-chat",
        f"{path}:7 models.fast-chat.strategy",
        f"{path}:8 models.fast-chat.retries",
    ]


def test_anchors_and_merge_keys_load(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        defaults: &defaults
          retries: 1
          cooldown: 10s
        models:
          fast-chat:
            <<: *defaults
            retries: 2
            deployments: &pair
              - {provider: groq, model: llama}
              - {provider: openai, model: gpt-4o-mini}
          other-chat:
            <<: *defaults
            deployments: *pair
        """)
    [problem] = problems(path)  # 'defaults' is not a key of the format
    assert problem.variable == f"{path}:1 defaults"
    path = write(tmp_path, """\
        models:
          fast-chat: &base
            cooldown: 10s
            deployments: &pair
              - {provider: groq, model: llama}
              - {provider: openai, model: gpt-4o-mini}
          other-chat:
            <<: *base
            retries: 1
        """)
    table = load_routing_file(path, PROVIDERS)
    other = table.aliases["other-chat"]
    assert (other.retries, other.cooldown, len(other.deployments)) == (1, 10.0, 2)


def test_a_recursive_anchor_ends(tmp_path: Path) -> None:
    path = write(tmp_path, "models: &m\n  loop: *m\n")
    assert problems(path)


def test_deep_nesting_is_refused_not_crashed(tmp_path: Path) -> None:
    path = write(tmp_path, "models: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems(path)


def test_settings_decide_whether_a_file_is_read(tmp_path: Path) -> None:
    assert load_from_settings(SETTINGS) is None
    assert load_from_settings(
        dataclasses.replace(SETTINGS, routing_config_path=str(tmp_path / "absent"))) is None
    with pytest.raises(ConfigError) as caught:
        load_from_settings(dataclasses.replace(SETTINGS, routing_enabled=True))
    [problem] = caught.value.problems
    assert (problem.variable, problem.value) == ("ROUTING_CONFIG_PATH", "")
    assert "required when ROUTING_ENABLED=true" in problem.accepted
    path = write(tmp_path, REFERENCE_EXAMPLE)
    env = {"GROQ_API_KEY": "k", "OPENAI_API_KEY": "k", "ROUTING_ENABLE": "true",
           "ROUTING_CONFIG_PATH": path}
    table = load_from_settings(load_settings(env))
    assert table is not None and list(table.aliases) == ["fast-chat", "cheap-chat"]


def test_providers_come_from_the_settings(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE_EXAMPLE)
    without_groq = load_settings({"OPENAI_API_KEY": "k", "ROUTING_ENABLED": "true",
                                  "ROUTING_CONFIG_PATH": path})
    assert isinstance(without_groq, Settings)
    with pytest.raises(ConfigError) as caught:
        load_from_settings(without_groq)
    [problem] = caught.value.problems
    assert problem.variable == f"{path}:9 models.fast-chat.deployments[0].provider"
    assert "GROQ_API_KEY" in problem.accepted
