"""What each configuration variable means to an operator, and which doc covers it.

:data:`SETTINGS_DOCS` has one :class:`SettingDoc` per :class:`igw_core.config.Settings`
field (bar ``providers``, whose variables are described by :data:`PROVIDER_URL_MEANING`,
:data:`PROVIDER_KEY_MEANING`, :data:`AUTH_STYLE_DOCS` and :data:`PROVIDER_NOTES`).
Names, types, defaults and aliases are not repeated here: ``scripts/configuration_doc.py``
reads them from :mod:`igw_core.config` and renders ``docs/configuration.md`` from both.
"""

from __future__ import annotations

from dataclasses import dataclass

from igw_core.providers import AuthStyle

__all__ = [
    "AUTH_STYLE_DOCS",
    "GROUPS",
    "PROVIDER_KEY_MEANING",
    "PROVIDER_NOTES",
    "PROVIDER_URL_MEANING",
    "SETTINGS_DOCS",
    "SettingDoc",
]

#: The groups of the configuration reference, in the order they are shown, each with
#: a sentence introducing its table.
GROUPS: dict[str, str] = {
    "general": "Logging, the model policy, vision, the raw proxy and the demo provider.",
    "telemetry": "Prometheus metrics, served on a listener of their own.",
    "MCP": (
        "Tools from Model Context Protocol servers, offered to the model and run by the "
        "gateway. A zero timeout means no limit; intervals have a floor of 50 ms."
    ),
    "auth": "OIDC bearer-token authentication of the gateway's clients.",
    "server": (
        "The listener of the standalone `igw` server. Under an ASGI server (uvicorn ...) "
        "that server's own settings apply instead, except `SERVER_MAX_REQUEST_BODY_SIZE` "
        "and `SERVER_HOST` (which the metrics listener binds)."
    ),
    "client": "The gateway's connections to the providers, one keep-alive pool per process.",
    "routing": "Model aliases served by one or more provider deployments.",
}


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """The operator-facing description of one setting.

    Attributes:
        group: the key of :data:`GROUPS` whose table lists the variable.
        meaning: one or two sentences: what it does, its units, when it matters.
        doc: the repository document that covers it, relative to the repository root
            (``README.md``, ``docs/auth.md``, ...).
    """

    group: str
    meaning: str
    doc: str


_README = "README.md"
_API = "docs/api.md"
_AUTH = "docs/auth.md"
_ENGINE = "docs/engine.md"
_MCP = "docs/mcp.md"
_ROUTING = "docs/routing.md"
_TELEMETRY = "docs/telemetry.md"

