"""Settings: the gateway's configuration, parsed and checked from an environment mapping.

The core never reads the process environment itself; :class:`ConfigError` names
every bad variable at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, cast
from urllib.parse import urlsplit

from igw_core.providers import DEMO_SPEC, PROVIDER_SPECS, Provider

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "Settings",
    "default_providers",
    "load_settings",
    "parse_duration",
    "startup_lines",
]


def default_providers() -> tuple[Provider, ...]:
    """Return one provider per ``PROVIDER_SPECS`` entry, at its default URL and without a key."""
    return tuple(Provider(spec, spec.base_url.rstrip("/"), "") for spec in PROVIDER_SPECS.values())


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of one gateway process; durations are float seconds.

    Each field is read from the environment variable of the same name upper-cased
    (``demo`` from ``IGW_DEMO``); see :func:`load_settings`. ``providers`` holds one
    entry per ``PROVIDER_SPECS`` entry in table order, plus the demo provider last
    when ``demo`` is true. Build instances with :func:`load_settings`; constructing
    one by hand does not add the demo provider.
    """

    environment: str = "production"
    allowed_models: tuple[str, ...] = ()
    disallowed_models: tuple[str, ...] = ()
    enable_vision: bool = False
    debug_content_truncate_words: int = 10
    debug_max_messages: int = 100

    telemetry_enable: bool = False
    telemetry_metrics_port: int = 9464

    mcp_enable: bool = False
    mcp_expose: bool = False
    mcp_servers: tuple[str, ...] = ()
    mcp_include_tools: tuple[str, ...] = ()
    mcp_exclude_tools: tuple[str, ...] = ()
    mcp_client_timeout: float = 5.0
    mcp_dial_timeout: float = 3.0
    mcp_request_timeout: float = 5.0
    mcp_response_header_timeout: float = 3.0
    mcp_enable_reconnect: bool = True
    mcp_max_retries: int = 3
    mcp_retry_interval: float = 5.0
    mcp_initial_backoff: float = 1.0
    mcp_reconnect_interval: float = 30.0
    mcp_polling_enable: bool = True
    mcp_polling_interval: float = 30.0
    mcp_polling_timeout: float = 5.0
    mcp_disable_healthcheck_logs: bool = True

    auth_enable: bool = False
    auth_oidc_issuer: str = ""
    auth_oidc_client_id: str = ""
    auth_oidc_client_secret: str = ""

    server_host: str = "127.0.0.1"
    server_port: int = 8080
    server_read_timeout: float = 30.0
    server_write_timeout: float = 30.0
    server_idle_timeout: float = 120.0
    server_max_request_body_size: int = 10485760
    server_tls_cert_path: str = ""
    server_tls_key_path: str = ""
    server_shutdown_timeout: float = 10.0

    client_timeout: float = 30.0
    client_max_idle_conns: int = 20
    client_max_idle_conns_per_host: int = 20
    client_idle_conn_timeout: float = 30.0
    client_response_header_timeout: float = 10.0

    routing_enabled: bool = False
    routing_config_path: str = ""
    proxy_enable: bool = True
    demo: bool = False

    providers: tuple[Provider, ...] = field(default_factory=default_providers)

    @property
    def is_development(self) -> bool:
        """Whether ``ENVIRONMENT`` is exactly ``development``."""
        return self.environment == "development"

    def provider(self, id: str) -> Provider | None:
        """Return the provider with this id (any case), or ``None`` if there is none."""
        # A scan of ~16 entries is as fast as a dict lookup and needs no cache on a
        # frozen slots class.
        wanted = id.lower()
        for provider in self.providers:
            if provider.id == wanted:
                return provider
        return None

    def redacted(self) -> dict[str, object]:
        """Return every field by name, with each set secret replaced by ``"***"``.

        ``providers`` becomes a tuple of dicts (``id``, ``base_url``, ``api_key``,
        ``url_set``). Safe to log.
        """
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["auth_oidc_client_secret"] = _mask(self.auth_oidc_client_secret)
        out["providers"] = tuple(
            {
                "id": p.id,
                "base_url": p.base_url,
                "api_key": _mask(p.api_key),
                "url_set": p.url_set,
            }
            for p in self.providers
        )
        return out


