"""Generate ``docs/configuration.md``, the configuration reference, from the code.

Variable names, types, defaults and aliases come from :mod:`igw_core.config`
(``Settings``, ``_PARSERS``, ``_VARIABLE_NAMES``, ``_ALIASES``) and the provider table
from :data:`igw_core.providers.PROVIDER_SPECS`; meanings and doc links come from
:data:`igw_core.settings_docs.SETTINGS_DOCS`. The output depends on nothing else, so it
is the same on every machine.

Usage::

    python scripts/configuration_doc.py          # (re)write docs/configuration.md
    python scripts/configuration_doc.py --check  # exit 1 when the file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import dataclasses
import difflib
import posixpath
import re
from collections.abc import Callable, Sequence

from igw_core.config import _ALIASES, _PARSERS, _VARIABLE_NAMES, Settings
from igw_core.providers import PROVIDER_SPECS, ProviderSpec
from igw_core.settings_docs import (
    AUTH_STYLE_DOCS,
    GROUPS,
    PROVIDER_KEY_MEANING,
    PROVIDER_NOTES,
    PROVIDER_URL_MEANING,
    SETTINGS_DOCS,
)

ROOT = Path(__file__).resolve().parent.parent
#: The generated file, and the same path as written in the docs.
OUTPUT = ROOT / "docs" / "configuration.md"
OUTPUT_NAME = "docs/configuration.md"
REGENERATE = "python scripts/configuration_doc.py"

#: Settings fields that are not one variable each (described by their own table).
NOT_VARIABLES = frozenset({"providers"})

BOOLEAN = "boolean"
DURATION = "duration"
INTEGER = "integer"
PORT = "port"
URL = "URL"
URL_LIST = "list of URLs (comma-separated)"
LIST = "list (comma-separated)"
TEXT = "text"

#: Types by the field's annotation, for a field without a parser in ``_PARSERS``.
_TYPES_BY_ANNOTATION = {
    "bool": BOOLEAN,
    "float": DURATION,
    "int": INTEGER,
    "str": TEXT,
    "tuple[str, ...]": LIST,
}
_INTEGER_RANGE = re.compile(r"from (\d+) to (\d+)")
_NS_PER_S = 1_000_000_000


class UndocumentedSettings(Exception):
    """``SETTINGS_DOCS`` and the ``Settings`` fields disagree; the message says where."""


@dataclasses.dataclass(frozen=True, slots=True)
class SettingRow:
    """One variable's row of the reference, every cell as plain text (before escaping).

    Attributes:
        field: the ``Settings`` field.
        variable: the variable's name, as the operator spells it.
        type: what it accepts (``boolean``, ``duration``, ``port``, ...).
        default: its default as an operator writes it (``30s``, ``false``, ``(none)``).
        alias: its other accepted spelling, or ``""``.
        meaning: what it does.
        doc: the repository doc that covers it, relative to the repository root.
        group: the table it belongs in.
    """

    field: str
    variable: str
    type: str
    default: str
    alias: str
    meaning: str
    doc: str
    group: str


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderRow:
    """One provider's row of the providers table.

    Attributes:
        id: the provider id (``openai``).
        url_variable: ``{ID}_API_URL``.
        default_url: the base URL used when that variable is not set.
        key_variable: ``{ID}_API_KEY``.
        auth: how the key is sent, with any header every request carries.
        notes: what else an operator must know, or ``""``.
    """

    id: str
    url_variable: str
    default_url: str
    key_variable: str
    auth: str
    notes: str


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as an operator writes a Go duration: ``30s``, ``1m30s``, ``500ms``.

    Whole hours, minutes and seconds are joined without zero parts (``2m``, not Go's
    ``2m0s``); under a second the largest fitting unit is used with a decimal fraction
    (``1.5ms``). :func:`igw_core.config.parse_duration` reads every result back exactly.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    if seconds < 0:
        raise ValueError(f"negative duration: {seconds!r}")
    ns = round(seconds * _NS_PER_S)
    if ns == 0:
        return "0s"
    if ns < _NS_PER_S:
        for unit, scale in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= scale:
                return _decimal(ns, scale) + unit
    hours, rest = divmod(ns, 3600 * _NS_PER_S)
    minutes, rest = divmod(rest, 60 * _NS_PER_S)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if rest:
        parts.append(_decimal(rest, _NS_PER_S) + "s")
    return "".join(parts)


def _decimal(amount: int, scale: int) -> str:
    """Return ``amount / scale`` in decimal, exactly and without trailing zeros."""
    whole, fraction = divmod(amount, scale)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def _tries(parse: Callable[[str], object], text: str) -> tuple[bool, object]:
    """Return ``(True, value)`` when ``parse`` accepts ``text``, else ``(False, error)``."""
    try:
        return True, parse(text)
    except Exception as error:  # the parsers' refusal is private to igw_core.config
        return False, error


def type_of(parse: Callable[[str], object]) -> str:
    """Return what a ``_PARSERS`` parser accepts, found by trying it on sample values.

    Raises:
        TypeError: the parser accepts none of the kinds this reference knows.
    """
    if _tries(parse, "true") == (True, True) and _tries(parse, "false") == (True, False):
        return BOOLEAN
    ok, value = _tries(parse, "1m30s")
    if ok and isinstance(value, float) and value == 90.0:
        return DURATION
    ok, value = _tries(parse, "7")
    if ok and type(value) is int:
        _, refusal = _tries(parse, "x")
        limits = _INTEGER_RANGE.search(str(getattr(refusal, "accepted", refusal)))
        if limits is None:
            return INTEGER
        low, high = int(limits.group(1)), int(limits.group(2))
        if (low, high) == (0, 65535):
            return PORT
        return INTEGER if low == 0 else f"{INTEGER} (≥ {low})"
    url_ok, url_value = _tries(parse, "http://a.example")
    other_ok, _ = _tries(parse, "not a url")
    if url_ok and isinstance(url_value, tuple):
        return LIST if other_ok else URL_LIST
    if url_ok and isinstance(url_value, str):
        return TEXT if other_ok else URL
    raise TypeError(f"{parse!r} accepts none of the known kinds of value")


def _field_type(field: dataclasses.Field[object]) -> str:
    """Return a field's type: from its parser, else from its annotation."""
    parse = _PARSERS.get(field.name)
    if parse is not None:
        return type_of(parse)
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        return _TYPES_BY_ANNOTATION[annotation]
    except KeyError:
        raise TypeError(
            f"Settings.{field.name}: no parser and unknown type {annotation!r}") from None


