"""Properties of igw_core.routing_file: a routing file's data checked into a RoutingTable,
every mistake reported at once with its alias and line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.config import ConfigError, load_settings
from igw_core.router import Alias, Deployment, Strategy
from igw_core.routing_file import FieldPath, field_name, parse_routing

SOURCE = "routing.yaml"
PROVIDERS = {p.id: p for p in load_settings(
    {"GROQ_API_KEY": "k", "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}).providers}


def numbered(data: Any) -> dict[FieldPath, int]:
    """Give every path of ``data`` its own line, as a loader that writes one per line would."""
    lines: dict[FieldPath, int] = {(): 1}

    def walk(value: Any, path: FieldPath) -> None:
        children: list[tuple[str | int, Any]] = []
        if isinstance(value, dict):
            children = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            children = list(enumerate(value))
        for part, child in children:
            lines[(*path, part)] = len(lines) + 1
            walk(child, (*path, part))

    walk(data, ())
    return lines


def problems_of(data: Any, lines: dict[FieldPath, int] | None = None) -> list[tuple[str, str,
                                                                                     str]]:
    with pytest.raises(ConfigError) as caught:
        parse_routing(data, numbered(data) if lines is None else lines, PROVIDERS, SOURCE)
    return [(p.variable, p.value, p.accepted) for p in caught.value.problems]


def where(data: Any, path: FieldPath) -> str:
    """The ``variable`` a problem at ``path`` must have: a missing key is reported at the
    line of the mapping that lacks it."""
    lines = numbered(data)
    line = next(lines[path[:end]] for end in range(len(path), -1, -1) if path[:end] in lines)
    return f"{SOURCE}:{line} {field_name(path)}"


def good_alias() -> dict[str, Any]:
    return {
        "deployments": [
            {"provider": "groq", "model": "llama-3.3-70b-versatile"},
            {"provider": "openai", "model": "gpt-4o-mini"},
        ],
    }


# --- a valid file -----------------------------------------------------------------------


def test_the_reference_example_parses() -> None:
    data = {"models": {
        "fast-chat": {"strategy": "round_robin", "deployments": [
            {"provider": "groq", "model": "llama-3.3-70b-versatile"},
            {"provider": "openai", "model": "gpt-4o-mini"}]},
        "cheap-chat": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
    }}
    table = parse_routing(data, numbered(data), PROVIDERS, SOURCE)
    assert list(table.aliases) == ["fast-chat", "cheap-chat"]
    assert table.aliases["fast-chat"] == Alias(
        "fast-chat", Strategy.ROUND_ROBIN,
        (Deployment("groq", "llama-3.3-70b-versatile"), Deployment("openai", "gpt-4o-mini")))
    assert table.aliases["cheap-chat"].deployments == (Deployment("openai", "gpt-4o-mini"),)
    assert table.aliases["cheap-chat"].cooldown == 30.0


def test_every_field_is_read() -> None:
    data = {"models": {
        "fast-chat": {
            "strategy": "weighted",
            "deployments": [{"provider": "GROQ", "model": "llama", "weight": 2},
                            {"provider": "openai", "model": "gpt-4o-mini"}],
            "retries": 2, "fallbacks": ["cheap-chat", "smart"], "cooldown": "1m30s",
            "timeout": "20s",
        },
        "cheap-chat": {"strategy": "ordered", "deployments": [
            {"provider": "openai", "model": "gpt-4o-mini"}], "cooldown": 0, "timeout": None},
        "smart": {"strategy": "least_latency", "fallbacks": ["cheap-chat"], "deployments": [
            {"provider": "anthropic", "model": "claude-sonnet-4"}]},
    }}
    aliases = parse_routing(data, numbered(data), PROVIDERS, SOURCE).aliases
    assert aliases["fast-chat"] == Alias(
        "fast-chat", Strategy.WEIGHTED,
        (Deployment("groq", "llama", 2), Deployment("openai", "gpt-4o-mini", 1)),
        retries=2, fallbacks=("cheap-chat", "smart"), cooldown=90.0, timeout=20.0)
    assert aliases["cheap-chat"].strategy is Strategy.ORDERED
    assert (aliases["cheap-chat"].cooldown, aliases["cheap-chat"].timeout) == (0.0, None)
    assert aliases["smart"].strategy is Strategy.LEAST_LATENCY


# --- each mistake, on its own -----------------------------------------------------------

# Each turns a valid alias (the dict) named ``name`` in ``models`` into one with a single
# mistake, and returns the path the problem must be reported at (under the alias).
Mistake = Callable[[dict[str, Any], dict[str, Any], str], FieldPath]


def _set(key: str, value: Any) -> Mistake:
    def apply(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
        alias[key] = value
        return (key,)
    return apply


def _set_fallback(value: Any) -> Mistake:
    def apply(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
        alias["fallbacks"] = [value]
        return ("fallbacks", 0)
    return apply


def _set_deployment(key: str, value: Any, strategy: str | None = None) -> Mistake:
    def apply(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
        alias["deployments"][1][key] = value
        if strategy:
            alias["strategy"] = strategy
        return ("deployments", 1, key)
    return apply


def _drop_deployment(key: str) -> Mistake:
    def apply(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
        del alias["deployments"][0][key]
        return ("deployments", 0, key)
    return apply


def _self_fallback(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
    alias["fallbacks"] = [name]
    return ("fallbacks", 0)


def _repeated_fallback(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
    models[f"{name}-other"] = good_alias()
    alias["fallbacks"] = [f"{name}-other", f"{name}-other"]
    return ("fallbacks", 1)


def _cycle(models: dict[str, Any], alias: dict[str, Any], name: str) -> FieldPath:
    models[f"{name}-b"] = {**good_alias(), "fallbacks": [f"{name}-c"]}
    models[f"{name}-c"] = {**good_alias(), "fallbacks": [name]}
    alias["fallbacks"] = [f"{name}-b"]
    return ("fallbacks", 0)


def _deployment_not_a_mapping(models: dict[str, Any], alias: dict[str, Any], name: str
                              ) -> FieldPath:
    alias["deployments"][1] = "groq/llama"
    return ("deployments", 1)


def _repeated_deployment(models: dict[str, Any], alias: dict[str, Any], name: str
                         ) -> FieldPath:
    alias["deployments"].append(dict(alias["deployments"][0]))
    return ("deployments", 2)


MISTAKES: dict[str, tuple[Mistake, str]] = {
    # name: (mistake, a word the problem's accepted text must contain)
    "unknown alias key": (_set("retry", 2), "retries"),
    "unknown deployment key": (_set_deployment("modle", "x"), "provider"),
    "no deployments (empty)": (_set("deployments", []), "at least one deployment"),
    "no deployments (null)": (_set("deployments", None), "at least one deployment"),
    "deployments not a list": (_set("deployments", {"provider": "groq"}), "list"),
    "deployment not a mapping": (_deployment_not_a_mapping, "mapping"),
    "missing provider": (_drop_deployment("provider"), "groq"),
    "missing model": (_drop_deployment("model"), "model"),
    "empty model": (_set_deployment("model", " "), "model"),
    "unknown provider": (_set_deployment("provider", "nope"), "anthropic, cloudflare"),
    "provider without key": (_set_deployment("provider", "mistral"), "MISTRAL_API_KEY"),
    "unknown strategy": (_set("strategy", "fastest"), "least_latency"),
    "weight without weighted": (_set_deployment("weight", 2), "weighted"),
    "weight zero": (_set_deployment("weight", 0, "weighted"), "1 or more"),
    "weight negative": (_set_deployment("weight", -3, "weighted"), "1 or more"),
    "weight text": (_set_deployment("weight", "3", "weighted"), "1 or more"),
    "weight bool": (_set_deployment("weight", True, "weighted"), "1 or more"),
    "weight float": (_set_deployment("weight", 1.5, "weighted"), "1 or more"),
    "retries negative": (_set("retries", -1), "0 or more"),
    "retries text": (_set("retries", "2"), "0 or more"),
    "retries bool": (_set("retries", False), "0 or more"),
    "fallbacks a string": (_set("fallbacks", "cheap-chat"), "list"),
    "fallback not a string": (_set_fallback(3), "alias name"),
    "fallback unknown": (_set_fallback("nope"), "alias"),
    "fallback itself": (_self_fallback, "another alias"),
    "fallback repeated": (_repeated_fallback, "once"),
    "fallback cycle": (_cycle, "lead back"),
    "repeated deployment": (_repeated_deployment, "once per alias"),
    "cooldown without unit": (_set("cooldown", "30"), "Go duration"),
    "cooldown a number": (_set("cooldown", 30), "Go duration"),
    "cooldown negative": (_set("cooldown", "-5s"), "Go duration"),
    "cooldown nonsense": (_set("cooldown", "soon"), "Go duration"),
    "timeout zero": (_set("timeout", "0s"), "positive"),
    "timeout negative": (_set("timeout", "-1s"), "positive"),
    "timeout a list": (_set("timeout", ["5s"]), "positive"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_is_one_problem_naming_the_alias_and_line(mistake: str) -> None:
    apply, word = MISTAKES[mistake]
    models: dict[str, Any] = {"fast-chat": good_alias()}
    data = {"models": models}
    path = ("models", "fast-chat", *apply(models, models["fast-chat"], "fast-chat"))
    [(variable, _value, accepted)] = problems_of(data)
    assert variable == where(data, path)
    assert "models.fast-chat" in variable
    assert word in accepted


def test_a_cycle_is_reported_once_with_its_path() -> None:
    models = {"a": {**good_alias(), "fallbacks": ["b"]},
              "b": {**good_alias(), "fallbacks": ["c", "a"]},
              "c": {**good_alias(), "fallbacks": ["a"]}}
    data = {"models": models}
    problems = problems_of(data)
    # Two cycles, each reported once, at the fallbacks of the alias first in the file.
    assert [value for _, value, _ in problems] == ["a -> b -> a", "a -> b -> c -> a"]
    assert {variable for variable, _, _ in problems} == {
        where(data, ("models", "a", "fallbacks", 0))}


def test_fallbacks_without_a_cycle_are_accepted() -> None:
    models = {"a": {**good_alias(), "fallbacks": ["b", "c"]},
              "b": {**good_alias(), "fallbacks": ["c"]},
              "c": good_alias()}
    table = parse_routing({"models": models}, {}, PROVIDERS, SOURCE)
    assert table.aliases["a"].fallbacks == ("b", "c")


def test_an_alias_name_with_a_slash_is_refused() -> None:
    data = {"models": {"openai/gpt-4o": good_alias()}}
    [(variable, value, accepted)] = problems_of(data)
    assert variable == where(data, ("models", "openai/gpt-4o"))
    assert value == "openai/gpt-4o" and "'/'" in accepted


@pytest.mark.parametrize("data", [None, [], "models", {"models": None}, {"models": []},
                                  {"models": {}}, {}])
def test_a_file_without_a_models_mapping_is_refused(data: Any) -> None:
    problems = problems_of(data, {(): 1})
    assert [variable for variable, _, _ in problems] == [f"{SOURCE}:1 models"]


def test_unknown_top_level_keys_are_refused_with_the_rest() -> None:
    data = {"model": {}, "models": {"fast-chat": good_alias()}}
    [(variable, value, accepted)] = problems_of(data)
    assert variable == where(data, ("model",))
    assert value == "model" and "models" in accepted


def test_a_path_without_a_line_takes_its_nearest_parents() -> None:
    data = {"models": {"fast-chat": {"deployments": [{"provider": "nope", "model": "m"}]}}}
    lines = {(): 1, ("models",): 2, ("models", "fast-chat"): 5}
    [(variable, _, _)] = problems_of(data, lines)
    assert variable == f"{SOURCE}:5 models.fast-chat.deployments[0].provider"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list(MISTAKES)), min_size=2, max_size=6))
def test_several_mistakes_are_all_reported(mistakes: list[str]) -> None:
    models: dict[str, Any] = {}
    expected = []
    for index, mistake in enumerate(mistakes):
        name = f"alias{index}"
        models[name] = copy.deepcopy(good_alias())
        expected.append(("models", name, *MISTAKES[mistake][0](models, models[name], name)))
    data = {"models": models}
    problems = problems_of(data)
    assert sorted(variable for variable, _, _ in problems) == sorted(
        where(data, path) for path in expected)