def _mask(secret: str) -> str:
    return "***" if secret else ""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One refused environment variable.

    Attributes:
        variable: the variable's name, as the operator spelled it.
        value: the refused value (or the refused item of a list; ``""`` when missing).
        accepted: what the variable accepts, phrased to follow "accepted values are".
    """

    variable: str
    value: str
    accepted: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: accepted values are {self.accepted}"


class ConfigError(Exception):
    """The environment holds one or more bad variables; nothing may be served.

    Attributes:
        problems: every problem found, in the order the variables were checked.
    """

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


# --- value parsers: each returns the parsed value or raises _Refused ---------------


class _Refused(Exception):
    """A value a parser does not accept; ``item`` narrows it to one list item."""

    def __init__(self, accepted: str, item: str | None = None) -> None:
        super().__init__(accepted)
        self.accepted = accepted
        self.item = item


_Parser = Callable[[str], object]

_BOOL_ACCEPTED: Final = "exactly 'true' or 'false'"
_DURATION_ACCEPTED: Final = (
    "a non-negative Go duration such as 500ms, 5s, 1m30s or 1.5h "
    "(units ns, us, µs, ms, s, m, h; a unit is required except for 0)"
)
_URL_ACCEPTED: Final = "an absolute http:// or https:// URL with a host"
_URL_LIST_ACCEPTED: Final = "comma-separated absolute http:// or https:// URLs with a host"
_INT64_MAX: Final = 2**63 - 1


def _boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise _Refused(_BOOL_ACCEPTED)


_NS_PER_UNIT: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go accepts
    "\u03bcs": 1_000,  # Greek small letter mu, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a non-negative Go ``time.ParseDuration`` string into seconds.

    Accepts a sequence of decimal numbers, each with an optional fraction and a
    required unit (``300ms``, ``1.5h``, ``2h45m``, ``500µs``), an optional leading
    ``+``, and bare ``0``. Like Go, the total is counted in whole nanoseconds and
    may not exceed 2**63-1 ns.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: the text is not such a duration, is negative, or overflows.
    """
    if text.startswith("-"):
        raise ValueError(f"negative duration: {text!r}")
    body = text[1:] if text.startswith("+") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration: {text!r}")
    total_ns = 0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration: {text!r}")
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        if not whole and not fraction:
            raise ValueError(f"invalid duration: {text!r}")
        if len(whole.lstrip("0")) > 19:
            raise ValueError(f"duration out of range: {text!r}")
        scale = _NS_PER_UNIT[unit]
        total_ns += int(whole or "0") * scale
        # Digits past the 18th cannot change a whole-nanosecond result.
        fraction = fraction[:18]
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        if total_ns > _INT64_MAX:
            raise ValueError(f"duration out of range: {text!r}")
        pos = match.end()
    return total_ns / 1_000_000_000


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise _Refused(_DURATION_ACCEPTED) from None


_DIGITS: Final = re.compile(r"[0-9]+")


def _integer(minimum: int, maximum: int = _INT64_MAX) -> _Parser:
    accepted = f"a base-10 integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        if _DIGITS.fullmatch(text) is None or len(text.lstrip("0")) > 19:
            raise _Refused(accepted)
        number = int(text)
        if not minimum <= number <= maximum:
            raise _Refused(accepted)
        return number

    return parse


def _text(text: str) -> str:
    return text


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _is_http_url(text: str) -> bool:
    # Whitespace and control characters would corrupt a request line if let through.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return False
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _url(text: str) -> str:
    if not _is_http_url(text):
        raise _Refused(_URL_ACCEPTED)
    return text


def _url_list(text: str) -> tuple[str, ...]:
    items = _items(text)
    for item in items:
        if not _is_http_url(item):
            raise _Refused(_URL_LIST_ACCEPTED, item)
    return items


_port = _integer(0, 65535)
_count = _integer(0)