#: One entry per Settings field (bar ``providers``), keyed by field name.
SETTINGS_DOCS: dict[str, SettingDoc] = {
    # -- general -----------------------------------------------------------------------
    "environment": SettingDoc(
        "general",
        "`development` gives human-readable logs at DEBUG, with the outbound provider request, "
        "the upstream status and body (keys scrubbed) and the detail of each refused token. "
        "Any other value gives production logs: one JSON object per line at INFO.",
        _TELEMETRY,
    ),
    "allowed_models": SettingDoc(
        "general",
        "Models that may be used: full `provider/model` ids or bare model names, matched "
        "case-insensitively. When set, every other model gets 403 and is hidden from "
        "`/v1/models`, and `DISALLOWED_MODELS` is ignored.",
        _README,
    ),
    "disallowed_models": SettingDoc(
        "general",
        "Models refused with 403 and hidden from `/v1/models`: full `provider/model` ids or "
        "bare model names, matched case-insensitively. Ignored when `ALLOWED_MODELS` is set.",
        _README,
    ),
    "enable_vision": SettingDoc(
        "general",
        "`true` forwards requests with image content (`image_url`, `image`, `input_image` "
        "parts, data URLs), except to models known to be text-only (400). With `false`, any "
        "request with an image is a 400 naming `ENABLE_VISION=true`.",
        _README,
    ),
    "debug_content_truncate_words": SettingDoc(
        "general",
        "In development logs (`ENVIRONMENT=development`), each message content and response "
        "string is cut to this many words. No effect on production logs.",
        _TELEMETRY,
    ),
    "debug_max_messages": SettingDoc(
        "general",
        "In development logs, only the last this-many messages of a logged chat request are "
        "shown (`0` shows none). No effect on production logs.",
        _TELEMETRY,
    ),
    "proxy_enable": SettingDoc(
        "general",
        "Serves the raw passthrough `/proxy/{provider}/{path}`, which forwards the request "
        "unchanged with the provider's key (no model policy, vision, MCP or telemetry). "
        "`false` makes it 404.",
        _API,
    ),
    "demo": SettingDoc(
        "general",
        "`true` adds the built-in keyless `demo` provider (`model=\"demo/echo\"`), which "
        "answers with the last user message without any network. The `--demo` flag "
        "overrides it.",
        _README,
    ),
    # -- telemetry ---------------------------------------------------------------------
    "telemetry_enable": SettingDoc(
        "telemetry",
        "`true` records Prometheus metrics and serves them at `GET /metrics` on "
        "`TELEMETRY_METRICS_PORT`.",
        _TELEMETRY,
    ),
    "telemetry_metrics_port": SettingDoc(
        "telemetry",
        "Port of the metrics listener, apart from the API port; it binds `SERVER_HOST`. "
        "Used only with `TELEMETRY_ENABLE=true`; a port in use stops the gateway at startup.",
        _TELEMETRY,
    ),
    # -- MCP ---------------------------------------------------------------------------
    "mcp_enable": SettingDoc(
        "MCP",
        "`true` connects to `MCP_SERVERS` and offers their tools on `/v1/chat/completions` "
        "as `mcp_<name>`; the gateway runs the calls itself, at most 10 provider calls per "
        "request.",
        _MCP,
    ),
    "mcp_expose": SettingDoc(
        "MCP",
        "`true` serves `GET /v1/mcp/tools`, the tools the model is offered; otherwise that "
        "route answers 403.",
        _MCP,
    ),
    "mcp_servers": SettingDoc(
        "MCP",
        "The MCP servers' Streamable HTTP endpoints (duplicates dropped). When two servers "
        "offer the same tool name, the one listed first wins.",
        _MCP,
    ),
    "mcp_include_tools": SettingDoc(
        "MCP",
        "When set, only these tools are offered; an entry matches a tool's own name (`add`) "
        "or its function name (`mcp_add`).",
        _MCP,
    ),
    "mcp_exclude_tools": SettingDoc(
        "MCP",
        "Tools never offered, by own name or function name; applied after "
        "`MCP_INCLUDE_TOOLS`.",
        _MCP,
    ),
    "mcp_client_timeout": SettingDoc(
        "MCP",
        "Bound on one whole HTTP request to an MCP server, headers and body.",
        _MCP,
    ),
    "mcp_dial_timeout": SettingDoc(
        "MCP",
        "Bound on the TCP (and TLS) connect to an MCP server.",
        _MCP,
    ),
    "mcp_request_timeout": SettingDoc(
        "MCP",
        "Bound on one connection attempt (`initialize`, `tools/list`) and on each tool call, "
        "a re-initialization included. At startup, chat requests wait at most this long for "
        "the first connection attempts.",
        _MCP,
    ),
    "mcp_response_header_timeout": SettingDoc(
        "MCP",
        "Bound on the wait for an MCP response's headers. For a server that answers in JSON "
        "rather than an event stream, this also bounds the tool's run.",
        _MCP,
    ),
    "mcp_enable_reconnect": SettingDoc(
        "MCP",
        "`true` reconnects a server that went down, in cycles of `MCP_MAX_RETRIES` attempts; "
        "with `false` only polls bring it back.",
        _MCP,
    ),
    "mcp_max_retries": SettingDoc(
        "MCP",
        "Reconnect attempts per cycle, with `MCP_ENABLE_RECONNECT=true`.",
        _MCP,
    ),
    "mcp_retry_interval": SettingDoc(
        "MCP",
        "Cap on the delay between reconnect attempts of a cycle, which doubles from "
        "`MCP_INITIAL_BACKOFF`.",
        _MCP,
    ),
    "mcp_initial_backoff": SettingDoc(
        "MCP",
        "Delay before the first reconnect attempt of a cycle; it doubles for each later "
        "attempt, up to `MCP_RETRY_INTERVAL`.",
        _MCP,
    ),
    "mcp_reconnect_interval": SettingDoc(
        "MCP",
        "Pause after a failed reconnect cycle before the next cycle starts.",
        _MCP,
    ),
    "mcp_polling_enable": SettingDoc(
        "MCP",
        "`true` polls every server, up or down, with a `tools/list`: it notices failures, "
        "recoveries and tool-list changes. With `false` no polls run.",
        _MCP,
    ),
    "mcp_polling_interval": SettingDoc(
        "MCP",
        "Time between two polls of each server.",
        _MCP,
    ),
    "mcp_polling_timeout": SettingDoc(
        "MCP",
        "Bound on one poll.",
        _MCP,
    ),
    "mcp_disable_healthcheck_logs": SettingDoc(
        "MCP",
        "`true` logs one `mcp polling failed` line, without detail, when a server goes down. "
        "`false` logs every failed check with the underlying TCP, TLS or HTTP error.",
        _MCP,
    ),
    # -- auth --------------------------------------------------------------------------
    "auth_enable": SettingDoc(
        "auth",
        "`true` requires `Authorization: Bearer <JWT>` from the OIDC issuer on every route "
        "but `/health` and `/ready`, `/proxy` included. Requires `AUTH_OIDC_ISSUER` and "
        "`AUTH_OIDC_CLIENT_ID`.",
        _AUTH,
    ),
    "auth_oidc_issuer": SettingDoc(
        "auth",
        "The issuer URL: a token's `iss` must equal it byte for byte, and the signing keys "
        "come from its `/.well-known/openid-configuration`. Required when `AUTH_ENABLE=true`.",
        _AUTH,
    ),
    "auth_oidc_client_id": SettingDoc(
        "auth",
        "The client id a token must carry in `aud` or as `azp`. Required when "
        "`AUTH_ENABLE=true`.",
        _AUTH,
    ),
    "auth_oidc_client_secret": SettingDoc(
        "auth",
        "Accepted for compatibility with the Go gateway but not used: tokens are checked "
        "against the issuer's public keys. Scrubbed from every log line.",
        _AUTH,
    ),
    # -- server ------------------------------------------------------------------------
    "server_host": SettingDoc(
        "server",
        "Address the standalone server (and the metrics listener) binds; `--host` overrides "
        "it. A non-loopback address with `AUTH_ENABLE=false` logs a warning.",
        _README,
    ),
    "server_port": SettingDoc(
        "server",
        "Port the standalone server listens on (`0`: any free port); `--port` overrides it.",
        _README,
    ),
    "server_read_timeout": SettingDoc(
        "server",
        "Bound on each wait for more of a client's request: a stalled body gets 408 and the "
        "connection closes, a stalled head is closed. `0`: no limit.",
        _ENGINE,
    ),
    "server_write_timeout": SettingDoc(
        "server",
        "Bound on each wait for a slow client to take more of the response; the connection "
        "is closed after it. `0`: no limit.",
        _ENGINE,
    ),
    "server_idle_timeout": SettingDoc(
        "server",
        "How long a keep-alive connection may wait for its next request before it is "
        "closed. `0`: no limit.",
        _ENGINE,
    ),
    "server_max_request_body_size": SettingDoc(
        "server",
        "Largest request body accepted, in bytes (default 10 MiB), on both frontends. "
        "Checked against `Content-Length` and while reading a chunked body; a larger body "
        "gets 413 and the connection closes.",
        _README,
    ),
    "server_tls_cert_path": SettingDoc(
        "server",
        "Path of a PEM certificate (chain); with `SERVER_TLS_KEY_PATH` the standalone server "
        "speaks HTTPS, and HTTP/2 through ALPN. Set both or neither; an unreadable file is "
        "refused at startup (exit status 2).",
        _README,
    ),
    "server_tls_key_path": SettingDoc(
        "server",
        "Path of the certificate's unencrypted PEM private key, set together with "
        "`SERVER_TLS_CERT_PATH`. A key that is unreadable, encrypted or not the "
        "certificate's is refused at startup (exit status 2).",
        _README,
    ),
    "server_shutdown_timeout": SettingDoc(
        "server",
        "After SIGTERM or SIGINT, how long in-flight requests get to finish before the "
        "standalone server exits; `/ready` answers 503 meanwhile.",
        _README,
    ),
    # -- client ------------------------------------------------------------------------
    "client_timeout": SettingDoc(
        "client",
        "Bound on connecting to a provider and on each gap between reads of its response, "
        "so a stream that keeps flowing is never cut; it also caps "
        "`CLIENT_RESPONSE_HEADER_TIMEOUT`. `0`: no limit.",
        _ENGINE,
    ),
    "client_max_idle_conns": SettingDoc(
        "client",
        "Idle keep-alive connections to providers kept for reuse, in all, per process. "
        "Connections freed above it wait up to one second for reuse before the surplus "
        "closes (least recently used first), so a load above it is not served by a new "
        "connection per request. `0`: no connection is reused.",
        _ENGINE,
    ),
    "client_max_idle_conns_per_host": SettingDoc(
        "client",
        "Idle keep-alive connections kept per provider origin (scheme, host, port), per "
        "process, with the same one-second grace for a surplus. A load that keeps more "
        "requests than this in flight to one provider settles on more connections; when it "
        "drops, the idle ones over the limit close. `0`: no connection is reused.",
        _ENGINE,
    ),
    "client_idle_conn_timeout": SettingDoc(
        "client",
        "How long an idle provider connection is kept for reuse before it is closed. "
        "`0`: no limit.",
        _ENGINE,
    ),
    "client_response_header_timeout": SettingDoc(
        "client",
        "Bound on the wait for a provider's response head, connecting included, and capped "
        "by `CLIENT_TIMEOUT`; after it the client gets 504. `0`: `CLIENT_TIMEOUT` alone.",
        _ENGINE,
    ),
    # -- routing -----------------------------------------------------------------------
    "routing_enabled": SettingDoc(
        "routing",
        "`true` turns on model routing: a request whose `model` is an alias defined in the "
        "file at `ROUTING_CONFIG_PATH` is served by that alias's provider deployments, with "
        "the strategy, retries and fallbacks the file sets.",
        _ROUTING,
    ),
    "routing_config_path": SettingDoc(
        "routing",
        "Path of the YAML file that defines the routing aliases, required when "
        "`ROUTING_ENABLED=true`. The file is checked at startup, every mistake named with "
        "its line (exit status 2); SIGHUP reloads it, keeping the current routes when the "
        "new file is refused.",
        _ROUTING,
    ),
}

