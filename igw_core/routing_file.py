"""The routing file (``ROUTING_CONFIG_PATH``), checked: loaded YAML data to a RoutingTable.

Every mistake is reported at once, each as a :class:`~igw_core.config.ConfigProblem`
naming the file, the line and the field (``routing.yaml:7 models.fast-chat.strategy``),
so the startup error printer lists them like refused environment variables. Reading and
parsing the YAML happens in ``igw_io.routing_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from igw_core.config import ConfigError, ConfigProblem, parse_duration
from igw_core.providers import Provider
from igw_core.router import DEFAULT_COOLDOWN, Alias, Deployment, RoutingTable, Strategy

__all__ = ["FieldPath", "field_name", "parse_routing", "path_key"]

#: Where a value sits in the loaded data: mapping keys as strings (see :func:`path_key`)
#: and list indexes as ints, e.g. ``("models", "fast-chat", "deployments", 0, "provider")``.
FieldPath = tuple[str | int, ...]

_TOP_KEYS = ("models",)
_ALIAS_KEYS = ("strategy", "deployments", "retries", "fallbacks", "cooldown", "timeout")
_DEPLOYMENT_KEYS = ("provider", "model", "weight")
_STRATEGIES = {strategy.value: strategy for strategy in Strategy}

_TOP_ACCEPTED = "a YAML mapping whose 'models' maps alias names to their deployments"
_MODELS_ACCEPTED = "a mapping of at least one alias name to its deployments"
_DURATION_ACCEPTED = "a non-negative Go duration such as 500ms, 30s or 1m30s"
_TIMEOUT_ACCEPTED = "a positive Go duration such as 500ms, 20s or 1m30s"
_SHOWN_CHARS = 80


def path_key(key: object) -> str:
    """Return how a mapping key appears in a :data:`FieldPath`: itself when a string,
    else as YAML writes it (``1``, ``true``, ``null``: YAML allows any scalar as a key)."""
    return key if isinstance(key, str) else _show(key)


def field_name(path: FieldPath) -> str:
    """Return ``path`` as the operator reads it: ``models.fast-chat.deployments[0].model``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass
class _Report:
    """The problems found so far, and how to name where each one is."""

    lines: Mapping[FieldPath, int]
    source: str
    problems: list[ConfigProblem] = field(default_factory=list)

    def line(self, path: FieldPath) -> int:
        """Return the line of ``path``, else of its nearest parent that has one, else 1."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def add(self, path: FieldPath, value: str, accepted: str) -> None:
        variable = f"{self.source}:{self.line(path)} {field_name(path)}"
        self.problems.append(ConfigProblem(variable, value, accepted))


def _show(value: object, depth: int = 0) -> str:
    """Return ``value`` as text, the way it would read in YAML, cut to a readable length."""
    if depth > 3:
        return "..."
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(item, depth + 1) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(
            f"{_show(k, depth + 1)}: {_show(v, depth + 1)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def _is_count(value: object, minimum: int) -> bool:
    # YAML's true/false load as bool, a subclass of int: not a count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _seconds(value: object) -> float:
    """Return a Go duration (a string, or the bare number 0) in seconds.

    Raises:
        ValueError: anything else, negative durations included.
    """
    if isinstance(value, str):
        return parse_duration(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0.0
    raise ValueError(f"not a duration: {value!r}")


def _unknown_keys(spec: Mapping[Any, Any], known: tuple[str, ...], base: FieldPath,
                  report: _Report) -> None:
    accepted = "one of the keys " + ", ".join(known)
    for key in spec:
        if key not in known:
            report.add((*base, path_key(key)), _show(key), accepted)


def parse_routing(
    data: Any, lines: Mapping[FieldPath, int], providers: Mapping[str, Provider], source: str
) -> RoutingTable:
    """Check the loaded routing file and return its aliases.

    Args:
        data: the file as loaded by a YAML safe loader (``None`` for an empty file).
        lines: the 1-based line of each :data:`FieldPath` in ``data`` that the loader knows;
            a path without one is reported at its nearest parent's line.
        providers: the configured providers by lower-case id.
        source: the file's name, used in every problem.

    Returns:
        The table, aliases in file order. Provider ids are lower-cased.

    Raises:
        ConfigError: one :class:`ConfigProblem` per mistake, all of them: the shape of
            the file, unknown keys, aliases without deployments or with ``/`` in the
            name, unknown or keyless providers, bad strategies, weights, retries,
            durations, fallbacks (unknown, the alias itself, repeated, or a cycle).
    """
    report = _Report(lines, source)
    if not isinstance(data, dict):
        report.add(("models",), "" if data is None else _show(data), _TOP_ACCEPTED)
        raise ConfigError(report.problems)
    _unknown_keys(data, _TOP_KEYS, (), report)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        report.add(("models",), "" if models is None else _show(models), _MODELS_ACCEPTED)
        raise ConfigError(report.problems)
    names = {name for name in models if isinstance(name, str)}
    aliases: dict[str, Alias] = {}
    fallback_items: dict[str, list[tuple[int, str]]] = {}
    for name, spec in models.items():
        alias = _parse_alias(name, spec, names, providers, fallback_items, report)
        if alias is not None:
            aliases[alias.name] = alias
    _report_cycles(fallback_items, report)
    if report.problems:
        raise ConfigError(report.problems)
    return RoutingTable(MappingProxyType(aliases))


def _parse_alias(
    name: object,
    spec: object,
    names: set[str],
    providers: Mapping[str, Provider],
    fallback_items: dict[str, list[tuple[int, str]]],
    report: _Report,
) -> Alias | None:
    """Check one alias; return it, or ``None`` when it has a problem (all are reported).

    ``fallback_items`` gets the alias's well-formed fallbacks (index, name), for the
    cycle check.
    """
    before = len(report.problems)
    base: FieldPath = ("models", path_key(name))
    if not isinstance(name, str) or not name:
        report.add(base, _show(name), "an alias name: a non-empty string")
    elif "/" in name:
        report.add(base, name, "an alias name without '/' (provider/model names a provider)")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        report.add(base, _show(spec), "a mapping with 'deployments' and optional "
                   + ", ".join(k for k in _ALIAS_KEYS if k != "deployments"))
        return None
    _unknown_keys(spec, _ALIAS_KEYS, base, report)

    strategy: Strategy | None = Strategy.ROUND_ROBIN
    if spec.get("strategy") is not None:
        strategy = _STRATEGIES.get(spec["strategy"]) if isinstance(spec["strategy"], str) else None
        if strategy is None:
            report.add((*base, "strategy"), _show(spec["strategy"]),
                       "one of " + ", ".join(_STRATEGIES))
    deployments = _parse_deployments(spec.get("deployments"), strategy, base, providers, report)

    retries = spec.get("retries")
    if retries is None:
        retries = 0
    elif not _is_count(retries, 0):
        report.add((*base, "retries"), _show(retries), "a whole number, 0 or more")
    fallbacks = _parse_fallbacks(spec.get("fallbacks"), name, names, base, report)
    if isinstance(name, str):
        fallback_items[name] = fallbacks
    cooldown = _parse_duration(spec, "cooldown", DEFAULT_COOLDOWN, True, base, report)
    timeout = _parse_duration(spec, "timeout", None, False, base, report)

    if len(report.problems) > before:
        return None
    assert isinstance(name, str) and strategy is not None
    return Alias(name, strategy, deployments, retries, tuple(f for _, f in fallbacks),
                 DEFAULT_COOLDOWN if cooldown is None else cooldown, timeout)


def _parse_duration(spec: Mapping[str, Any], key: str, default: float | None,
                    allow_zero: bool, base: FieldPath, report: _Report) -> float | None:
    """Return ``spec[key]`` in seconds, ``default`` when absent, null or refused (and
    reported); zero is refused unless ``allow_zero``."""
    value = spec.get(key)
    if value is None:
        return default
    try:
        seconds = _seconds(value)
    except ValueError:
        seconds = None
    if seconds is None or (seconds == 0 and not allow_zero):
        accepted = _DURATION_ACCEPTED if allow_zero else _TIMEOUT_ACCEPTED
        report.add((*base, key), _show(value), accepted)
        return default
    return seconds


def _parse_deployments(
    items: object,
    strategy: Strategy | None,
    base: FieldPath,
    providers: Mapping[str, Provider],
    report: _Report,
) -> tuple[Deployment, ...]:
    """Check an alias's deployments; return the well-formed ones."""
    path: FieldPath = (*base, "deployments")
    if not isinstance(items, list) or not items:
        report.add(path, "" if items is None else _show(items),
                   "a list of at least one deployment, each with a provider and a model")
        return ()
    deployments: list[Deployment] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        deployment = _parse_deployment(item, strategy, (*path, index), providers, report)
        if deployment is None:
            continue
        pair = (deployment.provider, deployment.model)
        if pair in seen:
            report.add((*path, index), f"{pair[0]}/{pair[1]}",
                       "each provider and model once per alias (a weight expresses a share)")
            continue
        seen.add(pair)
        deployments.append(deployment)
    return tuple(deployments)