#: How each Settings field (bar ``providers``) is parsed from its variable.
_PARSERS: Final[dict[str, _Parser]] = {
    "environment": _text,
    "allowed_models": _items,
    "disallowed_models": _items,
    "enable_vision": _boolean,
    "debug_content_truncate_words": _count,
    "debug_max_messages": _count,
    "telemetry_enable": _boolean,
    "telemetry_metrics_port": _port,
    "mcp_enable": _boolean,
    "mcp_expose": _boolean,
    "mcp_servers": _url_list,
    "mcp_include_tools": _items,
    "mcp_exclude_tools": _items,
    "mcp_client_timeout": _duration,
    "mcp_dial_timeout": _duration,
    "mcp_request_timeout": _duration,
    "mcp_response_header_timeout": _duration,
    "mcp_enable_reconnect": _boolean,
    "mcp_max_retries": _count,
    "mcp_retry_interval": _duration,
    "mcp_initial_backoff": _duration,
    "mcp_reconnect_interval": _duration,
    "mcp_polling_enable": _boolean,
    "mcp_polling_interval": _duration,
    "mcp_polling_timeout": _duration,
    "mcp_disable_healthcheck_logs": _boolean,
    "auth_enable": _boolean,
    "auth_oidc_issuer": _url,
    "auth_oidc_client_id": _text,
    "auth_oidc_client_secret": _text,
    "server_host": _text,
    "server_port": _port,
    "server_read_timeout": _duration,
    "server_write_timeout": _duration,
    "server_idle_timeout": _duration,
    "server_max_request_body_size": _integer(1),
    "server_tls_cert_path": _text,
    "server_tls_key_path": _text,
    "server_shutdown_timeout": _duration,
    "client_timeout": _duration,
    "client_max_idle_conns": _count,
    "client_max_idle_conns_per_host": _count,
    "client_idle_conn_timeout": _duration,
    "client_response_header_timeout": _duration,
    "routing_enabled": _boolean,
    "routing_config_path": _text,
    "proxy_enable": _boolean,
    "demo": _boolean,
}

#: Variable names that are not simply the field name upper-cased.
_VARIABLE_NAMES: Final = {"demo": "IGW_DEMO"}

#: The ``*_ENABLED`` spellings accepted for each flag.
_ALIASES: Final = {
    "AUTH_ENABLE": "AUTH_ENABLED",
    "MCP_ENABLE": "MCP_ENABLED",
    "TELEMETRY_ENABLE": "TELEMETRY_ENABLED",
    "MCP_POLLING_ENABLE": "MCP_POLLING_ENABLED",
    "MCP_ENABLE_RECONNECT": "MCP_RECONNECT_ENABLED",
    "ENABLE_VISION": "VISION_ENABLED",
    "PROXY_ENABLE": "PROXY_ENABLED",
    "ROUTING_ENABLED": "ROUTING_ENABLE",  # the reference spells this flag with a D
}


def _get(env: Mapping[str, str], variable: str) -> str | None:
    """Return the stripped value, or ``None`` when unset, empty or whitespace-only."""
    value = env.get(variable)
    if value is None:
        return None
    return value.strip() or None


def _lookup(
    env: Mapping[str, str], variable: str, problems: list[ConfigProblem]
) -> tuple[str, str | None]:
    """Return (the variable actually used, its value or None), resolving aliases."""
    value = _get(env, variable)
    alias = _ALIASES.get(variable)
    if alias is None:
        return variable, value
    alias_value = _get(env, alias)
    if value is not None and alias_value is not None and value != alias_value:
        problems.append(
            ConfigProblem(
                variable,
                value,
                f"the same value as its alias {alias}={alias_value!r}, or only one of the two set",
            )
        )
        return variable, None
    if value is None and alias_value is not None:
        return alias, alias_value
    return variable, value


def _load_providers(
    env: Mapping[str, str], demo: bool, problems: list[ConfigProblem]
) -> tuple[Provider, ...]:
    providers: list[Provider] = []
    for spec in PROVIDER_SPECS.values():
        prefix = spec.id.upper()
        url_variable = f"{prefix}_API_URL"
        url = _get(env, url_variable)
        base_url = spec.base_url
        if url is not None:
            if _is_http_url(url):
                base_url = url
            else:
                problems.append(ConfigProblem(url_variable, url, _URL_ACCEPTED))
        key = _get(env, f"{prefix}_API_KEY") or ""
        providers.append(Provider(spec, base_url.rstrip("/"), key, url_set=url is not None))
    if demo:
        providers.append(Provider(DEMO_SPEC, DEMO_SPEC.base_url, "", url_set=True))
    return tuple(providers)