def format_default(kind: str, value: object) -> str:
    """Return a default value the way an operator writes it, for a variable of type ``kind``.

    Booleans are ``true``/``false``, durations Go-style, lists comma-separated, and an
    empty list or text is ``(none)``. Values are wrapped in backticks.

    Raises:
        ValueError: a duration default is negative.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif kind == DURATION and isinstance(value, int | float):
        text = format_duration(float(value))
    elif isinstance(value, tuple):
        text = ", ".join(str(item) for item in value)
    else:
        text = str(value)
    return f"`{text}`" if text else "(none)"


def _default_of(field: dataclasses.Field[object]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"Settings.{field.name} has no default")


def variable_fields() -> list[dataclasses.Field[object]]:
    """Return the ``Settings`` fields that are one variable each, in declaration order."""
    return [f for f in dataclasses.fields(Settings) if f.name not in NOT_VARIABLES]


def coverage_problems() -> list[str]:
    """Return what is wrong between ``SETTINGS_DOCS`` and the ``Settings`` fields.

    Each item is one sentence naming fields: undocumented ones, entries for fields that
    do not exist, entries in an unknown group. Empty when everything is covered.
    """
    names = [f.name for f in variable_fields()]
    problems = []
    missing = [name for name in names if name not in SETTINGS_DOCS]
    if missing:
        problems.append(
            "Settings fields without a SettingDoc in igw_core/settings_docs.py: "
            + ", ".join(missing)
        )
    unknown = sorted(set(SETTINGS_DOCS) - set(names))
    if unknown:
        problems.append("SETTINGS_DOCS entries for no Settings field: " + ", ".join(unknown))
    bad_groups = sorted(name for name, doc in SETTINGS_DOCS.items() if doc.group not in GROUPS)
    if bad_groups:
        problems.append("SETTINGS_DOCS entries in a group not in GROUPS: " + ", ".join(bad_groups))
    return problems


def setting_rows() -> list[SettingRow]:
    """Return one row per variable, in ``Settings`` field order.

    Raises:
        UndocumentedSettings: a field has no ``SettingDoc``, or ``SETTINGS_DOCS`` names a
            field that does not exist or a group not in ``GROUPS``.
        TypeError: a field's type cannot be told from its parser or annotation.
    """
    problems = coverage_problems()
    if problems:
        raise UndocumentedSettings("; ".join(problems))
    rows = []
    for field in variable_fields():
        doc = SETTINGS_DOCS[field.name]
        variable = _VARIABLE_NAMES.get(field.name, field.name.upper())
        kind = _field_type(field)
        rows.append(SettingRow(
            field=field.name, variable=variable, type=kind,
            default=format_default(kind, _default_of(field)),
            alias=_ALIASES.get(variable, ""), meaning=doc.meaning, doc=doc.doc,
            group=doc.group,
        ))
    return rows


def _auth_of(spec: ProviderSpec) -> str:
    extra = ", ".join(f"`{name}: {value}`" for name, value in spec.extra_headers)
    return AUTH_STYLE_DOCS[spec.auth] + (f", plus {extra}" if extra else "")


def provider_rows() -> list[ProviderRow]:
    """Return one row per ``PROVIDER_SPECS`` entry, in table order."""
    return [
        ProviderRow(
            id=spec.id, url_variable=f"{spec.id.upper()}_API_URL", default_url=spec.base_url,
            key_variable=f"{spec.id.upper()}_API_KEY", auth=_auth_of(spec),
            notes=PROVIDER_NOTES.get(spec.id, ""),
        )
        for spec in PROVIDER_SPECS.values()
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {_cell(cell)} " if cell else " " for cell in cells) + "|"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), "|" + " --- |" * len(header), *(_row(row) for row in rows)]


def _link(doc: str) -> str:
    """Return a markdown link to a repository doc, relative to ``docs/``."""
    return f"[{doc}]({posixpath.relpath(doc, posixpath.dirname(OUTPUT_NAME))})"


def _title(group: str) -> str:
    return group[:1].upper() + group[1:]


_INTRO = f"""\
<!-- Generated by scripts/configuration_doc.py from igw_core/config.py,
igw_core/providers.py and igw_core/settings_docs.py. Do not edit: change those files and
run `{REGENERATE}`. -->

