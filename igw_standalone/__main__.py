"""The ``igw`` command: configure from the environment and serve."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence

from igw_core.config import ConfigError, ConfigProblem, Settings, load_settings
from igw_core.providers import PROVIDER_SPECS
from igw_io.logs import configure_logging, secrets_of
from igw_io.response_parsers import resolve_parser
from igw_io.routing_file import load_from_settings
from igw_standalone.server import Engine, Server, package_version, resolve_loop, run
from igw_standalone.tls import CERT_VARIABLE, KEY_VARIABLE, tls_problems

EXIT_CONFIG = 2
EXIT_CANNOT_SERVE = 1

log = logging.getLogger("igw.main")

#: The variable each flag overrides, to name the flag when its value is refused.
_FLAG_OF = {"SERVER_HOST": "--host", "SERVER_PORT": "--port"}

_INDENT = " " * 30
_EPILOG = f"""\
environment (every setting is an environment variable; the flags above win):
  SERVER_HOST, SERVER_PORT    listen address (default 127.0.0.1 and 8080)
  {{ID}}_API_KEY, {{ID}}_API_URL  a provider's key and URL, e.g. OPENAI_API_KEY; ids:
{textwrap.fill(", ".join(PROVIDER_SPECS), 88, initial_indent=_INDENT, subsequent_indent=_INDENT)}
  AUTH_ENABLE                 'true' requires an OIDC bearer token (AUTH_OIDC_ISSUER,
                              AUTH_OIDC_CLIENT_ID); default false
  MCP_ENABLE                  'true' offers and runs the tools of MCP_SERVERS; default false
  TELEMETRY_ENABLE            'true' serves Prometheus metrics on TELEMETRY_METRICS_PORT
                              (default 9464); default false
  ENVIRONMENT                 'development': readable DEBUG logs with request bodies;
                              anything else: one JSON object per line at INFO
  SERVER_TLS_CERT_PATH, SERVER_TLS_KEY_PATH
                              serve HTTPS (HTTP/2 through ALPN)

Booleans are exactly 'true' or 'false'; durations are Go-style (500ms, 5s, 1m30s).
A refused configuration exits with status 2 and lists every bad variable.
Full reference: docs/configuration.md (every variable, default and meaning); docs/ for the rest.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (flags override the environment).

    ``--help`` and ``--version`` print and exit with status 0; a bad flag exits with 2.
    """
    parser = argparse.ArgumentParser(
        prog="igw", description="igw: an OpenAI-compatible LLM inference gateway.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"igw {package_version()}")
    parser.add_argument("--host",
                        help="listen address (default: SERVER_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int,
                        help="listen port, 0 for any free one (default: SERVER_PORT, else 8080)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the port through SO_REUSEPORT "
                             "(default: 1)")
    parser.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto",
                        help="HTTP/1.1 parser; auto: httptools when importable, else h11 "
                             "(default: auto)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop; auto: uvloop when importable, else asyncio "
                             "(default: auto)")
    parser.add_argument("--demo", action="store_true", default=None,
                        help="add the built-in keyless 'demo' provider "
                             "(default: IGW_DEMO, else off)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Return the settings for ``env`` with command-line overrides applied.

    Raises:
        ConfigError: a variable or flag is invalid; a refused flag is named as the flag
            (``--port='99999'``), not as the variable it overrides.
    """
    env = dict(env)
    given = set()
    if args.host:
        env["SERVER_HOST"] = args.host
        given.add("SERVER_HOST")
    if args.port is not None:
        env["SERVER_PORT"] = str(args.port)
        given.add("SERVER_PORT")
    try:
        return load_settings(env, demo=args.demo)
    except ConfigError as error:
        raise ConfigError(
            dataclasses.replace(problem, variable=_FLAG_OF[problem.variable])
            if problem.variable in given else problem
            for problem in error.problems
        ) from None


def _path(env: Mapping[str, str], variable: str) -> str:
    return (env.get(variable) or "").strip()


def checked_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Return the settings, having also checked the files they name (the TLS pair, the
    routing file).

    Raises:
        ConfigError: every refused variable or flag, the unusable files included.
    """
    files: tuple[ConfigProblem, ...] = tls_problems(
        _path(env, CERT_VARIABLE), _path(env, KEY_VARIABLE))
    try:
        settings = settings_from(args, env)
    except ConfigError as error:
        raise ConfigError((*error.problems, *files)) from None
    try:  # checked here so a bad file exits 2 before anything binds (each process reads it)
        load_from_settings(settings)
    except ConfigError as error:
        files = (*files, *error.problems)
    if files:
        raise ConfigError(files)
    return settings


def _serve(settings: Settings, workers: int, engine: Engine) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status.

    Raises:
        OSError: the address cannot be bound (or the TLS files read).
    """
    if workers > 1:
        from igw_standalone.workers import run_workers

        return run_workers(settings, workers, engine)
    with contextlib.suppress(KeyboardInterrupt):
        run(Server(settings, http=engine.http).serve, engine.loop)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the gateway; exit with status 2 on a refused configuration, 1 when it cannot serve."""
    args = parse_args(argv)
    try:
        settings = checked_settings(args, os.environ)
    except ConfigError as error:
        print("igw: refusing to start, invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.workers < 1:
        print("igw: --workers must be at least 1", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        engine = Engine(resolve_parser(args.http), resolve_loop(args.loop))
    except ValueError as error:  # --http httptools or --loop uvloop without the package
        print(f"igw: refusing to start: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    configure_logging(development=settings.is_development, secrets=secrets_of(settings))
    try:
        status = _serve(settings, args.workers, engine)
    except OSError as error:  # e.g. the port is taken: one clear line, not a traceback
        log.error("igw: cannot serve: %s", error)
        sys.exit(EXIT_CANNOT_SERVE)
    sys.exit(status)


if __name__ == "__main__":
    main()