def _check_combinations(values: Mapping[str, object], problems: list[ConfigProblem]) -> None:
    """Add the problems that involve more than one variable."""
    refused = {problem.variable for problem in problems}
    if values.get("auth_enable") is True:
        if not values.get("auth_oidc_issuer") and "AUTH_OIDC_ISSUER" not in refused:
            problems.append(
                ConfigProblem(
                    "AUTH_OIDC_ISSUER", "", _URL_ACCEPTED + " (required when AUTH_ENABLE=true)"
                )
            )
        if not values.get("auth_oidc_client_id"):
            problems.append(
                ConfigProblem(
                    "AUTH_OIDC_CLIENT_ID", "", "a client id (required when AUTH_ENABLE=true)"
                )
            )
    cert = values.get("server_tls_cert_path", "")
    key = values.get("server_tls_key_path", "")
    if bool(cert) != bool(key):
        missing, present = (
            ("SERVER_TLS_KEY_PATH", "SERVER_TLS_CERT_PATH")
            if cert
            else ("SERVER_TLS_CERT_PATH", "SERVER_TLS_KEY_PATH")
        )
        problems.append(ConfigProblem(missing, "", f"a file path (required when {present} is set)"))


def load_settings(env: Mapping[str, str], *, demo: bool | None = None) -> Settings:
    """Parse and check the configuration held in ``env``.

    Every variable is read from its upper-cased field name (``IGW_DEMO`` for
    ``demo``), flags also from their ``*_ENABLED`` aliases. Surrounding whitespace
    is ignored, and an unset, empty or whitespace-only variable means the default.
    Unknown variables are ignored.

    Args:
        env: the environment, e.g. a copy of the process environment.
        demo: the ``--demo`` flag; when not ``None`` it overrides ``IGW_DEMO``
            (which is still checked).

    Returns:
        The settings, with the provider table built from ``{ID}_API_URL`` and
        ``{ID}_API_KEY``.

    Raises:
        ConfigError: listing every refused variable, not only the first.
    """
    problems: list[ConfigProblem] = []
    values: dict[str, object] = {}
    for name, parse in _PARSERS.items():
        variable, text = _lookup(env, _VARIABLE_NAMES.get(name, name.upper()), problems)
        if text is None:
            continue
        try:
            values[name] = parse(text)
        except _Refused as refused:
            item = text if refused.item is None else refused.item
            problems.append(ConfigProblem(variable, item, refused.accepted))
    if demo is not None:
        values["demo"] = demo
    _check_combinations(values, problems)
    values["providers"] = _load_providers(env, values.get("demo") is True, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(**cast(dict[str, Any], values))


def startup_lines(settings: Settings) -> list[str]:
    """Return the startup log: one line per feature, then the providers.

    The lines are, in order: auth, mcp, vision, telemetry, ``providers with keys:``
    and, only when there are any, ``keyless providers:`` (keyless providers whose URL
    was set, and demo). They never contain a key or secret.
    """
    lines = [
        f"auth enabled (issuer={settings.auth_oidc_issuer})"
        if settings.auth_enable
        else "auth disabled",
        f"mcp enabled (servers={', '.join(settings.mcp_servers) or 'none'})"
        if settings.mcp_enable
        else "mcp disabled",
        "vision enabled" if settings.enable_vision else "vision disabled",
        f"telemetry enabled (port={settings.telemetry_metrics_port})"
        if settings.telemetry_enable
        else "telemetry disabled",
    ]
    with_keys = [p.id for p in settings.providers if p.api_key]
    lines.append(f"providers with keys: {', '.join(with_keys) or 'none'}")
    keyless = [p.id for p in settings.providers if p.configured and not p.api_key]
    if keyless:
        lines.append(f"keyless providers: {', '.join(keyless)}")
    return lines
