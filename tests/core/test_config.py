"""Properties of igw_core.config: parsing, refusal and reporting of the environment."""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from igw_core.config import (
    ConfigError,
    ConfigProblem,
    Settings,
    load_settings,
    parse_duration,
    startup_lines,
)
from igw_core.providers import DEMO_SPEC, PROVIDER_SPECS

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
DEFAULTS = Settings()


def variable_of(name: str) -> str:
    return "IGW_DEMO" if name == "demo" else name.upper()


def type_name(field: dataclasses.Field[object]) -> str:
    """The name of a field's type: the compiled Settings holds the type, the source its name."""
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")


def fields_of_type(name: str) -> list[str]:
    return [field_name for field_name, f in FIELDS.items() if type_name(f) == name]


BOOL_FIELDS = fields_of_type("bool")
DURATION_FIELDS = fields_of_type("float")
INT_FIELDS = fields_of_type("int")
PORT_FIELDS = ["telemetry_metrics_port", "server_port"]

ALIASES = {
    "AUTH_ENABLED": "auth_enable",
    "MCP_ENABLED": "mcp_enable",
    "TELEMETRY_ENABLED": "telemetry_enable",
    "MCP_POLLING_ENABLED": "mcp_polling_enable",
    "MCP_RECONNECT_ENABLED": "mcp_enable_reconnect",
    "VISION_ENABLED": "enable_vision",
    "PROXY_ENABLED": "proxy_enable",
}
# (variable, field) for every boolean spelling, canonical and alias.
BOOL_VARIABLES = [(variable_of(name), name) for name in BOOL_FIELDS] + list(ALIASES.items())

PROVIDER_VARIABLES = [
    f"{spec_id.upper()}_API_{part}" for spec_id in PROVIDER_SPECS for part in ("URL", "KEY")
]
ALL_VARIABLES = (
    [variable_of(name) for name in FIELDS if name != "providers"]
    + list(ALIASES)
    + PROVIDER_VARIABLES
)

# Auth needs its issuer and client id, so enabling it alone is refused.
AUTH_COMPLETE = {
    "AUTH_OIDC_ISSUER": "https://idp.example.com/realms/igw",
    "AUTH_OIDC_CLIENT_ID": "igw",
}


def refused(env: dict[str, str], **kwargs: bool) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load_settings(env, **kwargs)
    return info.value.problems


def with_auth(env: dict[str, str], variable: str) -> dict[str, str]:
    return {**env, **AUTH_COMPLETE} if variable in ("AUTH_ENABLE", "AUTH_ENABLED") else env


# --- defaults -----------------------------------------------------------------------


def test_an_empty_environment_gives_the_defaults() -> None:
    assert load_settings({}) == DEFAULTS


def test_defaults_match_design() -> None:
    assert DEFAULTS.environment == "production"
    assert DEFAULTS.server_host == "127.0.0.1"
    assert DEFAULTS.server_port == 8080
    assert DEFAULTS.mcp_client_timeout == 5.0
    assert DEFAULTS.server_idle_timeout == 120.0
    assert DEFAULTS.server_max_request_body_size == 10485760
    assert DEFAULTS.telemetry_metrics_port == 9464
    assert DEFAULTS.mcp_disable_healthcheck_logs is True
    assert not DEFAULTS.is_development
    assert [p.id for p in DEFAULTS.providers] == list(PROVIDER_SPECS)
    assert all(not p.api_key and not p.url_set for p in DEFAULTS.providers)


@given(
    blanks=st.dictionaries(
        st.sampled_from(ALL_VARIABLES), st.text(alphabet=" \t\r\n", max_size=4), min_size=1
    )
)
def test_set_but_empty_or_blank_variables_mean_the_default(blanks: dict[str, str]) -> None:
    assert load_settings(blanks) == DEFAULTS


def test_unknown_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "SERVER_PORTT": "x", "FOO_API_KEY": "k"}) == DEFAULTS


# --- booleans -----------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "name"), BOOL_VARIABLES)
@pytest.mark.parametrize("spelling", [True, False])
def test_true_and_false_round_trip(variable: str, name: str, spelling: bool) -> None:
    env = with_auth({variable: str(spelling).lower()}, variable)
    assert getattr(load_settings(env), name) is spelling