# Configuration reference

igw is configured entirely by environment variables, with the Go Inference Gateway's names
and defaults. Every variable, its type, default and meaning is below; the linked document
has the details.

- **Booleans** are exactly `true` or `false` (not `1`, `yes` or `True`).
- **Durations** are Go durations: `500ms`, `5s`, `1m30s`, `1.5h` (units `ns`, `us`, `µs`,
  `ms`, `s`, `m`, `h`; a unit is required except for `0`), never negative.
- **Integers** are base-10 digits; a **port** is 0 to 65535. **Lists** are comma-separated,
  spaces around the items ignored.
- **Unset, empty or whitespace-only** means the default. Surrounding whitespace is ignored,
  and so are unknown variables.
- **Every bad variable is reported at once**, each with what it accepts, and the process
  exits with status 2 before serving anything.
- **Aliases**: a flag with an alias (the alias column, mostly the `*_ENABLED` spelling of a
  `*_ENABLE` flag) may be set under either name; both set to different values is refused.
- **Flags win** over the environment: `--host` and `--port` over `SERVER_HOST` and
  `SERVER_PORT`, `--demo` over `IGW_DEMO` (`igw --help` lists the flags).
"""


def render() -> str:
    """Return the whole of ``docs/configuration.md``.

    Raises:
        UndocumentedSettings: ``SETTINGS_DOCS`` does not cover the ``Settings`` fields
            exactly (the message names the fields).
        TypeError: a field's type cannot be told.
    """
    rows = setting_rows()
    lines = [_INTRO]
    header = ("variable", "type", "default", "alias", "meaning", "doc")
    for group, intro in GROUPS.items():
        members = [row for row in rows if row.group == group]
        if not members:
            continue
        lines += [f"## {_title(group)}", "", intro, ""]
        lines += _table(header, [
            (f"`{row.variable}`", row.type, row.default,
             f"`{row.alias}`" if row.alias else "", row.meaning, _link(row.doc))
            for row in members
        ])
        lines.append("")
    lines += [
        "## Providers", "",
        "Every provider below has two variables, `{ID}` being its id upper-cased "
        "(`OLLAMA_CLOUD_API_KEY`):", "",
        f"- {PROVIDER_URL_MEANING}",
        f"- {PROVIDER_KEY_MEANING}", "",
        f"Requests name a provider as `provider/model` or with `?provider=ID`: "
        f"{_link('docs/api.md')}. The `demo` provider (`IGW_DEMO=true` or `--demo`) needs "
        "neither variable.", "",
    ]
    lines += _table(
        ("provider", "URL variable", "default URL", "key variable", "key sent as", "notes"),
        [(f"`{p.id}`", f"`{p.url_variable}`", f"`{p.default_url}`", f"`{p.key_variable}`",
          p.auth, p.notes) for p in provider_rows()],
    )
    return "\n".join(lines) + "\n"


def stale_diff(current: str, expected: str, limit: int = 60) -> list[str]:
    """Return up to ``limit`` lines of a unified diff from ``current`` to ``expected``."""
    diff = difflib.unified_diff(
        current.splitlines(), expected.splitlines(),
        f"{OUTPUT_NAME} (committed)", f"{OUTPUT_NAME} (generated)", lineterm="",
    )
    lines = list(diff)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``docs/configuration.md``, or with ``--check`` compare it; return the exit status.

    Returns 0 when written or up to date, 1 when ``--check`` finds it stale or missing, or
    when ``SETTINGS_DOCS`` does not cover the ``Settings`` fields (printed to stderr).
    """
    parser = argparse.ArgumentParser(description=f"Generate {OUTPUT_NAME} from the code.")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 (with a diff) when {OUTPUT_NAME} is not up to date")
    args = parser.parse_args(argv)
    try:
        expected = render()
    except UndocumentedSettings as error:
        print(f"cannot generate {OUTPUT_NAME}: {error}", file=sys.stderr)
        return 1
    if not args.check:
        OUTPUT.write_text(expected, encoding="utf-8")
        print(f"wrote {OUTPUT_NAME}")
        return 0
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if current == expected:
        return 0
    print(f"{OUTPUT_NAME} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
    for line in stale_diff(current, expected):
        print(line, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
