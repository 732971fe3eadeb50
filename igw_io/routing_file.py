"""Reading the routing file (``ROUTING_CONFIG_PATH``): YAML, safe loading only, with lines.

The checks themselves are the core's (``igw_core.routing_file.parse_routing``); here the
file is read and parsed, and the line of every mapping key and list item is recorded so
each problem names where to look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml  # type: ignore[import-untyped]

from igw_core.config import ConfigError, ConfigProblem, Settings
from igw_core.providers import Provider
from igw_core.router import RoutingTable
from igw_core.routing_file import FieldPath, field_name, parse_routing, path_key

__all__ = ["PATH_VARIABLE", "load_from_settings", "load_routing_file"]

PATH_VARIABLE = "ROUTING_CONFIG_PATH"

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _LineLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A safe loader that also records the 1-based line of every mapping key and list
    item by :data:`~igw_core.routing_file.FieldPath`, and every key repeated in a mapping
    (YAML keeps only the last; an operator who wrote an alias twice means neither)."""

    def load_with_lines(self) -> tuple[Any, dict[FieldPath, int], list[tuple[FieldPath, int]]]:
        """Return (the single document, its lines, the repeated keys with their lines).

        Raises:
            yaml.YAMLError: the text is not one YAML document of safe types.
        """
        node = self.get_single_node()
        if node is None:
            return None, {}, []
        repeated: list[tuple[FieldPath, int]] = []
        self._find_repeated(node, (), repeated, set())
        data = self.construct_document(node)  # flattens merge keys (<<) into the nodes
        lines: dict[FieldPath, int] = {(): node.start_mark.line + 1}
        self._record(node, (), lines, set())
        return data, lines, repeated

    def _key_of(self, key_node: Any) -> str:
        return path_key(self.construct_object(key_node, deep=True))

    def _record(self, node: Any, path: FieldPath, lines: dict[FieldPath, int],
                seen: set[int]) -> None:
        # Anchored nodes are walked once, at their first path: this keeps the walk linear
        # and ends it on recursive anchors; an alias's other paths fall back to the line
        # of the key that uses it.
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, self._key_of(key_node))
                # Overwritten, not kept: of a repeated key, YAML keeps the last.
                lines[child] = key_node.start_mark.line + 1
                self._record(value_node, child, lines, seen)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                lines[child] = item.start_mark.line + 1
                self._record(item, child, lines, seen)

    def _find_repeated(self, node: Any, path: FieldPath,
                       repeated: list[tuple[FieldPath, int]], seen: set[int]) -> None:
        # Before construction, while merge keys (<<) are still apart from the keys they
        # may legitimately be overridden by.
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            written: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                text = (key_node.tag, key_node.value)
                child = (*path, str(key_node.value))
                if text in written:
                    repeated.append((child, key_node.start_mark.line + 1))
                written.add(text)
                self._find_repeated(value_node, child, repeated, seen)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._find_repeated(item, (*path, index), repeated, seen)


def load_routing_file(path: str, providers: Mapping[str, Provider]) -> RoutingTable:
    """Read, parse and check the routing file at ``path``.

    Only YAML's safe types load (mappings, lists, strings, numbers, booleans, null,
    timestamps); a tag such as ``!!python/object`` is refused.

    Args:
        path: the file, as ``ROUTING_CONFIG_PATH`` names it.
        providers: the configured providers by lower-case id.

    Raises:
        ConfigError: the file cannot be read, is not one YAML document (the problem names
            the line), repeats a key within a mapping, or holds mistakes
            (see :func:`igw_core.routing_file.parse_routing`); every mistake found is listed.
    """
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError as error:
        raise ConfigError([ConfigProblem(
            PATH_VARIABLE, path,
            f"the path of a readable routing file (here: {error.strerror or error})")]) from None
    try:
        data, lines, repeated = _load(text)
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(path, error)]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(
            path, "(nesting too deep to read)", "a routing file of a few levels of nesting",
        )]) from None
    problems = [
        ConfigProblem(f"{path}:{line} {field_name(key)}", str(key[-1]),
                      "each key once per mapping (YAML would keep only the last)")
        for key, line in repeated
    ]
    try:
        table = parse_routing(data, lines, providers, path)
    except ConfigError as error:
        raise ConfigError((*problems, *error.problems)) from None
    if problems:
        raise ConfigError(problems)
    return table


def _load(text: bytes) -> tuple[Any, dict[FieldPath, int], list[tuple[FieldPath, int]]]:
    """Return :meth:`_LineLoader.load_with_lines` of ``text``.

    Raises:
        yaml.YAMLError: ``text`` is not one YAML document of safe types, or not text.
        RecursionError: it nests too deeply for PyYAML's recursive composer.
    """
    loader = _LineLoader(text)  # decodes at once: a ReaderError for bytes that are not text
    try:
        return loader.load_with_lines()
    finally:
        loader.dispose()


def _yaml_problem(path: str, error: yaml.YAMLError) -> ConfigProblem:
    """Return a YAML error as a problem naming the file and, when known, the line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = path if mark is None else f"{path}:{mark.line + 1}"
    problem = getattr(error, "problem", None) or str(error)
    return ConfigProblem(
        where, str(problem),
        "a YAML document of plain mappings, lists and scalars (safe loading: no tags such "
        "as !!python/object)")


def load_from_settings(settings: Settings) -> RoutingTable | None:
    """Return the routing table ``settings`` asks for: ``None`` when routing is off
    (``ROUTING_ENABLED`` false), else the table of ``ROUTING_CONFIG_PATH``.

    Raises:
        ConfigError: routing is on without a path, or the file is refused
            (see :func:`load_routing_file`).
    """
    if not settings.routing_enabled:
        return None
    if not settings.routing_config_path:
        raise ConfigError([ConfigProblem(
            PATH_VARIABLE, "",
            "the path of a routing file (ROUTING_CONFIG_PATH is required when "
            "ROUTING_ENABLED=true)")])
    providers = {provider.id: provider for provider in settings.providers}
    return load_routing_file(settings.routing_config_path, providers)