@given(variable=st.sampled_from([v for v, _ in BOOL_VARIABLES]), value=st.text(max_size=8))
@example(variable="ENABLE_VISION", value="True")
@example(variable="AUTH_ENABLE", value="TRUE")
@example(variable="MCP_ENABLED", value="False")
@example(variable="PROXY_ENABLE", value="yes")
@example(variable="IGW_DEMO", value="no")
@example(variable="TELEMETRY_ENABLE", value="1")
@example(variable="MCP_EXPOSE", value="0")
@example(variable="VISION_ENABLED", value="on")
@example(variable="MCP_POLLING_ENABLE", value="off")
def test_every_other_boolean_spelling_is_refused_naming_variable_and_value(
    variable: str, value: str
) -> None:
    if value.strip() in ("", "true", "false"):
        return
    problems = refused({variable: value})
    assert ConfigProblem(variable, value.strip(), "exactly 'true' or 'false'") in problems


def test_enable_vision_True_is_refused_with_a_message_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"ENABLE_VISION": "True"})
    assert str(info.value) == "ENABLE_VISION='True': accepted values are exactly 'true' or 'false'"


def test_igw_demo_flag_adds_the_demo_provider_last() -> None:
    settings = load_settings({"IGW_DEMO": "true"})
    assert settings.demo
    assert settings.providers[-1].spec is DEMO_SPEC
    assert settings.providers[-1].url_set
    assert settings.provider("demo") is settings.providers[-1]
    assert load_settings({}).provider("demo") is None


def test_demo_argument_overrides_igw_demo() -> None:
    assert load_settings({"IGW_DEMO": "false"}, demo=True).demo
    assert not load_settings({"IGW_DEMO": "true"}, demo=False).demo
    assert load_settings({"IGW_DEMO": "true"}, demo=None).demo


# --- aliases ------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "name"), list(ALIASES.items()))
def test_alias_and_canonical_spelling_agreeing_is_accepted(alias: str, name: str) -> None:
    env = with_auth({alias: "true", variable_of(name): "true"}, alias)
    assert getattr(load_settings(env), name) is True


@pytest.mark.parametrize(("alias", "name"), list(ALIASES.items()))
def test_alias_and_canonical_spelling_differing_is_refused_naming_both(
    alias: str, name: str
) -> None:
    problems = refused(with_auth({alias: "true", variable_of(name): "false"}, alias))
    assert len(problems) == 1
    text = str(problems[0])
    assert variable_of(name) in text
    assert alias in text


def test_a_refused_alias_is_reported_under_the_alias_name() -> None:
    (problem,) = refused({"VISION_ENABLED": "yes"})
    assert problem.variable == "VISION_ENABLED"
    assert problem.value == "yes"


# --- durations ----------------------------------------------------------------------

UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}

duration_parts = st.tuples(
    st.integers(min_value=0, max_value=10_000),
    st.one_of(st.none(), st.text(alphabet="0123456789", max_size=6)),
    st.sampled_from(list(UNIT_NS)),
)


@st.composite
def go_durations(draw: st.DrawFn) -> tuple[str, float]:
    """A Go duration string and its value in seconds."""
    parts = draw(st.lists(duration_parts, min_size=1, max_size=5))
    text = ""
    total_ns = 0
    for whole, fraction, unit in parts:
        text += str(whole) if fraction is None else f"{whole}.{fraction}"
        text += unit
        value = Fraction(whole) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
        total_ns += math.floor(value * UNIT_NS[unit])
    return text, total_ns / 10**9