#: What ``{ID}_API_URL`` does, for every provider.
PROVIDER_URL_MEANING = (
    "`{ID}_API_URL` replaces the provider's default base URL (an absolute `http://` or "
    "`https://` URL; a trailing `/` is dropped). For a keyless provider, setting it is what "
    "makes the provider configured and listed in `/v1/models`."
)

#: What ``{ID}_API_KEY`` does, for every provider.
PROVIDER_KEY_MEANING = (
    "`{ID}_API_KEY` is the provider's API key, sent as the table says and scrubbed from every "
    "log line. A request for a provider that needs a key and has none is a 400 naming the "
    "variable."
)

#: How each auth style sends the key, as an operator would see it on the wire.
AUTH_STYLE_DOCS: dict[AuthStyle, str] = {
    AuthStyle.BEARER: "`Authorization: Bearer <key>`",
    AuthStyle.X_API_KEY: "`x-api-key: <key>`",
    AuthStyle.NONE: "none: keyless, a key is not sent",
}

#: Facts about single providers that an operator must know, by provider id.
PROVIDER_NOTES: dict[str, str] = {
    "ollama": "the default host is the service name `ollama`; set `OLLAMA_API_URL`",
    "llamacpp": (
        "the default host is the service name `llamacpp`; needs `LLAMACPP_API_KEY` "
        "(any value when the server has no key)"
    ),
    "cloudflare": "set `CLOUDFLARE_API_URL` with your account id in place of `{ACCOUNT_ID}`",
}