def _parse_deployment(
    item: object,
    strategy: Strategy | None,
    path: FieldPath,
    providers: Mapping[str, Provider],
    report: _Report,
) -> Deployment | None:
    """Check one deployment; return it, or ``None`` when it has a problem."""
    if not isinstance(item, dict):
        report.add(path, _show(item), "a mapping with a provider and a model")
        return None
    before = len(report.problems)
    _unknown_keys(item, _DEPLOYMENT_KEYS, path, report)
    provider_id = ""
    name = item.get("provider")
    if not isinstance(name, str) or not name.strip():
        report.add((*path, "provider"), "" if name is None else _show(name),
                   "a provider id, one of " + ", ".join(sorted(providers)))
    else:
        provider = providers.get(name.strip().lower())
        if provider is None:
            report.add((*path, "provider"), name,
                       "a known provider id, one of " + ", ".join(sorted(providers)))
        elif not provider.usable:
            report.add((*path, "provider"), name,
                       f"a provider with an API key (set {provider.id.upper()}_API_KEY)")
        else:
            provider_id = provider.id
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        report.add((*path, "model"), "" if model is None else _show(model),
                   "the model name as the provider knows it")
    weight = item.get("weight")
    if weight is None:
        weight = 1
    elif strategy is not None and strategy is not Strategy.WEIGHTED:
        report.add((*path, "weight"), _show(weight),
                   f"no weight unless the alias's strategy is weighted (it is {strategy.value})")
    elif not _is_count(weight, 1):
        report.add((*path, "weight"), _show(weight), "a whole number, 1 or more")
    if len(report.problems) > before:
        return None
    assert isinstance(model, str)
    return Deployment(provider_id, model.strip(), weight)


def _parse_fallbacks(
    value: object, name: object, names: set[str], base: FieldPath, report: _Report
) -> list[tuple[int, str]]:
    """Check an alias's fallbacks; return the well-formed ones as (index, alias name)."""
    path: FieldPath = (*base, "fallbacks")
    if value is None:
        return []
    if not isinstance(value, list):
        report.add(path, _show(value), "a list of alias names")
        return []
    good: list[tuple[int, str]] = []
    for index, fallback in enumerate(value):
        item_path: FieldPath = (*path, index)
        if not isinstance(fallback, str):
            report.add(item_path, _show(fallback), "an alias name")
        elif fallback == name:
            report.add(item_path, fallback, "another alias than this one")
        elif fallback not in names:
            known = ", ".join(sorted(names - {str(name)})) or "none"
            report.add(item_path, fallback, f"an alias of this file (others: {known})")
        elif any(fallback == seen for _, seen in good):
            report.add(item_path, fallback, "each fallback alias once")
        else:
            good.append((index, fallback))
    return good


def _report_cycles(fallbacks: Mapping[str, list[tuple[int, str]]], report: _Report) -> None:
    """Report each fallback cycle once, at the fallbacks of its alias first in the file."""
    order = {name: position for position, name in enumerate(fallbacks)}
    reported: set[tuple[str, ...]] = set()
    for start in fallbacks:
        cycle = _shortest_cycle(start, fallbacks)
        if cycle is None:
            continue
        first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        members = cycle[first:] + cycle[:first]
        if members in reported:
            continue
        reported.add(members)
        head, after = members[0], members[1 % len(members)]
        index = next(i for i, f in fallbacks[head] if f == after)
        report.add(("models", head, "fallbacks", index),
                   " -> ".join((*members, head)),
                   "fallbacks that do not lead back to this alias through other aliases' "
                   "fallbacks (fallbacks of fallbacks are never followed)")


def _shortest_cycle(start: str, fallbacks: Mapping[str, list[tuple[int, str]]]
                    ) -> tuple[str, ...] | None:
    """Return the aliases of the shortest fallback path from ``start`` back to it (without
    repeating ``start`` at the end), or ``None`` when there is none."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for _, target in fallbacks.get(name, ()):
                if target == start:
                    path = [name]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return tuple(reversed(path))
                if target not in parents:
                    parents[target] = name
                    following.append(target)
        frontier = following
    return None