@given(duration=go_durations())
def test_generated_go_durations_parse_to_their_seconds(duration: tuple[str, float]) -> None:
    text, seconds = duration
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-12, abs_tol=1e-9)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("+0", 0.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("1m30s", 90.0),
        ("500us", 0.0005),
        ("500µs", 0.0005),
        ("500μs", 0.0005),
        ("10ns", 1e-8),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("0s", 0.0),
        ("1h1h", 7200.0),
        ("0.000000001s", 1e-9),
    ],
)
def test_go_duration_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "1.5",
        "0.0",
        "-5s",
        "-0",
        "5sec",
        "5S",
        "1h30",
        ".s",
        "s",
        "1..5s",
        "1e3s",
        "٣s",
        "5 s",
        "1_000ms",
        "inf",
        "nan",
        "+",
        "++5s",
        "9999999999999999999h",
        "99999999999999999999999999ns",
    ],
)
def test_invalid_go_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# The grammar of Go's time.ParseDuration without a sign of '-', written independently.
GO_DURATION = re.compile(r"\+?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)")


@given(
    text=st.one_of(
        st.text(alphabet="0123456789.+-nsuµμmhx ", max_size=10),
        st.text(max_size=10),
    )
)
def test_strings_outside_the_go_duration_grammar_are_refused(text: str) -> None:
    if GO_DURATION.fullmatch(text) is None:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        try:
            assert parse_duration(text) >= 0.0
        except ValueError as error:
            assert "out of range" in str(error)


@given(name=st.sampled_from(DURATION_FIELDS), duration=go_durations())
def test_duration_variables_take_go_durations(name: str, duration: tuple[str, float]) -> None:
    text, seconds = duration
    value = getattr(load_settings({name.upper(): text}), name)
    assert math.isclose(value, seconds, rel_tol=1e-12, abs_tol=1e-9)


@pytest.mark.parametrize("name", DURATION_FIELDS)
def test_bare_numbers_are_refused_for_durations_saying_what_is_accepted(name: str) -> None:
    (problem,) = refused({name.upper(): "5"})
    assert problem.variable == name.upper()
    assert problem.value == "5"
    assert "Go duration such as 500ms, 5s, 1m30s" in problem.accepted


# --- integers, lists, URLs ----------------------------------------------------------


@pytest.mark.parametrize("name", INT_FIELDS)
@pytest.mark.parametrize("value", ["-1", "+5", "1_000", "0x10", "1.0", "٣", "ten", "1e3"])
def test_integers_must_be_plain_base_10(name: str, value: str) -> None:
    (problem,) = refused({name.upper(): value})
    assert (problem.variable, problem.value) == (name.upper(), value)


@given(name=st.sampled_from(INT_FIELDS), number=st.integers(min_value=1, max_value=65535))
def test_integers_in_range_round_trip(name: str, number: int) -> None:
    assert getattr(load_settings({name.upper(): str(number)}), name) == number


@pytest.mark.parametrize("name", PORT_FIELDS)
def test_ports_range_from_0_to_65535(name: str) -> None:
    assert getattr(load_settings({name.upper(): "0"}), name) == 0
    assert getattr(load_settings({name.upper(): "65535"}), name) == 65535
    (problem,) = refused({name.upper(): "65536"})
    assert problem.accepted == "a base-10 integer from 0 to 65535"


def test_max_request_body_size_must_be_at_least_1() -> None:
    refused({"SERVER_MAX_REQUEST_BODY_SIZE": "0"})
    assert load_settings({"SERVER_MAX_REQUEST_BODY_SIZE": "1"}).server_max_request_body_size == 1


@given(
    name=st.sampled_from(
        ["allowed_models", "disallowed_models", "mcp_include_tools", "mcp_exclude_tools"]
    ),
    items=st.lists(st.text(alphabet="abc/-_. ", max_size=6), max_size=5),
)
def test_lists_split_on_commas_strip_and_drop_empty_items(name: str, items: list[str]) -> None:
    value = getattr(load_settings({name.upper(): ",".join(items)}), name)
    assert value == tuple(item.strip() for item in items if item.strip())


def test_mcp_servers_must_be_http_urls_and_each_bad_one_is_named() -> None:
    settings = load_settings({"MCP_SERVERS": " http://a:8080/mcp , https://b/mcp,, "})
    assert settings.mcp_servers == ("http://a:8080/mcp", "https://b/mcp")
    (problem,) = refused({"MCP_SERVERS": "http://a/mcp, ftp://b/mcp"})
    assert (problem.variable, problem.value) == ("MCP_SERVERS", "ftp://b/mcp")


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "x", "/v1", "http://", "http:///v1", "http://:80", "http://a:99999", "http://a b"],
)
def test_non_http_urls_are_refused(url: str) -> None:
    (problem,) = refused({"OPENAI_API_URL": url})
    assert (problem.variable, problem.value) == ("OPENAI_API_URL", url)
    (problem,) = refused({"MCP_SERVERS": url})
    assert problem.variable == "MCP_SERVERS"


# --- combinations -------------------------------------------------------------------


def test_auth_requires_an_issuer_url_and_a_client_id() -> None:
    problems = refused({"AUTH_ENABLE": "true"})
    assert {p.variable for p in problems} == {"AUTH_OIDC_ISSUER", "AUTH_OIDC_CLIENT_ID"}
    (problem,) = refused({"AUTH_ENABLE": "true", **AUTH_COMPLETE, "AUTH_OIDC_ISSUER": "idp"})
    assert (problem.variable, problem.value) == ("AUTH_OIDC_ISSUER", "idp")
    settings = load_settings({"AUTH_ENABLE": "true", **AUTH_COMPLETE})
    assert settings.auth_enable
    assert settings.auth_oidc_issuer == AUTH_COMPLETE["AUTH_OIDC_ISSUER"]


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("SERVER_TLS_CERT_PATH", "SERVER_TLS_KEY_PATH"),
        ("SERVER_TLS_KEY_PATH", "SERVER_TLS_CERT_PATH"),
    ],
)
def test_tls_cert_and_key_must_be_set_together(present: str, missing: str) -> None:
    (problem,) = refused({present: "/etc/tls/x.pem"})
    assert problem.variable == missing
    assert present in problem.accepted
    both = load_settings({"SERVER_TLS_CERT_PATH": "/c", "SERVER_TLS_KEY_PATH": "/k"})
    assert (both.server_tls_cert_path, both.server_tls_key_path) == ("/c", "/k")


def test_several_bad_variables_are_all_reported_in_one_error() -> None:
    env = {
        "ENABLE_VISION": "True",
        "MCP_CLIENT_TIMEOUT": "5",
        "SERVER_PORT": "eighty",
        "MCP_SERVERS": "ftp://x",
        "ANTHROPIC_API_URL": "api.anthropic.com",
        "AUTH_ENABLE": "yes",
        "TELEMETRY_ENABLE": "true",
        "TELEMETRY_ENABLED": "false",
        "SERVER_TLS_CERT_PATH": "/c",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    named = {p.variable for p in info.value.problems}
    assert named == {*env} - {"TELEMETRY_ENABLED", "SERVER_TLS_CERT_PATH"} | {"SERVER_TLS_KEY_PATH"}
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]


@pytest.mark.parametrize("name", BOOL_FIELDS + DURATION_FIELDS + INT_FIELDS)
def test_every_typed_variable_is_checked(name: str) -> None:
    (problem,) = refused({variable_of(name): "\x01bad"})
    assert problem.variable == variable_of(name)


def test_environment_is_any_string() -> None:
    assert load_settings({"ENVIRONMENT": " development "}).is_development
    assert load_settings({"ENVIRONMENT": "staging"}).environment == "staging"


# --- providers ----------------------------------------------------------------------


@pytest.mark.parametrize("spec_id", list(PROVIDER_SPECS))
def test_provider_url_and_key_override_and_trailing_slashes_are_stripped(spec_id: str) -> None:
    prefix = spec_id.upper()
    settings = load_settings(
        {f"{prefix}_API_URL": "https://proxy.example.com/v1//", f"{prefix}_API_KEY": "sk-test"}
    )
    provider = settings.provider(prefix)
    assert provider is not None
    assert provider is settings.provider(spec_id)
    assert provider.base_url == "https://proxy.example.com/v1"
    assert provider.api_key == "sk-test"
    assert provider.url_set
    others = [p for p in settings.providers if p.id != spec_id]
    assert all(not p.url_set and not p.api_key for p in others)


def test_providers_keep_table_order_and_default_urls() -> None:
    settings = load_settings({"OLLAMA_CLOUD_API_KEY": "k"})
    assert [p.id for p in settings.providers] == list(PROVIDER_SPECS)
    assert all(p.base_url == p.spec.base_url for p in settings.providers)
    cloud = settings.provider("ollama_cloud")
    assert cloud is not None and cloud.api_key == "k" and not cloud.url_set
    assert settings.provider("nope") is None


def test_a_keyless_provider_is_configured_once_its_url_is_set() -> None:
    ollama = load_settings({"OLLAMA_API_URL": "http://localhost:11434/v1/"}).provider("ollama")
    assert ollama is not None
    assert ollama.configured
    assert ollama.base_url == "http://localhost:11434/v1"


# --- reporting ----------------------------------------------------------------------


def test_startup_lines_for_the_defaults() -> None:
    assert startup_lines(DEFAULTS) == [
        "auth disabled",
        "mcp disabled",
        "vision disabled",
        "telemetry disabled",
        "providers with keys: none",
    ]


def test_startup_lines_for_enabled_features() -> None:
    settings = load_settings(
        {
            "AUTH_ENABLE": "true",
            **AUTH_COMPLETE,
            "MCP_ENABLE": "true",
            "MCP_SERVERS": "http://a/mcp,http://b/mcp",
            "ENABLE_VISION": "true",
            "TELEMETRY_ENABLE": "true",
            "TELEMETRY_METRICS_PORT": "9000",
            "OPENAI_API_KEY": "sk-1",
            "ANTHROPIC_API_KEY": "sk-2",
            "OLLAMA_API_URL": "http://localhost:11434/v1",
        },
        demo=True,
    )
    assert startup_lines(settings) == [
        "auth enabled (issuer=https://idp.example.com/realms/igw)",
        "mcp enabled (servers=http://a/mcp, http://b/mcp)",
        "vision enabled",
        "telemetry enabled (port=9000)",
        "providers with keys: openai, anthropic",
        "keyless providers: ollama, demo",
    ]


# The "§" marks a generated secret so it cannot match ordinary output by chance.
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40).map(
    lambda text: f"sk-§{text}"
)


@given(
    keys=st.dictionaries(st.sampled_from(list(PROVIDER_SPECS)), secrets, min_size=1),
    client_secret=secrets,
)
def test_keys_and_secrets_never_appear_in_startup_lines_or_redacted(
    keys: dict[str, str], client_secret: str
) -> None:
    env = {f"{spec_id.upper()}_API_KEY": key for spec_id, key in keys.items()}
    env.update(AUTH_COMPLETE, AUTH_ENABLE="true", AUTH_OIDC_CLIENT_SECRET=client_secret)
    settings = load_settings(env)
    shown = "\n".join(startup_lines(settings)) + repr(settings.redacted())
    for secret in [client_secret, *keys.values()]:
        assert secret not in shown
    redacted = settings.redacted()
    assert redacted["auth_oidc_client_secret"] == "***"
    providers = redacted["providers"]
    assert isinstance(providers, tuple)
    assert {p["id"]: p["api_key"] for p in providers if p["api_key"]} == dict.fromkeys(keys, "***")
    assert startup_lines(settings)[4] == "providers with keys: " + ", ".join(
        spec_id for spec_id in PROVIDER_SPECS if spec_id in keys
    )


def test_redacted_lists_every_field() -> None:
    redacted = DEFAULTS.redacted()
    assert set(redacted) == set(FIELDS)
    assert redacted["auth_oidc_client_secret"] == ""
    assert redacted["server_port"] == 8080


def test_config_problem_and_error_text() -> None:
    problem = ConfigProblem("ENABLE_VISION", "True", "exactly 'true' or 'false'")
    assert str(problem) == "ENABLE_VISION='True': accepted values are exactly 'true' or 'false'"
    other = ConfigProblem("SERVER_PORT", "x", "a base-10 integer from 0 to 65535")
    error = ConfigError([problem, other])
    assert error.problems == (problem, other)
    assert str(error) == f"{problem}\n{other}"
